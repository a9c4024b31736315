// Result types of the end-to-end bench, the Markdown report, and the four plots (PNG via vega-lite + resvg).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Profile } from './e2e-profile';
import { barSpec, lineSpec, renderPng } from './lib/plot';
import { histogram, LatencySummary } from './lib/stats';

export interface SystemResult {
  system: string;
  throughput: {
    backends: number;
    maxRps: number;
    atConnections: number;
    steps: { connections: number; rps: number; p99us: number; errorRate: number }[];
  }[];
  lbScaling: { lbs: number; rps: number; errorRate: number }[];
  latency: {
    rate: number;
    ok: number;
    sent: number;
    errors: Record<string, number>;
    latencyUs: LatencySummary;
    cdfUs: { value: number; fraction: number }[];
    cpuUsPerReq: number;
    softirqUsPerReq: number;
    lbProcessUsPerReq: number;
  }[];
  balance: { perBackend: Record<string, number>; jain: number; maxOverMean: number } | null;
  inner: {
    from: string;
    ok: number;
    sent: number;
    errors: Record<string, number>;
    perBackend: Record<string, number>;
    p50us: number;
    p99us: number;
  } | null;
  faults: {
    scenario: string;
    sent: number;
    failed: number;
    errors: Record<string, number>;
    recoveryMs: number | null;
    faultAtMs: number;
  }[];
  timeline: {
    phases: number[];
    phaseMs: number;
    changes: { atMs: number; lbs: number }[];
    brokenConnections: number;
    connectionsOpened: number;
    errors: Record<string, number>;
    bucketMs: number;
    ok: number[];
  } | null;
}

export interface BenchResults {
  profile: Profile;
  family: 4 | 6;
  prefix: string;
  startedAt: string;
  machine: { cpus: number; cpuModel: string; kernel: string; node: string };
  systems: SystemResult[];
  notRun: { system: string; reason: string }[];
  ecmp: {
    announcer: string;
    pollIntervalMs: number;
    samples: { action: 'start' | 'stop'; lb: string; ms: number | null }[];
  } | null;
  durationS: number;
}

const ms = (us: number): string => (Number.isFinite(us) ? (us / 1000).toFixed(2) : '-');
const n0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const errs = (e: Record<string, number>): string =>
  Object.entries(e)
    .map(([k, v]) => `${k}:${v}`)
    .join(' ') || '0';

