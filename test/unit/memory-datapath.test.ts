// MemoryDatapath: the kernel invariants it enforces and the flow simulation (conntrack, drain, down).
import { MemoryDatapath, NO_BACKEND_ID } from '../../src/datapath/memory';
import type { VipSpec } from '../../src/datapath/types';
import { NO_BACKEND_ID as RECONCILE_NO_BACKEND_ID } from '../../src/reconcile';

const key = { address: '10.0.0.10', port: 80, protocol: 'tcp' as const };
const vip = (over: Partial<VipSpec> = {}): VipSpec => ({
  key,
  id: 3,
  flags: { sourceHash: false, noConntrack: false },
  tableSize: 7,
  ...over,
});

async function withTable(dp: MemoryDatapath, ids: number[]): Promise<void> {
  for (const id of ids) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
  await dp.upsertVip(vip());
  await dp.installTable(
    3,
    Uint32Array.from({ length: 7 }, (_, s) => ids[s % ids.length]!),
  );
}

describe('MemoryDatapath invariants', () => {
  it('shares the no-backend id with reconcile', () => {
    expect(NO_BACKEND_ID).toBe(RECONCILE_NO_BACKEND_ID);
  });

  it('stores and lists VIPs, backends, tables and config as copies', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1, 2]);
    const t = (await dp.readTable(3))!;
    expect(Array.from(t)).toEqual([1, 2, 1, 2, 1, 2, 1]);
    t[0] = 9;
    expect((await dp.readTable(3))![0]).toBe(1);
    expect(await dp.listVips()).toEqual([vip()]);
    expect((await dp.listBackends()).map((b) => b.id)).toEqual([1, 2]);
    expect(await dp.readConfig()).toBeNull();
    const cfg = {
      ownMac: '02:00:00:00:00:01',
      nextHopMac: '02:00:00:00:00:02',
      encapSourceV4: null,
      encapSourceV6: null,
      mtu: 1500,
    };
    await dp.configure(cfg);
    expect(await dp.readConfig()).toEqual(cfg);
    expect(dp.calls.map((c) => c.method)).toEqual([
      'upsertBackend',
      'upsertBackend',
      'upsertVip',
      'installTable',
      'configure',
    ]);
  });

  it('rejects tables for missing VIPs, of the wrong length, or naming unknown backends', async () => {
    const dp = new MemoryDatapath();
    await expect(dp.installTable(3, new Uint32Array(7))).rejects.toThrow('vipId: VIP 3 does not exist');
    await dp.upsertVip(vip());
    await expect(dp.installTable(3, new Uint32Array(5))).rejects.toThrow(
      "table: length 5 is not the VIP's tableSize 7",
    );
    await expect(dp.installTable(3, new Uint32Array(7).fill(4))).rejects.toThrow(
      'table: backend 4 does not exist',
    );
    await dp.installTable(3, new Uint32Array(7));
    expect(await dp.readTable(3)).toEqual(new Uint32Array(7));
  });

  it('refuses to delete a backend a table still names, and frees it once the table moves on', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1, 2]);
    await expect(dp.deleteBackend(2)).rejects.toThrow('id: backend 2 is still in 1 Maglev table(s)');
    await dp.installTable(3, new Uint32Array(7).fill(1));
    await dp.deleteBackend(2);
    await expect(dp.deleteBackend(2)).rejects.toThrow('id: backend 2 does not exist');
    await dp.deleteVip(key);
    await dp.deleteBackend(1);
    expect(await dp.listBackends()).toEqual([]);
  });

  it('validates ids, addresses, states, keys and config', async () => {
    const dp = new MemoryDatapath({ maxVips: 4, maxBackends: 8 });
    await expect(dp.upsertBackend({ id: 0, address: '10.1.0.1', state: 'up' })).rejects.toThrow(
      'backend.id: 0 is outside 1..7',
    );
    await expect(dp.upsertBackend({ id: 8, address: '10.1.0.1', state: 'up' })).rejects.toThrow(
      'backend.id: 8',
    );
    await expect(dp.upsertBackend({ id: 1, address: '10.1.0.300', state: 'up' })).rejects.toThrow(
      'backend.address: "10.1.0.300" is not an IP address',
    );
    await expect(dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'gone' as 'up' })).rejects.toThrow(
      'backend.state: "gone"',
    );
    await expect(dp.upsertVip(vip({ id: 4 }))).rejects.toThrow('vip.id: 4 is outside 0..3');
    await expect(dp.upsertVip(vip({ key: { ...key, port: 70000 } }))).rejects.toThrow('vip.key.port: 70000');
    await dp.upsertVip(vip());
    await expect(dp.upsertVip(vip({ key: { ...key, port: 81 } }))).rejects.toThrow(
      'vip.id: 3 is already used by 10.0.0.10:80/tcp',
    );
    await expect(dp.deleteVip({ ...key, port: 81 })).rejects.toThrow(
      'key: VIP 10.0.0.10:81/tcp does not exist',
    );
    await expect(
      dp.configure({
        ownMac: 'x',
        nextHopMac: '02:00:00:00:00:02',
        encapSourceV4: null,
        encapSourceV6: null,
        mtu: 1500,
      }),
    ).rejects.toThrow('ownMac: "x" is not a MAC address');
  });

  it('drops a table when its VIP changes size or id', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1]);
    await dp.upsertVip(vip({ tableSize: 11 }));
    expect(await dp.readTable(3)).toBeNull();
    await dp.installTable(3, new Uint32Array(11).fill(1));
    await dp.upsertVip(vip({ id: 5, tableSize: 11 }));
    expect(await dp.readTable(3)).toBeNull();
    await expect(dp.deleteBackend(1)).resolves.toBeUndefined();
  });

  it('fails the next call on demand, once', async () => {
    const dp = new MemoryDatapath();
    dp.failNext('listVips', new Error('EPERM'));
    await expect(dp.listVips()).rejects.toThrow('EPERM');
    await expect(dp.listVips()).resolves.toEqual([]);
  });
});

