// The configuration model: zod schema, cross-field checks, normalised Config, parseConfig(text).
import { isIP } from 'node:net';
import { z } from 'zod';
import { communitySchema, largeCommunitySchema } from '../bgp/config';
import { isPrime, MAGLEV_MAX_SIZE } from '../maglev/maglev';
import { BOUNDS, DEFAULTS } from './defaults';
import { parseDocumentText } from './document';
import { ConfigIssue, formatPath, fromZodIssues, showValue } from './errors';
import {
  canonicalIp,
  canonicalMac,
  describeSpecialAddress,
  formatIp,
  IpFamily,
  IpPrefix,
  parseIp,
  parsePrefix,
  specialAddress,
} from './ip';

export type XdpMode = 'native' | 'generic' | 'auto';
export type Protocol = 'tcp' | 'udp';
export type Persistence = 'none' | 'source-ip';
export type HealthCheckType = 'tcp' | 'http';

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
   * over them, the VIP stays announced) rather than dropping every new flow. See reconcile/desired.ts.
   */
  failOpen: boolean;
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
  /** listen: the admin API address; perBackendMetrics: export per-backend series (false for huge configs). */
  admin: { listen: ListenAddress; perBackendMetrics: boolean };
  limits: Limits;
  /** Opaque here: validated by the BGP module's schema (see setBgpValidator). */
  bgp?: unknown;
  /** Opaque here: validated by the Kubernetes source's schema (see setKubernetesValidator). */
  kubernetes?: unknown;
  /** Idle time (seconds) after which a connection-table entry is re-selected; 0 = never. */
  conntrackTimeouts: { tcp: number; udp: number };
  /** Keep a blackhole route per VIP address (the kernel drops VIP packets while the balancer is detached). */
  vipBlackholeRoutes: boolean;
  vips: VipConfig[];
}

export type ConfigFormat = 'yaml' | 'json';

export type ParseResult =
  { ok: true; config: Config; warnings: ConfigIssue[] } | { ok: false; errors: ConfigIssue[] };

/** Validates the `bgp` section; installed by the BGP module (setBgpValidator). Returns issues relative to `bgp`. */
export type BgpValidator = (
  value: unknown,
) => { ok: true; value: unknown } | { ok: false; issues: ConfigIssue[] };

let bgpValidator: BgpValidator | null = null;
let kubernetesValidator: BgpValidator | null = null;

/** Plugs the Kubernetes source's schema in: its issues are reported under `kubernetes.`. */
export function setKubernetesValidator(v: BgpValidator | null): void {
  kubernetesValidator = v;
}

/** Plugs the BGP module's schema in: its issues are reported under `bgp.` and block the whole file. */
export function setBgpValidator(v: BgpValidator | null): void {
  bgpValidator = v;
}

// ---- zod schema (shape and scalar checks; cross-field checks follow in semanticIssues) ----

type Path = (string | number)[];
/** An issue with a path relative to the value checked. */
export interface RelIssue {
  path: Path;
  message: string;
}

const ipString = z.string().superRefine((v, ctx) => {
  if (canonicalIp(v) === null)
    ctx.addIssue({ code: 'custom', message: `${showValue(v)} is not an IP address` });
});
const port = z.number().int().min(0).max(65535);
const intIn = (b: { min: number; max: number }): z.ZodNumber => z.number().int().min(b.min).max(b.max);

const healthCheckSchema = z
  .object({
    type: z.enum(['tcp', 'http']).default(DEFAULTS.healthCheck.type),
    port: port.min(1).optional(),
    path: z
      .string()
      .refine(
        (p) => p.startsWith('/') && !/\s/.test(p),
        (p) => ({
          message: `${showValue(p)} is not an absolute HTTP path (starts with /, no spaces)`,
        }),
      )
      .optional(),
    intervalMs: intIn(BOUNDS.intervalMs).default(DEFAULTS.healthCheck.intervalMs),
    timeoutMs: intIn(BOUNDS.timeoutMs).default(DEFAULTS.healthCheck.timeoutMs),
    rise: intIn(BOUNDS.riseFall).default(DEFAULTS.healthCheck.rise),
    fall: intIn(BOUNDS.riseFall).default(DEFAULTS.healthCheck.fall),
    downGraceSeconds: intIn(BOUNDS.downGraceSeconds).default(DEFAULTS.healthCheck.downGraceSeconds),
  })
  .strict();

