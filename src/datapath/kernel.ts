// KernelDatapath: the Datapath interface over the balancer's BPF maps; load, pin, adopt, attach, detach.
import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { isUint32Array } from 'node:util/types';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { DEFAULTS } from '../model/defaults';
import { bpfObjectPath } from '../paths';
import {
  attachXdp,
  BpfMap,
  BpfObject,
  BpfProgram,
  btfMapDefs,
  MapFlags,
  detachXdp,
  entriesForWords,
  MapType,
  queryXdp,
  splitPerCpu,
  unpin,
  XdpMode,
  XdpStatus,
} from './bpf';
import {
  decodeBackend,
  decodeConfig,
  decodeCtValue,
  decodeFlowKey,
  decodeVipKey,
  decodeVipValue,
  encodeAddrKey,
  encodeBackend,
  encodeBackendInto,
  encodeConfig,
  encodeVipKey,
  encodeVipValue,
  encodeVipIndexHead,
  encodeVipSlot,
  DEFAULT_CT_TIMEOUTS,
  LAYOUT,
  markMovedSlots,
  PROTO_NUMBER,
  sumTraffic,
} from './layout';
import { sharedContract } from './contract';
import { planVipIndex } from './flowhash';
import { native } from './native';
import { TableRefs, tableMembers } from './table-refs';
import {
  isTableUnreadable,
  TABLE_UNREADABLE,
  type BackendSpec,
  type ConntrackEntry,
  type Datapath,
  type DatapathConfig,
  type CountersOptions,
  type DatapathCounters,
  type TableInstall,
  type TrafficCounter,
  type VipKey,
  type VipSpec,
} from './types';

/** The balancer's program and maps: one list for loading, pinning and adopting. */
export const BALANCER_PROGRAM = 'balancer';
export const BALANCER_MAPS = [
  'vips',
  'vip_index',
  'vip_addrs',
  'backends',
  'maglev_tables',
  'maglev_prev_tables',
  'conntrack',
  'config',
  'stats',
  'vip_stats',
  'backend_stats',
] as const;
export type BalancerMap = (typeof BALANCER_MAPS)[number];

/** The config limits that size the balancer's maps (defaults in src/model/defaults.ts). */
export interface BalancerLimits {
  maxVips: number;
  maxBackends: number;
  conntrackEntries: number;
}

/**
 * Which limit sizes each map (the others have fixed sizes): one table for every load (daemon, CLI attach)
 * and for checking pinned maps on adoption. bpf/shared.h's sizes are only the object's compiled defaults.
 */
export const MAP_LIMITS: Readonly<Partial<Record<BalancerMap, keyof BalancerLimits>>> = {
  vips: 'maxVips',
  vip_addrs: 'maxVips',
  maglev_tables: 'maxVips',
  maglev_prev_tables: 'maxVips',
  vip_stats: 'maxVips',
  backends: 'maxBackends',
  backend_stats: 'maxBackends',
  conntrack: 'conntrackEntries',
};

/** Entries per unit of the limit where a map holds more than one per VIP: maglev_prev_tables holds two
 * generations per VIP (index vipId * 2 + the current table's parity bit; bpf/maps.h). */
export const MAP_LIMIT_FACTOR: Readonly<Partial<Record<BalancerMap, number>>> = {
  maglev_prev_tables: 2,
};

/**
 * max_entries per map for these limits (KernelLoadOptions.maxEntries). KernelDatapath.load sizes every map
 * not given from DEFAULTS.limits through this too, so bpf/shared.h's sizes never decide a loaded map.
 */
export function balancerMapSizes(limits: BalancerLimits): Partial<Record<BalancerMap, number>> {
  const out: Partial<Record<BalancerMap, number>> = {};
  for (const [map, key] of Object.entries(MAP_LIMITS) as [BalancerMap, keyof BalancerLimits][])
    out[map] = limits[key] * (MAP_LIMIT_FACTOR[map] ?? 1);
  return out;
}

/** The max_entries KernelDatapath.load gives each limit-sized map: `maxEntries`, else DEFAULTS.limits'. */
export function loadMapSizes(
  maxEntries: KernelLoadOptions['maxEntries'] = {},
): Partial<Record<BalancerMap, number>> {
  return { ...balancerMapSizes(DEFAULTS.limits), ...maxEntries };
}

/** XDP's BPF program type (BPF_PROG_TYPE_XDP). */
export const BPF_PROG_TYPE_XDP = 6;

/** What one pin under a balancer's pin directory holds, as readPins found it (plain data for pinDecision). */
export type PinnedObject =
  | { kind: 'missing' }
  | {
      kind: 'map';
      type: number;
      keySize: number;
      valueSize: number;
      maxEntries: number;
      flags: number;
      /**
       * A map-in-map's: the template of the inner maps it accepts (the kernel admits only those equal to it):
       * an installed inner map's, else the template in the BTF of the pinned program (the object the balancer
       * was loaded from), else what a probe found (readPins); null when nothing tells. Absent for other maps.
       */
      inner?: InnerTemplate | null;
    }
  | { kind: 'program'; type: number; typeName: string; name: string; id: number }
  /** Neither a map nor a program we can open (another kind of file, or no permission). */
  | { kind: 'unreadable'; error: string };

/** The balancer's pins: the program and every map of this build's list. */
export interface PinSnapshot {
  program: PinnedObject;
  maps: Record<BalancerMap, PinnedObject>;
}

/** One map as this build's object defines it (the layout a pinned map must have to be adopted). */
export interface MapSpec {
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  flags: number;
  /** The inner template of a map in TEMPLATE_CHECKED (absent for other maps). */
  inner?: InnerTemplate;
}

/**
 * What a map of maps admits as inner maps besides their type and key size (the kernel's bpf_map_meta_equal; our
 * templates have BPF_F_INNER_MAP, so sizes may differ): map_flags and value size. The Maglev tables' template
 * gained BPF_F_MMAPABLE (issue 17), then 64-byte values of 16 slots (issue 15).
 */
export interface InnerTemplate {
  flags: number;
  valueSize: number;
}

const sameTemplate = (a: InnerTemplate, b: InnerTemplate): boolean =>
  a.flags === b.flags && a.valueSize === b.valueSize;

const describeTemplate = (t: InnerTemplate): string => `flags ${t.flags}, ${t.valueSize}-byte values`;

/** This build's balancer, as its object file defines it. */
export interface BalancerSpec {
  programType: number;
  programName: string;
  maps: Record<BalancerMap, MapSpec>;
}

/** The XDP program on the interface (progId 0: none); `name` null when it could not be read. */
export interface AttachedProgram {
  progId: number;
  name: string | null;
}

/** Why pinned state is replaced rather than adopted: the `reason` label of the replacements counter. */
export type ReplaceReason = 'missing_map' | 'map_type' | 'map_layout' | 'map_size' | 'unpinned_program';
/** Most telling first: the counter's label is the first that applies; the log lists every finding. */
const REPLACE_ORDER: readonly ReplaceReason[] = [
  'unpinned_program',
  'missing_map',
  'map_type',
  'map_layout',
  'map_size',
];

/**
 * What a start does with the pin directory it found:
 * - `adopt`: the pinned balancer has this build's layout and big enough maps: use it as it is (zero writes);
 * - `fresh`: nothing of ours pinned (`leftovers`: map pins with no program pin, an interrupted pin or unpin,
 *   removed before pinning);
 * - `replace`: a balancer that cannot be adopted forwards (or is pinned): load this build's aside, program it,
 *   swap it in atomically, then move the pins;
 * - `refuse`: the pin directory holds something that is not our balancer: touch nothing.
 */
export type PinDecision =
  | { kind: 'adopt' }
  | { kind: 'fresh'; leftovers: BalancerMap[] }
  | { kind: 'replace'; reason: ReplaceReason; detail: string; leftovers: BalancerMap[] }
  | { kind: 'refuse'; reason: string };

const describePinned = (o: PinnedObject): string =>
  o.kind === 'map'
    ? `a map (type ${o.type})`
    : o.kind === 'program'
      ? `a ${o.typeName} program named "${o.name}" (id ${o.id})`
      : o.kind === 'unreadable'
        ? `something that is neither a BPF map nor a program we can open (${o.error})`
        : 'nothing';

/**
 * Maps whose value an older build may have had shorter and still adopt: `stats` holds one u64 per counter and
 * counters are only ever appended (bpf/shared.h), so counters() reads what an older value holds.
 */
export const APPENDED_VALUES: ReadonlySet<BalancerMap> = new Set<BalancerMap>(['stats']);

const valueFits = (m: BalancerMap, pinned: number, ours: number): boolean =>
  pinned === ours || (APPENDED_VALUES.has(m) && pinned > 0 && pinned < ours && pinned % 8 === 0);

/**
 * Adopt, replace, load fresh or refuse (pure: every input read beforehand by inspectBalancerPins). `needed`:
 * the entries each limit-sized map must hold (balancerMapSizes of the config's limits).
 */
export function pinDecision(o: {
  pins: PinSnapshot;
  spec: BalancerSpec;
  needed: Partial<Record<BalancerMap, number>>;
  attached: AttachedProgram;
  /** The pin directory, for messages. */
  dir: string;
}): PinDecision {
  const { pins, spec } = o;
  const pinnedMaps = BALANCER_MAPS.filter((m) => pins.maps[m].kind !== 'missing');
  const prog = pins.program;
  if (prog.kind === 'missing') {
    // No program pin: whatever maps are pinned belong to no adoptable balancer (the program is pinned last and
    // unpinned first). A balancer attached without pins is one a replace swapped in before it could pin it.
    if (o.attached.progId !== 0 && o.attached.name === spec.programName)
      return {
        kind: 'replace',
        reason: 'unpinned_program',
        detail: `XDP program ${o.attached.progId} named ${spec.programName} is attached but not pinned (an interrupted replace)`,
        leftovers: pinnedMaps,
      };
    return { kind: 'fresh', leftovers: pinnedMaps };
  }
  if (prog.kind !== 'program' || prog.type !== spec.programType || prog.name !== spec.programName)
    return {
      kind: 'refuse',
      reason:
        `the pin ${o.dir}/${BALANCER_PROGRAM} holds ${describePinned(prog)}, not a balancer (an XDP program ` +
        `named ${spec.programName}): nothing was changed. Remove what is pinned under ${o.dir} if it is not in use.`,
    };
  const found: { reason: ReplaceReason; text: string }[] = [];
  for (const m of BALANCER_MAPS) {
    const p = pins.maps[m];
    const want = spec.maps[m];
    if (p.kind === 'missing') found.push({ reason: 'missing_map', text: `no map ${m}` });
    else if (p.kind !== 'map')
      found.push({ reason: 'map_type', text: `pin ${m} holds ${describePinned(p)}, not a map` });
    else if (p.type !== want.type)
      found.push({ reason: 'map_type', text: `map ${m} is of type ${p.type}, this build's ${want.typeName} (${want.type})` }); // prettier-ignore
    else if (
      p.keySize !== want.keySize ||
      !valueFits(m, p.valueSize, want.valueSize) ||
      p.flags !== want.flags
    )
      found.push({
        reason: 'map_layout',
        text: `map ${m} has key/value ${p.keySize}/${p.valueSize} bytes, flags ${p.flags} (this build's ${want.keySize}/${want.valueSize}, flags ${want.flags})`, // prettier-ignore
      });
    // An outer map whose inner template differs rejects every inner map this build makes (e.g. an older
    // build's Maglev template without BPF_F_MMAPABLE, or with 4-byte slots): adopting it would fail every table
    // write.
    else if (
      want.inner !== undefined &&
      (p.inner === null || p.inner === undefined || !sameTemplate(p.inner, want.inner))
    )
      // prettier-ignore
      found.push({
        reason: 'map_layout',
        text:
          p.inner === null || p.inner === undefined
            ? `map ${m}: the template of its inner maps is unknown (none installed, no template in the program's BTF; this build's ${describeTemplate(want.inner)})` // prettier-ignore
            : `map ${m} holds inner maps with ${describeTemplate(p.inner)} (this build's ${describeTemplate(want.inner)})`,
      });
    else if (p.maxEntries < (o.needed[m] ?? 0))
      found.push({
        reason: 'map_size',
        text: `map ${m} has ${p.maxEntries} entries, limits.${MAP_LIMITS[m]} needs ${o.needed[m]}`,
      });
  }
  if (found.length === 0) return { kind: 'adopt' };
  const reason = REPLACE_ORDER.find((r) => found.some((f) => f.reason === r))!;
  return { kind: 'replace', reason, detail: found.map((f) => f.text).join('; '), leftovers: [] };
}

