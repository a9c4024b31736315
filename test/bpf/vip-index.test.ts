// The VIP index: the pure placement (planVipIndex, vipIndexHash) and the datapath reading it (500 VIPs,
// exact before wildcard, the `vips` hash fallback when the index says so or is missing, rebuild on delete).
import { BpfMap, MapType } from '../../src/datapath/bpf';
import { sharedContract } from '../../src/datapath/contract';
import { planVipIndex, vipIndexHash, VipIndexKey, vipIndexSeed } from '../../src/datapath/flowhash';
import { KernelDatapath } from '../../src/datapath/kernel';
import { encodeVipIndexHead, LAYOUT } from '../../src/datapath/layout';
import type { VipSpec } from '../../src/datapath/types';
import { describePrivileged } from '../helpers/privileged';
import { frame, parseFrame, TCP_FLAGS } from '../helpers/packet';

const { vipIndexSlots: VIP_INDEX_SLOTS, vipIndexProbes: VIP_INDEX_PROBES } = sharedContract();

/** Where a lookup of `k` ends in a planned index (the datapath's probe loop over the plan), or -1. */
function probe(
  keys: VipIndexKey[],
  slotOf: number[],
  seed: number,
  k: VipIndexKey,
  o: { slots?: number; probes?: number; hash?: (k: VipIndexKey, seed: number) => number } = {},
): number {
  const slots = o.slots ?? VIP_INDEX_SLOTS;
  const byslot = new Map(slotOf.map((s, i) => [s, keys[i]!]));
  const home = (o.hash ?? vipIndexHash)(k, seed) & (slots - 1);
  for (let i = 0; i < (o.probes ?? VIP_INDEX_PROBES); i++) {
    const s = (home + i) & (slots - 1);
    const at = byslot.get(s);
    if (!at) return -1;
    if (at.address === k.address && at.port === k.port && at.proto === k.proto) return s;
  }
  return -1;
}

const randomKeys = (n: number, seed: number): VipIndexKey[] => {
  let x = seed;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const out = new Map<string, VipIndexKey>();
  while (out.size < n) {
    const v6 = rnd() % 3 === 0;
    const address = v6
      ? `2001:db8:${(rnd() % 65536).toString(16)}::${(rnd() % 65536).toString(16)}`
      : `10.${rnd() % 256}.${rnd() % 256}.${rnd() % 256}`;
    const k = { address, port: rnd() % 4 === 0 ? 0 : rnd() % 65536, proto: rnd() % 2 ? 6 : 17 };
    out.set(`${k.address}|${k.port}|${k.proto}`, k);
  }
  return [...out.values()];
};

describe('VIP index planning (pure)', () => {
  it('hash: deterministic, and every input field and the seed change it', () => {
    const k = { address: '10.0.0.10', port: 80, proto: 6 };
    const h = vipIndexHash(k, 1);
    expect(vipIndexHash({ ...k }, 1)).toBe(h);
    expect(h).toBeGreaterThanOrEqual(0);
    expect(h).toBeLessThan(2 ** 32);
    for (const other of [
      vipIndexHash(k, 2),
      vipIndexHash({ ...k, address: '10.0.0.11' }, 1),
      vipIndexHash({ ...k, port: 81 }, 1),
      vipIndexHash({ ...k, proto: 17 }, 1),
      vipIndexHash({ ...k, address: '2001:db8::10' }, 1),
    ])
      expect(other).not.toBe(h);
  });

  it.each([1, 10, 500, 1024, 1536])('%i random keys: each within the probe bound, slots distinct, found', (n) => {
    const keys = randomKeys(n, n);
    const plan = planVipIndex({ keys });
    expect(plan.useHash).toBe(false);
    expect(plan.slotOf).toHaveLength(n);
    expect(new Set(plan.slotOf).size).toBe(n);
    keys.forEach((k, i) => expect(probe(keys, plan.slotOf, plan.seed, k)).toBe(plan.slotOf[i]));
    // Keys not in the index are not found (other port, other protocol).
    let missing = 0;
    for (const k of keys.slice(0, 50)) {
      const other = { ...k, port: (k.port + 1) % 65536, proto: k.proto === 6 ? 17 : 6 };
      if (keys.some((x) => x.address === other.address && x.port === other.port && x.proto === other.proto))
        continue;
      expect(probe(keys, plan.slotOf, plan.seed, other)).toBe(-1);
      missing++;
    }
    expect(missing).toBeGreaterThan(0);
  });

  it('an empty set plans an empty index', () => {
    expect(planVipIndex({ keys: [] })).toEqual({ seed: vipIndexSeed(0), useHash: false, slotOf: [] });
  });

  it('retries seeds until the keys fit; the seed sequence is fixed', () => {
    const keys = randomKeys(9, 7);
    // A hash that piles every key onto one slot under the first three seeds, and spreads them after.
    const bad = new Set([0, 1, 2].map(vipIndexSeed));
    const hash = (k: VipIndexKey, seed: number) => (bad.has(seed) ? 5 : vipIndexHash(k, seed));
    const plan = planVipIndex({ keys, hash });
    expect(plan.useHash).toBe(false);
    expect(plan.seed).toBe(vipIndexSeed(3));
    keys.forEach((k, i) => expect(probe(keys, plan.slotOf, plan.seed, k, { hash })).toBe(plan.slotOf[i]));
    expect(vipIndexSeed(3)).toBe(planVipIndex({ keys, hash }).seed);
  });

  it('falls back to the hash map when keys cannot fit or exceed half the slots', () => {
    const keys = randomKeys(9, 8);
    expect(planVipIndex({ keys, hash: () => 0, probes: 8 })).toEqual({ seed: 0, useHash: true, slotOf: [] });
    expect(planVipIndex({ keys, slots: 16 }).useHash).toBe(true);
    expect(planVipIndex({ keys: keys.slice(0, 8), slots: 16, probes: 16 }).useHash).toBe(false);
    // Capacity: 2048 keys (half the slots) do not all land within 8 probes under any of the 32 seeds.
    expect(planVipIndex({ keys: randomKeys(2048, 2048) }).useHash).toBe(true);
  });

  it('rejects bad input naming the field and value', () => {
    const k = { address: '10.0.0.1', port: 1, proto: 6 };
    expect(() => planVipIndex({ keys: [k, { ...k }] })).toThrow(/keys: 10.0.0.1 port 1 proto 6 appears twice/);
    expect(() => planVipIndex({ keys: [k], slots: 12 })).toThrow(/slots: 12 is not a power of two/);
    expect(() => planVipIndex({ keys: [k], probes: 0 })).toThrow(/probes: 0 is not a positive integer/);
    expect(() => vipIndexHash({ ...k, address: 'nope' }, 1)).toThrow(/address: "nope"/);
  });
});

