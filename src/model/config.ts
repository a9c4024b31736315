// Config validation entry: a validator object (its per-VIP memo), validateConfig(value), parseConfig(text).
import { createHash } from 'node:crypto';
import type { BgpConfig } from './bgp';
import { ConfigIssue, formatPath, showValue } from './errors';
import { parseTolerant } from './unknown-keys';
import { parseDocumentText } from './document';
import {
  canonicalMac,
  describeSpecialAddress,
  IpFamily,
  IpPrefix,
  parseIp,
  parsePrefix,
  specialAddress,
} from './ip';
import type { Path } from './backends';
import { configSchema, parseListen, RawConfig } from './schema';
import { checkBgpSection, checkKubernetesSection, checkNodesSection, underSection } from './sections';
import type { NodeEntry } from './nodes';
import type { Config, ConfigFormat, ParseResult, VipConfig } from './types';
import { checkVip, familyName, VipIdentity, VipResult } from './vip';

export * from './types';
export { checkBackends, type CheckedBackend, type RelIssue } from './backends';
export { hostIssues, type HostFacts } from './host';
export { parseListen } from './schema';

/**
 * Validates configs one after another. It remembers each VIP's result by content for two validations, so a
 * reload re-checks only changed VIPs and an unchanged VIP keeps its frozen object (which reconcile's memo
 * keys on). The memo changes speed and object identity only, never a result.
 */
export interface ParseOptions {
  format: ConfigFormat;
  /** Called with the parsed document before it is validated (it must not change it). */
  onDocument?: (doc: unknown) => void;
}

export class ConfigValidator {
  #current = new Map<string, VipResult>();
  #previous = new Map<string, VipResult>();

