/* ICMP: echo replies from the LB, too-big generation back to the client (PMTU discovery), and finding
 * the VIP flow quoted inside an ICMP error so it can go to the backend that owns the flow. */
#ifndef PEAK_ICMP_H
#define PEAK_ICMP_H

#include "parse.h"
#include "csum.h"
#include "encap.h"

#define PEAK_L4_MASK 0x7f     /* l4_off <= 22 + 60 */
#define PEAK_ICMP6_MAX_QUOTE 1232 /* 1280 minimum MTU - 40 IPv6 - 8 ICMPv6 */
#define PEAK_ICMP4_MIN_MTU 68

static __always_inline void peak_swap_macs(struct ethhdr *eth) {
  __u8 tmp[ETH_ALEN];
  __builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
  __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
  __builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* Echo request -> echo reply in place (addresses and MACs swapped, TTL reset, checksums updated). */
static __always_inline int peak_icmp4_echo_reply(void *data, void *data_end, const struct peak_pkt *p) {
  struct ethhdr *eth = data;
  struct iphdr *ip = data + (p->l3_off & PEAK_L3_MASK);
  struct peak_icmphdr *ic = data + (p->l4_off & PEAK_L4_MASK);
  if ((void *)(eth + 1) > data_end || (void *)(ip + 1) > data_end || (void *)(ic + 1) > data_end) return -1;
  peak_swap_macs(eth);
  __be32 a = ip->saddr;
  ip->saddr = ip->daddr;
  ip->daddr = a;
  __u16 old = *(__u16 *)&ip->ttl;
  ip->ttl = PEAK_DEFAULT_TTL;
  csum_replace2(&ip->check, old, *(__u16 *)&ip->ttl);
  old = *(__u16 *)ic;
  ic->type = PEAK_ICMP_ECHOREPLY;
  csum_replace2(&ic->checksum, old, *(__u16 *)ic);
  return 0;
}

static __always_inline int peak_icmp6_echo_reply(void *data, void *data_end, const struct peak_pkt *p) {
  struct ethhdr *eth = data;
  struct ipv6hdr *ip6 = data + (p->l3_off & PEAK_L3_MASK);
  struct icmp6hdr *ic = data + (p->l4_off & PEAK_L4_MASK);
  if ((void *)(eth + 1) > data_end || (void *)(ip6 + 1) > data_end || (void *)(ic + 1) > data_end) return -1;
  peak_swap_macs(eth);
  struct in6_addr a = ip6->saddr;
  ip6->saddr = ip6->daddr;
  ip6->daddr = a; /* the pseudo-header sum does not change with the swap */
  ip6->hop_limit = PEAK_DEFAULT_TTL;
  __u16 old = *(__u16 *)ic;
  ic->icmp6_type = ICMPV6_ECHO_REPLY;
  csum_replace2(&ic->icmp6_cksum, old, *(__u16 *)ic);
  return 0;
}

/* Is DF set on the IPv4 packet *p? (Read again here: only the too-big path needs it.) */
static __always_inline int peak_ipv4_df(struct xdp_md *ctx, const struct peak_pkt *p) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct iphdr *ip = data + (p->l3_off & PEAK_L3_MASK);
  if ((void *)(ip + 1) > data_end) return 0;
  return (ip->frag_off & bpf_htons(PEAK_IP_DF)) != 0;
}

/* Turns a VIP packet with DF set that is too big after encapsulation into ICMP frag-needed (v4) back to the
 * client, from the VIP, quoting the IP header + 8 bytes. 0 or -1 (packet unusable: caller drops). */
static __always_inline int peak_icmp4_too_big(struct xdp_md *ctx, const struct peak_pkt *p, __u16 mtu) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  struct iphdr *ip = data + (p->l3_off & PEAK_L3_MASK);
  if ((void *)(eth + 1) > data_end || (void *)(ip + 1) > data_end) return -1;
  __u8 dmac[ETH_ALEN], smac[ETH_ALEN];
  __builtin_memcpy(dmac, eth->h_source, ETH_ALEN);
  __builtin_memcpy(smac, eth->h_dest, ETH_ALEN);
  __be32 client = ip->saddr, vip = ip->daddr;
  __u32 quote = ip->ihl * 4 + 8;
  __u32 l3 = p->l3_off & PEAK_L3_MASK;
  int hdrs = sizeof(struct iphdr) + sizeof(struct peak_icmphdr);
  if (bpf_xdp_adjust_head(ctx, -hdrs)) return -1;
  int delta = (int)(l3 + hdrs + quote) - (int)(ctx->data_end - ctx->data);
  if (delta > 0 || bpf_xdp_adjust_tail(ctx, delta)) return -1;
  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  if (peak_write_l2(data, data_end, p, dmac, smac, bpf_htons(ETH_P_IP))) return -1;
  struct iphdr *o = data + l3;
  struct peak_icmphdr *ic = (void *)(o + 1);
  if ((void *)(ic + 1) > data_end) return -1;
  o->version = 4;
  o->ihl = 5;
  o->tos = 0;
  o->tot_len = bpf_htons(hdrs + quote);
  o->id = 0;
  o->frag_off = 0;
  o->ttl = PEAK_DEFAULT_TTL;
  o->protocol = IPPROTO_ICMP;
  o->check = 0;
  o->saddr = vip;
  o->daddr = client;
  o->check = csum_ipv4_hdr20(o);
  ic->type = PEAK_ICMP_DEST_UNREACH;
  ic->code = PEAK_ICMP_FRAG_NEEDED;
  ic->checksum = 0;
  ic->un.frag.unused = 0;
  ic->un.frag.mtu = bpf_htons(mtu < PEAK_ICMP4_MIN_MTU ? PEAK_ICMP4_MIN_MTU : mtu);
  __u64 sum = csum_add_words(0, ic, (sizeof(*ic) + quote) / 4, data_end);
  ic->checksum = ~csum_fold64(sum);
  return 0;
}

