// Scheduling under the in-flight cap (fake clock, fake prober): N timing-out targets, cap K, timeout T are all
// marked down by the bound timeoutDownBoundMs computes (each by `fall` real failures of a full timeout), healthy
// targets among them keep their cadence, and probes made late by the cap are counted and reported.
import {
  BacklogChange,
  CheckResult,
  HealthChange,
  HealthMonitor,
  HealthTarget,
  Prober,
  quickReserve,
  timeoutDownBoundMs,
} from '../../src/health';
import { DEFAULTS, HealthCheckConfig } from '../../src/model';
import { countTurns } from '../helpers/turn-counter';

/** A seeded uniform [0, 1) (mulberry32): the jitter and first phases are the same on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Scenario {
  dead: number;
  healthy: number;
  maxInFlight: number;
  intervalMs: number;
  timeoutMs: number;
  fall: number;
  jitter: number;
}

/**
 * A prober on the fake clock: dead addresses time out after exactly timeoutMs, the others connect after 1 ms.
 * Records every start, every run's length, and the peak in flight.
 */
function fakeProber(isDead: (address: string) => boolean) {
  const rec = { inFlight: 0, peak: 0, starts: new Map<string, number[]>(), deadRuns: [] as number[] };
  const prober: Prober = (t: HealthTarget, done: (r: CheckResult) => void) => {
    const started = performance.now();
    rec.inFlight++;
    rec.peak = Math.max(rec.peak, rec.inFlight);
    const s = rec.starts.get(t.address) ?? [];
    s.push(started);
    rec.starts.set(t.address, s);
    const dead = isDead(t.address);
    let open = true;
    const finish = (r: CheckResult): void => {
      if (!open) return;
      open = false;
      rec.inFlight--;
      clearTimeout(timer);
      done(r);
    };
    const timer = setTimeout(
      () => {
        const durationMs = performance.now() - started;
        if (dead) rec.deadRuns.push(durationMs);
        finish(dead ? { ok: false, durationMs, detail: `timeout after ${t.check.timeoutMs} ms`, timedOut: true } : { ok: true, durationMs, detail: 'connected' }); // prettier-ignore
      },
      dead ? t.check.timeoutMs : 1,
    );
    return () => finish({ ok: false, durationMs: 0, detail: 'aborted', local: true });
  };
  return { prober, rec };
}

const check = (s: Scenario): HealthCheckConfig => ({
  ...DEFAULTS.healthCheck,
  type: 'tcp',
  port: 80,
  intervalMs: s.intervalMs,
  timeoutMs: s.timeoutMs,
  rise: 2,
  fall: s.fall,
});

/** The bound leaves out the healthy targets' probes (a few slots) and timers firing on whole ms: 1% more. */
const SLACK = 1.01;

const deadAddr = (i: number): string => `10.9.${i >> 8}.${i & 255}`;
const healthyAddr = (i: number): string => `10.8.${i >> 8}.${i & 255}`;

/** Runs a scenario until every dead target is down (or limitMs); returns what happened. */
async function runScenario(s: Scenario, limitMs: number) {
  const { prober, rec } = fakeProber((a) => a.startsWith('10.9.'));
  const monitor = new HealthMonitor({
    prober,
    maxInFlight: s.maxInFlight,
    jitter: s.jitter,
    random: seeded(17),
  });
  const c = check(s);
  const targets: HealthTarget[] = [];
  for (let i = 0; i < s.dead; i++) targets.push({ key: `d${i}`, vip: 'v', address: deadAddr(i), check: c });
  for (let i = 0; i < s.healthy; i++)
    targets.push({ key: `h${i}`, vip: 'h', address: healthyAddr(i), check: c });
  const downAt: number[] = [];
  const wrong: HealthChange[] = [];
  const backlog: BacklogChange[] = [];
  monitor.on('change', (ch: HealthChange) => (ch.key.startsWith('d') && ch.to === 'down' ? downAt.push(performance.now()) : wrong.push(ch))); // prettier-ignore
  monitor.on('backlog', (b: BacklogChange) => backlog.push(b));
  monitor.setTargets(targets);
  const t0 = performance.now();
  monitor.start();
  let peakBacklog = 0;
  while (downAt.length < s.dead && performance.now() - t0 < limitMs) {
    await jest.advanceTimersByTimeAsync(s.timeoutMs / 10);
    peakBacklog = Math.max(peakBacklog, monitor.stats().backlog);
  }
  const allDownMs = downAt.length === s.dead ? Math.max(...downAt) - t0 : Infinity;
  // Probe on a little longer: healthy cadence is measured over the whole run.
  await jest.advanceTimersByTimeAsync(2 * s.intervalMs);
  const stats = monitor.stats();
  let maxGap = 0;
  for (let i = 0; i < s.healthy; i++) {
    const st = rec.starts.get(healthyAddr(i)) ?? [];
    expect(st.length).toBeGreaterThan(2);
    for (let k = 2; k < st.length; k++) maxGap = Math.max(maxGap, st[k]! - st[k - 1]!); // after the first round
  }
  const snapshot = monitor.snapshot();
  monitor.stop();
  await monitor.idle();
  return { allDownMs, downAt, wrong, backlog, stats, maxGap, rec, peakBacklog, snapshot, monitor };
}

