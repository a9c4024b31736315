// The decisions of `peak-xdp decap run` as plain functions over plain data: which addresses to decapsulate
// for, what to do with what is attached at start and at each check, counter names from the BPF enum, flags.
import { isIP } from 'node:net';
import { canonicalIp } from '../model/ip';
import { parseListen } from '../model/schema';
import { denseCounterNames } from '../datapath/contract';

/** How often the agent checks that its program is attached (and re-reads the interface's addresses). */
export const DECAP_CHECK_MS = 5000;

/** Where /metrics and /healthz listen unless --metrics-listen / PEAK_XDP_METRICS_LISTEN say otherwise. */
export const DEFAULT_METRICS_LISTEN = '0.0.0.0:9472';

/** The name of the decap program in bpf/decap.bpf.c (SEC("xdp") int decap): how a restart recognises it. */
export const DECAP_PROGRAM = 'decap';

/** A bad flag or environment value: the message names the flag (or variable) and the value. */
export class DecapUsageError extends Error {}

/** HOST:PORT of --metrics-listen (or PEAK_XDP_METRICS_LISTEN, named as `source`). */
export function parseMetricsListen(text: string, source: string): { host: string; port: number } {
  const l = parseListen(text.trim());
  if (l === null)
    throw new DecapUsageError(
      `${source}: "${text}" is not HOST:PORT (an IP address and a port 0-65535, e.g. 0.0.0.0:9472 or [::]:9472)`,
    );
  return l;
}

/**
 * The addresses to decapsulate for: the given ones (canonical, duplicates removed) or, with none given, the
 * interface's global addresses. IPv4 first, then IPv6, each sorted, so two reads of the same set compare equal.
 */
export function desiredAddresses(o: {
  explicit: readonly string[];
  onInterface: readonly string[];
}): string[] {
  const src = o.explicit.length > 0 ? o.explicit : o.onInterface;
  const set = new Set<string>();
  for (const a of src) {
    const c = canonicalIp(a);
    if (c === null) throw new DecapUsageError(`--address: "${a}" is not an IP address`);
    set.add(c);
  }
  const v4 = [...set].filter((a) => isIP(a) === 4).sort(compareAddr);
  const v6 = [...set].filter((a) => isIP(a) === 6).sort(compareAddr);
  return [...v4, ...v6];
}

function compareAddr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** What to write to and delete from the decap address map to hold `desired` instead of `current`. */
export function addressChanges(
  current: readonly string[],
  desired: readonly string[],
): { add: string[]; remove: string[] } {
  const have = new Set(current);
  const want = new Set(desired);
  return {
    add: desired.filter((a) => !have.has(a)),
    remove: current.filter((a) => !want.has(a)),
  };
}

/** Checks that `addresses` fit the decap address map (decap_addrs max_entries). */
export function checkAddressCount(addresses: readonly string[], capacity: number, ifname: string): void {
  if (addresses.length === 0)
    throw new DecapUsageError(
      `--interface: ${ifname} has no global address to decapsulate for (give --address A)`,
    );
  if (addresses.length > capacity)
    throw new DecapUsageError(
      `--address: ${addresses.length} addresses (${addresses.join(', ')}) but the decap program holds at most ${capacity}`,
    );
}

/** What is attached to the interface, as the agent sees it. */
export type Attachment =
  | { kind: 'none' }
  /**
   * A decap program: named DECAP_PROGRAM; `pinned` when it is the program pinned for this interface (its maps
   * can be reopened from the pins, so it can be kept as it is).
   */
  | { kind: 'decap'; progId: number; mode: string; tag: string | null; pinned: boolean }
  | { kind: 'other'; progId: number; name: string | null };

/** At start: what to do about what is attached. */
export type StartAction =
  | { kind: 'attach' }
  /** The same program code is attached already: keep it (no gap, no new program). */
  | { kind: 'adopt'; progId: number }
  /** A decap of other code (an upgrade) is attached: swap atomically (XDP_FLAGS_REPLACE), no gap. */
  | { kind: 'replace'; progId: number; mode: string }
  | { kind: 'refuse'; reason: string };

export function startAction(o: { attached: Attachment; freshTag: string; ifname: string }): StartAction {
  const a = o.attached;
  switch (a.kind) {
    case 'none':
      return { kind: 'attach' };
    case 'decap':
      // Kept only when it is the same code and its maps are ours to reopen; else swapped with no gap.
      return a.pinned && a.tag === o.freshTag
        ? { kind: 'adopt', progId: a.progId }
        : { kind: 'replace', progId: a.progId, mode: a.mode };
    case 'other':
      return {
        kind: 'refuse',
        reason:
          `--interface: ${o.ifname} runs another XDP program (id ${a.progId}${a.name ? `, "${a.name}"` : ''}); ` +
          `not replacing it (one XDP program per interface: detach it, or decapsulate on another interface)`,
      };
  }
}

