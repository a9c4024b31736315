// Maglev tables of backend ids: built lazily from a recipe, memoised by signature, down members redirected.
import { createHash } from 'node:crypto';
import { buildMappedTable, checkTableInput, MaglevBackend, redirectSkipped } from '../maglev/maglev';
import type { TableBuilder } from '../maglev/pool';
import type { DesiredBackend } from './desired';

/** redirectSkipped lives with the Maglev builder (the table workers run it too). */
export { redirectSkipped };

/** Backend id 0 means "no backend": a zeroed table slot (ids start at 1). */
export const NO_BACKEND_ID = 0;

/** Slots an IdTable holds for its hold() callers: `ids` once the build is done. */
interface Held {
  count: number;
  ready: Promise<unknown>;
  ids: Uint32Array | null;
  /** `ids` are this table's ids as installed (down members redirected: holdInstalled), not its natural ones. */
  final: boolean;
  /** With natural `ids` of a table that redirects: its ids as installed, made beside them by the builder. */
  redirected: Uint32Array | null;
  /** The builder that made `ids` (and `redirected`): given them back when the last hold is released. */
  from: TableBuilder | null;
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
  /** The signature without the skipped members: equal ones, equal natural tables (before redirects). */
  readonly naturalSignature: string;
  readonly size: number;
  /** Backend id per member index; [NO_BACKEND_ID] when the table has no member. */
  readonly #members: Uint32Array;
  /** Member index per slot, or null: built on demand from #names and #weights. */
  readonly #slots: Uint8Array | Uint16Array | Uint32Array | null;
  /** The recipe's member names (null: an index table), and their weights (one number: every member's). Names and
   * weights, not a {name, weight} object per member: ~48 bytes less per membership (25 MB at 512 x 1000). */
  readonly #names: readonly string[] | null;
  readonly #weights: readonly number[] | number;
  /** Member ids whose slots are redirected (recipe tables only), ascending, each once. A list, not a Set: a Set of
   * 999 ids is ~20 KB against 4 KB, and every VIP of 512 x 1000 kept one per table it holds (the current one, the
   * previous owners' one) while its members went down (17.9 MB of Sets seen in a heap snapshot). */
  readonly #skip: Uint32Array;
  /** Natural ids built by a builder and held by hold() callers until each released (recipe tables only). */
  #held: Held | null = null;

  /**
   * `signature`: TableSignatures, or a signature text (its natural part read from it). With `natural` a recipe table
   * and `skip`: the table of the same recipe with other members skipped (its members and names shared: see
   * redirectedTable).
   */
  constructor(signature: string | TableSignatures, indexTable: Uint32Array, memberIds: readonly number[]);
  constructor(signature: string | TableSignatures, recipe: TableRecipe);
  constructor(signature: TableSignatures, natural: IdTable, skip: readonly number[]);
  constructor(
    signature: string | TableSignatures,
    from: Uint32Array | TableRecipe | IdTable,
    memberIds: readonly number[] = [],
  ) {
    if (typeof signature === 'string') {
      this.signature = signature;
      this.naturalSignature = naturalSignatureOf(signature);
    } else {
      this.signature = signature.signature;
      this.naturalSignature = signature.natural;
    }
    if (from instanceof IdTable) {
      if (!from.#fromRecipe) throw new TypeError('IdTable: a redirected table needs a recipe table to share');
      this.size = from.size;
      this.#members = from.#members;
      this.#slots = null;
      this.#names = from.#names;
      this.#weights = from.#weights;
      this.#skip = sortedIds(memberIds);
    } else if (from instanceof Uint32Array) {
      const n = memberIds.length;
      this.size = from.length;
      this.#members = n === 0 ? Uint32Array.of(NO_BACKEND_ID) : Uint32Array.from(memberIds);
      const Slots = n <= 0x100 ? Uint8Array : n <= 0x10000 ? Uint16Array : Uint32Array;
      this.#slots = n === 0 ? new Uint8Array(from.length) : Slots.from(from);
      this.#names = null;
      this.#weights = 0;
      this.#skip = NO_SKIP;
    } else {
      const backends = from.members.map((m) => ({ name: m.name, weight: m.weight }));
      // Bad input fails here, not later when the table is installed.
      this.size = checkTableInput({ backends, size: from.size });
      this.#members = Uint32Array.from(from.members, (m) => m.id);
      this.#slots = null;
      this.#names = backends.map((b) => b.name);
      const w = backends[0]?.weight ?? 0;
      this.#weights = backends.every((b) => b.weight === w) ? w : backends.map((b) => b.weight);
      this.#skip = sortedIds(from.skip ?? []);
    }
  }

  /** The members as Maglev takes them (made for each build: a build is rare, the table long-lived); null for an
   * index table. */
  get #recipe(): MaglevBackend[] | null {
    const names = this.#names;
    if (names === null) return null;
    const w = this.#weights;
    return typeof w === 'number'
      ? names.map((name) => ({ name, weight: w }))
      : names.map((name, i) => ({ name, weight: w[i]! }));
  }

