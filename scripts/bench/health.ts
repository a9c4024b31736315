// bench:health: the HealthMonitor at scale inside a network namespace of its own: idle CPU with 512 x 100
// memberships over 256 addresses (2 s checks against a local listener), time to mark 51,200 timing-out
// targets down (SYNs dropped by an nftables rule) against the checks' goal and the bound the in-flight cap
// (from the open-file limit) allows, cadence of healthy targets among them, stop time, and the heap the
// health side holds per membership (--part memory).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DEFAULT_JITTER,
  defaultProber,
  HealthMonitor,
  LATE_MS,
  type CheckResult,
  type HealthTarget,
  type ProbeChecked,
  type Prober,
} from '../../src/health';
import { readFdLimit } from '../../src/daemon/fdlimit';
import { setTcpProbeThread, tcpProbePath, type TcpProbePath } from '../../src/health/checks';
import { healthTargets } from '../../src/health/targets';
import type { DesiredState } from '../../src/reconcile/desired';
import { defaultMaxInFlight, quickReserve, timeoutDownBoundMs } from '../../src/health/probes';
import type { HealthCheckConfig } from '../../src/model';

interface Options {
  vips: number;
  backendsPerVip: number;
  /** Distinct backend addresses the memberships of the idle scenario share. */
  addresses: number;
  /** Timing-out targets (distinct addresses) of the timeout scenario. */
  timeouts: number;
  /** Healthy targets checked among the timing-out ones (their cadence must hold). */
  healthy: number;
  intervalMs: number;
  timeoutMs: number;
  /** Seconds the idle CPU is measured over (after a warm-up of two intervals). */
  idleS: number;
  /** Upper bound on waiting for every timing-out target to be marked down. */
  downLimitS: number;
  /** Open-file limit of the measuring process (the in-flight cap follows it). */
  fds: number;
  /** In-flight cap instead of the daemon's default for the fd limit (0: the default). */
  cap: number;
  /**
   * Where TCP probes run (asserted): `monitor`, the monitor's own starts on the addon's prober thread (the daemon's
   * path: HealthMonitor.runOnThread; recorded from its 'checked' events); `thread`, the general prober path there
   * (a recording prober around defaultProber: a target, callbacks and a cancel per probe); `loop`, the event loop.
   */
  tcpProbes: 'monitor' | TcpProbePath;
  parts: string[];
  json: boolean;
}

const HEALTHY_PORT = 18080;
const HTTP_PORT = 18081;
const DROPPED_PORT = 18082;

function parseArgs(argv: string[]): Options & { inner: boolean } {
  const o: Options & { inner: boolean } = {
    vips: 512,
    backendsPerVip: 100,
    addresses: 256,
    timeouts: 51_200,
    healthy: 256,
    intervalMs: 2000,
    timeoutMs: 1000,
    idleS: 20,
    downLimitS: 120,
    fds: 20_000,
    cap: 0,
    tcpProbes: 'monitor',
    parts: ['idle-tcp', 'idle-http', 'timeout'],
    json: false,
    inner: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (k: keyof Options): void => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0)
        throw new Error(`${a}: ${JSON.stringify(argv[i])} is not a positive number`);
      (o as unknown as Record<string, number>)[k] = v;
    };
    if (a === '--inner') o.inner = true;
    else if (a === '--json') o.json = true;
    else if (a === '--vips') num('vips');
    else if (a === '--backends') num('backendsPerVip');
    else if (a === '--addresses') num('addresses');
    else if (a === '--timeouts') num('timeouts');
    else if (a === '--healthy') num('healthy');
    else if (a === '--interval-ms') num('intervalMs');
    else if (a === '--timeout-ms') num('timeoutMs');
    else if (a === '--idle-s') num('idleS');
    else if (a === '--down-limit-s') num('downLimitS');
    else if (a === '--fds') num('fds');
    else if (a === '--cap') num('cap');
    else if (a === '--part') o.parts = argv[++i]!.split(',');
    else if (a === '--tcp-probes') {
      const v = argv[++i];
      if (v !== 'monitor' && v !== 'thread' && v !== 'loop')
        throw new Error(`--tcp-probes: ${JSON.stringify(v)} is not monitor, thread or loop`);
      o.tcpProbes = v;
    } else
      throw new Error(
        `unknown argument ${JSON.stringify(a)} (--part idle-tcp,idle-http,timeout,memory --vips N --backends N ` +
          '--addresses N --timeouts N --healthy N --interval-ms N --timeout-ms N --idle-s N --down-limit-s N --fds N --cap N ' +
          '--tcp-probes monitor|thread|loop --json)',
      );
  }
  if (o.addresses > 65_024 || o.timeouts + o.healthy > 65_024)
    throw new Error('--addresses and --timeouts + --healthy: at most 65,024 (127.1.x.y and 127.2.x.y)');
  return o;
}