describe('timeoutDownBoundMs (pure)', () => {
  it('the checks bound, the fd floor and what the monitor achieves', () => {
    const bench = { targets: 51_200, intervalMs: 2000, timeoutMs: 1000, fall: 3, jitter: 0.1 };
    // 18,750 slots (a 20,000 fd limit), 64 kept for quick probes: 153,600 one-second probes are 8.22 waves of
    // the other 18,686; the slots fill over 730 ms (51,200 first probes due over 2 s): the 9th wave ends by
    // 9 s + 0.22 x 730 ms, + 2 x 200 ms of jitter: within the checks' goal of the bench (3 x 2.2 + 2 + 1 = 9.6 s).
    const now = timeoutDownBoundMs({ ...bench, maxInFlight: 18_750 });
    expect(now.checksMs).toBe(7400);
    const waves = 153_600 / 18_686;
    expect(now.fdMs).toBeCloseTo(waves * 1000, 6);
    expect(now.boundMs).toBeCloseTo(9000 + (waves - 8) * ((18_686 * 2000) / 51_200) + 400, 6);
    expect(now.boundMs).toBeLessThan(9600);
    expect(quickReserve(18_750)).toBe(64);
    expect([quickReserve(63), quickReserve(250), quickReserve(1 << 20)]).toEqual([0, 3, 64]);
    // Three quarters of the limit less 1,024 (the cap before): the checks' 9.6 s goal cannot be met.
    const old = timeoutDownBoundMs({ ...bench, maxInFlight: 13_976 });
    expect(old.fdMs).toBeCloseTo(153_600_000 / (13_976 - 64), 6);
    expect(old.boundMs).toBeGreaterThan(12_000);
    // Few enough targets that the slots never bind: the checks alone.
    const few = timeoutDownBoundMs({ ...bench, targets: 30_000, maxInFlight: 18_750 });
    expect(few.boundMs).toBe(7400);
    expect(few.fdMs).toBeLessThan(7400);
  });
});

