// Two source processes against one fake API server: one Lease holder allocates and writes status; failover works.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { Runner, startRunner } from '../helpers/k8s-process';
import { service, slice } from '../helpers/k8s-objects';
import { setTimeout as sleep } from 'node:timers/promises';

describe('leader election over a coordination.k8s.io Lease', () => {
  let api: FakeApiServer;
  let dir: string;
  const runners: Runner[] = [];

  beforeAll(async () => {
    api = new FakeApiServer();
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'peak-k8s-le-'));
    api.writeKubeconfig(join(dir, 'kubeconfig'));
  });

  afterAll(async () => {
    for (const r of runners) await r.kill();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = (nodeName: string): Runner => {
    const r = startRunner({
      kubeconfig: join(dir, 'kubeconfig'),
      nodeName,
      pool: ['198.51.100.0/29'],
      leaderElection: { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 },
      backoff: { initialMs: 50, maxMs: 400 },
    });
    runners.push(r);
    return r;
  };
  const statusPatches = () => api.requests.filter((q) => q.method === 'PATCH' && q.path.endsWith('/status'));
  const holder = () => api.get('leases', 'peak-xdp-system', 'peak-xdp-leader')?.spec?.holderIdentity ?? null;
  const waitHolder = async (pred: (h: string | null) => boolean, ms: number) => {
    for (let t = 0; t < ms && !pred(holder()); t += 100) await sleep(100);
    return holder();
  };

  it('elects one leader that allocates from the pool; every node programs the VIP; failover on crash and on stop', async () => {
    api.upsert('services', service({ name: 'web' }));
    api.upsert('endpointslices', slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }));
    const a = start('node-a');
    const b = start('node-b');
    await Promise.all(
      [a, b].map((r) => r.waitFor((l) => l.ev === 'ready', { timeoutMs: 15_000, what: 'ready' })),
    );
    const first = await waitHolder((h) => h !== null, 5000);
    expect(['node-a', 'node-b']).toContain(first);
    const [leader, follower] = first === 'node-a' ? [a, b] : [b, a];
    // Both nodes program the pool address the leader wrote to status.
    for (const r of [a, b]) {
      const got = await r.waitFor((l) => l.ev === 'vips' && l.vips.length === 1, { what: 'pool VIP' });
      expect(got.vips[0].address).toBe('198.51.100.1');
    }
    expect(api.get('services', 'default', 'web')!.status.loadBalancer.ingress).toEqual([
      { ip: '198.51.100.1', ipMode: 'VIP' },
    ]);
    expect(statusPatches()).toHaveLength(1);
    expect(statusPatches()[0]!.contentType).toContain('application/merge-patch+json');
    expect((await leader.status()).status.leader).toBe(true);
    expect((await follower.status()).status.leader).toBe(false);
    await sleep(2500); // several renew periods: still one status write, holder unchanged
    expect(statusPatches()).toHaveLength(1);
    expect(holder()).toBe(first);

    // Crash the leader: the follower takes over after the lease duration and serves new Services.
    const crashedAt = Date.now();
    await leader.kill();
    const second = await waitHolder((h) => h !== first, 8000);
    expect(second).toBe(first === 'node-a' ? 'node-b' : 'node-a');
    const takeoverMs = Date.now() - crashedAt;
    console.log(`lease failover after a crash: ${takeoverMs} ms (lease 3 s, retry 1 s)`);
    expect(
      api.get('leases', 'peak-xdp-system', 'peak-xdp-leader')!.spec.leaseTransitions,
    ).toBeGreaterThanOrEqual(1);
    api.upsert('services', service({ name: 'api' }));
    await follower.waitFor(
      (l) => l.ev === 'vips' && l.vips.some((v: { address: string }) => v.address === '198.51.100.2'),
      {
        what: 'second pool VIP',
      },
    );
    expect(api.get('services', 'default', 'api')!.status.loadBalancer.ingress).toEqual([
      { ip: '198.51.100.2', ipMode: 'VIP' },
    ]);

    // A fresh node joins as follower; a graceful stop of the leader releases the Lease for a fast takeover.
    const c = start('node-c');
    await c.waitFor((l) => l.ev === 'ready', { timeoutMs: 15_000, what: 'ready' });
    expect((await c.status()).status.leader).toBe(false);
    const stoppedAt = Date.now();
    expect(await follower.stop()).toBe(0);
    const third = await waitHolder((h) => h === 'node-c', 5000);
    expect(third).toBe('node-c');
    console.log(`lease handover after a graceful stop: ${Date.now() - stoppedAt} ms`);
    expect(statusPatches().length).toBe(2); // no node rewrote a status that was already right
  });
});