  /** Whether this table is built from a recipe (not an index table). */
  get #fromRecipe(): boolean {
    return this.#names !== null;
  }

  /** Whether redirectedTable can make tables of this one's recipe (it is built from a recipe, not an index table). */
  get fromRecipe(): boolean {
    return this.#fromRecipe;
  }

  /** Bytes of slot and member arrays held by this table (slots built on demand are not held). */
  get byteLength(): number {
    return (this.#slots?.byteLength ?? 0) + this.#members.byteLength;
  }

  /** Backend ids per slot, as the datapath installs them (a fresh array; built now for a recipe). */
  ids(): Uint32Array {
    const members = this.#members;
    if (this.#fromRecipe) {
      const h = this.#held;
      if (h?.ids != null && h.final) return h.ids.slice();
      if (h?.redirected != null) return h.redirected.slice();
      // from the held slots in one pass (no copy first)
      if (h?.ids != null) return redirectSkipped(h.ids, this.#skip, new Uint32Array(h.ids.length));
      return redirectSkipped(this.#built(), this.#skip);
    }
    const slots = this.#slots!;
    const out = new Uint32Array(slots.length);
    for (let s = 0; s < slots.length; s++) out[s] = members[slots[s]!]!;
    return out;
  }

  /**
   * ids(), without the copy while the slots are held (hold()): then the held array itself (as installed: the
   * builder made the redirected one beside the natural one), which the caller must not change (the datapath only
   * reads what it installs) nor use after the hold's release() (its memory goes back to the builder). A batch of 64 tables at 65537 slots was 16 MiB of copies, and their garbage brought
   * collections into every batch.
   */
  sharedIds(): Uint32Array {
    return this.#heldIds() ?? this.ids();
  }

  /** The held ids as installed, without a copy; null when none are held. */
  #heldIds(): Uint32Array | null {
    const h = this.#held;
    if (h?.ids == null) return null;
    return h.final || this.#skip.length === 0 ? h.ids : h.redirected;
  }

  /**
   * Backend ids per slot before down and draining members are redirected (their natural owners): what every
   * LB node computes from the same membership whatever its health view. Equal to ids() without redirects.
   */
  naturalIds(): Uint32Array {
    return this.#fromRecipe ? this.#built() : this.ids();
  }

  /** The recipe's Maglev table as backend ids, nothing redirected (a copy of the held one, if held). */
  #built(): Uint32Array {
    const h = this.#held;
    if (h?.ids != null && !h.final) return h.ids.slice();
    return buildMappedTable(
      { backends: this.#recipe!, size: this.size },
      {
        values: this.#members,
        none: NO_BACKEND_ID,
      },
    );
  }

  /**
   * Builds the slots through `builder` (off the event loop with a worker pool) and keeps them until every
   * hold() is matched by a release(): ids(), naturalIds() and equals() copy them meanwhile instead of
   * building. Holders of one table share one build. Rejects with the build's error (nothing held then).
   */
  async hold(builder: TableBuilder): Promise<void> {
    if (!this.#fromRecipe) return;
    let h = this.#held;
    if (h === null) {
      const recipe = this.#recipe!;
      // Backend ids straight from the builder (mapped where it builds, off the event loop), and with members to
      // redirect, the ids as installed too (made there as well: 256 KiB per table not allocated on this thread).
      const as = { values: this.#members, none: NO_BACKEND_ID };
      const ready =
        this.#skip.length === 0
          ? builder.build(recipe, this.size, as).then((natural) => ({ natural, redirected: null }))
          : builder.buildPair(recipe, this.size, as, Array.from(this.#skip));
      const entry: Held = { count: 0, ready, ids: null, final: false, redirected: null, from: builder };
      h = this.#held = entry;
      ready.then(
        (r) => {
          entry.ids = r.natural;
          entry.redirected = r.redirected;
        },
        () => {
          if (this.#held === entry) this.#held = null;
        },
      );
    }
    h.count++;
    try {
      await h.ready;
    } catch (e) {
      h.count--;
      throw e;
    }
  }

  /**
   * hold() without a build, from the table installed now: `installed` is what the datapath holds for this VIP,
   * installed from `from` (its ids, read back: taken and changed here). When `from` has our natural table and
   * a subset of our skipped members, our ids are `installed` with our skipped members redirected (redirecting
   * more members of an already redirected table gives what redirecting all of them in the natural one gives:
   * each skipped slot still names the first kept owner after it). A member going down at many VIPs at once (a
   * node failure, endpoints terminating) then costs no Maglev build. Held until one release(), which gives
   * `installed` to `recycler` (TableBuilder.recycle) when given; false (nothing held, `installed` not taken)
   * when `from` does not qualify, or this table is held already or has nothing to redirect.
   */
  holdInstalled(from: IdTable, installed: Uint32Array, recycler?: TableBuilder): boolean {
    if (!this.#fromRecipe || this.#held !== null || this.#skip.length === 0) return false;
    if (
      !from.#fromRecipe ||
      from.naturalSignature !== this.naturalSignature ||
      installed.length !== this.size
    )
      return false;
    if (!includesSorted(this.#skip, from.#skip)) return false;
    const ids = redirectSkipped(installed, this.#skip);
    this.#held = {
      count: 1,
      ready: Promise.resolve(ids),
      ids,
      final: true,
      redirected: null,
      from: recycler ?? null,
    };
    return true;
  }

  /** Ends one hold(): the slots are dropped when none is left (memory: 4 bytes per slot), given back to the
   * builder that made them (TableBuilder.recycle: what sharedIds() handed out is not to be used after this). */
  release(): void {
    const h = this.#held;
    if (h === null || --h.count > 0) return;
    this.#held = null;
    if (h.from?.recycle === undefined) return;
    if (h.ids !== null) h.from.recycle(h.ids);
    if (h.redirected !== null) h.from.recycle(h.redirected);
  }

  /** ids() with the build through `builder` (off the event loop with a worker pool). */
  async idsAsync(builder: TableBuilder): Promise<Uint32Array> {
    if (!this.#fromRecipe) return this.ids();
    await this.hold(builder);
    try {
      return this.ids();
    } finally {
      this.release();
    }
  }

  /** equals() with the build through `builder`. */
  async equalsAsync(ids: Uint32Array, builder: TableBuilder): Promise<boolean> {
    if (ids.length !== this.size) return false;
    if (!this.#fromRecipe) return this.equals(ids);
    await this.hold(builder);
    try {
      return this.equals(ids);
    } finally {
      this.release();
    }
  }

  /** Whether some slot is redirected away from its natural owner (a down or draining member). */
  get redirects(): boolean {
    return this.#skip.length > 0;
  }

  /** True if a table read from a datapath holds exactly these ids. */
  equals(ids: Uint32Array): boolean {
    if (ids.length !== this.size) return false;
    if (this.#slots === null) {
      // Held: compare with the held ids as installed (no copy).
      const mine = this.#heldIds() ?? this.ids();
      for (let s = 0; s < mine.length; s++) if (ids[s] !== mine[s]) return false;
      return true;
    }
    const slots = this.#slots;
    const members = this.#members;
    for (let s = 0; s < slots.length; s++) if (ids[s] !== members[slots[s]!]) return false;
    return true;
  }
}

const NO_SKIP = new Uint32Array(0);

/** `ids` ascending, each once (NO_SKIP for none). */
function sortedIds(ids: readonly number[]): Uint32Array {
  if (ids.length === 0) return NO_SKIP;
  const sorted = Uint32Array.from(ids).sort();
  let n = 1;
  for (let i = 1; i < sorted.length; i++) if (sorted[i] !== sorted[n - 1]) sorted[n++] = sorted[i]!;
  return n === sorted.length ? sorted : sorted.slice(0, n);
}

/** Whether every id of `part` is in `all` (both ascending, each once). */
function includesSorted(all: Uint32Array, part: Uint32Array): boolean {
  let j = 0;
  for (let i = 0; i < part.length; i++) {
    const id = part[i]!;
    while (j < all.length && all[j]! < id) j++;
    if (j === all.length || all[j] !== id) return false;
    j++;
  }
  return true;
}

/** Memo of tables by signature; keeps what the last two desiredState calls used, drops the rest. */
export class TableCache {
  private current = new Map<string, IdTable>();
  private previous = new Map<string, IdTable>();
  hits = 0;
  misses = 0;
  /** Sees each table this cache makes (a miss), e.g. to start its build while the desired state is still computed
   * (EarlyHolds); null: none. */
  onCreate: ((t: IdTable) => void) | null = null;

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
      this.onCreate?.(t);
    }
    this.current.set(signature, t);
    return t;
  }

  get size(): number {
    return new Set([...this.current.keys(), ...this.previous.keys()]).size;
  }
}

/**
 * Maglev table of backend ids; backends with weight 0 stay out, draining and down ones stay in (so the
 * table, and every other backend's slots, do not move when a state changes), but their slots name the
 * owner the datapath's forward probing would find (redirectSkipped): a new flow never needs more than one
 * probe, however many slots in a row a heavy down backend holds (the datapath gives up after
 * PEAK_MAX_PROBES and drops). Established flows keep a draining backend through the connection table.
 */
export function tableFor(
  tableSize: number,
  backends: readonly DesiredBackend[],
  signatures: TableSignatures = tableSignatures(tableSize, backends),
): IdTable {
  const members = backends.filter((b) => b.weight > 0);
  return new IdTable(signatures, {
    size: tableSize,
    members: members.map((b) => ({ name: b.address, weight: b.weight, id: b.id })),
    skip: skippedMembers(members),
  });
}

/**
 * tableFor(natural.size, backends), where `natural` is a table made from the same size and the same members (address,
 * id and weight of each backend with weight > 0, in the same order): only which of them are skipped may differ. Its
 * natural signature is taken over (no text made or digested) and its member arrays shared (no recipe checked
 * again): a health flip at 512 x 1000 recomputes every VIP a member of which flipped, and the signature text of its
 * 1000 members, their sort and digest and the recipe's copy and check were ~35% of that (profiled). Null when
 * `natural` is not made from a recipe (tableFor then). From `cache` if it has the table.
 */
export function redirectedTable(
  natural: IdTable,
  backends: readonly DesiredBackend[],
  cache: TableCache,
): IdTable | null {
  if (!natural.fromRecipe) return null;
  const skip = skippedMembers(backends);
  const signatures = redirectedSignatures(natural.naturalSignature, skip);
  return cache.get(signatures.signature, () => new IdTable(signatures, natural, skip));
}

/**
 * Ids of the members (backends of weight > 0) that take no new flows, sorted; none when no member does (nothing to
 * redirect to). One pass, no filtered copies: it runs per VIP per sync (a mass flip at 512 x 1000 made ~1.2 GB of
 * such arrays in 160 s).
 */
function skippedMembers(backends: readonly DesiredBackend[]): number[] {
  const skip: number[] = [];
  let members = 0;
  for (let i = 0; i < backends.length; i++) {
    const b = backends[i]!;
    if (!(b.weight > 0)) continue;
    members++;
    if (b.state !== 'up') skip.push(b.id);
  }
  return skip.length === members ? [] : skip.sort((a, b) => a - b);
}

/** The natural part of a table signature text (without its skipped members). */
function naturalSignatureOf(signature: string): string {
  const at = signature.indexOf(SKIP_PART);
  return at < 0 ? signature : signature.slice(0, at);
}
const SKIP_PART = '|skip:';

/** A table's identity: the digest of the text of its natural inputs (tableSignatureTexts), and with skipped members
 * the digest of that digest and their ids. */
export interface TableSignatures {
  /** Equal signatures, equal tables. */
  signature: string;
  /** Equal ones, equal natural tables (before redirects). */
  natural: string;
}

/**
 * The text of a table's natural inputs: its size and sorted address=id*weight of its members; and its skipped
 * members' ids (sorted).
 */
export function tableSignatureTexts(
  tableSize: number,
  backends: readonly DesiredBackend[],
): { naturalText: string; skip: number[] } {
  const members = backends.filter((b) => b.weight > 0);
  const parts = members.map((b) => `${b.address}=${b.id}*${b.weight}`).sort();
  return { naturalText: `${tableSize}|${parts.join(',')}`, skip: skippedMembers(members) };
}

/** What a signature keeps of a text: its SHA-256 (43 characters). The texts are ~22 bytes per member, and tables,
 * the table cache and the last desired states each held them (~30 MB at 512 x 1000). */
export function digestSignature(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

/** redirectedSignatures' scratch: the skipped ids as 32-bit words (grown, never kept by a table). */
let skipWords = new Uint32Array(1024);

/**
 * The signatures of a table whose natural signature is `natural` with `skip` (sorted ids) skipped: with any, the
 * SHA-256 of `natural`, `|skip:` and the ids as little-endian 32-bit words. No text of the ids: a mass flip at 512 x
 * 1000 made one of up to ~7 KB per VIP per sync, and V8 kept them to its full collections (~155 MB of the old
 * space's garbage over the flips in an allocation profile).
 */
function redirectedSignatures(natural: string, skip: readonly number[]): TableSignatures {
  if (skip.length === 0) return { signature: natural, natural };
  if (skipWords.length < skip.length)
    skipWords = new Uint32Array(Math.max(skip.length, 2 * skipWords.length));
  const words = skipWords;
  for (let i = 0; i < skip.length; i++) words[i] = skip[i]!;
  const bytes = new Uint8Array(words.buffer, 0, 4 * skip.length);
  if (!LITTLE_ENDIAN) for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  const signature = createHash('sha256').update(natural).update(SKIP_PART).update(bytes).digest('base64url');
  return { signature, natural };
}
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

export function tableSignatures(tableSize: number, backends: readonly DesiredBackend[]): TableSignatures {
  const { naturalText, skip } = tableSignatureTexts(tableSize, backends);
  return redirectedSignatures(digestSignature(naturalText), skip);
}
