// Previous tables in reconcile (second-chance.ts) against MemoryDatapath: written before the new table in the
// same batch, only for VIPs with GUE backends, expired after retainSeconds, adopted (not wiped) by a restarted
// reconciler, cleared when the feature is off, retried after a failed write; stateless auto mode and GUE port.
import { MemoryDatapath } from '../../src/datapath/memory';
import type { DatapathConfig } from '../../src/datapath/types';
import { Config, validateConfig } from '../../src/model';
import {
  desiredState,
  DesiredState,
  IdState,
  previousTable,
  reconcile,
  recordChange,
  Reconciler,
  slotsOf,
} from '../../src/reconcile';

const VIP = { address: '10.0.0.10', port: 80, protocol: 'tcp' as const };
const DP_CONFIG: DatapathConfig = {
  ownMac: '02:00:00:00:00:01',
  nextHopMac: '02:00:00:00:00:02',
  encapSourceV4: { prefix: '10.9.0.1', prefixLength: 32 },
  encapSourceV6: null,
  mtu: 1500,
};

interface Opts {
  backends: number[];
  encap?: 'ipip' | 'gue';
  stateless?: 'auto' | boolean;
  secondChance?: { enabled?: boolean; retainSeconds?: number };
  guePort?: number;
  backendEncap?: Record<number, 'ipip' | 'gue'>;
}
function config(o: Opts): Config {
  const r = validateConfig({
    interface: 'eth0',
    ...(o.secondChance ? { secondChance: o.secondChance } : {}),
    ...(o.guePort ? { encap: { guePort: o.guePort } } : {}),
    vips: [
      {
        name: 'web',
        ...VIP,
        tableSize: 101,
        encap: o.encap ?? 'gue',
        ...(o.stateless !== undefined ? { stateless: o.stateless } : {}),
        backends: o.backends.map((i) => ({
          address: `10.1.0.${i}`,
          ...(o.backendEncap?.[i] ? { encap: o.backendEncap[i] } : {}),
        })),
      },
    ],
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}

/** Desired states in sequence, ids carried over (as the daemon's Programmer does). */
function states() {
  let ids: IdState | undefined;
  return (o: Opts): DesiredState => {
    const d = desiredState({ config: config(o), ids, datapathConfig: DP_CONFIG });
    ids = d.ids;
    return d;
  };
}

/** A clock the test moves. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, set: (v: number) => (t = v) };
}

const methods = (dp: MemoryDatapath, from = 0) => dp.calls.slice(from).map((c) => c.method);

describe('previous tables in reconcile', () => {
  test('a changed table of a GUE VIP: its previous table is written first, and names the old owners', async () => {
    const dp = new MemoryDatapath();
    const c = clock();
    const r = new Reconciler(dp, { now: c.now });
    const next = states();
    const s1 = await r.reconcile(next({ backends: [1, 2, 3] }));
    expect(s1.failures).toEqual([]);
    expect(s1.previousTablesWritten).toBe(0);
    expect(await dp.readPreviousTable(0)).toBe(null);
    const before = (await dp.readTable(0))!;

    const mark = dp.calls.length;
    c.set(1_001_000);
    const d2 = next({ backends: [1, 2, 3, 4] });
    const s2 = await r.reconcile(d2);
    expect(s2.failures).toEqual([]);
    expect(s2.previousTablesWritten).toBe(1);
    const order = methods(dp, mark).filter((m) => m === 'installPreviousTable' || m === 'installTable');
    expect(order).toEqual(['installPreviousTable', 'installTable']);
    const after = (await dp.readTable(0))!;
    const prev = (await dp.readPreviousTable(0))!;
    let moved = 0;
    for (let s = 0; s < after.length; s++) {
      if (before[s] !== after[s]) moved++;
      expect(prev[s]).toBe(before[s] !== after[s] ? before[s] : after[s]);
    }
    expect(moved).toBeGreaterThan(0);
    expect(s2.nextPreviousExpiry).toBe(1_001_000 + 300_000);
    const view = r.previousOwners();
    expect(view).toEqual([
      {
        key: '10.0.0.10:80/tcp',
        vipId: 0,
        retainedSlots: moved,
        newestChangeAt: 1_001_000,
        expiresAt: 1_301_000,
        installed: true,
      },
    ]);

    // The same desired state again: nothing to write.
    const again = await r.reconcile(d2);
    expect(again.operations).toBe(0);
    expect(again.previousTablesWritten).toBe(0);
  });

  test('a removed backend is never hinted (its id is deleted and may be reused later)', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const next = states();
    const d1 = next({ backends: [1, 2, 3] });
    await r.reconcile(d1);
    const gone = d1.vips[0]!.backends[2]!.id;
    const before = (await dp.readTable(0))!;
    expect(before).toContain(gone);
    const s = await r.reconcile(next({ backends: [1, 2] }));
    expect(s.tablesInstalled).toBe(1);
    const prev = await dp.readPreviousTable(0);
    // Only slots that moved between remaining backends could be hinted; the removed id never is.
    expect(prev ?? new Uint32Array(0)).not.toContain(gone);
    expect((await dp.listBackends()).map((b) => b.id)).not.toContain(gone);
  });

  test('IPIP backends: no previous table is ever written (the datapath hints only to GUE backends)', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const next = states();
    await r.reconcile(next({ backends: [1, 2, 3], encap: 'ipip' }));
    const s = await r.reconcile(next({ backends: [1, 2], encap: 'ipip' }));
    expect(s.tablesInstalled).toBe(1);
    expect(s.previousTablesWritten).toBe(0);
    expect(methods(dp)).not.toContain('installPreviousTable');
    expect(s.nextPreviousExpiry).toBe(null);
  });

  test('expiry: retainSeconds after the change the previous table is cleared', async () => {
    const dp = new MemoryDatapath();
    const c = clock(0);
    const r = new Reconciler(dp, { now: c.now });
    const next = states();
    const opts = { backends: [1, 2, 3], secondChance: { retainSeconds: 60 } };
    await r.reconcile(next(opts));
    c.set(10_000);
    const d = next({ ...opts, backends: [1, 2, 3, 4] });
    const s = await r.reconcile(d);
    expect(s.nextPreviousExpiry).toBe(70_000);
    c.set(69_999);
    expect((await r.reconcile(d)).previousTablesWritten).toBe(0);
    expect(await dp.readPreviousTable(0)).not.toBe(null);
    c.set(70_000);
    const e = await r.reconcile(d);
    expect(e.previousTablesWritten).toBe(1);
    expect(e.nextPreviousExpiry).toBe(null);
    expect(await dp.readPreviousTable(0)).toBe(null);
    expect(r.previousOwners()[0]).toMatchObject({ retainedSlots: 0, installed: false });
  });

  test("several quick changes: the first change's moved slots stay hinted after the second", async () => {
    const dp = new MemoryDatapath();
    const c = clock(0);
    const r = new Reconciler(dp, { now: c.now });
    const next = states();
    await r.reconcile(next({ backends: [1, 2, 3, 4] }));
    const t0 = (await dp.readTable(0))!;
    c.set(1000);
    await r.reconcile(next({ backends: [1, 2, 3, 4, 5] }));
    const t1 = (await dp.readTable(0))!;
    c.set(2000);
    await r.reconcile(next({ backends: [1, 2, 3, 4, 5, 6] }));
    const t2 = (await dp.readTable(0))!;
    const prev = (await dp.readPreviousTable(0))!;
    let firstOnly = 0;
    for (let s = 0; s < t2.length; s++) {
      // The owner from before the burst where the slot moved at all (and is not back to it).
      if (t0[s] !== t1[s]) {
        expect(prev[s]).toBe(t0[s] !== t2[s] ? t0[s] : t1[s]);
        firstOnly++;
      } else if (t1[s] !== t2[s]) expect(prev[s]).toBe(t1[s]);
      else expect(prev[s]).toBe(t2[s]);
    }
    expect(firstOnly).toBeGreaterThan(0);
    // Slots moved by the first change expire first.
    expect(r.previousOwners()[0]).toMatchObject({ expiresAt: 301_000, newestChangeAt: 2000 });
  });

  test('a down backend of a GUE VIP: its redirected slots name it (health disagreement), no change needed', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const cfg = config({ backends: [1, 2, 3] });
    const d1 = desiredState({ config: cfg, datapathConfig: DP_CONFIG });
    await r.reconcile(d1);
    const health = new Map([[d1.vips[0]!.backends[1]!.key, 'down' as const]]);
    const d2 = desiredState({ config: cfg, ids: d1.ids, health, datapathConfig: DP_CONFIG });
    await r.reconcile(d2);
    const downId = d2.vips[0]!.backends[1]!.id;
    const cur = (await dp.readTable(0))!;
    const prev = (await dp.readPreviousTable(0))!;
    const natural = d2.vips[0]!.table.naturalIds();
    let n = 0;
    for (let s = 0; s < cur.length; s++) {
      expect(cur[s]).not.toBe(downId);
      if (natural[s] === downId) {
        expect(prev[s]).toBe(downId);
        n++;
      }
    }
    expect(n).toBeGreaterThan(0);
  });

  test('restart: a new reconciler adopts the pinned previous table, keeps it, and expires it retainSeconds later', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    const first = new Reconciler(dp, { now: () => 0 });
    await first.reconcile(next({ backends: [1, 2, 3] }));
    const d = next({ backends: [1, 2, 3, 4] });
    await first.reconcile(d);
    const pinned = (await dp.readPreviousTable(0))!;
    expect(pinned).not.toBe(null);

    // The daemon restarts at t = 100 s with the same desired state: nothing is wiped.
    const c = clock(100_000);
    const second = new Reconciler(dp, { now: c.now });
    const s = await second.reconcile(d);
    expect(s.failures).toEqual([]);
    expect([...(await dp.readPreviousTable(0))!]).toEqual([...pinned]);
    expect(s.nextPreviousExpiry).toBe(400_000);
    // A change after the restart merges with the adopted table.
    c.set(150_000);
    const cur = (await dp.readTable(0))!;
    await second.reconcile(next({ backends: [1, 2, 3, 4, 5] }));
    const after = (await dp.readTable(0))!;
    const merged = (await dp.readPreviousTable(0))!;
    for (let sl = 0; sl < after.length; sl++)
      if (pinned[sl] !== cur[sl])
        // Adopted: the pinned owner is the older one (named unless the slot is back at it).
        expect(merged[sl]).toBe(pinned[sl] !== after[sl] ? pinned[sl] : cur[sl]);
      else if (cur[sl] !== after[sl]) expect(merged[sl]).toBe(cur[sl]);
      else expect(merged[sl]).toBe(after[sl]);
    c.set(450_000);
    await second.reconcile(next({ backends: [1, 2, 3, 4, 5] }));
    expect(await dp.readPreviousTable(0)).toBe(null);
  });

  test('the one-shot reconcile() adopts too: same desired state, pinned previous table untouched', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    await reconcile(dp, next({ backends: [1, 2, 3] }), { now: 0 });
    const d = next({ backends: [1, 2, 3, 4] });
    const s = await reconcile(dp, d, { now: 0 });
    expect(s.previousTablesWritten).toBe(1);
    const pinned = await dp.readPreviousTable(0);
    expect(pinned).not.toBe(null);
    const again = await reconcile(dp, d, { now: 5 });
    expect(again.failures).toEqual([]);
    expect(await dp.readPreviousTable(0)).toEqual(pinned);
  });

  test('secondChance disabled: a previous table found or left is cleared, none written on changes', async () => {
    const dp = new MemoryDatapath();
    const next = states();
    const r = new Reconciler(dp, { now: () => 0 });
    await r.reconcile(next({ backends: [1, 2, 3] }));
    await r.reconcile(next({ backends: [1, 2, 3, 4] }));
    expect(await dp.readPreviousTable(0)).not.toBe(null);
    const off = { enabled: false };
    const s = await r.reconcile(next({ backends: [1, 2, 3, 4], secondChance: off }));
    expect(s.previousTablesWritten).toBe(1);
    expect(await dp.readPreviousTable(0)).toBe(null);
    const s2 = await r.reconcile(next({ backends: [1, 2, 3, 4, 5], secondChance: off }));
    expect(s2.tablesInstalled).toBe(1);
    expect(s2.previousTablesWritten).toBe(0);
    expect(await dp.readPreviousTable(0)).toBe(null);
    // A restarted daemon with the feature off clears what an earlier run pinned.
    const dp2 = new MemoryDatapath();
    const n2 = states();
    await new Reconciler(dp2, { now: () => 0 }).reconcile(n2({ backends: [1, 2, 3] }));
    await new Reconciler(dp2, { now: () => 0 }).reconcile(n2({ backends: [1, 2, 3, 4] }));
    // (each reconciler adopts and the change is recorded by the second one)
    expect(await dp2.readPreviousTable(0)).not.toBe(null);
    const s3 = await new Reconciler(dp2, { now: () => 0 }).reconcile(
      n2({ backends: [1, 2, 3, 4], secondChance: off }),
    );
    expect(s3.previousTablesWritten).toBe(1);
    expect(await dp2.readPreviousTable(0)).toBe(null);
  });

  test('a failed previous-table write: the table still goes in, no VIP is withheld, the write is retried', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const next = states();
    await r.reconcile(next({ backends: [1, 2, 3] }));
    // the previous table goes in as a pair with the table (installTables' `previous`): the pair is refused,
    // the table alone still goes in
    dp.failOn('installPreviousTable', '0', new Error('ENOMEM (injected)'));
    const d = next({ backends: [1, 2, 3, 4] });
    const s = await r.reconcile(d);
    expect(s.tablesInstalled).toBe(1);
    expect(s.failures).toEqual([
      { op: 'installPreviousTable', target: 'previous table of VIP 0', vips: [], error: 'ENOMEM (injected)' },
    ]);
    expect(await dp.readPreviousTable(0)).toBe(null);
    dp.failOn('installPreviousTable', '0', null);
    const retry = await r.reconcile(d);
    expect(retry.failures).toEqual([]);
    expect(retry.previousTablesWritten).toBe(1);
    const cur = (await dp.readTable(0))!;
    const prev = (await dp.readPreviousTable(0))!;
    expect(prev.some((id, s) => id !== cur[s])).toBe(true);
  });

  test('previous table written = previousTable() of recordChange() (one source of truth)', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 7 });
    const next = states();
    const d1 = next({ backends: [1, 2, 3] });
    await r.reconcile(d1);
    const d2 = next({ backends: [2, 3, 4] });
    await r.reconcile(d2);
    const keep = (id: number): boolean => d2.vips[0]!.backends.some((b) => b.id === id);
    const retained = recordChange({
      retained: null,
      old: slotsOf(d1.vips[0]!.table),
      current: d2.vips[0]!.table,
      now: 7,
      retainMs: 300_000,
      keep,
    });
    const want = previousTable({ current: d2.vips[0]!.table, retained, now: 7, retainMs: 300_000, keep });
    expect(await dp.readPreviousTable(0)).toEqual(want);
  });
});

describe('flows through the modelled datapath (MemoryDatapath.forward)', () => {
  test('stateless GUE VIP, two quick changes: every flow from before them reaches its backend', async () => {
    const dp = new MemoryDatapath();
    const c = clock(0);
    const r = new Reconciler(dp, { now: c.now });
    const next = states();
    await r.reconcile(next({ backends: [1, 2, 3, 4] }));
    expect((await dp.listVips())[0]!.flags.stateless).toBe(true);
    const flow = (i: number) => ({ vip: VIP, source: `198.51.100.${1 + (i % 200)}`, sourcePort: 20000 + i });
    /** Opens flows (SYN) and returns their backends. */
    const open = (ids: number[]) =>
      new Map(
        ids.map((i) => {
          const v = dp.forward({ ...flow(i), syn: true });
          if (v.kind !== 'forward') throw new Error(`flow ${i}: ${v.kind}`);
          expect(v.hint ?? null).toBe(null);
          return [i, v.backendId] as const;
        }),
      );
    /** A mid-connection packet of each flow: reaches its backend directly or through the hint. */
    const reach = (owners: Map<number, number>) =>
      [...owners].map(([i, own]) => {
        const v = dp.forward(flow(i));
        if (v.kind !== 'forward') throw new Error(`flow ${i}: ${v.kind}`);
        return { moved: v.backendId !== own, saved: v.backendId === own || v.hint?.backendId === own };
      });
    const early = open(Array.from({ length: 400 }, (_, i) => i));
    c.set(1000);
    await r.reconcile(next({ backends: [1, 2, 3, 4, 5] }));
    const one = reach(early);
    expect(one.filter((x) => x.moved).length).toBeGreaterThan(0);
    expect(one.filter((x) => !x.saved)).toEqual([]);
    const between = open(Array.from({ length: 400 }, (_, i) => 400 + i));
    c.set(2000);
    await r.reconcile(next({ backends: [1, 2, 3, 4, 5, 6] }));
    const two = reach(early);
    const mid = reach(between);
    console.log(
      `400 flows from before two quick changes: ${two.filter((x) => x.moved).length} moved, ` +
        `${two.filter((x) => !x.saved).length} lost; 400 flows opened between them: ` +
        `${mid.filter((x) => x.moved).length} moved, ${mid.filter((x) => !x.saved).length} lost ` +
        '(their slot moved twice: the hint names the owner from before the burst)',
    );
    expect(two.filter((x) => x.moved).length).toBeGreaterThan(0);
    expect(two.filter((x) => !x.saved)).toEqual([]);
    // Flows opened between the changes whose slot did not move twice are hinted too.
    expect(mid.filter((x) => x.moved && x.saved).length).toBeGreaterThan(0);
  });
});

