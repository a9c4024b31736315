// Stable id assignment for VIPs and backend memberships: pure, persistent across reloads, rebuilt on adoption.
import { isTableUnreadable, type Datapath, type VipKey } from '../datapath/types';
import { canonicalIp } from '../model/ip';
import { MapView } from '../util/map-view';

/** Ids handed out so far and where the next search starts (next-fit delays reuse of freed ids). */
export interface IdSpace {
  ids: ReadonlyMap<string, number>;
  cursor: number;
}

export interface IdState {
  /** VIP key text ("10.0.0.1:80/tcp") -> VIP id. */
  vips: IdSpace;
  /** Backend membership key ("10.0.0.1:80/tcp>10.1.0.5") -> backend id. */
  backends: IdSpace;
  /** Backends found in the datapath but in no table: ids a membership with that address may take over. */
  adoptable: readonly { id: number; address: string }[];
}

export const emptyIdState = (): IdState => ({
  vips: { ids: new Map(), cursor: 0 },
  backends: { ids: new Map(), cursor: 0 },
  adoptable: [],
});

/** Key texts of frozen VIP keys (desired VIP specs' keys are): the same string object each time, so Map
 * lookups by it hash once. Planning looks every VIP up by its key text on every reconcile. */
const keyTexts = new WeakMap<VipKey, string>();

/** "10.0.0.1:80/tcp"; addresses must be canonical (canonicalIp) for keys to match. */
export const vipKeyText = (k: VipKey): string => {
  const known = keyTexts.get(k);
  if (known !== undefined) return known;
  const text = `${k.address}:${k.port}/${k.protocol}`;
  if (Object.isFrozen(k)) keyTexts.set(k, text);
  return text;
};
/** "10.0.0.1:80/tcp>10.1.0.5": one backend's membership in one VIP. Made by join, one flat string: a template
 * makes a rope (two cons cells over the parts) that a Map flattens into a second copy on the first lookup (~60
 * bytes more per membership, 30 MB at 512 x 1000). */
export const backendKeyText = (vip: VipKey, address: string): string => [vipKeyText(vip), address].join('>');

const canon = (a: string): string => canonicalIp(a) ?? a;
const canonKey = (k: VipKey): VipKey => ({ ...k, address: canon(k.address) });

export interface AssignOptions {
  /** Keys that need an id, in a deterministic order. */
  keys: readonly string[];
  /** Ids are in [min, max). */
  min: number;
  max: number;
  /** Preferred id for a new key (adoption), if free. */
  prefer?: (key: string) => number | undefined;
}

/**
 * Keeps the ids of keys still wanted, frees the rest, and gives new keys the next free id after the
 * cursor (wrapping), so a just-freed id (maybe still in someone's connection table) is reused last.
 */
export function assignIds(prev: IdSpace, opts: AssignOptions): IdSpace {
  const { min, max } = opts;
  const ids = new Map<string, number>();
  const used = new Set<number>();
  for (const key of opts.keys) {
    const id = prev.ids.get(key);
    if (id !== undefined && id >= min && id < max && !used.has(id)) {
      ids.set(key, id);
      used.add(id);
    }
  }
  let cursor = prev.cursor < min || prev.cursor >= max ? min : prev.cursor;
  const span = max - min;
  for (const key of opts.keys) {
    if (ids.has(key)) continue;
    const preferred = opts.prefer?.(key);
    if (preferred !== undefined && preferred >= min && preferred < max && !used.has(preferred)) {
      ids.set(key, preferred);
      used.add(preferred);
      continue;
    }
    let tries = 0;
    while (used.has(cursor)) {
      cursor = cursor + 1 >= max ? min : cursor + 1;
      if (++tries > span) throw new RangeError(`ids: all ${span} ids in ${min}..${max - 1} are in use`);
    }
    ids.set(key, cursor);
    used.add(cursor);
    cursor = cursor + 1 >= max ? min : cursor + 1;
  }
  return { ids, cursor };
}

/**
 * Rebuilds the id state from what a datapath already holds (a restarted daemon adopts without churn):
 * VIP ids from listVips, a backend's VIP from the tables that reference it; the rest become adoptable.
 */
