// KernelDatapath on the real kernel (issue 17): a small table change is patched into the installed inner map in
// place (no swap, so no RCU wait in the change), a big one is swapped; a backend a patch took out of a table is
// zeroed only after an RCU grace period (reads see it gone at once), and its id is written again only after it.
// Privileged (BPF maps only: no interface, namespace, pin or traffic).
import { KernelDatapath, PATCH_MAX_BATCH, PATCH_MAX_SHARE } from '../../src/datapath/kernel';
import { native } from '../../src/datapath/native';
import { describePrivileged } from '../helpers/privileged';

const SIZE = 101;
const vip = (id: number) => ({
  key: { address: `10.0.7.${id}`, port: 80, protocol: 'tcp' as const },
  id,
  flags: { sourceHash: false, noConntrack: false },
  tableSize: SIZE,
});
/** ids 1..n round-robin over the table's slots. */
const roundRobin = (n: number): Uint32Array => Uint32Array.from({ length: SIZE }, (_, i) => (i % n) + 1);
const u32Key = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

describePrivileged('KernelDatapath: small table changes patched in place', () => {
  let dp: KernelDatapath;
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 1024, vips: 16, backends: 64 } });
    for (let id = 1; id <= 6; id++) await dp.upsertBackend({ id, address: `10.1.7.${id}`, state: 'up' });
  });
  afterEach(() => jest.restoreAllMocks());
  afterAll(() => dp?.close());

  it(`a change of at most 1/${PATCH_MAX_SHARE} of the slots keeps the installed map (patched); a bigger one swaps it`, async () => {
    await dp.upsertVip(vip(1));
    await dp.installTable(1, roundRobin(4));
    const first = dp.maps.maglev_tables.innerId(1);
    expect(first).not.toBeNull();
    // 20 slots of ids 1..4 become 5: patched
    const small = roundRobin(4);
    for (let i = 0; i < 20; i++) small[i * 5] = 5;
    await dp.installTable(1, small);
    expect(dp.maps.maglev_tables.innerId(1)).toBe(first);
    expect([...(await dp.readTable(1))!]).toEqual([...small]);
    // the reference counts follow the patch: 5 is named, so it cannot be deleted
    await expect(dp.deleteBackend(5)).rejects.toThrow(/backend 5 is still in the table of VIP 1/);
    // every slot changes: swapped for a new map
    const big = new Uint32Array(SIZE).fill(6);
    await dp.installTable(1, big);
    const swapped = dp.maps.maglev_tables.innerId(1);
    expect(swapped).not.toBe(first);
    expect([...(await dp.readTable(1))!]).toEqual([...big]);
    // exactly floor(101 / 4) = 25 slots changed: still patched
    const edge = big.slice();
    for (let i = 0; i < Math.floor(SIZE / PATCH_MAX_SHARE); i++) edge[i] = 1;
    await dp.installTable(1, edge);
    expect(dp.maps.maglev_tables.innerId(1)).toBe(swapped);
    expect([...(await dp.readTable(1))!]).toEqual([...edge]);
    await dp.installTable(1, roundRobin(4));
    await dp.deleteVip(vip(1).key);
  });

  it('a backend a patch took out of a table: gone for reads at once, zeroed after a grace period, its id rewritten only after it', async () => {
    // The grace period is ours to end: each wait resolves when the test says so.
    const waits: (() => void)[] = [];
    jest.spyOn(native(), 'rcuGraceAsync').mockImplementation(() => new Promise<void>((r) => waits.push(r)));
    const raw = (id: number): boolean => dp.maps.backends.lookup(u32Key(id))!.some((b) => b !== 0);
    await dp.upsertVip(vip(2));
    await dp.installTable(2, roundRobin(4));
    const inner = dp.maps.maglev_tables.innerId(2);
    // id 4's 25 slots go to id 1: a patch that unlinks 4, and starts a grace period at once
    await dp.installTable(2, Uint32Array.from(roundRobin(4), (id) => (id === 4 ? 1 : id)));
    expect(dp.maps.maglev_tables.innerId(2)).toBe(inner);
    expect(waits).toHaveLength(1);
    await dp.deleteBackend(4);
    // deleted for every reader, but its entry stays until the grace period ends (a program may hold the old slot)
    expect((await dp.listBackends()).map((b) => b.id)).not.toContain(4);
    await expect(dp.deleteBackend(4)).rejects.toThrow(/backend 4 does not exist/);
    expect(raw(4)).toBe(true);
    const old = dp.maps.backends.lookup(u32Key(4))!;
    // a new backend with the same id waits for the same grace period before its entry is written
    let reused = false;
    const reuse = dp.upsertBackend({ id: 4, address: '10.1.7.44', state: 'up' }).then(() => (reused = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(reused).toBe(false);
    expect(dp.maps.backends.lookup(u32Key(4))!.equals(old)).toBe(true);
    waits.shift()!();
    await reuse;
    // the reuse won: the entry holds the new backend, not zeros (the retiring zeroing skipped it)
    await new Promise((r) => setTimeout(r, 20));
    expect((await dp.listBackends()).find((b) => b.id === 4)?.address).toBe('10.1.7.44');
    // another unlink and delete: zeroed once its grace period ends, and not before
    await dp.installTable(2, Uint32Array.from(roundRobin(4), (id) => (id === 3 ? 2 : id === 4 ? 1 : id)));
    await dp.deleteBackend(4);
    await dp.deleteBackend(3);
    expect(raw(3)).toBe(true);
    expect(waits.length).toBeGreaterThanOrEqual(1);
    while (waits.length > 0) waits.shift()!();
    const deadline = Date.now() + 2000;
    while ((raw(3) || raw(4)) && Date.now() < deadline) {
      while (waits.length > 0) waits.shift()!();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect([raw(3), raw(4)]).toEqual([false, false]);
    expect((await dp.listBackends()).map((b) => b.id)).toEqual([1, 2, 5, 6]);
    await dp.deleteVip(vip(2).key);
  });

  it(`a call of more than ${PATCH_MAX_BATCH} tables swaps them all (built off the event loop, one grace period for the batch); up to ${PATCH_MAX_BATCH}, small changes are patched`, async () => {
    const ids = Array.from({ length: PATCH_MAX_BATCH + 1 }, (_, i) => 4 + i);
    for (const id of ids) await dp.upsertVip(vip(id));
    expect(await dp.installTables(ids.map((vipId) => ({ vipId, table: roundRobin(4) })))).toEqual(ids.map(() => null)); // prettier-ignore
    const inner = () => ids.map((id) => dp.maps.maglev_tables.innerId(id));
    const small = (n: number) => {
      const t = roundRobin(4);
      t[n] = 5;
      return t;
    };
    const before = inner();
    await dp.installTables(ids.map((vipId) => ({ vipId, table: small(1) })));
    const swapped = inner();
    swapped.forEach((id, i) => expect(id).not.toBe(before[i]));
    await dp.installTables(ids.slice(0, PATCH_MAX_BATCH).map((vipId) => ({ vipId, table: small(2) })));
    expect(inner().slice(0, PATCH_MAX_BATCH)).toEqual(swapped.slice(0, PATCH_MAX_BATCH));
    for (const id of ids.slice(0, PATCH_MAX_BATCH)) expect([...(await dp.readTable(id))!]).toEqual([...small(2)]);
    for (const id of ids) await dp.deleteVip(vip(id).key);
  });

  it('with no grace period to wait for (nohz_full), tables are swapped as before', async () => {
    const other = await KernelDatapath.load({ maxEntries: { conntrack: 1024, vips: 16, backends: 64 } });
    try {
      jest.spyOn(native(), 'rcuGraceSupported').mockReturnValue(false);
      for (let id = 1; id <= 5; id++) await other.upsertBackend({ id, address: `10.1.8.${id}`, state: 'up' });
      await other.upsertVip(vip(3));
      await other.installTable(3, roundRobin(4));
      const first = other.maps.maglev_tables.innerId(3);
      const small = roundRobin(4);
      small[0] = 5;
      await other.installTable(3, small);
      expect(other.maps.maglev_tables.innerId(3)).not.toBe(first);
      expect([...(await other.readTable(3))!]).toEqual([...small]);
    } finally {
      other.close();
    }
  });
});