describePrivileged('VIP index in the datapath', () => {
  let dp: KernelDatapath;
  const N = 500;
  const vips: VipSpec[] = [];
  const flags = { sourceHash: false, noConntrack: true };
  const backendOf = (id: number) => 1 + (id % 4);

  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    await dp.configure({
      ownMac: '02:00:00:00:01:01',
      nextHopMac: '02:00:00:00:01:fe',
      encapSourceV4: { prefix: '10.255.0.1', prefixLength: 32 },
      encapSourceV6: { prefix: 'fd00:ff::1', prefixLength: 128 },
      mtu: 1600,
    });
    for (let b = 1; b <= 4; b++) await dp.upsertBackend({ id: b, address: `10.1.0.${b}`, state: 'up' });
    for (let b = 1; b <= 4; b++) await dp.upsertBackend({ id: 10 + b, address: `fd00:1::${b}`, state: 'up' });
    // 500 VIPs: v4 and v6, TCP and UDP, exact ports and wildcards; one table each (a single backend).
    for (let id = 1; id <= N; id++) {
      const v6 = id % 5 === 0;
      const address = v6 ? `2001:db8:5::${id.toString(16)}` : `10.50.${id >> 8}.${id & 255}`;
      const spec: VipSpec = {
        key: { address, port: id % 7 === 0 ? 0 : 1000 + id, protocol: id % 2 ? 'tcp' : 'udp' },
        id,
        flags,
        tableSize: 3,
      };
      await dp.upsertVip(spec);
      await dp.installTable(id, new Uint32Array(3).fill(backendOf(id) + (v6 ? 10 : 0)));
      vips.push(spec);
    }
    // The index is rebuilt once after a burst of VIP changes (next event-loop turn); build it now.
    dp.flushVipIndex();
  }, 120000);
  afterAll(() => dp?.close());

  const packet = (address: string, port: number, protocol: 'tcp' | 'udp') =>
    frame({
      ip: { src: address.includes(':') ? '2001:db8:c::1' : '192.0.2.1', dst: address },
      l4:
        protocol === 'tcp'
          ? { type: 'tcp', sport: 40000, dport: port, flags: TCP_FLAGS.SYN }
          : { type: 'udp', sport: 40000, dport: port },
    });
  const send = (address: string, port: number, protocol: 'tcp' | 'udp') => {
    const r = dp.program.testRun({ data: packet(address, port, protocol) });
    return { verdict: r.verdictName, dst: r.verdictName === 'TX' ? parseFrame(r.data!).ip!.dst : null };
  };
  const expectedDst = (v: VipSpec) =>
    v.key.address.includes(':') ? `fd00:1::${backendOf(v.id)}` : `10.1.0.${backendOf(v.id)}`;
  const indexHead = () => {
    const inner = BpfMap.fromId(dp.maps.vip_index.innerId(0)!);
    try {
      const h = inner.lookup(Buffer.alloc(4))!;
      return { flags: h.readUInt32LE(4), keys: h.readUInt32LE(8), entries: inner.maxEntries };
    } finally {
      inner.close();
    }
  };

  it('holds every VIP: the header counts them, no hash fallback', () => {
    expect(indexHead()).toEqual({ flags: 0, keys: N, entries: VIP_INDEX_SLOTS + 1 });
  });

  it('every VIP is matched (exact and wildcard ports); other ports and protocols pass', () => {
    let passed = 0;
    for (const v of vips) {
      const port = v.key.port === 0 ? 4242 : v.key.port;
      expect(send(v.key.address, port, v.key.protocol)).toEqual({ verdict: 'TX', dst: expectedDst(v) });
      const other = v.key.protocol === 'tcp' ? 'udp' : 'tcp';
      expect(send(v.key.address, port, other).verdict).toBe('PASS');
      if (v.key.port !== 0) {
        expect(send(v.key.address, v.key.port + 1, v.key.protocol).verdict).toBe('PASS');
        passed++;
      }
    }
    expect(passed).toBeGreaterThan(N / 2);
  });

  it('an exact port wins over the wildcard of the same address', async () => {
    const wild = vips.find((v) => v.key.port === 0 && v.key.protocol === 'tcp' && !v.key.address.includes(':'))!;
    const exact: VipSpec = { key: { ...wild.key, port: 443 }, id: N + 1, flags, tableSize: 3 };
    await dp.upsertVip(exact);
    await dp.installTable(exact.id, new Uint32Array(3).fill(backendOf(wild.id) === 1 ? 2 : 1));
    const viaExact = send(wild.key.address, 443, 'tcp');
    expect(viaExact.verdict).toBe('TX');
    expect(viaExact.dst).not.toBe(expectedDst(wild));
    expect(send(wild.key.address, 444, 'tcp')).toEqual({ verdict: 'TX', dst: expectedDst(wild) });
    await dp.deleteVip(exact.key);
    expect(send(wild.key.address, 443, 'tcp')).toEqual({ verdict: 'TX', dst: expectedDst(wild) });
  });

  it('the datapath reads the index: a VIP missing from an installed index is not matched', () => {
    const v = vips[0]!;
    const inner = BpfMap.create({
      type: MapType.ARRAY,
      keySize: 4,
      valueSize: LAYOUT.peak_vip_slot.size,
      maxEntries: VIP_INDEX_SLOTS + 1,
    });
    try {
      inner.update(Buffer.alloc(4), encodeVipIndexHead({ seed: 1, useHash: false, keys: 0 }));
      dp.maps.vip_index.setInner(0, inner);
      expect(send(v.key.address, v.key.port, v.key.protocol).verdict).toBe('PASS');
      // The same empty index flagged "use the hash": the `vips` map answers.
      inner.update(Buffer.alloc(4), encodeVipIndexHead({ seed: 1, useHash: true, keys: 0 }));
      expect(send(v.key.address, v.key.port, v.key.protocol)).toEqual({ verdict: 'TX', dst: expectedDst(v) });
    } finally {
      inner.close();
    }
  });

  it('without any index the `vips` hash answers; the next VIP change installs a full index again', async () => {
    dp.flushVipIndex(); // settle a burst an earlier test may have left pending
    expect(dp.maps.vip_index.delete(Buffer.alloc(4))).toBe(true);
    expect(dp.maps.vip_index.innerId(0)).toBeNull();
    for (const v of vips.slice(0, 20)) {
      const port = v.key.port === 0 ? 7 : v.key.port;
      expect(send(v.key.address, port, v.key.protocol)).toEqual({ verdict: 'TX', dst: expectedDst(v) });
    }
    const gone = vips.pop()!;
    // The VIP leaves `vips` before the call returns (its table slot is cleared after, off the event loop: the
    // index may be rebuilt meanwhile, so the window is looked at before that wait).
    const deleting = dp.deleteVip(gone.key);
    // Until the burst is over the datapath reads `vips` (a "use the hash" index): still exact.
    expect(indexHead().flags).not.toBe(0);
    expect(send(gone.key.address, gone.key.port === 0 ? 7 : gone.key.port, gone.key.protocol).verdict).toBe('PASS');
    expect(send(vips[0]!.key.address, vips[0]!.key.port || 7, vips[0]!.key.protocol)).toEqual({
      verdict: 'TX',
      dst: expectedDst(vips[0]!),
    });
    await deleting;
    await new Promise((r) => setImmediate(r));
    expect(indexHead()).toEqual({ flags: 0, keys: N - 1, entries: VIP_INDEX_SLOTS + 1 });
    expect(send(gone.key.address, gone.key.port === 0 ? 7 : gone.key.port, gone.key.protocol).verdict).toBe('PASS');
    const v = vips[1]!;
    expect(send(v.key.address, v.key.port === 0 ? 7 : v.key.port, v.key.protocol).verdict).toBe('TX');
  });
});
