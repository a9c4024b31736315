// What the balancer refuses before forwarding, through BPF_PROG_TEST_RUN: VIP packets in broadcast/multicast
// Ethernet frames, VIP packets from sources no client has (twin: specialAddress in src/model/ip.ts), and IPv4
// VIP packets too big after encapsulation with DF clear (no frag-needed: that ICMP means "DF was set").
// Each case names the counter that must move by exactly one; other traffic is untouched as before.
import { XDP } from '../../src/datapath/bpf';
import { parseIp, specialAddress } from '../../src/model/ip';
import { describePrivileged } from '../helpers/privileged';
import { EthSpec, frame, l3Offset, parseFrame, PROTO, TCP_FLAGS } from '../helpers/packet';
import { LB_MAC, Lb, MTU, ROUTER_MAC, setupLb } from './lb-fixture';

const C4 = '192.0.2.7';
const C6 = '2001:db8:c::7';
const V4 = '10.0.0.10'; // VIP 1, 10.0.0.10:80/tcp, IPv4 backends
const V6 = '2001:db8::10'; // VIP 3, [2001:db8::10]:443/tcp, IPv6 backends
const V4IN6 = '10.0.0.20'; // VIP 4, 10.0.0.20:80/tcp, one IPv6 backend (4in6)
const eth: EthSpec = { src: ROUTER_MAC, dst: LB_MAC };

let sport = 30000;
const tcp = (src: string, dst: string, o: { mac?: string; flags?: number; df?: boolean; payload?: Buffer } = {}) =>
  frame({
    eth: { ...eth, dst: o.mac ?? LB_MAC },
    ip: { src, dst, df: o.df },
    l4: { type: 'tcp', sport: sport++, dport: dst.includes(':') ? 443 : 80, flags: o.flags ?? TCP_FLAGS.SYN, payload: o.payload },
  });

interface Case {
  description: string;
  input: () => Buffer;
  verdict: keyof typeof XDP;
  /** The counter that moves by one besides rx_packets and the verdict's. */
  counter: string;
}

