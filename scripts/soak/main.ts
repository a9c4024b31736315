// `npm run soak`: a seeded chaos soak on the namespace testbed. Traffic for the whole run (keep-alive and new
// connections, IPv4 and IPv6) while scheduled faults hit backends, daemons, configs, the router and LB nodes;
// every failure is classified against the event log; daemon RSS/fds and BGP states are sampled. Verdict table,
// results.json and report.md; exit 1 on an unacceptable failure, a failed event check or resource growth.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { packageRoot } from '../../src/paths';
import { defaultConfigPath, loadTestbedConfig } from '../testbed/config';
import { buildPlan, Host, Plan } from '../testbed/plan';
import { down, up } from '../testbed/topology';
import { sleep } from '../testbed/sh';
import { attachDecap, daemonLog, peakUnavailable, startDaemon } from '../testbed/peak';
import { getSystem } from '../bench/lib/systems';
import { loadIn } from '../bench/lib/measure';
import type { FailureRecord, LoadResult, Progress } from '../bench/lib/loadgen';
import { BackendChange, backendChangesFromLog, classify, PlacedFailure } from './classify';
import { soakDaemonConfig, soakVips } from './config';
import { converge, EventRecord, runEvent, SoakContext } from './events';
import { counterDeltas, flowKey, Observer, readConntrack, readCounters } from './observe';
import { parseSoakArgs, SoakArgs, USAGE } from './profile';
import {
  analyseResources,
  computeVerdict,
  formatVerdict,
  GROWTH_BOUNDS,
  renderReport,
  SoakResults,
  TrafficSummary,
} from './report';
import { buildSchedule, EVENT_KINDS, formatSchedule, PlannedEvent } from './schedule';

/** An event counts as the cause of a failure up to this long after it (ms). */
const CAUSE_WINDOW_MS = 10_000;
/** How often failed flows are looked up in the LB nodes' connection tables (ms). */
const RESOLVE_EVERY_MS = 5000;
const STATUS_EVERY_MS = 10_000;

type Log = (msg: string) => void;

interface Load {
  name: string;
  mode: 'open' | 'persistent';
  family: 4 | 6;
  vip: { name: string; address: string; port: number };
  progress: Progress | null;
  broken: number;
  result: LoadResult | null;
}

/** Failures waiting for a connection-table lookup, and those done. */
class FailureBook {
  readonly pending: PlacedFailure[] = [];
  readonly done: PlacedFailure[] = [];
  private resolving: Promise<void> | null = null;
  constructor(
    private readonly plan: Plan,
    private readonly backendName: (address: string) => string,
    private readonly errors: string[],
  ) {}

  add(f: PlacedFailure): void {
    this.pending.push(f);
  }

  /** Looks every pending failure up in every LB node's connection table (one read per LB node). */
  resolve(): Promise<void> {
    if (this.resolving) return this.resolving;
    if (this.pending.length === 0) return Promise.resolve();
    const batch = this.pending.splice(0);
    this.resolving = readConntrack(this.plan)
      .then(({ places, errors }) => {
        for (const e of errors)
          if (!this.errors.includes(`conntrack read: ${e}`)) this.errors.push(`conntrack read: ${e}`);
        const client = this.plan.clients[0]!.link!;
        for (const f of batch) {
          const src = f.target.includes(':') ? client.hostV6.address : client.hostV4.address;
          const at = f.localPort === null ? [] : (places.get(flowKey(src, f.localPort, f.target)) ?? []);
          f.places = at.map((x) => ({
            lb: x.lb,
            backend: x.backend === null ? null : this.backendName(x.backend),
          }));
          const named = new Set(f.places.map((x) => x.backend).filter((b): b is string => b !== null));
          if (!f.backendName && named.size === 1) {
            f.backendName = [...named][0]!;
            f.backendFrom = 'conntrack';
          }
          this.done.push(f);
        }
      })
      .finally(() => (this.resolving = null));
    return this.resolving;
  }
}

