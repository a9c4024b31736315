// Desired state: a pure function from config (+ health, + previous ids) to VIPs, backends and Maglev tables.
import type { BackendState, DatapathConfig, EncapSource, VipKey, VipSpec } from '../datapath/types';
import { buildTable } from '../maglev/maglev';
import type { HealthStatus } from '../health/state';
import type { Config, HealthCheckConfig, VipConfig } from '../model/config';
import { assignIds, backendKeyText, emptyIdState, IdState, vipKeyText } from './ids';

/** Backend id 0 means "no backend": a zeroed table slot (ids start at 1). */
export const NO_BACKEND_ID = 0;

export interface DesiredBackend {
  /** Membership key "vipAddress:port/proto>backendAddress" (also the health-check key). */
  key: string;
  id: number;
  address: string;
  weight: number;
  drain: boolean;
  health: HealthStatus | 'unknown';
  /** down (failed checks) wins over draining (weight 0 or drain) wins over up. */
  state: BackendState;
}

export interface DesiredVip {
  name: string;
  spec: VipSpec;
  backends: DesiredBackend[];
  /** The Maglev table (backend ids per slot, stored compactly); immutable, shared between equal inputs. */
  table: IdTable;
  healthCheck: HealthCheckConfig | null;
  /** Backends that take new flows (state up); 0 means the VIP cannot be served (BGP withdraws it). */
  usableBackends: number;
}

export interface DesiredState {
  /** null: leave the datapath's config alone (not resolved yet). */
  datapathConfig: DatapathConfig | null;
  vips: DesiredVip[];
  /** Feed into the next desiredState call to keep ids stable. */
  ids: IdState;
  /** Names of VIPs with no usable backend. */
  unavailableVips: string[];
}

/**
 * A Maglev table of backend ids, stored as member indices (1 byte per slot up to 255 members, 2 up to
 * 65535): 512 VIPs x 65537 slots take 32 MiB instead of 128. `ids()` materialises it for installing.
 */
export class IdTable {
  /** Backend id per member index; [NO_BACKEND_ID] when the table has no member. */
  private readonly members: Uint32Array;
  private readonly slots: Uint8Array | Uint16Array | Uint32Array;

  constructor(
    /** Identity of the inputs (size, sorted address=id*weight): equal signatures, equal tables. */
    readonly signature: string,
    indexTable: Uint32Array,
    memberIds: readonly number[],
  ) {
    const n = memberIds.length;
    this.members = n === 0 ? Uint32Array.of(NO_BACKEND_ID) : Uint32Array.from(memberIds);
    const Slots = n <= 0x100 ? Uint8Array : n <= 0x10000 ? Uint16Array : Uint32Array;
    this.slots = n === 0 ? new Uint8Array(indexTable.length) : Slots.from(indexTable);
  }

  get size(): number {
    return this.slots.length;
  }

  /** Bytes held by this table. */
  get byteLength(): number {
    return this.slots.byteLength + this.members.byteLength;
  }

  /** Backend ids per slot, as the datapath installs them (a fresh array). */
  ids(): Uint32Array {
    const out = new Uint32Array(this.slots.length);
    const { slots, members } = this;
    for (let s = 0; s < slots.length; s++) out[s] = members[slots[s]!]!;
    return out;
  }

  /** True if a table read from a datapath holds exactly these ids. */
  equals(ids: Uint32Array): boolean {
    const { slots, members } = this;
    if (ids.length !== slots.length) return false;
    for (let s = 0; s < slots.length; s++) if (ids[s] !== members[slots[s]!]) return false;
    return true;
  }
}

/** Memo of built tables by signature; keeps what the last two desiredState calls used, drops the rest. */
export class TableCache {
  private current = new Map<string, IdTable>();
  private previous = new Map<string, IdTable>();
  hits = 0;
  misses = 0;

  /** Starts a new generation (desiredState calls it once per call). */
  rotate(): void {
    this.previous = this.current;
    this.current = new Map();
  }

  get(signature: string, build: () => IdTable): IdTable {
    let t = this.current.get(signature) ?? this.previous.get(signature);
    if (t !== undefined) this.hits++;
    else {
      this.misses++;
      t = build();
    }
    this.current.set(signature, t);
    return t;
  }

  get size(): number {
    return new Set([...this.current.keys(), ...this.previous.keys()]).size;
  }
}

export interface DesiredStateOptions {
  config: Config;
  /** Health by backend membership key; absent entries count as up (no blackhole on start or restart). */
  health?: ReadonlyMap<string, HealthStatus>;
  /** Ids from the previous call or from idStateFromDatapath; default: fresh. */
  ids?: IdState;
  datapathConfig?: DatapathConfig | null;
  /** Memo of tables (same inputs give the same table, so this changes speed only). */
  tables?: TableCache;
}

export const vipKeyOf = (v: VipConfig): VipKey => ({
  address: v.address,
  port: v.port,
  protocol: v.protocol,
});

function backendState(weight: number, drain: boolean, health: HealthStatus | 'unknown'): BackendState {
  if (health === 'down') return 'down';
  if (drain || weight === 0) return 'draining';
  return 'up';
}

