/* Ethernet rewrite: writes MACs and the frame's VLAN tags in front of a (new) L3 header. */
#ifndef PEAK_L2_H
#define PEAK_L2_H

#include "parse.h"

#define PEAK_L3_MASK 0x1f /* l3_off is 14, 18 or 22: masking keeps the verifier's bound tight */

/* Writes Ethernet + the packet's VLAN tags at data; the last ethertype becomes `proto`. 0 or -1. */
static __always_inline int peak_write_l2(void *data, void *data_end, const struct peak_pkt *p,
                                         const __u8 *dmac, const __u8 *smac, __be16 proto) {
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return -1;
  peak_mac_copy(eth->h_dest, dmac);
  peak_mac_copy(eth->h_source, smac);
  if (p->vlans == 0) {
    *(peak_be16_alias *)((void *)eth + PEAK_ETH_PROTO_OFF) = proto;
    return 0;
  }
  *(peak_be16_alias *)((void *)eth + PEAK_ETH_PROTO_OFF) = p->vlan_tpid[0];
  struct peak_vlan_hdr *v = (void *)(eth + 1);
  if ((void *)(v + 2) > data_end) return -1;
  v[0].tci = p->vlan_tci[0];
  if (p->vlans == 1) {
    v[0].proto = proto;
    return 0;
  }
  v[0].proto = p->vlan_tpid[1];
  v[1].tci = p->vlan_tci[1];
  v[1].proto = proto;
  return 0;
}

#endif
