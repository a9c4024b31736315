// Health checks that fail on this host (EMFILE, ENOBUFS, ...; or a checker that throws) give no verdict: the
// backend keeps its status and rise/fall streaks, and the monitor counts them (metric, event) instead.
import { MemoryDatapath } from '../../src/datapath/memory';
import {
  CheckResult,
  HealthChange,
  HealthMonitor,
  HealthTarget,
  isLocalError,
  LOCAL_ERROR_CODES,
  LocalCheckError,
} from '../../src/health';
import { rateLimited } from '../../src/log';
import { createMetrics } from '../../src/metrics';
import { DEFAULTS, HealthCheckConfig } from '../../src/model';
import { setTimeout as sleep } from 'node:timers/promises';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

describe("isLocalError: which socket errors are this host's, not the backend's", () => {
  it.each([
    ['EMFILE', true],
    ['ENFILE', true],
    ['ENOBUFS', true],
    ['ENOMEM', true],
    ['EADDRNOTAVAIL', true],
    ['ECONNREFUSED', false],
    ['ECONNRESET', false],
    ['ETIMEDOUT', false],
    ['EHOSTUNREACH', false],
    ['ENETUNREACH', false],
    ['EPIPE', false],
  ])('%s -> local %s', (code, local) => {
    expect(isLocalError(errno(code))).toBe(local);
  });

  it('is false for anything without an errno code', () => {
    expect([...LOCAL_ERROR_CODES].sort()).toEqual(['EADDRNOTAVAIL', 'EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);
    for (const e of [new Error('x'), null, undefined, 'EMFILE', { code: 42 }])
      expect(isLocalError(e)).toBe(false);
  });
});

describe('HealthMonitor: a local error is no verdict', () => {
  const check: HealthCheckConfig = {
    ...DEFAULTS.healthCheck,
    type: 'tcp',
    port: 1,
    intervalMs: 10,
    timeoutMs: 10,
    rise: 2,
    fall: 2,
  };
  const target = (initial: 'up' | 'down' = 'up'): HealthTarget => ({
    key: 'web/10.1.0.1',
    vip: 'web',
    address: '10.1.0.1',
    check,
    initial,
  });
  const ok: CheckResult = { ok: true, durationMs: 1, detail: 'connected' };
  const refused: CheckResult = { ok: false, durationMs: 1, detail: 'ECONNREFUSED' };
  const emfile: CheckResult = { ok: false, durationMs: 0, detail: 'EMFILE', local: true };
  let monitor: HealthMonitor | null = null;
  afterEach(() => monitor?.stop());

  /** Runs the scripted results (a function throws instead) through one target, then stops; returns the events. */
  async function run(
    initial: 'up' | 'down',
    script: (CheckResult | (() => never))[],
  ): Promise<{ m: HealthMonitor; changes: HealthChange[]; local: LocalCheckError[] }> {
    let i = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const m = new HealthMonitor({
      jitter: 0,
      random: () => 0,
      checker: () => {
        const step = script[i++];
        if (i >= script.length) setImmediate(done);
        if (step === undefined) return new Promise<CheckResult>(() => undefined); // past the script: hang
        if (typeof step === 'function') step();
        return Promise.resolve(step as CheckResult);
      },
    });
    monitor = m;
    const changes: HealthChange[] = [];
    const local: LocalCheckError[] = [];
    m.on('change', (c: HealthChange) => changes.push(c));
    m.on('localError', (e: LocalCheckError) => local.push(e));
    m.setTargets([target(initial)]);
    m.start();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      finished,
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`script stuck at ${i}`)), 5000))),
    ]).finally(() => clearTimeout(timer));
    await sleep(30); // the last result is applied
    m.stop();
    expect(i).toBeGreaterThanOrEqual(script.length);
    return { m, changes, local };
  }

  it('an up backend stays up through any number of local errors (fall 2, 20 EMFILEs)', async () => {
    const { m, changes, local } = await run('up', Array(20).fill(emfile));
    expect(changes).toEqual([]);
    expect(local).toHaveLength(20);
    expect(local[0]).toMatchObject({ key: 'web/10.1.0.1', vip: 'web', address: '10.1.0.1', result: emfile });
    const [s] = m.snapshot();
    expect(s).toMatchObject({ status: 'up', failures: 0, checks: 0, failedChecks: 0, localErrors: 20 });
    expect(s!.last).toMatchObject({ detail: 'EMFILE', local: true });
    expect(m.localErrors()).toEqual(new Map([['EMFILE', 20]]));
  });

  it('a down backend stays down through local errors: they neither count as a success nor break a streak', async () => {
    const { m, changes } = await run('down', [ok, emfile, emfile, emfile]);
    expect(changes).toEqual([]);
    expect(m.snapshot()[0]).toMatchObject({ status: 'down', successes: 1, checks: 1, localErrors: 3 });
  });

  it('real failures on either side of local errors still add up to `fall`', async () => {
    const { m, changes } = await run('up', [refused, emfile, emfile, refused]);
    expect(changes.map((c) => [c.from, c.to, c.result.detail])).toEqual([['up', 'down', 'ECONNREFUSED']]);
    expect(m.snapshot()[0]).toMatchObject({
      status: 'down',
      failures: 2,
      checks: 2,
      failedChecks: 2,
      localErrors: 2,
    });
  });

  it('a checker that throws is the checker failing: no verdict, counted as "checker"', async () => {
    const boom = (): never => {
      throw new Error('socket() failed');
    };
    const { m, changes, local } = await run('up', [boom, boom, boom]);
    expect(changes).toEqual([]);
    expect(local.map((e) => e.result.detail)).toEqual(Array(3).fill('check failed: socket() failed'));
    expect(m.snapshot()[0]).toMatchObject({ status: 'up', checks: 0, localErrors: 3 });
    expect(m.localErrors()).toEqual(new Map([['checker', 3]]));
  });

  it('exports the count as peak_xdp_health_check_local_errors_total{reason}', async () => {
    const { m } = await run('up', [emfile, emfile, { ...emfile, detail: 'ENOBUFS' }]);
    const metrics = createMetrics({
      datapath: new MemoryDatapath(),
      desired: () => null,
      health: () => m.snapshot(),
      healthLocalErrors: () => m.localErrors(),
      attached: () => true,
      perBackend: true,
    });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^peak_xdp_health_check_local_errors_total\{reason="EMFILE"\} 2$/m);
    expect(text).toMatch(/^peak_xdp_health_check_local_errors_total\{reason="ENOBUFS"\} 1$/m);
    // Local errors are not checks: neither successes nor failures.
    expect(text).toMatch(
      /^peak_xdp_health_checks_total\{vip="web",backend="10\.1\.0\.1",result="failure"\} 0$/m,
    );
  });
});

describe('rateLimited: one log line per interval, with the count it stands for', () => {
  it('emits the first call, counts the rest until the interval passed, then reports them', () => {
    let now = 0;
    const limit = rateLimited(10_000, () => now);
    const lines: number[] = [];
    for (let i = 0; i < 1000; i++) {
      limit((suppressed) => lines.push(suppressed));
      now += 50; // 1,000 calls over 50 s
    }
    expect(lines).toEqual([0, 199, 199, 199, 199]);
  });
});
