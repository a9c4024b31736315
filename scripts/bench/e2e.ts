// `npm run bench:e2e`: every system on the same namespace testbed; JSON, Markdown report and PNG plots.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { packageRoot } from '../../src/paths';
import { defaultConfigPath, loadTestbedConfig } from '../testbed/config';
import { buildPlan, Host, Plan } from '../testbed/plan';
import { down, killBackendNginx, startBackendNginx, up } from '../testbed/topology';
import { sleep } from '../testbed/sh';
import { peakUnavailable, startDaemon, stopDaemon } from '../testbed/peak';
import { parseBenchArgs, Profile } from './e2e-profile';
import { renderReport, BenchResults, SystemResult } from './e2e-report';
import { BenchSystem, Deployment, getSystem } from './lib/systems';
import {
  cpuTimes,
  JIFFY_US,
  killExabgp,
  loadIn,
  nsProcessCpu,
  startExabgp,
  waitFib,
  wrkIn,
} from './lib/measure';
import { jain, maxOverMean, recoveryMs } from './lib/stats';
import type { Progress } from './lib/loadgen';

let step = 0;
let totalSteps = 1;
function progress(msg: string): void {
  step++;
  const pct = Math.min(100, Math.round((step / totalSteps) * 100));
  const bar = '#'.repeat(Math.round(pct / 5)).padEnd(20, '.');
  process.stderr.write(`\n[${bar}] ${String(pct).padStart(3)}% ${msg}`);
}
function live(p: Progress): void {
  process.stderr.write(`  t=${(p.tMs / 1000).toFixed(0)}s ok=${p.ok} err=${p.err}`);
}

function deployment(plan: Plan, f: 4 | 6, o: { lbs: number; backends: number }): Deployment {
  return { plan, family: f, lbs: plan.lbs.slice(0, o.lbs), backends: plan.backends.slice(0, o.backends) };
}

async function rampThroughput(plan: Plan, sys: BenchSystem, d: Deployment, prof: Profile, label: string) {
  const steps: { connections: number; rps: number; p99us: number; errorRate: number }[] = [];
  let best = { connections: 0, rps: 0 };
  for (const c of prof.wrkConnections) {
    progress(`${label}: wrk ${c} connections`);
    const t = sys.targets(d);
    const w = await wrkIn({
      netns: plan.clients[0]!.netns,
      hosts: t.map((x) => x.host),
      port: t[0]!.port,
      connections: c,
      durationS: prof.wrkSeconds,
      scriptDir: plan.stateDir,
    });
    steps.push({ connections: c, rps: w.rps, p99us: w.p99us, errorRate: w.errorRate });
    if (w.errorRate > 0.01 || w.p99us > prof.sloP99Us) break;
    if (w.rps > best.rps) best = { connections: c, rps: w.rps };
  }
  return { steps, maxRps: best.rps, atConnections: best.connections };
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
  const backendCounts = sys.name === 'direct' ? [1] : prof.backendCounts;
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
    // 2+4. Latency at fixed rates (open loop, new connection per request), CPU per request, balance.
    for (const rate of prof.latencyRates) {
      progress(`${sys.name}: open loop ${rate} req/s`);
      const c0 = cpuTimes();
      const p0 = nsProcessCpu(full.lbs.map((l) => l.netns));
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
      const c1 = cpuTimes();
      const p1 = nsProcessCpu(full.lbs.map((l) => l.netns));
      const ok = Math.max(1, r.ok);
      res.latency.push({
        rate, ok: r.ok, sent: r.sent, errors: r.errors, latencyUs: r.latencyUs, cdfUs: r.cdfUs,
        cpuUsPerReq: ((c1.busy - c0.busy) * JIFFY_US) / ok,
        softirqUsPerReq: ((c1.softirq - c0.softirq) * JIFFY_US) / ok,
        lbProcessUsPerReq: ((p1 - p0) * JIFFY_US) / ok,
      }); // prettier-ignore
      const counts = full.backends.map((b) => r.perBackend[b.name] ?? 0);
      res.balance = { perBackend: r.perBackend, jain: jain(counts), maxOverMean: maxOverMean(counts) };
    }
    // 5. Inner-service call: a client inside the last backend calling this system's address.
    const innerHost = full.backends.at(-1)!;
    progress(`${sys.name}: inner-service calls from ${innerHost.name}`);
    const inner = await loadIn(innerHost.netns, {
      targets: sys.targets(full),
      mode: 'open',
      rate: prof.innerRate,
      durationMs: prof.innerSeconds * 1000,
      maxRequests: prof.innerRate * prof.innerSeconds + 10,
      timeoutMs: 2000,
    });
    res.inner = {
      from: innerHost.name,
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
    await sleep(1500);
  }
}