describePrivileged('balancer: VIP traffic it refuses (L2 group frames, impossible sources, too big without DF)', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const counters = async () => (await lb.dp.counters()).global;

  const l2: Case[] = [
    { description: 'v4 VIP in a broadcast frame', input: () => tcp(C4, V4, { mac: 'ff:ff:ff:ff:ff:ff' }), verdict: 'DROP', counter: 'drop_l2_broadcast' },
    { description: 'v4 VIP in an IPv4 multicast frame', input: () => tcp(C4, V4, { mac: '01:00:5e:00:00:05' }), verdict: 'DROP', counter: 'drop_l2_broadcast' },
    { description: 'v6 VIP in an IPv6 multicast frame', input: () => tcp(C6, V6, { mac: '33:33:00:00:00:01' }), verdict: 'DROP', counter: 'drop_l2_broadcast' },
    {
      description: 'ICMP echo to a VIP in a broadcast frame',
      input: () => frame({ eth: { ...eth, dst: 'ff:ff:ff:ff:ff:ff' }, ip: { src: C4, dst: V4 }, l4: { type: 'icmp', icmpType: 8, payload: Buffer.alloc(8) } }),
      verdict: 'DROP',
      counter: 'drop_l2_broadcast',
    },
    {
      description: 'a non-VIP broadcast (DHCP discover) still passes untouched',
      input: () => frame({ eth: { ...eth, dst: 'ff:ff:ff:ff:ff:ff' }, ip: { src: '0.0.0.0', dst: '255.255.255.255' }, l4: { type: 'udp', sport: 68, dport: 67 } }),
      verdict: 'PASS',
      counter: 'pass_not_vip',
    },
  ];

  const badV4 = ['0.0.0.0', '0.1.2.3', '127.0.0.1', '169.254.7.7', '224.0.0.5', '239.255.255.250', '255.255.255.255', V4];
  const badV6 = ['::', '::1', 'fe80::1', 'febf::1', 'ff02::1', '::ffff:192.0.2.7', V6];
  const sources: Case[] = [
    ...badV4.map((s): Case => ({ description: `v4 VIP from ${s}`, input: () => tcp(s, V4), verdict: 'DROP', counter: 'drop_bad_source' })),
    ...badV6.map((s): Case => ({ description: `v6 VIP from ${s}`, input: () => tcp(s, V6), verdict: 'DROP', counter: 'drop_bad_source' })),
    {
      description: 'ICMP echo to a VIP from 0.0.0.0',
      input: () => frame({ eth, ip: { src: '0.0.0.0', dst: V4 }, l4: { type: 'icmp', icmpType: 8, payload: Buffer.alloc(8) } }),
      verdict: 'DROP',
      counter: 'drop_bad_source',
    },
    // Ordinary sources next to the edges: forwarded.
    ...['1.0.0.1', '126.255.255.255', '128.0.0.1', '169.253.0.1', '223.255.255.255', '240.0.0.1', '255.255.255.254'].map(
      (s): Case => ({ description: `v4 VIP from ${s} is forwarded`, input: () => tcp(s, V4), verdict: 'TX', counter: 'encap_v4' }),
    ),
    ...['::2', 'fec0::1', 'fe7f::1', '2001:db8::11', '::ffff:0:0:1'].map(
      (s): Case => ({ description: `v6 VIP from ${s} is forwarded`, input: () => tcp(s, V6), verdict: 'TX', counter: 'encap_v6' }),
    ),
  ];

  const big = Buffer.alloc(MTU - 40, 7); // IPv4 + TCP + this = MTU: 20 bytes over once encapsulated in IPv4
  const tooBig: Case[] = [
    { description: 'v4 too big, DF clear: dropped (XDP cannot fragment)', input: () => tcp(C4, V4, { flags: TCP_FLAGS.ACK, df: false, payload: big }), verdict: 'DROP', counter: 'drop_too_big_no_df' },
    { description: 'v4 too big for 4in6, DF clear: dropped', input: () => tcp(C4, V4IN6, { flags: TCP_FLAGS.ACK, df: false, payload: big }), verdict: 'DROP', counter: 'drop_too_big_no_df' },
    { description: 'v4 too big, DF set: frag-needed', input: () => tcp(C4, V4, { flags: TCP_FLAGS.ACK, df: true, payload: big }), verdict: 'TX', counter: 'icmp_too_big_sent' },
    { description: 'v4 too big for 4in6, DF set: frag-needed', input: () => tcp(C4, V4IN6, { flags: TCP_FLAGS.ACK, df: true, payload: big }), verdict: 'TX', counter: 'icmp_too_big_sent' },
    { description: 'v4 that fits, DF clear: forwarded', input: () => tcp(C4, V4, { flags: TCP_FLAGS.ACK, df: false, payload: Buffer.alloc(100) }), verdict: 'TX', counter: 'encap_v4' },
    { description: 'v6 too big (no DF in IPv6): packet-too-big', input: () => tcp(C6, V6, { flags: TCP_FLAGS.ACK, payload: Buffer.alloc(MTU - 60, 7) }), verdict: 'TX', counter: 'icmp_too_big_sent' },
  ];

  const all = [...l2, ...sources, ...tooBig];
  it('has cases of every kind', () => {
    expect([l2.length, sources.length, tooBig.length].every((n) => n >= 5)).toBe(true);
  });

  it.each(all.map((c) => [c.description, c] as const))('%s', async (_d, c) => {
    const input = c.input();
    const before = await counters();
    const r = lb.dp.program.testRun({ data: input });
    const after = await counters();
    expect(r.verdictName).toBe(c.verdict);
    const moved = Object.fromEntries(
      Object.keys(after)
        .filter((k) => after[k] !== before[k])
        .map((k) => [k, after[k]! - before[k]!]),
    );
    const verdictCounter = `xdp_${c.verdict.toLowerCase()}`;
    // Exactly the named counter (plus rx and the verdict; a forwarded SYN also misses and fills conntrack).
    const extra = ['ct_miss', 'ct_insert'];
    expect(Object.fromEntries(Object.entries(moved).filter(([k]) => !extra.includes(k)))).toEqual({
      rx_packets: 1n,
      [verdictCounter]: 1n,
      [c.counter]: 1n,
    });
    if (c.verdict !== 'TX') expect(r.data!.equals(input)).toBe(true);
  });

  it('frag-needed for DF-set 4in6 announces the MTU minus the IPv6 header', () => {
    const input = tcp(C4, V4IN6, { flags: TCP_FLAGS.ACK, df: true, payload: big });
    const r = lb.dp.program.testRun({ data: input });
    const out = parseFrame(r.data!);
    expect(out.ip!).toMatchObject({ src: V4IN6, dst: C4, proto: PROTO.ICMP, headerChecksumOk: true });
    expect(out.ip!.l4).toMatchObject({ icmpType: 3, icmpCode: 4, checksumOk: true });
    expect(out.ip!.l4!.icmpRest!.readUInt16BE(2)).toBe(MTU - 40);
    expect(out.ip!.l4!.body.equals(input.subarray(l3Offset(input), l3Offset(input) + 28))).toBe(true);
  });

  it('an established flow is refused too once its frames arrive as broadcast (the check is not on the miss path only)', async () => {
    const syn = tcp(C4, V4);
    expect(lb.dp.program.testRun({ data: syn }).verdictName).toBe('TX');
    const p = parseFrame(syn).ip!.l4!;
    const ack = (mac: string) =>
      frame({ eth: { ...eth, dst: mac }, ip: { src: C4, dst: V4 }, l4: { type: 'tcp', sport: p.sport!, dport: 80, flags: TCP_FLAGS.ACK } });
    const hits = (await counters()).ct_hit!;
    expect(lb.dp.program.testRun({ data: ack(LB_MAC) }).verdictName).toBe('TX');
    expect((await counters()).ct_hit).toBe(hits + 1n);
    expect(lb.dp.program.testRun({ data: ack('ff:ff:ff:ff:ff:ff') }).verdictName).toBe('DROP');
  });

  it('drops exactly the sources specialAddress() names, plus the VIP itself (TS twin of bpf/guard.h)', () => {
    const v4 = ['0.0.0.0', '0.255.255.255', '1.0.0.0', '126.255.255.255', '127.0.0.0', '127.255.255.255', '128.0.0.0', '169.253.255.255', '169.254.0.0', '169.254.255.255', '169.255.0.0', '223.255.255.255', '224.0.0.0', '239.255.255.255', '240.0.0.0', '255.255.255.254', '255.255.255.255', '10.0.0.9', '10.0.0.11']; // prettier-ignore
    const v6 = ['::', '::1', '::2', '::ffff:0:1', '::fffe:0:1', '::1:ffff:0:1', 'fe7f:ffff::', 'fe80::', 'febf:ffff::1', 'fec0::', 'feff::1', 'ff00::', 'ffff::1', '2001:db8::10', '2001:db8::11']; // prettier-ignore
    let dropped = 0;
    for (const src of [...v4, ...v6]) {
      const dst = src.includes(':') ? V6 : V4;
      const r = lb.dp.program.testRun({ data: tcp(src, dst) });
      const special = specialAddress(parseIp(src)!.bytes) !== null || src === dst;
      expect({ src, verdict: r.verdictName }).toEqual({ src, verdict: special ? 'DROP' : 'TX' });
      if (special) dropped++;
    }
    expect(dropped).toBeGreaterThan(10);
    expect(dropped).toBeLessThan(v4.length + v6.length - 10);
  });
});
