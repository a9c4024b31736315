// A connection the client ended (FIN or RST) leaves a closed connection-table entry that serves only that
// connection's tail: a new connection on the same 5-tuple, whose SYN went through another LB node (a client
// reusing its port, then ECMP moving the tuple here), is chosen afresh instead of going to the old backend.
import { ctTail, selectBackend } from '../../src/datapath/flowhash';
import { sharedContract } from '../../src/datapath/contract';
import { decodeCtValue, encodeFlowKey } from '../../src/datapath/layout';
import { describePrivileged } from '../helpers/privileged';
import { EthSpec, frame, ipPacket, parseFrame, PROTO, TCP_FLAGS } from '../helpers/packet';
import { backendAddr, expectedEncap, Lb, LB_MAC, predict, ROUTER_MAC, setupLb, simpleTable, VIPS } from './lb-fixture';

const C4 = '192.0.2.9';
const VIP = '10.0.0.10';
const eth: EthSpec = { src: ROUTER_MAC, dst: LB_MAC };

describe('ctTail (the closed entry rule, shared with the kernel through enum peak_const)', () => {
  const { ctClosedBehind: behind, ctClosedAhead: ahead } = sharedContract();
  it('reads the bounds the object was built with', () => {
    expect(behind).toBe(16 * 1024 * 1024);
    expect(ahead).toBe(65536);
  });
  it.each([
    ['the FIN itself', 1000, 1000, true],
    ['the last ACK (FIN + 1)', 1000, 1001, true],
    ['the FIN with its payload ahead', 1000, 1000 + 65536, true],
    ['one past the ahead bound', 1000, 1000 + 65537, false],
    ['a retransmission 1 MiB before', 20_000_000, 20_000_000 - 1024 * 1024, true],
    ['exactly the behind bound', 20_000_000, 20_000_000 - 16 * 1024 * 1024, true],
    ['one before the behind bound', 20_000_000, 20_000_000 - 16 * 1024 * 1024 - 1, false],
    ['ahead across the wrap', 0xfffffff0, 0x10, true],
    ['behind across the wrap', 0x10, 0xffffff00, true],
    ['half the space away', 1000, 1000 + 2 ** 31, false],
  ])('%s', (_what, end, seq, want) => {
    expect(ctTail(end, seq)).toBe(want);
  });
});

