// bench:k8s: the daemon with --kubernetes against the fake API server at cluster scale, on the real kernel
// datapath in a namespace of our own: start -> ready, then bursts of EndpointSlice updates (one per slice)
// -> the pinned maps, /healthz latency during each burst, RSS.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackendSpec } from '../../src/datapath/types';
import { WORKERS_ENDED_MSG } from '../../src/daemon/programmer';
import { FakeApiServer, Obj, Resource } from '../../test/helpers/fake-apiserver';
import { EndpointSpec, service, slice } from '../../test/helpers/k8s-objects';
import { cliNodeFlags, procCpuMs, procStatusMB, run, threadCount } from './lib/proc';

interface Options {
  services: number;
  endpoints: number;
  /** A phase that has not converged after this long is reported as "not converged". */
  phaseTimeoutS: number;
  /** Bound on start -> ready. */
  startTimeoutS: number;
  /** peak-xdp annotation table size per Service; null: the default. */
  tableSize: number | null;
  /** Package root whose dist/ runs the daemon (to measure an older build); default this one. */
  root: string;
  json: boolean;
  /** Write the daemon's log (stderr, debug level) here. */
  logFile: string | null;
}

const GOALS = { startMs: 5000, burstMs: 2000, healthzMs: 100, rssMB: 150 };

function parseArgs(argv: string[]): Options {
  const o: Options = {
    services: 1000,
    endpoints: 20,
    phaseTimeoutS: 120,
    startTimeoutS: 300,
    tableSize: null,
    root: resolve(__dirname, '../../..'),
    json: false,
    logFile: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1)
        throw new Error(`${a}: ${JSON.stringify(argv[i])} is not a positive integer`);
      return v;
    };
    if (a === '--services') o.services = num();
    else if (a === '--endpoints') o.endpoints = num();
    else if (a === '--phase-timeout') o.phaseTimeoutS = num();
    else if (a === '--start-timeout') o.startTimeoutS = num();
    else if (a === '--table-size') o.tableSize = num();
    else if (a === '--root') o.root = resolve(argv[++i] ?? '');
    else if (a === '--json') o.json = true;
    else if (a === '--log') o.logFile = resolve(argv[++i] ?? '');
    else
      throw new Error(
        `unknown argument ${JSON.stringify(a)} (--services N --endpoints N --phase-timeout S --start-timeout S --table-size P --root DIR --json --log FILE)`,
      );
  }
  if (o.services > 32768) throw new Error(`--services: ${o.services} is above 32768 (address scheme)`);
  if (o.endpoints > 90) throw new Error(`--endpoints: ${o.endpoints} is above 90 (address scheme)`);
  return o;
}

// ---- addresses: Service i has VIP 10.100.(i>>8).(i&255); its endpoint j is 10.(128+(i>>8)).(i&255).(j+1) ----

const vipOf = (i: number): string => `10.100.${i >> 8}.${i & 255}`;
const epOf = (i: number, j: number): string => `10.${128 + (i >> 8)}.${i & 255}.${j + 1}`;
const svcName = (i: number): string => `svc-${i}`;

/** Endpoint j of a replaced address (the rolling update gives endpoint 1 a new Pod address). */
const REPLACED = 100;
/** Milliseconds between polls of a burst's result (see burst()). */
const POLL_MS = 20;
/** A backend-map read (~10 ms at 1,000 x 20) waits this many times its own cost before the next one... */
const LIST_EVERY = 8;
/** ...and this many once every table was replaced (see burst()). */
const LIST_DONE_EVERY = 2;
/** ...and before every table was replaced, at most every this many ms (see burst()). */
const LIST_IDLE_MS = 500;
/** Tables not swapped yet up to which each poll reads them back, to find those patched in place. */
const PATCHED_READ_MAX = 64;

interface SliceState {
  drained: boolean;
  added: boolean;
  replaced: boolean;
}

function sliceObj(i: number, n: number, s: SliceState): Obj {
  const eps: EndpointSpec[] = [];
  for (let j = 0; j < n; j++) {
    const ip = j === 1 && s.replaced ? epOf(i, REPLACED + 1) : epOf(i, j);
    if (j === 0 && s.drained) eps.push({ ip, ready: false, serving: true, terminating: true });
    else eps.push({ ip });
  }
  if (s.added) eps.push({ ip: epOf(i, n) });
  return slice({ name: `${svcName(i)}-abc`, service: svcName(i), endpoints: eps });
}

function serviceObj(i: number, tableSize: number | null): Obj {
  return service({
    name: svcName(i),
    vip: vipOf(i),
    ...(tableSize !== null ? { annotations: { 'peak-xdp.io/table-size': String(tableSize) } } : {}),
  });
}

// ---- the fake API server in a child process in the namespace (its work must not skew our timing) ----