function copyLogs(p: Plan, outDir: string): void {
  const dir = join(outDir, 'logs');
  mkdirSync(dir, { recursive: true });
  const files: [string, string][] = [
    [join(p.stateDir, 'bird.log'), 'bird.log'],
    ...p.lbs.map((lb): [string, string] => [
      join(p.stateDir, lb.name, 'daemon.log'),
      `${lb.name}-daemon.log`,
    ]),
    ...p.backends.map((be): [string, string] => [
      join(p.stateDir, be.name, 'nginx-error.log'),
      `${be.name}-nginx-error.log`,
    ]),
  ];
  for (const [from, to] of files) if (existsSync(from)) copyFileSync(from, join(dir, to));
}

function summarize(l: Load): TrafficSummary {
  const r = l.result;
  const failed = r ? Object.values(r.errors).reduce((a, b) => a + b, 0) : 0;
  return {
    name: l.name, mode: l.mode, family: l.family, sent: r?.sent ?? 0, ok: r?.ok ?? 0, failed, errors: r?.errors ?? {},
    opened: r?.connectionsOpened ?? 0, broken: r?.brokenConnections ?? 0,
    p50ms: (r?.latencyUs.p50 ?? NaN) / 1000, p99ms: (r?.latencyUs.p99 ?? NaN) / 1000, maxMs: (r?.latencyUs.max ?? NaN) / 1000,
  }; // prettier-ignore
}