/** Reads what the pin at `path` holds (a map, a program, nothing); opens nothing it does not close. */
export function readPin(path: string, expect: 'program' | 'map'): PinnedObject {
  const asProgram = (): PinnedObject => {
    const p = BpfProgram.fromPin(path);
    try {
      const i = p.info();
      return { kind: 'program', type: i.type, typeName: i.typeName, name: i.name, id: i.id };
    } finally {
      p.close();
    }
  };
  const asMap = (): PinnedObject => {
    const m = BpfMap.fromPin(path);
    const i = m.info;
    m.close();
    return { kind: 'map', type: i.type, keySize: i.keySize, valueSize: i.valueSize, maxEntries: i.maxEntries, flags: i.flags }; // prettier-ignore
  };
  const [first, second] = expect === 'program' ? [asProgram, asMap] : [asMap, asProgram];
  try {
    return first();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    try {
      return second();
    } catch {
      return { kind: 'unreadable', error: (e as Error).message };
    }
  }
}

/**
 * The maps of maps whose inner template must match this build's to adopt (the Maglev tables: their template
 * gained BPF_F_MMAPABLE, then 64-byte values). Not vip_index: its template has never changed, and its one slot is read by
 * every packet, so it could not be probed.
 */
export const TEMPLATE_CHECKED: readonly BalancerMap[] = ['maglev_tables', 'maglev_prev_tables'];

/** The Maglev inner templates of older builds, newest first: 4-byte slots (before issue 15's packed tables), and
 * before that without BPF_F_MMAPABLE (before issue 17). */
export const OLDER_TEMPLATES: readonly InnerTemplate[] = [
  { flags: MapFlags.INNER_MAP | MapFlags.MMAPABLE, valueSize: 4 },
  { flags: MapFlags.INNER_MAP, valueSize: 4 },
];

/**
 * Reads the balancer's pins under `dir`. A Maglev map-in-map's inner template is read (an installed inner map:
 * through its table pin, else by id; else the program's BTF); where none can be read (opening a map or a BTF by id
 * needs CAP_SYS_ADMIN, which a daemon with CAP_BPF alone lacks), `probe` templates are tried one by one on a slot
 * no VIP uses (probeInnerTemplate): the only write, invisible to packets, done under the pin lock.
 */
export function readPins(
  dir: string,
  o: { probe?: Partial<Record<BalancerMap, readonly InnerTemplate[]>> } = {},
): PinSnapshot {
  const maps = {} as Record<BalancerMap, PinnedObject>;
  for (const m of BALANCER_MAPS) maps[m] = readPin(join(dir, m), 'map');
  const program = readPin(join(dir, BALANCER_PROGRAM), 'program');
  let templates: Map<string, InnerTemplate> | null = null;
  let vipIds: Set<number> | null | undefined;
  for (const m of TEMPLATE_CHECKED) {
    const p = maps[m];
    if (p.kind !== 'map' || p.type !== MapType.ARRAY_OF_MAPS) continue;
    templates ??= programTemplates(join(dir, BALANCER_PROGRAM), program);
    // a table pin first: opening an installed inner map by id needs CAP_SYS_ADMIN
    p.inner =
      readPinnedInnerTemplate(dir, m) ?? readInstalledInnerTemplate(join(dir, m)) ?? templates.get(m) ?? null;
    const candidates = o.probe?.[m] ?? [];
    if (p.inner === null && candidates.length > 0) {
      if (vipIds === undefined) vipIds = readVipIds(join(dir, 'vips'));
      // maglev_prev_tables holds two generations per VIP id (index vipId * 2 + parity)
      const perVip = MAP_LIMIT_FACTOR[m] ?? 1;
      if (vipIds !== null) p.inner = probeInnerTemplate(join(dir, m), candidates, vipIds, perVip);
    }
  }
  return { program, maps };
}

/** The VIP ids the pinned `vips` map holds (null: unreadable). */
function readVipIds(path: string): Set<number> | null {
  try {
    const vips = BpfMap.fromPin(path);
    try {
      return new Set(vips.lookupBatch().values.map((v) => decodeVipValue(v).vipId));
    } finally {
      vips.close();
    }
  } catch {
    return null;
  }
}

/**
 * The first of `candidates` the outer map pinned at `path` accepts as inner maps (null: none, or no free slot).
 * Each is tried by inserting an empty inner map at the highest empty slot whose VIP id (index / perVip) no VIP
 * has, so no packet reads it, and deleting it again (the kernel admits only inner maps equal to the outer map's
 * template in flags and value size).
 */
export function probeInnerTemplate(
  path: string,
  candidates: readonly InnerTemplate[],
  vipIds: ReadonlySet<number>,
  perVip: number,
): InnerTemplate | null {
  let outer: BpfMap;
  try {
    outer = BpfMap.fromPin(path);
  } catch {
    return null;
  }
  try {
    let index = -1;
    for (let i = outer.maxEntries - 1; i >= 0 && index < 0; i--)
      if (!vipIds.has(Math.floor(i / perVip)) && outer.innerId(i) === null) index = i;
    if (index < 0) return null;
    for (const t of candidates) {
      const probe = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize: t.valueSize, maxEntries: 1, flags: t.flags, name: 'peak_probe' }); // prettier-ignore
      try {
        outer.setInner(index, probe);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EINVAL') continue; // another template
        return null;
      } finally {
        probe.close();
      }
      outer.delete(u32Key(index));
      return t;
    }
    return null;
  } catch {
    return null;
  } finally {
    outer.close();
  }
}

/** The template of an inner map installed in the outer map pinned at `path` (null: none, or unreadable). */
function readInstalledInnerTemplate(path: string): InnerTemplate | null {
  try {
    const outer = BpfMap.fromPin(path);
    try {
      return installedInnerTemplate(outer);
    } finally {
      outer.close();
    }
  } catch {
    return null;
  }
}

/** Inner templates by map name, from the BTF the pinned program was loaded with (empty: none). */
function programTemplates(path: string, program: PinnedObject): Map<string, InnerTemplate> {
  if (program.kind !== 'program') return new Map();
  try {
    const p = BpfProgram.fromPin(path);
    try {
      return templatesOf(p);
    } finally {
      p.close();
    }
  } catch {
    return new Map(); // no BTF to read: the decision treats the template as unknown
  }
}

/** An inner template as a BTF map definition gives it (flags 0 when absent; null without a value size). */
function templateOfDef(inner: Record<string, number>): InnerTemplate | null {
  const valueSize = inner.value_size;
  return valueSize === undefined ? null : { flags: inner.map_flags ?? 0, valueSize };
}

/** Inner templates by map-in-map name, from the BTF `program` was loaded with (empty: no BTF). */
function templatesOf(program: BpfProgram): Map<string, InnerTemplate> {
  const out = new Map<string, InnerTemplate>();
  const btfId = program.info().btfId;
  if (btfId > 0)
    for (const d of btfMapDefs({ btfId })) {
      const t = d.inner === undefined ? null : templateOfDef(d.inner);
      if (t !== null) out.set(d.name, t);
    }
  return out;
}

const specCache = new Map<string, BalancerSpec>();
/** This build's balancer program and maps as `objectPath` defines them (opened, not loaded). */
export function balancerSpec(objectPath: string = bpfObjectPath('balancer')): BalancerSpec {
  let spec = specCache.get(objectPath);
  if (spec) return spec;
  const { programs, maps } = BpfObject.inspect(objectPath);
  const prog = programs.find((p) => p.name === BALANCER_PROGRAM);
  if (!prog) throw new Error(`${objectPath} has no program ${BALANCER_PROGRAM}`);
  const specs = {} as Record<BalancerMap, MapSpec>;
  const defs = btfMapDefs(objectPath);
  for (const m of BALANCER_MAPS) {
    const d = maps.find((x) => x.name === m);
    if (!d) throw new Error(`${objectPath} has no map ${m}`);
    specs[m] = {
      type: d.type,
      typeName: d.typeName,
      keySize: d.keySize,
      valueSize: d.valueSize,
      flags: d.flags,
    };
    if (TEMPLATE_CHECKED.includes(m)) {
      const def = defs.find((x) => x.name === m);
      const inner = def?.inner === undefined ? null : templateOfDef(def.inner);
      if (inner === null) throw new Error(`${objectPath}: map ${m} has no inner map template in BTF`);
      specs[m].inner = inner;
    }
  }
  spec = { programType: prog.type, programName: BALANCER_PROGRAM, maps: specs };
  specCache.set(objectPath, spec);
  return spec;
}

/** The XDP program on `ifname` and its name (null when it cannot be read: naming by id needs CAP_SYS_ADMIN). */
export function attachedProgram(ifname: string, netns?: string): AttachedProgram {
  const progId = queryXdp({ ifname, netns }).progId;
  if (progId === 0) return { progId, name: null };
  try {
    const p = BpfProgram.fromId(progId);
    try {
      return { progId, name: p.info().name };
    } finally {
      p.close();
    }
  } catch {
    return { progId, name: null };
  }
}

/** Reads the pins and the interface and decides (inspect + pinDecision, nothing written). */
export function inspectBalancerPins(o: {
  dir: string;
  ifname: string;
  /** The sizes a pinned balancer must have (null: any; `peak-xdp attach` keeps a pinned one's size). */
  limits: BalancerLimits | null;
  objectPath?: string;
}): { decision: PinDecision; pins: PinSnapshot; attached: AttachedProgram } {
  const spec = balancerSpec(o.objectPath);
  // Where a template cannot be read: this build's, then the older builds' (4-byte slots; before that, no
  // BPF_F_MMAPABLE).
  const probe: Partial<Record<BalancerMap, readonly InnerTemplate[]>> = {};
  for (const m of BALANCER_MAPS) {
    const t = spec.maps[m].inner;
    if (t !== undefined) probe[m] = [t, ...OLDER_TEMPLATES.filter((o) => !sameTemplate(o, t))];
  }
  const pins = readPins(o.dir, { probe });
  const attached = attachedProgram(o.ifname);
  const decision = pinDecision({
    pins,
    spec,
    needed: o.limits === null ? {} : balancerMapSizes(o.limits),
    attached,
    dir: o.dir,
  });
  return { decision, pins, attached };
}

/**
 * Removes the balancer's pins under `dir`: the program first, then the maps (`maps`, default all of this
 * build's), so no moment shows a program pin without its maps, then the table pins (TABLE_PIN_DIR). Other
 * pins (decap/) stay.
 */
export function unpinBalancer(dir: string, maps: readonly BalancerMap[] = BALANCER_MAPS): void {
  unpin(join(dir, BALANCER_PROGRAM));
  for (const m of maps) unpin(join(dir, m));
  // The table pins belong to the maps just unpinned (or to none): a later balancer pins its own.
  rmSync(join(dir, TABLE_PIN_DIR), { recursive: true, force: true });
}

export interface KernelLoadOptions {
  /** The compiled balancer (default build/bpf/balancer.bpf.o). */
  objectPath?: string;
  /** max_entries by map name (e.g. a smaller conntrack); maps not named are sized for DEFAULTS.limits. */
  maxEntries?: Partial<Record<BalancerMap, number>>;
}

export interface KernelAdoptOptions {
  /** Directory holding the pins (as written by pin()). */
  pinDir: string;
  /** The object the pins came from, for counter names (default build/bpf/balancer.bpf.o). */
  objectPath?: string;
}

