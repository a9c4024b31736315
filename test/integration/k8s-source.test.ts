// The Kubernetes source in a child process against the fake API server: VIPs from Services and EndpointSlices,
// drain, deletion, wrong class, targetPort Events, 410 / dropped / unreachable API, and event-to-update latency.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { Runner, RunnerLine, startRunner } from '../helpers/k8s-process';
import { service, slice } from '../helpers/k8s-objects';
import { setTimeout as sleep } from 'node:timers/promises';

const FAST = {
  // Requested addresses must be allowed (kubernetes.allowedAddresses); the fixtures use 203.0.113.0/24.
  allowedAddresses: ['203.0.113.0/24'],
  leaderElection: { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 },
  backoff: { initialMs: 50, maxMs: 400 },
};

interface Vip {
  name: string;
  address: string;
  port: number;
  backends: { address: string; drain: boolean; weight: number }[];
}

const vipsOf = (l: RunnerLine): Vip[] => l.vips as Vip[];
const backendsOf = (l: RunnerLine, name: string): string[] =>
  (vipsOf(l).find((v) => v.name === name)?.backends ?? []).map(
    (b) => `${b.address}${b.drain ? ':drain' : ''}`,
  );

describe('KubernetesSource against the fake API server', () => {
  let api: FakeApiServer;
  let dir: string;
  let kubeconfig: string;
  const runners: Runner[] = [];

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'peak-k8s-'));
    kubeconfig = join(dir, 'kubeconfig');
    api.writeKubeconfig(kubeconfig);
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.kill();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = (nodeName: string, extra: object = {}): Runner => {
    const r = startRunner({ kubeconfig, nodeName, ...FAST, ...extra });
    runners.push(r);
    return r;
  };
  /** The next published VIP set (after line index `from`) that satisfies pred. */
  /** The first published VIP set matching pred, searching from line `from` (default: every line so far). */
  const nextVips = (r: Runner, pred: (l: RunnerLine) => boolean, what: string, from?: number) =>
    r.waitFor((l) => l.ev === 'vips' && pred(l), { what, timeoutMs: 10_000, from });

  it('programs a Service, follows scaling and drain, ignores other classes, removes a deleted Service', async () => {
    api.upsert('services', service({ name: 'web', vip: '203.0.113.10' }));
    api.upsert('services', service({ name: 'theirs', vip: '203.0.113.11', lbClass: 'other.io/lb' }));
    api.upsert('services', service({ name: 'plain', vip: '203.0.113.12', lbClass: null }));
    api.upsert('endpointslices', slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }));
    api.upsert(
      'endpointslices',
      slice({ name: 'theirs-1', service: 'theirs', endpoints: [{ ip: '10.2.0.1' }] }),
    );
    const r = start('node-a');
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    const first = r.vipSets()[0]!;
    expect(vipsOf(first).map((v) => [v.name, v.address, v.port])).toEqual([
      ['k8s.default.web.80-tcp', '203.0.113.10', 80],
    ]);
    expect(backendsOf(first, 'k8s.default.web.80-tcp')).toEqual(['10.1.0.1']);

    // Scale up: a second slice and more endpoints.
    api.upsert(
      'endpointslices',
      slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }, { ip: '10.1.0.2' }] }),
    );
    api.upsert('endpointslices', slice({ name: 'web-2', service: 'web', endpoints: [{ ip: '10.1.0.3' }] }));
    await nextVips(r, (l) => backendsOf(l, 'k8s.default.web.80-tcp').length === 3, 'scale up to 3');
    // Terminating endpoint: kept for its flows, no new ones.
    api.upsert(
      'endpointslices',
      slice({
        name: 'web-1',
        service: 'web',
        endpoints: [{ ip: '10.1.0.1' }, { ip: '10.1.0.2', ready: false, serving: true, terminating: true }],
      }),
    );
    const drained = await nextVips(
      r,
      (l) => backendsOf(l, 'k8s.default.web.80-tcp').includes('10.1.0.2:drain'),
      'drain',
    );
    expect(backendsOf(drained, 'k8s.default.web.80-tcp')).toEqual(['10.1.0.1', '10.1.0.2:drain', '10.1.0.3']);
    // Scale down: the terminating pod is gone, a slice is deleted (only sets published from here count:
    // the very first set also had the single backend 10.1.0.1).
    const beforeScaleDown = r.lines.length;
    api.upsert('endpointslices', slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }));
    api.remove('endpointslices', 'default', 'web-2');
    await nextVips(
      r,
      (l) => backendsOf(l, 'k8s.default.web.80-tcp').join() === '10.1.0.1',
      'scale down to 1',
      beforeScaleDown,
    );
    // Service deleted: its VIP leaves the set.
    api.remove('services', 'default', 'web');
    const empty = await nextVips(r, (l) => vipsOf(l).length === 0, 'empty set');
    expect(vipsOf(empty)).toEqual([]);
    // Services of other classes never showed up.
    for (const l of r.vipSets()) expect(vipsOf(l).map((v) => v.address)).not.toContain('203.0.113.11');
    for (const l of r.vipSets()) expect(vipsOf(l).map((v) => v.address)).not.toContain('203.0.113.12');
    expect(await r.stop()).toBe(0);
  });

  it('loads @kubernetes/client-node only for what the lite kubeconfig reader leaves to it (here impersonation)', async () => {
    api.upsert('services', service({ name: 'web', vip: '203.0.113.10' }));
    api.upsert('endpointslices', slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }));
    const asKubeconfig = join(dir, 'kubeconfig-as');
    writeFileSync(
      asKubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: fake, cluster: {server: "${api.url}", insecure-skip-tls-verify: true}}]`,
        'users: [{name: fake, user: {token: fake-token, as: lb-operator}}]',
        'contexts: [{name: fake, context: {cluster: fake, user: fake}}]',
        'current-context: fake',
        '',
      ].join('\n'),
    );
    const r = startRunner({ kubeconfig: asKubeconfig, nodeName: 'node-a', ...FAST });
    runners.push(r);
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    expect(backendsOf(r.vipSets()[0]!, 'k8s.default.web.80-tcp')).toEqual(['10.1.0.1']);
    // The status write went out too, with the client's headers: its KubeConfig applied `as`.
    await r.waitFor((l) => l.ev === 'log' && l.msg === 'kubernetes: status written', {
      what: 'status written',
      timeoutMs: 10_000,
    });
    expect(api.get('services', 'default', 'web')?.status?.loadBalancer?.ingress).toEqual([
      { ip: '203.0.113.10', ipMode: 'VIP' },
    ]);
    const reqs = api.requests.filter((q) => q.path.startsWith('/api/') || q.path.startsWith('/apis/'));
    expect(reqs.length).toBeGreaterThan(0);
    expect(new Set(reqs.map((q) => `${q.authorization}|${q.impersonate}`))).toEqual(
      new Set(['Bearer fake-token|lb-operator']),
    );
    expect(await r.stop()).toBe(0);
  });

  it('does not program a port whose targetPort differs: posts an Event and logs why', async () => {
    api.upsert(
      'services',
      service({
        name: 'shop',
        vip: '203.0.113.20',
        ports: [
          { name: 'http', port: 80, targetPort: 8080 },
          { name: 'https', port: 443 },
        ],
      }),
    );
    api.upsert(
      'endpointslices',
      slice({
        name: 'shop-1',
        service: 'shop',
        ports: [
          { name: 'http', port: 8080 },
          { name: 'https', port: 443 },
        ],
        endpoints: [{ ip: '10.3.0.1' }],
      }),
    );
    const r = start('node-a');
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    expect(vipsOf(r.vipSets()[0]!).map((v) => v.port)).toEqual([443]);
    const log = await r.waitFor((l) => l.ev === 'log' && l.reason === 'TargetPortMismatch', {
      what: 'log line',
    });
    expect(log.msg).toContain('targetPort must equal port');
    // The leader (the only node) reports it as a Warning Event on the Service.
    for (let i = 0; i < 50 && api.list('events').length === 0; i++) await sleep(100);
    const events = api.list('events');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      type: 'Warning',
      reason: 'TargetPortMismatch',
      involvedObject: { kind: 'Service', name: 'shop', namespace: 'default' },
      source: { component: 'peak-xdp', host: 'node-a' },
    });
    expect(events[0]!.message).toContain('8080');
    // Fixing the Service programs the port; the problem no longer shows.
    api.upsert(
      'services',
      service({
        name: 'shop',
        vip: '203.0.113.20',
        ports: [
          { name: 'http', port: 80 },
          { name: 'https', port: 443 },
        ],
      }),
    );
    api.upsert(
      'endpointslices',
      slice({
        name: 'shop-1',
        service: 'shop',
        ports: [
          { name: 'http', port: 80 },
          { name: 'https', port: 443 },
        ],
        endpoints: [{ ip: '10.3.0.1' }],
      }),
    );
    await nextVips(r, (l) => vipsOf(l).length === 2, 'both ports');
    expect((await r.status()).status.problems).toEqual([]);
  });

  it('on 410 Gone (ERROR event and HTTP 410) re-lists, finds deletions, never flushes', async () => {
    api.upsert('services', service({ name: 'a', vip: '203.0.113.1' }));
    api.upsert('services', service({ name: 'b', vip: '203.0.113.2' }));
    api.upsert('endpointslices', slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.0.0.1' }] }));
    const r = start('node-a');
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    const before = r.vipSets().length;

    // In-stream ERROR 410: changes made meanwhile, including a deletion, must be picked up by the re-list.
    api.setUnavailable(true);
    await sleep(200);
    api.remove('services', 'default', 'b');
    api.upsert(
      'endpointslices',
      slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }] }),
    );
    api.compact();
    api.setUnavailable(false);
    const converged = await nextVips(
      r,
      (l) => vipsOf(l).length === 1 && backendsOf(l, 'k8s.default.a.80-tcp').length === 2,
      'converged after 410 on resume',
    );
    expect(vipsOf(converged).map((v) => v.address)).toEqual(['203.0.113.1']);

    // ERROR event on open streams.
    // Only sets published from here on: an older two-VIP set (a and b) must not count as "c added".
    const mark = r.lines.length;
    api.upsert('services', service({ name: 'c', vip: '203.0.113.3' }));
    await nextVips(r, (l) => vipsOf(l).some((v) => v.address === '203.0.113.3'), 'c added', mark);
    api.expireWatches();
    api.remove('services', 'default', 'c');
    await nextVips(
      r,
      (l) =>
        vipsOf(l).length === 1 &&
        l.atMs > converged.atMs &&
        !vipsOf(l).some((v) => v.address === '203.0.113.3'),
      'c removed',
    );

    // HTTP 410 on reconnect.
    api.goneMode = 'http';
    api.dropWatches();
    api.upsert('services', service({ name: 'd', vip: '203.0.113.4' }));
    api.compact();
    await nextVips(r, (l) => vipsOf(l).some((v) => v.address === '203.0.113.4'), 'd added after HTTP 410');

    // Never an empty set in between: the datapath kept its state through every disruption.
    for (const l of r.vipSets().slice(before - 1)) expect(vipsOf(l).length).toBeGreaterThan(0);
    const metrics = await r.metrics();
    const gone = /peak_xdp_k8s_relists_total\{kind="services",reason="gone"\} (\d+)/.exec(metrics);
    expect(Number(gone?.[1] ?? 0)).toBeGreaterThanOrEqual(2);
    expect(metrics).toMatch(/peak_xdp_k8s_watch_events_total\{kind="services",type="ADDED"\} \d+/);
    expect(metrics).toMatch(/peak_xdp_k8s_event_to_datapath_seconds_count \d+/);
  });

  it('keeps the last state while the API server is unreachable, reports not ready, then converges', async () => {
    api.upsert('services', service({ name: 'a', vip: '203.0.113.1' }));
    api.upsert('endpointslices', slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.0.0.1' }] }));
    const r = start('node-a', { watchIdleTimeoutMs: 3000 });
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    expect((await r.status()).ready).toBe(true);
    const published = r.vipSets().length;
    api.setUnavailable(true);
    let degraded: RunnerLine | null = null;
    for (let i = 0; i < 40 && degraded === null; i++) {
      const s = await r.status();
      if (!s.ready) degraded = s;
      else await sleep(100);
    }
    expect(degraded).not.toBeNull();
    expect(degraded!.status).toMatchObject({ synced: true, connected: false });
    await sleep(1500); // several reconnect attempts while down
    expect(r.vipSets().length).toBe(published); // nothing published, nothing flushed
    const down = await r.metrics();
    const failed = [...down.matchAll(/peak_xdp_k8s_api_errors_total\{call="[a-zA-Z]+"\} (\d+)/g)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
    expect(failed).toBeGreaterThan(2); // repeated reconnect attempts, backed off
    api.setUnavailable(false);
    api.upsert(
      'endpointslices',
      slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.9' }] }),
    );
    await nextVips(
      r,
      (l) => backendsOf(l, 'k8s.default.a.80-tcp').includes('10.0.0.9'),
      'converged after outage',
    );
    for (let i = 0; i < 40 && !(await r.status()).ready; i++) await sleep(100);
    expect((await r.status()).ready).toBe(true);
  });

  it('measures watch event -> published VIP set latency (prints p50/p99; no timed assertion)', async () => {
    api.upsert('services', service({ name: 'lat', vip: '203.0.113.30' }));
    api.upsert('endpointslices', slice({ name: 'lat-1', service: 'lat', endpoints: [{ ip: '10.4.0.1' }] }));
    const r = start('node-a');
    await r.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    const samples: number[] = [];
    const N = 100;
    for (let i = 0; i < N; i++) {
      const n = 2 + (i % 50);
      const eps = Array.from({ length: n }, (_, j) => ({ ip: `10.4.${j >> 8}.${(j & 255) + 1}` }));
      const from = r.lines.length;
      const t0 = Date.now();
      api.upsert('endpointslices', slice({ name: 'lat-1', service: 'lat', endpoints: eps }));
      const got = await r.waitFor(
        (l) => l.ev === 'vips' && backendsOf(l, 'k8s.default.lat.80-tcp').length === n,
        { from, what: `set ${i}` },
      );
      samples.push(got.atMs - t0);
    }
    samples.sort((a, b) => a - b);
    const p = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
    console.log(
      `k8s event -> onChange latency over ${N} EndpointSlice updates: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, max ${p(1)} ms`,
    );
    expect(samples).toHaveLength(N);
  });
});
