// BpfMap.updateBatchPackedAsync and deleteAsync (native mapUpdateBatchAsync / mapDeleteAsync, on a thread of the
// pool: KernelDatapath.installTables swaps Maglev tables in and clears stale previous tables with them): the values
// land, a failing entry stops the batch where the synchronous update stops it with the same error, bad arguments
// are refused before anything is queued, and neither success nor failure leaves an fd behind. Privileged (BPF maps only); no pin, interface, namespace or traffic.
import { BpfMap, MapType } from '../../src/datapath/bpf';
import { native } from '../../src/datapath/native';
import { describePrivileged } from '../helpers/privileged';
import { mapsOpenedSince, openBpfMapIds } from '../helpers/bpf-fds';

const packed = (ns: number[]): Buffer => {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((n, i) => b.writeUInt32LE(n, 4 * i));
  return b;
};
const u32Key = (n: number): Buffer => packed([n]);

const array = (maxEntries: number, valueSize = 4): BpfMap =>
  BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize, maxEntries, name: 'pk_uba_arr' });

/** An 8-slot map-in-map over `template`'s kind of inner map. */
const outerOf = (template: BpfMap): BpfMap =>
  BpfMap.create({
    type: MapType.ARRAY_OF_MAPS,
    keySize: 4,
    valueSize: 4,
    maxEntries: 8,
    name: 'pk_uba_outer',
    inner: template,
  });

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(
  p: Promise<unknown>,
): Promise<Error & { errno?: number; code?: string; op?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection, the promise resolved');
}

/** The error a call throws (fails the test when it returns). */
function thrown(f: () => unknown): Error & { errno?: number; code?: string; op?: string } {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw, the call returned');
}

