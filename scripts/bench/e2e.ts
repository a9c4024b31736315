// `npm run bench:e2e`: every system on the same namespace testbed; JSON, Markdown report and PNG plots.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { packageRoot } from '../../src/paths';
import { defaultConfigPath, loadTestbedConfig } from '../testbed/config';
import { buildPlan, Host, Plan, serviceVip } from '../testbed/plan';
import { down, killBackendNginx, startBackendNginx, up } from '../testbed/topology';
import { sleep, waitFor } from '../testbed/sh';
import {
  daemonLog,
  daemonPids,
  peakUnavailable,
  startDaemon,
  startMilestones,
  stopDaemon,
} from '../testbed/peak';
import { backendCountsFor, parseBenchArgs, plannedSteps, Profile } from './e2e-profile';
import { renderReport, BenchResults, EcmpSample, SystemResult } from './e2e-report';
import { BenchSystem, Deployment, getSystem } from './lib/systems';
import {
  JIFFY_US,
  killExabgp,
  loadIn,
  routerTxPackets,
  snapshot,
  startExabgp,
  waitFib,
  windowOf,
  wrkIn,
} from './lib/measure';
import { jain, maxOverMean, recoveryMs } from './lib/stats';
import type { FailureRecord, Progress } from './lib/loadgen';
import { enableBpfStats, StatsHandle } from './lib/bpfstats';
import {
  latencyCosts,
  medianStep,
  rampOutcome,
  RampStep,
  roundOrder,
  roundsMarkdown,
  sloMiss,
  StepSample,
  summarizeRounds,
} from './lib/rounds';
import { BrokenConnection, brokenFrom, lbCountAt, lbsHoldingFlow } from './lib/broken';
import { keepLogs } from './lib/logs';
import { runBfdFailover } from './bfd-failover';
import {
  CHURN_BENCH,
  CHURN_MODES,
  CHURN_TURNOVER,
  churnBenchOrder,
  type ChurnMode,
  churnLine,
  churnMarkdown,
  churnPathProblem,
  ChurnResult,
  ChurnRig,
} from './lib/churn';

let step = 0;
let totalSteps = 1;
/** "round 2/3: " while rounds run. */
let roundLabel = '';
function progress(msg: string): void {
  step++;
  const pct = Math.min(100, Math.round((step / totalSteps) * 100));
  const bar = '#'.repeat(Math.round(pct / 5)).padEnd(20, '.');
  process.stderr.write(`\n[${bar}] ${String(pct).padStart(3)}% ${roundLabel}${msg}`);
}
function live(p: Progress): void {
  process.stderr.write(`  t=${(p.tMs / 1000).toFixed(0)}s ok=${p.ok} err=${p.err}`);
}

function deployment(plan: Plan, f: 4 | 6, o: { lbs: number; backends: number }): Deployment {
  return { plan, family: f, lbs: plan.lbs.slice(0, o.lbs), backends: plan.backends.slice(0, o.backends) };
}

/**
 * Closed-loop ramp: a discarded warm-up, then each connection count `stepRepeats` times (the step is their
 * median), up to the first step that misses the SLO. The first step missing it means "not measured".
 */
async function rampThroughput(plan: Plan, sys: BenchSystem, d: Deployment, prof: Profile, label: string) {
  const t = sys.targets(d);
  const wrk = (connections: number, durationS: number) =>
    wrkIn({
      netns: plan.clients[0]!.netns,
      hosts: t.map((x) => x.host),
      port: t[0]!.port,
      connections,
      durationS,
      scriptDir: plan.stateDir,
    });
  await wrk(prof.wrkConnections[0]!, prof.warmupSeconds);
  const steps: RampStep[] = [];
  for (const [i, c] of prof.wrkConnections.entries()) {
    progress(`${label}: wrk ${c} connections ×${prof.stepRepeats}`);
    const repeats: StepSample[] = [];
    for (let k = 0; k < prof.stepRepeats; k++) {
      const w = await wrk(c, prof.wrkSeconds);
      repeats.push({ rps: w.rps, p99us: w.p99us, errorRate: w.errorRate });
    }
    const s = medianStep(c, repeats);
    steps.push(s);
    if (sloMiss(s, prof.sloP99Us)) {
      // The bar still reaches 100%: the steps not taken count as done.
      step += prof.wrkConnections.length - 1 - i;
      break;
    }
  }
  return { steps, ...rampOutcome(steps, prof.sloP99Us) };
}

