/* Packet parsing: Ethernet with up to two 802.1Q/802.1ad tags, IPv4 (any IHL), IPv6 (fixed header), L4 ports.
 * Every step checks bounds against data_end; offsets are kept small and bounded for the verifier. */
#ifndef PEAK_PARSE_H
#define PEAK_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shared.h"
#include "mem.h"

#define PEAK_MAX_VLANS 2
#define PEAK_IP_MF 0x2000
#define PEAK_IP_OFFSET 0x1fff
#define PEAK_IP_DF 0x4000
#define PEAK_NEXTHDR_FRAGMENT 44

/* ICMPv4 (RFC 792) header and the types we use. Defined here, not taken from <linux/icmp.h>: that header
 * pulls <linux/if.h> -> glibc's <sys/socket.h>, which under -target bpf needs the i386 libc headers. */
struct peak_icmphdr {
  __u8 type;
  __u8 code;
  __sum16 checksum;
  union {
    struct {
      __be16 id;
      __be16 sequence;
    } echo;
    struct {
      __be16 unused;
      __be16 mtu; /* next-hop MTU of a "fragmentation needed" (RFC 1191) */
    } frag;
  } un;
};
#define PEAK_ICMP_ECHOREPLY 0
#define PEAK_ICMP_DEST_UNREACH 3
#define PEAK_ICMP_ECHO 8
#define PEAK_ICMP_TIME_EXCEEDED 11
#define PEAK_ICMP_PARAMETERPROB 12
#define PEAK_ICMP_FRAG_NEEDED 4 /* code of DEST_UNREACH */

struct peak_vlan_hdr {
  __be16 tci;
  __be16 proto; /* the next ethertype */
};

/* What the parser learnt; offsets are from the start of the frame. */
struct peak_pkt {
  struct peak_stats *stats; /* this CPU's counters (set by the entry before parsing) */
  __u32 frame_len;   /* bytes in the frame as received */
  __u16 l3_off;      /* Ethernet + tags: 14, 18 or 22 */
  __u16 l4_off;      /* start of the L4 header */
  __u16 ip_len;      /* IP packet length from its header (v4 total length, v6 40 + payload) */
  __u8 vlans;        /* number of tags, 0..2 */
  __u8 tos;          /* IPv4 TOS / IPv6 traffic class */
  __u8 is_syn;       /* TCP SYN without ACK */
  __u8 is_end;       /* TCP FIN or RST: the client ends the connection */
  __u32 tcp_seq;     /* TCP sequence number (host order) */
  __u8 is_frag;      /* IPv4 fragment / IPv6 fragment header */
  __u8 exthdr;       /* IPv6 with a next header we do not parse */
  __u8 l2_group;     /* destination MAC is broadcast or multicast (its I/G bit) */
  __be16 vlan_tpid[PEAK_MAX_VLANS]; /* ethertype announcing each tag */
  __be16 vlan_tci[PEAK_MAX_VLANS];
  struct peak_flow_key flow; /* src/dst/proto/family always; ports for TCP/UDP */
};

enum peak_parse_result {
  PEAK_PARSE_OK = 0,
  PEAK_PARSE_NOT_IP,    /* neither IPv4 nor IPv6 */
  PEAK_PARSE_MALFORMED, /* truncated or inconsistent header */
};

/* Ethernet and tags; sets l3_off, vlans and returns the IP ethertype (network order) or 0. */
static __always_inline __be16 peak_parse_l2(void *data, void *data_end, struct peak_pkt *p) {
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return 0;
  __be16 proto = *(const peak_be16_alias *)((void *)eth + PEAK_ETH_PROTO_OFF); /* one load */
  p->l2_group = eth->h_dest[0] & 1;
  __u16 off = sizeof(*eth);
  p->vlans = 0;
#pragma unroll
  for (int i = 0; i < PEAK_MAX_VLANS; i++) {
    if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD)) break;
    struct peak_vlan_hdr *v = data + off;
    if ((void *)(v + 1) > data_end) return 0;
    p->vlan_tpid[i] = proto;
    p->vlan_tci[i] = v->tci;
    proto = v->proto;
    off += sizeof(*v);
    p->vlans = i + 1;
  }
  p->l3_off = off;
  return proto;
}

