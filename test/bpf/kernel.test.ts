// KernelDatapath on the real kernel: config, VIPs, backends, tables, counters, conntrack, pin + adopt.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { balancerMapSizes, KernelDatapath } from '../../src/datapath/kernel';
import { DEFAULTS } from '../../src/model/defaults';
import { DEFAULT_CT_TIMEOUTS } from '../../src/datapath/layout';
import { describePrivileged } from '../helpers/privileged';
import { frame, TCP_FLAGS } from '../helpers/packet';
import { mapsOpenedSince, openBpfMapIds } from '../helpers/bpf-fds';

const cfg = {
  ownMac: '02:00:00:00:01:01',
  nextHopMac: '02:00:00:00:01:fe',
  encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
  encapSourceV6: null,
  mtu: 1500,
};
const vip = { key: { address: '10.0.0.10', port: 80, protocol: 'tcp' as const }, id: 3, flags: { sourceHash: false, noConntrack: false }, tableSize: 7 };

describePrivileged('KernelDatapath', () => {
  let dp: KernelDatapath;
  const pinDir = `/sys/fs/bpf/peak-xdp-test-${process.pid}/ns/eth0`;
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
  });
  afterAll(() => {
    dp?.close();
    rmSync(`/sys/fs/bpf/peak-xdp-test-${process.pid}`, { recursive: true, force: true });
  });

  it('maps the caller does not size are sized for DEFAULTS.limits, not by bpf/shared.h', () => {
    const want = { ...balancerMapSizes(DEFAULTS.limits), conntrack: 4096 };
    const got = Object.fromEntries(Object.keys(want).map((m) => [m, dp.maps[m as keyof typeof dp.maps].maxEntries]));
    expect(got).toEqual(want);
    expect(got.backends).toBe(DEFAULTS.limits.maxBackends);
  });

  it('config: null before configure, round-trips after', async () => {
    expect(await dp.readConfig()).toBeNull();
    await dp.configure(cfg);
    expect(await dp.readConfig()).toEqual({
      ...cfg,
      fibRedirect: false,
      conntrackTimeouts: DEFAULT_CT_TIMEOUTS,
      guePort: 6080,
    });
    await dp.configure({ ...cfg, guePort: 7777 });
    expect((await dp.readConfig())?.guePort).toBe(7777);
    await expect(dp.configure({ ...cfg, guePort: 0 })).rejects.toThrow(/guePort: 0/);
    await dp.configure({ ...cfg, conntrackTimeouts: { tcp: 0, udp: 45 } });
    expect((await dp.readConfig())?.conntrackTimeouts).toEqual({ tcp: 0, udp: 45 });
    await dp.configure(cfg);
    expect((await dp.readConfig())?.conntrackTimeouts).toEqual(DEFAULT_CT_TIMEOUTS);
  });

  it('rejects bad input naming the field and value', async () => {
    await expect(dp.configure({ ...cfg, ownMac: 'nope' })).rejects.toThrow(/ownMac: "nope"/);
    await expect(dp.configure({ ...cfg, mtu: 20 })).rejects.toThrow(/mtu: 20/);
    await expect(dp.configure({ ...cfg, conntrackTimeouts: { tcp: -1, udp: 1 } })).rejects.toThrow(/conntrackTimeouts.tcp: -1/);
    await expect(dp.configure({ ...cfg, conntrackTimeouts: { tcp: 1, udp: 2e6 } })).rejects.toThrow(/conntrackTimeouts.udp: 2000000/);
    await expect(dp.upsertVip({ ...vip, key: { ...vip.key, address: '10.0.0.300' } })).rejects.toThrow(/key.address: "10.0.0.300"/);
    await expect(dp.upsertVip({ ...vip, id: 100000 })).rejects.toThrow(/vip.id: 100000/);
    await expect(dp.upsertBackend({ id: 0, address: '10.1.0.1', state: 'up' })).rejects.toThrow(/backend.id: 0/);
    await expect(dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'sideways' as never })).rejects.toThrow(/state: "sideways"/);
  });

  it('a freshly loaded balancer lists no backends without reading its backends map; once written, reads it', async () => {
    const fresh = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    try {
      const reads = jest.spyOn(fresh.maps.backends, 'lookupBatchChunk');
      expect(await fresh.listBackends()).toEqual([]);
      expect(reads).not.toHaveBeenCalled();
      await fresh.upsertBackends([{ id: 7, address: '10.1.0.7', state: 'up' }]);
      expect(await fresh.listBackends()).toEqual([{ id: 7, address: '10.1.0.7', state: 'up' }]);
      expect(reads).toHaveBeenCalled();
      // an adopted balancer is read whatever it holds
      const dir = `/sys/fs/bpf/peak-xdp-test-${process.pid}/fresh`;
      const other = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
      other.pin(dir);
      const adopted = KernelDatapath.adopt({ pinDir: dir });
      try {
        const adoptedReads = jest.spyOn(adopted.maps.backends, 'lookupBatchChunk');
        expect(await adopted.listBackends()).toEqual([]);
        expect(adoptedReads).toHaveBeenCalled();
      } finally {
        adopted.close();
        other.close();
      }
    } finally {
      fresh.close();
    }
  });

  it('VIPs and backends: upsert, list, delete', async () => {
    await dp.upsertVip(vip);
    await dp.upsertVip({ ...vip, key: { ...vip.key, port: 0, protocol: 'udp' }, id: 4 });
    expect((await dp.listVips()).sort((a, b) => a.id - b.id)).toEqual([vip, { ...vip, key: { ...vip.key, port: 0, protocol: 'udp' }, id: 4 }]);
    await expect(dp.upsertVip({ ...vip, key: { ...vip.key, port: 81 } })).rejects.toThrow(/vip.id: 3 is already used/);
    await dp.deleteVip({ ...vip.key, port: 0, protocol: 'udp' });
    expect((await dp.listVips()).map((v) => v.id)).toEqual([3]);
    expect([...dp.maps.vip_addrs.keys()].length).toBe(1);
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'up' });
    await dp.upsertBackend({ id: 2, address: 'fd00::2', state: 'draining' });
    expect(await dp.listBackends()).toEqual([
      { id: 1, address: '10.1.0.1', state: 'up' },
      { id: 2, address: 'fd00::2', state: 'draining' },
    ]);
  });

  it('tables: install, read back, length checked, backend in use cannot be deleted', async () => {
    const t = Uint32Array.from([1, 1, 2, 1, 2, 2, 1]);
    await dp.installTable(3, t);
    expect(await dp.readTable(3)).toEqual(t);
    expect(await dp.readTable(4)).toBeNull();
    await expect(dp.installTable(3, new Uint32Array(5))).rejects.toThrow(/table: length 5/);
    await expect(dp.deleteBackend(2)).rejects.toThrow(/still in the table of VIP 3/);
  });

  it('a batch of tables: each entry answered on its own (ids checked as the maps are made), no map left open', async () => {
    const v7 = { ...vip, key: { ...vip.key, port: 81 }, id: 7 };
    const v8 = { ...vip, key: { ...vip.key, port: 82 }, id: 8 };
    await dp.upsertVip(v7);
    await dp.upsertVip(v8);
    await dp.upsertBackend({ id: 1, address: '10.1.0.1', state: 'up' });
    await dp.upsertBackend({ id: 2, address: '10.1.0.2', state: 'up' });
    const before = openBpfMapIds();
    const good = Uint32Array.from([2, 1, 2, 1, 2, 1, 2]);
    const r = await dp.installTables([
      { vipId: 7, table: good },
      { vipId: 8, table: Uint32Array.from([1, 2 ** 31, 1, 1, 1, 1, 1]) }, // an id with PEAK_SLOT_F_MOVED's bit
      { vipId: 8, table: good, previous: Uint32Array.from([2 ** 31 + 1]) },
      { vipId: 8, table: new Uint32Array(3) },
    ]);
    expect(r.map((e) => e?.message ?? null)).toEqual([
      null,
      'table: backend ids must be below 2147483648 (got 2147483648)',
      'table: backend ids must be below 2147483648 (got 2147483649)',
      "table: length 3 is not the VIP's tableSize 7",
    ]);
    expect(await dp.readTable(7)).toEqual(good);
    expect(await dp.readTable(8)).toBeNull();
    expect(await dp.readPreviousTable(8)).toBeNull();
    // the refused entries' maps were made (off the event loop) and closed again; the installed one stays open
    // here until the datapath is pinned (its table pin is made then)
    expect(mapsOpenedSince(before)).toHaveLength(1);
    // the installed table's ids count: backend 1 is in use, as with a table installed alone
    await expect(dp.deleteBackend(1)).rejects.toThrow(/still in the table of VIP (3|7)/);
    await dp.deleteVip(v7.key);
    await dp.deleteVip(v8.key);
  });

  it('previous tables (issue 15): install, read, clear, batch errors per entry; a deleted VIP loses its own', async () => {
    await dp.upsertBackend({ id: 5, address: '10.1.0.5', state: 'up', encap: 'gue' });
    expect((await dp.listBackends()).find((b) => b.id === 5)).toEqual({ id: 5, address: '10.1.0.5', state: 'up', encap: 'gue' });
    await expect(dp.installPreviousTable(9, new Uint32Array(3))).rejects.toThrow('vipId: VIP 9 does not exist');
    await expect(dp.installPreviousTable(3, new Uint32Array(0))).rejects.toThrow('at least 1 slot');
    await dp.installPreviousTable(3, Uint32Array.from([5, 1, 9])); // its own size; ids need not exist
    expect(await dp.readPreviousTable(3)).toEqual(Uint32Array.from([5, 1, 9]));
    expect(await dp.readTable(3)).toEqual(Uint32Array.from([1, 1, 2, 1, 2, 2, 1])); // the current one untouched
    const r = await dp.installPreviousTables([{ vipId: 3, table: null }, { vipId: 8, table: Uint32Array.from([1]) }]);
    expect(r[0]).toBeNull();
    expect(r[1]?.message).toBe('vipId: VIP 8 does not exist');
    expect(await dp.readPreviousTable(3)).toBeNull();
    // A stateless VIP reads back with its flag; a deleted one takes its previous table along.
    const sl = { ...vip, key: { ...vip.key, port: 90 }, id: 6, flags: { sourceHash: false, noConntrack: false, stateless: true } };
    await dp.upsertVip(sl);
    expect((await dp.listVips()).find((v) => v.id === 6)).toEqual(sl);
    await dp.installPreviousTable(6, Uint32Array.from([5]));
    await dp.deleteVip(sl.key);
    await dp.upsertVip(sl);
    expect(await dp.readPreviousTable(6)).toBeNull();
    await dp.deleteVip(sl.key);
    // A previous table does not pin its backends (an unset previous owner is simply not hinted).
    await dp.installPreviousTable(3, Uint32Array.from([5]));
    await dp.deleteBackend(5);
    expect(await dp.readPreviousTable(3)).toEqual(Uint32Array.from([5]));
    await dp.installPreviousTable(3, null);
  });

  it('counters and conntrack reflect traffic', async () => {
    const data = frame({ ip: { src: '192.0.2.1', dst: '10.0.0.10' }, l4: { type: 'tcp', sport: 5555, dport: 80, flags: TCP_FLAGS.SYN } });
    for (let i = 0; i < 3; i++) expect(dp.program.testRun({ data }).verdictName).toBe('TX');
    const c = await dp.counters();
    expect(c.global.xdp_tx).toBe(3n);
    expect(c.global.ct_insert).toBe(3n);
    expect(c.vips.get(3)).toEqual({ packets: 3n, bytes: BigInt(3 * data.length) });
    const ct = await dp.conntrack();
    expect(ct).toEqual([{ source: '192.0.2.1', sourcePort: 5555, destination: '10.0.0.10', destinationPort: 80, protocol: 'tcp', backendId: ct[0]!.backendId, closed: false }]);
    expect([1, 2]).toContain(ct[0]!.backendId);
    expect(c.backends.get(ct[0]!.backendId)?.packets).toBe(3n);
    // Without backends' traffic: the same global and VIP figures, no backend read.
    const lean = await dp.counters({ backends: false });
    expect(lean.global).toEqual(c.global);
    expect(lean.vips).toEqual(c.vips);
    expect(lean.backends.size).toBe(0);
  });

  it('pins and adopts without touching contents', async () => {
    dp.pin(pinDir);
    const again = KernelDatapath.adopt({ pinDir });
    try {
      expect(again.program.id).toBe(dp.program.id);
      expect(await again.listVips()).toEqual(await dp.listVips());
      expect(await again.readTable(3)).toEqual(await dp.readTable(3));
      expect(await again.readConfig()).toEqual(await dp.readConfig());
      expect((await again.counters()).global.xdp_tx).toBe(3n);
    } finally {
      again.close();
    }
    expect(() => KernelDatapath.adopt({ pinDir: join(pinDir, 'missing') })).toThrow();
  });
});