async function runSystem(plan: Plan, sys: BenchSystem, prof: Profile, f: 4 | 6): Promise<SystemResult> {
  const res: SystemResult = {
    system: sys.name,
    throughput: [],
    lbScaling: [],
    latency: [],
    faults: [],
    timeline: null,
    inner: null,
    balance: null,
  };
  const client = plan.clients[0]!.netns;
  const backendCounts = backendCountsFor(sys.name, prof);
  // 1+3. Throughput vs backends.
  for (const n of backendCounts) {
    const d = deployment(plan, f, { lbs: prof.lbs, backends: n });
    await sys.setup(d);
    try {
      const r = await rampThroughput(plan, sys, d, prof, `${sys.name} ${n} backend(s)`);
      res.throughput.push({ backends: n, ...r });
    } finally {
      await sys.teardown(d);
    }
  }
  const full = deployment(plan, f, { lbs: prof.lbs, backends: sys.name === 'direct' ? 1 : prof.backends });
  await sys.setup(full);
  try {
    // 3. Throughput vs LB count (ECMP).
    if (sys.usesLbs && sys.setLbMembership) {
      const conns = res.throughput.at(-1)?.atConnections || prof.wrkConnections[0]!;
      for (const k of prof.lbCounts) {
        progress(`${sys.name}: ${k} LB node(s)`);
        await sys.setLbMembership(full, plan.lbs.slice(0, k));
        await sleep(500);
        const t = sys.targets(full);
        const w = await wrkIn({
          netns: client,
          hosts: t.map((x) => x.host),
          port: t[0]!.port,
          connections: conns,
          durationS: prof.wrkSeconds,
          scriptDir: plan.stateDir,
        });
        res.lbScaling.push({ lbs: k, rps: w.rps, errorRate: w.errorRate });
      }
      await sys.setLbMembership(full, full.lbs);
      await sleep(500);
    }
    // 2+4. Latency at fixed rates (open loop, new connection per request), CPU per request, balance. The CPU
    // baseline: an idle window of this round with the system set up (BPF run-time stats are on throughout).
    const snap = () =>
      snapshot({
        plan,
        lbs: full.lbs,
        daemons: sys.name === 'peak-xdp' ? () => full.lbs.flatMap(daemonPids) : null,
      });
    const i0 = await snap();
    await sleep(prof.idleSeconds * 1000);
    const idle = windowOf(i0, await snap());
    for (const rate of prof.latencyRates) {
      progress(`${sys.name}: open loop ${rate} req/s`);
      const w0 = await snap();
      const r = await loadIn(
        client,
        {
          targets: sys.targets(full),
          mode: 'open',
          rate,
          durationMs: prof.latencySeconds * 1000,
          maxRequests: rate * prof.latencySeconds + 10,
          timeoutMs: 2000,
        },
        live,
      );
      const costs = latencyCosts({
        load: windowOf(w0, await snap()),
        idle,
        requests: r.ok,
        jiffyUs: JIFFY_US,
      });
      res.latency.push({
        rate, ok: r.ok, sent: r.sent, errors: r.errors, latencyUs: r.latencyUs, cdfUs: r.cdfUs, ...costs,
      }); // prettier-ignore
      const counts = full.backends.map((b) => r.perBackend[b.name] ?? 0);
      res.balance = { perBackend: r.perBackend, jain: jain(counts), maxOverMean: maxOverMean(counts) };
    }
    // 5. Inner-service call: a client inside the last backend calling a service it does not serve itself.
    const caller = plan.backends.at(-1)!;
    const innerTargets = sys.innerTargets ? sys.innerTargets(full, caller) : sys.targets(full);
    progress(`${sys.name}: inner-service calls from ${caller.name}`);
    const inner = await loadIn(caller.netns, {
      targets: innerTargets,
      mode: 'open',
      rate: prof.innerRate,
      durationMs: prof.innerSeconds * 1000,
      maxRequests: prof.innerRate * prof.innerSeconds + 10,
      timeoutMs: 2000,
    });
    res.inner = {
      from: caller.name,
      to: innerTargets.map((t) => t.host).join(' '),
      ok: inner.ok,
      sent: inner.sent,
      errors: inner.errors,
      perBackend: inner.perBackend,
      p50us: inner.latencyUs.p50,
      p99us: inner.latencyUs.p99,
    };
    // 6. Fault: kill one backend during load.
    if (full.backends.length > 1 || sys.name === 'direct') {
      const victim = full.backends.at(-1)!;
      progress(`${sys.name}: kill backend ${victim.name} under load`);
      res.faults.push(
        await faultRun({
          plan,
          full,
          sys,
          prof,
          name: `kill backend ${victim.name}`,
          inject: () => killBackendNginx(victim),
          repair: () => startBackendNginx(plan, victim),
        }),
      );
    }
    // 6. Fault: kill -9 one LB daemon (peak-xdp only: the daemon is not on the forwarding path).
    if (sys.name === 'peak-xdp') {
      const lb = full.lbs[0]!;
      progress(`${sys.name}: kill -9 daemon on ${lb.name} under load`);
      res.faults.push(
        await faultRun({
          plan,
          full,
          sys,
          prof,
          name: `kill -9 daemon ${lb.name}`,
          inject: () => stopDaemon(plan, lb, { signal: 'SIGKILL' }),
          repair: () => void startDaemon(plan, lb, { backends: full.backends }),
          afterRepair: () => waitAnnounced({ plan, family: f, lbs: full.lbs }),
        }),
      );
    }
    // 3+6. Throughput following the LB count over time; connections broken when LB nodes join or leave.
    if (sys.usesLbs && sys.setLbMembership && full.lbs.length > 1) {
      progress(`${sys.name}: LB nodes join/leave under persistent connections`);
      res.timeline = await lbTimeline({ plan, full, sys, prof });
    }
  } finally {
    await sys.teardown(full);
  }
  return res;
}

