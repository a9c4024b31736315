/* Real-server decapsulation (for kernels without ipip/ip6_tunnel/fou): strips IPIP (4) / IPv6 (41) and GUE
 * (UDP to the configured port, bpf/gue.h) addressed to this host and passes the inner packet up. A GUE packet
 * with a previous-owner hint may get a second chance (decap_second.h): a mid-connection TCP packet this host
 * has no state for goes on to the previous owner, only when the packet came from an LB prefix (--from; with no
 * decap_sources, never). With decap_sources in use, only tunnels from the LBs' prefixes are ours (a CNI's IPIP
 * overlay stays the kernel's). Everything else untouched. */
#include "shared.h"
#include "parse.h"
#include "l2.h"
#include "decap_maps.h"
#include "decap_gue.h"
#include "decap_second.h"
#include "guard.h"

/* Keeps the decap enums and the config struct in this object's BTF (userspace reads them from there). */
struct peak_decap_btf_anchor {
  enum peak_decap_counter counter;
  enum peak_decap_config_flag config_flag;
  enum peak_decap_source_kind source_kind;
  struct peak_decap_config config;
  struct peak_decap_source_key source_key;
};
struct peak_decap_btf_anchor peak_decap_anchor __attribute__((unused));

/* Moves Ethernet (+ tags) forward over `strip` bytes at l3 and passes the inner packet up. */
static __always_inline int decap_strip(struct xdp_md *ctx, const struct peak_pkt *p, __u32 strip, __u8 inner_v4,
                                       __u32 counter) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return decap_count(PEAK_DECAP_ERROR, XDP_DROP);
  __u8 dmac[ETH_ALEN], smac[ETH_ALEN];
  __builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
  __builtin_memcpy(smac, eth->h_source, ETH_ALEN);
  if (bpf_xdp_adjust_head(ctx, (int)(strip & DECAP_OFF_MASK))) return decap_count(PEAK_DECAP_ERROR, XDP_PASS);
  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  if (peak_write_l2(data, data_end, p, dmac, smac, inner_v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6)))
    return decap_count(PEAK_DECAP_ERROR, XDP_DROP); /* unreachable: the frame only got shorter at the front */
  return decap_count(counter, XDP_PASS);
}

/* Who sent a GUE packet, by decap_sources. */
enum decap_sender {
  DECAP_FROM_ANYONE = 0, /* no sources configured: nobody is known */
  DECAP_FROM_PEER,       /* a --gue-from prefix only: a peer backend's second-chance hop */
  DECAP_FROM_LB,         /* a --from prefix (may send IPIP-kind tunnels): an LB node */
};

/* A valid GUE packet for this host: second chance or strip. Every one counts `gue` and exactly one outcome.
 * Only a packet from an LB has its hint honoured or its remembered moved flow (decap_moved) forwarded: either
 * makes this host send the inner packet on from its own address, so anyone else who can reach the GUE port could
 * use it as an open relay (and with no sources configured, anyone is "else"). A peer backend's hop (hint cleared)
 * goes on only to the owner this host remembers for its flow, itself learnt from an LB's hint, and marked as the
 * last hop; a marked hop is never sent on: two extra hops at most, never a loop. `src`: the outer source. */
