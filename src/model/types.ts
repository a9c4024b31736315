// The configuration's types: a validated, normalised Config and what parsing returns.
import type { BgpConfig } from './bgp';
import type { ConfigIssue } from './errors';
import type { IpFamily, IpPrefix } from './ip';
import type { NodeEntry } from './nodes';

export type XdpMode = 'native' | 'generic' | 'auto';
export type Protocol = 'tcp' | 'udp';
export type Persistence = 'none' | 'source-ip';
export type HealthCheckType = 'tcp' | 'http';
/** How packets reach a backend: ipip (kernel tunnel modules or our decap) or gue (our decap only; hints). */
/** Encapsulations toward a backend (issue 15): the one list the schema, the JSON Schema and the hand-written
 * backend checks take. */
export const ENCAPS = ['ipip', 'gue'] as const;
export type Encap = (typeof ENCAPS)[number];
/** A VIP's connection-table mode: auto = stateless for a TCP VIP whose every backend is gue. */
export type StatelessMode = 'auto' | boolean;

/**
 * An HTTP check's path: absolute, no spaces, control characters or characters beyond Latin-1 (RFC 9112's
 * request-target is visible ASCII, the rest percent-encoded; Latin-1 bytes are let through as servers take them).
 * The checker writes it into the request line byte for byte, so a space or line break would split the request.
 */
export const isHttpPath = (p: string): boolean => /^\/[\x21-\x7e\x80-\xff]*$/.test(p);

export interface HealthCheckConfig {
  type: HealthCheckType;
  /** Port probed on the backend address (defaults to the VIP port). */
  port: number;
  /** HTTP path (http checks only). */
  path: string;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive good checks that bring a down backend up. */
  rise: number;
  /** Consecutive failed checks that take an up backend down. */
  fall: number;
  /**
   * Seconds a backend that is down by health check alone keeps its established flows (draining: conntrack
   * hits stay, no new flows), so flapping checks do not reset connections it still serves; then down, its
   * flows re-selected. 0 = down at once.
   */
  downGraceSeconds: number;
}

export interface BackendConfig {
  /** Canonical address (RFC 5952 for IPv6): also the backend's Maglev name. */
  address: string;
  family: IpFamily;
  weight: number;
  drain: boolean;
  /** As written, else the VIP's encap; absent (hand-built configs) = ipip. */
  encap?: Encap;
}

export interface VipConfig {
  name: string;
  /** Canonical address. */
  address: string;
  family: IpFamily;
  /** 0 = every port. */
  port: number;
  protocol: Protocol;
  tableSize: number;
  persistence: Persistence;
  /** Use the connection table (false: every packet is hashed, e.g. stateless UDP). */
  conntrack: boolean;
  /** null: no active checks, backends are considered up. */
  healthCheck: HealthCheckConfig | null;
  backends: BackendConfig[];
  /** BGP communities (RFC 1997) and large communities (RFC 8092) added to this VIP's route. */
  communities: string[];
  largeCommunities: string[];
  /** Announce only with at least this many healthy backends; null: the node-wide bgp.minHealthyBackends. */
  minHealthyBackends: number | null;
  /**
   * Every backend with weight > 0 and not drained down by its checks: treat them all as up (new flows spread
   * over them, the VIP stays announced) rather than dropping every new flow. See reconcile/backend-states.ts.
   */
  failOpen: boolean;
  /** The default of backends that do not say; absent = ipip. */
  encap?: Encap;
  /** absent = auto (reconcile/desired.ts statelessOf decides). */
  stateless?: StatelessMode;
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Limits {
  maxVips: number;
  maxBackends: number;
  conntrackEntries: number;
}

/** A validated, normalised configuration (every default filled in, addresses canonical). */
export interface Config {
  interface: string;
  xdpMode: XdpMode;
  /** Canonical MAC, or 'auto' (the neighbour of the default route, resolved by the daemon). */
  nextHopMac: string;
  /** 'auto' (the interface's own addresses, resolved by the daemon) or at most one prefix per family. */
  encapSource: 'auto' | IpPrefix[];
  mtu: number;
  /** listen: the admin API address; perBackendMetrics: export per-backend series (false for huge configs);
   * tokenFile: the bearer token mutating requests need (without it they are served on a loopback listen only);
   * metricsListen: a second, read-only listener (GET /metrics, /healthz, /readyz only). */
  admin: {
    listen: ListenAddress;
    perBackendMetrics: boolean;
    tokenFile?: string;
    metricsListen?: ListenAddress;
  };
  limits: Limits;
  /** The bgp section, parsed (defaults filled in) by its schema (model/bgp.ts). */
  bgp?: BgpConfig;
  /** The kubernetes section as written, checked by its schema (model/kubernetes.ts); the daemon parses it again
   * into source options when it starts the source. */
  kubernetes?: unknown;
  /** Idle time (seconds) after which a connection-table entry is re-selected; 0 = never. */
  conntrackTimeouts: { tcp: number; udp: number };
  /** Keep a blackhole route per VIP address (the kernel drops VIP packets while the balancer is detached). */
  vipBlackholeRoutes: boolean;
  /** GUE's UDP destination port; absent = DEFAULTS.encap. */
  encap?: { guePort: number };
  /** Previous-owner hints (second chance); absent = DEFAULTS.secondChance. */
  secondChance?: { enabled: boolean; retainSeconds: number };
  vips: VipConfig[];
  /**
   * Per-node settings by node labels, parsed (model/nodes.ts). Absent: every node runs with the top level. The
   * daemon runs with resolveNodeSettings' result; the fields above are the defaults every entry overrides.
   */
  nodes?: NodeEntry[];
}

export type ConfigFormat = 'yaml' | 'json';

export type ParseResult =
  { ok: true; config: Config; warnings: ConfigIssue[] } | { ok: false; errors: ConfigIssue[] };
