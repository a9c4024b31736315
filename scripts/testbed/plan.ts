// Pure topology plan: testbed config -> hosts, namespaces, links, addresses, MACs, ASNs (no side effects).
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { TestbedConfig } from './config';

export type Role = 'client' | 'router' | 'lb' | 'backend';

export interface Addr {
  /** Address without prefix length. */
  address: string;
  prefixLength: number;
}

/** The veth pair joining a host to the router: `eth0` in the host, `routerIf` in the router namespace. */
export interface Link {
  hostIf: string;
  routerIf: string;
  hostMac: string;
  routerMac: string;
  hostV4: Addr;
  routerV4: Addr;
  hostV6: Addr;
  routerV6: Addr;
  mtu: number;
  /** Link number: the third IPv4 octet and the second IPv6 hextet. */
  net: number;
}

export interface Host {
  /** Logical name used by `exec <host>`: client1, router, lb1, be1, ... */
  name: string;
  role: Role;
  index: number;
  netns: string;
  /** null for the router (it owns the router side of every link). */
  link: Link | null;
  /** LB nodes: their BGP ASN. */
  asn?: number;
}

export interface Vip {
  name: string;
  address: string;
  port: number;
  family: 4 | 6;
  /** Names of the backends that hold this VIP on lo and serve it. */
  servedBy: string[];
}

/** Comparison systems that need an address of their own on the LB nodes. */
export type ComparisonSystem = 'nft' | 'nginx' | 'haproxy';
export const COMPARISON_SYSTEMS: readonly ComparisonSystem[] = ['nft', 'nginx', 'haproxy'];

export interface Plan {
  prefix: string;
  /** Per-instance state: configs, logs, pid files (removed by `down`). */
  stateDir: string;
  /** Per-instance pin root inside the shared bpffs (removed by `down`). */
  bpffsDir: string;
  /** The shared bpffs mount point (mounted once in the root mount namespace, never unmounted by us). */
  bpffsMount: string;
  routerDaemon: 'bird' | 'frr';
  routerAsn: number;
  routerId: string;
  router: Host;
  clients: Host[];
  lbs: Host[];
  backends: Host[];
  backendPort: number;
  /** peak-xdp VIPs (on the backends' lo, announced by the LB daemons). */
  vips: Vip[];
  /** One IPv4 and one IPv6 VIP per comparison system, held on the LB nodes' lo. */
  comparisonVips: Record<ComparisonSystem, { v4: string; v6: string }>;
}

const LINK_BASE: Record<Exclude<Role, 'router'>, number> = { client: 0, lb: 10, backend: 50 };
const ROLE_BYTE: Record<Exclude<Role, 'router'>, number> = { client: 1, lb: 2, backend: 3 };

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** One byte derived from the prefix, so two testbeds never share MACs. */
export function prefixByte(prefix: string): number {
  return createHash('sha256').update(prefix).digest()[0]!;
}

/** Locally administered unicast MAC: 02:<prefix>:<role>:<index>:00:<1 host side | 2 router side>. */
export function linkMac(o: {
  prefix: string;
  role: Exclude<Role, 'router'>;
  index: number;
  side: 1 | 2;
}): string {
  return ['02', hex2(prefixByte(o.prefix)), hex2(ROLE_BYTE[o.role]), hex2(o.index), '00', hex2(o.side)].join(
    ':',
  );
}

/** Short names used for hosts: client1, lb1, be1. */
export function hostName(role: Exclude<Role, 'router'>, index: number): string {
  return `${role === 'backend' ? 'be' : role}${index}`;
}

function makeLink(cfg: TestbedConfig, role: Exclude<Role, 'router'>, index: number): Link {
  const net = LINK_BASE[role] + index;
  const v4 = cfg.addressing.ipv4Base;
  const v6 = cfg.addressing.ipv6Base;
  const mtu = role === 'lb' ? cfg.lbs.mtu : role === 'backend' ? cfg.backends.mtu : 1500;
  return {
    hostIf: 'eth0',
    routerIf: hostName(role, index),
    hostMac: linkMac({ prefix: cfg.prefix, role, index, side: 1 }),
    routerMac: linkMac({ prefix: cfg.prefix, role, index, side: 2 }),
    hostV4: { address: `${v4}.${net}.2`, prefixLength: 24 },
    routerV4: { address: `${v4}.${net}.1`, prefixLength: 24 },
    hostV6: { address: `${v6}:${net}::2`, prefixLength: 64 },
    routerV6: { address: `${v6}:${net}::1`, prefixLength: 64 },
    mtu,
    net,
  };
}

