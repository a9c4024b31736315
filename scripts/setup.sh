#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, bpffs, npm dependencies, build.
# Runs as the pre-hook of `npm test`, `npm run demo` and the benches; a second run on a ready machine
# only checks and rebuilds what changed (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# Debian packages the build, the tests, the testbed and the benches use. The BPF build needs only the kernel
# uapi headers (linux-libc-dev) and libbpf-dev: no glibc header may be reached (test/unit/bpf-headers.test.ts).
PACKAGES=(clang llvm libbpf-dev linux-libc-dev bpftool cmake ninja-build pkg-config libelf-dev zlib1g-dev
  iproute2 ethtool nftables procps iputils-ping curl
  bird2 frr gobgpd exabgp nginx-light haproxy wrk)

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
npx --no-install tsc -p tsconfig.build.json
chmod +x dist/src/cli/main.js

# `peak-xdp` on the PATH (root only): a wrapper that runs this checkout's CLI, rewritten when it points elsewhere.
if [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ]; then
  wrapper="#!/bin/sh
# peak-xdp CLI of the checkout at $PWD (written by scripts/setup.sh)
exec node \"$PWD/dist/src/cli/main.js\" \"\$@\""
  if [ ! -f /usr/local/bin/peak-xdp ] || [ "$(cat /usr/local/bin/peak-xdp)" != "$wrapper" ]; then
    printf '%s\n' "$wrapper" >/usr/local/bin/peak-xdp && chmod 755 /usr/local/bin/peak-xdp
    log "installed /usr/local/bin/peak-xdp -> $PWD/dist/src/cli/main.js"
  fi
fi
log "ready"
