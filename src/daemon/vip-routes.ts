// The kernel's safety net for VIP traffic: one `blackhole` route per VIP address in the main table.
//
// XDP sees a VIP packet before routing, so while the balancer is attached these routes change nothing for
// load-balanced traffic. When the program is off the interface (detached by hand, until the daemon puts it
// back), VIP packets reach the node's kernel: with ip_forward=1 (every Kubernetes node) it routed them back
// to the router, which sent them here again until the TTL ran out, and the ICMP time-exceeded aborted new
// connections (EHOSTUNREACH); some reached the other LB nodes and broke flows there. A blackhole route drops
// them silently instead: TCP retransmits (a SYN after 1 s, data after ~200 ms) and the flow survives.
//
// Our routes are told apart by protocol (VIP_ROUTE_PROTO) and by a metric derived from the interface name
// (vipRouteMetric), so two daemons in one network namespace (one per interface) never touch each other's
// routes, and a route someone else made for the same /32 wins over ours (lower metric) and is never replaced.
// Local delivery is unaffected: the local table is looked up before main, so a VIP that is also an address of
// this node is still delivered to it. Locally originated packets to a VIP do hit the route (connect() fails
// with EINVAL): see the README (vipBlackholeRoutes).
import { execFile } from 'node:child_process';
import { canonicalIp } from '../model/ip';
import type { Logger } from '../log';

/** The `proto` of our routes (`ip route show proto 252`); not one of the kernel's or iproute2's named ones. */
export const VIP_ROUTE_PROTO = 252;
/** Our metrics are METRIC_BASE + a 24-bit hash of the interface name (far above any usual metric). */
const METRIC_BASE = 0x7f000000;
/** How often the routes are checked (re-added if someone removed them) between syncs. */
export const VIP_ROUTE_RECHECK_MS = 10_000;
const IP_TIMEOUT_MS = 10_000;

