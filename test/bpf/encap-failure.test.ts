// A packet whose encapsulation fails moves its drop reason only: per-VIP and per-backend traffic, encap and
// forward counters count what was sent. bpf_xdp_adjust_head cannot fail under BPF_PROG_TEST_RUN (it always
// has 256 bytes of headroom), so that case runs the balancer built with the helper mocked to fail
// (test/fixtures/balancer_adjust_fail.bpf.c); no source and family mismatch run the real program.
import { join } from 'node:path';
import { bpfObjectDir } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { frame, ipPacket, TCP_FLAGS } from '../helpers/packet';
import { LB_MAC, Lb, MTU, ROUTER_MAC, setupLb, SRC_V4 } from './lb-fixture';

const C4 = '192.0.2.7';
const C6 = '2001:db8:c::7';
const eth = { src: ROUTER_MAC, dst: LB_MAC };
const ADJUST_FAILS = join(bpfObjectDir, 'fixtures', 'balancer_adjust_fail.bpf.o');

const tcp = (src: string, dst: string, dport: number, sport: number, flags: number): Buffer =>
  frame({ eth, ip: { src, dst }, l4: { type: 'tcp', sport, dport, flags, payload: Buffer.alloc(16, 1) } });

/** Every traffic and global counter at once, as plain numbers keyed "vip N", "backend N" and counter names. */
async function snapshot(lb: Lb): Promise<Record<string, bigint>> {
  const c = await lb.dp.counters();
  const out: Record<string, bigint> = { ...c.global };
  for (const [id, t] of c.vips) {
    out[`vip ${id} packets`] = t.packets;
    out[`vip ${id} bytes`] = t.bytes;
  }
  for (const [id, t] of c.backends) {
    out[`backend ${id} packets`] = t.packets;
    out[`backend ${id} bytes`] = t.bytes;
  }
  return out;
}

/** The counters that moved between two snapshots, with their deltas. */
function moved(a: Record<string, bigint>, b: Record<string, bigint>): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0n) - (a[k] ?? 0n);
    if (d !== 0n) out[k] = d;
  }
  return out;
}

describePrivileged('encapsulation failure: bpf_xdp_adjust_head fails (mocked)', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb({ objectPath: ADJUST_FAILS });
  });
  afterAll(() => lb?.dp.close());

  const cases: { description: string; input: () => Buffer; ct: Record<string, bigint> }[] = [
    { description: 'v4 TCP SYN to VIP 1 (IPIP)', input: () => tcp(C4, '10.0.0.10', 80, 50000, TCP_FLAGS.SYN), ct: { ct_insert: 1n } },
    { description: 'v4 TCP ACK to VIP 1, conntrack hit', input: () => tcp(C4, '10.0.0.10', 80, 50000, TCP_FLAGS.ACK), ct: { ct_hit: 1n } },
    { description: 'v6 TCP SYN to VIP 3 (IP6IP6)', input: () => tcp(C6, '2001:db8::10', 443, 50001, TCP_FLAGS.SYN), ct: { ct_insert: 1n } },
    { description: 'v4 TCP SYN to VIP 4 (4in6)', input: () => tcp(C4, '10.0.0.20', 80, 50002, TCP_FLAGS.SYN), ct: { ct_insert: 1n } },
    {
      description: 'ICMP frag-needed about a VIP 1 flow',
      input: () => {
        const quoted = ipPacket({ src: '10.0.0.10', dst: C4 }, { type: 'tcp', sport: 80, dport: 50000, payload: Buffer.alloc(8) }).subarray(0, 28);
        return frame({ eth, ip: { src: '198.51.100.1', dst: '10.0.0.10' }, l4: { type: 'icmp', icmpType: 3, code: 4, rest: Buffer.from([0, 0, 5, 0xdc]), payload: quoted } });
      },
      ct: { ct_hit: 1n },
    },
  ];

  it('has cases', () => expect(cases.length).toBe(5));

  it.each(cases.map((c) => [c.description, c] as const))('%s: DROP, drop_adjust only', async (_d, c) => {
    const before = await snapshot(lb);
    const r = lb.dp.program.testRun({ data: c.input() });
    expect(r.verdictName).toBe('DROP');
    // Exactly these moved: the packet, its verdict and reason, and what selection did. No vip/backend
    // traffic, no encap_v4/v6, no icmp_error_forwarded, no xdp_tx.
    expect(moved(before, await snapshot(lb))).toEqual({ rx_packets: 1n, xdp_drop: 1n, drop_adjust: 1n, ...c.ct });
  });
});

describePrivileged('encapsulation refused: no outer source, family mismatch (real program)', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  it('control: a forwarded packet moves its VIP and backend traffic by one packet and its frame length', async () => {
    const input = tcp(C4, '10.0.0.20', 80, 51000, TCP_FLAGS.SYN);
    const before = await snapshot(lb);
    expect(lb.dp.program.testRun({ data: input }).verdictName).toBe('TX');
    expect(moved(before, await snapshot(lb))).toEqual({
      rx_packets: 1n,
      xdp_tx: 1n,
      encap_v6: 1n,
      ct_insert: 1n,
      'vip 4 packets': 1n,
      'vip 4 bytes': BigInt(input.length),
      'backend 21 packets': 1n,
      'backend 21 bytes': BigInt(input.length),
    });
  });

  it('an IPv6 backend with no IPv6 outer source: DROP, drop_no_source only', async () => {
    await lb.dp.configure({ ownMac: LB_MAC, nextHopMac: ROUTER_MAC, encapSourceV4: SRC_V4, encapSourceV6: null, mtu: MTU });
    try {
      const before = await snapshot(lb);
      // VIP 4 (10.0.0.20) is served by backend 21, fd00:2::1 (4in6).
      expect(lb.dp.program.testRun({ data: tcp(C4, '10.0.0.20', 80, 51001, TCP_FLAGS.SYN) }).verdictName).toBe('DROP');
      expect(moved(before, await snapshot(lb))).toEqual({ rx_packets: 1n, xdp_drop: 1n, drop_no_source: 1n, ct_insert: 1n });
    } finally {
      await lb.dp.configure({ ownMac: LB_MAC, nextHopMac: ROUTER_MAC, encapSourceV4: SRC_V4, encapSourceV6: { prefix: 'fd00:ff::', prefixLength: 64 }, mtu: MTU });
    }
  });

  it('an IPv6 VIP with an IPv4 backend: DROP, drop_family only', async () => {
    await lb.dp.upsertVip({ key: { address: '2001:db8::30', port: 80, protocol: 'tcp' }, id: 8, flags: { sourceHash: false, noConntrack: false }, tableSize: 13 });
    await lb.dp.installTable(8, new Uint32Array(13).fill(1));
    const before = await snapshot(lb);
    expect(lb.dp.program.testRun({ data: tcp(C6, '2001:db8::30', 80, 51002, TCP_FLAGS.SYN) }).verdictName).toBe('DROP');
    expect(moved(before, await snapshot(lb))).toEqual({ rx_packets: 1n, xdp_drop: 1n, drop_family: 1n, ct_insert: 1n });
  });
});
