// The config's own sections (bgp, kubernetes): each checked by the model's schema for it, issues under its name.
import { BgpConfig, bgpConfigSchema } from './bgp';
import type { ConfigIssue } from './errors';
import { parseTolerant } from './unknown-keys';
import { parseKubernetesSettings } from './kubernetes';

export type SectionResult<T> = { ok: true; value: T } | { ok: false; issues: ConfigIssue[] };

/** The bgp section, parsed: the Config holds the result, so nothing parses it again. */
export function checkBgpSection(value: unknown): SectionResult<BgpConfig> {
  const r = parseTolerant(bgpConfigSchema, value);
  return r.issues.length === 0 && r.data !== null
    ? { ok: true, value: r.data }
    : { ok: false, issues: r.issues };
}

/** The kubernetes section, checked and kept as written (the daemon turns it into source options). */
export function checkKubernetesSection(value: unknown): SectionResult<unknown> {
  const r = parseKubernetesSettings(value);
  return r.ok ? { ok: true, value } : { ok: false, issues: r.issues };
}

/** Issues relative to a section, with paths under the section's name ("bgp.peers[0].asn"). */
export function underSection(name: string, issues: readonly ConfigIssue[]): ConfigIssue[] {
  return issues.map((issue) => ({
    path: issue.path === '' ? name : `${name}.${issue.path}`.replace('.[', '['),
    message: issue.message,
  }));
}
