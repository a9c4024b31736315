#!/usr/bin/env bash
# Shared helpers for the physical bench scripts: config loading, checks, NIC tuning.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
export REPO

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
log() { printf '[physical] %s\n' "$*"; }

load_env() {
  local env="${PEAK_PHYSICAL_ENV:-$HERE/physical.env}"
  [ -f "$env" ] || die "missing $env (copy physical.env.example and edit it)"
  # shellcheck source=physical.env.example
  . "$env"
  : "${NIC:?NIC is not set in $env}" "${VIP4:?}" "${PORT:?}"
  ip link show dev "$NIC" >/dev/null 2>&1 || die "NIC=$NIC: no such interface on this host"
  [ "$(id -u)" -eq 0 ] || die "run as root"
}

# RSS: spread flows over N hardware queues; RPS: optional software spreading (as in the dissertation's setup).
tune_nic() {
  if [ "${RSS_QUEUES:-0}" -gt 0 ]; then
    log "RSS: $RSS_QUEUES combined queues on $NIC"
    ethtool -L "$NIC" combined "$RSS_QUEUES"
  fi
  # Hash TCP/UDP on addresses and ports so flows spread over the queues.
  ethtool -N "$NIC" rx-flow-hash tcp4 sdfn || log "rx-flow-hash tcp4 not supported by $NIC"
  ethtool -N "$NIC" rx-flow-hash tcp6 sdfn || log "rx-flow-hash tcp6 not supported by $NIC"
  if [ -n "${RPS_CPUS:-}" ]; then
    local q
    for q in /sys/class/net/"$NIC"/queues/rx-*; do
      echo "$RPS_CPUS" >"$q/rps_cpus"
    done
    log "RPS: mask $RPS_CPUS on every rx queue of $NIC"
  fi
}