/** Extra knobs beyond the Datapath contract. */
export interface KernelConfig extends DatapathConfig {
  /** Resolve next hops with bpf_fib_lookup and XDP_REDIRECT (routed multi-interface nodes). */
  fibRedirect?: boolean;
  /** Seconds a connection-table entry may idle before the flow's next packet is re-selected by Maglev
   * (0 = never; default DEFAULT_CT_TIMEOUTS). */
  conntrackTimeouts?: { tcp: number; udp: number };
}

export type { TableInstall } from './types';
export { isTableUnreadable } from './types';

/** One previous table to install or clear (installPreviousTables). */
export interface PreviousTableInstall {
  vipId: number;
  table: Uint32Array | null;
}

/** The mirror of `vips` a KernelDatapath keeps (keys as hex of their encoded form). */
interface VipState {
  byKey: Map<string, VipSpec>;
  byId: Map<number, string>;
  /** VIP count per address (hex of the encoded vip_addrs key). */
  addrs: Map<string, { key: Buffer; count: number }>;
  /** vip_addrs was compared with these counts (once, before the first write). */
  addrsChecked: boolean;
}

const NO_MEMBERS = new Uint32Array(0);

/** installTables gives the event loop a turn once this many milliseconds of table writes ran. */
const TURN_MS = 5;

const ZERO_KEY = Buffer.alloc(4);
const u32Key = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** Counter names (lower-case, without the PEAK_CNT_ prefix) by index, from the object's BTF. */
export function counterNames(objectPath: string): string[] {
  return [...sharedContract(objectPath).counters];
}

/**
 * A table change that rewrites at most 1/PATCH_MAX_SHARE of its slots is patched into the installed map in place
 * (each slot one aligned store: a packet sees each slot old or new) instead of swapped: a map-in-map swap waits for
 * an RCU grace period (measured at 512 x 1000: 11.6 ms median, up to 35 ms, of a one-backend change's ~20 ms). A
 * change of one backend among N rewrites ~1/N of the slots; bigger changes keep the one-update swap.
 */
export const PATCH_MAX_SHARE = 4;
/**
 * Patching is for installTables calls of at most this many tables. A patch costs ~1 ms on the event loop (the
 * installed map opened, compared, its ids counted), where a swapped table is built and counted on the pool and
 * one grace period serves a batch of 64: every VIP changed at 512 x 100 took 1.46-1.74 s patched against
 * 1.27-1.38 s swapped.
 */
export const PATCH_MAX_BATCH = 8;
/** Should an RCU grace period fail to be waited for after all (it was offered), a wait this long stands in. */
const GRACE_FALLBACK_MS = 100;

/** The ids of sorted `a` that sorted `b` lacks. */
function sortedMinus(a: Uint32Array, b: Uint32Array): number[] {
  const out: number[] = [];
  let j = 0;
  for (let i = 0; i < a.length; i++) {
    while (j < b.length && b[j]! < a[i]!) j++;
    if (j >= b.length || b[j] !== a[i]) out.push(a[i]!);
  }
  return out;
}

/** An inner map made for installTables, and the distinct ids its table holds where they were counted with it. */
interface Built {
  map: BpfMap;
  distinct: Uint32Array | null;
}

/** Header word [0] of a table map: M below the parity bit, the current table's generation parity at it. */
const tableHead = (m: number, parity: 0 | 1): number =>
  (m | (parity << sharedContract().tableParityBit)) >>> 0;
const headM = (head: number): number => (head & ~(1 << sharedContract().tableParityBit)) >>> 0;
const headParity = (head: number): 0 | 1 => ((head >>> sharedContract().tableParityBit) & 1) as 0 | 1;

/** Backend ids of a table must stay below PEAK_SLOT_F_MOVED (the datapath's mark) and the header's bits. */
function checkIds(members: Uint32Array): void {
  const flag = 2 ** sharedContract().slotMovedBit;
  if (members.some((id) => id >= flag))
    throw new RangeError(`table: backend ids must be below ${flag} (got ${Math.max(...members)})`);
}

/** A previous table: any length of at least 1, ids as for a current table. */
function checkPrevious(table: Uint32Array): void {
  checkPreviousShape(table);
  checkIds(tableMembers(table));
}

/** checkPrevious without the ids (one pass over the table less). */
function checkPreviousShape(table: Uint32Array): void {
  if (!isUint32Array(table) || table.length < 1)
    throw new RangeError(`table: a previous table needs at least 1 slot (got ${table?.length})`);
}

/** Where a VIP's previous table of generation `parity` lives in maglev_prev_tables (bpf/maps.h). */

/**
 * Where a balancer's installed Maglev inner maps are pinned, under its pin directory: one pin per outer slot
 * that holds a table. A restart reads tables through these pins, because opening an inner map by the id its
 * outer slot holds (BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which the DaemonSet does not grant.
 */
export const TABLE_PIN_DIR = 'tables';

/** Which outer map a table pin stands for a slot of: current tables (by VIP id) or previous ones (vipId*2+parity). */
export type TableKind = 'current' | 'previous';
const OUTER_OF: Readonly<Record<TableKind, 'maglev_tables' | 'maglev_prev_tables'>> = {
  current: 'maglev_tables',
  previous: 'maglev_prev_tables',
};
const PIN_PREFIX: Readonly<Record<TableKind, string>> = { current: 'cur-', previous: 'prev-' };
/** bpffs refuses names with a dot (EPERM): the temporary name a pin is made under before its rename. */
const TMP_PREFIX = 'tmp-';
/**
 * The pin of the empty table: one inner map with M = 0 (the datapath reads it as no table) that cleared slots
 * point at: previous tables expired or replaced (maglev_prev_tables), VIPs removed (both outer maps). Clearing a
 * slot so is part of a batch update (one RCU wait for the whole batch); a delete waits one grace period per slot
 * (~13 ms) and array map-in-maps have no batch delete. Pinned so a restart and the CLI know its id (a slot
 * holding it reads as empty without opening it).
 */
const EMPTY_TABLE_PIN = 'empty';

/** The pin name of slot `index` of `kind`'s outer map: "cur-<vipId>", "prev-<vipId * 2 + parity>". */
export function tablePinName(kind: TableKind, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > 0xffffffff)
    throw new RangeError(`index: ${index} is not a u32 slot index`);
  return `${PIN_PREFIX[kind]}${index}`;
}

/** The slot a table pin name stands for; null for any other name (a temporary pin, something foreign). */
export function parseTablePinName(name: string): { kind: TableKind; index: number } | null {
  const m = /^(cur|prev)-(0|[1-9][0-9]{0,9})$/.exec(name);
  if (m === null) return null;
  const index = Number(m[2]);
  if (index > 0xffffffff) return null;
  return { kind: m[1] === 'cur' ? 'current' : 'previous', index };
}

/** An open inner table map and its id; close() releases it (a no-op for a handle the datapath keeps). */
export interface TableHandle {
  readonly id: number;
  readonly map: BpfMap;
  close(): void;
}

/** How openInstalledTable reaches one outer slot's inner map (collaborators, so tests can fake each step). */
export interface InstalledTableSource<H extends { readonly id: number; close(): void }> {
  /** The map the slot's pin holds; null when nothing is pinned under its name (throws when the pin cannot be
   * opened). */
  fromPin(): H | null;
  /** The inner map id the outer slot holds now (null: the slot is empty). */
  slotId(): number | null;
  /** Opens the inner map by id (BPF_MAP_GET_FD_BY_ID: needs CAP_SYS_ADMIN). */
  fromId(id: number): H;
}

/** A VIP's installed table that neither its pin nor its id can open (the message says which and why). */
export class TableUnreadableError extends Error {
  /** Callers that can do without the content (a reconcile then rewrites the table) test this code. */
  readonly code = TABLE_UNREADABLE;
  constructor(
    readonly vipId: number,
    readonly kind: TableKind,
    readonly innerId: number,
    pinIssue: string,
    cause: Error,
  ) {
    super(
      `VIP ${vipId}: its ${kind} Maglev table (inner map id ${innerId}) cannot be read: ${pinIssue}, and opening ` +
        `the map by id failed (${cause.message}; BPF_MAP_GET_FD_BY_ID needs CAP_SYS_ADMIN, which the daemon ` +
        `does not need otherwise). Writing the VIP's table again pins it.`,
      { cause },
    );
    this.name = 'TableUnreadableError';
  }
}

/**
 * The inner map an outer slot holds, or null when the slot is empty: through the slot's pin when the pin holds
 * exactly that map (compared by id on an fd we hold, so a stale pin of a replaced table is never read), else
 * by id (works with CAP_SYS_ADMIN). EPERM/EACCES by id: TableUnreadableError naming the VIP and the pin's
 * state. The pin is opened before the slot is read, so a writer's swap in between makes the pin newer than
 * the slot (a fall back by id), never an older map taken for the slot's.
 */
export function openInstalledTable<H extends { readonly id: number; close(): void }>(
  src: InstalledTableSource<H>,
  o: { vipId: number; kind: TableKind; pinPath: string | null },
): H | null {
  let pinned: H | null = null;
  let pinIssue: string;
  if (o.pinPath === null) pinIssue = 'this balancer has no pin directory';
  else
    try {
      pinned = src.fromPin();
      pinIssue = `nothing is pinned at ${o.pinPath}`;
    } catch (e) {
      pinIssue = `the pin ${o.pinPath} cannot be opened (${(e as Error).message})`;
    }
  let id: number | null;
  try {
    id = src.slotId();
  } catch (e) {
    pinned?.close();
    throw e;
  }
  if (id === null) {
    pinned?.close();
    return null;
  }
  if (pinned !== null) {
    if (pinned.id === id) return pinned;
    pinIssue = `the pin ${o.pinPath} holds map ${pinned.id}, not the installed one (stale)`;
    pinned.close();
  }
  try {
    return src.fromId(id);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EPERM' || code === 'EACCES')
      throw new TableUnreadableError(o.vipId, o.kind, id, pinIssue, e as Error);
    throw e;
  }
}

/** A TableHandle that owns `map` (close() closes it). */
const ownedHandle = (map: BpfMap): TableHandle => ({ id: map.info.id, map, close: () => map.close() });

/**
 * Pins `map` as `name` under `tableDir` atomically for readers: pinned at a temporary name, then renamed over
 * the final one (bpffs supports rename), so a reader finds the old table's pin or the new one's, never none.
 */
export function pinTable(tableDir: string, name: string, map: BpfMap): void {
  const tmp = join(tableDir, `${TMP_PREFIX}${name}`);
  try {
    map.pin(tmp);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    unpin(tmp); // an interrupted earlier pin
    map.pin(tmp);
  }
  renameSync(tmp, join(tableDir, name));
}

/** The template of a map's own definition (an inner map's: what the outer map that holds it admits). */
const templateOfMap = (m: BpfMap): InnerTemplate => ({ flags: m.info.flags, valueSize: m.info.valueSize });

/** The template of an inner map pinned under `tableDir` as a `kind` slot that `outer` still holds (null: none).
 * Like installedInnerTemplate, without opening maps by id. */
function pinnedInnerTemplate(tableDir: string, outer: BpfMap, kind: TableKind): InnerTemplate | null {
  let names: string[];
  try {
    names = readdirSync(tableDir);
  } catch {
    return null;
  }
  for (const n of names) {
    const p = parseTablePinName(n);
    if (p === null || p.kind !== kind || p.index >= outer.maxEntries) continue;
    try {
      const m = BpfMap.fromPin(join(tableDir, n));
      try {
        if (outer.innerId(p.index) === m.info.id) return templateOfMap(m);
      } finally {
        m.close();
      }
    } catch {
      // unpinned since the listing, or not a map: the next one
    }
  }
  return null;
}

/** pinnedInnerTemplate for the outer map pinned at `dir`/`m` (null: unreadable). */
function readPinnedInnerTemplate(dir: string, m: BalancerMap): InnerTemplate | null {
  const kind = (Object.keys(OUTER_OF) as TableKind[]).find((k) => OUTER_OF[k] === m);
  if (kind === undefined) return null;
  try {
    const outer = BpfMap.fromPin(join(dir, m));
    try {
      return pinnedInnerTemplate(join(dir, TABLE_PIN_DIR), outer, kind);
    } finally {
      outer.close();
    }
  } catch {
    return null;
  }
}

