// Desired state: a pure function from config (+ health, + previous ids) to VIPs, backends and Maglev tables.
import type { BackendState, DatapathConfig, EncapSource, VipKey, VipSpec } from '../datapath/types';
import { type HealthChangeLog, type HealthStatus, NEW_TARGET_STATUS } from '../health/state';
import type { Config, Encap, HealthCheckConfig, VipConfig } from '../model/config';
import { DEFAULTS } from '../model/defaults';
import { allocateBackendIdsSteps, BackendIds, VipKeys } from './backend-ids';
import {
  BackendStateColumns,
  sameStates,
  VipBackendStatesInput,
  vipBackendStateColumns,
} from './backend-states';
import { assignIds, backendKeyText, emptyIdState, GroupedIdMap, IdState, vipKeyText } from './ids';
import { runAll, runSliced } from './steps';
import { IdTable, redirectedTable, TableCache, tableFor, tableSignatures } from './table';

export interface DesiredBackend {
  /** Membership key "vipAddress:port/proto>backendAddress" (also the health-check key). */
  key: string;
  id: number;
  address: string;
  weight: number;
  drain: boolean;
  /** The backend's, else its VIP's, else ipip. */
  encap: Encap;
  /** Its check's status; with none yet, NEW_TARGET_STATUS ('up', what its target starts with); 'unknown': its VIP
   * has no checks. */
  health: HealthStatus | 'unknown';
  /** down (failed checks) wins over draining (weight 0 or drain) wins over up; see backendState. */
  state: BackendState;
  /** Down by health check alone and within its grace: draining until then (ms, the clock of `now`). */
  graceUntil: number | null;
}

/** BackendConfig's fields a desired backend reads through (the config's own object: frozen, as the daemon's are). */
type MemberConfig = Readonly<{ address: string; weight: number; drain: boolean }>;

const ENCAP_CODES: readonly Encap[] = ['ipip', 'gue'];
const HEALTH_CODES: readonly (HealthStatus | 'unknown')[] = ['up', 'down', 'unknown'];
const STATE_CODES: readonly BackendState[] = ['up', 'draining', 'down'];
/** encap in bit 0, health in bits 1-2, state in bits 3-4 (codes: indices in the lists above). */
function memberBits(
  key: string,
  encap: Encap,
  health: HealthStatus | 'unknown',
  state: BackendState,
): number {
  const e = ENCAP_CODES.indexOf(encap);
  const h = HEALTH_CODES.indexOf(health);
  const st = STATE_CODES.indexOf(state);
  if (e < 0 || h < 0 || st < 0)
    throw new TypeError(
      `backend ${key}: encap ${encap}, health ${health} or state ${state} is not one of ours`,
    );
  return e | (h << 1) | (st << 3);
}

/**
 * A DesiredBackend in five fields: its address, weight and drain read from its config backend, its encap, health and
 * state as codes in one small integer. An object literal of the nine fields was 96 bytes, this is 64: one per
 * membership, and as much less garbage when a mass flip replaces them. The daemon at 512 x 1000 with checks, three
 * interleaved pairs: RSS settled 336-338 MB against 353-355, V8's heap 208-210 MB against 223-226.
 */
class Member implements DesiredBackend {
  readonly key: string;
  readonly id: number;
  readonly config: MemberConfig;
  readonly bits: number;
  readonly graceUntil: number | null;

  constructor(
    key: string,
    id: number,
    config: MemberConfig,
    encap: Encap,
    health: HealthStatus | 'unknown',
    state: BackendState,
    graceUntil: number | null,
  ) {
    this.key = key;
    this.id = id;
    // A config that may still change (hand-built, not frozen) is copied: a desired state never changes.
    this.config = Object.isFrozen(config)
      ? config
      : Object.freeze({ address: config.address, weight: config.weight, drain: config.drain });
    this.bits = memberBits(key, encap, health, state);
    this.graceUntil = graceUntil;
  }

  get address(): string {
    return this.config.address;
  }

  get weight(): number {
    return this.config.weight;
  }

  get drain(): boolean {
    return this.config.drain;
  }

  get encap(): Encap {
    return ENCAP_CODES[this.bits & 1]!;
  }

  get health(): HealthStatus | 'unknown' {
    return HEALTH_CODES[(this.bits >> 1) & 3]!;
  }

