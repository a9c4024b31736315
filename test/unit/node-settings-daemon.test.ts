// Per-node settings in the daemon, without root: a MemoryDatapath behind an in-memory host, a fake config source
// and BGP speaker, the real admin API on loopback port 0. A node runs with its resolved settings; invalid settings
// make it not ready (/readyz 503 with the reason, peak_xdp_node_config_valid 0, a log line naming the field) and
// change nothing in the datapath; a relabel re-resolves; without a nodes section nothing reads the labels.
import { get } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryDatapath } from '../../src/datapath/memory';
import { Config, formatIssue, validateConfig } from '../../src/model';
import { AdminServer, startAdmin } from '../../src/daemon/admin';
import type { DaemonCollaborators } from '../../src/daemon/collaborators';
import type { NodeIdentitySource } from '../../src/daemon/config-gate';
import { Daemon } from '../../src/daemon/daemon';
import type { DatapathHost, OpenedDatapath } from '../../src/daemon/datapath-host';
import type { ReloadEvent } from '../../src/sources/types';
import { FakeSource, FakeSpeaker, QuietMonitor, recordingLogger } from '../helpers/daemon-fakes';

class MemoryHost implements DatapathHost {
  readonly dp = new MemoryDatapath();
  /** Interfaces claimed, in order. */
  readonly claims: string[] = [];
  opened = false;
  claim(ifname: string) {
    this.claims.push(ifname);
    return { pins: `/memory/${ifname}`, release: () => undefined, open: async () => this.open() };
  }
  private open(): OpenedDatapath {
    this.opened = true;
    let attached = false;
    return {
      datapath: this.dp,
      adopted: false,
      attachment: () => ({ kind: attached ? 'ours' : 'none' }),
      attach: async () => {
        attached = true;
        return { mode: 'generic', progId: 1 };
      },
      detach: async () => void (attached = false),
      pinCheck: () => ({ missing: [], foreign: [] }),
      repin: () => undefined,
      unpin: () => undefined,
      removePinDir: () => undefined,
      close: () => undefined,
    };
  }
}

function fetchText(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

/** Waits (bounded: 10 s) until `cond` holds; the assertion that follows says what was expected. */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 1000 && !(await cond()); i++) await sleep(10);
}

const torA = { address: '192.0.2.1', asn: 65000 };
const torB = { address: '192.0.2.129', asn: 65000 };
const spine = { address: '198.51.100.1', asn: 65100 };
const ZONE = 'topology.kubernetes.io/zone';

function config(extra: Record<string, unknown>, vips = ['10.0.0.10']): Config {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:fe',
    admin: { listen: '127.0.0.1:0' },
    vips: vips.map((address, i) => ({
      name: `v${i}`,
      address,
      port: 80,
      tableSize: 101,
      backends: [{ address: '10.1.0.1' }],
    })),
    ...extra,
  });
  if (!r.ok) throw new Error(r.errors.map(formatIssue).join('; '));
  return r.config;
}
const racks = (top: unknown[] = [spine]) => ({
  bgp: { asn: 65001, routerId: '192.0.2.200', peers: top },
  nodes: [
    { nodeSelector: { matchLabels: { [ZONE]: 'rack-a' } }, peers: [torA] },
    { nodeSelector: { matchLabels: { [ZONE]: 'rack-b' } }, peers: [torB], interface: 'ens2' },
    {
      nodeSelector: { matchExpressions: [{ key: 'nic', operator: 'In', values: ['mlx'] }] },
      nextHopMac: '02:00:00:00:00:aa',
    },
  ],
});
const ok = (c: Config, changed = true): ReloadEvent => ({
  ok: true,
  trigger: 'file',
  config: c,
  warnings: [],
  changed,
});

/** A node whose labels the test sets; `relabel` calls the watcher as the Kubernetes poll would. */
function testNode(name: string, labels: Record<string, string>) {
  const n = {
    labels: { ...labels },
    reads: 0,
    watchers: [] as (() => void)[],
    source: null as unknown as NodeIdentitySource,
    relabel(next: Record<string, string>) {
      n.labels = { ...next };
      for (const w of n.watchers) w();
    },
  };
  n.source = {
    name,
    labels: async () => {
      n.reads++;
      return { ...n.labels };
    },
    watch: (onChange) => {
      n.watchers.push(onChange);
      return () => void n.watchers.splice(n.watchers.indexOf(onChange), 1);
    },
  };
  return n;
}

interface Rig {
  daemon: Daemon;
  host: MemoryHost;
  source: FakeSource;
  records: { level: string; obj: Record<string, unknown>; msg: string }[];
  speakerOptions: { peers: { address: string }[]; asn: number }[];
  admin: () => AdminServer | null;
}

