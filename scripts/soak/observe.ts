// Observation during a soak: daemon RSS/fds, BGP session states (daemon and router side), the router's ECMP
// next hops per VIP, the daemons' admin API, and connection-table lookups of failed flows.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { KernelDatapath } from '../../src/datapath/kernel';
import { pinDir } from '../../src/daemon/pins';
import { Host, lbPinRoot, Plan } from '../testbed/plan';
import { daemonPids } from '../testbed/peak';
import { bgpSessions } from '../testbed/topology';
import { run } from '../testbed/sh';
import { setTimeout as sleep } from 'node:timers/promises';

const execFileP = promisify(execFile);
const ADMIN = 'http://127.0.0.1:9470';

/** GET on an LB daemon's admin API (JSON), from inside its namespace; null when it does not answer. */
export async function adminGet<T>(lb: Host, path: string, timeoutS = 2): Promise<T | null> {
  try {
    const r = await execFileP(
      'ip',
      ['netns', 'exec', lb.netns, 'curl', '-s', '-m', String(timeoutS), `${ADMIN}${path}`],
      { timeout: (timeoutS + 3) * 1000, maxBuffer: 64 << 20 },
    );
    return JSON.parse(r.stdout) as T;
  } catch {
    return null;
  }
}

/** The parts of the daemon's /state the soak reads. */
export interface DaemonState {
  attached: boolean;
  readiness: { ready: boolean; reasons: string[] };
  reloadError: string | null;
  reattaches?: number;
  desired: {
    vips: {
      name: string;
      address: string;
      backends: { address: string; weight: number; health: string; state: string }[];
    }[];
  } | null;
  bgp: { peers: { peer: string; state: string; establishedCount: number; transitions: number }[] } | null;
}

export interface ResourceSample {
  t: number;
  lb: string;
  pid: number;
  rssKiB: number;
  fds: number;
}

/** A BGP session state seen to change (sampled): daemon side `lb1 -> 10.77.11.1`, router side `lb1_v4`. */
export interface SessionChange {
  t: number;
  side: 'daemon' | 'router';
  session: string;
  from: string | null;
  to: string;
}

/** The router's next hops (LB node names) for a VIP (by name), from this time on. */
export interface FibChange {
  t: number;
  vip: string;
  lbs: string[];
}

function procRssKiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function procFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Next hops of the router's route to an address, as LB names ('?' for an unknown gateway). */
export async function fibLbs(p: Plan, address: string): Promise<string[]> {
  const fam = address.includes(':') ? '-6' : '-4';
  let out = '';
  try {
    out = (await execFileP('ip', ['-n', p.router.netns, fam, '-j', 'route', 'show', 'exact', address]))
      .stdout;
  } catch {
    return [];
  }
  if (!out.trim()) return [];
  const routes = JSON.parse(out) as { gateway?: string; nexthops?: { gateway?: string }[] }[];
  const gws = routes.flatMap((r) =>
    r.nexthops ? r.nexthops.map((n) => n.gateway ?? '?') : r.gateway ? [r.gateway] : [],
  );
  const byAddr = new Map(
    p.lbs.flatMap((lb) => [
      [lb.link!.hostV4.address, lb.name],
      [lb.link!.hostV6.address, lb.name],
    ]),
  );
  return gws.map((g) => byAddr.get(g) ?? g).sort();
}

/**
 * Samples in the background while started: resources every resourceMs, daemon /state every stateMs, router
 * sessions every routerMs, the FIB of `vips` every fibMs. Each sampler skips a tick while its last one runs.
 */
export class Observer {
  readonly resources: ResourceSample[] = [];
  readonly sessionChanges: SessionChange[] = [];
  readonly fibChanges: FibChange[] = [];
  /** Last /state per LB (null: did not answer). */
  readonly states = new Map<string, DaemonState | null>();
  private readonly lastSession = new Map<string, { state: string; established: number }>();
  private readonly lastFib = new Map<string, string>();
  private timers: NodeJS.Timeout[] = [];
  private readonly busy = new Set<string>();

  constructor(
    private readonly o: {
      plan: Plan;
      /** VIPs whose router next hops are followed (FibChange.vip is the name). */
      vips: { name: string; address: string }[];
      resourceMs: number;
      stateMs: number;
      routerMs: number;
      fibMs: number;
    },
  ) {}