  get state(): BackendState {
    return STATE_CODES[(this.bits >> 3) & 3]!;
  }

  /** The nine fields, as the literal had them (JSON, logs). */
  toJSON(): DesiredBackend {
    return { key: this.key, id: this.id, address: this.address, weight: this.weight, drain: this.drain, encap: this.encap, health: this.health, state: this.state, graceUntil: this.graceUntil }; // prettier-ignore
  }
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

/** Previous-owner hints (second chance) as the config asks for them; see previous.ts. */
export interface SecondChanceSettings {
  enabled: boolean;
  retainSeconds: number;
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
  /** config.secondChance with its defaults. */
  secondChance: SecondChanceSettings;
}

export interface DesiredStateOptions {
  config: Config;
  /** Health by backend membership key; an absent entry of a checked VIP is NEW_TARGET_STATUS (up: no blackhole on
   * start or restart), of a VIP without checks 'unknown' (forwarded to as up). */
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

/** Health input of one backend as desiredState sees it (for computing and for the memo's comparison). */
interface HealthInput {
  health: ReadonlyMap<string, HealthStatus>;
  since: ReadonlyMap<string, number> | undefined;
  now: number | undefined;
}

/**
 * What one build leaves for the next that passes its `ids` back: the VIP configs and results it saw, and
 * the backend ids in use. It only speeds the next build up; results are the same.
 */
interface IdMemo {
  backendIds: GroupedIdMap;
  maxBackends: number;
  /** Bit per backend id in [0, maxBackends): in use. */
  used: Uint32Array;
  /** By VIP key text: the (deep-frozen) config a desired VIP was computed from, and the result. */
  byKey: Map<string, MemoEntry>;
  /** The health inputs the results were computed from; undefined once a later build took the arrays over (a
   * build from these ids then compares each VIP's health on its own: slower, same result). */
  health: HealthSnapshot | undefined;
}

/** Health inputs as arrays in map order: the next build finds what changed in one sequential pass; or, for a health
 * map with a change log, the version it showed (`log`; `keys` and `status` then empty). */
interface HealthSnapshot {
  keys: string[];
  status: HealthStatus[];
  log?: { source: object; version: number };
  sinceKeys: string[];
  /** As long as sinceKeys or longer. */
  since: Float64Array;
}

/**
 * Steps of a health diff: the snapshot of `health` and `since`, and the VIP key texts whose entries differ from
 * the memo's snapshot (added, removed or changed), or null without one (every VIP is then compared on its own).
 * One pass per map, in Map.forEach (no allocation per entry: ~10 ns per entry). The memo's arrays are taken
 * over and updated in place while the keys line up (the memo keeps none): at 512 x 1000 a fresh snapshot was
 * 12 MB of garbage per build, and its collection stalled the event loop.
 */
function* healthDiff(
  memo: IdMemo | undefined,
  health: ReadonlyMap<string, HealthStatus>,
  since: ReadonlyMap<string, number> | undefined,
): Generator<void, { next: HealthSnapshot; dirty: Set<string> | null }, void> {
  const sinceMap = since ?? new Map<string, number>();
  const was = memo?.health;
  // Taken before the first yield: a concurrent build from the same ids starts from fresh arrays.
  if (memo !== undefined) memo.health = undefined;
  const dirty = new Set<string>();
  const log = changeLogOf(health);
  if (log !== null) {
    // What changed, from the map's own log: O(changes), where a pass over 512,000 memberships was ~20 ms a sync.
    const version = log.changeVersion();
    const changed =
      was?.log !== undefined && was.log.source === log.changeSource
        ? log.changesSince(was.log.version)
        : null;
    if (changed !== null) for (const k of changed) dirty.add(groupOfKey(k));
    yield;
    // A `since` whose changes the same log tells (HealthMonitor.since()) needs no snapshot: a pass over it was
    // O(flipped memberships) a sync, and its arrays 8 MB once all 512,000 had flipped.
    const t = sameSource(since, log)
      ? { keys: [], values: new Float64Array(0) }
      : snapshotDiff(sinceMap, was?.sinceKeys, was?.since, growFloat64, dirty);
    const next: HealthSnapshot = {
      keys: [],
      status: [],
      sinceKeys: t.keys,
      since: t.values,
      log: { source: log.changeSource, version },
    };
    // without a usable log entry to start from: every VIP compared on its own (as without a memo)
    return { next, dirty: was === undefined || changed === null ? null : dirty };
  }
  const h = snapshotDiff(health, was?.keys, was?.status, (n) => new Array<HealthStatus>(n), dirty);
  yield;
  const t = snapshotDiff(sinceMap, was?.sinceKeys, was?.since, growFloat64, dirty);
  const next: HealthSnapshot = { keys: h.keys, status: h.values, sinceKeys: t.keys, since: t.values };
  return { next, dirty: was === undefined ? null : dirty };
}

/** A Float64Array of at least `n` entries (twice `from`'s at least), `from` copied in. */
function growFloat64(n: number, from: Float64Array | null): Float64Array {
  const a = new Float64Array(Math.max(n, 2 * (from?.length ?? 0)));
  if (from !== null) a.set(from);
  return a;
}

/** Whether `since` changes only where `log`'s statuses change, as it tells (HealthMonitor.since() and statuses()). */
function sameSource(since: ReadonlyMap<string, number> | undefined, log: HealthChangeLog): boolean {
  return since !== undefined && (since as Partial<HealthChangeLog>).changeSource === log.changeSource;
}

/** `health` as a change log, when it is one (HealthMonitor.statuses()). */
function changeLogOf(health: ReadonlyMap<string, HealthStatus>): HealthChangeLog | null {
  const h = health as Partial<HealthChangeLog>;
  return typeof h.changesSince === 'function' &&
    typeof h.changeVersion === 'function' &&
    h.changeSource != null
    ? (health as unknown as HealthChangeLog)
    : null;
}

/**
 * `map` as a snapshot (keys and values in map order), diffed against the previous snapshot `wasKeys` /
 * `wasValues` when given: the VIP of each key added, removed or with another value goes into `dirty`. Entries
 * are matched in order, so a map whose keys keep their order (new ones at the end, any removed: the health
 * monitor's) diffs exactly in one pass; any other order marks more VIPs than changed, never fewer. The previous
 * arrays are written in place (no garbage: at 512 x 1000 fresh ones were 8 MB per build, each membership change
 * a new size): an entry is written at a position already read. `values` may be longer than `keys` (a typed
 * array grows only).
 */
function snapshotDiff<V, A extends { [i: number]: V; length: number }>(
  map: ReadonlyMap<string, V>,
  wasKeys: string[] | undefined,
  wasValues: A | undefined,
  make: (n: number, from: A | null) => A,
  dirty: Set<string>,
): { keys: string[]; values: A } {
  if (wasKeys === undefined || wasValues === undefined) {
    const keys = new Array<string>(map.size);
    const values = make(map.size, null);
    let i = 0;
    map.forEach((v, k) => {
      keys[i] = k;
      values[i++] = v;
    });
    return { keys, values };
  }
  const keys = wasKeys;
  const n = keys.length;
  // A JS array grows as it is written; a typed one is replaced by a longer copy.
  const values =
    Array.isArray(wasValues) || wasValues.length >= map.size ? wasValues : make(map.size, wasValues);
  /** Next position to write, and next entry of the previous snapshot to match (i <= j until j reaches n). */
  let i = 0;
  let j = 0;
  map.forEach((v, k) => {
    // Previous keys before this one are gone (or come later: marked all the same).
    while (j < n && keys[j] !== k) dirty.add(groupOfKey(keys[j++]!));
    if (j === n) dirty.add(groupOfKey(k));
    else if (values[j] !== v) dirty.add(groupOfKey(k));
    if (j < n) j++;
    keys[i] = k;
    values[i++] = v;
  });
  for (; j < n; j++) dirty.add(groupOfKey(keys[j]!));
  keys.length = i;
  if (Array.isArray(values)) values.length = i;
  return { keys, values };
}

/** The VIP key text of a membership key ("10.0.0.1:80/tcp>10.1.0.5" -> "10.0.0.1:80/tcp"). */
function groupOfKey(key: string): string {
  const i = key.indexOf('>');
  return i < 0 ? key : key.slice(0, i);
}

interface MemoEntry {
  config: VipConfig;
  desired: DesiredVip;
  /** Every backend had the health an empty health map gives it (uncheckedHealth): with one, its states are the
   * same. */
  healthFree: boolean;
  /** Some backend was down by health: its state may depend on the time (down grace) and on since. */
  hasDown: boolean;
  /** The `now` its states were computed (or found the same) at; undefined: without one. */
  at: number | undefined;
}

/**
 * Whether states computed at `at` hold at `now` as well, for the same health inputs: a down backend's state changes
 * with the time only where a grace ends (draining until then, down after), and the earliest end still ahead at `at`
 * is `nextGraceEnd`. A clock that went back is not trusted (computed again).
 */
function sameAtTime(at: number | undefined, now: number | undefined, nextGraceEnd: number | null): boolean {
  if (now === undefined || at === undefined) return now === at;
  return at <= now && now < (nextGraceEnd ?? Infinity);
}

/** One build's state while its desired VIPs are made (DesiredStateBuilder.vipsFrom). */
interface VipRun {
  config: Config;
  keys: readonly VipKeys[];
  vipIds: ReadonlyMap<string, number>;
  backendIds: BackendIds;
  memo: IdMemo | undefined;
  healthIn: HealthInput;
  noHealth: boolean;
  /** VIP key texts whose health inputs changed since the memo's build; null: unknown (compare each VIP). */
  dirty: ReadonlySet<string> | null;
  cache: TableCache;
  byKey: Map<string, MemoEntry>;
  /** Made so far, in config order. */
  vips: DesiredVip[];
}

/** Milliseconds of desired-state work between event-loop turns in desiredStateAsync. */
export const DESIRED_SLICE_MS = 5;

/**
 * Builds desired states, remembering what makes the next build cheap: key strings and frozenness per VIP
 * config object (validateConfig keeps unchanged VIPs' objects), and per returned id state what it was built
 * from. Memory only, keyed weakly by objects the caller holds; the results do not depend on it.
 */
export class DesiredStateBuilder {
  readonly #keys = new WeakMap<VipConfig, VipKeys>();
  /** VIP configs known to be frozen all the way down (validateConfig's output is). */
  readonly #frozen = new WeakSet<VipConfig>();
  readonly #memos = new WeakMap<IdState, IdMemo>();

