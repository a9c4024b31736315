// Pure cores of the Kubernetes source: pool allocation, status planning, Lease decisions, settings, RBAC list, reflector.
import {
  allocate,
  API_CALLS,
  decideLease,
  LeaseSpec,
  ListPage,
  microTime,
  parseKubernetesSettings,
  parsePool,
  planStatus,
  poolContains,
  Reflector,
  ReflectorIO,
  releasedSpec,
  requiredRules,
  Service,
  WatchEventType,
} from '../../src/sources/kubernetes';
import { service } from '../helpers/k8s-objects';
import { setTimeout as sleep } from 'node:timers/promises';

const poolOf = (entries: string[]) => {
  const p = parsePool(entries);
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
};

describe('pool', () => {
  it('parses CIDRs and ranges, leaving out IPv4 network and broadcast addresses', () => {
    const p = poolOf(['198.51.100.0/30', '203.0.113.5-203.0.113.6', '2001:db8::/126', '192.0.2.7/32']);
    expect(poolContains(p, '198.51.100.0')).toBe(false);
    expect(poolContains(p, '198.51.100.1')).toBe(true);
    expect(poolContains(p, '198.51.100.3')).toBe(false);
    expect(poolContains(p, '203.0.113.6')).toBe(true);
    expect(poolContains(p, '203.0.113.7')).toBe(false);
    expect(poolContains(p, '2001:db8::')).toBe(true);
    expect(poolContains(p, '2001:db8::4')).toBe(false);
    expect(poolContains(p, '192.0.2.7')).toBe(true);
    expect(poolContains(p, 'junk')).toBe(false);
  });

  it('names the entry and value of every bad pool entry', () => {
    const r = parsePool([
      '10.0.0.0/33',
      '10.0.0.9-10.0.0.1',
      '10.0.0.1-2001:db8::1',
      '10.0.0.1',
      '10.0.0.0/24',
      '10.0.0.128/25',
    ]);
    expect(r.ok).toBe(false);
    const errors = (r as { errors: string[] }).errors;
    expect(errors).toEqual([
      'pool[0]: "10.0.0.0/33" is not a CIDR (a.b.c.d/n) or a range (a-b)',
      'pool[1]: "10.0.0.9-10.0.0.1" starts after it ends',
      'pool[2]: "10.0.0.1-2001:db8::1" is not a range of two addresses of one family (a-b)',
      'pool[3]: "10.0.0.1" is not a CIDR (a.b.c.d/n) or a range (a-b)',
      'pool[5]: "10.0.0.128/25" overlaps "10.0.0.0/24"',
    ]);
  });

  it('keeps current addresses, fills the lowest free ones, skips reserved, reports exhaustion', () => {
    const pool = poolOf(['198.51.100.0/29']); // .1 - .6
    const got = allocate({
      pool,
      reserved: new Set(['198.51.100.1']),
      requests: [
        { key: 'ns/c', family: 4, current: null },
        { key: 'ns/a', family: 4, current: '198.51.100.5' },
        { key: 'ns/b', family: 4, current: '198.51.100.5' }, // taken by a (earlier key)
        { key: 'ns/d', family: 4, current: '192.0.2.1' }, // outside the pool
        { key: 'ns/e', family: 6, current: null },
      ],
    });
    expect(Object.fromEntries(got)).toEqual({
      'ns/a': { ok: true, address: '198.51.100.5' },
      'ns/b': { ok: true, address: '198.51.100.2' },
      'ns/c': { ok: true, address: '198.51.100.3' },
      'ns/d': { ok: true, address: '198.51.100.4' },
      'ns/e': { ok: false, reason: 'the pool has no IPv6 range' },
    });
    const full = allocate({
      pool: poolOf(['203.0.113.1-203.0.113.1']),
      requests: [
        { key: 'a', family: 4, current: null },
        { key: 'b', family: 4, current: null },
      ],
    });
    expect(full.get('a')).toEqual({ ok: true, address: '203.0.113.1' });
    expect(full.get('b')).toEqual({
      ok: false,
      reason: 'the IPv4 pool (203.0.113.1-203.0.113.1) is exhausted',
    });
  });

  it('allocates the same way whatever the request order', () => {
    const pool = poolOf(['2001:db8::/120']);
    const reqs = ['x', 'b', 'q', 'a'].map((key) => ({ key, family: 6 as const, current: null }));
    const a = allocate({ pool, requests: reqs });
    const b = allocate({ pool, requests: [...reqs].reverse() });
    expect(Object.fromEntries(a)).toEqual(Object.fromEntries(b));
    expect(a.get('a')).toEqual({ ok: true, address: '2001:db8::' });
  });
});

