/* Flow hash: a murmur3_32-style mix over big-endian 32-bit words of packet headers only, so every LB node
 * hashes a flow alike. Twin in src/datapath/flowhash.ts (the cross-check test keeps them equal). */
#ifndef PEAK_HASH_H
#define PEAK_HASH_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "shared.h"
#include "mem.h"

static __always_inline __u32 peak_rotl32(__u32 x, __u32 r) { return (x << r) | (x >> (32 - r)); }

/* One murmur3 block step. */
static __always_inline __u32 peak_mix(__u32 h, __u32 k) {
  k *= 0xcc9e2d51U;
  k = peak_rotl32(k, 15);
  k *= 0x1b873593U;
  h ^= k;
  h = peak_rotl32(h, 13);
  return h * 5 + 0xe6546b64U;
}

/* murmur3 finaliser; len is the number of hashed bytes (4 per word). */
static __always_inline __u32 peak_fmix(__u32 h, __u32 len) {
  h ^= len;
  h ^= h >> 16;
  h *= 0x85ebca6bU;
  h ^= h >> 13;
  h *= 0xc2b2ae35U;
  h ^= h >> 16;
  return h;
}

/* Word i of a 16-byte address, as a big-endian number. */
static __always_inline __u32 peak_addr_word(const __u8 *a, int i) {
  return bpf_ntohl(*(const peak_u32_alias *)(a + 4 * i));
}

/* Hash of the 5-tuple: src, dst (1 word for v4, 4 for v6), (sport << 16 | dport), proto. */
static __always_inline __u32 peak_flow_hash(const struct peak_flow_key *k) {
  __u32 h = PEAK_HASH_SEED;
  if (k->family == PEAK_FAMILY_V4) {
    h = peak_mix(h, peak_addr_word(k->src, 0));
    h = peak_mix(h, peak_addr_word(k->dst, 0));
    h = peak_mix(h, ((__u32)bpf_ntohs(k->sport) << 16) | bpf_ntohs(k->dport));
    h = peak_mix(h, k->proto);
    return peak_fmix(h, 16);
  }
#pragma unroll
  for (int i = 0; i < 4; i++) h = peak_mix(h, peak_addr_word(k->src, i));
#pragma unroll
  for (int i = 0; i < 4; i++) h = peak_mix(h, peak_addr_word(k->dst, i));
  h = peak_mix(h, ((__u32)bpf_ntohs(k->sport) << 16) | bpf_ntohs(k->dport));
  h = peak_mix(h, k->proto);
  return peak_fmix(h, 40);
}

/* Hash of the source address only (client persistence). */
static __always_inline __u32 peak_source_hash(const struct peak_flow_key *k) {
  __u32 h = PEAK_HASH_SEED;
  if (k->family == PEAK_FAMILY_V4) return peak_fmix(peak_mix(h, peak_addr_word(k->src, 0)), 4);
#pragma unroll
  for (int i = 0; i < 4; i++) h = peak_mix(h, peak_addr_word(k->src, i));
  return peak_fmix(h, 16);
}

/* VIP index hash (seeded by the index header): address words (1 or 4), then port << 16 | proto << 8 | family.
 * Twin: vipIndexHash() in src/datapath/flowhash.ts. */
static __always_inline __u32 peak_vip_key_hash(__u32 seed, const __u8 *addr, __u8 family, __be16 port,
                                               __u8 proto) {
  __u32 tail = ((__u32)bpf_ntohs(port) << 16) | ((__u32)proto << 8) | family;
  __u32 h = seed;
  if (family == PEAK_FAMILY_V4) return peak_fmix(peak_mix(peak_mix(h, peak_addr_word(addr, 0)), tail), 8);
#pragma unroll
  for (int i = 0; i < 4; i++) h = peak_mix(h, peak_addr_word(addr, i));
  return peak_fmix(peak_mix(h, tail), 20);
}

#endif
