// 10^5 random and mutated frames through the balancer (fast-check): verdict is PASS, DROP or TX; PASS leaves
// the frame untouched; every TX output parses, has correct checksums and carries the original packet intact;
// nothing is sent for a broadcast/multicast frame or a source no client has, and IPv4 frag-needed only for DF.
import fc from 'fast-check';
import { XDP } from '../../src/datapath/bpf';
import { describePrivileged } from '../helpers/privileged';
import { parseIp, specialAddress } from '../../src/model/ip';
import { frame, ipPacket, l3Offset, parseFrame, parseGue, ParsedFrame, PROTO, TCP_FLAGS, EthSpec } from '../helpers/packet';
import { addGue, GUE_BACKENDS, GUE_VIPS, LB_MAC, Lb, ROUTER_MAC, setupLb, simpleTable } from './lb-fixture';

const RUNS_RANDOM = 50_000;
const RUNS_MUTATED = 50_000;
const C4 = '192.0.2.9';
const C6 = '2001:db8:c::9';
const eth: EthSpec = { src: ROUTER_MAC, dst: LB_MAC };

/** Valid frames that reach every path: VIP v4/v6 TCP/UDP, tags, options, echo, ICMP errors, too big. */
const POOL: Buffer[] = [
  frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'tcp', sport: 1000, dport: 80, flags: TCP_FLAGS.SYN } }),
  frame({ eth: { ...eth, vlans: [{ tci: 3 }, { tci: 4 }] }, ip: { src: C4, dst: '10.0.0.10', options: Buffer.alloc(4, 1) }, l4: { type: 'tcp', sport: 1001, dport: 80, payload: Buffer.alloc(30, 5) } }),
  frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'udp', sport: 1002, dport: 5000, payload: Buffer.alloc(12) } }),
  frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'tcp', sport: 1003, dport: 443, flags: TCP_FLAGS.ACK } }),
  frame({ eth, ip: { src: C4, dst: '10.0.0.20' }, l4: { type: 'tcp', sport: 1004, dport: 80 } }),
  frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'icmp', icmpType: 8, payload: Buffer.alloc(24, 2) } }),
  frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'icmp', icmpType: 128, payload: Buffer.alloc(24, 2) } }),
  frame({
    eth,
    ip: { src: '198.51.100.1', dst: '10.0.0.10' },
    l4: { type: 'icmp', icmpType: 3, code: 4, payload: ipPacket({ src: '10.0.0.10', dst: C4 }, { type: 'tcp', sport: 80, dport: 1005 }).subarray(0, 28) },
  }),
  frame({
    eth,
    ip: { src: '2001:db8:ff::1', dst: '2001:db8::10' },
    l4: { type: 'icmp', icmpType: 2, payload: ipPacket({ src: '2001:db8::10', dst: C6 }, { type: 'tcp', sport: 443, dport: 1006 }).subarray(0, 48) },
  }),
  frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'tcp', sport: 1007, dport: 80, payload: Buffer.alloc(1460, 1) } }),
  frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'tcp', sport: 1008, dport: 443, payload: Buffer.alloc(1420, 1) } }),
  // GUE backends (lb-fixture addGue): every outer x inner family, stateless and conntrack VIPs, hints
  frame({ eth, ip: { src: C4, dst: '10.0.1.10' }, l4: { type: 'tcp', sport: 1020, dport: 80, flags: TCP_FLAGS.ACK } }),
  frame({ eth, ip: { src: C4, dst: '10.0.1.11' }, l4: { type: 'tcp', sport: 1021, dport: 80, flags: TCP_FLAGS.ACK, payload: Buffer.alloc(40, 9) } }),
  frame({ eth: { ...eth, vlans: [{ tci: 5 }] }, ip: { src: C6, dst: '2001:db8::1:12' }, l4: { type: 'tcp', sport: 1022, dport: 443, flags: TCP_FLAGS.ACK } }),
  frame({ eth, ip: { src: C6, dst: '2001:db8::1:13' }, l4: { type: 'tcp', sport: 1023, dport: 443, flags: TCP_FLAGS.ACK } }),
  frame({ eth, ip: { src: C4, dst: '10.0.1.14', options: Buffer.alloc(4, 1) }, l4: { type: 'tcp', sport: 1024, dport: 80, flags: TCP_FLAGS.ACK } }),
  frame({ eth, ip: { src: C4, dst: '10.0.1.15' }, l4: { type: 'udp', sport: 1025, dport: 53, payload: Buffer.alloc(20, 4) } }),
  frame({ eth, ip: { src: C4, dst: '10.0.1.11' }, l4: { type: 'tcp', sport: 1026, dport: 80, flags: TCP_FLAGS.ACK, payload: Buffer.alloc(1440, 1) } }),
  frame({ eth, ip: { src: C4, dst: '10.0.0.99' }, l4: { type: 'udp', sport: 1009, dport: 80 } }),
];
const GUE_ADDRS = new Set(GUE_BACKENDS.filter((b) => b.encap === 'gue').map((b) => b.address));

