// Every default of the configuration file, named in one place (the schema and the docs read these).
import { MAGLEV_DEFAULT_SIZE } from '../maglev/maglev';

export const DEFAULTS = {
  xdpMode: 'auto',
  nextHopMac: 'auto',
  encapSource: 'auto',
  mtu: 1500,
  // perBackendMetrics off: a series per membership is millions at 512 x 1000 (per-VIP counts by state stay).
  admin: { listen: '127.0.0.1:9470', perBackendMetrics: false },
  limits: {
    /** Largest number of VIPs (size of the per-VIP maps). */
    maxVips: 1024,
    /** Largest number of backend memberships (VIP, address) (size of the backends map). */
    maxBackends: 65536,
    /** Connection-table entries (LRU). */
    conntrackEntries: 1048576,
  },
  vip: {
    protocol: 'tcp',
    tableSize: MAGLEV_DEFAULT_SIZE,
    persistence: 'none',
    conntrack: true,
    /**
     * When every backend that takes traffic (weight > 0, not drained) fails its checks, forward to all of
     * them and stay announced: the checks are then likelier wrong (a starved checker, a broken health
     * endpoint, a firewall) than every backend dead, and dropping turns that into an outage (README).
     */
    failOpen: true,
    /** Encapsulation of backends that do not say (backends[].encap). */
    encap: 'ipip',
    /** auto: stateless (no connection table) for a TCP VIP whose every backend is `gue` (our decap). */
    stateless: 'auto',
  },
  healthCheck: {
    type: 'tcp',
    path: '/',
    intervalMs: 2000,
    timeoutMs: 1000,
    rise: 2,
    fall: 3,
    /** Seconds a backend down by health check alone keeps its established flows (draining); 0 = none. */
    downGraceSeconds: 30,
  },
  backend: { weight: 1, drain: false },
  /** Connection-table idle timeouts in seconds (IPVS's TCP established and UDP values). */
  conntrackTimeouts: { tcp: 900, udp: 300 },
  /**
   * A blackhole route per VIP address while the daemon runs (in a table of its own, for packets arriving on
   * the interface): with the balancer detached, VIP packets are dropped by the kernel instead of routed back
   * to the router (a loop when ip_forward=1). See vip-routes.ts.
   */
  vipBlackholeRoutes: true,
  /**
   * Kubernetes Services (`kubernetes.tableSize`, a Service's `peak-xdp.io/table-size` annotation first): Cilium's
   * default Maglev size, not the file VIPs' 65,537. A cluster has many Services with few endpoints each, and every
   * one rebuilds its table whenever an endpoint changes: ~68 KiB of kernel memory per table instead of 264 KiB
   * (0.65 GiB against 2.5 GiB at 10,000 Services), a quarter of the build CPU of an endpoint burst, and still
   * 100 slots per endpoint up to 163 endpoints (a bigger Service takes the annotation).
   */
  kubernetes: { tableSize: 16381 },
  /** GUE's UDP destination port (Katran's default). */
  encap: { guePort: 6080 },
  /**
   * Previous Maglev owners kept per VIP after a table change, hinted to GUE backends (second chance):
   * a moved slot's previous owner is kept retainSeconds after the change that moved it.
   */
  secondChance: { enabled: true, retainSeconds: 300 },
} as const;

/** Bounds the validator enforces. */
export const BOUNDS = {
  mtu: { min: 1280, max: 9216 },
  /** Characters of the admin token (admin.tokenFile) at least: a short one could be guessed. */
  adminTokenLength: { min: 16 },
  weight: { max: 65535 },
  intervalMs: { min: 100, max: 3_600_000 },
  timeoutMs: { min: 10, max: 60_000 },
  riseFall: { min: 1, max: 100 },
  /** Seconds (a day at most). */
  downGraceSeconds: { min: 0, max: 86_400 },
  maxVips: { min: 1, max: 65536 },
  maxBackends: { min: 2, max: 1 << 24 },
  conntrackEntries: { min: 1024, max: 1 << 26 },
  /** Seconds; 0 = never expire. */
  conntrackTimeout: { min: 0, max: 1_000_000 },
  guePort: { min: 1, max: 65535 },
  /** Seconds a previous owner is kept (a day at most). */
  retainSeconds: { min: 1, max: 86_400 },
} as const;