  /** Validates an already-parsed document (a plain object from YAML/JSON/another source). Config objects are frozen per VIP. */
  validate(input: unknown): ParseResult {
    if (input === null || typeof input !== 'object' || Array.isArray(input))
      return {
        ok: false,
        errors: [{ path: '', message: `${showValue(input)} is not a mapping of config keys` }],
      };
    // Unknown keys are reported without hiding anything: the checks below run on the file without them.
    const parsed = parseTolerant(configSchema, input);
    const issues: ConfigIssue[] = [...parsed.issues];
    const rawVips = (input as { vips?: unknown }).vips;
    // The sections depend on nothing else in the file: checked whatever else is wrong, reported last.
    const sections = checkSections(input as { bgp?: unknown; kubernetes?: unknown; nodes?: unknown });
    const fail = (): ParseResult => ({ ok: false, errors: [...issues, ...sections.issues] });
    if (parsed.data === null && !Array.isArray(rawVips)) return fail();
    const raw = parsed.data;
    const warnings: ConfigIssue[] = [];
    const add = (path: Path, message: string): void => {
      issues.push({ path: formatPath(path), message });
    };

    if (raw !== null && parseListen(raw.admin.listen) === null)
      add(
        ['admin', 'listen'],
        `${showValue(raw.admin.listen)} is not an address:port (e.g. 127.0.0.1:9470 or [::1]:9470)`,
      );
    const metricsListen = raw?.admin.metricsListen;
    if (metricsListen !== undefined && parseListen(metricsListen) === null)
      add(
        ['admin', 'metricsListen'],
        `${showValue(metricsListen)} is not an address:port (e.g. 0.0.0.0:9471 or [::]:9471)`,
      );

    const { encap, encapFamilies } =
      raw === null ? { encap: 'auto' as const, encapFamilies: null } : checkEncapSource(raw, add);
    this.#previous = this.#current;
    this.#current = new Map();
    const checked: (VipConfig | null)[] = [];
    const identities: VipIdentity[] = [];
    const list = Array.isArray(rawVips) ? rawVips : [];
    list.forEach((v, i) => {
      const r = this.checkVipMemo(v, encapFamilies);
      // A VIP whose only issues are unknown keys still counts towards the limits below.
      checked.push(r.ok ? r.vip : (r.vip ?? null));
      identities.push(r.identity);
      if (!r.ok) for (const x of r.issues) add(['vips', i, ...x.path], x.message);
      else {
        for (const w of r.warnings)
          warnings.push({ path: formatPath(['vips', i, ...w.path]), message: w.message });
      }
    });
    // Cross-VIP checks run over every VIP whose name (or address, port and protocol) parsed, whatever its
    // other errors, so one pass lists every error.
    const names = new Map<string, number>();
    const keys = new Map<string, number>();
    identities.forEach(({ name, key }, i) => {
      if (name !== null) {
        const firstName = names.get(name);
        if (firstName !== undefined)
          add(['vips', i, 'name'], `${showValue(name)} duplicates vips[${firstName}].name`);
        else names.set(name, i);
      }
      if (key === null) return;
      const text = `${key.address}|${key.port}|${key.protocol}`;
      const firstKey = keys.get(text);
      if (firstKey !== undefined)
        add(['vips', i], `${key.address} port ${key.port} ${key.protocol} duplicates vips[${firstKey}]`);
      else keys.set(text, i);
    });
    const vips = checked.filter((v): v is VipConfig => v !== null);
    if (raw === null || vips.length !== list.length) return fail();

    if (vips.length > raw.limits.maxVips)
      add(['vips'], `has ${vips.length} VIPs, more than limits.maxVips ${raw.limits.maxVips}`);
    const memberships = vips.reduce((n, v) => n + v.backends.length, 0);
    // Backend id 0 means "no backend", so maxBackends - 1 memberships fit.
    if (memberships > raw.limits.maxBackends - 1)
      add(
        ['vips'],
        `has ${memberships} backends in all, more than limits.maxBackends - 1 = ${raw.limits.maxBackends - 1}`,
      );
    const bgp = sections.bgp;
    if (issues.length > 0 || sections.issues.length > 0) return fail();
    const config: Config = {
      interface: raw.interface,
      xdpMode: raw.xdpMode,
      nextHopMac: raw.nextHopMac === 'auto' ? 'auto' : canonicalMac(raw.nextHopMac)!,
      encapSource: encap,
      mtu: raw.mtu,
      admin: {
        listen: parseListen(raw.admin.listen)!,
        perBackendMetrics: raw.admin.perBackendMetrics,
        ...(raw.admin.tokenFile === undefined ? {} : { tokenFile: raw.admin.tokenFile }),
        ...(metricsListen === undefined ? {} : { metricsListen: parseListen(metricsListen)! }),
      },
      limits: { ...raw.limits },
      ...(bgp === undefined ? {} : { bgp }),
      ...(raw.kubernetes === undefined ? {} : { kubernetes: raw.kubernetes }),
      conntrackTimeouts: { ...raw.conntrackTimeouts },
      vipBlackholeRoutes: raw.vipBlackholeRoutes,
      encap: { ...raw.encap },
      secondChance: { ...raw.secondChance },
      vips,
      ...(sections.nodes === undefined ? {} : { nodes: sections.nodes }),
    };
    return { ok: true, config, warnings };
  }

  private checkVipMemo(input: unknown, encapFamilies: ReadonlySet<IpFamily> | null): VipResult {
    let key: string;
    try {
      // NaN, Infinity and -Infinity (YAML .nan, .inf, -.inf) kept apart: JSON would make each of them null.
      const text = JSON.stringify(input, (_k, x: unknown) =>
        typeof x === 'number' && !Number.isFinite(x) ? `\u0000${x}` : x,
      );
      // Its digest, not the text (~27 bytes per backend, two generations kept: ~28 MB at 512 x 1000).
      key = createHash('sha256')
        .update(`${encapFamilies === null ? '*' : [...encapFamilies].sort().join('')}|${text}`)
        .digest('base64url');
    } catch {
      return checkVip(input, encapFamilies);
    }
    const hit = this.#current.get(key) ?? this.#previous.get(key);
    const r = hit ?? checkVip(input, encapFamilies);
    this.#current.set(key, r);
    return r;
  }

