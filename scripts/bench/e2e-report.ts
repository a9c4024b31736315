// Result types of the end-to-end bench, the Markdown report, and the four plots (PNG via vega-lite + resvg).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Profile } from './e2e-profile';
import {
  barSpec,
  binnedBarSpec,
  ccdfSpec,
  discreteLineSpec,
  logHistogram,
  renderPng,
  timelineSpec,
} from './lib/plot';
import type { LatencySummary } from './lib/stats';

export interface SystemResult {
  system: string;
  throughput: {
    backends: number;
    /** null: not measured (the first ramp step missed the SLO; `notMeasured` says how). */
    maxRps: number | null;
    atConnections: number | null;
    notMeasured?: string | null;
    /** Each step is the median of its repeats (scripts/bench/lib/rounds.ts medianStep). */
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
    /** Machine-wide busy and softirq time per request, net of the same round's idle baseline. */
    cpuUsPerReq: number;
    softirqUsPerReq: number;
    /** user+system of every process in the LB namespaces (proxies, peak-xdp daemons), not net of idle. */
    lbProcessUsPerReq: number;
    /** peak-xdp: its daemons' CPU during the window, in % of one core (summed over LB nodes). */
    daemonCorePct?: number | null;
    /** The idle baseline of this round (system set up, no load), per second. */
    idle?: { ms: number; busyUsPerS: number; softirqUsPerS: number; lbProcessUsPerS: number };
    /** peak-xdp: run time of the LB nodes' XDP programs for VIP packets only (BPF run-time stats); null when
     * unavailable. packetsPerRequest counts VIP packets; otherPackets the runs on anything else. */
    xdp: {
      nsPerPacket: number;
      nsPerRequest: number;
      packetsPerRequest: number;
      otherPackets?: number;
    } | null;
  }[];
  balance: { perBackend: Record<string, number>; jain: number; maxOverMean: number } | null;
  inner: {
    from: string;
    /** The address(es) called. */
    to: string;
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
    keepAliveConnections: number;
    brokenConnections: number;
    /** One record per broken connection (scripts/bench/lib/broken.ts). */
    brokenDetail?: import('./lib/broken').BrokenConnection[];
    connectionsOpened: number;
    ok: number;
    errors: Record<string, number>;
    bucketMs: number;
    okPerBucket: number[];
    /** Packets per second the router sent to each LB node, sampled every bucket. */
    lbPackets: { t: number; lb: string; pps: number }[];
  } | null;
}

/** One LB start or stop and how long until the router's FIB showed it. */
export interface EcmpSample {
  action: 'start' | 'stop';
  lb: string;
  ms: number | null;
  /** peak-xdp starts: when the daemon logged started / BGP established / the announcing update (ms). */
  milestones?: { started: number | null; established: number | null; announced: number | null };
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
    samples: EcmpSample[];
  } | null;
  durationS: number;
}

const ms = (us: number): string => (Number.isFinite(us) ? (us / 1000).toFixed(2) : '-');
const n0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const errs = (e: Record<string, number>): string =>
  Object.entries(e)
    .map(([k, v]) => `${k}:${v}`)
    .join(' ') || '0';
const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

/** p50 latency added over 'direct' at the same rate (µs), when direct ran at that rate. */
export function addedP50Us(r: BenchResults, system: string, rate: number): number | null {
  const d = r.systems.find((s) => s.system === 'direct')?.latency.find((x) => x.rate === rate);
  const x = r.systems.find((s) => s.system === system)?.latency.find((y) => y.rate === rate);
  if (!d || !x || system === 'direct') return null;
  return x.latencyUs.p50 - d.latencyUs.p50;
}

/** Median of each milestone over the peak-xdp start samples (ms after the start command). */
export function milestoneMedians(samples: EcmpSample[]): {
  started: number;
  established: number;
  announced: number;
  fib: number;
  count: number;
} | null {
  const ok = samples.filter(
    (x) =>
      x.action === 'start' &&
      x.ms !== null &&
      x.milestones?.started != null &&
      x.milestones.established != null &&
      x.milestones.announced != null,
  );
  if (!ok.length) return null;
  return {
    started: median(ok.map((x) => x.milestones!.started!)),
    established: median(ok.map((x) => x.milestones!.established!)),
    announced: median(ok.map((x) => x.milestones!.announced!)),
    fib: median(ok.map((x) => x.ms!)),
    count: ok.length,
  };
}

