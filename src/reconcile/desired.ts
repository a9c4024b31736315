// Desired state: a pure function from config (+ health, + previous ids) to VIPs, backends and Maglev tables.
import type { BackendState, DatapathConfig, EncapSource, VipKey, VipSpec } from '../datapath/types';
import { buildTable, checkTableInput, MaglevBackend, NO_BACKEND } from '../maglev/maglev';
import type { HealthStatus } from '../health/state';
import type { Config, HealthCheckConfig, VipConfig } from '../model/config';
import { assignIds, backendKeyText, emptyIdState, GroupedIdMap, IdState, vipKeyText } from './ids';

/** Backend id 0 means "no backend": a zeroed table slot (ids start at 1). */
export const NO_BACKEND_ID = 0;

export interface DesiredBackend {
  /** Membership key "vipAddress:port/proto>backendAddress" (also the health-check key). */
  key: string;
  id: number;
  address: string;
  weight: number;
  drain: boolean;
  health: HealthStatus | 'unknown';
  /** down (failed checks) wins over draining (weight 0 or drain) wins over up; see backendState. */
  state: BackendState;
  /** Down by health check alone and within its grace: draining until then (ms, the clock of `now`). */
  graceUntil: number | null;
}

export interface DesiredVip {
  name: string;
  spec: VipSpec;
  backends: DesiredBackend[];
  /** The Maglev table (backend ids per slot, stored compactly); immutable, shared between equal inputs. */
  table: IdTable;
  healthCheck: HealthCheckConfig | null;
  /** Backends that take new flows (state up, fail-open ones included); 0: the VIP cannot be served (BGP
   * withdraws it). */
  usableBackends: number;
  /** Failing open: every backend that takes traffic (weight > 0, not drained) is down by its checks, and
   * all of them are up for forwarding (see vipBackendStates). */
  failOpen: boolean;
  /** The earliest graceUntil of its backends, or null. */
  nextGraceEnd: number | null;
}

export interface DesiredState {
  /** null: leave the datapath's config alone (not resolved yet). */
  datapathConfig: DatapathConfig | null;
  vips: DesiredVip[];
  /** Feed into the next desiredState call to keep ids stable. */
  ids: IdState;
  /** Names of VIPs with no usable backend. */
  unavailableVips: string[];
  /** Names of VIPs failing open (every backend failing its checks, all of them forwarded to). */
  failOpenVips: string[];
  /** When the earliest down grace ends (ms, the clock of `now`): call again then, it turns that backend
   * down. null: no grace running. */
  nextGraceEnd: number | null;
}

/** What a table is built from: its size and members (weight 0 already left out). */
export interface TableRecipe {
  size: number;
  members: readonly { name: string; weight: number; id: number }[];
  /** Member ids that take no new flows (down, draining): their slots name the owner probing would find. */
  skip?: readonly number[];
}

/**
 * A Maglev table of backend ids. Built from a recipe it holds only its members and builds the slots
 * when asked (`ids()`, `equals()`): the kernel holds the installed copy, so the control plane need not
 * (512 VIPs x 65537 slots would be 32 MiB even at 1 byte per slot). Built from an index table it keeps
 * member indices (1 byte per slot up to 256 members, 2 up to 65536).
 */
export class IdTable {
  /** Identity of the inputs (size, sorted address=id*weight): equal signatures, equal tables. */
  readonly signature: string;
  readonly size: number;
  /** Backend id per member index; [NO_BACKEND_ID] when the table has no member. */
  readonly #members: Uint32Array;
  /** Member index per slot, or null: built on demand from #names and #weights. */
  readonly #slots: Uint8Array | Uint16Array | Uint32Array | null;
  readonly #recipe: MaglevBackend[] | null;
  /** Member ids whose slots are redirected (recipe tables only). */
  readonly #skip: ReadonlySet<number>;

