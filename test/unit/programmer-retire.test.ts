// When the daemon's Programmer collects garbage: the table workers' retirement (retireCollects), and never fully right
// after a reconcile (a full collection there paused the event loop 37-123 ms during Kubernetes bursts, /healthz up to
// 129 ms); after a burst's sync (afterSync) it only asks V8 for an incremental collection (burstCollects).
import {
  BURST_COLLECT_MSG,
  burstCollects,
  Programmer,
  RETIRE_COLLECT_MAX_HEAP,
  retireCollects,
  startCollectsIncrementally,
} from '../../src/daemon/programmer';
import { INLINE_TABLES } from '../../src/reconcile/reconciler';
import { MemoryDatapath } from '../../src/datapath/memory';
import { validateConfig, type Config } from '../../src/model';
import { Writable } from 'node:stream';
import pino from 'pino';
import { TEST_DATAPATH_CONFIG } from '../helpers/datapath-config';

describe('retireCollects', () => {
  it('collects after a burst while the heap is small enough for a brief pause', () => {
    expect(retireCollects({ heapUsed: 30 * 2 ** 20, atStart: false })).toBe(true);
    expect(retireCollects({ heapUsed: RETIRE_COLLECT_MAX_HEAP, atStart: false })).toBe(true);
    expect(retireCollects({ heapUsed: RETIRE_COLLECT_MAX_HEAP + 1, atStart: false })).toBe(false);
  });

  it("never at the daemon's start, which collects right after whatever the heap", () => {
    expect(retireCollects({ heapUsed: 30 * 2 ** 20, atStart: true })).toBe(false);
    expect(retireCollects({ heapUsed: 10 * RETIRE_COLLECT_MAX_HEAP, atStart: true })).toBe(false);
  });
});

describe('burstCollects', () => {
  it('asks after a sync that built tables through the workers (more than INLINE_TABLES), while the heap is small', () => {
    const small = 30 * 2 ** 20;
    expect(burstCollects({ tablesInstalled: INLINE_TABLES + 1, heapUsed: small })).toBe(true);
    expect(burstCollects({ tablesInstalled: 1000, heapUsed: RETIRE_COLLECT_MAX_HEAP })).toBe(true);
    expect(burstCollects({ tablesInstalled: INLINE_TABLES, heapUsed: small })).toBe(false);
    expect(burstCollects({ tablesInstalled: 0, heapUsed: small })).toBe(false);
    expect(burstCollects({ tablesInstalled: 1000, heapUsed: RETIRE_COLLECT_MAX_HEAP + 1 })).toBe(false);
  });
});

describe('Programmer: no collection after a reconcile', () => {
  const DP = TEST_DATAPATH_CONFIG;
  /** `n` VIPs of one backend each; `b` picks the backend's last octet (another b: every VIP changed), per VIP when a
   * function. */
  const config = (n: number, b: number | ((i: number) => number) = 1): Config => {
    const r = validateConfig({
      interface: 'eth0',
      vips: Array.from({ length: n }, (_, i) => ({
        name: `v${i}`,
        address: `10.0.${i >> 8}.${i & 255}`,
        port: 80,
        tableSize: 101,
        backends: [{ address: `10.1.${i & 255}.${typeof b === 'number' ? b : b(i)}` }],
      })),
    });
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    return r.config;
  };

  async function rig(o: { heapUsed?: number } = {}) {
    const trims: unknown[] = [];
    let pressures = 0;
    const lines: { msg: string; [k: string]: unknown }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const p = new Programmer({
      log: pino({ level: 'debug' }, sink),
      trimMemory: (t) => (trims.push(t ?? null), t?.collect === true),
      memoryPressure: () => void pressures++,
      heapUsed: () => o.heapUsed ?? 30 * 2 ** 20,
    });
    await p.use(new MemoryDatapath());
    const apply = (c: Config) => p.apply({ config: c, now: 0, datapathConfig: DP });
    return { p, trims, lines, apply, pressures: () => pressures };
  }

  it("a reconcile of every VIP (a burst) leaves collecting to V8 and to the workers' retirement", async () => {
    const r = await rig();
    const n = 300;
    await r.apply(config(n));
    for (const b of [2, 3, 4]) {
      const { summary } = await r.apply(config(n, b));
      expect(summary.tablesInstalled).toBe(n);
    }
    expect(r.trims).toEqual([]);
    expect(r.lines.filter((l) => /collect/.test(l.msg))).toEqual([]);
    // apply alone never asks for the incremental one either: afterSync does
    expect(r.pressures()).toBe(0);
    await r.p.close();
  });

  it("afterSync asks V8 to collect after a burst's sync only, and logs whether it did", async () => {
    const r = await rig();
    const n = 300;
    const burst = await r.apply(config(n));
    r.p.afterSync(burst.summary);
    expect(r.pressures()).toBe(1);
    const logged = r.lines.filter((l) => l.msg === BURST_COLLECT_MSG);
    expect(logged).toEqual([expect.objectContaining({ tables: n, heapMB: 30, collect: true })]);
    // one VIP changed: in-thread, no burst, nothing asked or logged
    const one = await r.apply(config(n, (i) => (i === 0 ? 2 : 1)));
    expect(one.summary.tablesInstalled).toBe(1);
    r.p.afterSync(one.summary);
    expect(r.pressures()).toBe(1);
    expect(r.lines.filter((l) => l.msg === BURST_COLLECT_MSG)).toHaveLength(1);
    // no full collection either way
    expect(r.trims).toEqual([]);
    await r.p.close();
  });

  it('afterSync leaves a large heap to V8 (logged as not collected), and does nothing without the collaborator', async () => {
    const r = await rig({ heapUsed: RETIRE_COLLECT_MAX_HEAP + 1 });
    const { summary } = await r.apply(config(100));
    r.p.afterSync(summary);
    expect(r.pressures()).toBe(0);
    expect(r.lines.filter((l) => l.msg === BURST_COLLECT_MSG)).toEqual([
      expect.objectContaining({ tables: 100, collect: false }),
    ]);
    await r.p.close();
    const bare = new Programmer({ log: pino({ level: 'silent' }) });
    await bare.use(new MemoryDatapath());
    const s = await bare.apply({ config: config(100), now: 0, datapathConfig: DP });
    expect(() => bare.afterSync(s.summary)).not.toThrow();
    await bare.close();
  });
});

