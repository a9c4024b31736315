/* Backend choice: connection table first (entries idle past a timeout are stale), then the VIP's Maglev
 * table with bounded forward probing past backends that may not take the flow. Modelled exactly by
 * selectBackend() in src/datapath/flowhash.ts (with probeForward() in src/maglev/maglev.ts). */
#ifndef PEAK_SELECT_H
#define PEAK_SELECT_H

#include "maps.h"
#include "stats.h"
#include "hash.h"

/* Whether peak_select writes a new choice to the connection table. */
enum peak_select_record {
  PEAK_SELECT_LOOKUP_ONLY = 0, /* read the entry only (an ICMP error about the flow) */
  PEAK_SELECT_RECORD,          /* read it, and record a new choice (a packet of the flow) */
};

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

/* Kernel tick rate, resolved by libbpf at load (0 when the kernel config is unreadable). */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* Idle timeout of a flow's entry in jiffies (0 = never). An unknown HZ counts as 1000, the highest usual
 * rate: timeouts then last at least as long as configured. */
static __always_inline __u32 peak_ct_timeout(const struct peak_config *cfg, __u8 proto) {
  __u32 hz = CONFIG_HZ ? CONFIG_HZ : 1000;
  __u32 secs = proto == IPPROTO_UDP ? cfg->ct_timeout_udp : cfg->ct_timeout_tcp;
  return secs > PEAK_CT_MAX_TIMEOUT ? PEAK_CT_MAX_TIMEOUT * hz : secs * hz;
}

/* What the selection decided: backend id and entry, and the flow hash (outer source, flow label). */
struct peak_pick {
  struct peak_backend *be;
  __u32 id;
  __u32 hash;
};

/* The flow hash of the VIP's kind (5-tuple, or source only for client persistence). */
static __always_inline __u32 peak_vip_hash(const struct peak_flow_key *flow, const struct peak_vip_value *vip) {
  return (vip->flags & PEAK_VIP_F_SRC_HASH) ? peak_source_hash(flow) : peak_flow_hash(flow);
}

/* Full choice for a VIP packet: a fresh conntrack entry of this VIP whose backend keeps flows wins (not for
 * a TCP SYN, `is_syn`, or NO_CT VIPs); else Maglev, recorded in conntrack when `record` says so. Fills *out. */
static __always_inline int peak_select(struct peak_stats *st, const struct peak_flow_key *flow,
                                       const struct peak_vip_value *vip, const struct peak_config *cfg,
                                       int is_syn, enum peak_select_record record, struct peak_pick *out) {
  int use_ct = !(vip->flags & PEAK_VIP_F_NO_CT);
  __u32 now = bpf_jiffies64();
  if (use_ct && !is_syn) {
    struct peak_ct_value *ct = bpf_map_lookup_elem(&conntrack, flow);
    if (!ct) {
      peak_count(st, PEAK_CNT_CT_MISS);
    } else {
      __u32 timeout = peak_ct_timeout(cfg, flow->proto);
      if (timeout && now - ct->last_seen > timeout) {
        peak_count(st, PEAK_CNT_CT_EXPIRED);
      } else {
        /* An entry written for another VIP (the 5-tuple now matches a different VIP, or VIP and backend ids
         * were recycled) names a backend that may serve another service: re-select. */
        struct peak_backend *be = ct->vip_id == vip->vip_id ? peak_backend_get(ct->backend_id) : NULL;
        if (be && peak_backend_keeps_flows(be)) {
          peak_count(st, PEAK_CNT_CT_HIT);
          if (ct->last_seen != now) ct->last_seen = now;
          out->be = be;
          out->id = ct->backend_id;
          out->hash = ct->hash;
          return PEAK_PICK_OK;
        }
        peak_count(st, PEAK_CNT_CT_RESELECT);
      }
    }
  }
  out->hash = peak_vip_hash(flow, vip);
  int r = peak_maglev_pick(vip->vip_id, out->hash, &out->id, &out->be);
  if (r != PEAK_PICK_OK) return r;
  if (use_ct && record == PEAK_SELECT_RECORD) {
    struct peak_ct_value v = {.backend_id = out->id, .vip_id = vip->vip_id, .hash = out->hash, .last_seen = now};
    bpf_map_update_elem(&conntrack, flow, &v, BPF_ANY);
    peak_count(st, PEAK_CNT_CT_INSERT);
  }
  return PEAK_PICK_OK;
}

#endif
