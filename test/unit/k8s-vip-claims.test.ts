// Who may announce which address: requests limited to kubernetes.pool / allowedAddresses, and collisions
// resolved for the holder (status, then age, then namespace/name) — the same on every node and after a restart.
import {
  AddressClaim,
  EndpointSlice,
  parseKubernetesSettings,
  parsePool,
  planStatus,
  Pool,
  resolveClaims,
  Service,
  StatusUpdate,
  translate,
  TranslationCache,
} from '../../src/sources/kubernetes';
import { service, slice } from '../helpers/k8s-objects';

const LB = 'peak-xdp.io/lb';
const poolOf = (entries: string[], whole = false): Pool => {
  const p = parsePool(entries, 'pool', { whole });
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
};
const POOL = poolOf(['203.0.113.0/24', '2001:db8:1::/120']);
const ALLOWED = poolOf(['198.51.100.7/32', '192.0.2.0/24'], true);

/** A Service of ours; `created` is metadata.creationTimestamp, `holds` its status ingress. */
const svc = (o: {
  ns?: string;
  name: string;
  vip?: string;
  lbIp?: string;
  created?: string;
  holds?: string[];
  ports?: { name?: string; port: number; protocol?: string }[];
  ipFamilies?: string[];
}): Service => {
  const s = service({
    name: o.name,
    namespace: o.ns,
    vip: o.vip,
    loadBalancerIP: o.lbIp,
    ports: o.ports,
  }) as unknown as Service;
  s.metadata.uid = `uid-${o.ns ?? 'default'}-${o.name}`;
  if (o.created) s.metadata.creationTimestamp = o.created;
  if (o.ipFamilies) s.spec!.ipFamilies = o.ipFamilies;
  if (o.holds) s.status = { loadBalancer: { ingress: o.holds.map((ip) => ({ ip, ipMode: 'VIP' })) } };
  return s;
};
const slices = (services: Service[]): EndpointSlice[] =>
  services.map(
    (s) =>
      slice({
        name: `${s.metadata.name}-1`,
        namespace: s.metadata.namespace ?? 'default',
        service: s.metadata.name!,
        endpoints: [{ ip: '10.0.0.1' }],
      }) as unknown as EndpointSlice,
  );

const T1 = '2026-01-01T00:00:00Z';
const T2 = '2026-01-02T00:00:00Z';
const T3 = '2026-01-03T00:00:00Z';

const tr = (services: Service[], o: { pool?: Pool | null; allowed?: Pool | null } = {}) =>
  translate({
    loadBalancerClass: LB,
    pool: o.pool === undefined ? POOL : o.pool,
    allowed: o.allowed === undefined ? ALLOWED : o.allowed,
    services,
    slices: slices(services),
  });
const plan = (services: Service[], o: { pool?: Pool | null; allowed?: Pool | null } = {}) =>
  planStatus({
    loadBalancerClass: LB,
    pool: o.pool === undefined ? POOL : o.pool,
    allowed: o.allowed === undefined ? ALLOWED : o.allowed,
    services,
  });
/** VIP addresses programmed per Service ("ns/name" -> sorted addresses). */
const programmed = (r: ReturnType<typeof tr>): Record<string, string[]> => {
  const out: Record<string, string[]> = {};
  for (const v of r.vips) {
    const key = v.name.split('.').slice(1, 3).join('/');
    (out[key] ??= []).push(v.address);
  }
  for (const k of Object.keys(out)) out[k] = [...new Set(out[k])].sort();
  return out;
};
/** What the API server does with a status patch: the object with the new ingress. */
const applyStatus = (services: Service[], updates: StatusUpdate[]): Service[] =>
  services.map((s) => {
    const u = updates.find((x) => x.namespace === s.metadata.namespace && x.name === s.metadata.name);
    return u === undefined ? s : { ...s, status: { loadBalancer: { ingress: u.ingress } } };
  });
