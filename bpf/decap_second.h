/* Second chance: a mid-connection TCP packet (or an ICMP error about a TCP flow) that the LB sent here with a
 * previous owner's address, for a flow this host has no state for, goes on to that previous owner: GUE again,
 * hint cleared. The next host sends such a hop on only to an owner it remembers (decap_moved), marked as the last
 * hop (bpf/gue.h): two extra hops at most, never a loop. */
#ifndef PEAK_DECAP_SECOND_H
#define PEAK_DECAP_SECOND_H

#include "decap_gue.h"
#include "l2.h"
#include "csum.h"

#define DECAP_TCP_LISTEN 10   /* BPF_TCP_LISTEN: a listener is no state for a mid-connection packet */
#define DECAP_TCP_TIME_WAIT 6 /* BPF_TCP_TIME_WAIT */
/* A segment belongs to a time-wait socket's connection when its sequence number is at most this far behind the
 * socket's rcv_nxt (late retransmissions of the connection's tail, its FIN) or DECAP_TW_AHEAD ahead of it. A
 * newer connection of the same addresses and ports starts at an unrelated ISN: it is this close by chance with
 * probability (2^20 + 2^16) / 2^32, ~1 / 3,900. */
#define DECAP_TW_BEHIND (1U << 20)
#define DECAP_TW_AHEAD (1U << 16)

/* The time-wait socket's fields the check reads (CO-RE: offsets from the kernel's BTF; tw_rcv_nxt is
 * tw_sk.__tw_common.skc_tw_rcv_nxt in include/linux/tcp.h). */
struct sock_common {
  __u32 skc_tw_rcv_nxt;
} __attribute__((preserve_access_index));
struct inet_timewait_sock {
  struct sock_common __tw_common;
} __attribute__((preserve_access_index));
struct tcp_timewait_sock {
  struct inet_timewait_sock tw_sk;
} __attribute__((preserve_access_index));

/* netfilter conntrack lookup (kfuncs, 6.0+ with nf_conntrack built in or loaded). __weak: an object loads
 * where they are missing; decap_conntrack_available() then says 0 and the lookup is skipped. */
struct nf_conn {
  int unused; /* opaque; a complete type so the prototype matches the kernel's (a FWD would not) */
};
/* The 12-byte options layout every kernel with these kfuncs accepts (6.11+ also accepts a 16-byte one). */
struct peak_ct_opts {
  __s32 netns_id;
  __s32 error;
  __u8 l4proto;
  __u8 dir;
  __u8 reserved[2];
};
extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *xdp_ctx, struct bpf_sock_tuple *bpf_tuple, __u32 len_tuple,
                                         struct peak_ct_opts *opts, __u32 len_opts) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;