  /** Computes the desired datapath state. Pure: same inputs, same output (ids included). */
  build(opts: DesiredStateOptions): DesiredState {
    return runAll(this.steps(opts));
  }

  /** build(), in slices of `sliceMs` with event-loop turns between them: the same result, no long stall.
   * The inputs (config, health maps, ids) must not change until it resolves. */
  buildAsync(opts: DesiredStateOptions, sliceMs = DESIRED_SLICE_MS): Promise<DesiredState> {
    return runSliced(this.steps(opts), sliceMs);
  }

  /** build() as steps: each yield is a point where the caller may give the event loop a turn. */
  private *steps(opts: DesiredStateOptions): Generator<void, DesiredState, void> {
    const { config } = opts;
    const prev = opts.ids ?? emptyIdState();
    const cache = opts.tables ?? new TableCache();
    cache.rotate();
    const healthIn: HealthInput = {
      health: opts.health ?? new Map<string, HealthStatus>(),
      since: opts.healthSince,
      now: opts.now,
    };

    const keys: VipKeys[] = [];
    while (keys.length < config.vips.length) {
      this.keysFrom(config.vips, keys);
      yield;
    }
    const vipIds = assignIds(prev.vips, { keys: keys.map((k) => k.vip), min: 0, max: config.limits.maxVips });
    const memo = opts.ids === undefined ? undefined : this.#memos.get(opts.ids);
    const backendIds = yield* this.backendIds(config, keys, prev, memo);
    const { next: health, dirty } = yield* healthDiff(memo, healthIn.health, healthIn.since);

    const run: VipRun = {
      config,
      keys,
      vipIds: vipIds.ids,
      backendIds,
      memo,
      healthIn,
      // No health entry at all: a VIP none of whose backends had one keeps its states (all from config).
      noHealth: healthIn.health.size === 0,
      dirty,
      cache,
      byKey: new Map(),
      vips: [],
    };
    while (run.vips.length < config.vips.length) {
      this.vipsFrom(run);
      yield;
    }
    const { vips, byKey } = run;

    const ids: IdState = {
      vips: vipIds,
      backends: { ids: backendIds.ids, cursor: backendIds.cursor },
      adoptable: [],
    };
    this.#memos.set(ids, {
      backendIds: backendIds.ids,
      maxBackends: config.limits.maxBackends,
      used: backendIds.used,
      byKey,
      health,
    });
    const out: DesiredState = {
      datapathConfig: opts.datapathConfig ?? null,
      vips,
      ids,
      unavailableVips: vips.filter((v) => v.usableBackends === 0).map((v) => v.name),
      failOpenVips: vips.filter((v) => v.failOpen).map((v) => v.name),
      nextGraceEnd: earliest(vips, (v) => v.nextGraceEnd),
      secondChance: { ...(config.secondChance ?? DEFAULTS.secondChance) },
    };
    produced.set(out, { vips, count: vips.length });
    return out;
  }

