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
  /**
   * Stateless VIP (bpf PEAK_VIP_F_STATELESS): the connection table is never read nor filled (as noConntrack),
   * and every non-SYN TCP packet to a GUE backend may carry the previous owner as a hint, so backends running
   * our decap give a moved flow its second chance. Absent = false.
   */
  stateless?: boolean;
}

export interface VipSpec {
  key: VipKey;
  /** Datapath-local id (index into per-VIP maps); allocated by the control plane. */
  id: number;
  flags: VipFlags;
  /** Maglev table size M (prime). */
  tableSize: number;
}

/**
 * How packets reach a backend. ipip: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6 (the kernel's tunnel modules
 * or our decap). gue: GUE over UDP (bpf/gue.h; our decap only), any inner family over either outer family,
 * and the only kind that carries the previous-owner hint.
 */
export type BackendEncap = 'ipip' | 'gue';

export interface BackendSpec {
  /** Datapath-local id (index into the backends map); allocated by the control plane, per VIP membership. */
  id: number;
  address: string;
  state: BackendState;
  /** Encapsulation toward this backend; absent = 'ipip'. listBackends() reports it only when 'gue'. */
  encap?: BackendEncap;
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
  /** UDP destination port of GUE packets (1..65535); absent: 6080 (PEAK_GUE_DEFAULT_PORT). */
  guePort?: number;
}

export interface TrafficCounter {
  packets: bigint;
  bytes: bigint;
}

export interface CountersOptions {
  /** Read every backend's traffic (default true). */
  backends?: boolean;
}

export interface DatapathCounters {
  /** Global counters by enum name from bpf/shared.h (lower-case), summed over CPUs. */
  global: Record<string, bigint>;
  vips: Map<number, TrafficCounter>;
  /** Empty when read with `backends: false`. */
  backends: Map<number, TrafficCounter>;
}

export interface ConntrackEntry {
  source: string;
  sourcePort: number;
  destination: string;
  destinationPort: number;
  protocol: Protocol;
  backendId: number;
  /** The client ended the connection (a FIN or RST went through): the entry serves only its tail, and a new
   * connection on the same 5-tuple is chosen afresh. */
  closed: boolean;
}

export interface Datapath {
  configure(cfg: DatapathConfig): Promise<void>;
  readConfig(): Promise<DatapathConfig | null>;

  listVips(): Promise<VipSpec[]>;
  /** Creates or updates a VIP (its key, flags and table size). */
  upsertVip(vip: VipSpec): Promise<void>;
  /** Removes a VIP and its table. */
  deleteVip(key: VipKey): Promise<void>;
  /** deleteVip for many VIPs at once (the kernel clears all their table slots in one map-in-map update, one RCU
   * wait for the batch instead of one per slot). Per key: null or the error deleteVip would have thrown. */
  deleteVips(keys: readonly VipKey[]): Promise<(Error | null)[]>;

  listBackends(): Promise<BackendSpec[]>;
  /** Creates or updates a backend entry (address and state): a state change needs no table rebuild. */
  upsertBackend(b: BackendSpec): Promise<void>;
  /** upsertBackend for many backends at once (the kernel writes them in one batch, one syscall instead of one per
   * backend). Per entry: null or the error upsertBackend would have thrown. */
  upsertBackends(batch: readonly BackendSpec[]): Promise<(Error | null)[]>;
  deleteBackend(id: number): Promise<void>;

  /** Replaces the VIP's Maglev table (backend ids, length = its tableSize). Each slot changes atomically for
   * packets (old or new owner, both valid); the kernel may patch a small change slot by slot instead of
   * swapping the whole table at once (a swap waits for an RCU grace period). */
  installTable(vipId: number, table: Uint32Array): Promise<void>;
  /**
   * installTable for several VIPs at once (the kernel swaps them with one map-in-map batch update). Never
   * rejects for one table: per entry, null when installed, or the error installTable would have thrown.
   * An entry's `previous` (a table, or null to clear it; absent: the previous table stays) is installed with
   * the table as one atomic pair: a packet sees the old table with the old previous table, or the new with
   * the new, never a mix (issue 15: the kernel writes the new previous table where no packet reads it, then
   * the current table's swap flips its generation parity bit, which picks the previous table). Whole or not
   * at all: an error means neither changed.
   */
  installTables(batch: readonly TableInstall[]): Promise<(Error | null)[]>;
  /** The VIP's table as installed (backend ids), a copy the caller owns; null when it has none. `into`: memory the
   * copy may be read into when it fits (a datapath may ignore it; the result is then another array). */
  readTable(vipId: number, into?: Uint32Array): Promise<Uint32Array | null>;

  /**
   * Sets (or with null clears) the VIP's previous table: its Maglev table from before the last membership
   * change (any length; entries are backend ids). For a non-SYN TCP packet without a connection-table hit, when
   * the slot's owner in the previous table differs from the current one and both are GUE backends, the
   * packet carries the previous owner's address as a hint. Atomic per VIP, and paired with the current table
   * installed at that moment. To move from table A to B, use installTables([{ vipId: v, table: B, previous:
   * A }]) (one atomic pair); calling installPreviousTable(v, A) and then installTable(v, B) leaves a window
   * pairing A with A (no hints; harmful when a slot went X -> A -> X: its flows on X get no hint). A previous
   * table does not keep its backends from deleteBackend: a deleted (unset) previous owner is simply not hinted.
   * Deleting the VIP, or re-keying its id, clears it.
   */
  installPreviousTable(vipId: number, table: Uint32Array | null): Promise<void>;
  /** installPreviousTable for several VIPs (one batch update in the kernel); per entry null or the error. */
  installPreviousTables(
    batch: readonly { vipId: number; table: Uint32Array | null }[],
  ): Promise<(Error | null)[]>;
  readPreviousTable(vipId: number): Promise<Uint32Array | null>;

  /** The counters; with `backends: false` no backend's traffic is read (`backends` is then empty): a read per
   * backend costs ~1 s and ~60 MB at 512,000 backends, which a caller that shows no backend must not pay. */
  counters(o?: CountersOptions): Promise<DatapathCounters>;
  conntrack(limit?: number): Promise<ConntrackEntry[]>;
}

/** One table to install (Datapath.installTables), with the previous table to pair with it. */
export interface TableInstall {
  vipId: number;
  table: Uint32Array;
  /** The VIP's previous table from now on (null: none); absent: the installed previous table stays. */
  previous?: Uint32Array | null;
}

/** The error code of a VIP table the datapath cannot read (its pin gone and no CAP_SYS_ADMIN to open it by id):
 * callers that can do without the content (a reconcile then rewrites the table) test it with isTableUnreadable. */
export const TABLE_UNREADABLE = 'ETABLEUNREADABLE';

/** True for an error with code TABLE_UNREADABLE (also one from another copy of the module that threw it). */
export const isTableUnreadable = (e: unknown): boolean =>
  (e as { code?: unknown } | null)?.code === TABLE_UNREADABLE;
