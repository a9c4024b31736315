/* Real-server decapsulation: strips an outer IPv4/IPv6 header carrying IPIP (4) or IPv6 (41) addressed to
 * this host and passes the inner packet up (for kernels without ipip/ip6_tunnel). Everything else untouched. */
#include "shared.h"
#include "parse.h"
#include "l2.h"

/* Accept tunnel packets to any destination (else only to addresses in decap_addrs). */
const volatile __u8 decap_any = 0;

/* This host's tunnel endpoint addresses -> unused value. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 64);
  __type(key, struct peak_addr_key);
  __type(value, __u32);
} decap_addrs SEC(".maps");

/* Counters by enum peak_decap_counter, per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, PEAK_DECAP_MAX);
  __type(key, __u32);
  __type(value, __u64);
} decap_stats SEC(".maps");

/* Keeps the decap enum in this object's BTF too. */
enum peak_decap_counter peak_decap_anchor __attribute__((unused));

static __always_inline int decap_count(__u32 c, int verdict) {
  __u64 *v = bpf_map_lookup_elem(&decap_stats, &c);
  if (v) *v += 1;
  return verdict;
}

static __always_inline int decap_for_us(__u8 family, const void *addr) {
  if (decap_any) return 1;
  struct peak_addr_key k = {.family = family};
  __builtin_memcpy(k.addr, addr, family == PEAK_FAMILY_V4 ? 4 : 16);
  return bpf_map_lookup_elem(&decap_addrs, &k) != NULL;
}

SEC("xdp")
int decap(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct peak_pkt p = {};
  decap_count(PEAK_DECAP_RX_PACKETS, 0);
  __be16 proto = peak_parse_l2(data, data_end, &p);
  __u32 l3 = p.l3_off & PEAK_L3_MASK;
  __u32 outer_len;
  __u8 inner;
  if (proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = data + l3;
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_IPV6) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip->frag_off & bpf_htons(PEAK_IP_MF | PEAK_IP_OFFSET)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (!decap_for_us(PEAK_FAMILY_V4, &ip->daddr)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    outer_len = ip->ihl * 4;
    inner = ip->protocol;
  } else if (proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = data + l3;
    if ((void *)(ip6 + 1) > data_end || ip6->version != 6) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip6->nexthdr != IPPROTO_IPIP && ip6->nexthdr != IPPROTO_IPV6) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (!decap_for_us(PEAK_FAMILY_V6, &ip6->daddr)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    outer_len = sizeof(*ip6);
    inner = ip6->nexthdr;
  } else {
    return decap_count(PEAK_DECAP_PASS, XDP_PASS);
  }
  /* The inner header must be there and of the announced version. */
  __u8 *iv = data + l3 + (outer_len & 0x3f);
  __u32 need = inner == IPPROTO_IPIP ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  if ((void *)(iv + 1) > data_end || (void *)iv + need > data_end ||
      (*iv >> 4) != (inner == IPPROTO_IPIP ? 4 : 6))
    return decap_count(PEAK_DECAP_ERROR, XDP_PASS);
  struct ethhdr *eth = data;
  __u8 dmac[ETH_ALEN], smac[ETH_ALEN];
  __builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
  __builtin_memcpy(smac, eth->h_source, ETH_ALEN);
  __u32 which = inner == IPPROTO_IPV6 ? PEAK_DECAP_IP6IP6 : PEAK_DECAP_IPIP;
  if (proto == bpf_htons(ETH_P_IPV6) && inner == IPPROTO_IPIP) which = PEAK_DECAP_IP4IN6;
  if (bpf_xdp_adjust_head(ctx, (int)(outer_len & 0x3f))) return decap_count(PEAK_DECAP_ERROR, XDP_PASS);
  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  if (peak_write_l2(data, data_end, &p, dmac, smac,
                    inner == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6)))
    return decap_count(PEAK_DECAP_ERROR, XDP_DROP); /* unreachable: the frame only got shorter at the front */
  return decap_count(which, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
