// Backend membership ids: one allocator, run from scratch or carrying over the groups of unchanged VIPs.
import { GroupedIdMap, IdSpace } from './ids';

/** One VIP's key text and its memberships' key texts (config order). */
export interface VipKeys {
  vip: string;
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
    for (const [k, g] of carry.groups.groups())
      if (groups.get(k) !== g) for (const id of g.values()) clearUsed(used, id);
  }
  const kept = new Map<string, number>();
  for (const i of changed)
    for (const key of keys[i]!.members) {
      const id = o.prev.ids.get(key);
      if (id !== undefined && id >= 1 && id < max && !isUsed(used, id) && !kept.has(key)) {
        kept.set(key, id);
        setUsed(used, id);
      }
    }
  const span = max - 1;
  let cursor = o.prev.cursor < 1 || o.prev.cursor >= max ? 1 : o.prev.cursor;
  for (const i of changed) {
    const g = groups.get(keys[i]!.vip) as Map<string, number>;
    for (const key of keys[i]!.members) {
      if (g.has(key)) continue;
      const id = kept.get(key);
      if (id !== undefined) {
        g.set(key, id);
        continue;
      }
      const preferred = o.prefer?.(key);
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
  }
  return { ids: new GroupedIdMap(groups), cursor, used, sameGroup };
}