describe('MemoryDatapath.forward', () => {
  const flows = Array.from({ length: 400 }, (_, i) => ({
    vip: key,
    source: `192.0.2.${i % 250}`,
    sourcePort: 1000 + i,
  }));

  it('passes non-VIP traffic and drops when the VIP has no table or no usable backend', async () => {
    const dp = new MemoryDatapath();
    expect(dp.forward(flows[0]!)).toEqual({ kind: 'pass', reason: 'no-vip' });
    await dp.upsertVip(vip());
    expect(dp.forward(flows[0]!)).toEqual({ kind: 'drop', reason: 'no-table' });
    await dp.installTable(3, new Uint32Array(7));
    expect(dp.forward(flows[0]!)).toEqual({ kind: 'drop', reason: 'no-backend' });
    const c = await dp.counters();
    // Not SYNs: both VIP packets looked the connection table up first, as the kernel does (ct_miss).
    expect(c.global).toEqual({ pass_not_vip: 1n, ct_miss: 2n, drop_no_table: 1n, drop_no_backend: 1n });
    expect(c.vips.get(3)?.packets).toBe(2n);
    // Without backends' traffic (what /metrics reads by default): the rest as before, no backend read.
    const lean = await dp.counters({ backends: false });
    expect(lean.global).toEqual(c.global);
    expect(lean.vips).toEqual(c.vips);
    expect(lean.backends.size).toBe(0);
  });

  it('keeps established flows on a draining backend, sends new flows elsewhere, moves flows of a down backend', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1, 2, 3]);
    const first = flows.map((f) => dp.forward(f));
    expect(first.every((v) => v.kind === 'forward' && !v.fromConntrack)).toBe(true);
    const on2 = flows.filter((_, i) => (first[i] as { backendId: number }).backendId === 2);
    expect(on2.length).toBeGreaterThan(50);

    await dp.upsertBackend({ id: 2, address: '10.1.0.2', state: 'draining' });
    for (const f of on2)
      expect(dp.forward(f)).toEqual({ kind: 'forward', backendId: 2, fromConntrack: true });
    const fresh = flows.map((f) => ({ ...f, sourcePort: f.sourcePort + 10000 }));
    expect(fresh.every((f) => (dp.forward(f) as { backendId: number }).backendId !== 2)).toBe(true);

    await dp.upsertBackend({ id: 2, address: '10.1.0.2', state: 'down' });
    for (const f of on2) {
      const v = dp.forward(f);
      expect(v.kind === 'forward' && v.backendId !== 2 && !v.fromConntrack).toBe(true);
    }
    // Flows of the other backends kept their backend.
    flows.forEach((f, i) => {
      const was = (first[i] as { backendId: number }).backendId;
      if (was !== 2) expect(dp.forward(f)).toEqual({ kind: 'forward', backendId: was, fromConntrack: true });
    });
    expect((await dp.conntrack()).length).toBe(flows.length * 2);
    expect((await dp.conntrack(5)).length).toBe(5);
  });

  it('hashes on the source only with sourceHash, and keeps no entries with noConntrack', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1, 2, 3]);
    await dp.upsertVip(vip({ flags: { sourceHash: true, noConntrack: true } }));
    await dp.installTable(
      3,
      Uint32Array.from({ length: 7 }, (_, s) => [1, 2, 3][s % 3]!),
    );
    const chosen = new Set(
      Array.from(
        { length: 50 },
        (_, p) =>
          (dp.forward({ vip: key, source: '192.0.2.7', sourcePort: p }) as { backendId: number }).backendId,
      ),
    );
    expect(chosen.size).toBe(1);
    expect(await dp.conntrack()).toEqual([]);
  });
});

