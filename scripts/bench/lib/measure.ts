// Measurement shells: load generator and wrk inside the client namespace, CPU counters, ECMP update delay.
import { existsSync, readdirSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../../src/paths';
import { KernelDatapath } from '../../../src/datapath/kernel';
import { lbPinRoot, type Host, type Plan } from '../../testbed/plan';
import { run, runAsync, sleep } from '../../testbed/sh';
import { fibNextHops, nsPids } from '../../testbed/topology';
import type { FailureRecord, LoadOptions, LoadResult, Progress } from './loadgen';
import { parseWrk, WrkResult } from './stats';
import { xdpRunStats, type XdpRunStats } from './bpfstats';
import type { CpuWindow } from './rounds';
import { signalPid } from '../../lib/pids';

const LOADGEN = join(packageRoot, 'dist', 'scripts', 'bench', 'lib', 'loadgen-cli.js');

/** Runs the load generator in a namespace; rejects with its stderr if it fails. `onFailure` gets each failure
 * as it happens (sets reportFailures). */
export async function loadIn(
  netns: string,
  o: LoadOptions,
  onProgress?: (p: Progress) => void,
  onFailure?: (f: FailureRecord) => void,
): Promise<LoadResult> {
  const opts: LoadOptions = onFailure ? { ...o, reportFailures: true } : o;
  const r = await runAsync('ip', ['netns', 'exec', netns, 'node', LOADGEN, JSON.stringify(opts)], {
    timeoutMs: o.durationMs + o.timeoutMs + 30_000,
    onStderrLine: (l) => {
      if (onProgress && l.startsWith('PROGRESS ')) onProgress(JSON.parse(l.slice(9)) as Progress);
      else if (onFailure && l.startsWith('FAILURE ')) onFailure(JSON.parse(l.slice(8)) as FailureRecord);
    },
  });
  if (r.code !== 0)
    throw new Error(`load generator in ${netns} failed (exit ${r.code}): ${r.stderr.slice(-500)}`);
  return JSON.parse(r.stdout) as LoadResult;
}

/** wrk (keep-alive, closed loop) in a namespace against one URL, or one address per thread (DNS RR). */
export async function wrkIn(o: {
  netns: string;
  hosts: string[];
  port: number;
  connections: number;
  durationS: number;
  scriptDir: string;
}): Promise<WrkResult> {
  const fmt = (h: string): string => (h.includes(':') ? `[${h}]` : h);
  const threads = Math.max(1, Math.min(o.hosts.length, o.connections));
  const args = [
    '-t',
    String(threads),
    '-c',
    String(Math.max(o.connections, threads)),
    '-d',
    `${o.durationS}s`,
    '--latency',
    '--timeout',
    '2s',
  ];
  if (o.hosts.length > 1) {
    // wrk's setup() gives each thread one of the addresses: a client per cached DNS record.
    mkdirSync(o.scriptDir, { recursive: true });
    const lua = join(o.scriptDir, 'dnsrr.lua');
    const list = o.hosts.map((h) => `"${h}"`).join(', ');
    writeFileSync(
      lua,
      `-- One backend address per wrk thread (DNS round-robin clients).\nlocal hosts = { ${list} }\nlocal n = 0\nfunction setup(thread)\n  n = n + 1\n  thread.addr = wrk.lookup(hosts[((n - 1) % #hosts) + 1], "${o.port}")[1]\nend\n`,
    );
    args.push('-s', lua);
  }
  args.push(`http://${fmt(o.hosts[0]!)}:${o.port}/`);
  const r = await runAsync('ip', ['netns', 'exec', o.netns, 'wrk', ...args], {
    timeoutMs: (o.durationS + 15) * 1000,
  });
  if (r.code !== 0) throw new Error(`wrk failed (exit ${r.code}): ${r.stderr.slice(-300)}`);
  return parseWrk(r.stdout);
}

/** Machine-wide CPU jiffies (every namespace shares the two cores). */
export function cpuTimes(): { busy: number; softirq: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return {
    busy: user + nice + system + irq + softirq + steal,
    softirq,
    total: user + nice + system + idle + iowait + irq + softirq + steal,
  };
}

/** CPU time (jiffies) of every process in the given namespaces (user+system). */
export function nsProcessCpu(netnses: string[]): number {
  return pidsCpu(netnses.flatMap((ns) => nsPids(ns)));
}

/** CPU time (jiffies, user+system) of these processes; ones that exited count 0. */
export function pidsCpu(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += Number(f[11]) + Number(f[12]);
    } catch {
      // Exited between listing and reading.
    }
  }
  return sum;
}

/**
 * VIP packets the peak-xdp balancers on these LB nodes have forwarded (encap_v4 + encap_v6, summed over nodes),
 * read from the pinned counters (every pin directory under each node's pin root); null when none is pinned.
 */
