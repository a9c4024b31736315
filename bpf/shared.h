/* Everything userspace also sees: sizes, flags, map keys/values, counter enums. Includes nothing of the project. */
#ifndef PEAK_SHARED_H
#define PEAK_SHARED_H

#include <linux/types.h>

/* Sizes: compile-time fallbacks only. Every load sets max_entries of the maps sized by VIPs, backends and
 * conntrack from the config's limits, defaulting to DEFAULTS.limits in src/model/defaults.ts (MAP_LIMITS and
 * loadMapSizes in src/datapath/kernel.ts): these three never size a loaded map. */
#ifndef PEAK_MAX_VIPS
#define PEAK_MAX_VIPS 512 /* vip ids are 0..PEAK_MAX_VIPS-1 */
#endif
#ifndef PEAK_MAX_BACKENDS
#define PEAK_MAX_BACKENDS 4096 /* backend ids are 0..PEAK_MAX_BACKENDS-1 */
#endif
#ifndef PEAK_CT_SIZE
#define PEAK_CT_SIZE 262144 /* connection-table entries (split over per-CPU LRU lists) */
#endif
#ifndef PEAK_MAGLEV_MAX_M
#define PEAK_MAGLEV_MAX_M 65537 /* largest table size of the inner-map template */
#endif
#ifndef PEAK_VIP_INDEX_SLOTS
#define PEAK_VIP_INDEX_SLOTS 4096 /* slots of the VIP index (power of two; entry 0 is its header) */
#endif
/* Maglev slots per inner-map element: one 64-byte line. An array map stores each element at an 8-byte stride, so
 * 4-byte elements (one slot each, the layout before issue 15's packed tables) took 8 bytes per slot and 512 KiB per
 * 65537-slot table; 16 per element take 4 bytes per slot, and userspace's mmap view is a dense u32 array (word 0
 * the header, word 1 + s slot s). A power of two. Overridden only by a test fixture of the older layout. */
#ifndef PEAK_MAGLEV_LINE_SLOTS
#define PEAK_MAGLEV_LINE_SLOTS 16
#endif
#define PEAK_VIP_INDEX_PROBES 8 /* a key sits at most this many slots from its home slot (linear probing) */
#define PEAK_MAGLEV_DEFAULT_M 65537 /* default per-VIP table size (prime) */
#define PEAK_MAX_PROBES 8           /* slots probed forward past unusable backends before dropping */
#define PEAK_HASH_SEED 0x5ea4c0deU   /* fixed so every LB node hashes a flow the same way */
#define PEAK_DEFAULT_TTL 64          /* TTL / hop limit of outer and generated headers */
#define PEAK_CT_MAX_TIMEOUT 1000000  /* largest idle timeout in seconds (x HZ must fit in 32 bits) */
/* Bit of a current Maglev table entry (above every backend id): the slot's owner in the VIP's previous table
 * differs (or the tables differ in size). Set by userspace when it installs either table; only such slots
 * read the previous table, so a previous table costs nothing for the slots a change did not move. */
#define PEAK_SLOT_MOVED_BIT 31
#define PEAK_SLOT_F_MOVED (1U << PEAK_SLOT_MOVED_BIT)
/* Bit of a current Maglev table's header word [0] (above every M, at most 17 bits): the generation parity.
 * The VIP's previous table is maglev_prev_tables[vip_id * 2 + parity], so the previous table a packet reads is
 * chosen by the current table it read: one swap of the current table switches the pair (issue 15). */
#define PEAK_TABLE_PARITY_BIT 31
#define PEAK_TABLE_F_PARITY (1U << PEAK_TABLE_PARITY_BIT)
#define PEAK_TABLE_M_MASK (PEAK_TABLE_F_PARITY - 1)
/* Bit of a connection-table entry's vip_id (above every VIP id): the client ended the connection (a FIN or an RST
 * from it went through). Such an entry's `hash` holds that segment's sequence number S, and it serves only the
 * connection's tail: a packet with a sequence number from S - PEAK_CT_CLOSED_BEHIND (retransmissions of what came
 * before the FIN) to S + PEAK_CT_CLOSED_AHEAD (the FIN's own payload, the last ACK). Any other packet is a new
 * connection on the same 5-tuple whose SYN this node did not see (a client reusing its port, after ECMP moved the
 * tuple here): it is chosen afresh, as a miss would be, instead of going to the old connection's backend. */