describe('MemoryDatapath table storage', () => {
  it('reads back exactly what was installed at 1, 2 and 4 bytes per slot', async () => {
    // 256 distinct ids fit 1 byte per slot, 300 need 2, 65537 need 4.
    for (const distinct of [1, 256, 300, 65537]) {
      const size = Math.max(distinct, 7);
      const dp = new MemoryDatapath({ maxBackends: 70000 });
      for (let id = 1; id <= distinct; id++)
        await dp.upsertBackend({ id, address: `10.${id >> 16}.${(id >> 8) & 255}.${id & 255}`, state: 'up' });
      await dp.upsertVip(vip({ tableSize: size }));
      // Slot s holds id (s * 7919 mod distinct) + 1: every id appears, in a scattered order.
      const table = Uint32Array.from({ length: size }, (_, s) => ((s * 7919) % distinct) + 1);
      await dp.installTable(3, table);
      expect(await dp.readTable(3)).toEqual(table);
      const flow = dp.forward({ vip: key, source: '192.0.2.1', sourcePort: 1000, syn: true });
      expect(flow).toMatchObject({ kind: 'forward', fromConntrack: false });
      expect(table).toContain((flow as { backendId: number }).backendId);
    }
  });
});

describe('MemoryDatapath.forward: connection-table entries as the kernel keeps them', () => {
  it("re-selects an entry of another VIP (recycled ids): one entry per flow, now the new VIP's", async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1, 2, 3]);
    const flow = { vip: key, source: '192.0.2.9', sourcePort: 4321 };
    const first = dp.forward(flow) as { backendId: number };
    expect([1, 2, 3]).toContain(first.backendId);
    // The VIP is removed and the same address:port comes back under another id, with other backends; the
    // flow's entry (written for id 3) names a backend that is still up.
    await dp.deleteVip(key);
    await dp.upsertBackend({ id: 4, address: '10.1.0.4', state: 'up' });
    await dp.upsertVip(vip({ id: 5 }));
    await dp.installTable(5, new Uint32Array(7).fill(4));
    expect(dp.forward(flow)).toEqual({ kind: 'forward', backendId: 4, fromConntrack: false });
    expect((await dp.counters()).global.ct_reselect).toBe(1n);
    expect(await dp.conntrack()).toEqual([expect.objectContaining({ source: '192.0.2.9', backendId: 4 })]);
    expect(dp.forward(flow)).toEqual({ kind: 'forward', backendId: 4, fromConntrack: true });
  });

  it('a SYN is chosen by Maglev without reading the entry, and rewrites it', async () => {
    const dp = new MemoryDatapath();
    await withTable(dp, [1]);
    const flow = { vip: key, source: '192.0.2.9', sourcePort: 4321 };
    expect(dp.forward(flow)).toMatchObject({ backendId: 1, fromConntrack: false });
    await dp.upsertBackend({ id: 2, address: '10.1.0.2', state: 'up' });
    await dp.installTable(3, new Uint32Array(7).fill(2));
    expect(dp.forward(flow)).toEqual({ kind: 'forward', backendId: 1, fromConntrack: true });
    expect(dp.forward({ ...flow, syn: true })).toMatchObject({ backendId: 2, fromConntrack: false });
    expect(dp.forward(flow)).toEqual({ kind: 'forward', backendId: 2, fromConntrack: true });
    expect((await dp.counters()).global.ct_reselect).toBeUndefined();
  });
});

