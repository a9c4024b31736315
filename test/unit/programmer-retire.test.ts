// When the daemon's Programmer collects garbage: the table workers' retirement (retireCollects), never right after a
// reconcile (a full collection there paused the event loop 37-123 ms during Kubernetes bursts, /healthz up to 129 ms).
import { Programmer, RETIRE_COLLECT_MAX_HEAP, retireCollects } from '../../src/daemon/programmer';
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

describe('Programmer: no collection after a reconcile', () => {
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
    });
    await p.use(new MemoryDatapath());
    const apply = (c: Config) => p.apply({ config: c, now: 0, datapathConfig: DP });
    return { p, trims, lines, apply };
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
    await r.p.close();
  });
});
