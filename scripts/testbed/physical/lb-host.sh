#!/usr/bin/env bash
# LB host of the physical bench: tune the NIC, write the daemon config, run `peak-xdp daemon` (native XDP).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
load_env
tune_nic

CONF="${PEAK_CONFIG:-/etc/peak-xdp/bench.yaml}"
mkdir -p "$(dirname "$CONF")"
MY_IP="$(ip -4 -o addr show dev "$NIC" | awk '{print $4}' | cut -d/ -f1 | head -n1)"
[ -n "$MY_IP" ] || die "NIC=$NIC has no IPv4 address"

{
  echo "interface: $NIC"
  echo "xdpMode: native"
  echo "nextHopMac: auto"
  echo "encapSource: auto"
  echo "admin: { listen: 127.0.0.1:9470 }"
  echo "bgp:"
  echo "  asn: $LB_ASN"
  echo "  routerId: $MY_IP"
  echo "  peers: [ { address: $ROUTER_IP, asn: $ROUTER_ASN, holdTime: 3 } ]"
  echo "vips:"
  echo "  - name: bench4"
  echo "    address: $VIP4"
  echo "    port: $PORT"
  echo "    healthCheck: { type: http, path: /, intervalMs: 1000 }"
  echo "    backends:"
  for b in $BACKENDS; do echo "      - address: $b"; done
} >"$CONF"
log "wrote $CONF"
exec node "$REPO/dist/src/cli/main.js" daemon --config "$CONF"
