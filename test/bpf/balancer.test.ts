// Balancer packet tests through BPF_PROG_TEST_RUN: table-driven fixtures (exact output frames), ICMP echo,
// too-big routing and generation, every truncation length, stickiness across a table swap, backend states,
// conntrack entries of another VIP.
import { BpfMap, entriesForWords, MapType, XDP } from '../../src/datapath/bpf';
import { balancerSpec } from '../../src/datapath/kernel';
import { buildTable, probeBackend, NO_BACKEND } from '../../src/maglev';
import { flowHash, predictBackend, predictSelect } from '../../src/datapath/flowhash';
import { decodeCtValue, encodeCtValue, encodeFlowKey } from '../../src/datapath/layout';
import { describePrivileged } from '../helpers/privileged';
import { ethHeader, frame, ipPacket, l3Offset, parseFrame, PROTO, TCP_FLAGS, EthSpec, IpSpec } from '../helpers/packet';
import {
  backendAddr,
  CLIENT_MAC,
  expectedEncap,
  LB_MAC,
  Lb,
  predict,
  setBackendState,
  setupLb,
  ROUTER_MAC,
} from './lb-fixture';

const C4 = '192.0.2.7';
const C6 = '2001:db8:c::7';
const eth: EthSpec = { src: ROUTER_MAC, dst: LB_MAC };

interface Fixture {
  description: string;
  input: Buffer;
  verdict: keyof typeof XDP;
  /** Expected output: exact bytes, 'same' (untouched), or a VIP/flow whose predicted backend builds it. */
  output: Buffer | 'same' | { vipId: number; vlans?: EthSpec['vlans'] };
}

function tcp4(o: { dst?: string; dport?: number; sport?: number; flags?: number; ip?: Partial<IpSpec>; vlans?: EthSpec['vlans']; payload?: Buffer }): Buffer {
  return frame({
    eth: { ...eth, vlans: o.vlans },
    ip: { src: C4, dst: o.dst ?? '10.0.0.10', ...o.ip },
    l4: { type: 'tcp', sport: o.sport ?? 40000, dport: o.dport ?? 80, flags: o.flags ?? TCP_FLAGS.SYN, payload: o.payload },
  });
}