/** The leader running to a fixed point (status writes feed the next plan); bounded. */
const settle = (services: Service[], o: { pool?: Pool | null; allowed?: Pool | null } = {}) => {
  let cur = services;
  for (let i = 0; i < 5; i++) {
    const p = plan(cur, o);
    if (p.updates.length === 0) return cur;
    cur = applyStatus(cur, p.updates);
  }
  throw new Error('status did not settle in 5 rounds');
};
const ingressOf = (services: Service[], name: string): string[] =>
  (services.find((s) => s.metadata.name === name)?.status?.loadBalancer?.ingress ?? []).map((i) => i.ip!);

describe('requested addresses must be in kubernetes.pool or kubernetes.allowedAddresses', () => {
  it('accepts an in-pool annotation and spec.loadBalancerIP, programs them and writes status', () => {
    const services = [svc({ name: 'a', vip: '203.0.113.10' }), svc({ name: 'b', lbIp: '203.0.113.11' })];
    const r = tr(services);
    expect(r.problems).toEqual([]);
    expect(programmed(r)).toEqual({ 'default/a': ['203.0.113.10'], 'default/b': ['203.0.113.11'] });
    expect(plan(services).updates.map((u) => [u.name, u.ingress.map((i) => i.ip)])).toEqual([
      ['a', ['203.0.113.10']],
      ['b', ['203.0.113.11']],
    ]);
  });

  it('refuses an out-of-range annotation, naming it, the value and the allowed ranges; others unaffected', () => {
    const services = [svc({ name: 'ok', vip: '203.0.113.10' }), svc({ name: 'bad', vip: '172.16.0.1' })];
    const r = tr(services);
    expect(programmed(r)).toEqual({ 'default/ok': ['203.0.113.10'] });
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({ name: 'bad', reason: 'AddressNotAllowed', blocking: true });
    expect(r.problems[0]!.message).toBe(
      'metadata.annotations["peak-xdp.io/vip"]: "172.16.0.1" is outside the addresses this load balancer may ' +
        'announce (kubernetes.pool: 203.0.113.0/24, 2001:db8:1::/120; kubernetes.allowedAddresses: ' +
        '198.51.100.7/32, 192.0.2.0/24); not programmed',
    );
    const p = plan(services);
    expect(p.updates.map((u) => u.name)).toEqual(['ok']);
  });

  it('refuses an out-of-range spec.loadBalancerIP naming that field', () => {
    const r = tr([svc({ name: 'x', lbIp: '172.16.0.2' })]);
    expect(r.vips).toEqual([]);
    expect(r.problems).toMatchObject([{ name: 'x', reason: 'AddressNotAllowed' }]);
    expect(r.problems[0]!.message).toMatch(/^spec\.loadBalancerIP: "172\.16\.0\.2" is outside/);
  });

  it('refuses a ClusterIP-like address (the kubernetes Service 10.96.0.1): no VIP, no status', () => {
    const services = [svc({ ns: 'dev', name: 'evil', vip: '10.96.0.1' })];
    const r = tr(services);
    expect(r.vips).toEqual([]);
    expect(r.problems).toMatchObject([{ namespace: 'dev', name: 'evil', reason: 'AddressNotAllowed' }]);
    expect(r.problems[0]!.message).toContain('"10.96.0.1"');
    expect(plan(services).updates).toEqual([]);
  });

  it('a TranslationCache re-decides when the allowed list changes (same Service objects)', () => {
    const services = [svc({ name: 'a', vip: '172.16.0.1' })];
    const sl = slices(services);
    const cache = new TranslationCache();
    const input = (allowed: Pool) => ({ loadBalancerClass: LB, pool: POOL, allowed, services, slices: sl });
    expect(cache.translate(input(ALLOWED)).vips).toEqual([]);
    const wider = poolOf(['172.16.0.0/12'], true);
    const got = cache.translate(input(wider));
    expect(got).toEqual(translate(input(wider)));
    expect(programmed(got)).toEqual({ 'default/a': ['172.16.0.1'] });
  });

  it('refuses everything requested when neither pool nor allowedAddresses is configured', () => {
    const r = tr([svc({ name: 'a', vip: '203.0.113.10' })], { pool: null, allowed: null });
    expect(r.vips).toEqual([]);
    expect(r.problems[0]!.message).toContain('(kubernetes.pool: none; kubernetes.allowedAddresses: none)');
  });

  it('accepts allowedAddresses (whole CIDRs: a /24 network address too) but never auto-assigns from them', () => {
    const services = [
      svc({ name: 'a', vip: '198.51.100.7' }),
      svc({ name: 'b', lbIp: '192.0.2.0' }),
      svc({ name: 'c' }),
      svc({ name: 'd' }),
    ];
    const tiny = poolOf(['203.0.113.1-203.0.113.1']);
    const r = tr(services, { pool: tiny });
    expect(r.problems).toEqual([]);
    expect(programmed(r)).toEqual({ 'default/a': ['198.51.100.7'], 'default/b': ['192.0.2.0'] });
    const p = plan(services, { pool: tiny });
    expect(p.updates.map((u) => [u.name, u.ingress.map((i) => i.ip)])).toEqual([
      ['a', ['198.51.100.7']],
      ['b', ['192.0.2.0']],
      ['c', ['203.0.113.1']],
    ]);
    expect(p.problems).toMatchObject([{ name: 'd', reason: 'AllocationFailed' }]);
  });

  it('dual stack: both families in range programmed; one family out of range refuses the Service', () => {
    const ok = tr([svc({ name: 'ds', vip: '203.0.113.5,2001:db8:1::5' })]);
    expect(ok.problems).toEqual([]);
    expect(programmed(ok)).toEqual({ 'default/ds': ['2001:db8:1::5', '203.0.113.5'] });
    const bad = tr([svc({ name: 'ds', vip: '203.0.113.5, 2001:db8:ffff::5' })]);
    expect(bad.vips).toEqual([]);
    expect(bad.problems).toMatchObject([{ name: 'ds', reason: 'AddressNotAllowed' }]);
    expect(bad.problems[0]!.message).toContain('"2001:db8:ffff::5" is outside');
    expect(bad.problems[0]!.message).not.toContain('"203.0.113.5"');
  });

  it('clears the status of a Service whose request becomes refused (it must not show an unannounced address)', () => {
    const moved = svc({ name: 'm', vip: '172.16.0.9', holds: ['203.0.113.9'] });
    expect(plan([moved]).updates).toEqual([{ namespace: 'default', name: 'm', ingress: [] }]);
  });
});

