// bench:metrics: one /metrics render at 512 x 1000 memberships (desired state, health snapshot, a datapath whose
// counters() returns an entry per backend as the kernel's does): time, size, gzip size, RSS before / peak.
import { gzipSync } from 'node:zlib';
import { MemoryDatapath } from '../../src/datapath/memory';
import type { CountersOptions, DatapathCounters, TrafficCounter } from '../../src/datapath/types';
import type { TargetSnapshot } from '../../src/health';
import { validateConfig } from '../../src/model';
import { desiredState } from '../../src/reconcile';

interface Options {
  vips: number;
  backendsPerVip: number;
  /** Per-backend series on (admin.perBackendMetrics) and/or off. */
  modes: ('off' | 'on')[];
  runs: number;
  /** The metrics module to measure (default this build's src/metrics: point it at an older build to compare). */
  module: string;
  /**
   * 'as-asked': counters() reads backends' traffic unless asked not to (`{ backends: false }`), as the datapaths
   * do; 'all': always (what a build before counters' `backends` option read on every scrape, for comparison).
   */
  backendCounters: 'all' | 'as-asked';
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { vips: 512, backendsPerVip: 1000, modes: ['off', 'on'], runs: 3, module: '../../src/metrics', backendCounters: 'as-asked', json: false }; // prettier-ignore
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (k: 'vips' | 'backendsPerVip' | 'runs'): void => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0)
        throw new Error(`${a}: ${JSON.stringify(argv[i])} is not a positive integer`);
      o[k] = v;
    };
    if (a === '--vips') num('vips');
    else if (a === '--backends') num('backendsPerVip');
    else if (a === '--runs') num('runs');
    else if (a === '--json') o.json = true;
    else if (a === '--module') o.module = argv[++i]!;
    else if (a === '--backend-counters') {
      const v = argv[++i];
      if (v !== 'all' && v !== 'as-asked') throw new Error(`--backend-counters: ${JSON.stringify(v)} is not all or as-asked`); // prettier-ignore
      o.backendCounters = v;
    }
    else if (a === '--per-backend') {
      const m = argv[++i]!.split(',');
      if (!m.every((x) => x === 'on' || x === 'off')) throw new Error(`--per-backend: ${JSON.stringify(argv[i])} is not on,off`); // prettier-ignore
      o.modes = m as Options['modes'];
    } else throw new Error(`unknown argument ${JSON.stringify(a)} (--vips N --backends N --runs N --per-backend on,off --backend-counters all|as-asked --module PATH --json)`); // prettier-ignore
  }
  return o;
}

