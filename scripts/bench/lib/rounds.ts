// Pure pieces of bench:e2e's method: systems interleaved in rounds, repeated ramp steps and their median, the
// ramp's outcome (max under the SLO, or "not measured"), CPU net of an idle baseline, the XDP cost of VIP
// packets only, and the across-rounds summary (median, min–max).
import type { SystemResult } from '../e2e-report';
import { median } from './stats';

/** The order systems run in: every system once per round, rounds one after another (A B C A B C). */
export function roundOrder<T>(systems: readonly T[], rounds: number): { round: number; system: T }[] {
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new RangeError(`rounds: ${rounds} is not a positive integer`);
  const out: { round: number; system: T }[] = [];
  for (let round = 1; round <= rounds; round++) for (const system of systems) out.push({ round, system });
  return out;
}

/** One wrk measurement of a ramp step. */
export interface StepSample {
  rps: number;
  p99us: number;
  errorRate: number;
}

/** A ramp step: the median of its repeats (each field on its own), and the repeats themselves. */
export interface RampStep extends StepSample {
  connections: number;
  repeats: StepSample[];
}

/** The median step of a step's repeats; throws on none. */
export function medianStep(connections: number, repeats: StepSample[]): RampStep {
  if (repeats.length === 0) throw new RangeError(`ramp step at ${connections} connections: no repeats`);
  return {
    connections,
    rps: median(repeats.map((r) => r.rps)),
    p99us: median(repeats.map((r) => r.p99us)),
    errorRate: median(repeats.map((r) => r.errorRate)),
    repeats,
  };
}

/** Error rate above which a step misses the SLO, whatever its p99. */
export const SLO_MAX_ERROR_RATE = 0.01;

/** Why a step misses the SLO (p99 over the bound, or errors over 1%), or null when it meets it. */
export function sloMiss(s: StepSample, sloP99Us: number): string | null {
  if (s.errorRate > SLO_MAX_ERROR_RATE) return `errors ${(s.errorRate * 100).toFixed(1)}% > 1%`;
  if (!(s.p99us <= sloP99Us))
    return `p99 ${(s.p99us / 1000).toFixed(1)} ms > ${(sloP99Us / 1000).toFixed(0)} ms`;
  return null;
}

/**
 * What a ramp measured: the highest req/s of the steps that met the SLO, up to the first that missed it. A ramp
 * whose first step misses is not measured (the system could not serve even the lightest load within the SLO;
 * that step's req/s is not its maximum).
 */
export function rampOutcome(
  steps: RampStep[],
  sloP99Us: number,
): { maxRps: number | null; atConnections: number | null; notMeasured: string | null } {
  if (steps.length === 0) return { maxRps: null, atConnections: null, notMeasured: 'no ramp step ran' };
  const first = sloMiss(steps[0]!, sloP99Us);
  if (first)
    return {
      maxRps: null,
      atConnections: null,
      notMeasured: `the first step (${steps[0]!.connections} connections) missed the SLO: ${first}`,
    };
  let best = steps[0]!;
  for (const s of steps) {
    if (sloMiss(s, sloP99Us)) break;
    if (s.rps > best.rps) best = s;
  }
  return { maxRps: best.rps, atConnections: best.connections, notMeasured: null };
}

/**
 * A counter's growth during a load window net of the same counter's growth during an idle window (same round,
 * system set up, no load), scaled to the load window's length.
 */
export function netOfIdle(o: { load: number; loadMs: number; idle: number; idleMs: number }): number {
  if (!(o.loadMs > 0) || !(o.idleMs > 0))
    throw new RangeError(`window lengths must be > 0 ms, got load ${o.loadMs}, idle ${o.idleMs}`);
  return o.load - (o.idle * o.loadMs) / o.idleMs;
}

/** XDP program run-time totals (BPF run-time stats) over a window. */
export interface XdpWindow {
  runTimeNs: number;
  runCount: number;
}

/**
 * The XDP cost of VIP packets only. The programs also run on every other packet the LB nodes get (health-check
 * replies, BGP, ARP): those are the window's runs beyond its VIP packets, charged at the idle window's mean cost
 * per run (all non-VIP there; 0 when the idle window had no runs). null when no VIP packet was counted.
 */
export function xdpVipCost(o: {
  load: XdpWindow;
  idle: XdpWindow;
  vipPackets: number;
  requests: number;
}): { nsPerPacket: number; nsPerRequest: number; packetsPerRequest: number; otherPackets: number } | null {
  if (!(o.vipPackets > 0)) return null;
  const otherPackets = Math.max(0, o.load.runCount - o.vipPackets);
  const otherNs = o.idle.runCount > 0 ? (otherPackets * o.idle.runTimeNs) / o.idle.runCount : 0;
  const vipNs = o.load.runTimeNs - otherNs;
  const req = Math.max(1, o.requests);
  return {
    nsPerPacket: vipNs / o.vipPackets,
    nsPerRequest: vipNs / req,
    packetsPerRequest: o.vipPackets / req,
    otherPackets,
  };
}

/** Median and range of one metric over rounds; `of` rounds had it (a round may not have measured it). */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
  of: number;
}

/** Spread of the finite values (null and NaN count as not measured); null when none is finite. */
export function spreadOf(values: (number | null | undefined)[]): Spread | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return null;
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length, of: values.length };
}

