// Daemon configs of the soak (pure): the testbed's config per LB node with the web VIPs' backends and weights
// from the model, the extra VIPs when configured, and the invalid variants a reload must reject.
import YAML from 'yaml';
import { daemonConfig } from '../testbed/peak';
import { findHost, Host, innerVip, Plan, serviceVip, vipBackends } from '../testbed/plan';
import type { ConfigModel, InvalidVariant } from './schedule';

/** The VIPs of the soak: web4/web6 carry the traffic, svc4/svc6 come and go with reloads. */
export function soakVips(p: Plan): { web: string[]; extra: string[] } {
  const extra = ([4, 6] as const).map((f) => innerVip(p, f)?.vip.name).filter((n): n is string => !!n);
  return { web: [serviceVip(p, 4).name, serviceVip(p, 6).name], extra };
}

const addressOf = (h: Host, family: 4 | 6): string =>
  family === 4 ? h.link!.hostV4.address : h.link!.hostV6.address;

/** What the daemon should hold for a model: VIP name -> backend address -> weight. */
export function expectedVips(p: Plan, m: ConfigModel): Map<string, Map<string, number>> {
  const { web, extra } = soakVips(p);
  const hosts = m.backends.map((b) => findHost(p, b.name));
  const out = new Map<string, Map<string, number>>();
  for (const v of p.vips) {
    if (web.includes(v.name))
      out.set(v.name, new Map(m.backends.map((b) => [addressOf(findHost(p, b.name), v.family), b.weight])));
    else if (m.extraVip && extra.includes(v.name))
      out.set(v.name, new Map(vipBackends(v, hosts).map((h) => [addressOf(h, v.family), 1])));
  }
  return out;
}

/** The config object of one LB node's daemon for a model. */
export function soakDaemonConfig(p: Plan, lb: Host, m: ConfigModel): Record<string, unknown> {
  const hosts = m.backends.map((b) => findHost(p, b.name));
  const base = daemonConfig(p, lb, { backends: hosts });
  const want = expectedVips(p, m);
  const vips = (base.vips as Record<string, unknown>[])
    .filter((v) => want.has(v.name as string))
    .map((v) => ({
      ...v,
      backends: [...want.get(v.name as string)!].map(([address, weight]) => ({ address, weight })),
    }));
  return { ...base, vips };
}

export function soakConfigText(p: Plan, lb: Host, m: ConfigModel): string {
  return YAML.stringify(soakDaemonConfig(p, lb, m));
}

/** An invalid config for a model, and a phrase the rejection names (for the report). */
export function invalidConfigText(
  p: Plan,
  lb: Host,
  m: ConfigModel,
  variant: InvalidVariant,
): { text: string; what: string } {
  const cfg = soakDaemonConfig(p, lb, m);
  const vips = cfg.vips as { backends: Record<string, unknown>[] }[] & Record<string, unknown>[];
  switch (variant) {
    case 'yaml-syntax':
      return { text: `${YAML.stringify(cfg)}vips: [ {name: broken\n`, what: 'YAML syntax error' };
    case 'bad-weight':
      vips[0]!.backends[0]!.weight = -1;
      return { text: YAML.stringify(cfg), what: 'a backend weight of -1' };
    case 'unknown-key':
      (vips[0] as Record<string, unknown>).bogusKey = true;
      return { text: YAML.stringify(cfg), what: 'an unknown key in a VIP' };
    case 'bad-address':
      vips[0]!.backends[0]!.address = '10.77.300.2';
      return { text: YAML.stringify(cfg), what: 'a backend address that is not an IP address' };
    case 'restart-field': {
      const bgp = cfg.bgp as Record<string, unknown>;
      return {
        text: YAML.stringify({ ...cfg, bgp: { ...bgp, asn: (bgp.asn as number) + 1000 } }),
        what: 'a BGP ASN change (needs a restart)',
      };
    }
  }
}