/** The plots renderReport writes (file, caption), in report order. */
export const PLOTS: readonly { file: string; caption: string }[] = [
  { file: 'throughput-vs-backends.png', caption: 'max throughput vs backends' },
  { file: 'latency-cdf.png', caption: 'latency CCDF (fraction slower, log-log) at the highest fixed rate' },
  { file: 'cpu-per-request.png', caption: 'CPU per request at the highest fixed rate' },
  { file: 'lb-timeline.png', caption: 'requests/s while LB nodes join and leave' },
  { file: 'lb-traffic.png', caption: 'packets/s the router sends to each peak-xdp LB node' },
  { file: 'ecmp-delay.png', caption: 'ECMP update delay (1-2-5 ms bins)' },
];

/** The Markdown report (pure: results in, text out). */
export function reportMarkdown(r: BenchResults, o: { plotDir?: string } = {}): string {
  const L: string[] = [];
  L.push(`# PEAK-XDP end-to-end bench (${r.profile.name} profile, IPv${r.family})`, '');
  L.push(
    `Started ${r.startedAt}, ${r.durationS.toFixed(0)} s. Machine: ${r.machine.cpus} CPUs (${r.machine.cpuModel}), kernel ${r.machine.kernel}, Node ${r.machine.node}.`,
  );
  L.push(
    'Every host is a network namespace on the same machine: client, load generator, LB nodes and backends share the CPUs (with anything else running), so only ratios between systems within one run mean anything.',
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
        t.maxRps !== null && (t.maxRps > 0 || !first)
          ? n0(t.maxRps)
          : `not measured: ${t.notMeasured ?? `SLO missed at first step (${n0(first!.rps)} req/s, p99 ${ms(first!.p99us)} ms)`}`;
      L.push(`| ${s.system} | ${t.backends} | ${cell} | ${t.atConnections || first?.connections || '-'} |`);
    }
  L.push('', '## Throughput vs LB node count (ECMP at the router)', '');
  L.push('| system | LB nodes | req/s | error rate |', '|---|---|---|---|');
  for (const s of r.systems)
    for (const x of s.lbScaling)
      L.push(`| ${s.system} | ${x.lbs} | ${n0(x.rps)} | ${(x.errorRate * 100).toFixed(2)}% |`);
  L.push(
    '',
    '## Latency and CPU at fixed rates (open loop, a new connection per request)',
    '',
    'Latency in ms from the scheduled send time; "added" is p50 minus direct p50 at the same rate. CPU in µs per',
    "request: softirq is machine-wide (every namespace's packet processing: client, router, LB nodes, backends,",
    'XDP included) net of an idle window measured in the same round with the system set up; LB processes is the',
    'user+system time of every process in the LB namespaces (proxies; for peak-xdp its daemons, whose CPU is',
    "mostly idle work: health checks, BGP), not net of idle; XDP is the run time of the LB nodes' XDP programs",
    'for VIP packets only, from BPF run-time stats (on for every system; VIP packets per request in brackets).',
    '',
  );
  L.push(
    '| system | rate | ok/sent | errors | p50 | added p50 | p99 | p99.9 | softirq µs/req | LB processes µs/req | XDP µs/req |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const s of r.systems)
    for (const x of s.latency) {
      const added = addedP50Us(r, s.system, x.rate);
      const xdp = x.xdp
        ? `${(x.xdp.nsPerRequest / 1000).toFixed(2)} (${x.xdp.packetsPerRequest.toFixed(1)} pkt, ${n0(x.xdp.nsPerPacket)} ns/pkt)`
        : '-';
      L.push(
        `| ${s.system} | ${x.rate} | ${x.ok}/${x.sent} | ${errs(x.errors)} | ${ms(x.latencyUs.p50)} | ${added === null ? '-' : ms(added)} | ${ms(x.latencyUs.p99)} | ${ms(x.latencyUs.p999)} | ${n0(x.softirqUsPerReq)} | ${n0(x.lbProcessUsPerReq)} | ${xdp} |`,
      );
    }
  L.push('', '## Balance (requests per backend in the last fixed-rate run)', '');
  L.push("| system | per backend | max/mean | Jain's index |", '|---|---|---|---|');
  for (const s of r.systems)
    if (s.balance)
      L.push(
        `| ${s.system} | ${errs(s.balance.perBackend)} | ${s.balance.maxOverMean.toFixed(3)} | ${s.balance.jain.toFixed(4)} |`,
      );
  L.push(
    '',
    '## Inner-service calls (client inside a backend namespace, calling a service it does not serve)',
    '',
  );
  L.push(
    '| system | from | to | ok/sent | errors | served by | p50 ms | p99 ms |',
    '|---|---|---|---|---|---|---|---|',
  );
  for (const s of r.systems)
    if (s.inner)
      L.push(
        `| ${s.system} | ${s.inner.from} | ${s.inner.to} | ${s.inner.ok}/${s.inner.sent} | ${errs(s.inner.errors)} | ${errs(s.inner.perBackend)} | ${ms(s.inner.p50us)} | ${ms(s.inner.p99us)} |`,
      );
  L.push('', '## Fault tolerance (open loop, a new connection per request)', '');
  L.push('| system | scenario | failed/sent | errors | recovery |', '|---|---|---|---|---|');
  for (const s of r.systems)
    for (const f of s.faults)
      L.push(
        `| ${s.system} | ${f.scenario} | ${f.failed}/${f.sent} | ${errs(f.errors)} | ${f.recoveryMs === null ? 'not within the run' : `${f.recoveryMs} ms`} |`,
      );
  L.push(
    '',
    '## LB nodes joining and leaving under long-lived connections',
    '',
    'Keep-alive connections, each sending a request every 100 ms; an LB node leaves the way the system would',
    '(peak-xdp: daemon SIGTERM, BGP withdraw; others: the static ECMP route drops it). A broken connection is one',
    'that failed or closed after it had carried a request.',
    '',
  );
  L.push(
    '| system | LB count sequence | keep-alive connections | broken | reconnects | ok requests | errors |',
    '|---|---|---|---|---|---|---|',
  );
  for (const s of r.systems)
    if (s.timeline)
      L.push(
        `| ${s.system} | ${s.timeline.phases.join(' → ')} | ${s.timeline.keepAliveConnections} | ${s.timeline.brokenConnections} | ${s.timeline.connectionsOpened - s.timeline.keepAliveConnections} | ${s.timeline.ok} | ${errs(s.timeline.errors)} |`,
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
      `${r.ecmp.samples.length} random start/stop changes, ${r.ecmp.samples.length - v.length} timed out (15 s). ` +
        (v.length
          ? `min ${v[0]!.toFixed(0)} ms, median ${median(v).toFixed(0)} ms, max ${v.at(-1)!.toFixed(0)} ms.`
          : ''),
    );
    L.push('', '| action | changes | min ms | median ms | max ms |', '|---|---|---|---|---|');
    for (const a of ['start', 'stop'] as const) {
      const w = r.ecmp.samples
        .filter((x) => x.action === a && x.ms !== null)
        .map((x) => x.ms!)
        .sort((x, y) => x - y);
      if (w.length)
        L.push(
          `| ${a} | ${w.length} | ${w[0]!.toFixed(0)} | ${median(w).toFixed(0)} | ${w.at(-1)!.toFixed(0)} |`,
        );
    }
    const m = milestoneMedians(r.ecmp.samples);
    if (m)
      L.push(
        '',
        `Start, median of ${m.count} (ms after the start command): daemon started ${n0(m.started)}, BGP established ${n0(m.established)}, ` +
          `announcing update sent ${n0(m.announced)} (after the backends' health checks rise), in the router's FIB ${n0(m.fib)}. ` +
          'Stop is SIGTERM: the daemon withdraws, then exits.',
      );
  }
  L.push('', '## Plots', '');
  const dir = o.plotDir ? `${o.plotDir.replace(/\/$/, '')}/` : '';
  for (const pl of PLOTS) L.push(`![${pl.caption}](${dir}${pl.file})`);
  L.push('');
  return L.join('\n');
}