describe('collisions: the holder keeps its address, the newcomer is refused', () => {
  const db = (o: { created?: string; holds?: string[] } = {}) =>
    svc({ ns: 'prod', name: 'db', created: o.created ?? T1, holds: o.holds });
  const evil = (o: { created?: string; holds?: string[]; vip?: string } = {}) =>
    svc({ ns: 'dev', name: 'evil', vip: o.vip ?? '203.0.113.1', created: o.created ?? T2, holds: o.holds });

  it('the reported case: prod/db holds pool .1; dev/evil asking for .1 is refused, prod/db not renumbered', () => {
    const services = [db({ holds: ['203.0.113.1'] }), evil()];
    const p = plan(services);
    expect(p.updates).toEqual([]);
    const r = tr(services);
    expect(programmed(r)).toEqual({ 'prod/db': ['203.0.113.1'] });
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({
      namespace: 'dev',
      name: 'evil',
      reason: 'AddressConflict',
      blocking: true,
    });
    expect(r.problems[0]!.message).toBe(
      'metadata.annotations["peak-xdp.io/vip"]: 203.0.113.1 is held by Service prod/db (another namespace: ' +
        'only Services of one namespace share an address); not programmed',
    );
  });

  it('the holder wins even when the newcomer is older (an old Service edited to point at a held address)', () => {
    const services = [db({ created: T3, holds: ['203.0.113.1'] }), evil({ created: T1 })];
    expect(plan(services).updates).toEqual([]);
    const r = tr(services);
    expect(programmed(r)).toEqual({ 'prod/db': ['203.0.113.1'] });
    expect(r.problems).toMatchObject([{ name: 'evil', reason: 'AddressConflict' }]);
  });

  it('arrival order A then B and B then A: the first to arrive keeps the address', () => {
    const a = svc({ ns: 'team-a', name: 'a', vip: '203.0.113.20' });
    const b = svc({ ns: 'team-b', name: 'b', vip: '203.0.113.20' });
    for (const [first, second] of [
      [a, b],
      [b, a],
    ] as const) {
      // The first exists alone; the leader writes its status; then the second is created (newer).
      const one = settle([{ ...first, metadata: { ...first.metadata, creationTimestamp: T1 } }]);
      expect(ingressOf(one, first.metadata.name!)).toEqual(['203.0.113.20']);
      const both = settle([...one, { ...second, metadata: { ...second.metadata, creationTimestamp: T2 } }]);
      expect(ingressOf(both, first.metadata.name!)).toEqual(['203.0.113.20']);
      expect(ingressOf(both, second.metadata.name!)).toEqual([]);
      const r = tr(both);
      expect(programmed(r)).toEqual({
        [`${first.metadata.namespace}/${first.metadata.name}`]: ['203.0.113.20'],
      });
      expect(r.problems).toMatchObject([{ name: second.metadata.name, reason: 'AddressConflict' }]);
      expect(r.problems[0]!.message).toContain(
        `held by Service ${first.metadata.namespace}/${first.metadata.name}`,
      );
      // A restart: a fresh translation (and a fresh cache) of the same objects, in any order, decides the same.
      expect(tr([...both].reverse())).toEqual(r);
      expect(new TranslationCache().translate({ loadBalancerClass: LB, pool: POOL, allowed: ALLOWED, services: both, slices: slices(both) })).toEqual(r); // prettier-ignore
      expect(plan([...both].reverse()).updates).toEqual([]);
    }
  });

  it('two requests before any status: the older wins; equal timestamps fall back to namespace/name', () => {
    const older = svc({ ns: 'z', name: 'z', vip: '203.0.113.30', created: T1 });
    const newer = svc({ ns: 'a', name: 'a', vip: '203.0.113.30', created: T2 });
    expect(programmed(tr([newer, older]))).toEqual({ 'z/z': ['203.0.113.30'] });
    const tieA = svc({ ns: 'a', name: 'a', vip: '203.0.113.30', created: T1 });
    const tieZ = svc({ ns: 'z', name: 'z', vip: '203.0.113.30', created: T1 });
    expect(programmed(tr([tieZ, tieA]))).toEqual({ 'a/a': ['203.0.113.30'] });
    const noTime = svc({ ns: 'a', name: 'a', vip: '203.0.113.30' });
    expect(programmed(tr([noTime, tieZ]))).toEqual({ 'z/z': ['203.0.113.30'] });
  });

  it('the newcomer gets the address once the holder is deleted (the cache applies claims on every call)', () => {
    const holder = db({ holds: ['203.0.113.1'] });
    const newcomer = evil();
    const cache = new TranslationCache();
    // The same slice objects in both calls: only the other Service's deletion changes the newcomer's input.
    const [holderSlice, newcomerSlice] = slices([holder, newcomer]);
    const input = (services: Service[], sl: EndpointSlice[]) => ({
      loadBalancerClass: LB,
      pool: POOL,
      allowed: ALLOWED,
      services,
      slices: sl,
    });
    const before = cache.translate(input([holder, newcomer], [holderSlice!, newcomerSlice!]));
    expect(programmed(before)).toEqual({ 'prod/db': ['203.0.113.1'] });
    const after = cache.translate(input([newcomer], [newcomerSlice!]));
    // Its own translation was cached while refused; only the claim decision changed.
    expect(cache.lastTranslated).toBe(0);
    expect(after).toEqual(translate(input([newcomer], [newcomerSlice!])));
    expect(programmed(after)).toEqual({ 'dev/evil': ['203.0.113.1'] });
    expect(after.problems).toEqual([]);
  });

  it('auto-assignment never takes a requested or held address (even one not yet in any status)', () => {
    const requested = svc({ name: 'req', vip: '203.0.113.1', created: T3 });
    const held = svc({ name: 'held', lbIp: '203.0.113.2', holds: ['203.0.113.2'] });
    const p = plan([svc({ name: 'auto', created: T1 }), requested, held]);
    expect(p.updates).toEqual([
      { namespace: 'default', name: 'auto', ingress: [{ ip: '203.0.113.3', ipMode: 'VIP' }] },
      { namespace: 'default', name: 'req', ingress: [{ ip: '203.0.113.1', ipMode: 'VIP' }] },
    ]);
  });

  it('a refused Service’s request still blocks auto-assignment of that address', () => {
    const services = [db({ holds: ['203.0.113.1'] }), evil(), svc({ name: 'auto' })];
    const p = plan(services);
    expect(p.updates).toEqual([
      { namespace: 'default', name: 'auto', ingress: [{ ip: '203.0.113.2', ipMode: 'VIP' }] },
    ]);
  });

  it('dual stack: a conflict on one family refuses the whole Service; the holder of each keeps its own', () => {
    const v6holder = svc({
      ns: 'prod',
      name: 'v6',
      vip: '2001:db8:1::7',
      created: T1,
      holds: ['2001:db8:1::7'],
    });
    const ds = svc({ ns: 'dev', name: 'ds', vip: '203.0.113.7,2001:db8:1::7', created: T2 });
    const services = [ds, v6holder];
    const r = tr(services);
    expect(programmed(r)).toEqual({ 'prod/v6': ['2001:db8:1::7'] });
    expect(r.problems).toMatchObject([{ name: 'ds', reason: 'AddressConflict' }]);
    expect(r.problems[0]!.message).toContain('2001:db8:1::7 is held by Service prod/v6');
    // Its uncontested IPv4 request is still its claim: no pool Service is given 203.0.113.7.
    const p = plan([...services, svc({ name: 'auto' })]);
    expect(p.updates.map((u) => u.name)).toEqual(['auto']);
    expect(p.updates[0]!.ingress[0]!.ip).not.toBe('203.0.113.7');
  });

  it('two pool Services holding one address (an old double allocation): the older keeps it, the newer is renumbered', () => {
    const old = svc({ name: 'old', created: T1, holds: ['203.0.113.1'] });
    const young = svc({ name: 'young', created: T2, holds: ['203.0.113.1'] });
    const r = tr([young, old]);
    expect(programmed(r)).toEqual({ 'default/old': ['203.0.113.1'] });
    expect(r.problems).toMatchObject([{ name: 'young', reason: 'AddressConflict', blocking: true }]);
    expect(r.problems[0]!.message).toContain('the leader allocates another pool address');
    expect(plan([young, old]).updates).toEqual([
      { namespace: 'default', name: 'young', ingress: [{ ip: '203.0.113.2', ipMode: 'VIP' }] },
    ]);
  });
});