describe('HealthMonitor under the in-flight cap (fake clock)', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  // 1,000 dead targets need 500 slots at their cadence; the cap is 250: the slots bind, as in bench:health.
  const bound: Scenario = { dead: 1000, healthy: 20, maxInFlight: 250, intervalMs: 200, timeoutMs: 100, fall: 3, jitter: 0.1 }; // prettier-ignore

  it('N timing-out targets with cap K and timeout T are all down by the computed bound, each by fall full timeouts', async () => {
    const b = timeoutDownBoundMs({ ...bound, targets: bound.dead });
    const r = await runScenario(bound, 10 * b.boundMs);
    console.log(
      `cap-bound: ${bound.dead} dead, cap ${bound.maxInFlight}, T ${bound.timeoutMs} ms, interval ${bound.intervalMs} ms: ` +
        `all down after ${r.allDownMs.toFixed(0)} ms (fd floor ${b.fdMs.toFixed(0)}, bound ${b.boundMs.toFixed(0)}, ` +
        `checks alone ${b.checksMs.toFixed(0)}); peak in flight ${r.rec.peak}; delayed by cap ${r.stats.delayedByCap}; ` +
        `peak backlog ${r.peakBacklog}; healthy max gap ${r.maxGap.toFixed(0)} ms`,
    );
    expect(r.downAt).toHaveLength(bound.dead);
    expect(r.allDownMs).toBeLessThanOrEqual(b.boundMs * SLACK);
    expect(r.allDownMs).toBeGreaterThanOrEqual(b.fdMs); // the floor: nothing probes faster than the slots allow
    expect(r.rec.peak).toBe(bound.maxInFlight);
    // Every dead probe held its slot for the whole timeout, and each went down on exactly `fall` failures.
    expect(r.rec.deadRuns.length).toBeGreaterThanOrEqual(bound.fall * bound.dead);
    expect(r.rec.deadRuns.every((d) => d === bound.timeoutMs)).toBe(true);
    expect(r.wrong).toEqual([]);
    // The cap made probes late, and said so.
    expect(r.stats.delayedByCap).toBeGreaterThan(0);
    expect(r.peakBacklog).toBeGreaterThan(0);
    expect(r.backlog[0]).toMatchObject({ saturated: true, maxInFlight: 250 });
    // Healthy targets keep their cadence: quick probes start as soon as a slot frees.
    expect(r.maxGap).toBeLessThanOrEqual(bound.intervalMs * (1 + bound.jitter) + 2);
  });

  // Other shapes: few slots and a short interval; fall 2 with wide jitter; a timeout close to the interval.
  it.each([
    { dead: 600, healthy: 10, maxInFlight: 100, intervalMs: 300, timeoutMs: 150, fall: 2, jitter: 0.1 },
    { dead: 1500, healthy: 10, maxInFlight: 400, intervalMs: 400, timeoutMs: 100, fall: 2, jitter: 0.25 },
    { dead: 800, healthy: 10, maxInFlight: 300, intervalMs: 120, timeoutMs: 100, fall: 3, jitter: 0.1 },
  ])(
    'all down by the bound: $dead dead, cap $maxInFlight, T $timeoutMs, interval $intervalMs, fall $fall, jitter $jitter',
    async (sc) => {
      const b = timeoutDownBoundMs({ ...sc, targets: sc.dead });
      const r = await runScenario(sc, 10 * b.boundMs);
      console.log(`${JSON.stringify(sc)}: all down after ${r.allDownMs.toFixed(0)} ms (fd floor ${b.fdMs.toFixed(0)}, bound ${b.boundMs.toFixed(0)}); healthy max gap ${r.maxGap.toFixed(0)} ms`); // prettier-ignore
      expect(r.downAt).toHaveLength(sc.dead);
      expect(r.allDownMs).toBeLessThanOrEqual(b.boundMs * SLACK);
      expect(r.allDownMs).toBeGreaterThanOrEqual(b.fdMs);
      expect(r.wrong).toEqual([]);
      expect(r.maxGap).toBeLessThanOrEqual(sc.intervalMs * (1 + sc.jitter) + 2);
    },
  );

  it('without the cap binding: the checks bound, nothing late by the cap, no backlog event', async () => {
    const free: Scenario = { ...bound, maxInFlight: 1000 };
    const b = timeoutDownBoundMs({ ...free, targets: free.dead });
    const r = await runScenario(free, 10 * b.boundMs);
    console.log(`no cap bind: all down after ${r.allDownMs.toFixed(0)} ms (bound ${b.boundMs.toFixed(0)}), peak in flight ${r.rec.peak}`); // prettier-ignore
    expect(b.boundMs).toBe(b.checksMs);
    expect(r.downAt).toHaveLength(free.dead);
    expect(r.allDownMs).toBeLessThanOrEqual(b.boundMs * SLACK);
    expect(r.stats.delayedByCap).toBe(0);
    expect(r.backlog).toEqual([]);
    expect(r.maxGap).toBeLessThanOrEqual(free.intervalMs * (1 + free.jitter) + 2);
  });

  it('quick probes start before slow ones when a slot frees; the backlog drains once the dead are gone', async () => {
    const { prober, rec } = fakeProber((a) => a.startsWith('10.9.'));
    const monitor = new HealthMonitor({ prober, maxInFlight: 2, jitter: 0, random: () => 0 });
    const c = check({ ...bound, intervalMs: 100, timeoutMs: 100 });
    const dead = [0, 1, 2, 3].map((i): HealthTarget => ({
      key: `d${i}`,
      vip: 'v',
      address: deadAddr(i),
      check: c,
    }));
    const ok: HealthTarget = { key: 'h0', vip: 'h', address: healthyAddr(0), check: c };
    const events: BacklogChange[] = [];
    monitor.on('backlog', (b: BacklogChange) => events.push(b));
    monitor.setTargets([...dead, ok]);
    monitor.start();
    // All five due at 0; two slots: d0 and d1 run (100 ms), the rest wait.
    await jest.advanceTimersByTimeAsync(50);
    expect(monitor.stats()).toMatchObject({ inFlight: 2, backlog: 3 });
    expect(events.map((e) => e.saturated)).toEqual([true]);
    for (let i = 0; i < 20; i++) await jest.advanceTimersByTimeAsync(50);
    // After its first (late) run, h0 is quick: each time it is due it takes the next free slot ahead of
    // every slow probe due earlier, so its gaps are its interval plus at most the wait for one slot.
    const h = rec.starts.get(healthyAddr(0))!;
    const gaps = h.slice(2).map((t, k) => t - h[k + 1]!);
    expect(gaps.length).toBeGreaterThan(3);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(100 + 100);
    const s = monitor.stats();
    expect(s.delayedByCap).toBeGreaterThan(0);
    expect(s.backlogAgeMs).toBeGreaterThan(0);
    // The dead go away: nothing waits any more, and the monitor says so.
    monitor.setTargets([ok]);
    await jest.advanceTimersByTimeAsync(300);
    expect(monitor.stats()).toMatchObject({ backlog: 0, backlogAgeMs: 0, inFlight: 0 });
    expect(events.map((e) => e.saturated)).toEqual([true, false]);
    expect(events[1]!.durationMs).toBeGreaterThan(0);
    monitor.stop();
  });

  it('stop cancels every probe in flight at once (no slot held after it returns); a prober that throws is no verdict', async () => {
    const { prober, rec } = fakeProber(() => true);
    const monitor = new HealthMonitor({ prober, maxInFlight: 1000, jitter: 0, random: () => 0 });
    const c = check({ ...bound, timeoutMs: 10_000, intervalMs: 20_000 });
    monitor.setTargets(Array.from({ length: 500 }, (_, i) => ({ key: `d${i}`, vip: 'v', address: deadAddr(i), check: c }))); // prettier-ignore
    monitor.start();
    await jest.advanceTimersByTimeAsync(1);
    expect(rec.inFlight).toBe(500);
    monitor.stop();
    expect(rec.inFlight).toBe(0);
    expect(monitor.stats().inFlight).toBe(0);
    await monitor.idle();

    const broken = new HealthMonitor({
      prober: () => {
        throw new Error('no socket');
      },
      jitter: 0,
      random: () => 0,
    });
    broken.setTargets([{ key: 'a', vip: 'v', address: '10.0.0.1', check: c }]);
    broken.start();
    await jest.advanceTimersByTimeAsync(1);
    expect(broken.localErrors()).toEqual(new Map([['checker', 1]]));
    expect(broken.snapshot()[0]).toMatchObject({ status: 'up', checks: 0, localErrors: 1 });
    expect(broken.stats().inFlight).toBe(0);
    broken.stop();
    expect(
      () => new HealthMonitor({ prober, checker: async () => ({ ok: true, durationMs: 0, detail: '' }) }),
    ).toThrow('prober, checker: give one of them, not both');
  });
});