async function faultRun(o: {
  plan: Plan;
  full: Deployment;
  sys: BenchSystem;
  prof: Profile;
  name: string;
  inject: () => void;
  repair: () => void;
  /** Waits until the system is whole again (default: 1.5 s). */
  afterRepair?: () => Promise<void>;
}) {
  const faultMs = Math.round((o.prof.faultSeconds * 1000) / 3);
  const timer = setTimeout(o.inject, faultMs);
  try {
    const r = await loadIn(
      o.plan.clients[0]!.netns,
      {
        targets: o.sys.targets(o.full),
        mode: 'open',
        rate: o.prof.faultRate,
        durationMs: o.prof.faultSeconds * 1000,
        maxRequests: o.prof.faultRate * o.prof.faultSeconds + 10,
        timeoutMs: 1000,
      },
      live,
    );
    const failed = Object.values(r.errors).reduce((a, b) => a + b, 0);
    return {
      scenario: o.name,
      sent: r.sent,
      failed,
      errors: r.errors,
      recoveryMs: recoveryMs({
        bucketMs: r.timeline.bucketMs,
        errors: r.timeline.err.slice(0, Math.ceil((o.prof.faultSeconds * 1000) / r.timeline.bucketMs)),
        faultMs,
      }),
      faultAtMs: faultMs,
    };
  } finally {
    clearTimeout(timer);
    o.repair();
    await (o.afterRepair ? o.afterRepair() : sleep(1500));
  }
}

/** Waits until the router routes the family's main VIP over exactly these LB nodes (BGP). */
async function waitAnnounced(o: { plan: Plan; family: 4 | 6; lbs: Host[] }): Promise<void> {
  const vip = serviceVip(o.plan, o.family).address;
  const want = o.lbs.map((lb) => (o.family === 4 ? lb.link!.hostV4.address : lb.link!.hostV6.address));
  const ms = await waitFib({
    plan: o.plan,
    address: vip,
    want,
    timeoutMs: 20_000,
    intervalMs: 50,
    since: performance.now(),
  });
  if (ms === null)
    throw new Error(`router route to ${vip} did not return to [${want.join(', ')}] within 20 s`);
}

