// KernelDatapath on the real kernel: backend deletion by reference counts (no table scans), batched table
// installs, and an adopted datapath that learns the tables it did not install.
import fc from 'fast-check';
import { rmSync } from 'node:fs';
import { KernelDatapath } from '../../src/datapath/kernel';
import { describePrivileged } from '../helpers/privileged';

const vip = (id: number) => ({
  key: { address: `10.0.0.${10 + id}`, port: 80, protocol: 'tcp' as const },
  id,
  flags: { sourceHash: false, noConntrack: false },
  tableSize: 7,
});

describePrivileged('KernelDatapath backend reference counts', () => {
  let dp: KernelDatapath;
  const root = `/sys/fs/bpf/h11-refs-${process.pid}`;
  const opened: KernelDatapath[] = [];
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 1024, vips: 64, backends: 256 } });
  });
  afterAll(() => {
    for (const d of opened) d.close();
    dp?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("keeps a backend another VIP's table names; deletes it once the last table stops naming it", async () => {
    await dp.upsertVip(vip(1));
    await dp.upsertVip(vip(2));
    for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    const res = await dp.installTables([
      { vipId: 1, table: Uint32Array.of(1, 2, 1, 2, 1, 2, 1) },
      { vipId: 2, table: Uint32Array.of(2, 3, 2, 3, 2, 3, 2) },
      { vipId: 9, table: new Uint32Array(7) },
      { vipId: 1, table: new Uint32Array(5) },
    ]);
    expect(res.map((e) => e?.message ?? null)).toEqual([
      null,
      null,
      'vipId: VIP 9 does not exist',
      "table: length 5 is not the VIP's tableSize 7",
    ]);
    expect([...(await dp.readTable(2))!]).toEqual([2, 3, 2, 3, 2, 3, 2]);
    await dp.installTable(1, new Uint32Array(7).fill(1));
    await expect(dp.deleteBackend(2)).rejects.toThrow(/backend 2 is still in the table of VIP 2/);
    await dp.deleteVip(vip(2).key);
    await dp.deleteBackend(2);
    await dp.deleteBackend(3);
    await expect(dp.deleteBackend(1)).rejects.toThrow(/backend 1 is still in the table of VIP 1/);
    expect((await dp.listBackends()).map((b) => b.id)).toEqual([1]);
    await dp.deleteVip(vip(1).key);
    await dp.deleteBackend(1);
    expect(await dp.listBackends()).toEqual([]);
    expect([...dp.maps.vip_addrs.keys()]).toEqual([]);
  });

  it('upsertBackends: one batch write; each bad entry refused on its own, the rest written as upsertBackend writes them', async () => {
    const batch = [
      { id: 20, address: '10.1.0.20', state: 'up' as const },
      { id: 0, address: '10.1.0.21', state: 'up' as const },
      { id: 21, address: 'fd00::21', state: 'draining' as const, encap: 'gue' as const },
      { id: 22, address: 'not-an-ip', state: 'up' as const },
      { id: 256, address: '10.1.0.23', state: 'up' as const },
      { id: 23, address: '10.1.0.23', state: 'down' as const },
    ];
    const res = await dp.upsertBackends(batch);
    expect(res.map((e) => (e === null ? null : e.message.split(':')[0]))).toEqual([
      null,
      'backend.id',
      null,
      expect.stringMatching(/address/),
      'backend.id',
      null,
    ]);
    // The same entries written one by one by a second datapath read back alike.
    const one = await KernelDatapath.load({ maxEntries: { conntrack: 1024, vips: 64, backends: 256 } });
    opened.push(one);
    for (const k of [0, 2, 5]) await one.upsertBackend(batch[k]!);
    const ids = new Set([20, 21, 23]);
    const mine = (await dp.listBackends()).filter((b) => ids.has(b.id));
    expect(mine).toEqual(await one.listBackends());
    expect(mine.map((b) => [b.id, b.state, b.encap ?? 'ipip'])).toEqual([
      [20, 'up', 'ipip'],
      [21, 'draining', 'gue'],
      [23, 'down', 'ipip'],
    ]);
    expect(await dp.upsertBackends([])).toEqual([]);
    for (const id of ids) await dp.deleteBackend(id);
  });

  it('an adopted datapath refuses to delete a backend a table it never installed names', async () => {
    await dp.upsertVip(vip(3));
    await dp.upsertBackend({ id: 7, address: '10.1.0.7', state: 'up' });
    await dp.upsertBackend({ id: 8, address: '10.1.0.8', state: 'up' });
    await dp.installTable(3, new Uint32Array(7).fill(7));
    dp.pin(`${root}/pins`);
    const again = KernelDatapath.adopt({ pinDir: `${root}/pins` });
    opened.push(again);
    await expect(again.deleteBackend(7)).rejects.toThrow(/backend 7 is still in the table of VIP 3/);
    await again.deleteBackend(8);
    await again.deleteVip(vip(3).key);
    await again.deleteBackend(7);
    expect(await again.listBackends()).toEqual([]);
  });

  it('refuses exactly the backends a full read of the installed tables finds (random sequences)', async () => {
    const step = fc.oneof(
      fc.record({
        kind: fc.constant('install' as const),
        vip: fc.integer({ min: 1, max: 3 }),
        slots: fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 7, maxLength: 7 }),
      }),
      fc.record({ kind: fc.constant('deleteVip' as const), vip: fc.integer({ min: 1, max: 3 }) }),
      fc.record({ kind: fc.constant('deleteBackend' as const), id: fc.integer({ min: 1, max: 6 }) }),
    );
    let deletes = 0;
    let refusals = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
        // Clean slate: no VIPs, backends 1..6.
        for (const v of await dp.listVips()) await dp.deleteVip(v.key);
        for (const b of await dp.listBackends()) await dp.deleteBackend(b.id);
        for (let id = 1; id <= 6; id++) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
        const live = new Set([1, 2, 3, 4, 5, 6]);
        const has = new Set<number>();
        // The tables installed, kept by the test (reading them back would also teach the datapath's counts).
        const tables = new Map<number, Uint32Array>();
        for (const s of steps) {
          if (s.kind === 'install') {
            if (!has.has(s.vip)) await dp.upsertVip(vip(s.vip));
            has.add(s.vip);
            const t = Uint32Array.from(s.slots, (id) => (live.has(id) ? id : 0));
            await dp.installTable(s.vip, t);
            tables.set(s.vip, t);
          } else if (s.kind === 'deleteVip') {
            if (!has.has(s.vip)) continue;
            await dp.deleteVip(vip(s.vip).key);
            has.delete(s.vip);
            tables.delete(s.vip);
          } else if (live.has(s.id)) {
            const used = [...tables.values()].some((t) => t.includes(s.id));
            if (used) {
              await expect(dp.deleteBackend(s.id)).rejects.toThrow(/still in the table of VIP/);
              refusals++;
            } else {
              await dp.deleteBackend(s.id);
              live.delete(s.id);
              deletes++;
            }
          }
        }
        // The model matches the kernel: every table it holds reads back as installed.
        for (const [id, t] of tables) expect([...(await dp.readTable(id))!]).toEqual([...t]);
      }),
      { numRuns: 40, seed: 5 },
    );
    expect(deletes).toBeGreaterThan(0);
    expect(refusals).toBeGreaterThan(0);
  });
});