/** Runs one soak; resolves with the results (also written to outDir). Cleans the testbed up unless keep. */
export async function runSoak(args: SoakArgs, log: Log): Promise<{ results: SoakResults; outDir: string }> {
  const prof = args.profile;
  const why = peakUnavailable();
  if (why) throw new Error(`cannot run peak-xdp: ${why}`);
  const prefix = args.prefix ?? `sk${randomBytes(3).toString('hex')}`;
  const plan = buildPlan(
    loadTestbedConfig({
      path: defaultConfigPath(packageRoot),
      overrides: { prefix, lbs: prof.lbs, backends: prof.backends, clients: 1, routerDaemon: 'bird' },
    }),
  );
  const schedule = buildSchedule({
    seed: args.seed,
    profile: prof,
    lbNames: plan.lbs.map((l) => l.name),
    backendNames: plan.backends.map((b) => b.name),
  });
  const startedAt = new Date().toISOString();
  const outDir = args.out ?? join(packageRoot, 'soak-results', startedAt.replace(/[:.]/g, '-'));
  mkdirSync(outDir, { recursive: true });
  log(
    `seed ${args.seed}, profile ${prof.name}, ${prof.durationS} s of traffic, testbed ${prefix}, output ${outDir}`,
  );
  log(`schedule:\n${formatSchedule(schedule)}`);
  if (schedule.missingKinds.length)
    log(`warning: ${prof.durationS} s leaves no room for: ${schedule.missingKinds.join(', ')}`);

  const byAddress = new Map<string, string>();
  for (const b of plan.backends) {
    byAddress.set(b.link!.hostV4.address, b.name);
    byAddress.set(b.link!.hostV6.address, b.name);
  }
  const backendName = (a: string): string => byAddress.get(a) ?? a;
  const harnessErrors: string[] = [];
  const book = new FailureBook(plan, backendName, harnessErrors);
  const { web } = soakVips(plan);
  const vipOf = (name: string) => plan.vips.find((v) => v.name === name)!;
  const observer = new Observer({
    plan,
    vips: plan.vips.map((v) => ({ name: v.name, address: v.address })),
    resourceMs: prof.resourceSampleMs,
    stateMs: prof.stateSampleMs,
    routerMs: prof.routerSampleMs,
    fibMs: prof.fibSampleMs,
  });
  const ctx: SoakContext = { plan, profile: prof, model: schedule.initial, observer, log };
  const records: EventRecord[] = [];
  const loads: Load[] = [];
  let daemonLogs: { lb: string; text: string }[] = [];
  let counters0: Record<string, Record<string, number>> = {};
  let countersRun: Record<string, Record<string, number>> = {};
  let t0 = Date.now();
  let timers: NodeJS.Timeout[] = [];
  let tornDown = false;
  let aborted = false;
  const teardown = async (): Promise<void> => {
    if (tornDown) return;
    tornDown = true;
    for (const t of timers) clearInterval(t);
    await observer.stop();
    copyLogs(plan, outDir);
    if (args.keep) {
      log(
        `--keep: testbed ${prefix} left up; remove it with: node ${join(packageRoot, 'dist', 'scripts', 'testbed', 'cli.js')} --prefix ${prefix} down`,
      );
      return;
    }
    const d = { plan, lbs: plan.lbs, backends: plan.backends, family: 4 as const };
    await getSystem('peak-xdp')
      .teardown(d)
      .catch(() => undefined);
    const r = await down(plan);
    if (r.leftovers.length) harnessErrors.push(`testbed left behind: ${r.leftovers.join(', ')}`);
  };
  const onSignal = (sig: string): void => {
    aborted = true;
    log(`${sig}: cleaning up testbed ${prefix}`);
    void teardown().finally(() => process.exit(130));
  };
  const sigint = (): void => onSignal('SIGINT');
  const sigterm = (): void => onSignal('SIGTERM');
  process.once('SIGINT', sigint);
  process.once('SIGTERM', sigterm);

  try {
    log(
      `testbed: ${plan.lbs.length} LB nodes, ${plan.backends.length} backends, router BIRD (graceful restart on)`,
    );
    up(plan, () => undefined, { routerGracefulRestart: true });
    for (const be of plan.backends) attachDecap(plan, be);
    const hosts = (m: typeof schedule.initial): Host[] =>
      m.backends.map((b) => plan.backends.find((x) => x.name === b.name)!);
    for (const lb of plan.lbs)
      startDaemon(plan, lb, { backends: hosts(ctx.model), config: soakDaemonConfig(plan, lb, ctx.model) });
    const t = Date.now();
    const first = await converge(ctx, prof.settleTimeoutS);
    if (first.at === null)
      throw new Error(`the testbed did not converge before traffic: ${first.why.join('; ')}`);
    log(
      `daemons up, BGP established, ECMP over ${plan.lbs.map((l) => l.name).join(', ')} (${first.at - t} ms)`,
    );

    // Traffic: keep-alive and new connections, each family through its web VIP.
    const half = (n: number): number => Math.max(1, Math.round(n / 2));
    for (const f of [4, 6] as const) {
      const v = vipOf(web[f === 4 ? 0 : 1]!);
      const vip = { name: v.name, address: v.address, port: v.port };
      loads.push({
        name: `keep-alive IPv${f}`,
        mode: 'persistent',
        family: f,
        vip,
        progress: null,
        broken: 0,
        result: null,
      });
      loads.push({
        name: `new conns IPv${f}`,
        mode: 'open',
        family: f,
        vip,
        progress: null,
        broken: 0,
        result: null,
      });
    }
    observer.start();
    counters0 = await readCounters(plan);
    t0 = Date.now();
    const durationMs = prof.durationS * 1000;
    const running = loads.map((l) =>
      loadIn(
        plan.clients[0]!.netns,
        {
          targets: [{ host: l.vip.address, port: l.vip.port }],
          mode: l.mode,
          ...(l.mode === 'persistent'
            ? { connections: half(prof.persistentConnections), thinkMs: prof.thinkMs }
            : { rate: half(prof.newConnRate) }),
          durationMs,
          maxRequests: Math.ceil((prof.durationS + 10) * (l.mode === 'persistent' ? (half(prof.persistentConnections) * 1000) / prof.thinkMs : half(prof.newConnRate))) + 1000,
          timeoutMs: prof.requestTimeoutMs,
          bucketMs: 1000,
          progressMs: 2000,
        },
        (p) => (l.progress = p),
        (f: FailureRecord) => {
          if (f.broken) l.broken++;
          book.add({ ...f, vip: l.vip.name, places: null, backendName: f.backend, backendFrom: f.backend ? 'response' : null });
        },
      ).then(
        (r) => void (l.result = r),
        (e: Error) => void harnessErrors.push(`${l.name}: ${e.message}`),
      ),
    ); // prettier-ignore
    timers = [
      setInterval(
        () => void book.resolve().catch((e: Error) => harnessErrors.push(`conntrack lookup: ${e.message}`)),
        RESOLVE_EVERY_MS,
      ),
      setInterval(
        () => log(statusLine(ctx, loads, records.length, schedule.events.length, t0)),
        STATUS_EVERY_MS,
      ),
    ];

    for (const e of schedule.events) {
      if (aborted) break;
      const plannedAt = t0 + e.atS * 1000;
      const lastStart = t0 + (prof.durationS - prof.tailS / 2) * 1000 - (e.holdS ?? 0) * 1000;
      if (Math.max(Date.now(), plannedAt) > lastStart) {
        log(
          `#${e.index} ${e.kind}: skipped, the run is ${((Date.now() - plannedAt) / 1000).toFixed(1)} s behind and traffic ends soon`,
        );
        continue;
      }
      await sleep(plannedAt - Date.now());
      if (aborted) break;
      log(`${rel(Date.now(), t0)} #${e.index}/${schedule.events.length} ${describe(e)}`);
      const r = await runEvent(ctx, e, plannedAt);
      records.push(r);
      const bad = r.checks.filter((c) => !c.ok);
      log(
        `${rel(Date.now(), t0)} #${e.index} ${e.kind} ${r.ok ? 'ok' : 'FAILED'}: ` +
          [
            ...(bad.length ? bad : r.checks.filter((c) => c.name === 'converged')).map(
              (c) => `${c.name}: ${c.detail}`,
            ),
            ...r.notes,
          ].join('; '),
      );
    }
    log(`${rel(Date.now(), t0)} events done; traffic runs until +${prof.durationS}s`);
    await Promise.all(running);
    countersRun = counterDeltas(counters0, await readCounters(plan));
    // Twice: failures that arrive while the first lookup runs wait for the second.
    for (let i = 0; i < 2; i++)
      await book.resolve().catch((e: Error) => harnessErrors.push(`conntrack lookup: ${e.message}`));
  } catch (e) {
    harnessErrors.push((e as Error).message);
    log(`error: ${(e as Error).message}`);
  } finally {
    daemonLogs = plan.lbs.map((lb) => ({ lb: lb.name, text: daemonLog(plan, lb) }));
    await teardown();
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
  }

  const backendChanges: BackendChange[] = [
    ...daemonLogs.flatMap((l) => backendChangesFromLog(l.lb, l.text, backendName)),
    ...records
      .filter((r) => /^reload-(add|remove)-backend|^reload-reweight/.test(r.kind) && r.injectedAt !== null)
      .map((r) => ({ t: r.injectedAt!, lb: null, what: `#${r.index} ${r.kind} ${r.target}` })),
  ].sort((a, b) => a.t - b.t);
  const failures = classify({
    failures: [...book.done, ...book.pending].sort((a, b) => a.at - b.at),
    events: records,
    fibChanges: observer.fibChanges,
    backendChanges,
    t0,
    windowMs: CAUSE_WINDOW_MS,
  });
  const eventsByKind: SoakResults['eventsByKind'] = {};
  for (const k of EVENT_KINDS)
    eventsByKind[k] = {
      planned: schedule.events.filter((e) => e.kind === k).length,
      done: records.filter((r) => r.kind === k).length,
      ok: records.filter((r) => r.kind === k && r.ok).length,
    };
  const partial: Omit<SoakResults, 'verdict'> = {
    seed: args.seed,
    profile: prof,
    prefix,
    startedAt,
    finishedAt: new Date().toISOString(),
    t0,
    trafficS: prof.durationS,
    machine: { cpus: cpus().length, kernel: release(), node: process.version },
    settings: {
      lbs: plan.lbs.map((l) => l.name),
      backends: plan.backends.map((b) => b.name),
      persistentConnections: prof.persistentConnections,
      thinkMs: prof.thinkMs,
      newConnRate: prof.newConnRate,
      requestTimeoutMs: prof.requestTimeoutMs,
      causeWindowMs: CAUSE_WINDOW_MS,
      growthBounds: GROWTH_BOUNDS,
    },
    schedule,
    events: records,
    eventsByKind,
    traffic: loads.map(summarize),
    failures,
    resources: {
      samples: observer.resources,
      series: analyseResources(observer.resources, {
        warmupS: prof.resourceWarmupS,
        minSpanS: prof.resourceMinSpanS,
      }),
    },
    bgpChanges: observer.sessionChanges,
    fibChanges: observer.fibChanges,
    backendChanges,
    datapathCounters: countersRun,
    harnessErrors,
  };
  const results: SoakResults = { ...partial, verdict: computeVerdict(partial, { strict: args.strict }) };
  writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 2));
  writeFileSync(join(outDir, 'report.md'), renderReport(results));
  return { results, outDir };
}