/** The n-th address of a 127.z.0.0/16 (skipping .0 and .255 host bytes). */
const addr = (z: number, n: number): string => `127.${z}.${1 + Math.floor(n / 254)}.${1 + (n % 254)}`;

const check = (o: Options, type: 'tcp' | 'http', port: number): HealthCheckConfig => ({
  type,
  port,
  path: '/',
  intervalMs: o.intervalMs,
  timeoutMs: o.timeoutMs,
  rise: 2,
  fall: 3,
  downGraceSeconds: 30,
});

/**
 * Probes started, in flight (peak), per tracked address the start times (ms) of its probes, and how long
 * timing-out probes held their socket past their timeout (a busy event loop fires the timers late).
 */
class Recorder {
  private startedHere = 0;
  inFlight = 0;
  peakInFlight = 0;
  readonly starts = new Map<string, number[]>();
  /** Hold time minus timeout of probes that timed out (ms). */
  readonly overshoot: number[] = [];
  constructor(
    private readonly o: Options,
    private readonly track: (address: string) => boolean = () => false,
  ) {}

  /** A monitor whose probes this records: through its own prober, or (--tcp-probes monitor) by its events. */
  monitor(maxInFlight: number): HealthMonitor {
    if (this.o.tcpProbes !== 'monitor') return new HealthMonitor({ prober: this.prober, maxInFlight });
    const m = new HealthMonitor({ maxInFlight });
    this.of = m;
    // starts from the monitor's count; in flight from its stats (sampled: see sample()); start times and
    // overshoot from each result
    m.on('checked', (c: ProbeChecked) => {
      if (this.track(c.address)) this.startedAt(c.address, c.startedAt);
      if (c.timedOut) this.overshoot.push(performance.now() - c.startedAt - this.o.timeoutMs);
    });
    return m;
  }

  /** The monitor recorded by its events (--tcp-probes monitor). */
  private of: HealthMonitor | null = null;

  /** Probes started (the monitor's own count, with --tcp-probes monitor). */
  get started(): number {
    return this.of === null ? this.startedHere : this.of.stats().started;
  }

  /** With --tcp-probes monitor: its in flight now, for peakInFlight (called at each of the bench's polls). */
  sample(): void {
    if (this.of === null) return;
    const n = this.of.stats().inFlight;
    if (n > this.peakInFlight) this.peakInFlight = n;
  }

  /** Starts on the prober thread's own path (--tcp-probes monitor: every TCP probe should be one). */
  get onThread(): number {
    return this.of?.stats().startedOnThread ?? 0;
  }

  /** Throws unless every TCP probe took the path --tcp-probes names (with monitor: the monitor's own starts). */
  assertPath(type: 'tcp' | 'http'): void {
    if (this.o.tcpProbes !== 'monitor' || type !== 'tcp') return;
    const s = this.of!.stats();
    if (s.startedOnThread !== s.started || s.started === 0)
      throw new Error(`--tcp-probes monitor: ${s.startedOnThread} of ${s.started} probes started on the monitor's own path`); // prettier-ignore
  }

  private startedAt(address: string, at: number): void {
    const s = this.starts.get(address) ?? [];
    s.push(at);
    this.starts.set(address, s);
  }

  readonly prober: Prober = (t, done) => {
    this.startedHere++;
    this.inFlight++;
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    const at = performance.now();
    if (this.track(t.address)) this.startedAt(t.address, at);
    return defaultProber(t, (r: CheckResult) => {
      this.inFlight--;
      if (r.timedOut === true) this.overshoot.push(performance.now() - at - t.check.timeoutMs);
      done(r);
    });
  };
}