describe('encapsulation and stateless mode in reconcile', () => {
  test('stateless auto: on when every backend is gue, off with one ipip backend; forced either way', async () => {
    const flagsOf = (o: Opts) => desiredState({ config: config(o) }).vips[0]!.spec.flags;
    expect(flagsOf({ backends: [1, 2] }).stateless).toBe(true);
    expect(flagsOf({ backends: [1, 2], backendEncap: { 2: 'ipip' } }).stateless).toBeUndefined();
    expect(flagsOf({ backends: [1, 2], encap: 'ipip' }).stateless).toBeUndefined();
    expect(flagsOf({ backends: [1, 2], encap: 'ipip', backendEncap: { 1: 'gue', 2: 'gue' } }).stateless).toBe(
      true,
    );
    expect(flagsOf({ backends: [], encap: 'gue' }).stateless).toBeUndefined();
    expect(flagsOf({ backends: [1, 2], stateless: false }).stateless).toBeUndefined();
    expect(flagsOf({ backends: [1, 2], encap: 'ipip', stateless: true }).stateless).toBe(true);
  });

  test('backend encap and the VIP flag reach the datapath; an encap change is an update, not a rebuild', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const next = states();
    await r.reconcile(next({ backends: [1, 2], encap: 'gue' }));
    expect((await dp.listVips())[0]!.flags.stateless).toBe(true);
    expect((await dp.listBackends()).map((b) => b.encap)).toEqual(['gue', 'gue']);
    const s = await r.reconcile(next({ backends: [1, 2], encap: 'gue', backendEncap: { 2: 'ipip' } }));
    expect(s).toMatchObject({ backendsUpdated: 1, vipsUpdated: 1, tablesInstalled: 0 });
    expect((await dp.listVips())[0]!.flags.stateless ?? false).toBe(false);
    const bs = (await dp.listBackends()).sort((a, b) => a.id - b.id);
    expect(bs.map((b) => b.encap ?? 'ipip')).toEqual(['gue', 'ipip']);
  });

  test('encap.guePort reaches the datapath config; a new port is a configure', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => 0 });
    const build = (guePort?: number) =>
      desiredState({
        config: config({ backends: [1], guePort }),
        datapathConfig: {
          ...DP_CONFIG,
          guePort: config({ backends: [1], guePort }).encap?.guePort,
        },
      });
    await r.reconcile(build());
    expect((await dp.readConfig())!.guePort ?? 6080).toBe(6080);
    expect((await r.reconcile(build())).configured).toBe(false);
    const s = await r.reconcile(build(7000));
    expect(s.configured).toBe(true);
    expect((await dp.readConfig())!.guePort).toBe(7000);
  });
});
