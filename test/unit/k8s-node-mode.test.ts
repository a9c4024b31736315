// Node-mode backends: Services -> the Nodes hosting their endpoints (InternalIP per family, weights, drain,
// externalTrafficPolicy, Ready), the backend-mode annotation, health checks, and the translation cache on Node changes.
import fc from 'fast-check';
import { probeCheck, probeKey } from '../../src/health/probes';
import type { VipConfig } from '../../src/model/config';
import {
  backendModeOf,
  EndpointSlice,
  Node,
  nodeBackends,
  nodeInfo,
  Problem,
  slimNode,
  Service,
  TranslationCache,
  translate,
  parsePool,
} from '../../src/sources/kubernetes';
import { EndpointSpec, node, service, slice } from '../helpers/k8s-objects';

// Requested addresses must be allowed; these tests are about other things, so every address is.
const ANYWHERE = (() => {
  const p = parsePool(['0.0.0.0/0', '::/0'], 'allowedAddresses', { whole: true });
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
})();

const LB = 'peak-xdp.io/lb';
type SvcOpts = Parameters<typeof service>[0];
type SliceOpts = Parameters<typeof slice>[0];
type NodeOpts = Parameters<typeof node>[0];
/** A node-mode Service (no annotation: the default mode). */
const svc = (o: SvcOpts): Service => service({ backendMode: null, ...o }) as unknown as Service;
const sl = (o: SliceOpts): EndpointSlice => slice(o) as unknown as EndpointSlice;
const nd = (o: NodeOpts): Node => node(o) as unknown as Node;
const run = (services: Service[], slices: EndpointSlice[], nodes: Node[]) =>
  translate({ loadBalancerClass: LB, pool: null, allowed: ANYWHERE, services, slices, nodes });

const NODES = [
  nd({ name: 'n1', ips: ['192.168.0.1', 'fd00::1'] }),
  nd({ name: 'n2', ips: ['192.168.0.2', 'fd00::2'] }),
  nd({ name: 'n3', ips: ['192.168.0.3', 'fd00::3'] }),
];
const bk = (v: VipConfig | undefined): string[] =>
  (v?.backends ?? []).map((b) => `${b.address}${b.drain ? ' drain' : ''} w${b.weight}`);
const reasons = (ps: Problem[]): string[] => ps.map((p) => p.reason);

