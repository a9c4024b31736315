// The Service annotations of issue 15: peak-xdp.io/encap (how its backends are reached) and
// peak-xdp.io/stateless (whether its VIPs keep a connection table), parsed into VipConfig fields. Pure.
import type { Encap, StatelessMode } from '../../model/config';
import { DEFAULTS } from '../../model/defaults';
import { showValue } from '../../model/errors';

export const ENCAP_ANNOTATIONS = {
  /** "gue" (our decap on every backend node/Pod: hints, second chance) or "ipip" (default: kernel tunnels). */
  encap: 'peak-xdp.io/encap',
  /** "auto" (default: stateless when every backend is gue), "true" or "false". */
  stateless: 'peak-xdp.io/stateless',
} as const;

/** The VipConfig fields the annotations set (absent: the model's default) and what was wrong with them. */
export interface EncapAnnotations {
  fields: { encap?: Encap; stateless?: StatelessMode };
  /** One message per bad annotation, naming it and its value; the default is used instead (not blocking). */
  problems: string[];
}

const field = (name: string): string => `metadata.annotations["${name}"]`;

/** Parses the Service's annotations (surrounding spaces ignored, values case-sensitive as in the file config). */
export function encapAnnotations(
  annotations: Readonly<Record<string, string>> | null | undefined,
): EncapAnnotations {
  const fields: EncapAnnotations['fields'] = {};
  const problems: string[] = [];
  const e = annotations?.[ENCAP_ANNOTATIONS.encap];
  if (e !== undefined) {
    const v = e.trim();
    if (v === 'gue' || v === 'ipip') fields.encap = v;
    else
      problems.push(
        `${field(ENCAP_ANNOTATIONS.encap)}: ${showValue(e)} is not "gue" or "ipip"; using ${DEFAULTS.vip.encap}`,
      );
  }
  const s = annotations?.[ENCAP_ANNOTATIONS.stateless];
  if (s !== undefined) {
    const v = s.trim();
    if (v === 'auto') fields.stateless = 'auto';
    else if (v === 'true' || v === 'false') fields.stateless = v === 'true';
    else
      problems.push(
        `${field(ENCAP_ANNOTATIONS.stateless)}: ${showValue(s)} is not "auto", "true" or "false"; using ${DEFAULTS.vip.stateless}`,
      );
  }
  return { fields, problems };
}