  start(): void {
    const every = (name: string, ms: number, fn: () => Promise<void> | void): void => {
      const tick = (): void => {
        if (this.busy.has(name)) return;
        this.busy.add(name);
        Promise.resolve()
          .then(fn)
          .catch(() => undefined)
          .finally(() => this.busy.delete(name));
      };
      tick();
      this.timers.push(setInterval(tick, ms));
    };
    every('resources', this.o.resourceMs, () => this.sampleResources());
    every('state', this.o.stateMs, () => this.sampleStates());
    every('router', this.o.routerMs, () => this.sampleRouter());
    every('fib', this.o.fibMs, () => this.sampleFib());
  }

  /** Stops sampling and waits for running samples to finish (bounded). */
  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (let i = 0; i < 100 && this.busy.size > 0; i++) await sleep(50);
  }

  /** The router's current next hops for a VIP by name (last sample). */
  fibNow(vip: string): string[] {
    const v = this.lastFib.get(vip);
    return v ? v.split(',').filter(Boolean) : [];
  }

  sampleResources(): void {
    const t = Date.now();
    for (const lb of this.o.plan.lbs)
      for (const pid of daemonPids(lb)) {
        const rss = procRssKiB(pid);
        const fds = procFds(pid);
        if (rss !== null && fds !== null) this.resources.push({ t, lb: lb.name, pid, rssKiB: rss, fds });
      }
  }

  private noteSession(side: 'daemon' | 'router', session: string, state: string, established: number): void {
    const key = `${side}|${session}`;
    const prev = this.lastSession.get(key);
    const t = Date.now();
    if (!prev || prev.state !== state) {
      this.sessionChanges.push({ t, side, session, from: prev?.state ?? null, to: state });
    } else if (established > prev.established) {
      // Re-established between two samples: the state looks the same but the session went down and up.
      this.sessionChanges.push({
        t,
        side,
        session,
        from: `${state} (down and up between samples)`,
        to: state,
      });
    }
    this.lastSession.set(key, { state, established });
  }

  async sampleStates(): Promise<void> {
    await Promise.all(
      this.o.plan.lbs.map(async (lb) => {
        const st = await adminGet<DaemonState>(lb, '/state');
        this.states.set(lb.name, st);
        if (!st) {
          this.noteSession('daemon', `${lb.name} (admin API)`, 'no answer', 0);
          return;
        }
        this.noteSession('daemon', `${lb.name} (admin API)`, 'answering', 0);
        for (const peer of st.bgp?.peers ?? [])
          this.noteSession('daemon', `${lb.name} -> ${peer.peer}`, peer.state, peer.establishedCount);
      }),
    );
  }

  sampleRouter(): void {
    const sessions = bgpSessions(this.o.plan);
    if (sessions.length === 0) {
      this.noteSession('router', 'bird', 'not answering', 0);
      return;
    }
    this.noteSession('router', 'bird', 'answering', 0);
    for (const s of sessions) this.noteSession('router', s.peer, s.state.split(/\s+/)[0] ?? s.state, 0);
  }

  async sampleFib(): Promise<void> {
    const t = Date.now();
    for (const v of this.o.vips) {
      const lbs = await fibLbs(this.o.plan, v.address);
      const key = lbs.join(',');
      if (this.lastFib.get(v.name) !== key) {
        this.lastFib.set(v.name, key);
        this.fibChanges.push({ t, vip: v.name, lbs });
      }
    }
  }
}

/** Where a flow is in the LB nodes' connection tables: LB name -> backend address (null: unknown id). */
export type FlowPlaces = Map<string, { lb: string; backend: string | null }[]>;

export const flowKey = (source: string, sourcePort: number, destination: string): string =>
  `${source}|${sourcePort}|${destination}`;