/** RSS in MB; NaN when it cannot be read (out of file descriptors). */
const rssMb = (): number => {
  try {
    return process.memoryUsage.rss() / 2 ** 20;
  } catch {
    return NaN;
  }
};

/** Open TCP sockets of this process (probe sockets; the listener's are in its own process). */
const activeHandles = (): number =>
  (process as unknown as { _getActiveHandles(): { _handle?: object | null }[] })
    ._getActiveHandles()
    .filter((h) => h._handle?.constructor.name === 'TCP').length;

/** stop(), then until the handles are back to `baseline` (sockets closed): both in ms. */
async function timeStop(
  m: HealthMonitor,
  baseline: number,
): Promise<{ stopCallMs: number; closedMs: number }> {
  const t0 = performance.now();
  m.stop();
  const stopCallMs = performance.now() - t0;
  const idle = (m as unknown as { idle?: () => Promise<void> }).idle;
  const stats = (m as unknown as { stats?: () => { inFlight: number } }).stats;
  const watch = setInterval(
    () =>
      console.log(
        `  after stop ${(performance.now() - t0).toFixed(0)} ms: in flight ${stats?.call(m).inFlight}, sockets ${activeHandles()}`,
      ),
    1000,
  );
  if (idle) await idle.call(m);
  clearInterval(watch);
  const limit = t0 + 60_000;
  while (activeHandles() > baseline && performance.now() < limit) await sleep(5);
  return { stopCallMs, closedMs: performance.now() - t0 };
}

/** The in-flight cap as the daemon sets it (wiring.ts): from the open-file limit, unless --cap. */
const maxInFlight = (o: Options): number => (o.cap > 0 ? o.cap : defaultMaxInFlight(readFdLimit()?.soft ?? null)); // prettier-ignore

interface Row {
  what: string;
  goal: string;
  measured: string;
  /** Whether the measurement meets the goal; null: a row without a goal to meet. */
  ok: boolean | null;
}

