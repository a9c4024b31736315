// bench:control: Maglev build time, balance, churn, health-failure flow movement, reconcile latency, RSS.
import { MemoryDatapath } from '../../src/datapath/memory';
import { MAX_PROBES } from '../../src/datapath/flowhash';
import {
  buildTable,
  changedFraction,
  MAGLEV_ALGORITHM,
  MaglevBackend,
  NO_BACKEND,
  probeBackend,
  slotCounts,
  tableNames,
} from '../../src/maglev';
import { Config, parseConfig, validateConfig } from '../../src/model';
import { desiredState, DesiredState, Reconciler, TableCache } from '../../src/reconcile';

interface Options {
  json: boolean;
  runs: number;
  probeLimit: number;
  vips: number;
  backendsPerVip: number;
  changes: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    json: false,
    runs: 15,
    probeLimit: MAX_PROBES,
    vips: 512,
    backendsPerVip: 100,
    changes: 60,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (name: keyof Options): void => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1)
        throw new Error(`${a}: ${JSON.stringify(argv[i])} is not a positive integer`);
      (o as unknown as Record<string, number>)[name] = v;
    };
    if (a === '--json') o.json = true;
    else if (a === '--runs') num('runs');
    else if (a === '--probe-limit') num('probeLimit');
    else if (a === '--vips') num('vips');
    else if (a === '--backends') num('backendsPerVip');
    else if (a === '--changes') num('changes');
    else
      throw new Error(
        `unknown argument ${JSON.stringify(a)} (--json --runs N --probe-limit N --vips N --backends N --changes N)`,
      );
  }
  return o;
}