static __always_inline int decap_same16(const __u8 *a, const __u8 *b) {
  const peak_u32_alias *x = (const peak_u32_alias *)a, *y = (const peak_u32_alias *)b;
  return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Same address of `family` (an IPv4 one in the first 4 bytes; the rest is not read). */
static __always_inline int decap_same_addr(__u8 family, const __u8 *a, const __u8 *b) {
  if (family == PEAK_FAMILY_V4) return *(const peak_u32_alias *)a == *(const peak_u32_alias *)b;
  return decap_same16(a, b);
}

/* What the inner packet is, for the second chance. */
enum decap_sc_kind {
  DECAP_SC_TCP = 0,  /* a TCP segment other than a SYN, or an ICMP error quoting a TCP segment: tuple filled */
  DECAP_SC_SYN,      /* a SYN: a new connection belongs to whoever the LB picked now */
  DECAP_SC_NOT_TCP,  /* UDP (README: no second chance), other protocols, fragments, cut-short headers */
};

/* The flow's tuple as an incoming packet of it carries it (client -> VIP), also for a SYN. len = 12 (v4) or 36
 * (v6). *seq: the segment's sequence number (host order) with bit 32 set, for a TCP segment of the flow itself other
 * than a SYN; 0 for an ICMP error about it. */
static __always_inline int decap_sc_tuple(void *data, void *data_end, const struct decap_gue *g,
                                          struct bpf_sock_tuple *t, __u32 *len, __u64 *seq) {
  if (g->inner_family == PEAK_FAMILY_V4) {
    struct iphdr *ip = data + (g->inner & 0xff);
    if ((void *)(ip + 1) > data_end) return DECAP_SC_NOT_TCP;
    if (ip->frag_off & bpf_htons(PEAK_IP_MF | PEAK_IP_OFFSET)) return DECAP_SC_NOT_TCP;
    __u32 hl = ip->ihl * 4;
    void *l4 = (void *)ip + (hl & 0x3c);
    *len = sizeof(t->ipv4);
    if (ip->protocol == IPPROTO_TCP) {
      struct tcphdr *th = l4;
      if ((void *)(th + 1) > data_end || g->inner_len < hl + sizeof(*th)) return DECAP_SC_NOT_TCP;
      t->ipv4.saddr = ip->saddr;
      t->ipv4.daddr = ip->daddr;
      t->ipv4.sport = th->source;
      t->ipv4.dport = th->dest;
      if (th->syn && !th->ack) return DECAP_SC_SYN; /* the tuple filled: a SYN drops a remembered flow */
      *seq = (1ULL << 32) | bpf_ntohl(th->seq);
      return DECAP_SC_TCP;
    }
    if (ip->protocol != IPPROTO_ICMP) return DECAP_SC_NOT_TCP;
    /* an error about a packet VIP -> client (e.g. frag-needed for a reply): the flow reversed */
    struct peak_icmphdr *ic = l4;
    if ((void *)(ic + 1) > data_end) return DECAP_SC_NOT_TCP;
    if (ic->type != PEAK_ICMP_DEST_UNREACH && ic->type != PEAK_ICMP_TIME_EXCEEDED &&
        ic->type != PEAK_ICMP_PARAMETERPROB)
      return DECAP_SC_NOT_TCP;
    struct iphdr *q = (void *)(ic + 1);
    if ((void *)(q + 1) > data_end || q->version != 4 || q->ihl < 5 || q->protocol != IPPROTO_TCP)
      return DECAP_SC_NOT_TCP;
    __be16 *ports = (void *)q + ((q->ihl * 4) & 0x3c);
    if ((void *)(ports + 2) > data_end) return DECAP_SC_NOT_TCP;
    t->ipv4.saddr = q->daddr;
    t->ipv4.daddr = q->saddr;
    t->ipv4.sport = ports[1];
    t->ipv4.dport = ports[0];
    return DECAP_SC_TCP;
  }
  struct ipv6hdr *ip6 = data + (g->inner & 0xff);
  if ((void *)(ip6 + 1) > data_end) return DECAP_SC_NOT_TCP;
  *len = sizeof(t->ipv6);
  if (ip6->nexthdr == IPPROTO_TCP) {
    struct tcphdr *th = (void *)(ip6 + 1);
    if ((void *)(th + 1) > data_end || g->inner_len < sizeof(*ip6) + sizeof(*th)) return DECAP_SC_NOT_TCP;
    peak_copy16(t->ipv6.saddr, &ip6->saddr);
    peak_copy16(t->ipv6.daddr, &ip6->daddr);
    t->ipv6.sport = th->source;
    t->ipv6.dport = th->dest;
    if (th->syn && !th->ack) return DECAP_SC_SYN;
    *seq = (1ULL << 32) | bpf_ntohl(th->seq);
    return DECAP_SC_TCP;
  }
  if (ip6->nexthdr != IPPROTO_ICMPV6) return DECAP_SC_NOT_TCP;
  struct icmp6hdr *ic = (void *)(ip6 + 1);
  if ((void *)(ic + 1) > data_end) return DECAP_SC_NOT_TCP;
  if (ic->icmp6_type < ICMPV6_DEST_UNREACH || ic->icmp6_type > ICMPV6_PARAMPROB) return DECAP_SC_NOT_TCP;
  struct ipv6hdr *q = (void *)(ic + 1);
  if ((void *)(q + 1) > data_end || q->version != 6 || q->nexthdr != IPPROTO_TCP) return DECAP_SC_NOT_TCP;
  __be16 *ports = (void *)(q + 1);
  if ((void *)(ports + 2) > data_end) return DECAP_SC_NOT_TCP;
  peak_copy16(t->ipv6.saddr, &q->daddr);
  peak_copy16(t->ipv6.daddr, &q->saddr);
  t->ipv6.sport = ports[1];
  t->ipv6.dport = ports[0];
  return DECAP_SC_TCP;
}

/* Was bpf_xdp_ct_lookup resolved when this object was loaded? (A weak kfunc left unresolved is address 0.) */
static __always_inline int decap_conntrack_available(void) {
  return bpf_xdp_ct_lookup != 0 && bpf_ct_release != 0;
}

enum decap_local {
  DECAP_LOCAL_NONE = 0,
  DECAP_LOCAL_SOCKET,    /* established, request or time-wait socket (host / Pod mode) */
  DECAP_LOCAL_CONNTRACK, /* a netfilter connection (node mode: kube-proxy DNATs the VIP to a Pod) */
  DECAP_LOCAL_SYNCOOKIE, /* a listener and the ACK of a valid SYN cookie: the connection is made here */
};

/* Is the segment (seq: see decap_sc_tuple) one of time-wait socket sk's connection? An ICMP error about the flow
 * (no segment of it) is taken as one, as before this check. */
static __always_inline int decap_tw_owns(struct bpf_sock *sk, __u64 seq) {
  if (!(seq >> 32)) return 1;
  struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(sk);
  if (!tw) return 1;
  __u32 rcv_nxt = tw->tw_sk.__tw_common.skc_tw_rcv_nxt;
  __u32 s = (__u32)seq;
  return rcv_nxt - s <= DECAP_TW_BEHIND || s - rcv_nxt <= DECAP_TW_AHEAD;
}

/* Is the inner packet (a TCP segment of the flow itself, not an ICMP error) the ACK that completes a SYN-cookie
 * handshake with listener `sk`? Only after the listener overflowed recently (or with tcp_syncookies=2) and when
 * the cookie checks: the kernel then creates the connection from this very packet, so the flow is local. */
static __always_inline int decap_sc_syncookie(struct xdp_md *ctx, struct bpf_sock *sk, const struct decap_gue *g) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  if (g->inner_family == PEAK_FAMILY_V4) {
    struct iphdr *ip = data + (g->inner & 0xff);
    if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP) return 0;
    struct tcphdr *th = (void *)ip + ((ip->ihl * 4) & 0x3c);
    if ((void *)(th + 1) > data_end) return 0;
    return bpf_tcp_check_syncookie(sk, ip, sizeof(*ip), th, sizeof(*th)) == 0;
  }
  struct ipv6hdr *ip6 = data + (g->inner & 0xff);
  if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP) return 0;
  struct tcphdr *th = (void *)(ip6 + 1);
  if ((void *)(th + 1) > data_end) return 0;
  return bpf_tcp_check_syncookie(sk, ip6, sizeof(*ip6), th, sizeof(*th)) == 0;
}

