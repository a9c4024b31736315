/* PEAK-XDP balancer: VIP match -> conntrack or Maglev -> IPIP/IP6IP6 or GUE (+ previous-owner hint) -> XDP_TX. Thin entry; one header
 * per concern. Anything not for a VIP leaves untouched with XDP_PASS. */
#include "shared.h"
#include "parse.h"
#include "hash.h"
#include "maps.h"
#include "stats.h"
#include "select.h"
#include "encap.h"
#include "icmp.h"
#include "guard.h"

/* Keeps the shared enums and structs in BTF for userspace (btfLayout), even those no code names. */
struct peak_btf_anchor {
  enum peak_counter counter;
  enum peak_const consts;
  enum peak_decap_counter decap_counter;
  enum peak_family family;
  enum peak_vip_flag vip_flag;
  enum peak_backend_state backend_state;
  enum peak_config_flag config_flag;
  enum peak_backend_encap backend_encap;
  struct peak_vip_key vip_key;
  struct peak_vip_value vip_value;
  struct peak_vip_slot vip_slot;
  struct peak_vip_index_head vip_index_head;
  enum peak_vip_index_flag vip_index_flag;
  struct peak_stats stats;
  struct peak_addr_key addr_key;
  struct peak_backend backend;
  struct peak_flow_key flow_key;
  struct peak_ct_value ct_value;
  struct peak_config config;
  struct peak_traffic traffic;
};
struct peak_btf_anchor peak_btf_anchor __attribute__((unused));

static __always_inline struct peak_config *peak_config_get(void) {
  __u32 zero = 0;
  struct peak_config *cfg = bpf_map_lookup_elem(&config, &zero);
  return cfg && (cfg->flags & PEAK_CFG_F_READY) ? cfg : NULL;
}

/* Is `addr` (of family) the address of some VIP? */
static __always_inline int peak_is_vip_addr(const struct peak_flow_key *flow) {
  struct peak_addr_key k = {.family = flow->family};
  __builtin_memcpy(k.addr, flow->dst, 16);
  return bpf_map_lookup_elem(&vip_addrs, &k) != NULL;
}

/* The VIP slot holding `k` in an index (probing from its home slot), or NULL. */
static __always_inline struct peak_vip_value *peak_vip_index_find(void *index, __u32 seed,
                                                                  const struct peak_vip_key *k) {
  const peak_u32_alias *kw = (const peak_u32_alias *)k;
  __u32 h = peak_vip_key_hash(seed, k->addr, k->family, k->port, k->proto);
#pragma unroll
  for (__u32 i = 0; i < PEAK_VIP_INDEX_PROBES; i++) {
    __u32 idx = 1 + ((h + i) & (PEAK_VIP_INDEX_SLOTS - 1));
    struct peak_vip_slot *s = bpf_map_lookup_elem(index, &idx);
    if (!s || s->key.family == PEAK_FAMILY_NONE) return NULL;
    const peak_u32_alias *sw = (const peak_u32_alias *)&s->key;
    if (sw[0] == kw[0] && sw[1] == kw[1] && sw[2] == kw[2] && sw[3] == kw[3] && sw[4] == kw[4]) return &s->value;
  }
  return NULL;
}

/* Exact (address, port, proto) VIP, else the wildcard-port VIP of that address and protocol: from the index
 * (inlined array lookups), or from the `vips` hash when the index says so or none is installed. */
static __always_inline struct peak_vip_value *peak_vip_find(const struct peak_flow_key *flow) {
  struct peak_vip_key k = {.port = flow->dport, .proto = flow->proto, .family = flow->family};
  __builtin_memcpy(k.addr, flow->dst, 16);
  __u32 zero = 0;
  void *index = bpf_map_lookup_elem(&vip_index, &zero);
  struct peak_vip_index_head *head = index ? bpf_map_lookup_elem(index, &zero) : NULL;
  if (head && !(head->flags & PEAK_VIP_INDEX_F_USE_HASH)) {
    __u32 seed = head->seed;
    struct peak_vip_value *v = peak_vip_index_find(index, seed, &k);
    if (v || k.port == 0) return v;
    k.port = 0;
    return peak_vip_index_find(index, seed, &k);
  }
  struct peak_vip_value *v = bpf_map_lookup_elem(&vips, &k);
  if (v) return v;
  k.port = 0;
  return bpf_map_lookup_elem(&vips, &k);
}

