/* Word-sized access to packet and map memory: unaligned access is fine on the JITs we run on (the verifier
 * only enforces alignment where the CPU needs it), and far cheaper than the byte loads and stores clang emits
 * for packed structs or memcpy of unknown alignment. Includes nothing of the project. */
#ifndef PEAK_MEM_H
#define PEAK_MEM_H

#include <linux/types.h>

#define PEAK_ETH_PROTO_OFF 12 /* h_proto in struct ethhdr (packed: clang loads it byte by byte) */
typedef __u16 __attribute__((__may_alias__)) peak_u16_alias;
typedef __be16 __attribute__((__may_alias__)) peak_be16_alias;
typedef __u32 __attribute__((__may_alias__)) peak_u32_alias;

/* Copies a 16-byte address as four 32-bit accesses. */
static __always_inline void peak_copy16(void *dst, const void *src) {
  peak_u32_alias *d = dst;
  const peak_u32_alias *s = src;
  d[0] = s[0];
  d[1] = s[1];
  d[2] = s[2];
  d[3] = s[3];
}

/* Copies a MAC address as one 32-bit and one 16-bit access. */
static __always_inline void peak_mac_copy(__u8 *dst, const __u8 *src) {
  *(peak_u32_alias *)dst = *(const peak_u32_alias *)src;
  *(peak_u16_alias *)(dst + 4) = *(const peak_u16_alias *)(src + 4);
}

#endif
