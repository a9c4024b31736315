// FIB redirect mode on a routed LB with two interfaces: bpf_fib_lookup picks the egress interface and MACs and
// XDP_REDIRECT sends the encapsulated packet out of the other interface (the configured next-hop MAC is
// deliberately wrong, so only the FIB's answer can reach the backend); without a neighbour it falls back.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { encodeAddrKey } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { Lab } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';
import { readPidFile, signalPid } from '../../scripts/lib/pids';

const VIP = '10.0.0.10';
const BACKEND = '10.20.2.2';

describePrivileged('balancer FIB redirect (client | LB with two interfaces | backend)', () => {
  const lab = new Lab();
  const dir = mkdtempSync(join(tmpdir(), 'peak-fib-'));
  const ns: Record<'c' | 'l' | 'b', string> = { c: '', l: '', b: '' };
  const u = `${process.pid % 10000}`;
  const ifs = { c: `fc${u}`, lc: `flc${u}`, lb: `flb${u}`, b: `fb${u}` };
  let dp: KernelDatapath | undefined;
  let nginxPid: number | undefined;

  const mac = (n: string, ifname: string) =>
    JSON.parse(lab.ns(n, 'ip', ['-j', 'link', 'show', ifname]))[0].address as string;
  const sysctl = (n: string, kv: string) => lab.ns(n, 'sysctl', ['-qw', kv]);
  const curl = (timeout: number) =>
    lab.ns(ns.c, 'curl', ['-s', '--max-time', String(timeout), `http://${VIP}/`], { allowFail: true }).trim();

  beforeAll(async () => {
    ns.c = lab.addNamespace('pkfc');
    ns.l = lab.addNamespace('pkfl');
    ns.b = lab.addNamespace('pkfb');
    for (const n of Object.values(ns)) {
      sysctl(n, 'net.ipv6.conf.all.disable_ipv6=1');
      sysctl(n, 'net.ipv6.conf.default.disable_ipv6=1');
    }
    lab.addVeth({ name: ifs.c, ns: ns.c }, { name: ifs.lc, ns: ns.l });
    lab.addVeth({ name: ifs.lb, ns: ns.l }, { name: ifs.b, ns: ns.b });
    const up = (n: string, ifname: string, addr: string, mtu: number) => {
      lab.ns(n, 'ip', ['link', 'set', ifname, 'mtu', String(mtu), 'up']);
      lab.ns(n, 'ip', ['addr', 'add', addr, 'dev', ifname]);
    };
    up(ns.c, ifs.c, '10.20.1.2/24', 1500);
    up(ns.l, ifs.lc, '10.20.1.1/24', 1500);
    up(ns.l, ifs.lb, '10.20.2.1/24', 1600);
    up(ns.b, ifs.b, `${BACKEND}/24`, 1600);
    lab.ns(ns.c, 'ip', ['route', 'add', 'default', 'via', '10.20.1.1']);
    lab.ns(ns.c, 'ethtool', ['-K', ifs.c, 'tx', 'off']);
    // The LB routes (bpf_fib_lookup needs forwarding on the ingress interface); DSR replies from the VIP
    // cross it too, so reverse-path filtering is off.
    sysctl(ns.l, 'net.ipv4.ip_forward=1');
    sysctl(ns.l, 'net.ipv4.conf.all.rp_filter=0');
    sysctl(ns.l, `net.ipv4.conf.${ifs.lb}.rp_filter=0`);
    lab.ns(ns.l, 'ip', ['neigh', 'replace', BACKEND, 'lladdr', mac(ns.b, ifs.b), 'dev', ifs.lb, 'nud', 'permanent']);

    // Backend: VIP on lo, decapsulation in XDP (also what veth needs to receive redirected frames), nginx.
    lab.ns(ns.b, 'ip', ['route', 'add', 'default', 'via', '10.20.2.1']);
    lab.ns(ns.b, 'ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
    sysctl(ns.b, 'net.ipv4.conf.all.arp_ignore=1');
    sysctl(ns.b, 'net.ipv4.conf.all.arp_announce=2');
    sysctl(ns.b, 'net.ipv4.conf.all.rp_filter=0');
    sysctl(ns.b, `net.ipv4.conf.${ifs.b}.rp_filter=0`);
    const decap = await BpfObject.load(bpfObjectPath('decap'));
    decap.map('decap_addrs').update(encodeAddrKey('address', BACKEND), Buffer.alloc(4));
    await attachXdp({ ifname: ifs.b, netns: lab.netnsPath(ns.b), program: decap.program('decap'), mode: 'native' });
    decap.close();
    const conf = join(dir, 'be.conf');
    const pid = join(dir, 'be.pid');
    writeFileSync(
      conf,
      `worker_processes 1; pid ${pid}; error_log ${dir}/be.err; daemon on;
events { worker_connections 64; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen ${VIP}:80; location / { return 200 "fib-backend\\n"; } } }
`,
    );
    lab.ns(ns.b, 'nginx', ['-c', conf]);
    nginxPid = await readPidFile(pid);

    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    await dp.configure({
      ownMac: mac(ns.l, ifs.lc),
      nextHopMac: '02:00:00:00:00:99', // nobody's: only the FIB's MACs reach the backend
      encapSourceV4: { prefix: '10.20.2.1', prefixLength: 32 },
      encapSourceV6: null,
      mtu: 1600,
      fibRedirect: true,
    });
    await dp.upsertBackend({ id: 1, address: BACKEND, state: 'up' });
    const flags = { sourceHash: false, noConntrack: false };
    await dp.upsertVip({ key: { address: VIP, port: 80, protocol: 'tcp' }, id: 1, flags, tableSize: 7 });
    await dp.installTable(1, new Uint32Array(7).fill(1));
    const st = await dp.attach({ ifname: ifs.lc, netns: lab.netnsPath(ns.l), mode: 'native' });
    expect(st.mode).toBe('native');
  }, 60000);

  afterAll(() => {
    if (nginxPid) {
      try {
        signalPid(nginxPid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    dp?.close();
    lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('HTTP through the LB: every VIP packet is redirected out of the backend-side interface', async () => {
    const before = (await dp!.counters()).global;
    for (let i = 0; i < 5; i++) expect(curl(3)).toBe('fib-backend');
    const after = (await dp!.counters()).global;
    const d = (k: string) => after[k]! - before[k]!;
    // SYN, ACK, request, FIN at least per request, each one redirected; nothing fell back to XDP_TX.
    expect(d('fib_redirect')).toBeGreaterThanOrEqual(5n * 3n);
    expect(d('xdp_redirect')).toBe(d('fib_redirect'));
    expect(d('encap_v4')).toBe(d('fib_redirect'));
    expect(d('fib_fallback')).toBe(0n);
    expect(d('xdp_tx')).toBe(0n);
  });

  it('without a neighbour entry the lookup fails and the packet falls back to XDP_TX (counted)', async () => {
    lab.ns(ns.l, 'ip', ['neigh', 'del', BACKEND, 'dev', ifs.lb]);
    const before = (await dp!.counters()).global;
    expect(curl(1)).toBe('');
    const after = (await dp!.counters()).global;
    expect(after.fib_fallback! - before.fib_fallback!).toBeGreaterThan(0n);
    expect(after.xdp_tx! - before.xdp_tx!).toBe(after.fib_fallback! - before.fib_fallback!);
    expect(after.fib_redirect).toBe(before.fib_redirect);
  });
});
