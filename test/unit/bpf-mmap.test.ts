// Maglev tables through mmap (issue 17): BpfMap.writeU32s / readU32s on BPF_F_MMAPABLE arrays (4-byte values 8
// bytes apart in the mapping; 64-byte values of 16 words end to end, issue 15's packed tables), their
// batch-syscall fallback for maps without the flag, bounds errors naming the argument, KernelDatapath tables on
// this build's and on older builds' balancers (the fixtures balancer_word_inner: 4-byte slots; balancer_plain_inner:
// 4-byte slots without BPF_F_MMAPABLE), and the start's decision over an older build's pins.
// Privileged (BPF maps, pins under /sys/fs/bpf/pkmm-<pid>, removed after); no interface, namespace or traffic.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, btfMapDefs, MapFlags, MapType, unpin } from '../../src/datapath/bpf';
import {
  balancerSpec,
  inspectBalancerPins,
  installedInnerTemplate,
  KernelDatapath,
  OLDER_TEMPLATES,
  probeInnerTemplate,
  readPins,
} from '../../src/datapath/kernel';
import { native } from '../../src/datapath/native';
import { kernelCollaborators, MALLOC_MMAP_THRESHOLD } from '../../src/daemon/wiring';
import { START_COLLECT_WAIT_MS } from '../../src/daemon/programmer';
import { tableMembers } from '../../src/datapath/table-refs';
import { addonPath, bpfObjectDir, bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { mapsOpenedSince, openBpfMapIds } from '../helpers/bpf-fds';

const OLDER = join(bpfObjectDir, 'fixtures', 'balancer_plain_inner.bpf.o');
const WORDS = join(bpfObjectDir, 'fixtures', 'balancer_word_inner.bpf.o');
const TABLE_FLAGS = MapFlags.INNER_MAP | MapFlags.MMAPABLE;
/** This build's Maglev inner template (bpf/maps.h: 16 slots per 64-byte value), and the older builds'. */
const TABLE = { flags: TABLE_FLAGS, valueSize: 64 };
const WORD_TABLE = { flags: TABLE_FLAGS, valueSize: 4 };
const PLAIN_TABLE = { flags: MapFlags.INNER_MAP, valueSize: 4 };
const SIZES = {
  conntrack: 1024,
  maglev_tables: 16,
  maglev_prev_tables: 32,
  vips: 16,
  vip_addrs: 16,
  vip_stats: 16,
};

const u32Key = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

function arrayMap(maxEntries: number, flags: number, valueSize = 4): BpfMap {
  return BpfMap.create({
    type: MapType.ARRAY,
    keySize: 4,
    valueSize,
    maxEntries,
    flags,
    name: 'pk_mmap_test',
  });
}

/** Every u32 word of an array's values, end to end, one lookup syscall per entry (the reference the mmap path must
 * match). */
function bySyscall(m: BpfMap): number[] {
  const per = m.info.valueSize / 4;
  return Array.from({ length: m.maxEntries }, (_, i) => {
    const v = m.lookup(u32Key(i))!;
    return Array.from({ length: per }, (_, j) => v.readUInt32LE(4 * j));
  }).flat();
}

const vip = (id: number, tableSize: number) => ({
  key: { address: `10.0.0.${10 + id}`, port: 80, protocol: 'tcp' as const },
  id,
  flags: { sourceHash: false, noConntrack: false },
  tableSize,
});

describePrivileged('BpfMap.writeU32s / readU32s', () => {
  for (const [what, flags, valueSize] of [
    ['through mmap (BPF_F_MMAPABLE)', MapFlags.MMAPABLE, 4],
    ['through mmap, 16 words per 64-byte value', MapFlags.MMAPABLE, 64],
    ['through mmap, 2 words per 8-byte value', MapFlags.MMAPABLE, 8],
    ['by batch syscalls (no BPF_F_MMAPABLE: an older build)', 0, 4],
  ] as const) {
    it(`${what}: exact values round-trip at any first index; other words untouched`, () => {
      // 1031 words: not a multiple of a page's 512 entries (or 64 values of 16 words), and a last value of 64
      // bytes holds 7 words past them
      const m = arrayMap(Math.ceil(1031 / (valueSize / 4)), flags, valueSize);
      try {
        expect(m.mmapable).toBe(flags !== 0);
        expect(m.u32Words).toBe(Math.ceil(1031 / (valueSize / 4)) * (valueSize / 4));
        const values = Uint32Array.from([0, 1, 0xffffffff, 0x80000000, 7, 0x12345678]);
        m.writeU32s(3, values);
        m.writeU32s(1031 - 2, Uint32Array.of(0xdeadbeef, 42)); // the last two entries
        const want = new Array<number>(m.u32Words).fill(0);
        values.forEach((v, i) => (want[3 + i] = v));
        want[1029] = 0xdeadbeef;
        want[1030] = 42;
        // word i lands where the syscall lookup of its entry finds it: stride and packing are right
        expect(bySyscall(m)).toEqual(want);
        expect([...m.readU32s(0, m.u32Words)]).toEqual(want);
        expect([...m.readU32s(0, 1031)]).toEqual(want.slice(0, 1031));
        expect([...m.readU32s(4, 3)]).toEqual([1, 0xffffffff, 0x80000000]);
        expect([...m.readU32s(1030, 1)]).toEqual([42]);
        expect(m.readU32s(1031, 0)).toHaveLength(0);
        // into an array of the count's length: that array is the result; any other length: a new one
        const into = new Uint32Array(3).fill(9);
        expect(m.readU32s(4, 3, into)).toBe(into);
        expect([...into]).toEqual([1, 0xffffffff, 0x80000000]);
        const short = new Uint32Array(2).fill(9);
        const got = m.readU32s(4, 3, short);
        expect([got === short, [...got], [...short]]).toEqual([false, [1, 0xffffffff, 0x80000000], [9, 9]]);
        m.writeU32s(0, new Uint32Array(0)); // nothing to write is fine
      } finally {
        m.close();
      }
    });
  }

  for (const valueSize of [4, 64])
    it(`a whole table of the largest M + 1 = 65538 words round-trips through mmap (${valueSize}-byte values)`, () => {
      const m = arrayMap(Math.ceil(65538 / (valueSize / 4)), TABLE_FLAGS, valueSize);
      try {
        const t = Uint32Array.from({ length: 65537 }, (_, i) => (i * 2654435761) >>> 0);
        let at = performance.now();
        m.writeU32s(1, t);
        const writeMs = performance.now() - at;
        at = performance.now();
        const back = m.readU32s(1, 65537);
        const readMs = performance.now() - at;
        console.log(`65537 words through mmap, ${valueSize}-byte values: write ${writeMs.toFixed(2)} ms, read ${readMs.toFixed(2)} ms`); // prettier-ignore
        expect(Buffer.from(back.buffer).equals(Buffer.from(t.buffer))).toBe(true);
        // word 65537 (slot 65536) where the syscall finds it: entry 65537, or word 1 of the last 64-byte value
        const last = m.lookup(u32Key(Math.floor(65537 / (valueSize / 4))))!;
        expect(last.readUInt32LE(4 * (65537 % (valueSize / 4)))).toBe(t[65536]);
        expect(m.lookup(u32Key(0))!.readUInt32LE(0)).toBe(0);
      } finally {
        m.close();
      }
    });

  it('bounds and types: errors name the argument and the value', () => {
    const m = arrayMap(16, MapFlags.MMAPABLE);
    const packed = arrayMap(2, MapFlags.MMAPABLE, 64);
    const odd = arrayMap(4, MapFlags.MMAPABLE, 12);
    const plainWide = arrayMap(4, 0, 8);
    try {
      expect(() => m.writeU32s(-1, Uint32Array.of(1))).toThrow(/^first: -1 is outside 0\.\.16/);
      expect(() => m.writeU32s(17, Uint32Array.of(1))).toThrow(/^first: 17 is outside 0\.\.16/);
      expect(() => m.writeU32s(1.5, Uint32Array.of(1))).toThrow(/^first: 1\.5/);
      expect(() => m.writeU32s(15, Uint32Array.of(1, 2))).toThrow(/^values\.length: 2 words from 15 run past map pk_mmap_test's 16 words/); // prettier-ignore
      expect(() => m.readU32s(10, 7)).toThrow(/^count: 7 words from 10 run past/);
      expect(() => m.readU32s(0, -1)).toThrow(/^count: -1/);
      expect(() => m.writeU32s(0, [1, 2] as unknown as Uint32Array)).toThrow(/values must be a Uint32Array/);
      // two 64-byte values hold 32 words
      expect(() => packed.readU32s(30, 3)).toThrow(/^count: 3 words from 30 run past map pk_mmap_test's 32 words/); // prettier-ignore
      // 12-byte values are not words; 8-byte values without mmap are not reached word by word
      expect(odd.u32Words).toBe(0);
      expect(() => odd.readU32s(0, 1)).toThrow(/is not an array of u32 words/);
      expect(() => plainWide.readU32s(0, 1)).toThrow(/is not an array of u32 words/);
      // nothing was written by the refused calls
      expect([...m.readU32s(0, 16)]).toEqual(new Array(16).fill(0));
      expect([...packed.readU32s(0, 32)]).toEqual(new Array(32).fill(0));
    } finally {
      m.close();
      packed.close();
      odd.close();
      plainWide.close();
    }
  });

  it('the native calls check bounds and the map themselves (no mapping past the map)', () => {
    const n = native();
    const m = arrayMap(16, MapFlags.MMAPABLE);
    const plain = arrayMap(16, 0);
    const odd = arrayMap(4, MapFlags.MMAPABLE, 12);
    const packed = arrayMap(2, MapFlags.MMAPABLE, 64);
    try {
      expect(() => n.mapWriteU32s(m.fd, 17, Uint32Array.of(1))).toThrow(
        /^first: 17 is beyond map pk_mmap_test .*'s 16 words/,
      );
      expect(() => n.mapWriteU32s(m.fd, 15, Uint32Array.of(1, 2))).toThrow(/^values\.length: 2 words from 15 run past/); // prettier-ignore
      expect(() => n.mapReadU32s(m.fd, 0, new Uint32Array(17))).toThrow(
        /^out\.length: 17 words from 0 run past/,
      );
      expect(() => n.mapReadU32s(packed.fd, 0, new Uint32Array(33))).toThrow(/^out\.length: 33 words from 0 run past .* 32 words/); // prettier-ignore
      expect(() => n.mapReadU32s(plain.fd, 0, new Uint32Array(1))).toThrow(/^fd: .* was created without BPF_F_MMAPABLE/); // prettier-ignore
      expect(() => n.mapReadU32s(odd.fd, 0, new Uint32Array(1))).toThrow(/^fd: .* has 12-byte values, not u32 words/); // prettier-ignore
      n.mapWriteU32s(packed.fd, 31, Uint32Array.of(7));
      expect(packed.lookup(u32Key(1))!.readUInt32LE(60)).toBe(7);
      expect(() => n.mapWriteU32s(m.fd, 0, new Int32Array(1) as unknown as Uint32Array)).toThrow(/values must be a Uint32Array/); // prettier-ignore
      n.mapWriteU32s(m.fd, 15, Uint32Array.of(9));
      const out = new Uint32Array(2);
      n.mapReadU32s(m.fd, 14, out);
      expect([...out]).toEqual([0, 9]);
    } finally {
      m.close();
      plain.close();
      odd.close();
      packed.close();
    }
  });
});

describePrivileged('BpfMap.patchU32s: a small change written in place, word by word (issue 17)', () => {
  for (const valueSize of [4, 64])
    it(`writes only the words that differ when at most maxChanged do; more: writes nothing (${valueSize}-byte values)`, () => {
      const m = arrayMap(Math.ceil(1031 / (valueSize / 4)), TABLE_FLAGS, valueSize);
      try {
        const before = Uint32Array.from({ length: 1030 }, (_, i) => (i % 7) + 1);
        m.writeU32s(1, before);
        m.writeU32s(0, Uint32Array.of(0xabcd));
        const next = before.slice();
        for (const i of [0, 5, 500, 1029]) next[i] = 99;
        // 4 differ: over a bound of 3 nothing changes; within 4 exactly those change
        expect(m.patchU32s(1, next, 3)).toBe(4);
        expect([...m.readU32s(1, 1030)]).toEqual([...before]);
        expect(m.patchU32s(1, next, 4)).toBe(4);
        expect([...m.readU32s(1, 1030)]).toEqual([...next]);
        // word 0 (outside the patched range) untouched; word i where the syscall finds it
        expect(bySyscall(m)[0]).toBe(0xabcd);
        expect(bySyscall(m).slice(1, 1031)).toEqual([...next]);
        // the same values again: nothing differs, nothing is written
        expect(m.patchU32s(1, next, 0)).toBe(0);
        expect(m.patchU32s(1, new Uint32Array(0), 0)).toBe(0);
      } finally {
        m.close();
      }
    });

  it('refuses a map without BPF_F_MMAPABLE, a range past the map and a bad bound, naming them', () => {
    const plain = arrayMap(16, 0, 4);
    const m = arrayMap(16, MapFlags.MMAPABLE, 4);
    try {
      expect(() => plain.patchU32s(0, new Uint32Array(2), 2)).toThrow(/not mmap-able/);
      expect(() => m.patchU32s(15, new Uint32Array(2), 2)).toThrow(/values\.length/);
      expect(() => m.patchU32s(0, new Uint32Array(2), -1)).toThrow(/maxChanged: -1/);
      expect(() => m.patchU32s(0, [1, 2] as unknown as Uint32Array, 2)).toThrow(/Uint32Array/);
    } finally {
      plain.close();
      m.close();
    }
  });

  it('an RCU grace period can be waited for from user space here (membarrier), and the wait ends', async () => {
    // The datapath patches tables only where it can wait for one (kernels with nohz_full CPUs cannot)
    expect(native().rcuGraceSupported()).toBe(true);
    await expect(native().rcuGraceAsync()).resolves.toBeUndefined();
  });
});

describePrivileged('BpfMap.createFilledU32s: maps made and filled off the event loop', () => {
  it('each map holds exactly its writes (the rest zero); distinct ids where asked, as tableMembers counts them', async () => {
    const big = Uint32Array.from({ length: 65537 }, (_, i) => 1 + (((i * 2654435761) >>> 0) % 997));
    const large = Uint32Array.of(0, 5, 1 << 30, 5, 0, 0xffffffff, 3); // past the bitmap: counted by sorting
    const made = await BpfMap.createFilledU32s([
      { name: 'pk_fill_a', maxEntries: 65538, flags: TABLE_FLAGS, writes: [{ first: 0, values: Uint32Array.of(65537) }, { first: 1, values: big, distinct: true }] }, // prettier-ignore
      { name: 'pk_fill_b', maxEntries: 1031, flags: MapFlags.MMAPABLE, writes: [{ first: 3, values: large, distinct: true }] }, // prettier-ignore
      { maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [] },
      // a packed table (16 words per value): 65538 words in 4097 values, the last one's tail zero
      { name: 'pk_fill_d', maxEntries: 4097, flags: TABLE_FLAGS, valueSize: 64, writes: [{ first: 0, values: Uint32Array.of(65537) }, { first: 1, values: big, distinct: true }] }, // prettier-ignore
    ]);
    try {
      expect(made).toHaveLength(4);
      const [a, b, c, d] = made.map((x) => x.map);
      expect([d!.info.valueSize, d!.maxEntries, d!.u32Words]).toEqual([64, 4097, 65552]);
      const dWords = bySyscall(d!);
      expect(dWords.slice(0, 65538)).toEqual([65537, ...big]);
      expect(dWords.slice(65538)).toEqual(new Array(14).fill(0));
      expect([...made[3]!.distinct[1]!]).toEqual([...tableMembers(big)]);
      expect([a!.info.name, b!.info.name, a!.info.flags, b!.maxEntries]).toEqual(['pk_fill_a', 'pk_fill_b', TABLE_FLAGS, 1031]); // prettier-ignore
      const back = a!.readU32s(1, 65537);
      expect(Buffer.from(back.buffer).equals(Buffer.from(big.buffer))).toBe(true);
      expect(a!.lookup(u32Key(0))!.readUInt32LE(0)).toBe(65537);
      const want = new Array<number>(1031).fill(0);
      large.forEach((v, i) => (want[3 + i] = v));
      expect(bySyscall(b!)).toEqual(want);
      expect(bySyscall(c!)).toEqual([0, 0, 0, 0]);
      // the ids of a table: distinct, non-zero, ascending, as tableMembers has them
      expect(made[0]!.distinct[0]).toBeNull();
      expect([...made[0]!.distinct[1]!]).toEqual([...tableMembers(big)]);
      expect(made[0]!.distinct[1]!.length).toBe(997);
      expect([...made[1]!.distinct[0]!]).toEqual([3, 5, 1 << 30, 0xffffffff]);
      expect(made[2]!.distinct).toEqual([]);
    } finally {
      made.forEach((x) => x.map.close());
    }
  });

  it('bad specs are refused naming the field and the value, before any map is made', async () => {
    const one = (o: Partial<Parameters<typeof BpfMap.createFilledU32s>[0][number]>) =>
      BpfMap.createFilledU32s([{ maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [], ...o }]);
    await expect(one({ flags: 0 })).rejects.toThrow(/^maps\[0\]\.flags: 0 lacks BPF_F_MMAPABLE/);
    await expect(one({ maxEntries: -1 })).rejects.toThrow(/^maps\[0\]\.maxEntries must be a u32, got -1/);
    await expect(one({ name: 'x'.repeat(16) })).rejects.toThrow(
      /^maps\[0\]\.name must be a string of at most 15/,
    );
    await expect(one({ writes: [{ first: 3, values: Uint32Array.of(1, 2) }] })).rejects.toThrow(/^maps\[0\]\.writes\[0\]: 2 words from 3 run past the 4 words of maxEntries 4/); // prettier-ignore
    await expect(one({ valueSize: 64, writes: [{ first: 60, values: new Uint32Array(5) }] })).rejects.toThrow(/^maps\[0\]\.writes\[0\]: 5 words from 60 run past the 64 words of maxEntries 4/); // prettier-ignore
    await expect(one({ valueSize: 12 })).rejects.toThrow(/^maps\[0\]\.valueSize: 12 bytes are not u32 words/);
    await expect(one({ writes: [{ first: 0, values: [1] as unknown as Uint32Array }] })).rejects.toThrow(/^maps\[0\]\.writes\[0\]\.values must be a Uint32Array/); // prettier-ignore
    // the native call checks the same itself
    const n = native();
    expect(() => n.mapsCreateU32s([{ maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [{ first: 3, values: Uint32Array.of(1, 2) }] }])).toThrow(/^maps\[0\]\.writes\[0\]: 2 words from 3 run past the 4 words of maxEntries 4/); // prettier-ignore
    expect(() => n.mapsCreateU32s([{ maxEntries: 4, flags: MapFlags.MMAPABLE, valueSize: 12, writes: [] }])).toThrow(/^maps\[0\]\.valueSize: 12 bytes are not u32 words/); // prettier-ignore
    expect(() => n.mapsCreateU32s([{ maxEntries: 4, flags: 0, writes: [] }])).toThrow(/^maps\[0\]\.flags must include BPF_F_MMAPABLE/); // prettier-ignore
  });

  it('a map the kernel refuses fails the whole call, naming the entry (the maps made before it are closed)', async () => {
    const before = openBpfMapIds();
    // max_entries 0: EINVAL from BPF_MAP_CREATE
    await expect(
      BpfMap.createFilledU32s([
        { name: 'pk_fill_ok', maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [] },
        { name: 'pk_fill_bad', maxEntries: 0, flags: MapFlags.MMAPABLE, writes: [] },
      ]),
    ).rejects.toThrow(/^maps\[1\]: create map pk_fill_bad: EINVAL/);
    expect(mapsOpenedSince(before)).toEqual([]);
  });
});

describePrivileged(
  "KernelDatapath tables through mmap, and older builds' (4-byte slots; no BPF_F_MMAPABLE template)",
  () => {
    const root = `/sys/fs/bpf/pkmm-${process.pid}`;
    afterAll(() => rmSync(root, { recursive: true, force: true }));

    it("this build's object: the Maglev templates are mmap-able 64-byte lines, in the object and in a loaded program's BTF", async () => {
      // prettier-ignore
      const spec = balancerSpec();
      expect(spec.maps.maglev_tables.inner).toEqual(TABLE);
      expect(spec.maps.maglev_prev_tables.inner).toEqual(TABLE);
      expect(balancerSpec(WORDS).maps.maglev_tables.inner).toEqual(WORD_TABLE);
      expect(balancerSpec(OLDER).maps.maglev_tables.inner).toEqual(PLAIN_TABLE);
      expect(OLDER_TEMPLATES).toEqual([WORD_TABLE, PLAIN_TABLE]);
      const dp = await KernelDatapath.load({ maxEntries: SIZES });
      try {
        const btfId = dp.program.info().btfId;
        expect(btfId).toBeGreaterThan(0);
        const defs = btfMapDefs({ btfId });
        expect(defs.find((d) => d.name === 'maglev_tables')?.inner).toMatchObject({ map_flags: TABLE_FLAGS, key_size: 4, value_size: 64 }); // prettier-ignore
        expect(
          btfMapDefs(bpfObjectPath('balancer')).find((d) => d.name === 'maglev_prev_tables')?.inner,
        ).toMatchObject({
          type: MapType.ARRAY,
          map_flags: TABLE_FLAGS,
          value_size: 64,
          max_entries: 4097, // 65538 words
        });
        // key and value sizes of a plain map's definition as well
        expect(defs.find((d) => d.name === 'backends')?.fields).toMatchObject({ key_size: 4 });
      } finally {
        dp.close();
      }
    });

    for (const [what, objectPath, template] of [
      ["this build's balancer: tables written and read through mmap, 16 slots per value", undefined, TABLE],
      ["an older build's balancer: the same with 4-byte slots", WORDS, WORD_TABLE],
      ["an older build's balancer: the same through batch syscalls", OLDER, PLAIN_TABLE],
    ] as const) {
      it(what, async () => {
        const dp = await KernelDatapath.load({ objectPath, maxEntries: SIZES });
        try {
          await dp.upsertVip(vip(2, 13));
          for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
          const first = Uint32Array.from({ length: 13 }, (_, i) => 1 + (i % 3));
          const second = Uint32Array.from({ length: 13 }, (_, i) => (i < 5 ? 3 : 1 + (i % 2)));
          expect(await dp.installTables([{ vipId: 2, table: first }])).toEqual([null]);
          expect(installedInnerTemplate(dp.maps.maglev_tables)).toEqual(template);
          expect([...(await dp.readTable(2))!]).toEqual([...first]);
          // a change with its previous table: the pair swaps together; the moved slots are marked in the kernel
          expect(await dp.installTables([{ vipId: 2, table: second, previous: first }])).toEqual([null]);
          expect([...(await dp.readTable(2))!]).toEqual([...second]);
          expect([...(await dp.readPreviousTable(2))!]).toEqual([...first]);
          expect(installedInnerTemplate(dp.maps.maglev_prev_tables)).toEqual(template);
          const inner = BpfMap.fromId(dp.maps.maglev_tables.innerId(2)!);
          try {
            // 13 slots + the header in one 64-byte value (two words spare), or 14 values of 4 bytes
            expect(inner.maxEntries).toBe(template.valueSize === 64 ? 1 : 14);
            const raw = bySyscall(inner).slice(0, 14);
            const moved = raw.slice(1).filter((v, i) => v !== second[i]).length;
            expect(moved).toBe(second.filter((v, i) => v !== first[i]).length);
            expect(moved).toBeGreaterThan(0);
          } finally {
            inner.close();
          }
          // a later change without `previous` is marked against the previous table read back from the kernel
          const third = Uint32Array.from({ length: 13 }, () => 1);
          expect(await dp.installTables([{ vipId: 2, table: third }])).toEqual([null]);
          const again = BpfMap.fromId(dp.maps.maglev_tables.innerId(2)!);
          try {
            const raw = bySyscall(again).slice(0, 14);
            const markedAt = raw.slice(1).flatMap((v, i) => (v !== third[i] ? [i] : []));
            expect(markedAt).toEqual([...first].flatMap((v, i) => (v !== 1 ? [i] : [])));
          } finally {
            again.close();
          }
          expect([...(await dp.readPreviousTable(2))!]).toEqual([...first]);
        } finally {
          dp.close();
        }
      });
    }

    it("the start replaces an older build's pins, empty or not, and adopts this build's (pinDecision over readPins)", async () => {
      const limits = { maxVips: 16, maxBackends: 65536, conntrackEntries: 1024 };
      for (const [name, objectPath, withTable] of [
        ['new-empty', undefined, false],
        ['new-table', undefined, true],
        ['words-empty', WORDS, false],
        ['words-table', WORDS, true],
        ['old-empty', OLDER, false],
        ['old-table', OLDER, true],
      ] as const) {
        const dir = join(root, name);
        const dp = await KernelDatapath.load({ objectPath, maxEntries: SIZES });
        try {
          if (withTable) {
            await dp.upsertVip(vip(1, 5));
            await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'up' });
            expect(await dp.installTables([{ vipId: 1, table: new Uint32Array(5).fill(1) }])).toEqual([null]);
          }
          dp.pin(dir);
        } finally {
          dp.close();
        }
        const pins = readPins(dir);
        const want = objectPath === undefined ? TABLE : objectPath === WORDS ? WORD_TABLE : PLAIN_TABLE;
        expect(pins.maps.maglev_tables).toMatchObject({ kind: 'map', inner: want });
        expect(pins.maps.maglev_prev_tables).toMatchObject({ kind: 'map', inner: want });
        const { decision } = inspectBalancerPins({ dir, ifname: 'lo', limits });
        console.log(`${name}: ${JSON.stringify(decision)}`);
        if (objectPath === undefined) expect(decision).toEqual({ kind: 'adopt' });
        else
          expect(decision).toEqual({
            kind: 'replace',
            reason: 'map_layout',
            detail:
              `map maglev_tables holds inner maps with flags ${want.flags}, 4-byte values (this build's flags ${TABLE_FLAGS}, 64-byte values); ` + // prettier-ignore
              `map maglev_prev_tables holds inner maps with flags ${want.flags}, 4-byte values (this build's flags ${TABLE_FLAGS}, 64-byte values)`, // prettier-ignore
            leftovers: [],
          });
      }
    });

    it('an installed inner map outweighs the program BTF: an older outer map re-pinned under a new program', async () => {
      // How the upgrade integration test fakes an older build: this build's program, an older-layout outer map
      // (template without BPF_F_MMAPABLE) holding a table, pinned in place of the real one.
      const dir = join(root, 'mixed');
      const dp = await KernelDatapath.load({ maxEntries: SIZES });
      try {
        dp.pin(dir);
      } finally {
        dp.close();
      }
      const template = arrayMap(8, MapFlags.INNER_MAP);
      const outer = BpfMap.create({ type: MapType.ARRAY_OF_MAPS, keySize: 4, valueSize: 4, maxEntries: 16, name: 'maglev_tables', inner: template }); // prettier-ignore
      const table = arrayMap(6, MapFlags.INNER_MAP);
      try {
        outer.setInner(1, table);
        expect(unpin(join(dir, 'maglev_tables'))).toBe(true);
        outer.pin(join(dir, 'maglev_tables'));
      } finally {
        template.close();
        outer.close();
        table.close();
      }
      const d = inspectBalancerPins({ dir, ifname: 'lo', limits: null }).decision;
      expect(d).toEqual({
        kind: 'replace',
        reason: 'map_layout',
        detail: `map maglev_tables holds inner maps with flags ${MapFlags.INNER_MAP}, 4-byte values (this build's flags ${TABLE_FLAGS}, 64-byte values)`, // prettier-ignore
        leftovers: [],
      });
    });
  },
);

describePrivileged('probeInnerTemplate: the template where nothing can be read (no CAP_SYS_ADMIN)', () => {
  const root = `/sys/fs/bpf/pkmp-${process.pid}`;
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('finds the template an outer map accepts on a slot no VIP uses, and leaves that slot empty', () => {
    const all = [TABLE, WORD_TABLE, PLAIN_TABLE];
    for (const template of all) {
      const tpl = arrayMap(8, template.flags, template.valueSize);
      const outer = BpfMap.create({ type: MapType.ARRAY_OF_MAPS, keySize: 4, valueSize: 4, maxEntries: 8, name: 'pk_probe_outer', inner: tpl }); // prettier-ignore
      const path = join(root, `outer-${template.flags}-${template.valueSize}`);
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root, { recursive: true });
      try {
        outer.pin(path);
        // VIP ids 0..2 and 7 exist, slot 6 holds a table: the probe must use slot 5 (VIP id 5, unused, empty)
        const held = arrayMap(3, template.flags, template.valueSize);
        outer.setInner(6, held);
        held.close();
        const before = Array.from({ length: 8 }, (_, i) => outer.innerId(i));
        expect(probeInnerTemplate(path, all, new Set([0, 1, 2, 7]), 1)).toEqual(template);
        expect(Array.from({ length: 8 }, (_, i) => outer.innerId(i))).toEqual(before);
        // two generations per VIP id (maglev_prev_tables): slots 2k, 2k+1 belong to VIP k
        expect(probeInnerTemplate(path, all, new Set([2, 3]), 2)).toEqual(template);
        // no candidate fits: other flags, or the same flags with another value size
        const others = [{ flags: MapFlags.NO_PREALLOC, valueSize: template.valueSize }, { flags: template.flags, valueSize: template.valueSize === 4 ? 64 : 4 }]; // prettier-ignore
        expect(probeInnerTemplate(path, others, new Set([]), 1)).toBeNull();
        expect(probeInnerTemplate(path, [template], new Set([0, 1, 2, 3, 4, 5, 7]), 1)).toBeNull(); // no free slot
        expect(Array.from({ length: 8 }, (_, i) => outer.innerId(i))).toEqual(before);
      } finally {
        tpl.close();
        outer.close();
      }
    }
  });

  it('a user with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only (no CAP_SYS_ADMIN) reads the same decision', async () => {
    const limits = { maxVips: 16, maxBackends: 65536, conntrackEntries: 1024 };
    const dist = join(__dirname, '..', '..', 'dist', 'src', 'datapath', 'kernel.js');
    for (const [name, objectPath] of [
      ['new', undefined],
      ['words', WORDS],
      ['old', OLDER],
    ] as const) {
      const dir = join(root, 'caps', name);
      const dp = await KernelDatapath.load({ objectPath, maxEntries: SIZES });
      try {
        await dp.upsertVip(vip(1, 5));
        await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'up' });
        expect(await dp.installTables([{ vipId: 1, table: new Uint32Array(5).fill(1) }])).toEqual([null]);
        dp.pin(dir);
      } finally {
        dp.close();
      }
      execFileSync('chown', ['-R', '65534:65534', root]);
      const script = `const k = require(${JSON.stringify(dist)}); process.stdout.write(JSON.stringify(k.inspectBalancerPins({ dir: ${JSON.stringify(dir)}, ifname: 'lo', limits: ${JSON.stringify(limits)} }).decision))`; // prettier-ignore
      const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+bpf,+net_admin,+perfmon', '--ambient-caps=+bpf,+net_admin,+perfmon', process.execPath, '-e', script], { encoding: 'utf8' }); // prettier-ignore
      console.log(`as nobody with CAP_BPF (${name}): ${out}`);
      const asRoot = inspectBalancerPins({ dir, ifname: 'lo', limits }).decision;
      expect(JSON.parse(out)).toEqual(asRoot);
      expect(asRoot.kind).toBe(objectPath === undefined ? 'adopt' : 'replace');
      // the probe left every slot as it was: VIP 1's table only
      const outer = BpfMap.fromPin(join(dir, 'maglev_tables'));
      try {
        expect(Array.from({ length: outer.maxEntries }, (_, i) => outer.innerId(i) !== null)).toEqual(
          Array.from({ length: outer.maxEntries }, (_, i) => i === 1),
        );
      } finally {
        outer.close();
      }
    }
  });
});

