// MemoryDatapath: an in-memory Datapath with the kernel's invariants, plus a flow simulator, for unit tests.
// The simulator chooses as the kernel does (flowhash.ts selectBackend: same hash, probes, counters).
import { canonicalIp, canonicalMac, ipFamily } from '../model/ip';
import { counterName, sharedContract } from './contract';
import { flowHash, selectBackend, sourceHash } from './flowhash';
import { PROTO_NUMBER } from './layout';
import { TableRefs, tableMembers } from './table-refs';
import type {
  BackendSpec,
  ConntrackEntry,
  Datapath,
  DatapathConfig,
  CountersOptions,
  DatapathCounters,
  TableInstall,
  TrafficCounter,
  VipKey,
  VipSpec,
} from './types';

/** Backend id 0 is "no backend" (a zeroed table slot); real backends have ids 1..maxBackends-1. */
export const NO_BACKEND_ID = 0;

export type DatapathMethod = keyof Datapath;

export interface MemoryDatapathOptions {
  maxVips?: number;
  maxBackends?: number;
}

export interface FlowInput {
  /** The VIP the packet is sent to (its address and protocol; its port unless destinationPort is given). */
  vip: VipKey;
  source: string;
  sourcePort: number;
  /** The packet's destination port (default vip.port): a wildcard-port VIP sees every port. */
  destinationPort?: number;
  /** A TCP SYN (a new connection): chosen by Maglev without reading the connection table, as the kernel does. */
  syn?: boolean;
  /** A TCP FIN or RST from the client: its entry is marked closed at `seq` (the kernel's PEAK_SEQ_END). */
  end?: boolean;
  /** The TCP segment's sequence number (default 1, as test frames carry): a closed entry serves only its tail. */
  seq?: number;
}

export type FlowVerdict =
  | {
      kind: 'forward';
      backendId: number;
      fromConntrack: boolean;
      /** The previous-owner hint the GUE packet carries (bpf peak_pick_hint); absent when none. */
      hint?: { backendId: number; address: string; skipped: boolean };
    }
  | { kind: 'pass'; reason: 'no-vip' }
  | { kind: 'drop'; reason: 'no-table' | 'no-backend' };

/** One recorded call: the method and the key it was about (VIP key text, VIP id or backend id). */
export interface RecordedCall {
  method: DatapathMethod;
  target: string;
}

const vipKeyText = (k: VipKey): string => `${k.address}:${k.port}/${k.protocol}`;

function checkVipKey(k: VipKey, what: string): string {
  const address = canonicalIp(k.address);
  if (address === null)
    throw new TypeError(`${what}.address: ${JSON.stringify(k.address)} is not an IP address`);
  if (!Number.isInteger(k.port) || k.port < 0 || k.port > 65535)
    throw new TypeError(`${what}.port: ${k.port} is not a port (0-65535)`);
  if (k.protocol !== 'tcp' && k.protocol !== 'udp')
    throw new TypeError(`${what}.protocol: ${JSON.stringify(k.protocol)} is not tcp or udp`);
  return vipKeyText({ ...k, address });
}

/** A table as distinct ids plus, per slot, an index into them (1 byte per slot up to 256 distinct ids). */
interface StoredTable {
  ids: Uint32Array;
  slots: Uint8Array | Uint16Array | Uint32Array;
}

/** A previous table to set, or null to clear it. */
type StoredPrevious = StoredTable | null;

function storeTable(table: Uint32Array): StoredTable {
  const index = new Map<number, number>();
  for (let s = 0; s < table.length; s++) if (!index.has(table[s]!)) index.set(table[s]!, index.size);
  const n = index.size;
  const slots =
    n <= 0x100
      ? new Uint8Array(table.length)
      : n <= 0x10000
        ? new Uint16Array(table.length)
        : new Uint32Array(table.length);
  for (let s = 0; s < table.length; s++) slots[s] = index.get(table[s]!)!;
  return { ids: Uint32Array.from(index.keys()), slots };
}

function unstore(t: StoredTable): Uint32Array {
  const out = new Uint32Array(t.slots.length);
  for (let i = 0; i < out.length; i++) out[i] = t.ids[t.slots[i]!]!;
  return out;
}

const viewOfStored = (t: StoredTable): { size: number; entry: (slot: number) => number } => ({
  size: t.slots.length,
  entry: (s) => t.ids[t.slots[s]!]!,
});

