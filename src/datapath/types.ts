// The Datapath contract: what the control plane (reconcile, daemon, CLI) needs from a data plane.
// Implemented by the kernel (src/datapath/kernel.ts, BPF maps) and in memory (src/datapath/memory.ts, tests).
// Plain data in and out; addresses are strings as written by users ("10.0.0.1", "2001:db8::1").

export type Protocol = 'tcp' | 'udp';

/** up: gets new flows; draining: keeps its established flows, no new ones; down: skipped, flows move. */
export type BackendState = 'up' | 'draining' | 'down';

/** A VIP is matched by destination address, port (0 = every port) and protocol. */
export interface VipKey {
  address: string;
  port: number;
  protocol: Protocol;
}

export interface VipFlags {
  /** Hash on the client source address only (client persistence). */
  sourceHash: boolean;
  /** Do not use or fill the connection table for this VIP. */
  noConntrack: boolean;
}

export interface VipSpec {
  key: VipKey;
  /** Datapath-local id (index into per-VIP maps); allocated by the control plane. */
  id: number;
  flags: VipFlags;
  /** Maglev table size M (prime). */
  tableSize: number;
}

export interface BackendSpec {
  /** Datapath-local id (index into the backends map); allocated by the control plane, per VIP membership. */
  id: number;
  address: string;
  state: BackendState;
}

export interface EncapSource {
  /** Outer source addresses are derived per flow inside prefix/prefixLength (a /32 or /128 is a fixed address). */
  prefix: string;
  prefixLength: number;
}

export interface DatapathConfig {
  /** This node's MAC on the balancing interface (source of transmitted frames). */
  ownMac: string;
  /** The MAC every encapsulated frame is sent to (router or backend L2 neighbour). */
  nextHopMac: string;
  encapSourceV4: EncapSource | null;
  encapSourceV6: EncapSource | null;
  /** Largest IP packet the egress link carries; bigger encapsulated packets get ICMP too-big. */
  mtu: number;
  /** Idle seconds after which a connection-table entry is re-selected (0 = never); absent: 900 / 300. */
  conntrackTimeouts?: { tcp: number; udp: number };
}

export interface TrafficCounter {
  packets: bigint;
  bytes: bigint;
}

export interface DatapathCounters {
  /** Global counters by enum name from bpf/shared.h (lower-case), summed over CPUs. */
  global: Record<string, bigint>;
  vips: Map<number, TrafficCounter>;
  backends: Map<number, TrafficCounter>;
}

export interface ConntrackEntry {
  source: string;
  sourcePort: number;
  destination: string;
  destinationPort: number;
  protocol: Protocol;
  backendId: number;
}

export interface Datapath {
  configure(cfg: DatapathConfig): Promise<void>;
  readConfig(): Promise<DatapathConfig | null>;

  listVips(): Promise<VipSpec[]>;
  /** Creates or updates a VIP (its key, flags and table size). */
  upsertVip(vip: VipSpec): Promise<void>;
  /** Removes a VIP and its table. */
  deleteVip(key: VipKey): Promise<void>;

  listBackends(): Promise<BackendSpec[]>;
  /** Creates or updates a backend entry (address and state): a state change needs no table rebuild. */
  upsertBackend(b: BackendSpec): Promise<void>;
  deleteBackend(id: number): Promise<void>;

  /** Replaces the VIP's Maglev table (backend ids, length = its tableSize) atomically. */
  installTable(vipId: number, table: Uint32Array): Promise<void>;
  /**
   * installTable for several VIPs at once (the kernel swaps them with one map-in-map batch update). Never
   * rejects for one table: per entry, null when installed, or the error installTable would have thrown.
   */
  installTables(batch: readonly { vipId: number; table: Uint32Array }[]): Promise<(Error | null)[]>;
  readTable(vipId: number): Promise<Uint32Array | null>;

  counters(): Promise<DatapathCounters>;
  conntrack(limit?: number): Promise<ConntrackEntry[]>;
}