describe('native mallocTrim (the daemon calls it once the table workers end)', () => {
  it('runs where the C library is glibc (true), and is a no-op answering false elsewhere', () => {
    const header = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header;
    expect(native().mallocTrim()).toBe(header.glibcVersionRuntime !== undefined);
  });
});

describe('native freeArrayBuffer (the daemon frees the table buffers the Maglev pool lets go)', () => {
  it('detaches a buffer: its memory is gone from V8 at once, without a collection; refuses what is not one', () => {
    const n = native();
    const bufs = Array.from({ length: 64 }, (_, i) => new Uint32Array(16381).fill(i).buffer);
    const external = process.memoryUsage().external;
    let bytes = 0;
    for (const b of bufs) bytes += n.freeArrayBuffer(b);
    expect(bytes).toBe(64 * 16381 * 4);
    // V8 accounts the buffers' memory as external: 4 MiB fewer now (other allocations may move it a little)
    expect(external - process.memoryUsage().external).toBeGreaterThan(3.5 * 2 ** 20);
    expect(bufs.every((b) => b.byteLength === 0)).toBe(true);
    expect(n.freeArrayBuffer(bufs[0]!)).toBe(0); // already detached
    expect(() => n.freeArrayBuffer(new Uint32Array(4) as unknown as ArrayBuffer)).toThrow(
      'buffer must be an ArrayBuffer',
    );
  });

  it('is what the collaborators free a buffer with', () => {
    const { freeBuffer } = kernelCollaborators({ bpffs: '/sys/fs/bpf' });
    const b = new ArrayBuffer(64);
    freeBuffer!(b);
    expect(b.byteLength).toBe(0);
  });
});

