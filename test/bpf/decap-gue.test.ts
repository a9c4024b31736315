// GUE decap and the second chance through BPF_PROG_TEST_RUN. The program runs in a network namespace of its own
// (a child process under `ip netns exec`), because what it decides depends on that namespace: bpf_fib_lookup
// (routes, permanent neighbours, forwarding on), bpf_skc_lookup_tcp (real sockets the child opens) and
// bpf_xdp_ct_lookup (a kube-proxy-like nftables DNAT), bpf_tcp_check_syncookie (a listener with tcp_syncookies=2).
// decap_sources names the LB prefixes (hints honoured) and this link's peers (GUE only). Frames are built here
// and compared byte for byte.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import fc from 'fast-check';
import { btfLayout } from '../../src/datapath/bpf';
import { encodeAddr, encodeAddrKey } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { Lab } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';
import { ethHeader, EthSpec, frame, IpSpec, ipPacket, l3Offset, TCP_FLAGS } from '../helpers/packet';

const ROOT = resolve(__dirname, '../..');
const OBJECT = bpfObjectPath('decap');
// the same program built with kfunc names no kernel has (test/fixtures/decap_no_ct.bpf.c): a kernel without them
const NO_CT_OBJECT = bpfObjectPath('fixtures/decap_no_ct');

// The child: loads the decap object, owns its maps and sockets, runs frames on request (JSON lines).
const RUNNER = `
const { BpfObject } = require(${JSON.stringify(join(ROOT, 'dist/src/datapath/bpf.js'))});
const net = require('node:net');
const rl = require('node:readline').createInterface({ input: process.stdin });
const progs = {}, slots = {};
const socks = [];
const k32 = (i) => { const b = Buffer.alloc(4); b.writeUInt32LE(i); return b; };
async function handle(m) {
  switch (m.op) {
    case 'load': {
      const o = await BpfObject.load(m.object);
      progs[m.slot] = o.program('decap');
      slots[m.slot] = {};
      for (const n of ['decap_addrs', 'decap_stats', 'decap_config', 'decap_sc_targets', 'decap_sources', 'decap_moved', 'decap_moved_used']) slots[m.slot][n] = o.map(n);
      o.close();
      return {};
    }
    case 'addr': {
      const maps = slots[m.slot];
      if (m.add) maps.decap_addrs.update(Buffer.from(m.key, 'hex'), Buffer.alloc(4));
      else maps.decap_addrs.delete(Buffer.from(m.key, 'hex'));
      return {};
    }
    case 'source':
      slots[m.slot].decap_sources.update(Buffer.from(m.key, 'hex'), k32(m.kinds));
      return {};
    case 'config':
      slots[m.slot].decap_config.update(k32(0), Buffer.from(m.value, 'hex'));
      return {};
    case 'run':
      return m.frames.map((f) => {
        const r = progs[m.slot].testRun({ data: Buffer.from(f, 'hex'), ingressIfindex: m.ifindex });
        return { v: r.verdictName, d: r.data.toString('hex') };
      });
    case 'counters': {
      const maps = slots[m.slot];
      const out = [];
      for (let i = 0; i < maps.decap_stats.maxEntries; i++)
        out.push(maps.decap_stats.lookupPerCpu(k32(i)).reduce((s, b) => s + b.readBigUInt64LE(0), 0n).toString());
      return out;
    }
    case 'targets': {
      const m2 = slots[m.slot].decap_sc_targets;
      const out = {};
      for (const k of m2.keys()) out[k.toString('hex')] = m2.lookup(k).readBigUInt64LE(0).toString();
      return out;
    }
    case 'moved': {
      const mv = slots[m.slot].decap_moved;
      const out = {};
      for (const k of mv.keys()) out[k.toString('hex')] = mv.lookup(k).toString('hex');
      return out;
    }
    case 'remember':
      slots[m.slot].decap_moved.update(Buffer.from(m.key, 'hex'), Buffer.from(m.value, 'hex'));
      slots[m.slot].decap_moved_used.update(k32(0), k32(1));
      return {};
    case 'clearMoved': {
      const mv = slots[m.slot].decap_moved;
      for (const k of [...mv.keys()]) mv.delete(k);
      slots[m.slot].decap_moved_used.update(k32(0), k32(0));
      return {};
    }
    case 'listen':
      await new Promise((res, rej) => {
        const s = net.createServer((c) => { socks.push(c); c.on('error', () => {}); });
        s.on('error', rej);
        s.listen(m.port, m.host, res);
        socks.push(s);
      });
      return {};
    case 'connect': {
      const c = net.connect({ host: m.host, port: m.port, localAddress: m.local });
      await new Promise((res, rej) => { c.on('connect', res); c.on('error', rej); });
      socks.push(c);
      return { port: c.localPort };
    }
  }
  throw new Error('unknown op ' + m.op);
}
rl.on('line', (l) => {
  const m = JSON.parse(l);
  handle(m).then((r) => process.stdout.write(JSON.stringify({ id: m.id, r }) + '\\n'),
                 (e) => process.stdout.write(JSON.stringify({ id: m.id, e: String(e && e.stack || e) }) + '\\n'));
});
rl.on('close', () => { for (const s of socks) s.destroy ? s.destroy() : s.close(); process.exit(0); });
`;

const GUE_PORT = 6080;
const B4 = '10.77.0.2'; // this host (B)
const B6 = 'fd77::2';
const A4 = '10.77.0.3'; // the previous owner, on the same link
const A6 = 'fd77::3';
const A_MAC = '02:00:00:00:77:03';
const R4 = '10.78.0.3'; // a previous owner reached through the other interface (XDP_REDIRECT)
const R_MAC = '02:00:00:00:78:03';
const NOWHERE4 = '10.99.0.1'; // no route
const VIP4 = '10.0.0.10';
const VIP6 = '2001:db8::10';
const CLIENT4 = '10.66.0.1';
const CLIENT6 = '2001:db8:66::1';
const NAT_VIP = '10.0.0.20'; // DNATed (node mode): only conntrack knows the flow
const LB_MAC = '02:00:00:00:0b:01';

/** The GUE frame the LB sends: outer IP / UDP (checksum 0) / GUE (+ hint or other private data) / inner. */
function gue(o: {
  eth?: EthSpec;
  outer: IpSpec;
  inner: Buffer;
  hint?: string;
  sport?: number;
  dport?: number;
  b0?: number;
  proto?: number;
  flags?: number;
  priv?: Buffer;
  variant1?: boolean;
}): Buffer {
  let opts = Buffer.alloc(0);
  if (o.hint) {
    const a = encodeAddr('hint', o.hint);
    opts = Buffer.concat([Buffer.from([0x50, a.family, 0, 0]), a.bytes.subarray(0, a.family === 4 ? 4 : 16)]);
  }
  if (o.priv) opts = o.priv;
  const h = Buffer.from([o.b0 ?? opts.length / 4, o.proto ?? (o.inner[0]! >> 4 === 4 ? 4 : 41), 0, 0]);
  h.writeUInt16BE(o.flags ?? 0, 2);
  const payload = o.variant1 ? o.inner : Buffer.concat([h, opts, o.inner]);
  return frame({
    eth: o.eth ?? { src: LB_MAC },
    ip: o.outer,
    l4: { type: 'udp', sport: o.sport ?? 0x8123, dport: o.dport ?? GUE_PORT, payload, noChecksum: true },
  });
}

/** Ethernet (tags kept) + the inner packet: what a strip passes up. */
function stripped(input: Buffer, inner: Buffer): Buffer {
  const l3 = l3Offset(input);
  const eth = Buffer.from(input.subarray(0, l3));
  eth.writeUInt16BE(inner[0]! >> 4 === 4 ? 0x0800 : 0x86dd, l3 - 2);
  return Buffer.concat([eth, inner]);
}

/** The last-hop mark (bpf/gue.h PEAK_GUE_LAST_HOP_TYPE, Hlen 1): a peer's hop sent on once more carries it. */
const LAST_HOP = Buffer.from([0x4c, 0, 0, 0]);

/** The exact second-chance frame toward `to`: GUE with Hlen 0 (`lastHop`: Hlen 1, the last-hop mark), UDP checksum
 * 0, DF, TTL 64, TOS of the inner. */