/** The template of an inner map installed in `outer` (null: the outer map holds none). The kernel admits only
 * inner maps equal to the outer map's template, so any installed one tells it. */
export function installedInnerTemplate(outer: BpfMap): InnerTemplate | null {
  const { values, count } = outer.lookupBatchPacked(4096);
  for (let i = 0; i < count; i++) {
    const id = values.readUInt32LE(4 * i);
    if (id === 0) continue;
    try {
      const m = BpfMap.fromId(id);
      const t = templateOfMap(m);
      m.close();
      return t;
    } catch {
      // replaced and freed since the lookup: try the next one
    }
  }
  return null;
}

/**
 * The template new Maglev inner maps need to be accepted by these outer maps: an installed inner map's (a pinned
 * one, else one opened by id), else the template in the program's BTF (bpf/maps.h struct maglev_inner of the object
 * it was loaded from), else this build's. An older build's balancer (adopted by the CLI) may have 4-byte slots or
 * no BPF_F_MMAPABLE: its tables are then written in its layout (the daemon replaces such a balancer instead:
 * pinDecision).
 */
function innerMapTemplate(
  program: BpfProgram,
  maps: Record<BalancerMap, BpfMap>,
  tableDir: string | null,
): InnerTemplate {
  const fromBtf = (): InnerTemplate | null => {
    try {
      return templatesOf(program).get('maglev_tables') ?? null;
    } catch {
      return null;
    }
  };
  const pinned = (kind: TableKind): InnerTemplate | null =>
    tableDir === null ? null : pinnedInnerTemplate(tableDir, maps[OUTER_OF[kind]], kind);
  return (
    pinned('current') ??
    pinned('previous') ??
    installedInnerTemplate(maps.maglev_tables) ??
    installedInnerTemplate(maps.maglev_prev_tables) ??
    fromBtf() ??
    balancerSpec().maps.maglev_tables.inner!
  );
}

/** The parity bit in the header of a current table's map. */
function readHeadParity(t: TableHandle): 0 | 1 {
  return headParity(t.map.readU32s(0, 1)[0]!);
}

/** The entries of a Maglev inner map, ids only (PEAK_SLOT_F_MOVED is ours, not an id); null for the empty
 * table (M = 0: a cleared slot). */
function readInnerTable(t: TableHandle, into?: Uint32Array): Uint32Array | null {
  const m = headM(t.map.readU32s(0, 1)[0]!);
  if (m === 0) return null;
  const out = readInnerEntries(t, m, into);
  const keep = ~(1 << sharedContract().slotMovedBit);
  for (let i = 0; i < out.length; i++) out[i] = (out[i]! & keep) >>> 0;
  return out;
}

/** The entries of an inner table map as stored (through mmap; an older build's map by batch lookups); `m`: its
 * header's M when read already; into `into` when that fits (BpfMap.readU32s). */
function readInnerEntries(
  t: TableHandle,
  m = headM(t.map.readU32s(0, 1)[0]!),
  into?: Uint32Array,
): Uint32Array {
  return t.map.readU32s(1, Math.min(m, t.map.u32Words - 1), into);
}

export class KernelDatapath implements Datapath {
  readonly program: BpfProgram;
  readonly maps: Record<BalancerMap, BpfMap>;
  private readonly counterNames: string[];
  /** Pending index rebuild; while set, the datapath reads `vips` directly (a "use the hash" index). */
  private indexRebuild: NodeJS.Immediate | null = null;
  /** Our mirror of `vips` (and of vip_addrs' counts), so a write needs no read of the whole map. */
  private vipState: VipState | null = null;
  /** Which backend ids each VIP's installed table names (deleteBackend asks it instead of reading tables). */
  private readonly tableRefs = new TableRefs();
  /** The Maglev inner maps this balancer's outer maps accept (innerMapTemplate; read on first need). */
  private innerTemplate: InnerTemplate | null = null;
  /** Each VIP's live generation parity (its current table's header bit), read on first need (after adopt). */
  private readonly parities = new Map<number, 0 | 1>();
  /** Where installed inner maps are pinned (<pins>/TABLE_PIN_DIR); null until this balancer is pinned. */
  private tableDir: string | null = null;
  /** Inner maps installed while tableDir is null (a replace programs its balancer before pinning it), by pin
   * name: kept open so pin() can pin them (once installed, they can be opened again only by id). */
  private readonly heldTables = new Map<string, BpfMap>();
  /** The empty table (EMPTY_TABLE_PIN) once opened or made here; its id (null: none known) once looked for. */
  private emptyMap: BpfMap | null = null;
  private emptyMapId: number | null | undefined = undefined;
  /** Table pins that could not be written (each read then falls back to opening by id), and the last error. */
  tablePinFailures = 0;
  lastTablePinError: string | null = null;
  /** Whether tables may be patched in place (an RCU grace period can be waited for: rcuGraceSupported); null
   * until first asked. */
  private patchable: boolean | null = null;
  /**
   * Backend ids a patched table stopped naming, by the grace epoch of that patch: a program that read the old
   * slot may still run, so their entries are not rewritten (deleted, reused) before a grace period that began
   * after the patch has ended. Pruned as grace periods end.
   */
  private readonly unlinked = new Map<number, number>();
  /** Deleted backends of `unlinked` whose entries are zeroed once their grace period ended; reads see them gone. */
  private readonly retiring = new Set<number>();
  /** The newest epoch handed out, and the newest one an ended grace period covers. */
  private graceEpoch = 0;
  private graceDone = 0;
  private graceRun: Promise<void> | null = null;
  private retireRun: Promise<void> | null = null;
  private closed = false;
  /**
   * The backends map was created by this process's load() and nothing has written it since: it is all zeros, and
   * listBackends need not read its maxEntries slots (~30 ms per read of 102,400, twice in a fresh start).
   */
  private backendsKnownEmpty = false;

  private constructor(program: BpfProgram, maps: Record<BalancerMap, BpfMap>, counters: string[]) {
    this.program = program;
    this.maps = maps;
    this.counterNames = counters;
  }

  /** Loads a fresh balancer (empty maps, config not ready: VIP traffic passes until configure()). */
  static async load(o: KernelLoadOptions = {}): Promise<KernelDatapath> {
    const path = o.objectPath ?? bpfObjectPath('balancer');
    for (const [name, n] of Object.entries(o.maxEntries ?? {}))
      if (!(BALANCER_MAPS as readonly string[]).includes(name))
        throw new TypeError(`maxEntries.${name}: ${n} is for a map the balancer does not have`);
    const obj = await BpfObject.load(path, {
      maxEntries: loadMapSizes(o.maxEntries) as Record<string, number>,
    });
    try {
      const maps = Object.fromEntries(BALANCER_MAPS.map((m) => [m, obj.map(m)])) as Record<
        BalancerMap,
        BpfMap
      >;
      const dp = new KernelDatapath(obj.program(BALANCER_PROGRAM), maps, counterNames(path));
      dp.backendsKnownEmpty = true;
      return dp;
    } finally {
      obj.close();
    }
  }

  /** Opens pinned program and maps without touching their contents (pinDecision says whether they fit). */
  static adopt(o: KernelAdoptOptions): KernelDatapath {
    const program = BpfProgram.fromPin(join(o.pinDir, BALANCER_PROGRAM));
    const maps = {} as Record<BalancerMap, BpfMap>;
    try {
      for (const m of BALANCER_MAPS) {
        try {
          maps[m] = BpfMap.fromPin(join(o.pinDir, m));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
          // A balancer pinned by an older build lacks the maps added since (maglev_prev_tables: issue 15).
          throw Object.assign(
            new Error(
              `the pinned balancer at ${o.pinDir} has no map ${m}: it was pinned by an older build; ` +
                "the daemon (or `peak-xdp attach`) replaces it with this build's",
            ),
            { code: 'ENOENT' },
          );
        }
      }
    } catch (e) {
      program.close();
      Object.values(maps).forEach((m) => m.close());
      throw e;
    }
    const dp = new KernelDatapath(program, maps, counterNames(o.objectPath ?? bpfObjectPath('balancer')));
    dp.tableDir = join(o.pinDir, TABLE_PIN_DIR);
    return dp;
  }

