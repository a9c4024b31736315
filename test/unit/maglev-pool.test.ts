// TableBuilder: the worker pool (built dist/ worker) and the inline builder give buildTable's tables; the pool
// runs builds on up to `threads` workers, fails a dead worker's builds and replaces it, retires idle workers,
// and close() rejects what is pending.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  buildTable,
  inlineTableBuilder,
  MaglevBackend,
  mapTable,
  redirectSkipped,
  SPARE_BUFFERS,
  WORKER_NICE,
  NO_BACKEND,
  WorkerTableBuilder,
} from '../../src/maglev';
import { packageRoot } from '../../src/paths';

jest.setTimeout(60000);

/** The built worker (the daemon runs dist/): build with npx tsc -p tsconfig.build.json. */
const WORKER = join(packageRoot, 'dist', 'src', 'maglev', 'pool-worker.js');

const backendsN = (n: number, weight: (i: number) => number = () => 1): MaglevBackend[] =>
  Array.from({ length: n }, (_, i) => ({ name: `10.${(i >> 8) & 255}.${i & 255}.7`, weight: weight(i) }));

const cases: { what: string; backends: MaglevBackend[]; size: number }[] = [
  { what: '100 equal', backends: backendsN(100), size: 65537 },
  { what: '37 weighted', backends: backendsN(37, (i) => i % 4), size: 65537 },
  { what: '3 at M=13', backends: backendsN(3, (i) => i + 1), size: 13 },
  { what: 'none with weight', backends: backendsN(4, () => 0), size: 251 },
  { what: 'empty', backends: [], size: 4099 },
];

/** Slot-for-slot equality (tables from a worker are of another realm's Uint32Array: toEqual refuses them). */
function expectSame(got: Uint32Array, want: Uint32Array): void {
  expect(got.length).toBe(want.length);
  const bytes = (t: Uint32Array): Buffer => Buffer.from(t.buffer, t.byteOffset, t.byteLength);
  expect(bytes(got).equals(bytes(want))).toBe(true);
}

