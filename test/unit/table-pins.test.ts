// Table pins (src/datapath/kernel.ts): the names, the read order (a pin holding the slot's map, else by id, else
// a TableUnreadableError naming the VIP), and on the real kernel: pins follow installs, deletes and pin(), a
// stale or missing pin falls back by id as root, and a reader with the DaemonSet's capabilities (no
// CAP_SYS_ADMIN) reads current and previous tables through the pins alone.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BpfMap, MapType, unpin } from '../../src/datapath/bpf';
import {
  isTableUnreadable,
  KernelDatapath,
  openInstalledTable,
  parseTablePinName,
  pinTable,
  TABLE_PIN_DIR,
  TableUnreadableError,
  tablePinName,
  unpinBalancer,
} from '../../src/datapath/kernel';
import type { VipSpec } from '../../src/datapath/types';
import { describePrivileged } from '../helpers/privileged';

describe('table pin names', () => {
  it('round-trip for both kinds, any u32 index', () => {
    for (const [kind, index] of [
      ['current', 0],
      ['current', 7],
      ['previous', 1],
      ['previous', 0xffffffff],
    ] as const) {
      const name = tablePinName(kind, index);
      expect(parseTablePinName(name)).toEqual({ kind, index });
    }
    expect(tablePinName('current', 3)).toBe('cur-3');
    expect(tablePinName('previous', 7)).toBe('prev-7');
  });

  it('no dot in a name (bpffs refuses them with EPERM)', () => {
    expect(tablePinName('previous', 123)).not.toContain('.');
  });

  it('rejects other names: temporary pins, leading zeros, signs, too large, other words', () => {
    for (const n of [
      'tmp-cur-1',
      'cur-01',
      'cur--1',
      'cur-1.5',
      'prev-x',
      'cur-',
      'cur-4294967296',
      'current-1',
      'balancer',
      'cur-1 ',
    ])
      // prettier-ignore
      expect(parseTablePinName(n)).toBeNull();
  });

  it('refuses an index that is not a u32', () => {
    expect(() => tablePinName('current', -1)).toThrow(/index: -1 is not a u32 slot index/);
    expect(() => tablePinName('current', 1.5)).toThrow(/index: 1.5/);
    expect(() => tablePinName('previous', 2 ** 32)).toThrow(/index: 4294967296/);
  });
});

