// JSON text of big documents (the admin API's /state: ~1M objects at 512 VIPs x 1,000 backends) written in pieces,
// with event-loop turns between them: the same text as JSON.stringify(value, jsonReplacer, 2), but never one native
// call over the whole document (at 512 x 100 the `desired` key alone held the event loop ~0.3 s).
import { setImmediate as nextTurn } from 'node:timers/promises';
import { ChunkWriter } from './chunk-writer';

/** bigint -> decimal string, Map -> object of its entries: what the admin API's JSON shows for them. */
export const jsonReplacer = (_k: string, x: unknown): unknown =>
  typeof x === 'bigint' ? x.toString() : x instanceof Map ? Object.fromEntries(x) : x;

/** JSON.stringify(value, jsonReplacer, 2) in one piece (small documents). */
export const jsonText = (value: unknown): string => JSON.stringify(value, jsonReplacer, 2);

export interface JsonInTurnsOptions {
  /** Nested entries (array elements, object keys) written by one native call at most (default 16,384: ~1 MB of
   * text, a few ms). */
  piece?: number;
  /** Milliseconds of writing between event-loop turns (default 5). */
  turnMs?: number;
}

/** Nested entries of `x` (elements, keys, Map entries, and theirs), counted until more than `budget`. */
function weight(x: unknown, budget: number): number {
  if (x === null || typeof x !== 'object') return 0;
  let n = 0;
  if (x instanceof Map) {
    for (const c of x.values()) if ((n += 1 + weight(c, budget - n)) > budget) return n;
  } else if (Array.isArray(x)) {
    for (const c of x) if ((n += 1 + weight(c, budget - n)) > budget) return n;
  } else {
    for (const k in x)
      if (Object.hasOwn(x, k) && (n += 1 + weight((x as Record<string, unknown>)[k], budget - n)) > budget)
        return n;
  }
  return n;
}

/** What JSON.stringify writes for a value at `key`: its toJSON() result if it has one, then the replacer's. */
function prepare(key: string, x: unknown): unknown {
  if (x !== null && typeof x === 'object' && typeof (x as { toJSON?: unknown }).toJSON === 'function')
    x = (x as { toJSON(k: string): unknown }).toJSON(key);
  return jsonReplacer(key, x);
}

/** A value an object leaves out (and an array writes as null). */
const omitted = (x: unknown): boolean => x === undefined || typeof x === 'function' || typeof x === 'symbol';

/**
 * JSON.stringify(value, jsonReplacer, 2), written in pieces of at most `piece` nested entries, with a turn of the
 * event loop once `turnMs` of writing ran, and after each piece of the top level. Containers heavier than a piece are written entry by entry (runs of
 * light entries together, by one native call); everything else natively.
 */
export async function jsonInTurns(value: unknown, o: JsonInTurnsOptions = {}): Promise<string | undefined> {
  const out: string[] = [];
  return (await writeInTurns(value, o, (s) => out.push(s))) ? out.join('') : undefined;
}

/**
 * jsonInTurns' text as UTF-8 in Buffers (ChunkWriter: CHUNK_BYTES each, a bigger piece on its own), each piece
 * written into them as it is made: no string outlives its piece. With pieces smaller than V8's large objects (e.g.
 * `piece` 1,024: ~64 KB of text), every string of the text dies young, where a whole text's pieces kept until the
 * end (38 MB at 512 x 100 for /state, in ~1 MB strings) were old-generation garbage until V8's next full collection.
 */
export async function jsonChunksInTurns(
  value: unknown,
  o: JsonInTurnsOptions = {},
): Promise<Buffer[] | undefined> {
  const w = new ChunkWriter();
  return (await writeInTurns(value, o, (s) => w.write(s))) ? w.finish() : undefined;
}

/** The text of jsonInTurns given to `write` piece by piece, in order; false (nothing written) when JSON.stringify
 * would give undefined. */
async function writeInTurns(
  value: unknown,
  o: JsonInTurnsOptions,
  write: (piece: string) => void,
): Promise<boolean> {
  const piece = o.piece ?? 16384;
  const turnMs = o.turnMs ?? 5;
  if (!(Number.isSafeInteger(piece) && piece >= 1))
    throw new RangeError(`piece: ${piece} is not a positive integer`);
  const out = { push: write };
  let since = performance.now();
  const maybeTurn = async (): Promise<void> => {
    if (performance.now() - since < turnMs) return;
    await nextTurn();
    since = performance.now();
  };
  /** Native JSON of `x` (prepared), its lines after the first indented by `indent`. */
  const native = (x: unknown, indent: string): string => {
    const t = JSON.stringify(x, jsonReplacer, 2);
    return indent === '' ? t : t.replace(/\n/g, `\n${indent}`);
  };
  /** Writes `x` (prepared, not omitted) at `indent`. */
  const emit = async (x: unknown, indent: string): Promise<void> => {
    if (x === null || typeof x !== 'object' || weight(x, piece) <= piece) {
      out.push(native(x, indent));
      return;
    }
    const inner = `${indent}  `;
    const isArray = Array.isArray(x);
    const keys = isArray ? null : Object.keys(x);
    const count = isArray ? x.length : keys!.length;
    const rawAt = (i: number): unknown => (isArray ? x[i] : (x as Record<string, unknown>)[keys![i]!]);
    // the opening bracket comes with the first entry written: an object whose values are all left out is "{}"
    let any = false;
    const sep = (): void => {
      out.push(any ? `,\n${inner}` : `${isArray ? '[' : '{'}\n${inner}`);
      any = true;
    };
    for (let i = 0; i < count;) {
      // A run of light entries: one native call (the container's own brackets cut off).
      let end = i;
      let w = 0;
      while (end < count) {
        const e = 1 + weight(rawAt(end), piece);
        // the top level's entries one at a time (each followed by a turn), deeper ones in runs
        if (e > piece || (end > i && (w + e > piece || indent === ''))) break;
        w += e;
        end++;
      }
      if (end > i) {
        let t: string;
        if (isArray) t = JSON.stringify(x.slice(i, end), jsonReplacer, 2);
        else {
          const part: Record<string, unknown> = {};
          for (let j = i; j < end; j++) part[keys![j]!] = rawAt(j);
          t = JSON.stringify(part, jsonReplacer, 2);
        }
        // "[\n  a,\n  b\n]" or "{\n  "k": v\n}" -> its lines, at this depth; "{}": every value was left out
        if (t.length > 2) {
          sep();
          const body = t.slice(4, -2);
          out.push(indent === '' ? body : body.replace(/\n/g, `\n${indent}`));
        }
        i = end;
      } else {
        // One heavy entry, written piece by piece itself.
        const key = isArray ? String(i) : keys![i]!;
        const c = prepare(key, rawAt(i));
        if (isArray) {
          sep();
          if (omitted(c)) out.push('null');
          else await emit(c, inner);
        } else if (!omitted(c)) {
          sep();
          out.push(`${JSON.stringify(key)}: `);
          await emit(c, inner);
        }
        i++;
      }
      // After each top-level piece a turn whatever the time: requests arriving meanwhile (the admin API's sharers of
      // this render) are read before it ends.
      if (indent === '') {
        await nextTurn();
        since = performance.now();
      } else await maybeTurn();
    }
    out.push(any ? `\n${indent}${isArray ? ']' : '}'}` : isArray ? '[]' : '{}');
  };
  const root = prepare('', value);
  if (omitted(root)) return false;
  await emit(root, '');
  return true;
}
