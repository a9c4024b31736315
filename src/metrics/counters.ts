// Datapath counters (enum peak_counter in bpf/shared.h) sorted into metric families whose series add up:
// one family per meaning (verdicts, drop reasons, pass reasons, forwards, ...), so sum() of a family is a total.

/** A metric family the global counters are exported in, and the label its members differ by. */
export interface CounterFamily {
  name: string;
  help: string;
  /** Label whose value tells the members apart; null: a single series. */
  label: string | null;
}

export const COUNTER_FAMILIES = {
  rx: {
    name: 'peak_xdp_rx_packets_total',
    help: 'Packets the balancer program saw (each ends in exactly one verdict)',
    label: null,
  },
  verdict: {
    name: 'peak_xdp_verdicts_total',
    help: 'XDP verdicts (pass, drop, tx, redirect): they add up to peak_xdp_rx_packets_total',
    label: 'verdict',
  },
  forward: {
    name: 'peak_xdp_forwarded_packets_total',
    help: 'Packets encapsulated to a backend, by outer header (ipv4: IPIP, ipv6: IP6IP6 / 4in6)',
    label: 'encap',
  },
  drop: {
    name: 'peak_xdp_dropped_packets_total',
    help: 'VIP packets dropped, by reason (enum peak_counter PEAK_CNT_DROP_* in bpf/shared.h)',
    label: 'reason',
  },
  pass: {
    name: 'peak_xdp_passed_packets_total',
    help: 'Packets passed to the kernel untouched, by reason (PEAK_CNT_PASS_*): not_vip is ordinary host traffic',
    label: 'reason',
  },
  ctLookup: {
    name: 'peak_xdp_conntrack_lookups_total',
    help: 'Connection-table lookups by result (hit: the flow had an entry; miss: Maglev picked)',
    label: 'result',
  },
  ctInsert: {
    name: 'peak_xdp_conntrack_inserts_total',
    help: 'Connection-table entries written for new flows',
    label: null,
  },
  ctReselect: {
    name: 'peak_xdp_conntrack_reselections_total',
    help:
      'Connection-table entries found but not followed, by reason (backend_unusable: its backend takes no ' +
      'flows or the entry was of another VIP; expired: idle past its timeout; closed_other: the entry of a ' +
      'closed connection and a packet outside its tail, a new connection on the same 5-tuple): the flow was ' +
      're-selected',
    label: 'reason',
  },
  ctClosed: {
    name: 'peak_xdp_conntrack_closed_total',
    help:
      "Connection-table entries marked closed (the client's FIN or RST went through): each serves only its " +
      "connection's tail from then on",
    label: null,
  },
  icmp: {
    name: 'peak_xdp_icmp_packets_total',
    help: 'ICMP handled by the balancer, by action (echo_reply, error_forwarded to a backend, too_big_sent to a client)',
    label: 'action',
  },
  fib: {
    name: 'peak_xdp_fib_lookups_total',
    help: 'FIB lookups for the next hop of encapsulated packets, by result (redirect, fallback to the configured MAC)',
    label: 'result',
  },
  gue: {
    name: 'peak_xdp_gue_encapsulated_packets_total',
    help: 'Packets sent GUE-encapsulated (UDP, encap.guePort); also counted in peak_xdp_forwarded_packets_total by outer family',
    label: null,
  },
  hint: {
    name: 'peak_xdp_second_chance_hints_total',
    help:
      'GUE packets that carried a previous-owner hint (a non-SYN TCP packet whose slot had another owner before, ' +
      'or whose owner was skipped): the backend gives the flow a second chance there',
    label: null,
  },
  hintSkipped: {
    name: 'peak_xdp_second_chance_hints_skipped_owner_total',
    help:
      'Of peak_xdp_second_chance_hints_total: hints naming an owner this node skipped (not up here, or the down ' +
      'backend of a connection-table hit): health views that disagree between LB nodes',
    label: null,
  },
  stateless: {
    name: 'peak_xdp_stateless_forwarded_packets_total',
    help: 'Packets of stateless VIPs forwarded without the connection table (no lookup, no insert)',
    label: null,
  },
  other: {
    name: 'peak_xdp_datapath_other_total',
    help: 'Datapath counters this build does not sort into a family (a newer BPF object): by counter name',
    label: 'counter',
  },
} as const satisfies Record<string, CounterFamily>;

export type FamilyKey = keyof typeof COUNTER_FAMILIES;

/** Where one counter goes: its family and its label value (null for single-series families). */
export interface CounterPlace {
  family: FamilyKey;
  value: string | null;
}

const FIXED: Record<string, CounterPlace> = {
  rx_packets: { family: 'rx', value: null },
  xdp_pass: { family: 'verdict', value: 'pass' },
  xdp_drop: { family: 'verdict', value: 'drop' },
  xdp_tx: { family: 'verdict', value: 'tx' },
  xdp_redirect: { family: 'verdict', value: 'redirect' },
  encap_v4: { family: 'forward', value: 'ipv4' },
  encap_v6: { family: 'forward', value: 'ipv6' },
  ct_hit: { family: 'ctLookup', value: 'hit' },
  ct_miss: { family: 'ctLookup', value: 'miss' },
  ct_insert: { family: 'ctInsert', value: null },
  ct_reselect: { family: 'ctReselect', value: 'backend_unusable' },
  ct_expired: { family: 'ctReselect', value: 'expired' },
  ct_closed_other: { family: 'ctReselect', value: 'closed_other' },
  ct_closed: { family: 'ctClosed', value: null },
  icmp_echo_reply: { family: 'icmp', value: 'echo_reply' },
  icmp_error_forwarded: { family: 'icmp', value: 'error_forwarded' },
  icmp_too_big_sent: { family: 'icmp', value: 'too_big_sent' },
  fib_redirect: { family: 'fib', value: 'redirect' },
  fib_fallback: { family: 'fib', value: 'fallback' },
  encap_gue: { family: 'gue', value: null },
  hint_sent: { family: 'hint', value: null },
  hint_skipped_owner: { family: 'hintSkipped', value: null },
  stateless_forward: { family: 'stateless', value: null },
};

/**
 * The family of a counter by its lower-case enum name (PEAK_CNT_ stripped): drop_* and pass_* by prefix, so
 * a new drop reason lands in the drop family without a change here; anything else unknown goes to "other".
 */
export function placeCounter(name: string): CounterPlace {
  const fixed = FIXED[name];
  if (fixed !== undefined) return fixed;
  const m = /^(drop|pass)_([a-z0-9_]+)$/.exec(name);
  if (m) return { family: m[1] === 'drop' ? 'drop' : 'pass', value: m[2]! };
  return { family: 'other', value: name };
}
