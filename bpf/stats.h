/* Counter updates: global counters by enum peak_counter, per-VIP and per-backend traffic. */
#ifndef PEAK_STATS_H
#define PEAK_STATS_H

#include "maps.h"

/* This CPU's counter block, looked up once per packet (NULL only if the map were broken). */
static __always_inline struct peak_stats *peak_stats_get(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline void peak_count(struct peak_stats *st, __u32 counter) {
  if (counter < PEAK_CNT_MAX) st->counters[counter] += 1;
}

static __always_inline void peak_traffic_add(void *map, __u32 id, __u32 bytes) {
  struct peak_traffic *t = bpf_map_lookup_elem(map, &id);
  if (t) {
    t->packets += 1;
    t->bytes += bytes;
  }
}

/* Counts a verdict with its reason (reason 0 = none beyond the verdict) and returns the verdict. */
static __always_inline int peak_verdict(struct peak_stats *st, int verdict, __u32 reason) {
  if (reason) peak_count(st, reason);
  switch (verdict) {
    case XDP_PASS: peak_count(st, PEAK_CNT_XDP_PASS); break;
    case XDP_DROP: peak_count(st, PEAK_CNT_XDP_DROP); break;
    case XDP_TX: peak_count(st, PEAK_CNT_XDP_TX); break;
    case XDP_REDIRECT: peak_count(st, PEAK_CNT_XDP_REDIRECT); break;
  }
  return verdict;
}

#endif
