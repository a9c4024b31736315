// What the decap agent writes to the program's decap_config and decap_sources maps, as plain functions: the
// settings from flags and environment (GUE port, second-chance switches, accepted outer sources), and their
// bytes laid out by the object's BTF (struct peak_decap_config, struct peak_decap_source_key in bpf/decap_maps.h).
import { formatIp, parsePrefixBytes, type IpFamily } from '../model/ip';
import { DecapUsageError } from './core';

/** The GUE port when neither --gue-port nor PEAK_XDP_GUE_PORT says (the balancer's default, Katran's too). */
export const DEFAULT_GUE_PORT = 6080;

/** An outer source prefix tunnels are accepted from, and which kinds of tunnel. */
export interface DecapSource {
  family: IpFamily;
  /** Canonical address of the prefix (host bits zero). */
  prefix: string;
  prefixLength: number;
  /** IPIP-kind tunnels (IPIP, IP6IP6, 4in6) and GUE: the LB nodes. */
  ipip: boolean;
  /** GUE to our port: the LB nodes, and peer backends' second-chance hops (--gue-from). */
  gue: boolean;
}

/** Everything the agent writes to the program besides its addresses. */
export interface DecapSettings {
  guePort: number;
  secondChance: boolean;
  conntrackLookup: boolean;
  /** Forward a moved flow to the previous owner a hint named once, also after the LB stops hinting it (decap_moved);
   * false: on hints only. Needs secondChance. */
  rememberMoved: boolean;
  /** Empty: tunnels from anywhere (the behaviour before --from existed). */
  sources: DecapSource[];
}

/** Where a value came from, for error messages: the flag, or the environment variable. */
type Source = string;

/** --gue-port, else PEAK_XDP_GUE_PORT, else 6080: an integer 1-65535. */
export function guePortSetting(flag: string | number | undefined, env: string | undefined): number {
  const [text, source] =
    flag !== undefined
      ? [String(flag), '--gue-port']
      : env !== undefined
        ? [env, 'PEAK_XDP_GUE_PORT']
        : [null, ''];
  if (text === null) return DEFAULT_GUE_PORT;
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t) || Number(t) < 1 || Number(t) > 65535)
    throw new DecapUsageError(`${source}: "${text}" is not a UDP port (an integer 1-65535)`);
  return Number(t);
}

/** One prefix of --from / --gue-from / their variables: an address or CIDR without host bits. */
export function parseSourcePrefix(
  text: string,
  source: Source,
): { family: IpFamily; prefix: string; prefixLength: number } {
  const r = parsePrefixBytes(text.trim());
  if (!r.ok)
    throw new DecapUsageError(
      r.error === 'length'
        ? `${source}: "${text}" has a prefix length that is not 0-${r.family === 4 ? 32 : 128}`
        : `${source}: "${text}" is not an IP prefix (e.g. 10.0.0.0/24, 2001:db8::/64, or one address)`,
    );
  const p = r.prefix;
  const written = parsePrefixBytes(text.trim().split('/')[0]!);
  const prefix = formatIp(p.bytes);
  if (written.ok && formatIp(written.prefix.bytes) !== prefix)
    throw new DecapUsageError(
      `${source}: "${text}" has host bits set (the prefix is ${prefix}/${p.prefixLength})`,
    );
  return { family: p.family, prefix, prefixLength: p.prefixLength };
}

/** A comma-separated environment value as a list (empty items, e.g. a trailing comma, dropped). */
function envList(v: string | undefined): string[] {
  return (v ?? '').split(',').map((x) => x.trim()).filter((x) => x !== ''); // prettier-ignore
}

/**
 * The accepted outer sources: --from (else PEAK_XDP_DECAP_FROM) for every tunnel kind, --gue-from (else
 * PEAK_XDP_DECAP_GUE_FROM) for GUE only. Merged by prefix, sorted (IPv4 first), so two reads compare equal.
 * --gue-from alone is refused: the LBs' own tunnels would all be refused with it.
 */
export function sourcesSetting(o: {
  from: readonly string[];
  gueFrom: readonly string[];
  env: { PEAK_XDP_DECAP_FROM?: string; PEAK_XDP_DECAP_GUE_FROM?: string };
}): DecapSource[] {
  const pick = (
    flag: readonly string[],
    flagName: string,
    envName: 'PEAK_XDP_DECAP_FROM' | 'PEAK_XDP_DECAP_GUE_FROM',
  ) =>
    flag.length > 0 ? { list: flag, source: flagName } : { list: envList(o.env[envName]), source: envName };
  const all = pick(o.from, '--from', 'PEAK_XDP_DECAP_FROM');
  const gue = pick(o.gueFrom, '--gue-from', 'PEAK_XDP_DECAP_GUE_FROM');
  if (all.list.length === 0 && gue.list.length > 0)
    throw new DecapUsageError(
      `${gue.source}: needs --from (or PEAK_XDP_DECAP_FROM) too: with sources set, tunnels come only from them, and the LB nodes' prefixes are what --from names`,
    );
  const byKey = new Map<string, DecapSource>();
  for (const [list, source, kinds] of [
    [all.list, all.source, { ipip: true, gue: true }],
    [gue.list, gue.source, { ipip: false, gue: true }],
  ] as const)
    for (const t of list) {
      const p = parseSourcePrefix(t, source);
      const key = `${p.prefix}/${p.prefixLength}`;
      const had = byKey.get(key);
      byKey.set(key, { ...p, ipip: kinds.ipip || (had?.ipip ?? false), gue: true });
    }
  return [...byKey.values()].sort(compareSource);
}

function compareSource(a: DecapSource, b: DecapSource): number {
  if (a.family !== b.family) return a.family - b.family;
  const x = Buffer.from(parseAddr(a.prefix));
  const y = Buffer.from(parseAddr(b.prefix));
  return Buffer.compare(x, y) || a.prefixLength - b.prefixLength;
}