/** Whether a call is recorded in MemoryDatapath.calls (mutations are, reads are not). */
type CallKind = 'mutation' | 'read';

export class MemoryDatapath implements Datapath {
  readonly maxVips: number;
  readonly maxBackends: number;
  /** Every mutating call, in order (reads are not recorded). */
  readonly calls: RecordedCall[] = [];

  private cfg: DatapathConfig | null = null;
  private readonly vips = new Map<string, VipSpec>();
  private readonly vipIds = new Map<number, string>();
  private readonly backends = new Map<number, BackendSpec>();
  /** Tables stored compactly (the kernel holds 4 bytes per slot; a test double need not). */
  private readonly tables = new Map<number, StoredTable>();
  /** Previous tables by VIP id (maglev_prev_tables); they do not pin their backends. */
  private readonly prevTables = new Map<number, StoredTable>();
  /** Per backend id: how many tables reference it (a referenced backend cannot be deleted). */
  private readonly tableRefs = new TableRefs();
  /** By 5-tuple (source, source port, destination, destination port, protocol), with the VIP id the entry
   * was written for (as the kernel's entry stores it). */
  private readonly ct = new Map<string, { entry: ConntrackEntry; vipId: number; closedSeq: number | null }>();
  private readonly vipCounters = new Map<number, TrafficCounter>();
  private readonly backendCounters = new Map<number, TrafficCounter>();
  private readonly global: Record<string, bigint> = {};
  private readonly failures = new Map<DatapathMethod, Error>();
  /** Standing failures by "method target" (see failOn). */
  private readonly targetFailures = new Map<string, Error>();

  constructor(opts: MemoryDatapathOptions = {}) {
    this.maxVips = opts.maxVips ?? 1024;
    this.maxBackends = opts.maxBackends ?? 65536;
  }

  /** Makes the next call of `method` reject with `error` (once), to test error paths of callers. */
  failNext(method: DatapathMethod, error: Error): void {
    this.failures.set(method, error);
  }

  /**
   * Makes every call of `method` about `target` (as RecordedCall names it: VIP key text, VIP id or backend
   * id) reject with `error` until cleared with null: one VIP's writes fail, the others' succeed.
   */
  failOn(method: DatapathMethod, target: string, error: Error | null): void {
    if (error === null) this.targetFailures.delete(`${method} ${target}`);
    else this.targetFailures.set(`${method} ${target}`, error);
  }

  private enter(method: DatapathMethod, target: string, kind: CallKind = 'mutation'): void {
    const f = this.failures.get(method);
    if (f !== undefined) {
      this.failures.delete(method);
      throw f;
    }
    const standing = this.targetFailures.get(`${method} ${target}`);
    if (standing !== undefined) throw standing;
    if (kind === 'mutation') this.calls.push({ method, target });
  }

  async configure(cfg: DatapathConfig): Promise<void> {
    this.enter('configure', '');
    for (const k of ['ownMac', 'nextHopMac'] as const)
      if (canonicalMac(cfg[k]) === null)
        throw new TypeError(`${k}: ${JSON.stringify(cfg[k])} is not a MAC address`);
    if (!Number.isInteger(cfg.mtu) || cfg.mtu < 68 || cfg.mtu > 65535)
      throw new TypeError(`mtu: ${cfg.mtu} is not between 68 and 65535`);
    if (
      cfg.guePort !== undefined &&
      (!Number.isInteger(cfg.guePort) || cfg.guePort < 1 || cfg.guePort > 65535)
    )
      throw new TypeError(`guePort: ${cfg.guePort} is not a port in 1..65535`);
    this.cfg = structuredClone(cfg);
  }

  async readConfig(): Promise<DatapathConfig | null> {
    this.enter('readConfig', '', 'read');
    return this.cfg === null ? null : structuredClone(this.cfg);
  }

  async listVips(): Promise<VipSpec[]> {
    this.enter('listVips', '', 'read');
    return [...this.vips.values()].map((v) => structuredClone(v));
  }

