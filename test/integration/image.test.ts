// The container image, built here (scripts/image/build.sh: mmdebstrap + Node 24 + buildah) and run with podman in
// the namespace testbed: one LB node (the image's default CMD, `daemon --config /etc/peak-xdp/config.yaml`) and
// two backend nodes (`decap run --interface auto`, node mode: nothing on lo, an nftables DNAT of VIP:80 to the
// node's nginx on 8080, the way kube-proxy takes a LoadBalancer IP), with the DaemonSets' capabilities only.
// Real HTTP: client -> router -> VIP -> LB container (XDP, IPIP) -> backend node (decap container) -> nginx.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { bpfObjectPath, packageRoot } from '../../src/paths';
import { killAll, runAsync, waitUntil } from '../helpers/daemon-lab';
import { run, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const VIP = '10.0.0.10';
const LB = '10.20.2.2';
const ROUTER_MAC_TO_LB = '02:00:00:00:02:02';
const BUILD = join(packageRoot, 'scripts', 'image', 'build.sh');
// What the DaemonSets grant (deploy/base/daemonset-*.yaml; test/unit/k8s-deploy.test.ts checks those).
const LB_CAPS = ['BPF', 'NET_ADMIN', 'PERFMON', 'NET_BIND_SERVICE'];
// PERFMON: the verifier refuses bpf/decap.bpf.c with BPF and NET_ADMIN alone (seen here on 6.18).
const BACKEND_CAPS = ['BPF', 'NET_ADMIN', 'PERFMON'];

/** This process's soft and hard limit of a resource (/proc/self/limits), e.g. "Max open files". */
function limit(name: string): string {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const m = line ? /^.+?\s{2,}(\d+|unlimited)\s+(\d+|unlimited)\s/.exec(line) : null;
  if (!m) throw new Error(`/proc/self/limits has no "${name}"`);
  return `${m[1] === 'unlimited' ? -1 : m[1]}:${m[2] === 'unlimited' ? -1 : m[2]}`;
}

describePrivileged('image: built here, run with podman as an LB node and as backend nodes', () => {
  const id = uniqueSuffix();
  const p = `pkg${id}`;
  const ns = { client: `${p}c`, router: `${p}r`, lb: `${p}l`, be: [`${p}b1`, `${p}b2`] };
  const backends = ns.be.map((n, i) => ({ netns: n, name: `be${i + 1}`, address: `10.20.${11 + i}.2` }));
  const dir = mkdtempSync(join(tmpdir(), `${p}-`));
  const made: string[] = [];
  const mounts: string[] = [];
  const containers: string[] = [];
  let image = '';
  // Ulimits the container may have: podman's defaults (nofile 1048576, nproc unlimited) are above this
  // sandbox's hard limits, and without CAP_SYS_RESOURCE the runtime cannot raise them. nproc: podman's conmon ran
  // with 32768 here and any higher value was refused. runc: Debian 12's crun refuses hybrid cgroups.
  const podmanBase = () => [
    'run',
    '--runtime',
    'runc',
    '--ulimit',
    `nofile=${limit('Max open files')}`,
    '--ulimit',
    `nproc=${Math.min(32768, Number(limit('Max processes').split(':')[1]))}`,
  ];

  const inNs = (n: string, cmd: string, args: string[], o: { allowFail?: boolean } = {}) =>
    run('ip', ['netns', 'exec', n, cmd, ...args], o);
  const sysctl = (n: string, kv: Record<string, string | number>) =>
    inNs(n, 'sysctl', ['-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
  const addNs = (n: string) => {
    run('ip', ['netns', 'add', n]);
    made.push(n);
    run('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    sysctl(n, { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
  };
  /** host eth0 <-> router `routerIf`, 10.20.<net>.0/24, fixed MACs, permanent neighbours, default via the router. */
  const link = (host: string, routerIf: string, net: number, mtu: number) => {
    const mac = (side: number) => `02:00:00:00:${net.toString(16).padStart(2, '0')}:0${side}`;
    const [h, r] = [`10.20.${net}.2`, `10.20.${net}.1`];
    run('ip', ['link', 'add', 'name', 'eth0', 'netns', host, 'address', mac(1), 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', routerIf, 'netns', ns.router, 'address', mac(2), 'mtu', String(mtu)]); // prettier-ignore
    run('ip', ['-n', host, 'addr', 'add', `${h}/24`, 'dev', 'eth0']);
    run('ip', ['-n', host, 'link', 'set', 'dev', 'eth0', 'up']);
    run('ip', ['-n', ns.router, 'addr', 'add', `${r}/24`, 'dev', routerIf]);
    run('ip', ['-n', ns.router, 'link', 'set', 'dev', routerIf, 'up']);
    run('ip', ['-n', host, 'route', 'add', 'default', 'via', r]);
    run('ip', ['-n', host, 'neigh', 'replace', r, 'lladdr', mac(2), 'dev', 'eth0', 'nud', 'permanent']);
    run('ip', [
      '-n',
      ns.router,
      'neigh',
      'replace',
      h,
      'lladdr',
      mac(1),
      'dev',
      routerIf,
      'nud',
      'permanent',
    ]);
  };
  /** A bpffs of its own for one node (each container pins under <bpffs>/peak-xdp/root/eth0). */
  const bpffs = (node: string) => {
    const d = join(dir, `bpffs-${node}`);
    mkdirSync(d);
    run('mount', ['-t', 'bpf', 'bpf', d]);
    mounts.push(d);
    return d;
  };
  const curl = async (n: string, url: string) => {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', n, 'curl', '-s', '-m', '3', '-w', '\n%{http_code}', url],
      {
        timeoutMs: 6000,
      },
    );
    const i = r.stdout.lastIndexOf('\n');
    return {
      code: r.code,
      status: Number(r.stdout.slice(i + 1)) || 0,
      body: r.stdout.slice(0, Math.max(0, i)),
    };
  };
  const podman = (args: string[], timeoutMs = 60000) => runAsync('podman', args, { timeoutMs });
  /** Starts a detached container joined to a testbed namespace; returns its name. */
  const start = async (name: string, netns: string, caps: string[], args: string[]) => {
    const full = `${p}-${name}`;
    containers.push(full);
    const r = await podman([
      ...podmanBase(),
      '-d',
      '--name',
      full,
      '--network',
      `ns:/var/run/netns/${netns}`,
      '--cap-drop',
      'ALL',
      '--cap-add',
      caps.join(','),
      '--security-opt',
      'no-new-privileges',
      // As the DaemonSets' seccompProfile Unconfined: podman's default profile allows bpf() only with SYS_ADMIN.
      '--security-opt',
      'seccomp=unconfined',
      '--read-only',
      ...args,
    ]);
    if (r.code !== 0) throw new Error(`podman run ${full}: ${r.stderr}`);
    return full;
  };
  const logs = async (c: string) => {
    const r = await podman(['logs', '--tail', '40', c]);
    return r.stdout + r.stderr;
  };
  /** Resident and peak memory (kB) of a container's process (the entrypoint execs node: it is process 1). */
  const memory = async (c: string) => {
    const pid = (await podman(['inspect', '--format', '{{.State.Pid}}', c])).stdout.trim();
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1]);
    return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
  };
  const xdpProgId = (n: string) =>
    (
      JSON.parse(run('ip', ['-n', n, '-j', '-d', 'link', 'show', 'eth0'])) as {
        xdp?: { prog?: { id: number } };
      }[]
    )[0]?.xdp?.prog?.id ?? 0;

  let lbName = '';
  const beNames: string[] = [];

  beforeAll(async () => {
    // 1. The image: built, or reused when scripts/image/build.sh finds one built from the same inputs.
    const t0 = performance.now();
    const b = await runAsync('bash', [BUILD], { timeoutMs: 15 * 60_000 });
    if (b.code !== 0) throw new Error(`image build failed (${b.code}):\n${b.stderr.slice(-4000)}`);
    const last = b.stdout.trim().split('\n').pop()!;
    const m = /^image (\S+) (\S+) (built|reused) (\S+)s (\d+)$/.exec(last);
    if (!m) throw new Error(`build.sh printed no image line: ${last}`);
    image = m[1]!;
    console.log(
      `image ${image} (${m[2]}): ${m[3]} in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
        `${(Number(m[5]) / 1e6).toFixed(0)} MB\n${b.stderr.trim()}`,
    );

    // 2. The testbed: client - router - lb; router - be1, be2.
    const t1 = performance.now();
    for (const n of [ns.client, ns.router, ns.lb, ...ns.be]) addNs(n);
    sysctl(ns.router, { 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 }); // prettier-ignore
    link(ns.client, 'c', 1, 1500);
    link(ns.lb, 'l', 2, 1600);
    backends.forEach((be, i) => link(be.netns, `b${i + 1}`, 11 + i, 1600));
    for (const r of ['c', 'l', 'b1', 'b2']) sysctl(ns.router, { [`net.ipv4.conf.${r}.rp_filter`]: 0 });
    run('ip', ['-n', ns.router, 'route', 'add', `${VIP}/32`, 'via', LB]);
    inNs(ns.client, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
    sysctl(ns.client, { 'net.core.txrehash': 0 });
    // XDP_TX on the LB's veth needs an XDP program on the router's peer (TESTBED.md).
    const pass = await BpfObject.load(bpfObjectPath('pass'));
    try {
      await attachXdp({ ifname: 'l', netns: `/var/run/netns/${ns.router}`, program: pass.program('xdp_pass'), mode: 'native' }); // prettier-ignore
    } finally {
      pass.close();
    }
    // Each backend node: nginx on 8080 naming the node, and kube-proxy's part: VIP:80 -> node:8080 (DNAT).
    for (const be of backends) {
      const d = join(dir, be.name);
      mkdirSync(d);
      writeFileSync(
        join(d, 'nginx.conf'),
        `worker_processes 1; daemon on; pid ${d}/nginx.pid; error_log ${d}/error.log warn;
events { worker_connections 256; }
http { access_log off; client_body_temp_path ${d}; proxy_temp_path ${d}; fastcgi_temp_path ${d};
  uwsgi_temp_path ${d}; scgi_temp_path ${d};
  server { listen 8080; default_type text/plain; location / { return 200 "${be.name}\\n"; } } }
`,
      );
      inNs(be.netns, 'nginx', ['-c', join(d, 'nginx.conf'), '-p', d]);
      inNs(be.netns, 'nft', [`add table ip ${p}; add chain ip ${p} pre { type nat hook prerouting priority dstnat; }; add rule ip ${p} pre ip daddr ${VIP} tcp dport 80 dnat to ${be.address}:8080`]); // prettier-ignore
    }
    console.log(`testbed: ${((performance.now() - t1) / 1000).toFixed(1)} s`);

    // 3. Backend nodes: the backend DaemonSet's command and capabilities.
    for (const be of backends) {
      const t = performance.now();
      beNames.push(
        await start(be.name, be.netns, BACKEND_CAPS, [
          '-v',
          `${bpffs(be.name)}:/sys/fs/bpf`,
          image,
          'decap',
          'run',
          '--interface',
          'auto',
          '--metrics-listen',
          '0.0.0.0:9472',
        ]),
      );
      const ready = await waitUntil(
        async () => (await curl(be.netns, 'http://127.0.0.1:9472/readyz')).status === 200,
        {
          timeoutMs: 30000,
          intervalMs: 100,
        },
      );
      if (ready === null) throw new Error(`${be.name}: decap run not ready:\n${await logs(beNames.at(-1)!)}`);
      console.log(
        `${be.name}: podman run -> /readyz 200 in ${((performance.now() - t) / 1000).toFixed(1)} s`,
      );
    }

    // 4. The LB node: the image's default CMD with the config mounted where the ConfigMap goes.
    const cfgDir = join(dir, 'etc');
    mkdirSync(cfgDir);
    writeFileSync(
      join(cfgDir, 'config.yaml'),
      YAML.stringify({
        interface: 'eth0',
        xdpMode: 'native',
        nextHopMac: ROUTER_MAC_TO_LB,
        encapSource: [`${LB}/32`],
        mtu: 1600,
        admin: { listen: '127.0.0.1:9470', metricsListen: '0.0.0.0:9471' },
        limits: { maxVips: 16, maxBackends: 64, conntrackEntries: 65536 },
        vips: [
          {
            name: 'web',
            address: VIP,
            port: 80,
            protocol: 'tcp',
            tableSize: 251,
            backends: backends.map((be) => ({ address: be.address })),
          },
        ],
      }),
    );
    const t = performance.now();
    lbName = await start('lb', ns.lb, LB_CAPS, [
      '-e',
      'NODE_NAME=lb',
      '-v',
      `${bpffs('lb')}:/sys/fs/bpf`,
      '-v',
      `${cfgDir}:/etc/peak-xdp:ro`,
      image,
    ]);
    const ready = await waitUntil(
      async () => (await curl(ns.lb, 'http://127.0.0.1:9471/readyz')).status === 200,
      {
        timeoutMs: 60000,
        intervalMs: 100,
      },
    );
    if (ready === null) throw new Error(`LB not ready:\n${await logs(lbName)}`);
    console.log(`lb: podman run -> /readyz 200 in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }, 20 * 60_000);

  afterAll(async () => {
    for (const c of containers.splice(0)) await podman(['rm', '-f', '-t', '0', c]);
    const pids = made
      .filter((n) => existsSync(`/var/run/netns/${n}`))
      .flatMap((n) =>
        run('ip', ['netns', 'pids', n], { allowFail: true })
          .split('\n')
          .map(Number)
          .filter((x) => Number.isInteger(x) && x > 0),
      );
    await killAll(pids);
    for (const n of made.splice(0)) run('ip', ['netns', 'del', n], { allowFail: true });
    for (const d of mounts.splice(0)) {
      run('umount', [d], { allowFail: true });
      if (run('findmnt', ['-n', d], { allowFail: true }).trim())
        run('umount', ['-l', d], { allowFail: true });
    }
    rmSync(dir, { recursive: true, force: true });
  }, 60000);

  it('`peak-xdp version --json` in the image reports Node 24 and this build', async () => {
    const r = await podman([...podmanBase(), '--rm', '--network', 'none', image, 'version', '--json']);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const v = JSON.parse(r.stdout) as { version: string; commit: string; node: string };
    expect(v.node).toMatch(/^v24\./);
    const here = JSON.parse(execFileSync(process.execPath, [join(packageRoot, 'dist', 'src', 'cli', 'main.js'), 'version', '--json'], { encoding: 'utf8' })) as { version: string; commit: string }; // prettier-ignore
    expect({ version: v.version, commit: v.commit }).toEqual({ version: here.version, commit: here.commit });
    const labels = JSON.parse((await podman(['image', 'inspect', '--format', '{{json .Labels}}', image])).stdout) as Record<string, string>; // prettier-ignore
    expect(labels['org.opencontainers.image.version']).toBe(here.version);
    expect(labels['org.opencontainers.image.revision']).toBe(here.commit);
    console.log(`in the image: ${r.stdout.replace(/\s+/g, ' ')}`);
  });

  it('the image holds no compiler and no package manager, only the runtime tools the product execs', async () => {
    const r = await podman([...podmanBase(), '--rm', '--network', 'none', '--entrypoint', '/bin/sh', image, '-c',
      'for t in ip sysctl ping node peak-xdp gcc cc clang make apt-get npm python3; do command -v $t >/dev/null && echo "$t"; done; exit 0']); // prettier-ignore
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['ip', 'sysctl', 'ping', 'node', 'peak-xdp']);
  });

  it('HTTP through the VIP: LB container -> both backend nodes (decap container, DNAT to nginx); replies bypass the LB', async () => {
    expect(xdpProgId(ns.lb)).toBeGreaterThan(0);
    for (const be of backends) expect(xdpProgId(be.netns)).toBeGreaterThan(0);
    // VIP-sourced packets (replies) reaching the LB's kernel: with DSR there must be none.
    inNs(ns.lb, 'nft', [`add table ip ${p}; add chain ip ${p} pre { type filter hook prerouting priority 0; }; add rule ip ${p} pre ip saddr ${VIP} counter`]); // prettier-ignore
    const t = performance.now();
    const seen = new Map<string, number>();
    const n = 40;
    for (let i = 0; i < n; i++) {
      const r = await curl(ns.client, `http://${VIP}/`);
      const key = r.status === 200 ? r.body.trim() : `failed:${r.code}/${r.status}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    const ms = performance.now() - t;
    console.log(`${n} requests in ${ms.toFixed(0)} ms: ${JSON.stringify(Object.fromEntries(seen))}`);
    expect([...seen.keys()].sort()).toEqual(['be1', 'be2']);
    expect(seen.get('be1')! + seen.get('be2')!).toBe(n);
    const counter = /packets (\d+)/.exec(inNs(ns.lb, 'nft', ['list', 'table', 'ip', p]));
    expect(counter).not.toBeNull();
    expect(Number(counter![1])).toBe(0);
    // Each backend's decap program (in its container) decapsulated what reached it.
    for (const be of backends) {
      const m = await curl(be.netns, 'http://127.0.0.1:9472/metrics');
      const ipip = [...m.body.matchAll(/^peak_xdp_decap_packets_total\{([^}]*)\} (\d+)$/gm)]
        .filter((x) => /ipip/.test(x[1]!))
        .reduce((a, x) => a + Number(x[2]), 0);
      expect([be.name, ipip > 0]).toEqual([be.name, true]);
      expect(m.body).toMatch(/^peak_xdp_decap_attached\{interface="eth0"\} 1$/m);
    }
  });

  it("the LB's metrics listener answers on the node's address; its admin API stays on loopback", async () => {
    const m = await curl(ns.router, `http://${LB}:9471/metrics`);
    expect(m.status).toBe(200);
    expect(m.body).toMatch(/^peak_xdp_attached 1$/m);
    expect((await curl(ns.router, `http://${LB}:9471/state`)).status).not.toBe(200);
    // Nothing listens on the node's address at the admin port: connection refused (curl exit 7).
    expect((await curl(ns.router, `http://${LB}:9470/state`)).code).toBe(7);
    expect((await curl(ns.lb, 'http://127.0.0.1:9470/state')).status).toBe(200);
  });

  it("the LB DaemonSet's bfd container, as rendered, takes the balancer's interface from its pin (not the env)", async () => {
    const docs = YAML.parseAllDocuments(
      execFileSync('kubectl', ['kustomize', join(packageRoot, 'deploy', 'overlays', 'lb')], { encoding: 'utf8' }),
    ).map((d) => d.toJS() as { kind: string; spec?: { template: { spec: { containers: { name: string; command: string[]; args: string[] }[] } } } }); // prettier-ignore
    const bfd = docs
      .find((d) => d.kind === 'DaemonSet')!
      .spec!.template.spec.containers.find((c) => c.name === 'bfd')!;
    const c = await start(
      'bfd',
      ns.lb,
      ['BPF', 'NET_ADMIN'],
      [
        '-e',
        'PEAK_XDP_INTERFACE=wrong0',
        '-v',
        `${join(dir, 'bpffs-lb')}:/sys/fs/bpf:ro`,
        '--entrypoint',
        bfd.command[0]!,
        image,
        ...bfd.command.slice(1),
        ...bfd.args,
      ],
    );
    const found = await waitUntil(async () => /forwarding interface eth0/.test(await logs(c)), {
      timeoutMs: 15000,
      intervalMs: 200,
    });
    const log = await logs(c);
    expect([found !== null, log]).toEqual([true, expect.stringContaining('bfd: forwarding interface eth0')]);
    // bfd-daemon (exec'd by the script) is still running, with the pin it was given.
    await new Promise((r) => setTimeout(r, 1000));
    const state = (await podman(['inspect', '--format', '{{.State.Status}}', c])).stdout.trim();
    expect([state, log]).toEqual(['running', log]);
  });

  it('memory of the running containers (for the DaemonSets limits), printed', async () => {
    const rows = [];
    for (const c of [lbName, ...beNames]) {
      const mem = await memory(c);
      expect(mem.rssMb).toBeGreaterThan(0);
      rows.push(`${c}: RSS ${mem.rssMb.toFixed(0)} MB, peak ${mem.peakMb.toFixed(0)} MB`);
    }
    console.log(rows.join('\n'));
  });

  it('SIGTERM (podman stop) detaches decap and ends both roles cleanly', async () => {
    const be = backends[0]!;
    const t = performance.now();
    const r = await podman(['stop', '-t', '20', beNames[0]!]);
    expect(r.code).toBe(0);
    const code = (await podman(['inspect', '--format', '{{.State.ExitCode}}', beNames[0]!])).stdout.trim();
    expect(code).toBe('0');
    expect(xdpProgId(be.netns)).toBe(0);
    const l = await podman(['stop', '-t', '20', lbName]);
    expect(l.code).toBe(0);
    expect((await podman(['inspect', '--format', '{{.State.ExitCode}}', lbName])).stdout.trim()).toBe('0');
    console.log(`stopped in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  });
});
