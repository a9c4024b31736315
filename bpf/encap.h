/* Encapsulation: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6. Prepends the outer header in front of the
 * untouched inner packet, rewrites Ethernet (keeping VLAN tags), derives the outer source per flow. */
#ifndef PEAK_ENCAP_H
#define PEAK_ENCAP_H

#include "parse.h"
#include "csum.h"
#include "maps.h"
#include "stats.h"
#include "l2.h"
#include "gue.h"

#define PEAK_GUE_FIXED (sizeof(struct udphdr) + sizeof(struct peak_gue_hdr)) /* UDP 8 + GUE base header 4 */

/* Outer IPv4 source: prefix with its host bits taken from the flow hash (/32 = fixed). Network order. */
static __always_inline __be32 peak_outer_src_v4(const struct peak_config *cfg, __u32 hash) {
  __u32 prefix = *(const peak_u32_alias *)cfg->src_v4;
  __u32 len = cfg->src_v4_len;
  if (len >= 32) return prefix;
  __u32 host = 0xffffffffU >> len;
  return bpf_htonl((bpf_ntohl(prefix) & ~host) | (hash & host));
}

/* Outer IPv6 source: prefix with up to 32 host bits (the low word) from the flow hash (/128 = fixed). */
static __always_inline void peak_outer_src_v6(const struct peak_config *cfg, __u32 hash, __u8 *out) {
  peak_copy16(out, cfg->src_v6);
  __u32 len = cfg->src_v6_len;
  if (len >= 128) return;
  __u32 hostbits = 128 - len;
  __u32 host = hostbits >= 32 ? 0xffffffffU : (1U << hostbits) - 1;
  peak_u32_alias *last = (peak_u32_alias *)(out + 12);
  *last = bpf_htonl((bpf_ntohl(*last) & ~host) | (hash & host));
}

/* Bytes the previous-owner hint adds to a GUE header (0: none). */
static __always_inline __u32 peak_hint_len(const struct peak_backend *hint) {
  if (!hint) return 0;
  return hint->family == PEAK_FAMILY_V4 ? sizeof(struct peak_gue_hint4) : sizeof(struct peak_gue_hint6);
}

/* Bytes the encapsulation adds for a backend (outer IP, and for GUE: UDP, GUE header, hint). */
static __always_inline __u32 peak_encap_overhead(const struct peak_backend *be, const struct peak_backend *hint) {
  __u32 ip = be->family == PEAK_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  if (be->encap != PEAK_ENCAP_GUE) return ip;
  return ip + PEAK_GUE_FIXED + peak_hint_len(hint);
}

/* Can this packet go to this backend at all? 0 or the drop counter. IPIP has no IPv6-in-IPv4 (that would be
 * SIT, which our decap does not take); GUE carries either inner family over either outer family. */
static __always_inline __u32 peak_encap_check(const struct peak_pkt *p, const struct peak_backend *be,
                                              const struct peak_config *cfg) {
  if (be->family == PEAK_FAMILY_V4) {
    if (p->flow.family != PEAK_FAMILY_V4 && be->encap != PEAK_ENCAP_GUE) return PEAK_CNT_DROP_FAMILY;
    if (cfg->src_v4_len == 0) return PEAK_CNT_DROP_NO_SOURCE;
    return 0;
  }
  if (cfg->src_v6_len == 0) return PEAK_CNT_DROP_NO_SOURCE;
  return 0;
}

/* Writes UDP + GUE (+ hint) at `u`, the byte after the outer IP header. UDP checksum 0 (bpf/README.md: RFC
 * 6935/6936 reasoning); source port from the flow hash; the hint as GUE private data (bpf/gue.h). */
static __always_inline int peak_write_gue(void *u, void *data_end, const struct peak_pkt *p,
                                          const struct peak_config *cfg, __u32 hash, __u8 inner_proto,
                                          const struct peak_backend *hint, __u32 hlen) {
  /* UDP + GUE + the largest hint: the inner packet (>= 24 bytes, ports parsed) follows, so this always fits */
  if (u + PEAK_GUE_FIXED + sizeof(struct peak_gue_hint6) > data_end) return -1;
  peak_u32_alias *w = u;
  __u32 dport = cfg->gue_port ? bpf_ntohs(cfg->gue_port) : PEAK_GUE_DEFAULT_PORT;
  w[0] = bpf_htonl(((__u32)PEAK_GUE_SPORT(hash) << 16) | dport);
  w[1] = bpf_htonl((p->ip_len + PEAK_GUE_FIXED + hlen) << 16); /* length, checksum 0 */
  w[2] = bpf_htonl(((hlen / 4) << 24) | ((__u32)inner_proto << 16)); /* ver 0, C 0, Hlen, Proto, flags 0 */
  if (!hint) return 0;
  const peak_u32_alias *a = (const peak_u32_alias *)hint->addr;
  if (hint->family == PEAK_FAMILY_V4) {
    w[3] = bpf_htonl(((__u32)PEAK_GUE_HINT_TYPE << 24) | (PEAK_FAMILY_V4 << 16));
    w[4] = a[0];
  } else {
    w[3] = bpf_htonl(((__u32)PEAK_GUE_HINT_TYPE << 24) | (PEAK_FAMILY_V6 << 16));
    w[4] = a[0];
    w[5] = a[1];
    w[6] = a[2];
    w[7] = a[3];
  }
  peak_count(p->stats, PEAK_CNT_HINT_SENT);
  return 0;
}