const mb = (b: number): string => (b / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const metricsModule = require(o.module) as typeof import('../../src/metrics');
  const t0 = performance.now();
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:02',
    encapSource: ['10.0.0.1'],
    limits: { maxVips: Math.max(1024, o.vips), maxBackends: Math.max(65536, 2 * o.vips * o.backendsPerVip) },
    vips: Array.from({ length: o.vips }, (_, v) => ({
      name: `vip${v}`,
      address: `10.200.${v >> 8}.${v & 255}`,
      port: 80,
      tableSize: 10007,
      healthCheck: { type: 'tcp' },
      // Distinct addresses per membership (the worst case: nothing to aggregate).
      backends: Array.from({ length: o.backendsPerVip }, (_, b) => {
        const i = v * o.backendsPerVip + b;
        return { address: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}` };
      }),
    })),
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors.slice(0, 3)));
  const desired = desiredState({ config: r.config });
  const memberships = desired.vips.reduce((n, v) => n + v.backends.length, 0);
  const health: TargetSnapshot[] = desired.vips.flatMap(
    (v) =>
    v.backends.map((b) => ({ key: b.key, vip: v.name, address: b.address, type: 'tcp' as const, status: 'up' as const, since: null, successes: 0, failures: 0, checks: 100, failedChecks: 1, localErrors: 0, last: null })), // prettier-ignore
  );
  // A counters() that returns an entry for every backend unless asked not to, built afresh per read (as
  // KernelDatapath's does).
  const dp = new MemoryDatapath();
  const ids = desired.vips.flatMap((v) => v.backends.map((b) => b.id));
  let reads = 0;
  let backendReads = 0;
  dp.counters = async (c: CountersOptions = {}): Promise<DatapathCounters> => {
    const withBackends = o.backendCounters === 'all' || c.backends !== false;
    reads++;
    if (withBackends) backendReads++;
    const backends = new Map<number, TrafficCounter>();
    if (withBackends)
      for (const id of ids) backends.set(id, { packets: BigInt(id) * 7n, bytes: BigInt(id) * 700n });
    const vips = new Map<number, TrafficCounter>(
      desired.vips.map((v) => [v.spec.id, { packets: 1n, bytes: 2n }]),
    );
    return { global: { rx_packets: 1n }, vips, backends };
  };
  console.log(`set-up: ${o.vips} x ${o.backendsPerVip} = ${memberships} memberships in ${((performance.now() - t0) / 1000).toFixed(1)} s; module ${o.module}; backend counters read: ${o.backendCounters}`); // prettier-ignore

  const rows: { mode: string; ms: number; bytes: number; gzip: number; series: number; rssBefore: number; rssPeak: number }[] = []; // prettier-ignore
  for (const mode of o.modes) {
    const m = metricsModule.createMetrics({
      datapath: dp,
      desired: () => desired,
      health: () => health,
      attached: () => true,
      perBackend: mode === 'on',
    });
    for (let run = 0; run < o.runs; run++) {
      global.gc?.();
      const rssBefore = process.memoryUsage.rss();
      let rssPeak = rssBefore;
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 10);
      const [reads0, backendReads0] = [reads, backendReads];
      const s = performance.now();
      // What the admin API sends: the text in Buffers as it is made (renderChunks); an older build's string.
      const body = m.renderChunks === undefined ? await m.render() : await m.renderChunks();
      const ms = performance.now() - s;
      // The render measured the read it names: one counters() read, with backends' traffic only when asked for.
      const readBackends = o.backendCounters === 'all' || mode === 'on';
      if (reads - reads0 !== 1 || backendReads - backendReads0 !== (readBackends ? 1 : 0))
        throw new Error(
          `per-backend ${mode}: ${reads - reads0} counters() reads, ${backendReads - backendReads0} with backends' traffic (expected 1, ${readBackends ? 1 : 0})`,
        );
      clearInterval(sampler);
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      const text = typeof body === 'string' ? body : Buffer.concat(body).toString();
      const bytes = Buffer.byteLength(text);
      const gzip = gzipSync(text, { level: 1 }).length;
      let series = 0;
      for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) if (text[i + 1] !== '#' && text[i + 1] !== '\n' && i + 1 < text.length) series++; // prettier-ignore
      rows.push({ mode, ms, bytes, gzip, series, rssBefore, rssPeak });
      console.log(
        `per-backend ${mode} run ${run + 1} (backends' traffic ${readBackends ? 'read' : 'not read'}): render ${ms.toFixed(0)} ms, ${mb(bytes)} MB text (${mb(gzip)} MB gzip -1), ` +
          `${series} series; RSS ${mb(rssBefore)} -> peak ${mb(rssPeak)} MB (+${mb(rssPeak - rssBefore)})`,
      );
    }
    // A fresh registry per mode: the next createMetrics registers the same names anew.
    m.registry.clear();
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`\ngoal vs measured (${o.vips} x ${o.backendsPerVip}, median of ${o.runs})`);
  for (const mode of o.modes) {
    const rs = rows.filter((x) => x.mode === mode);
    const ms = median(rs.map((x) => x.ms));
    const bytes = median(rs.map((x) => x.bytes));
    const rise = Math.max(...rs.map((x) => x.rssPeak - x.rssBefore));
    const def = mode === 'off' ? ' (default)' : ' (opt-in)';
    console.log(`  per-backend ${mode}${def}: render ${ms.toFixed(0)} ms (goal <= 1000 ms by default), ${mb(bytes)} MB (goal <= 20 MB by default), RSS rise max ${mb(rise)} MB (goal <= 50 MB)`); // prettier-ignore
  }
  if (o.json) console.log(JSON.stringify(rows));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
