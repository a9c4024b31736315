#!/usr/bin/env bash
# Client host of the physical bench: bounded wrk ramp against the VIP (run on a separate host from the LBs).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
load_env

DURATION="${DURATION:-30}"
OUT="${OUT:-$REPO/bench-results/physical-$(date +%Y%m%dT%H%M%S)}"
mkdir -p "$OUT"
THREADS="$(nproc)"
for c in 64 128 256 512 1024 2048; do
  log "wrk: $c connections, ${DURATION}s"
  wrk -t "$THREADS" -c "$c" -d "${DURATION}s" --latency --timeout 2s "http://$VIP4:$PORT/" | tee "$OUT/wrk-$c.txt"
done
log "results in $OUT"