/** A backend after checkBackends: canonical address and its family, defaults filled in. */
export interface CheckedBackend {
  /** As written (for messages). */
  input: string;
  address: string;
  family: IpFamily;
  weight: number;
  drain: boolean;
}

const BACKEND_KEYS: ReadonlySet<string> = new Set(['address', 'weight', 'drain']);

/** What zod calls a value's type in "expected object, received X" (only "object" matters here). */
const isPlainObjectLike = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  !(v instanceof Map) &&
  !(v instanceof Set) &&
  !(v instanceof Date) &&
  !(
    typeof (v as { then?: unknown }).then === 'function' &&
    typeof (v as { catch?: unknown }).catch === 'function'
  );

/**
 * Shape checks of a VIP's backends list, written out by hand for speed (a 51k-backend file spent most
 * of its validation time in zod here). Same checks, paths, order and messages as the zod schema
 * `{address: IP string, weight: int 0..65535 = 1, drain: boolean = false}.strict()` gave.
 */
export function checkBackends(list: readonly unknown[]): { backends: CheckedBackend[]; issues: RelIssue[] } {
  const backends: CheckedBackend[] = [];
  const issues: RelIssue[] = [];
  const typeIssue = (path: Path, v: unknown, what: string): void => {
    issues.push({ path, message: v === undefined ? 'is required' : `${showValue(v)} is not ${what}` });
  };
  for (let j = 0; j < list.length; j++) {
    const b = list[j];
    if (!isPlainObjectLike(b)) {
      typeIssue(['backends', j], b, 'an object');
      continue;
    }
    const before = issues.length;
    const a = b.address;
    let address = '';
    let family: IpFamily = 4;
    if (typeof a !== 'string') typeIssue(['backends', j, 'address'], a, 'a string');
    else {
      const fam = isIP(a);
      // Dotted quads that isIP accepts are already canonical (no leading zeros, no spaces).
      const canon = fam === 4 ? a : canonicalIp(a);
      if (canon === null)
        issues.push({ path: ['backends', j, 'address'], message: `${showValue(a)} is not an IP address` });
      else {
        address = canon;
        family = fam === 4 ? 4 : 6;
      }
    }
    let weight: number = DEFAULTS.backend.weight;
    const w = b.weight;
    if (w !== undefined) {
      if (typeof w !== 'number' || Number.isNaN(w)) typeIssue(['backends', j, 'weight'], w, 'a number');
      else {
        if (!Number.isInteger(w)) typeIssue(['backends', j, 'weight'], w, 'an integer');
        if (w < 0)
          issues.push({ path: ['backends', j, 'weight'], message: `${showValue(w)} is below the minimum 0` });
        if (w > BOUNDS.weight.max)
          issues.push({
            path: ['backends', j, 'weight'],
            message: `${showValue(w)} is above the maximum ${BOUNDS.weight.max}`,
          });
        weight = w;
      }
    }
    let drain: boolean = DEFAULTS.backend.drain;
    const d = b.drain;
    if (d !== undefined) {
      if (typeof d !== 'boolean') typeIssue(['backends', j, 'drain'], d, 'a boolean');
      else drain = d;
    }
    for (const key in b)
      if (!BACKEND_KEYS.has(key)) issues.push({ path: ['backends', j, key], message: 'is not a known key' });
    if (issues.length === before) backends.push({ input: a as string, address, family, weight, drain });
  }
  return { backends, issues };
}