/* Same for IPv6: ICMPv6 packet-too-big quoting as much as fits in 1280 bytes (rounded to 4). */
static __always_inline int peak_icmp6_too_big(struct xdp_md *ctx, const struct peak_pkt *p, __u32 mtu) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  struct ipv6hdr *ip6 = data + (p->l3_off & PEAK_L3_MASK);
  if ((void *)(eth + 1) > data_end || (void *)(ip6 + 1) > data_end) return -1;
  __u8 dmac[ETH_ALEN], smac[ETH_ALEN];
  __builtin_memcpy(dmac, eth->h_source, ETH_ALEN);
  __builtin_memcpy(smac, eth->h_dest, ETH_ALEN);
  struct in6_addr client = ip6->saddr, vip = ip6->daddr;
  __u32 quote = p->ip_len > PEAK_ICMP6_MAX_QUOTE ? PEAK_ICMP6_MAX_QUOTE : p->ip_len;
  quote &= ~3U;
  __u32 l3 = p->l3_off & PEAK_L3_MASK;
  int hdrs = sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr);
  if (bpf_xdp_adjust_head(ctx, -hdrs)) return -1;
  int delta = (int)(l3 + hdrs + quote) - (int)(ctx->data_end - ctx->data);
  if (delta > 0 || bpf_xdp_adjust_tail(ctx, delta)) return -1;
  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  if (peak_write_l2(data, data_end, p, dmac, smac, bpf_htons(ETH_P_IPV6))) return -1;
  struct ipv6hdr *o = data + l3;
  struct icmp6hdr *ic = (void *)(o + 1);
  if ((void *)(ic + 1) > data_end) return -1;
  *(__be32 *)o = bpf_htonl(6U << 28);
  o->payload_len = bpf_htons(sizeof(*ic) + quote);
  o->nexthdr = IPPROTO_ICMPV6;
  o->hop_limit = PEAK_DEFAULT_TTL;
  o->saddr = vip;
  o->daddr = client;
  ic->icmp6_type = ICMPV6_PKT_TOOBIG;
  ic->icmp6_code = 0;
  ic->icmp6_cksum = 0;
  ic->icmp6_mtu = bpf_htonl(mtu);
  /* pseudo-header: addresses, upper-layer length, next header */
  __u64 sum = bpf_htonl(sizeof(*ic) + quote) + (__u64)bpf_htonl(IPPROTO_ICMPV6);
  sum = csum_add_words(sum, &o->saddr, 8, data_end);
  sum = csum_add_words(sum, ic, (sizeof(*ic) + quote) / 4, data_end);
  ic->icmp6_cksum = ~csum_fold64(sum);
  return 0;
}

/* ICMPv4 error quoting a packet VIP -> client: fills the client's flow (client -> VIP). 0 or -1. */
static __always_inline int peak_icmp4_error_flow(void *data, void *data_end, const struct peak_pkt *p,
                                                 struct peak_flow_key *flow) {
  struct peak_icmphdr *ic = data + (p->l4_off & PEAK_L4_MASK);
  if ((void *)(ic + 1) > data_end) return -1;
  if (ic->type != PEAK_ICMP_DEST_UNREACH && ic->type != PEAK_ICMP_TIME_EXCEEDED && ic->type != PEAK_ICMP_PARAMETERPROB)
    return -1;
  struct iphdr *in = (void *)(ic + 1);
  if ((void *)(in + 1) > data_end || in->version != 4 || in->ihl < 5) return -1;
  if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP) return -1;
  __be16 *ports = (void *)in + in->ihl * 4;
  if ((void *)(ports + 2) > data_end) return -1;
  flow->family = PEAK_FAMILY_V4;
  flow->proto = in->protocol;
  __builtin_memcpy(flow->src, &in->daddr, 4);
  __builtin_memcpy(flow->dst, &in->saddr, 4);
  flow->sport = ports[1];
  flow->dport = ports[0];
  return 0;
}

static __always_inline int peak_icmp6_error_flow(void *data, void *data_end, const struct peak_pkt *p,
                                                 struct peak_flow_key *flow) {
  struct icmp6hdr *ic = data + (p->l4_off & PEAK_L4_MASK);
  if ((void *)(ic + 1) > data_end) return -1;
  if (ic->icmp6_type < ICMPV6_DEST_UNREACH || ic->icmp6_type > ICMPV6_PARAMPROB) return -1;
  struct ipv6hdr *in = (void *)(ic + 1);
  if ((void *)(in + 1) > data_end || in->version != 6) return -1;
  if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP) return -1;
  __be16 *ports = (void *)(in + 1);
  if ((void *)(ports + 2) > data_end) return -1;
  flow->family = PEAK_FAMILY_V6;
  flow->proto = in->nexthdr;
  __builtin_memcpy(flow->src, &in->daddr, 16);
  __builtin_memcpy(flow->dst, &in->saddr, 16);
  flow->sport = ports[1];
  flow->dport = ports[0];
  return 0;
}

#endif