  async upsertVip(vip: VipSpec): Promise<void> {
    const key = checkVipKey(vip.key, 'vip.key');
    this.enter('upsertVip', key);
    if (!Number.isInteger(vip.id) || vip.id < 0 || vip.id >= this.maxVips)
      throw new RangeError(`vip.id: ${vip.id} is outside 0..${this.maxVips - 1}`);
    const holder = this.vipIds.get(vip.id);
    if (holder !== undefined && holder !== key)
      throw new RangeError(`vip.id: ${vip.id} is already used by ${holder}`);
    const old = this.vips.get(key);
    if (old !== undefined && old.id !== vip.id) {
      // Re-keyed id: the old id's tables go with it (the kernel indexes tables by id).
      this.dropTable(old.id);
      this.prevTables.delete(old.id);
      this.vipIds.delete(old.id);
    }
    if (old !== undefined && old.tableSize !== vip.tableSize) this.dropTable(vip.id);
    this.vips.set(
      key,
      structuredClone({ ...vip, key: { ...vip.key, address: canonicalIp(vip.key.address)! } }),
    );
    this.vipIds.set(vip.id, key);
  }

  async deleteVip(key: VipKey): Promise<void> {
    const k = checkVipKey(key, 'key');
    this.enter('deleteVip', k);
    const old = this.vips.get(k);
    if (old === undefined) throw new RangeError(`key: VIP ${k} does not exist`);
    this.dropTable(old.id);
    this.prevTables.delete(old.id);
    this.vips.delete(k);
    this.vipIds.delete(old.id);
  }

  async deleteVips(keys: readonly VipKey[]): Promise<(Error | null)[]> {
    const out: (Error | null)[] = [];
    for (const k of keys)
      try {
        await this.deleteVip(k);
        out.push(null);
      } catch (e) {
        out.push(e as Error);
      }
    return out;
  }

  async listBackends(): Promise<BackendSpec[]> {
    this.enter('listBackends', '', 'read');
    return [...this.backends.values()].map((b) => ({ ...b }));
  }

  async upsertBackends(batch: readonly BackendSpec[]): Promise<(Error | null)[]> {
    const out: (Error | null)[] = [];
    for (const b of batch)
      try {
        await this.upsertBackend(b);
        out.push(null);
      } catch (e) {
        out.push(e as Error);
      }
    return out;
  }

  async upsertBackend(b: BackendSpec): Promise<void> {
    this.enter('upsertBackend', String(b.id));
    if (!Number.isInteger(b.id) || b.id <= NO_BACKEND_ID || b.id >= this.maxBackends)
      throw new RangeError(`backend.id: ${b.id} is outside 1..${this.maxBackends - 1}`);
    const address = canonicalIp(b.address);
    if (address === null)
      throw new TypeError(`backend.address: ${JSON.stringify(b.address)} is not an IP address`);
    if (b.state !== 'up' && b.state !== 'draining' && b.state !== 'down')
      throw new TypeError(`backend.state: ${JSON.stringify(b.state)} is not up, draining or down`);
    if (b.encap !== undefined && b.encap !== 'ipip' && b.encap !== 'gue')
      throw new TypeError(`backend.encap: ${JSON.stringify(b.encap)} is not ipip or gue`);
    // As the kernel's listBackends reports it: encap only when gue.
    this.backends.set(b.id, {
      id: b.id,
      address,
      state: b.state,
      ...(b.encap === 'gue' ? { encap: 'gue' } : {}),
    });
  }

  async deleteBackend(id: number): Promise<void> {
    this.enter('deleteBackend', String(id));
    if (!this.backends.has(id)) throw new RangeError(`id: backend ${id} does not exist`);
    const refs = this.tableRefs.count(id);
    if (refs > 0) throw new RangeError(`id: backend ${id} is still in ${refs} Maglev table(s)`);
    this.backends.delete(id);
    this.backendCounters.delete(id);
  }

  async installTable(vipId: number, table: Uint32Array): Promise<void> {
    this.enter('installTable', String(vipId));
    const key = this.vipIds.get(vipId);
    if (key === undefined) throw new RangeError(`vipId: VIP ${vipId} does not exist`);
    const vip = this.vips.get(key)!;
    if (!(table instanceof Uint32Array) || table.length !== vip.tableSize)
      throw new RangeError(`table: length ${table.length} is not the VIP's tableSize ${vip.tableSize}`);
    const stored = storeTable(table);
    const members = tableMembers(table);
    for (const id of members)
      if (!this.backends.has(id)) throw new RangeError(`table: backend ${id} does not exist`);
    // Swap as one step: a reader sees the old table or the new one, never a mix.
    this.dropTable(vipId);
    this.tables.set(vipId, stored);
    this.tableRefs.set(vipId, members);
  }