describe('MemoryDatapath: GUE, previous tables, stateless VIPs (issue 15)', () => {
  const gueVip = (flags: Partial<VipSpec['flags']> = {}): VipSpec =>
    vip({ flags: { sourceHash: false, noConntrack: false, ...flags } });

  async function gueSetup(flags: Partial<VipSpec['flags']> = {}): Promise<MemoryDatapath> {
    const dp = new MemoryDatapath();
    for (const id of [1, 2, 3])
      await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up', encap: 'gue' });
    await dp.upsertBackend({ id: 4, address: '10.1.0.4', state: 'up' });
    await dp.upsertVip(gueVip(flags));
    await dp.installTable(3, Uint32Array.from([1, 2, 3, 1, 2, 3, 1]));
    return dp;
  }
  const flowFrom = (sourcePort: number, syn = false) => ({ vip: key, source: '192.0.2.1', sourcePort, syn });

  it('lists encap only for gue backends and the stateless flag only when set', async () => {
    const dp = await gueSetup({ stateless: true });
    expect((await dp.listBackends()).find((b) => b.id === 1)).toEqual({
      id: 1,
      address: '10.1.0.1',
      state: 'up',
      encap: 'gue',
    });
    expect((await dp.listBackends()).find((b) => b.id === 4)).toEqual({
      id: 4,
      address: '10.1.0.4',
      state: 'up',
    });
    expect((await dp.listVips())[0]!.flags).toEqual({
      sourceHash: false,
      noConntrack: false,
      stateless: true,
    });
    await expect(
      dp.upsertBackend({ id: 5, address: '10.1.0.5', state: 'up', encap: 'vxlan' as never }),
    ).rejects.toThrow('backend.encap: "vxlan" is not ipip or gue');
    await expect(
      dp.configure({
        ownMac: '02:00:00:00:00:01',
        nextHopMac: '02:00:00:00:00:02',
        encapSourceV4: null,
        encapSourceV6: null,
        mtu: 1500,
        guePort: 0,
      }),
    ).rejects.toThrow('guePort: 0 is not a port in 1..65535');
  });

  it('installs, reads, clears previous tables; a deleted or re-keyed VIP loses its previous table', async () => {
    const dp = await gueSetup();
    await expect(dp.installPreviousTable(9, new Uint32Array(3))).rejects.toThrow(
      'vipId: VIP 9 does not exist',
    );
    await expect(dp.installPreviousTable(3, new Uint32Array(0))).rejects.toThrow('at least 1 slot');
    await dp.installPreviousTable(3, Uint32Array.from([2, 2, 9])); // own size; id 9 need not exist
    expect(Array.from((await dp.readPreviousTable(3))!)).toEqual([2, 2, 9]);
    expect(
      await dp.installPreviousTables([
        { vipId: 3, table: null },
        { vipId: 8, table: null },
      ]),
    ).toEqual([null, expect.objectContaining({ message: 'vipId: VIP 8 does not exist' })]);
    expect(await dp.readPreviousTable(3)).toBeNull();
    await dp.installPreviousTable(3, Uint32Array.from([2]));
    await dp.upsertVip({ ...gueVip(), id: 5 });
    expect(await dp.readPreviousTable(3)).toBeNull();
    await dp.installPreviousTable(5, Uint32Array.from([2]));
    await dp.deleteVip(key);
    await dp.upsertVip({ ...gueVip(), id: 5 });
    expect(await dp.readPreviousTable(5)).toBeNull();
  });

  it('a non-SYN TCP packet carries the previous owner when it differs; SYNs and conntrack hits carry none', async () => {
    const dp = await gueSetup({ stateless: true });
    await dp.installPreviousTable(3, Uint32Array.from([2]));
    let hinted = 0;
    let plain = 0;
    for (let p = 1000; p < 1100; p++) {
      const v = dp.forward(flowFrom(p));
      if (v.kind !== 'forward') throw new Error('not forwarded');
      if (v.backendId === 2) {
        expect(v.hint).toBeUndefined();
        plain++;
      } else {
        expect(v.hint).toEqual({ backendId: 2, address: '10.1.0.2', skipped: false });
        hinted++;
      }
      expect(dp.forward(flowFrom(p, true))).not.toHaveProperty('hint');
    }
    expect(hinted).toBeGreaterThan(0);
    expect(plain).toBeGreaterThan(0);
    const g = (await dp.counters()).global;
    expect(g.hint_sent).toBe(BigInt(hinted));
    expect(g.stateless_forward).toBe(200n);
    expect(g.ct_miss).toBeUndefined();
    expect(await dp.conntrack()).toEqual([]);
  });

  it('a skipped draining owner is the hint, a down one never; an IPIP owner or choice never is', async () => {
    const dp = await gueSetup({ stateless: true });
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'down', encap: 'gue' });
    for (let p = 2000; p < 2100; p++) expect(dp.forward(flowFrom(p))).not.toHaveProperty('hint');
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'draining', encap: 'gue' });
    const seen = new Set<string>();
    for (let p = 2000; p < 2100; p++) {
      const v = dp.forward(flowFrom(p));
      if (v.kind !== 'forward') throw new Error('not forwarded');
      expect(v.backendId).not.toBe(1);
      if (v.hint) seen.add(`${v.hint.backendId}/${v.hint.skipped}`);
    }
    expect([...seen]).toEqual(['1/true']);
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'draining' }); // now IPIP
    for (let p = 2000; p < 2100; p++) expect(dp.forward(flowFrom(p))).not.toHaveProperty('hint');
  });

  it('a previous table with an id at or above PEAK_SLOT_F_MOVED is refused, as by KernelDatapath', async () => {
    const dp = await gueSetup();
    await expect(dp.installPreviousTable(3, Uint32Array.from([2, 2 ** 31 + 1]))).rejects.toThrow(
      'table: backend ids must be below 2147483648 (got 2147483649)',
    );
  });

  it('conntrack VIP: a hinted miss is not recorded, an unhinted one is', async () => {
    const dp = await gueSetup();
    await dp.installPreviousTable(3, Uint32Array.from([2]));
    for (let p = 3000; p < 3050; p++) {
      const v = dp.forward(flowFrom(p));
      const again = dp.forward(flowFrom(p));
      if (v.kind !== 'forward' || again.kind !== 'forward') throw new Error('not forwarded');
      expect(again.fromConntrack).toBe(v.hint === undefined);
      expect(again.hint).toEqual(v.hint);
    }
  });
});