/** Deterministic PRNG (mulberry32) so every run measures the same scenarios. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};
const now = (): number => performance.now();
const backendsN = (n: number): MaglevBackend[] =>
  Array.from({ length: n }, (_, i) => ({ name: `10.${(i >> 8) & 255}.${i & 255}.1`, weight: 1 }));

function pickDistinct(n: number, k: number, rand: () => number): Set<number> {
  const out = new Set<number>();
  while (out.size < k) out.add(Math.floor(rand() * n));
  return out;
}

function maglevBench(o: Options) {
  const M = 65537;
  const b1000 = backendsN(1000);
  for (let i = 0; i < 3; i++) buildTable({ backends: b1000 }); // warm-up (JIT)
  const times: number[] = [];
  for (let i = 0; i < o.runs; i++) {
    const t = now();
    buildTable({ backends: b1000 });
    times.push(now() - t);
  }

  const counts = slotCounts(buildTable({ backends: backendsN(100) }), 100);
  const maxOverMean = Math.max(...counts) / (M / 100);

  // 1% of 1000 leave membership: fraction of slots whose owner changes (5 random removal sets).
  const rand = prng(42);
  const before = tableNames(buildTable({ backends: b1000 }), b1000);
  const churn: number[] = [];
  for (let trial = 0; trial < 5; trial++) {
    const gone = pickDistinct(1000, 10, rand);
    const kept = b1000.filter((_, i) => !gone.has(i));
    churn.push(changedFraction(before, tableNames(buildTable({ backends: kept }), kept)));
  }

  // 1% fail health checks: the table stays, the datapath probes forward past down backends.
  const table = buildTable({ backends: b1000 });
  const moved: number[] = [];
  let unserved = 0;
  for (let trial = 0; trial < 5; trial++) {
    const down = pickDistinct(1000, 10, rand);
    let changed = 0;
    // Flows hash uniformly onto slots, so each slot stands for an equal share of flows.
    for (let s = 0; s < M; s++) {
      const after = probeBackend({ table, skipped: (i) => down.has(i), probeLimit: o.probeLimit }, s);
      if (after === NO_BACKEND) unserved++;
      if (after !== table[s]) changed++;
    }
    moved.push(changed / M);
  }
  return {
    algorithm: MAGLEV_ALGORITHM,
    buildMsMedian: quantile(times, 0.5),
    buildMsMin: Math.min(...times),
    maxOverMean,
    removeChangedFraction: churn.reduce((a, b) => a + b, 0) / churn.length,
    removeChangedFractionMax: Math.max(...churn),
    healthMovedFraction: moved.reduce((a, b) => a + b, 0) / moved.length,
    healthUnservedSlots: unserved,
  };
}

function makeRawConfig(o: Options) {
  return {
    interface: 'eth0',
    limits: { maxVips: Math.max(1024, o.vips), maxBackends: Math.max(65536, o.vips * o.backendsPerVip * 2) },
    vips: Array.from({ length: o.vips }, (_, v) => ({
      name: `vip${v}`,
      address: `10.200.${(v >> 8) & 255}.${v & 255}`,
      port: 80,
      healthCheck: { type: 'tcp' },
      backends: Array.from({ length: o.backendsPerVip }, (_, b) => ({
        address: `10.${100 + ((v >> 8) & 63)}.${v & 255}.${b + 1}`,
      })),
    })),
  };
}

async function reconcileBench(o: Options) {
  const raw = makeRawConfig(o);
  const text = JSON.stringify(raw);
  let t = now();
  const parsed = parseConfig(text, { format: 'json' });
  const parseMs = now() - t;
  if (!parsed.ok) throw new Error(parsed.errors.map((e) => `${e.path}: ${e.message}`).join('\n'));

  const dp = new MemoryDatapath({ maxVips: raw.limits.maxVips, maxBackends: raw.limits.maxBackends });
  const reconciler = new Reconciler(dp);
  const cache = new TableCache();
  t = now();
  let desired: DesiredState = desiredState({ config: parsed.config, tables: cache });
  await reconciler.reconcile(desired);
  const initialMs = now() - t;

  // Config changes: one VIP gains or loses a backend; time = validate + desired state + reconcile.
  const rand = prng(7);
  const changeMs: number[] = [];
  const ops: number[] = [];
  let config: Config = parsed.config;
  for (let i = 0; i < o.changes; i++) {
    const v = Math.floor(rand() * o.vips);
    const vip = raw.vips[v]!;
    if (i % 2 === 0)
      vip.backends.push({ address: `10.${100 + ((v >> 8) & 63)}.${v & 255}.${200 + (i % 50)}` });
    else vip.backends.pop();
    t = now();
    const r = validateConfig(raw);
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'));
    config = r.config;
    desired = desiredState({ config, ids: desired.ids, tables: cache });
    const s = await reconciler.reconcile(desired);
    changeMs.push(now() - t);
    ops.push(s.operations);
  }

  // Health flips: one backend down (or back up); time = desired state + reconcile (no validation).
  const healthMs: number[] = [];
  const health = new Map<string, 'up' | 'down'>();
  for (let i = 0; i < o.changes; i++) {
    const vip = desired.vips[Math.floor(rand() * desired.vips.length)]!;
    const b = vip.backends[Math.floor(rand() * vip.backends.length)]!;
    health.set(b.key, health.get(b.key) === 'down' ? 'up' : 'down');
    t = now();
    desired = desiredState({ config, ids: desired.ids, tables: cache, health });
    await reconciler.reconcile(desired);
    healthMs.push(now() - t);
  }
  global.gc?.();
  const mem = process.memoryUsage();
  return {
    vips: o.vips,
    backendsPerVip: o.backendsPerVip,
    parseJsonMs: parseMs,
    initialReconcileMs: initialMs,
    changeP50Ms: quantile(changeMs, 0.5),
    changeP99Ms: quantile(changeMs, 0.99),
    changeOpsMedian: quantile(ops, 0.5),
    healthFlipP50Ms: quantile(healthMs, 0.5),
    healthFlipP99Ms: quantile(healthMs, 0.99),
    rssMB: mem.rss / 2 ** 20,
    heapUsedMB: mem.heapUsed / 2 ** 20,
    tablesMB: (desired.vips.length * desired.vips[0]!.spec.tableSize * 4) / 2 ** 20,
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const started = now();
  const m = maglevBench(o);
  const r = await reconcileBench(o);
  const result = {
    maglev: m,
    reconcile: r,
    probeLimit: o.probeLimit,
    totalSeconds: (now() - started) / 1000,
  };
  if (o.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
  const rows: [string, string, string][] = [
    [`Maglev build M=65537 N=1000 (median of ${o.runs})`, `${m.buildMsMedian.toFixed(2)} ms`, '<= 20 ms'],
    ['Balance max/mean, N=100', m.maxOverMean.toFixed(4), '<= 1.01'],
    [
      'Slots changed, 1% of 1000 removed (mean of 5)',
      `${pct(m.removeChangedFraction)} (max ${pct(m.removeChangedFractionMax)})`,
      '<= 3.5%',
    ],
    [
      `Flows moved, 1% of 1000 down (probe ${o.probeLimit})`,
      `${pct(m.healthMovedFraction)} (${m.healthUnservedSlots} slots unserved)`,
      '= 1%',
    ],
    [`Config change -> maps, ${r.vips}x${r.backendsPerVip} p50`, `${r.changeP50Ms.toFixed(1)} ms`, ''],
    [
      `Config change -> maps, ${r.vips}x${r.backendsPerVip} p99`,
      `${r.changeP99Ms.toFixed(1)} ms (${r.changeOpsMedian} ops)`,
      '<= 100 ms',
    ],
    [
      'Health flip -> maps p50 / p99',
      `${r.healthFlipP50Ms.toFixed(1)} / ${r.healthFlipP99Ms.toFixed(1)} ms`,
      '',
    ],
    ['Initial reconcile (all tables built)', `${r.initialReconcileMs.toFixed(0)} ms`, ''],
    ['JSON parse + validate of the whole file', `${r.parseJsonMs.toFixed(0)} ms`, ''],
    [
      'Process RSS with that state (MemoryDatapath)',
      `${r.rssMB.toFixed(0)} MB (heap ${r.heapUsedMB.toFixed(0)} MB)`,
      '<= 150 MB',
    ],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  console.log(`bench:control (${m.algorithm}, ${result.totalSeconds.toFixed(1)} s)`);
  for (const [a, b, c] of rows) console.log(`  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