describe('planStatus', () => {
  const svc = (o: Parameters<typeof service>[0]): Service => service(o) as unknown as Service;

  it('writes explicit and pool addresses only where status differs', () => {
    const done = svc({ name: 'done', vip: '203.0.113.9' });
    done.status = { loadBalancer: { ingress: [{ ip: '203.0.113.9', ipMode: 'VIP' }] } };
    const r = planStatus({
      loadBalancerClass: 'peak-xdp.io/lb',
      pool: poolOf(['198.51.100.0/29']),
      allowed: poolOf(['203.0.113.0/24']),
      services: [
        svc({ name: 'explicit', vip: '203.0.113.10' }),
        svc({ name: 'pooled' }),
        done,
        svc({ name: 'foreign', lbClass: 'x.io/y' }),
      ],
    });
    expect(r.problems).toEqual([]);
    expect(r.updates).toEqual([
      { namespace: 'default', name: 'explicit', ingress: [{ ip: '203.0.113.10', ipMode: 'VIP' }] },
      { namespace: 'default', name: 'pooled', ingress: [{ ip: '198.51.100.1', ipMode: 'VIP' }] },
    ]);
  });

  it('does not hand out an address another Service claims explicitly, and reports an empty pool', () => {
    const r = planStatus({
      loadBalancerClass: 'peak-xdp.io/lb',
      pool: poolOf(['198.51.100.1-198.51.100.2']),
      services: [svc({ name: 'a' }), svc({ name: 'b' }), svc({ name: 'c', vip: '198.51.100.1' })],
    });
    expect(r.updates.map((u) => [u.name, u.ingress[0]!.ip])).toEqual([
      ['a', '198.51.100.2'],
      ['c', '198.51.100.1'],
    ]);
    expect(r.problems).toMatchObject([{ name: 'b', reason: 'AllocationFailed' }]);
    expect(r.problems[0]!.message).toContain('exhausted');
  });
});

describe('decideLease', () => {
  const base = { identity: 'n1', leaseDurationSeconds: 10 };
  const held = (holder: string | null, renew = 'r1'): LeaseSpec => ({
    holderIdentity: holder,
    leaseDurationSeconds: 10,
    acquireTime: 'a',
    renewTime: renew,
    leaseTransitions: 2,
  });

  it('creates a missing Lease holding it', () => {
    const { decision } = decideLease({ ...base, nowMs: 1000, current: null, previous: null });
    expect(decision).toEqual({
      action: 'create',
      spec: {
        holderIdentity: 'n1',
        leaseDurationSeconds: 10,
        acquireTime: microTime(1000),
        renewTime: microTime(1000),
        leaseTransitions: 0,
      },
    });
    expect(microTime(1000)).toBe('1970-01-01T00:00:01.000000Z');
  });

  it('renews its own Lease keeping acquireTime and transitions', () => {
    const { decision } = decideLease({ ...base, nowMs: 5000, current: held('n1'), previous: null });
    expect(decision).toEqual({
      action: 'update',
      acquired: false,
      spec: { ...held('n1'), renewTime: microTime(5000) },
    });
  });

  it('follows a live holder and takes over only after the duration passes with no renewal seen', () => {
    let r = decideLease({ ...base, nowMs: 0, current: held('n2'), previous: null });
    expect(r.decision).toEqual({ action: 'follow', holder: 'n2', expiresInMs: 10_000 });
    r = decideLease({ ...base, nowMs: 9_999, current: held('n2'), previous: r.observation });
    expect(r.decision).toMatchObject({ action: 'follow', expiresInMs: 1 });
    // A renewal seen restarts the clock.
    r = decideLease({ ...base, nowMs: 9_999, current: held('n2', 'r2'), previous: r.observation });
    expect(r.decision).toMatchObject({ action: 'follow', expiresInMs: 10_000 });
    r = decideLease({ ...base, nowMs: 19_999, current: held('n2', 'r2'), previous: r.observation });
    expect(r.decision).toMatchObject({ action: 'update', acquired: true });
    expect((r.decision as { spec: LeaseSpec }).spec).toMatchObject({
      holderIdentity: 'n1',
      leaseTransitions: 3,
    });
  });

  it('takes a released (holderless) Lease at once', () => {
    const released = releasedSpec(held('n2'), 0);
    expect(released).toMatchObject({ holderIdentity: null, leaseDurationSeconds: 1 });
    const r = decideLease({ ...base, nowMs: 1, current: released, previous: null });
    expect(r.decision).toMatchObject({
      action: 'update',
      acquired: true,
      spec: { holderIdentity: 'n1', leaseTransitions: 3 },
    });
  });
});

