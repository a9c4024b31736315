// Checks of one VIP on its own: shape (schema and backends), addresses, health check, table size, families.
import { checkBackends, RelIssue } from './backends';
import { DEFAULTS } from './defaults';
import { fromZodIssues, showValue } from './errors';
import { describeSpecialAddress, formatIp, IpFamily, parseIp, specialAddress } from './ip';
import { RawVip, vipSchema } from './schema';
import { parseTolerant } from './unknown-keys';
import type { BackendConfig, VipConfig } from './types';

export const familyName = (f: IpFamily): string => (f === 4 ? 'IPv4' : 'IPv6');

/** Maglev slots per backend below which a table spreads flows unevenly (a warning: the table still works). */
export const MIN_SLOTS_PER_BACKEND = 10;

/** How `nBackends` fit a table of `tableSize` slots: 'too-small' (more backends than slots: refused), 'uneven'
 * (under MIN_SLOTS_PER_BACKEND each: warned) or null (file VIPs and Kubernetes Services alike). */
export function tableFit(nBackends: number, tableSize: number): 'too-small' | 'uneven' | null {
  if (nBackends > tableSize) return 'too-small';
  return nBackends * MIN_SLOTS_PER_BACKEND > tableSize ? 'uneven' : null;
}

/** False when a canonical address cannot be special (specialAddress): most backends skip a second parse. */
function maybeSpecial(canon: string): boolean {
  if (canon.includes(':')) return canon.startsWith('::') || canon.startsWith('f');
  const first = Number(canon.slice(0, canon.indexOf('.')));
  return first === 0 || first === 127 || first === 169 || first >= 224;
}

/** What the cross-VIP checks compare (duplicate name, duplicate address/port/protocol); null fields did not parse. */
export interface VipIdentity {
  name: string | null;
  /** address, port and protocol together: null unless all three parsed. */
  key: { address: string; port: number; protocol: 'tcp' | 'udp' } | null;
}

export type VipResult =
  | { ok: true; vip: VipConfig; warnings: RelIssue[]; identity: VipIdentity }
  /** `vip`: the VIP as it would be without its unknown keys, when they are its only issues. */
  | { ok: false; issues: RelIssue[]; vip?: VipConfig; identity: VipIdentity };

/**
 * The identity of a VIP from its raw input, each field parsed on its own with the VIP schema's field rules: a
 * VIP with errors elsewhere (a bad backend weight) still takes part in the cross-VIP checks.
 */
export function vipIdentity(input: unknown): VipIdentity {
  const o = (input !== null && typeof input === 'object' ? input : {}) as Record<string, unknown>;
  const f = vipSchema.shape;
  const name = f.name.safeParse(o.name);
  const address = f.address.safeParse(o.address);
  const port = f.port.safeParse(o.port);
  const protocol = f.protocol.safeParse(o.protocol);
  const ip = address.success ? parseIp(address.data) : null;
  return {
    name: name.success ? name.data : null,
    key:
      ip !== null && port.success && protocol.success
        ? { address: formatIp(ip.bytes), port: port.data, protocol: protocol.data }
        : null,
  };
}

/** A VIP's own checks; `encapFamilies`: the families encapSource provides (null: unknown or auto). */
export function checkVip(input: unknown, encapFamilies: ReadonlySet<IpFamily> | null): VipResult {
  const identity = vipIdentity(input);
  // Unknown keys alone leave the data (parseTolerant): the VIP's other checks still run and report too.
  const parsed = parseTolerant(vipSchema, input);
  const rawBackends =
    parsed.data !== null ? parsed.data.backends : (input as { backends?: unknown } | null)?.backends;
  const checked = Array.isArray(rawBackends)
    ? checkBackends(rawBackends)
    : { backends: [], issues: [], complete: true };
  const fields: RelIssue[] = [];
  const unknown: RelIssue[] = [];
  parsed.zodIssues.forEach((zi) => {
    // zod's order: fields in schema order (backends last), then the VIP's own unknown keys.
    const own = zi.code === 'unrecognized_keys' && zi.path.length === 0;
    const n = zi.code === 'unrecognized_keys' ? zi.keys.length : fromZodIssues([zi], input).length;
    for (const i of parsed.issues.splice(0, n))
      (own ? unknown : fields).push({ path: i.path === '' ? [] : [i.path], message: i.message });
  });
  if (parsed.data === null || !checked.complete)
    return { ok: false, issues: [...fields, ...checked.issues, ...unknown], identity };
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
  const fit = tableFit(nBackends, vip.tableSize);
  if (fit === 'too-small')
    issues.push({
      path: ['tableSize'],
      message: `${vip.tableSize} is smaller than the ${nBackends} backends`,
    });
  else if (fit === 'uneven')
    warnings.push({
      path: ['tableSize'],
      message: `${vip.tableSize} is under ${MIN_SLOTS_PER_BACKEND} slots per backend (${nBackends} backends): balance will be uneven`,
    });
  const addrs = new Map<string, number>();
  const backends: BackendConfig[] = [];
  checked.backends.forEach((b, j) => {
    const path = ['backends', j, 'address'];
    const canon = b.address;
    const family = b.family;
    const encap = b.encap ?? vip.encap;
    backends.push(Object.freeze({ address: canon, family, weight: b.weight, drain: b.drain, encap }));
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
  // Forcing stateless over IPIP backends is allowed (an operator's choice), but their moved flows get no
  // second chance: say so.
  if (vip.stateless === true) {
    const ipip = backends.flatMap((b, j) => (b.encap === 'ipip' ? [j] : []));
    if (ipip.length > 0)
      warnings.push({
        path: ['stateless'],
        message:
          `true but ${ipip.length} backend(s) use ipip (backends[${ipip.slice(0, 3).join('], backends[')}]` +
          `${ipip.length > 3 ? ', ...' : ''}): without a connection table their flows break when the table or ` +
          'the LB node changes (no second chance without GUE and our decap)',
      });
    // UDP has no SYN to tell a new flow from a moved one: no hint, no second chance, whatever the encap
    if (vip.protocol === 'udp')
      warnings.push({
        path: ['stateless'],
        message:
          'true on a udp VIP: UDP packets carry no previous-owner hint and get no second chance, so without a ' +
          'connection table every backend or LB node change moves about 1/N of its live flows ("auto" keeps ' +
          'the table for udp)',
      });
  }
  // fields here are unknown keys of nested objects (healthCheck.x): any other field issue leaves no data.
  const failures = [...fields, ...checked.issues, ...issues, ...unknown];
  if (issues.length > 0) return { ok: false, issues: failures, identity };
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
    encap: vip.encap,
    stateless: vip.stateless,
  };
  if (failures.length > 0) return { ok: false, issues: failures, vip: Object.freeze(config), identity };
  return { ok: true, vip: Object.freeze(config), warnings, identity };
}
