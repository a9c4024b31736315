// Backend states from health: down grace, fail-open, and the cheap "same states as last time" check.
import type { BackendState } from '../datapath/types';
import type { HealthStatus } from '../health/state';
import type { DesiredBackend, DesiredVip } from './desired';

export interface BackendStateInput {
  weight: number;
  drain: boolean;
  health: HealthStatus | 'unknown';
  /** When health last flipped (ms); undefined: unknown, counted as long ago. */
  since?: number;
  /** The VIP's healthCheck.downGraceSeconds (undefined: no grace). */
  downGraceSeconds?: number;
  /** Now (ms, the clock of `since`); undefined: no grace. */
  now?: number;
}

/**
 * A backend's datapath state. Down by health check alone: draining (keeps its established flows, gets no new
 * ones) for downGraceSeconds after it went down, so flapping checks do not reset connections it still
 * serves; then down (its flows are re-selected: a dead backend's connections are dead anyway, and clients get
 * a fast RST). Drained or weight 0 and failing checks: down at once. Otherwise draining (drain, weight 0) or up.
 */
export function backendState(b: BackendStateInput): { state: BackendState; graceUntil: number | null } {
  if (b.health === 'down') {
    const graceMs = 1000 * (b.downGraceSeconds ?? 0);
    const byHealthAlone = !b.drain && b.weight > 0;
    if (
      byHealthAlone &&
      graceMs > 0 &&
      b.since !== undefined &&
      b.now !== undefined &&
      b.now < b.since + graceMs
    )
      return { state: 'draining', graceUntil: b.since + graceMs };
    return { state: 'down', graceUntil: null };
  }
  return { state: b.drain || b.weight === 0 ? 'draining' : 'up', graceUntil: null };
}

type BackendHealthState = Pick<DesiredBackend, 'health' | 'state' | 'graceUntil'>;

export interface VipBackendStatesInput {
  /** The VIP's backends in config order, and their membership keys (same order). */
  backends: readonly { weight: number; drain: boolean }[];
  keys: readonly string[];
  /** The VIP's failOpen setting. */
  failOpen: boolean;
  /** The VIP's healthCheck.downGraceSeconds (undefined: no grace). */
  downGraceSeconds: number | undefined;
  /** Health by membership key (absent: `unchecked`), when it last flipped (ms), and now (ms, same clock). */
  health: ReadonlyMap<string, HealthStatus>;
  /** The health of a key `health` has no entry for: NEW_TARGET_STATUS for a VIP with checks (its target starts
   * with it), 'unknown' without. */
  unchecked: HealthStatus | 'unknown';
  since?: ReadonlyMap<string, number>;
  now?: number;
}

/**
 * The states of one VIP's backends (backendState each), and fail-open: when every backend that takes traffic
 * by config (weight > 0, not drained; at least one) is down by its checks and the VIP has failOpen, they are
 * all up. Every check failing at once is likelier the checks' fault (a checker starved by a flood, a broken
 * health endpoint, a firewall dropping probes) than every backend dead, and sending new flows to dead
 * backends costs little more than dropping them. Drained and weight-0 backends keep their own state.
 *
 * When fail-open ends (one backend passes again), the others are down by health, but fail-open kept their
 * flows: their down grace runs from when it ended, not from when they went down long before (else their
 * flows would move at once). "When it ended" is the earliest flip to up among the backends not down now; it
 * is a bound (a flip-up without fail-open before it lengthens a grace too), as no history is kept.
 */
export function vipBackendStates(o: VipBackendStatesInput): {
  states: BackendHealthState[];
  failOpen: boolean;
} {
  const sum = summarise(o);
  const states: BackendHealthState[] = new Array<BackendHealthState>(o.backends.length);
  for (let i = 0; i < states.length; i++) states[i] = stateAt(o, sum, i);
  return { states, failOpen: sum.failOpen };
}