describePrivileged('balancer: packet fixtures', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const run = (data: Buffer) => lb.dp.program.testRun({ data });

  function flowOf(input: Buffer): { src: string; dst: string; sport: number; dport: number; proto: number } {
    const ip = parseFrame(input).ip!;
    return { src: ip.src, dst: ip.dst, sport: ip.l4!.sport!, dport: ip.l4!.dport!, proto: ip.proto };
  }

  const fixtures: Fixture[] = [
    { description: 'v4 TCP SYN to a VIP', input: tcp4({}), verdict: 'TX', output: { vipId: 1 } },
    { description: 'v4 TCP ACK (conntrack miss) to a VIP', input: tcp4({ sport: 40001, flags: TCP_FLAGS.ACK }), verdict: 'TX', output: { vipId: 1 } },
    { description: 'v4 TCP with TOS and payload', input: tcp4({ sport: 40002, ip: { tos: 0xb8 }, payload: Buffer.from('hello') }), verdict: 'TX', output: { vipId: 1 } },
    {
      description: 'v4 UDP to a wildcard-port VIP',
      input: frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'udp', sport: 5000, dport: 9999, payload: Buffer.alloc(32, 1) } }),
      verdict: 'TX',
      output: { vipId: 2 },
    },
    { description: 'v4 TCP with one 802.1Q tag', input: tcp4({ sport: 40003, vlans: [{ tci: 100 }] }), verdict: 'TX', output: { vipId: 1, vlans: [{ tci: 100 }] } },
    {
      description: 'v4 TCP with 802.1ad + 802.1Q tags',
      input: tcp4({ sport: 40004, vlans: [{ tpid: 0x88a8, tci: 7 }, { tci: 200 }] }),
      verdict: 'TX',
      output: { vipId: 1, vlans: [{ tpid: 0x88a8, tci: 7 }, { tci: 200 }] },
    },
    { description: 'v4 TCP with IPv4 options (IHL 8)', input: tcp4({ sport: 40005, ip: { options: Buffer.from([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]) } }), verdict: 'TX', output: { vipId: 1 } },
    {
      description: 'v6 TCP to a VIP',
      input: frame({ eth, ip: { src: C6, dst: '2001:db8::10', tos: 0x20 }, l4: { type: 'tcp', sport: 41000, dport: 443, flags: TCP_FLAGS.SYN } }),
      verdict: 'TX',
      output: { vipId: 3 },
    },
    { description: 'v4 VIP with an IPv6 backend (4in6)', input: tcp4({ dst: '10.0.0.20' }), verdict: 'TX', output: { vipId: 4 } },
    { description: 'source-hash VIP', input: tcp4({ dst: '10.0.0.30', sport: 1234 }), verdict: 'TX', output: { vipId: 5 } },
    {
      description: 'no-conntrack UDP VIP',
      input: frame({ eth, ip: { src: C4, dst: '10.0.0.40' }, l4: { type: 'udp', sport: 5353, dport: 53 } }),
      verdict: 'TX',
      output: { vipId: 6 },
    },
    { description: 'non-VIP v4 TCP passes untouched', input: tcp4({ dst: '10.0.0.99' }), verdict: 'PASS', output: 'same' },
    { description: 'VIP address, other port passes untouched', input: tcp4({ dport: 81 }), verdict: 'PASS', output: 'same' },
    {
      description: 'non-VIP v6 UDP passes untouched',
      input: frame({ eth, ip: { src: C6, dst: '2001:db8::99' }, l4: { type: 'udp', sport: 1, dport: 2 } }),
      verdict: 'PASS',
      output: 'same',
    },
    { description: 'ARP passes untouched', input: Buffer.concat([ethHeader(eth, 0x0806), Buffer.alloc(28, 3)]), verdict: 'PASS', output: 'same' },
    {
      description: 'GRE to a VIP address passes (other protocol)',
      input: frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'raw', proto: 47, payload: Buffer.alloc(8) } }),
      verdict: 'PASS',
      output: 'same',
    },
    { description: 'bad IHL passes', input: (() => { const b = tcp4({ sport: 1 }); b[14] = 0x44; return b; })(), verdict: 'PASS', output: 'same' },
    { description: 'total length beyond the frame passes', input: (() => { const b = tcp4({ sport: 2 }); b.writeUInt16BE(1400, 16); return b; })(), verdict: 'PASS', output: 'same' },
    { description: 'v4 fragment (MF) to a VIP is dropped', input: tcp4({ ip: { mf: true } }), verdict: 'DROP', output: 'same' },
    {
      description: 'v4 non-first fragment to a VIP is dropped',
      input: frame({ eth, ip: { src: C4, dst: '10.0.0.10', fragOffset: 100 }, l4: { type: 'raw', proto: 6, payload: Buffer.alloc(40) } }),
      verdict: 'DROP',
      output: 'same',
    },
    { description: 'v4 fragment to a non-VIP passes', input: tcp4({ dst: '10.9.9.9', ip: { mf: true } }), verdict: 'PASS', output: 'same' },
    {
      description: 'v6 with a hop-by-hop header to a VIP is dropped',
      input: frame({ eth, ip: { src: C6, dst: '2001:db8::10', nextHeader: 0 }, l4: { type: 'raw', proto: 0, payload: Buffer.alloc(16) } }),
      verdict: 'DROP',
      output: 'same',
    },
    {
      description: 'v6 fragment header to a VIP is dropped',
      input: frame({ eth, ip: { src: C6, dst: '2001:db8::10', nextHeader: 44 }, l4: { type: 'raw', proto: 44, payload: Buffer.alloc(16) } }),
      verdict: 'DROP',
      output: 'same',
    },
    {
      description: 'ICMP echo to a non-VIP passes',
      input: frame({ eth, ip: { src: C4, dst: '10.0.0.99' }, l4: { type: 'icmp', icmpType: 8, payload: Buffer.alloc(16) } }),
      verdict: 'PASS',
      output: 'same',
    },
  ];

  it('has fixtures', () => expect(fixtures.length).toBeGreaterThan(20));

  it.each(fixtures.map((f) => [f.description, f] as const))('%s', (_d, f) => {
    const r = run(f.input);
    expect(r.verdictName).toBe(f.verdict);
    if (f.output === 'same') {
      expect(r.data!.equals(f.input)).toBe(true);
      return;
    }
    if (Buffer.isBuffer(f.output)) {
      expect(r.data!.toString('hex')).toBe(f.output.toString('hex'));
      return;
    }
    const p = predict(lb, f.output.vipId, flowOf(f.input));
    expect(p.id).not.toBeNull();
    const want = expectedEncap(f.input, backendAddr(p.id!), p.hash, f.output.vlans);
    expect(r.data!.toString('hex')).toBe(want.toString('hex'));
    const out = parseFrame(r.data!);
    expect(out.ip!.headerChecksumOk).toBe(true);
    expect(out.ip!.df).toBe(true);
  });

  it('ICMP echo request to a v4 VIP gets an exact echo reply', () => {
    const payload = Buffer.from('0123456789abcdef');
    const rest = Buffer.from([0x12, 0x34, 0x00, 0x01]);
    const input = frame({ eth: { src: CLIENT_MAC, dst: LB_MAC }, ip: { src: C4, dst: '10.0.0.10', ttl: 17 }, l4: { type: 'icmp', icmpType: 8, rest, payload } });
    const want = frame({ eth: { src: LB_MAC, dst: CLIENT_MAC }, ip: { src: '10.0.0.10', dst: C4, ttl: 64 }, l4: { type: 'icmp', icmpType: 0, rest, payload } });
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(want.toString('hex'));
  });

  it('ICMPv6 echo request to a v6 VIP gets an exact echo reply', () => {
    const payload = Buffer.from('ping6 payload');
    const rest = Buffer.from([0, 7, 0, 9]);
    const input = frame({ eth: { src: CLIENT_MAC, dst: LB_MAC }, ip: { src: C6, dst: '2001:db8::10', ttl: 3 }, l4: { type: 'icmp', icmpType: 128, rest, payload } });
    const want = frame({ eth: { src: LB_MAC, dst: CLIENT_MAC }, ip: { src: '2001:db8::10', dst: C6, ttl: 64 }, l4: { type: 'icmp', icmpType: 129, rest, payload } });
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(want.toString('hex'));
  });

  it('ICMP frag-needed about a VIP flow goes to the backend that owns the flow', () => {
    // The backend's reply VIP:80 -> client:40100 was too big somewhere: a router tells the VIP.
    const quoted = ipPacket({ src: '10.0.0.10', dst: C4 }, { type: 'tcp', sport: 80, dport: 40100, payload: Buffer.alloc(8) }).subarray(0, 28);
    const rest = Buffer.from([0, 0, 0x05, 0xdc]);
    const input = frame({ eth, ip: { src: '198.51.100.1', dst: '10.0.0.10' }, l4: { type: 'icmp', icmpType: 3, code: 4, rest, payload: quoted } });
    const owner = predict(lb, 1, { src: C4, dst: '10.0.0.10', sport: 40100, dport: 80, proto: PROTO.TCP });
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(owner.id!), owner.hash).toString('hex'));
  });

  it('ICMPv6 packet-too-big about a VIP flow goes to the owning backend', () => {
    const quoted = ipPacket({ src: '2001:db8::10', dst: C6 }, { type: 'tcp', sport: 443, dport: 41100 }).subarray(0, 48);
    const input = frame({ eth, ip: { src: '2001:db8:ff::1', dst: '2001:db8::10' }, l4: { type: 'icmp', icmpType: 2, rest: Buffer.from([0, 0, 5, 0]), payload: quoted } });
    const owner = predict(lb, 3, { src: C6, dst: '2001:db8::10', sport: 41100, dport: 443, proto: PROTO.TCP });
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(owner.id!), owner.hash).toString('hex'));
  });

  it('an ICMP error about a non-VIP flow passes untouched', () => {
    const quoted = ipPacket({ src: '10.0.0.10', dst: C4 }, { type: 'tcp', sport: 8080, dport: 1, payload: Buffer.alloc(8) }).subarray(0, 28);
    const input = frame({ eth, ip: { src: '198.51.100.1', dst: '10.0.0.10' }, l4: { type: 'icmp', icmpType: 3, code: 4, payload: quoted } });
    const r = run(input);
    expect(r.verdictName).toBe('PASS');
    expect(r.data!.equals(input)).toBe(true);
  });

  it('a v4 VIP packet too big after encapsulation gets ICMP frag-needed back (PMTU)', () => {
    const input = tcp4({ sport: 40200, flags: TCP_FLAGS.ACK, payload: Buffer.alloc(1460, 7), vlans: [{ tci: 5 }] });
    const l3 = l3Offset(input);
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    const out = parseFrame(r.data!);
    expect(out.dst).toBe(ROUTER_MAC);
    expect(out.src).toBe(LB_MAC);
    expect(out.vlans).toEqual([{ tpid: 0x8100, tci: 5 }]);
    expect(out.ip!).toMatchObject({ src: '10.0.0.10', dst: C4, proto: PROTO.ICMP, headerChecksumOk: true });
    expect(out.ip!.l4).toMatchObject({ icmpType: 3, icmpCode: 4, checksumOk: true });
    expect(out.ip!.l4!.icmpRest!.readUInt16BE(2)).toBe(1480);
    expect(out.ip!.l4!.body.equals(input.subarray(l3, l3 + 28))).toBe(true);
  });

  it('a v6 VIP packet too big after encapsulation gets ICMPv6 packet-too-big back', () => {
    const input = frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'tcp', sport: 41200, dport: 443, payload: Buffer.alloc(1440, 9) } });
    const l3 = l3Offset(input);
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    const out = parseFrame(r.data!);
    expect(out.ip!).toMatchObject({ src: '2001:db8::10', dst: C6, proto: PROTO.ICMPV6 });
    expect(out.ip!.l4).toMatchObject({ icmpType: 2, icmpCode: 0, checksumOk: true });
    expect(out.ip!.l4!.icmpRest!.readUInt32BE(0)).toBe(1460);
    expect(out.ip!.totalLength).toBeLessThanOrEqual(1280);
    const body = out.ip!.l4!.body;
    expect(body.length).toBeGreaterThan(1000);
    expect(body.equals(input.subarray(l3, l3 + body.length))).toBe(true);
  });

  it('counts what it did: verdicts, encaps, drops, ICMP', async () => {
    const c = (await lb.dp.counters()).global;
    expect(c.xdp_tx).toBeGreaterThan(0n);
    expect(c.encap_v4).toBeGreaterThan(0n);
    expect(c.encap_v6).toBeGreaterThan(0n);
    expect(c.drop_fragment).toBeGreaterThanOrEqual(2n);
    expect(c.drop_v6_exthdr).toBeGreaterThanOrEqual(1n);
    expect(c.icmp_echo_reply).toBeGreaterThanOrEqual(2n);
    expect(c.icmp_error_forwarded).toBeGreaterThanOrEqual(2n);
    expect(c.icmp_too_big_sent).toBeGreaterThanOrEqual(2n);
    expect(c.rx_packets).toBe(c.xdp_tx! + c.xdp_pass! + c.xdp_drop! + c.xdp_redirect!);
  });
});

