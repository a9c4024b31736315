// Per-node settings: the `nodes` section (label selectors as Kubernetes defines them, per-node overrides) and the
// pure resolution of one node's settings from a validated config and the node's name and labels.
import { z } from 'zod';
import { asnSchema, BgpConfig, BgpPeerConfig, ipv4Schema, peerSchema, peersListedTwice } from './bgp';
import { ConfigIssue, formatPath, showValue } from './errors';
import {
  canonicalMac,
  describeSpecialAddress,
  IpFamily,
  IpPrefix,
  parseIp,
  parsePrefix,
  specialAddress,
} from './ip';
import { interfaceNameSchema, nextHopMacSchema } from './schema';
import type { Config } from './types';

/** A label name: 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends (Kubernetes' qualified name part). */
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** A DNS subdomain (RFC 1123), the optional prefix of a label key. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `key` is not a Kubernetes label key ("prefix/name" or "name"), or null when it is one. */
export function labelKeyProblem(key: string): string | null {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? null : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== null && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)))
    return `${showValue(key)} is not a label key: its prefix is not a DNS subdomain (lower case, at most 253)`;
  if (!LABEL_NAME.test(name))
    return `${showValue(key)} is not a label key (1-63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends, optional DNS prefix/)`;
  return null;
}

/** Why `value` is not a Kubernetes label value (empty, or a label name), or null when it is one. */
export function labelValueProblem(value: string): string | null {
  return value === '' || LABEL_NAME.test(value)
    ? null
    : `${showValue(value)} is not a label value (empty, or 1-63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)`;
}

const labelKey = z.string().superRefine((k, ctx) => {
  const p = labelKeyProblem(k);
  if (p !== null) ctx.addIssue({ code: 'custom', message: p });
});
const labelValue = z.string().superRefine((v, ctx) => {
  const p = labelValueProblem(v);
  if (p !== null) ctx.addIssue({ code: 'custom', message: p });
});

/** One requirement of a selector (Kubernetes LabelSelectorRequirement). */
export const matchExpressionSchema = z
  .object({
    key: labelKey,
    operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
    values: z.array(labelValue).optional(),
  })
  .strict()
  .superRefine((e, ctx) => {
    const n = e.values?.length ?? 0;
    // As the API server validates a LabelSelector: In/NotIn need values, Exists/DoesNotExist take none.
    if ((e.operator === 'In' || e.operator === 'NotIn') && n === 0)
      ctx.addIssue({
        code: 'custom',
        path: ['values'],
        message: `operator ${e.operator} needs at least one value`,
      });
    if ((e.operator === 'Exists' || e.operator === 'DoesNotExist') && n > 0)
      ctx.addIssue({
        code: 'custom',
        path: ['values'],
        message: `operator ${e.operator} takes no values (got ${showValue(e.values)})`,
      });
  });

/** A Kubernetes LabelSelector: every matchLabels pair and every expression must hold; empty matches every node. */
export const nodeSelectorSchema = z
  .object({
    matchLabels: z.record(labelKey, labelValue).default({}),
    matchExpressions: z.array(matchExpressionSchema).default([]),
  })
  .strict();

/** An outer source address or prefix of one family (as encapSource takes them). */
function outerSourceOf(family: IpFamily) {
  return z.string().superRefine((text, ctx) => {
    const p = parsePrefix(text);
    if (p === null)
      return ctx.addIssue({
        code: 'custom',
        message: `${showValue(text)} is not an IP address or prefix (e.g. 10.0.0.0/24)`,
      });
    if (p.family !== family)
      return ctx.addIssue({ code: 'custom', message: `${showValue(text)} is not an IPv${family} address` });
    const kind = specialAddress(parseIp(p.prefix)!.bytes);
    if (kind !== null)
      ctx.addIssue({
        code: 'custom',
        message: `${showValue(text)} is ${describeSpecialAddress(kind)}, not a source address`,
      });
  });
}

/** One entry of `nodes`: which nodes (selector; omitted: every node) and what they override. */
export const nodeEntrySchema = z
  .object({
    nodeSelector: nodeSelectorSchema.optional(),
    /** The balanced interface on these nodes (top-level `interface`). */
    interface: interfaceNameSchema.optional(),
    /** Our AS number on these nodes (bgp.asn). */
    asn: asnSchema.optional(),
    /** The BGP identifier on these nodes (bgp.routerId): an IPv4 address or "auto". */
    routerId: z.union([ipv4Schema, z.literal('auto')]).optional(),
    /** The router's MAC on these nodes (top-level `nextHopMac`). */
    nextHopMac: nextHopMacSchema.optional(),
    /** Outer (encapsulation) source per family on these nodes (top-level `encapSource`). */
    outerSource: z
      .object({ ipv4: outerSourceOf(4).optional(), ipv6: outerSourceOf(6).optional() })
      .strict()
      .optional(),
    /** BGP peers of these nodes, added to bgp.peers and to the peers of every other matching entry. */
    peers: z
      .array(peerSchema)
      .superRefine((peers, ctx) => peersListedTwice(peers, ctx, []))
      .optional(),
  })
  .strict();