/** LB count 1..K..1 under long-lived keep-alive connections (one request per 100 ms each): breaks and per-LB traffic. */
async function lbTimeline(o: { plan: Plan; full: Deployment; sys: BenchSystem; prof: Profile }) {
  const counts = [...o.prof.lbCounts, ...o.prof.lbCounts.slice(0, -1).reverse()];
  const phaseMs = o.prof.timelinePhaseSeconds * 1000;
  const bucketMs = 250;
  await o.sys.setLbMembership!(o.full, o.plan.lbs.slice(0, counts[0]!));
  await sleep(500);
  const changes: { atMs: number; lbs: number }[] = [];
  const lbPackets: { t: number; lb: string; pps: number }[] = [];
  const t0 = performance.now();
  let prev = routerTxPackets(o.plan, o.full.lbs);
  let prevT = t0;
  // Samples the router's packets towards each LB node: which nodes carry the traffic, over time.
  const sampler = setInterval(() => {
    const now = performance.now();
    const cur = routerTxPackets(o.plan, o.full.lbs);
    for (const lb of o.full.lbs)
      lbPackets.push({
        t: (now - t0) / 1000,
        lb: lb.name,
        pps: ((cur[lb.name]! - prev[lb.name]!) * 1000) / (now - prevT),
      });
    prev = cur;
    prevT = now;
  }, bucketMs);
  // Each broken connection, with the LB nodes that held state for it when it broke (bounded).
  const broken: Promise<BrokenConnection>[] = [];
  const t0Epoch = Date.now() - (performance.now() - t0);
  const client = o.plan.clients[0]!;
  const clientAddr = o.full.family === 4 ? client.link!.hostV4.address : client.link!.hostV6.address;
  const onFailure = (f: FailureRecord): void => {
    if (!f.broken || broken.length >= 1000) return;
    const atMs = f.at - t0Epoch;
    const lbCount = lbCountAt({ first: counts[0]!, changes, atMs });
    const holding =
      o.sys.usesLbs && f.localPort !== null
        ? lbsHoldingFlow({
            plan: o.plan,
            lbs: o.full.lbs,
            client: clientAddr,
            sourcePort: f.localPort,
            peak: o.sys.name === 'peak-xdp',
          }).catch(() => [])
        : Promise.resolve([]);
    broken.push(holding.then((lbsWithState) => brokenFrom(f, { t0EpochMs: t0Epoch, lbsWithState, lbCount })));
  };
  const settled = loadIn(
    client.netns,
    {
      targets: o.sys.targets(o.full),
      mode: 'persistent',
      connections: o.prof.timelineConnections,
      thinkMs: 100,
      durationMs: phaseMs * counts.length,
      maxRequests: 5_000_000,
      timeoutMs: 2000,
      bucketMs,
    },
    undefined,
    onFailure,
  ).finally(() => clearInterval(sampler));
  try {
    for (let i = 1; i < counts.length; i++) {
      await sleep(t0 + i * phaseMs - performance.now());
      changes.push({ atMs: Math.round(performance.now() - t0), lbs: counts[i]! });
      await o.sys.setLbMembership!(o.full, o.plan.lbs.slice(0, counts[i]!));
    }
  } catch (e) {
    // The load must settle before anything else runs, even if a membership change failed.
    await settled.catch(() => undefined);
    throw e;
  }
  const result = await settled;
  await o.sys.setLbMembership!(o.full, o.full.lbs);
  return {
    phases: counts,
    phaseMs,
    changes,
    keepAliveConnections: o.prof.timelineConnections,
    brokenConnections: result.brokenConnections,
    brokenDetail: await Promise.all(broken),
    connectionsOpened: result.connectionsOpened,
    ok: result.ok,
    errors: result.errors,
    bucketMs,
    okPerBucket: result.timeline.ok,
    lbPackets,
  };
}

