// The numbers and names bpf/shared.h gives userspace (enum peak_const, enum peak_counter), read from the
// compiled balancer's BTF: TS holds no copy of them. Reading needs the built object, not root.
import { bpfObjectPath } from '../paths';
import { btfLayout } from './bpf';

export interface SharedContract {
  /** PEAK_MAX_PROBES: table slots the datapath probes forward past unusable backends before dropping. */
  maxProbes: number;
  /** PEAK_HASH_SEED: seed of the flow hash (every LB node hashes a flow alike). */
  hashSeed: number;
  /** PEAK_VIP_INDEX_SLOTS: slots of the VIP index (a power of two). */
  vipIndexSlots: number;
  /** PEAK_VIP_INDEX_PROBES: a VIP key sits at most this many slots from its home slot. */
  vipIndexProbes: number;
  /** PEAK_CT_MAX_TIMEOUT: largest connection-table idle timeout in seconds. */
  ctMaxTimeout: number;
  /** PEAK_SLOT_MOVED_BIT: the bit of a current table entry marking a slot whose previous owner differs. */
  slotMovedBit: number;
  /** PEAK_TABLE_PARITY_BIT: the bit of a current table's header word [0] (above M) holding its generation
   * parity, which picks the paired previous table (maglev_prev_tables[vipId * 2 + parity]). */
  tableParityBit: number;
  /** PEAK_CT_CLOSED_BIT: the bit of a connection-table entry's vip_id marking a connection the client ended (FIN
   * or RST seen); its hash field then holds that segment's sequence number. */
  ctClosedBit: number;
  /** PEAK_CT_CLOSED_BEHIND / PEAK_CT_CLOSED_AHEAD: a closed entry serves sequence numbers from this far before
   * its FIN or RST to this far after it (the connection's tail), modulo 2^32. */
  ctClosedBehind: number;
  ctClosedAhead: number;
  /** Global counter names by index (enum peak_counter, lower-case, without PEAK_CNT_), dense. */
  counters: readonly string[];
}

const CONSTS = {
  maxProbes: 'PEAK_CONST_MAX_PROBES',
  hashSeed: 'PEAK_CONST_HASH_SEED',
  vipIndexSlots: 'PEAK_CONST_VIP_INDEX_SLOTS',
  vipIndexProbes: 'PEAK_CONST_VIP_INDEX_PROBES',
  ctMaxTimeout: 'PEAK_CONST_CT_MAX_TIMEOUT',
  slotMovedBit: 'PEAK_CONST_SLOT_MOVED_BIT',
  tableParityBit: 'PEAK_CONST_TABLE_PARITY_BIT',
  ctClosedBit: 'PEAK_CONST_CT_CLOSED_BIT',
  ctClosedBehind: 'PEAK_CONST_CT_CLOSED_BEHIND',
  ctClosedAhead: 'PEAK_CONST_CT_CLOSED_AHEAD',
} as const satisfies Record<Exclude<keyof SharedContract, 'counters'>, string>;

const cache = new Map<string, SharedContract>();
/** The build's balancer object (the default path, joined once: the datapath asks for its contract per table). */
let buildObject: string | undefined;

/** The contract of the balancer object at `objectPath` (default: the build's), read once per path. */
export function sharedContract(given?: string): SharedContract {
  const objectPath = given ?? (buildObject ??= bpfObjectPath('balancer'));
  const hit = cache.get(objectPath);
  if (hit) return hit;
  const { enums } = btfLayout(objectPath);
  const find = (name: string): Record<string, number> => {
    const e = enums.find((x) => x.name === name);
    if (!e) throw new Error(`enum ${name} not found in the BTF of ${objectPath}`);
    return e.values;
  };
  const consts = find('peak_const');
  const constant = (field: keyof typeof CONSTS): number => {
    const v = consts[CONSTS[field]];
    if (v === undefined) throw new Error(`${CONSTS[field]} not found in enum peak_const of ${objectPath}`);
    // BTF enum values are signed 32-bit; the seed is a u32.
    return v >>> 0;
  };
  const out: SharedContract = Object.freeze({
    maxProbes: constant('maxProbes'),
    hashSeed: constant('hashSeed'),
    vipIndexSlots: constant('vipIndexSlots'),
    vipIndexProbes: constant('vipIndexProbes'),
    ctMaxTimeout: constant('ctMaxTimeout'),
    slotMovedBit: constant('slotMovedBit'),
    tableParityBit: constant('tableParityBit'),
    ctClosedBit: constant('ctClosedBit'),
    ctClosedBehind: constant('ctClosedBehind'),
    ctClosedAhead: constant('ctClosedAhead'),
    counters: Object.freeze(
      denseCounterNames(find('peak_counter'), { enumName: 'peak_counter', prefix: 'PEAK_CNT_' }, objectPath),
    ),
  });
  cache.set(objectPath, out);
  return out;
}

/**
 * Counter names by index from a dense counter enum read from BTF (`enum peak_counter`, `enum
 * peak_decap_counter`): lower-case, without the prefix, every index below the `<prefix>MAX` member used
 * exactly once. New enum members become new counters with no code change.
 */
export function denseCounterNames(
  values: Readonly<Record<string, number>>,
  o: { enumName: string; prefix: string },
  source: string,
): string[] {
  const maxName = `${o.prefix}MAX`;
  const max = values[maxName];
  if (max === undefined) throw new Error(`${maxName} not found in enum ${o.enumName} of ${source}`);
  const names = new Array<string>(max);
  for (const [name, v] of Object.entries(values)) {
    if (name === maxName) continue;
    if (!Number.isInteger(v) || v < 0 || v >= max || names[v] !== undefined)
      throw new Error(`enum ${o.enumName} of ${source}: ${name} = ${v} is not a free index below ${maxName}`);
    names[v] = name.slice(name.startsWith(o.prefix) ? o.prefix.length : 0).toLowerCase();
  }
  for (let i = 0; i < max; i++)
    if (names[i] === undefined) throw new Error(`enum ${o.enumName} of ${source}: no counter at index ${i}`);
  return names;
}

/** `name` itself when it is a global counter of the balancer (enum peak_counter); throws otherwise. */
export function counterName(name: string, objectPath?: string): string {
  if (!sharedContract(objectPath).counters.includes(name))
    throw new RangeError(`counter: "${name}" is not in enum peak_counter (bpf/shared.h)`);
  return name;
}