#define PEAK_CT_CLOSED_BIT 31
#define PEAK_CT_F_CLOSED (1U << PEAK_CT_CLOSED_BIT)
#define PEAK_CT_CLOSED_BEHIND (1U << 24) /* 16 MiB */
#define PEAK_CT_CLOSED_AHEAD (1U << 16)  /* 64 KiB: the largest IP payload */

/* The #defines userspace must agree with, as an enum so they reach BTF: userspace reads them from there
 * (src/datapath/contract.ts; test/unit/layout-contract.test.ts). */
enum peak_const {
  PEAK_CONST_MAX_PROBES = PEAK_MAX_PROBES,
  PEAK_CONST_HASH_SEED = PEAK_HASH_SEED,
  PEAK_CONST_MAGLEV_DEFAULT_M = PEAK_MAGLEV_DEFAULT_M,
  PEAK_CONST_VIP_INDEX_SLOTS = PEAK_VIP_INDEX_SLOTS,
  PEAK_CONST_VIP_INDEX_PROBES = PEAK_VIP_INDEX_PROBES,
  PEAK_CONST_CT_MAX_TIMEOUT = PEAK_CT_MAX_TIMEOUT,
  PEAK_CONST_SLOT_MOVED_BIT = PEAK_SLOT_MOVED_BIT,
  PEAK_CONST_TABLE_PARITY_BIT = PEAK_TABLE_PARITY_BIT,
  PEAK_CONST_CT_CLOSED_BIT = PEAK_CT_CLOSED_BIT,
  PEAK_CONST_CT_CLOSED_BEHIND = PEAK_CT_CLOSED_BEHIND,
  PEAK_CONST_CT_CLOSED_AHEAD = PEAK_CT_CLOSED_AHEAD,
};

/* Address family byte used in keys (not AF_*: 4 and 6 read better in dumps). */
enum peak_family {
  PEAK_FAMILY_NONE = 0,
  PEAK_FAMILY_V4 = 4,
  PEAK_FAMILY_V6 = 6,
};

/* Per-VIP flag bits (peak_vip_value.flags). */
enum peak_vip_flag {
  PEAK_VIP_F_SRC_HASH = 1 << 0, /* hash on the source address only (client persistence) */
  PEAK_VIP_F_NO_CT = 1 << 1,    /* neither read nor fill the connection table */
  PEAK_VIP_F_STATELESS = 1 << 2, /* no connection table at all (as NO_CT); backends give moved flows a second
                                  * chance from the GUE previous-owner hint (issue 15) */
};

/* Backend states (peak_backend.state); NONE is an unset slot and is treated like DOWN. */
enum peak_backend_state {
  PEAK_BE_NONE = 0,
  PEAK_BE_UP = 1,       /* gets new and established flows */
  PEAK_BE_DRAINING = 2, /* keeps established flows (conntrack hits), no new ones */
  PEAK_BE_DOWN = 3,     /* skipped; its flows move by probing forward in the table */
};

/* How packets reach a backend (peak_backend.encap). */
enum peak_backend_encap {
  PEAK_ENCAP_IPIP = 0, /* IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6 (no IPv6 inner over IPv4) */
  PEAK_ENCAP_GUE = 1,  /* GUE over UDP (bpf/gue.h): either inner family over either outer; may carry a hint */
};

/* Global config flag bits (peak_config.flags). */
enum peak_config_flag {
  PEAK_CFG_F_READY = 1 << 0, /* config written; until then VIP traffic passes to the kernel */
  PEAK_CFG_F_FIB = 1 << 1,   /* resolve next hop with bpf_fib_lookup and XDP_REDIRECT */
};

/* vips key: destination address (v4 in the first 4 bytes, rest zero), port (network order, 0 = every
 * port), IP protocol, family. */
struct __attribute__((aligned(4))) peak_vip_key {
  __u8 addr[16];
  __be16 port;
  __u8 proto;
  __u8 family;
};

struct peak_vip_value {
  __u32 vip_id;     /* index into maglev_tables and vip_stats */
  __u32 flags;      /* enum peak_vip_flag bits */
  __u32 table_size; /* M as userspace built it (the datapath reads M from the table itself) */
};

