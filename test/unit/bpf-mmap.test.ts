// Maglev tables through mmap (issue 17): BpfMap.writeU32s / readU32s on BPF_F_MMAPABLE arrays (values 8 bytes
// apart in the mapping), their batch-syscall fallback for maps without the flag, bounds errors naming the
// argument, KernelDatapath tables on this build's and on an older build's balancer (the fixture
// balancer_plain_inner: template without BPF_F_MMAPABLE), and the start's decision over an older build's pins.
// Privileged (BPF maps, pins under /sys/fs/bpf/pkmm-<pid>, removed after); no interface, namespace or traffic.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, btfMapDefs, MapFlags, MapType, unpin } from '../../src/datapath/bpf';
import {
  balancerSpec,
  inspectBalancerPins,
  installedInnerFlags,
  KernelDatapath,
  probeInnerFlags,
  readPins,
} from '../../src/datapath/kernel';
import { native } from '../../src/datapath/native';
import { tableMembers } from '../../src/datapath/table-refs';
import { bpfObjectDir, bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { openBpfMapFds } from '../helpers/bpf-fds';

const OLDER = join(bpfObjectDir, 'fixtures', 'balancer_plain_inner.bpf.o');
const TABLE_FLAGS = MapFlags.INNER_MAP | MapFlags.MMAPABLE;
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

/** Every entry of an array of u32 values, one lookup syscall each (the reference the mmap path must match). */
function bySyscall(m: BpfMap): number[] {
  return Array.from({ length: m.maxEntries }, (_, i) => m.lookup(u32Key(i))!.readUInt32LE(0));
}

const vip = (id: number, tableSize: number) => ({
  key: { address: `10.0.0.${10 + id}`, port: 80, protocol: 'tcp' as const },
  id,
  flags: { sourceHash: false, noConntrack: false },
  tableSize,
});

describePrivileged('BpfMap.writeU32s / readU32s', () => {
  for (const [what, flags] of [
    ['through mmap (BPF_F_MMAPABLE)', MapFlags.MMAPABLE],
    ['by batch syscalls (no BPF_F_MMAPABLE: an older build)', 0],
  ] as const) {
    it(`${what}: exact values round-trip at any first index; other entries untouched`, () => {
      const m = arrayMap(1031, flags); // not a multiple of a page's 512 entries
      try {
        expect(m.mmapable).toBe(flags !== 0);
        const values = Uint32Array.from([0, 1, 0xffffffff, 0x80000000, 7, 0x12345678]);
        m.writeU32s(3, values);
        m.writeU32s(1031 - 2, Uint32Array.of(0xdeadbeef, 42)); // the last two entries
        const want = new Array<number>(1031).fill(0);
        values.forEach((v, i) => (want[3 + i] = v));
        want[1029] = 0xdeadbeef;
        want[1030] = 42;
        // element i lands where key i's syscall lookup finds it: the 8-byte stride is right
        expect(bySyscall(m)).toEqual(want);
        expect([...m.readU32s(0, 1031)]).toEqual(want);
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

  it('a whole 65538-entry table (the largest M + 1) round-trips through mmap', () => {
    const m = arrayMap(65538, TABLE_FLAGS);
    try {
      const t = Uint32Array.from({ length: 65537 }, (_, i) => (i * 2654435761) >>> 0);
      let at = performance.now();
      m.writeU32s(1, t);
      const writeMs = performance.now() - at;
      at = performance.now();
      const back = m.readU32s(1, 65537);
      const readMs = performance.now() - at;
      console.log(`65537 entries through mmap: write ${writeMs.toFixed(2)} ms, read ${readMs.toFixed(2)} ms`);
      expect(Buffer.from(back.buffer).equals(Buffer.from(t.buffer))).toBe(true);
      expect(m.lookup(u32Key(65537))!.readUInt32LE(0)).toBe(t[65536]);
      expect(m.lookup(u32Key(0))!.readUInt32LE(0)).toBe(0);
    } finally {
      m.close();
    }
  });

  it('bounds and types: errors name the argument and the value', () => {
    const m = arrayMap(16, MapFlags.MMAPABLE);
    const wide = arrayMap(4, MapFlags.MMAPABLE, 8);
    try {
      expect(() => m.writeU32s(-1, Uint32Array.of(1))).toThrow(/^first: -1 is outside 0\.\.16/);
      expect(() => m.writeU32s(17, Uint32Array.of(1))).toThrow(/^first: 17 is outside 0\.\.16/);
      expect(() => m.writeU32s(1.5, Uint32Array.of(1))).toThrow(/^first: 1\.5/);
      expect(() => m.writeU32s(15, Uint32Array.of(1, 2))).toThrow(/^values\.length: 2 entries from 15 run past map pk_mmap_test's 16 entries/); // prettier-ignore
      expect(() => m.readU32s(10, 7)).toThrow(/^count: 7 entries from 10 run past/);
      expect(() => m.readU32s(0, -1)).toThrow(/^count: -1/);
      expect(() => m.writeU32s(0, [1, 2] as unknown as Uint32Array)).toThrow(/values must be a Uint32Array/);
      expect(() => wide.readU32s(0, 1)).toThrow(/is not an array of u32 values/);
      // nothing was written by the refused calls
      expect([...m.readU32s(0, 16)]).toEqual(new Array(16).fill(0));
    } finally {
      m.close();
      wide.close();
    }
  });

  it('the native calls check bounds and the map themselves (no mapping past the map)', () => {
    const n = native();
    const m = arrayMap(16, MapFlags.MMAPABLE);
    const plain = arrayMap(16, 0);
    try {
      expect(() => n.mapWriteU32s(m.fd, 17, Uint32Array.of(1))).toThrow(
        /^first: 17 is beyond map pk_mmap_test/,
      );
      expect(() => n.mapWriteU32s(m.fd, 15, Uint32Array.of(1, 2))).toThrow(/^values\.length: 2 entries from 15 run past/); // prettier-ignore
      expect(() => n.mapReadU32s(m.fd, 0, new Uint32Array(17))).toThrow(
        /^out\.length: 17 entries from 0 run past/,
      );
      expect(() => n.mapReadU32s(plain.fd, 0, new Uint32Array(1))).toThrow(/^fd: .* was created without BPF_F_MMAPABLE/); // prettier-ignore
      expect(() => n.mapWriteU32s(m.fd, 0, new Int32Array(1) as unknown as Uint32Array)).toThrow(/values must be a Uint32Array/); // prettier-ignore
      n.mapWriteU32s(m.fd, 15, Uint32Array.of(9));
      const out = new Uint32Array(2);
      n.mapReadU32s(m.fd, 14, out);
      expect([...out]).toEqual([0, 9]);
    } finally {
      m.close();
      plain.close();
    }
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
    ]);
    try {
      expect(made).toHaveLength(3);
      const [a, b, c] = made.map((x) => x.map);
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
    await expect(one({ writes: [{ first: 3, values: Uint32Array.of(1, 2) }] })).rejects.toThrow(/^maps\[0\]\.writes\[0\]: 2 entries from 3 run past maxEntries 4/); // prettier-ignore
    await expect(one({ writes: [{ first: 0, values: [1] as unknown as Uint32Array }] })).rejects.toThrow(/^maps\[0\]\.writes\[0\]\.values must be a Uint32Array/); // prettier-ignore
    // the native call checks the same itself
    const n = native();
    expect(() => n.mapsCreateU32s([{ maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [{ first: 3, values: Uint32Array.of(1, 2) }] }])).toThrow(/^maps\[0\]\.writes\[0\]: 2 entries from 3 run past maxEntries 4/); // prettier-ignore
    expect(() => n.mapsCreateU32s([{ maxEntries: 4, flags: 0, writes: [] }])).toThrow(/^maps\[0\]\.flags must include BPF_F_MMAPABLE/); // prettier-ignore
  });

  it('a map the kernel refuses fails the whole call, naming the entry (the maps made before it are closed)', async () => {
    const before = openBpfMapFds();
    // max_entries 0: EINVAL from BPF_MAP_CREATE
    await expect(
      BpfMap.createFilledU32s([
        { name: 'pk_fill_ok', maxEntries: 4, flags: MapFlags.MMAPABLE, writes: [] },
        { name: 'pk_fill_bad', maxEntries: 0, flags: MapFlags.MMAPABLE, writes: [] },
      ]),
    ).rejects.toThrow(/^maps\[1\]: create map pk_fill_bad: EINVAL/);
    expect(openBpfMapFds()).toBe(before);
  });
});

describePrivileged(
  'KernelDatapath tables through mmap, and an older build (no BPF_F_MMAPABLE template)',
  () => {
    const root = `/sys/fs/bpf/pkmm-${process.pid}`;
    afterAll(() => rmSync(root, { recursive: true, force: true }));

    it("this build's object: the Maglev templates are mmap-able, in the object and in a loaded program's BTF", async () => {
      const spec = balancerSpec();
      expect(spec.maps.maglev_tables.innerFlags).toBe(TABLE_FLAGS);
      expect(spec.maps.maglev_prev_tables.innerFlags).toBe(TABLE_FLAGS);
      expect(balancerSpec(OLDER).maps.maglev_tables.innerFlags).toBe(MapFlags.INNER_MAP);
      const dp = await KernelDatapath.load({ maxEntries: SIZES });
      try {
        const btfId = dp.program.info().btfId;
        expect(btfId).toBeGreaterThan(0);
        const defs = btfMapDefs({ btfId });
        expect(defs.find((d) => d.name === 'maglev_tables')?.inner?.map_flags).toBe(TABLE_FLAGS);
        expect(
          btfMapDefs(bpfObjectPath('balancer')).find((d) => d.name === 'maglev_prev_tables')?.inner,
        ).toMatchObject({
          type: MapType.ARRAY,
          map_flags: TABLE_FLAGS,
        });
      } finally {
        dp.close();
      }
    });

    for (const [what, objectPath, innerFlags] of [
      ["this build's balancer: tables written and read through mmap", undefined, TABLE_FLAGS],
      ["an older build's balancer: the same through batch syscalls", OLDER, MapFlags.INNER_MAP],
    ] as const) {
      it(what, async () => {
        const dp = await KernelDatapath.load({ objectPath, maxEntries: SIZES });
        try {
          await dp.upsertVip(vip(2, 13));
          for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
          const first = Uint32Array.from({ length: 13 }, (_, i) => 1 + (i % 3));
          const second = Uint32Array.from({ length: 13 }, (_, i) => (i < 5 ? 3 : 1 + (i % 2)));
          expect(await dp.installTables([{ vipId: 2, table: first }])).toEqual([null]);
          expect(installedInnerFlags(dp.maps.maglev_tables)).toBe(innerFlags);
          expect([...(await dp.readTable(2))!]).toEqual([...first]);
          // a change with its previous table: the pair swaps together; the moved slots are marked in the kernel
          expect(await dp.installTables([{ vipId: 2, table: second, previous: first }])).toEqual([null]);
          expect([...(await dp.readTable(2))!]).toEqual([...second]);
          expect([...(await dp.readPreviousTable(2))!]).toEqual([...first]);
          expect(installedInnerFlags(dp.maps.maglev_prev_tables)).toBe(innerFlags);
          const inner = BpfMap.fromId(dp.maps.maglev_tables.innerId(2)!);
          try {
            const raw = bySyscall(inner);
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
            const raw = bySyscall(again);
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
        const want = objectPath === undefined ? TABLE_FLAGS : MapFlags.INNER_MAP;
        expect(pins.maps.maglev_tables).toMatchObject({ kind: 'map', innerFlags: want });
        expect(pins.maps.maglev_prev_tables).toMatchObject({ kind: 'map', innerFlags: want });
        const { decision } = inspectBalancerPins({ dir, ifname: 'lo', limits });
        console.log(`${name}: ${JSON.stringify(decision)}`);
        if (objectPath === undefined) expect(decision).toEqual({ kind: 'adopt' });
        else
          expect(decision).toEqual({
            kind: 'replace',
            reason: 'map_layout',
            detail:
              `map maglev_tables holds inner maps with flags ${MapFlags.INNER_MAP} (this build's ${TABLE_FLAGS}); ` +
              `map maglev_prev_tables holds inner maps with flags ${MapFlags.INNER_MAP} (this build's ${TABLE_FLAGS})`,
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
        detail: `map maglev_tables holds inner maps with flags ${MapFlags.INNER_MAP} (this build's ${TABLE_FLAGS})`,
        leftovers: [],
      });
    });
  },
);

describePrivileged('probeInnerFlags: the template where nothing can be read (no CAP_SYS_ADMIN)', () => {
  const root = `/sys/fs/bpf/pkmp-${process.pid}`;
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('finds the flags an outer map accepts on a slot no VIP uses, and leaves that slot empty', () => {
    for (const template of [TABLE_FLAGS, MapFlags.INNER_MAP]) {
      const tpl = arrayMap(8, template);
      const outer = BpfMap.create({ type: MapType.ARRAY_OF_MAPS, keySize: 4, valueSize: 4, maxEntries: 8, name: 'pk_probe_outer', inner: tpl }); // prettier-ignore
      const path = join(root, `outer-${template}`);
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root, { recursive: true });
      try {
        outer.pin(path);
        // VIP ids 0..2 and 7 exist, slot 6 holds a table: the probe must use slot 5 (VIP id 5, unused, empty)
        const held = arrayMap(3, template);
        outer.setInner(6, held);
        held.close();
        const before = Array.from({ length: 8 }, (_, i) => outer.innerId(i));
        expect(probeInnerFlags(path, [TABLE_FLAGS, MapFlags.INNER_MAP], new Set([0, 1, 2, 7]), 1)).toBe(
          template,
        );
        expect(Array.from({ length: 8 }, (_, i) => outer.innerId(i))).toEqual(before);
        // two generations per VIP id (maglev_prev_tables): slots 2k, 2k+1 belong to VIP k
        expect(probeInnerFlags(path, [TABLE_FLAGS, MapFlags.INNER_MAP], new Set([2, 3]), 2)).toBe(template);
        expect(probeInnerFlags(path, [MapFlags.NO_PREALLOC], new Set([]), 1)).toBeNull(); // no candidate fits
        expect(probeInnerFlags(path, [template], new Set([0, 1, 2, 3, 4, 5, 7]), 1)).toBeNull(); // no free slot
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