const rel = (t: number, t0: number): string =>
  `${t < t0 ? '-' : '+'}${(Math.abs(t - t0) / 1000).toFixed(1)}s`;

function describe(e: PlannedEvent): string {
  return `${e.kind}${e.target ? ` ${e.target}` : ''}${e.variant ? ` (${e.variant})` : ''}${e.weight !== undefined ? ` weight ${e.weight}` : ''}${e.holdS !== null ? `, hold ${e.holdS} s` : ''}`;
}

function statusLine(ctx: SoakContext, loads: Load[], done: number, total: number, t0: number): string {
  const part = (mode: 'open' | 'persistent'): string => {
    const ls = loads.filter((l) => l.mode === mode);
    const ok = ls.reduce((a, l) => a + (l.progress?.ok ?? 0), 0);
    const err = ls.reduce((a, l) => a + (l.progress?.err ?? 0), 0);
    const broken = ls.reduce((a, l) => a + l.broken, 0);
    return `ok ${ok} failed ${err}${mode === 'persistent' ? ` broken ${broken}` : ''}`;
  };
  const lbs = ctx.plan.lbs.map((lb) => {
    const s = ctx.observer.resources.filter((r) => r.lb === lb.name).at(-1);
    const st = ctx.observer.states.get(lb.name);
    const bgp =
      st?.bgp?.peers.map((p) => (p.state === 'Established' ? 'Est' : p.state)).join('/') ?? 'no answer';
    return `${lb.name} ${s ? `${(s.rssKiB / 1024).toFixed(0)}MiB ${s.fds}fd` : 'no daemon'} ${bgp}`;
  });
  const ecmp = soakVips(ctx.plan).web.map((v) => `${v} [${ctx.observer.fibNow(v).join(',')}]`);
  return `${rel(Date.now(), t0)} status: events ${done}/${total} | keep-alive ${part('persistent')} | new ${part('open')} | ${lbs.join(' | ')} | ${ecmp.join(' ')}`;
}

async function main(): Promise<number> {
  if (process.argv.includes('--help')) {
    console.log(USAGE);
    return 0;
  }
  let args: SoakArgs;
  try {
    args = parseSoakArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const log: Log = (m) => console.log(`[soak] ${m}`);
  const { results, outDir } = await runSoak(args, log);
  console.log(formatVerdict(results));
  console.log(`[soak] ${outDir}/report.md`);
  return results.verdict.pass ? 0 : 1;
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(`[soak] ${e instanceof Error ? e.stack : String(e)}`);
      process.exit(1);
    },
  );
