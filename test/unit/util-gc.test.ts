// fullCollection: resolves true once V8's next full collection ended, false when none did in time. heapGrowth: the
// start's bound on V8's heap growth, and V8's own rule back after it.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  fullCollection,
  heapGrowingFlag,
  heapGrowth,
  START_HEAP_GROWING_PERCENT,
  TARGETS_HEAP_GROWING_PERCENT,
} from '../../src/util/gc';
import { packageRoot } from '../../src/paths';

/** The built module (a child process runs it: its heap is its own, quiet, and can expose gc()). */
const BUILT = join(packageRoot, 'dist', 'src', 'util', 'gc.js');

/** What fullCollection(timeoutMs) resolved to in a fresh node process that calls gc() after `gcAfterMs` (null: never). */
function inChild(timeoutMs: number, gcAfterMs: number | null): string {
  const script = `
    const { fullCollection } = require(${JSON.stringify(BUILT)});
    const t0 = Date.now();
    fullCollection(${timeoutMs}).then((v) => console.log(v, Date.now() - t0));
    if (${gcAfterMs !== null}) setTimeout(() => gc(), ${gcAfterMs ?? 0});`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  expect(r.status).toBe(0);
  return r.stdout.trim();
}

describe('fullCollection', () => {
  it('resolves true once a full collection ended, before its timeout', () => {
    const [seen, ms] = inChild(20_000, 50).split(' ');
    expect(seen).toBe('true');
    expect(Number(ms)).toBeLessThan(5_000); // the collection at ~50 ms, not the timeout
  });

  it('resolves false after the timeout when none ran (an idle process)', () => {
    const [seen, ms] = inChild(300, null).split(' ');
    expect(seen).toBe('false');
    expect(Number(ms)).toBeGreaterThanOrEqual(299);
  });

  it('refuses a bad timeout, naming it', async () => {
    await expect(fullCollection(-1)).rejects.toThrow('timeoutMs: -1 is not a non-negative number');
    await expect(fullCollection(Number.NaN)).rejects.toThrow('timeoutMs: NaN');
  });
});

/**
 * The peak heapUsed (MB) of a fresh node process (extra `flags`) that calls heapGrowth for each of `phases` in turn,
 * makes ~75 MB live, collects, then churns objects that live long enough to be promoted (a ring of 200,000) and die:
 * garbage only a full collection frees, as a start's is. Prints what each heapGrowth call returned, too.
 */
function churnPeak(
  phases: string[],
  flags: string[] = [],
): { peakMB: number; liveMB: number; set: boolean[] } {
  const script = `
    const { heapGrowth } = require(${JSON.stringify(BUILT)});
    const set = ${JSON.stringify(phases)}.map((p) => heapGrowth(p));
    const live = [];
    for (let i = 0; i < 600000; i++) live.push({ a: i, b: [i, i + 1, i + 2] });
    gc();
    const liveMB = process.memoryUsage().heapUsed / 1048576;
    let peak = 0;
    const ring = new Array(200000);
    for (let i = 0; i < 4e6; i++) {
      ring[i % ring.length] = { i, v: [i, i, i] };
      if ((i & 4095) === 0) peak = Math.max(peak, process.memoryUsage().heapUsed);
    }
    console.log(JSON.stringify({ peakMB: peak / 1048576, liveMB, set, kept: live.length }));`;
  // The product's young generation (the CLI's shebang): with Node 24's default, larger one the ring's objects die young
  // and never reach the old generation, whose growth is what is measured.
  const r = spawnSync(process.execPath, ['--expose-gc', '--max-semi-space-size=4', ...flags, '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout) as { peakMB: number; liveMB: number; set: boolean[] };
}

describe('heapGrowth', () => {
  it("names V8's flag for each phase", () => {
    expect(START_HEAP_GROWING_PERCENT).toBe(30);
    expect(heapGrowingFlag('start')).toBe('--heap-growing-percent=30');
    expect(TARGETS_HEAP_GROWING_PERCENT).toBe(10);
    expect(heapGrowingFlag('targets')).toBe('--heap-growing-percent=10');
    expect(heapGrowingFlag('bounded')).toBe('--heap-growing-percent=10');
    expect(heapGrowingFlag('run')).toBe('--heap-growing-percent=0');
  });

  it("keeps promoted garbage within a bound of the live heap for 'start', and gives V8 its own rule back for 'run'", () => {
    const own = churnPeak([]);
    const start = churnPeak(['start']);
    const back = churnPeak(['start', 'run']);
    console.log('peak MB: V8 own', own.peakMB.toFixed(0), 'start', start.peakMB.toFixed(0), 'start then run', back.peakMB.toFixed(0), 'live', start.liveMB.toFixed(0)); // prettier-ignore
    expect(start.set).toEqual([true]);
    expect(back.set).toEqual([true, true]);
    expect(start.liveMB).toBeGreaterThan(25);
    // measured: V8's own rule let this heap reach ~300-320 MB (~4x its live 74 MB, the ring not counted), 'start'
    // ~150-180 MB, on Node 20 and 24
    expect(own.peakMB).toBeGreaterThan(3 * own.liveMB);
    expect(start.peakMB).toBeLessThan(0.7 * own.peakMB);
    expect(back.peakMB).toBeGreaterThan(0.9 * own.peakMB);
  });

  it('leaves a --heap-growing-percent given to node alone (arguments or NODE_OPTIONS)', () => {
    const given = churnPeak(['run'], ['--heap-growing-percent=30']);
    expect(given.set).toEqual([false]);
    expect(given.peakMB).toBeLessThan(3 * given.liveMB); // the given 30 (~150-180 MB), not V8's own rule (~300-320 MB)
    expect(heapGrowth('run', { execArgv: [], nodeOptions: '--max-old-space-size=512 --heap_growing_percent=50' })).toBe(false); // prettier-ignore
    expect(heapGrowth('start', { execArgv: ['--heap-growing-percent=10'], nodeOptions: undefined })).toBe(
      false,
    );
  });
});