  async installTables(batch: readonly TableInstall[]): Promise<(Error | null)[]> {
    const out: (Error | null)[] = [];
    for (const { vipId, table, previous } of batch) {
      try {
        // The pair goes in whole or not at all (as KernelDatapath's parity swap): the previous table is
        // checked (and a failure injected for installPreviousTable taken) before the current one is set.
        let prev: StoredPrevious | undefined;
        if (previous !== undefined) {
          this.enter('installPreviousTable', String(vipId));
          prev = this.checkPrevious(vipId, previous);
        }
        await this.installTable(vipId, table);
        if (prev !== undefined) this.setPrevious(vipId, prev);
        out.push(null);
      } catch (e) {
        out.push(e as Error);
      }
    }
    return out;
  }

  async readTable(vipId: number): Promise<Uint32Array | null> {
    this.enter('readTable', String(vipId), 'read');
    const t = this.tables.get(vipId);
    return t === undefined ? null : unstore(t);
  }

  async installPreviousTable(vipId: number, table: Uint32Array | null): Promise<void> {
    this.enter('installPreviousTable', String(vipId));
    this.setPrevious(vipId, this.checkPrevious(vipId, table));
  }

  /** A previous table checked and stored for setPrevious (null: clear). */
  private checkPrevious(vipId: number, table: Uint32Array | null): StoredPrevious {
    if (!this.vipIds.has(vipId)) throw new RangeError(`vipId: VIP ${vipId} does not exist`);
    if (table === null) return null;
    if (!(table instanceof Uint32Array) || table.length < 1)
      throw new RangeError(`table: a previous table needs at least 1 slot (got ${table?.length})`);
    // as KernelDatapath: bit 31 (PEAK_SLOT_F_MOVED) is the datapath's mark, never part of an id
    const flag = 2 ** sharedContract().slotMovedBit;
    const members = tableMembers(table);
    if (members.some((id) => id >= flag))
      throw new RangeError(`table: backend ids must be below ${flag} (got ${Math.max(...members)})`);
    return storeTable(table);
  }

  private setPrevious(vipId: number, stored: StoredPrevious): void {
    if (stored === null) this.prevTables.delete(vipId);
    else this.prevTables.set(vipId, stored);
  }

  async installPreviousTables(
    batch: readonly { vipId: number; table: Uint32Array | null }[],
  ): Promise<(Error | null)[]> {
    const out: (Error | null)[] = [];
    for (const { vipId, table } of batch) {
      try {
        await this.installPreviousTable(vipId, table);
        out.push(null);
      } catch (e) {
        out.push(e as Error);
      }
    }
    return out;
  }

  async readPreviousTable(vipId: number): Promise<Uint32Array | null> {
    this.enter('readPreviousTable', String(vipId), 'read');
    const t = this.prevTables.get(vipId);
    return t === undefined ? null : unstore(t);
  }

  private dropTable(vipId: number): void {
    this.tableRefs.drop(vipId);
    this.tables.delete(vipId);
  }

  async counters(o: CountersOptions = {}): Promise<DatapathCounters> {
    this.enter('counters', '', 'read');
    const copy = (m: Map<number, TrafficCounter>): Map<number, TrafficCounter> =>
      new Map([...m].map(([k, v]) => [k, { ...v }]));
    return {
      global: { ...this.global },
      vips: copy(this.vipCounters),
      backends: o.backends === false ? new Map() : copy(this.backendCounters),
    };
  }

  async conntrack(limit?: number): Promise<ConntrackEntry[]> {
    this.enter('conntrack', '', 'read');
    const all = [...this.ct.values()].map((e) => ({ ...e.entry }));
    return limit === undefined ? all : all.slice(0, limit);
  }

  /** Removes every connection-table entry (a fresh LB node that never saw the flows). */
  flushConntrack(): void {
    this.ct.clear();
  }