  /**
   * Pins every map and then the program under `dir` (created if missing). The program pin is written last
   * (and unpinBalancer removes it first): a program pin always has its maps, whatever step a kill -9 stops.
   */
  pin(dir: string): void {
    // Only the owner may enter (src/daemon/pins.ts securePinPath checks and creates the whole path so).
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const m of BALANCER_MAPS) this.maps[m].pin(join(dir, m));
    // the table directory is made with the first table pin: a balancer with no table leaves its pin dir as before
    this.tableDir = join(dir, TABLE_PIN_DIR);
    for (const [name, map] of this.heldTables) {
      this.pinTableBestEffort(name, map);
      map.close();
    }
    this.heldTables.clear();
    if (this.emptyMap !== null) this.pinTableBestEffort(EMPTY_TABLE_PIN, this.emptyMap);
    this.program.pin(join(dir, BALANCER_PROGRAM));
  }

  /**
   * Removes what a crash left under the table pin directory: temporary pins and pins whose slot no longer
   * holds their map (empty, or replaced before the pin followed). Only for the pins' owner (the daemon, under
   * the pin lock): a CLI reading alongside a running daemon must not race its writes. Returns the names removed.
   */
  pruneTablePins(): string[] {
    if (this.tableDir === null) return [];
    let names: string[];
    try {
      names = readdirSync(this.tableDir);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const n of names) {
      const p = parseTablePinName(n);
      let keep = false;
      if (p !== null) {
        const outer = this.maps[OUTER_OF[p.kind]];
        try {
          const m = BpfMap.fromPin(join(this.tableDir, n));
          try {
            keep = p.index < outer.maxEntries && outer.innerId(p.index) === m.info.id;
          } finally {
            m.close();
          }
        } catch {
          // not a map: not ours to keep
        }
      } else if (!n.startsWith(TMP_PREFIX)) continue; // not a name we make: left alone
      if (keep) continue;
      try {
        unpin(join(this.tableDir, n));
        removed.push(n);
      } catch {
        // removed by now, or not removable: a later start tries again
      }
    }
    return removed;
  }

  /** After an inner map went into slot `index` of `kind`'s outer map: pins it (or keeps it until pin()).
   * True when this instance now owns `map` (the caller must not close it). */
  private keepTable(kind: TableKind, index: number, map: BpfMap): boolean {
    const name = tablePinName(kind, index);
    if (this.tableDir === null) {
      const old = this.heldTables.get(name);
      if (old !== map) old?.close();
      this.heldTables.set(name, map);
      return true;
    }
    this.pinTableBestEffort(name, map);
    return false;
  }

  /** After slot `index` of `kind`'s outer map was emptied: its pin (or kept map) goes too. */
  private forgetTable(kind: TableKind, index: number): void {
    const name = tablePinName(kind, index);
    this.heldTables.get(name)?.close();
    this.heldTables.delete(name);
    if (this.tableDir === null) return;
    try {
      unpin(join(this.tableDir, name));
    } catch (e) {
      // a pin left behind is stale (its id no longer in the slot): readers skip it, a start prunes it
      this.tablePinFailures++;
      this.lastTablePinError = `unpin ${name}: ${(e as Error).message}`;
    }
  }

  /** A failed pin costs nothing now: the table is installed, and a read of it falls back to its id. */
  private pinTableBestEffort(name: string, map: BpfMap): void {
    try {
      try {
        pinTable(this.tableDir!, name, map);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        // the directory went (removed with the pins under a running daemon; the keeper pins the maps again)
        mkdirSync(this.tableDir!, { recursive: true, mode: 0o700 });
        pinTable(this.tableDir!, name, map);
      }
    } catch (e) {
      this.tablePinFailures++;
      this.lastTablePinError = `pin ${join(this.tableDir!, name)}: ${(e as Error).message}`;
      try {
        unpin(join(this.tableDir!, name)); // whatever was there holds another map now
      } catch {
        // nothing there
      }
    }
  }

  /** The empty table (EMPTY_TABLE_PIN): the pinned one when there is one of this build's shape, else made (and
   * pinned) here. Kept open until close(). */
  private emptyTable(): BpfMap {
    if (this.emptyMap !== null) return this.emptyMap;
    let m: BpfMap | null = null;
    if (this.tableDir !== null)
      try {
        m = BpfMap.fromPin(join(this.tableDir, EMPTY_TABLE_PIN));
        const i = m.info;
        if (
          i.type !== MapType.ARRAY ||
          !sameTemplate(templateOfMap(m), this.tableTemplate()) ||
          m.readU32s(0, 1)[0] !== 0
        ) {
          // prettier-ignore
          m.close();
          m = null;
        }
      } catch {
        m?.close();
        m = null;
      }
    if (m === null) {
      m = this.buildTableMap(0, new Uint32Array(0), 'peak_empty', 0);
      if (this.tableDir !== null) this.pinTableBestEffort(EMPTY_TABLE_PIN, m);
    }
    this.emptyMap = m;
    this.emptyMapId = m.info.id;
    return m;
  }

  /**
   * The empty table's id, looked up through its pin once (null: none). Cached either way: the pins' owner (the
   * daemon) makes it itself when none is pinned; a CLI reading alongside may, at worst, not know one the daemon
   * made after the lookup (a slot holding it then reads as unpinned: by id, as root).
   */
  private emptyTableId(): number | null {
    if (this.emptyMapId === undefined) {
      this.emptyMapId = null;
      if (this.tableDir !== null)
        try {
          const m = BpfMap.fromPin(join(this.tableDir, EMPTY_TABLE_PIN));
          this.emptyMapId = m.info.id;
          m.close();
        } catch {
          // none pinned
        }
    }
    return this.emptyMapId;
  }

  /** True when slot `index` of maglev_prev_tables holds a previous table (not empty, not the empty table). */
  private holdsPrevious(index: number): boolean {
    const id = this.maps.maglev_prev_tables.innerId(index);
    return id !== null && id !== this.emptyTableId();
  }

  /**
   * Clears slots of maglev_prev_tables in one batch update to the empty table (one RCU wait for them all), off
   * the event loop; their pins go. Throws what the update threw (the slots it reached are cleared).
   */
  private async clearPrevious(indexes: readonly number[]): Promise<void> {
    if (indexes.length === 0) return;
    const empty = this.emptyTable();
    try {
      await this.updatePacked(
        this.maps.maglev_prev_tables,
        indexes.map((i) => [i, empty.fd]),
      );
    } finally {
      for (const i of indexes)
        if (this.maps.maglev_prev_tables.innerId(i) === empty.info.id) this.forgetTable('previous', i);
    }
  }

  /** The inner map in slot `index` of `kind`'s outer map (null: empty), for VIP `vipId`; see openInstalledTable. */
  private openTable(kind: TableKind, index: number, vipId: number): TableHandle | null {
    const outer = this.maps[OUTER_OF[kind]];
    // An empty slot (every slot at a first start) is answered by one lookup: looking for its pin first would
    // cost a failed open and an exception per slot (~0.5 ms each, 2 per table at a start of 512 VIPs).
    const id = outer.innerId(index);
    // a cleared slot (a previous table expired, a VIP deleted) holds the empty table
    if (id === null || id === this.emptyTableId()) return null;
    const name = tablePinName(kind, index);
    const pinPath = this.tableDir === null ? null : join(this.tableDir, name);
    return openInstalledTable<TableHandle>(
      {
        fromPin: () => {
          const held = this.heldTables.get(name);
          if (held !== undefined) return { id: held.info.id, map: held, close: () => undefined };
          try {
            return ownedHandle(BpfMap.fromPin(pinPath!));
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
            throw e;
          }
        },
        slotId: () => outer.innerId(index) || null,
        fromId: (id) => ownedHandle(BpfMap.fromId(id)),
      },
      { vipId, kind, pinPath: this.heldTables.has(name) ? name : pinPath },
    );
  }

  /** `read` over the inner map in a slot (null: empty), closed afterwards. */
  private withTable<T>(kind: TableKind, index: number, vipId: number, read: (t: TableHandle) => T): T | null {
    const t = this.openTable(kind, index, vipId);
    if (t === null) return null;
    try {
      return read(t);
    } finally {
      t.close();
    }
  }

  /**
   * Which of our pins under `dir` are gone (`missing`) or hold another object than ours (`foreign`), by name
   * (the program first, then the maps). Reads the pins only.
   */
  pinCheck(dir: string): { missing: string[]; foreign: string[] } {
    const missing: string[] = [];
    const foreign: string[] = [];
    const check = (name: string, ours: number, id: (path: string) => number): void => {
      try {
        if (id(join(dir, name)) !== ours) foreign.push(name);
      } catch (e) {
        ((e as NodeJS.ErrnoException).code === 'ENOENT' ? missing : foreign).push(name);
      }
    };
    const withClose = <T extends { close(): void }>(h: T, f: (h: T) => number): number => {
      try {
        return f(h);
      } finally {
        h.close();
      }
    };
    check(BALANCER_PROGRAM, this.program.id, (p) => withClose(BpfProgram.fromPin(p), (h) => h.id));
    for (const m of BALANCER_MAPS)
      check(m, this.maps[m].info.id, (p) => withClose(BpfMap.fromPin(p), (h) => h.info.id));
    return { missing, foreign };
  }

  /** Pins the named objects (BALANCER_PROGRAM and map names) under `dir`, which must exist. */
  repin(dir: string, names: readonly string[]): void {
    for (const n of names) {
      if (n === BALANCER_PROGRAM) this.program.pin(join(dir, n));
      else if ((BALANCER_MAPS as readonly string[]).includes(n))
        this.maps[n as BalancerMap].pin(join(dir, n));
      else throw new TypeError(`names: "${n}" is not the balancer program or one of its maps`);
    }
  }

  /** Attaches (or atomically replaces, with `expected`) the balancer on an interface. */
  attach(o: { ifname: string; netns?: string; mode?: XdpMode; expected?: BpfProgram }): Promise<XdpStatus> {
    return attachXdp({ ...o, program: this.program });
  }

  detach(o: { ifname: string; netns?: string; mode?: XdpMode }): Promise<XdpStatus> {
    return detachXdp(o);
  }

  /** True when this balancer program is the one attached to the interface. */
  isAttached(o: { ifname: string; netns?: string }): boolean {
    return queryXdp(o).progId === this.program.id;
  }

  /** Closes our fds (pins and attachments keep the kernel objects alive). Deleted backends still waiting for their
   * grace period keep their entries (no table names them; a next start deletes them as unwanted). */
  close(): void {
    this.closed = true;
    this.flushVipIndex();
    this.program.close();
    for (const m of BALANCER_MAPS) this.maps[m].close();
    for (const m of this.heldTables.values()) m.close();
    this.heldTables.clear();
    this.emptyMap?.close();
    this.emptyMap = null;
  }

  async configure(cfg: KernelConfig): Promise<void> {
    const b = encodeConfig({
      ...cfg,
      fibRedirect: cfg.fibRedirect ?? false,
      conntrackTimeouts: cfg.conntrackTimeouts ?? DEFAULT_CT_TIMEOUTS,
    });
    this.maps.config.update(ZERO_KEY, b);
  }

  async readConfig(): Promise<KernelConfig | null> {
    const b = this.maps.config.lookup(ZERO_KEY);
    return b ? decodeConfig(b) : null;
  }

  async listVips(): Promise<VipSpec[]> {
    // What the map holds is authoritative: the next write starts from it (and checks vip_addrs once).
    return this.readVips();
  }

  /** Reads `vips` whole and makes it the VIP mirror. */
  private readVips(): VipSpec[] {
    const { keys, values } = this.maps.vips.lookupBatch();
    const specs = keys.map((k, i) => {
      const v = decodeVipValue(values[i]!);
      return {
        key: decodeVipKey(k),
        id: v.vipId,
        flags: {
          sourceHash: v.sourceHash,
          noConntrack: v.noConntrack,
          ...(v.stateless === true ? { stateless: true } : {}),
        },
        tableSize: v.tableSize,
      };
    });
    this.vipState = this.loadVipState(keys, specs);
    return specs;
  }

  /** The VIP mirror, read from `vips` on first use (after adopt, or after listVips refreshed it). */
  private vipMirror(): VipState {
    if (this.vipState === null) this.readVips();
    const st = this.vipState!;
    if (!st.addrsChecked) {
      this.syncVipAddrs(st);
      st.addrsChecked = true;
    }
    return st;
  }

  private loadVipState(keys: Buffer[], specs: VipSpec[]): VipState {
    const st: VipState = { byKey: new Map(), byId: new Map(), addrs: new Map(), addrsChecked: false };
    specs.forEach((spec, i) => {
      const hex = keys[i]!.toString('hex');
      st.byKey.set(hex, spec);
      st.byId.set(spec.id, hex);
      this.countAddr(st, spec.key.address, +1);
    });
    return st;
  }

  /** Counts a VIP address in or out of the mirror's address counts; returns the address key. */
  private countAddr(st: VipState, address: string, delta: 1 | -1): string {
    const k = encodeAddrKey('key.address', address);
    const hex = k.toString('hex');
    const a = st.addrs.get(hex) ?? { key: k, count: 0 };
    a.count += delta;
    if (a.count <= 0) st.addrs.delete(hex);
    else st.addrs.set(hex, a);
    return hex;
  }

  /** Writes one address's vip_addrs entry from the mirror's count (deleted at 0). */
  private writeAddr(st: VipState, hex: string): void {
    const a = st.addrs.get(hex);
    if (a === undefined) this.maps.vip_addrs.delete(Buffer.from(hex, 'hex'));
    else this.maps.vip_addrs.update(a.key, u32Key(a.count));
  }

  async upsertVip(vip: VipSpec): Promise<void> {
    const key = encodeVipKey(vip.key);
    const max = this.maps.maglev_tables.maxEntries;
    if (!Number.isInteger(vip.id) || vip.id < 0 || vip.id >= max)
      throw new RangeError(`vip.id: ${vip.id} is outside 0..${max - 1}`);
    if (!Number.isInteger(vip.tableSize) || vip.tableSize < 1)
      throw new RangeError(`vip.tableSize: ${vip.tableSize} is not a positive integer`);
    const st = this.vipMirror();
    const hex = key.toString('hex');
    const holderKey = st.byId.get(vip.id);
    if (holderKey !== undefined && holderKey !== hex) {
      const holder = st.byKey.get(holderKey)!;
      throw new RangeError(`vip.id: ${vip.id} is already used by ${holder.key.address}:${holder.key.port}`);
    }
    const old = st.byKey.get(hex);
    if (old && (old.id !== vip.id || old.tableSize !== vip.tableSize)) this.dropTable(old.id);
    // A previous table has its own M and survives a size change; not a change of id (ids are recycled).
    if (old && old.id !== vip.id) this.dropPrevious(old.id);
    const value = encodeVipValue({ vipId: vip.id, ...vip.flags, tableSize: vip.tableSize });
    this.maps.vips.update(key, value);
    const stored = decodeVipKey(key);
    if (old) {
      st.byId.delete(old.id);
      this.countAddr(st, old.key.address, -1);
    }
    st.byKey.set(hex, { key: stored, id: vip.id, flags: { ...vip.flags }, tableSize: vip.tableSize });
    st.byId.set(vip.id, hex);
    const addr = this.countAddr(st, stored.address, +1);
    this.vipsChanged();
    this.writeAddr(st, addr);
  }

  /** deleteVips of one (a run of deletions should be one deleteVips: each call waits for its slot update). */
  async deleteVip(key: VipKey): Promise<void> {
    const [err] = await this.deleteVips([key]);
    if (err) throw err;
  }

  /**
   * Each VIP leaves `vips` at once (no packet picks it after); then the table slots of all of them (current
   * and previous) point at the empty table in one update per outer map, off the event loop: a delete waits one
   * RCU grace period per slot (~13 ms; 512 VIPs removed held the event loop 6.6 s). A slot holding the empty
   * table reads as none, and a VIP that takes the id later has its table written over it.
   */
  async deleteVips(keys: readonly VipKey[]): Promise<(Error | null)[]> {
    const st = this.vipMirror();
    const results: (Error | null)[] = keys.map(() => null);
    const gone: { at: number; vipId: number }[] = [];
    // No turn inside: the VIP writes of one burst share one index rebuild (vipsChanged), and each is a few
    // microseconds of hash-map work.
    for (let at = 0; at < keys.length; at++) {
      const key = keys[at]!;
      try {
        const k = encodeVipKey(key);
        const hex = k.toString('hex');
        const v = this.maps.vips.lookup(k);
        if (!v) throw new RangeError(`key: VIP ${key.address}:${key.port}/${key.protocol} does not exist`);
        this.maps.vips.delete(k);
        this.vipsChanged();
        const vipId = decodeVipValue(v).vipId;
        gone.push({ at, vipId });
        const old = st.byKey.get(hex);
        st.byKey.delete(hex);
        if (st.byId.get(vipId) === hex) st.byId.delete(vipId);
        if (old) this.writeAddr(st, this.countAddr(st, old.key.address, -1));
      } catch (e) {
        results[at] = e as Error;
      }
    }
    if (gone.length === 0) return results;
    const empty = this.emptyTableId();
    const current = gone.filter((g) => {
      const id = this.maps.maglev_tables.innerId(g.vipId);
      return id !== null && id !== empty;
    });
    const previous = gone.flatMap((g) => [g.vipId * 2, g.vipId * 2 + 1].filter((i) => this.holdsPrevious(i)));
    let failure: Error | null = null;
    if (current.length > 0) {
      const table = this.emptyTable();
      try {
        await this.updatePacked(
          this.maps.maglev_tables,
          current.map((g) => [g.vipId, table.fd]),
        );
      } catch (e) {
        failure = e as Error;
      }
    }
    try {
      await this.clearPrevious(previous);
    } catch (e) {
      failure ??= e as Error;
    }
    for (const g of gone) {
      const id = this.maps.maglev_tables.innerId(g.vipId);
      if (id === null || id === this.emptyTableId()) {
        this.forgetTable('current', g.vipId);
        this.tableRefs.set(g.vipId, NO_MEMBERS);
      } else if (failure !== null) results[g.at] = failure; // gone from vips (unused), its table still there
      if (failure !== null && [0, 1].some((p) => this.holdsPrevious(g.vipId * 2 + p)))
        results[g.at] = failure;
    }
    return results;
  }

  /**
   * After a change to `vips`: the datapath is first told to read `vips` itself (a small "use the hash"
   * index, swapped in once per burst), and the real index is rebuilt once when the burst is over (the
   * next event-loop turn, so a reconcile of 512 VIPs swaps 2 indexes, not 512: the reconciler applies a
   * run of VIP writes without yielding). `vips` is always authoritative, so every packet in between is
   * still classified correctly.
   */
  private vipsChanged(): void {
    if (this.indexRebuild !== null) return; // this burst already bypasses the index
    this.swapVipIndex({ seed: 0, useHash: true, keys: 0 }, []);
    this.indexRebuild = setImmediate(() => this.flushVipIndex());
  }

  /** Builds the pending VIP index now (also done by close()); a no-op when nothing is pending. */
  flushVipIndex(): void {
    if (this.indexRebuild === null) return;
    clearImmediate(this.indexRebuild);
    this.indexRebuild = null;
    if (this.program.closed) return;
    this.syncVipIndex();
  }

  /** Swaps in a new index: a fresh inner map with `head` at 0 and the given slots, one outer update. */
  private swapVipIndex(
    head: { seed: number; useHash: boolean; keys: number },
    slots: [number, Buffer][],
  ): void {
    const inner = BpfMap.create({
      type: MapType.ARRAY,
      keySize: 4,
      valueSize: LAYOUT.peak_vip_slot.size,
      maxEntries: sharedContract().vipIndexSlots + 1,
      name: 'peak_vip_index',
    });
    try {
      const ks = [u32Key(0), ...slots.map(([slot]) => u32Key(1 + slot))];
      const vs = [encodeVipIndexHead(head), ...slots.map(([, v]) => v)];
      inner.updateBatch(ks, vs);
      this.maps.vip_index.setInner(0, inner);
    } finally {
      inner.close();
    }
  }

  /** Rebuilds the datapath's VIP index from `vips` aside and swaps it in (one update: packets see the old
   * index or the new one). Too many keys to place: the index tells the datapath to read `vips` instead. */
  private syncVipIndex(): void {
    const { keys, values } = this.maps.vips.lookupBatch();
    const plan = planVipIndex({
      keys: keys.map((k) => {
        const d = decodeVipKey(k);
        return { address: d.address, port: d.port, proto: PROTO_NUMBER[d.protocol] };
      }),
    });
    this.swapVipIndex(
      { seed: plan.seed, useHash: plan.useHash, keys: plan.slotOf.length },
      plan.slotOf.map((slot, i): [number, Buffer] => [slot, encodeVipSlot(keys[i]!, values[i]!)]),
    );
  }

  /** vip_addrs = the set of VIP addresses with their VIP counts: entries that differ are written. */
  private syncVipAddrs(st: VipState): void {
    const { keys, values } = this.maps.vip_addrs.lookupBatch();
    const have = new Map<string, number>();
    keys.forEach((k, i) => have.set(k.toString('hex'), values[i]!.readUInt32LE(0)));
    for (const [hex] of have) if (!st.addrs.has(hex)) this.maps.vip_addrs.delete(Buffer.from(hex, 'hex'));
    for (const [hex, a] of st.addrs)
      if (have.get(hex) !== a.count) this.maps.vip_addrs.update(a.key, u32Key(a.count));
  }

  /** Clears both generations of a VIP that goes (or changes id): a slot holding the empty table stays (no
   * packet reads a gone VIP's slots; each delete costs an RCU wait). */
  private dropPrevious(vipId: number): void {
    for (const i of [vipId * 2, vipId * 2 + 1])
      if (this.holdsPrevious(i)) {
        this.maps.maglev_prev_tables.delete(u32Key(i));
        this.forgetTable('previous', i);
      }
  }

  /**
   * The generation the datapath reads for the VIP: its current table's parity bit; with no current table
   * (none yet, or dropped by a size change while the previous table stays) the generation holding a previous
   * table, else 0. Cached: this instance is the only writer once it has read it.
   */
  private liveParity(vipId: number): 0 | 1 {
    let p = this.parities.get(vipId);
    if (p === undefined) {
      let fromHead: 0 | 1 | null = null;
      try {
        fromHead = this.withTable('current', vipId, vipId, readHeadParity);
      } catch (e) {
        // Unreadable (no pin, no CAP_SYS_ADMIN): guessed from the previous-table slots as with no current table.
        // A wrong guess can pair the next previous table with the old current one for one swap (hints only).
        if (!isTableUnreadable(e)) throw e;
      }
      p = fromHead ?? (this.holdsPrevious(vipId * 2 + 1) && !this.holdsPrevious(vipId * 2) ? 1 : 0);
      this.parities.set(vipId, p);
    }
    return p;
  }

  /** The VIP's previous table as installed: read back from the kernel (through mmap, ~0.1 ms) rather than
   * kept in JS (256 KiB per VIP). Unreadable: taken as none (the new table then marks no moved slots: flows
   * on them lose their second-chance hint, nothing else). */
  private previousOf(vipId: number): Uint32Array | null {
    const index = vipId * 2 + this.liveParity(vipId);
    try {
      return this.withTable('previous', index, vipId, (t) => readInnerTable(t));
    } catch (e) {
      if (isTableUnreadable(e)) return null;
      throw e;
    }
  }

  private dropTable(vipId: number): void {
    this.maps.maglev_tables.delete(u32Key(vipId));
    this.forgetTable('current', vipId);
    this.tableRefs.set(vipId, NO_MEMBERS);
  }

  async listBackends(): Promise<BackendSpec[]> {
    if (this.backendsKnownEmpty) return [];
    // The backends map is a big array (65536 by default, 1M and more at scale): read in chunks with event-loop
    // turns between them, packed, decoding only the set entries.
    const vs = this.maps.backends.valueSize;
    const familyAt = LAYOUT.peak_backend.fields.family;
    const out: BackendSpec[] = [];
    let token: Buffer | null = null;
    let turn = performance.now();
    for (;;) {
      const { keys, values, count, next, done } = this.maps.backends.lookupBatchChunk(token, 8192);
      for (let i = 0; i < count; i++) {
        if (values[i * vs + familyAt] === 0) continue; // unset slot
        const id = keys.readUInt32LE(4 * i);
        if (this.retiring.has(id)) continue; // deleted: zeroed after its grace period
        const b = decodeBackend(values.subarray(i * vs, (i + 1) * vs));
        if (b) out.push({ id, ...b });
      }
      if (done) return out;
      token = next;
      if (performance.now() - turn > TURN_MS) {
        await nextTurn();
        turn = performance.now();
      }
    }
  }

  private checkBackendId(field: string, id: number): void {
    const max = this.maps.backends.maxEntries;
    if (!Number.isInteger(id) || id < 1 || id >= max)
      throw new RangeError(`${field}: ${id} is outside 1..${max - 1}`);
  }

  async upsertBackend(b: BackendSpec): Promise<void> {
    this.checkBackendId('backend.id', b.id);
    const value = encodeBackend(b);
    await this.graceForIds([b.id]);
    this.backendsKnownEmpty = false;
    this.maps.backends.update(u32Key(b.id), value);
    this.retiring.delete(b.id);
  }

  /** Every valid entry in one batch update (a start writes 51,200 at 512 x 100: one syscall, not 51,200); if the
   * batch fails, entry by entry, so each failure is its own. */
  async upsertBackends(batch: readonly BackendSpec[]): Promise<(Error | null)[]> {
    const out: (Error | null)[] = batch.map(() => null);
    const size = this.maps.backends.valueBytes;
    if (size !== LAYOUT.peak_backend.size)
      throw new RangeError(`backend: ${LAYOUT.peak_backend.size} bytes encoded, the map holds ${size}`);
    const keys = Buffer.alloc(4 * batch.length);
    const values = Buffer.alloc(size * batch.length);
    const written: number[] = [];
    batch.forEach((b, at) => {
      try {
        this.checkBackendId('backend.id', b.id);
        encodeBackendInto(b, values, size * written.length);
        keys.writeUInt32LE(b.id, 4 * written.length);
        written.push(at);
      } catch (e) {
        out[at] = e as Error;
      }
    });
    if (written.length === 0) return out;
    await this.graceForIds(written.map((at) => batch[at]!.id));
    for (const at of written) this.retiring.delete(batch[at]!.id);
    this.backendsKnownEmpty = false;
    try {
      this.maps.backends.updateBatchPacked(
        keys.subarray(0, 4 * written.length),
        values.subarray(0, size * written.length),
        written.length,
      );
    } catch {
      for (const at of written)
        try {
          await this.upsertBackend(batch[at]!);
        } catch (e) {
          out[at] = e as Error;
        }
    }
    return out;
  }

  /**
   * Refuses while a VIP's table names the backend: reference counts kept by installTable (and readTable, for
   * tables this instance found installed), so only tables never seen yet (an adopted datapath) are read, once.
   */
  async deleteBackend(id: number): Promise<void> {
    this.checkBackendId('id', id);
    const cur = this.retiring.has(id) ? null : this.maps.backends.lookup(u32Key(id));
    if (!cur || !decodeBackend(cur)) throw new RangeError(`id: backend ${id} does not exist`);
    for (const vipId of this.uncountedTables()) await this.readTable(vipId);
    const holder = this.tableRefs.holder(id);
    if (holder !== null) throw new RangeError(`id: backend ${id} is still in the table of VIP ${holder}`);
    if (this.unlinked.has(id)) {
      // a patch took it out of a table moments ago: zeroed once no program can still hold the old slot
      this.retiring.add(id);
      this.scheduleRetire();
      return;
    }
    this.maps.backends.update(u32Key(id), Buffer.alloc(LAYOUT.peak_backend.size));
  }

  /** VIPs whose tables no reference count covers yet (found installed, not read since): none once all were read.
   * A plain loop: iterating the VIPs inside deleteBackend, across its awaits, allocated an iterator result per VIP
   * and delete (39 MB of garbage over bench:k8s's three bursts of 1,000 deletes at 1,000 VIPs). */
  private uncountedTables(): number[] {
    const out: number[] = [];
    for (const vipId of this.vipMirror().byId.keys()) if (!this.tableRefs.has(vipId)) out.push(vipId);
    return out;
  }

  /** Whether a table may be patched in place here (an RCU grace period can be waited for). */
  private canPatch(): boolean {
    if (this.patchable === null)
      try {
        this.patchable = native().rcuGraceSupported();
      } catch {
        this.patchable = false;
      }
    return this.patchable;
  }

  /**
   * Patches the VIP's installed table into `marked` in place when that is a small change (PATCH_MAX_SHARE) of a
   * table of the same size and generation parity; false when not (nothing written: the caller swaps). `members`:
   * the new table's distinct ids (checked by the caller). Ids the table stops naming join `unlinked`.
   */
  private patchTable(vipId: number, marked: Uint32Array, parity: 0 | 1, members: Uint32Array): boolean {
    if (!this.canPatch() || !this.tableRefs.has(vipId)) return false;
    const patched = this.withTable('current', vipId, vipId, (t) => {
      const m = t.map;
      if (!m.mmapable || m.u32Words < marked.length + 1) return false;
      if (m.readU32s(0, 1)[0] !== tableHead(marked.length, parity)) return false;
      const max = Math.floor(marked.length / PATCH_MAX_SHARE);
      return m.patchU32s(1, marked, max) <= max;
    });
    if (patched !== true) return false;
    const before = this.tableRefs.members(vipId);
    this.tableRefs.set(vipId, members);
    const gone = before === undefined ? [] : sortedMinus(before, members);
    if (gone.length > 0) {
      const epoch = ++this.graceEpoch;
      for (const id of gone) this.unlinked.set(id, epoch);
      // started now: a delete of these ids that follows soon finds it under way, or over
      void this.graceFor(epoch).catch(() => undefined);
    }
    return true;
  }

  /** Resolves once a grace period that began after epoch `epoch` was handed out has ended. */
  private async graceFor(epoch: number): Promise<void> {
    while (this.graceDone < epoch) {
      if (this.graceRun === null) {
        const covers = this.graceEpoch;
        this.graceRun = native()
          .rcuGraceAsync()
          .catch(async () => {
            // it was supported at the first patch: should it fail now, no more patches, and a wait far longer
            // than any program run stands in for this one
            this.patchable = false;
            await sleep(GRACE_FALLBACK_MS);
          })
          .then(() => {
            this.graceDone = Math.max(this.graceDone, covers);
            for (const [id, e] of this.unlinked)
              if (e <= covers && !this.retiring.has(id)) this.unlinked.delete(id);
          })
          .finally(() => (this.graceRun = null));
      }
      await this.graceRun;
    }
  }

  /** Waits for the grace period of any of `ids` a patch took out of a table (before their entries are written). */
  private async graceForIds(ids: readonly number[]): Promise<void> {
    if (this.unlinked.size === 0) return;
    let epoch = 0;
    for (const id of ids) epoch = Math.max(epoch, this.unlinked.get(id) ?? 0);
    if (epoch > 0) await this.graceFor(epoch);
  }

  /** Zeroes the retiring backends' entries as their grace periods end (one batch per grace period). */
  private scheduleRetire(): void {
    if (this.retireRun !== null) return;
    this.retireRun = (async () => {
      while (this.retiring.size > 0 && !this.closed) {
        const epoch = this.graceEpoch;
        await this.graceFor(epoch);
        if (this.closed) return;
        const ids = [...this.retiring].filter((id) => (this.unlinked.get(id) ?? 0) <= epoch);
        if (ids.length === 0) continue;
        const size = this.maps.backends.valueBytes;
        const keys = Buffer.alloc(4 * ids.length);
        ids.forEach((id, i) => keys.writeUInt32LE(id, 4 * i));
        try {
          this.maps.backends.updateBatchPacked(keys, Buffer.alloc(size * ids.length), ids.length);
        } catch {
          // left set: listBackends shows them again and the next reconcile deletes them (now without a wait)
        }
        for (const id of ids) {
          this.retiring.delete(id);
          this.unlinked.delete(id);
        }
      }
    })().finally(() => (this.retireRun = null));
  }

  /** installTables with one entry: a small change patched in place, else a new inner map swapped in. */
  async installTable(vipId: number, table: Uint32Array): Promise<void> {
    const [err] = await this.installTables([{ vipId, table }]);
    if (err) throw err;
  }

  /**
   * Installs several tables. In a batch of at most PATCH_MAX_BATCH, an entry without `previous` whose table
   * differs from the installed one (same size and parity) in at most 1/PATCH_MAX_SHARE of its slots is patched
   * in place: only those slots are written,
   * each by one aligned store, so a packet sees each slot old or new (each a valid choice) and the change costs
   * no RCU wait; ids it stops naming are rewritten (deleteBackend, a reuse) only after a grace period
   * (`unlinked`). The others: each inner map is built aside, then every slot is swapped by one batch update of
   * the outer map (a map-in-map update waits for an RCU grace period, ~8 ms: once per batch, not per table, and
   * on a thread of the pool, not the event loop); each swap is atomic for packets.
   * Per entry: null, or why that table was not installed (then neither the table nor its previous table changed).
   *
   * An entry with `previous` installs the pair atomically (issue 15): the new previous table is written at
   * the generation no packet reads (maglev_prev_tables[vipId * 2 + (1 - parity)]), the current table is
   * swapped in with that parity in its header (the one update that switches both), and the stale
   * generation is cleared (all of the batch in one update to the empty table) once no new packet can pick it.
   */
  async installTables(
    batch: readonly TableInstall[],
    o: { afterPrevious?: () => void | Promise<void> } = {},
  ): Promise<(Error | null)[]> {
    const st = this.vipMirror();
    const results: (Error | null)[] = batch.map(() => null);
    type Ready = {
      at: number;
      vipId: number;
      inner: BpfMap;
      members: Uint32Array;
      /** the live parity before, and the one the new table carries (they differ when `previous` is given) */
      from: 0 | 1;
      to: 0 | 1;
      prevInner: BpfMap | null;
    };
    const ready: Ready[] = [];
    try {
      // 1. The contents of each inner map (the previous table a current one is marked against is read back
      //    from the kernel here).
      type Planned = Omit<Ready, 'inner' | 'prevInner' | 'members'> & {
        marked: Uint32Array;
        previous: Uint32Array | null;
      };
      const planned: Planned[] = [];
      let turn = performance.now();
      for (let at = 0; at < batch.length; at++) {
        const { vipId, table, previous } = batch[at]!;
        if (performance.now() - turn > TURN_MS) {
          await nextTurn();
          turn = performance.now();
        }
        try {
          const hex = st.byId.get(vipId);
          const vip = hex === undefined ? undefined : st.byKey.get(hex);
          if (!vip) throw new RangeError(`vipId: VIP ${vipId} does not exist`);
          if (!isUint32Array(table) || table.length !== vip.tableSize)
            throw new RangeError(`table: length ${table.length} is not the VIP's tableSize ${vip.tableSize}`);
          if (previous !== undefined && previous !== null) checkPreviousShape(previous);
          const from = this.liveParity(vipId);
          const to: 0 | 1 = previous === undefined ? from : from === 0 ? 1 : 0;
          // Slot 0 holds the table's length and parity, slots 1..n its entries, with PEAK_SLOT_F_MOVED where
          // the previous table it pairs with names another owner (straight from `table`, no copy, when there
          // is none): the map is not visible before the swap.
          const against = previous === undefined ? this.previousOf(vipId) : previous;
          const marked = markMovedSlots(table, against);
          if (previous === undefined && batch.length <= PATCH_MAX_BATCH) {
            // a small change of a table alone (no previous table to switch with it): patched in place
            const members = tableMembers(table);
            checkIds(members);
            if (this.patchTable(vipId, marked, to, members)) continue;
          }
          planned.push({ at, vipId, from, to, marked, previous: previous ?? null });
        } catch (e) {
          results[at] = e as Error;
        }
      }
      // 2. The inner maps, made aside off the event loop (no packet sees them before the swap) while the ids
      //    are checked here (a table that fails its check has its maps closed unseen).
      const building = this.buildTableMaps(
        planned.flatMap((p) => [
          ...(p.previous === null ? [] : [{ vipId: p.vipId, table: p.previous, prefix: 'peak_pv_', head: p.previous.length }]), // prettier-ignore
          {
            vipId: p.vipId,
            table: p.marked,
            prefix: 'peak_mg_',
            head: tableHead(p.marked.length, p.to),
            // the table's ids, counted as it is written (unmarked: what it holds is the table itself)
            ids: p.previous === null && p.marked === batch[p.at]!.table,
          },
        ]),
      );
      const members = new Map<number, Uint32Array>();
      for (const p of planned) {
        // an unmarked table's ids come with its map (counted off the event loop)
        if (p.previous === null && p.marked === batch[p.at]!.table) continue;
        if (performance.now() - turn > TURN_MS) {
          await nextTurn();
          turn = performance.now();
        }
        try {
          members.set(p.at, tableMembers(batch[p.at]!.table));
          if (p.previous !== null) checkIds(tableMembers(p.previous));
        } catch (e) {
          results[p.at] = e as Error;
        }
      }
      const maps = await building;
      let k = 0;
      for (const p of planned) {
        const prev = p.previous === null ? null : maps[k++]!;
        const cur = maps[k++]!;
        if (!members.has(p.at) && !(cur instanceof Error)) {
          // a map made one by one (no ids counted with it), or made by the batch with them
          const m = cur.distinct ?? tableMembers(batch[p.at]!.table);
          members.set(p.at, m);
        }
        let failed = results[p.at] ?? (prev instanceof Error ? prev : cur instanceof Error ? cur : null);
        if (failed === null)
          try {
            checkIds(members.get(p.at)!);
          } catch (e) {
            failed = e as Error;
          }
        if (failed !== null) {
          if (prev !== null && !(prev instanceof Error)) prev.map.close();
          if (!(cur instanceof Error)) cur.map.close();
          results[p.at] = failed;
          continue;
        }
        const { at, vipId, from, to } = p;
        ready.push({
          at,
          vipId,
          inner: (cur as Built).map,
          members: members.get(at)!,
          from,
          to,
          prevInner: prev === null ? null : (prev as Built).map,
        });
      }
      if (ready.length === 0) return results;
      // 1. The new previous tables, at the generation no packet reads (the empty table where the new one is
      //    "none"), in one batch.
      const flips = ready.filter((r) => r.to !== r.from);
      if (flips.length > 0) {
        const written = (r: Ready): BpfMap => r.prevInner ?? this.emptyTable();
        try {
          await this.updatePacked(
            this.maps.maglev_prev_tables,
            flips.map((r) => [r.vipId * 2 + r.to, written(r).fd]),
          );
        } catch (e) {
          for (const r of flips)
            if (this.maps.maglev_prev_tables.innerId(r.vipId * 2 + r.to) !== written(r).info.id)
              results[r.at] = e as Error;
        }
        for (const r of flips)
          if (results[r.at] !== null) continue;
          else if (r.prevInner === null) this.forgetTable('previous', r.vipId * 2 + r.to);
          else this.keepTable('previous', r.vipId * 2 + r.to, r.prevInner);
      }
      // (tests look at the window between the two steps: packets must still see the old pair)
      await o.afterPrevious?.();
      // 2. The current tables: each swap switches its VIP's pair.
      const swaps = ready.filter((r) => results[r.at] === null);
      let failure: Error | null = null;
      if (swaps.length > 0) {
        try {
          await this.updatePacked(
            this.maps.maglev_tables,
            swaps.map((r) => [r.vipId, r.inner.fd]),
          );
        } catch (e) {
          // The batch stops at the entry that failed: which slots hold our new maps says which went in.
          failure = e as Error;
        }
      }
      // 3. The stale generation: after a flip no new packet reads it (an in-flight one holds its own reference).
      //    Cleared in one batch (the empty table), not deleted slot by slot (an RCU wait each).
      const stale: number[] = [];
      for (const r of swaps) {
        const installed = failure === null || this.maps.maglev_tables.innerId(r.vipId) === r.inner.info.id;
        if (!installed) results[r.at] = failure;
        else this.keepTable('current', r.vipId, r.inner);
        if (r.to === r.from) {
          if (installed) this.tableRefs.set(r.vipId, r.members);
          continue;
        }
        // a flip that did not happen leaves the written generation unread: cleared again
        const unread = installed ? r.from : r.to;
        if (this.holdsPrevious(r.vipId * 2 + unread)) stale.push(r.vipId * 2 + unread);
        if (!installed) continue;
        this.tableRefs.set(r.vipId, r.members);
        this.parities.set(r.vipId, r.to);
      }
      const swapped = new Set(swaps);
      for (const r of flips)
        if (
          results[r.at] !== null &&
          !swapped.has(r) &&
          r.prevInner !== null &&
          this.holdsPrevious(r.vipId * 2 + r.to)
        )
          stale.push(r.vipId * 2 + r.to); // its previous table did not go in (or only partly): cleared again
      await this.clearPrevious(stale);
      return results;
    } finally {
      // the maps kept for pin() stay open (keepTable); the kernel holds the installed ones
      const held = new Set(this.heldTables.values());
      for (const r of ready) {
        if (!held.has(r.inner)) r.inner.close();
        if (r.prevInner !== null && !held.has(r.prevInner)) r.prevInner.close();
      }
    }
  }

  /**
   * One packed batch update of an outer map: [index, inner map fd] pairs, on a thread of the pool (the kernel
   * waits an RCU grace period per batch, 10-200 ms the event loop keeps). The inner maps stay open until it
   * settles (installTables closes them after). Failure: the batch stopped at the entry that failed, as the
   * synchronous update does.
   */
  private async updatePacked(map: BpfMap, entries: [number, number][]): Promise<void> {
    const ks = Buffer.alloc(4 * entries.length);
    const vs = Buffer.alloc(4 * entries.length);
    entries.forEach(([k, fd], i) => {
      ks.writeUInt32LE(k, 4 * i);
      vs.writeUInt32LE(fd, 4 * i);
    });
    await map.updateBatchPackedAsync(ks, vs, entries.length);
  }

  /** Through the table's pin (or by id with CAP_SYS_ADMIN); TableUnreadableError when neither opens it. */
  /** Its members join the reference counts, unless this instance installed (or read) the slot already: the
   * only writer of its slots, it knows them (a pass over the table saved per read). */
  async readTable(vipId: number, into?: Uint32Array): Promise<Uint32Array | null> {
    const out = this.withTable('current', vipId, vipId, (t) => readInnerTable(t, into));
    if (out === null) this.tableRefs.set(vipId, NO_MEMBERS);
    else if (!this.tableRefs.has(vipId)) this.tableRefs.set(vipId, tableMembers(out));
    return out;
  }

  async installPreviousTable(vipId: number, table: Uint32Array | null): Promise<void> {
    const [err] = await this.installPreviousTables([{ vipId, table }]);
    if (err) throw err;
  }

  /**
   * Sets or clears previous tables (Datapath.installPreviousTable). A set one is paired with the VIP's
   * current table as installed: that table is re-marked against it and swapped in together with it
   * (installTables with `previous`: one atomic switch); with no current table installed, no packet reads a
   * previous table and it is written at the live generation directly. Cleared ones (both generations of every
   * such VIP) point at the empty table, in one batch (the current table's marks may stay: a marked slot then
   * finds no previous table and sends no hint). Per entry: null or the error.
   */
  async installPreviousTables(batch: readonly PreviousTableInstall[]): Promise<(Error | null)[]> {
    const st = this.vipMirror();
    const results: (Error | null)[] = batch.map(() => null);
    const pairs: TableInstall[] = [];
    const pairAt: number[] = [];
    const clears: { at: number; slots: number[] }[] = [];
    for (let at = 0; at < batch.length; at++) {
      const { vipId, table } = batch[at]!;
      try {
        if (!st.byId.has(vipId)) throw new RangeError(`vipId: VIP ${vipId} does not exist`);
        if (table === null) {
          // both generations, all VIPs in one batch (an expiry clears many at once)
          clears.push({ at, slots: [vipId * 2, vipId * 2 + 1].filter((i) => this.holdsPrevious(i)) });
          continue;
        }
        checkPrevious(table);
        const cur = await this.readTable(vipId);
        if (cur !== null) {
          pairs.push({ vipId, table: cur, previous: table });
          pairAt.push(at);
          continue;
        }
        const parity = this.liveParity(vipId);
        const inner = this.buildTableMap(vipId, table, 'peak_pv_', table.length);
        let kept = false;
        try {
          this.maps.maglev_prev_tables.setInner(vipId * 2 + parity, inner);
          kept = this.keepTable('previous', vipId * 2 + parity, inner);
        } finally {
          if (!kept) inner.close();
        }
      } catch (e) {
        results[at] = e as Error;
      }
    }
    try {
      await this.clearPrevious(clears.flatMap((c) => c.slots));
    } catch (e) {
      for (const c of clears) if (c.slots.some((i) => this.holdsPrevious(i))) results[c.at] = e as Error;
    }
    if (pairs.length > 0)
      (await this.installTables(pairs)).forEach((err, i) => {
        if (err) results[pairAt[i]!] = err;
      });
    return results;
  }

  async readPreviousTable(vipId: number): Promise<Uint32Array | null> {
    return this.withTable('previous', vipId * 2 + this.liveParity(vipId), vipId, (t) => readInnerTable(t));
  }

  /** The Maglev inner maps this balancer's outer maps accept (read on first need). */
  private tableTemplate(): InnerTemplate {
    this.innerTemplate ??= innerMapTemplate(this.program, this.maps, this.tableDir);
    return this.innerTemplate;
  }

  /**
   * Maglev inner maps holding `table` ([0] = `head`: M, with the parity in a current table; [1 + slot] = id),
   * not yet visible to the datapath. Per entry: the map, or why it could not be made. This build's mmap-able
   * maps are made and filled in one call off the event loop; where that fails (or for an older build's maps)
   * one by one here, so each entry gets its own answer.
   */
  private async buildTableMaps(
    specs: readonly { vipId: number; table: Uint32Array; prefix: string; head: number; ids?: boolean }[],
  ): Promise<(Built | Error)[]> {
    if (specs.length === 0) return [];
    let t: InnerTemplate;
    try {
      t = this.tableTemplate();
    } catch (e) {
      return specs.map(() => e as Error);
    }
    if ((t.flags & MapFlags.MMAPABLE) !== 0)
      try {
        const made = await BpfMap.createFilledU32s(
          specs.map((s) => ({
            name: `${s.prefix}${s.vipId}`.slice(0, 15),
            maxEntries: entriesForWords(s.table.length + 1, t.valueSize),
            flags: t.flags,
            valueSize: t.valueSize,
            writes: [
              { first: 0, values: Uint32Array.of(s.head) },
              { first: 1, values: s.table, distinct: s.ids === true },
            ],
          })),
        );
        return made.map(({ map, distinct }) => ({ map, distinct: distinct[1] ?? null }));
      } catch {
        // one by one below: the error goes to the entry it belongs to
      }
    return specs.map((s) => {
      try {
        return { map: this.buildTableMap(s.vipId, s.table, s.prefix, s.head), distinct: null };
      } catch (e) {
        return e as Error;
      }
    });
  }

  /** A Maglev inner map holding `table` ([0] = `head`: M, with the parity in a current table; [1 + slot] =
   * id), not yet visible to the datapath. */
  private buildTableMap(vipId: number, table: Uint32Array, prefix: string, head: number): BpfMap {
    const t = this.tableTemplate();
    const inner = BpfMap.create({
      type: MapType.ARRAY,
      keySize: 4,
      valueSize: t.valueSize,
      maxEntries: entriesForWords(table.length + 1, t.valueSize),
      flags: t.flags,
      name: `${prefix}${vipId}`.slice(0, 15),
    });
    try {
      // Through mmap (a memory copy) for this build's mmap-able maps; batch syscalls for an older build's.
      inner.writeU32s(0, Uint32Array.of(head));
      inner.writeU32s(1, table);
      return inner;
    } catch (e) {
      inner.close();
      throw e;
    }
  }

  async counters(o: CountersOptions = {}): Promise<DatapathCounters> {
    const global: Record<string, bigint> = {};
    const blocks = this.maps.stats.lookupPerCpu(ZERO_KEY) ?? [];
    // An adopted stats map of an older build may hold fewer counters than this build names: counters are
    // only ever appended (bpf/shared.h), so read the ones its value holds and leave the newer ones out.
    const held = Math.floor(this.maps.stats.valueSize / 8);
    this.counterNames.slice(0, held).forEach((name, i) => {
      global[name] = blocks.reduce((s, b) => s + b.readBigUInt64LE(8 * i), 0n);
    });
    // Packed batch reads per stats map (not a syscall per id), in chunks with event-loop turns between them, the ids
    // wanted marked in a byte mask: at 512 x 1000 the backends' map is ~1M entries per CPU, and one read of it with
    // a Map of its ids held the event loop ~1 s.
    const traffic = async (m: BpfMap, ids: number[]): Promise<Map<number, TrafficCounter>> => {
      const out = new Map<number, TrafficCounter>();
      if (ids.length === 0) return out;
      const wanted = new Uint8Array(m.maxEntries);
      for (const id of ids) if (id < wanted.length) wanted[id] = 1;
      const stride = m.valueBytes;
      let token: Buffer | null = null;
      let turn = performance.now();
      for (;;) {
        const { keys, values, count, next, done } = m.lookupBatchChunk(token, 8192);
        for (let i = 0; i < count; i++) {
          const id = keys.readUInt32LE(4 * i);
          if (wanted[id] === 1)
            out.set(id, sumTraffic(splitPerCpu(values.subarray(i * stride, (i + 1) * stride), m.valueSize)));
        }
        if (done) return out;
        token = next;
        if (performance.now() - turn > TURN_MS) {
          await nextTurn();
          turn = performance.now();
        }
      }
    };
    const vipIds = (await this.listVips()).map((v) => v.id);
    const beIds = o.backends === false ? [] : (await this.listBackends()).map((b) => b.id);
    return {
      global,
      vips: await traffic(this.maps.vip_stats, vipIds),
      backends: await traffic(this.maps.backend_stats, beIds),
    };
  }

  async conntrack(limit?: number): Promise<ConntrackEntry[]> {
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0))
      throw new RangeError(`limit: ${limit} is not a non-negative integer`);
    const { keys, values } = this.maps.conntrack.lookupBatch();
    const out: ConntrackEntry[] = [];
    for (let i = 0; i < keys.length && (limit === undefined || out.length < limit); i++) {
      const f = decodeFlowKey(keys[i]!);
      const protocol = f.proto === 6 ? 'tcp' : f.proto === 17 ? 'udp' : null;
      if (!protocol) continue;
      const v = decodeCtValue(values[i]!);
      out.push({
        source: f.source,
        sourcePort: f.sourcePort,
        destination: f.destination,
        destinationPort: f.destinationPort,
        protocol,
        backendId: v.backendId,
        closed: v.closedSeq !== null,
      });
    }
    return out;
  }
}