/* After encapsulation: XDP_TX to the configured next hop, or a FIB lookup and XDP_REDIRECT. */
static __always_inline int peak_transmit(struct xdp_md *ctx, const struct peak_config *cfg,
                                         const struct peak_pkt *p, const struct peak_backend *be,
                                         __u32 overhead) {
  if (!(cfg->flags & PEAK_CFG_F_FIB) || p->vlans) return peak_verdict(p->stats, XDP_TX, 0);
  struct bpf_fib_lookup fib = {};
  fib.ifindex = ctx->ingress_ifindex;
  fib.tot_len = p->ip_len + overhead;
  if (be->family == PEAK_FAMILY_V4) {
    fib.family = 2; /* AF_INET */
    __builtin_memcpy(&fib.ipv4_dst, be->addr, 4);
  } else {
    fib.family = 10; /* AF_INET6 */
    __builtin_memcpy(fib.ipv6_dst, be->addr, 16);
  }
  long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  if (rc != BPF_FIB_LKUP_RET_SUCCESS || (void *)(eth + 1) > data_end)
    return peak_verdict(p->stats, XDP_TX, PEAK_CNT_FIB_FALLBACK);
  __builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
  __builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
  peak_count(p->stats, PEAK_CNT_FIB_REDIRECT);
  if (fib.ifindex == ctx->ingress_ifindex) return peak_verdict(p->stats, XDP_TX, 0);
  return peak_verdict(p->stats, bpf_redirect(fib.ifindex, 0), 0);
}

/* What peak_forward sends: a packet of the flow itself, or an ICMP error about it (to the flow's backend). */
enum peak_forward_kind {
  PEAK_FORWARD_FLOW = 0,   /* may fill conntrack; too big -> ICMP too-big to the client */
  PEAK_FORWARD_ICMP_ERROR, /* never fills conntrack, never answered with ICMP, counted when forwarded */
};

/* Picks the backend for `flow` and sends the packet described by *p to it. */
static __always_inline int peak_forward(struct xdp_md *ctx, struct peak_pkt *p, const struct peak_flow_key *flow,
                                        const struct peak_vip_value *vip, enum peak_forward_kind kind) {
  int icmp_error = kind == PEAK_FORWARD_ICMP_ERROR;
  struct peak_config *cfg = peak_config_get();
  if (!cfg) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_NOT_READY);
  struct peak_pick pick = {};
  /* a packet of an established TCP flow may carry a hint, and so may an ICMP error about one (e.g. a
   * packet-too-big for a reply the previous owner sent: the decap's second chance hands it to the host that
   * holds the connection, so path-MTU discovery works for a moved flow too): a SYN starts the flow where Maglev
   * says, and UDP has no SYN to tell a new flow from a moved one (the decap gives UDP no second chance) */
  int want_hint = !p->is_syn && flow->proto == IPPROTO_TCP;
  /* a segment of the flow itself has a sequence number to judge a closed entry by; an ICMP error's quote is
   * taken as the closed connection's */
  enum peak_seq_kind seq_kind = icmp_error || !want_hint ? PEAK_SEQ_NONE : p->is_end ? PEAK_SEQ_END : PEAK_SEQ_CHECK;
  int r = peak_select(p->stats, flow, vip, cfg, p->is_syn, icmp_error ? PEAK_SELECT_LOOKUP_ONLY : PEAK_SELECT_RECORD,
                      want_hint, seq_kind, p->tcp_seq, &pick);
  if (r == PEAK_PICK_NO_TABLE) return peak_verdict(p->stats, XDP_DROP, PEAK_CNT_DROP_NO_TABLE);
  if (r != PEAK_PICK_OK || !pick.be) return peak_verdict(p->stats, XDP_DROP, PEAK_CNT_DROP_NO_BACKEND);
  struct peak_backend *be = pick.be;
  __u32 reason = peak_encap_check(p, be, cfg);
  if (reason) return peak_verdict(p->stats, XDP_DROP, reason);
  __u32 overhead = peak_encap_overhead(be, pick.hint);
  if (icmp_error && pick.hint && cfg->mtu && p->ip_len + overhead > cfg->mtu) {
    /* an ICMP error that fits only without its hint goes without it (to the current owner, as before hints) */
    pick.hint = NULL;
    pick.hint_skipped = 0;
    overhead = peak_encap_overhead(be, NULL);
  }
  if (cfg->mtu && p->ip_len + overhead > cfg->mtu) {
    /* PMTU discovery: tell the client (never in answer to an ICMP error) */
    if (icmp_error) return peak_verdict(p->stats, XDP_DROP, PEAK_CNT_DROP_TOO_BIG);
    int v4 = p->flow.family == PEAK_FAMILY_V4;
    /* frag-needed means "DF was set"; XDP cannot fragment, and the kernel would route it back to us */
    if (v4 && !peak_ipv4_df(ctx, p)) return peak_verdict(p->stats, XDP_DROP, PEAK_CNT_DROP_TOO_BIG_NO_DF);
    int err = v4 ? peak_icmp4_too_big(ctx, p, cfg->mtu - overhead)
                 : peak_icmp6_too_big(ctx, p, cfg->mtu - overhead);
    if (err) return peak_verdict(p->stats, XDP_DROP, PEAK_CNT_DROP_TOO_BIG);
    return peak_verdict(p->stats, XDP_TX, PEAK_CNT_ICMP_TOO_BIG_SENT);
  }
  reason = peak_encap(ctx, p, be, cfg, pick.hash, pick.hint);
  if (reason) return peak_verdict(p->stats, XDP_DROP, reason);
  /* traffic counts only what was encapsulated: a packet dropped above moves its drop reason alone */
  peak_traffic_add(&vip_stats, vip->vip_id, p->frame_len);
  peak_traffic_add(&backend_stats, pick.id, p->frame_len);
  if (icmp_error) peak_count(p->stats, PEAK_CNT_ICMP_ERROR_FORWARDED);
  if (pick.hint_skipped) peak_count(p->stats, PEAK_CNT_HINT_SKIPPED_OWNER);
  if (vip->flags & PEAK_VIP_F_STATELESS) peak_count(p->stats, PEAK_CNT_STATELESS_FORWARD);
  return peak_transmit(ctx, cfg, p, be, overhead);
}