export const nodesSectionSchema = z.array(nodeEntrySchema);

export type MatchExpression = z.infer<typeof matchExpressionSchema>;
export type NodeSelector = z.infer<typeof nodeSelectorSchema>;
export type NodeEntry = z.infer<typeof nodeEntrySchema>;

/** Who this node is: its name and its labels (the Node object's, or --node-labels on a bare host). */
export interface NodeIdentity {
  name: string;
  labels: Readonly<Record<string, string>>;
}

/** Whether a selector selects a node with these labels (omitted or empty: every node), as Kubernetes decides. */
export function selectorMatches(
  selector: NodeSelector | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  if (selector === undefined) return true;
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(labels, k);
  for (const [k, v] of Object.entries(selector.matchLabels)) if (!has(k) || labels[k] !== v) return false;
  return selector.matchExpressions.every((e) => {
    switch (e.operator) {
      case 'In':
        return has(e.key) && (e.values ?? []).includes(labels[e.key]!);
      // A node without the key satisfies NotIn (Kubernetes' labels.Selector semantics).
      case 'NotIn':
        return !has(e.key) || !(e.values ?? []).includes(labels[e.key]!);
      case 'Exists':
        return has(e.key);
      case 'DoesNotExist':
        return !has(e.key);
    }
  });
}

/** The settings one node runs with: the top level, overridden by each matching entry in order. */
export interface NodeSettings {
  node: string;
  /** Indexes of the nodes[] entries that select this node, in order. */
  matched: number[];
  interface: string;
  /** Canonical MAC or 'auto'. */
  nextHopMac: string;
  encapSource: 'auto' | IpPrefix[];
  /** Null: no bgp section. */
  bgp: { asn: number; routerId: string; peers: BgpPeerConfig[] } | null;
}

export type NodeResolution = { settings: NodeSettings } | { errors: ConfigIssue[] };

/** Per family: 'auto' (the interface's address), a prefix, or none. */
type FamilySource = 'auto' | IpPrefix | null;