describe('sharing one address', () => {
  const dns = (name: string, proto: string, created: string, ns = 'infra') =>
    svc({ ns, name, vip: '203.0.113.53', created, ports: [{ name: 'dns', port: 53, protocol: proto }] });

  it('Services of one namespace share an address on different ports (what worked before keeps working)', () => {
    const r = tr([dns('dns-udp', 'UDP', T2), dns('dns-tcp', 'TCP', T1)]);
    expect(r.problems).toEqual([]);
    expect(r.vips.map((v) => v.name)).toEqual(['k8s.infra.dns-tcp.53-tcp', 'k8s.infra.dns-udp.53-udp']);
    expect(plan([dns('dns-udp', 'UDP', T2), dns('dns-tcp', 'TCP', T1)]).updates).toHaveLength(2);
  });

  it('the same protocol/port: the newcomer is refused, naming the holder and the port', () => {
    const r = tr([dns('b', 'UDP', T1), dns('a', 'UDP', T2)]);
    expect(r.vips.map((v) => v.name)).toEqual(['k8s.infra.b.53-udp']);
    expect(r.problems).toMatchObject([{ name: 'a', reason: 'AddressConflict' }]);
    expect(r.problems[0]!.message).toContain(
      '203.0.113.53 is held by Service infra/b, which also uses udp/53',
    );
  });

  it('another namespace cannot share, even on a free port', () => {
    const r = tr([dns('dns-tcp', 'TCP', T1), dns('dns-udp', 'UDP', T2, 'other')]);
    expect(r.vips.map((v) => v.name)).toEqual(['k8s.infra.dns-tcp.53-tcp']);
    expect(r.problems).toMatchObject([{ namespace: 'other', reason: 'AddressConflict' }]);
    expect(r.problems[0]!.message).toContain('another namespace');
  });
});