  constructor(signature: string, indexTable: Uint32Array, memberIds: readonly number[]);
  constructor(signature: string, recipe: TableRecipe);
  constructor(signature: string, from: Uint32Array | TableRecipe, memberIds: readonly number[] = []) {
    this.signature = signature;
    if (from instanceof Uint32Array) {
      const n = memberIds.length;
      this.size = from.length;
      this.#members = n === 0 ? Uint32Array.of(NO_BACKEND_ID) : Uint32Array.from(memberIds);
      const Slots = n <= 0x100 ? Uint8Array : n <= 0x10000 ? Uint16Array : Uint32Array;
      this.#slots = n === 0 ? new Uint8Array(from.length) : Slots.from(from);
      this.#recipe = null;
      this.#skip = new Set();
    } else {
      const backends = from.members.map((m) => ({ name: m.name, weight: m.weight }));
      // Bad input fails here, not later when the table is installed.
      this.size = checkTableInput({ backends, size: from.size });
      this.#members = Uint32Array.from(from.members, (m) => m.id);
      this.#slots = null;
      this.#recipe = backends;
      this.#skip = new Set(from.skip ?? []);
    }
  }

  /** Bytes of slot and member arrays held by this table (slots built on demand are not held). */
  get byteLength(): number {
    return (this.#slots?.byteLength ?? 0) + this.#members.byteLength;
  }

  /** Backend ids per slot, as the datapath installs them (a fresh array; built now for a recipe). */
  ids(): Uint32Array {
    const members = this.#members;
    if (this.#recipe !== null) {
      const out = buildTable({ backends: this.#recipe, size: this.size });
      for (let s = 0; s < out.length; s++) {
        const i = out[s]!;
        out[s] = i === NO_BACKEND ? NO_BACKEND_ID : members[i]!;
      }
      return redirectSkipped(out, this.#skip);
    }
    const slots = this.#slots!;
    const out = new Uint32Array(slots.length);
    for (let s = 0; s < slots.length; s++) out[s] = members[slots[s]!]!;
    return out;
  }

  /** True if a table read from a datapath holds exactly these ids. */
  equals(ids: Uint32Array): boolean {
    if (ids.length !== this.size) return false;
    if (this.#slots === null) {
      const mine = this.ids();
      for (let s = 0; s < mine.length; s++) if (ids[s] !== mine[s]) return false;
      return true;
    }
    const slots = this.#slots;
    const members = this.#members;
    for (let s = 0; s < slots.length; s++) if (ids[s] !== members[slots[s]!]) return false;
    return true;
  }
}

/** Memo of tables by signature; keeps what the last two desiredState calls used, drops the rest. */
export class TableCache {
  private current = new Map<string, IdTable>();
  private previous = new Map<string, IdTable>();
  hits = 0;
  misses = 0;

  /** Starts a new generation (desiredState calls it once per call). */
  rotate(): void {
    this.previous = this.current;
    this.current = new Map();
  }

  get(signature: string, build: () => IdTable): IdTable {
    let t = this.current.get(signature) ?? this.previous.get(signature);
    if (t !== undefined) this.hits++;
    else {
      this.misses++;
      t = build();
    }
    this.current.set(signature, t);
    return t;
  }

  get size(): number {
    return new Set([...this.current.keys(), ...this.previous.keys()]).size;
  }
}

export interface DesiredStateOptions {
  config: Config;
  /** Health by backend membership key; absent entries count as up (no blackhole on start or restart). */
  health?: ReadonlyMap<string, HealthStatus>;
  /** When each key's health last flipped (ms, HealthMonitor.since()); absent: long ago (no grace left). */
  healthSince?: ReadonlyMap<string, number>;
  /** The time now (ms, the clock of healthSince); absent: no grace applies (down is down at once). */
  now?: number;
  /** Ids from the previous call or from idStateFromDatapath; default: fresh. */
  ids?: IdState;
  datapathConfig?: DatapathConfig | null;
  /** Memo of tables (same inputs give the same table, so this changes speed only). */
  tables?: TableCache;
}

export const vipKeyOf = (v: VipConfig): VipKey => ({
  address: v.address,
  port: v.port,
  protocol: v.protocol,
});

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

/** Health input of one backend as desiredState sees it (for computing and for the memo's comparison). */
interface HealthInput {
  health: ReadonlyMap<string, HealthStatus>;
  since: ReadonlyMap<string, number> | undefined;
  now: number | undefined;
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
  /** Health by membership key (absent: unknown), when it last flipped (ms), and now (ms, same clock). */
  health: ReadonlyMap<string, HealthStatus>;
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
    const h = o.health.get(o.keys[i]!) ?? 'unknown';
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
function sameStates(was: DesiredVip, o: VipBackendStatesInput): boolean {
  const n = o.backends.length;
  if (was.backends.length !== n) return false;
  let serving = 0;
  let servingDown = 0;
  for (let i = 0; i < n; i++) {
    const h = o.health.get(o.keys[i]!) ?? 'unknown';
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

/**
 * Maglev table of backend ids; backends with weight 0 stay out, draining and down ones stay in (so the
 * table, and every other backend's slots, do not move when a state changes), but their slots name the
 * owner the datapath's forward probing would find (redirectSkipped): a new flow never needs more than one
 * probe, however many slots in a row a heavy down backend holds (the datapath gives up after
 * PEAK_MAX_PROBES and drops). Established flows keep a draining backend through the connection table.
 */
export function tableFor(tableSize: number, backends: readonly DesiredBackend[]): IdTable {
  const members = backends.filter((b) => b.weight > 0);
  return new IdTable(tableSignature(tableSize, backends), {
    size: tableSize,
    members: members.map((b) => ({ name: b.address, weight: b.weight, id: b.id })),
    skip: skippedMembers(members),
  });
}

/** Ids of members that take no new flows, sorted; none when no member does (nothing to redirect to). */
function skippedMembers(members: readonly DesiredBackend[]): number[] {
  const skip = members.filter((b) => b.state !== 'up').map((b) => b.id);
  return skip.length === members.length ? [] : skip.sort((a, b) => a - b);
}

export function tableSignature(tableSize: number, backends: readonly DesiredBackend[]): string {
  const members = backends.filter((b) => b.weight > 0);
  const parts = members.map((b) => `${b.address}=${b.id}*${b.weight}`).sort();
  const skip = skippedMembers(members);
  return `${tableSize}|${parts.join(',')}${skip.length > 0 ? `|skip:${skip.join(',')}` : ''}`;
}

/**
 * Rewrites, in place, each slot whose id is in `skip` to the first id after it (wrapping) that is not: what
 * unbounded forward probing from that slot picks. Slots of other ids are untouched. With every id skipped
 * (or none) the table is returned as it is (the datapath then finds no backend, as before).
 */
export function redirectSkipped(table: Uint32Array, skip: ReadonlySet<number>): Uint32Array {
  if (skip.size === 0) return table;
  const m = table.length;
  let anchor = -1;
  for (let s = m - 1; s >= 0; s--)
    if (!skip.has(table[s]!)) {
      anchor = s;
      break;
    }
  if (anchor < 0) return table;
  // Walk backwards once around the ring from the last kept slot, carrying the nearest kept id ahead.
  let carry = table[anchor]!;
  for (let k = 1; k < m; k++) {
    const s = (anchor - k + m) % m;
    const id = table[s]!;
    if (skip.has(id)) table[s] = carry;
    else carry = id;
  }
  return table;
}

/** Key strings per VIP config object: reused across reloads (validateConfig keeps unchanged VIPs' objects). */
const keyMemo = new WeakMap<VipConfig, { vip: string; members: string[] }>();
function keysOf(v: VipConfig): { vip: string; members: string[] } {
  let k = keyMemo.get(v);
  if (k === undefined) {
    const key = vipKeyOf(v);
    k = { vip: vipKeyText(key), members: v.backends.map((b) => backendKeyText(key, b.address)) };
    // Frozen configs never change; a mutable one could, so only frozen ones are memoised.
    if (isDeepFrozen(v)) keyMemo.set(v, k);
  }
  return k;
}

/** VIP configs known to be frozen all the way down (validateConfig's output is). */
const deepFrozen = new WeakSet<VipConfig>();
function isDeepFrozen(v: VipConfig): boolean {
  if (deepFrozen.has(v)) return true;
  const frozen =
    Object.isFrozen(v) &&
    Object.isFrozen(v.backends) &&
    v.backends.every((b) => Object.isFrozen(b)) &&
    (v.healthCheck === null || Object.isFrozen(v.healthCheck));
  if (frozen) deepFrozen.add(v);
  return frozen;
}

/**
 * What one desiredState call leaves for the next call that passes its `ids` back: the VIP configs and
 * results it saw, and the backend ids in use. It only speeds the next call up; results are the same.
 */
interface Memo {
  backendIds: GroupedIdMap;
  maxBackends: number;
  /** Bit per backend id in [0, maxBackends): in use. */
  used: Uint32Array;
  /** By VIP key text: the (deep-frozen) config a desired VIP was computed from, and the result. */
  byKey: Map<string, { config: VipConfig; desired: DesiredVip }>;
}
const memos = new WeakMap<IdState, Memo>();

const isUsed = (bits: Uint32Array, id: number): boolean => (bits[id >>> 5]! & (1 << (id & 31))) !== 0;
const setUsed = (bits: Uint32Array, id: number): void => {
  bits[id >>> 5]! |= 1 << (id & 31);
};
const clearUsed = (bits: Uint32Array, id: number): void => {
  bits[id >>> 5]! &= ~(1 << (id & 31));
};

interface BackendIds {
  ids: GroupedIdMap;
  cursor: number;
  used: Uint32Array;
  /** Per VIP: its group (and so its ids) is the very one the previous call produced for this config. */
  sameGroup: boolean[];
}

/** Backend ids from scratch: assignIds over every membership key (adoption preferences included). */
function assignAll(
  config: Config,
  keys: readonly { vip: string; members: string[] }[],
  prev: IdState,
): BackendIds {
  const memberKeys: string[] = [];
  const memberAddress = new Map<string, string>();
  config.vips.forEach((v, i) =>
    v.backends.forEach((b, j) => {
      const key = keys[i]!.members[j]!;
      memberKeys.push(key);
      if (prev.adoptable.length > 0) memberAddress.set(key, b.address);
    }),
  );
  const adoptable = new Map<string, number[]>();
  for (const a of prev.adoptable) adoptable.set(a.address, [...(adoptable.get(a.address) ?? []), a.id]);
  const space = assignIds(prev.backends, {
    keys: memberKeys,
    min: 1,
    max: config.limits.maxBackends,
    prefer: (key) => adoptable.get(memberAddress.get(key)!)?.shift(),
  });
  const groups = new Map<string, Map<string, number>>();
  const used = new Uint32Array(Math.ceil(config.limits.maxBackends / 32));
  keys.forEach((k) => {
    let g = groups.get(k.vip);
    if (g === undefined) groups.set(k.vip, (g = new Map()));
    for (const key of k.members) {
      const id = space.ids.get(key)!;
      g.set(key, id);
      setUsed(used, id);
    }
  });
  return {
    ids: new GroupedIdMap(groups),
    cursor: space.cursor,
    used,
    sameGroup: keys.map(() => false),
  };
}

/**
 * The same ids as assignAll gives, computed from the previous call's memo: VIPs whose config object is
 * unchanged keep their group as is; only changed VIPs' memberships are looked at. Null if it cannot
 * tell (duplicate VIP keys): the caller then assigns from scratch.
 */
function assignChanged(
  config: Config,
  keys: readonly { vip: string; members: string[] }[],
  prev: IdState,
  memo: Memo,
): BackendIds | null {
  const max = config.limits.maxBackends;
  const old = memo.backendIds;
  const groups = new Map<string, ReadonlyMap<string, number>>();
  const sameGroup: boolean[] = [];
  const changed: number[] = [];
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!.vip;
    if (groups.has(k)) return null;
    const was = memo.byKey.get(k);
    const g = old.group(k);
    const same =
      was !== undefined && g !== undefined && was.config === config.vips[i] && deepFrozen.has(was.config);
    sameGroup.push(same);
    if (same) groups.set(k, g);
    else {
      groups.set(k, new Map());
      changed.push(i);
    }
  }
  const used = memo.used.slice();
  // Free every id of a group that is not carried over (changed or removed VIP); kept keys re-claim theirs.
  for (const [k, g] of old.groups())
    if (groups.get(k) !== g) for (const id of g.values()) clearUsed(used, id);
  const kept = new Map<string, number>();
  for (const i of changed) {
    const before = old.group(keys[i]!.vip);
    if (before === undefined) continue;
    for (const key of keys[i]!.members) {
      const id = before.get(key);
      if (id !== undefined && id >= 1 && id < max && !isUsed(used, id) && !kept.has(key)) {
        kept.set(key, id);
        setUsed(used, id);
      }
    }
  }
  // New keys in config order take the next free id after the cursor, exactly as assignIds does.
  const span = max - 1;
  let cursor = prev.backends.cursor < 1 || prev.backends.cursor >= max ? 1 : prev.backends.cursor;
  for (const i of changed) {
    const g = groups.get(keys[i]!.vip) as Map<string, number>;
    for (const key of keys[i]!.members) {
      if (g.has(key)) continue;
      const id = kept.get(key);
      if (id !== undefined) {
        g.set(key, id);
        continue;
      }
      let tries = 0;
      while (isUsed(used, cursor)) {
        cursor = cursor + 1 >= max ? 1 : cursor + 1;
        if (++tries > span) throw new RangeError(`ids: all ${span} ids in 1..${max - 1} are in use`);
      }
      g.set(key, cursor);
      setUsed(used, cursor);
      cursor = cursor + 1 >= max ? 1 : cursor + 1;
    }
  }
  return { ids: new GroupedIdMap(groups), cursor, used, sameGroup };
}

/** Computes the desired datapath state. Pure: same inputs, same output (ids included). */
export function desiredState(opts: DesiredStateOptions): DesiredState {
  const { config } = opts;
  const prev = opts.ids ?? emptyIdState();
  const cache = opts.tables ?? new TableCache();
  cache.rotate();
  const healthIn: HealthInput = {
    health: opts.health ?? new Map<string, HealthStatus>(),
    since: opts.healthSince,
    now: opts.now,
  };

  const keys = config.vips.map(keysOf);
  const vipIds = assignIds(prev.vips, { keys: keys.map((k) => k.vip), min: 0, max: config.limits.maxVips });

  // Incremental when `ids` come straight from an earlier call with the same limits and nothing to adopt.
  const memo = opts.ids === undefined ? undefined : memos.get(opts.ids);
  const backendIds =
    (memo !== undefined &&
    memo.maxBackends === config.limits.maxBackends &&
    memo.backendIds === prev.backends.ids &&
    prev.adoptable.length === 0
      ? assignChanged(config, keys, prev, memo)
      : null) ?? assignAll(config, keys, prev);

  const byKey = new Map<string, { config: VipConfig; desired: DesiredVip }>();
  const vips: DesiredVip[] = config.vips.map((v, i) => {
    const key = vipKeyOf(v);
    const k = keys[i]!;
    const vipId = vipIds.ids.get(k.vip)!;
    const group = backendIds.ids.group(k.vip)!;
    // Same config and same ids as last time: only health can differ.
    const was = backendIds.sameGroup[i] ? memo?.byKey.get(k.vip)?.desired : undefined;
    let desired: DesiredVip;
    const stateInput: VipBackendStatesInput = {
      backends: v.backends,
      keys: k.members,
      failOpen: v.failOpen,
      downGraceSeconds: v.healthCheck?.downGraceSeconds,
      ...healthIn,
    };
    if (was !== undefined && was.spec.id === vipId && sameStates(was, stateInput)) {
      cache.get(was.table.signature, () => was.table);
      desired = was;
    } else {
      const st = vipBackendStates(stateInput);
      const backends: DesiredBackend[] = v.backends.map((b, j) => {
        const bkey = k.members[j]!;
        return {
          key: bkey,
          id: group.get(bkey)!,
          address: b.address,
          weight: b.weight,
          drain: b.drain,
          ...st.states[j]!,
        };
      });
      // The table depends on which members take new flows (redirected slots), so a state change can change it.
      const signature = tableSignature(v.tableSize, backends);
      desired = {
        name: v.name,
        spec: {
          key,
          id: vipId,
          flags: { sourceHash: v.persistence === 'source-ip', noConntrack: !v.conntrack },
          tableSize: v.tableSize,
        },
        backends,
        table: cache.get(signature, () => tableFor(v.tableSize, backends)),
        healthCheck: v.healthCheck,
        usableBackends: backends.filter((b) => b.state === 'up').length,
        failOpen: st.failOpen,
        nextGraceEnd: earliest(backends.map((b) => b.graceUntil)),
      };
    }
    if (deepFrozen.has(v)) byKey.set(k.vip, { config: v, desired });
    return desired;
  });

  const ids: IdState = {
    vips: vipIds,
    backends: { ids: backendIds.ids, cursor: backendIds.cursor },
    adoptable: [],
  };
  memos.set(ids, {
    backendIds: backendIds.ids,
    maxBackends: config.limits.maxBackends,
    used: backendIds.used,
    byKey,
  });
  const out: DesiredState = {
    datapathConfig: opts.datapathConfig ?? null,
    vips,
    ids,
    unavailableVips: vips.filter((v) => v.usableBackends === 0).map((v) => v.name),
    failOpenVips: vips.filter((v) => v.failOpen).map((v) => v.name),
    nextGraceEnd: earliest(vips.map((v) => v.nextGraceEnd)),
  };
  produced.set(out, { vips, count: vips.length });
  return out;
}

/** States desiredState returned (with their VIP list as returned): their VIP and backend ids are unique. */
const produced = new WeakMap<DesiredState, { vips: DesiredVip[]; count: number }>();

/**
 * True if `d` is a desiredState result whose VIP list was not replaced or resized since: every VIP id
 * and every backend id in it is then unique (what incremental planning relies on). Treat desired
 * states as values: never mutate one.
 */
export function fromDesiredState(d: DesiredState): boolean {
  const p = produced.get(d);
  return p !== undefined && p.vips === d.vips && p.count === d.vips.length;
}

/** The smallest non-null value, or null. */
function earliest(times: readonly (number | null)[]): number | null {
  let min: number | null = null;
  for (const t of times) if (t !== null && (min === null || t < min)) min = t;
  return min;
}

export interface ResolveDatapathConfigOptions {
  config: Config;
  /** MAC of config.interface. */
  ownMac: string;
  /** The default route's neighbour MAC, used when config.nextHopMac is 'auto'. */
  autoNextHopMac?: string;
  /** The interface's addresses, used when config.encapSource is 'auto'. */
  autoEncapAddresses?: readonly string[];
}

/** Fills the datapath config from the file plus what the daemon found on the host; throws naming the gap. */
export function resolveDatapathConfig(opts: ResolveDatapathConfigOptions): DatapathConfig {
  const { config } = opts;
  const nextHopMac = config.nextHopMac === 'auto' ? opts.autoNextHopMac : config.nextHopMac;
  if (nextHopMac === undefined)
    throw new Error('nextHopMac: "auto" but no neighbour of the default route was found');
  let v4: EncapSource | null = null;
  let v6: EncapSource | null = null;
  if (config.encapSource === 'auto') {
    for (const a of opts.autoEncapAddresses ?? []) {
      if (a.includes(':')) v6 ??= { prefix: a, prefixLength: 128 };
      else v4 ??= { prefix: a, prefixLength: 32 };
    }
  } else {
    for (const p of config.encapSource) {
      if (p.family === 4) v4 = { prefix: p.prefix, prefixLength: p.prefixLength };
      else v6 = { prefix: p.prefix, prefixLength: p.prefixLength };
    }
  }
  return {
    ownMac: opts.ownMac,
    nextHopMac,
    encapSourceV4: v4,
    encapSourceV6: v6,
    mtu: config.mtu,
    conntrackTimeouts: { ...config.conntrackTimeouts },
  };
}