async function idlePart(o: Options, type: 'tcp' | 'http', rows: Row[]): Promise<void> {
  const baseline = activeHandles();
  const rec = new Recorder(o);
  const m = rec.monitor(maxInFlight(o));
  const c = check(o, type, type === 'tcp' ? HEALTHY_PORT : HTTP_PORT);
  const targets: HealthTarget[] = [];
  for (let v = 0; v < o.vips; v++)
    for (let b = 0; b < o.backendsPerVip; b++) {
      const address = addr(1, (v * 37 + b) % o.addresses);
      targets.push({ key: `v${v}>${address}`, vip: `v${v}`, address, check: c });
    }
  const unique = new Set(targets.map((t) => t.address)).size;
  let changes = 0;
  m.on('change', () => changes++);
  const t0 = performance.now();
  m.setTargets(targets);
  const setMs = performance.now() - t0;
  m.start();
  await sleep(2 * o.intervalMs);
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  const started0 = rec.started;
  // in flight sampled every 500 ms where the monitor is recorded by its events
  for (const end = w0 + o.idleS * 1000; performance.now() < end;) {
    await sleep(Math.min(500, end - performance.now()));
    rec.sample();
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - w0;
  const probes = rec.started - started0;
  const cpuPct = (100 * (cpu.user + cpu.system)) / 1000 / wall;
  const up = [...m.statuses().values()].filter((s) => s === 'up').length;
  const rss = rssMb();
  rec.assertPath(type);
  const stop = await timeStop(m, baseline);
  const scale = `${o.vips}x${o.backendsPerVip} over ${unique} addresses, ${type} every ${o.intervalMs} ms`;
  console.log(
    `idle ${scale}: setTargets ${setMs.toFixed(0)} ms; CPU ${cpuPct.toFixed(1)}% of a core ` +
      `(user ${((100 * cpu.user) / 1000 / wall).toFixed(1)}%, system ${((100 * cpu.system) / 1000 / wall).toFixed(1)}%, ` +
      `the listener's half of each loopback handshake included) over ${(wall / 1000).toFixed(1)} s; ` +
      `${probes} probes (${((probes * 1000) / wall).toFixed(0)}/s), peak in flight ${rec.peakInFlight}${o.tcpProbes === 'monitor' ? ' (polled)' : ''}; ` +
      `${up}/${targets.length} up, ${changes} changes; RSS ${rss.toFixed(0)} MB; ` +
      `stop() ${stop.stopCallMs.toFixed(1)} ms, sockets closed ${stop.closedMs.toFixed(0)} ms`,
  );
  rows.push({ what: `idle CPU, ${scale}`, goal: '<= 10% of a core', measured: `${cpuPct.toFixed(1)}%`, ok: cpuPct <= 10 }); // prettier-ignore
  rows.push({ what: `stop (idle ${type})`, goal: '<= 1000 ms', measured: `${stop.closedMs.toFixed(0)} ms`, ok: stop.closedMs <= 1000 }); // prettier-ignore
}

/**
 * Bytes in use after a full collection: the JS heap and memory outside it (typed arrays' buffers); needs
 * --expose-gc (the outer run passes it).
 */
function heapAfterGc(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('--part memory: run node with --expose-gc');
  gc();
  gc();
  const u = process.memoryUsage();
  return u.heapUsed + u.external;
}

/** CPU time (user + system, ms) that f takes. */
function cpuMs(f: () => void): number {
  const c = process.cpuUsage();
  f();
  const d = process.cpuUsage(c);
  return (d.user + d.system) / 1000;
}

/**
 * What the health side holds per membership at vips x backends (over `addresses` backends): targets built
 * as the daemon builds them (healthTargets of a desired state whose strings stay held, as the daemon's
 * desired state holds them), set on a monitor, after every probe gave results, and after a second sync
 * (setTargets of the same desired state). Probes answer at once (no sockets): only the monitor's memory.
 */
async function memoryPart(o: Options, rows: Row[]): Promise<void> {
  const vips: DesiredState['vips'] = [];
  for (let v = 0; v < o.vips; v++) {
    const backends = [];
    for (let b = 0; b < o.backendsPerVip; b++) {
      // A string per backend (addr makes a new one), as a parsed config or an EndpointSlice gives them.
      const address = addr(1, (v * 37 + b) % o.addresses);
      backends.push({ key: `10.0.${v >> 8}.${v & 255}:80/tcp>${address}`, address });
    }
    vips.push({ name: `v${v}`, healthCheck: { ...check(o, 'tcp', HEALTHY_PORT) }, backends } as unknown as DesiredState['vips'][number]); // prettier-ignore
  }
  const desired = { vips } as unknown as DesiredState;
  const n = o.vips * o.backendsPerVip;
  const prober: Prober = (_t, done) => {
    const h = setImmediate(() => done({ ok: true, durationMs: 0, detail: 'connected' }));
    return () => {
      clearImmediate(h);
      done({ ok: false, durationMs: 0, detail: 'aborted', local: true });
    };
  };
  const h0 = heapAfterGc();
  const rss0 = rssMb();
  const m = new HealthMonitor({ prober, maxInFlight: maxInFlight(o) });
  const setMs = cpuMs(() => m.setTargets(healthTargets(desired)));
  const h1 = heapAfterGc();
  m.start();
  await sleep(1.2 * o.intervalMs);
  const h2 = heapAfterGc();
  const resyncMs = cpuMs(() => m.setTargets(healthTargets(desired)));
  const h3 = heapAfterGc();
  let reads: number[] = [];
  const readMs = cpuMs(() => (reads = [m.statuses().size, m.since().size, m.snapshot().length]));
  const took = m.snapshot().filter((x) => x.checks > 0).length;
  m.stop();
  await m.idle();
  const per = (h: number): string => `${((h - h0) / n).toFixed(0)} B`;
  console.log(
    `memory ${o.vips}x${o.backendsPerVip} over ${o.addresses} addresses (${n} memberships, ${took} took a result): ` +
      `heap and buffers per membership: targets set ${per(h1)}, with results ${per(h2)}, after a re-sync ${per(h3)} ` +
      `(health side ${((h3 - h0) / 2 ** 20).toFixed(1)} MB, RSS ${rss0.toFixed(0)} -> ${rssMb().toFixed(0)} MB); ` +
      `CPU: setTargets ${setMs.toFixed(0)} ms, re-sync ${resyncMs.toFixed(0)} ms, statuses+since+snapshot ${readMs.toFixed(0)} ms (${reads.join('/')})`,
  );
  rows.push({ what: `health heap per membership, ${o.vips}x${o.backendsPerVip}`, goal: '(smaller)', measured: per(h3), ok: null }); // prettier-ignore
}

async function timeoutPart(o: Options, rows: Row[]): Promise<void> {
  const baseline = activeHandles();
  const healthyAddrs = new Set(Array.from({ length: o.healthy }, (_, i) => addr(2, o.timeouts + i)));
  const rec = new Recorder(o, (a) => healthyAddrs.has(a));
  const cap = maxInFlight(o);
  const m = rec.monitor(cap);
  const dead = check(o, 'tcp', DROPPED_PORT);
  const alive = check(o, 'tcp', HEALTHY_PORT);
  const targets: HealthTarget[] = [];
  for (let i = 0; i < o.timeouts; i++)
    targets.push({ key: `t${i}`, vip: `v${i % 512}`, address: addr(2, i), check: dead });
  for (const a of healthyAddrs) targets.push({ key: `h${a}`, vip: 'healthy', address: a, check: alive });
  const downAt: number[] = [];
  let wrong = 0;
  m.on('change', (c: { key: string; to: string }) => {
    if (c.key.startsWith('t') && c.to === 'down') downAt.push(performance.now());
    else wrong++;
  });
  m.setTargets(targets);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  m.start();
  const limit = t0 + o.downLimitS * 1000;
  let maxBacklog = 0;
  let maxBacklogAge = 0;
  while (downAt.length < o.timeouts && performance.now() < limit) {
    // Not more often: stats() walks the due part of the queues (~30,000 probes), and at every 100 ms that
    // was 8% of the process's CPU (profiled), taken from the probes being measured.
    await sleep(500);
    const st = m.stats();
    rec.sample();
    maxBacklog = Math.max(maxBacklog, st.backlog);
    maxBacklogAge = Math.max(maxBacklogAge, st.backlogAgeMs);
  }
  // The last target's down (not the poll that saw it: polls are 500 ms apart).
  const allMs = downAt.length === o.timeouts ? downAt[downAt.length - 1]! - t0 : performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  const stats = m.stats();
  const peak = rec.peakInFlight;
  // Cadence of the healthy targets while the dead ones time out: the largest gap between two probe starts.
  let maxGap = 0;
  let gaps = 0;
  for (const s of rec.starts.values())
    for (let i = 1; i < s.length; i++) {
      maxGap = Math.max(maxGap, s[i]! - s[i - 1]!);
      gaps++;
    }
  const firstProbeLate = [...healthyAddrs].filter(
    (a) => (rec.starts.get(a)?.[0] ?? Infinity) - t0 > (1 + DEFAULT_JITTER) * o.intervalMs,
  ).length;
  rec.assertPath('tcp');
  const stop = await timeStop(m, baseline);
  const sorted = downAt.map((t) => t - t0).sort((a, b) => a - b);
  const q = (p: number): string =>
    sorted.length
      ? (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! / 1000).toFixed(1)
      : '-';
  // The checks' goal: fall x interval (+ the jitter), the first check's phase (<= one interval), one timeout.
  const bound = (3 * o.intervalMs * (1 + DEFAULT_JITTER) + o.intervalMs + o.timeoutMs) / 1000;
  // What the cap allows: the sockets fall x targets probes hold, each for its whole timeout.
  const b = timeoutDownBoundMs({ targets: o.timeouts, intervalMs: o.intervalMs, timeoutMs: o.timeoutMs, fall: 3, jitter: DEFAULT_JITTER, maxInFlight: cap }); // prettier-ignore
  const done = downAt.length === o.timeouts;
  const over = [...rec.overshoot].sort((x, y) => x - y);
  const oq = (p: number): string => (over.length ? over[Math.min(over.length - 1, Math.floor(p * over.length))]!.toFixed(0) : '-'); // prettier-ignore
  const cpuMsAll = (cpu.user + cpu.system) / 1000;
  // Probes a millisecond that keep the slots slow probes may use busy (each holds one for its timeout).
  const perMs = (cap - quickReserve(cap)) / o.timeoutMs;
  const cpuPct = (100 * cpuMsAll) / allMs;
  console.log(
    `timeout: cap ${cap} in flight (fd limit ${readFdLimit()?.soft}); the cap allows all down by ${(b.boundMs / 1000).toFixed(1)} s ` +
      `(fd floor ${(b.fdMs / 1000).toFixed(1)} s, checks alone ${(b.checksMs / 1000).toFixed(1)} s); CPU ${cpuPct.toFixed(0)}% of a core ` +
      `while marking down, ${((1000 * cpuMsAll) / Math.max(1, rec.started)).toFixed(1)} us per probe started (keeping every slot ` +
      `busy takes ${perMs.toFixed(1)} probes/ms: at most ${(1000 / perMs).toFixed(0)} us each on a core); event-loop delay p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms, max ${(loop.max / 1e6).toFixed(0)} ms; ` +
      `timed-out probes held their socket past the timeout by p50 ${oq(0.5)} ms, p99 ${oq(0.99)} ms, max ${oq(1)} ms; ` +
      `delayed ${stats.delayed} (${stats.delayedByCap} by the cap) of ${stats.started} started; ` +
      `backlog max ${maxBacklog} probes, oldest waited up to ${(maxBacklogAge / 1000).toFixed(2)} s`,
  );
  console.log(
    `timeout: ${o.timeouts} timing-out targets (${o.timeoutMs} ms timeout, ${o.intervalMs} ms interval, fall 3) + ${o.healthy} healthy: ` +
      `${downAt.length} down ${done ? `after ${(allMs / 1000).toFixed(1)} s` : `by the ${o.downLimitS} s limit`} ` +
      `(p50 ${q(0.5)} s, p99 ${q(0.99)} s); probes ${rec.started}, peak in flight ${peak}${o.tcpProbes === 'monitor' ? ' (polled)' : ''}; healthy targets: ` +
      `largest gap between probes ${(maxGap / 1000).toFixed(2)} s over ${gaps} gaps, ${firstProbeLate} first probes later than 1.1 interval; ` +
      `${wrong} other changes; RSS ${rssMb().toFixed(0)} MB; ` +
      `stop() ${stop.stopCallMs.toFixed(1)} ms, sockets closed ${stop.closedMs.toFixed(0)} ms`,
  );
  rows.push({
    what: `${o.timeouts} timing-out targets all down`,
    goal: `<= ${bound.toFixed(2)} s (fall x interval + phase + timeout)`,
    measured: done ? `${(allMs / 1000).toFixed(2)} s` : `${downAt.length} down after ${o.downLimitS} s`,
    ok: done && allMs <= bound * 1000,
  });
  rows.push({
    what: `  the same, against what ${cap} slots allow`,
    goal: `<= ${(b.boundMs / 1000).toFixed(2)} s${b.boundMs > bound * 1000 ? ' (the cap cannot meet the goal)' : ''}`,
    measured: done ? `${(allMs / 1000).toFixed(2)} s, CPU ${cpuPct.toFixed(0)}%` : '-',
    ok: done && allMs <= b.boundMs,
  });
  // The interval at its longest jitter, and the lateness the monitor itself counts as on time (LATE_MS: a timer
  // and an event-loop turn, here of a loop ~90% busy starting ~18 probes a millisecond).
  const gapMs = o.intervalMs * (1 + DEFAULT_JITTER) + LATE_MS;
  rows.push({
    what: 'healthy targets among them: largest probe gap',
    goal: `<= ${(gapMs / 1000).toFixed(2)} s (interval + jitter + ${LATE_MS} ms)`,
    measured: `${(maxGap / 1000).toFixed(2)} s`,
    ok: maxGap <= gapMs,
  });
  rows.push({
    what: `stop with ${peak} probes in flight (peak)`,
    goal: '<= 1000 ms',
    measured: `${stop.closedMs.toFixed(0)} ms`,
    ok: stop.closedMs <= 1000,
  });
}

/** A listener process: TCP (accepts and closes) and HTTP (200) on every 127.1.x.y (0.0.0.0 in the netns). */
function startListeners(): ChildProcess {
  const code = `
    const net = require('node:net'); const http = require('node:http');
    net.createServer((s) => { s.on('error', () => {}); s.end(); }).listen({ port: ${HEALTHY_PORT}, host: '0.0.0.0', backlog: 4096 });
    http.createServer((q, r) => r.end('ok')).listen({ port: ${HTTP_PORT}, host: '0.0.0.0', backlog: 4096 }, () => console.log('ready'));
  `;
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
}

async function inner(o: Options): Promise<void> {
  setTcpProbeThread(o.tcpProbes !== 'loop');
  const path = tcpProbePath();
  if (path !== (o.tcpProbes === 'monitor' ? 'thread' : o.tcpProbes))
    throw new Error(`--tcp-probes ${o.tcpProbes}: TCP probes would run on the ${path} path`);
  console.log(
    `TCP probes: ${o.tcpProbes === 'monitor' ? "the addon's prober thread, started by the monitor itself (the daemon's path)" : path === 'thread' ? "the addon's prober thread, through a prober (a target, callbacks and a cancel per probe)" : 'the event loop (raw TCP handles)'}`, // prettier-ignore
  );
  const listeners = startListeners();
  await new Promise<void>((resolve, reject) => {
    listeners.stdout!.once('data', () => resolve());
    listeners.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
  });
  const rows: Row[] = [];
  try {
    for (const part of o.parts) {
      if (part === 'idle-tcp') await idlePart(o, 'tcp', rows);
      else if (part === 'idle-http') await idlePart(o, 'http', rows);
      else if (part === 'timeout') await timeoutPart(o, rows);
      else if (part === 'memory') await memoryPart(o, rows);
      else
        throw new Error(
          `--part: unknown part ${JSON.stringify(part)} (idle-tcp, idle-http, timeout, memory)`,
        );
      await sleep(1000);
    }
  } finally {
    listeners.kill();
  }
  console.log('\ngoal vs measured');
  for (const r of rows)
    console.log(
      `  ${r.what.padEnd(70)} goal ${r.goal.padEnd(48)} measured ${r.measured.padEnd(18)} ${r.ok === null ? '' : r.ok ? 'ok' : 'MISSED'}`,
    );
  if (o.json) console.log(JSON.stringify(rows));
}

const run = (cmd: string, args: string[]): void => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
};

