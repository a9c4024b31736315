// The kernel program and MemoryDatapath, given the same VIPs, backends and tables, pick the same backend for
// the same packets (SYN, established, re-selected, wildcard port, client persistence, no conntrack, drops)
// and move the same selection counters (enum peak_counter names) and per-backend packet counts.
import { MemoryDatapath, FlowInput, FlowVerdict } from '../../src/datapath/memory';
import type { BackendSpec, VipKey, VipSpec } from '../../src/datapath/types';
import { describePrivileged } from '../helpers/privileged';
import { frame, parseFrame, parseGue, PROTO, TCP_FLAGS } from '../helpers/packet';
import {
  addGue,
  BACKENDS,
  GUE_BACKENDS,
  GUE_VIPS,
  Lb,
  LB_MAC,
  ROUTER_MAC,
  setBackendState,
  setupLb,
  simpleTable,
  VIPS,
} from './lb-fixture';

/** The counters a selection moves; the kernel's other moves must be only rx, verdict and encapsulation ones. */
const SELECTION = ['ct_hit', 'ct_miss', 'ct_expired', 'ct_reselect', 'ct_insert', 'ct_closed', 'ct_closed_other', 'drop_no_table', 'drop_no_backend', 'pass_not_vip']; // prettier-ignore
const PLUMBING = ['rx_packets', 'xdp_tx', 'xdp_drop', 'xdp_pass', 'encap_v4', 'encap_v6'];

/** A VIP with no table installed in either datapath (drop_no_table). */
const NO_TABLE_VIP: VipSpec = {
  key: { address: '10.0.0.60', port: 80, protocol: 'tcp' },
  id: 8,
  flags: { sourceHash: false, noConntrack: false },
  tableSize: 13,
};

interface Packet {
  /** The VIP key the packet is addressed to (its port is the destination port). */
  to: VipKey;
  source: string;
  sourcePort: number;
  syn: boolean;
  /** A FIN+ACK (the client ends the connection). */
  end?: boolean;
  /** The TCP sequence number (default 1). */
  seq?: number;
}

