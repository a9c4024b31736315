// Per-node settings with the real daemon (dist/) on the real kernel: one config for two racks; --node-labels
// decides the interface the balancer attaches to and the node's peers; a node no entry gives a peer stays not
// ready (/readyz 503 with the reason, peak_xdp_node_config_valid 0) and attaches nothing; the read-only metrics
// listener serves /metrics and refuses writes.
import { ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_JS, runAsync, waitUntil } from '../helpers/daemon-lab';
import { run, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const ZONE = 'topology.kubernetes.io/zone';

describePrivileged('daemon: per-node settings and the metrics listener (real kernel)', () => {
  const id = uniqueSuffix();
  const lb = `pnd${id}l`;
  const peer = `pnd${id}p`;
  const namespaces = [lb, peer];
  const bpffs = `/run/peak-xdp-test-pnd${id}`;
  const dir = mkdtempSync(join(tmpdir(), `peak-pnd${id}-`));
  const configPath = join(dir, 'peak-xdp.yaml');
  let mounted = false;
  const daemons: { child: ChildProcess; exited: Promise<number | string>; log: string }[] = [];

  /** The XDP program id on an interface of the LB namespace (null: none). */
  const xdpOn = (ifname: string): number | null => {
    const link = JSON.parse(run('ip', ['-n', lb, '-j', 'link', 'show', 'dev', ifname]))[0] as {
      xdp?: { prog?: { id: number }; attached?: { prog: { id: number } }[] };
    };
    return link.xdp?.prog?.id ?? link.xdp?.attached?.[0]?.prog.id ?? null;
  };
  /** An HTTP request from inside the LB namespace (curl): status and body. */
  const http = async (port: number, path: string, method = 'GET') => {
    const r = await runAsync('ip', ['netns', 'exec', lb, 'curl', '-s', '-m', '3', '-X', method, '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`], { timeoutMs: 5000 }); // prettier-ignore
    const i = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(0, i)) };
  };
  const metricValue = async (port: number) =>
    /^peak_xdp_node_config_valid (\d+)$/m.exec((await http(port, '/metrics')).body)?.[1];

  const startDaemon = (labels: string) => {
    const log = join(dir, `daemon-${daemons.length + 1}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', lb, process.execPath, CLI_JS, 'daemon', '--config', configPath, '--bpffs', bpffs, '--node-name', `node-${labels.split('=')[1]}`, '--node-labels', labels, '--metrics-listen', '127.0.0.1:9471', '--detach-on-exit', '--log-level', 'debug'], // prettier-ignore
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((resolve) =>
      child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
    );
    const d = { child, exited, log };
    daemons.push(d);
    return d;
  };
  const stopDaemon = async (d: (typeof daemons)[number]) => {
    d.child.kill('SIGTERM');
    const t = setTimeout(() => d.child.kill('SIGKILL'), 15000);
    const code = await d.exited;
    clearTimeout(t);
    return code;
  };
  /** Every path under a directory (bpffs pins), sorted. */
  const filesUnder = (root: string): string[] =>
    existsSync(root) ? (readdirSync(root, { recursive: true }) as string[]).sort() : [];
  const logOf = (d: (typeof daemons)[number]) => (existsSync(d.log) ? readFileSync(d.log, 'utf8') : '');

  beforeAll(() => {
    if (!existsSync(CLI_JS)) throw new Error(`${CLI_JS} is missing: build with npm run build:ts`);
    for (const n of namespaces) {
      run('ip', ['netns', 'add', n]);
      run('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    // Two links, as two racks' servers name their NIC: eth0 and ens2, both to the peer namespace.
    const links: [string, string, string, string][] = [
      ['eth0', 'pa', '10.20.1.2', '10.20.1.1'],
      ['ens2', 'pb', '10.20.2.2', '10.20.2.1'],
    ];
    for (const [ifname, peerIf, addr, peerAddr] of links) {
      run('ip', ['link', 'add', 'name', ifname, 'netns', lb, 'type', 'veth', 'peer', 'name', peerIf, 'netns', peer]); // prettier-ignore
      run('ip', ['-n', lb, 'addr', 'add', `${addr}/24`, 'dev', ifname]);
      run('ip', ['-n', lb, 'link', 'set', ifname, 'up']);
      run('ip', ['-n', peer, 'addr', 'add', `${peerAddr}/24`, 'dev', peerIf]);
      run('ip', ['-n', peer, 'link', 'set', peerIf, 'up']);
    }
    mkdirSync(bpffs, { recursive: true });
    run('mount', ['-t', 'bpf', 'bpf', bpffs]);
    mounted = true;
    writeFileSync(
      configPath,
      JSON.stringify({
        interface: 'eth0',
        xdpMode: 'auto',
        nextHopMac: '02:00:00:00:00:fe',
        admin: { listen: '127.0.0.1:9470' },
        bgp: { asn: 65001, routerId: '10.20.0.1' },
        nodes: [
          {
            nodeSelector: { matchLabels: { [ZONE]: 'rack-a' } },
            peers: [{ address: '10.20.1.1', asn: 65000 }],
          },
          {
            nodeSelector: { matchLabels: { [ZONE]: 'rack-b' } },
            interface: 'ens2',
            peers: [{ address: '10.20.2.1', asn: 65000 }],
          },
        ],
        vips: [{ name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.30.0.1' }] }],
      }),
    );
  });

  afterAll(async () => {
    for (const d of daemons)
      if (d.child.exitCode === null && d.child.signalCode === null) await stopDaemon(d);
    for (const n of namespaces) run('ip', ['netns', 'del', n], { allowFail: true });
    if (mounted) run('umount', [bpffs], { allowFail: true });
    rmSync(bpffs, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }, 60000);

  it('a rack-b node attaches to rack-b’s interface, peers with rack-b’s router, and is ready', async () => {
    const d = startDaemon(`${ZONE}=rack-b`);
    try {
      await rackB(d);
    } finally {
      if (d.child.exitCode === null && d.child.signalCode === null) await stopDaemon(d);
    }
  }, 60000);

  const rackB = async (d: (typeof daemons)[number]) => {
    const ms = await waitUntil(async () => (await http(9470, '/readyz')).status === 200, { timeoutMs: 30000, intervalMs: 100 }); // prettier-ignore
    if (ms === null) throw new Error(`not ready:\n${logOf(d).slice(-3000)}`);
    console.log(`per-node: ready after ${ms.toFixed(0)} ms`);
    expect(xdpOn('ens2')).not.toBeNull();
    expect(xdpOn('eth0')).toBeNull();
    const state = JSON.parse((await http(9470, '/state')).body) as {
      interface: string;
      node: { name: string; matched: string[]; error: string | null };
      bgp: { peers: { peer: string }[] };
    };
    expect(state.interface).toBe('ens2');
    expect(state.node).toMatchObject({ name: 'node-rack-b', matched: ['nodes[1]'], error: null });
    expect(state.bgp.peers.map((p) => p.peer)).toEqual(['10.20.2.1']);
    expect(await metricValue(9470)).toBe('1');
    // The metrics listener: the same metric; no /state, no writes.
    expect(await metricValue(9471)).toBe('1');
    expect((await http(9471, '/readyz')).status).toBe(200);
    expect((await http(9471, '/state')).status).toBe(404);
    expect((await http(9471, '/v1/overrides', 'DELETE')).status).toBe(404);
    expect((await http(9471, '/metrics', 'POST')).status).toBe(405);
    // --detach-on-exit: the balancer goes with the daemon.
    expect(await stopDaemon(d)).toBe(0);
    expect(xdpOn('ens2')).toBeNull();
  };

  it('a node no entry gives a peer is not ready, says why, and attaches nothing', async () => {
    const pinsBefore = filesUnder(bpffs);
    const d = startDaemon(`${ZONE}=rack-c`);
    const ms = await waitUntil(async () => (await http(9470, '/readyz')).status === 503, { timeoutMs: 30000, intervalMs: 100 }); // prettier-ignore
    if (ms === null) throw new Error(`no 503:\n${logOf(d).slice(-3000)}`);
    const ready = await http(9470, '/readyz');
    const reasons = (JSON.parse(ready.body) as { reasons: string[] }).reasons;
    expect(reasons[0]).toMatch(
      /^node settings invalid \(datapath left as it was\): bgp\.peers: node "node-rack-c" .*has no BGP peer/,
    );
    expect(await metricValue(9470)).toBe('0');
    expect(await metricValue(9471)).toBe('0');
    expect((await http(9471, '/readyz')).status).toBe(503);
    expect(logOf(d)).toMatch(/node settings invalid: this node is not ready/);
    expect(logOf(d)).toContain('"fields":["bgp.peers"]');
    expect(xdpOn('eth0')).toBeNull();
    expect(xdpOn('ens2')).toBeNull();
    // Nothing pinned (and no lock taken) while it waits.
    expect(filesUnder(bpffs)).toEqual(pinsBefore);
    // A signal while waiting: a clean exit.
    expect(await stopDaemon(d)).toBe(0);
  }, 60000);
});