function forwarded(o: { dmac: string; smac: string; src: string; to: string; sport: number; inner: Buffer; vlans?: EthSpec['vlans']; lastHop?: boolean }): Buffer {
  const v4in = o.inner[0]! >> 4 === 4;
  const tos = v4in ? o.inner[1]! : (o.inner.readUInt32BE(0) >>> 20) & 0xff;
  const base = Buffer.from([o.lastHop ? 1 : 0, v4in ? 4 : 41, 0, 0]);
  const g = o.lastHop ? Buffer.concat([base, LAST_HOP]) : base;
  const pkt = ipPacket(
    { src: o.src, dst: o.to, tos, ttl: 64, id: 0, df: true, flowLabel: o.sport & 0x7fff },
    { type: 'udp', sport: o.sport, dport: GUE_PORT, payload: Buffer.concat([g, o.inner]), noChecksum: true },
  );
  return Buffer.concat([ethHeader({ dst: o.dmac, src: o.smac, vlans: o.vlans }, pkt[0]! >> 4 === 4 ? 0x0800 : 0x86dd), pkt]);
}

const tcp = (src: string, dst: string, sport: number, flags: number = TCP_FLAGS.ACK, tos = 0) =>
  ipPacket({ src, dst, tos }, { type: 'tcp', sport, dport: 80, flags, payload: Buffer.from('hello') });
const in4 = tcp(CLIENT4, VIP4, 40001);
const in6 = tcp(CLIENT6, VIP6, 40001);
const out4 = { src: '10.255.0.7', dst: B4 };
const out6 = { src: 'fd00:ff::7', dst: B6 };

const decapEnum = (name: string) => btfLayout(OBJECT).enums.find((x) => x.name === name)!.values;

/** decap_config; the sources bit set unless `noSources` (the LB prefixes below are written at start). */
function decapConfig(o: { port?: number; flags?: number; srcV4?: string; srcV6?: string; noSources?: boolean } = {}): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16BE(o.port ?? 0, 0); // network order
  const sources = o.noSources ? 0 : decapEnum('peak_decap_config_flag').PEAK_DECAP_CFG_F_SOURCES!;
  b.writeUInt16LE((o.flags ?? 0) | sources, 2);
  if (o.srcV4) encodeAddr('srcV4', o.srcV4).bytes.copy(b, 4, 0, 4);
  if (o.srcV6) encodeAddr('srcV6', o.srcV6).bytes.copy(b, 8, 0, 16);
  return b;
}

/** decap_moved's key (struct peak_decap_flow_key): the inner family, then the flow client -> VIP as struct
 * bpf_sock_tuple (36 bytes; IPv4 in its first 12). */
function movedKey(client: string, vip: string, cport: number, vport = 80): string {
  const c = encodeAddr('client', client);
  const v = encodeAddr('vip', vip);
  const k = Buffer.alloc(40);
  k[0] = c.family;
  const n = c.family === 4 ? 4 : 16;
  c.bytes.copy(k, 4, 0, n);
  v.bytes.copy(k, 4 + n, 0, n);
  k.writeUInt16BE(cport, 4 + 2 * n);
  k.writeUInt16BE(vport, 6 + 2 * n);
  return k.toString('hex');
}

/** decap_moved's value (struct peak_decap_moved): the owner's family, then its address (IPv4 in the first 4 bytes). */
function movedValue(owner: string): string {
  const a = encodeAddr('owner', owner);
  const b = Buffer.alloc(20);
  b[0] = a.family;
  a.bytes.copy(b, 4, 0, a.family === 4 ? 4 : 16);
  return b.toString('hex');
}