/** The Markdown report (pure: results in, text out). */
export function reportMarkdown(r: BenchResults): string {
  const L: string[] = [];
  L.push(`# PEAK-XDP end-to-end bench (${r.profile.name} profile, IPv${r.family})`, '');
  L.push(
    `Started ${r.startedAt}, ${r.durationS.toFixed(0)} s. Machine: ${r.machine.cpus} CPUs (${r.machine.cpuModel}), kernel ${r.machine.kernel}, Node ${r.machine.node}.`,
  );
  L.push(
    'Every host is a network namespace on the same machine: client, load generator, LB nodes and backends share the CPUs, so only ratios between systems mean anything.',
    '',
  );
  if (r.notRun.length) {
    L.push('## Not measured', '');
    for (const n of r.notRun) L.push(`* **${n.system}**: ${n.reason.split('\n')[0]}`);
    L.push('');
  }
  L.push('## Throughput (wrk, keep-alive; ramp until errors > 1% or p99 > SLO)', '');
  L.push('| system | backends | max req/s | at connections |', '|---|---|---|---|');
  for (const s of r.systems)
    for (const t of s.throughput) {
      const first = t.steps[0];
      const cell =
        t.maxRps > 0 || !first
          ? n0(t.maxRps)
          : `SLO missed at first step (${n0(first.rps)} req/s, p99 ${ms(first.p99us)} ms)`;
      L.push(`| ${s.system} | ${t.backends} | ${cell} | ${t.atConnections || first?.connections || '-'} |`);
    }
  L.push('', '## Throughput vs LB node count (ECMP at the router)', '');
  L.push('| system | LB nodes | req/s | error rate |', '|---|---|---|---|');
  for (const s of r.systems)
    for (const x of s.lbScaling)
      L.push(`| ${s.system} | ${x.lbs} | ${n0(x.rps)} | ${(x.errorRate * 100).toFixed(2)}% |`);
  L.push(
    '',
    '## Latency at fixed rates (open loop, one new connection per request; ms from the scheduled send time)',
    '',
  );
  L.push(
    '| system | rate | ok/sent | errors | p50 | p99 | p99.9 | machine CPU µs/req | softirq µs/req | LB processes µs/req |',
    '|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const s of r.systems)
    for (const x of s.latency)
      L.push(
        `| ${s.system} | ${x.rate} | ${x.ok}/${x.sent} | ${errs(x.errors)} | ${ms(x.latencyUs.p50)} | ${ms(x.latencyUs.p99)} | ${ms(x.latencyUs.p999)} | ${n0(x.cpuUsPerReq)} | ${n0(x.softirqUsPerReq)} | ${n0(x.lbProcessUsPerReq)} |`,
      );
  L.push('', '## Balance (requests per backend in the last fixed-rate run)', '');
  L.push("| system | per backend | max/mean | Jain's index |", '|---|---|---|---|');
  for (const s of r.systems)
    if (s.balance)
      L.push(
        `| ${s.system} | ${errs(s.balance.perBackend)} | ${s.balance.maxOverMean.toFixed(3)} | ${s.balance.jain.toFixed(4)} |`,
      );
  L.push('', '## Inner-service calls (client inside a backend namespace)', '');
  L.push(
    '| system | from | ok/sent | errors | served by | p50 ms | p99 ms |',
    '|---|---|---|---|---|---|---|',
  );
  for (const s of r.systems)
    if (s.inner)
      L.push(
        `| ${s.system} | ${s.inner.from} | ${s.inner.ok}/${s.inner.sent} | ${errs(s.inner.errors)} | ${errs(s.inner.perBackend)} | ${ms(s.inner.p50us)} | ${ms(s.inner.p99us)} |`,
      );
  L.push('', '## Fault tolerance', '');
  L.push('| system | scenario | failed/sent | errors | recovery |', '|---|---|---|---|---|');
  for (const s of r.systems)
    for (const f of s.faults)
      L.push(
        `| ${s.system} | ${f.scenario} | ${f.failed}/${f.sent} | ${errs(f.errors)} | ${f.recoveryMs === null ? 'not within the run' : `${f.recoveryMs} ms`} |`,
      );
  L.push('', '## LB nodes joining and leaving under persistent connections', '');
  L.push(
    '| system | LB count sequence | connections broken | connections opened | errors |',
    '|---|---|---|---|---|',
  );
  for (const s of r.systems)
    if (s.timeline)
      L.push(
        `| ${s.system} | ${s.timeline.phases.join(' → ')} | ${s.timeline.brokenConnections} | ${s.timeline.connectionsOpened} | ${errs(s.timeline.errors)} |`,
      );
  if (r.ecmp) {
    const v = r.ecmp.samples
      .map((x) => x.ms)
      .filter((x): x is number => x !== null)
      .sort((a, b) => a - b);
    L.push(
      '',
      `## ECMP update delay (${r.ecmp.announcer} → router FIB, polled every ${r.ecmp.pollIntervalMs} ms)`,
      '',
    );
    L.push(
      `${r.ecmp.samples.length} changes, ${r.ecmp.samples.length - v.length} timed out (15 s). ` +
        (v.length
          ? `min ${v[0]!.toFixed(0)} ms, median ${v[Math.floor(v.length / 2)]!.toFixed(0)} ms, max ${v.at(-1)!.toFixed(0)} ms.`
          : ''),
    );
    L.push('', '| action | median ms | max ms |', '|---|---|---|');
    for (const a of ['start', 'stop'] as const) {
      const w = r.ecmp.samples
        .filter((x) => x.action === a && x.ms !== null)
        .map((x) => x.ms!)
        .sort((x, y) => x - y);
      if (w.length) L.push(`| ${a} | ${w[Math.floor(w.length / 2)]!.toFixed(0)} | ${w.at(-1)!.toFixed(0)} |`);
    }
  }
  L.push(
    '',
    '## Plots',
    '',
    '![throughput vs backends](throughput-vs-backends.png)',
    '![latency CDF](latency-cdf.png)',
    '![ECMP delay](ecmp-delay.png)',
    '![throughput vs LB count over time](lb-timeline.png)',
    '',
  );
  return L.join('\n');
}

/** Writes report.md and the PNG plots into outDir. */
export async function renderReport(r: BenchResults, outDir: string): Promise<void> {
  writeFileSync(join(outDir, 'report.md'), reportMarkdown(r));
  const tp = r.systems.flatMap((s) =>
    s.throughput.map((t) => ({ system: s.system, backends: t.backends, rps: t.maxRps })),
  );
  await renderPng(
    lineSpec({
      title: 'Max throughput vs backends',
      rows: tp,
      x: 'backends',
      y: 'rps',
      color: 'system',
      xTitle: 'backends',
      yTitle: 'req/s',
    }),
    join(outDir, 'throughput-vs-backends.png'),
  );
  const cdfRows = r.systems.flatMap((s) => {
    const last = s.latency.at(-1);
    return last
      ? last.cdfUs.map((c) => ({
          system: `${s.system} @${last.rate}/s`,
          ms: c.value / 1000,
          fraction: c.fraction,
        }))
      : [];
  });
  await renderPng(
    lineSpec({
      title: 'Latency CDF (open loop)',
      rows: cdfRows,
      x: 'ms',
      y: 'fraction',
      color: 'system',
      xTitle: 'latency (ms, log)',
      yTitle: 'fraction',
      xLog: true,
    }),
    join(outDir, 'latency-cdf.png'),
  );
  const delays = (r.ecmp?.samples ?? []).map((x) => x.ms).filter((x): x is number => x !== null);
  const bins = histogram(delays, 50).map((b) => ({ bin: `${b.from}-${b.to}`, count: b.count }));
  await renderPng(
    barSpec({
      title: `ECMP update delay (${r.ecmp?.announcer ?? 'none'})`,
      rows: bins,
      x: 'bin',
      y: 'count',
      xTitle: 'ms',
      yTitle: 'changes',
    }),
    join(outDir, 'ecmp-delay.png'),
  );
  const tl = r.systems.flatMap((s) =>
    s.timeline
      ? s.timeline.ok.map((ok, i) => ({
          system: s.system,
          t: (i * s.timeline!.bucketMs) / 1000,
          rps: (ok * 1000) / s.timeline!.bucketMs,
        }))
      : [],
  );
  await renderPng(
    lineSpec({
      title: 'Throughput while LB nodes join and leave',
      rows: tl,
      x: 't',
      y: 'rps',
      color: 'system',
      xTitle: 's',
      yTitle: 'req/s',
    }),
    join(outDir, 'lb-timeline.png'),
  );
}