/* Does this host hold the flow? */
static __always_inline int decap_sc_local(struct xdp_md *ctx, struct bpf_sock_tuple *t, __u32 len, __u16 cfg_flags,
                                          const struct decap_gue *g, __u64 seq) {
  struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, t, len == sizeof(t->ipv4) ? sizeof(t->ipv4) : sizeof(t->ipv6),
                                           BPF_F_CURRENT_NETNS, 0);
  if (sk) {
    __u32 state = sk->state;
    int cookie = state == DECAP_TCP_LISTEN && decap_sc_syncookie(ctx, sk, g);
    /* a time-wait socket holds a connection that ended here: a segment of another connection of the same tuple
     * (the client reused its port; that connection lives on the previous owner) would only be answered by the
     * time-wait socket's ACK here and stall. It goes on; conntrack is not asked (it tracks the ended connection
     * too, in its TIME_WAIT). */
    int other = state == DECAP_TCP_TIME_WAIT && !decap_tw_owns(sk, seq);
    bpf_sk_release(sk);
    if (other) {
      decap_count(PEAK_DECAP_SC_TIME_WAIT_OTHER, 0);
      return DECAP_LOCAL_NONE;
    }
    if (state != DECAP_TCP_LISTEN) return DECAP_LOCAL_SOCKET;
    if (cookie) return DECAP_LOCAL_SYNCOOKIE;
  }
  if (cfg_flags & PEAK_DECAP_CFG_F_NO_CONNTRACK) return DECAP_LOCAL_NONE;
  if (!decap_conntrack_available()) return DECAP_LOCAL_NONE;
  struct peak_ct_opts o = {.netns_id = -1, .l4proto = IPPROTO_TCP};
  struct nf_conn *ct = bpf_xdp_ct_lookup(ctx, t, len == sizeof(t->ipv4) ? sizeof(t->ipv4) : sizeof(t->ipv6), &o,
                                         sizeof(o));
  if (!ct) return DECAP_LOCAL_NONE;
  bpf_ct_release(ct);
  return DECAP_LOCAL_CONNTRACK;
}

/* Re-encapsulates the packet (GUE, Hlen 0; `last_hop`: Hlen 1, the last-hop mark) toward g->hint and sends it on: returns XDP_TX / XDP_REDIRECT with
 * *counter SC_FORWARD, or XDP_DROP with ERROR when rewriting failed half-way. Returns -1 with the frame untouched
 * when it cannot go (SC_TAGGED, SC_NO_SOURCE, SC_FIB_FAIL): the caller then passes it up here, as without a second chance
 * (the host answers with a reset at once instead of the flow stalling on drops for the LB's retention time). */