static __always_inline int decap_gue_deliver(struct xdp_md *ctx, const struct peak_pkt *p, struct decap_gue *g,
                                             const struct peak_decap_config *cfg, __u16 port, int sender,
                                             const __u8 *src) {
  int from_lb = sender == DECAP_FROM_LB;
  decap_count(PEAK_DECAP_GUE, 0);
  __u32 outcome = PEAK_DECAP_SC_NO_HINT;
  __u16 flags = cfg ? cfg->flags : 0;
  int remember = !(flags & (PEAK_DECAP_CFG_F_NO_SECOND_CHANCE | PEAK_DECAP_CFG_F_NO_REMEMBER));
  struct bpf_sock_tuple t = {};
  __u32 len = 0;
  __u64 seq = 0;
  struct peak_decap_flow_key k = {};
  /* 1: forward on the hint; 2: forward to the remembered owner (copied into g's hint); 3: the same, a peer's hop
   * sent on marked as the last */
  int forward = 0;
  if (g->hint_family) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    int kind = decap_sc_tuple(data, data_end, g, &t, &len, &seq);
    if (flags & PEAK_DECAP_CFG_F_NO_SECOND_CHANCE)
      outcome = PEAK_DECAP_SC_DISABLED;
    else if (!from_lb || peak_addr_special(g->hint_family, (const peak_u32_alias *)g->hint))
      outcome = PEAK_DECAP_SC_HINT_UNTRUSTED;
    else if (kind == DECAP_SC_SYN)
      outcome = PEAK_DECAP_SC_SYN_IGNORED;
    else if (kind != DECAP_SC_TCP)
      outcome = PEAK_DECAP_SC_NOT_TCP;
    else if (decap_is_own(g->hint_family, g->hint) ||
             (g->hint_family == g->outer_family && decap_same16(g->hint, g->outer_dst)))
      outcome = PEAK_DECAP_SC_LOOP_REFUSED;
    else {
      int local = decap_sc_local(ctx, &t, len, flags, g, seq);
      if (local == DECAP_LOCAL_CONNTRACK) decap_count(PEAK_DECAP_SC_LOCAL_CONNTRACK, 0);
      if (local == DECAP_LOCAL_SYNCOOKIE) decap_count(PEAK_DECAP_SC_LOCAL_SYNCOOKIE, 0);
      if (local != DECAP_LOCAL_NONE) {
        outcome = PEAK_DECAP_SC_LOCAL_HIT;
      } else {
        if (!(flags & PEAK_DECAP_CFG_F_NO_CONNTRACK) && !decap_conntrack_available())
          decap_count(PEAK_DECAP_SC_CONNTRACK_UNAVAILABLE, 0);
        forward = 1;
      }
    }
  } else if ((from_lb || (sender == DECAP_FROM_PEER && !g->last_hop)) && remember && decap_moved_in_use()) {
    /* no hint: a flow this host forwarded on an earlier hint goes on to the same owner, while nothing here holds it.
     * A peer sends a hop here when the LB hinted this host as the flow's owner (the flow moved again after its
     * hint here expired): it goes on to the owner remembered, unless that is the peer itself (the entry is stale:
     * the peer had no state for the flow, or it would not have sent it) */
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    int kind = decap_sc_tuple(data, data_end, g, &t, &len, &seq);
    if (kind == DECAP_SC_TCP || kind == DECAP_SC_SYN) {
      decap_moved_key(&k, g->inner_family, &t);
      struct peak_decap_moved *m = bpf_map_lookup_elem(&decap_moved, &k);
      if (m) {
        __u8 family = m->family;
        __u8 owner[16] __attribute__((aligned(4)));
        peak_copy16(owner, m->owner);
        if (kind == DECAP_SC_SYN || decap_is_own(family, owner) ||
            (!from_lb && family == g->outer_family && decap_same_addr(family, owner, src)) ||
            decap_sc_local(ctx, &t, len, flags, g, seq) != DECAP_LOCAL_NONE) {
          decap_forget(&k);
        } else {
          g->hint_family = family;
          peak_copy16(g->hint, owner);
          forward = from_lb ? 2 : 3;
        }
      }
    }
  }
  if (forward) {
    __u32 counter = PEAK_DECAP_ERROR;
    int verdict = decap_sc_forward(ctx, p, g, cfg, port, forward == 3, &counter);
    if (verdict >= 0) {
      if (counter != PEAK_DECAP_SC_FORWARD) return decap_count(counter, verdict);
      if (forward == 3) decap_count(PEAK_DECAP_SC_MOVED_SECOND_HOP, 0);
      if (forward >= 2) return decap_count(PEAK_DECAP_SC_MOVED_FORWARD, verdict);
      /* a segment of the flow (not an ICMP error about it) forwarded on the hint: remembered */
      if (remember && (seq >> 32)) {
        decap_moved_key(&k, g->inner_family, &t);
        decap_remember(&k, g);
      }
      return decap_count(counter, verdict);
    }
    outcome = counter;
  }
  return decap_strip(ctx, p, g->inner - g->l3, g->inner_family == PEAK_FAMILY_V4, outcome);
}