/** What a VIP's backend states are computed from: each one's health, fail-open, when a fail-open ended. */
interface HealthSummary {
  health: readonly (HealthStatus | 'unknown')[];
  failOpen: boolean;
  /** The earliest flip to up of a serving backend not down now; -Infinity: one never flipped (up all along);
   * Infinity: not needed (no fail-open possible, or none down). */
  openEnded: number;
}

const serves = (b: { weight: number; drain: boolean }): boolean => b.weight > 0 && !b.drain;

/** Fail-open from the counts of serving backends and of those down. */
const failsOpen = (o: VipBackendStatesInput, serving: number, servingDown: number): boolean =>
  o.failOpen && serving > 0 && servingDown === serving;

function openEndedOf(o: VipBackendStatesInput, health: readonly (HealthStatus | 'unknown')[]): number {
  let t = Infinity;
  for (let i = 0; i < health.length; i++)
    if (serves(o.backends[i]!) && health[i] !== 'down')
      t = Math.min(t, o.since?.get(o.keys[i]!) ?? -Infinity);
  return t;
}

function summarise(o: VipBackendStatesInput): HealthSummary {
  const n = o.backends.length;
  const health = new Array<HealthStatus | 'unknown'>(n);
  let serving = 0;
  let servingDown = 0;
  for (let i = 0; i < n; i++) {
    const h = o.health.get(o.keys[i]!) ?? o.unchecked;
    health[i] = h;
    if (serves(o.backends[i]!)) {
      serving++;
      if (h === 'down') servingDown++;
    }
  }
  const failOpen = failsOpen(o, serving, servingDown);
  const openEnded = o.failOpen && !failOpen && servingDown > 0 ? openEndedOf(o, health) : Infinity;
  return { health, failOpen, openEnded };
}

function stateAt(o: VipBackendStatesInput, sum: HealthSummary, i: number): BackendHealthState {
  const b = o.backends[i]!;
  const health = sum.health[i]!;
  if (sum.failOpen && serves(b)) return { health, state: 'up', graceUntil: null };
  let since = health === 'down' ? o.since?.get(o.keys[i]!) : undefined;
  if (since !== undefined && serves(b) && sum.openEnded > since && sum.openEnded !== Infinity)
    since = sum.openEnded;
  const s = backendState({
    weight: b.weight,
    drain: b.drain,
    health,
    since,
    downGraceSeconds: o.downGraceSeconds,
    now: o.now,
  });
  return { health, ...s };
}

/**
 * True if `was` (computed from the same VIP config) has the states `o` gives now, fail-open included. Only
 * serving down backends are computed: any other's state follows its config and the VIP's fail-open alone
 * (a drained or weight-0 backend that is down is down at once). Allocates nothing unless one is down.
 */
export function sameStates(was: DesiredVip, o: VipBackendStatesInput): boolean {
  const n = o.backends.length;
  if (was.backends.length !== n) return false;
  let serving = 0;
  let servingDown = 0;
  for (let i = 0; i < n; i++) {
    const h = o.health.get(o.keys[i]!) ?? o.unchecked;
    if (h !== was.backends[i]!.health) return false;
    if (serves(o.backends[i]!)) {
      serving++;
      if (h === 'down') servingDown++;
    }
  }
  const failOpen = failsOpen(o, serving, servingDown);
  if (failOpen !== was.failOpen) return false;
  if (failOpen || servingDown === 0) return true;
  const health = was.backends.map((b) => b.health);
  const sum: HealthSummary = { health, failOpen, openEnded: o.failOpen ? openEndedOf(o, health) : Infinity };
  for (let i = 0; i < n; i++) {
    if (health[i] !== 'down' || !serves(o.backends[i]!)) continue;
    const b = stateAt(o, sum, i);
    if (was.backends[i]!.state !== b.state || was.backends[i]!.graceUntil !== b.graceUntil) return false;
  }
  return true;
}