describePrivileged('decap: GUE and the second chance (BPF_PROG_TEST_RUN in a namespace)', () => {
  const lab = new Lab();
  const dir = mkdtempSync(join(tmpdir(), 'gud-decap-'));
  let ns = '';
  let child: ChildProcessWithoutNullStreams | undefined;
  const pending = new Map<number, { res: (v: unknown) => void; rej: (e: Error) => void }>();
  let nextId = 1;
  let ifindex = 0;
  let myMac = '';
  let names: string[] = [];
  let estPort = 0; // client port of an established connection CLIENT4 -> VIP4:80 held here
  let estPort6 = 0;
  let natPort = 0; // client port of a connection to NAT_VIP:80, DNATed to another address here

  const call = <T>(m: Record<string, unknown>): Promise<T> =>
    new Promise((res, rej) => {
      const id = nextId++;
      pending.set(id, { res: res as (v: unknown) => void, rej });
      child!.stdin.write(JSON.stringify({ slot: 'main', ...m, id }) + '\n');
    });
  const run = async (frames: Buffer[], slot = 'main') =>
    (await call<{ v: string; d: string }[]>({ op: 'run', slot, frames: frames.map((f) => f.toString('hex')), ifindex })).map(
      (r) => ({ verdict: r.v, data: Buffer.from(r.d, 'hex') }),
    );
  const run1 = async (f: Buffer, slot = 'main') => (await run([f], slot))[0]!;
  const counters = async (slot = 'main'): Promise<Record<string, bigint>> => {
    const v = await call<string[]>({ op: 'counters', slot });
    return Object.fromEntries(names.map((n, i) => [n, BigInt(v[i] ?? '0')]));
  };
  const delta = async <T>(fn: () => Promise<T>, slot = 'main'): Promise<{ r: T; d: Record<string, bigint> }> => {
    const before = await counters(slot);
    const r = await fn();
    const after = await counters(slot);
    const d: Record<string, bigint> = {};
    for (const n of names) if (after[n]! !== before[n]!) d[n] = after[n]! - before[n]!;
    return { r, d };
  };
  const setConfig = (o: Parameters<typeof decapConfig>[0] = {}) =>
    call({ op: 'config', value: decapConfig(o).toString('hex') });

  beforeAll(async () => {
    const e = btfLayout(OBJECT).enums.find((x) => x.name === 'peak_decap_counter')!;
    names = [];
    for (const [n, v] of Object.entries(e.values)) if (n !== 'PEAK_DECAP_MAX') names[v] = n.replace(/^PEAK_DECAP_/, '').toLowerCase();

    ns = lab.addNamespace('gud');
    const sfx = ns.slice(3);
    const [e0, e0p, e1, e1p] = [`gud${sfx}a`, `gud${sfx}b`, `gud${sfx}c`, `gud${sfx}d`];
    lab.addVeth({ name: e0, ns }, { name: e0p, ns });
    lab.addVeth({ name: e1, ns }, { name: e1p, ns });
    const sh = (...a: string[]) => lab.ns(ns, a[0]!, a.slice(1));
    for (const l of [e0, e0p, e1, e1p]) sh('ip', 'link', 'set', l, 'up');
    sh('ip', 'addr', 'add', `${B4}/24`, 'dev', e0);
    sh('ip', '-6', 'addr', 'add', `${B6}/64`, 'dev', e0, 'nodad');
    sh('ip', 'addr', 'add', '10.78.0.2/24', 'dev', e1);
    sh('ip', 'neigh', 'replace', A4, 'lladdr', A_MAC, 'dev', e0, 'nud', 'permanent');
    sh('ip', '-6', 'neigh', 'replace', A6, 'lladdr', A_MAC, 'dev', e0, 'nud', 'permanent');
    sh('ip', 'neigh', 'replace', R4, 'lladdr', R_MAC, 'dev', e1, 'nud', 'permanent');
    // bpf_fib_lookup answers only for interfaces that forward (README: a second-chance backend needs it).
    sh('sysctl', '-qw', 'net.ipv4.conf.all.forwarding=1');
    sh('sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    for (const a of [VIP4, CLIENT4, NAT_VIP, '10.0.0.21']) sh('ip', 'addr', 'add', `${a}/32`, 'dev', 'lo');
    for (const a of [VIP6, CLIENT6]) sh('ip', '-6', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad');
    // node mode: kube-proxy-like DNAT of NAT_VIP:80 to 10.0.0.21:8080 (conntrack holds the VIP tuple)
    const nft = join(dir, 'nat.nft');
    writeFileSync(
      nft,
      `table ip gudnat {
  chain out { type nat hook output priority -100; ip daddr ${NAT_VIP} tcp dport 80 dnat to 10.0.0.21:8080; }
}
`,
    );
    sh('nft', '-f', nft);
    const link = JSON.parse(sh('ip', '-j', 'link', 'show', e0))[0] as { ifindex: number; address: string };
    ifindex = link.ifindex;
    myMac = link.address;

    const runner = join(dir, 'runner.js');
    writeFileSync(runner, RUNNER);
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, runner], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += String(d)));
    createInterface({ input: child.stdout }).on('line', (l) => {
      const m = JSON.parse(l) as { id: number; r?: unknown; e?: string };
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.e) p?.rej(new Error(m.e));
      else p?.res(m.r);
    });
    child.on('exit', (code) => {
      for (const p of pending.values()) p.rej(new Error(`runner exited ${code}: ${err}`));
    });
    await call({ op: 'load', object: OBJECT });
    await call({ op: 'load', object: NO_CT_OBJECT, slot: 'noct' });
    // decap_sources as `--from 10.255.0.0/24 fd00:ff::/64 --gue-from 10.77.0.0/24 fd77::/64` writes them: hints
    // are honoured from the LB prefixes only; this link's peers (the forwarded frames' sources) send GUE only
    const kinds = decapEnum('peak_decap_source_kind');
    const lbKinds = kinds.PEAK_DECAP_SRC_IPIP! | kinds.PEAK_DECAP_SRC_GUE!;
    const sourceKey = (prefix: string, len: number) => {
      const a = encodeAddr('prefix', prefix);
      const k = Buffer.alloc(24);
      k.writeUInt32LE(32 + len, 0);
      k[4] = a.family;
      a.bytes.copy(k, 8, 0, a.family === 4 ? 4 : 16);
      return k.toString('hex');
    };
    for (const slot of ['main', 'noct']) {
      for (const a of [B4, B6]) await call({ op: 'addr', slot, add: true, key: encodeAddrKey('address', a).toString('hex') });
      await call({ op: 'source', slot, key: sourceKey('10.255.0.0', 24), kinds: lbKinds });
      await call({ op: 'source', slot, key: sourceKey('fd00:ff::', 64), kinds: lbKinds });
      await call({ op: 'source', slot, key: sourceKey('10.77.0.0', 24), kinds: kinds.PEAK_DECAP_SRC_GUE! });
      await call({ op: 'source', slot, key: sourceKey('fd77::', 64), kinds: kinds.PEAK_DECAP_SRC_GUE! });
      await call({ op: 'config', slot, value: decapConfig().toString('hex') });
    }
    await call({ op: 'listen', host: VIP4, port: 80 });
    await call({ op: 'listen', host: VIP6, port: 80 });
    await call({ op: 'listen', host: '10.0.0.21', port: 8080 });
    estPort = (await call<{ port: number }>({ op: 'connect', host: VIP4, port: 80, local: CLIENT4 })).port;
    estPort6 = (await call<{ port: number }>({ op: 'connect', host: VIP6, port: 80, local: CLIENT6 })).port;
    natPort = (await call<{ port: number }>({ op: 'connect', host: NAT_VIP, port: 80, local: CLIENT4 })).port;
  }, 30000);

  // each test starts with no moved flow remembered (a forward on a hint remembers its flow: see 'moved flows')
  beforeEach(async () => {
    for (const slot of ['main', 'noct']) await call({ op: 'clearMoved', slot });
  });

  afterAll(async () => {
    if (child) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.stdin.end();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 3000)))]);
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('decapsulation (no hint)', () => {
    const cases: { name: string; input: Buffer; inner: Buffer }[] = [
      { name: 'IPv4 outer, IPv4 inner', input: gue({ outer: out4, inner: in4 }), inner: in4 },
      { name: 'IPv4 outer, IPv6 inner', input: gue({ outer: out4, inner: in6 }), inner: in6 },
      { name: 'IPv6 outer, IPv4 inner', input: gue({ outer: out6, inner: in4 }), inner: in4 },
      { name: 'IPv6 outer, IPv6 inner', input: gue({ outer: out6, inner: in6 }), inner: in6 },
      {
        name: 'two VLAN tags kept',
        input: gue({ eth: { src: LB_MAC, vlans: [{ tpid: 0x88a8, tci: 5 }, { tci: 9 }] }, outer: out4, inner: in4 }),
        inner: in4,
      },
      { name: 'outer IPv4 options', input: gue({ outer: { ...out4, options: Buffer.alloc(8, 1) }, inner: in4 }), inner: in4 },
      { name: 'GUE variant 1 (IP right after UDP)', input: gue({ outer: out4, inner: in6, variant1: true }), inner: in6 },
      {
        name: 'private data of another kind: skipped, no hint',
        input: gue({ outer: out4, inner: in4, priv: Buffer.from([0x51, 4, 0, 0, 10, 77, 0, 3]) }),
        inner: in4,
      },
      { name: 'UDP inner', input: gue({ outer: out4, inner: ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'udp', sport: 5, dport: 53 }) }), inner: ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'udp', sport: 5, dport: 53 }) },
      { name: 'trailing bytes after the outer packet stay after the inner one (the kernel trims by IP length)', input: Buffer.concat([gue({ outer: out4, inner: in4 }), Buffer.alloc(6)]), inner: Buffer.concat([in4, Buffer.alloc(6)]) },
    ];
    it.each(cases.map((c) => [c.name, c] as const))('%s -> PASS, inner packet exactly', async (_n, c) => {
      const { r, d } = await delta(() => run1(c.input));
      expect(r.verdict).toBe('PASS');
      expect(r.data.toString('hex')).toBe(stripped(c.input, c.inner).toString('hex'));
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
    });

    it('not for us: other address, other port, fragment, another host on our port -> untouched', async () => {
      const inputs = [
        gue({ outer: { src: out4.src, dst: '10.77.0.9' }, inner: in4 }),
        gue({ outer: out4, inner: in4, dport: 6081 }),
        gue({ outer: { ...out4, mf: true }, inner: in4 }),
        gue({ outer: { src: out6.src, dst: 'fd77::9' }, inner: in6 }),
      ];
      const { r, d } = await delta(() => run(inputs));
      r.forEach((x, i) => {
        expect(x.verdict).toBe('PASS');
        expect(x.data.equals(inputs[i]!)).toBe(true);
      });
      expect(d).toEqual({ rx_packets: 4n, pass: 4n });
    });

    it('the GUE port comes from decap_config (0 = 6080)', async () => {
      await setConfig({ port: 7000 });
      try {
        const on7000 = gue({ outer: out4, inner: in4, dport: 7000 });
        const on6080 = gue({ outer: out4, inner: in4 });
        const [a, b] = await run([on7000, on6080]);
        expect(a!.data.toString('hex')).toBe(stripped(on7000, in4).toString('hex'));
        expect(b!.data.equals(on6080)).toBe(true);
      } finally {
        await setConfig();
      }
    });
  });

  describe('malformed GUE to us: dropped and counted', () => {
    const bad: [string, Buffer][] = [
      ['control bit', gue({ outer: out4, inner: in4, b0: 0x20 })],
      ['version 2', gue({ outer: out4, inner: in4, b0: 0x80 })],
      ['version 3', gue({ outer: out4, inner: in4, b0: 0xc0 })],
      ['proto 6', gue({ outer: out4, inner: in4, proto: 6 })],
      ['proto 4 carrying IPv6', gue({ outer: out4, inner: in6, proto: 4 })],
      ['a flag set', gue({ outer: out4, inner: in4, flags: 0x8000 })],
      ['Hlen past the datagram', gue({ outer: out4, inner: in4.subarray(0, 20), b0: 31 })],
      ['hint with reserved bytes set', gue({ outer: out4, inner: in4, priv: Buffer.from([0x50, 4, 0, 1, 10, 77, 0, 3]) })],
      ['IPv4 hint in Hlen 5', gue({ outer: out4, inner: in4, b0: 5, priv: Buffer.concat([Buffer.from([0x50, 4, 0, 0]), Buffer.alloc(16)]) })],
      ['IPv6 hint in Hlen 2', gue({ outer: out4, inner: in4, priv: Buffer.from([0x50, 6, 0, 0, 1, 2, 3, 4]) })],
      ['last-hop mark in Hlen 2', gue({ outer: out4, inner: in4, priv: Buffer.concat([LAST_HOP, Buffer.alloc(4)]) })],
      ['last-hop mark with reserved bytes set', gue({ outer: out4, inner: in4, priv: Buffer.from([0x4c, 0, 1, 0]) })],
      ['hint family 5', gue({ outer: out4, inner: in4, priv: Buffer.from([0x50, 5, 0, 0, 1, 2, 3, 4]) })],
      ['variant 1 with version nibble 5', gue({ outer: out4, inner: Buffer.concat([Buffer.from([0x55]), in4.subarray(1)]), variant1: true })],
      ['inner IPv4 longer than the datagram', gue({ outer: out4, inner: (() => { const b = Buffer.from(in4); b.writeUInt16BE(b.length + 1, 2); return b; })() })],
      ['inner IPv6 payload longer than the datagram', gue({ outer: out6, inner: (() => { const b = Buffer.from(in6); b.writeUInt16BE(b.readUInt16BE(4) + 1, 4); return b; })() })],
      ['inner IHL 4', gue({ outer: out4, inner: Buffer.concat([Buffer.from([0x44]), in4.subarray(1)]) })],
      ['no inner at all', gue({ outer: out4, inner: Buffer.alloc(0), proto: 4 })],
      ['UDP length beyond the IP packet', (() => { const f = gue({ outer: out4, inner: in4 }); f.writeUInt16BE(f.readUInt16BE(14 + 20 + 4) + 4, 14 + 20 + 4); return f; })()],
      ['UDP length below UDP + GUE', (() => { const f = gue({ outer: out4, inner: in4 }); f.writeUInt16BE(11, 14 + 20 + 4); return f; })()],
    ];
    it.each(bad)('%s', async (_n, f) => {
      const { r, d } = await delta(() => run1(f));
      expect(r.verdict).toBe('DROP');
      expect(d).toEqual({ rx_packets: 1n, gue_malformed: 1n });
    });
  });

  describe('second chance', () => {
    it('no state here: IPv4 outer, IPv4 hint -> XDP_TX to the previous owner, exact frame, hint cleared', async () => {
      const input = gue({ outer: out4, inner: tcp(CLIENT4, VIP4, 40002, TCP_FLAGS.ACK, 0x28), hint: A4, sport: 0x9abc });
      const { r, d } = await delta(() => run1(input));
      expect(r.verdict).toBe('TX');
      const want = forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x9abc, inner: tcp(CLIENT4, VIP4, 40002, TCP_FLAGS.ACK, 0x28) });
      expect(r.data.toString('hex')).toBe(want.toString('hex'));
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n }); // remembered: see 'moved flows'
    });

    it('IPv6 outer, IPv6 hint, IPv6 inner -> exact frame (flow label from the UDP source port)', async () => {
      const inner = tcp(CLIENT6, VIP6, 40002, TCP_FLAGS.ACK | TCP_FLAGS.PSH);
      const input = gue({ outer: out6, inner, hint: A6, sport: 0xf00d });
      const { r, d } = await delta(() => run1(input));
      expect(r.verdict).toBe('TX');
      expect(r.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B6, to: A6, sport: 0xf00d, inner }).toString('hex'));
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n });
    });

    it('a VLAN-tagged frame is never forwarded (passed up here, sc_tagged); a FIN or RST is mid-connection too', async () => {
      const vlans = [{ tci: 7 }];
      const inner = tcp(CLIENT4, VIP4, 40003, TCP_FLAGS.FIN | TCP_FLAGS.ACK);
      const rst = tcp(CLIENT4, VIP4, 40003, TCP_FLAGS.RST);
      const tagged = gue({ eth: { src: LB_MAC, vlans }, outer: out4, inner, hint: A4 });
      const { r, d } = await delta(() => run([tagged, gue({ outer: out4, inner, hint: A4 }), gue({ outer: out4, inner: rst, hint: A4 })]));
      expect(r.map((x) => x.verdict)).toEqual(['PASS', 'TX', 'TX']);
      expect(r[0]!.data.toString('hex')).toBe(stripped(tagged, inner).toString('hex'));
      expect(r[1]!.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x8123, inner }).toString('hex'));
      expect(d).toEqual({ rx_packets: 3n, gue: 3n, sc_tagged: 1n, sc_forward: 2n, sc_moved_new: 1n }); // one flow
    });

    it('a hint is honoured only from an LB prefix (--from): not from a peer, not with no sources, not a special address', async () => {
      const inner = tcp(CLIENT4, VIP4, 40010);
      const peer = gue({ outer: { src: '10.77.0.9', dst: B4 }, inner, hint: A4 }); // --gue-from only
      const peer6 = gue({ outer: { src: 'fd77::9', dst: B6 }, inner, hint: A6 });
      const special = ['0.0.0.0', '127.0.0.1', '224.0.0.5', '255.255.255.255', '169.254.0.1'].map((h) => gue({ outer: out4, inner, hint: h }));
      const special6 = ['::', '::1', 'fe80::3', 'ff02::2', '::ffff:10.77.0.3'].map((h) => gue({ outer: out6, inner, hint: h }));
      const all = [peer, peer6, ...special, ...special6];
      const { r, d } = await delta(() => run(all));
      r.forEach((x, i) => {
        expect([i, x.verdict]).toEqual([i, 'PASS']);
        expect(x.data.toString('hex')).toBe(stripped(all[i]!, inner).toString('hex'));
      });
      expect(d).toEqual({ rx_packets: BigInt(all.length), gue: BigInt(all.length), sc_hint_untrusted: BigInt(all.length) });
      // no sources configured (the default): GUE from anywhere is stripped, and no hint is ever honoured
      await setConfig({ noSources: true });
      try {
        const open = await delta(() => run([gue({ outer: out4, inner, hint: A4 }), gue({ outer: { src: '192.0.2.66', dst: B4 }, inner, hint: A4 })]));
        expect(open.r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
        expect(open.d).toEqual({ rx_packets: 2n, gue: 2n, sc_hint_untrusted: 2n });
      } finally {
        await setConfig();
      }
      // the same frame from the LB: forwarded
      expect((await run1(gue({ outer: out4, inner, hint: A4 }))).verdict).toBe('TX');
    });

    it('mixed families: the outer source comes from decap_config, else passed up here (no source)', async () => {
      const inner = tcp(CLIENT4, VIP4, 40004);
      const in4over6 = gue({ outer: out6, inner, hint: A4 });
      const in6over4 = gue({ outer: out4, inner, hint: A6 });
      const none = await delta(() => run([in4over6, in6over4]));
      expect(none.r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
      expect(none.r[0]!.data.toString('hex')).toBe(stripped(in4over6, inner).toString('hex'));
      expect(none.r[1]!.data.toString('hex')).toBe(stripped(in6over4, inner).toString('hex'));
      expect(none.d).toEqual({ rx_packets: 2n, gue: 2n, sc_no_source: 2n });
      await setConfig({ srcV4: B4, srcV6: B6 });
      try {
        const [a, b] = await run([in4over6, in6over4]);
        expect(a!.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x8123, inner }).toString('hex'));
        expect(b!.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B6, to: A6, sport: 0x8123, inner }).toString('hex'));
      } finally {
        await setConfig();
      }
    });

    it('a previous owner behind another interface -> XDP_REDIRECT with that interface MAC pair', async () => {
      const e1 = JSON.parse(lab.ns(ns, 'ip', ['-j', 'link', 'show', `gud${ns.slice(3)}c`]))[0].address as string;
      const inner = tcp(CLIENT4, VIP4, 40005);
      const { r, d } = await delta(() => run1(gue({ outer: out4, inner, hint: R4 })));
      expect(r.verdict).toBe('REDIRECT');
      expect(r.data.toString('hex')).toBe(forwarded({ dmac: R_MAC, smac: e1, src: B4, to: R4, sport: 0x8123, inner }).toString('hex'));
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n });
    });

    it('hint ignored: SYN, UDP, second chance disabled -> stripped and passed up', async () => {
      const syn = tcp(CLIENT4, VIP4, 40006, TCP_FLAGS.SYN);
      const udp = ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'udp', sport: 40006, dport: 53 });
      const s = await delta(() => run([gue({ outer: out4, inner: syn, hint: A4 }), gue({ outer: out6, inner: udp, hint: A6 })]));
      expect(s.r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
      expect(s.r[0]!.data.toString('hex')).toBe(stripped(gue({ outer: out4, inner: syn, hint: A4 }), syn).toString('hex'));
      expect(s.d).toEqual({ rx_packets: 2n, gue: 2n, sc_syn_ignored: 1n, sc_not_tcp: 1n });
      await setConfig({ flags: 1 });
      try {
        const x = await delta(() => run1(gue({ outer: out4, inner: in4, hint: A4 })));
        expect(x.r.verdict).toBe('PASS');
        expect(x.d).toEqual({ rx_packets: 1n, gue: 1n, sc_disabled: 1n });
      } finally {
        await setConfig();
      }
    });

    it('a hint naming this host is refused (no loop), in either family', async () => {
      const { r, d } = await delta(() =>
        run([gue({ outer: out4, inner: in4, hint: B4 }), gue({ outer: out4, inner: in4, hint: B6 })]),
      );
      expect(r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
      expect(r[0]!.data.toString('hex')).toBe(stripped(gue({ outer: out4, inner: in4, hint: B4 }), in4).toString('hex'));
      expect(d).toEqual({ rx_packets: 2n, gue: 2n, sc_loop_refused: 2n });
    });

    it('no loop on a second hop: the forwarded frame, at its target, is stripped (a hop goes on only to an owner its target remembers, marked as the last: see moved flows)', async () => {
      const inner = tcp(CLIENT4, VIP4, 40007);
      const first = await run1(gue({ outer: out4, inner, hint: A4 }));
      expect(first.verdict).toBe('TX');
      // play the previous owner: its address is ours now, the frame comes back in as it left
      const keyA = encodeAddrKey('address', A4).toString('hex');
      await call({ op: 'addr', add: true, key: keyA });
      try {
        const { r, d } = await delta(() => run1(first.data));
        expect(r.verdict).toBe('PASS');
        expect(r.data.toString('hex')).toBe(stripped(first.data, inner).toString('hex'));
        // one program plays both hosts: the entry the forward wrote names A, which is this host now, so it goes
        expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n, sc_moved_dropped: 1n });
      } finally {
        await call({ op: 'addr', add: false, key: keyA });
      }
    });

    it('local state: an established socket here (v4 and v6) -> local hit, passed up; a listener alone is not state', async () => {
      const est4 = tcp(CLIENT4, VIP4, estPort);
      const est6 = tcp(CLIENT6, VIP6, estPort6);
      const { r, d } = await delta(() =>
        run([gue({ outer: out4, inner: est4, hint: A4 }), gue({ outer: out6, inner: est6, hint: A6 })]),
      );
      expect(r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
      expect(r[0]!.data.toString('hex')).toBe(stripped(gue({ outer: out4, inner: est4, hint: A4 }), est4).toString('hex'));
      expect(r[1]!.data.toString('hex')).toBe(stripped(gue({ outer: out6, inner: est6, hint: A6 }), est6).toString('hex'));
      expect(d).toEqual({ rx_packets: 2n, gue: 2n, sc_local_hit: 2n });
    });

    it('SYN cookies: the ACK of a valid cookie to a listener is local (the kernel makes the connection from it); a bad one is forwarded', async () => {
      // tcp_syncookies=2: the listener answers every SYN with a cookie (and counts as recently overflowed). A raw
      // socket in the namespace sends a SYN from CLIENT4 to VIP4:80 and reads the SYN-ACK's cookie.
      lab.ns(ns, 'sysctl', ['-qw', 'net.ipv4.tcp_syncookies=2']);
      try {
        const cport = 40200;
        const py = `
import socket, struct
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = '${CLIENT4}', '${VIP4}'
h = struct.pack('!HHIIBBHHH', ${cport}, 80, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
c = csum(socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(h)) + h)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.bind((src, 0))
s.settimeout(3)
s.sendto(h[:16] + struct.pack('!H', c) + h[18:], (dst, 0))
for _ in range(20):
    d = s.recv(65535)
    ihl = (d[0] & 15) * 4
    sp, dp, seq, ack, off, fl = struct.unpack('!HHIIBB', d[ihl:ihl + 14])
    if sp == 80 and dp == ${cport} and fl & 0x12 == 0x12:
        print(seq)
        break
`;
        const cookie = Number(lab.ns(ns, 'python3', ['-c', py]).trim());
        expect(Number.isInteger(cookie)).toBe(true);
        /** The client's ACK: seq = ISN + 1, ack = cookie + 1 (the TCP checksum is not what this path reads). */
        const ack = (ackSeq: number) => {
          const p = ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'tcp', sport: cport, dport: 80, flags: TCP_FLAGS.ACK, seq: 1001 });
          p.writeUInt32BE(ackSeq >>> 0, 20 + 8);
          return p;
        };
        const good = ack(cookie + 1);
        // the raw handshake left a netfilter entry for this tuple: the socket side alone is under test here
        await setConfig({ flags: 2 });
        const { r, d } = await delta(() => run([gue({ outer: out4, inner: good, hint: A4 }), gue({ outer: out4, inner: ack(cookie + 77), hint: A4 })]));
        console.log(`syn cookie ${cookie}: ${JSON.stringify(r.map((x) => x.verdict))} ${JSON.stringify(d, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`);
        expect(r.map((x) => x.verdict)).toEqual(['PASS', 'TX']);
        expect(r[0]!.data.toString('hex')).toBe(stripped(gue({ outer: out4, inner: good, hint: A4 }), good).toString('hex'));
        expect(d).toEqual({ rx_packets: 2n, gue: 2n, sc_local_hit: 1n, sc_local_syncookie: 1n, sc_forward: 1n, sc_moved_new: 1n });
      } finally {
        await setConfig();
        lab.ns(ns, 'sysctl', ['-qw', 'net.ipv4.tcp_syncookies=1']);
      }
    });

    it('a time-wait socket here: a late segment of its connection is local; one of a newer connection of the same tuple goes on', async () => {
      // A connection CLIENT4 -> VIP4:8099 that the server end closed first (so its socket here is in TIME_WAIT); a
      // packet socket on lo reads the client's FIN: the time-wait socket's rcv_nxt is its sequence number + 1.
      const port = 8099;
      const py = `
import socket, struct, time
sn = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sn.bind(('lo', 0))
sn.settimeout(0.5)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('${VIP4}', ${port}))
srv.listen(1)
cli = socket.socket()
cli.bind(('${CLIENT4}', 0))
cli.connect(('${VIP4}', ${port}))
cport = cli.getsockname()[1]
conn, _ = srv.accept()
conn.close()
time.sleep(0.05)
cli.close()
srv.close()
deadline = time.time() + 3
while time.time() < deadline:
    try:
        f = sn.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
        continue
    ihl = (ip[0] & 15) * 4
    sp, dp, seq = struct.unpack('!HHI', ip[ihl:ihl + 8])
    if ip[12:16] == socket.inet_aton('${CLIENT4}') and sp == cport and dp == ${port} and ip[ihl + 13] & 1:
        print(cport, (seq + 1) & 0xffffffff)
        break
`;
      const [cport, rcvNxt] = lab.ns(ns, 'python3', ['-c', py]).trim().split(' ').map(Number) as [number, number];
      expect(Number.isInteger(cport) && Number.isInteger(rcvNxt)).toBe(true);
      expect(lab.ns(ns, 'ss', ['-Htan', 'state', 'time-wait', 'sport', `= :${port}`])).toContain(`${CLIENT4}:${cport}`);
      const seg = (seq: number, flags: number) =>
        ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'tcp', sport: cport, dport: port, flags, seq: seq >>> 0 });
      const lateFin = seg(rcvNxt - 1, TCP_FLAGS.FIN | TCP_FLAGS.ACK); // the client's FIN again: the socket re-ACKs it
      const lateData = seg(rcvNxt - 1000, TCP_FLAGS.ACK);
      const newer = seg(rcvNxt + 0x80000000, TCP_FLAGS.ACK); // another ISN: a newer connection of the tuple
      const { r, d } = await delta(() =>
        run([gue({ outer: out4, inner: lateFin, hint: A4 }), gue({ outer: out4, inner: lateData, hint: A4 }), gue({ outer: out4, inner: newer, hint: A4 })]),
      );
      expect(r.map((x) => x.verdict)).toEqual(['PASS', 'PASS', 'TX']);
      expect(r[2]!.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x8123, inner: newer }).toString('hex'));
      expect(d).toEqual({ rx_packets: 3n, gue: 3n, sc_local_hit: 2n, sc_forward: 1n, sc_time_wait_other: 1n, sc_moved_new: 1n });
    });

    it('node mode: a connection only netfilter conntrack knows (DNATed VIP) -> local hit via conntrack', async () => {
      const inner = ipPacket({ src: CLIENT4, dst: NAT_VIP }, { type: 'tcp', sport: natPort, dport: 80, flags: TCP_FLAGS.ACK });
      const { r, d } = await delta(() => run1(gue({ outer: out4, inner, hint: A4 })));
      expect(r.verdict).toBe('PASS');
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_local_hit: 1n, sc_local_conntrack: 1n });
      // the same with the conntrack lookup switched off: forwarded
      await setConfig({ flags: 2 });
      try {
        const off = await delta(() => run1(gue({ outer: out4, inner, hint: A4 })));
        expect(off.r.verdict).toBe('TX');
        expect(off.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n });
      } finally {
        await setConfig();
      }
    });

    it('a kernel without the conntrack kfuncs: the object still loads, the lookup is skipped and counted', async () => {
      const inner = ipPacket({ src: CLIENT4, dst: NAT_VIP }, { type: 'tcp', sport: natPort, dport: 80, flags: TCP_FLAGS.ACK });
      const { r, d } = await delta(() => run1(gue({ outer: out4, inner, hint: A4 }), 'noct'), 'noct');
      expect(r.verdict).toBe('TX'); // only conntrack knew this flow
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_conntrack_unavailable: 1n, sc_moved_new: 1n });
      // and the socket lookup still works without them
      const est = await delta(() => run1(gue({ outer: out4, inner: tcp(CLIENT4, VIP4, estPort), hint: A4 }), 'noct'), 'noct');
      expect(est.d).toEqual({ rx_packets: 1n, gue: 1n, sc_local_hit: 1n });
    });

    it('ICMP errors about a TCP flow (PTB for a reply): local flow -> passed up, unknown flow -> previous owner', async () => {
      const quote = (cport: number) => ipPacket({ src: VIP4, dst: CLIENT4 }, { type: 'tcp', sport: 80, dport: cport }).subarray(0, 28);
      const ptb = (cport: number) =>
        ipPacket({ src: '10.66.9.9', dst: VIP4 }, { type: 'icmp', icmpType: 3, code: 4, rest: Buffer.from([0, 0, 5, 0xdc]), payload: quote(cport) });
      const quote6 = (cport: number) => ipPacket({ src: VIP6, dst: CLIENT6 }, { type: 'tcp', sport: 80, dport: cport }).subarray(0, 48);
      const ptb6 = (cport: number) =>
        ipPacket({ src: '2001:db8:66::9', dst: VIP6 }, { type: 'icmp', icmpType: 2, rest: Buffer.from([0, 0, 5, 0xdc]), payload: quote6(cport) });
      const { r, d } = await delta(() =>
        run([
          gue({ outer: out4, inner: ptb(estPort), hint: A4 }),
          gue({ outer: out4, inner: ptb(40008), hint: A4 }),
          gue({ outer: out6, inner: ptb6(estPort6), hint: A6 }),
          gue({ outer: out6, inner: ptb6(40008), hint: A6 }),
        ]),
      );
      expect(r.map((x) => x.verdict)).toEqual(['PASS', 'TX', 'PASS', 'TX']);
      expect(r[1]!.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x8123, inner: ptb(40008) }).toString('hex'));
      expect(d).toEqual({ rx_packets: 4n, gue: 4n, sc_local_hit: 2n, sc_forward: 2n });
    });

    it('no route to the previous owner, or forwarding off -> passed up here (as without a second chance)', async () => {
      const input = gue({ outer: out4, inner: in4, hint: NOWHERE4 });
      const { r, d } = await delta(() => run1(input));
      expect(r.verdict).toBe('PASS');
      expect(r.data.toString('hex')).toBe(stripped(input, in4).toString('hex'));
      expect(d).toEqual({ rx_packets: 1n, gue: 1n, sc_fib_fail: 1n });
      // bpf_fib_lookup answers only for an interface that forwards
      lab.ns(ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.forwarding=0']);
      try {
        const off = await delta(() => run1(gue({ outer: out4, inner: in4, hint: A4 })));
        expect(off.r.verdict).toBe('PASS');
        expect(off.d).toEqual({ rx_packets: 1n, gue: 1n, sc_fib_fail: 1n });
      } finally {
        lab.ns(ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.forwarding=1']);
      }
    });
  });

  describe('moved flows remembered (decap_moved)', () => {
    const quote4 = (cport: number) => ipPacket({ src: VIP4, dst: CLIENT4 }, { type: 'tcp', sport: 80, dport: cport }).subarray(0, 28);
    const ptb4 = (cport: number) =>
      ipPacket({ src: '10.66.9.9', dst: VIP4 }, { type: 'icmp', icmpType: 3, code: 4, rest: Buffer.from([0, 0, 5, 0xdc]), payload: quote4(cport) });

    it('a forward on a hint remembers the flow: without the hint its segments and ICMP errors about it go on to the same owner (exact frames, v4 and v6)', async () => {
      const inner = tcp(CLIENT4, VIP4, 40101, TCP_FLAGS.ACK, 0x28);
      const hinted = await delta(() => run1(gue({ outer: out4, inner, hint: A4, sport: 0x9abc })));
      expect(hinted.r.verdict).toBe('TX');
      expect(hinted.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n });
      expect(await call({ op: 'moved' })).toEqual({ [movedKey(CLIENT4, VIP4, 40101)]: movedValue(A4) });
      // the LB hints the flow no more (the VIP's previous table expired): the next segment comes without a hint
      const later = tcp(CLIENT4, VIP4, 40101, TCP_FLAGS.ACK | TCP_FLAGS.PSH, 0x28);
      const plain = await delta(() => run1(gue({ outer: out4, inner: later, sport: 0x9abc })));
      expect(plain.r.verdict).toBe('TX');
      expect(plain.r.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x9abc, inner: later }).toString('hex'));
      expect(plain.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n });
      // a frag-needed about one of the flow's replies, without a hint: to the owner too
      const err = await delta(() => run1(gue({ outer: out4, inner: ptb4(40101) })));
      expect(err.r.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x8123, inner: ptb4(40101) }).toString('hex'));
      expect(err.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n });
      const in6m = tcp(CLIENT6, VIP6, 40101);
      expect((await run1(gue({ outer: out6, inner: in6m, hint: A6 }))).verdict).toBe('TX');
      const p6 = await delta(() => run1(gue({ outer: out6, inner: in6m, sport: 0xf00d })));
      expect(p6.r.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B6, to: A6, sport: 0xf00d, inner: in6m }).toString('hex'));
      expect(p6.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n });
      expect(await call({ op: 'moved' })).toEqual({
        [movedKey(CLIENT4, VIP4, 40101)]: movedValue(A4),
        [movedKey(CLIENT6, VIP6, 40101)]: movedValue(A6),
      });
    });

    it('a hint naming another owner replaces the remembered one; the same hint again writes nothing; an ICMP error on a hint writes nothing', async () => {
      const inner = tcp(CLIENT4, VIP4, 40104);
      expect((await run1(gue({ outer: out4, inner, hint: A4 }))).verdict).toBe('TX');
      const moved = await delta(() => run1(gue({ outer: out4, inner, hint: R4 })));
      expect(moved.r.verdict).toBe('REDIRECT');
      expect(moved.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n, sc_moved_new: 1n });
      const again = await delta(() => run1(gue({ outer: out4, inner, hint: R4 })));
      expect(again.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n });
      expect(await call({ op: 'moved' })).toEqual({ [movedKey(CLIENT4, VIP4, 40104)]: movedValue(R4) });
      const icmp = await delta(() => run1(gue({ outer: out4, inner: ptb4(40105), hint: A4 })));
      expect(icmp.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n });
      expect(Object.keys(await call({ op: 'moved' }))).toEqual([movedKey(CLIENT4, VIP4, 40104)]);
    });

    it('a peer backend’s hop of a remembered flow (moved again after its hint here expired) goes on to the owner remembered, marked as the last hop (exact frames, v4 and v6); a marked hop is stripped at its target', async () => {
      const inner = tcp(CLIENT4, VIP4, 40106, TCP_FLAGS.ACK, 0x28);
      expect((await run1(gue({ outer: out4, inner, hint: A4 }))).verdict).toBe('TX');
      // the slot moved on to peer C (10.77.0.9), whose LB hint named this host: C's hop arrives here (Hlen 0)
      const hop = await delta(() => run1(gue({ outer: { src: '10.77.0.9', dst: B4 }, inner, sport: 0x9abc })));
      expect(hop.r.verdict).toBe('TX');
      const want = forwarded({ dmac: A_MAC, smac: myMac, src: B4, to: A4, sport: 0x9abc, inner, lastHop: true });
      expect(hop.r.data.toString('hex')).toBe(want.toString('hex'));
      expect(hop.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n, sc_moved_second_hop: 1n });
      expect(await call({ op: 'moved' })).toEqual({ [movedKey(CLIENT4, VIP4, 40106)]: movedValue(A4) }); // unchanged
      // at its target (play A: its address is ours now) the marked frame is stripped, whatever A remembers
      await call({ op: 'remember', key: movedKey(CLIENT4, VIP4, 40106), value: movedValue(R4) });
      const keyA = encodeAddrKey('address', A4).toString('hex');
      await call({ op: 'addr', add: true, key: keyA });
      try {
        const end = await delta(() => run1(hop.r.data));
        expect(end.r.verdict).toBe('PASS');
        expect(end.r.data.toString('hex')).toBe(stripped(hop.r.data, inner).toString('hex'));
        expect(end.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
      } finally {
        await call({ op: 'addr', add: false, key: keyA });
      }
      const in6m = tcp(CLIENT6, VIP6, 40106);
      expect((await run1(gue({ outer: out6, inner: in6m, hint: A6 }))).verdict).toBe('TX');
      const hop6 = await delta(() => run1(gue({ outer: { src: 'fd77::9', dst: B6 }, inner: in6m, sport: 0xf00d })));
      expect(hop6.r.data.toString('hex')).toBe(forwarded({ dmac: A_MAC, smac: myMac, src: B6, to: A6, sport: 0xf00d, inner: in6m, lastHop: true }).toString('hex'));
      expect(hop6.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n, sc_moved_second_hop: 1n });
    });

    it('a peer’s hop is not sent on: marked as the last hop, from the owner remembered (the entry goes), from a source not in decap_sources or with none configured', async () => {
      const cport = 40107;
      const inner = tcp(CLIENT4, VIP4, cport);
      expect((await run1(gue({ outer: out4, inner, hint: A4 }))).verdict).toBe('TX');
      // a hop marked as the last (another backend sent it on from its memory already): stripped; the entry stays
      const marked = gue({ outer: { src: '10.77.0.9', dst: B4 }, inner, priv: LAST_HOP });
      const m = await delta(() => run1(marked));
      expect(m.r.verdict).toBe('PASS');
      expect(m.r.data.toString('hex')).toBe(stripped(marked, inner).toString('hex'));
      expect(m.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
      expect(Object.keys(await call({ op: 'moved' }))).toEqual([movedKey(CLIENT4, VIP4, cport)]);
      // with no sources configured nobody is known to be a peer (or an LB): stripped; the entry stays
      await setConfig({ noSources: true });
      try {
        const anyone = await delta(() => run1(gue({ outer: { src: '10.77.0.9', dst: B4 }, inner })));
        expect(anyone.r.verdict).toBe('PASS');
        expect(anyone.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
      } finally {
        await setConfig();
      }
      // from the owner remembered itself: it had no state for the flow, or it would not have sent it on; the entry
      // is stale and goes, the packet stays here
      const fromOwner = await delta(() => run1(gue({ outer: { src: A4, dst: B4 }, inner })));
      expect(fromOwner.r.verdict).toBe('PASS');
      expect(fromOwner.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n, sc_moved_dropped: 1n });
      expect(await call({ op: 'moved' })).toEqual({});
    });

    it('not forwarded from memory: UDP, a SYN (the entry goes), state here (the entry goes), an owner that is this host (the entry goes), no route (passed up)', async () => {
      const cport = 40102;
      const inner = tcp(CLIENT4, VIP4, cport);
      expect((await run1(gue({ outer: out4, inner, hint: A4 }))).verdict).toBe('TX');
      // UDP of the same addresses and ports: no second chance for UDP
      const udp = ipPacket({ src: CLIENT4, dst: VIP4 }, { type: 'udp', sport: cport, dport: 80 });
      const u = await delta(() => run1(gue({ outer: out4, inner: udp })));
      expect(u.r.verdict).toBe('PASS');
      expect(u.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
      expect(Object.keys(await call({ op: 'moved' }))).toEqual([movedKey(CLIENT4, VIP4, cport)]);
      // a SYN of the tuple is a new connection, which the LB gave this host: the entry goes, the next segment stays
      const syn = tcp(CLIENT4, VIP4, cport, TCP_FLAGS.SYN);
      const s1 = await delta(() => run([gue({ outer: out4, inner: syn }), gue({ outer: out4, inner })]));
      expect(s1.r.map((x) => x.verdict)).toEqual(['PASS', 'PASS']);
      expect(s1.d).toEqual({ rx_packets: 2n, gue: 2n, sc_no_hint: 2n, sc_moved_dropped: 1n });
      expect(await call({ op: 'moved' })).toEqual({});
      // state here (an entry for the established connection, written as the program writes one): the packet
      // stays, the entry goes
      await call({ op: 'remember', key: movedKey(CLIENT4, VIP4, estPort), value: movedValue(A4) });
      const est = tcp(CLIENT4, VIP4, estPort);
      const e = await delta(() => run1(gue({ outer: out4, inner: est })));
      expect(e.r.verdict).toBe('PASS');
      expect(e.r.data.toString('hex')).toBe(stripped(gue({ outer: out4, inner: est }), est).toString('hex'));
      expect(e.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n, sc_moved_dropped: 1n });
      // an owner that is one of this host's addresses now
      await call({ op: 'remember', key: movedKey(CLIENT4, VIP4, cport), value: movedValue(B4) });
      const own = await delta(() => run1(gue({ outer: out4, inner })));
      expect(own.r.verdict).toBe('PASS');
      expect(own.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n, sc_moved_dropped: 1n });
      expect(await call({ op: 'moved' })).toEqual({});
      // no route to the owner: passed up here, as without a second chance
      await call({ op: 'remember', key: movedKey(CLIENT4, VIP4, cport), value: movedValue(NOWHERE4) });
      const nowhere = await delta(() => run1(gue({ outer: out4, inner })));
      expect(nowhere.r.verdict).toBe('PASS');
      expect(nowhere.d).toEqual({ rx_packets: 1n, gue: 1n, sc_fib_fail: 1n });
    });

    it('--no-remember-moved: a forward on a hint writes nothing and an entry is not used; --no-second-chance neither', async () => {
      const cport = 40103;
      const inner = tcp(CLIENT4, VIP4, cport);
      const noRemember = decapEnum('peak_decap_config_flag').PEAK_DECAP_CFG_F_NO_REMEMBER!;
      const noSecondChance = decapEnum('peak_decap_config_flag').PEAK_DECAP_CFG_F_NO_SECOND_CHANCE!;
      await setConfig({ flags: noRemember });
      try {
        const h = await delta(() => run1(gue({ outer: out4, inner, hint: A4 })));
        expect(h.r.verdict).toBe('TX');
        expect(h.d).toEqual({ rx_packets: 1n, gue: 1n, sc_forward: 1n });
        expect(await call({ op: 'moved' })).toEqual({});
        await call({ op: 'remember', key: movedKey(CLIENT4, VIP4, cport), value: movedValue(A4) });
        const n = await delta(() => run1(gue({ outer: out4, inner })));
        expect(n.r.verdict).toBe('PASS');
        expect(n.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
        await setConfig({ flags: noSecondChance });
        const off = await delta(() => run1(gue({ outer: out4, inner })));
        expect(off.r.verdict).toBe('PASS');
        expect(off.d).toEqual({ rx_packets: 1n, gue: 1n, sc_no_hint: 1n });
      } finally {
        await setConfig();
      }
      // on again (the default): the entry serves
      const on = await delta(() => run1(gue({ outer: out4, inner })));
      expect(on.r.verdict).toBe('TX');
      expect(on.d).toEqual({ rx_packets: 1n, gue: 1n, sc_moved_forward: 1n });
    });
  });

  it('every truncation of hinted GUE frames: PASS untouched (an outer IP packet longer than its frame is not GUE yet)', async () => {
    const frames = [
      gue({ outer: out4, inner: in4, hint: A4 }),
      gue({ outer: out6, inner: in6, hint: A6 }),
      gue({ outer: out4, inner: in6, hint: A6 }),
      gue({ outer: out6, inner: in4, hint: A4 }),
      gue({ eth: { src: LB_MAC, vlans: [{ tci: 3 }] }, outer: { ...out4, options: Buffer.alloc(4, 1) }, inner: in4, hint: A4 }),
    ];
    const tagged = frames[4];
    let cuts = 0;
    await setConfig({ srcV4: B4, srcV6: B6 }); // the mixed-family frames need a source to forward whole
    for (const f of frames) {
      // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header: cuts start at 14 bytes
      const all = Array.from({ length: f.length - 14 }, (_, i) => Buffer.from(f.subarray(0, 14 + i)));
      const { r, d } = await delta(() => run(all));
      r.forEach((x, i) => {
        expect([14 + i, x.verdict]).toEqual([14 + i, 'PASS']);
        expect(x.data.equals(all[i]!)).toBe(true);
      });
      expect(d).toEqual({ rx_packets: BigInt(all.length), pass: BigInt(all.length) });
      cuts += all.length;
      // and the whole frame is forwarded (the cut-short ones were not GUE to the program, not a different path),
      // except the tagged one, which is passed up here (never forwarded)
      expect((await run1(f)).verdict).toBe(f === tagged ? 'PASS' : 'TX');
    }
    await setConfig();
    console.log(`truncations: ${cuts} cut-short frames, all passed untouched`);
  });

  it('counter invariant: every GUE packet has exactly one outcome', async () => {
    const c = await counters();
    const outcomes = ['sc_no_hint', 'sc_syn_ignored', 'sc_not_tcp', 'sc_loop_refused', 'sc_local_hit', 'sc_forward', 'sc_fib_fail', 'sc_no_source', 'sc_disabled', 'sc_hint_untrusted', 'sc_tagged', 'sc_moved_forward'];
    const sum = outcomes.reduce((s, n) => s + c[n]!, 0n);
    console.log(`decap counters: ${JSON.stringify(Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)])))}`);
    expect(c.gue).toBe(sum + c.error!);
    expect(c.sc_conntrack_unavailable).toBe(0n); // this kernel has bpf_xdp_ct_lookup (nf_conntrack built in)
    expect(c.sc_moved_second_hop).toBeGreaterThan(0n); // a detail of sc_moved_forward
    expect(c.sc_moved_second_hop).toBeLessThanOrEqual(c.sc_moved_forward!);
    // forwards by previous owner: every forward of this program, under the address it went to
    const t = await call<Record<string, string>>({ op: 'targets' });
    const byAddr = Object.fromEntries(
      Object.entries(t).map(([k, v]) => {
        const key = Buffer.from(k, 'hex');
        return [[A4, A6, R4].find((a) => encodeAddrKey('a', a).equals(key)) ?? k, Number(v)];
      }),
    );
    console.log(`second-chance forwards by previous owner: ${JSON.stringify(byAddr)}`);
    expect(Object.keys(byAddr).sort()).toEqual([A4, R4, A6].sort());
    // (forwards of remembered moved flows count under their owner too)
    expect(BigInt(Object.values(byAddr).reduce((s, v) => s + v, 0))).toBe(c.sc_forward! + c.sc_moved_forward!);
  });

  it('fast-check: 3000 random GUE frames -> PASS (untouched or exactly the inner), DROP, or an exact second-chance frame', async () => {
    const arb = fc.record({
      outer6: fc.boolean(),
      inner6: fc.boolean(),
      hint: fc.constantFrom<string | undefined>(undefined, A4, A6, B4, R4, NOWHERE4),
      // an LB's frame, or a peer backend's hop (GUE only; with or without the last-hop mark)
      peer: fc.constantFrom(false, false, true),
      marked: fc.boolean(),
      flags: fc.constantFrom(TCP_FLAGS.ACK, TCP_FLAGS.SYN, TCP_FLAGS.SYN | TCP_FLAGS.ACK, TCP_FLAGS.RST, 0),
      udpInner: fc.boolean(),
      edits: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 3 }),
      cut: fc.option(fc.nat(), { freq: 5 }),
      extra: fc.nat(6),
    });
    const samples = fc.sample(arb, { numRuns: 3000, seed: 15 });
    const frames = samples.map((a) => {
      const src = a.inner6 ? CLIENT6 : CLIENT4;
      const dst = a.inner6 ? VIP6 : VIP4;
      const inner = a.udpInner
        ? ipPacket({ src, dst }, { type: 'udp', sport: 1000, dport: 53 })
        : ipPacket({ src, dst }, { type: 'tcp', sport: 41000, dport: 80, flags: a.flags });
      const outer = a.peer ? (a.outer6 ? { src: 'fd77::9', dst: B6 } : { src: '10.77.0.9', dst: B4 }) : a.outer6 ? out6 : out4;
      const priv = a.peer && a.marked && a.hint === undefined ? LAST_HOP : undefined;
      let b = Buffer.concat([gue({ outer, inner, hint: a.hint, priv }), Buffer.alloc(a.extra)]);
      for (const [pos, v] of a.edits) b[14 + (pos % (b.length - 14))] = v;
      if (a.cut !== null) b = b.subarray(0, 14 + (a.cut % (b.length - 13)));
      return Buffer.from(b);
    });
    const seen: Record<string, number> = {};
    let secondHops = 0;
    const before = await counters();
    for (let i = 0; i < frames.length; i += 500) {
      const rs = await run(frames.slice(i, i + 500));
      rs.forEach((x, j) => {
        const f = frames[i + j]!;
        seen[x.verdict] = (seen[x.verdict] ?? 0) + 1;
        expect(['PASS', 'DROP', 'TX', 'REDIRECT']).toContain(x.verdict);
        if (x.verdict === 'PASS' && !x.data.equals(f)) {
          // stripped: Ethernet then a packet of the frame's own tail (the inner packet, byte for byte)
          const tail = x.data.subarray(14);
          expect(f.subarray(f.length - tail.length).equals(tail)).toBe(true);
        }
        if (x.verdict === 'TX' || x.verdict === 'REDIRECT') {
          // exactly one second-chance frame: GUE with Hlen 0 (a peer's hop: Hlen 1, the last-hop mark) to a previous
          // owner, inner copied from the input
          const o = x.data;
          const v4 = o.readUInt16BE(12) === 0x0800;
          const hl = v4 ? 20 : 40;
          const dst = v4 ? o.subarray(30, 34) : o.subarray(38, 54);
          expect([A4, A6, R4].map((a) => encodeAddr('a', a).bytes.subarray(0, v4 ? 4 : 16).toString('hex'))).toContain(dst.toString('hex'));
          expect(o.readUInt16BE(14 + hl + 2)).toBe(GUE_PORT);
          expect(o.readUInt16BE(14 + hl + 6)).toBe(0);
          const hlen = o[14 + hl + 8]!; // ver 0, C 0, Hlen 0 or 1
          expect([0, 1]).toContain(hlen);
          if (hlen === 1) expect(o.subarray(14 + hl + 12, 14 + hl + 16).equals(LAST_HOP)).toBe(true);
          if (hlen === 1) secondHops++;
          const inner = o.subarray(14 + hl + 12 + 4 * hlen);
          expect(f.includes(inner)).toBe(true);
        }
      });
    }
    const after = await counters();
    const fromMemory = after.sc_moved_forward! - before.sc_moved_forward!;
    console.log(`fuzz verdicts: ${JSON.stringify(seen)}; forwards of remembered flows (no hint) among them: ${fromMemory}, of them peers' hops sent on marked: ${secondHops}`);
    expect(BigInt(secondHops)).toBe(after.sc_moved_second_hop! - before.sc_moved_second_hop!);
    // hinted frames of the one flow were remembered, and later hint-less ones of it went on from memory
    expect(fromMemory).toBeGreaterThan(0n);
    expect((seen.TX ?? 0) + (seen.REDIRECT ?? 0)).toBeGreaterThan(0);
    expect(seen.DROP ?? 0).toBeGreaterThan(0);
    expect(seen.PASS ?? 0).toBeGreaterThan(0);
  }, 60000);

});