describe('settings', () => {
  it('fills defaults', () => {
    expect(parseKubernetesSettings(undefined)).toEqual({
      ok: true,
      settings: {
        loadBalancerClass: 'peak-xdp.io/lb',
        pool: [],
        allowedAddresses: [],
        leaderElection: {
          namespace: 'peak-xdp-system',
          name: 'peak-xdp-leader',
          leaseDurationSeconds: 15,
          renewDeadlineSeconds: 10,
          retryPeriodSeconds: 2,
        },
        // Cilium's default for Services, not the file VIPs' 65,537
        tableSize: 16381,
      },
    });
    expect(parseKubernetesSettings({ tableSize: 65537 })).toMatchObject({
      ok: true,
      settings: { tableSize: 65537 },
    });
    expect(parseKubernetesSettings({ tableSize: 16380 })).toEqual({
      ok: false,
      issues: [{ path: 'tableSize', message: '16380 is not a prime between 3 and 1048573' }],
    });
    expect(parseKubernetesSettings({ leaderElection: false })).toMatchObject({
      ok: true,
      settings: { leaderElection: false },
    });
  });

  it('names the field and value of bad input', () => {
    const r = parseKubernetesSettings({
      loadBalancerClass: 'nope',
      pool: ['10.0.0.0/24'],
      leaderElection: { namespace: 'Bad_NS' },
      extra: 1,
    });
    expect(r.ok).toBe(false);
    const issues = (r as { issues: { path: string; message: string }[] }).issues;
    expect(issues).toEqual(
      expect.arrayContaining([
        { path: 'loadBalancerClass', message: '"nope" is not a domain-prefixed class (e.g. peak-xdp.io/lb)' },
        { path: 'leaderElection.namespace', message: '"Bad_NS" is not a namespace name (DNS label)' },
        { path: 'extra', message: 'is not a known key' },
      ]),
    );
    const timing = parseKubernetesSettings({
      pool: ['x'],
      leaderElection: { leaseDurationSeconds: 5, renewDeadlineSeconds: 5 },
    });
    expect((timing as { issues: unknown[] }).issues).toEqual([
      { path: 'pool[0]', message: '"x" is not a CIDR (a.b.c.d/n) or a range (a-b)' },
      { path: 'leaderElection.renewDeadlineSeconds', message: '5 must be below leaseDurationSeconds 5' },
    ]);
  });
});

describe('requiredRules', () => {
  it('groups every API call into one rule per resource with exactly the verbs called', () => {
    const rules = requiredRules();
    expect(rules.length).toBeGreaterThan(0);
    const flat = rules.flatMap((r) => r.verbs.map((v) => `${r.scope}|${r.group}|${r.resource}|${v}`)).sort();
    const calls = Object.values(API_CALLS)
      .map((c) => `${c.scope}|${c.group}|${c.resource}|${c.verb}`)
      .sort();
    expect(flat).toEqual([...new Set(calls)]);
    expect(rules.find((r) => r.resource === 'leases')).toEqual({
      scope: 'namespace',
      group: 'coordination.k8s.io',
      resource: 'leases',
      verbs: ['create', 'get', 'update'],
    });
  });
});