static __always_inline int decap_sc_forward(struct xdp_md *ctx, const struct peak_pkt *p, const struct decap_gue *g,
                                            const struct peak_decap_config *cfg, __u16 port, int last_hop,
                                            __u32 *counter) {
  /* a tagged frame's way to the previous owner is a VLAN device, which XDP cannot transmit on; sent back out
   * the trunk it came in on, it would carry a tag for a network the route did not choose (the balancer, too,
   * never routes a tagged frame) */
  if (p->vlans) {
    *counter = PEAK_DECAP_SC_TAGGED;
    return -1;
  }
  int v4 = g->hint_family == PEAK_FAMILY_V4;
  __u8 src[16] = {};
  if (g->hint_family == g->outer_family)
    peak_copy16(src, g->outer_dst);
  else if (v4 && cfg && *(const peak_u32_alias *)cfg->src_v4)
    *(peak_u32_alias *)src = *(const peak_u32_alias *)cfg->src_v4;
  else if (!v4 && cfg && (*(const peak_u32_alias *)cfg->src_v6 | *(const peak_u32_alias *)(cfg->src_v6 + 12)))
    peak_copy16(src, cfg->src_v6);
  else {
    *counter = PEAK_DECAP_SC_NO_SOURCE;
    return -1;
  }
  __u32 ip_hl = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  __u32 opt = last_hop ? sizeof(struct peak_gue_last_hop) : 0;
  __u32 enc = ip_hl + sizeof(struct udphdr) + sizeof(struct peak_gue_hdr) + opt;
  __u32 inner_len = g->inner_len & 0xffff;
  __u32 ulen = sizeof(struct udphdr) + sizeof(struct peak_gue_hdr) + opt + inner_len;

  struct bpf_fib_lookup fib = {};
  fib.ifindex = ctx->ingress_ifindex;
  fib.l4_protocol = IPPROTO_UDP;
  fib.sport = g->sport;
  fib.dport = bpf_htons(port);
  fib.tot_len = ip_hl + ulen;
  if (v4) {
    fib.family = 2; /* AF_INET */
    fib.tos = g->inner_tos;
    fib.ipv4_src = *(peak_u32_alias *)src;
    fib.ipv4_dst = *(const peak_u32_alias *)g->hint;
  } else {
    fib.family = 10; /* AF_INET6 */
    peak_copy16(fib.ipv6_src, src);
    peak_copy16(fib.ipv6_dst, g->hint);
  }
  long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
  if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
    *counter = PEAK_DECAP_SC_FIB_FAIL;
    return -1;
  }

  __u32 l3 = g->l3 & PEAK_L3_MASK;
  /* >= 0 unless an IPv4 outer carried an IPv4 hint to IPv6, or a peer's hop (Hlen 0) takes the last-hop mark */
  int delta = (int)(g->inner - l3) - (int)enc;
  if (bpf_xdp_adjust_head(ctx, delta)) {
    *counter = PEAK_DECAP_ERROR;
    return XDP_DROP;
  }
  /* the frame ends where the inner packet does (no link padding or trailing bytes carried along); lengths from
   * what we know, not from the packet pointers (the verifier refuses arithmetic the compiler makes of those) */
  int extra = (int)p->frame_len - delta - (int)(l3 + enc + inner_len);
  if (extra > 0 && bpf_xdp_adjust_tail(ctx, -extra)) {
    *counter = PEAK_DECAP_ERROR;
    return XDP_DROP;
  }
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  /* peak_write_l2 copies MACs with word accesses: the stack needs them aligned, fib's are not */
  __u8 dmac[8] __attribute__((aligned(8))), smac[8] __attribute__((aligned(8)));
  __builtin_memcpy(dmac, fib.dmac, ETH_ALEN);
  __builtin_memcpy(smac, fib.smac, ETH_ALEN);
  if (peak_write_l2(data, data_end, p, dmac, smac, v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6))) {
    *counter = PEAK_DECAP_ERROR;
    return XDP_DROP;
  }
  __u8 gue_proto = g->inner_family == PEAK_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
  struct udphdr *udp;
  if (v4) {
    struct iphdr *o = data + l3;
    if ((void *)(o + 1) > data_end) goto bad;
    __u32 w0 = bpf_htonl((0x45U << 24) | ((__u32)g->inner_tos << 16) | (ip_hl + ulen));
    __u32 w1 = bpf_htonl(PEAK_IP_DF);
    __u32 w2 = bpf_htonl(((__u32)PEAK_DEFAULT_TTL << 24) | ((__u32)IPPROTO_UDP << 16));
    __u32 w3 = *(peak_u32_alias *)src;
    __u32 w4 = *(const peak_u32_alias *)g->hint;
    __u16 check = ~csum_fold64((__u64)w0 + w1 + w2 + w3 + w4);
    peak_u32_alias *ow = (peak_u32_alias *)o;
    ow[0] = w0;
    ow[1] = w1;
    ow[2] = w2 | ((__u32)check << 16);
    ow[3] = w3;
    ow[4] = w4;
    udp = (void *)(o + 1);
  } else {
    struct ipv6hdr *o6 = data + l3;
    if ((void *)(o6 + 1) > data_end) goto bad;
    /* flow label from the LB's 15 entropy bits in the UDP source port: the same for every packet of the flow */
    *(__be32 *)o6 = bpf_htonl((6U << 28) | ((__u32)g->inner_tos << 20) | (bpf_ntohs(g->sport) & 0x7fff));
    o6->payload_len = bpf_htons(ulen);
    o6->nexthdr = IPPROTO_UDP;
    o6->hop_limit = PEAK_DEFAULT_TTL;
    peak_copy16(&o6->saddr, src);
    peak_copy16(&o6->daddr, g->hint);
    udp = (void *)(o6 + 1);
  }
  struct peak_gue_hdr *gh = (void *)(udp + 1);
  if ((void *)(gh + 1) > data_end) goto bad;
  udp->source = g->sport;
  udp->dest = bpf_htons(port);
  udp->len = bpf_htons(ulen);
  udp->check = 0; /* RFC 6935/6936: the inner packet carries its own checksum; the receiver is our decap */
  gh->ver_c_hlen = 0;
  gh->proto = gue_proto;
  gh->flags = 0;
  if (last_hop) {
    struct peak_gue_last_hop *mark = (void *)(gh + 1);
    if ((void *)(mark + 1) > data_end) goto bad;
    gh->ver_c_hlen = PEAK_GUE_HLEN_LAST_HOP;
    *(peak_u32_alias *)mark = bpf_htonl((__u32)PEAK_GUE_LAST_HOP_TYPE << 24);
  }
  *counter = PEAK_DECAP_SC_FORWARD;
  decap_count_target(g->hint_family, g->hint);
  if (fib.ifindex == ctx->ingress_ifindex) return XDP_TX;
  return bpf_redirect(fib.ifindex, 0);
