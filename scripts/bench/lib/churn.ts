// Mixed churn (issue 15): keep-alive connections through the LB nodes while a rolling update adds and removes
// backends and, right after each backend change, an LB node leaves or joins (which moves ECMP buckets). Counts
// the connections broken, split into those whose own backend was removed (expected) and the rest, and the
// fraction of packets that took the second chance's extra hop. Used by test/integration/churn-e2e.test.ts and
// `npm run bench:e2e`. The pure parts (schedule, classification, fractions) come first; the shell drives a
// testbed (scripts/testbed) that is already up.
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { KernelDatapath } from '../../../src/datapath/kernel';
import { lookupPinned } from '../../../src/cli/commands/lookup';
import { Host, lbPinRoot, Plan, serviceVip } from '../../testbed/plan';
import {
  CLI_JS,
  daemonConfig,
  daemonLogTail,
  daemonPids,
  detachXdpIn,
  startDaemon,
  stopDaemon,
  writeDaemonConfig,
} from '../../testbed/peak';
import { run, runAsync, runIn, sleep, waitFor } from '../../testbed/sh';
import { fibNextHops, nsPids } from '../../testbed/topology';
import { signalPid } from '../../lib/pids';
import { loadIn } from './measure';
import type { FailureRecord, LoadResult } from './loadgen';
import YAML from 'yaml';

// -----------------------------------------------------------------------------------------------------
// Pure core

/**
 * What the LB nodes and the backends run: the feature on with a connection table, on without one, or off (IPIP, no
 * hints); and on without one with hints that expire within the run (`secondChance.retainSeconds` short): the
 * backends then keep moved connections alive from memory (decap run's default), or not (`--no-remember-moved`).
 */
export interface ChurnMode {
  name: 'conntrack' | 'stateless' | 'off' | 'expiry' | 'expiry-forget';
  encap: 'gue' | 'ipip';
  stateless: boolean;
  secondChance: boolean;
  /** The LB nodes' secondChance.retainSeconds. */
  retainSeconds: number;
  /** The backends' `decap run` remembers moved flows (false: --no-remember-moved). */
  rememberMoved: boolean;
}

/** The hint's lifetime in the expiry modes: well inside the gap after a change, so most of a run goes unhinted. */
export const EXPIRY_RETAIN_SECONDS = 2;

export const CHURN_MODES: Record<ChurnMode['name'], ChurnMode> = {
  conntrack: { name: 'conntrack', encap: 'gue', stateless: false, secondChance: true, retainSeconds: 300, rememberMoved: true },
  stateless: { name: 'stateless', encap: 'gue', stateless: true, secondChance: true, retainSeconds: 300, rememberMoved: true },
  off: { name: 'off', encap: 'ipip', stateless: false, secondChance: false, retainSeconds: 300, rememberMoved: true },
  expiry: { name: 'expiry', encap: 'gue', stateless: true, secondChance: true, retainSeconds: EXPIRY_RETAIN_SECONDS, rememberMoved: true },
  'expiry-forget': { name: 'expiry-forget', encap: 'gue', stateless: true, secondChance: true, retainSeconds: EXPIRY_RETAIN_SECONDS, rememberMoved: false },
}; // prettier-ignore

export type ChurnStep =
  { kind: 'add' | 'remove'; backend: string } | { kind: 'lb-stop' | 'lb-start'; lb: string };

export interface ChurnSchedule {
  /** Backends in the config when the load starts. */
  initial: string[];
  /** Pairs: a backend change, then an LB change. */
  steps: ChurnStep[];
}

/**
 * A rolling update as a FIFO: add a spare backend, remove the oldest active one, add, remove, ...; after each
 * backend change an LB node leaves, the next time it joins again (the last LB first, then the one before).
 * `pairs` backend changes, each followed by an LB change. Deterministic.
 */
export function churnSchedule(o: { backends: string[]; lbs: string[]; pairs: number }): ChurnSchedule {
  if (o.backends.length < 3)
    throw new Error(
      `churn needs at least 3 backends (a spare to add, one to remove), got ${o.backends.length}`,
    );
  if (o.lbs.length < 2)
    throw new Error(`churn needs at least 2 LB nodes (one always up), got ${o.lbs.length}`);
  if (!Number.isInteger(o.pairs) || o.pairs < 1) throw new Error(`churn pairs must be >= 1, got ${o.pairs}`);
  const nInitial = Math.max(2, o.backends.length - 2);
  const initial = o.backends.slice(0, nInitial);
  const active = [...initial];
  const spare = o.backends.slice(nInitial);
  const steps: ChurnStep[] = [];
  for (let i = 0; i < o.pairs; i++) {
    if (i % 2 === 0) {
      const b = spare.shift()!;
      active.push(b);
      steps.push({ kind: 'add', backend: b });
    } else {
      const b = active.shift()!;
      spare.push(b);
      steps.push({ kind: 'remove', backend: b });
    }
    // LB changes: stop lbK, start lbK, stop lbK-1, start lbK-1, ... (never more than one down).
    const lb = o.lbs[o.lbs.length - 1 - (Math.floor(i / 2) % o.lbs.length)]!;
    steps.push({ kind: i % 2 === 0 ? 'lb-stop' : 'lb-start', lb });
  }
  return { initial, steps };
}

