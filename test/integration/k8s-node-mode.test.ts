// Node-mode backends through the real client against the fake API server: Nodes listed and watched (resourceVersion,
// bookmarks, 410), backends following Node Ready/address/deletion and EndpointSlice changes, ETP and annotation switches.
import { mkdtempSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { Runner, RunnerLine, startRunner } from '../helpers/k8s-process';
import { EndpointSpec, node, service, slice } from '../helpers/k8s-objects';

interface Vip {
  name: string;
  address: string;
  port: number;
  backends: { address: string; drain: boolean; weight: number }[];
  healthCheck: { type: string; port: number; path: string } | null;
}

const WEB = 'k8s.default.web.80-tcp';
const API = 'k8s.default.api.80-tcp';
const vipsOf = (l: RunnerLine): Vip[] => l.vips as Vip[];
const backendsOf = (l: RunnerLine, name: string): string =>
  (vipsOf(l).find((v) => v.name === name)?.backends ?? [])
    .map((b) => `${b.address}${b.drain ? ' drain' : ''} w${b.weight}`)
    .join(', ');

describe('node-mode backends against the fake API server', () => {
  let api: FakeApiServer;
  let dir: string;
  let runner: Runner | null = null;

  beforeAll(async () => {
    api = new FakeApiServer();
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'peak-k8n-'));
    api.writeKubeconfig(join(dir, 'kubeconfig'));
  });

  afterAll(async () => {
    await runner?.kill();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const web = (o: Partial<Parameters<typeof service>[0]> = {}) =>
    service({
      name: 'web',
      vip: '203.0.113.10',
      backendMode: null,
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31000,
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
      ...o,
    });
  const webSlice = (endpoints: EndpointSpec[]) =>
    slice({ name: 'web-a', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints });
  /** The first VIP set published after line `from` whose backends of `name` are `want`. */
  const expectBackends = (name: string, want: string, from: number, what: string) =>
    runner!.waitFor((l) => l.ev === 'vips' && backendsOf(l, name) === want, {
      from,
      what: `${what}: ${name} -> [${want}]`,
      timeoutMs: 10_000,
    });

  it('follows Nodes and EndpointSlices through list and watch', async () => {
    api.upsert('nodes', node({ name: 'n1', ips: ['192.168.0.1', 'fd00::1'] }));
    api.upsert('nodes', node({ name: 'n2', ips: ['192.168.0.2'] }));
    api.upsert('nodes', node({ name: 'n3', ips: ['192.168.0.3'] }));
    api.upsert('services', web());
    api.upsert(
      'services',
      service({ name: 'api', vip: '203.0.113.11', backendMode: 'node', externalTrafficPolicy: 'Local' }),
    );
    api.upsert(
      'endpointslices',
      webSlice([
        { ip: '10.1.0.1', node: 'n1' },
        { ip: '10.1.0.2', node: 'n1' },
        { ip: '10.1.0.3', node: 'n2' },
      ]),
    );
    api.upsert(
      'endpointslices',
      slice({ name: 'api-a', service: 'api', endpoints: [{ ip: '10.2.0.1', node: 'n3' }] }),
    );
    runner = startRunner({
      kubeconfig: join(dir, 'kubeconfig'),
      nodeName: 'lb-1',
      allowedAddresses: ['203.0.113.0/24'],
      leaderElection: false,
      backoff: { initialMs: 50, maxMs: 400 },
    });
    const ready = await runner.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    expect(ready.status).toMatchObject({ synced: true, connected: true });
    const first = runner.vipSets()[0]!;
    expect(backendsOf(first, WEB)).toBe('192.168.0.1 w2, 192.168.0.2 w1');
    expect(backendsOf(first, API)).toBe('192.168.0.3 w1');
    expect(vipsOf(first).find((v) => v.name === WEB)!.healthCheck).toMatchObject({
      type: 'tcp',
      port: 31000,
    });
    // The Nodes were listed, then watched from the list's resourceVersion with bookmarks. Readiness follows
    // the lists; the watches open right after, so wait for that (bounded).
    for (let i = 0; i < 100 && api.activeWatches('nodes') === 0; i++) await sleep(50);
    const nodeReqs = api.requests.filter((r) => r.path === '/api/v1/nodes');
    expect(nodeReqs.length).toBeGreaterThanOrEqual(2);
    const watch = nodeReqs.find((r) => r.query.watch === 'true');
    expect(watch?.query).toMatchObject({ allowWatchBookmarks: 'true' });
    expect(Number(watch!.query.resourceVersion)).toBeGreaterThan(0);
    expect(api.activeWatches('nodes')).toBe(1);
    // Nodes are cluster-scoped: GET by name, no namespaced path.
    const one = await fetch(`${api.url}/api/v1/nodes/n1`);
    expect(one.status).toBe(200);
    expect(await one.json()).toMatchObject({ kind: 'Node', metadata: { name: 'n1' } });
    expect((await fetch(`${api.url}/api/v1/namespaces/default/nodes/n1`)).status).toBe(404);

    // Node n2 NotReady (a watch MODIFIED event): out; Ready again: back. api is untouched throughout.
    let mark = runner.lines.length;
    api.upsert('nodes', node({ name: 'n2', ips: ['192.168.0.2'], ready: false }));
    const n2down = await expectBackends(WEB, '192.168.0.1 w2', mark, 'n2 NotReady');
    expect(backendsOf(n2down, API)).toBe('192.168.0.3 w1');
    mark = runner.lines.length;
    api.upsert('nodes', node({ name: 'n2', ips: ['192.168.0.2'] }));
    await expectBackends(WEB, '192.168.0.1 w2, 192.168.0.2 w1', mark, 'n2 Ready');

    // A bookmark moves the resourceVersion on without a change (nothing published for it).
    const sets = runner.vipSets().length;
    expect(api.bookmark()).toBeGreaterThanOrEqual(3);

    // Scale: a new node n4 joins and gets an endpoint; n1 loses one.
    mark = runner.lines.length;
    api.upsert('nodes', node({ name: 'n4', ips: ['192.168.0.4'] }));
    api.upsert(
      'endpointslices',
      webSlice([
        { ip: '10.1.0.1', node: 'n1' },
        { ip: '10.1.0.3', node: 'n2' },
        { ip: '10.1.0.4', node: 'n4' },
      ]),
    );
    await expectBackends(WEB, '192.168.0.1 w1, 192.168.0.2 w1, 192.168.0.4 w1', mark, 'n4 joined');
    expect(runner.vipSets().length).toBeGreaterThan(sets);

    // The last endpoint on n1 terminates (still serving): n1 drains.
    mark = runner.lines.length;
    api.upsert(
      'endpointslices',
      webSlice([
        { ip: '10.1.0.1', node: 'n1', ready: false, serving: true, terminating: true },
        { ip: '10.1.0.3', node: 'n2' },
        { ip: '10.1.0.4', node: 'n4' },
      ]),
    );
    await expectBackends(WEB, '192.168.0.1 drain w1, 192.168.0.2 w1, 192.168.0.4 w1', mark, 'n1 drains');

    // Node n4 deleted while its endpoint is still listed: out, logged, counted.
    mark = runner.lines.length;
    api.remove('nodes', '', 'n4');
    await expectBackends(WEB, '192.168.0.1 drain w1, 192.168.0.2 w1', mark, 'n4 deleted');
    const unknown = await runner.waitFor((l) => l.ev === 'log' && l.reason === 'UnknownNode', {
      from: mark,
      what: 'UnknownNode log',
    });
    expect(unknown.msg).toContain('"n4"');
    expect(await runner.metrics()).toMatch(/peak_xdp_k8s_node_backends_skipped\{reason="UnknownNode"\} 1\b/);

    // n2 loses its IPv4 InternalIP: skipped with a logged reason.
    mark = runner.lines.length;
    api.upsert('nodes', node({ name: 'n2', ips: ['fd00::2'] }));
    await expectBackends(WEB, '192.168.0.1 drain w1', mark, 'n2 without IPv4');
    const missing = await runner.waitFor((l) => l.ev === 'log' && l.reason === 'NodeAddressMissing', {
      from: mark,
      what: 'NodeAddressMissing log',
    });
    expect(missing.msg).toBe(
      'Node "n2" has no IPv4 InternalIP in status.addresses; not a backend of the IPv4 VIP',
    );
    expect(await runner.metrics()).toMatch(
      /peak_xdp_k8s_node_backends_skipped\{reason="NodeAddressMissing"\} 1\b/,
    );

    // 410 Gone on the Node watch: re-list; a change made meanwhile (n2 gets its IPv4 back) is found.
    mark = runner.lines.length;
    api.expireWatches();
    api.upsert('nodes', node({ name: 'n2', ips: ['192.168.0.2', 'fd00::2'] }));
    await expectBackends(WEB, '192.168.0.1 drain w1, 192.168.0.2 w1', mark, 'after 410');
    expect(await runner.metrics()).toMatch(/peak_xdp_k8s_relists_total\{kind="nodes",reason="gone"\} [1-9]/);

    // ETP switch to Cluster: every Ready node with an IPv4 InternalIP, weight 1, no drain; TCP to the nodePort.
    mark = runner.lines.length;
    api.upsert('services', web({ externalTrafficPolicy: 'Cluster', healthCheckNodePort: undefined }));
    const cluster = await expectBackends(
      WEB,
      '192.168.0.1 w1, 192.168.0.2 w1, 192.168.0.3 w1',
      mark,
      'ETP Cluster',
    );
    expect(vipsOf(cluster).find((v) => v.name === WEB)!.healthCheck).toMatchObject({
      type: 'tcp',
      port: 30080,
    });

    // A bad backend-mode value: that Service's VIP goes, with a clear log line; the other one stays.
    mark = runner.lines.length;
    api.upsert('services', web({ backendMode: 'Node' }));
    const rejected = await runner.waitFor((l) => l.ev === 'vips' && !vipsOf(l).some((v) => v.name === WEB), {
      from: mark,
      what: 'web rejected',
    });
    expect(backendsOf(rejected, API)).toBe('192.168.0.3 w1');
    const bad = await runner.waitFor((l) => l.ev === 'log' && l.reason === 'InvalidAnnotation', {
      from: mark,
      what: 'InvalidAnnotation log',
    });
    expect(bad.msg).toBe(
      'metadata.annotations["peak-xdp.io/backend-mode"]: "Node" is not "node" or "pod"; Service not programmed',
    );

    // Annotation switch to pod mode (with targetPort = port): Pod IPs, no health check.
    mark = runner.lines.length;
    api.upsert('services', web({ backendMode: 'pod', ports: [{ name: 'http', port: 80 }] }));
    api.upsert(
      'endpointslices',
      slice({ name: 'web-a', service: 'web', endpoints: [{ ip: '10.1.0.3', node: 'n2' }] }),
    );
    const pod = await expectBackends(WEB, '10.1.0.3 w1', mark, 'pod mode');
    expect(vipsOf(pod).find((v) => v.name === WEB)!.healthCheck).toBeNull();
    const status = await runner.status();
    expect(status.ready).toBe(true);
    const watched = /peak_xdp_k8s_watch_events_total\{kind="nodes",type="MODIFIED"\} (\d+)/.exec(
      await runner.metrics(),
    );
    expect(Number(watched?.[1] ?? 0)).toBeGreaterThanOrEqual(3);
    expect(await runner.stop()).toBe(0);
  });
});
