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

/* Word w of a Maglev inner table (bpf/maps.h: in element w / PEAK_MAGLEV_LINE_SLOTS); NULL past its end. */
static __always_inline __u32 *peak_table_word(void *table, __u32 w) {
  __u32 key = w / PEAK_MAGLEV_LINE_SLOTS;
  __u32 *line = bpf_map_lookup_elem(table, &key);
  return line ? &line[w & (PEAK_MAGLEV_LINE_SLOTS - 1)] : NULL;
}

/* Maglev: slot = hash % M, then up to PEAK_MAX_PROBES slots forward (wrapping) until an UP backend. *owner_out
 * is the slot's own entry as stored (the first probed, with PEAK_SLOT_F_MOVED), so the caller sees whether
 * probing skipped it and whether the previous table may name another owner; *parity_out the table's generation
 * parity (which previous table pairs with it). */
static __always_inline int peak_maglev_pick(__u32 vip_id, __u32 hash, __u32 *id_out,
                                            struct peak_backend **be_out, __u32 *owner_out, __u32 *parity_out) {
  void *table = bpf_map_lookup_elem(&maglev_tables, &vip_id);
  if (!table) return PEAK_PICK_NO_TABLE;
  __u32 *mp = peak_table_word(table, 0);
  if (!mp) return PEAK_PICK_NO_TABLE;
  __u32 head = *mp;
  *parity_out = head >> PEAK_TABLE_PARITY_BIT;
  __u32 m = head & PEAK_TABLE_M_MASK;
  if (m == 0) return PEAK_PICK_NO_TABLE;
  __u32 slot = hash % m;
#pragma unroll
  for (int i = 0; i < PEAK_MAX_PROBES; i++) {
    __u32 *entry = peak_table_word(table, slot + 1);
    if (!entry) return PEAK_PICK_NO_TABLE;
    __u32 raw = *entry;
    if (i == 0) *owner_out = raw;
    __u32 id = raw & ~PEAK_SLOT_F_MOVED;
    struct peak_backend *be = peak_backend_get(id);
    if (be && be->state == PEAK_BE_UP && be->family != PEAK_FAMILY_NONE) {
      *id_out = id;
      *be_out = be;
      return PEAK_PICK_OK;
    }
    slot = slot + 1 == m ? 0 : slot + 1;
  }
  return PEAK_PICK_NO_BACKEND;
}

/* The owner of the flow's slot in the VIP's previous table (the table before the last membership change;
 * its own M), or 0 when there is none. `parity`: the current table's, which picks the previous table paired
 * with it (maglev_prev_tables[vip_id * 2 + parity]). */
