// Pure translation of Services + EndpointSlices into VIPs: addresses, ports, drain states, weights, problems.
import { isPrime } from '../../src/maglev/maglev';
import {
  endpointState,
  EndpointSlice,
  parsePool,
  parseWeights,
  Pool,
  Service,
  serviceAddresses,
  translate,
  vipName,
} from '../../src/sources/kubernetes';
import { TranslationCache } from '../../src/sources/kubernetes/translate';
import { service, slice } from '../helpers/k8s-objects';

// Requested addresses must be allowed; these tests are about other things, so every address is.
const ANYWHERE = (() => {
  const p = parsePool(['0.0.0.0/0', '::/0'], 'allowedAddresses', { whole: true });
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
})();

const svc = (o: Parameters<typeof service>[0]): Service => service(o) as unknown as Service;
const sl = (o: Parameters<typeof slice>[0]): EndpointSlice => slice(o) as unknown as EndpointSlice;
const poolOf = (entries: string[]): Pool => {
  const p = parsePool(entries);
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
};
const run = (services: Service[], slices: EndpointSlice[]) =>
  translate({ loadBalancerClass: 'peak-xdp.io/lb', pool: null, allowed: ANYWHERE, services, slices });

describe('translate', () => {
  it('turns each Service port into a VIP with the ready endpoints as backends', () => {
    const r = run(
      [
        svc({
          name: 'web',
          vip: '203.0.113.10',
          ports: [
            { name: 'http', port: 80 },
            { name: 'dns', port: 53, protocol: 'UDP' },
          ],
        }),
      ],
      [
        sl({
          name: 'web-a',
          service: 'web',
          ports: [
            { name: 'http', port: 80 },
            { name: 'dns', port: 53, protocol: 'UDP' },
          ],
          endpoints: [{ ip: '10.0.0.2' }, { ip: '10.0.0.1' }],
        }),
      ],
    );
    expect(r.problems).toEqual([]);
    expect(
      r.vips.map((v) => [v.name, v.address, v.port, v.protocol, v.backends.map((b) => b.address)]),
    ).toEqual([
      ['k8s.default.web.53-udp', '203.0.113.10', 53, 'udp', ['10.0.0.1', '10.0.0.2']],
      ['k8s.default.web.80-tcp', '203.0.113.10', 80, 'tcp', ['10.0.0.1', '10.0.0.2']],
    ]);
    expect(r.vips[0]).toMatchObject({ family: 4, healthCheck: null, persistence: 'none', conntrack: true });
    expect(isPrime(r.vips[0]!.tableSize)).toBe(true);
  });

  it('ignores Services of another class, without a class, or not of type LoadBalancer', () => {
    const r = run(
      [
        svc({ name: 'a', vip: '203.0.113.1', lbClass: 'other.io/lb' }),
        svc({ name: 'b', vip: '203.0.113.2', lbClass: null }),
        svc({ name: 'c', vip: '203.0.113.3', type: 'ClusterIP' }),
      ],
      [sl({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.0.0.1' }] })],
    );
    expect(r).toEqual({ vips: [], problems: [] });
  });

  it('maps endpoint conditions: ready -> up, serving+terminating -> drain, others left out', () => {
    expect(endpointState({ ready: true, serving: true, terminating: false })).toBe('up');
    expect(endpointState({ ready: false, serving: true, terminating: true })).toBe('drain');
    expect(endpointState({ ready: false, serving: false, terminating: true })).toBe('none');
    expect(endpointState({ ready: false, serving: false, terminating: false })).toBe('none');
    expect(endpointState({})).toBe('up'); // nil ready means ready, per the API
    expect(endpointState(null)).toBe('up');
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10' })],
      [
        sl({
          name: 'web-a',
          service: 'web',
          endpoints: [
            { ip: '10.0.0.1' },
            { ip: '10.0.0.2', ready: false, serving: true, terminating: true },
            { ip: '10.0.0.3', ready: false, serving: false, terminating: true },
            { ip: '10.0.0.4', ready: false, serving: false },
          ],
        }),
      ],
    );
    expect(r.vips[0]!.backends.map((b) => [b.address, b.drain])).toEqual([
      ['10.0.0.1', false],
      ['10.0.0.2', true],
    ]);
  });

  it('merges slices, prefers up over drain for one address, and ignores slices of other Services', () => {
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10' })],
      [
        sl({
          name: 'web-a',
          service: 'web',
          endpoints: [{ ip: '10.0.0.1', ready: false, serving: true, terminating: true }],
        }),
        sl({ name: 'web-b', service: 'web', endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.5' }] }),
        sl({ name: 'api-a', service: 'api', endpoints: [{ ip: '10.9.9.9' }] }),
        sl({ name: 'web-c', service: 'web', namespace: 'other', endpoints: [{ ip: '10.8.8.8' }] }),
      ],
    );
    expect(r.vips[0]!.backends.map((b) => [b.address, b.drain])).toEqual([
      ['10.0.0.1', false],
      ['10.0.0.5', false],
    ]);
  });

  it('does not program a port whose numeric targetPort differs, and says why', () => {
    const r = run(
      [
        svc({
          name: 'web',
          vip: '203.0.113.10',
          ports: [
            { name: 'http', port: 80, targetPort: 8080 },
            { name: 'https', port: 443 },
          ],
        }),
      ],
      [
        sl({
          name: 'web-a',
          service: 'web',
          ports: [
            { name: 'http', port: 8080 },
            { name: 'https', port: 443 },
          ],
          endpoints: [{ ip: '10.0.0.1' }],
        }),
      ],
    );
    expect(r.vips.map((v) => v.port)).toEqual([443]);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({
      namespace: 'default',
      name: 'web',
      reason: 'TargetPortMismatch',
      blocking: true,
    });
    expect(r.problems[0]!.message).toContain('spec.ports[0]');
    expect(r.problems[0]!.message).toContain('8080');
  });

  it('resolves a named targetPort through the EndpointSlice ports', () => {
    const named = (slicePort: number) =>
      run(
        [svc({ name: 'web', vip: '203.0.113.10', ports: [{ name: 'http', port: 80, targetPort: 'web' }] })],
        [
          sl({
            name: 'web-a',
            service: 'web',
            ports: [{ name: 'http', port: slicePort }],
            endpoints: [{ ip: '10.0.0.1' }],
          }),
        ],
      );
    expect(named(80).vips).toHaveLength(1);
    expect(named(80).problems).toEqual([]);
    const bad = named(8080);
    expect(bad.vips).toEqual([]);
    expect(bad.problems.map((p) => p.reason)).toEqual(['TargetPortMismatch']);
    expect(bad.problems[0]!.message).toContain('"web"');
  });

  it('treats a numeric-string targetPort as a number', () => {
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10', ports: [{ name: 'http', port: 80, targetPort: '81' }] })],
      [],
    );
    expect(r.vips).toEqual([]);
    expect(r.problems[0]!.reason).toBe('TargetPortMismatch');
  });

  it('rejects SCTP ports and keeps the others', () => {
    const r = run(
      [
        svc({
          name: 'web',
          vip: '203.0.113.10',
          ports: [
            { name: 's', port: 9, protocol: 'SCTP' },
            { name: 'http', port: 80 },
          ],
        }),
      ],
      [],
    );
    expect(r.vips.map((v) => v.port)).toEqual([80]);
    expect(r.problems.map((p) => [p.reason, p.message.includes('"SCTP"')])).toEqual([
      ['UnsupportedProtocol', true],
    ]);
  });

  it('picks the address from the annotation, then spec.loadBalancerIP, then the pool status', () => {
    const both = svc({ name: 'a', vip: '203.0.113.1', loadBalancerIP: '203.0.113.2' });
    expect(serviceAddresses(both, null, ANYWHERE)).toEqual({
      ok: true,
      value: { source: 'annotation', addresses: ['203.0.113.1'] },
    });
    expect(serviceAddresses(svc({ name: 'b', loadBalancerIP: '203.0.113.2' }), null, ANYWHERE)).toEqual({
      ok: true,
      value: { source: 'loadBalancerIP', addresses: ['203.0.113.2'] },
    });
    const pool = poolOf(['198.51.100.0/29']);
    const fromStatus = svc({ name: 'c' });
    fromStatus.status = { loadBalancer: { ingress: [{ ip: '198.51.100.3' }, { ip: '192.0.2.1' }] } };
    expect(serviceAddresses(fromStatus, pool)).toEqual({
      ok: true,
      value: { source: 'pool', addresses: ['198.51.100.3'] },
    });
    expect(serviceAddresses(svc({ name: 'd' }), pool)).toEqual({
      ok: true,
      value: { source: 'pool', addresses: [] },
    });
    const none = serviceAddresses(svc({ name: 'e' }), null);
    expect(none).toMatchObject({ ok: false, reason: 'NoAddress' });
  });

  it('supports a dual-stack annotation, one VIP per family with backends of that family', () => {
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10, 2001:DB8::10' })],
      [
        sl({ name: 'web-4', service: 'web', endpoints: [{ ip: '10.0.0.1' }] }),
        sl({ name: 'web-6', service: 'web', addressType: 'IPv6', endpoints: [{ ip: '2001:db8:1::1' }] }),
      ],
    );
    expect(r.vips.map((v) => [v.name, v.address, v.backends.map((b) => b.address)])).toEqual([
      ['k8s.default.web.80-tcp', '203.0.113.10', ['10.0.0.1']],
      ['k8s.default.web.80-tcp.v6', '2001:db8::10', ['2001:db8:1::1']],
    ]);
  });

  it('reports bad address annotations naming the field and value', () => {
    for (const [vip, text] of [
      ['not-an-ip', '"not-an-ip"'],
      ['203.0.113.1,203.0.113.2', 'more than one IPv4'],
    ] as const) {
      const r = run([svc({ name: 'web', vip })], []);
      expect(r.vips).toEqual([]);
      expect(r.problems[0]!.reason).toBe('InvalidAnnotation');
      expect(r.problems[0]!.message).toContain('metadata.annotations["peak-xdp.io/vip"]');
      expect(r.problems[0]!.message).toContain(text);
    }
    const lb = run([svc({ name: 'web', loadBalancerIP: '300.1.1.1' })], []);
    expect(lb.problems[0]).toMatchObject({ reason: 'InvalidLoadBalancerIP' });
    expect(lb.problems[0]!.message).toContain('"300.1.1.1"');
  });

  it('applies weights by address or Pod name, and reports a bad weights annotation', () => {
    const ann = { 'peak-xdp.io/backend-weights': '10.0.0.1=3, web-b=0' };
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10', annotations: ann })],
      [
        sl({
          name: 'web-a',
          service: 'web',
          endpoints: [{ ip: '10.0.0.1', pod: 'web-a' }, { ip: '10.0.0.2', pod: 'web-b' }, { ip: '10.0.0.3' }],
        }),
      ],
    );
    expect(r.vips[0]!.backends.map((b) => b.weight)).toEqual([3, 0, 1]);
    expect(parseWeights('a=1,b=x')).toMatchObject({ ok: false });
    expect(parseWeights('a=70000')).toMatchObject({ ok: false });
    const bad = run(
      [svc({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/backend-weights': 'oops' } })],
      [sl({ name: 'web-a', service: 'web', endpoints: [{ ip: '10.0.0.1' }] })],
    );
    expect(bad.vips[0]!.backends[0]!.weight).toBe(1);
    expect(bad.problems[0]).toMatchObject({ reason: 'InvalidAnnotation', blocking: false });
    expect(bad.problems[0]!.message).toContain('"oops"');
  });

  it('reads table size, conntrack and session affinity', () => {
    const s = svc({
      name: 'web',
      vip: '203.0.113.10',
      annotations: { 'peak-xdp.io/table-size': '251', 'peak-xdp.io/conntrack': 'false' },
    });
    s.spec!.sessionAffinity = 'ClientIP';
    const r = run([s], []);
    expect(r.vips[0]).toMatchObject({ tableSize: 251, conntrack: false, persistence: 'source-ip' });
    const bad = run(
      [
        svc({
          name: 'web',
          vip: '203.0.113.10',
          annotations: { 'peak-xdp.io/table-size': '100', 'peak-xdp.io/conntrack': 'no' },
        }),
      ],
      [],
    );
    expect(bad.problems.map((p) => p.reason)).toEqual(['InvalidAnnotation', 'InvalidAnnotation']);
    // the Kubernetes default (Cilium's), not the file VIPs' 65,537
    expect(bad.vips[0]!.tableSize).toBe(16381);
    expect(bad.vips[0]!.conntrack).toBe(true);
  });

  it('kubernetes.tableSize sizes the tables of Services without the annotation; a change of it translates again', () => {
    const plain = svc({ name: 'web', vip: '203.0.113.10' });
    const sized = svc({ name: 'api', vip: '203.0.113.11', annotations: { 'peak-xdp.io/table-size': '251' } });
    const cache = new TranslationCache();
    const opts = { loadBalancerClass: 'peak-xdp.io/lb', pool: null, allowed: ANYWHERE, services: [plain, sized], slices: [] }; // prettier-ignore
    const sizes = (r: { vips: { name: string; tableSize: number }[] }) =>
      r.vips.map((v) => [v.name, v.tableSize]);
    expect(sizes(cache.translate({ ...opts, tableSize: 65537 }))).toEqual([
      ['k8s.default.api.80-tcp', 251],
      ['k8s.default.web.80-tcp', 65537],
    ]);
    // the same objects, another default: nothing is served from the cache made with the old one
    expect(sizes(cache.translate({ ...opts, tableSize: 4099 }))).toEqual([
      ['k8s.default.api.80-tcp', 251],
      ['k8s.default.web.80-tcp', 4099],
    ]);
    expect(sizes(cache.translate(opts))).toEqual([
      ['k8s.default.api.80-tcp', 251],
      ['k8s.default.web.80-tcp', 16381],
    ]);
    // a bad annotation falls back to the configured size, and says so
    const bad = run(
      [svc({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/table-size': '9' } })],
      [],
    );
    expect(bad.problems[0]!.message).toMatch(/is not a prime .*; using 16381$/);
    const badSized = cache.translate({ ...opts, services: [svc({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/table-size': '9' } })], tableSize: 65537 }); // prettier-ignore
    expect(badSized.vips[0]!.tableSize).toBe(65537);
    expect(badSized.problems[0]!.message).toMatch(/; using 65537$/);
  });

  it('refuses more backends than table slots', () => {
    const r = run(
      [svc({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/table-size': '3' } })],
      [sl({ name: 'web-a', service: 'web', endpoints: [1, 2, 3, 4].map((i) => ({ ip: `10.0.0.${i}` })) })],
    );
    expect(r.vips).toEqual([]);
    expect(r.problems[0]!.reason).toBe('TooManyBackends');
  });

  it('programs a Service with under 10 slots per backend and warns, naming the annotation (the file rule)', () => {
    const eps = (n: number) => Array.from({ length: n }, (_, i) => ({ ip: `10.0.${i >> 8}.${i & 255}` }));
    const web = svc({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/table-size': '251' } });
    const uneven = run([web], [sl({ name: 'web-a', service: 'web', endpoints: eps(26) })]);
    expect(uneven.vips.map((v) => [v.tableSize, v.backends.length])).toEqual([[251, 26]]);
    expect(uneven.problems).toMatchObject([{ name: 'web', reason: 'UnevenBalance', blocking: false }]);
    expect(uneven.problems[0]!.message).toMatch(
      /26 backends in a table of 251 get under 10 slots each: .*peak-xdp\.io\/table-size/,
    );
    // 25 backends: 10 slots each, no warning; the Kubernetes default (16,381) warns from 1,639 endpoints on
    expect(run([web], [sl({ name: 'web-a', service: 'web', endpoints: eps(25) })]).problems).toEqual([]);
    const plain = svc({ name: 'big', vip: '203.0.113.11' });
    expect(run([plain], [sl({ name: 'big-a', service: 'big', endpoints: eps(1638) })]).problems).toEqual([]);
    expect(run([plain], [sl({ name: 'big-a', service: 'big', endpoints: eps(1639) })]).problems).toMatchObject([{ reason: 'UnevenBalance' }]); // prettier-ignore
  });

  it('gives a contested address:port to the first Service by namespace/name and reports the other', () => {
    const r = run([svc({ name: 'b', vip: '203.0.113.10' }), svc({ name: 'a', vip: '203.0.113.10' })], []);
    expect(r.vips.map((v) => v.name)).toEqual(['k8s.default.a.80-tcp']);
    expect(r.problems).toMatchObject([{ name: 'b', reason: 'AddressConflict' }]);
  });

  it('is independent of input order', () => {
    const services = [svc({ name: 'x', vip: '203.0.113.1' }), svc({ name: 'y', vip: '203.0.113.2' })];
    const slices = [
      sl({ name: 'x-1', service: 'x', endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }] }),
      sl({ name: 'x-2', service: 'x', endpoints: [{ ip: '10.0.0.3' }] }),
      sl({ name: 'y-1', service: 'y', endpoints: [{ ip: '10.0.1.1' }] }),
    ];
    const a = run(services, slices);
    const b = run([...services].reverse(), [...slices].reverse());
    expect(a.vips.length).toBe(2);
    expect(b).toEqual(a);
  });

  it('makes VIP names valid for the config model, cutting long ones with a hash', () => {
    const re = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
    const short = vipName({ namespace: 'ns', name: 'web', port: 80, protocol: 'tcp', family: 4 });
    expect(short).toBe('k8s.ns.web.80-tcp');
    const long1 = vipName({
      namespace: 'n'.repeat(63),
      name: 'a'.repeat(63),
      port: 65535,
      protocol: 'udp',
      family: 6,
    });
    const long2 = vipName({
      namespace: 'n'.repeat(63),
      name: `${'a'.repeat(62)}b`,
      port: 65535,
      protocol: 'udp',
      family: 6,
    });
    expect(long1).toMatch(re);
    expect(long1.endsWith('.65535-udp.v6')).toBe(true);
    expect(long1).not.toBe(long2);
  });
});
