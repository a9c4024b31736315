// `peak-xdp daemon --kubernetes` against the fake API server (in the LB namespace): Services and EndpointSlices
// -> the real maps, next to the file's VIP; drain, class filter, targetPort Event, 410/dropped watch/outage
// without a flush, delete -> BGP withdraw (BIRD), and event -> datapath latency.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { RouterDaemon, startBird, Topology } from '../helpers/bgp-peers';
import { DaemonLab, DaemonProcess, LB_ADDRESS, sleep, VIP, waitUntil } from '../helpers/daemon-lab';
import { RemoteApiServer } from '../helpers/fake-apiserver-process';
import { service, slice } from '../helpers/k8s-objects';
import { describePrivileged } from '../helpers/privileged';

jest.setTimeout(60000);

const NODE = 'lb-a';
const SVC_VIP = '10.0.0.20';
const SVC_NAME = 'k8s.default.svc-a.80-tcp';

/** VIP "address:port" -> backends in its Maglev table (sorted): the address, with "(state)" unless up. */
type Tables = Record<string, string[]>;

async function readTables(dp: KernelDatapath): Promise<Tables> {
  const byId = new Map(
    (await dp.listBackends()).map((b) => [b.id, b.state === 'up' ? b.address : `${b.address}(${b.state})`]),
  );
  const out: Tables = {};
  for (const v of await dp.listVips()) {
    const ids = [...new Set((await dp.readTable(v.id)) ?? [])].filter((id) => id !== 0);
    out[`${v.key.address}:${v.key.port}`] = ids.map((id) => byId.get(id) ?? `missing-${id}`).sort();
  }
  return out;
}

/** Quantile of sorted numbers (nearest rank). */
const quantile = (xs: number[], q: number): number =>
  xs[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)]!;

