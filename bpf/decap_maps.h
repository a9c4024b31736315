/* Decap program: its maps, its config and its counters. The config struct lives here (not in shared.h, which
 * the balancer owns); userspace reads its layout from decap.bpf.o's BTF like every other struct. */
#ifndef PEAK_DECAP_MAPS_H
#define PEAK_DECAP_MAPS_H

#include "shared.h"
#include "parse.h"
#include "gue.h"

/* Decap config flag bits (peak_decap_config.flags). Zero = every feature on: a config never written (an agent
 * of an older build) must give the documented defaults. */
enum peak_decap_config_flag {
  PEAK_DECAP_CFG_F_NO_SECOND_CHANCE = 1 << 0, /* strip hints, never forward to a previous owner */
  PEAK_DECAP_CFG_F_NO_CONNTRACK = 1 << 1,     /* skip the netfilter conntrack lookup (hosts without kube-proxy) */
  PEAK_DECAP_CFG_F_SOURCES = 1 << 2,          /* decap_sources holds entries: tunnels only from them (a BPF program
                                               * cannot ask an LPM trie whether it is empty; userspace sets this
                                               * bit with the entries, src/decap/config.ts) */
  PEAK_DECAP_CFG_F_NO_REMEMBER = 1 << 3,      /* forward on hints only: remember no moved flow (decap_moved) and
                                               * forward none from memory */
};

/* One entry; all zero = defaults. */
struct peak_decap_config {
  __be16 gue_port; /* GUE UDP destination port, network order (as peak_config.gue_port); 0 = PEAK_GUE_DEFAULT_PORT */
  __u16 flags;    /* enum peak_decap_config_flag bits */
  /* Outer source of a second-chance packet whose previous owner is of the other family than the packet came
   * in with (same family: the address the packet was sent to, one of ours). 0 = none: such packets drop. */
  __u8 src_v4[4];
  __u8 src_v6[16];
};

/* Accept tunnel packets to any destination (else only to addresses in decap_addrs). */
const volatile __u8 decap_any = 0;

/* This host's tunnel endpoint addresses -> unused value. Also the loop check: a hint naming one of these is
 * this host. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 64);
  __type(key, struct peak_addr_key);
  __type(value, __u32);
} decap_addrs SEC(".maps");

/* What a decap_sources prefix may send (value bits): an IPIP-kind CNI overlay (Calico IPIP, Flannel ipip) sends
 * IPIP between nodes; GUE to our port is ours only. */
enum peak_decap_source_kind {
  PEAK_DECAP_SRC_IPIP = 1 << 0, /* IPIP, IP6IP6, 4in6 */
  PEAK_DECAP_SRC_GUE = 1 << 1,  /* GUE to the GUE port (LB packets and second-chance hops from peer backends) */
};

/* LPM key of decap_sources: prefixlen counts the family word too (32 + the address prefix length), so one trie
 * holds both families and an IPv4 prefix never matches an IPv6 source. The pad keeps addr 4-byte aligned (the
 * program writes it in words; the verifier refuses misaligned stack stores) and is always 0. */
struct peak_decap_source_key {
  __u32 prefixlen;
  __u8 family; /* PEAK_FAMILY_V4/V6 */
  __u8 pad[3];
  __u8 addr[16];
};

/* Outer source prefixes tunnels are accepted from (the LB nodes' encap sources) -> enum peak_decap_source_kind
 * bits. Used only while decap_config.flags has PEAK_DECAP_CFG_F_SOURCES: then a tunnel packet for this host from
 * elsewhere is left untouched (counted not_from_lb), so a CNI's own IPIP overlay still reaches tunl0. */
struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 256);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct peak_decap_source_key);
  __type(value, __u32);
} decap_sources SEC(".maps");

/* Counters by enum peak_decap_counter, per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, PEAK_DECAP_MAX);
  __type(key, __u32);
  __type(value, __u64);
} decap_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct peak_decap_config);
} decap_config SEC(".maps");

/* Second-chance forwards by previous owner (the metric "forwards per backend"): address -> packets. LRU, so a
 * churning fleet never fills it; counts are a hint for operators, not an exact ledger. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 1024);
  __type(key, struct peak_addr_key);
  __type(value, __u64);
} decap_sc_targets SEC(".maps");

/* Room for remembered moved flows (decap_moved). */
#ifndef PEAK_DECAP_MOVED_SIZE
#define PEAK_DECAP_MOVED_SIZE 65536
#endif

