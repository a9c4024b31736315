/* The balancer's maps, one comment each. Sizes are overridable defaults from shared.h. */
#ifndef PEAK_MAPS_H
#define PEAK_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shared.h"

/* VIP (address, port, protocol) -> id, flags, table size. Port 0 entries match every port. Userspace's record;
 * the datapath reads it only when the index says so (PEAK_VIP_INDEX_F_USE_HASH) or no index is installed. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, PEAK_MAX_VIPS);
  __type(key, struct peak_vip_key);
  __type(value, struct peak_vip_value);
} vips SEC(".maps");

/* One VIP index: header + slots (struct peak_vip_slot). Fixed size and no BPF_F_INNER_MAP, so the
 * verifier inlines lookups (a hash-map lookup is a call costing more than the whole index probe). */
struct vip_index_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, PEAK_VIP_INDEX_SLOTS + 1);
  __type(key, __u32);
  __type(value, struct peak_vip_slot);
};

/* [0] = the current VIP index; userspace rebuilds it aside on every VIP change and swaps it in one update. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, 1);
  __type(key, __u32);
  __array(values, struct vip_index_inner);
} vip_index SEC(".maps");

/* Addresses holding at least one VIP -> number of VIPs (ICMP echo/errors, fragments, ext headers). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, PEAK_MAX_VIPS);
  __type(key, struct peak_addr_key);
  __type(value, __u32);
} vip_addrs SEC(".maps");

/* Backend id -> address, family, state. A state flip needs no table rebuild. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, PEAK_MAX_BACKENDS);
  __type(key, __u32);
  __type(value, struct peak_backend);
} backends SEC(".maps");

/* Inner Maglev table template, a dense array of u32 words in elements of PEAK_MAGLEV_LINE_SLOTS: word [0] = M
 * (| PEAK_TABLE_F_PARITY in a current table), word [1 + slot] = backend id; word w is in element
 * w / PEAK_MAGLEV_LINE_SLOTS. Real tables are sized for M + 1 words each (BPF_F_INNER_MAP lets sizes differ);
 * table and M are swapped together, so a packet sees one or the other. BPF_F_MMAPABLE: userspace fills a new
 * table and reads an installed one through mmap (no per-entry syscall work). Outer maps accept only inner maps
 * with exactly these flags and this value size, so changing either needs a replace on upgrade. */
#ifndef PEAK_MAGLEV_INNER_FLAGS
#define PEAK_MAGLEV_INNER_FLAGS (BPF_F_INNER_MAP | BPF_F_MMAPABLE) /* a test fixture builds an older layout */
#endif
typedef __u32 peak_table_line[PEAK_MAGLEV_LINE_SLOTS]; /* an array type: BTF keeps its size (a struct seen only
                                                        * through pointers is emitted as a forward declaration) */
struct maglev_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, (PEAK_MAGLEV_MAX_M + PEAK_MAGLEV_LINE_SLOTS) / PEAK_MAGLEV_LINE_SLOTS);
  __type(key, __u32);
  __type(value, peak_table_line);
  __uint(map_flags, PEAK_MAGLEV_INNER_FLAGS);
};

/* VIP id -> its current Maglev table; userspace fills a new inner map aside and swaps the slot. Empty slot, or
 * the empty table (M = 0) a removed VIP's slot points at = no table. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, PEAK_MAX_VIPS);
  __type(key, __u32);
  __array(values, struct maglev_inner);
} maglev_tables SEC(".maps");

/* VIP id * 2 + the current table's parity bit -> its previous Maglev table (the one before the last
 * membership change; same inner shape, its own M). Two generations per VIP: userspace writes the next one at
 * the index no packet reads, then swaps the current table with the other parity (one update switches both).
 * Empty slot, or the empty table (M = 0) userspace clears slots with = no previous table. Read only for packets
 * that may carry a GUE previous-owner hint. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, PEAK_MAX_VIPS * 2);
  __type(key, __u32);
  __array(values, struct maglev_inner);
} maglev_prev_tables SEC(".maps");

/* Connection table: client 5-tuple -> backend id, flow hash, last seen; one hash, per-CPU LRU lists (no
 * global LRU lock). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, PEAK_CT_SIZE);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __type(key, struct peak_flow_key);
  __type(value, struct peak_ct_value);
} conntrack SEC(".maps");

/* Global configuration, one entry (MACs, outer source prefixes, MTU, flags). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct peak_config);
} config SEC(".maps");

/* Global counters: [0] = one struct peak_stats (counters by enum peak_counter) per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct peak_stats);
} stats SEC(".maps");

/* Per-VIP packets/bytes by vip id, per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, PEAK_MAX_VIPS);
  __type(key, __u32);
  __type(value, struct peak_traffic);
} vip_stats SEC(".maps");

/* Per-backend packets/bytes by backend id, per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, PEAK_MAX_BACKENDS);
  __type(key, __u32);
  __type(value, struct peak_traffic);
} backend_stats SEC(".maps");

#endif
