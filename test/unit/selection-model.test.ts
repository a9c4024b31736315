// The one TS model of backend selection (flowhash.ts selectBackend over maglev.ts probeForward): its rules, its
// bound (PEAK_MAX_PROBES from the object's BTF), and MemoryDatapath choosing through it with the kernel's hash.
// test/bpf/selection-parity.test.ts runs the same kind of flows through the kernel program.
import { counterName, sharedContract } from '../../src/datapath/contract';
import {
  flowHash,
  predictBackend,
  predictSelect,
  SelectCounter,
  SelectInput,
  selectBackend,
  sourceHash,
} from '../../src/datapath/flowhash';
import { MemoryDatapath } from '../../src/datapath/memory';
import type { VipSpec } from '../../src/datapath/types';
import { NO_BACKEND, probeBackend, probeForward } from '../../src/maglev';

const PROBES = sharedContract().maxProbes;

describe('probeForward', () => {
  const table = [5, 0, 0, 7, 9];
  const at = (s: number) => table[s]!;
  const usable = (id: number) => id !== 0;

  it('takes the first usable entry from the start slot on, wrapping, within `probes` slots', () => {
    const o = { size: table.length, entry: at, usable, probes: 3 };
    expect(probeForward({ ...o, start: 0 })).toBe(5);
    expect(probeForward({ ...o, start: 1 })).toBe(7);
    expect(probeForward({ ...o, start: 4 })).toBe(9);
    expect(probeForward({ ...o, start: 6 })).toBe(7); // start is taken mod size
    expect(probeForward({ ...o, start: 1, probes: 2 })).toBeNull();
    expect(probeForward({ ...o, start: 0, usable: () => false, probes: 100 })).toBeNull();
    expect(probeForward({ ...o, size: 0, start: 0 })).toBeNull();
  });

  it('probeBackend (indices of buildTable) is the same loop', () => {
    const idx = Uint32Array.from([0, NO_BACKEND, 1, 2, 1]);
    const skipped = (i: number) => i === 1;
    for (let slot = 0; slot < 10; slot++)
      for (const probeLimit of [1, 2, 3]) {
        const want = probeForward({
          size: idx.length,
          entry: (s) => idx[s]!,
          start: slot,
          probes: probeLimit,
          usable: (b) => b !== NO_BACKEND && !skipped(b),
        });
        expect(probeBackend({ table: idx, skipped, probeLimit }, slot)).toBe(want ?? NO_BACKEND);
      }
  });
});

describe('predictBackend probes PEAK_MAX_PROBES slots, as the object says', () => {
  it('the bound is a small positive number read from BTF', () => {
    expect(PROBES).toBeGreaterThan(1);
    expect(PROBES).toBeLessThan(64);
  });

  it('finds a usable backend PEAK_MAX_PROBES - 1 slots ahead, and none PEAK_MAX_PROBES ahead', () => {
    const size = 3 * PROBES + 1;
    const reach = (gap: number) => {
      const table = new Uint32Array(size).fill(1);
      table[gap] = 2;
      return predictBackend({ table, hash: size * 1000, usable: (id) => id === 2 }); // hash % size = 0
    };
    expect(reach(PROBES - 1)).toBe(2);
    expect(reach(PROBES)).toBeNull();
  });

  it('a compact table view reads the same as the array', () => {
    const table = Uint32Array.from({ length: 31 }, (_, s) => (s * 7) % 5);
    const view = { size: table.length, entry: (s: number) => table[s]! };
    for (let hash = 0; hash < 200; hash += 3) {
      const usable = (id: number) => id >= 2;
      expect(predictBackend({ table: view, hash, usable })).toBe(predictBackend({ table, hash, usable }));
    }
  });
});