function parseAddr(text: string): Uint8Array {
  const r = parsePrefixBytes(text);
  if (!r.ok) throw new Error(`not an address: ${text}`);
  return r.prefix.bytes;
}

/** A struct as btfLayout reports it: size and member offsets (bytes). */
export interface BtfStruct {
  name: string;
  size: number;
  members: { name: string; offset: number; size: number }[];
}

/** What the encoders need from the decap object's BTF. */
export interface DecapConfigLayout {
  config: BtfStruct;
  sourceKey: BtfStruct;
  /** enum peak_decap_config_flag */
  flags: Readonly<Record<string, number>>;
  /** enum peak_decap_source_kind */
  kinds: Readonly<Record<string, number>>;
}

/** Picks the decap config layout out of a btfLayout() result, naming what is missing. */
export function decapConfigLayout(
  btf: { structs: BtfStruct[]; enums: { name: string; values: Record<string, number> }[] },
  source: string,
): DecapConfigLayout {
  const struct = (n: string) => {
    const s = btf.structs.find((x) => x.name === n);
    if (!s) throw new Error(`struct ${n} not found in the BTF of ${source}`);
    return s;
  };
  const en = (n: string) => {
    const e = btf.enums.find((x) => x.name === n);
    if (!e) throw new Error(`enum ${n} not found in the BTF of ${source}`);
    return e.values;
  };
  return {
    config: struct('peak_decap_config'),
    sourceKey: struct('peak_decap_source_key'),
    flags: en('peak_decap_config_flag'),
    kinds: en('peak_decap_source_kind'),
  };
}

function member(s: BtfStruct, name: string): { offset: number; size: number } {
  const m = s.members.find((x) => x.name === name);
  if (!m) throw new Error(`struct ${s.name} has no member ${name}`);
  return m;
}

function enumValue(values: Readonly<Record<string, number>>, name: string): number {
  const v = values[name];
  if (v === undefined) throw new Error(`${name} not found in the decap object's BTF`);
  return v;
}

/**
 * The decap_config value: GUE port in network order, flag bits (second chance off, conntrack lookup off, moved flows
 * not remembered, sources in use: the last set exactly when `sources` is not empty), src_v4 / src_v6 zero (not configurable).
 */
export function encodeDecapConfig(layout: DecapConfigLayout, s: DecapSettings): Buffer {
  const b = Buffer.alloc(layout.config.size);
  b.writeUInt16BE(s.guePort, member(layout.config, 'gue_port').offset);
  let flags = 0;
  if (!s.secondChance) flags |= enumValue(layout.flags, 'PEAK_DECAP_CFG_F_NO_SECOND_CHANCE');
  if (!s.conntrackLookup) flags |= enumValue(layout.flags, 'PEAK_DECAP_CFG_F_NO_CONNTRACK');
  if (!s.rememberMoved) flags |= enumValue(layout.flags, 'PEAK_DECAP_CFG_F_NO_REMEMBER');
  if (s.sources.length > 0) flags |= enumValue(layout.flags, 'PEAK_DECAP_CFG_F_SOURCES');
  // host order: the program reads flags as a plain __u16 (BPF runs little-endian here, as the x86/arm64 hosts)
  b.writeUInt16LE(flags, member(layout.config, 'flags').offset);
  return b;
}

/** A decap_sources key: prefixlen = 32 (the family word: family byte, 3 zero bytes) + the prefix length, then
 * the family, then the address. */
export function encodeSourceKey(
  layout: DecapConfigLayout,
  p: { family: IpFamily; prefix: string; prefixLength: number },
): Buffer {
  const k = layout.sourceKey;
  const b = Buffer.alloc(k.size);
  b.writeUInt32LE(32 + p.prefixLength, member(k, 'prefixlen').offset);
  b[member(k, 'family').offset] = p.family;
  Buffer.from(parseAddr(p.prefix)).copy(b, member(k, 'addr').offset);
  return b;
}

/** A decap_sources value: the enum peak_decap_source_kind bits. */
export function encodeSourceValue(layout: DecapConfigLayout, s: DecapSource): Buffer {
  let v = 0;
  if (s.ipip) v |= enumValue(layout.kinds, 'PEAK_DECAP_SRC_IPIP');
  if (s.gue) v |= enumValue(layout.kinds, 'PEAK_DECAP_SRC_GUE');
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

/** CIDR text of a source, as logs and /state show it. */
export const sourceText = (s: { prefix: string; prefixLength: number }): string =>
  `${s.prefix}/${s.prefixLength}`;

/** The flags of `decap run` / `decap attach` that become DecapSettings. */
export interface DecapSettingFlags {
  from: readonly string[];
  gueFrom: readonly string[];
  guePort?: string | number;
  /** false with --no-second-chance */
  secondChance: boolean;
  /** false with --no-conntrack-lookup */
  conntrackLookup: boolean;
  /** false with --no-remember-moved */
  rememberMoved: boolean;
}

/** DecapSettings from the flags, with PEAK_XDP_GUE_PORT / PEAK_XDP_DECAP_FROM / PEAK_XDP_DECAP_GUE_FROM fallbacks. */
export function decapSettings(
  f: DecapSettingFlags,
  env: Readonly<Record<string, string | undefined>>,
): DecapSettings {
  return {
    guePort: guePortSetting(f.guePort, env.PEAK_XDP_GUE_PORT),
    secondChance: f.secondChance,
    conntrackLookup: f.conntrackLookup,
    rememberMoved: f.rememberMoved,
    sources: sourcesSetting({ from: f.from, gueFrom: f.gueFrom, env }),
  };
}