/** Writes report.md and the PNG plots into outDir. */
export async function renderReport(r: BenchResults, outDir: string): Promise<void> {
  writeFileSync(join(outDir, 'report.md'), reportMarkdown(r));
  const tp = r.systems.flatMap((s) =>
    s.throughput.flatMap((t) =>
      t.maxRps === null ? [] : [{ system: s.system, backends: t.backends, rps: t.maxRps }],
    ),
  );
  // One run per point: no min–max band (discreteLineSpec draws one from rows with lo/hi when a bench repeats).
  await renderPng(
    discreteLineSpec({ title: 'Max throughput vs backends (wrk)', rows: tp, x: 'backends', y: 'rps', color: 'system', xTitle: 'backends', yTitle: 'req/s' }),
    join(outDir, 'throughput-vs-backends.png'),
  ); // prettier-ignore
  const cdfRows = r.systems.flatMap((s) => {
    const last = s.latency.at(-1);
    return last
      ? last.cdfUs.map((c) => ({ series: `${s.system} @${last.rate}/s`, ms: c.value / 1000, fraction: c.fraction }))
      : [];
  }); // prettier-ignore
  await renderPng(
    ccdfSpec({ title: 'Latency CCDF (open loop, new connection per request; rules at p50, p99, p99.9)', rows: cdfRows }),
    join(outDir, 'latency-cdf.png'),
  ); // prettier-ignore
  const cpu = r.systems.flatMap((s) => {
    const last = s.latency.at(-1);
    if (!last) return [];
    const rows = [
      { system: s.system, metric: 'softirq (machine)', us: last.softirqUsPerReq },
      { system: s.system, metric: 'LB processes', us: last.lbProcessUsPerReq },
    ];
    if (last.xdp) rows.push({ system: s.system, metric: 'XDP programs', us: last.xdp.nsPerRequest / 1000 });
    return rows;
  });
  await renderPng(
    barSpec({ title: 'CPU per request at the highest fixed rate', rows: cpu, x: 'system', y: 'us', xTitle: 'system', yTitle: 'µs per request', color: 'metric' }),
    join(outDir, 'cpu-per-request.png'),
  ); // prettier-ignore
  const tl = r.systems.flatMap((s) =>
    s.timeline
      ? s.timeline.okPerBucket.map((ok, i) => ({ system: s.system, t: (i * s.timeline!.bucketMs) / 1000, rps: (ok * 1000) / s.timeline!.bucketMs }))
      : [],
  ); // prettier-ignore
  // LB membership changes, marked on both timelines (the same schedule for every system).
  const events = (r.systems.find((s) => s.timeline)?.timeline?.changes ?? []).map((c) => ({ t: c.atMs / 1000, label: `LB nodes: ${c.lbs}` })); // prettier-ignore
  await renderPng(
    timelineSpec({ title: 'Requests/s while LB nodes join and leave (keep-alive, 100 ms think time)', rows: tl, x: 't', y: 'rps', color: 'system', xTitle: 's', yTitle: 'req/s', events }),
    join(outDir, 'lb-timeline.png'),
  ); // prettier-ignore
  const peak =
    r.systems.find((s) => s.system === 'peak-xdp')?.timeline ?? r.systems.find((s) => s.timeline)?.timeline;
  const who = r.systems.find((s) => s.timeline === peak)?.system ?? 'none';
  const peakEvents = (peak?.changes ?? []).map((c) => ({ t: c.atMs / 1000, label: `LB nodes: ${c.lbs}` }));
  await renderPng(
    timelineSpec({ title: `Packets/s to each LB node (${who}; LB count ${peak?.phases.join('→') ?? '-'})`, rows: peak?.lbPackets ?? [], x: 't', y: 'pps', color: 'lb', xTitle: 's', yTitle: 'packets/s from the router', events: peakEvents }),
    join(outDir, 'lb-traffic.png'),
  ); // prettier-ignore
  const bins = (['start', 'stop'] as const).flatMap((a) =>
    logHistogram(
      (r.ecmp?.samples ?? []).filter((x) => x.action === a && x.ms !== null).map((x) => x.ms!),
    ).map((b) => ({ ...b, series: a })),
  );
  await renderPng(
    binnedBarSpec({ title: `ECMP update delay (${r.ecmp?.announcer ?? 'none'} → FIB)`, rows: bins, xTitle: 'ms (1-2-5 bins: fine near the median, coarse in the tail)', yTitle: 'changes' }),
    join(outDir, 'ecmp-delay.png'),
  ); // prettier-ignore
}