describePrivileged('balancer: truncation never yields malformed output', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const valid: [string, Buffer][] = [
    ['v4 TCP VIP', tcp4({ payload: Buffer.alloc(20, 1) })],
    ['v4 TCP VIP with options and tags', tcp4({ ip: { options: Buffer.alloc(8, 1) }, vlans: [{ tci: 1 }, { tci: 2 }] })],
    ['v6 UDP', frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'udp', sport: 1, dport: 443, payload: Buffer.alloc(10) } })],
    ['v6 TCP VIP', frame({ eth, ip: { src: C6, dst: '2001:db8::10' }, l4: { type: 'tcp', sport: 9, dport: 443 } })],
    ['v4 echo', frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'icmp', icmpType: 8, payload: Buffer.alloc(8) } })],
  ];

  it.each(valid)('%s: every shorter length passes or drops, untouched', (_n, pkt) => {
    let tried = 0;
    for (let len = 14; len < pkt.length; len++) {
      const cut = Buffer.from(pkt.subarray(0, len));
      const r = lb.dp.program.testRun({ data: cut });
      // A cut packet's IP length exceeds the frame: never forwarded, never modified.
      expect([XDP.PASS, XDP.DROP]).toContain(r.verdict);
      expect(r.data!.equals(cut)).toBe(true);
      tried++;
    }
    expect(tried).toBe(pkt.length - 14);
  });

  it('frames shorter than Ethernet are refused by the kernel, not run', () => {
    expect(() => lb.dp.program.testRun({ data: Buffer.alloc(10) })).toThrow();
  });
});