/* TCP/UDP ports and SYN; ICMP needs its 8-byte header. `avail` is the L4 bytes the IP header claims. */
static __always_inline int peak_parse_l4(void *data, void *data_end, struct peak_pkt *p, __u32 avail) {
  void *l4 = data + p->l4_off;
  switch (p->flow.proto) {
    case IPPROTO_TCP: {
      struct tcphdr *t = l4;
      if ((void *)(t + 1) > data_end || avail < sizeof(*t)) return PEAK_PARSE_MALFORMED;
      p->flow.sport = t->source;
      p->flow.dport = t->dest;
      p->is_syn = t->syn && !t->ack;
      p->is_end = t->fin || t->rst;
      p->tcp_seq = bpf_ntohl(t->seq);
      return PEAK_PARSE_OK;
    }
    case IPPROTO_UDP: {
      struct udphdr *u = l4;
      if ((void *)(u + 1) > data_end || avail < sizeof(*u)) return PEAK_PARSE_MALFORMED;
      p->flow.sport = u->source;
      p->flow.dport = u->dest;
      return PEAK_PARSE_OK;
    }
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: {
      if (l4 + 8 > data_end || avail < 8) return PEAK_PARSE_MALFORMED;
      return PEAK_PARSE_OK;
    }
  }
  return PEAK_PARSE_OK;
}

static __always_inline int peak_parse_ipv4(void *data, void *data_end, struct peak_pkt *p) {
  struct iphdr *ip = data + p->l3_off;
  if ((void *)(ip + 1) > data_end) return PEAK_PARSE_MALFORMED;
  if (ip->version != 4 || ip->ihl < 5) return PEAK_PARSE_MALFORMED;
  __u32 hlen = ip->ihl * 4;
  __u32 tot = bpf_ntohs(ip->tot_len);
  if (tot < hlen || p->l3_off + tot > p->frame_len) return PEAK_PARSE_MALFORMED;
  if ((void *)ip + hlen > data_end) return PEAK_PARSE_MALFORMED;
  p->l4_off = p->l3_off + hlen;
  p->ip_len = tot;
  p->tos = ip->tos;
  p->flow.family = PEAK_FAMILY_V4;
  p->flow.proto = ip->protocol;
  *(peak_u32_alias *)p->flow.src = ip->saddr;
  *(peak_u32_alias *)p->flow.dst = ip->daddr;
  if (ip->frag_off & bpf_htons(PEAK_IP_MF | PEAK_IP_OFFSET)) {
    p->is_frag = 1;
    return PEAK_PARSE_OK;
  }
  return peak_parse_l4(data, data_end, p, tot - hlen);
}

static __always_inline int peak_parse_ipv6(void *data, void *data_end, struct peak_pkt *p) {
  struct ipv6hdr *ip6 = data + p->l3_off;
  if ((void *)(ip6 + 1) > data_end) return PEAK_PARSE_MALFORMED;
  if (ip6->version != 6) return PEAK_PARSE_MALFORMED;
  __u32 plen = bpf_ntohs(ip6->payload_len);
  if (p->l3_off + sizeof(*ip6) + plen > p->frame_len) return PEAK_PARSE_MALFORMED;
  p->l4_off = p->l3_off + sizeof(*ip6);
  p->ip_len = sizeof(*ip6) + plen;
  p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
  p->flow.family = PEAK_FAMILY_V6;
  p->flow.proto = ip6->nexthdr;
  peak_copy16(p->flow.src, &ip6->saddr);
  peak_copy16(p->flow.dst, &ip6->daddr);
  switch (ip6->nexthdr) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
    case IPPROTO_ICMPV6:
      return peak_parse_l4(data, data_end, p, plen);
    case PEAK_NEXTHDR_FRAGMENT:
      p->is_frag = 1;
      return PEAK_PARSE_OK;
  }
  p->exthdr = 1;
  return PEAK_PARSE_OK;
}

/* Parses the frame into *p (zeroed by the caller). */
static __always_inline int peak_parse(void *data, void *data_end, struct peak_pkt *p) {
  p->frame_len = data_end - data;
  __be16 proto = peak_parse_l2(data, data_end, p);
  if (proto == bpf_htons(ETH_P_IP)) return peak_parse_ipv4(data, data_end, p);
  if (proto == bpf_htons(ETH_P_IPV6)) return peak_parse_ipv6(data, data_end, p);
  return PEAK_PARSE_NOT_IP;
}

#endif