describePrivileged('daemon --kubernetes (fake API server) on a veth in a namespace', () => {
  const lab = new DaemonLab({ tag: 'k', backends: 3 });
  let api: RemoteApiServer;
  let bird: RouterDaemon;
  let daemon: DaemonProcess;
  let dp: KernelDatapath;
  const kubeconfig = join(lab.dir, 'kubeconfig');
  const be = (i: number): string => lab.backend(i).address;
  const key = (vip: string): string => `${vip}:80`;
  const tables = (): Promise<Tables> => readTables(dp);
  /** Waits until the maps satisfy `pred`; returns the ms it took (throws on timeout with the last view). */
  const until = async (what: string, pred: (t: Tables) => boolean, timeoutMs = 10000): Promise<number> => {
    let last: Tables = {};
    const ms = await waitUntil(
      async () => {
        last = await tables();
        return pred(last);
      },
      { timeoutMs, intervalMs: 5 },
    );
    if (ms === null) throw new Error(`timed out waiting for ${what}; maps: ${JSON.stringify(last)}`);
    return Math.round(ms);
  };
  const setEndpoints = (name: string, eps: Parameters<typeof slice>[0]['endpoints']) =>
    api.upsert('endpointslices', slice({ name: `${name}-x`, service: name, endpoints: eps }));
  /** Reconcile summaries the daemon logged after byte `from` of its log. */
  /** A point in the daemon's log and in time: reconciles that started after it. */
  interface Mark {
    size: number;
    at: number;
  }
  // A sync that started before the mark (the previous test's) may log after it: only later starts count.
  const reconcilesSince = (from: Mark): { vipsDeleted: number; vipsCreated: number }[] =>
    readFileSync(daemon.log, 'utf8')
      .slice(from.size)
      .split('\n')
      .filter((l) => l.includes('"msg":"reconciled"'))
      .map(
        (l) => JSON.parse(l) as { startedAt: string; summary: { vipsDeleted: number; vipsCreated: number } },
      )
      .filter((r) => Date.parse(r.startedAt) >= from.at)
      .map((r) => r.summary);
  const logMark = (): Mark => ({ size: statSync(daemon.log).size, at: Date.now() });
  const metric = async (name: string): Promise<string[]> =>
    (await lab.admin('/metrics')).body.split('\n').filter((l) => l.startsWith(name));

  beforeAll(async () => {
    await lab.start();
    api = await RemoteApiServer.start({ netns: lab.lb });
    api.writeKubeconfig(kubeconfig);
    // BIRD in the router namespace peers with the LB (the Service VIPs are announced like the file's).
    const topo: Topology = {
      id: lab.id,
      router: lab.router,
      dir: lab.dir,
      lbs: [{ ns: lab.lb, v4: LB_ADDRESS, v6: '', routerV4: '10.10.2.1', routerV6: '' }],
      destroy: () => undefined,
    };
    bird = await startBird({ topo, peers: [{ address: LB_ADDRESS, asn: 65001, family: 'ipv4' }] });
    lab.writeConfig({
      ...lab.config({ backends: [1, 2, 3] }),
      // Requested addresses must be allowed: the Services ask for 10.0.0.20 and 10.0.0.30-32.
      kubernetes: { allowedAddresses: ['10.0.0.0/24'] },
      bgp: {
        asn: 65001,
        routerId: LB_ADDRESS,
        gracefulRestartTime: 0,
        peers: [{ address: '10.10.2.1', asn: 65000, holdTime: 3, families: ['ipv4'] }],
      },
    });
    daemon = await lab.startDaemon({
      args: ['--kubernetes', '--kubeconfig', kubeconfig, '--node-name', NODE],
    });
    dp = lab.adopt();
  }, 90000);

  afterAll(async () => {
    dp?.close();
    if (daemon) await lab.signalDaemon(daemon, 'SIGTERM').catch(() => undefined);
    await api?.stop();
    await bird?.stop();
    await lab.cleanup();
  }, 30000);

  it('Service create -> its VIP is programmed next to the file VIP, and announced', async () => {
    expect(Object.keys(await tables())).toEqual([key(VIP)]);
    await api.upsert('services', service({ name: 'svc-a', vip: SVC_VIP }));
    await setEndpoints('svc-a', [{ ip: be(1) }, { ip: be(2) }]);
    const ms = await until('svc-a programmed', (t) => t[key(SVC_VIP)]?.join() === [be(1), be(2)].join());
    console.log(`[k8s] Service + EndpointSlice created -> VIP in the maps after ${ms} ms`);
    const t = await tables();
    expect(t[key(VIP)]).toEqual([be(1), be(2), be(3)]);
    const vips = await lab.cliJson<{ name: string; address: string; backends: number }[]>(['vips']);
    expect(vips.map((v) => [v.name, v.address, v.backends]).sort()).toEqual([
      [SVC_NAME, SVC_VIP, 2],
      ['web', VIP, 3],
    ]);
    const backends = await lab.cliJson<{ address: string; state: string; vip: { name: string } }[]>([
      'backends',
    ]);
    expect(backends.filter((b) => b.vip.name === SVC_NAME).map((b) => [b.address, b.state])).toEqual([
      [be(1), 'up'],
      [be(2), 'up'],
    ]);
    await waitUntil(() => bird.ribNextHops(`${SVC_VIP}/32`).length === 1, { timeoutMs: 10000 });
    expect(bird.ribNextHops(`${SVC_VIP}/32`)).toEqual([LB_ADDRESS]);
  });

  it('scaling endpoints up and down updates the table', async () => {
    await setEndpoints('svc-a', [{ ip: be(1) }, { ip: be(2) }, { ip: be(3) }]);
    const up = await until('3 backends', (t) => t[key(SVC_VIP)]?.length === 3);
    await setEndpoints('svc-a', [{ ip: be(3) }]);
    const down = await until('1 backend', (t) => t[key(SVC_VIP)]?.join() === be(3));
    console.log(`[k8s] scale 2->3: ${up} ms; 3->1: ${down} ms (event to maps, 5 ms polling)`);
    expect((await tables())[key(VIP)]).toEqual([be(1), be(2), be(3)]);
  });

  it('a terminating (still serving) endpoint drains: a draining backend, its slots redirected (no new flows)', async () => {
    await setEndpoints('svc-a', [{ ip: be(1) }, { ip: be(2) }]);
    await until('2 backends', (t) => t[key(SVC_VIP)]?.length === 2);
    await setEndpoints('svc-a', [
      { ip: be(1) },
      { ip: be(2), ready: false, serving: true, terminating: true },
    ]);
    // It stays a member of the table (its established flows keep it), but its slots name be1 now.
    await until('be2 out of the table', (t) => t[key(SVC_VIP)]?.join() === be(1));
    const backends = await lab.cliJson<{ address: string; state: string; vip: { name: string } }[]>([
      'backends',
    ]);
    expect(
      backends
        .filter((b) => b.vip.name === SVC_NAME)
        .map((b) => [b.address, b.state])
        .sort(),
    ).toEqual([
      [be(1), 'up'],
      [be(2), 'draining'],
    ]);
  });

  it('another loadBalancerClass is ignored; targetPort != port is not programmed and gets an Event', async () => {
    const reqStart = (await api.requests()).length;
    await api.upsert('services', service({ name: 'svc-other', vip: '10.0.0.30', lbClass: 'other.io/lb' }));
    await setEndpoints('svc-other', [{ ip: be(1) }]);
    await api.upsert('services', service({ name: 'svc-tp', vip: '10.0.0.31', ports: [{ name: 'http', port: 80, targetPort: 8080 }] })); // prettier-ignore
    await setEndpoints('svc-tp', [{ ip: be(1) }]);
    // A control Service created after both: once it is programmed, the two before it were seen.
    await api.upsert('services', service({ name: 'svc-ok', vip: '10.0.0.32' }));
    await setEndpoints('svc-ok', [{ ip: be(2) }]);
    await until('svc-ok programmed', (t) => t[key('10.0.0.32')]?.length === 1);
    const t = await tables();
    expect(t[key('10.0.0.30')]).toBeUndefined();
    expect(t[key('10.0.0.31')]).toBeUndefined();
    let event: { reason?: string; involvedObject?: { name?: string }; message?: string } | undefined;
    await waitUntil(
      async () => {
        const reqs = await api.requests(reqStart);
        event = reqs
          .filter((r) => r.method === 'POST' && r.path.endsWith('/events'))
          .map((r) => r.body as NonNullable<typeof event>)
          .find((b) => b.reason === 'TargetPortMismatch' && b.involvedObject?.name === 'svc-tp');
        return event !== undefined;
      },
      { timeoutMs: 10000, intervalMs: 100 },
    );
    expect(event).toBeDefined();
    console.log(`[k8s] Event for svc-tp: ${event!.reason}: ${event!.message}`);
    // Nothing mentions the other class's Service.
    const reqs = await api.requests(reqStart);
    expect(JSON.stringify(reqs.filter((r) => r.method !== 'GET'))).not.toContain('svc-other');
    await api.remove('services', 'default', 'svc-ok');
    await until('svc-ok removed', (x) => x[key('10.0.0.32')] === undefined);
  });

  /** Polls the maps every 5 ms while `during` runs; returns the smallest VIP count seen. */
  async function minVipsDuring(during: () => Promise<void>): Promise<{ min: number; samples: number }> {
    let min = Infinity;
    let samples = 0;
    let done = false;
    const poll = (async () => {
      while (!done) {
        min = Math.min(min, Object.keys(await tables()).length);
        samples++;
        await sleep(5);
      }
    })();
    try {
      await during();
    } finally {
      done = true;
      await poll;
    }
    return { min, samples };
  }

  it('410 Gone on the watches: no flush, re-list converges (a change made meanwhile is applied)', async () => {
    const before = Object.keys(await tables()).length;
    expect(before).toBe(2);
    const mark = logMark();
    const r = await minVipsDuring(async () => {
      await api.expireWatches();
      await setEndpoints('svc-a', [{ ip: be(1) }, { ip: be(3) }]);
      await until('converged after 410', (t) => t[key(SVC_VIP)]?.join() === [be(1), be(3)].join());
    });
    expect(r.min).toBe(before);
    // Every reconcile in between kept every VIP (a flush would delete the Service VIP and re-create it).
    // The log line follows the map writes: wait for it.
    await waitUntil(() => reconcilesSince(mark).length > 0, { timeoutMs: 3000 });
    const recs = reconcilesSince(mark);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.filter((x) => x.vipsDeleted > 0 || x.vipsCreated > 0)).toEqual([]);
    const relists = await metric('peak_xdp_k8s_relists_total');
    console.log(`[k8s] 410: VIP count never below ${r.min} (${r.samples} samples); ${relists.join('; ')}`);
    expect(relists.some((l) => /reason="gone"/.test(l) || /gone|expired/i.test(l))).toBe(true);
  });

  it('dropped watch connections: no flush, the watch resumes and converges', async () => {
    const before = Object.keys(await tables()).length;
    const mark = logMark();
    const r = await minVipsDuring(async () => {
      await api.dropWatches();
      await setEndpoints('svc-a', [{ ip: be(2) }, { ip: be(3) }]);
      await until('converged after drop', (t) => t[key(SVC_VIP)]?.join() === [be(2), be(3)].join());
    });
    expect(r.min).toBe(before);
    // The log line follows the map writes: wait for it.
    await waitUntil(() => reconcilesSince(mark).length > 0, { timeoutMs: 3000 });
    const recs = reconcilesSince(mark);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.filter((x) => x.vipsDeleted > 0 || x.vipsCreated > 0)).toEqual([]);
    console.log(`[k8s] dropped watches: VIP count never below ${r.min} (${r.samples} samples)`);
  });

  it('API server down: /readyz reports the Kubernetes source, maps stay; back up: ready and converged', async () => {
    const snapshot = JSON.stringify(await tables());
    const mark = logMark();
    await api.setUnavailable(true);
    try {
      const ms = await waitUntil(async () => (await lab.admin('/readyz')).status !== 200, {
        timeoutMs: 10000,
      });
      expect(ms).not.toBeNull();
      const rz = await lab.admin('/readyz');
      console.log(`[k8s] API down -> /readyz ${rz.status} after ${ms!.toFixed(0)} ms: ${rz.body.trim()}`);
      expect(rz.body).toMatch(/kubernetes: not synced or API unreachable/);
      // A change the daemon cannot see yet; the maps must not move for 3 s.
      await setEndpoints('svc-a', [{ ip: be(1) }, { ip: be(2) }, { ip: be(3) }]);
      const r = await minVipsDuring(() => sleep(3000));
      expect(JSON.stringify(await tables())).toBe(snapshot);
      expect(r.min).toBe(2);
      // Nothing was reconciled from Kubernetes while it was unreachable.
      expect(reconcilesSince(mark)).toEqual([]);
    } finally {
      await api.setUnavailable(false);
    }
    const t0 = performance.now();
    await until('converged after the outage', (t) => t[key(SVC_VIP)]?.length === 3, 40000);
    const ready = await waitUntil(async () => (await lab.admin('/readyz')).status === 200, {
      timeoutMs: 40000,
    });
    expect(ready).not.toBeNull();
    console.log(
      `[k8s] API back -> converged and /readyz 200 after ${(performance.now() - t0).toFixed(0)} ms`,
    );
  });

  it('event -> datapath latency over 30 endpoint changes (own measurement and the daemon metric)', async () => {
    const lat: number[] = [];
    for (let i = 0; i < 30; i++) {
      const eps =
        i % 2 === 0 ? [{ ip: be(1) }, { ip: be(2) }] : [{ ip: be(1) }, { ip: be(2) }, { ip: be(3) }];
      const since = (await api.mutations()).length;
      await setEndpoints('svc-a', eps);
      await until(`change ${i}`, (t) => t[key(SVC_VIP)]?.length === eps.length, 5000);
      const seen = Date.now();
      const m = (await api.mutations(since)).find((x) => x.resource === 'endpointslices');
      expect(m).toBeDefined();
      lat.push(seen - m!.atMs);
    }
    lat.sort((a, b) => a - b);
    const hist = await metric('peak_xdp_k8s_event_to_datapath_seconds');
    const count = Number(hist.find((l) => l.startsWith('peak_xdp_k8s_event_to_datapath_seconds_count'))?.split(' ')[1]); // prettier-ignore
    const sum = Number(hist.find((l) => l.startsWith('peak_xdp_k8s_event_to_datapath_seconds_sum'))?.split(' ')[1]); // prettier-ignore
    const buckets = hist
      .filter((l) => l.includes('_bucket'))
      .map((l) => ({ le: /le="([^"]+)"/.exec(l)![1]!, n: Number(l.split(' ').pop()) }));
    const bucketQ = (q: number): string => buckets.find((b) => b.n >= q * count)?.le ?? '?';
    console.log(
      `[k8s] event -> datapath (API served -> seen in the maps, 5 ms polling), n=30: p50 ${quantile(lat, 0.5)} ms, p99 ${quantile(lat, 0.99)} ms, max ${lat[lat.length - 1]} ms\n` +
        `[k8s] daemon metric peak_xdp_k8s_event_to_datapath_seconds: count ${count}, mean ${((sum / count) * 1000).toFixed(1)} ms, p50 <= ${bucketQ(0.5)} s, p99 <= ${bucketQ(0.99)} s`,
    );
    expect(count).toBeGreaterThanOrEqual(30);
    expect(lat).toHaveLength(30);
  });

  it('Service deleted -> VIP removed from the maps and withdrawn from the router', async () => {
    await api.remove('services', 'default', 'svc-a');
    const ms = await until('svc-a removed', (t) => t[key(SVC_VIP)] === undefined);
    const w = await waitUntil(() => bird.ribNextHops(`${SVC_VIP}/32`).length === 0, { timeoutMs: 5000 });
    expect(w).not.toBeNull();
    console.log(
      `[k8s] Service deleted -> VIP gone from the maps after ${ms} ms, from the BIRD RIB ${w!.toFixed(0)} ms later`,
    );
    expect((await tables())[key(VIP)]).toEqual([be(1), be(2), be(3)]);
    expect(bird.ribNextHops(`${VIP}/32`)).toEqual([LB_ADDRESS]);
  });
});