/** Reads every LB node's pinned connection table (from the shared bpffs, no namespace needed). */
export async function readConntrack(p: Plan): Promise<{ places: FlowPlaces; errors: string[] }> {
  const places: FlowPlaces = new Map();
  const errors: string[] = [];
  for (const lb of p.lbs) {
    let dp: KernelDatapath | null = null;
    try {
      dp = KernelDatapath.adopt({
        pinDir: pinDir({ bpffs: lbPinRoot(p, lb), netns: lb.netns, ifname: lb.link!.hostIf }),
      });
      const backends = new Map((await dp.listBackends()).map((b) => [b.id, b.address]));
      for (const e of await dp.conntrack()) {
        const k = flowKey(e.source, e.sourcePort, e.destination);
        const list = places.get(k) ?? [];
        list.push({ lb: lb.name, backend: backends.get(e.backendId) ?? null });
        places.set(k, list);
      }
    } catch (e) {
      errors.push(`${lb.name}: ${(e as Error).message}`);
    } finally {
      dp?.close();
    }
  }
  return { places, errors };
}

/** Datapath counters that tell what happened to packets (drops by reason, connection-table re-selections). */
export const TELLING_COUNTERS = /^(drop_|ct_reselect|ct_expired|pass_not_ready|icmp_too_big_sent)/;

/** Every LB node's global datapath counters, read from its pinned stats map: LB name -> counter -> value. */
export async function readCounters(p: Plan): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const lb of p.lbs) {
    let dp: KernelDatapath | null = null;
    try {
      dp = KernelDatapath.adopt({
        pinDir: pinDir({ bpffs: lbPinRoot(p, lb), netns: lb.netns, ifname: lb.link!.hostIf }),
      });
      const g = (await dp.counters()).global;
      out[lb.name] = Object.fromEntries(Object.entries(g).map(([k, v]) => [k, Number(v)]));
    } catch {
      // Not pinned yet or gone: no counters for this node.
    } finally {
      dp?.close();
    }
  }
  return out;
}

/** Counter increases between two reads, only the telling ones and only those that moved: "lb1 drop_no_backend +3". */
export function counterDeltas(
  a: Record<string, Record<string, number>>,
  b: Record<string, Record<string, number>>,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [lb, after] of Object.entries(b))
    for (const [k, v] of Object.entries(after)) {
      const d = v - (a[lb]?.[k] ?? 0);
      if (d > 0 && TELLING_COUNTERS.test(k)) (out[lb] ??= {})[k] = d;
    }
  return out;
}

export const formatDeltas = (d: Record<string, Record<string, number>>): string =>
  Object.entries(d)
    .map(
      ([lb, c]) =>
        `${lb} ${Object.entries(c)
          .map(([k, v]) => `${k} +${v}`)
          .join(', ')}`,
    )
    .join('; ');

/** Kernel counters of an LB node that should stay still: its kernel forwards nothing while XDP handles the VIPs. */
export interface KernelCounters {
  /** Packets its kernel forwarded (IPv4 + IPv6): VIP packets XDP let through, routed back to the router. */
  forwarded: number;
  /** ICMP time-exceeded it sent (v4 + v6): such packets looping between it and the router. */
  timeExceeded: number;
}

const NSTAT = ['IpForwDatagrams', 'Ip6OutForwDatagrams', 'IcmpOutTimeExcds', 'Icmp6OutTimeExcds'];

/** Reads an LB node's forwarding and ICMP counters (nstat, absolute, history untouched). */
export function kernelCounters(lb: Host): KernelCounters {
  const out = run('ip', ['netns', 'exec', lb.netns, 'nstat', '-asz', ...NSTAT], { allowFail: true });
  const v: Record<string, number> = {};
  for (const line of out.split('\n')) {
    const [k, n] = line.trim().split(/\s+/);
    if (k && NSTAT.includes(k)) v[k] = Number(n) || 0;
  }
  return {
    forwarded: (v.IpForwDatagrams ?? 0) + (v.Ip6OutForwDatagrams ?? 0),
    timeExceeded: (v.IcmpOutTimeExcds ?? 0) + (v.Icmp6OutTimeExcds ?? 0),
  };
}

/** XDP program id attached to a host's eth0 (0: none). */
export function xdpProgId(h: Host): number {
  const out = run('ip', ['-n', h.netns, '-j', '-d', 'link', 'show', h.link!.hostIf], { allowFail: true });
  try {
    const j = JSON.parse(out) as { xdp?: { prog?: { id?: number } } }[];
    return j[0]?.xdp?.prog?.id ?? 0;
  } catch {
    return 0;
  }
}
