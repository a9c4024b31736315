// The Reconciler builds every Maglev table through its TableBuilder (current tables, what previous tables are
// computed from, and the comparison of read-back tables at adoption): none is built beside it. A build that
// fails fails its VIP only; the next batch's tables are requested before a batch is written.
import { MemoryDatapath } from '../../src/datapath/memory';
import type { DatapathConfig } from '../../src/datapath/types';
import * as maglev from '../../src/maglev/maglev';
import type { BuildTableOptions, MaglevBackend } from '../../src/maglev/maglev';
import { inlineTableBuilder, TableBuilder } from '../../src/maglev/pool';
import { Config, validateConfig } from '../../src/model';
import {
  applyPlan,
  desiredState,
  DesiredState,
  IdState,
  INLINE_TABLES,
  planReconcile,
  readActual,
  Reconciler,
} from '../../src/reconcile';
import { EARLY_BATCHES, EarlyHolds } from '../../src/reconcile/reconciler';
import { TableCache } from '../../src/reconcile/table';

const DP_CONFIG: DatapathConfig = {
  ownMac: '02:00:00:00:00:01',
  nextHopMac: '02:00:00:00:00:02',
  encapSourceV4: { prefix: '10.9.0.1', prefixLength: 32 },
  encapSourceV6: null,
  mtu: 1500,
};

/** `vips` VIPs of `backends` GUE backends each (second chance on by default: previous tables are written);
 * those numbered in `drained` draining (they take no new flows: redirected). */
