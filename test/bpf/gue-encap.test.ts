// GUE encapsulation and the previous-owner hint through BPF_PROG_TEST_RUN (issue 15): exact output frames for
// every outer x inner family (checksums valid, UDP checksum 0), hint present/absent, none on a SYN or UDP, the
// skipped-owner hint (probing past a draining owner; never a down one), a conntrack entry on a down backend
// (rewritten, or kept while the previous table hints its own backend), hints only of the chosen family, moved
// marks in a previous table ignored, stateless VIPs never
// touching the connection table, the GUE port from the config, MTU with the GUE overhead, truncations.
import { BpfMap } from '../../src/datapath/bpf';
import { flowHash } from '../../src/datapath/flowhash';
import { decodeCtValue, encodeCtValue, encodeFlowKey } from '../../src/datapath/layout';
import { describePrivileged } from '../helpers/privileged';
import { EthSpec, frame, ipPacket, parseFrame, parseGue, PROTO, TCP_FLAGS } from '../helpers/packet';
import {
  addGue,
  anyBackendAddr,
  expectedGue,
  GUE_VIPS,
  LB_MAC,
  Lb,
  MTU,
  predict,
  ROUTER_MAC,
  setBackendState,
  setupLb,
  simpleTable,
} from './lb-fixture';

const C4 = '192.0.2.77';
const C6 = '2001:db8:c::77';
const eth: EthSpec = { src: ROUTER_MAC, dst: LB_MAC };

const vipOf = (id: number) => GUE_VIPS.find((v) => v.spec.id === id)!.spec;

/** A TCP frame from the client family of the VIP to VIP `id` (its port). */
function tcpTo(id: number, sport: number, flags: number, payload?: Buffer): Buffer {
  const v = vipOf(id);
  const src = v.key.address.includes(':') ? C6 : C4;
  return frame({ eth, ip: { src, dst: v.key.address }, l4: { type: 'tcp', sport, dport: v.key.port, flags, payload } });
}

function flowOf(input: Buffer): { src: string; dst: string; sport: number; dport: number; proto: number } {
  const ip = parseFrame(input).ip!;
  return { src: ip.src, dst: ip.dst, sport: ip.l4!.sport!, dport: ip.l4!.dport!, proto: ip.proto };
}

/** The flow hash of a frame (5-tuple). */
function hashOf(input: Buffer): number {
  const f = flowOf(input);
  return flowHash({ source: f.src, destination: f.dst, sourcePort: f.sport, destinationPort: f.dport, proto: f.proto });
}

