// Previous Maglev owners (issue 15): per VIP, who else may hold a flow of each slot. Pure functions over plain data.
//
// What a VIP's previous table holds, slot by slot (the datapath hints it to the current owner, which forwards a
// mid-connection packet it has no state for there: the second chance). Over the owners a slot had since the
// first retained change that moved it (o0 before that change, o1 after it, ... the current one last):
//   1. o0 when it is still a backend of the VIP and not the current owner: the owner from before the burst of
//      changes, kept retainSeconds after the change that first moved the slot, however often it moves again;
//   2. else o1 on the same terms (the slot is back at o0: A -> B -> A names B, whose flows began in between);
//   3. else the slot's natural owner when the current table redirects the slot away from it (a member that is
//      down or draining: its established flows live there however long it stays so);
//   4. else the current owner (no hint).
// Why the oldest: long-lived connections (the ones a change puts at risk) were mostly established before a
// burst of changes, so several quick changes (a rolling update) lose none of them. What is not kept: flows
// established between changes, in a slot that moved again (A -> B -> C names A; B's flows there survive only
// through an LB connection-table entry). When o0 is removed from the VIP its flows are gone: the slot starts
// over from the next change that moves it (o1 takes its place at once where known). Health flips are changes
// like membership changes (the redirect moves slots), and 3. covers a backend one LB node sees down while
// others see it up.
//
// State per VIP is materialised (Retained: o0, o1 and the time of the first change per slot), so a change costs
// two table builds whatever the number of changes retained; 16 bytes per slot while anything is retained.

import { IdTable, NO_BACKEND_ID } from './table';

/** A table as reconcile holds it: a desired IdTable, or slots read back from a datapath. */
export type SlotTable = IdTable | Uint32Array;

/** The previous owners a VIP retains. Treat as immutable: every function returns a new one when it changes. */
export interface Retained {
  /** o0 per slot: its owner before the first retained change that moved it; NO_BACKEND_ID: none retained. */
  readonly first: Uint32Array;
  /** o1 per slot: its owner after that change (NO_BACKEND_ID: unknown, e.g. the table a resize replaced). */
  readonly second: Uint32Array;
  /** When (ms) the change that first moved each slot happened. */
  readonly since: Float64Array;
  /** The slots are those of a table of another size (the table a resize replaced, whole, in `first`). */
  readonly resized: boolean;
  /** Slots with a previous owner. */
  readonly count: number;
  /** The earliest and latest `since` of those slots (ms). */
  readonly oldest: number;
  readonly newest: number;
}

export const slotsOf = (t: SlotTable): Uint32Array => (t instanceof IdTable ? t.ids() : t);
export const sizeOf = (t: SlotTable): number => (t instanceof IdTable ? t.size : t.length);

function finish(
  first: Uint32Array,
  second: Uint32Array,
  since: Float64Array,
  resized: boolean,
): Retained | null {
  let count = 0;
  let oldest = Infinity;
  let newest = -Infinity;
  for (let s = 0; s < first.length; s++)
    if (first[s] !== NO_BACKEND_ID) {
      count++;
      if (since[s]! < oldest) oldest = since[s]!;
      if (since[s]! > newest) newest = since[s]!;
    }
  return count === 0 ? null : { first, second, since, resized, count, oldest, newest };
}

/** `r` without the slots whose first change is retainMs old at `now` (the same object when none is). */
export function expire(r: Retained | null, now: number, retainMs: number): Retained | null {
  if (r === null || r.oldest + retainMs > now) return r;
  const first = Uint32Array.from(r.first);
  const second = Uint32Array.from(r.second);
  for (let s = 0; s < first.length; s++)
    if (r.since[s]! + retainMs <= now) first[s] = second[s] = NO_BACKEND_ID;
  return finish(first, second, r.since, r.resized);
}

export interface ChangeInput {
  /** What was retained before the change (null: nothing). */
  retained: Retained | null;
  /** The table installed until now, and the one replacing it. */
  old: SlotTable;
  current: SlotTable;
  now: number;
  retainMs: number;
  /** Ids that may be named after the change (the VIP's backends now): others are never retained. */
  keep: (id: number) => boolean;
}

