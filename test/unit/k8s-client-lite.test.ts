// connectKube on the lite path (a token kubeconfig: @kubernetes/client-node is not loaded, so this runs in
// jest) against the fake API server: lists, watch events and their end (410, a cut stream, stop), status
// patches, Events, Nodes and Leases, and one connection for many writes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectKube, KubeApi } from '../../src/sources/kubernetes/client';
import type { WatchEventType } from '../../src/sources/kubernetes/reflector';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { node, service, slice } from '../helpers/k8s-objects';

interface Watched {
  events: { type: WatchEventType; name: string }[];
  done: Promise<unknown>;
  stop: () => void;
}

async function watch(api: KubeApi, resourceVersion: string): Promise<Watched> {
  const events: Watched['events'] = [];
  let done!: (e: unknown) => void;
  const ended = new Promise<unknown>((r) => (done = r));
  const h = await api.endpointSlices.watch({
    resourceVersion,
    onEvent: (type, object) =>
      events.push({ type, name: (object as { metadata?: { name?: string } }).metadata?.name ?? '' }),
    onDone: (err) => done(err),
  });
  return { events, done: ended, stop: () => h.stop() };
}

async function until(what: string, pred: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`not seen within 5 s: ${what}`);
}

describe('connectKube (lite) against the fake API server', () => {
  let fake: FakeApiServer;
  let dir: string;
  let api: Awaited<ReturnType<typeof connectKube>>;

  beforeEach(async () => {
    fake = new FakeApiServer();
    await fake.start();
    dir = mkdtempSync(join(tmpdir(), 'k18-client-'));
    fake.writeKubeconfig(join(dir, 'kubeconfig'));
    api = await connectKube({ kubeconfig: join(dir, 'kubeconfig'), pageSize: 2 });
  });
  afterEach(async () => {
    api.close?.();
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('does not need the client for a token kubeconfig, lists every page, and sends the token', async () => {
    expect(api.client).toEqual({ kind: 'lite' });
    for (let i = 1; i <= 5; i++) fake.upsert('services', service({ name: `s${i}` }));
    fake.upsert('nodes', node({ name: 'n1', ips: ['10.0.0.1'] }));
    const list = await api.services.list();
    expect(list.items.map((s) => s.metadata.name)).toEqual(['s1', 's2', 's3', 's4', 's5']);
    expect(list.resourceVersion).toBe(fake.resourceVersion());
    expect((await api.nodes.list()).items.map((n) => n.metadata.name)).toEqual(['n1']);
    expect((await api.getNode('n1'))?.metadata.name).toBe('n1');
    expect(await api.getNode('absent')).toBeNull();
    expect(fake.requests.every((r) => r.authorization === 'Bearer fake-token')).toBe(true);
  });

  it('delivers watch events from a resourceVersion and ends on stop, on 410 and on a cut stream', async () => {
    fake.upsert('endpointslices', slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.1.0.1' }] }));
    const rv = fake.resourceVersion();
    fake.upsert('endpointslices', slice({ name: 'b-1', service: 'b', endpoints: [{ ip: '10.1.0.2' }] }));
    const w = await watch(api, rv);
    // From rv: only what came after it, then live events.
    await until('the event after rv', () => w.events.length === 1);
    fake.upsert('endpointslices', slice({ name: 'a-1', service: 'a', endpoints: [{ ip: '10.1.0.3' }] }));
    fake.remove('endpointslices', 'default', 'b-1');
    await until('live events', () => w.events.length === 3);
    expect(w.events).toEqual([
      { type: 'ADDED', name: 'b-1' },
      { type: 'MODIFIED', name: 'a-1' },
      { type: 'DELETED', name: 'b-1' },
    ]);
    w.stop();
    expect(await w.done).toBeNull();

    // The fake forgets a watch whose client went away.
    await until('the stopped watch is gone', () => fake.activeWatches('endpointslices') === 0);

    // 410 as an ERROR event in the stream, as the API server sends it.
    const gone = await watch(api, fake.resourceVersion());
    await until('the watch is open', () => fake.activeWatches('endpointslices') === 1);
    fake.expireWatches();
    await gone.done;
    expect(gone.events.map((e) => e.type)).toEqual(['ERROR']);

    // A resourceVersion compacted away, answered with HTTP 410: the error carries code 410.
    fake.goneMode = 'http';
    const old = await watch(api, '1');
    expect(((await old.done) as { code?: number }).code).toBe(410);

    // A connection cut mid-stream ends the watch with an error (the reflector resumes with backoff).
    await until('the ended watches are gone', () => fake.activeWatches('endpointslices') === 0);
    const cut = await watch(api, fake.resourceVersion());
    await until('the watch is open', () => fake.activeWatches('endpointslices') === 1);
    fake.dropWatches();
    const err = (await cut.done) as { message?: unknown } | null;
    expect(err).not.toBeNull();
    expect(String(err?.message)).toMatch(/aborted|the stream was cut|ECONNRESET|socket hang up/);
  });

  it('patches status and writes Events over kept-alive connections, and manages a Lease', async () => {
    for (let i = 0; i < 50; i++) fake.upsert('services', service({ name: `w${i}` }));
    const before = fake.connections;
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        api.patchServiceStatus({
          namespace: 'default',
          name: `w${i}`,
          ingress: [{ ip: `10.9.0.${i}`, ipMode: 'VIP' }],
        }),
      ),
    );
    expect(fake.get('services', 'default', 'w49')?.status?.loadBalancer?.ingress).toEqual([
      { ip: '10.9.0.49', ipMode: 'VIP' },
    ]);
    await api.createEvent({
      namespace: 'default',
      service: { name: 'w1', uid: 'u-1' },
      type: 'Warning',
      reason: 'TargetPortMismatch',
      message: 'm',
      reporter: 'node-a',
    });
    const ev = fake.list('events')[0]!;
    expect(ev).toMatchObject({
      involvedObject: { kind: 'Service', name: 'w1', uid: 'u-1' },
      reason: 'TargetPortMismatch',
      type: 'Warning',
      source: { component: 'peak-xdp', host: 'node-a' },
    });
    expect(typeof ev.firstTimestamp).toBe('string');
    const opened = fake.connections - before;
    console.log(`50 status writes (all at once) and an Event opened ${opened} connection(s)`);
    expect(opened).toBeLessThanOrEqual(16);

    const lease = { namespace: 'kube-system', name: 'peak-xdp' };
    expect(await api.getLease(lease)).toBeNull();
    const spec = {
      holderIdentity: 'node-a',
      leaseDurationSeconds: 15,
      acquireTime: '2026-12-02T01:00:00.000000Z',
      renewTime: '2026-12-02T01:00:00.000000Z',
      leaseTransitions: 0,
    };
    expect(await api.createLease({ ...lease, spec })).toBe(true);
    expect(await api.createLease({ ...lease, spec })).toBe(false); // 409 AlreadyExists
    const got = await api.getLease(lease);
    expect(got?.spec).toEqual(spec);
    const renewed = { ...spec, renewTime: '2026-12-02T01:00:05.000000Z' };
    expect(await api.updateLease({ ...lease, spec: renewed, resourceVersion: got!.resourceVersion })).toBe(
      true,
    );
    // A stale resourceVersion: someone else wrote first.
    expect(await api.updateLease({ ...lease, spec, resourceVersion: got!.resourceVersion })).toBe(false);
    expect((await api.getLease(lease))?.spec.renewTime).toBe('2026-12-02T01:00:05.000000Z');
  });
});