describePrivileged('balancer: closed connection-table entries', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
  });
  afterAll(() => lb?.dp.close());

  const run = (data: Buffer) => lb.dp.program.testRun({ data });
  const seg = (sport: number, flags: number, seq: number) =>
    frame({ eth, ip: { src: C4, dst: VIP }, l4: { type: 'tcp', sport, dport: 80, flags, seq } });
  const flow = (sport: number) => ({ src: C4, dst: VIP, sport, dport: 80, proto: PROTO.TCP });
  const key = (sport: number) =>
    encodeFlowKey({ source: C4, sourcePort: sport, destination: VIP, destinationPort: 80, proto: PROTO.TCP });
  const entry = (sport: number) => {
    const v = lb.dp.maps.conntrack.lookup(key(sport));
    return v ? decodeCtValue(v) : null;
  };
  const dst = (r: ReturnType<typeof run>) => parseFrame(r.data!).ip!.dst;
  const counters = async () => (await lb.dp.counters()).global;
  const delta = (a: Record<string, bigint>, b: Record<string, bigint>, names: string[]) =>
    Object.fromEntries(names.map((n) => [n, Number((b[n] ?? 0n) - (a[n] ?? 0n))]));
  const NAMES = ['ct_hit', 'ct_miss', 'ct_insert', 'ct_closed', 'ct_closed_other', 'ct_reselect'];
  /** VIP 1's table with every slot on `id` (a membership change that moves every flow), or the original. */
  const moveAllTo = async (id: number | null) => {
    const size = VIPS.find((v) => v.spec.id === 1)!.spec.tableSize;
    const t = id === null ? simpleTable(size, [1, 2, 3], 1) : new Uint32Array(size).fill(id);
    await lb.dp.installTable(1, t);
    lb.tables.set(1, t);
  };
  afterEach(() => moveAllTo(null));

  it('a FIN marks the entry closed at its sequence number; the tail keeps the old backend after a change', async () => {
    const sport = 47001;
    const owner = predict(lb, 1, flow(sport));
    expect(run(seg(sport, TCP_FLAGS.SYN, 5000)).verdictName).toBe('TX');
    expect(entry(sport)).toMatchObject({ backendId: owner.id, vipId: 1, closedSeq: null, hash: owner.hash });
    const c0 = await counters();
    expect(dst(run(seg(sport, TCP_FLAGS.FIN | TCP_FLAGS.ACK, 5001)))).toBe(backendAddr(owner.id!));
    expect(entry(sport)).toMatchObject({ backendId: owner.id, vipId: 1, closedSeq: 5001, hash: 0 });
    expect(delta(c0, await counters(), NAMES)).toEqual({ ct_hit: 1, ct_miss: 0, ct_insert: 0, ct_closed: 1, ct_closed_other: 0, ct_reselect: 0 }); // prettier-ignore
    expect((await lb.dp.conntrack()).find((e) => e.sourcePort === sport)).toMatchObject({ closed: true, backendId: owner.id }); // prettier-ignore
    // Every slot now belongs to another backend: the tail (last ACK, a retransmitted FIN, data before it) still
    // goes to the connection's own backend, with the output of an open entry's hit (the hash recomputed).
    const other = [1, 2, 3].find((id) => id !== owner.id)!;
    await moveAllTo(other);
    const c1 = await counters();
    for (const seq of [5002, 5001, (5001 - 1024 * 1024) >>> 0]) {
      const input = seg(sport, TCP_FLAGS.ACK, seq);
      const r = run(input);
      expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(owner.id!), owner.hash).toString('hex'));
    }
    expect(delta(c1, await counters(), NAMES)).toEqual({ ct_hit: 3, ct_miss: 0, ct_insert: 0, ct_closed: 0, ct_closed_other: 0, ct_reselect: 0 }); // prettier-ignore
    expect(entry(sport)).toMatchObject({ backendId: owner.id, closedSeq: 5001 });
  });

  it("a new connection on the closed entry's 5-tuple (its SYN went elsewhere) is chosen afresh and recorded open", async () => {
    const sport = 47002;
    const owner = predict(lb, 1, flow(sport));
    run(seg(sport, TCP_FLAGS.SYN, 100));
    run(seg(sport, TCP_FLAGS.FIN | TCP_FLAGS.ACK, 101));
    const other = [1, 2, 3].find((id) => id !== owner.id)!;
    await moveAllTo(other);
    const c0 = await counters();
    // The client reused the port: its new connection's ISN is anywhere; this node sees its third packet first.
    const isn = 101 + 2 ** 31;
    const input = seg(sport, TCP_FLAGS.ACK, isn + 1);
    const r = run(input);
    expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(other), owner.hash).toString('hex'));
    expect(delta(c0, await counters(), NAMES)).toEqual({ ct_hit: 0, ct_miss: 0, ct_insert: 1, ct_closed: 0, ct_closed_other: 1, ct_reselect: 0 }); // prettier-ignore
    expect(entry(sport)).toMatchObject({ backendId: other, vipId: 1, closedSeq: null, hash: owner.hash });
    // From now on it is an open entry of the new connection: a hit, even back near the old sequence numbers.
    await moveAllTo(null);
    expect(dst(run(seg(sport, TCP_FLAGS.ACK, 102)))).toBe(backendAddr(other));
  });

  it('an RST closes like a FIN; a packet just past the tail is a new connection', async () => {
    const sport = 47003;
    const owner = predict(lb, 1, flow(sport));
    run(seg(sport, TCP_FLAGS.SYN, 0xfffffff0));
    run(seg(sport, TCP_FLAGS.RST, 0xfffffff1));
    expect(entry(sport)).toMatchObject({ closedSeq: 0xfffffff1, backendId: owner.id });
    const other = [1, 2, 3].find((id) => id !== owner.id)!;
    await moveAllTo(other);
    // Ahead across the sequence wrap: still the tail.
    expect(dst(run(seg(sport, TCP_FLAGS.RST, 0x00000100)))).toBe(backendAddr(owner.id!));
    // Past PEAK_CT_CLOSED_AHEAD: not.
    const c0 = await counters();
    expect(dst(run(seg(sport, TCP_FLAGS.ACK, (0xfffffff1 + 65537) % 2 ** 32)))).toBe(backendAddr(other));
    expect(delta(c0, await counters(), NAMES)).toMatchObject({ ct_closed_other: 1, ct_insert: 1 });
  });

  it('a FIN that misses the table is recorded closed; a FIN of an open hit over a closed one does not re-mark', async () => {
    const sport = 47004;
    const owner = predict(lb, 1, flow(sport));
    const c0 = await counters();
    // This node never saw the connection (ECMP moved it here at its end).
    expect(dst(run(seg(sport, TCP_FLAGS.FIN | TCP_FLAGS.ACK, 7000)))).toBe(backendAddr(owner.id!));
    expect(entry(sport)).toMatchObject({ closedSeq: 7000, backendId: owner.id });
    expect(delta(c0, await counters(), NAMES)).toEqual({ ct_hit: 0, ct_miss: 1, ct_insert: 1, ct_closed: 1, ct_closed_other: 0, ct_reselect: 0 }); // prettier-ignore
    const c1 = await counters();
    run(seg(sport, TCP_FLAGS.FIN | TCP_FLAGS.ACK, 7000)); // retransmitted
    expect(entry(sport)).toMatchObject({ closedSeq: 7000 });
    expect(delta(c1, await counters(), NAMES)).toMatchObject({ ct_hit: 1, ct_closed: 0 });
  });

  it('an ICMP error about a closed flow goes to its backend (no sequence number judged)', async () => {
    const sport = 47005;
    const owner = predict(lb, 1, flow(sport));
    run(seg(sport, TCP_FLAGS.SYN, 1));
    run(seg(sport, TCP_FLAGS.FIN | TCP_FLAGS.ACK, 2));
    const other = [1, 2, 3].find((id) => id !== owner.id)!;
    await moveAllTo(other);
    const quoted = ipPacket({ src: VIP, dst: C4 }, { type: 'tcp', sport: 80, dport: sport, payload: Buffer.alloc(8) }).subarray(0, 28); // prettier-ignore
    const input = frame({ eth, ip: { src: '198.51.100.1', dst: VIP }, l4: { type: 'icmp', icmpType: 3, code: 4, rest: Buffer.from([0, 0, 5, 0xdc]), payload: quoted } }); // prettier-ignore
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(expectedEncap(input, backendAddr(owner.id!), owner.hash).toString('hex'));
  });
});