describePrivileged('balancer: backend states, stickiness, table swap', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const pkt = (sport: number, flags: number) => tcp4({ sport, flags });
  const backendOf = (r: { verdictName: string; data?: Buffer }): number | null => {
    if (r.verdictName !== 'TX') return null;
    const dst = parseFrame(r.data!).ip!.dst;
    return [1, 2, 3].find((id) => backendAddr(id) === dst) ?? null;
  };
  const send = (sport: number, flags: number) => backendOf(lb.dp.program.testRun({ data: pkt(sport, flags) }));
  const ports = Array.from({ length: 200 }, (_, i) => 20000 + i);

  it('established flows keep their backend across a table swap; new flows follow the new table', async () => {
    const before = new Map(ports.map((p) => [p, send(p, TCP_FLAGS.SYN)]));
    expect([...before.values()].every((b) => b !== null)).toBe(true);
    // New table: every slot moved to another backend.
    const old = lb.tables.get(1)!;
    const moved = old.map((id) => (id % 3) + 1);
    await lb.dp.installTable(1, moved);
    lb.tables.set(1, moved);
    for (const p of ports) expect(send(p, TCP_FLAGS.ACK)).toBe(before.get(p));
    let changed = 0;
    for (const p of ports) {
      const now = send(p, TCP_FLAGS.SYN);
      expect(now).toBe(predict(lb, 1, { src: C4, dst: '10.0.0.10', sport: p, dport: 80, proto: PROTO.TCP }).id);
      if (now !== before.get(p)) changed++;
    }
    expect(changed).toBe(ports.length);
    expect(await lb.dp.readTable(1)).toEqual(moved);
  });

  it('a draining backend keeps established flows but gets no new ones', async () => {
    const established = ports.filter((p) => send(p, TCP_FLAGS.SYN) === 2);
    expect(established.length).toBeGreaterThan(10);
    await setBackendState(lb, 2, 'draining');
    for (const p of established) expect(send(p, TCP_FLAGS.ACK)).toBe(2);
    for (const p of ports.map((x) => x + 1000)) expect(send(p, TCP_FLAGS.SYN)).not.toBe(2);
    await setBackendState(lb, 2, 'up');
  });

  it('a down backend loses its flows (conntrack hits re-select), others keep theirs', async () => {
    const owner = new Map(ports.map((p) => [p, send(p, TCP_FLAGS.SYN)]));
    await setBackendState(lb, 3, 'down');
    for (const p of ports) {
      const now = send(p, TCP_FLAGS.ACK);
      if (owner.get(p) === 3) {
        expect(now).not.toBe(3);
        expect(now).toBe(predict(lb, 1, { src: C4, dst: '10.0.0.10', sport: p, dport: 80, proto: PROTO.TCP }).id);
      } else expect(now).toBe(owner.get(p));
    }
    expect((await lb.dp.counters()).global.ct_reselect).toBeGreaterThan(0n);
    await setBackendState(lb, 3, 'up');
  });

  it('probing is bounded: more than 8 unusable slots in a row drop the packet, counted', async () => {
    // Table: 9 slots of backend 3 (down) then backend 1; a flow hashing to slot 0 needs 10 probes.
    await setBackendState(lb, 3, 'down');
    const t = new Uint32Array(251).fill(1);
    for (let s = 0; s < 9; s++) t[s] = 3;
    await lb.dp.installTable(1, t);
    lb.tables.set(1, t);
    let p = 30000;
    const hashOf = (sport: number) => flowHash({ source: C4, destination: '10.0.0.10', sourcePort: sport, destinationPort: 80, proto: 6 });
    while (hashOf(p) % 251 !== 0) p++;
    const drops = (await lb.dp.counters()).global.drop_no_backend!;
    expect(send(p, TCP_FLAGS.SYN)).toBeNull();
    expect((await lb.dp.counters()).global.drop_no_backend).toBe(drops + 1n);
    let q = 30000;
    while (hashOf(q) % 251 !== 2) q++;
    expect(send(q, TCP_FLAGS.SYN)).toBe(1); // slots 2..8 down, slot 9 up: found at the 8th probe
    await setBackendState(lb, 3, 'up');
  });

  it('concurrent table swaps: every packet sees a whole table (old or new), never none', async () => {
    // VIP 6 (no conntrack): table A = all backend 1 (M=251), table B = all backend 2 (M=13).
    const a = new Uint32Array(251).fill(1);
    const b = new Uint32Array(13).fill(2);
    await lb.dp.upsertVip({ key: { address: '10.0.0.40', port: 53, protocol: 'udp' }, id: 6, flags: { sourceHash: false, noConntrack: true }, tableSize: 251 });
    await lb.dp.installTable(6, a);
    const data = frame({ eth, ip: { src: C4, dst: '10.0.0.40' }, l4: { type: 'udp', sport: 7, dport: 53 } });
    const before = (await lb.dp.counters()).global;
    const seen = new Map<string, number>();
    // 100 rounds: start 20 runs on the thread pool, swap while they run, wait for the round.
    for (let round = 0; round < 100; round++) {
      const runs: Promise<void>[] = [];
      for (let i = 0; i < 20; i++)
        runs.push(
          lb.dp.program.testRunAsync({ data }).then((r) => {
            const k = r.verdictName === 'TX' ? parseFrame(r.data!).ip!.dst : r.verdictName;
            seen.set(k, (seen.get(k) ?? 0) + 1);
          }),
        );
      // Swap by replacing the inner map (tableSize in the vips entry is userspace-only bookkeeping).
      const inner = makeInner(round % 2 === 0 ? b : a);
      lb.dp.maps.maglev_tables.setInner(6, inner);
      inner.close();
      await Promise.all(runs);
    }
    const after = (await lb.dp.counters()).global;
    expect([...seen.keys()].sort()).toEqual(['10.1.0.1', '10.1.0.2']);
    expect([...seen.values()].reduce((x, y) => x + y, 0)).toBe(2000);
    expect(after.drop_no_table).toBe(before.drop_no_table);
    expect(after.drop_no_backend).toBe(before.drop_no_backend);
  });
});

