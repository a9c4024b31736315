// VIP claims against the fake API server: a Service asking for another's pool address, or for an address
// outside kubernetes.pool / allowedAddresses, gets a Warning Event; the holder's status and VIP stay, also
// across a restart of the source.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer, Obj } from '../helpers/fake-apiserver';
import { Runner, RunnerLine, startRunner } from '../helpers/k8s-process';
import { service, slice } from '../helpers/k8s-objects';
import { setTimeout as sleep } from 'node:timers/promises';

interface Vip {
  name: string;
  address: string;
}
const vipsOf = (l: RunnerLine): Vip[] => l.vips as Vip[];
const ingressOf = (o: Obj | undefined): unknown =>
  (o as { status?: { loadBalancer?: { ingress?: unknown } } } | undefined)?.status?.loadBalancer?.ingress;
const withCreated = (o: Obj, ts: string): Obj => ({
  ...o,
  metadata: { ...(o.metadata as object), creationTimestamp: ts },
});

describe('VIP claims against the fake API server', () => {
  let api: FakeApiServer;
  let dir: string;
  let kubeconfig: string;
  const runners: Runner[] = [];

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'peak-k8s-claims-'));
    kubeconfig = join(dir, 'kubeconfig');
    api.writeKubeconfig(kubeconfig);
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.kill();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = (): Runner => {
    const r = startRunner({
      kubeconfig,
      nodeName: 'node-a',
      pool: ['203.0.113.0/24'],
      allowedAddresses: ['198.51.100.7/32'],
      leaderElection: false,
      backoff: { initialMs: 50, maxMs: 400 },
    });
    runners.push(r);
    return r;
  };
  const eventsFor = (name: string): Obj[] =>
    api.list('events').filter((e) => (e.involvedObject as { name?: string } | undefined)?.name === name);
  const waitEvent = async (name: string, reason: string): Promise<Obj> => {
    for (let i = 0; i < 100; i++) {
      const e = eventsFor(name).find((x) => x.reason === reason);
      if (e) return e;
      await sleep(100);
    }
    throw new Error(`no ${reason} Event for ${name}; events: ${JSON.stringify(api.list('events'))}`);
  };

  it('keeps the holder, refuses the newcomer and an out-of-range address with Warning Events, also after a restart', async () => {
    api.upsert('services', withCreated(service({ name: 'db', namespace: 'prod' }), '2026-01-01T00:00:00Z'));
    api.upsert('endpointslices', slice({ name: 'db-1', namespace: 'prod', service: 'db', endpoints: [{ ip: '10.1.0.1' }] })); // prettier-ignore
    const r1 = start();
    await r1.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15_000 });
    for (let i = 0; i < 100 && ingressOf(api.get('services', 'prod', 'db')) === undefined; i++)
      await sleep(100);
    const held = [{ ip: '203.0.113.1', ipMode: 'VIP' }];
    expect(ingressOf(api.get('services', 'prod', 'db'))).toEqual(held);
    await r1.waitFor((l) => l.ev === 'vips' && vipsOf(l).some((v) => v.address === '203.0.113.1'), {
      what: 'db VIP',
      timeoutMs: 10_000,
    });

    // A newer Service in another namespace asks for db's address; another for the cluster's ClusterIP;
    // a third for an allowedAddresses entry (accepted, not from the pool).
    api.upsert('services', withCreated(service({ name: 'evil', namespace: 'dev', vip: '203.0.113.1' }), '2026-01-02T00:00:00Z')); // prettier-ignore
    api.upsert('services', withCreated(service({ name: 'cip', namespace: 'dev', vip: '10.96.0.1' }), '2026-01-02T00:00:00Z')); // prettier-ignore
    api.upsert('services', withCreated(service({ name: 'edge', namespace: 'dev', vip: '198.51.100.7' }), '2026-01-02T00:00:00Z')); // prettier-ignore
    api.upsert('endpointslices', slice({ name: 'evil-1', namespace: 'dev', service: 'evil', endpoints: [{ ip: '10.2.0.1' }] })); // prettier-ignore
    api.upsert('endpointslices', slice({ name: 'edge-1', namespace: 'dev', service: 'edge', endpoints: [{ ip: '10.2.0.2' }] })); // prettier-ignore

    const conflict = await waitEvent('evil', 'AddressConflict');
    expect(conflict).toMatchObject({
      type: 'Warning',
      involvedObject: { kind: 'Service', name: 'evil', namespace: 'dev' },
    });
    expect(conflict.message).toContain('203.0.113.1 is held by Service prod/db');
    const refused = await waitEvent('cip', 'AddressNotAllowed');
    expect(refused.type).toBe('Warning');
    expect(refused.message).toContain('"10.96.0.1"');
    expect(refused.message).toContain('kubernetes.pool: 203.0.113.0/24');
    await r1.waitFor((l) => l.ev === 'vips' && vipsOf(l).some((v) => v.address === '198.51.100.7'), {
      what: 'edge VIP',
      timeoutMs: 10_000,
    });
    for (let i = 0; i < 50 && ingressOf(api.get('services', 'dev', 'edge')) === undefined; i++)
      await sleep(100);
    expect(ingressOf(api.get('services', 'dev', 'edge'))).toEqual([{ ip: '198.51.100.7', ipMode: 'VIP' }]);

    const check = (r: Runner, skip: number): void => {
      expect(ingressOf(api.get('services', 'prod', 'db'))).toEqual(held);
      expect(ingressOf(api.get('services', 'dev', 'evil'))).toBeUndefined();
      expect(ingressOf(api.get('services', 'dev', 'cip'))).toBeUndefined();
      // Sets before the leader first allocated db's address have no db VIP.
      const sets = r.vipSets().slice(skip);
      expect(sets.length).toBeGreaterThan(0);
      for (const l of sets) {
        expect(
          vipsOf(l)
            .filter((v) => v.address === '203.0.113.1')
            .map((v) => v.name),
        ).toEqual(['k8s.prod.db.80-tcp']);
        expect(vipsOf(l).map((v) => v.address)).not.toContain('10.96.0.1');
      }
    };
    check(
      r1,
      r1.vipSets().findIndex((l) => vipsOf(l).some((v) => v.address === '203.0.113.1')),
    );
    expect(eventsFor('evil').filter((e) => e.reason === 'AddressConflict')).toHaveLength(1);
    expect(await r1.stop()).toBe(0);

    // A restart: a fresh process decides the same from the objects alone.
    const r2 = start();
    await r2.waitFor((l) => l.ev === 'ready', { what: 'ready after restart', timeoutMs: 15_000 });
    expect((await r2.status()).status.problems).toMatchObject(
      expect.arrayContaining([
        expect.objectContaining({ name: 'evil', reason: 'AddressConflict' }),
        expect.objectContaining({ name: 'cip', reason: 'AddressNotAllowed' }),
      ]),
    );
    // The new leader's pass (status writes first, then Events) has run once it re-posts the conflict Event.
    for (let i = 0; i < 100 && eventsFor('evil').length < 2; i++) await sleep(100);
    expect(eventsFor('evil').filter((e) => e.reason === 'AddressConflict')).toHaveLength(2);
    check(r2, 0);
    expect(await r2.stop()).toBe(0);
  });
});