describe('selectBackend: the datapath decision and its counters (bpf/select.h)', () => {
  const table = Uint32Array.from([1, 2, 3, 1, 2, 3, 1]);
  const base: SelectInput = {
    vipId: 3,
    table,
    hash: 1, // slot 1: backend 2
    usable: (id) => id !== 9 && id !== 4,
    keepsFlows: (id) => id !== 9,
    readConntrack: true,
    recordConntrack: true,
    conntrack: null,
  };
  const cases: {
    name: string;
    input: Partial<SelectInput>;
    backendId: number | null;
    from: 'conntrack' | 'maglev';
    counters: SelectCounter[];
    recorded: boolean;
  }[] = [
    { name: 'miss: Maglev, recorded', input: {}, backendId: 2, from: 'maglev', counters: ['ct_miss', 'ct_insert'], recorded: true },
    { name: 'hit of this VIP', input: { conntrack: { backendId: 3, vipId: 3 } }, backendId: 3, from: 'conntrack', counters: ['ct_hit'], recorded: false },
    { name: 'hit on a draining backend keeps it', input: { conntrack: { backendId: 4, vipId: 3 } }, backendId: 4, from: 'conntrack', counters: ['ct_hit'], recorded: false },
    { name: "another VIP's entry is re-selected", input: { conntrack: { backendId: 3, vipId: 4 } }, backendId: 2, from: 'maglev', counters: ['ct_reselect', 'ct_insert'], recorded: true },
    { name: 'a backend that may not keep flows is re-selected', input: { conntrack: { backendId: 9, vipId: 3 } }, backendId: 2, from: 'maglev', counters: ['ct_reselect', 'ct_insert'], recorded: true },
    { name: 'an expired entry', input: { conntrack: { backendId: 3, vipId: 3, expired: true } }, backendId: 2, from: 'maglev', counters: ['ct_expired', 'ct_insert'], recorded: true },
    { name: 'SYN: the entry is not read', input: { readConntrack: false, conntrack: { backendId: 3, vipId: 3 } }, backendId: 2, from: 'maglev', counters: ['ct_insert'], recorded: true },
    { name: 'no-conntrack VIP: neither read nor written', input: { readConntrack: false, recordConntrack: false }, backendId: 2, from: 'maglev', counters: [], recorded: false },
    { name: 'ICMP error: read, not written', input: { recordConntrack: false }, backendId: 2, from: 'maglev', counters: ['ct_miss'], recorded: false },
    { name: 'probing past an unusable slot', input: { hash: 1, usable: (id) => id === 1 }, backendId: 1, from: 'maglev', counters: ['ct_miss', 'ct_insert'], recorded: true },
    { name: 'no table', input: { table: null }, backendId: null, from: 'maglev', counters: ['ct_miss', 'drop_no_table'], recorded: false },
    { name: 'empty table', input: { table: new Uint32Array(0) }, backendId: null, from: 'maglev', counters: ['ct_miss', 'drop_no_table'], recorded: false },
    { name: 'no usable backend', input: { usable: () => false }, backendId: null, from: 'maglev', counters: ['ct_miss', 'drop_no_backend'], recorded: false },
  ]; // prettier-ignore

  it.each(cases)('$name', (c) => {
    const r = selectBackend({ ...base, ...c.input });
    expect({ backendId: r.backendId, from: r.from, counters: r.counters, recorded: r.recorded }).toEqual({
      backendId: c.backendId,
      from: c.from,
      counters: c.counters,
      recorded: c.recorded,
    });
    expect(r.drop).toBe(
      c.counters.includes('drop_no_table')
        ? 'no-table'
        : c.counters.includes('drop_no_backend')
          ? 'no-backend'
          : null,
    );
  });

  it('every counter it names is in enum peak_counter (and a made-up name is refused)', () => {
    const named = new Set(cases.flatMap((c) => c.counters));
    expect(named.size).toBe(7);
    for (const n of named) expect(counterName(n)).toBe(n);
    expect(() => counterName('maglev_lookup')).toThrow(
      'counter: "maglev_lookup" is not in enum peak_counter',
    );
  });

  it('predictSelect is selectBackend for a packet whose fresh entry (or none) was read', () => {
    // Its input has no SYN, no-conntrack, expiry or missing table: the cases of plain packets.
    const plain = cases.filter(
      (x) =>
        x.input.readConntrack === undefined &&
        x.input.recordConntrack === undefined &&
        x.input.table !== null &&
        x.input.conntrack?.expired !== true,
    );
    expect(plain.length).toBe(8);
    for (const c of plain) {
      const o = { ...base, ...c.input };
      const r = selectBackend(o);
      expect(predictSelect({ ...o, table: o.table!, conntrack: o.conntrack })).toEqual({
        backendId: r.backendId,
        from: r.from,
        reselected: r.reselected,
      });
    }
  });
});