describePrivileged('selection parity: kernel program vs MemoryDatapath', () => {
  let lb: Lb;
  const mem = new MemoryDatapath();
  const idOf = new Map(BACKENDS.map((b) => [b.address, b.id]));

  beforeAll(async () => {
    lb = await setupLb();
    for (const b of BACKENDS) await mem.upsertBackend(b);
    for (const v of VIPS) {
      await mem.upsertVip(v.spec);
      await mem.installTable(v.spec.id, lb.tables.get(v.spec.id)!);
    }
    await lb.dp.upsertVip(NO_TABLE_VIP);
    await mem.upsertVip(NO_TABLE_VIP);
  });
  afterAll(() => lb?.dp.close());

  const setState = async (id: number, state: BackendSpec['state']) => {
    await setBackendState(lb, id, state);
    await mem.upsertBackend({ ...BACKENDS.find((b) => b.id === id)!, state });
  };

  function kernelRun(p: Packet): FlowVerdict {
    const v6 = p.to.address.includes(':');
    const data = frame({
      eth: { src: ROUTER_MAC, dst: LB_MAC },
      ip: { src: p.source, dst: p.to.address },
      l4:
        p.to.protocol === 'tcp'
          ? { type: 'tcp', sport: p.sourcePort, dport: p.to.port, seq: p.seq ?? 1, flags: p.syn ? TCP_FLAGS.SYN : p.end ? TCP_FLAGS.FIN | TCP_FLAGS.ACK : TCP_FLAGS.ACK } // prettier-ignore
          : { type: 'udp', sport: p.sourcePort, dport: p.to.port, payload: Buffer.alloc(8) },
    });
    const r = lb.dp.program.testRun({ data });
    if (r.verdictName === 'PASS') return { kind: 'pass', reason: 'no-vip' };
    if (r.verdictName === 'DROP') return { kind: 'drop', reason: 'no-backend' }; // reason compared by counters
    expect(r.verdictName).toBe('TX');
    const outer = parseFrame(r.data!).ip!;
    expect(outer.proto).toBe(v6 ? PROTO.IPV6 : PROTO.IPIP);
    const id = idOf.get(outer.dst);
    if (id === undefined) throw new Error(`outer destination ${outer.dst} is no backend`);
    return { kind: 'forward', backendId: id, fromConntrack: false };
  }

  const memRun = (p: Packet): FlowVerdict => {
    const flow: FlowInput = { vip: p.to, source: p.source, sourcePort: p.sourcePort, syn: p.syn, end: p.end, seq: p.seq }; // prettier-ignore
    return mem.forward(flow);
  };

  /** Sends every packet to both; returns how many were compared, by outcome. */
  async function compare(packets: Packet[]): Promise<Record<string, number>> {
    const before = (await lb.dp.counters()).global;
    const memBefore = (await mem.counters()).global;
    const beBefore = (await lb.dp.counters()).backends;
    const memBeBefore = (await mem.counters()).backends;
    const outcomes: Record<string, number> = {};
    for (const p of packets) {
      const k = kernelRun(p);
      const m = memRun(p);
      const what = `${p.to.address}:${p.to.port}/${p.to.protocol} from ${p.source}:${p.sourcePort}${p.syn ? ' SYN' : ''}`;
      expect({ what, pick: m.kind === 'forward' ? m.backendId : m.kind }).toEqual({
        what,
        pick: k.kind === 'forward' ? k.backendId : k.kind,
      });
      outcomes[m.kind === 'forward' ? (m.fromConntrack ? 'conntrack' : 'maglev') : `${m.kind} ${m.reason}`] =
        (outcomes[m.kind === 'forward' ? (m.fromConntrack ? 'conntrack' : 'maglev') : `${m.kind} ${m.reason}`] ?? 0) + 1;
    }
    const after = (await lb.dp.counters()).global;
    const memAfter = (await mem.counters()).global;
    const moved = (a: Record<string, bigint>, b: Record<string, bigint>) =>
      Object.fromEntries(
        Object.keys({ ...a, ...b })
          .map((n) => [n, (a[n] ?? 0n) - (b[n] ?? 0n)] as const)
          .filter(([, d]) => d !== 0n),
      );
    const kMoved = moved(after, before);
    const mMoved = moved(memAfter, memBefore);
    const pick = (o: Record<string, bigint>, names: string[]) =>
      Object.fromEntries(Object.entries(o).filter(([n]) => names.includes(n)));
    expect(pick(kMoved, SELECTION)).toEqual(mMoved);
    expect(Object.keys(kMoved).filter((n) => !SELECTION.includes(n) && !PLUMBING.includes(n))).toEqual([]);
    // Per-backend packets: both count a packet sent to a backend.
    const beAfter = (await lb.dp.counters()).backends;
    const memBeAfter = (await mem.counters()).backends;
    for (const b of BACKENDS) {
      const k = (beAfter.get(b.id)?.packets ?? 0n) - (beBefore.get(b.id)?.packets ?? 0n);
      const m = (memBeAfter.get(b.id)?.packets ?? 0n) - (memBeBefore.get(b.id)?.packets ?? 0n);
      expect({ backend: b.id, packets: m }).toEqual({ backend: b.id, packets: k });
    }
    console.log(`compared ${packets.length} packets: ${JSON.stringify(outcomes)}; kernel counters ${JSON.stringify(kMoved, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`); // prettier-ignore
    return outcomes;
  }

  const vipKey = (id: number): VipKey => VIPS.find((v) => v.spec.id === id)!.spec.key;
  /** Flows of every VIP (tcp VIPs by SYN, the others by their first packet), n per VIP. */
  function flows(n: number, o: { syn: boolean; portBase: number }): Packet[] {
    const out: Packet[] = [];
    for (let i = 0; i < n; i++) {
      const v4 = `198.51.100.${(i % 200) + 1}`;
      const v6 = `2001:db8:c::${(i % 200) + 1}`;
      const sourcePort = o.portBase + i;
      out.push({ to: vipKey(1), source: v4, sourcePort, syn: o.syn });
      out.push({ to: { ...vipKey(2), port: 5000 + (i % 50) }, source: v4, sourcePort, syn: false });
      out.push({ to: vipKey(3), source: v6, sourcePort, syn: o.syn });
      out.push({ to: vipKey(4), source: v4, sourcePort, syn: o.syn });
      out.push({ to: vipKey(5), source: v4, sourcePort, syn: o.syn });
      out.push({ to: vipKey(6), source: v4, sourcePort, syn: false });
      out.push({ to: NO_TABLE_VIP.key, source: v4, sourcePort, syn: o.syn });
      out.push({ to: { address: '10.0.0.99', port: 80, protocol: 'tcp' }, source: v4, sourcePort, syn: o.syn });
    }
    return out;
  }

  it('new flows (SYN), then their established packets, pick alike', async () => {
    const n = 60;
    const first = await compare(flows(n, { syn: true, portBase: 20000 }));
    // SYNs and first packets: Maglev picks on every VIP with a table.
    expect(first.maglev).toBe(6 * n);
    expect(first['drop no-table']).toBe(n);
    expect(first['pass no-vip']).toBe(n);
    const again = await compare(flows(n, { syn: false, portBase: 20000 }));
    // Established: conntrack hits, except the no-conntrack VIP 6.
    expect(again.conntrack).toBe(5 * n);
    expect(again.maglev).toBe(n);
  });

  it('closed connections: FINs mark entries closed; after a table change the tail keeps its backend, a new connection on the tuple re-selects', async () => { // prettier-ignore
    const n = 40;
    await compare(flows(n, { syn: true, portBase: 50000 }));
    const fins = flows(n, { syn: false, portBase: 50000 }).map((p) => ({ ...p, end: true, seq: 1000 }));
    const closed = await compare(fins);
    expect(closed.conntrack).toBe(5 * n);
    // Every table changes (another deterministic layout): Maglev now picks otherwise for many flows.
    const changed = new Map<number, Uint32Array>();
    for (const v of VIPS) {
      const t = simpleTable(v.spec.tableSize, [...v.members].reverse(), v.spec.id + 1);
      changed.set(v.spec.id, t);
      await lb.dp.installTable(v.spec.id, t);
      await mem.installTable(v.spec.id, t);
    }
    try {
      const tail = await compare(flows(n, { syn: false, portBase: 50000 }).map((p) => ({ ...p, seq: 1001 })));
      expect(tail.conntrack).toBe(5 * n);
      const reused = await compare(flows(n, { syn: false, portBase: 50000 }).map((p) => ({ ...p, seq: 1000 + 2 ** 31 }))); // prettier-ignore
      // The closed entries of TCP VIPs re-select (ct_closed_other); UDP entries are never closed: still hits.
      expect(reused.maglev).toBeGreaterThanOrEqual(4 * n);
      expect(reused.conntrack).toBe(n);
    } finally {
      for (const v of VIPS) {
        await lb.dp.installTable(v.spec.id, lb.tables.get(v.spec.id)!);
        await mem.installTable(v.spec.id, lb.tables.get(v.spec.id)!);
      }
    }
    expect(changed.size).toBe(VIPS.length);
  });

  it('draining and down backends: hits stay on draining ones, down ones re-select, an all-down VIP drops', async () => {
    const n = 60;
    await compare(flows(n, { syn: true, portBase: 30000 }));
    await setState(2, 'draining');
    await setState(3, 'down');
    await setState(12, 'down');
    await setState(21, 'down'); // VIP 4's only backend
    const est = await compare(flows(n, { syn: false, portBase: 30000 }));
    expect(est.conntrack).toBeGreaterThan(0);
    expect(est.maglev).toBeGreaterThan(0);
    expect(est['drop no-backend']).toBeGreaterThanOrEqual(n);
    const fresh = await compare(flows(n, { syn: true, portBase: 40000 }));
    expect(fresh['drop no-backend']).toBeGreaterThanOrEqual(n);
    for (const id of [2, 3, 12, 21]) await setState(id, 'up');
    const back = await compare(flows(n, { syn: false, portBase: 40000 }));
    expect(back.conntrack).toBeGreaterThan(0);
  });
});

