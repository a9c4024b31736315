// Backend membership ids: one allocator, run from scratch or carrying over the groups of unchanged VIPs.
import { IdGroup } from './id-group';
import { checkGroup, GroupedIdMap, IdSpace } from './ids';
import { runAll } from './steps';

/** One VIP's key text and its memberships' key texts (config order). */
export interface VipKeys {
  vip: string;
  /** Membership keys, each `${vip}>address` (backendKeyText): its group is `vip`. */
  members: string[];
}

/** What the previous allocation left: its groups and a bitmap of every id in them. */
export interface CarriedIds {
  groups: GroupedIdMap;
  /** Bit per id in [0, max): in use by `groups` (same max as now). */
  used: Uint32Array;
  /** Whether VIP i (config order) keeps its group as it is (same config as when the group was made). */
  unchanged: (i: number) => boolean;
}

export interface AllocateBackendIdsOptions {
  keys: readonly VipKeys[];
  /** Ids are in [1, max): 0 means "no backend". */
  max: number;
  /** Ids handed out before (any map, e.g. read back from a datapath) and where the next search starts. */
  prev: IdSpace;
  /** Groups to carry over without looking at their memberships (an incremental run); absent: from scratch. */
  carry?: CarriedIds;
  /** Preferred id for a new membership key (adoption), if free; asked once per new key, in config order. */
  prefer?: (key: string) => number | undefined;
}

export interface BackendIds {
  ids: GroupedIdMap;
  cursor: number;
  /** Bit per id in [0, max): in use. */
  used: Uint32Array;
  /** Per VIP: its group (and so its ids) is the very one carried over. */
  sameGroup: boolean[];
}

const isUsed = (bits: Uint32Array, id: number): boolean => (bits[id >>> 5]! & (1 << (id & 31))) !== 0;
const setUsed = (bits: Uint32Array, id: number): void => {
  bits[id >>> 5]! |= 1 << (id & 31);
};
const clearUsed = (bits: Uint32Array, id: number): void => {
  bits[id >>> 5]! &= ~(1 << (id & 31));
};

/**
 * Keeps the ids of memberships still wanted, frees the rest, and gives new memberships (config order) their
 * preferred id if free, else the next free id after the cursor (wrapping), so a just-freed id (maybe still in
 * someone's connection table) is reused last: ids.ts's assignIds over every membership key, grouped by VIP.
 * Carried groups cost nothing per membership; the result is the same as from scratch.
 */
export function allocateBackendIds(o: AllocateBackendIdsOptions): BackendIds {
  return runAll(allocateBackendIdsSteps(o));
}

/** allocateBackendIds as steps: it yields after each VIP whose memberships it looked at (slicing points).
 * Per-membership loops live in plain functions: V8 optimises a long-running generator body poorly (no
 * on-stack replacement into it), a function called once per VIP well. */
export function* allocateBackendIdsSteps(o: AllocateBackendIdsOptions): Generator<void, BackendIds, void> {
  const { keys, max } = o;
  const seen = new Set<string>();
  // A VIP key listed twice shares one group: nothing is carried over then (rare, unvalidated input).
  const duplicates = keys.some((k) => seen.size === seen.add(k.vip).size);
  const carry = duplicates ? undefined : o.carry;
  const groups = new Map<string, ReadonlyMap<string, number>>();
  const sameGroup: boolean[] = [];
  const changed: number[] = [];
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!.vip;
    const g = carry?.unchanged(i) === true ? carry.groups.group(k) : undefined;
    sameGroup.push(g !== undefined);
    if (g !== undefined) groups.set(k, g);
    else {
      if (!groups.has(k)) groups.set(k, new Map());
      changed.push(i);
    }
  }
  let used: Uint32Array;
  if (carry === undefined) used = new Uint32Array(Math.ceil(max / 32));
  else {
    used = carry.used.slice();
    // Free every id of a group that is not carried over (changed or removed VIP); kept keys re-claim theirs.
    for (const [k, g] of carry.groups.groups()) if (groups.get(k) !== g) freeIds(used, g);
  }
  // Kept ids per changed VIP (k: its position in `changed`): a membership key names its VIP, so only that
  // VIP's assignGroup asks for it. Small maps, not one of every changed membership (51,200 keys when every
  // VIP changes at 512 x 100).
  const kept: Map<string, number>[] = [];
  // A membership key's group is its VIP's key text: look the group up once per VIP, not per key.
  const prevIds = o.prev.ids;
  for (const i of changed) {
    const pg = prevIds instanceof GroupedIdMap ? prevIds.group(keys[i]!.vip) : prevIds;
    const mine = new Map<string, number>();
    if (pg !== undefined) keepIds(keys[i]!.members, pg, max, used, mine);
    kept.push(mine);
    yield;
  }
  const state: AssignState = {
    max,
    used,
    kept: EMPTY_KEPT,
    prefer: o.prefer,
    cursor: o.prev.cursor < 1 || o.prev.cursor >= max ? 1 : o.prev.cursor,
  };
  for (let k = 0; k < changed.length; k++) {
    const i = changed[k]!;
    const g = groups.get(keys[i]!.vip) as Map<string, number>;
    state.kept = kept[k]!;
    assignGroup(keys[i]!.members, g, state);
    yield;
  }
  // Each new group kept compact (IdGroup over the VIP's own key array), once all are assigned (a VIP key listed twice
  // assigns into one Map), and checked here, one group per step, rather than all at once by the GroupedIdMap below.
  for (const i of changed) {
    const { vip, members } = keys[i]!;
    const g = groups.get(vip)!;
    if (g instanceof IdGroup) continue;
    const group = IdGroup.of(g, members);
    groups.set(vip, group);
    checkGroup(vip, group);
    yield;
  }
  return { ids: new GroupedIdMap(groups), cursor: state.cursor, used, sameGroup };
}

const EMPTY_KEPT: ReadonlyMap<string, number> = new Map();

function freeIds(used: Uint32Array, group: ReadonlyMap<string, number>): void {
  for (const id of group.values()) clearUsed(used, id);
}

/** Claims the previous ids of `members` that are still free (into `kept`). */
function keepIds(
  members: readonly string[],
  prev: ReadonlyMap<string, number>,
  max: number,
  used: Uint32Array,
  kept: Map<string, number>,
): void {
  for (const key of members) {
    const id = prev.get(key);
    if (id !== undefined && id >= 1 && id < max && !isUsed(used, id) && !kept.has(key)) {
      kept.set(key, id);
      setUsed(used, id);
    }
  }
}

interface AssignState {
  max: number;
  used: Uint32Array;
  /** Kept ids of the VIP being assigned. */
  kept: ReadonlyMap<string, number>;
  prefer: ((key: string) => number | undefined) | undefined;
  /** Where the search for a free id starts (advanced as ids are handed out). */
  cursor: number;
}

/** Gives each membership of one VIP not in `g` yet its kept id, its preferred id if free, or the next free id. */
function assignGroup(members: readonly string[], g: Map<string, number>, st: AssignState): void {
  const { max, used } = st;
  const span = max - 1;
  let cursor = st.cursor;
  for (const key of members) {
    if (g.has(key)) continue;
    const id = st.kept.get(key);
    if (id !== undefined) {
      g.set(key, id);
      continue;
    }
    const preferred = st.prefer?.(key);
    if (preferred !== undefined && preferred >= 1 && preferred < max && !isUsed(used, preferred)) {
      g.set(key, preferred);
      setUsed(used, preferred);
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
  st.cursor = cursor;
}