/** A step as it happened: ms after the load started. */
export interface ChurnEvent {
  atMs: number;
  doneMs: number;
  step: ChurnStep;
}

export interface ChurnBreak {
  atMs: number;
  openedAtMs: number;
  kind: string;
  sourcePort: number | null;
  backend: string | null;
  responses: number;
  cause: 'own-backend-removed' | 'superseded' | 'unexplained';
  /** What each running LB node did with the flow right after the break (peak-xdp lookup): backend names. */
  views: LbView[];
}

/** One LB node's choice for a flow (peak-xdp lookup): the backend it sends to and the hint it adds. */
export interface LbView {
  lb: string;
  backend: string | null;
  hint: string | null;
}

/**
 * Why a connection broke.
 * - own-backend-removed: its backend (the last one that answered) was removed while it lived: the removal started
 *   before the break and was done (every LB node programming it) after the connection opened; or it never got an
 *   answer and broke while a removal was being applied;
 * - superseded: the connection was opened after a backend change, an LB node now sends its packets to another
 *   backend with a hint naming a third one, and none hints its backend: its slot moved again and the one previous
 *   owner kept per slot is an older one (src/reconcile/previous.ts keeps the oldest: "A -> B -> C names A"). An LB
 *   node may still send it to its own backend without a hint (its connection-table entry, or its table from
 *   before the change): the flow is on another node (ECMP placement cannot be recomputed here);
 * - unexplained: anything else (e.g. an LB node naming its backend again right after it broke: a transient).
 */
export function breakCause(
  b: { atMs: number; openedAtMs: number; backend: string | null; views?: LbView[] },
  events: ChurnEvent[],
): ChurnBreak['cause'] {
  const removed = events.some(
    (e) =>
      e.step.kind === 'remove' &&
      e.step.backend === b.backend &&
      e.atMs <= b.atMs &&
      (e.doneMs === 0 ? Infinity : e.doneMs) >= b.openedAtMs,
  );
  // A connection that never got an answer cannot say where it went: broken while a removal was being applied,
  // its SYN most likely reached the backend being removed (the LB nodes no longer name a removed backend).
  const unanswered =
    b.backend === null &&
    events.some(
      (e) => e.step.kind === 'remove' && e.atMs <= b.atMs && (e.doneMs === 0 ? Infinity : e.doneMs) >= b.atMs,
    );
  if (removed || unanswered) return 'own-backend-removed';
  const firstChange = events.find((e) => e.step.kind === 'add' || e.step.kind === 'remove');
  const views = b.views ?? [];
  if (
    b.backend !== null &&
    firstChange !== undefined &&
    b.openedAtMs > firstChange.atMs &&
    views.some(
      (v) => v.backend !== null && v.backend !== b.backend && v.hint !== null && v.hint !== b.backend,
    ) &&
    views.every((v) => v.hint !== b.backend)
  )
    return 'superseded';
  return 'unexplained';
}

/** Decap counters summed over the backends (by enum peak_decap_counter name). */
export type Counters = Record<string, number>;

export function deltaOf(a: Counters, b: Counters): Counters {
  const out: Counters = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out[k] = (b[k] ?? 0) - (a[k] ?? 0);
  return out;
}

/**
 * The fraction of client packets that took the extra hop in a window of decap counters: second-chance
 * forwards (on a hint, or of a remembered moved flow) over GUE packets from the LB nodes (a forwarded packet is
 * counted as GUE again where it lands, so it is taken out of the total). null when no GUE packet arrived (IPIP).
 */
export function extraHopFraction(d: Counters): {
  forwards: number;
  packets: number;
  fraction: number | null;
} {
  const forwards = (d.sc_forward ?? 0) + (d.sc_moved_forward ?? 0);
  const packets = (d.gue ?? 0) - forwards;
  return { forwards, packets, fraction: packets > 0 ? forwards / packets : null };
}

/** Parses `peak_xdp_decap_packets_total{...,result="x"} n` lines of a decap agent's /metrics. */
export function parseDecapMetrics(text: string): Counters {
  const out: Counters = {};
  for (const l of text.split('\n')) {
    const m = /^peak_xdp_decap_packets_total\{[^}]*result="([a-z0-9_]+)"[^}]*\}\s+(\S+)/.exec(l);
    if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  }
  return out;
}