  /**
   * Runs one packet of a flow through the modelled datapath: the VIP of its destination (exact port, else the
   * wildcard-port VIP), then bpf peak_select as selectBackend models it (connection table unless a TCP SYN;
   * Maglev slot of the kernel's flow hash, probing PEAK_MAX_PROBES slots). Global counters are the ones that
   * choice bumps, by enum peak_counter name; rx, verdict and encapsulation counters are not modelled.
   */
  forward(flow: FlowInput): FlowVerdict {
    checkVipKey(flow.vip, 'flow.vip');
    const dport = flow.destinationPort ?? flow.vip.port;
    if (!Number.isInteger(dport) || dport < 0 || dport > 65535)
      throw new TypeError(`flow.destinationPort: ${dport} is not a port (0-65535)`);
    const address = canonicalIp(flow.vip.address)!;
    const vip =
      this.vips.get(vipKeyText({ ...flow.vip, address, port: dport })) ??
      this.vips.get(vipKeyText({ ...flow.vip, address, port: 0 }));
    const bump = (m: Map<number, TrafficCounter>, id: number): void => {
      const c = m.get(id) ?? { packets: 0n, bytes: 0n };
      m.set(id, { packets: c.packets + 1n, bytes: c.bytes + 64n });
    };
    const count = (name: string): void => {
      const n = counterName(name);
      this.global[n] = (this.global[n] ?? 0n) + 1n;
    };
    if (vip === undefined) {
      count('pass_not_vip');
      return { kind: 'pass', reason: 'no-vip' };
    }
    bump(this.vipCounters, vip.id);
    const source = canonicalIp(flow.source);
    if (source === null)
      throw new TypeError(`flow.source: ${JSON.stringify(flow.source)} is not an IP address`);
    const proto = PROTO_NUMBER[vip.key.protocol];
    const ctKey = `${source}|${flow.sourcePort}|${address}|${dport}|${proto}`;
    const stateless = vip.flags.stateless === true;
    const useCt = !vip.flags.noConntrack && !stateless;
    const syn = flow.syn === true && vip.key.protocol === 'tcp';
    const table = this.tables.get(vip.id);
    const prev = this.prevTables.get(vip.id);
    const hash = vip.flags.sourceHash
      ? sourceHash(source)
      : flowHash({
          source,
          destination: address,
          sourcePort: flow.sourcePort,
          destinationPort: dport,
          proto,
        });
    const hit = this.ct.get(ctKey);
    const backendIs = (id: number, states: readonly BackendSpec['state'][]): boolean => {
      const b = this.backends.get(id);
      return b !== undefined && states.includes(b.state);
    };
    const r = selectBackend({
      vipId: vip.id,
      table: table === undefined ? null : viewOfStored(table),
      hash,
      usable: (id) => backendIs(id, ['up']),
      keepsFlows: (id) => backendIs(id, ['up', 'draining']),
      // The kernel sets is_syn for TCP only.
      readConntrack: useCt && !syn,
      recordConntrack: useCt,
      conntrack:
        hit === undefined
          ? null
          : { backendId: hit.entry.backendId, vipId: hit.vipId, closedSeq: hit.closedSeq },
      // The kernel judges closed entries by the sequence number of a TCP segment of the flow (not a SYN).
      segment: vip.key.protocol === 'tcp' && !syn ? { seq: flow.seq ?? 1, end: flow.end === true } : null,
      wantHint: vip.key.protocol === 'tcp' && !syn,
      gue: (id) => this.backends.get(id)?.encap === 'gue',
      family: (id) => ipFamily(this.backends.get(id)?.address ?? ''),
      previousTable: prev === undefined ? null : viewOfStored(prev),
    });
    r.counters.forEach(count);
    if (r.backendId === null) return { kind: 'drop', reason: r.drop ?? 'no-backend' };
    if (r.recorded)
      this.ct.set(ctKey, {
        vipId: vip.id,
        closedSeq: r.closes,
        entry: {
          source,
          sourcePort: flow.sourcePort,
          destination: address,
          destinationPort: dport,
          protocol: vip.key.protocol,
          backendId: r.backendId,
          closed: r.closes !== null,
        },
      });
    else if (r.closes !== null && hit !== undefined) {
      hit.closedSeq = r.closes;
      hit.entry.closed = true;
    }
    bump(this.backendCounters, r.backendId);
    if (stateless) count('stateless_forward');
    const fwd = { kind: 'forward' as const, backendId: r.backendId, fromConntrack: r.from === 'conntrack' };
    if (r.hint === null) return fwd;
    return { ...fwd, hint: { ...r.hint, address: this.backends.get(r.hint.backendId)!.address } };
  }
}
