// Kubernetes annotations of issue 15 (peak-xdp.io/encap, peak-xdp.io/stateless): parsed on their own, and
// through translate into the VIPs (and on to stateless auto mode in desired state).
import type { Config } from '../../src/model';
import { desiredState } from '../../src/reconcile';
import { EndpointSlice, parsePool, Service, translate } from '../../src/sources/kubernetes';
import { encapAnnotations, ENCAP_ANNOTATIONS } from '../../src/sources/kubernetes/encap-annotations';
import { service, slice } from '../helpers/k8s-objects';

// Requested addresses must be allowed; these tests are about other things, so every address is.
const ANYWHERE = (() => {
  const p = parsePool(['0.0.0.0/0', '::/0'], 'allowedAddresses', { whole: true });
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
})();

const E = ENCAP_ANNOTATIONS.encap;
const S = ENCAP_ANNOTATIONS.stateless;

describe('encapAnnotations', () => {
  test.each([
    [{}, {}],
    [{ [E]: 'gue' }, { encap: 'gue' }],
    [{ [E]: ' ipip ' }, { encap: 'ipip' }],
    [{ [S]: 'auto' }, { stateless: 'auto' }],
    [{ [S]: 'true' }, { stateless: true }],
    [
      { [S]: 'false', [E]: 'gue' },
      { encap: 'gue', stateless: false },
    ],
  ])('%j -> %j', (annotations, fields) => {
    expect(encapAnnotations(annotations)).toEqual({ fields, problems: [] });
  });

  test('bad values: a problem naming the annotation and the value, the default used', () => {
    expect(encapAnnotations({ [E]: 'fou', [S]: 'yes' })).toEqual({
      fields: {},
      problems: [
        'metadata.annotations["peak-xdp.io/encap"]: "fou" is not "gue" or "ipip"; using ipip',
        'metadata.annotations["peak-xdp.io/stateless"]: "yes" is not "auto", "true" or "false"; using auto',
      ],
    });
    expect(encapAnnotations(null)).toEqual({ fields: {}, problems: [] });
  });
});

describe('through translate', () => {
  const run = (annotations: Record<string, string>) =>
    translate({
      loadBalancerClass: 'peak-xdp.io/lb',
      pool: null,
      allowed: ANYWHERE,
      services: [service({ name: 'web', vip: '203.0.113.10', annotations }) as unknown as Service],
      slices: [
        slice({
          name: 'web-a',
          service: 'web',
          ports: [{ name: 'http', port: 80 }],
          endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }],
        }) as unknown as EndpointSlice,
      ],
    });

  test('gue on the Service: its VIPs are GUE and (auto) stateless', () => {
    const r = run({ [E]: 'gue' });
    expect(r.problems).toEqual([]);
    expect(r.vips).toHaveLength(1);
    expect(r.vips[0]).toMatchObject({ encap: 'gue' });
    const config = {
      interface: 'eth0',
      limits: { maxVips: 16, maxBackends: 64, conntrackEntries: 1024 },
      vips: r.vips,
    };
    const d = desiredState({ config: config as unknown as Config });
    expect(d.vips[0]!.spec.flags.stateless).toBe(true);
    expect(d.vips[0]!.backends.map((b) => b.encap)).toEqual(['gue', 'gue']);
  });

  test('forced stateless false, and a bad annotation is an InvalidAnnotation problem (not blocking)', () => {
    const r = run({ [E]: 'gue', [S]: 'false' });
    expect(r.vips[0]).toMatchObject({ encap: 'gue', stateless: false });
    const bad = run({ [E]: 'GUE' });
    expect(bad.vips).toHaveLength(1);
    expect(bad.vips[0]!.encap).toBeUndefined();
    expect(bad.problems).toEqual([
      expect.objectContaining({
        reason: 'InvalidAnnotation',
        blocking: false,
        message: 'metadata.annotations["peak-xdp.io/encap"]: "GUE" is not "gue" or "ipip"; using ipip',
      }),
    ]);
  });
});
