// The kernel's safety net for VIP traffic: one `blackhole` route per VIP address, in a routing table of our
// own that only packets arriving on the balanced interface look up.
//
// XDP sees a VIP packet before routing, so while the balancer is attached these routes change nothing for
// load-balanced traffic. When the program is off the interface (detached by hand, until the daemon puts it
// back), VIP packets reach the node's kernel: with ip_forward=1 (every Kubernetes node) it routed them back
// to the router, which sent them here again until the TTL ran out, and the ICMP time-exceeded aborted new
// connections (EHOSTUNREACH); some reached the other LB nodes and broke flows there. A blackhole route drops
// them silently instead: TCP retransmits (a SYN after 1 s, data after ~200 ms) and the flow survives.
//
// The routes live in table vipRouteTable(ifname) (0x70000000 + a 24-bit hash of the interface name), looked up
// through one policy rule per family, `iif IF lookup TABLE priority 32000` (VIP_RULE_PRIORITY): after the local
// rule (0), so a VIP that is also an address of this node is still delivered to it, and before main (32766), so
// the blackhole wins over the default route for packets that came in on the interface. Locally originated
// packets match `iif lo`, not the rule: a process on the node (a host-network pod, kube-proxy's OUTPUT DNAT,
// where the route lookup comes before the DNAT) connecting to a VIP goes out through main as before. For any
// other destination the table has no route and the lookup falls through to the next rules.
//
// Ours are told apart by the table (per interface), the rule's priority and interface, and the routes' protocol
// (VIP_ROUTE_PROTO) and metric (vipRouteMetric, also per interface), so two daemons in one network namespace
// (one per interface) never touch each other's. Until this scheme the routes were in the main table (proto 252,
// our metric), where they also caught locally originated packets (connect() failed with EINVAL): leftovers of
// that scheme are removed at start and by removeVipRoutes().
import { canonicalIp } from '../model/ip';
import type { Logger } from '../log';
import { commandFailure, runCommand } from '../util/command';

/** The `proto` of our routes and rule (`ip route show table all proto 252`); not a named one. */
export const VIP_ROUTE_PROTO = 252;
/** Our metrics are METRIC_BASE + a 24-bit hash of the interface name (far above any usual metric). */
const METRIC_BASE = 0x7f000000;
/** Our tables are TABLE_BASE + the same hash: clear of 253-255 (default, main, local) and of small ids. */
const TABLE_BASE = 0x70000000;
/** The priority of our rules: after local (0, or 100 where Cilium moves it), before main (32766). */
export const VIP_RULE_PRIORITY = 32000;
/** How often the routes and the rule are checked (re-added if someone removed them) between syncs. */
export const VIP_ROUTE_RECHECK_MS = 10_000;
const IP_TIMEOUT_MS = 10_000;