/** What is retained after the installed table `old` was replaced by `current` at `now` (see the top). */
export function recordChange(c: ChangeInput): Retained | null {
  const { now, keep } = c;
  const live = (id: number): boolean => id !== NO_BACKEND_ID && keep(id);
  const o = slotsOf(c.old);
  const m = sizeOf(c.current);
  if (o.length !== m) {
    // A resize: slots of two sizes do not correspond; the old table is kept whole (the datapath indexes a
    // previous table by its own length), and what was retained before is dropped.
    const first = Uint32Array.from(o, (id) => (live(id) ? id : NO_BACKEND_ID));
    return finish(first, new Uint32Array(o.length), new Float64Array(o.length).fill(now), true);
  }
  const n = slotsOf(c.current);
  let r = expire(c.retained, now, c.retainMs);
  if (r !== null && (r.resized || r.first.length !== m)) r = null;
  const first = r === null ? new Uint32Array(m) : Uint32Array.from(r.first);
  const second = r === null ? new Uint32Array(m) : Uint32Array.from(r.second);
  const since = r === null ? new Float64Array(m) : Float64Array.from(r.since);
  for (let s = 0; s < m; s++) {
    // o0 removed: its flows are gone; o1 (if known and still a backend) becomes the oldest owner.
    if (first[s] !== NO_BACKEND_ID && !live(first[s]!)) {
      first[s] = live(second[s]!) ? second[s]! : NO_BACKEND_ID;
      second[s] = NO_BACKEND_ID;
    }
    if (first[s] !== NO_BACKEND_ID) {
      if (!live(second[s]!)) second[s] = n[s] !== first[s] ? n[s]! : NO_BACKEND_ID;
      continue;
    }
    const was = o[s]!;
    if (was !== n[s] && live(was)) {
      first[s] = was;
      second[s] = n[s]!;
      since[s] = now;
    } else second[s] = NO_BACKEND_ID;
  }
  return finish(first, second, since, false);
}

/** When (ms) the oldest retained slot expires, so the previous table must be written again; null: never. */
export function nextExpiry(r: Retained | null, retainMs: number): number | null {
  return r === null ? null : r.oldest + retainMs;
}

export interface PreviousTableInput {
  /** The table that is (or is about to be) current. */
  current: SlotTable;
  retained: Retained | null;
  now: number;
  retainMs: number;
  /** Ids that may be named (the VIP's backends now); others (deleted, maybe reused later) are never hinted. */
  keep: (id: number) => boolean;
}

/**
 * The VIP's previous table (see the top of this file), or null when no slot names anyone but its current
 * owner (nothing to hint: the datapath's previous slot is then cleared). After a resize, the table the resize
 * replaced, whole and of its own size, with ids that may not be named set to NO_BACKEND_ID.
 */
export function previousTable(input: PreviousTableInput): Uint32Array | null {
  const live = (id: number): boolean => id !== NO_BACKEND_ID && input.keep(id);
  const r = expire(input.retained, input.now, input.retainMs);
  const m = sizeOf(input.current);
  if (r !== null && (r.resized || r.first.length !== m)) {
    const old = Uint32Array.from(r.first, (id) => (live(id) ? id : NO_BACKEND_ID));
    return old.some((id) => id !== NO_BACKEND_ID) ? old : null;
  }
  const cur = slotsOf(input.current);
  const out = Uint32Array.from(cur);
  const natural =
    input.current instanceof IdTable && input.current.redirects ? input.current.naturalIds() : null;
  let differs = false;
  for (let s = 0; s < m; s++) {
    const c = cur[s]!;
    const pick = (id: number): boolean => id !== c && live(id);
    if (r !== null && pick(r.first[s]!)) out[s] = r.first[s]!;
    else if (r !== null && pick(r.second[s]!)) out[s] = r.second[s]!;
    else if (natural !== null && pick(natural[s]!)) out[s] = natural[s]!;
    if (out[s] !== c) differs = true;
  }
  return differs ? out : null;
}

/** Slots whose previous owner differs from the current one (what `trace` and the metrics report). */
export function hintedSlots(prev: Uint32Array | null, current: Uint32Array): number {
  if (prev === null) return 0;
  if (prev.length !== current.length) return prev.length;
  let n = 0;
  for (let s = 0; s < prev.length; s++) if (prev[s] !== current[s]) n++;
  return n;
}

/** What a restarted reconciler adopts from a pinned previous table (`pinned`) over the installed table:
 * the slots where they differ, as if changed at `now` (o0 the pinned owner, o1 the installed one). */
export function adoptPinned(pinned: Uint32Array, installed: SlotTable | null, now: number): Retained | null {
  const since = new Float64Array(pinned.length).fill(now);
  if (installed === null || sizeOf(installed) !== pinned.length)
    return finish(Uint32Array.from(pinned), new Uint32Array(pinned.length), since, true);
  const cur = slotsOf(installed);
  const first = Uint32Array.from(pinned, (id, s) => (id !== cur[s] ? id : NO_BACKEND_ID));
  const second = Uint32Array.from(cur, (id, s) => (first[s] !== NO_BACKEND_ID ? id : NO_BACKEND_ID));
  return finish(first, second, since, false);
}
