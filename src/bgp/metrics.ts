// Prometheus metrics for the BGP speaker, read from BgpSpeaker.status() at scrape time.
import { Counter, Gauge, Registry } from '../metrics/prom';
import { SessionState } from './session-state';
import type { SpeakerStatus } from './speaker';

/** Numeric session state for the state gauge (RFC 4271 order). */
export const STATE_VALUE: Record<SessionState, number> = {
  [SessionState.Idle]: 0,
  [SessionState.Connect]: 1,
  [SessionState.Active]: 2,
  [SessionState.OpenSent]: 3,
  [SessionState.OpenConfirm]: 4,
  [SessionState.Established]: 5,
};

/**
 * Register the BGP metrics on `registry`; `status` is called on every scrape, `workerRestarts` (the speaker
 * runs in a worker thread) too.
 */
export function registerBgpMetrics(o: {
  registry: Registry;
  status: () => SpeakerStatus;
  workerRestarts?: () => number;
  prefix?: string;
}): void {
  const p = o.prefix ?? 'peak_xdp_bgp_';
  const reg = [o.registry];
  let snap: SpeakerStatus | null = null;
  // One status() per scrape, shared by every metric below.
  const current = (): SpeakerStatus => (snap ??= o.status());
  const seen = new Map<string, number>();
  /** Counters are fed by deltas of the speaker's own running totals. */
  const feed = (c: Counter<string>, key: string, labels: Record<string, string>, total: number): void => {
    const prev = seen.get(key) ?? 0;
    // A lower total means the speaker was recreated: count from there.
    const delta = total >= prev ? total - prev : total;
    if (delta > 0) c.inc(labels, delta);
    seen.set(key, total);
  };

  new Gauge({
    name: `${p}session_state`,
    help: 'BGP FSM state per peer: 0 Idle, 1 Connect, 2 Active, 3 OpenSent, 4 OpenConfirm, 5 Established',
    labelNames: ['peer', 'peer_asn'],
    registers: reg,
    collect() {
      snap = null;
      this.reset();
      for (const s of current().peers)
        this.set({ peer: s.peer, peer_asn: String(s.peerAsn) }, STATE_VALUE[s.state]);
    },
  });
  new Gauge({
    name: `${p}session_up`,
    help: 'BGP session per peer: 1 while Established, else 0 (the state itself: session_state)',
    labelNames: ['peer', 'peer_asn'],
    registers: reg,
    collect() {
      this.reset();
      for (const s of current().peers)
        this.set({ peer: s.peer, peer_asn: String(s.peerAsn) }, s.state === SessionState.Established ? 1 : 0);
    },
  });
  new Counter({
    name: `${p}session_transitions_total`,
    help: 'BGP FSM state changes per peer',
    labelNames: ['peer'],
    registers: reg,
    collect() {
      for (const s of current().peers) feed(this, `tr|${s.peer}`, { peer: s.peer }, s.transitions);
    },
  });
  new Counter({
    name: `${p}messages_total`,
    help: 'BGP messages per peer, direction (in/out) and type',
    labelNames: ['peer', 'direction', 'type'],
    registers: reg,
    collect() {
      for (const s of current().peers)
        for (const [direction, counts] of [
          ['in', s.messagesIn],
          ['out', s.messagesOut],
        ] as const)
          for (const [type, n] of Object.entries(counts))
            feed(this, `m|${s.peer}|${direction}|${type}`, { peer: s.peer, direction, type }, n);
    },
  });
  new Gauge({
    name: `${p}announced_prefixes`,
    help: 'Prefixes currently announced to each peer',
    labelNames: ['peer'],
    registers: reg,
    collect() {
      this.reset();
      for (const s of current().peers) this.set({ peer: s.peer }, s.announced.length);
    },
  });
  new Gauge({
    name: `${p}received_prefixes`,
    help: 'Prefixes each peer announces to us (validated, not installed)',
    labelNames: ['peer'],
    registers: reg,
    collect() {
      this.reset();
      for (const s of current().peers) this.set({ peer: s.peer }, s.receivedPrefixes);
    },
  });
  new Counter({
    name: `${p}route_refresh_total`,
    help: 'ROUTE-REFRESH handling per peer: served (a re-advertisement, at most one per second), coalesced (folded into a pending one), ignored (family not negotiated)',
    labelNames: ['peer', 'result'],
    registers: reg,
    collect() {
      for (const s of current().peers)
        for (const [result, n] of [
          ['served', s.routeRefreshServed],
          ['coalesced', s.routeRefreshCoalesced],
          ['ignored', s.routeRefreshIgnored],
        ] as const)
          feed(this, `rr|${s.peer}|${result}`, { peer: s.peer, result }, n);
    },
  });
  new Counter({
    name: `${p}max_prefixes_exceeded_total`,
    help: 'Times a peer announced more than bgp.peers[].maxPrefixes prefixes (each: CEASE, session reset)',
    labelNames: ['peer'],
    registers: reg,
    collect() {
      for (const s of current().peers) feed(this, `mp|${s.peer}`, { peer: s.peer }, s.maxPrefixesExceeded);
    },
  });
  if (o.workerRestarts) {
    const restarts = o.workerRestarts;
    new Counter({
      name: `${p}worker_restarts_total`,
      help: 'Deaths of the BGP speaker worker thread (each one logged and restarted; sessions re-establish)',
      registers: reg,
      collect() {
        feed(this, 'worker', {}, restarts());
      },
    });
  }
  new Gauge({
    name: `${p}last_error_info`,
    help: 'Last session error per peer (value 1; the text is the error label)',
    labelNames: ['peer', 'error'],
    registers: reg,
    collect() {
      this.reset();
      for (const s of current().peers)
        if (s.lastError) this.set({ peer: s.peer, error: s.lastError.slice(0, 200) }, 1);
    },
  });
}