/** Maglev table of backend ids; backends with weight 0 stay out, draining and down ones stay in. */
export function tableFor(tableSize: number, backends: readonly DesiredBackend[]): IdTable {
  const members = backends.filter((b) => b.weight > 0);
  const idx = buildTable({
    backends: members.map((b) => ({ name: b.address, weight: b.weight })),
    size: tableSize,
  });
  return new IdTable(
    tableSignature(tableSize, backends),
    idx,
    members.map((b) => b.id),
  );
}

export function tableSignature(tableSize: number, backends: readonly DesiredBackend[]): string {
  const parts = backends
    .filter((b) => b.weight > 0)
    .map((b) => `${b.address}=${b.id}*${b.weight}`)
    .sort();
  return `${tableSize}|${parts.join(',')}`;
}

/** Key strings per VIP config object: reused across reloads (validateConfig keeps unchanged VIPs' objects). */
const keyMemo = new WeakMap<VipConfig, { vip: string; members: string[] }>();
function keysOf(v: VipConfig): { vip: string; members: string[] } {
  let k = keyMemo.get(v);
  if (k === undefined) {
    const key = vipKeyOf(v);
    k = { vip: vipKeyText(key), members: v.backends.map((b) => backendKeyText(key, b.address)) };
    // Frozen configs never change; a mutable one could, so only frozen ones are memoised.
    if (Object.isFrozen(v) && Object.isFrozen(v.backends)) keyMemo.set(v, k);
  }
  return k;
}

/** Computes the desired datapath state. Pure: same inputs, same output (ids included). */
export function desiredState(opts: DesiredStateOptions): DesiredState {
  const { config } = opts;
  const prev = opts.ids ?? emptyIdState();
  const cache = opts.tables ?? new TableCache();
  cache.rotate();
  const health = opts.health ?? new Map<string, HealthStatus>();

  const keys = config.vips.map(keysOf);
  const vipIds = assignIds(prev.vips, { keys: keys.map((k) => k.vip), min: 0, max: config.limits.maxVips });

  const memberKeys: string[] = [];
  const memberAddress = new Map<string, string>();
  config.vips.forEach((v, i) =>
    v.backends.forEach((b, j) => {
      const key = keys[i]!.members[j]!;
      memberKeys.push(key);
      if (prev.adoptable.length > 0) memberAddress.set(key, b.address);
    }),
  );
  const adoptable = new Map<string, number[]>();
  for (const a of prev.adoptable) adoptable.set(a.address, [...(adoptable.get(a.address) ?? []), a.id]);
  const backendIds = assignIds(prev.backends, {
    keys: memberKeys,
    min: 1,
    max: config.limits.maxBackends,
    prefer: (key) => adoptable.get(memberAddress.get(key)!)?.shift(),
  });

  const vips: DesiredVip[] = config.vips.map((v, i) => {
    const key = vipKeyOf(v);
    const backends: DesiredBackend[] = v.backends.map((b, j) => {
      const bkey = keys[i]!.members[j]!;
      const h = health.get(bkey) ?? 'unknown';
      return {
        key: bkey,
        id: backendIds.ids.get(bkey)!,
        address: b.address,
        weight: b.weight,
        drain: b.drain,
        health: h,
        state: backendState(b.weight, b.drain, h),
      };
    });
    const signature = tableSignature(v.tableSize, backends);
    return {
      name: v.name,
      spec: {
        key,
        id: vipIds.ids.get(keys[i]!.vip)!,
        flags: { sourceHash: v.persistence === 'source-ip', noConntrack: !v.conntrack },
        tableSize: v.tableSize,
      },
      backends,
      table: cache.get(signature, () => tableFor(v.tableSize, backends)),
      healthCheck: v.healthCheck,
      usableBackends: backends.filter((b) => b.state === 'up').length,
    };
  });

  return {
    datapathConfig: opts.datapathConfig ?? null,
    vips,
    ids: { vips: vipIds, backends: backendIds, adoptable: [] },
    unavailableVips: vips.filter((v) => v.usableBackends === 0).map((v) => v.name),
  };
}

export interface ResolveDatapathConfigOptions {
  config: Config;
  /** MAC of config.interface. */
  ownMac: string;
  /** The default route's neighbour MAC, used when config.nextHopMac is 'auto'. */
  autoNextHopMac?: string;
  /** The interface's addresses, used when config.encapSource is 'auto'. */
  autoEncapAddresses?: readonly string[];
}

/** Fills the datapath config from the file plus what the daemon found on the host; throws naming the gap. */
export function resolveDatapathConfig(opts: ResolveDatapathConfigOptions): DatapathConfig {
  const { config } = opts;
  const nextHopMac = config.nextHopMac === 'auto' ? opts.autoNextHopMac : config.nextHopMac;
  if (nextHopMac === undefined)
    throw new Error('nextHopMac: "auto" but no neighbour of the default route was found');
  let v4: EncapSource | null = null;
  let v6: EncapSource | null = null;
  if (config.encapSource === 'auto') {
    for (const a of opts.autoEncapAddresses ?? []) {
      if (a.includes(':')) v6 ??= { prefix: a, prefixLength: 128 };
      else v4 ??= { prefix: a, prefixLength: 32 };
    }
  } else {
    for (const p of config.encapSource) {
      if (p.family === 4) v4 = { prefix: p.prefix, prefixLength: p.prefixLength };
      else v6 = { prefix: p.prefix, prefixLength: p.prefixLength };
    }
  }
  return { ownMac: opts.ownMac, nextHopMac, encapSourceV4: v4, encapSourceV6: v6, mtu: config.mtu };
}