async function lbTimeline(o: { plan: Plan; full: Deployment; sys: BenchSystem; prof: Profile }) {
  const counts = [...o.prof.lbCounts, ...o.prof.lbCounts.slice(0, -1).reverse()];
  const phaseMs = o.prof.timelinePhaseSeconds * 1000;
  await o.sys.setLbMembership!(o.full, o.plan.lbs.slice(0, counts[0]!));
  await sleep(500);
  const changes: { atMs: number; lbs: number }[] = [];
  const run = loadIn(o.plan.clients[0]!.netns, {
    targets: o.sys.targets(o.full),
    mode: 'persistent',
    connections: o.prof.timelineConnections,
    thinkMs: 5,
    durationMs: phaseMs * counts.length,
    maxRequests: 5_000_000,
    timeoutMs: 1000,
    bucketMs: 250,
  });
  for (let i = 1; i < counts.length; i++) {
    await sleep(phaseMs);
    changes.push({ atMs: i * phaseMs, lbs: counts[i]! });
    await o.sys.setLbMembership!(o.full, o.plan.lbs.slice(0, counts[i]!));
  }
  const r = await run;
  await o.sys.setLbMembership!(o.full, o.full.lbs);
  return {
    phases: counts,
    phaseMs,
    changes,
    brokenConnections: r.brokenConnections,
    connectionsOpened: r.connectionsOpened,
    errors: r.errors,
    bucketMs: r.timeline.bucketMs,
    ok: r.timeline.ok,
  };
}

/** ECMP update delay: announcer started/stopped on a random LB -> router FIB next-hop set changes. */
async function ecmpDelay(plan: Plan, prof: Profile, usePeak: boolean) {
  const prefix = '10.201.0.100/32';
  const vip = usePeak ? plan.vips.find((v) => v.family === 4)!.address : '10.201.0.100';
  const announcer = usePeak ? 'peak-xdp daemon' : 'exabgp (reference speaker; peak-xdp not available)';
  const up = new Set<Host>();
  const samples: { action: 'start' | 'stop'; lb: string; ms: number | null }[] = [];
  const start = (lb: Host): void =>
    void (usePeak ? startDaemon(plan, lb, { backends: plan.backends }) : startExabgp(plan, lb, prefix));
  const stop = (lb: Host): void => (usePeak ? stopDaemon(plan, lb, { signal: 'SIGTERM' }) : killExabgp(lb));
  try {
    for (let i = 0; i < prof.ecmpChanges; i++) {
      const lb = plan.lbs[randomBytes(1)[0]! % plan.lbs.length]!;
      const action = up.has(lb) ? 'stop' : 'start';
      progress(`ECMP delay ${i + 1}/${prof.ecmpChanges}: ${action} ${lb.name}`);
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
      samples.push({ action, lb: lb.name, ms });
      await sleep(300 + (randomBytes(1)[0]! % 700));
    }
  } finally {
    for (const lb of plan.lbs) stop(lb);
  }
  return { announcer, pollIntervalMs: 5, samples };
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
  totalSteps =
    args.systems.length *
      (prof.backendCounts.length * prof.wrkConnections.length +
        prof.lbCounts.length +
        prof.latencyRates.length +
        4) +
    prof.ecmpChanges;
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
  try {
    process.stderr.write(
      `[bench] testbed ${prefix}: ${prof.lbs} LB nodes, ${prof.backends} backends (profile ${prof.name})`,
    );
    up(plan);
    for (const name of args.systems) {
      const sys = getSystem(name);
      const why = sys.unavailable();
      if (why) {
        results.notRun.push({ system: name, reason: why });
        process.stderr.write(`\n[bench] ${name}: NOT RUN: ${why}`);
        continue;
      }
      try {
        results.systems.push(await runSystem(plan, sys, prof, args.family));
      } catch (e) {
        results.notRun.push({
          system: name,
          reason: `failed: ${e instanceof Error ? e.message : String(e)}`,
        });
        process.stderr.write(`\n[bench] ${name}: FAILED: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    results.ecmp = await ecmpDelay(plan, prof, peakWhy === null && args.systems.includes('peak-xdp'));
  } finally {
    await down(plan);
  }
  results.durationS = (Date.now() - t0) / 1000;
  writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 2));
  await renderReport(results, outDir);
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
