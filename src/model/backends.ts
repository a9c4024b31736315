// Shape checks of a VIP's backends list, by hand (the hot path of big files), worded as the zod schema's.
import { isIP } from 'node:net';
import { BOUNDS, DEFAULTS } from './defaults';
import { MESSAGES, showValue } from './errors';
import { canonicalIp, IpFamily } from './ip';
import { notAnIpAddress } from './schema';
import { unknownKeyMessage } from './unknown-keys';
import { ENCAPS, type Encap } from './types';

export type Path = (string | number)[];
/** An issue with a path relative to the value checked. */
export interface RelIssue {
  path: Path;
  message: string;
}

/** A backend after checkBackends: canonical address and its family, defaults filled in. */
export interface CheckedBackend {
  /** As written (for messages). */
  input: string;
  address: string;
  family: IpFamily;
  weight: number;
  drain: boolean;
  /** As written; undefined: the VIP's encap applies. */
  encap: Encap | undefined;
}

const BACKEND_KEYS: ReadonlySet<string> = new Set(['address', 'weight', 'drain', 'encap']);

/** What zod calls a value's type in "expected object, received X" (only "object" matters here). */
const isPlainObjectLike = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  !(v instanceof Map) &&
  !(v instanceof Set) &&
  !(v instanceof Date) &&
  !(
    typeof (v as { then?: unknown }).then === 'function' &&
    typeof (v as { catch?: unknown }).catch === 'function'
  );

/**
 * Shape checks of a VIP's backends list, written out by hand for speed (a 51k-backend file spent most
 * of its validation time in zod here). Same checks, paths and order as the zod schema
 * `{address: IP string, weight: int 0..65535 = 1, drain: boolean = false, encap?: ipip | gue}.strict()` gave, and the same
 * messages, from the wording fromZodIssues uses (MESSAGES).
 */
export function checkBackends(list: readonly unknown[]): {
  backends: CheckedBackend[];
  issues: RelIssue[];
  /** Whether every backend is in `backends` (the issues, if any, are unknown keys only). */
  complete: boolean;
} {
  const backends: CheckedBackend[] = [];
  const issues: RelIssue[] = [];
  const typeIssue = (path: Path, v: unknown, expected: string): void => {
    issues.push({
      path,
      message: v === undefined ? MESSAGES.required : MESSAGES.notA(showValue(v), expected),
    });
  };
  for (let j = 0; j < list.length; j++) {
    const b = list[j];
    if (!isPlainObjectLike(b)) {
      typeIssue(['backends', j], b, 'object');
      continue;
    }
    const before = issues.length;
    const a = b.address;
    let address = '';
    let family: IpFamily = 4;
    if (typeof a !== 'string') typeIssue(['backends', j, 'address'], a, 'string');
    else {
      const fam = isIP(a);
      // Dotted quads that isIP accepts are already canonical (no leading zeros, no spaces).
      const canon = fam === 4 ? a : canonicalIp(a);
      if (canon === null) issues.push({ path: ['backends', j, 'address'], message: notAnIpAddress(a) });
      else {
        address = canon;
        family = fam === 4 ? 4 : 6;
      }
    }
    let weight: number = DEFAULTS.backend.weight;
    const w = b.weight;
    if (w !== undefined) {
      if (typeof w !== 'number' || Number.isNaN(w)) typeIssue(['backends', j, 'weight'], w, 'number');
      else {
        if (!Number.isInteger(w)) typeIssue(['backends', j, 'weight'], w, 'integer');
        if (w < 0)
          issues.push({ path: ['backends', j, 'weight'], message: MESSAGES.belowMinimum(showValue(w), 0) });
        if (w > BOUNDS.weight.max)
          issues.push({
            path: ['backends', j, 'weight'],
            message: MESSAGES.aboveMaximum(showValue(w), BOUNDS.weight.max),
          });
        weight = w;
      }
    }
    let drain: boolean = DEFAULTS.backend.drain;
    const d = b.drain;
    if (d !== undefined) {
      if (typeof d !== 'boolean') typeIssue(['backends', j, 'drain'], d, 'boolean');
      else drain = d;
    }
    let encap: Encap | undefined;
    const e = b.encap;
    if (e !== undefined) {
      if (typeof e !== 'string' || !ENCAPS.includes(e as Encap))
        issues.push({
          path: ['backends', j, 'encap'],
          message: MESSAGES.notOneOf(showValue(e), ENCAPS),
        });
      else encap = e as Encap;
    }
    // An unknown key alone keeps the backend: the VIP's other checks still run (and report) in the same pass.
    const shapeIssues = issues.length - before;
    for (const key in b)
      if (!BACKEND_KEYS.has(key))
        issues.push({ path: ['backends', j, key], message: unknownKeyMessage(key, BACKEND_KEYS) });
    if (shapeIssues === 0) backends.push({ input: a as string, address, family, weight, drain, encap });
  }
  return { backends, issues, complete: backends.length === list.length };
}