describePrivileged('BpfMap.updateBatchPackedAsync', () => {
  it('writes every entry of a plain array and resolves with the count', async () => {
    const m = array(64);
    try {
      const keys = Array.from({ length: 50 }, (_, i) => i + 7);
      const done = await m.updateBatchPackedAsync(
        packed(keys),
        packed(keys.map((k) => k * 1000 + 1)),
        keys.length,
      );
      expect(done).toBe(50);
      for (let i = 0; i < 64; i++)
        expect(m.lookup(u32Key(i))!.readUInt32LE(0)).toBe(i >= 7 && i < 57 ? i * 1000 + 1 : 0);
      expect(await m.updateBatchPackedAsync(Buffer.alloc(0), Buffer.alloc(0), 0)).toBe(0);
    } finally {
      m.close();
    }
  });

  it('many batches in flight at once all land (each call holds its own buffers)', async () => {
    const m = array(256);
    try {
      // buffers made inline and not kept by the test: the native call must hold them while it runs
      const counts = await Promise.all(
        Array.from({ length: 32 }, (_, b) =>
          m.updateBatchPackedAsync(
            packed([8 * b, 8 * b + 1, 8 * b + 2, 8 * b + 3, 8 * b + 4, 8 * b + 5, 8 * b + 6, 8 * b + 7]),
            packed(Array.from({ length: 8 }, (_, j) => 0xa0000 + 8 * b + j)),
            8,
          ),
        ),
      );
      expect(counts).toEqual(Array.from({ length: 32 }, () => 8));
      for (let i = 0; i < 256; i++) expect(m.lookup(u32Key(i))!.readUInt32LE(0)).toBe(0xa0000 + i);
    } finally {
      m.close();
    }
  });

  it('swaps inner maps into a map-in-map: each slot holds the map whose fd was given', async () => {
    const template = array(4);
    const outer = outerOf(template);
    const inners = [array(4), array(4), array(4)];
    try {
      const done = await outer.updateBatchPackedAsync(packed([5, 0, 3]), packed(inners.map((m) => m.fd)), 3);
      expect(done).toBe(3);
      expect([0, 1, 2, 3, 4, 5, 6, 7].map((i) => outer.innerId(i))).toEqual([
        inners[1]!.info.id,
        null,
        null,
        inners[2]!.info.id,
        null,
        inners[0]!.info.id,
        null,
        null,
      ]);
    } finally {
      for (const m of [...inners, outer, template]) m.close();
    }
  });

  it('a refused entry stops the batch there with the error of the synchronous update (entries before it stay)', async () => {
    const template = array(4);
    const outer = outerOf(template);
    const good = [array(4), array(4), array(4)];
    // value size 8: not the template's shape, so the kernel refuses it as an inner map (EINVAL)
    const wrong = array(4, 8);
    const keys = packed([1, 2, 3, 4]);
    const values = packed([good[0]!.fd, good[1]!.fd, wrong.fd, good[2]!.fd]);
    try {
      const sync = thrown(() => outer.updateBatchPacked(keys, values, 4));
      const afterSync = [0, 1, 2, 3, 4].map((i) => outer.innerId(i));
      for (const i of [1, 2]) outer.delete(u32Key(i));
      expect([1, 2, 3, 4].map((i) => outer.innerId(i))).toEqual([null, null, null, null]);

      const async = await rejection(outer.updateBatchPackedAsync(keys, values, 4));
      expect(async.message).toBe(sync.message);
      expect(async.message).toMatch(new RegExp(`^map update batch \\(fd ${outer.fd}, 2/4 done\\): EINVAL`));
      expect([async.errno, async.code, async.op]).toEqual([sync.errno, sync.code, sync.op]);
      expect(async.code).toBe('EINVAL');
      const afterAsync = [0, 1, 2, 3, 4].map((i) => outer.innerId(i));
      expect(afterAsync).toEqual(afterSync);
      expect(afterAsync).toEqual([null, good[0]!.info.id, good[1]!.info.id, null, null]);

      // a key past the end of a plain array: E2BIG at the first entry, nothing written
      const m = array(4);
      try {
        const e = await rejection(m.updateBatchPackedAsync(packed([9, 0]), packed([1, 2]), 2));
        expect(e.message).toMatch(new RegExp(`^map update batch \\(fd ${m.fd}, 0/2 done\\): E2BIG`));
        expect(m.lookup(u32Key(0))!.readUInt32LE(0)).toBe(0);
      } finally {
        m.close();
      }
    } finally {
      for (const m of [...good, wrong, outer, template]) m.close();
    }
  });

  it('refuses bad arguments with the messages of the synchronous update, before any call is queued', async () => {
    const m = array(4);
    try {
      const cases: [Buffer, Buffer, number][] = [
        [packed([0, 1]), packed([1, 2]), -1],
        [packed([0, 1]), packed([1, 2]), 1.5],
        [packed([0, 1]), packed([1]), 2],
        [packed([0]), packed([1, 2]), 2],
      ];
      for (const [k, v, n] of cases) {
        const sync = thrown(() => m.updateBatchPacked(k, v, n));
        const async = await rejection(m.updateBatchPackedAsync(k, v, n));
        expect(async).toBeInstanceOf(TypeError);
        expect(async.message).toBe(sync.message);
      }
      expect([0, 1, 2, 3].map((i) => m.lookup(u32Key(i))!.readUInt32LE(0))).toEqual([0, 0, 0, 0]);
      // the native call checks its own arguments
      expect(() => native().mapUpdateBatchAsync(m.fd, 'x' as unknown as Buffer, packed([1]), 1, 0)).toThrow(
        /^keys must be a Buffer/,
      );
      expect(() => native().mapUpdateBatchAsync(m.fd, packed([0]), packed([1]), -1, 0)).toThrow(
        /^count must be an unsigned 32-bit integer/,
      );
    } finally {
      m.close();
    }
  });

  it('leaves no fd behind, on success and on failure (updates and deletes)', async () => {
    const template = array(4);
    const outer = BpfMap.create({
      type: MapType.ARRAY_OF_MAPS,
      keySize: 4,
      valueSize: 4,
      maxEntries: 64,
      name: 'pk_uba_outer',
      inner: template,
    });
    try {
      const before = openBpfMapIds();
      for (let round = 0; round < 20; round++) {
        const inners = Array.from({ length: 8 }, (_, i) => array(4, round % 4 === 3 && i === 5 ? 8 : 4));
        try {
          const p = outer.updateBatchPackedAsync(
            packed(inners.map((_, i) => (round * 8 + i) % 64)),
            packed(inners.map((m) => m.fd)),
            8,
          );
          if (round % 4 === 3) expect((await rejection(p)).code).toBe('EINVAL');
          else expect(await p).toBe(8);
          expect(typeof (await outer.deleteAsync(u32Key((round * 8 + 1) % 64)))).toBe('boolean');
        } finally {
          for (const m of inners) m.close();
        }
      }
      // the outer map holds the installed inner maps itself (no fd of ours)
      expect(mapsOpenedSince(before)).toEqual([]);
      expect(outer.innerId(0)).not.toBeNull();
    } finally {
      outer.close();
      template.close();
    }
  });

  it('deleteAsync empties a map-in-map slot: true when it held a map, false when empty; errors as delete()', async () => {
    const template = array(4);
    const outer = outerOf(template);
    const inners = [array(4), array(4)];
    const plain = array(4);
    try {
      outer.setInner(2, inners[0]!);
      outer.setInner(6, inners[1]!);
      expect(await outer.deleteAsync(u32Key(2))).toBe(true);
      expect(await outer.deleteAsync(u32Key(2))).toBe(false);
      expect(await outer.deleteAsync(u32Key(3))).toBe(false);
      expect([2, 6].map((i) => outer.innerId(i))).toEqual([null, inners[1]!.info.id]);
      // an index past the end: the kernel's error, as the synchronous delete reports it
      const sync = thrown(() => outer.delete(u32Key(8)));
      const async = await rejection(outer.deleteAsync(u32Key(8)));
      expect(async.message).toBe(sync.message);
      expect(async.message).toMatch(new RegExp(`^map delete \\(fd ${outer.fd}\\): E`));
      expect([async.errno, async.code]).toEqual([sync.errno, sync.code]);
      // a plain array's elements cannot be deleted (EINVAL)
      const plainSync = thrown(() => plain.delete(u32Key(0)));
      const plainAsync = await rejection(plain.deleteAsync(u32Key(0)));
      expect(plainAsync.message).toBe(plainSync.message);
      expect(plainAsync.code).toBe('EINVAL');
      // a key of the wrong size: refused before the call, with delete()'s message
      const sizeSync = thrown(() => outer.delete(Buffer.alloc(2)));
      const sizeAsync = await rejection(outer.deleteAsync(Buffer.alloc(2)));
      expect(sizeAsync).toBeInstanceOf(TypeError);
      expect(sizeAsync.message).toBe(sizeSync.message);
      expect(outer.innerId(6)).toBe(inners[1]!.info.id);
    } finally {
      for (const m of [...inners, plain, outer, template]) m.close();
    }
  });

  it('a call in flight keeps working on its map when the caller closes the fd at once; a closed fd fails as before', async () => {
    const m = array(8);
    const same = BpfMap.fromId(m.info.id);
    try {
      const n = native();
      const fd = m.fd;
      const update = n.mapUpdateBatchAsync(fd, packed([1, 2]), packed([11, 22]), 2, 0);
      // its handler attached at once: it may settle before the update (an unhandled rejection fails the test)
      const del = rejection(n.mapDeleteAsync(fd, u32Key(0)));
      m.close();
      // a fresh fd likely takes the closed number: the calls in flight must not reach it
      const other = array(8);
      try {
        expect(await update).toBe(2);
        expect((await del).code).toBe('EINVAL'); // an array's element: the kernel refuses the delete
        expect([0, 1, 2].map((i) => same.lookup(u32Key(i))!.readUInt32LE(0))).toEqual([0, 11, 22]);
        expect([0, 1, 2].map((i) => other.lookup(u32Key(i))!.readUInt32LE(0))).toEqual([0, 0, 0]);
      } finally {
        other.close();
      }
      // an fd that is not open: EBADF, reported as the synchronous calls report it
      const closed = 1 << 20;
      const syncU = thrown(() => n.mapUpdateBatch(closed, packed([1]), packed([1]), 1, 0));
      const asyncU = await rejection(n.mapUpdateBatchAsync(closed, packed([1]), packed([1]), 1, 0));
      expect(asyncU.message).toBe(syncU.message);
      expect(asyncU.code).toBe('EBADF');
      const syncD = thrown(() => n.mapDelete(closed, u32Key(1)));
      const asyncD = await rejection(n.mapDeleteAsync(closed, u32Key(1)));
      expect(asyncD.message).toBe(syncD.message);
      expect(asyncD.code).toBe('EBADF');
    } finally {
      same.close();
    }
  });
});