describe('nodeInfo', () => {
  it('marks LB nodes and nodes labelled exclude-from-external-load-balancers as never backends', () => {
    const lb = nd({ name: 'lb', ips: ['10.0.0.7'] });
    lb.metadata.labels = { 'peak-xdp.io/lb-node': 'true' };
    expect(nodeInfo(lb).excluded).toMatch(/LB node \(peak-xdp\.io\/lb-node=true/);
    const ex = nd({ name: 'ex', ips: ['10.0.0.8'] });
    ex.metadata.labels = { 'node.kubernetes.io/exclude-from-external-load-balancers': '' };
    expect(nodeInfo(ex).excluded).toMatch(/exclude-from-external-load-balancers/);
    const other = nd({ name: 'o', ips: ['10.0.0.9'] });
    other.metadata.labels = { 'peak-xdp.io/lb-node': 'false' };
    expect(nodeInfo(other).excluded).toBeNull();
    // Local: an excluded node with endpoints is skipped and reported; Cluster: left out silently.
    const nodes = new Map([lb, ex, other].map((n) => [n.metadata.name!, nodeInfo(n)]));
    const endpoints = [
      { address: '10.244.0.1', state: 'up' as const, nodeName: 'lb' },
      { address: '10.244.0.2', state: 'up' as const, nodeName: 'o' },
    ];
    const local = nodeBackends({ family: 4, policy: 'Local', endpoints, nodes, weights: new Map() });
    expect(local.backends.map((b) => b.address)).toEqual(['10.0.0.9']);
    expect(local.skipped).toEqual([
      {
        reason: 'NodeExcluded',
        message: expect.stringMatching(/Node "lb" is not a backend: it is an LB node/),
      },
    ]);
    const cluster = nodeBackends({ family: 4, policy: 'Cluster', endpoints, nodes, weights: new Map() });
    expect(cluster.backends.map((b) => b.address)).toEqual(['10.0.0.9']);
    expect(cluster.skipped).toEqual([]);
  });

  it('reads the first InternalIP of each family (canonical) and the Ready condition', () => {
    expect(
      nodeInfo(
        nd({
          name: 'a',
          ips: ['10.0.0.1', '2001:DB8:0:0::1', '10.0.0.9'],
          otherAddresses: [{ type: 'ExternalIP', address: '198.51.100.1' }],
        }),
      ),
    ).toEqual({ name: 'a', ready: true, ipv4: '10.0.0.1', ipv6: '2001:db8::1', excluded: null });
    expect(nodeInfo(nd({ name: 'b', ips: ['fd00::5'], ready: false }))).toEqual({
      name: 'b',
      ready: false,
      ipv4: null,
      ipv6: 'fd00::5',
      excluded: null,
    });
    // No Ready condition at all: not ready. Only ExternalIP: no InternalIP.
    expect(
      nodeInfo(
        nd({ name: 'c', ready: null, otherAddresses: [{ type: 'ExternalIP', address: '198.51.100.2' }] }),
      ),
    ).toEqual({ name: 'c', ready: false, ipv4: null, ipv6: null, excluded: null });
    expect(
      nodeInfo({ metadata: { name: 'd' }, status: { addresses: [{ type: 'InternalIP', address: 'x' }] } }),
    ).toEqual({ name: 'd', ready: false, ipv4: null, ipv6: null, excluded: null });
    expect(nodeInfo({ metadata: { name: 'e' } })).toEqual({
      name: 'e',
      ready: false,
      ipv4: null,
      ipv6: null,
      excluded: null,
    });
  });
});

describe('slimNode', () => {
  it('keeps identity, labels, InternalIPs and Ready (what node mode reads), drops the rest', () => {
    const full = {
      ...nd({
        name: 'big',
        ips: ['10.0.0.1', 'fd00::1'],
        otherAddresses: [{ type: 'ExternalIP', address: '198.51.100.1' }],
        labels: { zone: 'a' },
      }),
      spec: { podCIDR: '10.244.0.0/24' },
    } as unknown as Node;
    (full.status as Record<string, unknown>).images = Array.from({ length: 50 }, (_, i) => ({
      names: [`img${i}`],
    }));
    full.metadata.resourceVersion = '42';
    const slim = slimNode(full);
    expect(nodeInfo(slim)).toEqual(nodeInfo(full));
    expect(slim).toEqual({
      metadata: {
        name: 'big',
        uid: undefined,
        resourceVersion: '42',
        labels: { 'kubernetes.io/hostname': 'big', zone: 'a' },
      },
      status: {
        addresses: [
          { type: 'InternalIP', address: '10.0.0.1' },
          { type: 'InternalIP', address: 'fd00::1' },
        ],
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    });
    for (const ready of [false, null])
      expect(nodeInfo(slimNode(nd({ name: 'x', ips: ['10.0.0.2'], ready })))).toEqual({
        name: 'x',
        ready: false,
        ipv4: '10.0.0.2',
        ipv6: null,
        excluded: null,
      });
  });
});

describe('backendModeOf', () => {
  it('defaults to node, accepts node and pod, rejects anything else naming the annotation and value', () => {
    expect(backendModeOf(svc({ name: 'a' }))).toEqual({ ok: true, mode: 'node' });
    expect(backendModeOf(svc({ name: 'a', backendMode: 'node' }))).toEqual({ ok: true, mode: 'node' });
    expect(backendModeOf(svc({ name: 'a', backendMode: 'pod' }))).toEqual({ ok: true, mode: 'pod' });
    for (const bad of ['Node', 'pods', '', ' node'])
      expect(backendModeOf(svc({ name: 'a', backendMode: bad }))).toEqual({
        ok: false,
        message: `metadata.annotations["peak-xdp.io/backend-mode"]: ${JSON.stringify(bad)} is not "node" or "pod"; Service not programmed`,
      });
  });
});

describe('nodeBackends (pure)', () => {
  const infos = new Map(NODES.map((n) => [n.metadata.name!, nodeInfo(n)]));
  it('Local: one backend per node with ready endpoints, weighted by their count; all-terminating drains', () => {
    const r = nodeBackends({
      family: 4,
      policy: 'Local',
      nodes: infos,
      weights: new Map(),
      endpoints: [
        { address: '10.1.0.1', state: 'up', nodeName: 'n1' },
        { address: '10.1.0.2', state: 'up', nodeName: 'n1' },
        { address: '10.1.0.3', state: 'drain', nodeName: 'n1' },
        { address: '10.1.0.4', state: 'drain', nodeName: 'n2' },
        { address: '10.1.0.5', state: 'drain', nodeName: 'n2' },
      ],
    });
    expect(r.skipped).toEqual([]);
    expect(r.backends).toEqual([
      { address: '192.168.0.1', family: 4, weight: 2, drain: false },
      { address: '192.168.0.2', family: 4, weight: 1, drain: true },
    ]);
  });
  it('Cluster: every Ready node with an address of the family, weight 1, endpoints or not', () => {
    const withDown = new Map(infos);
    withDown.set('n4', nodeInfo(nd({ name: 'n4', ips: ['192.168.0.4'], ready: false })));
    withDown.set('n5', nodeInfo(nd({ name: 'n5', ips: ['fd00::5'] })));
    const r = nodeBackends({
      family: 4,
      policy: 'Cluster',
      nodes: withDown,
      weights: new Map([['n2', 5]]),
      endpoints: [{ address: '10.1.0.4', state: 'drain', nodeName: 'n1' }],
    });
    expect(r.backends.map((b) => `${b.address} w${b.weight} ${b.drain}`)).toEqual([
      '192.168.0.1 w1 false',
      '192.168.0.2 w5 false',
      '192.168.0.3 w1 false',
    ]);
    expect(r.skipped).toEqual([
      {
        reason: 'NodeAddressMissing',
        message: 'Node "n5" has no IPv4 InternalIP in status.addresses; not a backend of the IPv4 VIP',
      },
    ]);
  });
});

describe('translate in node mode', () => {
  const web = (o: Partial<SvcOpts> = {}): Service =>
    svc({
      name: 'web',
      vip: '203.0.113.10',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31234,
      ...o,
    });
  const webSlice = (endpoints: EndpointSpec[], o: Partial<SliceOpts> = {}): EndpointSlice =>
    sl({ name: 'web-a', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints, ...o });

  it('ETP Local, targetPort != port: the nodes with ready endpoints, weighted, checked on healthCheckNodePort', () => {
    const r = run(
      [web()],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n1' },
          { ip: '10.1.0.3', node: 'n2' },
          { ip: '10.1.0.4', node: 'n3', ready: false, serving: false },
        ]),
      ],
      NODES,
    );
    expect(r.problems).toEqual([]);
    expect(r.vips).toHaveLength(1);
    const v = r.vips[0]!;
    expect(v).toMatchObject({ name: 'k8s.default.web.80-tcp', address: '203.0.113.10', port: 80, family: 4 });
    expect(bk(v)).toEqual(['192.168.0.1 w2', '192.168.0.2 w1']);
    // TCP, not HTTP /healthz: kube-proxy's 503 for a node with only terminating endpoints would end its drain.
    expect(v.healthCheck).toMatchObject({ type: 'tcp', port: 31234 });
  });

  it('a node whose endpoints all terminate (still serving) drains; not-serving ones are gone', () => {
    const r = run(
      [web()],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n2', ready: false, serving: true, terminating: true },
          { ip: '10.1.0.3', node: 'n3', ready: false, serving: false, terminating: true },
          { ip: '10.1.0.4', node: 'n1', ready: false, serving: true, terminating: true },
        ]),
      ],
      NODES,
    );
    expect(bk(r.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.2 drain w1']);
  });

  it('counts an endpoint listed in two slices (a rollout) once, up winning over drain', () => {
    const r = run(
      [web()],
      [
        webSlice([{ ip: '10.1.0.1', node: 'n1' }]),
        webSlice([{ ip: '10.1.0.1', node: 'n1', ready: false, serving: true, terminating: true }], {
          name: 'web-b',
        }),
      ],
      NODES,
    );
    expect(bk(r.vips[0])).toEqual(['192.168.0.1 w1']);
  });

  it('dual stack: each VIP family takes that family’s slices and the nodes’ InternalIP of that family', () => {
    const r = run(
      [web({ vip: '203.0.113.10,2001:db8::10' })],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n2' },
        ]),
        webSlice([{ ip: 'fd10::1', node: 'n1' }], { name: 'web-v6', addressType: 'IPv6' }),
      ],
      NODES,
    );
    expect(r.problems).toEqual([]);
    expect(r.vips.map((v) => [v.name, bk(v)])).toEqual([
      ['k8s.default.web.80-tcp', ['192.168.0.1 w1', '192.168.0.2 w1']],
      ['k8s.default.web.80-tcp.v6', ['fd00::1 w1']],
    ]);
    expect(r.vips[1]).toMatchObject({ address: '2001:db8::10', family: 6 });
  });

  it('IPv6-only cluster: v6 VIP, v6-only nodes', () => {
    const nodes = [nd({ name: 'n1', ips: ['fd00::1'] }), nd({ name: 'n2', ips: ['fd00::2'] })];
    const r = run(
      [web({ vip: '2001:db8::10' })],
      [webSlice([{ ip: 'fd10::1', node: 'n2' }], { addressType: 'IPv6' })],
      nodes,
    );
    expect(r.problems).toEqual([]);
    expect(bk(r.vips[0])).toEqual(['fd00::2 w1']);
  });

  it('skips a node without an InternalIP of the family with a non-blocking problem, keeping the others', () => {
    const nodes = [NODES[0]!, nd({ name: 'v6only', ips: ['fd00::9'] })];
    const r = run(
      [web()],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'v6only' },
        ]),
      ],
      nodes,
    );
    expect(bk(r.vips[0])).toEqual(['192.168.0.1 w1']);
    expect(r.problems).toEqual([
      {
        namespace: 'default',
        name: 'web',
        uid: '',
        reason: 'NodeAddressMissing',
        message: 'Node "v6only" has no IPv4 InternalIP in status.addresses; not a backend of the IPv4 VIP',
        blocking: false,
      },
    ]);
  });

  it('endpoints without nodeName are not counted (one problem naming them); others still are', () => {
    const r = run(
      [web()],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.7' },
          { ip: '10.1.0.5' },
          { ip: '10.1.0.6' },
          { ip: '10.1.0.8' },
        ]),
      ],
      NODES,
    );
    expect(bk(r.vips[0])).toEqual(['192.168.0.1 w1']);
    expect(r.problems.map((p) => [p.reason, p.message, p.blocking])).toEqual([
      [
        'EndpointWithoutNode',
        '4 IPv4 endpoint(s) without nodeName (10.1.0.5, 10.1.0.6, 10.1.0.7, ...); not counted on any node',
        false,
      ],
    ]);
  });

  it('a deleted Node (endpoints still naming it) is not a backend and is reported', () => {
    const slices = [
      webSlice([
        { ip: '10.1.0.1', node: 'n1' },
        { ip: '10.1.0.2', node: 'n2' },
      ]),
    ];
    const before = run([web()], slices, NODES);
    expect(bk(before.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.2 w1']);
    const after = run(
      [web()],
      slices,
      NODES.filter((n) => n.metadata.name !== 'n2'),
    );
    expect(bk(after.vips[0])).toEqual(['192.168.0.1 w1']);
    expect(after.problems.map((p) => [p.reason, p.message])).toEqual([
      ['UnknownNode', 'endpoints on Node "n2", which does not exist (yet or any more); not a backend'],
    ]);
  });

  it('a Node that is not Ready is excluded under both traffic policies, without a problem', () => {
    const nodes = [NODES[0]!, nd({ name: 'n2', ips: ['192.168.0.2'], ready: false }), NODES[2]!];
    const slices = [
      webSlice([
        { ip: '10.1.0.1', node: 'n1' },
        { ip: '10.1.0.2', node: 'n2' },
      ]),
    ];
    const local = run([web()], slices, nodes);
    expect(bk(local.vips[0])).toEqual(['192.168.0.1 w1']);
    const cluster = run([web({ externalTrafficPolicy: 'Cluster' })], slices, nodes);
    expect(bk(cluster.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.3 w1']);
    expect([...local.problems, ...cluster.problems]).toEqual([]);
  });

  it('ETP switch Local -> Cluster -> Local changes the backends and the health check', () => {
    const slices = [
      webSlice([
        { ip: '10.1.0.1', node: 'n1' },
        { ip: '10.1.0.2', node: 'n1' },
        { ip: '10.1.0.3', node: 'n2', ready: false, serving: true, terminating: true },
      ]),
    ];
    const cache = new TranslationCache();
    const t = (s: Service) => cache.translate({ loadBalancerClass: LB, pool: null, allowed: ANYWHERE, services: [s], slices, nodes: NODES }); // prettier-ignore
    const local = t(web());
    expect(bk(local.vips[0])).toEqual(['192.168.0.1 w2', '192.168.0.2 drain w1']);
    // Cluster (the API drops healthCheckNodePort): every Ready node, weight 1, no drain; TCP to the nodePort.
    const cluster = t(
      web({
        externalTrafficPolicy: 'Cluster',
        healthCheckNodePort: undefined,
        ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
      }),
    );
    expect(bk(cluster.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.2 w1', '192.168.0.3 w1']);
    expect(cluster.vips[0]!.healthCheck).toMatchObject({ type: 'tcp', port: 30080 });
    // No externalTrafficPolicy at all is Cluster too; without a nodePort the check is TCP to the port.
    const dflt = t(
      svc({ name: 'web', vip: '203.0.113.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
    );
    expect(bk(dflt.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.2 w1', '192.168.0.3 w1']);
    expect(dflt.vips[0]!.healthCheck).toMatchObject({ type: 'tcp', port: 80 });
    expect(bk(t(web()).vips[0])).toEqual(bk(local.vips[0]));
  });

  it('ETP Local without a healthCheckNodePort falls back to a TCP check of the node', () => {
    const r = run(
      [web({ healthCheckNodePort: undefined })],
      [webSlice([{ ip: '10.1.0.1', node: 'n1' }])],
      NODES,
    );
    expect(r.vips[0]!.healthCheck).toMatchObject({ type: 'tcp', port: 80 });
  });

  it('annotation switch pod <-> node: Pod IPs (targetPort must equal port) vs node IPs (any targetPort)', () => {
    const same = (mode: 'pod' | 'node') =>
      svc({ name: 'web', vip: '203.0.113.10', backendMode: mode, externalTrafficPolicy: 'Local' });
    const slices = [
      sl({
        name: 'web-a',
        service: 'web',
        endpoints: [
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n2' },
        ],
      }),
    ];
    const pod = run([same('pod')], slices, NODES);
    expect(bk(pod.vips[0])).toEqual(['10.1.0.1 w1', '10.1.0.2 w1']);
    expect(pod.vips[0]!.healthCheck).toBeNull();
    const nodeMode = run([same('node')], slices, NODES);
    expect(bk(nodeMode.vips[0])).toEqual(['192.168.0.1 w1', '192.168.0.2 w1']);
    expect(nodeMode.vips[0]!.healthCheck).toMatchObject({ type: 'tcp', port: 80 });
    // targetPort 8080 in pod mode: not programmed (DSR keeps the port); in node mode: programmed.
    const mismatch = [webSlice([{ ip: '10.1.0.1', node: 'n1' }])];
    const podBad = run([web({ backendMode: 'pod' })], mismatch, NODES);
    expect(podBad.vips).toEqual([]);
    expect(reasons(podBad.problems)).toEqual(['TargetPortMismatch']);
    const nodeOk = run([web({ backendMode: 'node' })], mismatch, NODES);
    expect(bk(nodeOk.vips[0])).toEqual(['192.168.0.1 w1']);
    expect(nodeOk.problems).toEqual([]);
  });

  it('a bad backend-mode value rejects that Service only, with an error naming annotation and value', () => {
    const r = run(
      [
        web({ backendMode: 'nodes' }),
        svc({ name: 'api', vip: '203.0.113.11', externalTrafficPolicy: 'Local' }),
      ],
      [
        webSlice([{ ip: '10.1.0.1', node: 'n1' }]),
        sl({ name: 'api-a', service: 'api', endpoints: [{ ip: '10.2.0.1', node: 'n3' }] }),
      ],
      NODES,
    );
    expect(r.vips.map((v) => [v.name, bk(v)])).toEqual([['k8s.default.api.80-tcp', ['192.168.0.3 w1']]]);
    expect(r.problems).toEqual([
      {
        namespace: 'default',
        name: 'web',
        uid: '',
        reason: 'InvalidAnnotation',
        message:
          'metadata.annotations["peak-xdp.io/backend-mode"]: "nodes" is not "node" or "pod"; Service not programmed',
        blocking: true,
      },
    ]);
  });

  it('backend-weights in node mode are keyed by node name or node address (0 keeps a node out)', () => {
    const r = run(
      [web({ annotations: { 'peak-xdp.io/backend-weights': 'n1=7, 192.168.0.2=0' } })],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n2' },
          { ip: '10.1.0.3', node: 'n3' },
        ]),
      ],
      NODES,
    );
    expect(bk(r.vips[0])).toEqual(['192.168.0.1 w7', '192.168.0.2 w0', '192.168.0.3 w1']);
    // A bad weights annotation keeps the endpoint counts (and says so).
    const bad = run(
      [web({ annotations: { 'peak-xdp.io/backend-weights': 'n1=lots' } })],
      [
        webSlice([
          { ip: '10.1.0.1', node: 'n1' },
          { ip: '10.1.0.2', node: 'n1' },
        ]),
      ],
      NODES,
    );
    expect(bk(bad.vips[0])).toEqual(['192.168.0.1 w2']);
    expect(bad.problems.map((p) => [p.reason, p.message, p.blocking])).toEqual([
      [
        'InvalidAnnotation',
        'metadata.annotations["peak-xdp.io/backend-weights"]: "n1=lots" is not key=weight with a weight 0-65535; using each node\'s ready-endpoint count',
        false,
      ],
    ]);
  });

  it('without Nodes (none listed) a node-mode VIP has no backends, and each endpoint node is reported', () => {
    const r = translate({
      loadBalancerClass: LB,
      pool: null,
      allowed: ANYWHERE,
      services: [web()],
      slices: [webSlice([{ ip: '10.1.0.1', node: 'n1' }])],
    });
    expect(r.vips[0]!.backends).toEqual([]);
    expect(reasons(r.problems)).toEqual(['UnknownNode']);
  });

  it('health checks share one probe per node across a Service’s ports and VIPs', () => {
    const r = run(
      [
        web({
          vip: '203.0.113.10',
          ports: [
            { name: 'http', port: 80, targetPort: 8080 },
            { name: 'https', port: 443, targetPort: 8443 },
          ],
        }),
      ],
      [
        sl({
          name: 'web-a',
          service: 'web',
          ports: [
            { name: 'http', port: 8080 },
            { name: 'https', port: 8443 },
          ],
          endpoints: [
            { ip: '10.1.0.1', node: 'n1' },
            { ip: '10.1.0.2', node: 'n2' },
            { ip: '10.1.0.3', node: 'n2' },
          ],
        }),
      ],
      NODES,
    );
    expect(r.vips).toHaveLength(2);
    const members = r.vips.flatMap((v) =>
      v.backends.map((b) => ({ address: b.address, check: v.healthCheck! })),
    );
    expect(members).toHaveLength(4);
    const groups = new Map<string, typeof members>();
    for (const m of members) {
      const k = probeKey(m.address, m.check);
      groups.set(k, [...(groups.get(k) ?? []), m]);
    }
    const probes = [...groups.values()].map((g) => ({ members: g, check: probeCheck(g, (m) => m.check) }));
    expect(probes.map((g) => [g.check.type, g.check.port, g.members.length])).toEqual([
      ['tcp', 31234, 2],
      ['tcp', 31234, 2],
    ]);
  });
});

describe('TranslationCache with Nodes', () => {
  const meta = <T extends { metadata: object }>(o: T, rv: string): T => ({
    ...o,
    metadata: { ...o.metadata, resourceVersion: rv },
  });

  it('a Node change re-translates only the Services with endpoints on it (and Cluster-policy ones)', () => {
    const n = 20;
    const nodes = Array.from({ length: n }, (_, i) => meta(nd({ name: `n${i}`, ips: [`192.168.1.${i + 1}`] }), `${i + 1}`)); // prettier-ignore
    const services = [
      ...Array.from({ length: n }, (_, i) =>
        meta(svc({ name: `s${i}`, vip: `203.0.113.${i + 1}`, externalTrafficPolicy: 'Local' }), `${100 + i}`),
      ),
      meta(svc({ name: 'everywhere', vip: '203.0.113.200', externalTrafficPolicy: 'Cluster' }), '200'),
      meta(svc({ name: 'pods', vip: '203.0.113.201', backendMode: 'pod' }), '201'),
    ];
    const slices = [
      ...Array.from({ length: n }, (_, i) =>
        meta(
          sl({ name: `s${i}-a`, service: `s${i}`, endpoints: [{ ip: `10.1.${i}.1`, node: `n${i}` }] }),
          `${300 + i}`,
        ),
      ),
      meta(sl({ name: 'pods-a', service: 'pods', endpoints: [{ ip: '10.9.0.1', node: 'n3' }] }), '400'),
    ];
    const cache = new TranslationCache();
    const t = (ns: Node[]) =>
      cache.translate({ loadBalancerClass: LB, pool: null, allowed: ANYWHERE, services, slices, nodes: ns });
    const first = t(nodes);
    expect(cache.lastTranslated).toBe(n + 2);
    expect(first.vips).toHaveLength(n + 2);
    // A relist (new objects, same resourceVersions and content): nothing re-translated.
    t(nodes.map((x) => JSON.parse(JSON.stringify(x)) as Node));
    expect(cache.lastTranslated).toBe(0);
    // A change of n3 that node mode does not read (a label, a heartbeat): nothing re-translated.
    const relabel = nodes.map((x, i) => (i === 3 ? meta({ ...x, metadata: { ...x.metadata, labels: { a: 'b' } } }, '999') : x)); // prettier-ignore
    const same = t(relabel);
    expect(cache.lastTranslated).toBe(0);
    same.vips.forEach((v, i) => expect(v).toBe(first.vips[i]));
    // n3 becomes NotReady: s3 and the Cluster Service only (the pod-mode one does not read Nodes).
    const down = relabel.map((x, i) => (i === 3 ? meta(nd({ name: 'n3', ips: ['192.168.1.4'], ready: false }), '1000') : x)); // prettier-ignore
    const second = t(down);
    expect(cache.lastTranslated).toBe(2);
    const byName = (r: typeof first) => new Map(r.vips.map((v) => [v.name, v]));
    const a = byName(first);
    const b = byName(second);
    expect(b.get('k8s.default.s3.80-tcp')!.backends).toEqual([]);
    expect(b.get('k8s.default.everywhere.80-tcp')!.backends).toHaveLength(n - 1);
    let kept = 0;
    for (const [name, v] of b)
      if (name !== 'k8s.default.s3.80-tcp' && name !== 'k8s.default.everywhere.80-tcp') {
        expect(v).toBe(a.get(name));
        kept++;
      }
    expect(kept).toBe(n);
    // n5 deleted: s5 and the Cluster Service.
    t(down.filter((x) => x.metadata.name !== 'n5'));
    expect(cache.lastTranslated).toBe(2);
    // A new node without endpoints: only the Cluster Service.
    t([...down.filter((x) => x.metadata.name !== 'n5'), nd({ name: 'new', ips: ['192.168.2.1'] })]);
    expect(cache.lastTranslated).toBe(1);
  });

  type Op =
    | { kind: 'node'; i: number; ready: boolean; v4: boolean; v6: boolean }
    | { kind: 'deleteNode'; i: number }
    | {
        kind: 'slice';
        svc: number;
        eps: { ip: number; node: number | null; state: 'up' | 'drain' | 'gone' }[];
      }
    | { kind: 'service'; svc: number; mode: 'node' | 'pod' | 'bad'; etp: 'Local' | 'Cluster' };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('node' as const), i: fc.nat(4), ready: fc.boolean(), v4: fc.boolean(), v6: fc.boolean() }), // prettier-ignore
    fc.record({ kind: fc.constant('deleteNode' as const), i: fc.nat(4) }),
    fc.record({
      kind: fc.constant('slice' as const),
      svc: fc.nat(2),
      eps: fc.array(
        fc.record({
          ip: fc.nat(9),
          node: fc.option(fc.nat(5), { nil: null }),
          state: fc.constantFrom('up' as const, 'drain' as const, 'gone' as const),
        }),
        { maxLength: 6 },
      ),
    }),
    fc.record({
      kind: fc.constant('service' as const),
      svc: fc.nat(2),
      mode: fc.constantFrom('node' as const, 'pod' as const, 'bad' as const),
      etp: fc.constantFrom('Local' as const, 'Cluster' as const),
    }),
  );

  it('after any sequence of Node, slice and Service changes equals translating everything', () => {
    let checked = 0;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => {
        let rv = 1;
        const nodes = new Map<number, Node>();
        const services = new Map<number, Service>();
        const slices = new Map<number, EndpointSlice>();
        for (let s = 0; s < 3; s++)
          services.set(s, meta(svc({ name: `s${s}`, vip: `203.0.113.${s + 1},2001:db8::${s + 1}`, externalTrafficPolicy: 'Local' }), `${rv++}`)); // prettier-ignore
        const cache = new TranslationCache();
        for (const op of ops) {
          if (op.kind === 'node')
            nodes.set(op.i, meta(nd({ name: `n${op.i}`, ready: op.ready, ips: [...(op.v4 ? [`192.168.0.${op.i + 1}`] : []), ...(op.v6 ? [`fd00::${op.i + 1}`] : [])] }), `${rv++}`)); // prettier-ignore
          else if (op.kind === 'deleteNode') nodes.delete(op.i);
          else if (op.kind === 'slice') {
            const eps: EndpointSpec[] = op.eps.map((e) => ({
              ip: `10.1.${op.svc}.${e.ip}`,
              ...(e.node === null ? {} : { node: `n${e.node}` }),
              ...(e.state === 'up' ? {} : e.state === 'drain' ? { ready: false, serving: true, terminating: true } : { ready: false, serving: false }), // prettier-ignore
            }));
            slices.set(op.svc, meta(sl({ name: `s${op.svc}-a`, service: `s${op.svc}`, endpoints: eps }), `${rv++}`)); // prettier-ignore
          } else
            services.set(op.svc, meta(svc({ name: `s${op.svc}`, vip: `203.0.113.${op.svc + 1},2001:db8::${op.svc + 1}`, externalTrafficPolicy: op.etp, backendMode: op.mode === 'bad' ? 'Pod' : op.mode }), `${rv++}`)); // prettier-ignore
          const input = {
            loadBalancerClass: LB,
            pool: null,
            allowed: ANYWHERE,
            services: [...services.values()],
            slices: [...slices.values()],
            nodes: [...nodes.values()],
          };
          expect(cache.translate(input)).toEqual(translate(input));
          checked++;
        }
      }),
      { numRuns: 300 },
    );
    expect(checked).toBeGreaterThan(300);
  });
});