/* VIP index (the datapath's copy of `vips`, read with inlined array lookups instead of a hash-map call):
 * entry 0 is a peak_vip_index_head, entries 1..SLOTS are slots; a key lives within PEAK_VIP_INDEX_PROBES
 * slots (wrapping) of slot 1 + (hash & (SLOTS - 1)); an empty slot (key.family 0) ends a probe. */
struct peak_vip_slot {
  struct peak_vip_key key;
  struct peak_vip_value value;
};

enum peak_vip_index_flag {
  PEAK_VIP_INDEX_F_USE_HASH = 1 << 0, /* the index does not hold every VIP: look the `vips` hash up instead */
};

/* Entry 0 of the index; as big as a slot. */
struct peak_vip_index_head {
  __u32 seed;    /* hash seed the builder chose (it retries seeds until every key fits) */
  __u32 flags;   /* enum peak_vip_index_flag bits */
  __u32 keys;    /* VIP keys in the slots (for dumps) */
  __u32 pad[5];
};

/* vip_addrs key: an address that has at least one VIP (for ICMP echo and errors, fragments). */
struct peak_addr_key {
  __u8 addr[16];
  __u8 family;
  __u8 pad[3];
};

struct peak_backend {
  __u8 addr[16]; /* outer destination; v4 in the first 4 bytes */
  __u8 family;   /* enum peak_family; NONE = unset slot */
  __u8 state;    /* enum peak_backend_state */
  __u8 encap;    /* enum peak_backend_encap (was padding: 0 = IPIP, so older entries read as before) */
  __u8 pad;
};

/* Connection table key: the client's 5-tuple as seen on the wire (ports in network order). Aligned so the
 * datapath builds and compares it with word accesses; the layout is the same. */
struct __attribute__((aligned(8))) peak_flow_key {
  __u8 src[16];
  __u8 dst[16];
  __be16 sport;
  __be16 dport;
  __u8 proto;
  __u8 family;
  __u8 pad[2];
};

struct peak_ct_value {
  __u32 backend_id;
  __u32 vip_id;    /* with PEAK_CT_F_CLOSED once the client ended the connection */
  __u32 hash;      /* the flow hash at selection (outer source, flow label): a hit need not recompute it; in a
                    * closed entry, the sequence number of the client's FIN or RST */
  __u32 last_seen; /* low 32 bits of jiffies at the last packet (idle timeout) */
};

/* Config (one entry). MACs as on the wire; addresses in network order. */
struct peak_config {
  __u8 own_mac[6];      /* source MAC of transmitted frames */
  __u8 next_hop_mac[6]; /* destination MAC of encapsulated frames (without FIB lookup) */
  __u8 src_v4[4];       /* outer IPv4 source prefix */
  __u8 src_v6[16];      /* outer IPv6 source prefix */
  __u8 src_v4_len;      /* prefix length; 32 = fixed address; 0 with src_v4 0 = no v4 source */
  __u8 src_v6_len;      /* prefix length; 128 = fixed; host bits come from the low 32 bits only */
  __u16 mtu;            /* largest IP packet on the egress link (encapsulated size) */
  __u32 flags;          /* enum peak_config_flag bits */
  __u32 ct_timeout_tcp; /* seconds a TCP entry may idle before its next packet is re-selected; 0 = never */
  __u32 ct_timeout_udp; /* the same for UDP */
  __be16 gue_port;      /* GUE UDP destination port, network order (0 = PEAK_GUE_DEFAULT_PORT) */
  __u16 pad;
};

/* Per-VIP and per-backend traffic counters (per-CPU). */
struct peak_traffic {
  __u64 packets;
  __u64 bytes;
};

