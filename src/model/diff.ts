// What a config reload changed, counted for the "config reloaded" log line: VIPs by name, backends by
// (VIP name, address); "changed" is any other difference in the entry.

interface VipLike {
  name: string;
  backends: readonly { address: string }[];
}

export interface ChangeCounts {
  added: number;
  removed: number;
  changed: number;
}

export interface ConfigChanges {
  vips: ChangeCounts;
  backends: ChangeCounts;
}

/** Stable JSON (keys sorted) so two equal entries compare equal whatever their key order. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : x,
  );
}

function count<T>(prev: Map<string, T>, next: Map<string, T>, same: (a: T, b: T) => boolean): ChangeCounts {
  const c: ChangeCounts = { added: 0, removed: 0, changed: 0 };
  for (const [k, v] of next) {
    const p = prev.get(k);
    if (p === undefined) c.added++;
    else if (!same(p, v)) c.changed++;
  }
  for (const k of prev.keys()) if (!next.has(k)) c.removed++;
  return c;
}

/**
 * Counts of VIPs and backends added, removed and changed from `prev` to `next`. A VIP counts as changed when
 * anything but its backend list differs (its backends are counted on their own); a backend of a new or
 * removed VIP counts as added or removed.
 */
export function configChanges(
  prev: { vips: readonly VipLike[] },
  next: { vips: readonly VipLike[] },
): ConfigChanges {
  const vipMap = (c: { vips: readonly VipLike[] }) =>
    new Map(c.vips.map((v) => [v.name, canonical({ ...v, backends: undefined })]));
  const backendMap = (c: { vips: readonly VipLike[] }) => {
    const m = new Map<string, string>();
    for (const v of c.vips) for (const b of v.backends) m.set(`${v.name}|${b.address}`, canonical(b));
    return m;
  };
  const eq = (a: string, b: string) => a === b;
  return {
    vips: count(vipMap(prev), vipMap(next), eq),
    backends: count(backendMap(prev), backendMap(next), eq),
  };
}