/** FNV-1a of the interface name, 24 bits. */
function ifnameHash(ifname: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(ifname, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0xffffff;
}

/** The metric that marks the routes of the balancer on `ifname`. */
export function vipRouteMetric(ifname: string): number {
  return METRIC_BASE + ifnameHash(ifname);
}

/** The routing table that holds the routes of the balancer on `ifname`. */
export function vipRouteTable(ifname: string): number {
  return TABLE_BASE + ifnameHash(ifname);
}

export type IpFamily = 'ipv4' | 'ipv6';
const FAMILIES: readonly IpFamily[] = ['ipv4', 'ipv6'];
const famFlag = (f: IpFamily): string => (f === 'ipv4' ? '-4' : '-6');

const prefixOf = (address: string): string => `${address}/${address.includes(':') ? 128 : 32}`;

/** One route of ours ("add" or "del") as a line of `ip -batch`: in our table, or (old scheme) in main. */
function routeLine(op: 'add' | 'del', address: string, ifname: string, table: 'ours' | 'main'): string {
  const t = table === 'ours' ? vipRouteTable(ifname) : 'main';
  return `route ${op} blackhole ${prefixOf(address)} proto ${VIP_ROUTE_PROTO} metric ${vipRouteMetric(ifname)} table ${t}`;
}

/** The arguments of `ip rule add|del` for our rule (after the family flag). */
function ruleArgs(op: 'add' | 'del', ifname: string): string[] {
  const args = ['rule', op, 'iif', ifname, 'lookup', String(vipRouteTable(ifname))];
  args.push('priority', String(VIP_RULE_PRIORITY));
  if (op === 'add') args.push('protocol', String(VIP_ROUTE_PROTO));
  return args;
}

interface IpResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ip` (in the named network namespace, `ip -n`, when given: tests). Without a fork (runCommand). */
async function ip(netns: string | undefined, args: string[], input?: string): Promise<IpResult> {
  const r = await runCommand('ip', netns ? ['-n', netns, ...args] : args, {
    input,
    timeoutMs: IP_TIMEOUT_MS,
  });
  // A run that did not start or was killed: -1, and why in stderr (as child_process's message said it).
  return {
    code: r.code ?? -1,
    stdout: r.stdout,
    stderr: r.stderr || (r.code === null ? commandFailure(r) : ''),
  };
}

/** A family the kernel does not have (IPv6 disabled at boot). */
const unsupported = (r: IpResult): boolean => /not supported|Address family/i.test(r.stderr);

/** The `ip route show` arguments (after the family flag) that list our routes in `table`. */
const routeShowArgs = (table: string): string[] => [
  'route',
  'show',
  'table',
  table,
  'proto',
  String(VIP_ROUTE_PROTO),
];

/** The `ip rule show` arguments (after the family flag) that list our rule for `ifname`. */
const ruleShowArgs = (ifname: string): string[] =>
  // Filtered by `ip` on the table id (the output names the table if rt_tables does).
  ['rule', 'show', 'priority', String(VIP_RULE_PRIORITY), 'table', String(vipRouteTable(ifname))];

/** The canonical addresses of the blackhole routes with `metric` in one `ip -j route show` output. */
function blackholesIn(text: string, metric: number): string[] {
  const found: string[] = [];
  const routes = (text.trim() ? JSON.parse(text) : []) as { type?: string; dst?: string; metric?: number }[];
  for (const route of routes) {
    if (route.type !== 'blackhole' || route.metric !== metric || !route.dst) continue;
    const a = canonicalIp(route.dst.replace(/\/(32|128)$/, ''));
    if (a !== null) found.push(a);
  }
  return found;
}

/** Whether one `ip -j rule show` output holds our rule for `ifname`. */
function ruleIn(text: string, ifname: string): boolean {
  const rules = (text.trim() ? JSON.parse(text) : []) as { priority?: number; iif?: string }[];
  return rules.some((x) => x.priority === VIP_RULE_PRIORITY && x.iif === ifname);
}

/** Blackhole routes with our protocol and metric in `table`, as canonical addresses, both families. */
async function listBlackholes(ifname: string, netns: string | undefined, table: string): Promise<string[]> {
  const metric = vipRouteMetric(ifname);
  const found: string[] = [];
  for (const fam of FAMILIES) {
    const r = await ip(netns, ['-j', famFlag(fam), ...routeShowArgs(table)]);
    if (r.code !== 0) {
      // A table that never held a route does not exist yet (both families say so): it holds none.
      if (unsupported(r) || /table does not exist/i.test(r.stderr)) continue;
      throw new Error(
        `ip ${famFlag(fam)} route show table ${table} proto ${VIP_ROUTE_PROTO}: ${r.stderr.trim() || `exit ${r.code}`}`,
      );
    }
    found.push(...blackholesIn(r.stdout, metric));
  }
  return found;
}

/** The addresses (canonical) that have a blackhole route of ours in the table of `ifname`, both families. */
export function listVipRoutes(ifname: string, netns?: string): Promise<string[]> {
  return listBlackholes(ifname, netns, String(vipRouteTable(ifname)));
}

/** Addresses with a route of the old scheme for `ifname` (main table, proto 252, our metric). */
export function listOldVipRoutes(ifname: string, netns?: string): Promise<string[]> {
  return listBlackholes(ifname, netns, 'main');
}

/**
 * The families that have our rule for `ifname` (priority VIP_RULE_PRIORITY, iif ifname, lookup our table),
 * and the families the kernel has at all.
 */
export async function listVipRules(
  ifname: string,
  netns?: string,
): Promise<{ present: IpFamily[]; supported: IpFamily[] }> {
  const present: IpFamily[] = [];
  const supported: IpFamily[] = [];
  for (const fam of FAMILIES) {
    const show = ruleShowArgs(ifname);
    const r = await ip(netns, ['-j', famFlag(fam), ...show]);
    if (r.code !== 0) {
      if (unsupported(r)) continue;
      throw new Error(`ip ${famFlag(fam)} ${show.join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    supported.push(fam);
    if (ruleIn(r.stdout, ifname)) present.push(fam);
  }
  return { present, supported };
}