bad:
  *counter = PEAK_DECAP_ERROR;
  return XDP_DROP;
}

/* decap_moved's key of the flow whose tuple decap_sc_tuple filled. */
static __always_inline void decap_moved_key(struct peak_decap_flow_key *k, __u8 family, const struct bpf_sock_tuple *t) {
  k->family = family;
  __builtin_memcpy(&k->tuple, t, sizeof(*t));
}

/* Has any flow been remembered here (decap_moved_used)? */
static __always_inline int decap_moved_in_use(void) {
  __u32 zero = 0;
  __u32 *used = bpf_map_lookup_elem(&decap_moved_used, &zero);
  return used && *used;
}

/* Remembers that the flow of `k` went to g's hint (new, or another owner than remembered): counted SC_MOVED_NEW. */
static __always_inline void decap_remember(const struct peak_decap_flow_key *k, const struct decap_gue *g) {
  struct peak_decap_moved *had = bpf_map_lookup_elem(&decap_moved, k);
  if (had && had->family == g->hint_family && decap_same16(had->owner, g->hint)) return;
  struct peak_decap_moved m = {.family = g->hint_family};
  peak_copy16(m.owner, g->hint);
  if (bpf_map_update_elem(&decap_moved, k, &m, BPF_ANY)) return;
  decap_count(PEAK_DECAP_SC_MOVED_NEW, 0);
  __u32 zero = 0;
  __u32 *used = bpf_map_lookup_elem(&decap_moved_used, &zero);
  if (used && !*used) *used = 1;
}

/* Forgets the flow of `k` (it is this host's now): counted SC_MOVED_DROPPED. */
static __always_inline void decap_forget(const struct peak_decap_flow_key *k) {
  if (bpf_map_delete_elem(&decap_moved, k) == 0) decap_count(PEAK_DECAP_SC_MOVED_DROPPED, 0);
}

#endif
