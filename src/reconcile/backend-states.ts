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
  const graceUntil = graceEnd(b.weight, b.drain, b.health, b.since, b.downGraceSeconds, b.now);
  return { state: stateWith(b.weight, b.drain, b.health, graceUntil), graceUntil };
}

/** backendState's graceUntil (ms), from plain arguments: no object made (desired states compute one per membership). */
function graceEnd(
  weight: number,
  drain: boolean,
  health: HealthStatus | 'unknown',
  since: number | undefined,
  downGraceSeconds: number | undefined,
  now: number | undefined,
): number | null {
  if (health !== 'down') return null;
  const graceMs = 1000 * (downGraceSeconds ?? 0);
  const byHealthAlone = !drain && weight > 0;
  if (byHealthAlone && graceMs > 0 && since !== undefined && now !== undefined && now < since + graceMs)
    return since + graceMs;
  return null;
}

/** backendState's state, given its graceUntil (graceEnd). */
const stateWith = (
  weight: number,
  drain: boolean,
  health: HealthStatus | 'unknown',
  graceUntil: number | null,
): BackendState =>
  health === 'down' ? (graceUntil !== null ? 'draining' : 'down') : drain || weight === 0 ? 'draining' : 'up';

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
  const c = vipBackendStateColumns(o);
  const states = new Array<BackendHealthState>(o.backends.length);
  for (let i = 0; i < states.length; i++)
    states[i] = { health: c.health[i]!, state: c.state[i]!, graceUntil: c.graceUntil[i]! };
  return { states, failOpen: c.failOpen };
}

/** vipBackendStates as columns (entry i: backend i). */
export interface BackendStateColumns {
  health: (HealthStatus | 'unknown')[];
  state: BackendState[];
  graceUntil: (number | null)[];
  failOpen: boolean;
}

/**
 * vipBackendStates into columns, `into`'s arrays reused when given (a caller that reads them before its next call:
 * desired states compute every membership's state, and an object per membership was ~170 bytes of garbage, ~85 MB
 * a sync at 512 x 1000 when every VIP had a backend flip).
 */
export function vipBackendStateColumns(
  o: VipBackendStatesInput,
  into?: BackendStateColumns,
): BackendStateColumns {
  const n = o.backends.length;
  const c = into ?? { health: [], state: [], graceUntil: [], failOpen: false };
  const sum = summarise(o, c.health);
  c.state.length = n;
  c.graceUntil.length = n;
  for (let i = 0; i < n; i++) {
    const grace = graceAt(o, sum, i);
    c.state[i] = stateAt(o, sum, i, grace);
    c.graceUntil[i] = grace;
  }
  c.failOpen = sum.failOpen;
  return c;
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

/** The summary of `o`; its health column in `health` (reused: its length set to the VIP's backends). */
function summarise(o: VipBackendStatesInput, health: (HealthStatus | 'unknown')[] = []): HealthSummary {
  const n = o.backends.length;
  health.length = n;
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

/** Backend i's down grace end (graceEnd), fail-open and the end of one counted: none while failing open. */
function graceAt(o: VipBackendStatesInput, sum: HealthSummary, i: number): number | null {
  const b = o.backends[i]!;
  const health = sum.health[i]!;
  if (sum.failOpen && serves(b)) return null;
  let since = health === 'down' ? o.since?.get(o.keys[i]!) : undefined;
  if (since !== undefined && serves(b) && sum.openEnded > since && sum.openEnded !== Infinity)
    since = sum.openEnded;
  return graceEnd(b.weight, b.drain, health, since, o.downGraceSeconds, o.now);
}

/** Backend i's state, given its grace end (graceAt): up while failing open. */
function stateAt(
  o: VipBackendStatesInput,
  sum: HealthSummary,
  i: number,
  grace: number | null,
): BackendState {
  const b = o.backends[i]!;
  if (sum.failOpen && serves(b)) return 'up';
  return stateWith(b.weight, b.drain, sum.health[i]!, grace);
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
    const grace = graceAt(o, sum, i);
    if (was.backends[i]!.state !== stateAt(o, sum, i, grace) || was.backends[i]!.graceUntil !== grace)
      return false;
  }
  return true;
}