/* A flow as the LB's packets carry it (client -> VIP): the family and the tuple bpf_skc_lookup_tcp takes (IPv4: its
 * first 12 bytes, the rest zero). */
struct peak_decap_flow_key {
  __u8 family; /* PEAK_FAMILY_V4/V6 of the inner packet */
  __u8 pad[3];
  struct bpf_sock_tuple tuple;
};

/* Where a moved flow goes: the previous owner an LB's hint named when this host forwarded the flow there. */
struct peak_decap_moved {
  __u8 family; /* PEAK_FAMILY_V4/V6 */
  __u8 pad[3];
  __u8 owner[16]; /* IPv4: the first 4 bytes */
};

/* Moved flows this host forwarded on a hint -> their previous owner (README: "Moved connections outlive the
 * hint"). Its packets keep going there once the LB hints them no more (the VIP's previous table expired), while this
 * host holds no state for the flow. An LRU (per-CPU lists, as the balancer's connection table): the least recently
 * used flow goes first when it is full. Only mid-connection TCP packets from an LB prefix are forwarded from it. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, PEAK_DECAP_MOVED_SIZE);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __type(key, struct peak_decap_flow_key);
  __type(value, struct peak_decap_moved);
} decap_moved SEC(".maps");

/* [0]: nonzero once a flow was written to decap_moved (packets without a hint skip the lookup until then). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
} decap_moved_used SEC(".maps");

static __always_inline void decap_count_target(__u8 family, const __u8 *addr) {
  struct peak_addr_key k = {.family = family};
  if (family == PEAK_FAMILY_V4)
    *(peak_u32_alias *)k.addr = *(const peak_u32_alias *)addr;
  else
    peak_copy16(k.addr, addr);
  __u64 *v = bpf_map_lookup_elem(&decap_sc_targets, &k);
  if (v) {
    __sync_fetch_and_add(v, 1);
    return;
  }
  __u64 one = 1;
  bpf_map_update_elem(&decap_sc_targets, &k, &one, BPF_NOEXIST);
}

static __always_inline int decap_count(__u32 c, int verdict) {
  __u64 *v = bpf_map_lookup_elem(&decap_stats, &c);
  if (v) *v += 1;
  return verdict;
}

/* Is addr one of this host's decap addresses (the map only, whatever decap_any says)? */
static __always_inline int decap_is_own(__u8 family, const void *addr) {
  struct peak_addr_key k = {.family = family};
  if (family == PEAK_FAMILY_V4)
    *(peak_u32_alias *)k.addr = *(const peak_u32_alias *)addr;
  else
    peak_copy16(k.addr, addr);
  return bpf_map_lookup_elem(&decap_addrs, &k) != NULL;
}

/* The enum peak_decap_source_kind bits of the longest decap_sources prefix holding `saddr` (0: none). */
static __always_inline __u32 decap_source_kinds(__u8 family, const void *saddr) {
  struct peak_decap_source_key k = {.family = family};
  if (family == PEAK_FAMILY_V4) {
    k.prefixlen = 32 + 32;
    *(peak_u32_alias *)k.addr = *(const peak_u32_alias *)saddr;
  } else {
    k.prefixlen = 32 + 128;
    peak_copy16(k.addr, saddr);
  }
  __u32 *v = bpf_map_lookup_elem(&decap_sources, &k);
  return v ? *v : 0;
}

/* May a tunnel of `kind` (enum peak_decap_source_kind) from `saddr` be decapsulated? Always, with no sources. */
static __always_inline int decap_from_ok(__u16 cfg_flags, __u8 family, const void *saddr, __u32 kind) {
  if (!(cfg_flags & PEAK_DECAP_CFG_F_SOURCES)) return 1;
  return (decap_source_kinds(family, saddr) & kind) != 0;
}

static __always_inline int decap_for_us(__u8 family, const void *addr) {
  if (decap_any) return 1;
  return decap_is_own(family, addr);
}

#endif
