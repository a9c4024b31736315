// When the daemon's Programmer collects garbage: the table workers' retirement (retireCollects), and right after a
// burst's reconcile (burstCollects).
import {
  BURST_COLLECT_MIN_CHANGES,
  BURST_COLLECT_MIN_GROWTH,
  burstCollects,
  BURST_COLLECTED_MSG,
  Programmer,
  RETIRE_COLLECT_MAX_HEAP,
  retireCollects,
} from '../../src/daemon/programmer';
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
  const MB = 2 ** 20;
  const ok = { changes: BURST_COLLECT_MIN_CHANGES, heapUsed: 60 * MB, heapAfterCollect: 60 * MB - BURST_COLLECT_MIN_GROWTH }; // prettier-ignore

  it('a burst that grew a small heap by the bound collects', () => {
    expect(burstCollects(ok)).toBe(true);
    expect(burstCollects({ ...ok, heapUsed: RETIRE_COLLECT_MAX_HEAP, heapAfterCollect: 0 })).toBe(true);
  });

  it('not for fewer changes, less growth, a heap too big for a brief pause, or before any collection', () => {
    expect(burstCollects({ ...ok, changes: BURST_COLLECT_MIN_CHANGES - 1 })).toBe(false);
    expect(burstCollects({ ...ok, heapAfterCollect: ok.heapAfterCollect + 1 })).toBe(false);
    expect(burstCollects({ ...ok, heapUsed: RETIRE_COLLECT_MAX_HEAP + 1, heapAfterCollect: 0 })).toBe(false);
    expect(burstCollects({ ...ok, heapAfterCollect: Infinity })).toBe(false);
  });
});

describe('Programmer: a collection right after a burst', () => {
  const DP = TEST_DATAPATH_CONFIG;
  /** `n` VIPs of one backend each; `b` picks the backend's last octet (another b: every VIP changed). */
  const config = (n: number, b = 1): Config => {
    const r = validateConfig({
      interface: 'eth0',
      vips: Array.from({ length: n }, (_, i) => ({
        name: `v${i}`,
        address: `10.0.${i >> 8}.${i & 255}`,
        port: 80,
        tableSize: 101,
        backends: [{ address: `10.1.${i & 255}.${b}` }],
      })),
    });
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    return r.config;
  };

  async function rig() {
    let heap = 40 * 2 ** 20;
    const trims: unknown[] = [];
    const lines: { msg: string; changes?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const p = new Programmer({
      log: pino({ level: 'debug' }, sink),
      trimMemory: (t) => (trims.push(t ?? null), t?.collect === true),
      heapUsed: () => heap,
    });
    await p.use(new MemoryDatapath());
    const apply = (c: Config) => p.apply({ config: c, now: 0, datapathConfig: DP });
    return { p, trims, lines, apply, setHeap: (mb: number) => (heap = mb * 2 ** 20) };
  }

  it('collects after a reconcile of a burst that grew the heap, once the start collected; not for a small one', async () => {
    const r = await rig();
    const n = BURST_COLLECT_MIN_CHANGES;
    // Before the start's collection (noteCollected) nothing collects, burst or not.
    await r.apply(config(n));
    expect(r.trims).toEqual([]);
    r.p.noteCollected(); // at 40 MB
    // Every VIP changed, heap grown by the bound: one collection right after.
    r.setHeap(40 + BURST_COLLECT_MIN_GROWTH / 2 ** 20);
    const { summary } = await r.apply(config(n, 2));
    expect(summary.tablesInstalled + summary.vipsUpdated).toBeGreaterThanOrEqual(n);
    expect(r.trims).toEqual([{ collect: true }]);
    expect(r.lines.filter((l) => l.msg === BURST_COLLECTED_MSG).map((l) => l.changes! >= n)).toEqual([true]);
    // Growth is counted from that collection (the heap reader says 56 MB then): the same heap again is no growth.
    await r.apply(config(n, 3));
    expect(r.trims).toHaveLength(1);
    // One VIP changed with the heap grown well past the bound: not a burst.
    r.setHeap(90);
    const small = config(n, 3);
    await r.apply({ ...small, vips: small.vips.map((v, i) => (i === 0 ? config(n, 4).vips[0]! : v)) });
    expect(r.trims).toHaveLength(1);
    // A burst over a heap too big for a brief pause: none either.
    r.setHeap(RETIRE_COLLECT_MAX_HEAP / 2 ** 20 + 1);
    await r.apply(config(n, 5));
    expect(r.trims).toHaveLength(1);
    await r.p.close();
  });
});