async function waitFor(what: string, pred: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

let dir: string;
/** A worker that exits (code 7) when asked to build a table naming "die", else the real worker. */
let dyingWorker: string;

beforeAll(() => {
  if (!existsSync(WORKER)) throw new Error(`${WORKER} is missing: build dist/ first (npm run build:ts)`);
  dir = mkdtempSync(join(tmpdir(), 'peak-pool-'));
  dyingWorker = join(dir, 'dying-worker.js');
  writeFileSync(
    dyingWorker,
    `const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => { if (m.names.includes('die')) process.exit(7); });
require(${JSON.stringify(WORKER)});
`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('inlineTableBuilder', () => {
  it('gives buildTable tables and rejects bad input with its error', async () => {
    for (const c of cases)
      expectSame(
        await inlineTableBuilder.build(c.backends, c.size),
        buildTable({ backends: c.backends, size: c.size }),
      );
    await expect(inlineTableBuilder.build(backendsN(2), 12)).rejects.toThrow(RangeError);
  });

  it('with `as`: each member index becomes its value, NO_BACKEND the `none` value (mapTable)', async () => {
    const as = { values: Uint32Array.of(101, 102, 103), none: 7 };
    const built = buildTable({ backends: backendsN(3), size: 13 });
    const mapped = await inlineTableBuilder.build(backendsN(3), 13, as);
    expect(Array.from(mapped)).toEqual(Array.from(built, (i) => as.values[i]!));
    expect(Array.from(await inlineTableBuilder.build([], 13, as))).toEqual(new Array(13).fill(7));
    expect(Array.from(mapTable(Uint32Array.of(NO_BACKEND, 2, 0), as))).toEqual([7, 103, 101]);
  });

  it('buildPair: the mapped table and beside it a copy with the skipped values redirected (redirectSkipped)', async () => {
    for (const c of cases) {
      const as = { values: Uint32Array.from(c.backends, (_, i) => 1000 + i), none: 0 };
      const natural = mapTable(buildTable({ backends: c.backends, size: c.size }), as);
      for (const skip of [[1000], [1000, 1002], [], as.values.length > 3 ? [1001, 1003, 999] : [1001]]) {
        const pair = await inlineTableBuilder.buildPair(c.backends, c.size, as, skip);
        expectSame(pair.natural, natural);
        expectSame(pair.redirected, redirectSkipped(natural.slice(), new Set(skip)));
        expect(pair.redirected.buffer).not.toBe(pair.natural.buffer);
      }
    }
  });
});

describe('WorkerTableBuilder', () => {
  it('gives tables identical to buildTable, many at once, on at most `threads` workers', async () => {
    const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 2 });
    try {
      expect(pool.running).toBe(0);
      const jobs = [...cases, ...cases, ...cases].map((c) => ({ c, p: pool.build(c.backends, c.size) }));
      // Both workers start for a queue of builds, no more.
      expect(pool.running).toBe(2);
      const tables = await Promise.all(jobs.map((j) => j.p));
      jobs.forEach(({ c }, k) => expectSame(tables[k]!, buildTable({ backends: c.backends, size: c.size })));
      expect(pool.running).toBe(2);
      // with `as`: mapped in the worker, as mapTable maps
      for (const c of cases) {
        const as = { values: Uint32Array.from(c.backends, (_, i) => 1000 + i), none: 0 };
        expectSame(await pool.build(c.backends, c.size, as), mapTable(buildTable({ backends: c.backends, size: c.size }), as)); // prettier-ignore
        // a pair: both made in the worker, as the inline builder makes them
        const want = await inlineTableBuilder.buildPair(c.backends, c.size, as, [1001, 1000]);
        const pair = await pool.buildPair(c.backends, c.size, as, [1001, 1000]);
        expectSame(pair.natural, want.natural);
        expectSame(pair.redirected, want.redirected);
      }
      expect(pool.workerDeaths).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('runs its workers at a lower priority (nice + WORKER_NICE), the calling thread unchanged', async () => {
    /** nice value per thread of this process (field 19 of /proc/<pid>/task/<tid>/stat) */
    const nices = (): number[] =>
      readdirSync('/proc/self/task').map((t) => {
        const stat = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      });
    const mine = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1]!.split(' ')[16]);
    const lowered = Math.min(19, mine + WORKER_NICE);
    const before = nices().filter((n) => n === lowered).length;
    const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 2 });
    try {
      await Promise.all(cases.slice(0, 4).map((c) => pool.build(c.backends, c.size)));
      expect(pool.running).toBe(2);
      expect(nices().filter((n) => n === lowered).length - before).toBe(2);
      expect(Number(readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1]!.split(' ')[16])).toBe(
        mine,
      );
    } finally {
      await pool.close();
    }
  });

  it('recycle(): tables given back are the memory of later builds of their size (detached here once posted), capped', async () => {
    const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 1 });
    try {
      const a = await pool.build(backendsN(10), 4099);
      const b = await pool.build(backendsN(11), 4099);
      pool.recycle(a);
      pool.recycle(b);
      pool.recycle(a); // given twice: kept once
      pool.recycle(a.subarray(1)); // a view into a buffer: not taken
      pool.recycle(new Uint32Array(13)); // another size: kept for builds of 13 slots
      expect(pool.spareBuffers).toBe(3);
      const as = { values: Uint32Array.from({ length: 12 }, (_, i) => 1000 + i), none: 0 };
      const pair = await pool.buildPair(backendsN(12), 4099, as, [1001]);
      // Both 4099-slot buffers went to the worker with the pair's job (a transfer detaches them here).
      expect([a.byteLength, b.byteLength]).toEqual([0, 0]);
      expect(pool.spareBuffers).toBe(1);
      const natural = mapTable(buildTable({ backends: backendsN(12), size: 4099 }), as);
      expectSame(pair.natural, natural);
      expectSame(pair.redirected, redirectSkipped(natural.slice(), new Set([1001])));
      // The one of 13 slots serves a build of 13 (its old contents overwritten).
      const old = new Uint32Array(13).fill(9);
      pool.recycle(old);
      expectSame(await pool.build(backendsN(3), 13), buildTable({ backends: backendsN(3), size: 13 }));
      expect(old.byteLength).toBe(0);
      // spare(): a kept buffer of that size for a table made on this thread (taken out of the spares)
      const mine = new Uint32Array(17);
      pool.recycle(mine);
      expect(pool.spare(17 * 4)).toBe(mine.buffer);
      expect([pool.spare(17 * 4), pool.spare(5 * 4)]).toEqual([undefined, undefined]);
      for (let i = 0; i < SPARE_BUFFERS + 5; i++) pool.recycle(new Uint32Array(7));
      expect(pool.spareBuffers).toBe(SPARE_BUFFERS);
    } finally {
      await pool.close();
    }
    expect(pool.spareBuffers).toBe(0);
  });

  it('free: each recycled buffer the pool lets go (past the cap, dropped when idle, at close) is handed to it once', async () => {
    const freed: ArrayBuffer[] = [];
    const pool = new WorkerTableBuilder({
      workerPath: WORKER,
      threads: 1,
      idleMs: 50,
      free: (b) => freed.push(b),
    });
    let kept: Uint32Array[] = [];
    try {
      kept = Array.from({ length: SPARE_BUFFERS }, () => new Uint32Array(7));
      for (const t of kept) pool.recycle(t);
      pool.recycle(kept[0]!); // given twice while kept: neither kept twice nor let go
      pool.recycle(kept[0]!.subarray(1)); // a view: not the pool's to keep or let go
      expect([pool.spareBuffers, freed.length]).toEqual([SPARE_BUFFERS, 0]);
      const over = [new Uint32Array(7), new Uint32Array(9)];
      for (const t of over) pool.recycle(t);
      // past the cap: let go at once, the kept ones untouched
      expect(freed).toEqual(over.map((t) => t.buffer));
      expect(pool.spareBuffers).toBe(SPARE_BUFFERS);
      // a build, then idle: the spares are dropped (SPARE_KEEP_MS at most) and every one let go
      expectSame(await pool.build(backendsN(3), 13), buildTable({ backends: backendsN(3), size: 13 }));
      await waitFor('spares dropped', () => pool.spareBuffers === 0, 10_000);
      expect(new Set(freed)).toEqual(new Set([...over, ...kept].map((t) => t.buffer)));
      expect(freed).toHaveLength(SPARE_BUFFERS + 2);
      // kept at close: let go too
      const last = new Uint32Array(7);
      pool.recycle(last);
      await pool.close();
      expect(freed.at(-1)).toBe(last.buffer);
      expect(freed).toHaveLength(SPARE_BUFFERS + 3);
      // closed: a table given back is not taken (nor let go)
      pool.recycle(new Uint32Array(7));
      expect(freed).toHaveLength(SPARE_BUFFERS + 3);
    } finally {
      await pool.close();
    }
  });

  it('rejects bad input with the error class and message buildTable throws', async () => {
    const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 1 });
    try {
      const dup = [
        { name: '10.0.0.1', weight: 1 },
        { name: '10.0.0.1', weight: 1 },
      ];
      await expect(pool.build(dup, 13)).rejects.toThrow(
        new RangeError('backends[1].name: "10.0.0.1" is a duplicate'),
      );
      await expect(pool.build(backendsN(2), 12)).rejects.toThrow(RangeError);
      await expect(pool.build([{ name: '', weight: 1 }], 13)).rejects.toThrow(TypeError);
      // The worker survives a failed build.
      expectSame(await pool.build(backendsN(5), 13), buildTable({ backends: backendsN(5), size: 13 }));
      expect(pool.workerDeaths).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('fails the builds of a worker that dies with a clear error, and replaces it', async () => {
    const pool = new WorkerTableBuilder({ workerPath: dyingWorker, threads: 1 });
    try {
      const ok = backendsN(10);
      expectSame(await pool.build(ok, 4099), buildTable({ backends: ok, size: 4099 }));
      const dying = pool.build([{ name: 'die', weight: 1 }], 13);
      await expect(dying).rejects.toThrow(
        /Maglev table worker \(thread \d+\) exited with code 7 during the build/,
      );
      expect(pool.workerDeaths).toBe(1);
      // The next build starts a new worker.
      expectSame(await pool.build(ok, 4099), buildTable({ backends: ok, size: 4099 }));
      expect(pool.running).toBe(1);
    } finally {
      await pool.close();
    }
  });

  it('terminates idle workers and starts them again on demand', async () => {
    let retired = 0;
    const pool = new WorkerTableBuilder({
      workerPath: WORKER,
      threads: 2,
      idleMs: 50,
      onRetired: () => retired++,
    });
    try {
      const built = await Promise.all([pool.build(backendsN(10), 4099), pool.build(backendsN(11), 4099)]);
      expect(pool.running).toBe(2);
      built.forEach((t) => pool.recycle(t));
      expect(pool.spareBuffers).toBe(2);
      await waitFor('idle workers terminated', () => pool.running === 0, 10_000);
      expect(pool.spareBuffers).toBe(0); // recycled memory goes when the builds stop (SPARE_KEEP_MS at most)
      // told once they ended (their memory is free then)
      await waitFor('onRetired called', () => retired === 1, 10_000);
      // given back while no worker runs (a table read on this thread): dropped too, SPARE_KEEP_MS after the last
      pool.recycle(new Uint32Array(4099));
      expect(pool.spareBuffers).toBe(1);
      await waitFor('spare dropped with no worker running', () => pool.spareBuffers === 0, 10_000);
      expectSame(await pool.build(backendsN(12), 4099), buildTable({ backends: backendsN(12), size: 4099 }));
      expect(pool.running).toBe(1);
      expect(pool.workerDeaths).toBe(0);
    } finally {
      await pool.close();
    }
    expect(retired).toBe(1); // close() is not a retirement
  });

  it('retireNow() ends idle workers at once (onRetired before it resolves), not while they build', async () => {
    let retired = 0;
    const pool = new WorkerTableBuilder({
      workerPath: WORKER,
      threads: 2,
      idleMs: 60_000, // never on its own within the test
      onRetired: () => retired++,
    });
    try {
      // while a build runs: nothing ends, and the build completes
      const pending = pool.build(backendsN(10), 65537);
      await pool.retireNow();
      expect([pool.running, retired]).toEqual([1, 0]);
      const t = await pending;
      expectSame(t, buildTable({ backends: backendsN(10), size: 65537 }));
      pool.recycle(t);
      expect(pool.spareBuffers).toBe(1);
      // idle: the workers end and their spares go before it resolves
      await pool.retireNow();
      expect([pool.running, retired, pool.spareBuffers]).toEqual([0, 1, 0]);
      await pool.retireNow(); // nothing runs: no second retirement
      expect(retired).toBe(1);
      // the next build starts a worker again
      expectSame(await pool.build(backendsN(12), 4099), buildTable({ backends: backendsN(12), size: 4099 }));
      expect(pool.running).toBe(1);
      expect(pool.workerDeaths).toBe(0);
    } finally {
      await pool.close();
    }
    await pool.retireNow(); // closed: a no-op
    expect(retired).toBe(1);
  });

  it('close() rejects pending and later builds and terminates the workers', async () => {
    const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 1 });
    const pending = Array.from({ length: 6 }, (_, i) => pool.build(backendsN(50 + i), 65537));
    const settled = Promise.allSettled(pending);
    await pool.close();
    const results = await settled;
    const rejected = results.filter((r) => r.status === 'rejected');
    // One worker takes two builds at a time: at least the queued ones are rejected.
    expect(rejected.length).toBeGreaterThanOrEqual(4);
    for (const r of rejected) expect(String((r as PromiseRejectedResult).reason)).toMatch(/closed/);
    expect(pool.running).toBe(0);
    await expect(pool.build(backendsN(2), 13)).rejects.toThrow('Maglev table builder is closed');
  });

  it('refuses a missing worker script and bad options, naming them', () => {
    expect(() => new WorkerTableBuilder({ workerPath: join(dir, 'nope.js') })).toThrow(/nope\.js is missing/);
    expect(() => new WorkerTableBuilder({ workerPath: WORKER, threads: 0 })).toThrow('threads: 0');
    expect(() => new WorkerTableBuilder({ workerPath: WORKER, idleMs: -1 })).toThrow('idleMs: -1');
    expect(() => new WorkerTableBuilder({ workerPath: WORKER, inThreadUpTo: -1 })).toThrow(
      'inThreadUpTo: -1',
    );
    expect(() => new WorkerTableBuilder({ workerPath: WORKER, inThreadUpTo: 1.5 })).toThrow(
      'inThreadUpTo: 1.5',
    );
  });

  describe('inThreadUpTo: small tables built on the calling thread', () => {
    it('builds tables of at most that many slots here (no worker starts), bigger ones on the workers, all alike', async () => {
      const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 2, inThreadUpTo: 4099 });
      try {
        const small = cases.filter((c) => c.size <= 4099);
        const as = { values: Uint32Array.from({ length: 100 }, (_, i) => 1000 + i), none: 0 };
        for (const c of small) {
          expectSame(
            await pool.build(c.backends, c.size),
            buildTable({ backends: c.backends, size: c.size }),
          );
          const want = await inlineTableBuilder.buildPair(c.backends, c.size, as, [1001, 1000]);
          const pair = await pool.buildPair(c.backends, c.size, as, [1001, 1000]);
          expectSame(pair.natural, want.natural);
          expectSame(pair.redirected, want.redirected);
        }
        expect(pool.running).toBe(0);
        // one slot above the bound: a worker builds it
        const big = backendsN(20);
        expectSame(await pool.build(big, 4111), buildTable({ backends: big, size: 4111 }));
        expect(pool.running).toBe(1);
      } finally {
        await pool.close();
      }
    });

    /** Two workers kept while idle for a minute, tables of up to 4,099 slots built on this thread. */
    const idleTwo = { workerPath: WORKER, threads: 2, idleMs: 60_000, inThreadUpTo: 4099 };

    it('keepInThread(true) builds every table here, the big ones too, and starts no worker until keepInThread(false)', async () => {
      const pool = new WorkerTableBuilder(idleTwo);
      try {
        pool.keepInThread(true);
        pool.warm([4111]);
        expect(pool.running).toBe(0);
        const big = backendsN(20);
        const as = { values: Uint32Array.from({ length: 20 }, (_, i) => 1000 + i), none: 0 };
        expectSame(await pool.build(big, 4111), buildTable({ backends: big, size: 4111 }));
        const want = await inlineTableBuilder.buildPair(big, 4111, as, [1003]);
        const pair = await pool.buildPair(big, 4111, as, [1003]);
        expectSame(pair.natural, want.natural);
        expectSame(pair.redirected, want.redirected);
        expect(pool.running).toBe(0);
        pool.keepInThread(false);
        expectSame(await pool.build(big, 4111), buildTable({ backends: big, size: 4111 }));
        expect(pool.running).toBe(1);
      } finally {
        await pool.close();
      }
    });

    it('warm(sizes) starts the workers only if they would build a table of one of those sizes', async () => {
      const pool = new WorkerTableBuilder(idleTwo);
      try {
        pool.warm([13, 4099]);
        pool.warm([]);
        expect(pool.running).toBe(0);
        pool.warm([13, 4111]);
        expect(pool.running).toBe(2);
      } finally {
        await pool.close();
      }
      const all = new WorkerTableBuilder({ workerPath: WORKER, threads: 2, idleMs: 60_000 });
      try {
        all.warm(); // no sizes given: whatever will be built
        expect(all.running).toBe(2);
      } finally {
        await all.close();
      }
    });

    it('builds into the recycled buffers of their size, the pair into two', async () => {
      const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 1, inThreadUpTo: 4099 });
      try {
        const a = new Uint32Array(4099).fill(7);
        const b = new Uint32Array(4099).fill(7);
        pool.recycle(a);
        const t = await pool.build(backendsN(10), 4099);
        expect(t.buffer).toBe(a.buffer); // not transferred anywhere: the same memory, overwritten
        expectSame(t, buildTable({ backends: backendsN(10), size: 4099 }));
        pool.recycle(t);
        pool.recycle(b);
        const as = { values: Uint32Array.from({ length: 10 }, (_, i) => 1000 + i), none: 0 };
        const pair = await pool.buildPair(backendsN(10), 4099, as, [1003]);
        expect(new Set([pair.natural.buffer, pair.redirected.buffer])).toEqual(new Set([a.buffer, b.buffer]));
        const natural = mapTable(buildTable({ backends: backendsN(10), size: 4099 }), as);
        expectSame(pair.natural, natural);
        expectSame(pair.redirected, redirectSkipped(natural.slice(), new Set([1003])));
        expect([pool.spareBuffers, pool.running]).toEqual([0, 0]);
      } finally {
        await pool.close();
      }
    });

    it('retires after such builds too (onRetired once idle, spares dropped), though no worker ran', async () => {
      let retired = 0;
      const pool = new WorkerTableBuilder({
        workerPath: WORKER,
        threads: 1,
        idleMs: 50,
        inThreadUpTo: 4099,
        onRetired: () => retired++,
      });
      try {
        // nothing built yet: no retirement, whatever the wait
        await pool.retireNow();
        expect(retired).toBe(0);
        const t = await pool.build(backendsN(10), 4099);
        pool.recycle(t);
        await waitFor('onRetired after in-thread builds', () => retired === 1, 10_000);
        expect([pool.spareBuffers, pool.running]).toEqual([0, 0]);
        await sleep(200); // idle, nothing built since: no second retirement
        expect(retired).toBe(1);
        // retireNow() after one: at once
        await pool.build(backendsN(10), 4099);
        await pool.retireNow();
        expect(retired).toBe(2);
      } finally {
        await pool.close();
      }
      expect(retired).toBe(2);
    });

    it('close() rejects such a build not finished yet', async () => {
      const pool = new WorkerTableBuilder({ workerPath: WORKER, threads: 1, inThreadUpTo: 4099 });
      const pending = pool.build(backendsN(10), 4099);
      await pool.close();
      await expect(pending).rejects.toThrow('Maglev table builder closed before the build finished');
      await expect(pool.build(backendsN(2), 13)).rejects.toThrow('Maglev table builder is closed');
    });
  });
});