/* Prepends the outer header(s); the caller checked peak_encap_check and the MTU (with the same `hint`, which
 * only a GUE backend gets). 0 or a drop counter. */
static __always_inline __u32 peak_encap(struct xdp_md *ctx, const struct peak_pkt *p,
                                        const struct peak_backend *be, const struct peak_config *cfg,
                                        __u32 hash, const struct peak_backend *hint) {
  int v4 = be->family == PEAK_FAMILY_V4;
  int gue = be->encap == PEAK_ENCAP_GUE;
  __u32 iph = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  __u32 hlen = gue ? peak_hint_len(hint) : 0;
  __u32 overhead = iph + (gue ? PEAK_GUE_FIXED + hlen : 0);
  __u8 inner_proto = p->flow.family == PEAK_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
  __u8 outer_proto = gue ? IPPROTO_UDP : inner_proto;
  if (bpf_xdp_adjust_head(ctx, -(int)overhead)) return PEAK_CNT_DROP_ADJUST;
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  if (peak_write_l2(data, data_end, p, cfg->next_hop_mac, cfg->own_mac,
                    v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6)))
    return PEAK_CNT_DROP_ADJUST;
  __u32 l3 = p->l3_off & PEAK_L3_MASK;
  if (v4) {
    struct iphdr *o = data + l3;
    if ((void *)(o + 1) > data_end) return PEAK_CNT_DROP_ADJUST;
    /* the five header words built in registers (network order), summed there for the checksum */
    __u32 w0 = bpf_htonl((0x45U << 24) | ((__u32)p->tos << 16) | (p->ip_len + overhead));
    __u32 w1 = bpf_htonl(PEAK_IP_DF);                                   /* id 0, DF, offset 0 */
    __u32 w2 = bpf_htonl(((__u32)PEAK_DEFAULT_TTL << 24) | ((__u32)outer_proto << 16)); /* check 0 */
    __u32 w3 = peak_outer_src_v4(cfg, hash);
    __u32 w4 = *(const peak_u32_alias *)be->addr;
    __u16 check = ~csum_fold64((__u64)w0 + w1 + w2 + w3 + w4);
    peak_u32_alias *ow = (peak_u32_alias *)o;
    ow[0] = w0;
    ow[1] = w1;
    ow[2] = w2 | ((__u32)check << 16); /* check sits in the upper half of the word in memory order */
    ow[3] = w3;
    ow[4] = w4;
    if (gue && peak_write_gue(o + 1, data_end, p, cfg, hash, inner_proto, hint, hlen)) return PEAK_CNT_DROP_ADJUST;
    peak_count(p->stats, PEAK_CNT_ENCAP_V4);
  } else {
    struct ipv6hdr *o6 = data + l3;
    if ((void *)(o6 + 1) > data_end) return PEAK_CNT_DROP_ADJUST;
    /* version 6, traffic class copied, flow label from the hash (spreads ECMP/RSS on the way). */
    __u32 vtcfl = (6U << 28) | ((__u32)p->tos << 20) | (hash & 0xfffff);
    *(__be32 *)o6 = bpf_htonl(vtcfl);
    o6->payload_len = bpf_htons(p->ip_len + overhead - sizeof(struct ipv6hdr));
    o6->nexthdr = outer_proto;
    o6->hop_limit = PEAK_DEFAULT_TTL;
    peak_outer_src_v6(cfg, hash, (__u8 *)&o6->saddr);
    peak_copy16(&o6->daddr, be->addr);
    if (gue && peak_write_gue(o6 + 1, data_end, p, cfg, hash, inner_proto, hint, hlen)) return PEAK_CNT_DROP_ADJUST;
    peak_count(p->stats, PEAK_CNT_ENCAP_V6);
  }
  if (gue) peak_count(p->stats, PEAK_CNT_ENCAP_GUE);
  return 0;
}

#endif