/** The metric that marks the routes of the balancer on `ifname` (FNV-1a of the name, 24 bits). */
export function vipRouteMetric(ifname: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(ifname, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return METRIC_BASE + (h & 0xffffff);
}

const prefixOf = (address: string): string => `${address}/${address.includes(':') ? 128 : 32}`;

/** What `ip` does with one route of ours ("add" or "del"), as a line of `ip -batch`. */
function routeLine(op: 'add' | 'del', address: string, metric: number): string {
  return `route ${op} blackhole ${prefixOf(address)} proto ${VIP_ROUTE_PROTO} metric ${metric}`;
}

interface IpResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ip` (in the named network namespace, `ip -n`, when given: tests). */
function ip(netns: string | undefined, args: string[], input?: string): Promise<IpResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'ip',
      netns ? ['-n', netns, ...args] : args,
      { encoding: 'utf8', timeout: IP_TIMEOUT_MS, maxBuffer: 64 << 20, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr: stderr || (err && typeof err.code !== 'number' ? err.message : '') });
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/**
 * The addresses (canonical) that have a blackhole route of ours for `ifname` in the main table, both
 * families. A family the kernel does not have (IPv6 disabled at boot) counts as holding none.
 */
export async function listVipRoutes(ifname: string, netns?: string): Promise<string[]> {
  const metric = vipRouteMetric(ifname);
  const found: string[] = [];
  for (const fam of ['-4', '-6']) {
    const r = await ip(netns, [
      '-j',
      fam,
      'route',
      'show',
      'table',
      'main',
      'proto',
      String(VIP_ROUTE_PROTO),
    ]);
    if (r.code !== 0) {
      if (fam === '-6' && /not supported|Address family/i.test(r.stderr)) continue;
      throw new Error(
        `ip ${fam} route show proto ${VIP_ROUTE_PROTO}: ${r.stderr.trim() || `exit ${r.code}`}`,
      );
    }
    const text = r.stdout.trim();
    const routes = (text ? JSON.parse(text) : []) as { type?: string; dst?: string; metric?: number }[];
    for (const route of routes) {
      if (route.type !== 'blackhole' || route.metric !== metric || !route.dst) continue;
      const a = canonicalIp(route.dst.replace(/\/(32|128)$/, ''));
      if (a !== null) found.push(a);
    }
  }
  return found;
}

export interface RouteFailure {
  op: 'add' | 'del';
  address: string;
  error: string;
}

/** Adds and removes routes of ours in one `ip -force -batch` (one process whatever the count). */
export async function changeVipRoutes(o: {
  ifname: string;
  netns?: string;
  add: readonly string[];
  remove: readonly string[];
}): Promise<RouteFailure[]> {
  const metric = vipRouteMetric(o.ifname);
  const ops: { op: 'add' | 'del'; address: string }[] = [
    ...o.remove.map((address) => ({ op: 'del' as const, address })),
    ...o.add.map((address) => ({ op: 'add' as const, address })),
  ];
  if (ops.length === 0) return [];
  const r = await ip(
    o.netns,
    ['-force', '-batch', '-'],
    ops.map((x) => routeLine(x.op, x.address, metric)).join('\n') + '\n',
  );
  if (r.code === 0) return [];
  // iproute2 prints the error, then "Command failed -:N" (N: 1-based line of the batch).
  const failures: RouteFailure[] = [];
  const lines = r.stderr.split('\n');
  lines.forEach((line, i) => {
    const m = /^Command failed -:(\d+)/.exec(line);
    const op = m ? ops[Number(m[1]) - 1] : undefined;
    if (op) failures.push({ ...op, error: (lines[i - 1] ?? '').trim() || 'failed' });
  });
  if (failures.length === 0)
    failures.push({ op: ops[0]!.op, address: ops[0]!.address, error: r.stderr.trim() || `exit ${r.code}` });
  return failures;
}

/** Removes every route of ours for `ifname` (forwarding stops on purpose: detach-on-exit, `peak-xdp detach`). */
export async function removeVipRoutes(
  ifname: string,
  netns?: string,
): Promise<{ removed: string[]; failures: RouteFailure[] }> {
  const ours = await listVipRoutes(ifname, netns);
  const failures = await changeVipRoutes({ ifname, netns, add: [], remove: ours });
  const failed = new Set(failures.map((f) => f.address));
  return { removed: ours.filter((a) => !failed.has(a)), failures };
}

/** What /state shows. */
export interface VipRoutesStatus {
  enabled: boolean;
  proto: number;
  metric: number;
  /** Addresses with a route of ours after the last pass. */
  routes: string[];
  /** Why the last pass did not leave the wanted set in place (null: it did). */
  error: string | null;
  at: string | null;
}

/**
 * Keeps exactly the wanted set of blackhole routes for one interface: set() after every sync (non-blocking:
 * passes run one at a time, the last wanted set wins), a check every VIP_ROUTE_RECHECK_MS re-adds routes
 * someone removed. Never throws; failures are logged (once per distinct error) and shown in status().
 */
export class VipRouteKeeper {
  private readonly ifname: string;
  private readonly netns: string | undefined;
  private readonly log: Logger;
  private readonly metric: number;
  /** null: not told yet (nothing is touched before the first set()). */
  private wanted: Set<string> | null = null;
  private enabled = false;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private routes: string[] = [];
  private error: string | null = null;
  private at: string | null = null;
  /** A pass has confirmed the routes at least once (later missing ones were removed by someone else). */
  private confirmed = false;
  /** The wanted set (and enabled) that the last pass left in place without an error. */
  private appliedKey: string | null = null;

  constructor(o: { ifname: string; log: Logger; recheckMs?: number; netns?: string }) {
    this.ifname = o.ifname;
    this.netns = o.netns;
    this.log = o.log;
    this.metric = vipRouteMetric(o.ifname);
    this.timer = setInterval(() => {
      if (this.wanted !== null) this.kick();
    }, o.recheckMs ?? VIP_ROUTE_RECHECK_MS);
    this.timer.unref();
  }

  /** The VIP addresses that should have a route (enabled), or none of ours at all (disabled). */
  set(addresses: Iterable<string>, enabled: boolean): void {
    if (this.stopped) return;
    const want = new Set<string>();
    if (enabled)
      for (const a of addresses) {
        const c = canonicalIp(a);
        if (c !== null) want.add(c);
      }
    // Most syncs (health changes) leave the addresses alone: nothing to do until the next periodic check.
    const key = `${enabled}|${[...want].sort().join(',')}`;
    if (key === this.appliedKey && this.error === null && !this.running) return;
    this.wanted = want;
    this.enabled = enabled;
    this.kick();
  }

  /** Resolves when no pass runs or is queued. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** No more passes (the routes stay as they are). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.idle();
  }

  /** Removes every route of ours (after stop(): forwarding stops on purpose). Never throws. */
  async removeAll(): Promise<void> {
    await this.stop();
    try {
      const { removed, failures } = await removeVipRoutes(this.ifname, this.netns);
      if (removed.length > 0)
        this.log.info(
          { routes: removed.length, addresses: removed.slice(0, 20), proto: VIP_ROUTE_PROTO },
          'VIP blackhole routes removed',
        );
      for (const f of failures)
        this.log.warn({ address: f.address, error: f.error }, 'could not remove a VIP blackhole route');
    } catch (e) {
      this.log.warn({ err: e }, 'could not remove the VIP blackhole routes');
    }
  }

  status(): VipRoutesStatus {
    return {
      enabled: this.enabled,
      proto: VIP_ROUTE_PROTO,
      metric: this.metric,
      routes: [...this.routes],
      error: this.error,
      at: this.at,
    };
  }

  private kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass().finally(() => {
      this.running = null;
      if (this.again && !this.stopped) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async pass(): Promise<void> {
    const want = this.wanted;
    if (want === null) return;
    const key = `${this.enabled}|${[...want].sort().join(',')}`;
    let error: string | null = null;
    try {
      const have = new Set(await listVipRoutes(this.ifname, this.netns));
      const add = [...want].filter((a) => !have.has(a));
      const remove = [...have].filter((a) => !want.has(a));
      const failures = await changeVipRoutes({ ifname: this.ifname, netns: this.netns, add, remove });
      const failed = new Set(failures.map((f) => `${f.op} ${f.address}`));
      const added = add.filter((a) => !failed.has(`add ${a}`));
      const removed = remove.filter((a) => !failed.has(`del ${a}`));
      if (added.length > 0) {
        const fields = { routes: added.length, addresses: added.slice(0, 20), proto: VIP_ROUTE_PROTO };
        // Missing ones after the routes were in place: someone removed them (a network manager, a flush).
        if (this.confirmed && this.wanted === want && this.sameAsLast(want, added))
          this.log.warn(fields, 'VIP blackhole routes were gone (removed by someone else); added again');
        else this.log.info(fields, 'VIP blackhole routes added');
      }
      if (removed.length > 0)
        this.log.info(
          { routes: removed.length, addresses: removed.slice(0, 20), proto: VIP_ROUTE_PROTO },
          'VIP blackhole routes removed',
        );
      const now = new Set(have);
      for (const a of added) now.add(a);
      for (const a of removed) now.delete(a);
      this.routes = [...now].sort();
      if (failures.length > 0)
        error = failures
          .slice(0, 5)
          .map((f) => `${f.op} ${prefixOf(f.address)}: ${f.error}`)
          .join('; ')
          .concat(failures.length > 5 ? `; and ${failures.length - 5} more` : '');
      else this.confirmed = true;
    } catch (e) {
      error = (e as Error).message;
    }
    if (error !== null && error !== this.error)
      this.log.error(
        { error, proto: VIP_ROUTE_PROTO },
        'VIP blackhole routes not (all) in place: with the balancer detached, VIP packets would reach the kernel',
      );
    else if (error === null && this.error !== null) this.log.info('VIP blackhole routes in place again');
    this.error = error;
    this.appliedKey = error === null ? key : null;
    this.at = new Date().toISOString();
  }

  /** The added addresses were all in place after the previous pass (so they went missing since). */
  private sameAsLast(want: Set<string>, added: string[]): boolean {
    const last = new Set(this.routes);
    return added.every((a) => last.has(a) && want.has(a));
  }
}