/** ECMP update delay: announcer started/stopped on a random LB -> router FIB next-hop set changes. */
async function ecmpDelay(plan: Plan, prof: Profile, usePeak: boolean) {
  const prefix = '10.201.0.100/32';
  const vip = usePeak ? serviceVip(plan, 4).address : '10.201.0.100';
  const announcer = usePeak ? 'peak-xdp daemon' : 'exabgp (reference speaker; peak-xdp not available)';
  const up = new Set<Host>();
  const samples: EcmpSample[] = [];
  const start = (lb: Host): void =>
    void (usePeak ? startDaemon(plan, lb, { backends: plan.backends }) : startExabgp(plan, lb, prefix));
  const stop = (lb: Host): void => (usePeak ? stopDaemon(plan, lb, { signal: 'SIGTERM' }) : killExabgp(lb));
  try {
    for (let i = 0; i < prof.ecmpChanges; i++) {
      const lb = plan.lbs[randomBytes(1)[0]! % plan.lbs.length]!;
      const action = up.has(lb) ? 'stop' : 'start';
      progress(`ECMP delay ${i + 1}/${prof.ecmpChanges}: ${action} ${lb.name}`);
      // A restarted daemon must not find its previous incarnation still withdrawing.
      if (usePeak && action === 'start')
        await waitFor(() => daemonPids(lb).length === 0, { timeoutMs: 5000, intervalMs: 20 });
      const sinceEpochMs = Date.now();
      const since = performance.now();
      if (action === 'start') {
        start(lb);
        up.add(lb);
      } else {
        stop(lb);
        up.delete(lb);
      }
      const want = [...up].map((h) => h.link!.hostV4.address);
      const ms = await waitFib({ plan, address: vip, want, timeoutMs: 15_000, intervalMs: 5, since });
      const sample: EcmpSample = { action, lb: lb.name, ms };
      if (usePeak && action === 'start')
        sample.milestones = startMilestones({
          log: daemonLog(plan, lb),
          sinceEpochMs,
          peer: lb.link!.routerV4.address,
        });
      samples.push(sample);
      await sleep(300 + (randomBytes(1)[0]! % 700));
    }
  } finally {
    for (const lb of plan.lbs) stop(lb);
  }
  return { announcer, pollIntervalMs: 5, samples };
}

/**
 * Mixed churn, feature on and off interleaved (A B A B): a rolling update with an LB node leaving or joining
 * after each backend change, under keep-alive connections (scripts/bench/lib/churn.ts). A run that did not
 * measure the path it names (no hinted GUE with the feature on, GUE with it off) is a failure.
 */