/** At each check: what to do about what is attached now (ours = the program the agent attached). */
export type CheckAction = 'ok' | 'reattach' | 'foreign';

export function checkAction(attachedProgId: number, ourProgId: number): CheckAction {
  if (attachedProgId === ourProgId) return 'ok';
  // Someone else's program in our place was put there on purpose: left alone (as the balancer daemon does).
  return attachedProgId === 0 ? 'reattach' : 'foreign';
}

/** Counter names by index from `enum peak_decap_counter` (its BTF values); see denseCounterNames. */
export function decapCounterNames(values: Readonly<Record<string, number>>, source: string): string[] {
  return denseCounterNames(values, { enumName: 'peak_decap_counter', prefix: 'PEAK_DECAP_' }, source);
}

/**
 * The counter every packet moves (the denominator); exported as peak_xdp_decap_rx_packets_total, the others
 * as peak_xdp_decap_packets_total{result="<name>"}.
 */
export const RX_COUNTER = 'rx_packets';

/** The interface of the default route: IPv4's, else IPv6's; null when neither has one with a device. */
export function defaultRouteInterface(
  v4: readonly { dev?: string; metric?: number }[],
  v6: readonly { dev?: string; metric?: number }[],
): string | null {
  for (const routes of [v4, v6]) {
    const best = routes
      .filter((r) => typeof r.dev === 'string' && r.dev !== '')
      .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
    if (best) return best.dev!;
  }
  return null;
}

/** --interface, else PEAK_XDP_INTERFACE; `auto` means the default route's interface. */
export function interfaceSetting(flag: string | undefined, env: string | undefined): string {
  const v = (flag ?? env ?? '').trim();
  if (v === '')
    throw new DecapUsageError(
      'decap run: give the interface (--interface NAME, --interface auto, or env PEAK_XDP_INTERFACE)',
    );
  return v;
}

/** --vip values for host mode (none in node mode); each must be an address. */
export function vipSetting(vips: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of vips) {
    const c = canonicalIp(v);
    if (c === null) throw new DecapUsageError(`--vip: "${v}" is not an IP address`);
    if (!out.includes(c)) out.push(c);
  }
  return out;
}

/**
 * The node's own address that `--interface auto` looks for (PEAK_XDP_NODE_IP, else NODE_IP: the DaemonSet sets
 * it from status.hostIP, the Node's InternalIP, which is where the LB nodes encapsulate to); null when unset.
 */
export function nodeIpSetting(env: Readonly<Record<string, string | undefined>>): string | null {
  for (const name of ['PEAK_XDP_NODE_IP', 'NODE_IP']) {
    const v = (env[name] ?? '').trim();
    if (v === '') continue;
    const c = canonicalIp(v);
    if (c === null) throw new DecapUsageError(`${name}: "${v}" is not an IP address`);
    return c;
  }
  return null;
}

/**
 * The interface that holds `ip` (as `ip -j addr show` lists them), lo excluded (a VIP or a router ID there says
 * nothing about where tunnels arrive); null when none does.
 */
export function interfaceWithAddress(
  links: readonly { ifname?: string; addr_info?: readonly { local?: string }[] }[],
  ip: string,
): string | null {
  const want = canonicalIp(ip);
  for (const l of links) {
    if (typeof l.ifname !== 'string' || l.ifname === '' || l.ifname === 'lo') continue;
    for (const a of l.addr_info ?? [])
      if (typeof a.local === 'string' && canonicalIp(a.local) === want) return l.ifname;
  }
  return null;
}

/**
 * What a VIP on lo needs for direct server return on a shared L2 (IPv4 only): answer ARP only for the
 * interface's own addresses (the VIP lives on every backend), loose reverse-path filtering (decapsulated packets
 * come from clients anywhere). `decap attach/run --no-sysctls` skips them: /proc/sys is read-only in an
 * unprivileged container, and a Pod (pod mode) has no shared L2 with the router and a default route back.
 */
export function dsrSysctls(vip: string, ifname: string): [key: string, value: string][] {
  if (isIP(vip) !== 4) return [];
  return [
    ['net.ipv4.conf.all.arp_ignore', '1'],
    ['net.ipv4.conf.all.arp_announce', '2'],
    ['net.ipv4.conf.all.rp_filter', '2'],
    [`net.ipv4.conf.${ifname}.rp_filter`, '2'],
  ];
}