describe('HealthMonitor: starts per event-loop turn (real timers)', () => {
  it('a wave of timeouts does not start more than startsPerTurn probes in one turn', async () => {
    const counter = countTurns();
    const perTurn = new Map<number, number>();
    let dead = 0;
    const prober: Prober = (t, done) => {
      perTurn.set(counter.turns, (perTurn.get(counter.turns) ?? 0) + 1);
      const timer = setTimeout(() => {
        dead++;
        done({ ok: false, durationMs: 50, detail: 'timeout after 50 ms', timedOut: true });
      }, 50);
      return () => {
        clearTimeout(timer);
        done({ ok: false, durationMs: 0, detail: 'aborted', local: true });
      };
    };
    const monitor = new HealthMonitor({
      prober,
      startsPerTurn: 10,
      maxInFlight: 1000,
      jitter: 0,
      random: () => 0,
    });
    const c = {
      ...DEFAULTS.healthCheck,
      type: 'tcp' as const,
      port: 80,
      intervalMs: 60,
      timeoutMs: 50,
      fall: 2,
    };
    monitor.setTargets(Array.from({ length: 200 }, (_, i) => ({ key: `d${i}`, vip: 'v', address: deadAddr(i), check: c }))); // prettier-ignore
    monitor.start();
    const t0 = performance.now();
    while (dead < 600 && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
    monitor.stop();
    counter.stop();
    const counts = [...perTurn.values()];
    console.log(`starts per turn: max ${Math.max(...counts)} over ${counts.length} turns; ${dead} timeouts`);
    expect(dead).toBeGreaterThanOrEqual(600);
    expect(counts.length).toBeGreaterThanOrEqual(600 / 10);
    expect(Math.max(...counts)).toBe(10);
  });
});
