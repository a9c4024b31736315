// bench:e2e's method (scripts/bench/lib/rounds.ts): interleaved rounds, repeated ramp steps, the SLO outcome,
// CPU net of an idle baseline, XDP cost of VIP packets only, and the across-rounds summary.
import type { SystemResult } from '../../scripts/bench/e2e-report';
import {
  latencyCosts,
  medianStep,
  netOfIdle,
  rampOutcome,
  roundMetrics,
  roundOrder,
  roundsMarkdown,
  sloMiss,
  spreadCell,
  spreadOf,
  summarizeRounds,
  xdpVipCost,
} from '../../scripts/bench/lib/rounds';

describe('roundOrder', () => {
  it('runs every system once per round, rounds one after another (A B C A B C)', () => {
    expect(roundOrder(['A', 'B', 'C'], 2).map((x) => `${x.round}${x.system}`)).toEqual([
      '1A', '1B', '1C', '2A', '2B', '2C',
    ]); // prettier-ignore
    expect(roundOrder(['A'], 1)).toEqual([{ round: 1, system: 'A' }]);
    expect(roundOrder([], 3)).toEqual([]);
  });
  it('rejects a round count that is not a positive integer', () => {
    expect(() => roundOrder(['A'], 0)).toThrow('rounds: 0');
    expect(() => roundOrder(['A'], 1.5)).toThrow('rounds: 1.5');
  });
});

describe('ramp steps', () => {
  const s = (rps: number, p99ms: number, errorRate = 0) => ({ rps, p99us: p99ms * 1000, errorRate });
  it('a step is the median of its repeats, field by field, and keeps them', () => {
    const reps = [s(100, 5), s(300, 1), s(200, 9, 0.02)];
    const m = medianStep(8, reps);
    expect(m).toEqual({ connections: 8, rps: 200, p99us: 5000, errorRate: 0, repeats: reps });
    expect(medianStep(8, [s(100, 5), s(200, 7)]).rps).toBe(150);
    expect(() => medianStep(8, [])).toThrow('8 connections: no repeats');
  });
  it('misses the SLO on errors over 1% or p99 over the bound (NaN p99 counts as a miss)', () => {
    expect(sloMiss(s(1, 50), 50_000)).toBeNull();
    expect(sloMiss(s(1, 50.1), 50_000)).toBe('p99 50.1 ms > 50 ms');
    expect(sloMiss(s(1, 1, 0.011), 50_000)).toBe('errors 1.1% > 1%');
    expect(sloMiss({ rps: 1, p99us: NaN, errorRate: 0 }, 50_000)).toMatch(/^p99/);
  });
  it('the max is the best step up to the first miss; a later better step past a miss does not count', () => {
    const steps = [medianStep(8, [s(100, 5)]), medianStep(32, [s(300, 9)]), medianStep(128, [s(500, 80)])];
    expect(rampOutcome(steps, 50_000)).toEqual({ maxRps: 300, atConnections: 32, notMeasured: null });
    const dip = [medianStep(8, [s(400, 5)]), medianStep(32, [s(300, 9)])];
    expect(rampOutcome(dip, 50_000)).toEqual({ maxRps: 400, atConnections: 8, notMeasured: null });
  });
  it('a ramp whose first step misses the SLO is not measured, not its max', () => {
    const o = rampOutcome([medianStep(8, [s(900, 70)])], 50_000);
    expect(o).toEqual({
      maxRps: null,
      atConnections: null,
      notMeasured: 'the first step (8 connections) missed the SLO: p99 70.0 ms > 50 ms',
    });
    expect(rampOutcome([], 50_000).notMeasured).toBe('no ramp step ran');
  });
});

describe('idle baseline', () => {
  it('subtracts the idle growth scaled to the load window', () => {
    expect(netOfIdle({ load: 1000, loadMs: 2000, idle: 100, idleMs: 1000 })).toBe(800);
    expect(netOfIdle({ load: 50, loadMs: 1000, idle: 100, idleMs: 1000 })).toBe(-50); // noise is shown, not hidden
    expect(() => netOfIdle({ load: 1, loadMs: 0, idle: 1, idleMs: 1 })).toThrow('load 0, idle 1');
  });
  it('charges non-VIP runs at the idle mean cost and divides the rest by VIP packets', () => {
    // 1000 runs under load, 800 of them VIP; idle: 100 runs at 500 ns each.
    const c = xdpVipCost({
      load: { runTimeNs: 300_000, runCount: 1000 },
      idle: { runTimeNs: 50_000, runCount: 100 },
      vipPackets: 800,
      requests: 100,
    });
    expect(c).toEqual({ nsPerPacket: 250, nsPerRequest: 2000, packetsPerRequest: 8, otherPackets: 200 });
    // No idle runs: other runs cost nothing (nothing to estimate them from); no VIP packet: no figure.
    expect(
      xdpVipCost({
        load: { runTimeNs: 1000, runCount: 10 },
        idle: { runTimeNs: 0, runCount: 0 },
        vipPackets: 5,
        requests: 1,
      })!.nsPerPacket,
    ).toBe(200);
    expect(
      xdpVipCost({
        load: { runTimeNs: 1000, runCount: 10 },
        idle: { runTimeNs: 0, runCount: 0 },
        vipPackets: 0,
        requests: 1,
      }),
    ).toBeNull();
  });
  it('latencyCosts: machine CPU net of idle per request, LB processes as measured, daemons in % of a core', () => {
    const idle = {
      ms: 2000,
      busyJ: 40,
      softirqJ: 10,
      lbProcJ: 4,
      daemonJ: 4,
      xdp: { runTimeNs: 1000, runCount: 10 },
      vipPackets: 0,
    };
    const load = {
      ms: 4000,
      busyJ: 280,
      softirqJ: 60,
      lbProcJ: 12,
      daemonJ: 8,
      xdp: { runTimeNs: 41_000, runCount: 220 },
      vipPackets: 200,
    };
    const c = latencyCosts({ load, idle, requests: 1000, jiffyUs: 10_000 }); // prettier-ignore
    // busy: 280 - 40 * 2 = 200 jiffies = 2 s over 1000 requests; softirq: 60 - 20 = 40 jiffies.
    expect(c.cpuUsPerReq).toBe(2000);
    expect(c.softirqUsPerReq).toBe(400);
    expect(c.lbProcessUsPerReq).toBe(120);
    expect(c.daemonCorePct).toBe(2); // 80 ms of CPU in 4 s
    // 20 other runs at 100 ns; 39,000 ns over 200 VIP packets.
    expect(c.xdp).toEqual({ nsPerPacket: 195, nsPerRequest: 39, packetsPerRequest: 0.2, otherPackets: 20 });
    expect(c.idle).toEqual({ ms: 2000, busyUsPerS: 200_000, softirqUsPerS: 50_000, lbProcessUsPerS: 20_000 });
    const notPeak = latencyCosts({
      load: { ...load, daemonJ: null, vipPackets: null },
      idle,
      requests: 1000,
      jiffyUs: 10_000,
    });
    expect(notPeak.daemonCorePct).toBeNull();
    expect(notPeak.xdp).toBeNull();
  });
});