describe('openInstalledTable (the read order, faked collaborators)', () => {
  class Handle {
    closed = false;
    constructor(
      readonly id: number,
      readonly from: 'pin' | 'id',
    ) {}
    close(): void {
      this.closed = true;
    }
  }
  const errno = (code: string) => Object.assign(new Error(`map by id: ${code}`), { code });
  const where = { vipId: 4, kind: 'current' as const, pinPath: '/pins/tables/cur-4' };

  function source(o: { pin?: number | null | Error; slot: number | null; byId?: Error }) {
    const calls: string[] = [];
    const opened: Handle[] = [];
    return {
      calls,
      opened,
      src: {
        fromPin: () => {
          calls.push('pin');
          if (o.pin instanceof Error) throw o.pin;
          if (o.pin === undefined || o.pin === null) return null;
          const h = new Handle(o.pin, 'pin');
          opened.push(h);
          return h;
        },
        slotId: () => {
          calls.push('slot');
          return o.slot;
        },
        fromId: (id: number) => {
          calls.push(`id ${id}`);
          if (o.byId) throw o.byId;
          const h = new Handle(id, 'id');
          opened.push(h);
          return h;
        },
      },
    };
  }

  it('a pin holding the slot’s map is used; nothing is opened by id', () => {
    const s = source({ pin: 10, slot: 10 });
    const h = openInstalledTable(s.src, where);
    expect(h).toMatchObject({ id: 10, from: 'pin', closed: false });
    expect(s.calls).toEqual(['pin', 'slot']); // the pin first, then the slot
  });

  it('an empty slot: null, and an open pin is closed', () => {
    const s = source({ pin: 10, slot: null });
    expect(openInstalledTable(s.src, where)).toBeNull();
    expect(s.opened.map((h) => h.closed)).toEqual([true]);
    expect(s.calls).not.toContain('id 10');
  });

  it('a stale pin (another map) is closed and the slot’s map opened by id', () => {
    const s = source({ pin: 9, slot: 10 });
    expect(openInstalledTable(s.src, where)).toMatchObject({ id: 10, from: 'id' });
    expect(s.opened[0]).toMatchObject({ id: 9, closed: true });
  });

  it('a missing or unopenable pin falls back by id', () => {
    expect(openInstalledTable(source({ pin: null, slot: 10 }).src, where)).toMatchObject({ from: 'id' });
    expect(openInstalledTable(source({ pin: new Error('EACCES'), slot: 10 }).src, where)).toMatchObject({ from: 'id' }); // prettier-ignore
  });

  it('no pin directory: the pin is not asked for', () => {
    const s = source({ pin: 10, slot: 10 });
    expect(openInstalledTable(s.src, { ...where, pinPath: null })).toMatchObject({ from: 'id' });
    expect(s.calls).toEqual(['slot', 'id 10']);
  });

  it('EPERM or EACCES by id: TableUnreadableError naming the VIP, the table, the map id and the pin’s state', () => {
    const cases: [Parameters<typeof source>[0], RegExp][] = [
      [{ pin: null, slot: 10, byId: errno('EPERM') }, /nothing is pinned at \/pins\/tables\/cur-4/],
      [{ pin: 9, slot: 10, byId: errno('EPERM') }, /the pin \/pins\/tables\/cur-4 holds map 9, not the installed one \(stale\)/], // prettier-ignore
      [{ pin: new Error('boom'), slot: 10, byId: errno('EACCES') }, /the pin \/pins\/tables\/cur-4 cannot be opened \(boom\)/], // prettier-ignore
    ];
    for (const [o, why] of cases) {
      let err: unknown;
      try {
        openInstalledTable(source(o).src, where);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TableUnreadableError);
      expect(isTableUnreadable(err)).toBe(true);
      expect(err).toMatchObject({ code: 'ETABLEUNREADABLE', vipId: 4, kind: 'current', innerId: 10 });
      expect((err as Error).message).toMatch(
        /^VIP 4: its current Maglev table \(inner map id 10\) cannot be read: /,
      );
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toMatch(/CAP_SYS_ADMIN/);
    }
  });

  it('another error by id (the map went away) is passed on as it is', () => {
    const e = errno('ENOENT');
    expect(() => openInstalledTable(source({ pin: null, slot: 10, byId: e }).src, where)).toThrow(e);
    expect(isTableUnreadable(e)).toBe(false);
    expect(isTableUnreadable(null)).toBe(false);
  });
});

/** deploy/base/daemonset-lb.yaml's capabilities, as setpriv names them. */
const CAPS = '-all,+bpf,+net_admin,+perfmon,+net_bind_service';
const DIST_KERNEL = resolve(__dirname, '../../dist/src/datapath/kernel.js');

