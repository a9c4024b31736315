// IPv6 path MTU for a moved flow, end to end in namespaces: client -- router -- {backend A, backend B}, every
// address IPv6. The router sends the VIP's traffic, both ways, through the real balancer (a one-armed veth pair
// inside it: routed out one end, the balancer on the other sends its GUE frames back by XDP_TX); both backends run
// the real decap with the VIP on lo. A connection opens on A; then the VIP's table moves to B with A as every slot's
// previous owner (stateless: no connection table keeps the flow on A). The client's link from the router carries
// 1280-byte packets, so A's full-size replies draw the router's packet-too-big, addressed to the VIP: the balancer
// hints it with A, B's decap hands it to A, and A's TCP shrinks its segments. With B's second chance off the same
// errors stay on B (which has no such connection): A never learns the path MTU and its reply does not get through.
import { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { bpfObjectPath } from '../../src/paths';
import {
  attachDecap,
  counterDiff,
  decapCounterNames,
  DecapMaps,
  disableSecondChance,
  jsonLineCaller,
  readDecapCounters,
  ScriptProcesses,
} from '../helpers/decap-lab';
import { Lab } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const VIP = 'fd00:31::10';
const PORT = 81;
const CLIENT = 'fd31:1::2';
const ROUTER_C = 'fd31:1::1';
/** The balancer's encapsulation sources: inside the decaps' --from. */
const LB_PREFIX = { prefix: 'fd31:9::', prefixLength: 64 };
const HOSTS = {
  a: { address: 'fd31:2::2', router: 'fd31:2::1' },
  b: { address: 'fd31:3::2', router: 'fd31:3::1' },
} as const;
/** Bytes A sends once the flow has moved. */
const SIZE = 20000;

// Client: JSON-line commands {id, op: 'open'|'write'|'read', text?, n?, ms?} -> {id, r} on one connection to the VIP.
const CLIENT_JS = `
const net = require('node:net');
let c = null;
require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => {
  const m = JSON.parse(l);
  const done = (r) => process.stdout.write(JSON.stringify({ id: m.id, r }) + '\\n');
  if (m.op === 'open') {
    c = net.connect({ host: '${VIP}', port: ${PORT}, localAddress: '${CLIENT}' });
    c.on('error', (e) => { c.failed = String(e); });
    const t = setTimeout(() => done({ error: c.failed || 'connect timeout' }), 3000);
    c.once('connect', () => { clearTimeout(t); done({ port: c.localPort }); });
    return;
  }
  if (!c || c.destroyed) return done({ error: 'closed' + (c && c.failed ? ': ' + c.failed : '') });
  if (m.op === 'write') { c.write(m.text); return done({}); }
  // read: the bytes received within m.ms, or until m.n of them came
  let bytes = 0;
  const fin = () => { clearTimeout(t); c.removeListener('data', on); done({ bytes }); };
  const on = (d) => { bytes += d.length; if (bytes >= m.n) fin(); };
  const t = setTimeout(fin, m.ms);
  c.on('data', on);
});
`;

// A's server: tells "got" when the connection wrote, then sends `n` bytes for each line `n` on its stdin.
const SERVER_JS = `
let sock = null;
require('node:net').createServer((s) => { s.on('error', () => {}); s.on('data', () => { sock = s; process.stdout.write('got\\n'); }); })
  .listen(${PORT}, '${VIP}', () => process.stdout.write('ready\\n'));
require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => sock.write(Buffer.alloc(Number(l), 120)));
`;

describePrivileged('second chance end to end: IPv6 path MTU (netns, native XDP, GUE)', () => {
  const lab = new Lab();
  const dir = mkdtempSync(join(tmpdir(), 'gp6-'));
  const ns: Record<'c' | 'r' | 'a' | 'b', string> = { c: '', r: '', a: '', b: '' };
  const u = `${process.pid % 10000}`;
  const ifs = {
    c: `gp6c${u}`,
    rc: `gp6rc${u}`,
    ra: `gp6ra${u}`,
    a: `gp6a${u}`,
    rb: `gp6rb${u}`,
    b: `gp6b${u}`,
    // the balancer's pair inside the router: routed out of rl, the balancer on rm
    rl: `gp6rl${u}`,
    rm: `gp6rm${u}`,
  };
  const procs = new ScriptProcesses(dir);
  const decap: Record<'a' | 'b', DecapMaps | undefined> = { a: undefined, b: undefined };
  let balancer: KernelDatapath | undefined;
  let names: string[] = [];
  let server: ChildProcessWithoutNullStreams | undefined;
  let clientCall: (m: Record<string, unknown>) => Promise<{ port?: number; error?: string; bytes?: number }>;

  const sh = (n: string, ...a: string[]) => lab.ns(n, a[0]!, a.slice(1));
  const mac = (n: string, ifname: string) =>
    JSON.parse(sh(n, 'ip', '-j', 'link', 'show', ifname))[0].address as string;
  const counters = (h: 'a' | 'b') => readDecapCounters(decap[h]!, names);
  const diff = (before: Record<string, bigint>, after: Record<string, bigint>) =>
    counterDiff(names, before, after);

  beforeAll(async () => {
    names = decapCounterNames();
    for (const h of ['c', 'r', 'a', 'b'] as const) ns[h] = lab.addNamespace(`gp6${h}`);
    lab.addVeth({ name: ifs.c, ns: ns.c }, { name: ifs.rc, ns: ns.r });
    lab.addVeth({ name: ifs.a, ns: ns.a }, { name: ifs.ra, ns: ns.r });
    lab.addVeth({ name: ifs.b, ns: ns.b }, { name: ifs.rb, ns: ns.r });
    lab.addVeth({ name: ifs.rl, ns: ns.r }, { name: ifs.rm, ns: ns.r });
    // no duplicate address detection: an address is usable at once (not tentative for a second or two)
    const up = (n: string, ifname: string, addr: string | null, mtu: number) => {
      sh(n, 'ip', 'link', 'set', ifname, 'mtu', String(mtu), 'up');
      if (addr !== null) sh(n, 'ip', '-6', 'addr', 'add', addr, 'dev', ifname, 'nodad');
    };
    up(ns.c, ifs.c, `${CLIENT}/64`, 1500);
    up(ns.r, ifs.rc, `${ROUTER_C}/64`, 1500);
    up(ns.r, ifs.ra, `${HOSTS.a.router}/64`, 1600);
    up(ns.r, ifs.rb, `${HOSTS.b.router}/64`, 1600);
    up(ns.r, ifs.rl, null, 1600);
    up(ns.r, ifs.rm, null, 1600);
    up(ns.a, ifs.a, `${HOSTS.a.address}/64`, 1600);
    up(ns.b, ifs.b, `${HOSTS.b.address}/64`, 1600);
    sh(ns.c, 'ip', '-6', 'route', 'add', 'default', 'via', ROUTER_C);
    sh(ns.c, 'ethtool', '-K', ifs.c, 'tx', 'off'); // veth partial checksums do not survive native XDP
    sh(ns.r, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    // The VIP is routed out of rl to the balancer on rm (a static neighbour: rm has no address to answer for it).
    sh(ns.r, 'ip', '-6', 'route', 'add', `${VIP}/128`, 'dev', ifs.rl);
    const neigh = ['neigh', 'add', VIP, 'lladdr', mac(ns.r, ifs.rm), 'dev', ifs.rl, 'nud', 'permanent'];
    sh(ns.r, 'ip', '-6', ...neigh);

    const pass = await BpfObject.load(bpfObjectPath('pass'));
    // XDP_TX frames (the balancer's on rm, the backends' second-chance hops) arrive at the peer veths, which need a
    // program of their own to take them
    for (const rif of [ifs.ra, ifs.rb, ifs.rl])
      await attachXdp({
        ifname: rif,
        netns: lab.netnsPath(ns.r),
        program: pass.program('xdp_pass'),
        mode: 'native',
      });
    pass.close();

    for (const h of ['a', 'b'] as const) {
      const n = ns[h];
      sh(n, 'ip', '-6', 'route', 'add', 'default', 'via', HOSTS[h].router);
      sh(n, 'ip', '-6', 'addr', 'add', `${VIP}/128`, 'dev', 'lo', 'nodad');
      // bpf_fib_lookup answers only on an interface that forwards (README: second-chance backends need it)
      sh(n, 'sysctl', '-qw', `net.ipv6.conf.${ifs[h]}.forwarding=1`);
      // a backend has resolved its gateway long before a hint arrives; here it must be made to
      sh(n, 'ping', '-6', '-c', '1', '-W', '2', HOSTS[h].router);
      // hints are honoured only from the LB prefix (--from); the backends' second-chance hops come from fd31::/16
      decap[h] = await attachDecap({
        netns: lab.netnsPath(n),
        ifname: ifs[h],
        address: HOSTS[h].address,
        from: [`${LB_PREFIX.prefix}/${LB_PREFIX.prefixLength}`],
        gueFrom: ['fd31::/16'],
      });
    }
    // the router has resolved both backends (the balancer's frames to them are forwarded at once)
    sh(ns.r, 'ping', '-6', '-c', '1', '-W', '2', HOSTS.a.address);
    sh(ns.r, 'ping', '-6', '-c', '1', '-W', '2', HOSTS.b.address);

    balancer = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    await balancer.configure({
      ownMac: mac(ns.r, ifs.rm),
      nextHopMac: mac(ns.r, ifs.rl),
      encapSourceV4: null,
      encapSourceV6: LB_PREFIX,
      mtu: 1600,
    });
    await balancer.upsertBackend({ id: 1, address: HOSTS.a.address, state: 'up', encap: 'gue' });
    await balancer.upsertBackend({ id: 2, address: HOSTS.b.address, state: 'up', encap: 'gue' });
    // stateless: no connection table keeps a flow on its first backend once the table moves
    await balancer.upsertVip({ key: { address: VIP, port: PORT, protocol: 'tcp' }, id: 1, flags: { sourceHash: false, noConntrack: false, stateless: true }, tableSize: 13 }); // prettier-ignore
    await balancer.installTable(1, new Uint32Array(13).fill(1));
    balancer.flushVipIndex();
    await attachXdp({
      ifname: ifs.rm,
      netns: lab.netnsPath(ns.r),
      program: balancer.program,
      mode: 'native',
    });

    server = procs.spawn(ns.a, SERVER_JS);
    clientCall = jsonLineCaller(procs.spawn(ns.c, CLIENT_JS));
  }, 60000);

  afterAll(async () => {
    await procs.stop();
    for (const m of [decap.a, decap.b].flatMap((d) => (d ? [d.stats, d.config, d.sources] : []))) m.close();
    balancer?.close();
    lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a packet-too-big about a moved flow is hinted by the balancer and reaches the previous owner through B', async () => {
    const lines = createInterface({ input: server!.stdout });
    const nextLine = () => new Promise<string>((res) => lines.once('line', res));
    expect(await nextLine()).toBe('ready');

    // The connection opens on A (the table names A only).
    const a0 = counters('a');
    const opened = await clientCall({ op: 'open' });
    expect(opened.error).toBeUndefined();
    const got = nextLine();
    expect(await clientCall({ op: 'write', text: 'send' })).toEqual({});
    expect(await got).toBe('got');
    expect(diff(a0, counters('a')).gue).toBeGreaterThanOrEqual(2); // the handshake's ACK and the write came by GUE

    // The table moves to B; every slot's previous owner is A.
    await balancer!.installTable(1, new Uint32Array(13).fill(2));
    await balancer!.installPreviousTable(1, new Uint32Array(13).fill(1));
    // Contrast: B's second chance off. The hinted errors stay on B, whose stack has no such connection.
    const saved = disableSecondChance(decap.b!);
    // The client's link from the router carries 1280-byte packets: A's 1500-byte segments get packet-too-big there.
    sh(ns.r, 'ip', 'link', 'set', ifs.rc, 'mtu', '1280');
    try {
      const lb0 = (await balancer!.counters()).global;
      const b0 = counters('b');
      const lost = clientCall({ op: 'read', n: SIZE, ms: 2500 });
      server!.stdin.write(`${SIZE}\n`);
      const r0 = await lost;
      const lb1 = (await balancer!.counters()).global;
      const dB0 = diff(b0, counters('b'));
      const routeA0 = sh(ns.a, 'ip', '-6', 'route', 'get', CLIENT, 'from', VIP);
      console.log(`IPv6 path MTU, second chance off on B: ${JSON.stringify(r0)} of ${SIZE} bytes; balancer icmp_error_forwarded +${lb1.icmp_error_forwarded! - lb0.icmp_error_forwarded!} hint_sent +${lb1.hint_sent! - lb0.hint_sent!}; B ${JSON.stringify(dB0)}; A's route: ${routeA0.trim()}`); // prettier-ignore
      expect(r0.bytes).toBeLessThan(SIZE);
      expect(lb1.icmp_error_forwarded! - lb0.icmp_error_forwarded!).toBeGreaterThanOrEqual(1);
      expect(lb1.hint_sent! - lb0.hint_sent!).toBe(lb1.icmp_error_forwarded! - lb0.icmp_error_forwarded!);
      expect(dB0.sc_disabled).toBeGreaterThanOrEqual(1);
      expect(routeA0).not.toMatch(/mtu 1280/);

      // Second chance on: A's next retransmission draws another error, which B forwards to A; A shrinks its
      // segments to the path MTU and the whole reply arrives (the client's ACKs reach A the same way).
      decap.b!.config.update(Buffer.alloc(4), saved);
      const a1 = counters('a');
      const b1 = counters('b');
      const r1 = await clientCall({ op: 'read', n: SIZE - r0.bytes!, ms: 15000 });
      const dA1 = diff(a1, counters('a'));
      const dB1 = diff(b1, counters('b'));
      const routeA1 = sh(ns.a, 'ip', '-6', 'route', 'get', CLIENT, 'from', VIP);
      console.log(`IPv6 path MTU, second chance on: ${JSON.stringify(r1)} more bytes; B ${JSON.stringify(dB1)}; A ${JSON.stringify(dA1)}; A's route: ${routeA1.trim()}`); // prettier-ignore
      expect(r0.bytes! + r1.bytes!).toBe(SIZE);
      expect(dB1.sc_forward).toBeGreaterThanOrEqual(1);
      expect(dA1.sc_no_hint).toBeGreaterThanOrEqual(1);
      expect(routeA1).toMatch(/mtu 1280/);
    } finally {
      decap.b!.config.update(Buffer.alloc(4), saved);
      sh(ns.r, 'ip', 'link', 'set', ifs.rc, 'mtu', '1500');
    }
  }, 40000);
});
