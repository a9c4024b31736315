/* Benchmark reference: the least an IPIP load balancer does (parse Ethernet + IPv4, prepend an outer IPv4
 * header to a fixed backend, swap MACs, XDP_TX). The full balancer is measured against it. */
#include "shared.h"
#include "parse.h"
#include "csum.h"

const volatile __u32 backend_v4 = 0;  /* outer destination, network order */
const volatile __u32 source_v4 = 0;   /* outer source, network order */

SEC("xdp")
int bench_encap(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) return XDP_PASS;
  __u16 tot = bpf_ntohs(ip->tot_len);
  __u8 tos = ip->tos;
  __u8 dmac[ETH_ALEN], smac[ETH_ALEN];
  __builtin_memcpy(dmac, eth->h_source, ETH_ALEN);
  __builtin_memcpy(smac, eth->h_dest, ETH_ALEN);
  if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr))) return XDP_DROP;
  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  eth = data;
  struct iphdr *o = (void *)(eth + 1);
  if ((void *)(o + 1) > data_end) return XDP_DROP;
  __builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
  __builtin_memcpy(eth->h_source, smac, ETH_ALEN);
  eth->h_proto = bpf_htons(ETH_P_IP);
  o->version = 4;
  o->ihl = 5;
  o->tos = tos;
  o->tot_len = bpf_htons(tot + sizeof(*o));
  o->id = 0;
  o->frag_off = bpf_htons(PEAK_IP_DF);
  o->ttl = PEAK_DEFAULT_TTL;
  o->protocol = IPPROTO_IPIP;
  o->check = 0;
  o->saddr = source_v4;
  o->daddr = backend_v4;
  o->check = csum_ipv4_hdr20(o);
  return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