describe("the daemon's trimMemory collaborator", () => {
  it('collects first only when asked and gc() is exposed, and says whether it did', () => {
    const { trimMemory } = kernelCollaborators({ bpffs: '/sys/fs/bpf' });
    const g = globalThis as { gc?: () => void };
    const saved = g.gc;
    let calls = 0;
    try {
      g.gc = () => void calls++;
      expect(trimMemory!({ collect: true })).toBe(true);
      expect(trimMemory!()).toBe(false);
      expect(calls).toBe(1);
      delete g.gc; // node without --expose-gc: malloc_trim only
      expect(trimMemory!({ collect: true })).toBe(false);
    } finally {
      if (saved !== undefined) g.gc = saved;
      else delete g.gc;
    }
  });
});

describe('native memoryPressure (the daemon calls it after a burst of tables)', () => {
  /** A Node process that promotes ~60 MB of objects to the old generation, drops them, calls memoryPressure when
   * `call`, then runs its event loop (small allocations every 5 ms) until a full collection ends or `ms` passed, with
   * V8's GC trace on: its output. */
  const run = (call: boolean, ms: number): string => {
    const script = `
      const { PerformanceObserver, constants } = require('node:perf_hooks');
      let majors = 0;
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
      }).observe({ entryTypes: ['gc'] });
      const n = require(${JSON.stringify(addonPath)});
      let keep = [];
      for (let i = 0; i < 400000; i++) keep.push({ a: i, b: 'x' + i, c: [i] });
      for (let j = 0; j < 50; j++) { const t = []; for (let i = 0; i < 10000; i++) t.push({ i }); }
      keep = null;
      setTimeout(() => {
        const before = majors;
        console.log('CALL');
        if (${call}) n.memoryPressure();
        const t0 = Date.now();
        const iv = setInterval(() => {
          for (let i = 0; i < 2000; i++) ({ i });
          if (majors > before || Date.now() - t0 > ${ms}) { clearInterval(iv); console.log('END'); }
        }, 5);
      }, 50);`;
    const r = spawnSync(process.execPath, ['--max-semi-space-size=4', '--trace-gc', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(0);
    return r.stdout;
  };
  /** The full collections traced after the call, "(reduce)" marking those that shrink the heap. */
  const afterCall = (out: string): string[] =>
    out
      .slice(out.indexOf('CALL'), out.indexOf('END'))
      .split('\n')
      .filter((l) => /Mark-Compact/.test(l));

  it("starts V8's incremental, memory-reducing collection at once; without the call none runs then", () => {
    // V8's memory reducer acts only after seconds of idleness (8 s the first time): the first full collection
    // within 6 s of the call, reducing, is the call's.
    const called = afterCall(run(true, 6000));
    expect(called).toHaveLength(1);
    expect(called[0]).toMatch(/Mark-Compact \(reduce\)/);
    // incremental: it finishes a marking that ran in steps (not gc()'s one atomic pause)
    expect(called[0]).toMatch(/finalize incremental marking/);
    expect(afterCall(run(false, 2000)).filter((l) => /\(reduce\)/.test(l))).toEqual([]);
  });

  it('is what the collaborators call', () => {
    const { memoryPressure } = kernelCollaborators({ bpffs: '/sys/fs/bpf' });
    expect(memoryPressure!()).toBeUndefined();
  });

  it("collectIncrementally (the daemon's start above 96 MiB of heap): asks, then resolves once that collection ended", async () => {
    const { collectIncrementally } = kernelCollaborators({ bpffs: '/sys/fs/bpf' });
    let keep: unknown[] | null = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `x${i}` }));
    expect(keep.length).toBe(200_000);
    keep = null;
    const t0 = performance.now();
    expect(await collectIncrementally!()).toBe(true);
    expect(performance.now() - t0).toBeLessThan(START_COLLECT_WAIT_MS);
  });
});

describe('native mallocMmapThreshold (the daemon fixes it at its start)', () => {
  it("sets glibc's threshold (true; false elsewhere) and refuses what is not an integer from 0 to 32 MiB", () => {
    const header = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header;
    // the value the daemon sets (MALLOC_MMAP_THRESHOLD), which is glibc's own initial one: no change for the test
    expect(native().mallocMmapThreshold(MALLOC_MMAP_THRESHOLD)).toBe(
      header.glibcVersionRuntime !== undefined,
    );
    for (const bad of [-1, 1.5, 33 * 2 ** 20, Number.NaN])
      expect(() => native().mallocMmapThreshold(bad)).toThrow(/bytes: .* is not an integer from 0 to 32 MiB/);
    expect(() => (native().mallocMmapThreshold as (x: unknown) => boolean)('1')).toThrow(
      'bytes must be a number',
    );
  });
});