/** The headline numbers of one round of one system, by metric label (null: not measured in that round). */
export function roundMetrics(r: SystemResult): [string, number | null][] {
  const m: [string, number | null][] = [];
  for (const t of r.throughput) m.push([`max req/s, ${t.backends} backend(s)`, t.maxRps]);
  for (const x of r.latency) {
    m.push([`p50 ms @${x.rate}/s`, x.latencyUs.p50 / 1000]);
    m.push([`p99 ms @${x.rate}/s`, x.latencyUs.p99 / 1000]);
    m.push([`machine busy µs/req @${x.rate}/s (net of idle)`, x.cpuUsPerReq]);
    m.push([`softirq µs/req @${x.rate}/s (net of idle)`, x.softirqUsPerReq]);
    m.push([`LB processes µs/req @${x.rate}/s`, x.lbProcessUsPerReq]);
    if (x.daemonCorePct !== undefined && x.daemonCorePct !== null)
      m.push([`peak-xdp daemons, % of a core @${x.rate}/s`, x.daemonCorePct]);
    if (x.xdp) m.push([`XDP ns per VIP packet @${x.rate}/s`, x.xdp.nsPerPacket]);
  }
  for (const f of r.faults) m.push([`${f.scenario.replace(/ (be|lb)\d+$/, '')}: failed`, f.failed]);
  if (r.timeline) m.push(['LB join/leave: broken connections', r.timeline.brokenConnections]);
  return m;
}

/** Per metric (in first-seen order), the spread over its rounds of each system that has the metric. */
export function summarizeRounds(
  bySystem: Map<string, SystemResult[]>,
): { metric: string; cells: Map<string, Spread | null> }[] {
  const metrics: string[] = [];
  const values = new Map<string, Map<string, (number | null)[]>>();
  for (const [system, rounds] of bySystem)
    for (const r of rounds)
      for (const [metric, v] of roundMetrics(r)) {
        if (!values.has(metric)) {
          metrics.push(metric);
          values.set(metric, new Map());
        }
        const per = values.get(metric)!;
        per.set(system, [...(per.get(system) ?? []), v]);
      }
  return metrics.map((metric) => {
    const per = values.get(metric)!;
    const cells = new Map<string, Spread | null>();
    // A system without the metric at all (e.g. no XDP for a proxy) gets no cell.
    for (const [system, vs] of per) cells.set(system, spreadOf(vs));
    return { metric, cells };
  });
}

const fmt = (x: number): string =>
  Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);

/** One table cell: "median [min–max]" (the range only over 2+ rounds), "not measured", or "k/n rounds". */
export function spreadCell(s: Spread | null): string {
  if (!s) return 'not measured';
  const range = s.n > 1 ? ` [${fmt(s.min)}–${fmt(s.max)}]` : '';
  const missing = s.n < s.of ? ` (${s.n}/${s.of} rounds)` : '';
  return `${fmt(s.median)}${range}${missing}`;
}

/** The across-rounds section of the report. */
export function roundsMarkdown(o: {
  rounds: number;
  systems: string[];
  summary: { metric: string; cells: Map<string, Spread | null> }[];
}): string {
  const L: string[] = [];
  L.push(`## Across ${o.rounds} round(s): median [min–max]`, '');
  L.push(
    'Systems ran interleaved (every system once per round, rounds one after another), so load from anything',
    'else on the machine falls on every system alike. "not measured": no round measured it (a ramp whose',
    'first step missed the SLO); "–": the metric does not apply. The tables after this one are the last round.',
    '',
  );
  L.push(`| metric | ${o.systems.join(' | ')} |`, `|---|${o.systems.map(() => '---').join('|')}|`);
  for (const row of o.summary)
    L.push(
      `| ${row.metric} | ${o.systems.map((s) => (row.cells.has(s) ? spreadCell(row.cells.get(s)!) : '–')).join(' | ')} |`,
    );
  L.push('');
  return L.join('\n');
}

/** What one window (idle or under load) accumulated: jiffies, XDP runs, VIP packets forwarded. */
export interface CpuWindow {
  ms: number;
  /** Machine-wide busy and softirq jiffies (/proc/stat). */
  busyJ: number;
  softirqJ: number;
  /** user+system jiffies of every process in the LB namespaces, and of the peak-xdp daemons alone (null: none). */
  lbProcJ: number;
  daemonJ: number | null;
  xdp: XdpWindow | null;
  vipPackets: number | null;
}

/**
 * The CPU columns of one fixed-rate window: machine busy and softirq per request net of the idle window (same
 * round, system set up), LB processes per request as measured (their idle work is what they cost), the peak-xdp
 * daemons in % of one core, and the XDP cost of VIP packets.
 */
export function latencyCosts(o: { load: CpuWindow; idle: CpuWindow; requests: number; jiffyUs: number }) {
  const req = Math.max(1, o.requests);
  const net = (load: number, idle: number): number =>
    netOfIdle({ load: load * o.jiffyUs, loadMs: o.load.ms, idle: idle * o.jiffyUs, idleMs: o.idle.ms });
  const perS = (j: number): number => (j * o.jiffyUs * 1000) / o.idle.ms;
  return {
    cpuUsPerReq: net(o.load.busyJ, o.idle.busyJ) / req,
    softirqUsPerReq: net(o.load.softirqJ, o.idle.softirqJ) / req,
    lbProcessUsPerReq: (o.load.lbProcJ * o.jiffyUs) / req,
    daemonCorePct: o.load.daemonJ === null ? null : (100 * o.load.daemonJ * o.jiffyUs) / (o.load.ms * 1000),
    xdp:
      o.load.xdp && o.load.vipPackets !== null
        ? xdpVipCost({
            load: o.load.xdp,
            idle: o.idle.xdp ?? { runTimeNs: 0, runCount: 0 },
            vipPackets: o.load.vipPackets,
            requests: o.requests,
          })
        : null,
    idle: {
      ms: o.idle.ms,
      busyUsPerS: perS(o.idle.busyJ),
      softirqUsPerS: perS(o.idle.softirqJ),
      lbProcessUsPerS: perS(o.idle.lbProcJ),
    },
  };
}