async function churnRuns(
  plan: Plan,
  profile: 'quick' | 'full',
  failures: { system: string; round: number; reason: string }[],
): Promise<ChurnResult[]> {
  const o = CHURN_BENCH[profile];
  const rig = new ChurnRig(plan);
  const out: ChurnResult[] = [];
  try {
    await rig.prepareBackends();
    const runs: { name: ChurnMode['name']; turnover: boolean }[] = [
      ...churnBenchOrder(o.rounds).map((name) => ({ name, turnover: false })),
      ...CHURN_TURNOVER.modes.map((name) => ({ name, turnover: true })),
    ];
    for (const [i, { name, turnover }] of runs.entries()) {
      progress(
        `mixed churn ${i + 1}: feature ${name === 'off' ? 'off' : `on (${name})`}${turnover ? ', connection turnover' : ''}`,
      );
      try {
        const r = await rig.runMode(CHURN_MODES[name], {
          ...o,
          ...(turnover
            ? { connectionRequests: CHURN_TURNOVER.connectionRequests, settleMs: CHURN_TURNOVER.settleMs }
            : {}),
          log: (l) => process.stderr.write(`\n  ${l}`),
        });
        out.push(r);
        process.stderr.write(`\n[bench] churn ${churnLine(r)}`);
        const why = churnPathProblem(r);
        if (why) failures.push({ system: 'churn', round: i + 1, reason: `did not measure its path: ${why}` });
      } catch (e) {
        failures.push({ system: 'churn', round: i + 1, reason: e instanceof Error ? e.message : String(e) });
        process.stderr.write(
          `\n[bench] churn ${name}: FAILED: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    }
  } finally {
    await rig.resetLbs().catch(() => undefined);
    await rig.stopDecaps().catch(() => undefined);
  }
  return out;
}

function churnSection(all: ChurnResult[]): string {
  const rs = all.filter((r) => r.connectionRequests === null);
  const turnover = all.filter((r) => r.connectionRequests !== null);
  const on = rs.filter((r) => r.mode !== 'off');
  const off = rs.filter((r) => r.mode === 'off');
  const pct = (r: ChurnResult): string =>
    r.extraHop.after.fraction === null ? '-' : `${(r.extraHop.after.fraction * 100).toFixed(2)}%`;
  const sum = (xs: ChurnResult[], f: (r: ChurnResult) => number): number => xs.reduce((a, r) => a + f(r), 0);
  return [
    '## Mixed churn: rolling update + LB nodes leaving/joining (issue 15)',
    '',
    `Broken connections other than those whose own backend was removed: feature on ${sum(on, (r) => r.broken.unexplained)} ` +
      `unexplained + ${sum(on, (r) => r.broken.superseded)} superseded (opened between two changes of their slot) in ` +
      `${on.length} runs; feature off ${sum(off, (r) => r.broken.unexplained)} in ${off.length} runs. Extra hop: second-chance ` +
      'forwards / client GUE packets at the backends; steady = before the first change.',
    '',
    churnMarkdown(rs),
    '',
    ...(turnover.length === 0
      ? []
      : [
          `With connection turnover (each connection closed after ${CHURN_TURNOVER.connectionRequests} requests, ~` +
            `${CHURN_TURNOVER.connectionRequests / 10} s, and a new one opened; the "after" window starts ` +
            `${CHURN_TURNOVER.settleMs / 1000} s after the last change): extra hop after the changes ` +
            turnover.map((r) => `${r.mode} ${pct(r)}`).join(', ') +
            ' (issue 15: < 1 %).',
          '',
          churnMarkdown(turnover),
          '',
        ]),
  ].join('\n');
}

async function main(): Promise<number> {
  const args = parseBenchArgs(process.argv.slice(2));
  const prof = args.profile;
  const prefix = args.prefix ?? process.env.PEAK_TB_PREFIX ?? `pb${randomBytes(2).toString('hex')}`;
  const cfg = loadTestbedConfig({
    path: defaultConfigPath(packageRoot),
    overrides: { prefix, lbs: prof.lbs, backends: prof.backends },
  });
  const plan = buildPlan(cfg);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = args.out ?? join(packageRoot, 'bench-results', stamp);
  mkdirSync(outDir, { recursive: true });
  const peakWhy = args.systems.includes('peak-xdp') ? peakUnavailable() : null;
  // Mixed churn (issue 15): peak-xdp with the feature on and off, interleaved, on the same testbed.
  const runChurn =
    peakWhy === null && args.systems.includes('peak-xdp') && process.env.PEAK_BENCH_CHURN !== '0';
  let churn: ChurnResult[] = [];
  totalSteps =
    args.systems
      .map((n) => getSystem(n))
      .reduce(
        (a, s) =>
          a + plannedSteps({ name: s.name, usesLbs: s.usesLbs, hasDaemon: s.name === 'peak-xdp' }, prof),
        0,
      ) *
      prof.rounds +
    prof.ecmpChanges +
    (runChurn ? churnBenchOrder(CHURN_BENCH[prof.name].rounds).length + CHURN_TURNOVER.modes.length : 0);
  const cleanup = (): void => {
    down(plan).then(
      () => process.exit(130),
      () => process.exit(130),
    );
  };
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
  const results: BenchResults = {
    profile: prof, family: args.family, prefix, startedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '?', kernel: (await import('node:os')).release(), node: process.version },
    systems: [], notRun: [], ecmp: null, durationS: 0,
  }; // prettier-ignore
  const t0 = Date.now();
  // Every round of every system, by system (the report's tables show the last round; the summary all of them).
  const bySystem = new Map<string, SystemResult[]>();
  const failures: { system: string; round: number; reason: string }[] = [];
  // BPF run-time stats on for the whole run: every system pays their (small) cost alike.
  let bpfStats: StatsHandle | null = null;
  try {
    process.stderr.write(
      `[bench] testbed ${prefix}: ${prof.lbs} LB nodes, ${prof.backends} backends (profile ${prof.name}, ${prof.rounds} round(s))`,
    );
    up(plan);
    bpfStats = await enableBpfStats();
    if (!bpfStats) process.stderr.write('\n[bench] BPF run-time stats unavailable: no XDP run times');
    const skipped = new Set<string>();
    for (const { round, system: name } of roundOrder(args.systems, prof.rounds)) {
      roundLabel = prof.rounds > 1 ? `round ${round}/${prof.rounds}: ` : '';
      const sys = getSystem(name);
      // A system that is not run or fails midway still moves the bar to where its steps end.
      const stepsEnd =
        step + plannedSteps({ name, usesLbs: sys.usesLbs, hasDaemon: name === 'peak-xdp' }, prof);
      const why = skipped.has(name) ? 'unavailable' : sys.unavailable();
      if (why) {
        if (!skipped.has(name)) {
          results.notRun.push({ system: name, reason: why });
          process.stderr.write(`\n[bench] ${name}: NOT RUN: ${why}`);
        }
        skipped.add(name);
        step = stepsEnd;
        continue;
      }
      try {
        const r = await runSystem(plan, sys, prof, args.family);
        bySystem.set(name, [...(bySystem.get(name) ?? []), r]);
      } catch (e) {
        const reason = `failed: ${e instanceof Error ? e.message : String(e)}`;
        failures.push({ system: name, round, reason });
        process.stderr.write(`\n[bench] ${roundLabel}${name}: FAILED: ${reason}`);
      } finally {
        keepLogs(plan.stateDir, join(outDir, 'logs', `round${round}`, name));
      }
      step = stepsEnd;
    }
    roundLabel = '';
    for (const name of args.systems) {
      const rounds = bySystem.get(name);
      if (rounds?.length) results.systems.push(rounds.at(-1)!);
      const failed = failures.filter((f) => f.system === name);
      if (failed.length)
        results.notRun.push({
          system: name,
          reason: `${failed.length} of ${prof.rounds} round(s) failed: ${failed.map((f) => `round ${f.round}: ${f.reason}`).join('; ')}`,
        });
    }
    results.ecmp = await ecmpDelay(plan, prof, peakWhy === null && args.systems.includes('peak-xdp'));
    keepLogs(plan.stateDir, join(outDir, 'logs', 'ecmp'));
    if (runChurn) {
      churn = await churnRuns(plan, prof.name, failures);
      const failed = failures.filter((f) => f.system === 'churn');
      if (failed.length)
        results.notRun.push({
          system: 'churn',
          reason: failed.map((f) => `run ${f.round}: ${f.reason}`).join('; '),
        });
      keepLogs(plan.stateDir, join(outDir, 'logs', 'churn'));
    }
  } finally {
    await bpfStats?.stop();
    await down(plan);
  }
  // Silent failure of an LB node with and without BFD, interleaved: its own lab (BIRD with BFD, 2 LB nodes).
  if (peakWhy === null && args.systems.includes('peak-xdp') && process.env.PEAK_BENCH_BFD !== '0') {
    const bfd = await runBfdFailover({
      router: 'bird',
      pairs: 2,
      log: (l) => process.stderr.write(`\n${l}`),
    });
    writeFileSync(join(outDir, 'bfd-failover.json'), JSON.stringify(bfd, null, 2));
    writeFileSync(
      join(outDir, 'bfd-failover.md'),
      `## Silent failure with and without BFD\n\n${bfd.markdown}`,
    );
    process.stderr.write(`\n${bfd.markdown}`);
  }
  if (churn.length) {
    const md = churnSection(churn);
    writeFileSync(join(outDir, 'churn.json'), JSON.stringify(churn, null, 2));
    writeFileSync(join(outDir, 'churn.md'), md);
    process.stderr.write(`\n${md}`);
  }
  results.durationS = (Date.now() - t0) / 1000;
  const order = roundOrder(args.systems, prof.rounds).map((x) => `${x.round}:${x.system}`);
  writeFileSync(
    join(outDir, 'results.json'),
    JSON.stringify(
      { ...results, rounds: { count: prof.rounds, order, bySystem: Object.fromEntries(bySystem) } },
      null,
      2,
    ),
  );
  await renderReport(results, outDir);
  // The across-rounds summary goes first in the report.
  const summary = roundsMarkdown({
    rounds: prof.rounds,
    systems: [...bySystem.keys()],
    summary: summarizeRounds(bySystem),
  });
  const reportPath = join(outDir, 'report.md');
  const md = readFileSync(reportPath, 'utf8');
  const at = md.indexOf('\n## ');
  writeFileSync(
    reportPath,
    at < 0 ? `${md}\n${summary}` : `${md.slice(0, at + 1)}${summary}\n${md.slice(at + 1)}`,
  );
  if (churn.length) appendFileSync(reportPath, `\n${churnSection(churn)}`);
  process.stderr.write(`\n${summary}`);
  process.stderr.write(`\n[bench] done in ${results.durationS.toFixed(0)} s: ${outDir}/report.md\n`);
  if (results.notRun.length) {
    for (const n of results.notRun) process.stderr.write(`[bench] ${n.system} not measured: ${n.reason}\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`\n[bench] ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