function makeHosts(cfg: TestbedConfig, role: Exclude<Role, 'router'>, count: number): Host[] {
  return Array.from({ length: count }, (_, i) => {
    const index = i + 1;
    const name = hostName(role, index);
    const h: Host = { name, role, index, netns: `${cfg.prefix}-${name}`, link: makeLink(cfg, role, index) };
    if (role === 'lb') h.asn = cfg.lbs.asnBase + index;
    return h;
  });
}

/** Builds the whole plan from a validated config. Deterministic: the same config gives the same plan. */
export function buildPlan(cfg: TestbedConfig): Plan {
  const c4 = cfg.comparisonVips.ipv4Base;
  const c6 = cfg.comparisonVips.ipv6Base;
  const comparisonVips = Object.fromEntries(
    COMPARISON_SYSTEMS.map((s, i) => [s, { v4: `${c4}.${i + 2}`, v6: `${c6}${i + 2}` }]),
  ) as Record<ComparisonSystem, { v4: string; v6: string }>;
  return {
    prefix: cfg.prefix,
    stateDir: join(cfg.stateDir, cfg.prefix),
    bpffsDir: join(cfg.bpffs, cfg.prefix),
    bpffsMount: cfg.bpffs,
    routerDaemon: cfg.router.daemon,
    routerAsn: cfg.router.asn,
    routerId: `${cfg.addressing.ipv4Base}.0.1`,
    router: { name: 'router', role: 'router', index: 0, netns: `${cfg.prefix}-router`, link: null },
    clients: makeHosts(cfg, 'client', cfg.clients),
    lbs: makeHosts(cfg, 'lb', cfg.lbs.count),
    backends: makeHosts(cfg, 'backend', cfg.backends.count),
    backendPort: cfg.backends.port,
    vips: cfg.vips.map((v) => makeVip(v, cfg.backends.count)),
    comparisonVips,
  };
}

function makeVip(v: TestbedConfig['vips'][number], backendCount: number): Vip {
  const n = v.servedBy === 'all-but-last' ? backendCount - 1 : backendCount;
  if (n < 1)
    throw new Error(
      `vip ${v.name}: servedBy "${v.servedBy}" leaves no backend with backends.count = ${backendCount}`,
    );
  return {
    name: v.name,
    address: v.address,
    port: v.port,
    family: v.address.includes(':') ? 6 : 4,
    servedBy: Array.from({ length: n }, (_, i) => hostName('backend', i + 1)),
  };
}

/** The backends among `active` that serve this VIP (a deployment may use only some backends). */
export function vipBackends(v: Vip, active: Host[]): Host[] {
  return active.filter((b) => v.servedBy.includes(b.name));
}

/** The VIPs a backend holds on lo. */
export function backendVips(p: Plan, be: Host): Vip[] {
  return p.vips.filter((v) => v.servedBy.includes(be.name));
}

/** The main VIP of a family (served by every backend): what clients call. */
export function serviceVip(p: Plan, family: 4 | 6): Vip {
  const v = p.vips.find((x) => x.family === family && x.servedBy.length === p.backends.length);
  if (!v) throw new Error(`testbed ${p.prefix}: no IPv${family} VIP served by every backend (vips[])`);
  return v;
}

/** The inner-service VIP of a family: served by every backend but the last, which is the caller. */
export function innerVip(p: Plan, family: 4 | 6): { vip: Vip; caller: Host } | null {
  const caller = p.backends.at(-1)!;
  const v = p.vips.find(
    (x) => x.family === family && !x.servedBy.includes(caller.name) && x.servedBy.length > 0,
  );
  return v ? { vip: v, caller } : null;
}

/** Every host of the plan, router first. */
export function allHosts(p: Plan): Host[] {
  return [p.router, ...p.clients, ...p.lbs, ...p.backends];
}

/** Finds a host by logical name (client1, router, lb2, be3); throws naming the value and the choices. */
export function findHost(p: Plan, name: string): Host {
  const h = allHosts(p).find((x) => x.name === name);
  if (!h)
    throw new Error(
      `host "${name}" is not in testbed ${p.prefix} (hosts: ${allHosts(p)
        .map((x) => x.name)
        .join(', ')})`,
    );
  return h;
}

/** The namespace-name pattern `down` sweeps after a crash: exactly this prefix's host names. */
export function ownedNamespacePattern(prefix: string): RegExp {
  return new RegExp(`^${prefix}-(router|client\\d+|lb\\d+|be\\d+)$`);
}

/** The daemon's pin root for one LB node (unique per namespace + interface, TESTBED.md). */
export function lbPinRoot(p: Plan, lb: Host): string {
  return join(p.bpffsDir, lb.name);
}