describe('Reflector', () => {
  type O = { metadata: { name: string; namespace: string; resourceVersion: string } };
  const o = (name: string, rv: number): O => ({
    metadata: { name, namespace: 'ns', resourceVersion: String(rv) },
  });

  /** Scripted I/O: lists return the given pages; each watch is a script run against the callbacks. */
  function scripted(
    lists: ListPage<O>[],
    watches: ((cb: { ev: (t: WatchEventType, x: unknown) => void; done: (e: unknown) => void }) => void)[],
  ) {
    const calls: string[] = [];
    const io: ReflectorIO<O> = {
      list: async () => {
        calls.push('list');
        const p = lists.shift();
        if (!p) throw new Error('list failed');
        return p;
      },
      watch: async (w) => {
        calls.push(`watch@${w.resourceVersion}`);
        const s = watches.shift();
        if (s) setImmediate(() => s({ ev: w.onEvent, done: w.onDone }));
        return { stop: () => undefined };
      },
    };
    return { io, calls };
  }

  it('lists, watches from the list version, applies events, re-lists on 410 and reports deletions', async () => {
    const changes: string[] = [];
    const relists: string[] = [];
    const { io, calls } = scripted(
      [
        { items: [o('a', 1), o('b', 2)], resourceVersion: '10' },
        { items: [o('a', 1), o('c', 20)], resourceVersion: '20' },
      ],
      [
        ({ ev }) => {
          ev('MODIFIED', o('a', 11));
          ev('BOOKMARK', { metadata: { resourceVersion: '12' } });
          ev('ERROR', { kind: 'Status', code: 410 });
        },
      ],
    );
    const r = new Reflector<O>({
      kind: 'test',
      io,
      onChange: (c) =>
        changes.push(`${c.type} ${c.object.metadata.name}@${c.object.metadata.resourceVersion}`),
      onList: (reason) => relists.push(reason),
      sleep: async () => undefined,
    });
    await r.start();
    await sleep(50);
    await r.stop();
    expect(calls.slice(0, 4)).toEqual(['list', 'watch@10', 'list', 'watch@20']);
    expect(relists).toEqual(['start', 'gone']);
    expect(changes).toEqual([
      'ADDED a@1',
      'ADDED b@2',
      'MODIFIED a@11',
      'DELETED b@2',
      'MODIFIED a@1',
      'ADDED c@20',
    ]);
    expect(
      r
        .items()
        .map((x) => x.metadata.name)
        .sort(),
    ).toEqual(['a', 'c']);
  });

  it('resumes from the last resourceVersion after a dropped watch and keeps the cache while failing', async () => {
    const sleeps: number[] = [];
    const connectedWhileWaiting: boolean[] = [];
    const { io, calls } = scripted(
      [{ items: [o('a', 1)], resourceVersion: '5' }],
      [
        ({ ev, done }) => (ev('ADDED', o('b', 6)), done(new Error('socket hang up'))),
        ({ done }) => done(new Error('ECONNREFUSED')),
      ],
    );
    const r = new Reflector<O>({
      kind: 'test',
      io,
      onChange: () => undefined,
      backoff: { initialMs: 100, maxMs: 1000 },
      sleep: async (ms) => {
        sleeps.push(ms);
        connectedWhileWaiting.push(r.connected);
      },
    });
    await r.start();
    await sleep(50);
    await r.stop();
    expect(calls.slice(0, 3)).toEqual(['list', 'watch@5', 'watch@6']);
    expect(r.items().map((x) => x.metadata.name)).toEqual(['a', 'b']);
    expect(connectedWhileWaiting).toEqual([false, false]);
    expect(r.lastError).toContain('ECONNREFUSED');
    // Backoff grows (with jitter between half and all of the step).
    expect(sleeps.length).toBeGreaterThanOrEqual(2);
    expect(sleeps[0]).toBeGreaterThanOrEqual(50);
    expect(sleeps[0]).toBeLessThanOrEqual(100);
    expect(sleeps[1]).toBeGreaterThanOrEqual(100);
    expect(sleeps[1]).toBeLessThanOrEqual(200);
  });
});