describe("the start's collection (Programmer.collectAtStart)", () => {
  it('is incremental above RETIRE_COLLECT_MAX_HEAP only', () => {
    expect(startCollectsIncrementally(RETIRE_COLLECT_MAX_HEAP + 1)).toBe(true);
    expect(startCollectsIncrementally(RETIRE_COLLECT_MAX_HEAP)).toBe(false);
    expect(startCollectsIncrementally(0)).toBe(false);
  });

  const programmer = (o: {
    heapUsed: number;
    trim?: boolean;
    incremental?: boolean | null;
  }): { p: Programmer; trims: unknown[]; incrementals: () => number } => {
    const trims: unknown[] = [];
    let incrementals = 0;
    const p = new Programmer({
      log: pino({ level: 'silent' }),
      ...(o.trim === false ? {} : { trimMemory: (t?: { collect?: boolean }) => (trims.push(t ?? null), t?.collect === true) }), // prettier-ignore
      ...(o.incremental === null
        ? {}
        : { collectIncrementally: () => (incrementals++, Promise.resolve(o.incremental ?? true)) }),
      heapUsed: () => o.heapUsed,
    });
    return { p, trims, incrementals: () => incrementals };
  };

  it('a large heap: the incremental collection, waited for, then the free memory given back without a full one', async () => {
    const r = programmer({ heapUsed: RETIRE_COLLECT_MAX_HEAP + 1 });
    expect(await r.p.collectAtStart()).toEqual({ how: 'incremental', collected: true });
    expect([r.incrementals(), r.trims]).toEqual([1, [null]]);
    // it did not end in time: said so, the memory given back all the same
    const late = programmer({ heapUsed: RETIRE_COLLECT_MAX_HEAP + 1, incremental: false });
    expect(await late.p.collectAtStart()).toEqual({ how: 'incremental', collected: false });
    expect(late.trims).toEqual([null]);
  });

  it('a small heap, or no incremental collaborator: one full collection', async () => {
    const small = programmer({ heapUsed: RETIRE_COLLECT_MAX_HEAP });
    expect(await small.p.collectAtStart()).toEqual({ how: 'full', collected: true });
    expect([small.incrementals(), small.trims]).toEqual([0, [{ collect: true }]]);
    const none = programmer({ heapUsed: 10 * RETIRE_COLLECT_MAX_HEAP, incremental: null });
    expect(await none.p.collectAtStart()).toEqual({ how: 'full', collected: true });
    expect(none.trims).toEqual([{ collect: true }]);
  });

  it('nothing without trimMemory', async () => {
    const r = programmer({ heapUsed: 10 * RETIRE_COLLECT_MAX_HEAP, trim: false });
    expect(await r.p.collectAtStart()).toEqual({ how: null, collected: false });
    expect(r.incrementals()).toBe(0);
  });
});