/* TCP and UDP. */
static __always_inline int peak_handle_l4(struct xdp_md *ctx, struct peak_pkt *p) {
  struct peak_vip_value *vip = peak_vip_find(&p->flow);
  if (!vip) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_NOT_VIP);
  __u32 reason = peak_guard(p);
  if (reason) return peak_verdict(p->stats, XDP_DROP, reason);
  return peak_forward(ctx, p, &p->flow, vip, PEAK_FORWARD_FLOW);
}

/* ICMP / ICMPv6 to a VIP address: echo -> reply; errors about a VIP flow -> that flow's backend. */
static __always_inline int peak_handle_icmp(struct xdp_md *ctx, struct peak_pkt *p) {
  if (!peak_is_vip_addr(&p->flow)) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_NOT_VIP);
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  __u32 reason = peak_guard(p);
  if (reason) return peak_verdict(p->stats, XDP_DROP, reason);
  __u8 *type = data + (p->l4_off & PEAK_L4_MASK);
  if ((void *)(type + 2) > data_end) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_MALFORMED);
  int v4 = p->flow.family == PEAK_FAMILY_V4;
  if (type[1] == 0 && type[0] == (v4 ? PEAK_ICMP_ECHO : ICMPV6_ECHO_REQUEST)) {
    if (!peak_config_get()) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_NOT_READY);
    int err = v4 ? peak_icmp4_echo_reply(data, data_end, p) : peak_icmp6_echo_reply(data, data_end, p);
    if (err) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_MALFORMED);
    return peak_verdict(p->stats, XDP_TX, PEAK_CNT_ICMP_ECHO_REPLY);
  }
  struct peak_flow_key inner = {};
  int err = v4 ? peak_icmp4_error_flow(data, data_end, p, &inner)
               : peak_icmp6_error_flow(data, data_end, p, &inner);
  if (err) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_ICMP_OTHER);
  struct peak_vip_value *vip = peak_vip_find(&inner);
  if (!vip) return peak_verdict(p->stats, XDP_PASS, PEAK_CNT_PASS_ICMP_OTHER);
  p->is_syn = 0;
  return peak_forward(ctx, p, &inner, vip, PEAK_FORWARD_ICMP_ERROR);
}

SEC("xdp")
int balancer(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct peak_pkt p = {};
  p.stats = peak_stats_get();
  if (!p.stats) return XDP_PASS;
  peak_count(p.stats, PEAK_CNT_RX_PACKETS);
  switch (peak_parse(data, data_end, &p)) {
    case PEAK_PARSE_NOT_IP: return peak_verdict(p.stats, XDP_PASS, PEAK_CNT_PASS_NOT_IP);
    case PEAK_PARSE_MALFORMED: return peak_verdict(p.stats, XDP_PASS, PEAK_CNT_PASS_MALFORMED);
  }
  if (p.is_frag || p.exthdr) {
    /* fragments and IPv6 extension headers: dropped when for a VIP address (documented), else passed */
    if (!peak_is_vip_addr(&p.flow)) return peak_verdict(p.stats, XDP_PASS, PEAK_CNT_PASS_NOT_VIP);
    return peak_verdict(p.stats, XDP_DROP, p.is_frag ? PEAK_CNT_DROP_FRAGMENT : PEAK_CNT_DROP_V6_EXTHDR);
  }
  switch (p.flow.proto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP: return peak_handle_l4(ctx, &p);
    case IPPROTO_ICMP:
      if (p.flow.family == PEAK_FAMILY_V4) return peak_handle_icmp(ctx, &p);
      break;
    case IPPROTO_ICMPV6:
      if (p.flow.family == PEAK_FAMILY_V6) return peak_handle_icmp(ctx, &p);
      break;
  }
  if (peak_is_vip_addr(&p.flow)) return peak_verdict(p.stats, XDP_PASS, PEAK_CNT_PASS_VIP_OTHER_PROTO);
  return peak_verdict(p.stats, XDP_PASS, PEAK_CNT_PASS_NOT_VIP);
}

char LICENSE[] SEC("license") = "GPL";