/** Selection counters of the GUE paths (hints, stateless), compared like SELECTION. */
const GUE_SELECTION = [...SELECTION, 'hint_sent', 'hint_skipped_owner', 'stateless_forward'];
const GUE_PLUMBING = [...PLUMBING, 'encap_gue'];

describePrivileged('selection parity with GUE backends: the same backend and the same hint', () => {
  let lb: Lb;
  const mem = new MemoryDatapath();
  const all = [...BACKENDS, ...GUE_BACKENDS];
  const idOf = new Map(all.map((b) => [b.address, b.id]));

  beforeAll(async () => {
    lb = await setupLb();
    await addGue(lb);
    for (const b of all) await mem.upsertBackend(b);
    for (const v of GUE_VIPS) {
      await mem.upsertVip(v.spec);
      await mem.installTable(v.spec.id, lb.tables.get(v.spec.id)!);
    }
  });
  afterAll(() => lb?.dp.close());

  const setState = async (id: number, state: BackendSpec['state']) => {
    await setBackendState(lb, id, state);
    await mem.upsertBackend({ ...all.find((b) => b.id === id)!, state });
  };
  const setPrev = async (vipId: number, t: Uint32Array | null) => {
    await lb.dp.installPreviousTable(vipId, t);
    await mem.installPreviousTable(vipId, t);
  };

  /** Kernel verdict as backend id and hint (null = none); 'drop' / 'pass' otherwise. */
  function kernelRun(p: Packet): string {
    const data = frame({
      eth: { src: ROUTER_MAC, dst: LB_MAC },
      ip: { src: p.source, dst: p.to.address },
      l4:
        p.to.protocol === 'tcp'
          ? { type: 'tcp', sport: p.sourcePort, dport: p.to.port, flags: p.syn ? TCP_FLAGS.SYN : TCP_FLAGS.ACK }
          : { type: 'udp', sport: p.sourcePort, dport: p.to.port, payload: Buffer.alloc(8) },
    });
    const r = lb.dp.program.testRun({ data });
    if (r.verdictName !== 'TX') return r.verdictName.toLowerCase();
    const outer = parseFrame(r.data!).ip!;
    const id = idOf.get(outer.dst);
    if (id === undefined) throw new Error(`outer destination ${outer.dst} is no backend`);
    if (outer.proto !== PROTO.UDP) return `${id} ipip`;
    const g = parseGue(outer.raw.subarray(outer.headerLength + 8));
    return `${id} gue hint ${g.hint === null ? '-' : idOf.get(g.hint.address)}`;
  }

  function memRun(p: Packet): string {
    const v = mem.forward({ vip: p.to, source: p.source, sourcePort: p.sourcePort, syn: p.syn });
    if (v.kind !== 'forward') return v.kind;
    const gue = all.find((b) => b.id === v.backendId)!.encap === 'gue';
    return gue ? `${v.backendId} gue hint ${v.hint?.backendId ?? '-'}` : `${v.backendId} ipip`;
  }

  async function compare(packets: Packet[]): Promise<Record<string, number>> {
    const before = (await lb.dp.counters()).global;
    const memBefore = (await mem.counters()).global;
    const kinds: Record<string, number> = {};
    for (const p of packets) {
      const what = `${p.to.address}:${p.to.port}/${p.to.protocol} from ${p.source}:${p.sourcePort}${p.syn ? ' SYN' : ''}`;
      const k = kernelRun(p);
      expect({ what, out: memRun(p) }).toEqual({ what, out: k });
      const kind = k.endsWith('hint -') ? 'gue' : k.includes('hint') ? 'gue+hint' : k.split(' ').pop()!;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
    }
    const after = (await lb.dp.counters()).global;
    const memAfter = (await mem.counters()).global;
    const moved = (a: Record<string, bigint>, b: Record<string, bigint>) =>
      Object.fromEntries(
        Object.keys({ ...a, ...b })
          .map((n) => [n, (a[n] ?? 0n) - (b[n] ?? 0n)] as const)
          .filter(([, d]) => d !== 0n),
      );
    const kMoved = moved(after, before);
    const mMoved = moved(memAfter, memBefore);
    const pick = (o: Record<string, bigint>, names: string[]) =>
      Object.fromEntries(Object.entries(o).filter(([n]) => names.includes(n)));
    expect(pick(kMoved, GUE_SELECTION)).toEqual(mMoved);
    expect(Object.keys(kMoved).filter((n) => !GUE_SELECTION.includes(n) && !GUE_PLUMBING.includes(n))).toEqual([]);
    console.log(`GUE parity: ${packets.length} packets ${JSON.stringify(kinds)}; kernel counters ${JSON.stringify(kMoved, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`); // prettier-ignore
    return kinds;
  }

  const key = (id: number): VipKey => GUE_VIPS.find((v) => v.spec.id === id)!.spec.key;
  function packets(n: number, syn: boolean, portBase: number): Packet[] {
    const out: Packet[] = [];
    for (let i = 0; i < n; i++) {
      const v4 = `198.51.100.${(i % 200) + 1}`;
      const v6 = `2001:db8:c::${(i % 200) + 1}`;
      const sourcePort = portBase + i;
      for (const id of [20, 21, 24, 26]) out.push({ to: key(id), source: v4, sourcePort, syn });
      for (const id of [22, 23]) out.push({ to: key(id), source: v6, sourcePort, syn });
      out.push({ to: { ...key(25), port: 7000 + (i % 9) }, source: v4, sourcePort, syn: false });
    }
    return out;
  }

  it('SYNs, then established packets, with previous tables, down and draining owners, conntrack entries on down backends', async () => {
    const n = 40;
    await compare(packets(n, true, 20000)); // SYNs record in VIPs 20 and 26
    for (const v of GUE_VIPS) {
      const members = [...v.members];
      await setPrev(v.spec.id, simpleTable(v.spec.id % 2 ? 31 : 251, [...members.slice(1), members[0]!], v.spec.id));
    }
    const est = await compare(packets(n, false, 20000));
    expect(est['gue+hint']).toBeGreaterThan(0);
    const fresh = await compare(packets(n, false, 21000)); // misses: hinted ones stay unrecorded
    expect(fresh['gue+hint']).toBeGreaterThan(0);
    await setState(32, 'down');
    await setState(42, 'down');
    const down = await compare([...packets(n, false, 20000), ...packets(n, false, 21000), ...packets(n, true, 22000)]);
    expect(down['gue+hint']).toBeGreaterThan(0);
    for (const v of GUE_VIPS) await setPrev(v.spec.id, null);
    // A down owner skipped by probing is never hinted; a draining one is.
    const downOnly = await compare(packets(n, false, 23000));
    expect(downOnly['gue+hint']).toBeUndefined();
    await setState(32, 'draining');
    await setState(42, 'draining');
    const skippedOnly = await compare(packets(n, false, 23000));
    expect(skippedOnly['gue+hint']).toBeGreaterThan(0);
    await setState(32, 'up');
    await setState(42, 'up');
    const back = await compare(packets(n, false, 20000));
    expect(back.gue).toBeGreaterThan(0);
  });

  it('previous tables naming the other family’s GUE backends: no hint, in both', async () => {
    const n = 40;
    await setPrev(21, new Uint32Array(31).fill(41)); // IPv4 backends now, IPv6 before
    await setPrev(24, new Uint32Array(251).fill(31)); // IPv6 backends now, IPv4 before
    await setPrev(22, simpleTable(31, [43, 41, 42], 22)); // same family: hinted
    try {
      const r = await compare(packets(n, false, 24000));
      expect(r['gue+hint']).toBeGreaterThan(0); // VIP 22's
    } finally {
      for (const id of [21, 22, 24]) await setPrev(id, null);
    }
  });

  it('conntrack entries on a down backend whose previous-table owner it is: kept, hinted on every packet', async () => {
    const n = 40;
    await compare(packets(n, true, 25000)); // VIPs 20 and 26 record
    // A change as the control plane makes it: 33 leaves the tables (previous table = the old one), and is down.
    const old = new Map([20, 26].map((id) => [id, lb.tables.get(id)!]));
    const setTable = async (id: number, t: Uint32Array) => {
      await lb.dp.installTable(id, t);
      await mem.installTable(id, t);
      lb.tables.set(id, t);
    };
    for (const [id, t] of old) {
      await setPrev(id, t);
      await setTable(id, simpleTable(251, id === 20 ? [31, 32] : [31, 35], id));
    }
    await setState(33, 'down');
    try {
      const first = await compare(packets(n, false, 25000));
      expect(first['gue+hint']).toBeGreaterThan(0);
      // the kept entries reselect and hint again; nothing else on these VIPs is hinted
      const second = await compare(packets(n, false, 25000));
      expect(second['gue+hint']).toBe(first['gue+hint']);
    } finally {
      await setState(33, 'up');
      for (const [id, t] of old) {
        await setPrev(id, null);
        await setTable(id, t);
      }
    }
  });
});
