// Backend reference counts over Maglev tables (TableRefs), and the MemoryDatapath rule built on them: a
// backend that a table names cannot be deleted, the last table that names it going lets it be deleted.
import fc from 'fast-check';
import { MemoryDatapath } from '../../src/datapath/memory';
import { TableRefs, tableMembers } from '../../src/datapath/table-refs';

/** Reference count of `id` found the slow way: how many of the tables name it. */
function scanCount(tables: ReadonlyMap<number, Uint32Array>, id: number): number {
  let n = 0;
  for (const t of tables.values()) if (t.includes(id)) n++;
  return n;
}

describe('tableMembers', () => {
  it('gives the distinct ids, ascending, without 0 (no backend)', () => {
    expect([...tableMembers(Uint32Array.of(5, 5, 0, 2, 9, 2, 5, 0))]).toEqual([2, 5, 9]);
    expect([...tableMembers(new Uint32Array(7))]).toEqual([]);
    expect([...tableMembers(new Uint32Array(0))]).toEqual([]);
  });

  it('equals a Set over the table, also when ids grow the stamp array mid-table or exceed it', () => {
    // ids drawn from small, growing and huge (> 2^22: counted by a Set) ranges, mixed in one table
    const id = fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 1 << 21 }), fc.integer({ min: 0, max: 2 ** 32 - 1 })); // prettier-ignore
    fc.assert(
      fc.property(fc.array(id, { maxLength: 300 }), (ids) => {
        const want = [...new Set(ids)].filter((x) => x !== 0).sort((a, b) => a - b);
        expect([...tableMembers(Uint32Array.from(ids))]).toEqual(want);
        expect([...tableMembers(Uint32Array.from(ids))]).toEqual(want); // a second call: fresh stamp
      }),
      { numRuns: 300 },
    );
  });
});

const BIG = [2 ** 24 - 1, 2 ** 24, 2 ** 32 - 1];

describe('TableRefs', () => {
  it('counts each table once per member, replaces on set, forgets on drop', () => {
    const r = new TableRefs();
    r.set(1, tableMembers(Uint32Array.of(7, 7, 8)));
    r.set(2, tableMembers(Uint32Array.of(8, 9)));
    expect([r.count(7), r.count(8), r.count(9), r.count(10)]).toEqual([1, 2, 1, 0]);
    expect(r.holder(7)).toBe(1);
    expect(r.holder(10)).toBeNull();
    r.set(1, tableMembers(Uint32Array.of(9)));
    expect([r.count(7), r.count(8), r.count(9)]).toEqual([0, 1, 2]);
    r.drop(2);
    r.drop(2);
    expect([r.count(8), r.count(9)]).toEqual([0, 1]);
    expect(r.has(1)).toBe(true);
    expect(r.has(2)).toBe(false);
  });

  it('equals a full scan of the tables after any sequence of installs and removals', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('set' as const),
        vip: fc.integer({ min: 0, max: 5 }),
        // small ids (counted densely) and ids past 2^24 - 1 (counted sparsely)
        slots: fc.array(fc.oneof(fc.integer({ min: 0, max: 12 }), fc.constantFrom(...BIG)), {
          maxLength: 20,
        }),
      }),
      fc.record({ kind: fc.constant('drop' as const), vip: fc.integer({ min: 0, max: 5 }) }),
    );
    let checked = 0;
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), (ops) => {
        const refs = new TableRefs();
        const tables = new Map<number, Uint32Array>();
        for (const o of ops) {
          if (o.kind === 'set') {
            const t = Uint32Array.from(o.slots);
            tables.set(o.vip, t);
            refs.set(o.vip, tableMembers(t));
          } else {
            tables.delete(o.vip);
            refs.drop(o.vip);
          }
          for (const id of [...Array.from({ length: 12 }, (_, i) => i + 1), ...BIG]) {
            expect(refs.count(id)).toBe(scanCount(tables, id));
            const h = refs.holder(id);
            if (h === null) expect(scanCount(tables, id)).toBe(0);
            else expect(tables.get(h)!.includes(id)).toBe(true);
            checked++;
          }
        }
      }),
      { numRuns: 100, seed: 17 },
    );
    expect(checked).toBeGreaterThan(0);
  });
});

describe('MemoryDatapath backend deletion by reference count', () => {
  const vip = (id: number) => ({
    key: { address: `10.0.0.${10 + id}`, port: 80, protocol: 'tcp' as const },
    id,
    flags: { sourceHash: false, noConntrack: false },
    tableSize: 7,
  });

  it("keeps a backend another VIP's table names; deletes it once the last table stops naming it", async () => {
    const dp = new MemoryDatapath();
    await dp.upsertVip(vip(1));
    await dp.upsertVip(vip(2));
    for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    expect(
      await dp.installTables([
        { vipId: 1, table: Uint32Array.of(1, 2, 1, 2, 1, 2, 1) },
        { vipId: 2, table: Uint32Array.of(2, 3, 2, 3, 2, 3, 2) },
        { vipId: 9, table: new Uint32Array(7) },
      ]),
    ).toEqual([null, null, expect.objectContaining({ message: 'vipId: VIP 9 does not exist' })]);
    // VIP 1 drops backend 2; VIP 2 still names it.
    await dp.installTable(1, new Uint32Array(7).fill(1));
    await expect(dp.deleteBackend(2)).rejects.toThrow('id: backend 2 is still in 1 Maglev table(s)');
    // The last user goes (its VIP deleted): the backend can go.
    await dp.deleteVip(vip(2).key);
    await dp.deleteBackend(2);
    await dp.deleteBackend(3);
    expect((await dp.listBackends()).map((b) => b.id)).toEqual([1]);
  });

  it('refuses exactly the backends a full scan of the installed tables finds (random sequences)', async () => {
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
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
        const dp = new MemoryDatapath();
        for (let id = 1; id <= 6; id++) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
        const tables = new Map<number, Uint32Array>();
        const backends = new Set([1, 2, 3, 4, 5, 6]);
        for (const s of steps) {
          if (s.kind === 'install') {
            if (!tables.has(s.vip) && !(await dp.listVips()).some((v) => v.id === s.vip))
              await dp.upsertVip(vip(s.vip));
            // Only existing backends may be named (both datapaths refuse others).
            const t = Uint32Array.from(s.slots, (id) => (backends.has(id) ? id : 0));
            await dp.installTable(s.vip, t);
            tables.set(s.vip, t);
          } else if (s.kind === 'deleteVip') {
            if (!(await dp.listVips()).some((v) => v.id === s.vip)) continue;
            await dp.deleteVip(vip(s.vip).key);
            tables.delete(s.vip);
          } else if (backends.has(s.id)) {
            const used = scanCount(tables, s.id);
            if (used > 0) {
              await expect(dp.deleteBackend(s.id)).rejects.toThrow(`still in ${used} Maglev table(s)`);
              refusals++;
            } else {
              await dp.deleteBackend(s.id);
              backends.delete(s.id);
              deletes++;
            }
          }
        }
      }),
      { numRuns: 150, seed: 11 },
    );
    expect(deletes).toBeGreaterThan(0);
    expect(refusals).toBeGreaterThan(0);
  });
});