/* Global counters: the index into the per-CPU stats array. Names are read from BTF by userspace. */
enum peak_counter {
  PEAK_CNT_RX_PACKETS = 0,   /* every packet the balancer saw */
  PEAK_CNT_XDP_PASS,         /* verdicts */
  PEAK_CNT_XDP_DROP,
  PEAK_CNT_XDP_TX,
  PEAK_CNT_XDP_REDIRECT,
  PEAK_CNT_CT_HIT,           /* the forwarding fast path's counters share the first cache line */
  PEAK_CNT_ENCAP_V4,         /* what was sent */
  PEAK_CNT_ENCAP_V6,
  PEAK_CNT_PASS_NOT_IP,      /* pass reasons */
  PEAK_CNT_PASS_MALFORMED,
  PEAK_CNT_PASS_NOT_VIP,
  PEAK_CNT_PASS_NOT_READY,
  PEAK_CNT_PASS_VIP_OTHER_PROTO,
  PEAK_CNT_PASS_ICMP_OTHER,
  PEAK_CNT_DROP_FRAGMENT,    /* drop reasons */
  PEAK_CNT_DROP_V6_EXTHDR,
  PEAK_CNT_DROP_NO_TABLE,
  PEAK_CNT_DROP_NO_BACKEND,
  PEAK_CNT_DROP_FAMILY,
  PEAK_CNT_DROP_NO_SOURCE,
  PEAK_CNT_DROP_ADJUST,
  PEAK_CNT_DROP_TOO_BIG,
  PEAK_CNT_CT_MISS,          /* connection table */
  PEAK_CNT_CT_INSERT,
  PEAK_CNT_CT_RESELECT,      /* a hit whose backend may not keep flows, or an entry of another VIP: re-selected */
  PEAK_CNT_CT_EXPIRED,       /* an entry idle past its timeout: the packet was re-selected */
  PEAK_CNT_ICMP_ECHO_REPLY,
  PEAK_CNT_ICMP_ERROR_FORWARDED,
  PEAK_CNT_ICMP_TOO_BIG_SENT,
  PEAK_CNT_FIB_REDIRECT,
  PEAK_CNT_FIB_FALLBACK,
  /* Added after the first release: new counters go here, at the end, so a pinned stats map of an older
   * build still holds the counters before them at the same offsets (KernelDatapath.counters() reads only
   * the counters the pinned map's value holds). */
  PEAK_CNT_DROP_L2_BROADCAST,  /* VIP packet in a broadcast/multicast Ethernet frame (RFC 1812 5.3.4) */
  PEAK_CNT_DROP_BAD_SOURCE,    /* VIP packet from an address no client has (peak_source_ok) or from the VIP */
  PEAK_CNT_DROP_TOO_BIG_NO_DF, /* IPv4 VIP packet too big after encapsulation with DF clear: no fragmenting */
  PEAK_CNT_ENCAP_GUE,          /* sent GUE-encapsulated (also counted in encap_v4 / encap_v6 by outer family) */
  PEAK_CNT_HINT_SENT,          /* GUE packets that carried a previous-owner hint (either kind) */
  PEAK_CNT_HINT_SKIPPED_OWNER, /* of those: the hint was the slot's owner that probing skipped (not up), or the
                                * down backend of a connection-table hit */
  PEAK_CNT_STATELESS_FORWARD,  /* packets of stateless VIPs forwarded (the connection table untouched) */
  PEAK_CNT_CT_CLOSED,          /* entries marked closed: a FIN or RST of the client went through */
  PEAK_CNT_CT_CLOSED_OTHER,    /* a packet outside a closed entry's tail (a new connection on the 5-tuple):
                                * chosen afresh */
  PEAK_CNT_MAX,
};

/* The stats map's value: every global counter of one CPU in one block (one lookup, few cache lines). */
struct peak_stats {
  __u64 counters[PEAK_CNT_MAX];
};

