/* GUE (bpf/gue.h) as the decap program reads it: checks an outer UDP datagram to our GUE port and finds the
 * inner packet and the previous-owner hint. Reads only; the caller strips or re-encapsulates. */
#ifndef PEAK_DECAP_GUE_H
#define PEAK_DECAP_GUE_H

#include "decap_maps.h"

#define DECAP_OFF_MASK 0x1ff /* every offset below stays under 22 + 60 + 8 + 128 + 60 + 60 + 8 */

/* What the checks learnt about one GUE packet; offsets from the frame start. */
struct decap_gue {
  __u32 l3;          /* outer IP header */
  __u32 udp;         /* outer UDP header */
  __u32 inner;       /* inner IP header */
  __u32 inner_len;   /* inner IP packet length from its own header */
  __u8 outer_family; /* PEAK_FAMILY_V4/V6 */
  __u8 inner_family;
  __u8 inner_tos;    /* IPv4 TOS / IPv6 traffic class of the inner packet */
  __u8 hint_family;  /* 0 = no hint */
  __be16 sport;      /* outer UDP source port (the LB's flow entropy; kept on a second-chance hop) */
  __u8 last_hop;     /* a peer's hop marked PEAK_GUE_LAST_HOP_TYPE: never sent on */
  __u8 pad;
  __u8 outer_dst[16]; /* the address the packet came to (ours) */
  __u8 hint[16];      /* the previous owner */
};

/* Checks the UDP datagram at g->udp (its 8-byte header already in the frame, `ip_payload` = the bytes the outer
 * IP header says follow it) as GUE variant 0 or 1. 0 = usable, -1 = malformed (the caller drops it). */
static __always_inline int decap_gue_parse(void *data, void *data_end, struct decap_gue *g, __u32 ip_payload) {
  struct udphdr *udp = data + (g->udp & DECAP_OFF_MASK);
  if ((void *)(udp + 1) > data_end) return -1;
  g->sport = udp->source;
  __u32 ulen = bpf_ntohs(udp->len);
  if (ulen > ip_payload || ulen < sizeof(*udp) + sizeof(struct peak_gue_hdr)) return -1;
  struct peak_gue_hdr *gh = (void *)(udp + 1);
  if ((void *)(gh + 1) > data_end) return -1;
  __u8 b0 = gh->ver_c_hlen;
  __u32 gue_len = 0;
  if ((b0 >> 6) == 1) {
    /* variant 1: the IP header itself follows UDP (its version nibble 0100 / 0110 starts with 01) */
    g->inner_family = (b0 >> 4) == 4 ? PEAK_FAMILY_V4 : (b0 >> 4) == 6 ? PEAK_FAMILY_V6 : 0;
    if (!g->inner_family) return -1;
  } else {
    /* variant 0; a control message (C) or any flag (we set none; their fields would move our hint) is refused */
    if (b0 & PEAK_GUE_VER_C_MASK) return -1;
    if (gh->flags) return -1;
    if (gh->proto == IPPROTO_IPIP)
      g->inner_family = PEAK_FAMILY_V4;
    else if (gh->proto == IPPROTO_IPV6)
      g->inner_family = PEAK_FAMILY_V6;
    else
      return -1;
    __u32 hlen = b0 & PEAK_GUE_HLEN_MASK;
    gue_len = sizeof(*gh) + hlen * 4;
    if (sizeof(*udp) + gue_len > ulen) return -1;
    if (hlen) {
      struct peak_gue_hint_head *h = (void *)(gh + 1);
      if ((void *)(h + 1) > data_end) return -1;
      /* private data of another kind: not ours to read; the packet is still good */
      if (h->type == PEAK_GUE_HINT_TYPE) {
        if (h->reserved) return -1;
        if (h->family == PEAK_FAMILY_V4 && hlen == PEAK_GUE_HLEN_HINT4) {
          struct peak_gue_hint4 *h4 = (void *)h;
          if ((void *)(h4 + 1) > data_end) return -1;
          *(peak_u32_alias *)g->hint = h4->addr;
        } else if (h->family == PEAK_FAMILY_V6 && hlen == PEAK_GUE_HLEN_HINT6) {
          struct peak_gue_hint6 *h6 = (void *)h;
          if ((void *)(h6 + 1) > data_end) return -1;
          peak_copy16(g->hint, h6->addr);
        } else {
          return -1;
        }
        g->hint_family = h->family;
      } else if (h->type == PEAK_GUE_LAST_HOP_TYPE) {
        if (hlen != PEAK_GUE_HLEN_LAST_HOP || h->family || h->reserved) return -1;
        g->last_hop = 1;
      }
    }
  }
  g->inner = (g->udp + sizeof(*udp) + gue_len) & DECAP_OFF_MASK;
  __u32 avail = ulen - sizeof(*udp) - gue_len;
  __u8 *iv = data + g->inner;
  if ((void *)(iv + 1) > data_end) return -1;
  if (g->inner_family == PEAK_FAMILY_V4) {
    struct iphdr *ip = (void *)iv;
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) return -1;
    __u32 tot = bpf_ntohs(ip->tot_len);
    if (tot < ip->ihl * 4U || tot > avail) return -1;
    g->inner_len = tot;
    g->inner_tos = ip->tos;
  } else {
    struct ipv6hdr *ip6 = (void *)iv;
    if ((void *)(ip6 + 1) > data_end || ip6->version != 6) return -1;
    __u32 tot = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
    if (tot > avail) return -1;
    g->inner_len = tot;
    g->inner_tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
  }
  return 0;
}

#endif
