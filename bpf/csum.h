/* Internet checksum helpers: folding, incremental update (RFC 1624), header and bounded packet sums. */
#ifndef PEAK_CSUM_H
#define PEAK_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* Folds a 64-bit one's-complement accumulator to 16 bits (not inverted). */
static __always_inline __u16 csum_fold64(__u64 s) {
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return (__u16)s;
}

/* RFC 1624 eqn 3: replaces the 16-bit word `from` by `to` under checksum *sum (all as stored). */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to) {
  __u32 s = (__u16)~*sum;
  s += (__u16)~from;
  s += to;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  *sum = (__u16)~s;
}

/* Checksum of a 20-byte IPv4 header without options, whose check field is zero (memory order). */
static __always_inline __u16 csum_ipv4_hdr20(const void *hdr) {
  const __u32 *w = hdr;
  __u64 s = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
  return ~csum_fold64(s);
}

/* Adds `nwords` 32-bit words starting at `p` (bounded by `end`, at most max_words) to an accumulator. */
#define PEAK_CSUM_MAX_WORDS 320
static __always_inline __u64 csum_add_words(__u64 acc, void *p, __u32 nwords, void *end) {
  for (__u32 i = 0; i < PEAK_CSUM_MAX_WORDS; i++) {
    if (i >= nwords) break;
    __u32 *w = (__u32 *)p + i;
    if ((void *)(w + 1) > end) break;
    acc += *w;
  }
  return acc;
}

#endif