export interface ChurnResult {
  mode: ChurnMode['name'];
  connections: number;
  /** ChurnOptions.connectionRequests (null: long-lived connections) and settleMs of the run. */
  connectionRequests: number | null;
  settleMs: number;
  events: ChurnEvent[];
  /** Breaks by cause. */
  broken: { total: number; ownBackendRemoved: number; superseded: number; unexplained: number };
  breaks: ChurnBreak[];
  /** Requests and connections of the load. */
  load: { ok: number; sent: number; connectionsOpened: number; errors: Record<string, number> };
  /** Balancer counters summed over LB nodes (encap_gue, hint_sent, stateless_forward, ct_insert, ...). */
  lb: Counters;
  /** Decap counters summed over backends, per window. */
  decap: { steady: Counters; changes: Counters; after: Counters };
  extraHop: {
    steady: ReturnType<typeof extraHopFraction>;
    changes: ReturnType<typeof extraHopFraction>;
    after: ReturnType<typeof extraHopFraction>;
  };
  /** How long the load ran (warm-up, the schedule, the tail). */
  durationMs: number;
}

/** Connections that could not be opened (not counted as broken: they never carried a request). */
export function connectFailures(r: ChurnResult): number {
  return Object.entries(r.load.errors)
    .filter(([k]) => k.startsWith('connect_'))
    .reduce((a, [, v]) => a + v, 0);
}

/** The run's mode, with its connections' lifetime when they turn over. */
const modeLabel = (r: ChurnResult): string =>
  r.connectionRequests === null ? r.mode : `${r.mode}, connections of ${r.connectionRequests} requests`;

/** One line per result for logs and reports. */
export function churnLine(r: ChurnResult): string {
  const pct = (x: ReturnType<typeof extraHopFraction>): string =>
    x.fraction === null ? 'n/a' : `${(x.fraction * 100).toFixed(2)}% (${x.forwards}/${x.packets})`;
  return (
    `${modeLabel(r).padEnd(9)} broken ${r.broken.total} (own backend removed ${r.broken.ownBackendRemoved}, superseded ${r.broken.superseded}, ` +
    `unexplained ${r.broken.unexplained}) of ${r.load.connectionsOpened} connections, failed connects ${connectFailures(r)}, ` +
    `${r.load.ok} requests ok; hints sent ${r.lb.hint_sent ?? 0}, ` +
    `GUE ${r.lb.encap_gue ?? 0}, stateless ${r.lb.stateless_forward ?? 0}, ct inserts ${r.lb.ct_insert ?? 0}; ` +
    `extra hop: steady ${pct(r.extraHop.steady)}, during changes ${pct(r.extraHop.changes)}, after ${pct(r.extraHop.after)}`
  );
}

/** Markdown table of results (one row each). */
export function churnMarkdown(rs: ChurnResult[]): string {
  const pct = (x: ReturnType<typeof extraHopFraction>): string =>
    x.fraction === null ? '-' : `${(x.fraction * 100).toFixed(2)}%`;
  return [
    '| run | mode | connections | broken | own backend removed | superseded | unexplained | hints sent | extra hop: steady / changes / after |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rs.map(
      (r, i) =>
        `| ${i + 1} | ${modeLabel(r)} | ${r.load.connectionsOpened} | ${r.broken.total} | ${r.broken.ownBackendRemoved} | ${r.broken.superseded} | ` +
        `${r.broken.unexplained} | ${r.lb.hint_sent ?? 0} | ${pct(r.extraHop.steady)} / ${pct(r.extraHop.changes)} / ${pct(r.extraHop.after)} |`,
    ),
  ].join('\n');
}

// -----------------------------------------------------------------------------------------------------
// Shell over a testbed that is up

const DECAP_METRICS = '127.0.0.1:9472';
const log0 = (): void => undefined;

export interface ChurnOptions {
  connections: number;
  /** Backend change + LB change pairs. */
  pairs: number;
  /** Pause after each pair (backend change + LB change) before the next: the flows it moved settle. */
  gapMs: number;
  /** Load before the first change (connections open, then the steady-state window). */
  warmMs: number;
  /** Load after the last pair's gap: the window "after the changes". */
  tailMs: number;
  /** Request timeout: a connection whose request waits this long counts as broken. */
  timeoutMs: number;
  /**
   * Connection turnover: each connection is closed after this many requests (one per 100 ms) and a new one
   * opened. Default: connections live until they break or the load ends.
   */
  connectionRequests?: number;
  /** Wait after the last pair's gap before the "after" window (e.g. one connection lifetime). Default 0. */
  settleMs?: number;
  log?: (l: string) => void;
}