describePrivileged('GUE encapsulation and previous-owner hints', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
    await addGue(lb);
  });
  afterAll(() => lb?.dp.close());

  const run = (data: Buffer) => lb.dp.program.testRun({ data });
  const counters = async () => (await lb.dp.counters()).global;
  const delta = (a: Record<string, bigint>, b: Record<string, bigint>) =>
    Object.fromEntries(Object.keys(a).filter((k) => a[k] !== b[k]).map((k) => [k, Number(a[k]! - (b[k] ?? 0n))]));

  /** Sends `input`, expects TX with exactly the GUE frame to the predicted backend and `hint`; checks sums. */
  function expectGue(input: Buffer, vipId: number, hint: string | null, o: { port?: number; beId?: number } = {}): void {
    const p = predict(lb, vipId, flowOf(input));
    const beId = o.beId ?? p.id!;
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    const want = expectedGue(input, anyBackendAddr(beId), p.hash, { hint, port: o.port });
    expect(r.data!.toString('hex')).toBe(want.toString('hex'));
    const out = parseFrame(r.data!).ip!;
    expect(out.proto).toBe(PROTO.UDP);
    expect(out.headerChecksumOk).toBe(true);
    const udp = out.raw.subarray(out.headerLength);
    expect(udp.readUInt16BE(6)).toBe(0); // checksum 0 (RFC 6935/6936, bpf/README.md)
    expect(udp.readUInt16BE(4)).toBe(udp.length);
    // the flow hash's low 14 bits in the dynamic range 49152-65535 (RFC 7348, RFC 8086)
    expect(udp.readUInt16BE(0)).toBe(0xc000 | (p.hash & 0x3fff));
    const g = parseGue(udp.subarray(8));
    expect(g.verC).toBe(0);
    expect(g.flags).toBe(0);
    expect(g.hint?.address ?? null).toBe(hint);
    expect(g.inner.l4!.checksumOk).toBe(true);
    expect(g.inner.raw.equals(parseFrame(input).ip!.raw)).toBe(true);
  }

  it.each([
    ['v4 in v4 (stateless)', 21],
    ['v6 in v6', 22],
    ['v6 in v4', 23],
    ['v4 in v6', 24],
    ['v4 in v4 (conntrack VIP)', 20],
  ])('%s: SYN -> exact GUE frame, no hint', (_n, vipId) => {
    expectGue(tcpTo(vipId, 42000 + vipId, TCP_FLAGS.SYN, Buffer.from('syn data')), vipId, null);
  });

  it('a UDP flow to a GUE backend: exact frame, never a hint', async () => {
    const input = frame({ eth, ip: { src: C4, dst: '10.0.1.15' }, l4: { type: 'udp', sport: 5353, dport: 9000, payload: Buffer.alloc(16, 3) } });
    const prev = simpleTable(251, [33, 31, 32], 25); // every slot's owner differs from the current table's
    await lb.dp.installPreviousTable(25, prev);
    try {
      expectGue(input, 25, null);
    } finally {
      await lb.dp.installPreviousTable(25, null);
    }
  });

  it('the GUE destination port comes from the config', async () => {
    const cfg = (await lb.dp.readConfig())!;
    await lb.dp.configure({ ...cfg, guePort: 7777 });
    try {
      expectGue(tcpTo(21, 42100, TCP_FLAGS.SYN), 21, null, { port: 7777 });
    } finally {
      await lb.dp.configure({ ...cfg, guePort: 6080 });
    }
  });

  /** Flows (source ports) to VIP `vipId` whose slot owner differs / equals between `table` and `prev`. */
  function splitFlows(vipId: number, prev: Uint32Array, from: number, n: number) {
    const table = lb.tables.get(vipId)!;
    const differ: { sport: number; prevOwner: number }[] = [];
    const same: number[] = [];
    for (let sport = from; sport < from + n; sport++) {
      const h = hashOf(tcpTo(vipId, sport, TCP_FLAGS.ACK));
      const cur = table[h % table.length]!;
      const old = prev[h % prev.length]!;
      if (cur !== old) differ.push({ sport, prevOwner: old });
      else same.push(sport);
    }
    return { differ, same };
  }

  it.each([
    ['v4 hint, v4 in v4', 21, [33, 32, 31], 97],
    ['v6 hint, v6 in v6', 22, [43, 41, 42], 89],
    ['v4 hint, v6 in v4', 23, [32, 31], 7],
    ['v6 hint, v4 in v6', 24, [42, 41], 11],
  ] as const)('%s: a non-SYN packet carries the previous owner only when it differs', async (_n, vipId, prevMembers, prevSize) => {
    // The previous table has its own size (M travels inside each table).
    const prev = simpleTable(prevSize, [...prevMembers], vipId);
    await lb.dp.installPreviousTable(vipId, prev);
    try {
      expect(Array.from((await lb.dp.readPreviousTable(vipId))!)).toEqual(Array.from(prev));
      const { differ, same } = splitFlows(vipId, prev, 43000, 64);
      expect(differ.length).toBeGreaterThan(3);
      expect(same.length).toBeGreaterThan(3);
      const before = await counters();
      for (const d of differ.slice(0, 8)) {
        expectGue(tcpTo(vipId, d.sport, TCP_FLAGS.ACK, Buffer.from('est')), vipId, anyBackendAddr(d.prevOwner));
        expectGue(tcpTo(vipId, d.sport, TCP_FLAGS.SYN), vipId, null); // SYNs carry nothing
      }
      for (const sport of same.slice(0, 8)) expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, null);
      const d = delta(await counters(), before);
      const sent = Math.min(8, differ.length);
      expect(d.hint_sent).toBe(sent);
      expect(d.hint_skipped_owner).toBeUndefined();
      expect(d.stateless_forward).toBe(2 * sent + Math.min(8, same.length));
      expect(d.ct_miss ?? 0).toBe(0);
      expect(d.ct_insert ?? 0).toBe(0);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
    expect(await lb.dp.readPreviousTable(vipId)).toBeNull();
    expectGue(tcpTo(vipId, 43000, TCP_FLAGS.ACK), vipId, null);
  });

  it('a change as the control plane makes it: previous table first, then the new current table (marks)', async () => {
    const vipId = 21;
    const old = lb.tables.get(vipId)!;
    const next = simpleTable(251, [32, 33, 31], vipId); // most slots change owner
    const raw = async () => {
      const id = lb.dp.maps.maglev_tables.innerId(vipId)!;
      const m = BpfMap.fromId(id);
      try {
        return m.readU32s(1, next.length); // the slots as stored, marks included
      } finally {
        m.close();
      }
    };
    await lb.dp.installPreviousTable(vipId, old);
    expect((await raw()).every((e) => e < 2 ** 31)).toBe(true); // previous == current: nothing marked
    await lb.dp.installTable(vipId, next);
    lb.tables.set(vipId, next);
    try {
      const stored = await raw();
      const moved = Array.from(next).filter((id, s) => id !== old[s]).length;
      expect(stored.filter((e) => e >= 2 ** 31).length).toBe(moved);
      expect(Array.from((await lb.dp.readTable(vipId))!)).toEqual(Array.from(next)); // marks are not ids
      const { differ, same } = splitFlows(vipId, old, 51000, 48);
      expect(differ.length).toBeGreaterThan(3);
      for (const d of differ.slice(0, 6)) expectGue(tcpTo(vipId, d.sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(d.prevOwner));
      for (const sport of same.slice(0, 6)) expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, null);
      // Retention over: the previous table goes; the marks stay and find none (no hint).
      await lb.dp.installPreviousTable(vipId, null);
      for (const d of differ.slice(0, 6)) expectGue(tcpTo(vipId, d.sport, TCP_FLAGS.ACK), vipId, null);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
      await lb.dp.installTable(vipId, old);
      lb.tables.set(vipId, old);
    }
  });

  it('MTU counts UDP + GUE + hint: the largest packet that fits without a hint gets a too-big with one', async () => {
    const vipId = 21;
    const prev = simpleTable(251, [33, 32, 31], vipId);
    const { differ, same } = splitFlows(vipId, prev, 44000, 64);
    await lb.dp.installPreviousTable(vipId, prev);
    try {
      // IPv4 inner of MTU - 20 - 8 - 4 bytes: fits as GUE without a hint.
      const payload = Buffer.alloc(MTU - 32 - 40, 7);
      expectGue(tcpTo(vipId, same[0]!, TCP_FLAGS.ACK, payload), vipId, null);
      const r = run(tcpTo(vipId, differ[0]!.sport, TCP_FLAGS.ACK, payload));
      expect(r.verdictName).toBe('TX');
      const out = parseFrame(r.data!).ip!;
      expect(out.proto).toBe(PROTO.ICMP);
      expect(out.l4!.icmpType).toBe(3);
      expect(out.l4!.icmpCode).toBe(4);
      expect(out.l4!.checksumOk).toBe(true);
      expect(out.l4!.icmpRest!.readUInt16BE(2)).toBe(MTU - 20 - 8 - 4 - 8); // outer v4, UDP, GUE, v4 hint
      // A SYN of that size carries no hint: it fits.
      expectGue(tcpTo(vipId, differ[0]!.sport, TCP_FLAGS.SYN, payload), vipId, null);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
  });

  /** An ICMP error from a router on the way to the client about a reply VIP -> client (the flow reversed):
   * frag-needed (v4) or packet-too-big (v6), quoting `quoteLen` bytes of that reply. */
  function ptbFor(vipId: number, cport: number, quoteLen?: number): Buffer {
    const v = vipOf(vipId);
    const v6 = v.key.address.includes(':');
    const reply = ipPacket(
      { src: v.key.address, dst: v6 ? C6 : C4 },
      { type: v.key.protocol === 'udp' ? 'udp' : 'tcp', sport: v.key.port || 9000, dport: cport, payload: Buffer.alloc(1400, 5) },
    );
    const payload = reply.subarray(0, quoteLen ?? (v6 ? 48 : 28));
    const rest = Buffer.from([0, 0, 0x05, 0x78]); // next-hop MTU 1400
    return v6
      ? frame({ eth, ip: { src: '2001:db8:66::9', dst: v.key.address }, l4: { type: 'icmp', icmpType: 2, rest, payload } })
      : frame({ eth, ip: { src: '10.66.9.9', dst: v.key.address }, l4: { type: 'icmp', icmpType: 3, code: 4, rest, payload } });
  }

  /** Sends an ICMP error about flow (client:cport -> VIP) and expects the exact GUE frame to that flow's backend
   * (chosen and hashed as the flow's own packets are), carrying `hint`. */
  function expectIcmpGue(input: Buffer, vipId: number, cport: number, hint: string | null): void {
    const v = vipOf(vipId);
    const client = v.key.address.includes(':') ? C6 : C4;
    const proto = v.key.protocol === 'udp' ? PROTO.UDP : PROTO.TCP;
    const p = predict(lb, vipId, { src: client, dst: v.key.address, sport: cport, dport: v.key.port || 9000, proto });
    const r = run(input);
    expect(r.verdictName).toBe('TX');
    expect(r.data!.toString('hex')).toBe(expectedGue(input, anyBackendAddr(p.id!), p.hash, { hint }).toString('hex'));
    const g = parseGue(parseFrame(r.data!).ip!.raw.subarray(parseFrame(r.data!).ip!.headerLength + 8));
    expect(g.hint?.address ?? null).toBe(hint);
    expect(g.inner.raw.equals(parseFrame(input).ip!.raw)).toBe(true);
  }

  /** Runs `f` with `prev` installed as VIP `vipId`'s previous table, removed after it (also when it fails). */
  async function withPrevious(vipId: number, prev: Uint32Array, f: () => Promise<void> | void): Promise<void> {
    await lb.dp.installPreviousTable(vipId, prev);
    try {
      await f();
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
  }

  it.each([
    ['v4 frag-needed', 21, [33, 32, 31], 97],
    ['v6 packet-too-big', 22, [43, 41, 42], 89],
  ] as const)(
    '%s about a moved TCP flow carries the previous owner (its decap hands it to the host holding the connection); about an unmoved one, nothing',
    async (_n, vipId, prevMembers, prevSize) => {
      const prev = simpleTable(prevSize, [...prevMembers], vipId);
      const { differ, same } = splitFlows(vipId, prev, 45000, 64);
      expect(differ.length).toBeGreaterThan(3);
      expect(same.length).toBeGreaterThan(3);
      await withPrevious(vipId, prev, async () => {
        const before = await counters();
        for (const d of differ.slice(0, 4)) expectIcmpGue(ptbFor(vipId, d.sport), vipId, d.sport, anyBackendAddr(d.prevOwner));
        for (const sport of same.slice(0, 4)) expectIcmpGue(ptbFor(vipId, sport), vipId, sport, null);
        expect(delta(await counters(), before)).toMatchObject({ icmp_error_forwarded: 8, hint_sent: 4 });
      });
      // Retention over: no previous table, no hint.
      expectIcmpGue(ptbFor(vipId, differ[0]!.sport), vipId, differ[0]!.sport, null);
    },
  );

  it('an ICMP error about a UDP flow never carries a hint; one that fits only without its hint goes without it', async () => {
    // every slot's owner differs from the current table's
    await withPrevious(25, simpleTable(251, [33, 31, 32], 25), () => expectIcmpGue(ptbFor(25, 5353), 25, 5353, null));
    const vipId = 21;
    const prev = simpleTable(251, [33, 32, 31], vipId);
    const { sport, prevOwner } = splitFlows(vipId, prev, 46000, 64).differ[0]!;
    await withPrevious(vipId, prev, async () => {
      // outer v4 + UDP + GUE = 32 bytes: an error of MTU - 32 bytes fits without the 8-byte v4 hint option only
      const big = ptbFor(vipId, sport, MTU - 32 - 28);
      expect(parseFrame(big).ip!.raw.length).toBe(MTU - 32);
      const before = await counters();
      expectIcmpGue(big, vipId, sport, null);
      expectIcmpGue(ptbFor(vipId, sport, MTU - 40 - 28), vipId, sport, anyBackendAddr(prevOwner));
      const d = delta(await counters(), before);
      expect(d).toMatchObject({ icmp_error_forwarded: 2, hint_sent: 1 });
      expect(d.drop_too_big).toBeUndefined();
    });
  });

  it('a skipped slot owner is the hint while it drains (non-SYN only), never once it is down', async () => {
    const vipId = 21;
    const table = lb.tables.get(vipId)!;
    const sport = 45000;
    const owner = table[hashOf(tcpTo(vipId, sport, TCP_FLAGS.ACK)) % table.length]!;
    await setBackendState(lb, owner, 'down');
    try {
      const next = predict(lb, vipId, flowOf(tcpTo(vipId, sport, TCP_FLAGS.ACK))).id!;
      expect(next).not.toBe(owner);
      // Down (its grace over, or drained and failing): its flows are dead; the new owner answers at once.
      const downBefore = await counters();
      expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, null);
      const dd = delta(await counters(), downBefore);
      expect(dd.hint_sent).toBeUndefined();
      // Draining (health-down within downGraceSeconds, drained, weight 0): skipped, and hinted.
      await setBackendState(lb, owner, 'draining');
      expect(predict(lb, vipId, flowOf(tcpTo(vipId, sport, TCP_FLAGS.ACK))).id).toBe(next);
      const before = await counters();
      expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(owner));
      expectGue(tcpTo(vipId, sport, TCP_FLAGS.SYN), vipId, null);
      const d = delta(await counters(), before);
      expect(d.hint_sent).toBe(1);
      expect(d.hint_skipped_owner).toBe(1);
      // A previous owner that differs wins over the skipped one (the change being bridged), in any state.
      const prevOwner = [31, 32, 33].find((b) => b !== owner && b !== next)!;
      await setBackendState(lb, prevOwner, 'down');
      await lb.dp.installPreviousTable(vipId, new Uint32Array(251).fill(prevOwner));
      expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(prevOwner));
      await setBackendState(lb, prevOwner, 'up');
      // ...but never the chosen backend itself: then the skipped owner is the hint again.
      await lb.dp.installPreviousTable(vipId, new Uint32Array(251).fill(next));
      expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(owner));
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
      for (const b of [31, 32, 33]) await setBackendState(lb, b, 'up');
    }
  });

  it('a hint is of the chosen backend’s family (the decap has no source of the other)', async () => {
    // VIP 21: IPv4 GUE backends; VIP 24: IPv6 ones. Previous tables naming the other family's GUE backends.
    const cases = [
      { vipId: 21, other: 41, size: 251 },
      { vipId: 24, other: 31, size: 13 },
    ];
    for (const c of cases) {
      await lb.dp.installPreviousTable(c.vipId, new Uint32Array(c.size).fill(c.other));
      try {
        const before = await counters();
        for (let sport = 45200; sport < 45220; sport++) expectGue(tcpTo(c.vipId, sport, TCP_FLAGS.ACK), c.vipId, null);
        expect(delta(await counters(), before).hint_sent).toBeUndefined();
      } finally {
        await lb.dp.installPreviousTable(c.vipId, null);
      }
    }
  });

  /** Header word [0] of the VIP's current table: M, and the generation parity at bit 31 (bpf/shared.h). */
  function headOf(vipId: number): number {
    const m = BpfMap.fromId(lb.dp.maps.maglev_tables.innerId(vipId)!);
    try {
      return m.lookup(Buffer.alloc(4))!.readUInt32LE(0);
    } finally {
      m.close();
    }
  }
  const parityOf = (vipId: number): 0 | 1 => (headOf(vipId) >>> 31) as 0 | 1;
  /** Which of the VIP's two previous-table generations hold a table (not nothing, not the empty table with M = 0
   * that cleared slots point at). */
  const generations = (vipId: number): boolean[] =>
    [0, 1].map((p) => {
      const id = lb.dp.maps.maglev_prev_tables.innerId(vipId * 2 + p);
      if (id === null) return false;
      const m = BpfMap.fromId(id);
      try {
        return m.lookup(Buffer.alloc(4))!.readUInt32LE(0) !== 0;
      } finally {
        m.close();
      }
    });

  it('a generation pair swaps atomically: a slot going A -> B -> A keeps its hint through the window (issue 15)', async () => {
    const vipId = 21;
    const cur = lb.tables.get(vipId)!;
    const A = new Uint32Array(251).fill(31);
    const B = new Uint32Array(251).fill(32);
    const sports = [46000, 46001, 46002, 46003, 46004, 46005];
    const ack = (sport: number) => tcpTo(vipId, sport, TCP_FLAGS.ACK, Buffer.from('est'));
    try {
      // generation 1: the slots moved A -> B; flows living on A (31) go to B (32) with the hint A
      expect(await lb.dp.installTables([{ vipId, table: B, previous: A }])).toEqual([null]);
      lb.tables.set(vipId, B);
      const p1 = parityOf(vipId);
      expect(headOf(vipId) & 0x7fffffff).toBe(251);
      expect(generations(vipId)[p1]).toBe(true);
      expect(generations(vipId)[1 - p1]).toBe(false);
      for (const sport of sports) expectGue(ack(sport), vipId, anyBackendAddr(31));
      // generation 2: back B -> A (previous B). Driven step by step: the new previous table is written first,
      // at the generation no packet reads; packets must still see the old pair (B, previous A: hint A). Were
      // they to see B with the new previous B, no slot would differ: the flows on A would go to B unhinted.
      let windows = 0;
      const r = await lb.dp.installTables([{ vipId, table: A, previous: B }], {
        afterPrevious: () => {
          expect(parityOf(vipId)).toBe(p1);
          expect(generations(vipId)).toEqual([true, true]);
          for (const sport of sports) expectGue(ack(sport), vipId, anyBackendAddr(31));
          windows++;
        },
      });
      expect(r).toEqual([null]);
      expect(windows).toBe(1);
      // the swap switched both: A with previous B (flows living on B are hinted), the stale generation gone
      lb.tables.set(vipId, A);
      expect(parityOf(vipId)).toBe(1 - p1);
      expect(headOf(vipId) & 0x7fffffff).toBe(251);
      expect(generations(vipId)[1 - p1]).toBe(true);
      expect(generations(vipId)[p1]).toBe(false);
      for (const sport of sports) expectGue(ack(sport), vipId, anyBackendAddr(32));
      expect(Array.from((await lb.dp.readTable(vipId))!)).toEqual(Array.from(A));
      expect(Array.from((await lb.dp.readPreviousTable(vipId))!)).toEqual(Array.from(B));
      // a previous table on its own pairs with the installed current table: one more flip
      await lb.dp.installPreviousTable(vipId, A);
      expect(parityOf(vipId)).toBe(p1);
      expect(generations(vipId)[p1]).toBe(true);
      expect(generations(vipId)[1 - p1]).toBe(false);
      for (const sport of sports) expectGue(ack(sport), vipId, null); // the same owner: nothing to hint
      // cleared: the live generation goes (and the parity stays); the packets below read the empty table
      await lb.dp.installPreviousTable(vipId, null);
      expect(generations(vipId)).toEqual([false, false]);
      expect(parityOf(vipId)).toBe(p1);
      expect(await lb.dp.readPreviousTable(vipId)).toBeNull();
    } finally {
      await lb.dp.installTables([{ vipId, table: cur, previous: null }]);
      lb.tables.set(vipId, cur);
    }
    expect(generations(vipId)).toEqual([false, false]);
    expectGue(ack(sports[0]!), vipId, null);
  });

  it('a cleared previous table (its slot pointing at the empty table, M = 0) sends no hint from the slots still marked moved', async () => {
    const vipId = 21;
    const cur = lb.tables.get(vipId)!;
    const A = new Uint32Array(251).fill(31);
    const B = new Uint32Array(251).fill(32);
    const sports = [46100, 46101, 46102];
    const ack = (sport: number) => tcpTo(vipId, sport, TCP_FLAGS.ACK, Buffer.from('est'));
    try {
      expect(await lb.dp.installTables([{ vipId, table: B, previous: A }])).toEqual([null]);
      lb.tables.set(vipId, B);
      for (const sport of sports) expectGue(ack(sport), vipId, anyBackendAddr(31));
      const moved = await lb.dp.readTable(vipId);
      await lb.dp.installPreviousTable(vipId, null);
      // the current table (every slot marked moved) stays; both generations hold no table
      expect(Array.from((await lb.dp.readTable(vipId))!)).toEqual(Array.from(moved!));
      const live = lb.dp.maps.maglev_prev_tables.innerId(vipId * 2 + parityOf(vipId));
      expect(live).not.toBeNull();
      expect(generations(vipId)).toEqual([false, false]);
      for (const sport of sports) expectGue(ack(sport), vipId, null);
    } finally {
      await lb.dp.installTables([{ vipId, table: cur, previous: null }]);
      lb.tables.set(vipId, cur);
    }
  });

  it('a previous table: ids with bit 31 are refused; a mark found in one anyway is not part of the id', async () => {
    const vipId = 21;
    await expect(lb.dp.installPreviousTable(vipId, Uint32Array.from([2 ** 31 + 31]))).rejects.toThrow(
      'backend ids must be below 2147483648 (got 2147483679)',
    );
    const prev = simpleTable(251, [33, 32, 31], vipId);
    const { differ } = splitFlows(vipId, prev, 45400, 48);
    expect(differ.length).toBeGreaterThan(3);
    await lb.dp.installPreviousTable(vipId, prev);
    // mark every slot of the installed previous table in place, as a table copied with its marks would be
    const m = BpfMap.fromId(lb.dp.maps.maglev_prev_tables.innerId(vipId * 2 + parityOf(vipId))!);
    try {
      const slots = m.readU32s(1, prev.length);
      for (let i = 0; i < slots.length; i++) slots[i] = (slots[i]! | 0x80000000) >>> 0;
      m.writeU32s(1, slots);
      for (const d of differ.slice(0, 6)) expectGue(tcpTo(vipId, d.sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(d.prevOwner));
    } finally {
      m.close();
      await lb.dp.installPreviousTable(vipId, null);
    }
  });

  it('conntrack VIP: a hinted miss is not recorded; an unhinted miss is; hits carry nothing', async () => {
    const vipId = 20;
    const prev = simpleTable(251, [33, 32, 31], vipId);
    const { differ, same } = splitFlows(vipId, prev, 46000, 64);
    await lb.dp.installPreviousTable(vipId, prev);
    try {
      const ctHas = async (sport: number) =>
        (await lb.dp.conntrack()).some((e) => e.sourcePort === sport && e.destination === '10.0.1.10');
      const hinted = differ[0]!;
      const before = await counters();
      expectGue(tcpTo(vipId, hinted.sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(hinted.prevOwner));
      expectGue(tcpTo(vipId, hinted.sport, TCP_FLAGS.ACK), vipId, anyBackendAddr(hinted.prevOwner));
      expect(await ctHas(hinted.sport)).toBe(false);
      expectGue(tcpTo(vipId, same[0]!, TCP_FLAGS.ACK), vipId, null);
      expect(await ctHas(same[0]!)).toBe(true);
      expectGue(tcpTo(vipId, same[0]!, TCP_FLAGS.ACK), vipId, null); // hit
      // A SYN records its choice; the flow's later packets hit and carry no hint although prev differs.
      expectGue(tcpTo(vipId, differ[1]!.sport, TCP_FLAGS.SYN), vipId, null);
      expectGue(tcpTo(vipId, differ[1]!.sport, TCP_FLAGS.ACK), vipId, null);
      const d = delta(await counters(), before);
      expect(d).toMatchObject({ ct_miss: 3, ct_insert: 2, ct_hit: 2, hint_sent: 2 });
      expect(d.stateless_forward).toBeUndefined();
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
  });

  it('conntrack entry on a GUE backend: draining keeps it; down re-selects and rewrites it, unless the previous table hints that very backend (kept, refreshed)', async () => {
    const vipId = 20;
    const sport = 47000;
    const input = tcpTo(vipId, sport, TCP_FLAGS.ACK);
    const p = predict(lb, vipId, flowOf(input));
    // The flow is pinned to a backend Maglev would not pick now.
    const [pinned, other] = [31, 32, 33].filter((b) => b !== p.id);
    const key = encodeFlowKey({ source: C4, sourcePort: sport, destination: '10.0.1.10', destinationPort: 80, proto: 6 });
    const pin = () => lb.dp.maps.conntrack.update(key, encodeCtValue({ backendId: pinned!, vipId, hash: p.hash, lastSeen: 0 }));
    const entry = () => decodeCtValue(lb.dp.maps.conntrack.lookup(key)!);
    const cfg = (await lb.dp.readConfig())!;
    await lb.dp.configure({ ...cfg, conntrackTimeouts: { tcp: 0, udp: 0 } }); // lastSeen 0 stays fresh
    try {
      // Draining: a hit, to the pinned backend, no hint (refreshed as any hit).
      pin();
      await setBackendState(lb, pinned!, 'draining');
      let before = await counters();
      expectGue(input, vipId, null, { beId: pinned });
      expect(delta(await counters(), before)).toMatchObject({ ct_hit: 1 });
      // Down: re-selected, no hint (a dead backend's flow gets the new owner's reset), entry rewritten.
      pin();
      await setBackendState(lb, pinned!, 'down');
      before = await counters();
      expectGue(input, vipId, null);
      let d = delta(await counters(), before);
      expect(d).toMatchObject({ ct_reselect: 1, ct_insert: 1 });
      expect(d.hint_sent).toBeUndefined();
      expect(entry().backendId).toBe(p.id);
      // Down, but the previous table names it as the slot's owner: hinted, the entry kept and refreshed.
      pin();
      await lb.dp.installPreviousTable(vipId, new Uint32Array(251).fill(pinned!));
      before = await counters();
      expectGue(input, vipId, anyBackendAddr(pinned!));
      d = delta(await counters(), before);
      expect(d).toMatchObject({ ct_reselect: 1, hint_sent: 1 });
      expect(d.ct_insert).toBeUndefined();
      expect(d.hint_skipped_owner).toBeUndefined();
      expect(entry().backendId).toBe(pinned);
      expect(entry().lastSeen).not.toBe(0);
      // The previous table names another backend: hinted there, and the entry (whose backend is down and not
      // hinted) rewritten to the new choice.
      pin();
      await lb.dp.installPreviousTable(vipId, new Uint32Array(251).fill(other!));
      before = await counters();
      expectGue(input, vipId, anyBackendAddr(other!));
      d = delta(await counters(), before);
      expect(d).toMatchObject({ ct_reselect: 1, hint_sent: 1, ct_insert: 1 });
      expect(entry().backendId).toBe(p.id);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
      await setBackendState(lb, pinned!, 'up');
      lb.dp.maps.conntrack.delete(key);
      await lb.dp.configure(cfg);
    }
  });

  it('stateless VIPs never read nor write the connection table', async () => {
    const vipId = 21;
    const sport = 48000;
    const input = tcpTo(vipId, sport, TCP_FLAGS.ACK);
    const p = predict(lb, vipId, flowOf(input));
    // An entry naming another backend is ignored (a stateful VIP would follow it).
    const other = [31, 32, 33].find((b) => b !== p.id)!;
    const key = encodeFlowKey({ source: C4, sourcePort: sport, destination: '10.0.1.11', destinationPort: 80, proto: 6 });
    lb.dp.maps.conntrack.update(key, encodeCtValue({ backendId: other, vipId, hash: p.hash, lastSeen: 0 }));
    const ctBefore = (await lb.dp.conntrack()).length;
    const before = await counters();
    for (let i = 0; i < 50; i++) {
      expectGue(tcpTo(vipId, sport + i, TCP_FLAGS.SYN), vipId, null);
      expectGue(tcpTo(vipId, sport + i, TCP_FLAGS.ACK), vipId, null);
    }
    const d = delta(await counters(), before);
    expect(d.stateless_forward).toBe(100);
    for (const c of ['ct_hit', 'ct_miss', 'ct_insert', 'ct_reselect', 'ct_expired']) expect(d[c]).toBeUndefined();
    expect((await lb.dp.conntrack()).length).toBe(ctBefore);
    lb.dp.maps.conntrack.delete(key);
  });

  it('a mixed VIP: an IPIP choice carries no hint, and an IPIP previous owner is never hinted', async () => {
    const vipId = 26; // members 31, 32 (GUE) and 35 (IPIP)
    const table = lb.tables.get(vipId)!;
    const prevAll35 = new Uint32Array(251).fill(35);
    await lb.dp.installPreviousTable(vipId, prevAll35);
    try {
      let gue = 0;
      let ipip = 0;
      for (let sport = 49000; sport < 49040; sport++) {
        const input = tcpTo(vipId, sport, TCP_FLAGS.ACK);
        const owner = table[hashOf(input) % 251]!;
        const r = run(input);
        expect(r.verdictName).toBe('TX');
        const out = parseFrame(r.data!).ip!;
        if (owner === 35) {
          expect(out.proto).toBe(PROTO.IPIP);
          ipip++;
        } else {
          expectGue(input, vipId, null);
          gue++;
        }
      }
      expect(gue).toBeGreaterThan(0);
      expect(ipip).toBeGreaterThan(0);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
  });

  it('an unset (deleted) previous owner is not hinted', async () => {
    const vipId = 21;
    await lb.dp.installPreviousTable(vipId, new Uint32Array(251).fill(39)); // id 39: never set
    try {
      for (let sport = 49100; sport < 49110; sport++) expectGue(tcpTo(vipId, sport, TCP_FLAGS.ACK), vipId, null);
    } finally {
      await lb.dp.installPreviousTable(vipId, null);
    }
  });
});

describePrivileged('GUE: every truncation of a GUE-bound frame passes or drops untouched', () => {
  let lb: Lb;
  beforeAll(async () => {
    lb = await setupLb();
    await addGue(lb);
    for (const id of [21, 22, 23, 24]) {
      const members = GUE_VIPS.find((v) => v.spec.id === id)!.members;
      await lb.dp.installPreviousTable(id, simpleTable(31, [...members].reverse(), id));
    }
  });
  afterAll(() => lb?.dp.close());

  const cases: [string, Buffer][] = [
    ['v4 in v4 ACK', tcpTo(21, 50000, TCP_FLAGS.ACK, Buffer.alloc(20, 1))],
    ['v6 in v6 ACK', tcpTo(22, 50001, TCP_FLAGS.ACK, Buffer.alloc(20, 1))],
    ['v6 in v4 ACK', tcpTo(23, 50002, TCP_FLAGS.ACK)],
    ['v4 in v6 ACK', tcpTo(24, 50003, TCP_FLAGS.ACK)],
    ['v4 UDP', frame({ eth, ip: { src: C4, dst: '10.0.1.15' }, l4: { type: 'udp', sport: 1, dport: 2, payload: Buffer.alloc(9) } })],
  ];

  it.each(cases)('%s', (_n, pkt) => {
    const full = lb.dp.program.testRun({ data: pkt });
    expect(full.verdictName).toBe('TX');
    let tried = 0;
    for (let len = 14; len < pkt.length; len++) {
      const cut = Buffer.from(pkt.subarray(0, len));
      const r = lb.dp.program.testRun({ data: cut });
      // A cut frame is inconsistent with its IP length: never forwarded, never modified.
      expect({ len, verdict: r.verdictName }).toEqual({ len, verdict: r.verdictName === 'PASS' ? 'PASS' : 'DROP' });
      if (r.verdictName === 'PASS') expect(r.data!.equals(cut)).toBe(true);
      tried++;
    }
    expect(tried).toBe(pkt.length - 14);
  });
});