function config(
  vips: number,
  backends: (v: number) => number[],
  encap: 'gue' | 'ipip' = 'gue',
  drained: readonly number[] = [],
): Config {
  const r = validateConfig({
    interface: 'eth0',
    vips: Array.from({ length: vips }, (_, v) => ({
      name: `v${v}`,
      address: `10.0.${v >> 8}.${v & 255}`,
      port: 80,
      protocol: 'tcp',
      tableSize: 251,
      encap,
      backends: backends(v).map((b) => ({ address: `10.1.${v}.${b}`, drain: drained.includes(b) })),
    })),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}

function states() {
  let ids: IdState | undefined;
  return (c: Config): DesiredState => {
    const d = desiredState({ config: c, ids, datapathConfig: DP_CONFIG });
    ids = d.ids;
    return d;
  };
}

/** A builder that records its calls and fails the tables naming a backend in `failing`. */
function recordingBuilder() {
  const calls: string[][] = [];
  const failing = new Set<string>();
  let pending = 0;
  let maxPending = 0;
  async function record<T>(backends: readonly MaglevBackend[], build: () => Promise<T>): Promise<T> {
    calls.push(backends.map((b) => b.name));
    pending++;
    maxPending = Math.max(maxPending, pending);
    try {
      if (backends.some((b) => failing.has(b.name))) throw new Error(`no table for ${backends[0]!.name}`);
      return await build();
    } finally {
      pending--;
    }
  }
  let running = 0;
  let recycled = 0;
  const builder: TableBuilder = {
    // Runs of more than 2 tables go through it (the worker pool's own threshold is higher: see INLINE_TABLES).
    inlineUpTo: 2,
    // Threads running: while some do, smaller runs go through it too.
    get running() {
      return running;
    },
    build: (backends, size, as) => record(backends, () => inlineTableBuilder.build(backends, size, as)),
    buildPair: (backends, size, as, skip) =>
      record(backends, () => inlineTableBuilder.buildPair(backends, size, as, skip)),
    // Each built table is given back once its last hold is released (IdTable.release).
    recycle: () => void recycled++,
    close: () => Promise.resolve(),
  };
  return {
    builder,
    calls,
    failing,
    maxPending: () => maxPending,
    setRunning: (n: number) => (running = n),
    recycled: () => recycled,
    /** Resolves once no build is pending. */
    settled: async (): Promise<void> => {
      while (pending > 0) await new Promise((r) => setImmediate(r));
    },
  };
}

/** Every Maglev table built in this process (the builder's included): buildTable and buildMappedTable calls, in
 * call order, until stopCounting(). */
let builds: BuildTableOptions[] = [];
let spies: jest.SpyInstance[] = [];
const stopCounting = (): void => spies.forEach((s) => s.mockRestore());
beforeEach(() => {
  builds = [];
  spies = (['buildTable', 'buildMappedTable'] as const).map((f) => {
    const real = maglev[f] as (o: BuildTableOptions, ...rest: unknown[]) => Uint32Array;
    const counted = (o: BuildTableOptions, ...rest: unknown[]): Uint32Array => {
      builds.push(o);
      return real(o, ...rest);
    };
    return jest.spyOn(maglev, f).mockImplementation(counted as never);
  });
});
afterEach(stopCounting);

/** The installed tables hold what each desired table's ids() gives (built here, after counting stopped). */
async function expectInstalled(dp: MemoryDatapath, d: DesiredState): Promise<void> {
  for (const v of d.vips) expect(await dp.readTable(v.spec.id)).toEqual(v.table.ids());
}

describe('Reconciler with a TableBuilder', () => {
  it('builds every table of a start, a change and a restart through the builder, and no other', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const next = states();
    const r = new Reconciler(dp, { builder: rec.builder });
    const first = next(config(20, () => [1, 2, 3, 4]));
    const s1 = await r.reconcile(first);
    expect(s1.failures).toEqual([]);
    expect(s1.tablesInstalled).toBe(20);
    const atStart = rec.calls.length;
    expect(atStart).toBe(20);
    expect(builds.length).toBe(atStart);

    // Every VIP changes: new tables and, for these GUE VIPs, previous tables from the old and new ones.
    const second = next(config(20, () => [1, 2, 3, 5]));
    const s2 = await r.reconcile(second);
    expect(s2.failures).toEqual([]);
    expect(s2.tablesInstalled).toBe(20);
    expect(s2.previousTablesWritten).toBe(20);
    // The new table of each VIP, and the old one its previous table is computed from.
    expect(rec.calls.length - atStart).toBe(40);
    expect(builds.length).toBe(rec.calls.length);

    // A restart: the read-back tables are compared with the desired ones through the builder: no table to
    // write; the adopted previous tables are rewritten once (second-chance.ts), built through the builder too.
    const again = recordingBuilder();
    const fresh = new Reconciler(dp, { builder: again.builder });
    const before = builds.length;
    const s3 = await fresh.reconcile(second);
    expect(s3.failures).toEqual([]);
    expect(s3.tablesInstalled).toBe(0);
    expect(s3.operations).toBe(s3.previousTablesWritten);
    expect(again.calls.length).toBeGreaterThanOrEqual(20);
    expect(builds.length - before).toBe(again.calls.length);
    stopCounting();
    await expectInstalled(dp, second);
  });

  it('compares read-back tables once: after an adopting sync applied in full, a change builds only its table', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    expect((await new Reconciler(dp).reconcile(next(config(6, () => [1, 2, 3])))).failures).toEqual([]);
    const rec = recordingBuilder();
    const r = new Reconciler(dp, { builder: rec.builder });
    // Adoption: v5 is gone, v0 changes, v1-v4 are compared with their read-back tables.
    const s1 = await r.reconcile(next(config(5, (v) => (v === 0 ? [1, 2, 4] : [1, 2, 3]))));
    expect(s1.failures).toEqual([]);
    expect(s1.vipsDeleted).toBe(1);
    const compared = rec.calls.length;
    expect(compared).toBeGreaterThanOrEqual(4);
    // Every table is now one we installed or matched: a change builds its own table (and the old one its
    // previous table is computed from), nothing is compared again.
    const d2 = next(config(5, (v) => (v === 0 ? [1, 2, 4] : v === 3 ? [1, 3] : [1, 2, 3])));
    const built = builds.length;
    const s2 = await r.reconcile(d2);
    expect(s2.failures).toEqual([]);
    expect(s2.tablesInstalled).toBe(1);
    expect(s2.previousTablesWritten).toBe(1);
    // One table: built in-thread (a run within inlineUpTo), none through the builder.
    expect(rec.calls.length).toBe(compared);
    expect(builds.slice(built).map((o) => o.backends.map((b: MaglevBackend) => b.name).sort())).toEqual([
      ['10.1.3.1', '10.1.3.3'],
      ['10.1.3.1', '10.1.3.2', '10.1.3.3'],
    ]);
    // While the builder has threads running (warm code), the same small run goes through it.
    rec.setRunning(1);
    const d3 = next(config(5, (v) => (v === 0 ? [1, 2, 4] : v === 3 ? [1, 2, 3, 4] : [1, 2, 3])));
    const s3 = await r.reconcile(d3);
    expect(s3.failures).toEqual([]);
    expect(s3.tablesInstalled).toBe(1);
    expect(rec.calls.length).toBeGreaterThan(compared);
    expect(rec.calls.slice(compared).map((c) => [...c].sort())).toContainEqual([
      '10.1.3.1',
      '10.1.3.2',
      '10.1.3.3',
      '10.1.3.4',
    ]);
    rec.setRunning(0);
    stopCounting();
    await expectInstalled(dp, d3);
  });

  it('fails only the VIP whose table cannot be built; the next reconcile installs it', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const next = states();
    const r = new Reconciler(dp, { builder: rec.builder });
    rec.failing.add('10.1.3.2');
    const d = next(config(8, () => [1, 2, 3]));
    const s = await r.reconcile(d);
    expect(s.failures).toEqual([
      {
        op: 'installTable',
        target: `table of VIP ${d.vips[3]!.spec.id}`,
        vips: ['v3'],
        error: 'no table for 10.1.3.1',
      },
    ]);
    expect(s.tablesInstalled).toBe(7);
    expect(await dp.readTable(d.vips[3]!.spec.id)).toBeNull();
    for (const v of d.vips.filter((x) => x.name !== 'v3'))
      expect(await dp.readTable(v.spec.id)).toEqual(v.table.ids());

    rec.failing.clear();
    const calls = rec.calls.length;
    const s2 = await r.reconcile(d);
    expect(s2.failures).toEqual([]);
    expect(s2.tablesInstalled).toBe(1);
    // The failure dropped the mirror: the 7 read-back tables are compared through the builder; v3's table,
    // a run of at most the builder's inlineUpTo (2), is built in-thread (a worker round trip would cost it more).
    expect(INLINE_TABLES).toBeGreaterThanOrEqual(2);
    expect(rec.calls.length - calls).toBe(7);
    await expectInstalled(dp, d);
  });

  it('a read-back table that cannot be compared is rewritten, not the whole reconcile failed', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    const d = next(config(4, () => [1, 2]));
    expect((await new Reconciler(dp).reconcile(d)).failures).toEqual([]);
    const rec = recordingBuilder();
    rec.failing.add('10.1.2.1');
    const s = await new Reconciler(dp, { builder: rec.builder }).reconcile(d);
    expect(rec.calls).toHaveLength(4);
    expect(s.failures).toEqual([]);
    // v2's table could not be built for the comparison: planned as changed, built in-thread (one table).
    expect(s.tablesInstalled).toBe(1);
    await expectInstalled(dp, d);
  });

  it('starts the first batches of tables building before the backend writes, and calls whileBuilding then', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const seen: string[] = [];
    const real = dp.upsertBackends.bind(dp);
    dp.upsertBackends = (batch) => {
      seen.push(`backends after ${rec.calls.length} builds`);
      return real(batch);
    };
    const d = desiredState({ config: config(12, () => [1, 2, 3], 'ipip'), datapathConfig: DP_CONFIG });
    const plan = planReconcile(await readActual(dp), d);
    expect(plan.map((op) => op.op).indexOf('upsertBackends')).toBeLessThan(
      plan.map((op) => op.op).indexOf('installTable'),
    );
    const s = await applyPlan(dp, plan, d, {
      builder: rec.builder,
      tableBatch: 4,
      whileBuilding: () => seen.push(`whileBuilding after ${rec.calls.length} builds`),
    });
    expect(s.failures).toEqual([]);
    expect(s.tablesInstalled).toBe(12);
    expect(rec.calls).toHaveLength(12); // the early builds are the batches' builds, none twice
    expect(seen).toEqual([`whileBuilding after ${EARLY_BATCHES * 4} builds`, `backends after ${EARLY_BATCHES * 4} builds`]); // prettier-ignore
    await expectInstalled(dp, d);
    // In-thread runs (at most inlineUpTo tables) start nothing early and call no whileBuilding.
    const few = desiredState({ config: config(2, () => [1, 2, 3], 'ipip'), datapathConfig: DP_CONFIG });
    let called = 0;
    await applyPlan(new MemoryDatapath(), planReconcile(await readActual(new MemoryDatapath()), few), few, {
      builder: rec.builder,
      whileBuilding: () => called++,
    });
    expect(called).toBe(0);
  });

  it('EarlyHolds: tables start building as the desired state makes them, and applyPlan takes the holds over', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const cache = new TableCache();
    const early = new EarlyHolds(rec.builder, 5);
    cache.onCreate = early.take;
    // No thread running (a small change after the workers retired): nothing starts early.
    desiredState({ config: config(12, () => [1, 2, 3], 'ipip'), tables: cache, datapathConfig: DP_CONFIG });
    expect(rec.calls).toHaveLength(0);
    expect(early.tables.size).toBe(0);
    // Threads running: the first `limit` new tables are requested while the desired state is made, before any plan.
    rec.setRunning(2);
    const d = desiredState({
      config: config(12, () => [1, 2, 4], 'ipip'),
      tables: cache,
      datapathConfig: DP_CONFIG,
    });
    expect(rec.calls).toHaveLength(5);
    expect(early.tables.size).toBe(5);
    const s = await applyPlan(dp, planReconcile(await readActual(dp), d), d, {
      builder: rec.builder,
      tableBatch: 4,
      early,
    });
    expect(s.failures).toEqual([]);
    expect(s.tablesInstalled).toBe(12);
    expect(rec.calls).toHaveLength(12); // the early builds were the batches' builds: none twice
    // applyPlan released each early hold with its batch: none left, and every build given back once.
    expect(early.tables.size).toBe(0);
    early.releaseAll();
    expect(rec.recycled()).toBe(12);
    await expectInstalled(dp, d);
  });

  it('EarlyHolds.releaseAll gives back builds no plan took (a desired state that was not applied)', async () => {
    const rec = recordingBuilder();
    rec.setRunning(1);
    const cache = new TableCache();
    const early = new EarlyHolds(rec.builder, 3);
    cache.onCreate = early.take;
    desiredState({ config: config(6, () => [1, 2], 'ipip'), tables: cache, datapathConfig: DP_CONFIG });
    expect(rec.calls).toHaveLength(3);
    // A failing build: its hold is not taken, so it is not in the set to release.
    rec.failing.add('10.1.3.1');
    cache.onCreate = null;
    const more = new EarlyHolds(rec.builder, 10);
    cache.onCreate = more.take;
    cache.rotate();
    desiredState({ config: config(6, () => [1, 3], 'ipip'), tables: cache, datapathConfig: DP_CONFIG });
    await rec.settled();
    expect(more.tables.size).toBe(5); // six new tables, v3's failed
    early.releaseAll();
    more.releaseAll();
    expect(early.tables.size + more.tables.size).toBe(0);
    expect(rec.recycled()).toBe(8); // 3 + 5 built, each given back once; the failed one had nothing to give
  });

  it('requests the next batch of tables before the first batch is written', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const requestedAtWrite: number[] = [];
    const real = dp.installTables.bind(dp);
    dp.installTables = (batch) => {
      requestedAtWrite.push(rec.calls.length);
      return real(batch);
    };
    // No GUE backend: no previous tables, one build per VIP.
    const d = desiredState({ config: config(12, () => [1, 2, 3], 'ipip'), datapathConfig: DP_CONFIG });
    const plan = planReconcile(await readActual(dp), d);
    const s = await applyPlan(dp, plan, d, { builder: rec.builder, tableBatch: 4 });
    expect(s.failures).toEqual([]);
    expect(s.tablesInstalled).toBe(12);
    expect(rec.calls).toHaveLength(12);
    // Batch k+1 is being built while batch k is written.
    expect(requestedAtWrite).toEqual([8, 12, 12]);
    expect(rec.maxPending()).toBeGreaterThan(1);
    await expectInstalled(dp, d);
  });
});

