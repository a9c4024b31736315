/* Encapsulation: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6. Prepends the outer header in front of the
 * untouched inner packet, rewrites Ethernet (keeping VLAN tags), derives the outer source per flow. */
#ifndef PEAK_ENCAP_H
#define PEAK_ENCAP_H

#include "parse.h"
#include "csum.h"
#include "maps.h"
#include "stats.h"
#include "l2.h"

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

/* Bytes the outer header adds for a backend family. */
static __always_inline __u32 peak_encap_overhead(const struct peak_backend *be) {
  return be->family == PEAK_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
}

/* Can this packet go to this backend at all? 0 or the drop counter. */
static __always_inline __u32 peak_encap_check(const struct peak_pkt *p, const struct peak_backend *be,
                                              const struct peak_config *cfg) {
  if (be->family == PEAK_FAMILY_V4) {
    if (p->flow.family != PEAK_FAMILY_V4) return PEAK_CNT_DROP_FAMILY;
    if (cfg->src_v4_len == 0) return PEAK_CNT_DROP_NO_SOURCE;
    return 0;
  }
  if (cfg->src_v6_len == 0) return PEAK_CNT_DROP_NO_SOURCE;
  return 0;
}

/* Prepends the outer header; the caller checked peak_encap_check and the MTU. 0 or a drop counter. */
static __always_inline __u32 peak_encap(struct xdp_md *ctx, const struct peak_pkt *p,
                                        const struct peak_backend *be, const struct peak_config *cfg,
                                        __u32 hash) {
  int v4 = be->family == PEAK_FAMILY_V4;
  int overhead = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  __u8 inner_proto = p->flow.family == PEAK_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
  if (bpf_xdp_adjust_head(ctx, -overhead)) return PEAK_CNT_DROP_ADJUST;
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
    __u32 w0 = bpf_htonl((0x45U << 24) | ((__u32)p->tos << 16) | (p->ip_len + sizeof(*o)));
    __u32 w1 = bpf_htonl(PEAK_IP_DF);                                   /* id 0, DF, offset 0 */
    __u32 w2 = bpf_htonl(((__u32)PEAK_DEFAULT_TTL << 24) | ((__u32)inner_proto << 16)); /* check 0 */
    __u32 w3 = peak_outer_src_v4(cfg, hash);
    __u32 w4 = *(const peak_u32_alias *)be->addr;
    __u16 check = ~csum_fold64((__u64)w0 + w1 + w2 + w3 + w4);
    peak_u32_alias *ow = (peak_u32_alias *)o;
    ow[0] = w0;
    ow[1] = w1;
    ow[2] = w2 | ((__u32)check << 16); /* check sits in the upper half of the word in memory order */
    ow[3] = w3;
    ow[4] = w4;
    peak_count(p->stats, PEAK_CNT_ENCAP_V4);
    return 0;
  }
  struct ipv6hdr *o6 = data + l3;
  if ((void *)(o6 + 1) > data_end) return PEAK_CNT_DROP_ADJUST;
  /* version 6, traffic class copied, flow label from the hash (spreads ECMP/RSS on the way). */
  __u32 vtcfl = (6U << 28) | ((__u32)p->tos << 20) | (hash & 0xfffff);
  *(__be32 *)o6 = bpf_htonl(vtcfl);
  o6->payload_len = bpf_htons(p->ip_len);
  o6->nexthdr = inner_proto;
  o6->hop_limit = PEAK_DEFAULT_TTL;
  peak_outer_src_v6(cfg, hash, (__u8 *)&o6->saddr);
  peak_copy16(&o6->daddr, be->addr);
  peak_count(p->stats, PEAK_CNT_ENCAP_V6);
  return 0;
}

#endif
