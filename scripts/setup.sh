#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, bpffs, npm dependencies, build.
# Runs as the pre-hook of `npm test`, `npm run demo` and the benches; a second run on a ready machine
# only checks and rebuilds what changed (a few seconds).
#   scripts/setup.sh            everything: what an LB host needs, plus the test, testbed, bench and image tools
#   scripts/setup.sh --runtime  only what a production LB host needs to build and run peak-xdp
#   scripts/setup.sh --image    only the container image tools (mmdebstrap, buildah, podman, runc); no npm, no build
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

mode=all
for arg in "$@"; do
  case "$arg" in
    --runtime) mode=runtime ;;
    --image) mode=image ;;
    -h | --help)
      sed -n '2,7p' "$0"
      exit 0
      ;;
    *)
      echo "setup.sh: unknown option $arg (try --runtime, --image or --help)" >&2
      exit 2
      ;;
  esac
done

# What an LB host needs: the BPF and addon build (clang, libbpf, cmake; the BPF build reaches only the kernel
# uapi headers in linux-libc-dev, no glibc header: test/unit/bpf-headers.test.ts), and what the daemon runs
# (ip for VIP routes and decap, ethtool, nft, bpftool for diagnostics).
RUNTIME_PACKAGES=(clang llvm libbpf-dev linux-libc-dev bpftool cmake ninja-build pkg-config libelf-dev zlib1g-dev
  iproute2 ethtool nftables procps)
# What only the tests, the namespace testbed and the benches use: BGP peers, web servers, load generators,
# promtool (checks the metrics, alert rules and their unit tests), python3 (raw and packet sockets in the decap
# tests; exabgp pulls it in too, but the tests use it themselves).
TEST_PACKAGES=(iputils-ping curl bird2 frr gobgpd exabgp nginx-light haproxy wrk prometheus python3)
# The container image (scripts/image/build.sh, test/integration/image.test.ts): mmdebstrap makes the Debian
# root filesystem, buildah commits it as an image, podman runs it (rootful; the test joins testbed namespaces, so
# no container network backend, slirp4netns or fuse-overlayfs: root uses the kernel's overlayfs). runc: Debian 12's
# crun 1.8 refuses hosts with hybrid cgroups ("cgroups in hybrid mode not supported"), as on these machines.
IMAGE_PACKAGES=(mmdebstrap buildah podman runc)
case "$mode" in
  all) PACKAGES=("${RUNTIME_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${IMAGE_PACKAGES[@]}") ;;
  runtime) PACKAGES=("${RUNTIME_PACKAGES[@]}") ;;
  image) PACKAGES=("${IMAGE_PACKAGES[@]}") ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packaged daemons (nginx, frr, bird) must not start in the root namespace: tests start their own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    log "installing Debian packages with sudo: ${missing[*]}"
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing Debian packages (run as root to install): ${missing[*]}"
  fi
fi

if [ "$mode" = image ]; then
  log "image tools ready"
  exit 0
fi

# bpffs at the default pin root (the daemon and CLI default to /sys/fs/bpf/peak-xdp).
if [ "$(id -u)" -eq 0 ] && ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf || log "could not mount bpffs on /sys/fs/bpf"
fi

# npm dependencies: `npm ci` only when package-lock.json changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.peak-lock-sum ] || [ "$(cat node_modules/.peak-lock-sum)" != "$lock_sum" ]; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >node_modules/.peak-lock-sum
fi

# Build: the CMake graph (BPF objects + addon) and TypeScript, both incremental.
log "building (cmake-js: BPF objects + addon; tsc)"
npx --no-install cmake-js build --directory . --out build --log-level error >/tmp/peak-xdp-build.log 2>&1 || {
  cat /tmp/peak-xdp-build.log
  exit 1
}
node scripts/gen-version.js
npx --no-install tsc -p tsconfig.build.json
chmod +x dist/src/cli/main.js

# `peak-xdp` on the PATH (root only): a wrapper that runs this checkout's CLI, rewritten when it points elsewhere.
if [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ]; then
  wrapper="#!/bin/sh
# peak-xdp CLI of the checkout at $PWD (written by scripts/setup.sh), on the node of the PATH, with the Node flags
# of its shebang
exec \"$PWD/dist/src/cli/main.js\" \"\$@\""
  if [ ! -f /usr/local/bin/peak-xdp ] || [ "$(cat /usr/local/bin/peak-xdp)" != "$wrapper" ]; then
    printf '%s\n' "$wrapper" >/usr/local/bin/peak-xdp && chmod 755 /usr/local/bin/peak-xdp
    log "installed /usr/local/bin/peak-xdp -> $PWD/dist/src/cli/main.js"
  fi
fi
log "ready"