/** What a keeper's pass reads: our routes, old-scheme routes (when asked for), and our rule's families. */
export interface VipRouteState {
  routes: string[];
  old: string[];
  rules: { present: IpFamily[]; supported: IpFamily[] };
  /** Read by the batches (false: by the separate lists, after an irregular batch). */
  batched: boolean;
}

/**
 * listVipRoutes, listOldVipRoutes (when `withOld`) and listVipRules in one `ip -batch` per family instead of one
 * `ip` per list and family: a process started from the daemon costs its main thread ~9 ms at 52 MB of RSS and
 * ~22 ms at 343 MB (fork copies the page tables; a bare `node`), and a keeper's pass listed in 4 to 6 of them. A batch prints one
 * JSON line per command; any other outcome (a family the kernel lacks, a table that does not exist yet, an error)
 * is read again with the lists above, which tell those cases apart.
 */
export async function listVipState(
  ifname: string,
  netns: string | undefined,
  withOld: boolean,
): Promise<VipRouteState> {
  const metric = vipRouteMetric(ifname);
  const commands = [routeShowArgs(String(vipRouteTable(ifname))), ruleShowArgs(ifname)];
  if (withOld) commands.push(routeShowArgs('main'));
  const state: VipRouteState = { routes: [], old: [], rules: { present: [], supported: [] }, batched: true };
  for (const fam of FAMILIES) {
    const r = await ip(
      netns,
      ['-j', famFlag(fam), '-batch', '-'],
      commands.map((c) => c.join(' ')).join('\n') + '\n',
    );
    const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
    try {
      if (r.code !== 0 || r.stderr.trim() !== '' || lines.length !== commands.length)
        throw new Error('irregular');
      const routes = blackholesIn(lines[0]!, metric);
      const rule = ruleIn(lines[1]!, ifname);
      const old = withOld ? blackholesIn(lines[2]!, metric) : [];
      state.routes.push(...routes);
      state.old.push(...old);
      state.rules.supported.push(fam);
      if (rule) state.rules.present.push(fam);
    } catch {
      return {
        old: withOld ? await listOldVipRoutes(ifname, netns) : [],
        rules: await listVipRules(ifname, netns),
        routes: await listVipRoutes(ifname, netns),
        batched: false,
      };
    }
  }
  return state;
}

export interface RouteFailure {
  op: 'add' | 'del';
  /** The VIP address; for the rule, its family ('ipv4', 'ipv6'). */
  address: string;
  /** Our route (our table), our rule, or an old-scheme route (main table). */
  kind: 'route' | 'rule' | 'main';
  error: string;
}

/** What a failure is about, for messages. */
export function describeFailure(ifname: string, f: RouteFailure): string {
  if (f.kind === 'rule')
    return `${f.op} rule iif ${ifname} lookup ${vipRouteTable(ifname)} priority ${VIP_RULE_PRIORITY} (${f.address})`;
  return `${f.op} ${prefixOf(f.address)}${f.kind === 'main' ? ' (table main)' : ''}`;
}

