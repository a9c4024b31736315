#!/usr/bin/env bash
# Backend host of the physical bench: VIP on lo, ARP settings for DSR, bpf/decap on the NIC, nginx naming the host.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
load_env

ip addr replace "$VIP4/32" dev lo
[ -n "${VIP6:-}" ] && ip addr replace "$VIP6/128" dev lo
sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
# IPIP adds 20 bytes (40 for IPv6) and BPF decap cannot reassemble: keep full-size segments under the path MTU.
ip route replace default via "$ROUTER_IP" dev "$NIC" advmss 1400
node "$REPO/dist/src/cli/main.js" decap attach --interface "$NIC"

NAME="$(hostname -s)"
CONF=/etc/nginx/peak-bench.conf
cat >"$CONF" <<NGINX
worker_processes auto;
events { worker_connections 16384; }
http {
  access_log off;
  server { listen $PORT reuseport; listen [::]:$PORT reuseport; location / { return 200 "$NAME\n"; } }
}
NGINX
nginx -t -c "$CONF"
nginx -c "$CONF"
log "backend $NAME ready: VIP $VIP4 on lo, decap on $NIC, nginx on :$PORT"