const vipSchema = z
  .object({
    name: z.string().refine(
      (n) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(n),
      (n) => ({
        message: `${showValue(n)} is not a VIP name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
      }),
    ),
    address: ipString,
    port,
    protocol: z.enum(['tcp', 'udp']).default(DEFAULTS.vip.protocol),
    tableSize: z
      .number()
      .int()
      .default(DEFAULTS.vip.tableSize)
      .superRefine((m, ctx) => {
        if (m < 3 || m > MAGLEV_MAX_SIZE || !isPrime(m))
          ctx.addIssue({
            code: 'custom',
            message: `${showValue(m)} is not a prime between 3 and ${MAGLEV_MAX_SIZE}`,
          });
      }),
    persistence: z.enum(['none', 'source-ip']).default(DEFAULTS.vip.persistence),
    conntrack: z.boolean().default(DEFAULTS.vip.conntrack),
    healthCheck: healthCheckSchema.optional(),
    communities: z.array(communitySchema).default([]),
    largeCommunities: z.array(largeCommunitySchema).default([]),
    minHealthyBackends: z.number().int().min(1).max(65535).optional(),
    failOpen: z.boolean().default(DEFAULTS.vip.failOpen),
    // Elements are checked by checkBackends (the hot path: zod's cost per backend dominated big files).
    backends: z.array(z.unknown()).default([]),
  })
  .strict();

const configSchema = z
  .object({
    interface: z.string().refine(
      (n) => /^[^\s/:]{1,15}$/.test(n) && n !== '.' && n !== '..',
      (n) => ({
        message: `${showValue(n)} is not a network interface name (1-15 characters, no space, / or :)`,
      }),
    ),
    xdpMode: z.enum(['native', 'generic', 'auto']).default(DEFAULTS.xdpMode),
    nextHopMac: z
      .string()
      .refine(
        (m) => m === 'auto' || canonicalMac(m) !== null,
        (m) => ({
          message: `${showValue(m)} is not a MAC address (aa:bb:cc:dd:ee:ff) or "auto"`,
        }),
      )
      .default(DEFAULTS.nextHopMac),
    encapSource: z.union([z.string(), z.array(z.string()).min(1)]).default(DEFAULTS.encapSource),
    mtu: intIn(BOUNDS.mtu).default(DEFAULTS.mtu),
    admin: z
      .object({
        listen: z.string().default(DEFAULTS.admin.listen),
        perBackendMetrics: z.boolean().default(DEFAULTS.admin.perBackendMetrics),
      })
      .strict()
      .default({}),
    limits: z
      .object({
        maxVips: intIn(BOUNDS.maxVips).default(DEFAULTS.limits.maxVips),
        maxBackends: intIn(BOUNDS.maxBackends).default(DEFAULTS.limits.maxBackends),
        conntrackEntries: intIn(BOUNDS.conntrackEntries).default(DEFAULTS.limits.conntrackEntries),
      })
      .strict()
      .default({}),
    // The BGP engineer's schema validates this section (setBgpValidator); here it is only "present or not".
    bgp: z.unknown().optional(),
    kubernetes: z.unknown().optional(),
    conntrackTimeouts: z
      .object({
        tcp: intIn(BOUNDS.conntrackTimeout).default(DEFAULTS.conntrackTimeouts.tcp),
        udp: intIn(BOUNDS.conntrackTimeout).default(DEFAULTS.conntrackTimeouts.udp),
      })
      .strict()
      .default({}),
    vipBlackholeRoutes: z.boolean().default(DEFAULTS.vipBlackholeRoutes),
    // Each VIP is validated on its own (vipSchema), memoised: a reload re-checks only changed VIPs.
    vips: z.array(z.unknown()).default([]),
  })
  .strict();

type RawVip = z.infer<typeof vipSchema>;

/** "127.0.0.1:9470" or "[::1]:9470" to host and port; null if malformed. */
export function parseListen(text: string): ListenAddress | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const host = canonicalIp(m[1]!);
  const p = Number(m[2]);
  if (host === null || p > 65535) return null;
  return { host, port: p };
}

const familyName = (f: IpFamily): string => (f === 4 ? 'IPv4' : 'IPv6');

/** False when a canonical address cannot be special (specialAddress): most backends skip a second parse. */
function maybeSpecial(canon: string): boolean {
  if (canon.includes(':')) return canon.startsWith('::') || canon.startsWith('f');
  const first = Number(canon.slice(0, canon.indexOf('.')));
  return first === 0 || first === 127 || first === 169 || first >= 224;
}

// ---- per-VIP checks (shape + everything that depends on the VIP alone), memoised by content ----

type VipResult = { ok: true; vip: VipConfig; warnings: RelIssue[] } | { ok: false; issues: RelIssue[] };

function checkVip(input: unknown, encapFamilies: ReadonlySet<IpFamily> | null): VipResult {
  const parsed = vipSchema.safeParse(input);
  const rawBackends = parsed.success
    ? parsed.data.backends
    : (input as { backends?: unknown } | null)?.backends;
  const checked = Array.isArray(rawBackends) ? checkBackends(rawBackends) : { backends: [], issues: [] };
  if (!parsed.success || checked.issues.length > 0) {
    const fields: RelIssue[] = [];
    const unknown: RelIssue[] = [];
    if (!parsed.success)
      for (const zi of parsed.error.issues) {
        // zod's order: fields in schema order (backends last), then the VIP's own unknown keys.
        const own = zi.code === 'unrecognized_keys' && zi.path.length === 0;
        for (const i of fromZodIssues([zi], input))
          (own ? unknown : fields).push({ path: i.path === '' ? [] : [i.path], message: i.message });
      }
    return { ok: false, issues: [...fields, ...checked.issues, ...unknown] };
  }
  const vip: RawVip = parsed.data;
  const issues: RelIssue[] = [];
  const warnings: RelIssue[] = [];
  const vipIp = parseIp(vip.address)!;
  const address = formatIp(vipIp.bytes);
  const vipKind = specialAddress(vipIp.bytes);
  if (vipKind !== null)
    issues.push({
      path: ['address'],
      message: `${showValue(vip.address)} is ${describeSpecialAddress(vipKind)}, not a VIP address`,
    });
  const hc = vip.healthCheck;
  if (hc !== undefined) {
    if (hc.port === undefined && vip.port === 0)
      issues.push({
        path: ['healthCheck', 'port'],
        message: 'is required when the VIP port is 0 (every port)',
      });
    if (hc.path !== undefined && hc.type !== 'http')
      issues.push({
        path: ['healthCheck', 'path'],
        message: `${showValue(hc.path)} is set but only http checks use a path`,
      });
    if (hc.timeoutMs > hc.intervalMs)
      issues.push({
        path: ['healthCheck', 'timeoutMs'],
        message: `${hc.timeoutMs} is longer than intervalMs ${hc.intervalMs}`,
      });
    if (vip.protocol === 'udp' && hc.port === undefined)
      warnings.push({
        path: ['healthCheck'],
        message: `probes ${hc.type} port ${vip.port} of UDP backends; set healthCheck.port if the service has a TCP port`,
      });
  }
  const nBackends = checked.backends.length;
  if (nBackends > vip.tableSize)
    issues.push({
      path: ['tableSize'],
      message: `${vip.tableSize} is smaller than the ${nBackends} backends`,
    });
  else if (nBackends * 10 > vip.tableSize)
    warnings.push({
      path: ['tableSize'],
      message: `${vip.tableSize} is under 10 slots per backend (${nBackends} backends): balance will be uneven`,
    });
  const addrs = new Map<string, number>();
  const backends: BackendConfig[] = [];
  checked.backends.forEach((b, j) => {
    const path = ['backends', j, 'address'];
    const canon = b.address;
    const family = b.family;
    backends.push(Object.freeze({ address: canon, family, weight: b.weight, drain: b.drain }));
    const first = addrs.get(canon);
    if (first !== undefined)
      issues.push({ path, message: `${showValue(b.input)} duplicates backends[${first}]` });
    else addrs.set(canon, j);
    // Checked on the canonical text (cheap); only a special-looking one is parsed again.
    const kind = maybeSpecial(canon) ? specialAddress(parseIp(canon)!.bytes) : null;
    if (kind !== null)
      issues.push({
        path,
        message: `${showValue(b.input)} is ${describeSpecialAddress(kind)}, not a backend address`,
      });
    else if (canon === address)
      issues.push({ path, message: `${showValue(b.input)} is the VIP's own address` });
    // IPv4 packets travel in IPv4 or IPv6 (4in6); IPv6 cannot travel in IPv4.
    if (family === 4 && vipIp.family === 6)
      issues.push({
        path,
        message:
          `${showValue(b.input)} is IPv4 but the VIP is IPv6 (IPv6 is not carried in IPv4: an IPv6 VIP ` +
          'needs IPv6 backends; an IPv4 VIP may have both)',
      });
    else if (encapFamilies !== null && !encapFamilies.has(family))
      issues.push({
        path,
        message:
          `${showValue(b.input)} is ${familyName(family)} but encapSource has no ${familyName(family)} ` +
          `address (no ${family === 6 ? 'v6' : 'v4'} support)`,
      });
  });
  if (issues.length > 0) return { ok: false, issues };
  const config: VipConfig = {
    name: vip.name,
    address,
    family: vipIp.family,
    port: vip.port,
    protocol: vip.protocol,
    tableSize: vip.tableSize,
    persistence: vip.persistence,
    conntrack: vip.conntrack,
    healthCheck:
      hc === undefined
        ? null
        : Object.freeze({
            type: hc.type,
            port: hc.port ?? vip.port,
            path: hc.path ?? DEFAULTS.healthCheck.path,
            intervalMs: hc.intervalMs,
            timeoutMs: hc.timeoutMs,
            rise: hc.rise,
            fall: hc.fall,
            downGraceSeconds: hc.downGraceSeconds,
          }),
    backends: Object.freeze(backends) as BackendConfig[],
    communities: Object.freeze([...new Set(vip.communities)].sort()) as string[],
    largeCommunities: Object.freeze([...new Set(vip.largeCommunities)].sort()) as string[],
    minHealthyBackends: vip.minHealthyBackends ?? null,
    failOpen: vip.failOpen,
  };
  return { ok: true, vip: Object.freeze(config), warnings };
}

/** Memo of checkVip by (content, encap families); keeps entries used by the last two validations. */
const vipMemo = { current: new Map<string, VipResult>(), previous: new Map<string, VipResult>() };

function checkVipMemo(input: unknown, encapFamilies: ReadonlySet<IpFamily> | null): VipResult {
  let key: string;
  try {
    // NaN, Infinity and -Infinity (YAML .nan, .inf, -.inf) kept apart: JSON would make each of them null.
    const text = JSON.stringify(input, (_k, x: unknown) =>
      typeof x === 'number' && !Number.isFinite(x) ? `\u0000${x}` : x,
    );
    key = `${encapFamilies === null ? '*' : [...encapFamilies].sort().join('')}|${text}`;
  } catch {
    return checkVip(input, encapFamilies);
  }
  const hit = vipMemo.current.get(key) ?? vipMemo.previous.get(key);
  const r = hit ?? checkVip(input, encapFamilies);
  vipMemo.current.set(key, r);
  return r;
}

// ---- whole-file checks ----

/** Validates an already-parsed document (a plain object from YAML/JSON/another source). Config objects are frozen per VIP. */
export function validateConfig(input: unknown): ParseResult {
  if (input === null || typeof input !== 'object' || Array.isArray(input))
    return {
      ok: false,
      errors: [{ path: '', message: `${showValue(input)} is not a mapping of config keys` }],
    };
  const parsed = configSchema.safeParse(input);
  const issues: ConfigIssue[] = parsed.success ? [] : fromZodIssues(parsed.error.issues, input);
  const rawVips = (input as { vips?: unknown }).vips;
  if (!parsed.success && !Array.isArray(rawVips)) return { ok: false, errors: issues };
  const raw = parsed.success ? parsed.data : null;
  const warnings: ConfigIssue[] = [];
  const add = (path: Path, message: string): void => {
    issues.push({ path: formatPath(path), message });
  };

  if (raw !== null && parseListen(raw.admin.listen) === null)
    add(
      ['admin', 'listen'],
      `${showValue(raw.admin.listen)} is not an address:port (e.g. 127.0.0.1:9470 or [::1]:9470)`,
    );

  let encap: 'auto' | IpPrefix[] = 'auto';
  let encapFamilies: Set<IpFamily> | null = null;
  if (raw !== null && (Array.isArray(raw.encapSource) || raw.encapSource !== 'auto')) {
    const list = Array.isArray(raw.encapSource) ? raw.encapSource : [raw.encapSource];
    const seen = new Map<IpFamily, number>();
    const before = issues.length;
    const prefixes: IpPrefix[] = [];
    list.forEach((text, i) => {
      const path = Array.isArray(raw.encapSource) ? ['encapSource', i] : ['encapSource'];
      const p = parsePrefix(text);
      if (p === null)
        return add(path, `${showValue(text)} is not an IP address or prefix (e.g. 10.0.0.0/24)`);
      const first = seen.get(p.family);
      if (first !== undefined)
        return add(
          path,
          `${showValue(text)} is a second ${familyName(p.family)} source (encapSource[${first}])`,
        );
      seen.set(p.family, i);
      const kind = specialAddress(parseIp(p.prefix)!.bytes);
      if (kind !== null)
        return add(path, `${showValue(text)} is ${describeSpecialAddress(kind)}, not a source address`);
      prefixes.push(p);
    });
    encap = prefixes;
    // With a bad encapSource entry, family support is unknown: report only the entry.
    if (issues.length === before) encapFamilies = new Set(prefixes.map((p) => p.family));
  }

  vipMemo.previous = vipMemo.current;
  vipMemo.current = new Map();
  const checked: (VipConfig | null)[] = [];
  const list = Array.isArray(rawVips) ? rawVips : [];
  list.forEach((v, i) => {
    const r = checkVipMemo(v, encapFamilies);
    checked.push(r.ok ? r.vip : null);
    if (!r.ok) for (const x of r.issues) add(['vips', i, ...x.path], x.message);
    else {
      for (const w of r.warnings)
        warnings.push({ path: formatPath(['vips', i, ...w.path]), message: w.message });
    }
  });
  // Cross-VIP checks run over the VIPs that passed their own checks, so one pass lists every error.
  const names = new Map<string, number>();
  const keys = new Map<string, number>();
  checked.forEach((vip, i) => {
    if (vip === null) return;
    const firstName = names.get(vip.name);
    if (firstName !== undefined)
      add(['vips', i, 'name'], `${showValue(vip.name)} duplicates vips[${firstName}].name`);
    else names.set(vip.name, i);
    const key = `${vip.address}|${vip.port}|${vip.protocol}`;
    const firstKey = keys.get(key);
    if (firstKey !== undefined)
      add(['vips', i], `${vip.address} port ${vip.port} ${vip.protocol} duplicates vips[${firstKey}]`);
    else keys.set(key, i);
  });
  const vips = checked.filter((v): v is VipConfig => v !== null);
  if (raw === null || vips.length !== list.length) return { ok: false, errors: issues };

  if (vips.length > raw.limits.maxVips)
    add(['vips'], `has ${vips.length} VIPs, more than limits.maxVips ${raw.limits.maxVips}`);
  const memberships = vips.reduce((n, v) => n + v.backends.length, 0);
  // Backend id 0 means "no backend", so maxBackends - 1 memberships fit.
  if (memberships > raw.limits.maxBackends - 1)
    add(
      ['vips'],
      `has ${memberships} backends in all, more than limits.maxBackends - 1 = ${raw.limits.maxBackends - 1}`,
    );
  let bgp = raw.bgp;
  if (bgp !== undefined && bgpValidator !== null) {
    const r = bgpValidator(bgp);
    if (r.ok) bgp = r.value;
    else
      for (const issue of r.issues)
        issues.push({
          path: issue.path === '' ? 'bgp' : `bgp.${issue.path}`.replace('.[', '['),
          message: issue.message,
        });
  }
  let kubernetes = raw.kubernetes;
  if (kubernetes !== undefined && kubernetesValidator !== null) {
    const r = kubernetesValidator(kubernetes);
    if (r.ok) kubernetes = r.value;
    else
      for (const issue of r.issues)
        issues.push({
          path: issue.path === '' ? 'kubernetes' : `kubernetes.${issue.path}`.replace('.[', '['),
          message: issue.message,
        });
  }
  if (issues.length > 0) return { ok: false, errors: issues };
  const config: Config = {
    interface: raw.interface,
    xdpMode: raw.xdpMode,
    nextHopMac: raw.nextHopMac === 'auto' ? 'auto' : canonicalMac(raw.nextHopMac)!,
    encapSource: encap,
    mtu: raw.mtu,
    admin: { listen: parseListen(raw.admin.listen)!, perBackendMetrics: raw.admin.perBackendMetrics },
    limits: { ...raw.limits },
    ...(bgp === undefined ? {} : { bgp }),
    ...(kubernetes === undefined ? {} : { kubernetes }),
    conntrackTimeouts: { ...raw.conntrackTimeouts },
    vipBlackholeRoutes: raw.vipBlackholeRoutes,
    vips,
  };
  return { ok: true, config, warnings };
}

/** Facts about this host that some checks need: only the daemon knows them (at start and on reload). */
export interface HostFacts {
  /** config.interface. */
  interface: string;
  /** The interface's addresses. */
  addresses: readonly string[];
}

/**
 * Checks of a validated config against the host, in validateConfig's style (path, value, why): a VIP that is
 * an address of the balancer's interface (the balancer would take the node's own traffic: BGP, health-check
 * replies) or a backend that is (the balancer would send the VIP's traffic to itself).
 */
export function hostIssues(config: Config, host: HostFacts): ConfigIssue[] {
  const own = new Set(host.addresses.map(canonicalIp).filter((a): a is string => a !== null));
  const issues: ConfigIssue[] = [];
  if (own.size === 0) return issues;
  const mine = `an address of this node's interface ${host.interface}`;
  config.vips.forEach((v, i) => {
    if (own.has(v.address))
      issues.push({
        path: formatPath(['vips', i, 'address']),
        message: `${showValue(v.address)} is ${mine} (the balancer would take the node's own traffic)`,
      });
    v.backends.forEach((b, j) => {
      if (own.has(b.address))
        issues.push({
          path: formatPath(['vips', i, 'backends', j, 'address']),
          message: `${showValue(b.address)} is ${mine} (the balancer would send the VIP's traffic to itself)`,
        });
    });
  });
  return issues;
}

/**
 * Parses and validates a YAML or JSON document; a bad file is rejected whole, with every error listed. The text
 * is parsed within DOCUMENT_BOUNDS (nesting, YAML aliases, values); its size is the reader's to bound.
 */
export function parseConfig(text: string, opts: { format: ConfigFormat }): ParseResult {
  if (opts.format !== 'json' && opts.format !== 'yaml')
    return {
      ok: false,
      errors: [{ path: '', message: `format ${showValue(opts.format)} is not yaml or json` }],
    };
  const doc = parseDocumentText(text, opts.format);
  return doc.ok ? validateConfig(doc.value) : doc;
}
