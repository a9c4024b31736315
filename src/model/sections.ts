// The config's own sections (bgp, kubernetes, nodes): each checked by the model's schema for it, issues under its name.
import { BgpConfig, bgpConfigSchema, bgpConfigSchemaPerNode } from './bgp';
import type { ConfigIssue } from './errors';
import { parseTolerant } from './unknown-keys';
import { parseKubernetesSettings } from './kubernetes';
import { NodeEntry, nodesSectionIssues, nodesSectionSchema } from './nodes';

export type SectionResult<T> = { ok: true; value: T } | { ok: false; issues: ConfigIssue[] };

/**
 * The bgp section, parsed: the Config holds the result, so nothing parses it again. `perNode`: the file has a
 * nodes section, so bgp.peers may be empty (each node's merged peers are checked when it resolves them).
 */
export function checkBgpSection(value: unknown, o: { perNode?: boolean } = {}): SectionResult<BgpConfig> {
  const r = parseTolerant(o.perNode === true ? bgpConfigSchemaPerNode : bgpConfigSchema, value);
  return r.issues.length === 0 && r.data !== null
    ? { ok: true, value: r.data }
    : { ok: false, issues: r.issues };
}

/** The kubernetes section, checked and kept as written (the daemon turns it into source options). */
export function checkKubernetesSection(value: unknown): SectionResult<unknown> {
  const r = parseKubernetesSettings(value);
  return r.ok ? { ok: true, value } : { ok: false, issues: r.issues };
}

/** The nodes section, parsed; `bgp`: the file has a bgp section (the BGP overrides need one). */
export function checkNodesSection(value: unknown, o: { bgp: boolean }): SectionResult<NodeEntry[]> {
  const r = parseTolerant(nodesSectionSchema, value);
  if (r.issues.length > 0 || r.data === null) return { ok: false, issues: r.issues };
  const issues = nodesSectionIssues(r.data, o);
  return issues.length === 0 ? { ok: true, value: r.data } : { ok: false, issues };
}

/** Issues relative to a section, with paths under the section's name ("bgp.peers[0].asn"). */
export function underSection(name: string, issues: readonly ConfigIssue[]): ConfigIssue[] {
  return issues.map((issue) => ({
    path: issue.path === '' ? name : `${name}.${issue.path}`.replace('.[', '['),
    message: issue.message,
  }));
}