/** `vips` ipip VIPs of backends 1..5, those in `drained` draining. */
const drainConfig = (vips: number, drained: number[]): Config =>
  config(vips, () => [1, 2, 3, 4, 5], 'ipip', drained);

describe('Reconciler: tables made from the installed ones', () => {
  it('members going down build nothing (the installed table is redirected further); one coming back is built', async () => {
    const dp = new MemoryDatapath();
    const rec = recordingBuilder();
    const next = states();
    const r = new Reconciler(dp, { builder: rec.builder });
    const s1 = await r.reconcile(next(drainConfig(20, [])));
    expect(s1.tablesInstalled).toBe(20);
    expect(rec.calls).toHaveLength(20);
    // one member down everywhere (a node failure): 20 tables from the installed ones, no build
    const d2 = next(drainConfig(20, [2]));
    const s2 = await r.reconcile(d2);
    expect(s2.failures).toEqual([]);
    expect(s2.tablesInstalled).toBe(20);
    expect(s2.tablesFromInstalled).toBe(20);
    expect(rec.calls).toHaveLength(20);
    await expectInstalled(dp, d2); // ids() builds in-thread: the same tables as built from scratch
    // a second one down: again from the installed (already redirected) tables
    const d3 = next(drainConfig(20, [2, 4]));
    const s3 = await r.reconcile(d3);
    expect(s3.tablesFromInstalled).toBe(20);
    expect(rec.calls).toHaveLength(20);
    await expectInstalled(dp, d3);
    // one back up: its slots cannot be found in the installed table; built
    const d4 = next(drainConfig(20, [4]));
    const s4 = await r.reconcile(d4);
    expect(s4.tablesInstalled).toBe(20);
    expect(s4.tablesFromInstalled).toBe(0);
    expect(rec.calls).toHaveLength(40);
    await expectInstalled(dp, d4);
    // every member down: nothing to redirect to (the natural table): built
    const d5 = next(drainConfig(20, [1, 2, 3, 4, 5]));
    const s5 = await r.reconcile(d5);
    expect(s5.tablesFromInstalled).toBe(0);
    expect(rec.calls).toHaveLength(60);
    await expectInstalled(dp, d5);
  });

  it('a table installed by someone else (read back at a start) is not trusted: built', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    await new Reconciler(dp, { builder: recordingBuilder().builder }).reconcile(next(drainConfig(4, [])));
    const rec = recordingBuilder();
    const fresh = new Reconciler(dp, { builder: rec.builder });
    const d = next(drainConfig(4, [3]));
    const s = await fresh.reconcile(d);
    expect(s.failures).toEqual([]);
    expect(s.tablesFromInstalled).toBe(0);
    expect(s.tablesInstalled).toBe(4);
    await expectInstalled(dp, d);
  });
});