/** Outer: a namespace of our own (lo up, SYNs to the dropped port dropped), the measurement run inside it. */
function outer(o: Options, argv: string[]): number {
  if (process.getuid?.() !== 0) throw new Error('bench:health needs root (network namespace, nftables)');
  const ns = `h18-hb-${process.pid}`;
  run('ip', ['netns', 'add', ns]);
  try {
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const rules = `table inet h18bench {\n chain out {\n type filter hook output priority 0; tcp dport ${DROPPED_PORT} tcp flags & (syn|ack) == syn drop; }\n}`;
    const nft = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: rules, encoding: 'utf8' });
    if (nft.status !== 0) throw new Error(`nft: ${nft.stderr}`);
    // The inner run gets this node's flags (--cpu-prof, --expose-gc, ...).
    const flags = [...new Set([...process.execArgv, '--expose-gc'])].map((a) => `'${a}'`).join(' ');
    const cmd = `ulimit -n ${o.fds} && exec "${process.execPath}" ${flags} "${process.argv[1]}" --inner ${argv.map((a) => `'${a}'`).join(' ')}`;
    const r = spawnSync('ip', ['netns', 'exec', ns, 'bash', '-c', cmd], {
      stdio: 'inherit',
      timeout: 30 * 60_000,
    });
    return r.status ?? 1;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

function main(): void {
  const argv = process.argv.slice(2);
  const o = parseArgs(argv);
  if (o.inner)
    inner(o).then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(e);
        process.exit(1);
      },
    );
  else process.exitCode = outer(o, argv);
}

main();