/* Decap program counters. */
enum peak_decap_counter {
  PEAK_DECAP_RX_PACKETS = 0,
  PEAK_DECAP_IPIP,    /* IPv4 outer, IPv4 inner */
  PEAK_DECAP_IP6IP6,  /* IPv6 outer, IPv6 inner */
  PEAK_DECAP_IP4IN6,  /* IPv6 outer, IPv4 inner */
  PEAK_DECAP_PASS,    /* not a tunnel packet for this host: untouched */
  PEAK_DECAP_ERROR,   /* tunnel packet we could not strip (truncated IPIP inner, failed head adjustment: passed
                       * untouched) or a second-chance frame whose rewrite failed half-way (dropped) */
  /* GUE (issue 15; appended: a pinned stats map of an older build keeps the counters above in place). Every
   * valid GUE packet for this host counts GUE and exactly one SC_* outcome below (LOCAL_CONNTRACK and
   * CONNTRACK_UNAVAILABLE are extra detail, not outcomes), or ERROR if rewriting it failed. */
  PEAK_DECAP_GUE,                      /* GUE to this host's port and address, well formed */
  PEAK_DECAP_GUE_MALFORMED,            /* GUE to us we cannot read (version, C bit, flags, Hlen, proto, hint,
                                        * inner header, lengths): dropped */
  PEAK_DECAP_SC_NO_HINT,               /* no previous owner: passed up */
  PEAK_DECAP_SC_SYN_IGNORED,           /* hint on a SYN: a new connection stays here; passed up */
  PEAK_DECAP_SC_NOT_TCP,               /* hint on UDP / other / an inner fragment: passed up (no second chance) */
  PEAK_DECAP_SC_LOOP_REFUSED,          /* hint names this host: passed up */
  PEAK_DECAP_SC_LOCAL_HIT,             /* this host holds the flow (socket or conntrack): passed up */
  PEAK_DECAP_SC_FORWARD,               /* re-encapsulated to the previous owner, hint cleared: XDP_TX/REDIRECT */
  PEAK_DECAP_SC_FIB_FAIL,              /* no route / neighbour / forwarding / MTU toward the previous owner:
                                        * passed up here, as without a second chance */
  PEAK_DECAP_SC_NO_SOURCE,             /* no outer source of the previous owner's family: passed up here */
  PEAK_DECAP_SC_DISABLED,              /* hint while second chance is off (config flag): passed up */
  PEAK_DECAP_SC_LOCAL_CONNTRACK,       /* detail of LOCAL_HIT: found in netfilter conntrack, not as a socket */
  PEAK_DECAP_SC_CONNTRACK_UNAVAILABLE, /* detail: no local state found without asking conntrack (kfunc missing) */
  PEAK_DECAP_NOT_FROM_LB,              /* tunnel packet for this host from an outer source not in decap_sources
                                        * (e.g. a CNI's IPIP overlay): untouched, XDP_PASS */
  PEAK_DECAP_SC_HINT_UNTRUSTED,        /* hint not honoured: no decap_sources configured, the outer source is not
                                        * in a --from (LB) prefix, or the hint is not a unicast address; passed
                                        * up (an outcome, like SC_NO_HINT) */
  PEAK_DECAP_SC_TAGGED,                /* hint on a VLAN-tagged frame: not forwarded (the egress would have to be
                                        * the VLAN device, which XDP cannot transmit on); passed up here */
  PEAK_DECAP_SC_LOCAL_SYNCOOKIE,       /* detail of LOCAL_HIT: only a listener, and the packet is the ACK of a
                                        * valid SYN cookie (the kernel makes the connection from it) */
  PEAK_DECAP_SC_TIME_WAIT_OTHER,       /* detail: a time-wait socket here holds the flow's addresses and ports,
                                        * but the segment's sequence number is far from it (a newer connection of
                                        * the same tuple, living on the previous owner): not local state */
  /* Moved flows remembered (decap_moved): a flow this host forwarded to its previous owner on the LB's hint keeps
   * going there after the LB stops hinting it (its previous table expired), while this host has no state for it. */
  PEAK_DECAP_SC_MOVED_FORWARD,         /* no hint, a remembered moved flow, no state here: re-encapsulated to its
                                        * owner as a hinted packet would be (an outcome, like SC_FORWARD) */
  PEAK_DECAP_SC_MOVED_NEW,             /* detail: a forwarded flow written to decap_moved (new, or a new owner) */
  PEAK_DECAP_SC_MOVED_DROPPED,         /* detail: a decap_moved entry dropped: the flow has state here now, or a
                                        * SYN of its addresses and ports came (a new connection), or the owner
                                        * became this host */
  PEAK_DECAP_SC_MOVED_SECOND_HOP,      /* detail of MOVED_FORWARD: the packet was a peer backend's second-chance
                                        * hop (a flow moved again after its hint expired), sent on marked as the
                                        * last hop (bpf/gue.h PEAK_GUE_LAST_HOP_TYPE) */
  PEAK_DECAP_MAX,
};

#endif
