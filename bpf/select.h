/* Backend choice: connection table first, then the VIP's Maglev table with bounded forward probing past
 * backends that may not take the flow. Modelled exactly by predictBackend() in src/datapath/flowhash.ts. */
#ifndef PEAK_SELECT_H
#define PEAK_SELECT_H

#include "maps.h"
#include "stats.h"

enum peak_pick_result {
  PEAK_PICK_OK = 0,
  PEAK_PICK_NO_TABLE,   /* no table installed for the VIP, or an empty one */
  PEAK_PICK_NO_BACKEND, /* PEAK_MAX_PROBES slots in a row hold unusable backends */
};

/* Looks a backend up; NULL when the id is out of range. */
static __always_inline struct peak_backend *peak_backend_get(__u32 id) {
  return bpf_map_lookup_elem(&backends, &id);
}

/* Maglev: slot = hash % M, then up to PEAK_MAX_PROBES slots forward (wrapping) until an UP backend. */
static __always_inline int peak_maglev_pick(__u32 vip_id, __u32 hash, __u32 *id_out,
                                            struct peak_backend **be_out) {
  void *table = bpf_map_lookup_elem(&maglev_tables, &vip_id);
  if (!table) return PEAK_PICK_NO_TABLE;
  __u32 zero = 0;
  __u32 *mp = bpf_map_lookup_elem(table, &zero);
  if (!mp) return PEAK_PICK_NO_TABLE;
  __u32 m = *mp;
  if (m == 0) return PEAK_PICK_NO_TABLE;
  __u32 slot = hash % m;
#pragma unroll
  for (int i = 0; i < PEAK_MAX_PROBES; i++) {
    __u32 key = slot + 1;
    __u32 *id = bpf_map_lookup_elem(table, &key);
    if (!id) return PEAK_PICK_NO_TABLE;
    struct peak_backend *be = peak_backend_get(*id);
    if (be && be->state == PEAK_BE_UP && be->family != PEAK_FAMILY_NONE) {
      *id_out = *id;
      *be_out = be;
      return PEAK_PICK_OK;
    }
    slot = slot + 1 == m ? 0 : slot + 1;
  }
  return PEAK_PICK_NO_BACKEND;
}

/* A conntrack hit may keep its backend while it is UP or DRAINING. */
static __always_inline int peak_backend_keeps_flows(const struct peak_backend *be) {
  return be->family != PEAK_FAMILY_NONE && (be->state == PEAK_BE_UP || be->state == PEAK_BE_DRAINING);
}

/* Full choice for a VIP packet. `use_ct` reads and fills the connection table; `record` = may insert. */
static __always_inline int peak_select(const struct peak_flow_key *flow, const struct peak_vip_value *vip,
                                       __u32 hash, int is_syn, int record, __u32 *id_out,
                                       struct peak_backend **be_out) {
  int use_ct = !(vip->flags & PEAK_VIP_F_NO_CT);
  if (use_ct && !is_syn) {
    struct peak_ct_value *ct = bpf_map_lookup_elem(&conntrack, flow);
    if (ct) {
      struct peak_backend *be = peak_backend_get(ct->backend_id);
      if (be && peak_backend_keeps_flows(be)) {
        peak_count(PEAK_CNT_CT_HIT);
        *id_out = ct->backend_id;
        *be_out = be;
        return PEAK_PICK_OK;
      }
      peak_count(PEAK_CNT_CT_RESELECT);
    } else {
      peak_count(PEAK_CNT_CT_MISS);
    }
  }
  int r = peak_maglev_pick(vip->vip_id, hash, id_out, be_out);
  if (r != PEAK_PICK_OK) return r;
  if (use_ct && record) {
    struct peak_ct_value v = {.backend_id = *id_out, .vip_id = vip->vip_id};
    bpf_map_update_elem(&conntrack, flow, &v, BPF_ANY);
    peak_count(PEAK_CNT_CT_INSERT);
  }
  return PEAK_PICK_OK;
}

#endif