/** Drives the churn scenario on an up testbed (IPv4 service VIP). */
export class ChurnRig {
  private readonly log: (l: string) => void;
  /** What each LB's /state last showed of the VIP (waitPrograms says it when an LB does not converge). */
  private readonly lastSeen = new Map<string, string>();

  constructor(private readonly p: Plan) {
    this.log = log0;
  }

  private get vip(): string {
    return serviceVip(this.p, 4).address;
  }

  /**
   * Backends forward second-chance packets (bpf_fib_lookup needs forwarding on their interface; XDP_TX on veth
   * needs an XDP program on the router's side) and run `peak-xdp decap run` (GUE port default 6080).
   */
  async prepareBackends(): Promise<void> {
    const obj = join(this.p.stateDir, 'xdp_pass.bpf.o');
    for (const be of this.p.backends) {
      const l = be.link!;
      runIn(be.netns, 'sysctl', ['-qw', `net.ipv4.conf.${l.hostIf}.forwarding=1`, `net.ipv6.conf.${l.hostIf}.forwarding=1`]); // prettier-ignore
      const has = run('ip', ['-n', this.p.router.netns, '-d', 'link', 'show', l.routerIf]).includes(
        'prog/xdp',
      );
      if (!has) run('ip', ['-n', this.p.router.netns, 'link', 'set', 'dev', l.routerIf, 'xdpdrv', 'obj', obj, 'sec', 'xdp']); // prettier-ignore
      // A decap attached by `decap attach` (the bench's systems) would be replaced by run's; detach it first.
      detachXdpIn(be);
      this.startDecap(be);
    }
    this.decapsRemember = true;
    await this.waitDecaps();
  }

  private async waitDecaps(): Promise<void> {
    for (const be of this.p.backends) {
      const ok = await waitFor(() => this.decapMetricsText(be) !== '', {
        timeoutMs: 30_000,
        intervalMs: 200,
      });
      if (!ok) {
        const f = join(this.p.stateDir, be.name, 'decap-run.log');
        const tail = existsSync(f) ? readFileSync(f, 'utf8').slice(-1500) : '(no log)';
        throw new Error(`decap run on ${be.name} serves no /metrics after 30 s:\n${tail}`);
      }
    }
  }

  /** Restarts every `decap run` with (or without) --no-remember-moved when the mode asks otherwise than they run.
   * The pinned maps stay: what they remembered stays too, but a run without remembering neither writes nor reads
   * them. */
  private async decapsFor(mode: ChurnMode): Promise<void> {
    if (mode.rememberMoved === this.decapsRemember) return;
    await this.stopDecaps();
    for (const be of this.p.backends) this.startDecap(be, mode.rememberMoved);
    this.decapsRemember = mode.rememberMoved;
    await this.waitDecaps();
  }

  /** Whether the running `decap run`s remember moved flows (their flag, as started). */
  private decapsRemember = true;

  private startDecap(be: Host, rememberMoved = true): number {
    const dir = join(this.p.stateDir, be.name);
    const pins = join(this.p.bpffsDir, 'churn-decap', be.name);
    mkdirSync(dir, { recursive: true });
    mkdirSync(pins, { recursive: true });
    const fd = openSync(join(dir, 'decap-run.log'), 'a');
    // Detached: a test runner's exit does not take it down; stopDecaps (or the testbed's down) ends it.
    // Hints are honoured only from the LB nodes (--from); GUE from the other backends is the second-chance hop.
    const from = this.p.lbs.flatMap((l) => ['--from', `${l.link!.hostV4.address}/32`, '--from', `${l.link!.hostV6.address}/128`]); // prettier-ignore
    const gueFrom = this.p.backends.flatMap((b) => ['--gue-from', `${b.link!.hostV4.address}/32`, '--gue-from', `${b.link!.hostV6.address}/128`]); // prettier-ignore
    const remember = rememberMoved ? [] : ['--no-remember-moved'];
    const child = spawn('ip', ['netns', 'exec', be.netns, 'node', CLI_JS, 'decap', 'run', '--interface', be.link!.hostIf, '--mode', 'native', '--metrics-listen', DECAP_METRICS, '--bpffs', pins, ...from, ...gueFrom, ...remember], { detached: true, stdio: ['ignore', fd, fd] }); // prettier-ignore
    closeSync(fd);
    child.unref();
    return child.pid!;
  }

  /** Stops every `decap run` of this rig (SIGTERM: it detaches). */
  async stopDecaps(): Promise<void> {
    for (const be of this.p.backends)
      for (const pid of nsPids(be.netns)) {
        const cmd = readCmdline(pid);
        if (cmd.includes(CLI_JS) && cmd.includes('decap')) signalPid(pid, 'SIGTERM');
      }
    await waitFor(() => this.p.backends.every((be) => nsPids(be.netns).every((pid) => !readCmdline(pid).includes('decap'))), { timeoutMs: 10_000 }); // prettier-ignore
  }