static __always_inline __u32 peak_prev_owner(__u32 vip_id, __u32 parity, __u32 hash) {
  __u32 idx = vip_id * 2 + (parity & 1);
  void *table = bpf_map_lookup_elem(&maglev_prev_tables, &idx);
  if (!table) return 0;
  __u32 *mp = peak_table_word(table, 0);
  if (!mp) return 0;
  __u32 m = *mp & PEAK_TABLE_M_MASK; /* written without parity; masked like the current table's */
  if (m == 0) return 0;
  __u32 *id = peak_table_word(table, hash % m + 1);
  /* a previous table is installed as it was current, moved-slot marks included: an id never has bit 31 */
  return id ? *id & ~PEAK_SLOT_F_MOVED : 0;
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

/* What the selection decided: backend id and entry, the flow hash (outer source, flow label), and the
 * previous-owner hint for GUE (NULL: none). */
struct peak_pick {
  struct peak_backend *be;
  struct peak_backend *hint;
  __u32 id;
  __u32 hash;
  __u32 hint_skipped; /* the hint is the slot's owner the choice skipped (draining) */
};

/* The flow hash of the VIP's kind (5-tuple, or source only for client persistence). */
static __always_inline __u32 peak_vip_hash(const struct peak_flow_key *flow, const struct peak_vip_value *vip) {
  return (vip->flags & PEAK_VIP_F_SRC_HASH) ? peak_source_hash(flow) : peak_flow_hash(flow);
}

/* A backend that may be named in a hint: reached with GUE (so it runs our decap, which is what the current owner's
 * second chance re-encapsulates to), of the chosen backend's family (the decap re-encapsulates from the address
 * the packet came to; it has no source of the other family), not the choice itself. A backend probing skipped
 * only while DRAINING (health-down within its downGraceSeconds, drained, weight 0: the control plane's grace
 * bounds how long): a DOWN backend's flows are dead, and forwarding them there would stall them until TCP gives
 * up instead of the new owner's fast reset. A previous-table owner in any state (bounded by retainSeconds). */
static __always_inline struct peak_backend *peak_hint_backend(__u32 id, const struct peak_pick *out, int skipped) {
  if (id == 0 || id == out->id) return NULL;
  struct peak_backend *be = peak_backend_get(id);
  if (!be || be->encap != PEAK_ENCAP_GUE || be->family != out->be->family) return NULL;
  if (skipped && be->state != PEAK_BE_DRAINING) return NULL;
  return be;
}

/* The hint for a packet going to a GUE backend, most specific first: the slot's owner in the previous table
 * when it differs from the current owner (the change being bridged; also covers a new owner not yet up), else
 * the current owner that probing skipped while it drains (health disagreement: this node sees it down within
 * its grace, others may not). Returns the hinted id (0: none). A conntrack hit on a draining backend is
 * honoured as a hit, so a reselected entry's backend is down or unset: never hinted as such. */
static __always_inline __u32 peak_pick_hint(__u32 vip_id, __u32 owner_raw, __u32 parity, struct peak_pick *out) {
  __u32 owner = owner_raw & ~PEAK_SLOT_F_MOVED;
  /* an unmarked slot has the same owner in the previous table: not read (the common case) */
  __u32 prev = owner_raw & PEAK_SLOT_F_MOVED ? peak_prev_owner(vip_id, parity, out->hash) : owner;
  struct peak_backend *h;
  if (prev != owner) {
    h = peak_hint_backend(prev, out, 0);
    if (h) {
      out->hint = h;
      return prev;
    }
  }
  h = peak_hint_backend(owner, out, 1);
  if (!h) return 0;
  out->hint = h;
  out->hint_skipped = 1;
  return owner;
}

/* What a packet tells the connection table about the end of its TCP connection. */
enum peak_seq_kind {
  PEAK_SEQ_NONE = 0, /* no sequence number to judge (UDP, an ICMP error about the flow): a closed entry serves it */
  PEAK_SEQ_CHECK,    /* a TCP segment: a closed entry serves it only within its tail */
  PEAK_SEQ_END,      /* a TCP FIN or RST: checked like PEAK_SEQ_CHECK, then its entry is marked closed */
};

/* Whether sequence number `seq` belongs to the tail of a connection whose FIN or RST carried `end`
 * (PEAK_CT_F_CLOSED): from PEAK_CT_CLOSED_BEHIND before it to PEAK_CT_CLOSED_AHEAD after it, modulo 2^32. */
static __always_inline int peak_ct_tail(__u32 end, __u32 seq) {
  return seq - end + PEAK_CT_CLOSED_BEHIND <= PEAK_CT_CLOSED_BEHIND + PEAK_CT_CLOSED_AHEAD;
}

/* Full choice for a VIP packet: a fresh conntrack entry of this VIP whose backend keeps flows wins (not for
 * a TCP SYN, `is_syn`, nor NO_CT / STATELESS VIPs); else Maglev, recorded in conntrack when `record` says so.
 * `want_hint` (a non-SYN TCP packet of the flow itself) lets a GUE choice carry a hint; a hinted choice is
 * not recorded (the next packet must carry the hint again; a hit would send it without), except over a
 * reselected entry whose backend the hint does not name; an entry hinted to its own backend is kept. A closed
 * entry (PEAK_CT_F_CLOSED) serves only its connection's tail (`seq`, as `seq_kind` says); another packet is
 * chosen like a miss. A FIN or RST marks the entry it hits or writes closed. Fills *out. */
static __always_inline int peak_select(struct peak_stats *st, const struct peak_flow_key *flow,
                                       const struct peak_vip_value *vip, const struct peak_config *cfg,
                                       int is_syn, enum peak_select_record record, int want_hint,
                                       enum peak_seq_kind seq_kind, __u32 seq, struct peak_pick *out) {
  int use_ct = !(vip->flags & (PEAK_VIP_F_NO_CT | PEAK_VIP_F_STATELESS));
  __u32 now = bpf_jiffies64();
  struct peak_ct_value *reselect_ct = NULL; /* this VIP's fresh entry whose backend may not keep the flow */
  if (use_ct && is_syn) {
    /* A SYN is chosen afresh and its entry written below; looked up now anyway (the result unused), the bucket's
     * cache miss overlaps the Maglev table's instead of being taken inside the insert's bucket lock. */
    bpf_map_lookup_elem(&conntrack, flow);
  } else if (use_ct) {
    struct peak_ct_value *ct = bpf_map_lookup_elem(&conntrack, flow);
    if (!ct) {
      peak_count(st, PEAK_CNT_CT_MISS);
    } else {
      __u32 timeout = peak_ct_timeout(cfg, flow->proto);
      if (timeout && now - ct->last_seen > timeout) {
        peak_count(st, PEAK_CNT_CT_EXPIRED);
      } else {
        __u32 vid = ct->vip_id;
        int closed = vid == (vip->vip_id | PEAK_CT_F_CLOSED);
        if (closed && seq_kind != PEAK_SEQ_NONE && !peak_ct_tail(ct->hash, seq)) {
          /* not the closed connection's: a new one on its 5-tuple, chosen (and recorded) as a miss is */
          peak_count(st, PEAK_CNT_CT_CLOSED_OTHER);
        } else {
          /* An entry written for another VIP (the 5-tuple now matches a different VIP, or VIP and backend ids
           * were recycled) names a backend that may serve another service: re-select. */
          struct peak_backend *be = vid == vip->vip_id || closed ? peak_backend_get(ct->backend_id) : NULL;
          if (be && peak_backend_keeps_flows(be)) {
            peak_count(st, PEAK_CNT_CT_HIT);
            if (ct->last_seen != now) ct->last_seen = now;
            out->be = be;
            out->id = ct->backend_id;
            if (closed) {
              out->hash = peak_vip_hash(flow, vip); /* the entry's hash field holds the FIN's sequence number */
            } else {
              out->hash = ct->hash;
              if (seq_kind == PEAK_SEQ_END) {
                /* the sequence number first: a packet that sees the mark reads it (a reader before the mark
                 * takes it for the flow hash: one packet's outer source port) */
                ct->hash = seq;
                asm volatile("" ::: "memory");
                ct->vip_id = vid | PEAK_CT_F_CLOSED;
                peak_count(st, PEAK_CNT_CT_CLOSED);
              }
            }
            return PEAK_PICK_OK;
          }
          if (be) reselect_ct = ct;
          peak_count(st, PEAK_CNT_CT_RESELECT);
        }
      }
    }
  }
  out->hash = peak_vip_hash(flow, vip);
  __u32 owner = 0, parity = 0;
  int r = peak_maglev_pick(vip->vip_id, out->hash, &out->id, &out->be, &owner, &parity);
  if (r != PEAK_PICK_OK) return r;
  __u32 hint_id = 0;
  if (want_hint && out->be->encap == PEAK_ENCAP_GUE) hint_id = peak_pick_hint(vip->vip_id, owner, parity, out);
  if (use_ct && record == PEAK_SELECT_RECORD) {
    if (hint_id && reselect_ct && reselect_ct->backend_id == hint_id) {
      /* hinted to the entry's own backend (its previous-table owner): the entry is the flow's known owner;
       * kept, and kept fresh, so the flow goes back to it directly once it is up again */
      if (reselect_ct->last_seen != now) reselect_ct->last_seen = now;
    } else if (!hint_id || reselect_ct) {
      /* a hinted miss is not recorded (the next packet must carry the hint again; a hit would send it
       * without); a reselected entry names a down backend the hint does not: rewritten to the new choice */
      struct peak_ct_value v = {.backend_id = out->id, .vip_id = vip->vip_id, .hash = out->hash, .last_seen = now};
      if (seq_kind == PEAK_SEQ_END) {
        v.vip_id |= PEAK_CT_F_CLOSED;
        v.hash = seq;
        peak_count(st, PEAK_CNT_CT_CLOSED);
      }
      bpf_map_update_elem(&conntrack, flow, &v, BPF_ANY);
      peak_count(st, PEAK_CNT_CT_INSERT);
    }
  }
  return PEAK_PICK_OK;
}

#endif
