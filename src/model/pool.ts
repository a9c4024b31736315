// Address pool for Services without an explicit VIP: parsing (CIDRs and ranges) and deterministic allocation.
import {
  bigIntToIp,
  canonicalIp,
  formatIp,
  IpFamily,
  ipToBigInt,
  parseIp,
  parsePrefix,
  prefixBounds,
} from './ip';
import { showValue } from './errors';

export interface PoolRange {
  family: IpFamily;
  first: bigint;
  last: bigint;
  /** The entry as written, and its index, for messages. */
  text: string;
  index: number;
}

export type Pool = readonly PoolRange[];

/**
 * Parses pool entries ("10.0.0.0/28", "10.0.0.5-10.0.0.9", "2001:db8::/120"); errors name the entry and value.
 * `whole`: a CIDR keeps its IPv4 network and broadcast addresses and entries may overlap (address lists that
 * are only checked against, like kubernetes.allowedAddresses, never allocated from).
 */
export function parsePool(
  entries: readonly string[],
  field = 'pool',
  opts: { whole?: boolean } = {},
): { ok: true; pool: Pool } | { ok: false; errors: string[] } {
  const errors: string[] = [];
  const pool: PoolRange[] = [];
  entries.forEach((text, i) => {
    const where = `${field}[${i}]`;
    if (typeof text !== 'string') return errors.push(`${where}: ${showValue(text)} is not a string`);
    const dash = text.indexOf('-');
    if (dash >= 0) {
      const a = parseIp(text.slice(0, dash).trim());
      const b = parseIp(text.slice(dash + 1).trim());
      if (a === null || b === null || a.family !== b.family)
        return errors.push(
          `${where}: ${showValue(text)} is not a range of two addresses of one family (a-b)`,
        );
      const first = ipToBigInt(a.bytes);
      const last = ipToBigInt(b.bytes);
      if (first > last) return errors.push(`${where}: ${showValue(text)} starts after it ends`);
      return pool.push({ family: a.family, first, last, text, index: i });
    }
    if (!text.includes('/'))
      return errors.push(`${where}: ${showValue(text)} is not a CIDR (a.b.c.d/n) or a range (a-b)`);
    const p = parsePrefix(text);
    if (p === null)
      return errors.push(`${where}: ${showValue(text)} is not a CIDR (a.b.c.d/n) or a range (a-b)`);
    let { first, last } = prefixBounds(p);
    // IPv4 subnets of 4+ addresses: leave out the network and broadcast addresses.
    if (!opts.whole && p.family === 4 && p.prefixLength <= 30) {
      first += 1n;
      last -= 1n;
    }
    return pool.push({ family: p.family, first, last, text, index: i });
  });
  // Overlapping entries would hand out one address twice.
  if (!opts.whole)
    for (let i = 0; i < pool.length; i++)
      for (let j = i + 1; j < pool.length; j++) {
        const a = pool[i]!;
        const b = pool[j]!;
        if (a.family === b.family && a.first <= b.last && b.first <= a.last)
          errors.push(`${field}[${b.index}]: ${showValue(b.text)} overlaps ${showValue(a.text)}`);
      }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, pool };
}

/** The entries as written, for messages ("none" for an empty list). */
export function describePool(pool: Pool | null): string {
  return pool === null || pool.length === 0 ? 'none' : pool.map((r) => r.text).join(', ');
}

/** True if the address lies in one of the pool's ranges. */
export function poolContains(pool: Pool, address: string): boolean {
  const p = parseIp(address);
  if (p === null) return false;
  const n = ipToBigInt(p.bytes);
  return pool.some((r) => r.family === p.family && r.first <= n && n <= r.last);
}

export interface AllocationRequest {
  /** Stable identity ("namespace/name"); requests are served in key order. */
  key: string;
  family: IpFamily;
  /** The address the Service holds now (its status), kept if still valid. */
  current: string | null;
}

export type Allocation = { ok: true; address: string } | { ok: false; reason: string };

/**
 * Gives every request an address: its current one if it is in the pool, of its family, not reserved and
 * not taken by an earlier request; else the lowest free address. `reserved`: addresses claimed explicitly.
 */
export function allocate(opts: {
  pool: Pool;
  requests: readonly AllocationRequest[];
  reserved?: ReadonlySet<string>;
}): Map<string, Allocation> {
  const used = new Set<string>();
  for (const r of opts.reserved ?? []) used.add(canonicalIp(r) ?? r);
  const out = new Map<string, Allocation>();
  const sorted = [...opts.requests].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const r of sorted) {
    if (r.current === null) continue;
    const p = parseIp(r.current);
    if (p === null || p.family !== r.family || !poolContains(opts.pool, r.current)) continue;
    const canon = formatIp(p.bytes);
    if (used.has(canon)) continue;
    used.add(canon);
    out.set(r.key, { ok: true, address: canon });
  }
  for (const r of sorted) {
    if (out.has(r.key)) continue;
    const ranges = opts.pool.filter((x) => x.family === r.family);
    let found: string | null = null;
    for (const range of ranges) {
      // Each step skips one used address, so this ends after at most used.size + 1 steps per range.
      for (let n = range.first; n <= range.last; n++) {
        const a = bigIntToIp(n, r.family);
        if (!used.has(a)) {
          found = a;
          break;
        }
      }
      if (found !== null) break;
    }
    if (found === null) {
      out.set(r.key, {
        ok: false,
        reason:
          ranges.length === 0
            ? `the pool has no IPv${r.family} range`
            : `the IPv${r.family} pool (${ranges.map((x) => x.text).join(', ')}) is exhausted`,
      });
      continue;
    }
    used.add(found);
    out.set(r.key, { ok: true, address: found });
  }
  return out;
}