describe('IdTable from the installed table (holdInstalled)', () => {
  const table = (drained: number[]) => desiredState({ config: drainConfig(1, drained), datapathConfig: DP_CONFIG }).vips[0]!.table; // prettier-ignore
  it('equals a build for any grown set of members down; refuses other natural tables, shrunk sets and held tables', () => {
    const sets = [[], [1], [2], [1, 2], [2, 5], [1, 2, 5], [1, 2, 3, 4]];
    for (const a of sets)
      for (const b of sets) {
        const from = table(a);
        const to = table(b);
        const ok = to.holdInstalled(from, from.ids());
        const grown = b.length > 0 && a.every((x) => b.includes(x));
        expect([a, b, ok]).toEqual([a, b, grown]);
        if (!ok) continue;
        expect(to.sharedIds()).toEqual(table(b).ids());
        expect(to.equals(table(b).ids())).toBe(true);
        expect(to.naturalIds()).toEqual(table([]).ids());
        expect(to.holdInstalled(from, from.ids())).toBe(false); // held already
        to.release();
      }
    // another natural table (other members), or a wrong length: refused
    const other = desiredState({ config: config(1, () => [1, 2, 3]), datapathConfig: DP_CONFIG }).vips[0]!
      .table;
    expect(table([2]).holdInstalled(other, other.ids())).toBe(false);
    expect(table([2]).holdInstalled(table([]), new Uint32Array(7))).toBe(false);
  });

  it('gives the installed array, redirected in place, to the recycler on the last release (and only then)', () => {
    const given: Uint32Array[] = [];
    const recycler = { ...inlineTableBuilder, recycle: (t: Uint32Array) => void given.push(t) };
    const from = table([]);
    const to = table([2]);
    const installed = from.ids();
    expect(to.holdInstalled(from, installed, recycler)).toBe(true);
    expect(to.sharedIds()).toBe(installed); // redirected where it was read: no copy
    expect(installed).toEqual(table([2]).ids());
    expect(given).toEqual([]);
    to.release();
    expect(given.length).toBe(1);
    expect(given[0]).toBe(installed);
    // refused: nothing taken, nothing given back
    expect(table([]).holdInstalled(from, from.ids(), recycler)).toBe(false);
    expect(given.length).toBe(1);
  });
});