/** Frames the balancer refuses (dropped), mutated like the pool: mutations that make them valid are checked too. */
const REFUSED: Buffer[] = [
  frame({ eth, ip: { src: C4, dst: '10.0.0.10', df: false }, l4: { type: 'tcp', sport: 1010, dport: 80, payload: Buffer.alloc(1460, 1) } }),
  frame({ eth: { ...eth, dst: 'ff:ff:ff:ff:ff:ff' }, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'tcp', sport: 1011, dport: 80 } }),
  frame({ eth, ip: { src: '127.0.0.1', dst: '10.0.0.10' }, l4: { type: 'udp', sport: 1012, dport: 5000 } }),
  frame({ eth, ip: { src: 'ff02::1', dst: '2001:db8::10' }, l4: { type: 'tcp', sport: 1013, dport: 443 } }),
];

interface Stats {
  pass: number;
  drop: number;
  tx: number;
  encap: number;
  /** of encap: GUE, and GUE with a hint */
  gue: number;
  hint: number;
  tooBig: number;
  echo: number;
}
const newStats = (): Stats => ({ pass: 0, drop: 0, tx: 0, encap: 0, gue: 0, hint: 0, tooBig: 0, echo: 0 });

function ipBytes(input: Buffer): Buffer {
  const l3 = l3Offset(input);
  const v4 = input[l3]! >> 4 === 4;
  const len = v4 ? input.readUInt16BE(l3 + 2) : 40 + input.readUInt16BE(l3 + 4);
  return input.subarray(l3, l3 + len);
}

/** The protocol of the packet an ICMP error quotes (-1: no quoted header). */
function quotedProto(ip: ParsedFrame['ip'] & object): number {
  const q = ip.l4!.body;
  if (ip.version === 4) return q.length >= 20 && q[0]! >> 4 === 4 ? q[9]! : -1;
  return q.length >= 40 && q[0]! >> 4 === 6 ? q[6]! : -1;
}