/**
 * Adds and removes routes of ours in one `ip -force -batch` (one process whatever the count); `removeMain`:
 * old-scheme routes in the main table.
 */
export async function changeVipRoutes(o: {
  ifname: string;
  netns?: string;
  add: readonly string[];
  remove: readonly string[];
  removeMain?: readonly string[];
}): Promise<RouteFailure[]> {
  const ops: { op: 'add' | 'del'; address: string; kind: 'route' | 'main' }[] = [
    ...(o.removeMain ?? []).map((address) => ({ op: 'del' as const, address, kind: 'main' as const })),
    ...o.remove.map((address) => ({ op: 'del' as const, address, kind: 'route' as const })),
    ...o.add.map((address) => ({ op: 'add' as const, address, kind: 'route' as const })),
  ];
  if (ops.length === 0) return [];
  const r = await ip(
    o.netns,
    ['-force', '-batch', '-'],
    ops.map((x) => routeLine(x.op, x.address, o.ifname, x.kind === 'main' ? 'main' : 'ours')).join('\n') +
      '\n',
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
  if (failures.length === 0) failures.push({ ...ops[0]!, error: r.stderr.trim() || `exit ${r.code}` });
  return failures;
}

/** Adds or removes our rule in the given families (one `ip` each). */
export async function changeVipRules(o: {
  ifname: string;
  netns?: string;
  add: readonly IpFamily[];
  remove: readonly IpFamily[];
}): Promise<RouteFailure[]> {
  const failures: RouteFailure[] = [];
  for (const [op, fams] of [
    ['del', o.remove],
    ['add', o.add],
  ] as const)
    for (const fam of fams) {
      const r = await ip(o.netns, [famFlag(fam), ...ruleArgs(op, o.ifname)]);
      if (r.code !== 0)
        failures.push({ op, address: fam, kind: 'rule', error: r.stderr.trim() || `exit ${r.code}` });
    }
  return failures;
}

/**
 * Removes our rule and every route of ours for `ifname`, old-scheme ones in main included (forwarding stops on
 * purpose: detach-on-exit, `peak-xdp detach`). `removed`: the addresses whose routes went.
 */
export async function removeVipRoutes(
  ifname: string,
  netns?: string,
): Promise<{ removed: string[]; rulesRemoved: IpFamily[]; failures: RouteFailure[] }> {
  const rules = await listVipRules(ifname, netns);
  const ruleFailures = await changeVipRules({ ifname, netns, add: [], remove: rules.present });
  const ours = await listVipRoutes(ifname, netns);
  const old = await listOldVipRoutes(ifname, netns);
  const failures = await changeVipRoutes({ ifname, netns, add: [], remove: ours, removeMain: old });
  const failed = (kind: RouteFailure['kind']) =>
    new Set([...ruleFailures, ...failures].filter((f) => f.kind === kind).map((f) => f.address));
  const removed = new Set([
    ...ours.filter((a) => !failed('route').has(a)),
    ...old.filter((a) => !failed('main').has(a)),
  ]);
  return {
    removed: [...removed].sort(),
    rulesRemoved: rules.present.filter((f) => !failed('rule').has(f)),
    failures: [...ruleFailures, ...failures],
  };
}

/** What /state shows. */
export interface VipRoutesStatus {
  enabled: boolean;
  proto: number;
  metric: number;
  /** The routing table that holds the routes. */
  table: number;
  /** Our policy rule (`iif IF lookup TABLE priority P`) and the families it is in place for after the last pass. */
  rule: { priority: number; iif: string; families: IpFamily[] };
  /** Addresses with a route of ours after the last pass. */
  routes: string[];
  /** Why the last pass did not leave the wanted set in place (null: it did). */
  error: string | null;
  at: string | null;
}

/**
 * Keeps exactly the wanted set of blackhole routes for one interface, and the rule while enabled: set() after
 * every sync (non-blocking: passes run one at a time, the last wanted set wins), a check every
 * VIP_ROUTE_RECHECK_MS re-adds routes or the rule someone removed. The first pass also removes old-scheme
 * routes (main table). Never throws; failures are logged (once per distinct error) and shown in status().
 */
export class VipRouteKeeper {
  private readonly ifname: string;
  private readonly netns: string | undefined;
  private readonly log: Logger;
  private readonly metric: number;
  private readonly table: number;
  /** null: not told yet (nothing is touched before the first set()). */
  private wanted: Set<string> | null = null;
  private enabled = false;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private routes: string[] = [];
  private rules: IpFamily[] = [];
  private error: string | null = null;
  private at: string | null = null;
  /** A pass has confirmed the routes at least once (later missing ones were removed by someone else). */
  private confirmed = false;
  /** Old-scheme routes (main table) have been looked for and removed. */
  private oldRemoved = false;
  /** The wanted set (and enabled) that the last pass left in place without an error. */
  private appliedKey: string | null = null;

  constructor(o: { ifname: string; log: Logger; recheckMs?: number; netns?: string }) {
    this.ifname = o.ifname;
    this.netns = o.netns;
    this.log = o.log;
    this.metric = vipRouteMetric(o.ifname);
    this.table = vipRouteTable(o.ifname);
    this.timer = setInterval(() => {
      if (this.wanted !== null) this.kick();
    }, o.recheckMs ?? VIP_ROUTE_RECHECK_MS);
    this.timer.unref();
  }

  /** The VIP addresses that should have a route (enabled), or none of ours at all, rule included (disabled). */
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

  /**
   * Resolves once every pass requested before this call has run: the running one and the queued one, if any.
   * Not "until no pass runs": with periodic rechecks shorter than a pass (a loaded machine, a short
   * recheckMs) a new pass is always running, and waiting for none never ended.
   */
  async idle(): Promise<void> {
    if (!this.running) return;
    const queued = this.again;
    await this.running;
    // The running pass's finally started the queued one (unless stopped).
    if (queued && this.running) await this.running;
  }

  /** No more passes (the routes and the rule stay as they are). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.idle();
  }

  /** Removes the rule and every route of ours (after stop(): forwarding stops on purpose). Never throws. */
  async removeAll(): Promise<void> {
    await this.stop();
    try {
      const { removed, rulesRemoved, failures } = await removeVipRoutes(this.ifname, this.netns);
      // What is left of ours: what could not be removed.
      this.routes = [...new Set(failures.filter((f) => f.kind === 'route').map((f) => f.address))].sort();
      this.rules = FAMILIES.filter((fam) => failures.some((f) => f.kind === 'rule' && f.address === fam));
      if (removed.length > 0 || rulesRemoved.length > 0)
        this.log.info(
          { routes: removed.length, addresses: removed.slice(0, 20), rule: rulesRemoved, ...this.marks() },
          'VIP blackhole routes removed',
        );
      for (const f of failures)
        this.log.warn(
          { change: describeFailure(this.ifname, f), error: f.error },
          'could not remove a VIP blackhole route or rule',
        );
    } catch (e) {
      this.log.warn({ err: e }, 'could not remove the VIP blackhole routes');
    }
  }

  status(): VipRoutesStatus {
    return {
      enabled: this.enabled,
      proto: VIP_ROUTE_PROTO,
      metric: this.metric,
      table: this.table,
      rule: { priority: VIP_RULE_PRIORITY, iif: this.ifname, families: [...this.rules] },
      routes: [...this.routes],
      error: this.error,
      at: this.at,
    };
  }

  private marks(): { proto: number; table: number } {
    return { proto: VIP_ROUTE_PROTO, table: this.table };
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
    const enabled = this.enabled;
    const key = `${enabled}|${[...want].sort().join(',')}`;
    const ifname = this.ifname;
    let error: string | null = null;
    try {
      const failures: RouteFailure[] = [];
      // An upgraded node: routes of the old scheme in main would keep catching locally originated packets.
      const listed = await listVipState(ifname, this.netns, !this.oldRemoved);
      const { old, rules } = listed;
      // Disabled: the rule goes first (no lookup of a table being emptied); enabled: it comes after the routes.
      if (!enabled)
        failures.push(
          ...(await changeVipRules({ ifname, netns: this.netns, add: [], remove: rules.present })),
        );
      const have = new Set(listed.routes);
      const add = [...want].filter((a) => !have.has(a));
      const remove = [...have].filter((a) => !want.has(a));
      failures.push(...(await changeVipRoutes({ ifname, netns: this.netns, add, remove, removeMain: old })));
      const addRules = enabled ? rules.supported.filter((f) => !rules.present.includes(f)) : [];
      failures.push(...(await changeVipRules({ ifname, netns: this.netns, add: addRules, remove: [] })));

      const failed = new Set(failures.map((f) => `${f.kind} ${f.op} ${f.address}`));
      const added = add.filter((a) => !failed.has(`route add ${a}`));
      const removed = remove.filter((a) => !failed.has(`route del ${a}`));
      const oldGone = old.filter((a) => !failed.has(`main del ${a}`));
      const rulesAdded = addRules.filter((f) => !failed.has(`rule add ${f}`));
      const rulesRemoved = enabled ? [] : rules.present.filter((f) => !failed.has(`rule del ${f}`));
      if (oldGone.length > 0)
        this.log.info(
          {
            routes: oldGone.length,
            addresses: oldGone.slice(0, 20),
            proto: VIP_ROUTE_PROTO,
            metric: this.metric,
          },
          'VIP blackhole routes of the previous scheme (main table) removed',
        );
      if (!failures.some((f) => f.kind === 'main')) this.oldRemoved = true;
      if (added.length > 0 || rulesAdded.length > 0) {
        const fields = {
          routes: added.length,
          addresses: added.slice(0, 20),
          rule: rulesAdded,
          ...this.marks(),
        };
        // Missing ones after they were in place: someone removed them (a network manager, a flush).
        if (this.confirmed && this.wanted === want && this.sameAsLast(want, added, rulesAdded))
          this.log.warn(fields, 'VIP blackhole routes were gone (removed by someone else); added again');
        else this.log.info(fields, 'VIP blackhole routes added');
      }
      if (removed.length > 0 || rulesRemoved.length > 0)
        this.log.info(
          { routes: removed.length, addresses: removed.slice(0, 20), rule: rulesRemoved, ...this.marks() },
          'VIP blackhole routes removed',
        );
      const now = new Set(have);
      for (const a of added) now.add(a);
      for (const a of removed) now.delete(a);
      this.routes = [...now].sort();
      const ruleNow = new Set([...rules.present, ...rulesAdded]);
      for (const f of rulesRemoved) ruleNow.delete(f);
      this.rules = FAMILIES.filter((f) => ruleNow.has(f));
      if (failures.length > 0)
        error = failures
          .slice(0, 5)
          .map((f) => `${describeFailure(ifname, f)}: ${f.error}`)
          .join('; ')
          .concat(failures.length > 5 ? `; and ${failures.length - 5} more` : '');
      else this.confirmed = true;
    } catch (e) {
      error = (e as Error).message;
    }
    if (error !== null && error !== this.error)
      this.log.error(
        { error, ...this.marks() },
        'VIP blackhole routes not (all) in place: with the balancer detached, VIP packets would reach the kernel',
      );
    else if (error === null && this.error !== null) this.log.info('VIP blackhole routes in place again');
    this.error = error;
    this.appliedKey = error === null ? key : null;
    this.at = new Date().toISOString();
  }

  /** What was added had all been in place after the previous pass (so it went missing since). */
  private sameAsLast(want: Set<string>, added: string[], rulesAdded: IpFamily[]): boolean {
    const last = new Set(this.routes);
    return added.every((a) => last.has(a) && want.has(a)) && rulesAdded.every((f) => this.rules.includes(f));
  }
}