describe('resolveClaims', () => {
  const claim = (o: Partial<AddressClaim> & { key: string }): AddressClaim => ({
    namespace: o.key.split('/')[0]!,
    created: null,
    addresses: ['192.0.2.1'],
    held: new Set(),
    ports: ['tcp/80'],
    ...o,
  });

  it('ranks holders, then age, then namespace/name; unknown age last; lists every claimed address', () => {
    const r = resolveClaims([
      claim({ key: 'a/young', created: T2 }),
      claim({ key: 'a/old', created: T1 }),
      claim({ key: 'a/none' }),
      claim({ key: 'a/bad', created: 'yesterday' }),
      claim({ key: 'a/holder', created: T3, held: new Set(['192.0.2.1']) }),
      claim({ key: 'a/other', addresses: ['192.0.2.2'] }),
    ]);
    expect(r.losses.has('a/holder')).toBe(false);
    expect(r.losses.has('a/other')).toBe(false);
    for (const k of ['a/young', 'a/old', 'a/none', 'a/bad'])
      expect(r.losses.get(k)).toEqual([
        { address: '192.0.2.1', holder: 'a/holder', why: { kind: 'port', port: 'tcp/80' } },
      ]);
    expect([...r.claimed].sort()).toEqual(['192.0.2.1', '192.0.2.2']);
  });

  it('is independent of input order', () => {
    const claims = [
      claim({ key: 'x/1', created: T2, ports: ['udp/53'] }),
      claim({ key: 'x/2', created: T1, ports: ['tcp/53'] }),
      claim({ key: 'x/3', created: T1, ports: ['udp/53'] }),
      claim({ key: 'y/1', created: T1, ports: ['tcp/8080'] }),
    ];
    const a = resolveClaims(claims);
    const b = resolveClaims([...claims].reverse());
    expect(Object.fromEntries(b.losses)).toEqual(Object.fromEntries(a.losses));
    expect(a.losses.has('x/2')).toBe(false);
    expect(a.losses.has('x/3')).toBe(false);
    expect(a.losses.get('x/1')).toEqual([
      { address: '192.0.2.1', holder: 'x/3', why: { kind: 'port', port: 'udp/53' } },
    ]);
    expect(a.losses.get('y/1')).toEqual([
      { address: '192.0.2.1', holder: 'x/2', why: { kind: 'namespace' } },
    ]);
  });
});

describe('kubernetes.allowedAddresses setting', () => {
  it('defaults to none, accepts CIDRs and ranges, names a bad entry and its value', () => {
    expect(parseKubernetesSettings({})).toMatchObject({ ok: true, settings: { allowedAddresses: [] } });
    expect(
      parseKubernetesSettings({
        allowedAddresses: ['198.51.100.7/32', '192.0.2.0/24', '192.0.2.10-192.0.2.20'],
      }),
    ).toMatchObject({ ok: true });
    expect(parseKubernetesSettings({ allowedAddresses: ['192.0.2.0/24', 'nope'] })).toEqual({
      ok: false,
      issues: [{ path: 'allowedAddresses[1]', message: '"nope" is not a CIDR (a.b.c.d/n) or a range (a-b)' }],
    });
  });
});