/** Checks one run; throws with a reason when a property fails. */
function check(input: Buffer, verdict: number, data: Buffer | undefined, st: Stats): void {
  if (verdict === XDP.PASS) {
    st.pass++;
    if (!data!.equals(input)) throw new Error('PASS modified the frame');
    return;
  }
  if (verdict === XDP.DROP) {
    st.drop++;
    return;
  }
  if (verdict !== XDP.TX) throw new Error(`verdict ${verdict}`);
  st.tx++;
  const out: ParsedFrame = parseFrame(data!); // throws on malformed output
  const inFrame = parseFrame(input);
  const ip = out.ip;
  if (!ip) throw new Error('TX without IP');
  // Nothing leaves for a frame sent to a group MAC, or from a source no client has (bpf/guard.h).
  if (input[0]! & 1) throw new Error('TX for a broadcast/multicast frame');
  const inIp = inFrame.ip!;
  if (specialAddress(parseIp(inIp.src)!.bytes) !== null || inIp.src === inIp.dst)
    throw new Error(`TX for source ${inIp.src}`);
  if (JSON.stringify(out.vlans) !== JSON.stringify(inFrame.vlans)) throw new Error('VLAN tags changed');
  const original = ipBytes(input);
  if (ip.proto === PROTO.IPIP || ip.proto === PROTO.IPV6) {
    // Encapsulated: outer header sound, inner = the original IP packet byte for byte.
    if (!ip.headerChecksumOk || !ip.df || ip.ttl !== 64) throw new Error('bad outer header');
    if (!ip.raw.subarray(ip.headerLength).equals(original)) throw new Error('inner packet altered');
    if (out.dst !== ROUTER_MAC || out.src !== LB_MAC) throw new Error('bad MACs');
    st.encap++;
    return;
  }
  const l4 = ip.l4!;
  if (ip.proto === PROTO.UDP && GUE_ADDRS.has(ip.dst)) {
    // GUE: outer header sound, UDP checksum 0 and length right, GUE sound, inner = the original packet.
    if (!ip.headerChecksumOk || !ip.df || ip.ttl !== 64) throw new Error('bad outer header (GUE)');
    const udp = ip.raw.subarray(ip.headerLength);
    if (udp.readUInt16BE(6) !== 0 || udp.readUInt16BE(4) !== udp.length || l4.dport !== 6080 || l4.sport! < 0xc000)
      throw new Error('bad UDP header (GUE)');
    const g = parseGue(udp.subarray(8)); // throws on a malformed GUE header or hint
    if (g.verC !== 0 || g.flags !== 0 || g.proto !== (inFrame.ip!.version === 4 ? 4 : 41)) throw new Error('bad GUE header');
    if (!g.inner.raw.equals(original)) throw new Error('inner packet altered (GUE)');
    if (g.hint !== null) {
      if (!GUE_ADDRS.has(g.hint.address) || g.hint.address === ip.dst || g.hint.reserved !== 0) throw new Error('bad hint');
      // Hints only for non-SYN TCP packets of the flow itself, and for ICMP errors quoting a TCP packet.
      const inner = inFrame.ip!;
      const tcpQuote = (inner.proto === PROTO.ICMP || inner.proto === PROTO.ICMPV6) && quotedProto(inner) === PROTO.TCP;
      const nonSyn = inner.proto === PROTO.TCP && (inner.l4!.flags! & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) !== TCP_FLAGS.SYN;
      if (!nonSyn && !tcpQuote) throw new Error('hint on a SYN, a non-TCP packet or an ICMP error not about TCP');
      st.hint++;
    }
    if (out.dst !== ROUTER_MAC || out.src !== LB_MAC) throw new Error('bad MACs');
    st.encap++;
    st.gue++;
    return;
  }
  if ((ip.proto === PROTO.ICMP && l4.icmpType === 3) || (ip.proto === PROTO.ICMPV6 && l4.icmpType === 2)) {
    // Generated too-big: fresh headers, correct checksums, quoting the original's start.
    if (!ip.headerChecksumOk || !l4.checksumOk) throw new Error('bad too-big checksums');
    if (!original.subarray(0, l4.body.length).equals(l4.body) || l4.body.length < 28) throw new Error('bad quote');
    if (ip.dst !== inFrame.ip!.src || ip.src !== inFrame.ip!.dst) throw new Error('too-big not sent back');
    // frag-needed says "DF was set": never for a packet without DF.
    if (ip.version === 4 && !inFrame.ip!.df) throw new Error('frag-needed for a packet without DF');
    st.tooBig++;
    return;
  }
  // Echo reply: same length, addresses swapped, checksums as sound as the request's.
  const req = inFrame.ip!;
  if (data!.length !== input.length) throw new Error('echo reply length changed');
  if (ip.src !== req.dst || ip.dst !== req.src) throw new Error('echo reply addresses');
  if (l4.icmpType !== (ip.version === 4 ? 0 : 129)) throw new Error(`echo reply type ${l4.icmpType}`);
  if (l4.checksumOk !== req.l4!.checksumOk || ip.headerChecksumOk !== req.headerChecksumOk)
    throw new Error('echo reply checksum');
  if (!l4.body.equals(req.l4!.body)) throw new Error('echo payload altered');
  st.echo++;
}

