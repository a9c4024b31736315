// Unknown config keys: reported with a "did you mean" and never hiding the file's other errors.
import type { ZodIssue, ZodTypeAny } from 'zod';
import { z } from 'zod';
import { ConfigIssue, formatPath, fromZodIssues } from './errors';

/** Levenshtein distance (insert, delete, substitute; a swap of neighbours counts 1), for key suggestions. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/**
 * The known key closest to `key`, or null when none is close: case-insensitive equality, or at most a third
 * of the key's length in edits (so "prot" suggests "port", and "x" suggests nothing).
 */
export function suggestKey(key: string, known: Iterable<string>): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of known) {
    const dist = k.toLowerCase() === key.toLowerCase() ? 0 : editDistance(key.toLowerCase(), k.toLowerCase());
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return best !== null && bestD <= Math.max(1, Math.floor(Math.max(key.length, best.length) / 3))
    ? best
    : null;
}

/** "is not a known key" with the closest known key, if one is close. */
export function unknownKeyMessage(key: string, known: Iterable<string>): string {
  const s = suggestKey(key, known);
  return s === null ? 'is not a known key' : `is not a known key (did you mean "${s}"?)`;
}

/** The keys an object schema knows at `path` inside `schema` (through defaults, optionals, refinements, arrays, unions). */
export function knownKeysAt(schema: ZodTypeAny, path: readonly (string | number)[]): string[] {
  const objects = (s: ZodTypeAny): z.AnyZodObject[] => {
    if (s instanceof z.ZodObject) return [s];
    if (s instanceof z.ZodDefault) return objects(s._def.innerType as ZodTypeAny);
    if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) return objects(s.unwrap() as ZodTypeAny);
    if (s instanceof z.ZodEffects) return objects(s.innerType() as ZodTypeAny);
    if (s instanceof z.ZodUnion) return (s.options as ZodTypeAny[]).flatMap(objects);
    return [];
  };
  let here: ZodTypeAny[] = [schema];
  for (const seg of path) {
    const next: ZodTypeAny[] = [];
    for (const s of here) {
      if (typeof seg === 'number') {
        let u: ZodTypeAny = s;
        while (u instanceof z.ZodDefault || u instanceof z.ZodOptional || u instanceof z.ZodEffects)
          u = u instanceof z.ZodEffects ? (u.innerType() as ZodTypeAny) : (u._def.innerType as ZodTypeAny);
        if (u instanceof z.ZodArray) next.push(u.element as ZodTypeAny);
      } else for (const o of objects(s)) if (seg in o.shape) next.push(o.shape[seg] as ZodTypeAny);
    }
    here = next;
  }
  return [...new Set(here.flatMap(objects).flatMap((o) => Object.keys(o.shape)))];
}

/** `input` with `keys` removed from the object at `path`, copying only the objects on the way. */
function withoutKeys(input: unknown, path: readonly (string | number)[], keys: readonly string[]): unknown {
  if (input === null || typeof input !== 'object') return input;
  if (path.length === 0) {
    const copy = { ...(input as Record<string, unknown>) };
    for (const k of keys) delete copy[k];
    return copy;
  }
  const [seg, ...rest] = path;
  const copy = (Array.isArray(input) ? [...(input as unknown[])] : { ...input }) as Record<
    string | number,
    unknown
  >;
  copy[seg!] = withoutKeys(copy[seg!], rest, keys);
  return copy;
}

export type TolerantResult<T> = { data: T | null; issues: ConfigIssue[]; zodIssues: ZodIssue[] };

/**
 * Parses `input` with a strict schema, reporting unknown keys (with a suggestion) without letting them hide
 * anything: when unknown keys are the only problem, `data` is the parse of the input without them, so the
 * caller's own checks still run and report in the same pass. `data` is null when any other issue remains.
 */
export function parseTolerant<S extends ZodTypeAny>(schema: S, input: unknown): TolerantResult<z.output<S>> {
  const first = schema.safeParse(input);
  if (first.success) return { data: first.data as z.output<S>, issues: [], zodIssues: [] };
  const zodIssues = first.error.issues;
  const issues: ConfigIssue[] = [];
  for (const zi of zodIssues) {
    if (zi.code !== 'unrecognized_keys') issues.push(...fromZodIssues([zi], input));
    else {
      // fromZodIssues says "is not a known key"; the suggestion is added here, where the schema is known.
      const known = knownKeysAt(schema, zi.path);
      for (const key of zi.keys)
        issues.push({ path: formatPath([...zi.path, key]), message: unknownKeyMessage(key, known) });
    }
  }
  if (!zodIssues.every((zi) => zi.code === 'unrecognized_keys')) return { data: null, issues, zodIssues };
  let stripped = input;
  for (const zi of zodIssues)
    if (zi.code === 'unrecognized_keys') stripped = withoutKeys(stripped, zi.path, zi.keys);
  const second = schema.safeParse(stripped);
  return { data: second.success ? (second.data as z.output<S>) : null, issues, zodIssues };
}
