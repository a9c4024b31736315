/* What VIP traffic is refused before it is forwarded: frames sent to a link-layer group address, and sources
 * no client can have. Runs on every VIP packet (never on other traffic): a few ALU ops, no map access. */
#ifndef PEAK_GUARD_H
#define PEAK_GUARD_H

#include "parse.h"

/* Is `a` (4 bytes for IPv4, 16 for IPv6) a special-purpose address no host can be reached at or send from (twin
 * of specialAddress() in src/model/ip.ts)? IPv4 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4,
 * 255.255.255.255 (class E otherwise passes, as in Linux); IPv6 ::, ::1, fe80::/10, ff00::/8, ::ffff:0:0/96.
 * Shared by the balancer (client sources) and the decap (previous-owner hints). */
static __always_inline int peak_addr_special(__u8 family, const peak_u32_alias *s) {
  if (family == PEAK_FAMILY_V4) {
    __u32 a = bpf_ntohl(s[0]);
    __u32 top = a >> 24;
    return top == 0 || top == 127 || (top & 0xf0) == 0xe0 || a == 0xffffffffU || (a >> 16) == 0xa9fe;
  }
  __u32 w0 = bpf_ntohl(s[0]);
  if ((w0 >> 24) == 0xff || (w0 >> 22) == (0xfe80U >> 6)) return 1; /* multicast, link-local */
  if ((s[0] | s[1]) == 0) {
    __u32 w2 = bpf_ntohl(s[2]);
    if (w2 == 0xffff || (w2 == 0 && bpf_ntohl(s[3]) <= 1)) return 1; /* IPv4-mapped, ::, ::1 */
  }
  return 0;
}

/* Can a client have this source? Not a special-purpose address, and not the destination (the VIP) itself. */
static __always_inline int peak_source_ok(const struct peak_flow_key *f) {
  const peak_u32_alias *s = (const peak_u32_alias *)f->src;
  const peak_u32_alias *d = (const peak_u32_alias *)f->dst;
  if (peak_addr_special(f->family, s)) return 0;
  if (f->family == PEAK_FAMILY_V4) return s[0] != d[0];
  return s[0] != d[0] || s[1] != d[1] || s[2] != d[2] || s[3] != d[3];
}

/* 0 when a VIP packet may be forwarded or answered, else the drop counter. A frame to a broadcast or multicast
 * MAC (l2_group, from the parser) carrying a unicast IP packet is silently discarded by a router (RFC 1812
 * 5.3.4): it was flooded, not sent to us. */
static __always_inline __u32 peak_guard(const struct peak_pkt *p) {
  if (p->l2_group) return PEAK_CNT_DROP_L2_BROADCAST;
  if (!peak_source_ok(&p->flow)) return PEAK_CNT_DROP_BAD_SOURCE;
  return 0;
}

#endif