describePrivileged('table pins on the kernel', () => {
  const root = `/run/a2tp-${process.pid}`;
  const pinDir = join(root, 'peak-xdp', 'ns', 'eth0');
  const tableDir = join(pinDir, TABLE_PIN_DIR);
  let mounted = false;
  const open: { close(): void }[] = [];

  const vip = (id: number, tableSize = 7): VipSpec => ({
    key: { address: `10.0.0.${10 + id}`, port: 80, protocol: 'tcp' },
    id,
    flags: { sourceHash: false, noConntrack: false },
    tableSize,
  });
  const table = (ids: number[]) => Uint32Array.from(ids);

  /** Reads tables through KernelDatapath.adopt in a child with the DaemonSet's capabilities only. */
  function readCapped(what: { kind: 'current' | 'previous'; vipId: number }[]): unknown[] {
    const script = `
      const k = require(${JSON.stringify(DIST_KERNEL)});
      const dp = k.KernelDatapath.adopt({ pinDir: ${JSON.stringify(pinDir)} });
      (async () => {
        const out = [];
        for (const w of ${JSON.stringify(what)}) {
          try {
            const t = w.kind === 'current' ? await dp.readTable(w.vipId) : await dp.readPreviousTable(w.vipId);
            out.push(t === null ? null : Array.from(t));
          } catch (e) { out.push({ code: e.code, message: e.message }); }
        }
        process.stdout.write(JSON.stringify(out));
        dp.close();
      })();`;
    return JSON.parse(
      execFileSync('setpriv', [`--inh-caps=${CAPS}`, `--ambient-caps=${CAPS}`, `--bounding-set=${CAPS}`, process.execPath, '-e', script], { encoding: 'utf8' }), // prettier-ignore
    ) as unknown[];
  }

  /** The pinned balancer opened again as root (closed in afterAll). */
  const adopted = (): KernelDatapath => {
    const a = KernelDatapath.adopt({ pinDir });
    open.push(a);
    return a;
  };

  const pins = (): string[] => (existsSync(tableDir) ? readdirSync(tableDir).sort() : []);

  beforeAll(() => {
    if (!existsSync(DIST_KERNEL)) throw new Error(`${DIST_KERNEL} is missing: npm run build:ts`);
    mkdirSync(root, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', root]);
    mounted = true;
  });

  afterAll(() => {
    for (const h of open) h.close();
    if (mounted) execFileSync('umount', [root]);
    rmSync(root, { recursive: true, force: true });
  });

  it('pins follow installs and deletes; the DaemonSet’s capabilities read through them; stale or missing pins fall back by id as root only', async () => {
    const dp = await KernelDatapath.load({ maxEntries: { vips: 8, backends: 16, conntrack: 1024 } });
    open.push(dp);
    for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    await dp.upsertVip(vip(0));
    await dp.upsertVip(vip(1));
    // installed before the balancer is pinned (a replace programs first): kept open, pinned by pin()
    expect(await dp.installTables([{ vipId: 0, table: table([1, 2, 1, 2, 1, 2, 1]) }])).toEqual([null]);
    expect(pins()).toEqual([]);
    dp.pin(pinDir);
    expect(pins()).toEqual(['cur-0']);
    // a pair: the previous table goes in at the unread generation, pinned under its slot index
    expect(
      await dp.installTables([
        { vipId: 1, table: table([3, 3, 3, 3, 3, 3, 3]), previous: table([1, 2, 3, 1, 2, 3, 1]) },
      ]),
    ).toEqual([null]);
    const prev1 = pins().filter((n) => n.startsWith('prev-'));
    expect(prev1.length).toBe(1);
    expect(['prev-2', 'prev-3']).toContain(prev1[0]);
    expect(pins()).toEqual(['cur-0', 'cur-1', prev1[0]]);

    const capped = readCapped([
      { kind: 'current', vipId: 0 },
      { kind: 'current', vipId: 1 },
      { kind: 'previous', vipId: 1 },
      { kind: 'previous', vipId: 0 },
      { kind: 'current', vipId: 2 },
    ]);
    console.log(`read with ${CAPS}: ${JSON.stringify(capped)}`);
    expect(capped).toEqual([[1, 2, 1, 2, 1, 2, 1], [3, 3, 3, 3, 3, 3, 3], [1, 2, 3, 1, 2, 3, 1], null, null]);

    // a stale pin (another map under the name): root falls back by id, the capped reader names the VIP
    unpin(join(tableDir, 'cur-0'));
    const other = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize: 4, maxEntries: 8 });
    open.push(other);
    pinTable(tableDir, 'cur-0', other);
    expect(Array.from((await adopted().readTable(0))!)).toEqual([1, 2, 1, 2, 1, 2, 1]);
    const [stale] = readCapped([{ kind: 'current', vipId: 0 }]) as { code: string; message: string }[];
    console.log(`stale pin, capped: ${stale!.message}`);
    expect(stale).toMatchObject({ code: 'ETABLEUNREADABLE' });
    expect(stale!.message).toMatch(/^VIP 0: its current Maglev table .* holds map \d+, not the installed one \(stale\)/); // prettier-ignore

    // a start prunes the stale pin; rewriting the table pins it again
    expect(dp.pruneTablePins()).toEqual(['cur-0']);
    expect(pins()).toEqual(['cur-1', prev1[0]]);
    expect(await dp.installTables([{ vipId: 0, table: table([2, 2, 2, 2, 2, 2, 2]) }])).toEqual([null]);
    expect(readCapped([{ kind: 'current', vipId: 0 }])).toEqual([[2, 2, 2, 2, 2, 2, 2]]);

    // a new pair flips the generation: the old previous pin goes with its slot, the new one is pinned
    expect(
      await dp.installTables([
        { vipId: 1, table: table([1, 1, 1, 1, 1, 1, 1]), previous: table([3, 3, 3, 3, 3, 3, 3]) },
      ]),
    ).toEqual([null]);
    const prev2 = pins().filter((n) => n.startsWith('prev-'));
    expect(prev2.length).toBe(1);
    expect(prev2[0]).not.toBe(prev1[0]);
    expect(readCapped([{ kind: 'previous', vipId: 1 }])).toEqual([[3, 3, 3, 3, 3, 3, 3]]);
    // cleared previous table: its pin goes, its slot points at the empty table (pinned once, kept), which the
    // DaemonSet's capabilities read as no previous table without opening it
    expect(await dp.installPreviousTables([{ vipId: 1, table: null }])).toEqual([null]);
    expect(pins()).toEqual(['cur-0', 'cur-1', 'empty']);
    expect(readCapped([{ kind: 'previous', vipId: 1 }])).toEqual([null]);
    expect(await adopted().readPreviousTable(1)).toBe(null);

    // deleting a VIP removes its pins; a size change drops its table (and pin) until the next install
    await dp.deleteVip(vip(1).key);
    expect(pins()).toEqual(['cur-0', 'empty']);
    await dp.upsertVip(vip(0, 11));
    expect(pins()).toEqual(['empty']);

    // a temporary pin a crash left is pruned
    await dp.upsertVip(vip(0));
    expect(await dp.installTables([{ vipId: 0, table: table([1, 2, 3, 1, 2, 3, 1]) }])).toEqual([null]);
    pinTable(tableDir, 'x', other);
    execFileSync('mv', [join(tableDir, 'x'), join(tableDir, 'tmp-cur-0')]);
    expect(dp.pruneTablePins()).toEqual(['tmp-cur-0']);
    expect(pins()).toEqual(['cur-0', 'empty']);

    // a missing pin: root by id, the capped reader names the VIP and the missing pin
    unpin(join(tableDir, 'cur-0'));
    expect(Array.from((await adopted().readTable(0))!)).toEqual([1, 2, 3, 1, 2, 3, 1]);
    const [missing] = readCapped([{ kind: 'current', vipId: 0 }]) as { message: string }[];
    expect(missing!.message).toMatch(/^VIP 0: .*nothing is pinned at .*\/tables\/cur-0/);

    // the balancer's unpin takes the table pins with it
    await dp.installTable(0, table([3, 2, 1, 3, 2, 1, 3]));
    expect(pins()).toEqual(['cur-0', 'empty']);
    unpinBalancer(pinDir);
    expect(existsSync(tableDir)).toBe(false);
  });

  it('the previous-table pin of a VIP with no current table is written at the live generation', async () => {
    const dir = join(root, 'peak-xdp', 'ns', 'eth1');
    const dp = await KernelDatapath.load({ maxEntries: { vips: 8, backends: 16, conntrack: 1024 } });
    open.push(dp);
    dp.pin(dir);
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'up' });
    await dp.upsertVip(vip(2));
    expect(await dp.installPreviousTables([{ vipId: 2, table: table([1, 1, 1]) }])).toEqual([null]);
    expect(readdirSync(join(dir, TABLE_PIN_DIR))).toEqual(['prev-4']);
    const again = KernelDatapath.adopt({ pinDir: dir });
    open.push(again);
    expect(Array.from((await again.readPreviousTable(2))!)).toEqual([1, 1, 1]);
    unpinBalancer(dir);
  });

  it('deleteVips: every VIP leaves at once, all their slots point at the empty table in one update; an id reused later takes a table over it', async () => {
    const dir = join(root, 'peak-xdp', 'ns', 'eth3');
    const dp = await KernelDatapath.load({ maxEntries: { vips: 8, backends: 16, conntrack: 1024 } });
    open.push(dp);
    dp.pin(dir);
    for (const id of [1, 2]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    for (const v of [1, 2, 3]) await dp.upsertVip(vip(v));
    const t = table([1, 2, 1, 2, 1, 2, 1]);
    expect(await dp.installTables([1, 2, 3].map((vipId) => ({ vipId, table: t, previous: table([2, 2, 2, 2, 2, 2, 2]) })))).toEqual([null, null, null]); // prettier-ignore
    const missing = { address: '10.0.0.99', port: 80, protocol: 'tcp' as const };
    const r = await dp.deleteVips([vip(1).key, missing, vip(2).key]);
    expect(r[0]).toBeNull();
    expect(r[1]!.message).toBe('key: VIP 10.0.0.99:80/tcp does not exist');
    expect(r[2]).toBeNull();
    expect((await dp.listVips()).map((v) => v.id)).toEqual([3]);
    const empty = BpfMap.fromPin(join(dir, TABLE_PIN_DIR, 'empty'));
    open.push(empty);
    // the two VIPs' current and previous slots: the empty table; VIP 3's untouched
    expect([1, 2].map((v) => dp.maps.maglev_tables.innerId(v))).toEqual([empty.info.id, empty.info.id]);
    for (const v of [1, 2])
      expect([0, 1].map((p) => dp.maps.maglev_prev_tables.innerId(v * 2 + p)).every((id) => id === null || id === empty.info.id)).toBe(true); // prettier-ignore
    expect(readdirSync(join(dir, TABLE_PIN_DIR)).filter((n) => /-(1|2|4|5)$/.test(n))).toEqual([]);
    expect(await dp.readTable(1)).toBeNull();
    expect(Array.from((await dp.readTable(3))!)).toEqual(Array.from(t));
    // id 1 taken again: no table until one is installed, then that one
    await dp.upsertVip({ ...vip(1), key: { address: '10.0.0.50', port: 80, protocol: 'tcp' } });
    expect(await dp.readTable(1)).toBeNull();
    expect(await dp.installTables([{ vipId: 1, table: table([2, 2, 2, 2, 2, 2, 2]) }])).toEqual([null]);
    expect(Array.from((await dp.readTable(1))!)).toEqual([2, 2, 2, 2, 2, 2, 2]);
    // deleteBackend sees no table naming backend 1 but VIP 3's
    await expect(dp.deleteBackend(1)).rejects.toThrow('id: backend 1 is still in the table of VIP 3');
    unpinBalancer(dir);
  });

  it('the stale generations of a batch are cleared together: each points at the one empty table, pinned once', async () => {
    const dir = join(root, 'peak-xdp', 'ns', 'eth2');
    const dp = await KernelDatapath.load({ maxEntries: { vips: 8, backends: 16, conntrack: 1024 } });
    open.push(dp);
    dp.pin(dir);
    const vips = [3, 4, 5];
    for (const id of [1, 2, 3]) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    for (const v of vips) await dp.upsertVip(vip(v));
    const t = [table([1, 1, 1, 1, 1, 1, 1]), table([2, 2, 2, 2, 2, 2, 2]), table([3, 3, 3, 3, 3, 3, 3])];
    expect(await dp.installTables(vips.map((vipId) => ({ vipId, table: t[0]! })))).toEqual([
      null,
      null,
      null,
    ]);
    // two flips: after the second, each VIP's first previous table is stale
    for (const [cur, prev] of [[1, 0], [2, 1]] as const)
      expect(await dp.installTables(vips.map((vipId) => ({ vipId, table: t[cur]!, previous: t[prev]! })))).toEqual([null, null, null]); // prettier-ignore
    const slots = vips.flatMap((v) => [v * 2, v * 2 + 1]).map((i) => dp.maps.maglev_prev_tables.innerId(i));
    expect(slots.every((id) => id !== null)).toBe(true);
    const empty = BpfMap.fromPin(join(dir, TABLE_PIN_DIR, 'empty'));
    open.push(empty);
    expect(empty.readU32s(0, 1)[0]).toBe(0);
    // per VIP, one generation is the empty table, the other its live previous table
    expect(slots.filter((id) => id === empty.info.id).length).toBe(3);
    for (const v of vips) expect(Array.from((await dp.readPreviousTable(v))!)).toEqual(Array.from(t[1]!));
    expect(readdirSync(join(dir, TABLE_PIN_DIR)).filter((n) => n.startsWith('prev-')).length).toBe(3);
    // a restart finds the same empty table through its pin (no second one made) and reads cleared slots as none
    const again = KernelDatapath.adopt({ pinDir: dir });
    open.push(again);
    expect(await again.installPreviousTables(vips.map((vipId) => ({ vipId, table: null })))).toEqual([null, null, null]); // prettier-ignore
    const after = vips
      .flatMap((v) => [v * 2, v * 2 + 1])
      .map((i) => again.maps.maglev_prev_tables.innerId(i));
    expect(after).toEqual(after.map(() => empty.info.id));
    for (const v of vips) expect(await again.readPreviousTable(v)).toBe(null);
    expect(readdirSync(join(dir, TABLE_PIN_DIR)).sort()).toEqual(['cur-3', 'cur-4', 'cur-5', 'empty']);
    unpinBalancer(dir);
  });
});
