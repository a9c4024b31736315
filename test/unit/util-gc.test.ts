// fullCollection: resolves true once V8's next full collection ended, false when none did in time.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fullCollection } from '../../src/util/gc';
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