  /**
   * Desired VIPs from `run.vips.length` on: reused ones in a tight loop, up to and including the next one
   * that costs work per backend (computed, or its health compared): the caller may pause after it. A plain method, not part of the
   * step generator: V8 optimises a long-running generator body poorly.
   */
  private vipsFrom(run: VipRun): void {
    const { config, keys, vips } = run;
    while (vips.length < config.vips.length) {
      const i = vips.length;
      const v = config.vips[i]!;
      const k = keys[i]!;
      // Same config and same ids as last time: only health can differ.
      const was = run.backendIds.sameGroup[i] ? run.memo?.byKey.get(k.vip) : undefined;
      const vipId = run.vipIds.get(k.vip)!;
      let desired: DesiredVip;
      let healthFree: boolean;
      let hasDown: boolean;
      let at = run.healthIn.now;
      // Whether this VIP cost work per backend (computed, or its states compared): a slicing point.
      let costly = false;
      // Health inputs of this VIP unchanged, and none of its backends down or no grace of theirs ended since: its
      // states are the same. (A VIP with a backend down was compared backend by backend each sync: at 512 x 1000
      // with every backend failing its checks, 512,000 lookups a sync.)
      const clean =
        run.dirty !== null &&
        !run.dirty.has(k.vip) &&
        was !== undefined &&
        (!was.hasDown || sameAtTime(was.at, at, was.desired.nextGraceEnd));
      if (was !== undefined && was.desired.spec.id === vipId && ((run.noHealth && was.healthFree) || clean)) {
        // Not looked up in `cache`: the result holds its table (a lookup per VIP per sync costs a Map probe).
        desired = was.desired;
        healthFree = was.healthFree;
        hasDown = was.hasDown;
        at = was.at;
      } else {
        const group = run.backendIds.ids.group(k.vip)!;
        desired = desiredVip(v, k, vipId, group, run.healthIn, run.cache, was?.desired);
        costly = true;
        const same = desired === was?.desired;
        const unchecked = uncheckedHealth(v);
        healthFree = same ? was!.healthFree : desired.backends.every((b) => b.health === unchecked);
        hasDown = same ? was!.hasDown : desired.backends.some((b) => b.health === 'down');
      }
      if (this.#frozen.has(v)) run.byKey.set(k.vip, { config: v, desired, healthFree, hasDown, at });
      vips.push(desired);
      if (costly) return;
    }
  }

  /** Key strings of `vips` from `keys.length` on, up to and including the next one not memoised (a string
   * per membership: the caller may pause after it). */
  private keysFrom(vips: readonly VipConfig[], keys: VipKeys[]): void {
    while (keys.length < vips.length) {
      const v = vips[keys.length]!;
      const known = this.#keys.get(v);
      keys.push(known ?? this.keysOf(v));
      if (known === undefined) return;
    }
  }

  /** Key strings of a VIP config: memoised for frozen configs (a mutable one could change). */
  private keysOf(v: VipConfig): VipKeys {
    let k = this.#keys.get(v);
    if (k === undefined) {
      const key = vipKeyOf(v);
      k = { vip: vipKeyText(key), members: v.backends.map((b) => backendKeyText(key, b.address)) };
      if (this.isDeepFrozen(v)) this.#keys.set(v, k);
    }
    return k;
  }

  private isDeepFrozen(v: VipConfig): boolean {
    if (this.#frozen.has(v)) return true;
    const frozen =
      Object.isFrozen(v) &&
      Object.isFrozen(v.backends) &&
      v.backends.every((b) => Object.isFrozen(b)) &&
      (v.healthCheck === null || Object.isFrozen(v.healthCheck));
    if (frozen) this.#frozen.add(v);
    return frozen;
  }

  /**
   * Backend ids. Incremental (groups of unchanged VIPs carried over) when `ids` come straight from an
   * earlier build with the same limits and nothing to adopt; from scratch (adoption preferences) otherwise.
   */
  private *backendIds(
    config: Config,
    keys: readonly VipKeys[],
    prev: IdState,
    memo: IdMemo | undefined,
  ): Generator<void, BackendIds, void> {
    const max = config.limits.maxBackends;
    if (
      memo !== undefined &&
      memo.maxBackends === max &&
      memo.backendIds === prev.backends.ids &&
      prev.adoptable.length === 0
    ) {
      const frozen = this.#frozen;
      const unchanged = (i: number): boolean => {
        const was = memo.byKey.get(keys[i]!.vip);
        return was !== undefined && was.config === config.vips[i] && frozen.has(was.config);
      };
      return yield* allocateBackendIdsSteps({
        keys,
        max,
        prev: prev.backends,
        carry: { groups: memo.backendIds, used: memo.used, unchanged },
      });
    }
    if (prev.adoptable.length === 0)
      return yield* allocateBackendIdsSteps({ keys, max, prev: prev.backends });
    const address = new Map<string, string>();
    config.vips.forEach((v, i) => v.backends.forEach((b, j) => address.set(keys[i]!.members[j]!, b.address)));
    const adoptable = new Map<string, number[]>();
    for (const a of prev.adoptable) adoptable.set(a.address, [...(adoptable.get(a.address) ?? []), a.id]);
    const prefer = (key: string): number | undefined => adoptable.get(address.get(key)!)?.shift();
    return yield* allocateBackendIdsSteps({ keys, max, prev: prev.backends, prefer });
  }
}

/** The health of a backend without a status: a checked VIP's target starts with NEW_TARGET_STATUS. */
function uncheckedHealth(v: VipConfig): HealthStatus | 'unknown' {
  return v.healthCheck === null ? 'unknown' : NEW_TARGET_STATUS;
}

/** One VIP's desired state; `was`: the previous result for the same config and ids, reused if states agree. */
function desiredVip(
  v: VipConfig,
  k: VipKeys,
  vipId: number,
  group: ReadonlyMap<string, number>,
  healthIn: HealthInput,
  cache: TableCache,
  was: DesiredVip | undefined,
): DesiredVip {
  const stateInput: VipBackendStatesInput = {
    backends: v.backends,
    keys: k.members,
    failOpen: v.failOpen,
    downGraceSeconds: v.healthCheck?.downGraceSeconds,
    ...healthIn,
    unchecked: uncheckedHealth(v),
  };
  if (was !== undefined && was.spec.id === vipId && sameStates(was, stateInput)) {
    cache.get(was.table.signature, () => was.table);
    return was;
  }
  // columns of every VIP's states, reused VIP after VIP (read here, never kept)
  const st = vipBackendStateColumns(stateInput, stateScratch);
  // A backend equal in every field to the one at its position in `was` is that object (desired states are
  // immutable): a health flip allocates an object for what flipped, not one per membership of the VIP, and the
  // reconciler's mirror, which holds the objects it wrote, keeps pointing at live ones.
  const before = was !== undefined && was.backends.length === v.backends.length ? was.backends : undefined;
  // Every backend's address, id and weight as in `was`, and the same size: the same natural table (redirectedTable).
  let sameNatural = before !== undefined && was!.spec.tableSize === v.tableSize;
  const backends: DesiredBackend[] = v.backends.map((b, j) => {
    const bkey = k.members[j]!;
    const health = st.health[j]!;
    const state = st.state[j]!;
    const graceUntil = st.graceUntil[j]!;
    const id = group.get(bkey)!;
    const encap = b.encap ?? v.encap ?? DEFAULTS.vip.encap;
    const old = before?.[j];
    const sameMember =
      old !== undefined && old.id === id && old.address === b.address && old.weight === b.weight;
    if (!sameMember) sameNatural = false;
    if (
      sameMember &&
      old.key === bkey &&
      old.drain === b.drain &&
      old.encap === encap &&
      old.health === health &&
      old.state === state &&
      old.graceUntil === graceUntil
    )
      return old;
    return new Member(bkey, id, b, encap, health, state, graceUntil);
  });
  // The table depends on which members take new flows (redirected slots), so a state change can change it. With the
  // same members as `was`, only that: its table's natural part is taken over.
  const table =
    (sameNatural ? redirectedTable(was!.table, backends, cache) : null) ??
    tableOf(v.tableSize, backends, cache);
  return {
    name: v.name,
    spec: {
      // Frozen: its key text is then computed once (vipKeyText), however often planning asks.
      key: Object.freeze(vipKeyOf(v)),
      id: vipId,
      flags: {
        sourceHash: v.persistence === 'source-ip',
        noConntrack: !v.conntrack,
        // Only when set, as the datapath reports it (absent = false).
        ...(statelessOf(v.stateless ?? DEFAULTS.vip.stateless, v.protocol, backends)
          ? { stateless: true }
          : {}),
      },
      tableSize: v.tableSize,
    },
    backends,
    table,
    healthCheck: v.healthCheck,
    usableBackends: countUp(backends),
    failOpen: st.failOpen,
    nextGraceEnd: earliest(backends, (b) => b.graceUntil),
  };
}

/** desiredVip's scratch columns of backend states (vipBackendStateColumns). */
const stateScratch: BackendStateColumns = { health: [], state: [], graceUntil: [], failOpen: false };

/** Backends up (a count, no filtered array: desiredVip runs per VIP per sync). */
function countUp(backends: readonly DesiredBackend[]): number {
  let n = 0;
  for (const b of backends) if (b.state === 'up') n++;
  return n;
}

/** The table of `backends` at `size`, from `cache` if it has it. */
function tableOf(size: number, backends: readonly DesiredBackend[], cache: TableCache): IdTable {
  const signatures = tableSignatures(size, backends);
  return cache.get(signatures.signature, () => tableFor(size, backends, signatures));
}

/**
 * Whether a VIP runs without a connection table: as forced, or (auto) when it is a TCP VIP with backends
 * and every one of them is gue (our decap gives moved flows their second chance, so the LB needs no
 * per-flow state). A UDP VIP keeps its table under auto: a UDP packet carries no hint and gets no second
 * chance (no SYN tells a new flow from a moved one), so without the table every change would move ~1/N of
 * its live flows. A VIP with no backend keeps its table (nothing is known about backends yet to come).
 */
export function statelessOf(
  mode: 'auto' | boolean,
  protocol: 'tcp' | 'udp',
  backends: readonly { encap: Encap }[],
): boolean {
  if (mode !== 'auto') return mode;
  return protocol === 'tcp' && backends.length > 0 && backends.every((b) => b.encap === 'gue');
}

/** The builder desiredState uses: its memo serves every caller that passes an earlier result's ids back. */
const shared = new DesiredStateBuilder();

/** Computes the desired datapath state. Pure: same inputs, same output (ids included). */
export function desiredState(opts: DesiredStateOptions): DesiredState {
  return shared.build(opts);
}

/**
 * desiredState, giving the event loop a turn every DESIRED_SLICE_MS (a whole new state at 512 x 1000 takes
 * seconds). Same result; the inputs must not change until it resolves.
 */
export function desiredStateAsync(opts: DesiredStateOptions): Promise<DesiredState> {
  return shared.buildAsync(opts);
}

/** States a builder returned (with their VIP list as returned): their VIP and backend ids are unique. */
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

/** The smallest non-null value, or null (e.g. when to sync next: a grace end or a previous-table expiry); with `of`,
 * of each item's value (no array of them made: desired states ask per VIP per sync). */
export function earliest(times: readonly (number | null)[]): number | null;
export function earliest<T>(items: readonly T[], of: (x: T) => number | null): number | null;
export function earliest<T>(items: readonly T[], of?: (x: T) => number | null): number | null {
  let min: number | null = null;
  for (const x of items) {
    const t = of === undefined ? (x as number | null) : of(x);
    if (t !== null && (min === null || t < min)) min = t;
  }
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
    guePort: config.encap?.guePort ?? DEFAULTS.encap.guePort,
  };
}