  private decapMetricsText(be: Host): string {
    return runIn(be.netns, 'curl', ['-s', '-m', '2', `http://${DECAP_METRICS}/metrics`], { allowFail: true });
  }

  /** Decap counters summed over every backend. */
  decapCounters(): Counters {
    const sum: Counters = {};
    for (const be of this.p.backends)
      for (const [k, v] of Object.entries(parseDecapMetrics(this.decapMetricsText(be))))
        sum[k] = (sum[k] ?? 0) + v;
    return sum;
  }

  /** Balancer counters summed over every LB node's pinned maps (daemons running or not). */
  async lbCounters(): Promise<Counters> {
    const sum: Counters = {};
    for (const lb of this.p.lbs) {
      const root = join(lbPinRoot(this.p, lb), 'peak-xdp');
      for (const ns of existsSync(root) ? readdirSync(root) : []) {
        const dir = join(root, ns, lb.link!.hostIf);
        if (!existsSync(dir)) continue;
        const dp = KernelDatapath.adopt({ pinDir: dir });
        try {
          for (const [k, v] of Object.entries((await dp.counters()).global))
            sum[k] = (sum[k] ?? 0) + Number(v);
        } finally {
          dp.close();
        }
      }
    }
    return sum;
  }

  /** Stops every LB daemon, detaches XDP and removes the pins: the next mode starts with empty tables. */
  async resetLbs(): Promise<void> {
    for (const lb of this.p.lbs) stopDaemon(this.p, lb, { signal: 'SIGTERM' });
    await waitFor(() => this.p.lbs.every((lb) => daemonPids(lb).length === 0), { timeoutMs: 8000 });
    for (const lb of this.p.lbs) stopDaemon(this.p, lb, { signal: 'SIGKILL' });
    await waitFor(() => this.p.lbs.every((lb) => daemonPids(lb).length === 0), { timeoutMs: 3000 });
    for (const lb of this.p.lbs) {
      detachXdpIn(lb);
      rmSync(lbPinRoot(this.p, lb), { recursive: true, force: true });
    }
  }

  /** The daemon config of an LB node for a mode and a backend set: only the IPv4 service VIP. */
  config(lb: Host, mode: ChurnMode, backends: string[]): Record<string, unknown> {
    const bs = this.p.backends.filter((b) => backends.includes(b.name));
    const cfg = daemonConfig(this.p, lb, { backends: bs });
    const vips = (cfg.vips as Record<string, unknown>[])
      .filter((v) => v.address === this.vip)
      .map((v) => ({ ...v, encap: mode.encap, stateless: mode.stateless }));
    return { ...cfg, vips, secondChance: { enabled: mode.secondChance, retainSeconds: mode.retainSeconds } };
  }

  private writeConfigs(mode: ChurnMode, backends: string[]): void {
    for (const lb of this.p.lbs)
      writeDaemonConfig(this.p, lb, YAML.stringify(this.config(lb, mode, backends)));
  }