const peerKey = (p: BgpPeerConfig): string => `${p.address}|${p.port}`;
const peerText = (p: BgpPeerConfig): string =>
  p.address.includes(':') ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`;

/**
 * One node's settings from a validated config: entries that select the node apply in order, each field set by a
 * later entry replacing an earlier one (and the top level); peers are the union of bgp.peers and every matching
 * entry's peers, a peer listed again unchanged counted once. Errors name the field: two different definitions of
 * one peer (address and port), no peer at all while bgp is on, an outer source for one family while the other
 * stays "auto". Pure.
 */
export function resolveNodeSettings(config: Config, node: NodeIdentity): NodeResolution {
  const errors: ConfigIssue[] = [];
  const entries = config.nodes ?? [];
  const matched = entries.flatMap((e, i) => (selectorMatches(e.nodeSelector, node.labels) ? [i] : []));
  let ifname = config.interface;
  let nextHopMac = config.nextHopMac;
  const fam: Record<'ipv4' | 'ipv6', FamilySource> =
    config.encapSource === 'auto'
      ? { ipv4: 'auto', ipv6: 'auto' }
      : {
          ipv4: config.encapSource.find((p) => p.family === 4) ?? null,
          ipv6: config.encapSource.find((p) => p.family === 6) ?? null,
        };
  /** Where each family's outer source was last set (for messages). */
  const famFrom: Record<'ipv4' | 'ipv6', string> = { ipv4: 'encapSource', ipv6: 'encapSource' };
  let asn = config.bgp?.asn;
  let routerId = config.bgp?.routerId;
  const peers = new Map<string, { peer: BgpPeerConfig; path: string }>();
  const addPeer = (p: BgpPeerConfig, path: string): void => {
    const prev = peers.get(peerKey(p));
    if (prev === undefined) peers.set(peerKey(p), { peer: p, path });
    else if (JSON.stringify(prev.peer) !== JSON.stringify(p))
      errors.push({
        path,
        message:
          `peer ${peerText(p)} differs from ${prev.path}, which also applies to node ${showValue(node.name)} ` +
          '(one session per peer address and port: define it once, or the same in both places)',
      });
  };
  config.bgp?.peers.forEach((p, j) => addPeer(p, formatPath(['bgp', 'peers', j])));
  for (const i of matched) {
    const e = entries[i]!;
    if (e.interface !== undefined) ifname = e.interface;
    if (e.nextHopMac !== undefined)
      nextHopMac = e.nextHopMac === 'auto' ? 'auto' : canonicalMac(e.nextHopMac)!;
    for (const f of ['ipv4', 'ipv6'] as const) {
      const text = e.outerSource?.[f];
      if (text === undefined) continue;
      fam[f] = parsePrefix(text)!;
      famFrom[f] = formatPath(['nodes', i, 'outerSource', f]);
    }
    if (e.asn !== undefined) asn = e.asn;
    if (e.routerId !== undefined) routerId = e.routerId;
    e.peers?.forEach((p, j) => addPeer(p, formatPath(['nodes', i, 'peers', j])));
  }
  const named = `node ${showValue(node.name)}`;
  let encapSource: 'auto' | IpPrefix[] = 'auto';
  if (fam.ipv4 === 'auto' && fam.ipv6 === 'auto') encapSource = 'auto';
  else if (fam.ipv4 === 'auto' || fam.ipv6 === 'auto') {
    const [set, auto] = fam.ipv4 === 'auto' ? (['ipv6', 'ipv4'] as const) : (['ipv4', 'ipv6'] as const);
    errors.push({
      path: famFrom[set],
      message:
        `sets the ${set} outer source of ${named} while its ${auto} source stays "auto" (encapSource): ` +
        `set outerSource.${auto} too, or encapSource to prefixes`,
    });
  } else {
    // Overrides only add or replace a family's source, so every family the file's own check passed keeps one.
    encapSource = [fam.ipv4, fam.ipv6].filter((p): p is IpPrefix => p !== null);
  }
  let bgp: NodeSettings['bgp'] = null;
  if (config.bgp !== undefined) {
    if (peers.size === 0)
      errors.push({
        path: 'bgp.peers',
        message:
          `${named} (labels ${showValue(node.labels)}) has no BGP peer: bgp.peers is empty and no nodes[] ` +
          `entry with peers selects it (entries selecting it: ${matched.length === 0 ? 'none' : matched.map((i) => `nodes[${i}]`).join(', ')})`,
      });
    bgp = { asn: asn!, routerId: routerId!, peers: [...peers.values()].map((x) => x.peer) };
  }
  if (errors.length > 0) return { errors };
  return { settings: { node: node.name, matched, interface: ifname, nextHopMac, encapSource, bgp } };
}

/** The config this node runs with: `config` with its settings in place (the same object without a nodes section). */
export function applyNodeSettings(config: Config, s: NodeSettings): Config {
  if (config.nodes === undefined) return config;
  const bgp: BgpConfig | undefined =
    config.bgp === undefined || s.bgp === null ? config.bgp : { ...config.bgp, ...s.bgp };
  return {
    ...config,
    interface: s.interface,
    nextHopMac: s.nextHopMac,
    encapSource: s.encapSource,
    ...(bgp === undefined ? {} : { bgp }),
  };
}

/** Entry checks that need the rest of the file: BGP fields need a bgp section. */
export function nodesSectionIssues(entries: readonly NodeEntry[], o: { bgp: boolean }): ConfigIssue[] {
  if (o.bgp) return [];
  const issues: ConfigIssue[] = [];
  entries.forEach((e, i) => {
    for (const k of ['asn', 'routerId', 'peers'] as const)
      if (e[k] !== undefined)
        issues.push({
          path: formatPath([i, k]),
          message: `is a BGP setting, but the file has no bgp section`,
        });
  });
  return issues;
}

/**
 * `--node-labels` ("k=v,k2=v2"; "k=" is an empty value) to labels; the error names the bad pair. A bare host's
 * stand-in for its Node object's labels.
 */
export function parseNodeLabels(
  text: string,
): { ok: true; labels: Record<string, string> } | { ok: false; error: string } {
  const labels: Record<string, string> = {};
  if (text.trim() === '') return { ok: true, labels };
  for (const pair of text.split(',')) {
    const eq = pair.indexOf('=');
    if (eq < 0) return { ok: false, error: `${showValue(pair)} is not key=value` };
    const [k, v] = [pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()];
    const problem = labelKeyProblem(k) ?? labelValueProblem(v);
    if (problem !== null) return { ok: false, error: problem };
    if (k in labels) return { ok: false, error: `label ${showValue(k)} is given twice` };
    labels[k] = v;
  }
  return { ok: true, labels };
}