export async function peakVipPackets(p: Plan, lbs: Host[]): Promise<number | null> {
  let total = 0;
  let found = 0;
  for (const lb of lbs) {
    const root = join(lbPinRoot(p, lb), 'peak-xdp');
    if (!existsSync(root)) continue;
    for (const ns of readdirSync(root)) {
      const dir = join(root, ns, lb.link!.hostIf);
      if (!existsSync(dir)) continue;
      const dp = KernelDatapath.adopt({ pinDir: dir });
      try {
        const g = (await dp.counters()).global;
        total += Number((g.encap_v4 ?? 0n) + (g.encap_v6 ?? 0n));
        found++;
      } finally {
        dp.close();
      }
    }
  }
  return found ? total : null;
}

export const JIFFY_US = 1e6 / 100;

/** Packets the router has sent to each LB node (tx counter of its side of the LB's link), by LB name. */
export function routerTxPackets(p: Plan, lbs: Host[] = p.lbs): Record<string, number> {
  const out: Record<string, number> = {};
  for (const lb of lbs) {
    const j = JSON.parse(
      run('ip', ['-n', p.router.netns, '-s', '-j', 'link', 'show', lb.link!.routerIf]),
    ) as { stats64: { tx: { packets: number } } }[];
    out[lb.name] = j[0]!.stats64.tx.packets;
  }
  return out;
}

/** ExaBGP as a reference announcer on an LB (for the ECMP delay when peak-xdp is not available). */
export function startExabgp(p: Plan, lb: Host, prefix: string): number {
  const dir = join(p.stateDir, lb.name);
  mkdirSync(dir, { recursive: true });
  const l = lb.link!;
  const conf = join(dir, 'exabgp.conf');
  writeFileSync(
    conf,
    [
      `neighbor ${l.routerV4.address} {`,
      `  router-id ${l.hostV4.address};`,
      `  local-address ${l.hostV4.address};`,
      `  local-as ${lb.asn};`,
      `  peer-as ${p.routerAsn};`,
      '  hold-time 3;',
      '  family { ipv4 unicast; }',
      `  static { route ${prefix} next-hop self; }`,
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn('ip', ['netns', 'exec', lb.netns, 'exabgp', conf], {
    detached: true,
    stdio: 'ignore',
    env: {
      ...process.env,
      'exabgp.daemon.user': 'root',
      'exabgp.daemon.drop': 'false',
      'exabgp.log.destination': join(dir, 'exabgp.log'),
    },
  });
  child.unref();
  return child.pid!;
}

export function killExabgp(lb: Host): void {
  for (const pid of nsPids(lb.netns)) {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmd.includes('exabgp')) signalPid(pid, 'SIGKILL');
  }
}

/** Polls the router FIB every intervalMs until the next-hop set equals want; returns ms waited or null on timeout. */
export async function waitFib(o: {
  plan: Plan;
  address: string;
  want: string[];
  timeoutMs: number;
  intervalMs: number;
  since: number;
}): Promise<number | null> {
  const want = [...o.want].sort().join(',');
  while (performance.now() - o.since < o.timeoutMs) {
    if ([...fibNextHops(o.plan, o.address)].sort().join(',') === want) return performance.now() - o.since;
    await sleep(o.intervalMs);
  }
  return null;
}

/** Cumulative counters at one moment, for a CpuWindow (scripts/bench/lib/rounds.ts) between two of them. */
export interface Snapshot {
  atMs: number;
  busyJ: number;
  softirqJ: number;
  lbProcJ: number;
  daemonJ: number | null;
  xdp: XdpRunStats | null;
  vipPackets: number | null;
}

/** Reads every counter a window needs; `daemons` lists the peak-xdp daemon pids (null: not peak-xdp). */
export async function snapshot(o: {
  plan: Plan;
  lbs: Host[];
  daemons: (() => number[]) | null;
}): Promise<Snapshot> {
  const c = cpuTimes();
  return {
    atMs: performance.now(),
    busyJ: c.busy,
    softirqJ: c.softirq,
    lbProcJ: nsProcessCpu(o.lbs.map((l) => l.netns)),
    daemonJ: o.daemons ? pidsCpu(o.daemons()) : null,
    xdp: xdpRunStats(o.lbs),
    vipPackets: o.daemons ? await peakVipPackets(o.plan, o.lbs) : null,
  };
}

/** The window between two snapshots (a daemon that restarted in between makes its CPU delta meaningless). */
export function windowOf(a: Snapshot, b: Snapshot): CpuWindow {
  const both = <T>(x: T | null, y: T | null, f: (x: T, y: T) => number): number | null =>
    x === null || y === null ? null : f(x, y);
  const xdp =
    a.xdp && b.xdp
      ? { runTimeNs: b.xdp.runTimeNs - a.xdp.runTimeNs, runCount: b.xdp.runCount - a.xdp.runCount }
      : null;
  return {
    ms: b.atMs - a.atMs,
    busyJ: b.busyJ - a.busyJ,
    softirqJ: b.softirqJ - a.softirqJ,
    lbProcJ: b.lbProcJ - a.lbProcJ,
    daemonJ: both(a.daemonJ, b.daemonJ, (x, y) => y - x),
    xdp,
    vipPackets: both(a.vipPackets, b.vipPackets, (x, y) => y - x),
  };
}
