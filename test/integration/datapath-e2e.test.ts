// End to end: client -> router -> LB (balancer, native XDP) -> IPIP -> 3 backends (decap XDP, nginx);
// real HTTP requests reach all three backends and replies go back directly, bypassing the LB.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { encodeAddrKey } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { Lab, run } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';
import { readPidFile, signalPid } from '../../scripts/lib/pids';

const VIP = '10.0.0.10';
const BACKENDS = [1, 2, 3].map((i) => ({
  id: i,
  name: `be${i}`,
  address: `10.10.${2 + i}.2`,
  router: `10.10.${2 + i}.1`,
}));

describePrivileged('datapath end to end (netns, native XDP, nginx)', () => {
  const lab = new Lab();
  const dir = mkdtempSync(join(tmpdir(), 'peak-e2e-'));
  const ns: Record<string, string> = {};
  let dp: KernelDatapath | undefined;
  const nginxPids: number[] = [];

  const mac = (n: string, ifname: string) =>
    JSON.parse(lab.ns(n, 'ip', ['-j', 'link', 'show', ifname]))[0].address as string;
  const sysctl = (n: string, kv: string) => lab.ns(n, 'sysctl', ['-qw', kv]);

  beforeAll(async () => {
    for (const h of ['c', 'r', 'l', 'b1', 'b2', 'b3']) ns[h] = lab.addNamespace(`pke${h}`);
    for (const h of Object.values(ns)) sysctl(h, 'net.ipv6.conf.all.disable_ipv6=1');
    const link = (a: string, an: string, b: string, bn: string) =>
      lab.addVeth({ name: an, ns: a }, { name: bn, ns: b });
    // veth names are per namespace: short fixed names are fine inside our own namespaces, but the pair is
    // created in the root namespace first, so make them unique there.
    const u = `${process.pid % 10000}`;
    const pairs: [string, string, string, string][] = [
      [ns.c!, `c${u}`, ns.r!, `rc${u}`],
      [ns.l!, `l${u}`, ns.r!, `rl${u}`],
      ...BACKENDS.map((b, i): [string, string, string, string] => [
        ns[`b${i + 1}`]!,
        `b${i + 1}${u}`,
        ns.r!,
        `rb${i + 1}${u}`,
      ]),
    ];
    for (const [a, an, b, bn] of pairs) link(a, an, b, bn);
    // IPv4 only here: IPv6 link-local chatter (RS, ND, MLD) would reach the LB as non-VIP IP packets.
    for (const n of Object.values(ns)) {
      sysctl(n!, 'net.ipv6.conf.all.disable_ipv6=1');
      sysctl(n!, 'net.ipv6.conf.default.disable_ipv6=1');
    }
    const up = (n: string, ifname: string, addr: string, mtu = 1500) => {
      lab.ns(n, 'ip', ['link', 'set', ifname, 'mtu', String(mtu), 'up']);
      lab.ns(n, 'ip', ['addr', 'add', addr, 'dev', ifname]);
    };
    up(ns.c!, `c${u}`, '10.10.1.2/24');
    up(ns.r!, `rc${u}`, '10.10.1.1/24');
    up(ns.l!, `l${u}`, '10.10.2.2/24', 1600);
    up(ns.r!, `rl${u}`, '10.10.2.1/24', 1600);
    BACKENDS.forEach((b, i) => {
      up(ns[`b${i + 1}`]!, `b${i + 1}${u}`, `${b.address}/24`, 1600);
      up(ns.r!, `rb${i + 1}${u}`, `${b.router}/24`, 1600);
    });
    lab.ns(ns.c!, 'ip', ['route', 'add', 'default', 'via', '10.10.1.1']);
    lab.ns(ns.l!, 'ip', ['route', 'add', 'default', 'via', '10.10.2.1']);
    sysctl(ns.r!, 'net.ipv4.ip_forward=1');
    sysctl(ns.r!, 'net.ipv4.conf.all.rp_filter=0');
    sysctl(ns.r!, 'net.ipv4.conf.default.rp_filter=0');
    lab.ns(ns.r!, 'ip', ['route', 'add', `${VIP}/32`, 'via', '10.10.2.2']);
    lab.ns(ns.c!, 'ethtool', ['-K', `c${u}`, 'tx', 'off']);

    // Router side of the LB link needs an XDP program for the LB's XDP_TX frames.
    const passObj = await BpfObject.load(bpfObjectPath('pass'));
    await attachXdp({
      ifname: `rl${u}`,
      netns: lab.netnsPath(ns.r!),
      program: passObj.program('xdp_pass'),
      mode: 'native',
    });
    passObj.close();

    for (const [i, b] of BACKENDS.entries()) {
      const n = ns[`b${i + 1}`]!;
      lab.ns(n, 'ip', ['route', 'add', 'default', 'via', b.router]);
      lab.ns(n, 'ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
      sysctl(n, 'net.ipv4.conf.all.arp_ignore=1');
      sysctl(n, 'net.ipv4.conf.all.arp_announce=2');
      sysctl(n, 'net.ipv4.conf.all.rp_filter=0');
      sysctl(n, `net.ipv4.conf.b${i + 1}${u}.rp_filter=0`);
      const obj = await BpfObject.load(bpfObjectPath('decap'));
      obj.map('decap_addrs').update(encodeAddrKey('address', b.address), Buffer.alloc(4));
      await attachXdp({
        ifname: `b${i + 1}${u}`,
        netns: lab.netnsPath(n),
        program: obj.program('decap'),
        mode: 'native',
      });
      obj.close();
      const conf = join(dir, `${b.name}.conf`);
      const pid = join(dir, `${b.name}.pid`);
      writeFileSync(
        conf,
        `worker_processes 1; pid ${pid}; error_log ${dir}/${b.name}.err; daemon on;
events { worker_connections 64; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen ${VIP}:80; location / { return 200 "${b.name}\\n"; } } }
`,
      );
      lab.ns(n, 'nginx', ['-c', conf]);
      nginxPids.push(await readPidFile(pid));
    }

    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    await dp.configure({
      ownMac: mac(ns.l!, `l${u}`),
      nextHopMac: mac(ns.r!, `rl${u}`),
      // A prefix of its own: sources inside the link's subnet could be the router's own address (a martian).
      encapSourceV4: { prefix: '10.10.200.0', prefixLength: 24 },
      encapSourceV6: null,
      mtu: 1600,
    });
    for (const b of BACKENDS) await dp.upsertBackend({ id: b.id, address: b.address, state: 'up' });
    await dp.upsertVip({
      key: { address: VIP, port: 80, protocol: 'tcp' },
      id: 1,
      flags: { sourceHash: false, noConntrack: false },
      tableSize: 251,
    });
    await dp.installTable(
      1,
      Uint32Array.from({ length: 251 }, (_, s) => BACKENDS[s % 3]!.id),
    );
    const st = await dp.attach({ ifname: `l${u}`, netns: lab.netnsPath(ns.l!), mode: 'native' });
    expect(st.mode).toBe('native');
  }, 60000);

  afterAll(() => {
    for (const p of nginxPids) {
      try {
        signalPid(p, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    dp?.close();
    lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('HTTP requests reach all three backends; replies bypass the LB', async () => {
    const before = (await dp!.counters()).global;
    const seen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const body = run('ip', [
        'netns',
        'exec',
        ns.c!,
        'curl',
        '-s',
        '--max-time',
        '3',
        `http://${VIP}/`,
      ]).trim();
      seen.set(body, (seen.get(body) ?? 0) + 1);
    }
    const after = (await dp!.counters()).global;
    expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
    expect([...seen.values()].reduce((a, b) => a + b, 0)).toBe(30);
    // Client packets went through the LB (encapsulated), at least SYN + ACK + request + FIN per request.
    expect(after.encap_v4! - before.encap_v4!).toBeGreaterThanOrEqual(30n * 3n);
    // Replies (VIP -> client) never reached the LB: it saw no IP packet that was not for a VIP.
    expect(after.pass_not_vip).toBe(before.pass_not_vip);
    expect(after.xdp_drop).toBe(before.xdp_drop);
  });
});
