// Service create / scale / drain / delete through the Kubernetes source into a real KernelDatapath on a veth in a
// test namespace (runner process), checked by reading the pinned BPF maps.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KernelDatapath } from '../../src/datapath/kernel';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { Runner, startRunner } from '../helpers/k8s-process';
import { service, slice } from '../helpers/k8s-objects';
import { Lab, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';
import { setTimeout as sleep } from 'node:timers/promises';

describePrivileged('Kubernetes source -> KernelDatapath on a veth in a namespace', () => {
  const lab = new Lab();
  const pinRoot = `/sys/fs/bpf/peak-k8s-${process.pid}-${uniqueSuffix()}`;
  let api: FakeApiServer;
  let dir: string;
  let runner: Runner | null = null;
  let ns = '';
  let veth = '';

  beforeAll(async () => {
    ns = lab.addNamespace('pk8s');
    veth = `k8v${uniqueSuffix()}`;
    lab.addVeth({ name: veth, ns }, { name: `${veth}p`, ns });
    lab.ns(ns, 'ip', ['link', 'set', veth, 'up']);
    lab.ns(ns, 'ip', ['link', 'set', `${veth}p`, 'up']);
    api = new FakeApiServer();
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'peak-k8s-dp-'));
    api.writeKubeconfig(join(dir, 'kubeconfig'));
  });

  afterAll(async () => {
    await runner?.kill();
    await api?.stop();
    lab.cleanup();
    rmSync(pinRoot, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs fn over the pinned datapath, closed after. */
  async function withDatapath<T>(fn: (dp: KernelDatapath) => Promise<T>): Promise<T> {
    const dp = KernelDatapath.adopt({ pinDir: pinRoot });
    try {
      return await fn(dp);
    } finally {
      dp.close();
    }
  }

  /** Reads the real maps through the pins: VIP -> backend (address, state) list and table occupancy. */
  async function readMaps(): Promise<Record<string, { backends: string[]; tableIds: number[] }>> {
    const dp = KernelDatapath.adopt({ pinDir: pinRoot });
    try {
      const backends = new Map((await dp.listBackends()).map((b) => [b.id, `${b.address}:${b.state}`]));
      const out: Record<string, { backends: string[]; tableIds: number[] }> = {};
      for (const v of await dp.listVips()) {
        const table = (await dp.readTable(v.id)) ?? new Uint32Array();
        const ids = [...new Set(table)].filter((id) => id !== 0).sort((a, b) => a - b);
        out[`${v.key.address}:${v.key.port}/${v.key.protocol}`] = {
          tableIds: ids,
          backends: ids.map((id) => backends.get(id) ?? `missing ${id}`).sort(),
        };
      }
      return out;
    } finally {
      dp.close();
    }
  }

  /** A read that saw a table naming a backend id its earlier read of the backends map did not have: the two maps
   * are read one after the other while the daemon writes (backends before the tables that name them), so such a
   * read is torn, not a state of the maps (seen in CI: "missing 3" while scaling up). */
  const torn = (m: Awaited<ReturnType<typeof readMaps>>): boolean =>
    Object.values(m).some((v) => v.backends.some((b) => b.startsWith('missing ')));

  const waitMaps = async (pred: (m: Awaited<ReturnType<typeof readMaps>>) => boolean, what: string) => {
    let last: Awaited<ReturnType<typeof readMaps>> = {};
    for (let i = 0; i < 100; i++) {
      last = await readMaps();
      if (pred(last) && !torn(last)) return last;
      await sleep(100);
    }
    throw new Error(`maps never showed ${what}: ${JSON.stringify(last)}`);
  };

  it('programs, scales, drains and removes a Service VIP in the kernel maps', async () => {
    api.upsert(
      'services',
      service({ name: 'web', vip: '203.0.113.10', annotations: { 'peak-xdp.io/table-size': '251' } }),
    );
    api.upsert(
      'endpointslices',
      slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }, { ip: '10.1.0.2' }] }),
    );
    runner = startRunner({
      kubeconfig: join(dir, 'kubeconfig'),
      nodeName: 'node-dp',
      allowedAddresses: ['203.0.113.10/32'],
      leaderElection: false,
      datapath: {
        pinDir: pinRoot,
        ifname: veth,
        netns: lab.netnsPath(ns),
        nextHopMac: '02:00:00:00:00:02',
        encapSource: '192.0.2.1',
      },
    });
    await runner.waitFor((l) => l.ev === 'ready', { timeoutMs: 20_000, what: 'ready' });
    const key = '203.0.113.10:80/tcp';
    let m = await waitMaps((x) => x[key]?.backends.length === 2, 'two backends');
    expect(m[key]!.backends).toEqual(['10.1.0.1:up', '10.1.0.2:up']);

    api.upsert(
      'endpointslices',
      slice({ name: 'web-1', service: 'web', endpoints: [1, 2, 3].map((i) => ({ ip: `10.1.0.${i}` })) }),
    );
    m = await waitMaps((x) => x[key]?.backends.length === 3, 'scale up to three');
    expect(m[key]!.backends).toEqual(['10.1.0.1:up', '10.1.0.2:up', '10.1.0.3:up']);

    api.upsert(
      'endpointslices',
      slice({
        name: 'web-1',
        service: 'web',
        endpoints: [
          { ip: '10.1.0.1' },
          { ip: '10.1.0.2' },
          { ip: '10.1.0.3', ready: false, serving: true, terminating: true },
        ],
      }),
    );
    // The terminating endpoint is a draining backend (its established flows stay) whose table slots now name the
    // others (no new flows).
    const drainingEntry = async () =>
      (await withDatapath((dp) => dp.listBackends())).some(
        (b) => b.address === '10.1.0.3' && b.state === 'draining',
      );
    m = await waitMaps((x) => x[key]?.backends.length === 2, 'drain');
    expect(m[key]!.backends).toEqual(['10.1.0.1:up', '10.1.0.2:up']);
    expect(await drainingEntry()).toBe(true);

    api.upsert('endpointslices', slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }));
    m = await waitMaps((x) => x[key]?.backends.length === 1, 'scale down to one');
    expect(m[key]!.backends).toEqual(['10.1.0.1:up']);

    api.remove('services', 'default', 'web');
    m = await waitMaps((x) => x[key] === undefined, 'VIP removed');
    expect(Object.keys(m)).toEqual([]);
    expect(await runner.stop()).toBe(0);
    runner = null;
  });
});