function rig(first: Config, node?: NodeIdentitySource): Rig {
  const host = new MemoryHost();
  const { log, records } = recordingLogger();
  const source = new FakeSource({ ok: true, trigger: 'start', config: first, warnings: [], changed: true });
  let admin: AdminServer | null = null;
  const speakerOptions: Rig['speakerOptions'] = [];
  const collaborators: DaemonCollaborators = {
    datapathHost: host,
    hostNetwork: {
      interfaceMac: async () => '02:00:00:00:00:01',
      interfaceAddresses: async () => ['192.0.2.100'],
      defaultGatewayMac: async () => '02:00:00:00:00:fe',
    },
    configSource: () => source,
    healthMonitor: () => new QuietMonitor() as never,
    bgpPreflight: async () => undefined,
    bgpSpeaker: (o) => {
      speakerOptions.push(o as never);
      return new FakeSpeaker() as never;
    },
    // Every scrape renders anew, so a change shows in the next one.
    adminServer: async (o) =>
      (admin = await startAdmin({ ...o, fdLimit: 65536, renderReuseMs: { '/metrics': 0 } })),
    vipRoutes: () => ({
      set: () => undefined,
      stop: async () => undefined,
      removeAll: async () => undefined,
      status: () => ({}) as never,
    }),
  };
  const daemon = new Daemon({
    configPath: '/memory/config.yaml',
    detachOnExit: false,
    logger: log,
    ...(node === undefined ? {} : { node }),
    ...collaborators,
  });
  return { daemon, host, source, records, speakerOptions, admin: () => admin };
}

const metric = async (port: number): Promise<string | undefined> =>
  /^peak_xdp_node_config_valid (\d+)$/m.exec((await fetchText(port, '/metrics')).body)?.[1];