export async function idStateFromDatapath(dp: Datapath): Promise<IdState> {
  const vips = await dp.listVips();
  const backends = await dp.listBackends();
  const byId = new Map(backends.map((b) => [b.id, b]));
  const vipIds = new Map<string, number>();
  const backendIds = new Map<string, number>();
  const claimed = new Set<number>();
  let vipMax = -1;
  for (const vip of [...vips].sort((a, b) => a.id - b.id)) {
    vipIds.set(vipKeyText(canonKey(vip.key)), vip.id);
    vipMax = Math.max(vipMax, vip.id);
    // Unreadable (its pin gone, no CAP_SYS_ADMIN): its backends are matched by address instead.
    const table = await readTableOrNone(dp, vip.id);
    if (table === null) continue;
    const seen = new Set<number>();
    for (let s = 0; s < table.length; s++) seen.add(table[s]!);
    for (const id of [...seen].sort((a, b) => a - b)) {
      const b = byId.get(id);
      if (b === undefined || claimed.has(id)) continue;
      claimed.add(id);
      backendIds.set(backendKeyText(canonKey(vip.key), canon(b.address)), id);
    }
  }
  const adoptable = backends
    .filter((b) => !claimed.has(b.id))
    .map((b) => ({ id: b.id, address: canon(b.address) }));
  const backendMax = backends.reduce((m, b) => Math.max(m, b.id), 0);
  return {
    vips: { ids: vipIds, cursor: vipMax + 1 },
    backends: { ids: backendIds, cursor: backendMax + 1 },
    adoptable,
  };
}

/** The VIP part of a membership key ("10.0.0.1:80/tcp>10.1.0.5" -> "10.0.0.1:80/tcp"); "" if none. */
const groupOf = (key: string): string => {
  const i = key.indexOf('>');
  return i < 0 ? '' : key.slice(0, i);
};

const checkedGroups = new WeakSet<ReadonlyMap<string, number>>();

/**
 * Checks that every key of `group` is a membership of `vip` (throws naming the first that is not) and
 * remembers it: a GroupedIdMap then takes the group without looking at its keys again. Lets a builder
 * check its groups one at a time (between event-loop turns) instead of all at once in the constructor.
 */
export function checkGroup(vip: string, group: ReadonlyMap<string, number>): void {
  if (checkedGroups.has(group)) return;
  for (const key of group.keys())
    if (groupOf(key) !== vip)
      throw new RangeError(`groups: key ${JSON.stringify(key)} is not a membership of ${vip}`);
  checkedGroups.add(group);
}

/**
 * Backend membership ids grouped by VIP key text: a read-only map whose groups are shared between
 * successive id states, so a reload that changes one VIP copies one group, not every membership.
 * Iterates group by group (in the order given), each group in its own order.
 */
export class GroupedIdMap extends MapView<string, number> {
  readonly #groups: ReadonlyMap<string, ReadonlyMap<string, number>>;
  readonly #size: number;

  /** Groups are not copied: the caller must not change them afterwards (they are shared, not owned). */
  constructor(groups: ReadonlyMap<string, ReadonlyMap<string, number>>) {
    super();
    let size = 0;
    for (const [vip, g] of groups) {
      // A group is checked once, when first seen: shared groups cost nothing on later states.
      checkGroup(vip, g);
      size += g.size;
    }
    this.#groups = groups;
    this.#size = size;
  }

  /** Ids of one VIP's memberships (by VIP key text), or undefined. */
  group(vipKey: string): ReadonlyMap<string, number> | undefined {
    return this.#groups.get(vipKey);
  }

  /** The groups by VIP key text. */
  groups(): ReadonlyMap<string, ReadonlyMap<string, number>> {
    return this.#groups;
  }

  get size(): number {
    return this.#size;
  }

  get(key: string): number | undefined {
    return this.#groups.get(groupOf(key))?.get(key);
  }

  *entries(): MapIterator<[string, number]> {
    for (const g of this.#groups.values()) yield* g.entries();
  }

  override *values(): MapIterator<number> {
    for (const g of this.#groups.values()) yield* g.values();
  }

  get [Symbol.toStringTag](): string {
    return 'GroupedIdMap';
  }
}

/**
 * A VIP's installed table, or null when the datapath cannot read it (isTableUnreadable: e.g. its pin is
 * gone and the daemon lacks CAP_SYS_ADMIN): taken as none, so a plan rewrites it (which pins it again).
 */
export async function readTableOrNone(
  dp: Pick<Datapath, 'readTable'>,
  vipId: number,
): Promise<Uint32Array | null> {
  try {
    return await dp.readTable(vipId);
  } catch (e) {
    if (isTableUnreadable(e)) return null;
    throw e;
  }
}