  private async admin(lb: Host, path: string): Promise<{ status: number; body: string }> {
    const r = await runAsync('ip', ['netns', 'exec', lb.netns, 'curl', '-s', '-m', '2', '-w', '\n%{http_code}', `http://127.0.0.1:9470${path}`], { timeoutMs: 4000 }); // prettier-ignore
    const k = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(k + 1)) || 0, body: r.stdout.slice(0, Math.max(0, k)) };
  }

  /** Whether the daemon of this LB programs exactly these backends, every one up. */
  private async programs(lb: Host, backends: string[]): Promise<boolean> {
    const r = await this.admin(lb, '/state');
    if (r.status !== 200) {
      this.lastSeen.set(lb.name, `/state answered ${r.status || 'nothing'}`);
      return false;
    }
    const st = JSON.parse(r.body) as {
      desired: { vips: { address: string; backends: { address: string; state: string }[] }[] } | null;
    };
    const v = st.desired?.vips.find((x) => x.address === this.vip);
    this.lastSeen.set(
      lb.name,
      v === undefined
        ? `/state has no VIP ${this.vip}`
        : `/state: ${v.backends.map((b) => `${b.address} ${b.state}`).join(', ')}`,
    );
    if (!v) return false;
    const want = this.p.backends
      .filter((b) => backends.includes(b.name))
      .map((b) => b.link!.hostV4.address)
      .sort();
    const have = v.backends.map((b) => b.address).sort();
    return have.join() === want.join() && v.backends.every((b) => b.state === 'up');
  }

  private async waitPrograms(lbs: Host[], backends: string[], what: string): Promise<void> {
    const end = Date.now() + 30_000;
    for (;;) {
      const ok = await Promise.all(lbs.map((lb) => this.programs(lb, backends)));
      if (ok.every(Boolean)) return;
      if (Date.now() > end)
        throw new Error(
          `${what}: ${lbs
            .filter((_, i) => !ok[i])
            .map((l) => l.name)
            .join(', ')} not programming [${backends.join(', ')}] (all up) after 30 s\n` +
            lbs
              .map(
                (lb) =>
                  `--- ${lb.name} (${this.lastSeen.get(lb.name) ?? 'no answer yet'})\n${daemonLogTail(this.p, lb, 8)}`,
              )
              .join('\n'),
        );
      await sleep(100);
    }
  }

  private async waitRoutes(lbs: Host[], what: string): Promise<void> {
    const want = lbs
      .map((l) => l.link!.hostV4.address)
      .sort()
      .join();
    const ok = await waitFor(() => [...fibNextHops(this.p, this.vip)].sort().join() === want, {
      timeoutMs: 30_000,
      intervalMs: 50,
    });
    if (!ok)
      throw new Error(`${what}: router routes ${this.vip} via [${fibNextHops(this.p, this.vip).join(', ')}], wanted [${want}] after 30 s`); // prettier-ignore
  }

  /** peak-xdp lookup of a client flow to the VIP on one LB node (its pinned maps, read here); null if none. */
  private async lookup(lb: Host, client: string, port: number): Promise<LbView | null> {
    const dir = this.lbPinDir(lb);
    if (dir === null) return null;
    const dp = KernelDatapath.adopt({ pinDir: dir });
    try {
      const r = await lookupPinned(dp, {
        src: { address: client, port },
        dst: { address: this.vip, port: this.p.backendPort },
        protocol: 'tcp',
        syn: false,
        names: new Map(),
      });
      const name = (a: string | null | undefined): string | null =>
        a ? (this.p.backends.find((x) => x.link!.hostV4.address === a)?.name ?? a) : null;
      return { lb: lb.name, backend: name(r.backend?.address), hint: name(r.hint?.address) };
    } catch {
      return null;
    } finally {
      dp.close();
    }
  }

  /** The pin directory of an LB node's balancer (the first one under its pin root); null when none. */
  private lbPinDir(lb: Host): string | null {
    const root = join(lbPinRoot(this.p, lb), 'peak-xdp');
    for (const ns of existsSync(root) ? readdirSync(root) : []) {
      const dir = join(root, ns, lb.link!.hostIf);
      if (existsSync(dir)) return dir;
    }
    return null;
  }

  private up(running: Set<string>): Host[] {
    return this.p.lbs.filter((l) => running.has(l.name));
  }

  /** One run of the scenario in one mode: every LB daemon fresh, the schedule under load, counted. */
  async runMode(mode: ChurnMode, o: ChurnOptions): Promise<ChurnResult> {
    const log = o.log ?? this.log;
    const sched = churnSchedule({
      backends: this.p.backends.map((b) => b.name),
      lbs: this.p.lbs.map((l) => l.name),
      pairs: o.pairs,
    });
    await this.resetLbs();
    await this.decapsFor(mode);
    let active = [...sched.initial];
    this.writeConfigs(mode, active);
    const running = new Set<string>();
    for (const lb of this.p.lbs) {
      startDaemon(this.p, lb, { backends: [], config: this.config(lb, mode, active) });
      running.add(lb.name);
    }
    await this.waitRoutes(this.p.lbs, `${mode.name}: start`);
    await this.waitPrograms(this.p.lbs, active, `${mode.name}: start`);
    log(`${mode.name}: ${this.p.lbs.length} LB nodes up, backends [${active.join(', ')}]`);

    const client = this.p.clients[0]!;
    const clientAddr = client.link!.hostV4.address;
    // The load's length is a bound only: it stops when the schedule is done (stop file), however slow the changes.
    const durationMs = o.warmMs + o.pairs * (o.gapMs + 60_000) + (o.settleMs ?? 0) + o.tailMs;
    const stopFile = join(this.p.stateDir, `churn-stop-${mode.name}-${Date.now()}`);
    const t0Epoch = Date.now();
    const t0 = performance.now();
    const events: ChurnEvent[] = [];
    const breaks: ChurnBreak[] = [];
    let lookupChain: Promise<void> = Promise.resolve();
    const onFailure = (f: FailureRecord): void => {
      if (!f.broken || breaks.length >= 1000) return;
      const b: ChurnBreak = {
        atMs: f.at - t0Epoch,
        openedAtMs: f.openedAt - t0Epoch,
        kind: f.kind,
        sourcePort: f.localPort,
        backend: f.backend,
        responses: f.responses,
        cause: 'unexplained',
        views: [],
      };
      breaks.push(b);
      // What every running LB node does with the flow now (how a break is classified).
      // Not for a break its own backend's removal may explain (they come in bursts; the lookups would lag).
      const removing = events.some((e) => e.step.kind === 'remove' && (e.step.backend === f.backend || f.backend === null)); // prettier-ignore
      if (f.localPort !== null && !removing)
        for (const lb of this.up(running)) {
          // One at a time: a removal breaks many connections at once, and the lookups must not starve the LBs.
          const port = f.localPort;
          lookupChain = lookupChain.then(() => this.lookup(lb, clientAddr, port).then((v) => void (v && b.views.push(v)))); // prettier-ignore
        }
    };
    const load = loadIn(
      client.netns,
      {
        targets: [{ host: this.vip, port: this.p.backendPort }],
        mode: 'persistent',
        connections: o.connections,
        thinkMs: 100,
        requestsPerConnection: o.connectionRequests,
        durationMs,
        maxRequests: 5_000_000,
        timeoutMs: o.timeoutMs,
        bucketMs: 500,
        stopFile,
      },
      undefined,
      onFailure,
    );
    let loadResult: LoadResult | null = null;
    let loadError: unknown = null;
    const settled = load.then(
      (r) => void (loadResult = r),
      (e: unknown) => void (loadError = e),
    );
    const at = (): number => Math.round(performance.now() - t0);
    let c0: Counters = {};
    let c1: Counters = {};
    let c2: Counters = {};
    let c3: Counters = {};
    try {
      // Steady state: the second half of the warm-up, every connection open, no change yet.
      await sleep(o.warmMs / 2);
      c0 = this.decapCounters();
      await sleep(t0 + o.warmMs - performance.now());
      c1 = this.decapCounters();
      for (let i = 0; i < o.pairs; i++) {
        for (const step of sched.steps.slice(2 * i, 2 * i + 2)) {
          const ev: ChurnEvent = { atMs: at(), doneMs: 0, step };
          events.push(ev);
          if ('backend' in step) {
            active =
              step.kind === 'add' ? [...active, step.backend] : active.filter((b) => b !== step.backend);
            this.writeConfigs(mode, active);
            for (const lb of this.up(running)) for (const pid of daemonPids(lb)) signalPid(pid, 'SIGHUP');
            await this.waitPrograms(this.up(running), active, `${mode.name}: ${step.kind} ${step.backend}`);
          } else {
            const lbName: string = step.lb;
            const lb = this.p.lbs.find((l) => l.name === lbName)!;
            if (step.kind === 'lb-stop') {
              running.delete(lb.name);
              stopDaemon(this.p, lb, { signal: 'SIGTERM' });
              await this.waitRoutes(this.up(running), `${mode.name}: stop ${lb.name}`);
              if (!(await waitFor(() => daemonPids(lb).length === 0, { timeoutMs: 10_000 })))
                throw new Error(`${mode.name}: ${lb.name}'s daemon still runs 10 s after SIGTERM`);
            } else {
              startDaemon(this.p, lb, { backends: [], config: this.config(lb, mode, active) });
              running.add(lb.name);
              await this.waitRoutes(this.up(running), `${mode.name}: start ${lb.name}`);
              await this.waitPrograms([lb], active, `${mode.name}: start ${lb.name}`);
            }
          }
          ev.doneMs = at();
          log(`${mode.name}: t=${(ev.atMs / 1000).toFixed(1)}s ${step.kind} ${'backend' in step ? step.backend : step.lb} (${ev.doneMs - ev.atMs} ms)`); // prettier-ignore
        }
        await sleep(o.gapMs);
      }
      await sleep(o.settleMs ?? 0);
      c2 = this.decapCounters();
      await sleep(o.tailMs);
      c3 = this.decapCounters();
    } finally {
      writeFileSync(stopFile, '');
      await settled;
      rmSync(stopFile, { force: true });
    }
    if (loadError) throw loadError instanceof Error ? loadError : new Error(String(loadError));
    await lookupChain;
    const r = loadResult as LoadResult | null;
    if (!r) throw new Error(`${mode.name}: no load result`);
    if (r.elapsedMs >= durationMs)
      throw new Error(
        `${mode.name}: the load ran its whole bound (${durationMs} ms) before the schedule was done`,
      );
    for (const b of breaks) b.cause = breakCause(b, events);
    const own = breaks.filter((b) => b.cause === 'own-backend-removed').length;
    const superseded = breaks.filter((b) => b.cause === 'superseded').length;
    const steady = deltaOf(c0, c1);
    const changes = deltaOf(c1, c2);
    const after = deltaOf(c2, c3);
    return {
      mode: mode.name,
      connections: o.connections,
      connectionRequests: o.connectionRequests ?? null,
      settleMs: o.settleMs ?? 0,
      events,
      broken: {
        total: breaks.length,
        ownBackendRemoved: own,
        superseded,
        unexplained: breaks.length - own - superseded,
      },
      breaks,
      load: { ok: r.ok, sent: r.sent, connectionsOpened: r.connectionsOpened, errors: r.errors },
      lb: await this.lbCounters(),
      decap: { steady, changes, after },
      extraHop: {
        steady: extraHopFraction(steady),
        changes: extraHopFraction(changes),
        after: extraHopFraction(after),
      },
      durationMs: Math.round(r.elapsedMs),
    };
  }
}

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return ''; // exited
  }
}