describe('daemon with per-node settings', () => {
  const running: Daemon[] = [];
  afterEach(async () => {
    for (const d of running.splice(0)) await d.stop();
  });

  it('runs with the settings its labels select: interface, peers (union), ready, metric 1', async () => {
    const node = testNode('lb-b1', { [ZONE]: 'rack-b' });
    const r = rig(config(racks()), node.source);
    running.push(r.daemon);
    await r.daemon.start();
    expect(r.host.claims).toEqual(['ens2']);
    expect(r.speakerOptions).toHaveLength(1);
    expect(r.speakerOptions[0]!.peers.map((p) => p.address)).toEqual(['198.51.100.1', '192.0.2.129']);
    const port = r.admin()!.address.port;
    const ready = await fetchText(port, '/readyz');
    expect(ready.status).toBe(200);
    expect(await metric(port)).toBe('1');
    const state = (await r.daemon.state()) as { node: unknown; interface: string };
    expect(state.interface).toBe('ens2');
    expect(state.node).toEqual({
      name: 'lb-b1',
      labels: { [ZONE]: 'rack-b' },
      perNode: true,
      matched: ['nodes[1]'],
      error: null,
    });
    expect((await r.host.dp.listVips()).map((v) => v.key.address)).toEqual(['10.0.0.10']);
  });

  it('invalid at start: not ready with the reason, metric 0, a log line naming the field, datapath untouched; a valid reload starts it', async () => {
    const node = testNode('lb-c1', { [ZONE]: 'rack-c' });
    // No top-level peers and no entry for rack-c: this node has no BGP peer.
    const r = rig(config(racks([])), node.source);
    running.push(r.daemon);
    let started = false;
    const start = r.daemon.start().then(() => (started = true));
    await until(() => r.admin() !== null);
    const port = r.admin()!.address.port;
    const ready = await fetchText(port, '/readyz');
    expect(ready.status).toBe(503);
    const reasons = (JSON.parse(ready.body) as { reasons: string[] }).reasons;
    expect(reasons[0]).toMatch(
      /^node settings invalid \(datapath left as it was\): bgp\.peers: node "lb-c1" .* has no BGP peer/,
    );
    expect(await metric(port)).toBe('0');
    const line = r.records.find((x) => x.msg.startsWith('node settings invalid'));
    expect(line?.level).toBe('error');
    expect(line?.obj.fields).toEqual(['bgp.peers']);
    expect(line?.obj.node).toBe('lb-c1');
    expect(r.host.claims).toEqual([]);
    expect(r.host.opened).toBe(false);
    expect(started).toBe(false);
    // The file gains an entry for rack-c: the start goes on with it.
    const fixed = racks([]);
    fixed.nodes.push({ nodeSelector: { matchLabels: { [ZONE]: 'rack-c' } }, peers: [torA] });
    r.source.emit('reload', ok(config(fixed)));
    await start;
    expect(r.host.claims).toEqual(['eth0']);
    expect(r.speakerOptions[0]!.peers.map((p) => p.address)).toEqual(['192.0.2.1']);
    expect((await fetchText(port, '/readyz')).status).toBe(200);
    expect(await metric(port)).toBe('1');
    expect(r.records.some((x) => x.msg === 'node settings valid again')).toBe(true);
  });

  it('invalid at start, then relabelled into a rack: starts with that rack’s settings', async () => {
    const node = testNode('lb-x', {});
    const r = rig(config(racks([])), node.source);
    running.push(r.daemon);
    const start = r.daemon.start();
    await until(() => r.admin() !== null && node.watchers.length > 0);
    expect(r.host.opened).toBe(false);
    node.relabel({ [ZONE]: 'rack-a' });
    await start;
    expect(r.host.claims).toEqual(['eth0']);
    expect(r.speakerOptions[0]!.peers.map((p) => p.address)).toEqual(['192.0.2.1']);
  });

  it('a reload that makes this node invalid changes nothing and makes it unready; fixed, it applies', async () => {
    const node = testNode('lb-a1', { [ZONE]: 'rack-a' });
    const r = rig(config(racks()), node.source);
    running.push(r.daemon);
    await r.daemon.start();
    const port = r.admin()!.address.port;
    const vipsOf = async () => (await r.host.dp.listVips()).map((v) => v.key.address).sort();
    expect(await vipsOf()).toEqual(['10.0.0.10']);
    // A second VIP, and rack-a's ToR defined differently from the top-level list: this node cannot resolve.
    const bad = racks([spine, { ...torA, asn: 65009 }]);
    r.source.emit('reload', ok(config(bad, ['10.0.0.10', '10.0.0.11'])));
    await until(async () => (await fetchText(port, '/readyz')).status === 503);
    const ready = await fetchText(port, '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('nodes[0].peers[0]: peer 192.0.2.1:179 differs from bgp.peers[1]');
    expect(await metric(port)).toBe('0');
    expect(await vipsOf()).toEqual(['10.0.0.10']);
    // The same VIPs with the peer conflict gone: applied.
    r.source.emit('reload', ok(config(racks(), ['10.0.0.10', '10.0.0.11'])));
    await until(async () => (await vipsOf()).length === 2);
    expect(await vipsOf()).toEqual(['10.0.0.10', '10.0.0.11']);
    await until(async () => (await fetchText(port, '/readyz')).status === 200);
    expect((await fetchText(port, '/readyz')).status).toBe(200);
    expect(await metric(port)).toBe('1');
  });

  it('a relabel re-resolves: a setting that needs no restart is applied, one that does is reported', async () => {
    const node = testNode('lb-a1', { [ZONE]: 'rack-a' });
    const r = rig(config(racks()), node.source);
    running.push(r.daemon);
    await r.daemon.start();
    expect(node.watchers).toHaveLength(1);
    node.relabel({ [ZONE]: 'rack-a', nic: 'mlx' });
    await until(() => r.records.some((x) => x.msg === 'config reloaded'));
    const reloaded = r.records.find((x) => x.msg === 'config reloaded');
    expect(reloaded?.obj.trigger).toBe('manual');
    await until(
      async () => ((await r.daemon.state()) as { node: { matched: string[] } }).node.matched.length === 2,
    );
    const state = (await r.daemon.state()) as {
      node: { matched: string[] };
      datapathConfig: { nextHopMac: string };
    };
    expect(state.node.matched).toEqual(['nodes[0]', 'nodes[2]']);
    expect(state.datapathConfig.nextHopMac).toBe('02:00:00:00:00:aa');
    // Moving to rack-b changes the interface and peers: a restart is needed, the node keeps running as it was.
    node.relabel({ [ZONE]: 'rack-b' });
    await until(() => r.records.some((x) => x.msg === 'config reload rejected: these fields need a restart'));
    const rejected = r.records.find((x) => x.msg === 'config reload rejected: these fields need a restart');
    expect(rejected?.obj.fields).toEqual(['interface', 'bgp']);
    expect(r.host.claims).toEqual(['eth0']);
  });

  it('without a nodes section the labels are never read nor watched, and the metric is 1', async () => {
    const node = testNode('lb-a1', { [ZONE]: 'rack-a' });
    const r = rig(config({ bgp: { asn: 65001, routerId: '192.0.2.200', peers: [spine] } }), node.source);
    running.push(r.daemon);
    await r.daemon.start();
    r.source.emit(
      'reload',
      ok(
        config({ bgp: { asn: 65001, routerId: '192.0.2.200', peers: [spine] } }, ['10.0.0.10', '10.0.0.12']),
      ),
    );
    await until(async () => (await r.host.dp.listVips()).length === 2);
    expect((await r.host.dp.listVips()).length).toBe(2);
    expect(node.reads).toBe(0);
    expect(node.watchers).toHaveLength(0);
    expect(r.host.claims).toEqual(['eth0']);
    expect(await metric(r.admin()!.address.port)).toBe('1');
    expect(((await r.daemon.state()) as { node: { perNode: boolean } }).node.perNode).toBe(false);
  });

  it('a stop while waiting for valid settings ends the start', async () => {
    const node = testNode('lb-c1', {});
    const r = rig(config(racks([])), node.source);
    const start = r.daemon.start().then(
      () => 'started',
      (e: Error) => e.message,
    );
    await until(() => r.admin() !== null);
    await r.daemon.stop();
    expect(await start).toBe('stopped while waiting for valid node settings');
    expect(r.host.opened).toBe(false);
    expect(node.watchers).toHaveLength(0);
  });
});