describe('MemoryDatapath chooses as the kernel does', () => {
  const key = { address: '10.0.0.10', port: 80, protocol: 'tcp' as const };
  const vip = (over: Partial<VipSpec> = {}): VipSpec => ({
    key,
    id: 3,
    flags: { sourceHash: false, noConntrack: false },
    tableSize: 13,
    ...over,
  });
  /** Table slot s = backend s + 1: the pick names the slot. */
  async function oneSlotEach(dp: MemoryDatapath, over: Partial<VipSpec> = {}): Promise<Uint32Array> {
    for (let id = 1; id <= 13; id++) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    await dp.upsertVip(vip(over));
    const table = Uint32Array.from({ length: 13 }, (_, s) => s + 1);
    await dp.installTable(3, table);
    return table;
  }

  it('the slot is flowHash % M of the 5-tuple (not a hash of text)', async () => {
    const dp = new MemoryDatapath();
    const table = await oneSlotEach(dp);
    let n = 0;
    for (let i = 0; i < 200; i++) {
      const source = `198.51.100.${i % 250}`;
      const sourcePort = 1024 + i * 13;
      const h = flowHash({ source, destination: key.address, sourcePort, destinationPort: 80, proto: 6 });
      expect(dp.forward({ vip: key, source, sourcePort, syn: true })).toEqual({
        kind: 'forward',
        backendId: table[h % 13],
        fromConntrack: false,
      });
      n++;
    }
    expect(n).toBe(200);
  });

  it('client persistence hashes the source only (sourceHash)', async () => {
    const dp = new MemoryDatapath();
    const table = await oneSlotEach(dp, { flags: { sourceHash: true, noConntrack: false } });
    for (let i = 0; i < 50; i++) {
      const source = `203.0.113.${i}`;
      expect(dp.forward({ vip: key, source, sourcePort: 4000 + i, syn: true })).toMatchObject({
        backendId: table[sourceHash(source) % 13],
      });
    }
  });

  it('a wildcard-port VIP hashes the packet destination port', async () => {
    const dp = new MemoryDatapath();
    const wild = { ...key, port: 0 };
    const table = await oneSlotEach(dp, { key: wild });
    const seen = new Set<number>();
    for (let dport = 1; dport <= 40; dport++) {
      const h = flowHash({
        source: '192.0.2.1',
        destination: key.address,
        sourcePort: 999,
        destinationPort: dport,
        proto: 6,
      });
      const v = dp.forward({ vip: { ...key, port: dport }, source: '192.0.2.1', sourcePort: 999, syn: true });
      expect(v).toMatchObject({ kind: 'forward', backendId: table[h % 13] });
      seen.add((v as { backendId: number }).backendId);
    }
    expect(seen.size).toBeGreaterThan(5);
    expect((await dp.conntrack()).map((e) => e.destinationPort).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
  });

  it('gives up after PEAK_MAX_PROBES unusable slots (it probed 16 before)', async () => {
    for (const downRun of [PROBES - 1, PROBES]) {
      const dp = new MemoryDatapath();
      const table = await oneSlotEach(dp);
      const source = '192.0.2.77';
      const h = flowHash({
        source,
        destination: key.address,
        sourcePort: 5555,
        destinationPort: 80,
        proto: 6,
      });
      for (let i = 0; i < downRun; i++)
        await dp.upsertBackend({
          id: table[(h + i) % 13]!,
          address: `10.1.0.${table[(h + i) % 13]}`,
          state: 'down',
        });
      const v = dp.forward({ vip: key, source, sourcePort: 5555, syn: true });
      if (downRun < PROBES)
        expect(v).toMatchObject({ kind: 'forward', backendId: table[(h + downRun) % 13] });
      else expect(v).toEqual({ kind: 'drop', reason: 'no-backend' });
    }
  });

  it('counts only enum peak_counter names: a SYN is ct_insert alone, an ACK a miss or a hit', async () => {
    const dp = new MemoryDatapath();
    await oneSlotEach(dp);
    dp.forward({ vip: key, source: '192.0.2.5', sourcePort: 7000, syn: true });
    dp.forward({ vip: key, source: '192.0.2.5', sourcePort: 7000 });
    dp.forward({ vip: key, source: '192.0.2.6', sourcePort: 7000 });
    dp.forward({ vip: { ...key, port: 81 }, source: '192.0.2.6', sourcePort: 7000 });
    const g = (await dp.counters()).global;
    expect(g).toEqual({ ct_insert: 2n, ct_hit: 1n, ct_miss: 1n, pass_not_vip: 1n });
    for (const n of Object.keys(g)) expect(sharedContract().counters).toContain(n);
  });

  it('the SYN flag counts for TCP only: a UDP packet always reads its entry', async () => {
    const dp = new MemoryDatapath();
    const udp = { ...key, protocol: 'udp' as const };
    await oneSlotEach(dp, { key: udp });
    dp.forward({ vip: udp, source: '192.0.2.5', sourcePort: 53, syn: true });
    expect(dp.forward({ vip: udp, source: '192.0.2.5', sourcePort: 53, syn: true })).toMatchObject({
      fromConntrack: true,
    });
    expect((await dp.counters()).global).toEqual({ ct_miss: 1n, ct_insert: 1n, ct_hit: 1n });
  });
});