SEC("xdp")
int decap(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct peak_pkt p = {};
  decap_count(PEAK_DECAP_RX_PACKETS, 0);
  p.frame_len = data_end - data;
  __be16 proto = peak_parse_l2(data, data_end, &p);
  __u32 l3 = p.l3_off & PEAK_L3_MASK;
  __u32 outer_len;
  __u8 inner;
  struct decap_gue g = {.l3 = l3};
  __u32 ip_payload = 0;
  __u8 src[16] __attribute__((aligned(4))); /* outer source (v4 in the first 4 bytes), for decap_sources */
  if (proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = data + l3;
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_IPV6 && ip->protocol != IPPROTO_UDP)
      return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip->frag_off & bpf_htons(PEAK_IP_MF | PEAK_IP_OFFSET)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    outer_len = ip->ihl * 4;
    inner = ip->protocol;
    *(peak_u32_alias *)src = ip->saddr;
    if (inner == IPPROTO_UDP) {
      __u32 tot = bpf_ntohs(ip->tot_len);
      g.outer_family = PEAK_FAMILY_V4;
      *(peak_u32_alias *)g.outer_dst = ip->daddr;
      /* a malformed IP header is not yet a GUE packet: the kernel drops it */
      if (tot < outer_len + sizeof(struct udphdr) || l3 + tot > p.frame_len)
        return decap_count(PEAK_DECAP_PASS, XDP_PASS);
      ip_payload = tot - outer_len;
    } else if (!decap_for_us(PEAK_FAMILY_V4, &ip->daddr)) {
      return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    }
  } else if (proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = data + l3;
    if ((void *)(ip6 + 1) > data_end || ip6->version != 6) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (ip6->nexthdr != IPPROTO_IPIP && ip6->nexthdr != IPPROTO_IPV6 && ip6->nexthdr != IPPROTO_UDP)
      return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    outer_len = sizeof(*ip6);
    inner = ip6->nexthdr;
    peak_copy16(src, &ip6->saddr);
    if (inner == IPPROTO_UDP) {
      __u32 plen = bpf_ntohs(ip6->payload_len);
      g.outer_family = PEAK_FAMILY_V6;
      peak_copy16(g.outer_dst, &ip6->daddr);
      if (plen < sizeof(struct udphdr) || l3 + sizeof(*ip6) + plen > p.frame_len)
        return decap_count(PEAK_DECAP_PASS, XDP_PASS);
      ip_payload = plen;
    } else if (!decap_for_us(PEAK_FAMILY_V6, &ip6->daddr)) {
      return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    }
  } else {
    return decap_count(PEAK_DECAP_PASS, XDP_PASS);
  }

  __u32 zero = 0;
  struct peak_decap_config *cfg = bpf_map_lookup_elem(&decap_config, &zero);
  __u16 cfg_flags = cfg ? cfg->flags : 0;
  __u8 outer_family = proto == bpf_htons(ETH_P_IP) ? PEAK_FAMILY_V4 : PEAK_FAMILY_V6;
  if (inner == IPPROTO_UDP) {
    __u16 port = cfg && cfg->gue_port ? bpf_ntohs(cfg->gue_port) : PEAK_GUE_DEFAULT_PORT;
    g.udp = (l3 + outer_len) & 0x7f;
    struct udphdr *udp = data + g.udp;
    if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(port)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    if (!decap_for_us(g.outer_family, g.outer_dst)) return decap_count(PEAK_DECAP_PASS, XDP_PASS);
    /* no sources configured: GUE from anywhere is stripped, but no sender is known to be an LB */
    __u32 kinds = cfg_flags & PEAK_DECAP_CFG_F_SOURCES ? decap_source_kinds(outer_family, src) : PEAK_DECAP_SRC_GUE;
    if (!(kinds & PEAK_DECAP_SRC_GUE)) return decap_count(PEAK_DECAP_NOT_FROM_LB, XDP_PASS);
    /* ours from here on: what we cannot read is dropped (nothing else on this host speaks GUE) */
    if (decap_gue_parse(data, data_end, &g, ip_payload)) return decap_count(PEAK_DECAP_GUE_MALFORMED, XDP_DROP);
    int sender = DECAP_FROM_ANYONE;
    if (kinds & PEAK_DECAP_SRC_IPIP)
      sender = DECAP_FROM_LB;
    else if (cfg_flags & PEAK_DECAP_CFG_F_SOURCES)
      sender = DECAP_FROM_PEER;
    return decap_gue_deliver(ctx, &p, &g, cfg, port, sender, src);
  }

  /* IPIP / IP6IP6 / 4in6 for us: from an LB (a CNI's IPIP overlay between nodes is the kernel's), and the inner
   * header must be there and of the announced version. */
  if (!decap_from_ok(cfg_flags, outer_family, src, PEAK_DECAP_SRC_IPIP))
    return decap_count(PEAK_DECAP_NOT_FROM_LB, XDP_PASS);
  __u8 *iv = data + l3 + (outer_len & 0x3f);
  __u32 need = inner == IPPROTO_IPIP ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  if ((void *)(iv + 1) > data_end || (void *)iv + need > data_end ||
      (*iv >> 4) != (inner == IPPROTO_IPIP ? 4 : 6))
    return decap_count(PEAK_DECAP_ERROR, XDP_PASS);
  __u32 which = inner == IPPROTO_IPV6 ? PEAK_DECAP_IP6IP6 : PEAK_DECAP_IPIP;
  if (proto == bpf_htons(ETH_P_IPV6) && inner == IPPROTO_IPIP) which = PEAK_DECAP_IP4IN6;
  return decap_strip(ctx, &p, outer_len & 0x3f, inner == IPPROTO_IPIP, which);
}

char LICENSE[] SEC("license") = "GPL";