/**
 * Whether a run measured the path its mode names: feature on, GUE left the LB nodes, hints were sent, the
 * backends saw hinted GUE packets, trusted them and forwarded some (stateless: no connection-table insert,
 * stateless forwards); feature off, no GUE at all and IPIP at the backends. null when it did; otherwise what is missing.
 */
export function churnPathProblem(r: ChurnResult): string | null {
  const lb = (k: string): number => r.lb[k] ?? 0;
  const dec = (k: string): number =>
    (r.decap.steady[k] ?? 0) + (r.decap.changes[k] ?? 0) + (r.decap.after[k] ?? 0);
  const miss: string[] = [];
  if (r.mode === 'off') {
    if (lb('encap_gue') !== 0) miss.push(`LB nodes sent ${lb('encap_gue')} GUE packets with the feature off`);
    if (dec('ipip') === 0) miss.push('the backends decapsulated no IPIP packet');
  } else {
    if (lb('encap_gue') === 0) miss.push('the LB nodes sent no GUE packet');
    if (lb('hint_sent') === 0) miss.push('the LB nodes sent no previous-owner hint');
    // Every GUE packet has exactly one outcome; all but sc_no_hint had a hint.
    if (dec('gue') - dec('sc_no_hint') === 0) miss.push('the backends saw no hinted GUE packet');
    if (dec('sc_hint_untrusted') > 0)
      miss.push(`the backends ignored ${dec('sc_hint_untrusted')} hints as untrusted (decap run --from)`);
    if (dec('sc_forward') === 0) miss.push('no backend forwarded a packet to its previous owner');
    const mode = CHURN_MODES[r.mode];
    if (mode.stateless && lb('ct_insert') !== 0)
      miss.push(`stateless VIP inserted ${lb('ct_insert')} connection-table entries`);
    if (mode.stateless && lb('stateless_forward') === 0) miss.push('no stateless forward counted');
    // hints that expire within the run: the backends forward moved flows from memory, or (--no-remember-moved) not
    if (mode.retainSeconds < 300 && mode.rememberMoved && dec('sc_moved_forward') === 0)
      miss.push('no backend forwarded a remembered moved flow after the hints expired');
    if (!mode.rememberMoved && dec('sc_moved_forward') + dec('sc_moved_new') !== 0)
      miss.push('a backend remembered moved flows with --no-remember-moved');
  }
  return miss.length ? `${r.mode}: ${miss.join('; ')}` : null;
}