/** An inner Maglev map holding `table` (for the swap test; KernelDatapath.installTable does the same): this build's
 * template (bpf/maps.h), words end to end, [0] = M, [1 + slot] = id. */
function makeInner(table: Uint32Array): BpfMap {
  const { flags, valueSize } = balancerSpec().maps.maglev_tables.inner!;
  const m = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize, maxEntries: entriesForWords(table.length + 1, valueSize), flags }); // prettier-ignore
  m.writeU32s(0, Uint32Array.of(table.length, ...table));
  return m;
}

describePrivileged('balancer: program pick == TS prediction (10,000 random flows)', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  it('matches flowHash + Maglev table + probing, with 2 of 7 backends down', async () => {
    const members = [
      { id: 31, address: '10.3.0.1' },
      { id: 32, address: '10.3.0.2' },
      { id: 33, address: '10.3.0.3' },
      { id: 34, address: '10.3.0.4' },
      { id: 35, address: '10.3.0.5' },
      { id: 36, address: '10.3.0.6' },
      { id: 37, address: '10.3.0.7' },
    ];
    const down = new Set([32, 35]);
    for (const m of members) await lb.dp.upsertBackend({ ...m, state: down.has(m.id) ? 'down' : 'up' });
    const vip = { key: { address: '10.0.0.50', port: 443, protocol: 'tcp' as const }, id: 9, flags: { sourceHash: false, noConntrack: false }, tableSize: 65537 };
    await lb.dp.upsertVip(vip);
    // The daemon's Maglev builder (src/maglev): indices into `members`, mapped to backend ids.
    const idx = buildTable({ backends: members.map((m) => ({ name: m.address, weight: 1 })), size: 65537 });
    const table = idx.map((i) => (i === NO_BACKEND ? 0 : members[i]!.id));
    await lb.dp.installTable(9, table);
    let seed = 12345;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    let checked = 0;
    for (let i = 0; i < 10000; i++) {
      // 1..223 without 127 (loopback sources are dropped: see 'sources no client can have').
      const first = (rnd() % 222) + 1;
      const src = `${first >= 127 ? first + 1 : first}.${rnd() % 256}.${rnd() % 256}.${(rnd() % 254) + 1}`;
      const sport = rnd() % 65536;
      const data = frame({ eth, ip: { src, dst: '10.0.0.50' }, l4: { type: 'tcp', sport, dport: 443, flags: TCP_FLAGS.SYN } });
      const r = lb.dp.program.testRun({ data });
      const hash = flowHash({ source: src, destination: '10.0.0.50', sourcePort: sport, destinationPort: 443, proto: 6 });
      const want = predictBackend({ table, hash, usable: (id) => members.some((m) => m.id === id) && !down.has(id) });
      // The daemon module's own probe model agrees too.
      const viaMaglev = probeBackend({ table: idx, skipped: (j) => down.has(members[j]!.id), probeLimit: 8 }, hash % 65537);
      expect(viaMaglev === NO_BACKEND ? null : members[viaMaglev]!.id).toBe(want);
      expect(r.verdictName).toBe(want === null ? 'DROP' : 'TX');
      if (want !== null) {
        expect(parseFrame(r.data!).ip!.dst).toBe(members.find((m) => m.id === want)!.address);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(9900);
  });
});

describePrivileged('balancer: a conntrack entry of another VIP is re-selected', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const ctKey = (f: { src: string; dst: string; sport: number; dport: number; proto: number }) =>
    encodeFlowKey({ source: f.src, sourcePort: f.sport, destination: f.dst, destinationPort: f.dport, proto: f.proto });
  const readCt = (f: Parameters<typeof ctKey>[0]) => {
    const v = lb.dp.maps.conntrack.lookup(ctKey(f));
    return v ? decodeCtValue(v) : null;
  };
  const keepsFlows = (id: number) => ['up', 'draining'].includes(lb.states.get(id)?.state ?? 'down');

  it("a planted entry naming VIP 4 and its backend: the packet for VIP 1 goes to VIP 1's backend, and the entry is rewritten", async () => {
    // VIP 1 = 10.0.0.10:80/tcp (backends 1..3); VIP 4 = 10.0.0.20:80/tcp (backend 21 only, fd00:2::1).
    const f = { src: C4, dst: '10.0.0.10', sport: 45000, dport: 80, proto: PROTO.TCP };
    expect(run1(lb, tcp4({ sport: f.sport, flags: TCP_FLAGS.SYN })).verdictName).toBe('TX');
    const written = readCt(f)!;
    expect(written).toMatchObject({ vipId: 1 });
    // Recycled ids: the entry now says VIP 4's backend 21 (up, of another VIP), still fresh.
    lb.dp.maps.conntrack.update(ctKey(f), encodeCtValue({ ...written, vipId: 4, backendId: 21 }));
    const before = (await lb.dp.counters()).global;
    const input = tcp4({ sport: f.sport, flags: TCP_FLAGS.ACK });
    const r = run1(lb, input);
    const p = predict(lb, 1, f);
    const want = predictSelect({ table: lb.tables.get(1)!, hash: p.hash, usable: (id) => lb.states.get(id)?.state === 'up', vipId: 1, conntrack: { vipId: 4, backendId: 21 }, keepsFlows }); // prettier-ignore
    expect(want).toEqual({ backendId: p.id, from: 'maglev', reselected: true });
    expect([1, 2, 3]).toContain(want.backendId);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(want.backendId!), p.hash).toString('hex'));
    const after = (await lb.dp.counters()).global;
    expect(after.ct_reselect! - before.ct_reselect!).toBe(1n);
    expect(after.ct_hit).toBe(before.ct_hit);
    expect(readCt(f)).toMatchObject({ vipId: 1, backendId: want.backendId, hash: p.hash });
    // The rewritten entry is this VIP's: the next packet is a plain hit.
    expect(parseFrame(run1(lb, input).data!).ip!.dst).toBe(backendAddr(want.backendId!));
    expect((await lb.dp.counters()).global.ct_hit).toBe(after.ct_hit! + 1n);
  });

  it('an entry of the same VIP whose backend belongs to it stays a hit (the check costs established flows nothing)', async () => {
    const f = { src: C4, dst: '10.0.0.10', sport: 45001, dport: 80, proto: PROTO.TCP };
    run1(lb, tcp4({ sport: f.sport, flags: TCP_FLAGS.SYN }));
    const written = readCt(f)!;
    const other = [1, 2, 3].find((id) => id !== written.backendId)!;
    lb.dp.maps.conntrack.update(ctKey(f), encodeCtValue({ ...written, backendId: other }));
    const r = run1(lb, tcp4({ sport: f.sport, flags: TCP_FLAGS.ACK }));
    expect(parseFrame(r.data!).ip!.dst).toBe(backendAddr(other));
    expect(predictSelect({ table: lb.tables.get(1)!, hash: written.hash, usable: () => true, vipId: 1, conntrack: { vipId: 1, backendId: other }, keepsFlows })).toEqual({ backendId: other, from: 'conntrack', reselected: false }); // prettier-ignore
  });

  it('a port VIP added over a wildcard VIP takes its flows to its own backends (no planting)', async () => {
    // UDP 10.0.0.10:5000 is served by the wildcard VIP 2 (backends 1..3) and gets an entry of VIP 2.
    const data = frame({ eth, ip: { src: C4, dst: '10.0.0.10' }, l4: { type: 'udp', sport: 6000, dport: 5000, payload: Buffer.alloc(8) } });
    const first = run1(lb, data);
    expect([1, 2, 3].map(backendAddr)).toContain(parseFrame(first.data!).ip!.dst);
    const f = { src: C4, dst: '10.0.0.10', sport: 6000, dport: 5000, proto: PROTO.UDP };
    expect(readCt(f)).toMatchObject({ vipId: 2 });
    // Now a VIP of its own for port 5000 (id 7), served only by backend 31.
    await lb.dp.upsertBackend({ id: 31, address: '10.3.0.31', state: 'up' });
    await lb.dp.upsertVip({ key: { address: '10.0.0.10', port: 5000, protocol: 'udp' }, id: 7, flags: { sourceHash: false, noConntrack: false }, tableSize: 13 });
    await lb.dp.installTable(7, new Uint32Array(13).fill(31));
    const r = run1(lb, data);
    expect(r.verdictName).toBe('TX');
    expect(parseFrame(r.data!).ip!.dst).toBe('10.3.0.31');
    expect(readCt(f)).toMatchObject({ vipId: 7, backendId: 31 });
  });
});

const run1 = (lb: Lb, data: Buffer) => lb.dp.program.testRun({ data });
