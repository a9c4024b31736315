/* GUE (draft-ietf-intarea-gue-09, variant 0) as PEAK-XDP uses it: the wire format shared by the balancer
 * (encapsulates, may add the previous-owner hint) and the decap program (strips it, may give the flow a second
 * chance at the previous owner). Plain definitions only; no code. Userspace mirrors these in src/datapath. */
#ifndef PEAK_GUE_H
#define PEAK_GUE_H

#include <linux/types.h>

#define PEAK_GUE_DEFAULT_PORT 6080 /* UDP destination port (Katran's default too) */

/* The 4-byte base header. Byte 0: ver (2 bits, 0) | C (1 bit, 0 = data) | Hlen (5 bits: optional fields in
 * 32-bit words). Byte 1: Proto (inner IP protocol: 4 = IPv4, 41 = IPv6). Bytes 2-3: Flags (we set none, so the
 * whole optional area is private data). */
struct peak_gue_hdr {
  __u8 ver_c_hlen;
  __u8 proto;
  __be16 flags;
};

#define PEAK_GUE_HLEN_MASK 0x1f
#define PEAK_GUE_VER_C_MASK 0xe0 /* must be 0: version 0, data message */

/* Private data: the previous owner of the flow's Maglev slot ("who owned this flow before the last change"). */
#define PEAK_GUE_HINT_TYPE 0x50 /* 'P' */

struct peak_gue_hint_head {
  __u8 type;     /* PEAK_GUE_HINT_TYPE */
  __u8 family;   /* 4 or 6: the address that follows */
  __u16 reserved; /* 0 */
};

struct peak_gue_hint4 {
  struct peak_gue_hint_head head;
  __be32 addr;
}; /* Hlen 2 */

struct peak_gue_hint6 {
  struct peak_gue_hint_head head;
  __be32 addr[4];
}; /* Hlen 5 */

#define PEAK_GUE_HLEN_HINT4 (sizeof(struct peak_gue_hint4) / 4)
#define PEAK_GUE_HLEN_HINT6 (sizeof(struct peak_gue_hint6) / 4)

/* Private data of a second-chance hop that goes no further. A backend's hop carries no option (Hlen 0); a backend
 * that sends a peer's hop on once more (to the owner it remembers, decap_moved) marks it with this, and the host
 * it reaches strips it whatever it remembers: two extra hops at most, never a loop. Builds without it read it as
 * private data of another kind (the packet is good) and never forward a peer's hop anyway. */
#define PEAK_GUE_LAST_HOP_TYPE 0x4c /* 'L' */

struct peak_gue_last_hop {
  __u8 type;        /* PEAK_GUE_LAST_HOP_TYPE */
  __u8 reserved[3]; /* 0 */
}; /* Hlen 1 */

#define PEAK_GUE_HLEN_LAST_HOP (sizeof(struct peak_gue_last_hop) / 4)

/* Outer UDP source port: the flow hash's low 14 bits in the dynamic port range 49152-65535, where RFC 7348 and
 * RFC 8086 put tunnel entropy (ECMP/RSS); firewalls expect such ports there. */
#define PEAK_GUE_SPORT(hash) ((__u16)(0xc000u | ((hash) & 0x3fffu)))

#endif