interface ApiCommand {
  id: number;
  op: 'upsertMany' | 'stop';
  resource?: Resource;
  objs?: Obj[];
}

async function serveApi(): Promise<void> {
  const api = new FakeApiServer();
  await api.start();
  const out = (o: object): boolean => process.stdout.write(`${JSON.stringify(o)}\n`);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const c = JSON.parse(line) as ApiCommand;
    if (c.op === 'stop') void api.stop().then(() => process.exit(0));
    else if (c.op === 'upsertMany') {
      // One after the other in one turn: the watch streams get a burst of events.
      const firstMs = Date.now();
      for (const o of c.objs ?? []) api.upsert(c.resource!, o);
      out({ id: c.id, result: { firstMs, lastMs: Date.now() } });
    } else out({ id: c.id, error: `unknown op ${JSON.stringify(c.op)}` });
  });
  out({ ev: 'listening', port: api.port });
}

/** When the fake API server committed a batch (epoch ms): its watch events went out in between. */
interface Written {
  firstMs: number;
  lastMs: number;
}

class ApiChild {
  port = 0;
  private next = 1;
  private readonly pending = new Map<number, (r: Written) => void>();
  constructor(private readonly child: ChildProcess) {}

  static async start(ns: string): Promise<ApiChild> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, __filename, '--serve-api'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const a = new ApiChild(child);
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error('fake API server did not start in 15 s')), 15_000);
      child.once('exit', (c) => rej(new Error(`fake API server exited ${c}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as {
          ev?: string;
          port?: number;
          id?: number;
          error?: string;
          result?: Written;
        };
        if (m.ev === 'listening') {
          a.port = m.port!;
          clearTimeout(t);
          res();
        } else if (m.id !== undefined) {
          if (m.error) console.error(`fake API server: ${m.error}`);
          a.pending.get(m.id)?.(m.result ?? { firstMs: NaN, lastMs: NaN });
          a.pending.delete(m.id);
        }
      });
    });
    return a;
  }

  /** Resolves once the server committed them all (every watch event written), with when that happened. */
  upsertMany(resource: Resource, objs: Obj[]): Promise<Written> {
    const id = this.next++;
    return new Promise((r) => {
      this.pending.set(id, r);
      this.child.stdin!.write(`${JSON.stringify({ id, op: 'upsertMany', resource, objs })}\n`);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.write(`${JSON.stringify({ id: 0, op: 'stop' })}\n`);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

// ---- /healthz poller on a worker thread: our own map reads must not delay its requests ----

interface PollerMsg {
  cmd: 'start' | 'stop';
}
interface PollerResult {
  requests: number;
  maxMs: number;
  p99Ms: number;
  failures: number;
}

function pollerMain(): void {
  const { url } = workerData as { url: string };
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let lat: number[] = [];
  let failures = 0;
  let inFlightSince: number | null = null;
  const once = (): Promise<void> =>
    new Promise((res) => {
      const t0 = performance.now();
      inFlightSince = t0;
      const req = request(url, { agent, timeout: 300_000 }, (r) => {
        r.resume();
        r.on('end', () => {
          lat.push(performance.now() - t0);
          if (r.statusCode !== 200) failures++;
          inFlightSince = null;
          res();
        });
      });
      req.on('error', () => {
        failures++;
        lat.push(performance.now() - t0);
        inFlightSince = null;
        res();
      });
      req.end();
    });
  void (async () => {
    // Runs until the worker is terminated.
    for (;;) {
      await once();
      await sleep(20);
    }
  })();
  parentPort!.on('message', (m: PollerMsg) => {
    if (m.cmd === 'start') {
      lat = [];
      failures = 0;
    } else {
      // A request still unanswered counts with its age so far.
      const all = inFlightSince === null ? lat : [...lat, performance.now() - inFlightSince];
      const sorted = [...all].sort((a, b) => a - b);
      const res: PollerResult = {
        requests: lat.length,
        maxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
        p99Ms: sorted.length
          ? sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!
          : NaN,
        failures,
      };
      parentPort!.postMessage(res);
    }
  });
}

class Poller {
  private readonly w: Worker;
  constructor(url: string) {
    this.w = new Worker(__filename, { workerData: { url } });
  }
  start(): void {
    this.w.postMessage({ cmd: 'start' });
  }
  stop(): Promise<PollerResult> {
    return new Promise((r) => {
      this.w.once('message', r);
      this.w.postMessage({ cmd: 'stop' });
    });
  }
  async terminate(): Promise<void> {
    await this.w.terminate();
  }
}

// ---- where the time goes: the daemon's debug log (Kubernetes source and reconcile lines) ----

/** A pino line of the daemon (time: epoch ms when it was logged, at the end of what it reports). */
interface LogRec {
  time: number;
  msg: string;
  [k: string]: unknown;
}

/** How long after the table builder went idle (its workers ended) the settled RSS is read (V8's memory reducer runs within it). */
const SETTLE_MS = 20_000;

const KEPT_MSGS = new Set([
  'kubernetes: client ready',
  'kubernetes: listed',
  'kubernetes: published',
  'kubernetes: translated, nothing to publish',
  'reconciled',
  WORKERS_ENDED_MSG,
]);

/** Publish lines: when the publish began and how its time split (see KubernetesSource.publishOnce). */
interface Publish {
  startMs: number;
  endMs: number;
  waitedMs: number | null;
  translateMs: number;
  translateBusyMs: number;
  onChangeMs: number | null;
  translated: number;
  changes: number;
}

function publishes(recs: readonly LogRec[], fromMs: number, toMs: number): Publish[] {
  return recs
    .filter(
      (r) => r.msg === 'kubernetes: published' || r.msg === 'kubernetes: translated, nothing to publish',
    )
    .map((r) => {
      const onChangeMs = typeof r.onChangeMs === 'number' ? r.onChangeMs : null;
      const translateMs = Number(r.translateMs);
      return {
        startMs: r.time - (onChangeMs ?? 0) - translateMs,
        endMs: r.time,
        waitedMs: typeof r.waitedMs === 'number' ? r.waitedMs : null,
        translateMs,
        translateBusyMs: Number(r.translateBusyMs ?? translateMs),
        onChangeMs,
        translated: Number(r.translated),
        changes: Number(r.changes),
      };
    })
    .filter((p) => p.startMs >= fromMs && p.startMs <= toMs);
}

/** Reconciles that began in [fromMs, toMs]: their wall time (start to end of the daemon's sync). */
function reconciles(
  recs: readonly LogRec[],
  fromMs: number,
  toMs: number,
): { n: number; ms: number; tables: number } {
  let n = 0;
  let ms = 0;
  let tables = 0;
  for (const r of recs) {
    if (r.msg !== 'reconciled') continue;
    const start = Date.parse(String(r.startedAt));
    if (!(start >= fromMs && start <= toMs)) continue;
    n++;
    ms += r.time - start;
    tables += Number((r.summary as { tablesInstalled?: number } | undefined)?.tablesInstalled ?? 0);
  }
  return { n, ms, tables };
}

/** One line: how much of a phase was the Kubernetes side (delivery, debounce, translation) vs the reconcile. */
function splitLine(recs: readonly LogRec[], fromMs: number, toMs: number): string {
  const pubs = publishes(recs, fromMs, toMs);
  const rec = reconciles(recs, fromMs, toMs);
  if (pubs.length === 0) return 'no publish logged (daemon not at --log-level debug?)';
  const first = pubs[0]!;
  const firstEvent = first.waitedMs === null ? null : first.startMs - first.waitedMs;
  const sum = (f: (p: Publish) => number): number => pubs.reduce((a, p) => a + f(p), 0);
  const at = (ms: number): string => `+${((ms - fromMs) / 1000).toFixed(2)} s`;
  return (
    `first event in the daemon ${firstEvent === null ? '?' : at(firstEvent)}, ` +
    `${pubs.length} publish(es) of ${sum((p) => p.changes)} changes, first at ${at(first.startMs)}; ` +
    `k8s translate ${sum((p) => p.translateMs)} ms, busy ${sum((p) => p.translateBusyMs)} ms (${sum((p) => p.translated)} Services); ` +
    `onChange ${sum((p) => p.onChangeMs ?? 0)} ms; reconcile ${rec.n} run(s) ${rec.ms} ms, ${rec.tables} tables; ` +
    `last publish done ${at(pubs[pubs.length - 1]!.endMs)}`
  );
}

// ---- the bench ----

interface PhaseResult {
  name: string;
  convergedMs: number | null;
  healthz: PollerResult;
  rssMB: number;
  /** CPU time (ms) this process (API client, polls, /healthz poller) used from the burst to the poll it
   * converged at: what the measurement took from the daemon on the shared cores (null: not converged). */
  benchCpuMs: number | null;
  /** CPU time (ms, all its threads) the daemon used over the same span (null: not converged or unreadable): less
   * noisy than the wall time on a shared machine, and what a change to the daemon's work shows first. */
  daemonCpuMs: number | null;
  detail: string;
  /** Where the time went (from the daemon's log), filled in once every phase is done. */
  split: string;
  /** The phase's window, epoch ms: from the burst to the maps seen matching (or the timeout). */
  fromMs: number;
  toMs: number;
  /** When the fake API server committed the burst. */
  written: Written;
}

/** The pinned outer map of current tables: the inner map id per VIP id (a new id for every table installed). */
interface OuterMap {
  readonly maxEntries: number;
  lookupBatchChunk(token: Buffer | null, chunk: number): { keys: Buffer; values: Buffer; count: number };
  close(): void;
}

/** Each VIP's current inner map id (0: none), by index into `vipIds`: one batch read of the outer map. */
function innerIds(outer: OuterMap, vipIds: readonly number[]): Uint32Array {
  const { keys, values, count } = outer.lookupBatchChunk(null, outer.maxEntries);
  const byVip = new Uint32Array(outer.maxEntries);
  for (let k = 0; k < count; k++) byVip[keys.readUInt32LE(4 * k)] = values.readUInt32LE(4 * k);
  return Uint32Array.from(vipIds, (id) => (id >= 0 && id < byVip.length ? byVip[id]! : 0));
}

interface Datapath {
  listBackends(): Promise<BackendSpec[]>;
  listVips(): Promise<{ id: number; key: { address: string } }[]>;
  readTable(id: number): Promise<Uint32Array | null>;
  close(): void;
}

async function bench(o: Options): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:k8s needs root (netns, bpffs, XDP)');
  const main = join(o.root, 'dist', 'src', 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} is not built (npm run build:ts)`);
  const kernelJs = join(o.root, 'dist', 'src', 'datapath', 'kernel.js');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { KernelDatapath } = require(kernelJs) as {
    KernelDatapath: { adopt(o: { pinDir: string }): Datapath };
  };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { BpfMap } = require(join(o.root, 'dist', 'src', 'datapath', 'bpf.js')) as {
    BpfMap: { fromPin(path: string): OuterMap };
  };
  const tag = `k18${process.pid % 100000}`;
  const ns = tag;
  const ifA = `${tag}a`;
  const ifB = `${tag}b`;
  const dir = mkdtempSync(join(tmpdir(), 'peak-bench-k8s-'));
  const bpffs = join('/run', `${tag}-bpffs`);
  const adminUrl = 'http://10.250.0.1:9470';
  let daemon: ChildProcess | null = null;
  let api: ApiChild | null = null;
  let poller: Poller | null = null;
  let dp: Datapath | null = null;
  let tables: OuterMap | null = null;
  let mounted = false;
  const n = o.services;
  const e = o.endpoints;
  const log = (s: string): void => {
    if (!o.json) console.log(s);
  };
  // A run killed before its clean-up (e.g. its output piped to `head`) leaves its pair and daemon: the daemon would
  // answer this run's /readyz at once. Refuse, naming what to remove.
  const stale = run('ip', ['-o', '-4', 'addr', 'show'])
    .split('\n')
    .filter((l) => l.includes(' 10.250.0.2/'))
    .map((l) => l.split(/\s+/)[1]!.split('@')[0]!);
  if (stale.length > 0)
    throw new Error(
      `10.250.0.2 is already on ${stale.join(', ')}, a pair of an earlier bench:k8s run that did not clean up: ` +
        `stop its daemon (pgrep -af 'cli/main.js daemon'), then ip link del ${stale[0]}, ip netns del ` +
        `${stale[0]!.replace(/b$/, '')}, umount /run/${stale[0]!.replace(/b$/, '')}-bpffs`,
    );
  try {
    run('ip', ['netns', 'add', ns]);
    run('ip', ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB]);
    run('ip', ['link', 'set', ifA, 'netns', ns]);
    for (const args of [
      ['link', 'set', 'lo', 'up'],
      ['link', 'set', ifA, 'up'],
      ['addr', 'add', '10.250.0.1/24', 'dev', ifA],
    ])
      run('ip', ['-n', ns, ...args]);
    // The other end stays here: the /healthz poller reaches the daemon's admin API over the pair.
    run('ip', ['addr', 'add', '10.250.0.2/24', 'dev', ifB]);
    run('ip', ['link', 'set', ifB, 'up']);
    run('mkdir', ['-p', bpffs]);
    run('mount', ['-t', 'bpf', 'bpf', bpffs]);
    mounted = true;

    api = await ApiChild.start(ns);
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: fake, cluster: {server: "http://127.0.0.1:${api.port}", insecure-skip-tls-verify: true}}]`,
        'users: [{name: fake, user: {token: fake-token}}]',
        'contexts: [{name: fake, context: {cluster: fake, user: fake}}]',
        'current-context: fake',
        '',
      ].join('\n'),
    );
    const states: SliceState[] = Array.from({ length: n }, () => ({
      drained: false,
      added: false,
      replaced: false,
    }));
    await api.upsertMany(
      'services',
      Array.from({ length: n }, (_, i) => serviceObj(i, o.tableSize)),
    );
    await api.upsertMany(
      'endpointslices',
      states.map((s, i) => sliceObj(i, e, s)),
    );
    const config = {
      interface: ifA,
      xdpMode: 'generic',
      nextHopMac: '02:00:00:00:00:02',
      encapSource: '10.250.0.1',
      admin: { listen: '10.250.0.1:9470' },
      limits: { maxVips: Math.max(1024, n + 16), maxBackends: Math.max(65536, 4 * n * (e + 2)) },
      vips: [],
      kubernetes: { leaderElection: false, allowedAddresses: ['10.100.0.0/16'] },
    };
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(config));

    log(`bench:k8s: ${n} Services x ${e} endpoints, daemon ${main}`);
    const t0 = performance.now();
    const t0Epoch = Date.now();
    const child = spawn(
      'ip',
      [
        'netns', 'exec', ns, process.execPath,
        // the CLI's own Node flags (its shebang), then any extra for this run (e.g. --cpu-prof)
        ...cliNodeFlags(main),
        ...(process.env.PEAK_BENCH_DAEMON_NODE_FLAGS ?? '').split(' ').filter(Boolean),
        main, 'daemon', '--config', file, '--bpffs', bpffs, '--detach-on-exit', '--log-level', 'debug',
        '--kubernetes', '--kubeconfig', kubeconfig, '--node-name', 'bench',
      ], // prettier-ignore
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    daemon = child;
    let output = '';
    const keep = (b: Buffer): void => {
      output = (output + b.toString()).slice(-4000);
    };
    const recs: LogRec[] = [];
    child.stdout!.on('data', keep);
    // The daemon logs JSON lines to stderr, "time" as ISO text.
    const logOut = o.logFile !== null ? createWriteStream(o.logFile) : null;
    createInterface({ input: child.stderr! }).on('line', (line) => {
      keep(Buffer.from(`${line}\n`));
      logOut?.write(`${line}\n`);
      if (!line.startsWith('{')) return;
      try {
        const r = JSON.parse(line) as Record<string, unknown>;
        const time = typeof r.time === 'string' ? Date.parse(r.time) : Number(r.time);
        if (typeof r.msg === 'string' && KEPT_MSGS.has(r.msg) && Number.isFinite(time))
          recs.push({ ...r, msg: r.msg, time });
      } catch {
        // not a log record
      }
    });
    poller = new Poller(`${adminUrl}/healthz`);
    poller.start();
    const get = (path: string): Promise<number> =>
      new Promise((res) => {
        const req = request(`${adminUrl}${path}`, { timeout: 2000 }, (r) => {
          r.resume();
          r.on('end', () => res(r.statusCode ?? 0));
        });
        req.on('error', () => res(0));
        req.on('timeout', () => req.destroy());
        req.end();
      });
    /** The daemon's main-thread V8 heap (used / total) and external memory, MB, from its /metrics (prom-client's
     * process metrics), and its thread count: where an RSS figure goes (the table workers are threads of their own,
     * with heaps of their own that these do not count). */
    const memory = async (): Promise<string> => {
      const text = await new Promise<string>((res) => {
        const req = request(`${adminUrl}/metrics`, { timeout: 5000 }, (r) => {
          let body = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => (body += c));
          r.on('end', () => res(body));
        });
        req.on('error', () => res(''));
        req.on('timeout', () => req.destroy());
        req.end();
      });
      const mb = (name: string): string => {
        const m = new RegExp(`^${name} (\\S+)`, 'm').exec(text);
        return m === null ? '?' : (Number(m[1]) / 2 ** 20).toFixed(0);
      };
      return (
        `main heap ${mb('nodejs_heap_size_used_bytes')} / ${mb('nodejs_heap_size_total_bytes')} MB, ` +
        `external ${mb('nodejs_external_memory_bytes')} MB, ${threadCount(child.pid!)} threads`
      );
    };
    let readyMs: number | null = null;
    while (performance.now() - t0 < o.startTimeoutS * 1000 && child.exitCode === null) {
      if ((await get('/readyz')) === 200) {
        readyMs = performance.now() - t0;
        break;
      }
      await sleep(50);
    }
    const readyEpoch = Date.now();
    const startHealthz = await poller.stop();
    if (readyMs === null) {
      log(`start: not ready after ${o.startTimeoutS} s (exit ${child.exitCode}): ${output.slice(-800)}`);
      return;
    }
    const pid = child.pid!;
    const rssReadyMB = procStatusMB(pid, 'VmRSS');
    const memReady = await memory();
    dp = KernelDatapath.adopt({ pinDir: join(bpffs, 'peak-xdp', ns, ifA) });
    tables = BpfMap.fromPin(join(bpffs, 'peak-xdp', ns, ifA, 'maglev_tables'));
    const vipIds = new Map((await dp.listVips()).map((v) => [v.key.address, v.id]));
    const backendsAtReady = (await dp.listBackends()).length;
    log(
      `start -> ready ${(readyMs / 1000).toFixed(2)} s (goal <= ${GOALS.startMs / 1000} s); ` +
        `maps: ${vipIds.size} VIPs, ${backendsAtReady} backends; RSS ${rssReadyMB.toFixed(0)} MB (${memReady}); ` +
        `/healthz max ${startHealthz.maxMs.toFixed(0)} ms during start`,
    );
    // Filled in at the end, when every line of the start is surely read.
    const startSplitLine = (): string => {
      const at = (ms: number): string => `+${((ms - t0Epoch) / 1000).toFixed(2)} s`;
      const client = recs.find((r) => r.msg === 'kubernetes: client ready');
      const lists = recs
        .filter((r) => r.msg === 'kubernetes: listed' && r.reason === 'start')
        .map((r) => `${String(r.kind)} ${String(r.items)} in ${String(r.ms)} ms`);
      const pub = publishes(recs, t0Epoch, readyEpoch).find((p) => p.onChangeMs !== null);
      return (
        `client ready ${client ? `${at(client.time)} (loading it ${String(client.ms)} ms)` : '?'}; ` +
        `lists: ${lists.join(', ') || '?'}; ` +
        (pub
          ? `first publish ${at(pub.startMs)}: translate ${pub.translateMs} ms (busy ${pub.translateBusyMs}), onChange (reconcile) ${pub.onChangeMs} ms, done ${at(pub.endMs)}; `
          : 'no publish logged; ') +
        `ready seen ${at(readyEpoch)}`
      );
    };
    if (vipIds.size !== n || backendsAtReady !== n * e)
      log(`  warning: expected ${n} VIPs and ${n * e} backends at ready`);

    const phases: PhaseResult[] = [];
    /** Each Service's VIP id, by Service index. */
    const vipIdOf = Array.from({ length: n }, (_, i) => vipIds.get(vipOf(i)) ?? -1);
    /**
     * One burst: every Service's slice changed at once; converged when the backend map shows every Service's
     * result (`done`) and every Service's table holds it (`tableOk`). The polls share the 2 cores with the daemon
     * they measure (reading the backend map and sampled tables every 20 ms took ~65% of a core from it), so:
     * - the backend map is read every POLL_MS at most, LIST_EVERY times its own cost apart (LIST_DONE_EVERY once
     *   every table was replaced), and before every table was replaced LIST_IDLE_MS apart, until it shows every
     *   result;
     * - every poll reads the outer table map (one syscall: each VIP's inner map id, new for every table the
     *   daemon installs) and waits until no VIP still has a table known not to hold the result (the one before
     *   the burst, or one read back and found wrong);
     * - then every table not yet read back at its current id is read and checked, and the outer map read again:
     *   when every table held its result and none was replaced meanwhile, the burst converged at that poll (the
     *   content read is the content installed then). Otherwise the polls go on.
     * The time is that poll's (a bound from above, at most a poll late).
     */
    const burst = async (
      name: string,
      mutate: (s: SliceState) => void,
      done: (byAddr: Map<string, BackendSpec>, i: number) => boolean,
      tableOk: (table: Uint32Array, byAddr: Map<string, BackendSpec>, i: number) => boolean,
    ): Promise<void> => {
      await sleep(1000); // settle after the previous phase
      for (const s of states) mutate(s);
      const objs = states.map((s, i) => sliceObj(i, e, s));
      /** The inner map id of a table known not to hold the result, by Service: at first the one before the burst. */
      const wrong = Array.from(innerIds(tables!, vipIdOf));
      /** The inner map id of a table read back holding the result, by Service. */
      const right: (number | null)[] = wrong.map(() => null);
      poller!.start();
      const b0 = performance.now();
      const b0Epoch = Date.now();
      const cpu0 = process.cpuUsage();
      const daemonCpu0 = procCpuMs(pid);
      const written = await api!.upsertMany('endpointslices', objs);
      let convergedMs: number | null = null;
      let benchCpuMs: number | null = null;
      let daemonCpuMs: number | null = null;
      let detail = '';
      let byAddr: Map<string, BackendSpec> | null = null;
      let backendsDone = 0;
      let listedAt = 0;
      let listCostMs = 0;
      let replaced = 0;
      /** Whether Service i's table, read back now, holds the burst's result. */
      const holdsResult = async (i: number): Promise<boolean> => {
        const t = await dp!.readTable(vipIdOf[i]!);
        try {
          return t !== null && tableOk(t, byAddr!, i);
        } catch {
          return false; // the backend it must name is not in the backend map: not the result
        }
      };
      while (performance.now() - b0 < o.phaseTimeoutS * 1000 && child.exitCode === null) {
        // Until every table was replaced, the map is read again only every LIST_IDLE_MS: the daemon writes backends
        // before the tables that name them and deletes the old ones after, so the tables' progress shows first.
        // Once every table was replaced, the daemon's last step (deleting the old backends) is what is left: the map
        // is read LIST_DONE_EVERY times its cost apart (LIST_EVERY apart it came up to 0.7 s after the daemon's
        // reconcile had ended, at 16,381-slot tables).
        const spacing = Math.max(POLL_MS, (replaced === n ? LIST_DONE_EVERY : LIST_EVERY) * listCostMs);
        if (
          backendsDone < n &&
          performance.now() >= listedAt + spacing &&
          (byAddr === null || replaced === n || performance.now() - listedAt >= LIST_IDLE_MS)
        ) {
          listedAt = performance.now();
          byAddr = new Map((await dp!.listBackends()).map((b) => [b.address, b]));
          backendsDone = 0;
          for (let i = 0; i < n; i++) if (done(byAddr, i)) backendsDone++;
          listCostMs = performance.now() - listedAt;
        }
        const ids = innerIds(tables!, vipIdOf);
        const at = performance.now();
        const cpuAt = process.cpuUsage(cpu0);
        const daemonCpuAt = procCpuMs(pid);
        replaced = 0;
        for (let i = 0; i < n; i++) if (ids[i] !== wrong[i]) replaced++;
        // A small change of a few tables is patched into the installed map in place (PATCH_MAX_BATCH tables per
        // reconcile at most): its inner map stays. The last tables not swapped are read back instead, and one that
        // holds the result counts as replaced (wrong = -1, never an inner map id). Counted only by inner map ids, a
        // burst whose last publish patched 3 tables "never converged".
        if (backendsDone === n && replaced < n && n - replaced <= PATCHED_READ_MAX)
          for (let i = 0; i < n; i++) {
            if (ids[i] !== wrong[i]) continue;
            if (await holdsResult(i)) {
              wrong[i] = -1;
              right[i] = ids[i]!;
              replaced++;
            }
          }
        detail = `${backendsDone}/${n} Services done in the backend map, ${replaced}/${n} tables replaced`;
        if (backendsDone === n && replaced === n) {
          let held = 0;
          for (let i = 0; i < n; i++) {
            if (right[i] === ids[i]) {
              held++;
              continue;
            }
            if (await holdsResult(i)) {
              right[i] = ids[i]!;
              held++;
            } else wrong[i] = ids[i]!;
          }
          const again = innerIds(tables!, vipIdOf);
          detail += `, ${held}/${n} read back holding the result`;
          if (held === n && again.every((id, i) => id === ids[i])) {
            convergedMs = at - b0;
            benchCpuMs = (cpuAt.user + cpuAt.system) / 1000;
            daemonCpuMs = daemonCpu0 === null || daemonCpuAt === null ? null : daemonCpuAt - daemonCpu0;
            break;
          }
        }
        await sleep(POLL_MS);
      }
      const healthz = await poller!.stop();
      const rssMB = procStatusMB(pid, 'VmRSS');
      const mem = await memory();
      const toMs = b0Epoch + (convergedMs ?? o.phaseTimeoutS * 1000);
      phases.push({
        name,
        convergedMs,
        healthz,
        rssMB,
        benchCpuMs,
        daemonCpuMs,
        detail,
        split: '',
        fromMs: b0Epoch,
        toMs,
        written,
      });
      log(
        `${name}: ${convergedMs === null ? `not converged after ${o.phaseTimeoutS} s (${detail})` : `maps after ${(convergedMs / 1000).toFixed(2)} s`} ` +
          `(goal <= ${GOALS.burstMs / 1000} s); /healthz max ${healthz.maxMs.toFixed(0)} ms, p99 ${healthz.p99Ms.toFixed(0)} ms ` +
          `over ${healthz.requests} requests (goal <= ${GOALS.healthzMs} ms); RSS ${rssMB.toFixed(0)} MB (${mem}); ` +
          `daemon's CPU until then ${daemonCpuMs?.toFixed(0) ?? '-'} ms (all threads), the bench's own ${benchCpuMs?.toFixed(0) ?? '-'} ms`,
      );
    };
    const up = (b: BackendSpec | undefined): boolean => b !== undefined && b.state === 'up';
    await burst(
      'burst 1, state flips (one endpoint per slice terminating)',
      (s) => (s.drained = true),
      (m, i) => m.get(epOf(i, 0))?.state === 'draining',
      (t, m, i) => !t.includes(m.get(epOf(i, 0))!.id),
    );
    await burst(
      'burst 2, added endpoints (one per slice)',
      (s) => (s.added = true),
      (m, i) => up(m.get(epOf(i, e))),
      (t, m, i) => t.includes(m.get(epOf(i, e))!.id),
    );
    await burst(
      'burst 3, replaced addresses (one per slice: a rolling update)',
      (s) => (s.replaced = true),
      (m, i) => up(m.get(epOf(i, REPLACED + 1))) && !m.has(epOf(i, 1)),
      (t, m, i) => t.includes(m.get(epOf(i, REPLACED + 1))!.id),
    );
    // A publish is logged when its onChange returns, just after the maps were seen matching: give the last
    // one a moment, then split each phase by the publishes that began in it.
    await sleep(1000);
    log('\nwhere the time went (daemon debug log; translate = wall, busy = event-loop time)');
    const startSplit = startSplitLine();
    log(`  start: ${startSplit}`);
    for (const p of phases) {
      const at = (ms: number): string => `+${((ms - p.fromMs) / 1000).toFixed(2)} s`;
      p.split = `API server wrote the events ${at(p.written.firstMs)} to ${at(p.written.lastMs)}; ${splitLine(recs, p.fromMs, p.toMs)}`;
      log(`  ${p.name.split(' (')[0]!}: ${p.split}`);
    }
    const hwmMB = procStatusMB(pid, 'VmHWM');
    const rssEndMB = procStatusMB(pid, 'VmRSS');
    // Settled: once the table builder went idle (IDLE_MS after the last build; its workers, if any, ended) and gave its
    // memory back, 30 s at most: the daemon's debug line for that, logged after the last burst began (the daemon ends
    // the start's workers right after ready too, and Services' tables are built on its own thread, so thread counts
    // do not tell).
    const lastBurst = phases.at(-1)?.fromMs ?? 0;
    const ended = (): boolean => recs.some((r) => r.msg === WORKERS_ENDED_MSG && r.time > lastBurst);
    const workersGone = performance.now() + 30_000;
    while (performance.now() < workersGone && !ended()) await sleep(250);
    const workersEnded = ended();
    await sleep(500);
    const rssWorkersEndedMB = procStatusMB(pid, 'VmRSS');
    // An idle daemon's RSS falls further once V8's memory reducer shrinks the heap (seconds after the allocations
    // stop): read again SETTLE_MS later, as `ps` or `kubectl top` would see it by then.
    await sleep(SETTLE_MS);
    const rssSettledMB = procStatusMB(pid, 'VmRSS');
    const summary = {
      services: n,
      endpoints: e,
      readyMs,
      rssReadyMB,
      rssEndMB,
      rssWorkersEndedMB,
      rssSettledMB,
      workersEnded,
      hwmMB,
      startHealthzMaxMs: startHealthz.maxMs,
      startSplit,
      phases,
    };
    if (o.json) console.log(JSON.stringify(summary));
    else {
      const fmt = (ms: number | null): string =>
        ms === null ? 'not converged' : `${(ms / 1000).toFixed(2)} s`;
      const mark = (ok: boolean): string => (ok ? 'ok' : 'MISSED');
      console.log('\ngoal vs measured');
      console.log(
        `  start -> ready            <= 5 s     ${fmt(readyMs)}  ${mark(readyMs <= GOALS.startMs)}`,
      );
      for (const p of phases)
        console.log(
          `  ${p.name.split(' (')[0]!.padEnd(24)}  <= 2 s     ${fmt(p.convergedMs)}  ${mark(p.convergedMs !== null && p.convergedMs <= GOALS.burstMs)}` +
            `   /healthz max ${p.healthz.maxMs.toFixed(0)} ms (<= 100 ms) ${mark(p.healthz.maxMs <= GOALS.healthzMs)}`,
        );
      console.log(
        `  RSS ready / end / peak    <= 150 MB  ${rssReadyMB.toFixed(0)} / ${rssEndMB.toFixed(0)} / ${hwmMB.toFixed(0)} MB  ${mark(hwmMB <= GOALS.rssMB)}`,
      );
      console.log(
        `  RSS settled               <= 150 MB  ${rssSettledMB.toFixed(0)} MB  ${mark(rssSettledMB <= GOALS.rssMB)}   ` +
          `(${SETTLE_MS / 1000} s after the table builder ${workersEnded ? 'went idle' : 'was still busy 30 s on'}; ` +
          `${rssWorkersEndedMB.toFixed(0)} MB ${workersEnded ? 'then' : 'at 30 s'})`,
      );
    }
  } finally {
    await poller?.terminate();
    dp?.close();
    tables?.close();
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once('exit', r));
      daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon!.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
    await api?.stop();
    if (mounted) spawnSync('umount', [bpffs]);
    spawnSync('rmdir', [bpffs]);
    spawnSync('ip', ['link', 'del', ifB]);
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!isMainThread) pollerMain();
else if (process.argv[2] === '--serve-api')
  serveApi().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
else
  bench(parseArgs(process.argv.slice(2))).catch((err: unknown) => {
    console.error((err as Error).stack ?? String(err));
    process.exitCode = 1;
  });