/**
 * Connection turnover runs after the interleaved ones (bench:e2e): connections of 30 requests (~3 s each), the
 * "after" window starting 4 s (more than a lifetime) after the last change, so every connection a change moved
 * has ended: the extra hop a change leaves behind once connections turn over (issue 15's < 1 %).
 */
export const CHURN_TURNOVER = {
  modes: ['conntrack', 'stateless'] as ChurnMode['name'][],
  connectionRequests: 30,
  settleMs: 4000,
};

/** Bench parameters by e2e profile (the test sets its own). */
export const CHURN_BENCH: Record<'quick' | 'full', Omit<ChurnOptions, 'log'> & { rounds: number }> = {
  quick: { rounds: 2, connections: 60, pairs: 2, gapMs: 3000, warmMs: 4000, tailMs: 4000, timeoutMs: 6000 },
  full: { rounds: 2, connections: 64, pairs: 6, gapMs: 3000, warmMs: 4000, tailMs: 5000, timeoutMs: 6000 },
};

/**
 * The bench's order: feature on and off interleaved, A B A B, the "on" runs alternating connection-table and
 * stateless mode (so both are measured in a 2-round run).
 */
export function churnBenchOrder(rounds: number): ChurnMode['name'][] {
  const out: ChurnMode['name'][] = [];
  for (let i = 0; i < rounds; i++) out.push(i % 2 === 0 ? 'conntrack' : 'stateless', 'off');
  return out;
}