  /**
   * Parses and validates a YAML or JSON document; a bad file is rejected whole, with every error listed. The
   * text is parsed within DOCUMENT_BOUNDS (nesting, YAML aliases, values); its size is the reader's to bound.
   */
  parse(text: string, opts: ParseOptions): ParseResult {
    if (opts.format !== 'json' && opts.format !== 'yaml')
      return {
        ok: false,
        errors: [{ path: '', message: `format ${showValue(opts.format)} is not yaml or json` }],
      };
    const doc = parseDocumentText(text, opts.format);
    if (!doc.ok) return doc;
    opts.onDocument?.(doc.value);
    return this.validate(doc.value);
  }
}

/** The bgp, kubernetes and nodes sections of a document, each checked by its own schema. */
function checkSections(input: { bgp?: unknown; kubernetes?: unknown; nodes?: unknown }): {
  bgp: BgpConfig | undefined;
  nodes: NodeEntry[] | undefined;
  issues: ConfigIssue[];
} {
  const issues: ConfigIssue[] = [];
  let bgp: BgpConfig | undefined;
  let nodes: NodeEntry[] | undefined;
  if (input.bgp !== undefined) {
    const r = checkBgpSection(input.bgp, { perNode: input.nodes !== undefined });
    if (r.ok) bgp = r.value;
    else issues.push(...underSection('bgp', r.issues));
  }
  if (input.kubernetes !== undefined) {
    const r = checkKubernetesSection(input.kubernetes);
    if (!r.ok) issues.push(...underSection('kubernetes', r.issues));
  }
  if (input.nodes !== undefined) {
    const r = checkNodesSection(input.nodes, { bgp: input.bgp !== undefined });
    if (r.ok) nodes = r.value;
    else issues.push(...underSection('nodes', r.issues));
  }
  return { bgp, nodes, issues };
}

/** encapSource as written ("auto", or at most one prefix per family) and the families it provides (null: unknown). */
function checkEncapSource(
  raw: RawConfig,
  add: (path: Path, message: string) => void,
): { encap: 'auto' | IpPrefix[]; encapFamilies: Set<IpFamily> | null } {
  if (!Array.isArray(raw.encapSource) && raw.encapSource === 'auto')
    return { encap: 'auto', encapFamilies: null };
  const list = Array.isArray(raw.encapSource) ? raw.encapSource : [raw.encapSource];
  const seen = new Map<IpFamily, number>();
  let bad = false;
  const prefixes: IpPrefix[] = [];
  list.forEach((text, i) => {
    const path = Array.isArray(raw.encapSource) ? ['encapSource', i] : ['encapSource'];
    const fail = (message: string): void => {
      bad = true;
      add(path, message);
    };
    const p = parsePrefix(text);
    if (p === null) return fail(`${showValue(text)} is not an IP address or prefix (e.g. 10.0.0.0/24)`);
    const first = seen.get(p.family);
    if (first !== undefined)
      return fail(`${showValue(text)} is a second ${familyName(p.family)} source (encapSource[${first}])`);
    seen.set(p.family, i);
    const kind = specialAddress(parseIp(p.prefix)!.bytes);
    if (kind !== null)
      return fail(`${showValue(text)} is ${describeSpecialAddress(kind)}, not a source address`);
    prefixes.push(p);
  });
  // With a bad encapSource entry, family support is unknown: report only the entry.
  return { encap: prefixes, encapFamilies: bad ? null : new Set(prefixes.map((p) => p.family)) };
}

/** The validator behind validateConfig and parseConfig (the library's and the file source's). */
const shared = new ConfigValidator();

/** Validates an already-parsed document (a plain object from YAML/JSON/another source). Config objects are frozen per VIP. */
export function validateConfig(input: unknown): ParseResult {
  return shared.validate(input);
}

/**
 * Parses and validates a YAML or JSON document; a bad file is rejected whole, with every error listed. The text
 * is parsed within DOCUMENT_BOUNDS (nesting, YAML aliases, values); its size is the reader's to bound.
 */
export function parseConfig(text: string, opts: ParseOptions): ParseResult {
  return shared.parse(text, opts);
}
