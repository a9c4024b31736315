/* Counter updates: global counters by enum peak_counter, per-VIP and per-backend traffic. */
#ifndef PEAK_STATS_H
#define PEAK_STATS_H

#include "maps.h"

static __always_inline void peak_count(__u32 counter) {
  __u64 *c = bpf_map_lookup_elem(&stats, &counter);
  if (c) *c += 1;
}

static __always_inline void peak_traffic_add(void *map, __u32 id, __u32 bytes) {
  struct peak_traffic *t = bpf_map_lookup_elem(map, &id);
  if (t) {
    t->packets += 1;
    t->bytes += bytes;
  }
}

/* Counts a verdict with its reason (reason 0 = none beyond the verdict) and returns the verdict. */
static __always_inline int peak_verdict(int verdict, __u32 reason) {
  if (reason) peak_count(reason);
  switch (verdict) {
    case XDP_PASS: peak_count(PEAK_CNT_XDP_PASS); break;
    case XDP_DROP: peak_count(PEAK_CNT_XDP_DROP); break;
    case XDP_TX: peak_count(PEAK_CNT_XDP_TX); break;
    case XDP_REDIRECT: peak_count(PEAK_CNT_XDP_REDIRECT); break;
  }
  return verdict;
}

#endif