describe('selection model: closed entries (the cases the kernel test runs)', () => {
  it('tail, new connection, no segment, FIN over an open hit, FIN on a miss, FIN on a closed entry', () => {
    const base = {
      vipId: 1,
      table: new Uint32Array(13).fill(2),
      hash: 7,
      usable: () => true,
      keepsFlows: () => true,
      readConntrack: true,
      recordConntrack: true,
    };
    const closed = { backendId: 1, vipId: 1, closedSeq: 5001 };
    const pick = (o: Partial<Parameters<typeof selectBackend>[0]>) => {
      const r = selectBackend({ ...base, conntrack: closed, ...o });
      return { id: r.backendId, from: r.from, recorded: r.recorded, closes: r.closes, counters: r.counters };
    };
    expect(pick({ segment: { seq: 5002, end: false } })).toEqual({ id: 1, from: 'conntrack', recorded: false, closes: null, counters: ['ct_hit'] }); // prettier-ignore
    expect(pick({ segment: { seq: 5001 + 2 ** 31, end: false } })).toEqual({ id: 2, from: 'maglev', recorded: true, closes: null, counters: ['ct_closed_other', 'ct_insert'] }); // prettier-ignore
    expect(pick({ segment: null })).toEqual({ id: 1, from: 'conntrack', recorded: false, closes: null, counters: ['ct_hit'] }); // prettier-ignore
    expect(pick({ conntrack: { backendId: 1, vipId: 1 }, segment: { seq: 9, end: true } })).toEqual({ id: 1, from: 'conntrack', recorded: false, closes: 9, counters: ['ct_hit', 'ct_closed'] }); // prettier-ignore
    expect(pick({ conntrack: null, segment: { seq: 9, end: true } })).toEqual({ id: 2, from: 'maglev', recorded: true, closes: 9, counters: ['ct_miss', 'ct_closed', 'ct_insert'] }); // prettier-ignore
    expect(pick({ segment: { seq: 5001, end: true } })).toEqual({ id: 1, from: 'conntrack', recorded: false, closes: null, counters: ['ct_hit'] }); // prettier-ignore
  });
});