describe('IdTable built through a builder', () => {
  it('shares one build among holders, serves ids() from it while held, and drops it on the last release', async () => {
    const d = desiredState({ config: config(1, () => [1, 2, 3, 4]), datapathConfig: DP_CONFIG });
    const t = d.vips[0]!.table;
    const want = t.ids();
    const rec = recordingBuilder();
    const before = builds.length;
    await Promise.all([t.hold(rec.builder), t.hold(rec.builder)]);
    expect(rec.calls).toHaveLength(1);
    expect(t.ids()).toEqual(want);
    expect(t.naturalIds()).toEqual(want);
    expect(t.equals(want)).toBe(true);
    expect(builds.length - before).toBe(1);
    t.release();
    expect(t.ids()).toEqual(want);
    expect(builds.length - before).toBe(1);
    t.release();
    // Nothing held any more: a synchronous ids() builds again.
    expect(t.ids()).toEqual(want);
    expect(builds.length - before).toBe(2);

    expect(await t.idsAsync(rec.builder)).toEqual(want);
    const other = Uint32Array.from(want);
    other[7] = other[7] === 1 ? 2 : 1;
    expect(await t.equalsAsync(want, rec.builder)).toBe(true);
    expect(await t.equalsAsync(other, rec.builder)).toBe(false);
    // Another size cannot match: no build.
    expect(await t.equalsAsync(want.subarray(1), rec.builder)).toBe(false);
    expect(rec.calls).toHaveLength(4);

    rec.failing.add('10.1.0.1');
    await expect(t.hold(rec.builder)).rejects.toThrow('no table for 10.1.0.1');
    // A failed hold holds nothing; the next one builds again.
    rec.failing.clear();
    await t.hold(rec.builder);
    t.release();
    expect(rec.calls).toHaveLength(6);
  });

  it('gives the held slots back to the builder (recycle) when the last hold ends, not before, and nothing else', async () => {
    const cfg = config(1, () => [1, 2, 3, 4]);
    const given: Uint32Array[] = [];
    const builder = { ...inlineTableBuilder, recycle: (t: Uint32Array) => void given.push(t) };
    const down = desiredState({
      config: cfg,
      datapathConfig: DP_CONFIG,
      health: new Map([['10.0.0.0:80/tcp>10.1.0.2', 'down' as const]]),
    }).vips[0]!.table;
    await down.hold(builder);
    await down.hold(builder);
    const shared = down.sharedIds();
    const copy = down.ids();
    down.release();
    expect(given).toHaveLength(0); // one hold left
    down.release();
    // the natural slots and the redirected ones (the array sharedIds handed out), not the copy
    expect(given).toHaveLength(2);
    expect(given).toContain(shared);
    expect(given).not.toContain(copy);
    expect(given.find((g) => g !== shared)).toEqual(down.naturalIds());
    // A table held from the installed one (read back from the datapath) is not the builder's: not given back.
    const installed = down.ids();
    const again = desiredState({
      config: cfg,
      datapathConfig: DP_CONFIG,
      health: new Map([
        ['10.0.0.0:80/tcp>10.1.0.2', 'down' as const],
        ['10.0.0.0:80/tcp>10.1.0.3', 'down' as const],
      ]),
    }).vips[0]!.table;
    expect(again.holdInstalled(down, installed)).toBe(true);
    again.release();
    expect(given).toHaveLength(2);
  });

  it('sharedIds: the held slots as installed themselves while held (redirected ones made by the builder), else a fresh copy of ids()', async () => {
    const cfg = config(1, () => [1, 2, 3, 4]);
    const t = desiredState({ config: cfg, datapathConfig: DP_CONFIG }).vips[0]!.table;
    const want = t.ids();
    // Not held: built now, a fresh array each time.
    const a = t.sharedIds();
    expect(a).toEqual(want);
    expect(t.sharedIds()).not.toBe(a);
    await t.hold(inlineTableBuilder);
    const held = t.sharedIds();
    expect(held).toEqual(want);
    expect(t.sharedIds()).toBe(held);
    // ids() still hands out copies of it.
    expect(t.ids()).not.toBe(held);
    t.release();
    expect(t.sharedIds()).not.toBe(held);
    expect(t.sharedIds()).toEqual(want);

    // A down member's slots are redirected in what is shared: the builder's redirected table, held beside the
    // natural one (never the natural slots themselves).
    const down = desiredState({
      config: cfg,
      datapathConfig: DP_CONFIG,
      health: new Map([['10.0.0.0:80/tcp>10.1.0.2', 'down' as const]]),
    }).vips[0]!.table;
    expect(down.redirects).toBe(true);
    const redirected = down.ids();
    await down.hold(inlineTableBuilder);
    const s1 = down.sharedIds();
    expect(s1).toEqual(redirected);
    expect(down.sharedIds()).toBe(s1);
    expect(down.ids()).not.toBe(s1);
    expect(down.ids()).toEqual(redirected);
    expect(down.naturalIds()).not.toEqual(redirected);
    expect(down.equals(redirected)).toBe(true);
    down.release();
    expect(down.sharedIds()).not.toBe(s1);
    expect(down.sharedIds()).toEqual(redirected);
  });
});