describe('across rounds', () => {
  const round = (o: { rps: number | null; p50: number; broken: number }): SystemResult => ({
    system: 'x',
    throughput: [{ backends: 2, maxRps: o.rps, atConnections: o.rps === null ? null : 8, steps: [] }],
    lbScaling: [],
    latency: [
      {
        rate: 300, ok: 600, sent: 600, errors: {}, cdfUs: [],
        latencyUs: { count: 600, p50: o.p50, p90: o.p50, p99: 2 * o.p50, p999: 2 * o.p50, max: 2 * o.p50, mean: o.p50 },
        cpuUsPerReq: 10, softirqUsPerReq: 5, lbProcessUsPerReq: 1, daemonCorePct: 3,
        xdp: { nsPerPacket: 400, nsPerRequest: 2400, packetsPerRequest: 6 },
      },
    ], // prettier-ignore
    balance: null,
    inner: null,
    faults: [{ scenario: 'kill backend be3', sent: 10, failed: 1, errors: {}, recoveryMs: 0, faultAtMs: 1 }],
    timeline: null,
  });
  it('spreadOf: median and range of the measured rounds, counting the others', () => {
    expect(spreadOf([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, n: 3, of: 3 });
    expect(spreadOf([null, 4, NaN])).toEqual({ median: 4, min: 4, max: 4, n: 1, of: 3 });
    expect(spreadOf([null, undefined])).toBeNull();
  });
  it('cells: median [min–max], the rounds that measured it, or not measured', () => {
    expect(spreadCell({ median: 1234.4, min: 1000, max: 1500, n: 3, of: 3 })).toBe('1234 [1000–1500]');
    expect(spreadCell({ median: 2.345, min: 2.345, max: 2.345, n: 1, of: 2 })).toBe('2.35 (1/2 rounds)');
    expect(spreadCell(null)).toBe('not measured');
  });
  it('roundMetrics names every headline number of a round (faults without the victim host)', () => {
    const m = new Map(roundMetrics(round({ rps: 900, p50: 1500, broken: 0 })));
    expect(m.get('max req/s, 2 backend(s)')).toBe(900);
    expect(m.get('p50 ms @300/s')).toBe(1.5);
    expect(m.get('p99 ms @300/s')).toBe(3);
    expect(m.get('machine busy µs/req @300/s (net of idle)')).toBe(10);
    expect(m.get('peak-xdp daemons, % of a core @300/s')).toBe(3);
    expect(m.get('XDP ns per VIP packet @300/s')).toBe(400);
    expect(m.get('kill backend: failed')).toBe(1);
  });
  it('summarizes each system over its rounds; a ramp not measured in one round is left out of the median', () => {
    const by = new Map<string, SystemResult[]>([
      ['peak-xdp', [round({ rps: 900, p50: 1000, broken: 0 }), round({ rps: null, p50: 3000, broken: 0 }), round({ rps: 700, p50: 2000, broken: 0 })]],
      ['direct', [{ ...round({ rps: 100, p50: 500, broken: 0 }), latency: [] }]],
    ]); // prettier-ignore
    const sum = summarizeRounds(by);
    const row = (metric: string) => sum.find((r) => r.metric === metric)!;
    expect(row('max req/s, 2 backend(s)').cells.get('peak-xdp')).toEqual({
      median: 800,
      min: 700,
      max: 900,
      n: 2,
      of: 3,
    });
    expect(row('p50 ms @300/s').cells.get('peak-xdp')).toEqual({ median: 2, min: 1, max: 3, n: 3, of: 3 });
    // direct has no latency rows: no cell (the metric does not apply), unlike a metric not measured.
    expect(row('p50 ms @300/s').cells.has('direct')).toBe(false);
    const md = roundsMarkdown({ rounds: 3, systems: ['peak-xdp', 'direct'], summary: sum });
    expect(md).toContain('## Across 3 round(s): median [min–max]');
    expect(md).toContain('| max req/s, 2 backend(s) | 800 [700–900] (2/3 rounds) | 100 |');
    expect(md).toContain('| p50 ms @300/s | 2.00 [1.00–3.00] | – |');
  });
});