describePrivileged('balancer fuzz: random and mutated frames', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
    await addGue(lb);
    // Previous tables whose owners differ for most slots, and one GUE backend down (skipped-owner hints).
    for (const v of GUE_VIPS) await lb.dp.installPreviousTable(v.spec.id, simpleTable(31, [...v.members].reverse(), v.spec.id + 1));
    await lb.dp.upsertBackend({ ...GUE_BACKENDS.find((b) => b.id === 33)!, state: 'down' });
  });
  afterAll(() => lb?.dp.close());

  it('pool frames are valid and each is forwarded or answered; refused frames are dropped', () => {
    for (const p of POOL.slice(0, -1)) expect(lb.dp.program.testRun({ data: p }).verdictName).toBe('TX');
    for (const p of REFUSED) expect(lb.dp.program.testRun({ data: p }).verdictName).toBe('DROP');
  });

  it(`${RUNS_RANDOM} random frames (IP ethertypes favoured)`, () => {
    const st = newStats();
    const arb = fc.record({
      body: fc.uint8Array({ minLength: 0, maxLength: 120 }),
      et: fc.constantFrom(0x0800, 0x86dd, 0x8100, 0x0806, 0x1234),
      ver: fc.constantFrom(0x45, 0x46, 0x4f, 0x60, 0x00),
      proto: fc.constantFrom(6, 17, 1, 58, 4, 41, 44, 0),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const b = Buffer.alloc(14 + a.body.length);
        Buffer.from(a.body).copy(b, 14);
        b.writeUInt16BE(a.et, 12);
        if (b.length > 14) b[14] = a.ver;
        if (b.length > 23) b[a.ver >> 4 === 6 ? 20 : 23] = a.proto;
        if (b.length > 34 && a.ver >> 4 === 4) b.set([10, 0, 0, 10], 30); // often a VIP address
        const r = lb.dp.program.testRun({ data: b });
        check(b, r.verdict, r.data, st);
      }),
      { numRuns: RUNS_RANDOM, seed: 42 },
    );
    expect(st.pass + st.drop + st.tx).toBe(RUNS_RANDOM);
    expect(st.pass).toBeGreaterThan(0);
  });

  it(`${RUNS_MUTATED} mutated valid frames`, () => {
    const st = newStats();
    const arb = fc.record({
      base: fc.nat(POOL.length + REFUSED.length - 1),
      edits: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
      headerOnly: fc.boolean(),
      cut: fc.option(fc.nat(), { freq: 4 }),
      extra: fc.nat(8),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const base = [...POOL, ...REFUSED][a.base]!;
        let b = Buffer.concat([base, Buffer.alloc(a.extra)]);
        for (const [pos, v] of a.edits) b[pos % (a.headerOnly ? Math.min(b.length, 90) : b.length)] = v;
        if (a.cut !== null) b = b.subarray(0, 14 + (a.cut % (b.length - 13)));
        b = Buffer.from(b);
        const r = lb.dp.program.testRun({ data: b });
        check(b, r.verdict, r.data, st);
      }),
      { numRuns: RUNS_MUTATED, seed: 7 },
    );
    expect(st.pass + st.drop + st.tx).toBe(RUNS_MUTATED);
    // Mutations keep many frames forwardable: every kind of verdict is exercised.
    expect(st.tx).toBeGreaterThan(RUNS_MUTATED / 10);
    expect(st.pass).toBeGreaterThan(0);
    expect(st.drop).toBeGreaterThan(0);
    expect(st.encap + st.tooBig + st.echo).toBe(st.tx);
    expect(Math.min(st.encap, st.tooBig, st.echo, st.gue, st.hint)).toBeGreaterThan(100);
    console.log(`mutated: ${JSON.stringify(st)}`);
  });
});
