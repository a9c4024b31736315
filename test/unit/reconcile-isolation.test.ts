// Failure isolation: one VIP's failed datapath writes leave that VIP alone not programmed (the others are
// applied), the summary names it and why, the next reconcile retries it; BGP withdraws only that VIP.
import { MemoryDatapath } from '../../src/datapath/memory';
import type { Datapath } from '../../src/datapath/types';
import { announcements } from '../../src/daemon/announce';
import { Config, validateConfig } from '../../src/model';
import { DesiredState, desiredState, reconcile, Reconciler } from '../../src/reconcile';
import { BACKEND_BATCH } from '../../src/reconcile/reconciler';

interface VipIn {
  name: string;
  address?: string;
  port?: number;
  backends: string[];
}
const config = (vips: VipIn[]): Config => {
  const r = validateConfig({
    interface: 'eth0',
    vips: vips.map((v) => ({
      address: v.address ?? '10.0.0.10',
      port: v.port ?? 80,
      tableSize: 101,
      name: v.name,
      backends: v.backends.map((address) => ({ address })),
    })),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
};
/** Three VIPs on three addresses (one route each). */
const three = (): VipIn[] => [
  { name: 'a', address: '10.0.0.10', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'] },
  { name: 'b', address: '10.0.0.11', backends: ['10.1.0.2', '10.1.0.3', '10.1.0.4'] },
  { name: 'c', address: '10.0.0.12', backends: ['10.1.0.5'] },
];
const vipOf = (d: DesiredState, name: string) => d.vips.find((v) => v.name === name)!;
const idOf = (d: DesiredState, name: string): string => String(vipOf(d, name).spec.id);

/** What the datapath holds for one VIP: its spec and table, or null. */
async function held(dp: Datapath, d: DesiredState, name: string) {
  const key = vipOf(d, name).spec.key;
  const v = (await dp.listVips()).find((x) => x.key.address === key.address && x.key.port === key.port);
  if (v === undefined) return null;
  const t = await dp.readTable(v.id);
  return { id: v.id, table: t === null ? null : Array.from(t) };
}
const wanted = (d: DesiredState, name: string) => ({
  id: vipOf(d, name).spec.id,
  table: Array.from(vipOf(d, name).table.ids()),
});
const methods = (dp: MemoryDatapath) => dp.calls.map((c) => `${c.method} ${c.target}`);

/** A MemoryDatapath whose upsertBackends calls are recorded (each call's size, in `calls`). */
function countingUpserts(): { dp: MemoryDatapath; calls: number[] } {
  const dp = new MemoryDatapath({ maxBackends: 16384 });
  const calls: number[] = [];
  const real = dp.upsertBackends.bind(dp);
  dp.upsertBackends = (batch) => {
    calls.push(batch.length);
    return real(batch);
  };
  return { dp, calls };
}

describe('reconcile: a failed VIP fails alone', () => {
  it("one VIP's table install fails: the others are programmed, it is named, and the next reconcile retries it alone", async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const d = desiredState({ config: config(three()) });
    dp.failOn('installTable', idOf(d, 'b'), new Error('ENOMEM'));

    const s = await r.reconcile(d);
    expect(s.failures).toEqual([
      { op: 'installTable', target: `table of VIP ${idOf(d, 'b')}`, vips: ['b'], error: 'ENOMEM' },
    ]);
    expect(s.tablesInstalled).toBe(2);
    expect(await held(dp, d, 'a')).toEqual(wanted(d, 'a'));
    expect(await held(dp, d, 'c')).toEqual(wanted(d, 'c'));
    expect(await held(dp, d, 'b')).toEqual({ id: vipOf(d, 'b').spec.id, table: null });

    // Still failing: only b is tried again (the datapath is read afresh after a failure).
    dp.calls.length = 0;
    const again = await r.reconcile(d);
    expect(again.failures.map((f) => f.vips)).toEqual([['b']]);
    expect(methods(dp)).toEqual([]);

    // The cause goes away: the next reconcile installs b's table and nothing else.
    dp.failOn('installTable', idOf(d, 'b'), null);
    const healed = await r.reconcile(d);
    expect(healed.failures).toEqual([]);
    expect(methods(dp)).toEqual([`installTable ${idOf(d, 'b')}`]);
    expect(await held(dp, d, 'b')).toEqual(wanted(d, 'b'));
    expect((await r.reconcile(d)).operations).toBe(0);
  });

  it("a failed backend write skips that VIP's table (it keeps the old one); another VIP's change is applied", async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const d1 = desiredState({ config: config(three()) });
    expect((await r.reconcile(d1)).failures).toEqual([]);
    const next = three();
    next[0]!.backends.push('10.1.0.9');
    next[2]!.backends.push('10.1.0.6');
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    const newA = vipOf(d2, 'a').backends.find((b) => b.address === '10.1.0.9')!;
    dp.failOn('upsertBackend', String(newA.id), new Error('EPERM'));

    const s = await r.reconcile(d2);
    expect(s.failures).toEqual([
      { op: 'upsertBackend', target: `backend ${newA.id}`, vips: ['a'], error: 'EPERM' },
    ]);
    expect(s.skipped).toBe(1); // a's installTable
    expect(await held(dp, d2, 'a')).toEqual(wanted(d1, 'a'));
    expect(await held(dp, d2, 'c')).toEqual(wanted(d2, 'c'));
    expect(await held(dp, d2, 'b')).toEqual(wanted(d2, 'b'));

    dp.failOn('upsertBackend', String(newA.id), null);
    expect((await r.reconcile(d2)).failures).toEqual([]);
    expect(await held(dp, d2, 'a')).toEqual(wanted(d2, 'a'));
  });

  it("a backend leaving a failed VIP is not deleted while that VIP's installed table still names it", async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const d1 = desiredState({ config: config(three()) });
    await r.reconcile(d1);
    const gone = vipOf(d1, 'a').backends.find((b) => b.address === '10.1.0.1')!;
    const next = three();
    next[0]!.backends = ['10.1.0.2', '10.1.0.3'];
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    dp.failOn('installTable', idOf(d2, 'a'), new Error('ENOMEM'));

    const s = await r.reconcile(d2);
    // No clean-up failure on top: the delete is held back, not tried and refused.
    expect(s.failures.map((f) => [f.op, f.vips])).toEqual([['installTable', ['a']]]);
    expect((await dp.listBackends()).some((b) => b.id === gone.id)).toBe(true);
    expect(await held(dp, d2, 'a')).toEqual(wanted(d1, 'a'));

    dp.failOn('installTable', idOf(d2, 'a'), null);
    const healed = await r.reconcile(d2);
    expect(healed).toMatchObject({ failures: [], tablesInstalled: 1, backendsDeleted: 1 });
    expect((await dp.listBackends()).some((b) => b.id === gone.id)).toBe(false);
  });

  it('backend writes go in upsertBackends calls of BACKEND_BATCH; a failed one fails its VIP alone', async () => {
    const { dp, calls } = countingUpserts();
    // 42 VIPs of 100 backends (tables of 101 slots), then b: 4,202 backend writes, more than BACKEND_BATCH.
    const many: VipIn[] = [
      ...Array.from({ length: 42 }, (_, v) => ({
        name: `a${v}`,
        address: `10.0.1.${v}`,
        backends: Array.from({ length: 100 }, (_, i) => `10.2.${v}.${i + 1}`),
      })),
      { name: 'b', address: '10.0.0.11', backends: ['10.1.0.2', '10.1.0.3'] },
    ];
    const d1 = desiredState({ config: config(many) });
    const bad = vipOf(d1, 'b').backends[1]!.id;
    dp.failOn('upsertBackend', String(bad), new Error('EPERM'));
    const s = await reconcile(dp, d1);
    expect(BACKEND_BATCH).toBeLessThan(4202);
    const chunks: number[] = [];
    for (let left = 4202; left > 0; left -= BACKEND_BATCH) chunks.push(Math.min(left, BACKEND_BATCH));
    expect(calls).toEqual(chunks);
    expect(s.failures).toEqual([
      { op: 'upsertBackend', target: `backend ${bad}`, vips: ['b'], error: 'EPERM' },
    ]);
    expect(s.backendsCreated).toBe(4201);
    for (const v of ['a0', 'a41']) expect(await held(dp, d1, v)).toEqual(wanted(d1, v));
    expect(await held(dp, d1, 'b')).toBeNull(); // its later writes (VIP, table) skipped
  });

  it("a VIP's backends may span calls: a failed write skips the rest of its VIP, and what it did write is kept", async () => {
    const { dp, calls } = countingUpserts();
    const addrs = (n: number, third: number) =>
      Array.from({ length: n }, (_, i) => ({ address: `10.2.${third + (i >> 8)}.${i & 255}` }));
    const r = validateConfig({
      interface: 'eth0',
      vips: [
        { name: 'x', address: '10.0.0.10', port: 80, tableSize: 4093, backends: addrs(600, 0) },
        { name: 'big', address: '10.0.0.11', port: 80, tableSize: 16381, backends: addrs(1500, 10) },
        { name: 'y', address: '10.0.0.12', port: 80, tableSize: 101, backends: addrs(10, 20) },
      ],
    });
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    const d = desiredState({ config: r.config });
    const big = vipOf(d, 'big').backends;
    // x's 600 and big's first 424 make the first call; the failed one is among those
    dp.failOn('upsertBackend', String(big[10]!.id), new Error('EPERM'));
    const rec = new Reconciler(dp);
    const s = await rec.reconcile(d);
    expect(BACKEND_BATCH).toBe(1024);
    expect(calls).toEqual([1024, 10]);
    expect(s.failures).toEqual([
      { op: 'upsertBackend', target: `backend ${big[10]!.id}`, vips: ['big'], error: 'EPERM' },
    ]);
    expect(s.backendsCreated).toBe(600 + 423 + 10);
    expect(s.skipped).toBe(1500 - 424 + 2); // the rest of its backends, then its VIP and its table
    expect(await held(dp, d, 'big')).toBeNull();
    for (const v of ['x', 'y']) expect(await held(dp, d, v)).toEqual(wanted(d, v));

    // The next reconcile writes only what big lacks: the mirror kept the 423 written beside the failed one.
    dp.failOn('upsertBackend', String(big[10]!.id), null);
    calls.length = 0;
    const healed = await rec.reconcile(d);
    expect(healed).toMatchObject({ failures: [], backendsCreated: 1 + 1500 - 424, tablesInstalled: 1 });
    expect(calls).toEqual([1024, 1077 - 1024]);
    expect(await held(dp, d, 'big')).toEqual(wanted(d, 'big'));
  });

  it('VIPs no longer wanted go in one deleteVips call; one that fails to go fails alone', async () => {
    const dp = new MemoryDatapath();
    const d1 = desiredState({ config: config(three()) });
    await reconcile(dp, d1);
    const calls: number[] = [];
    const real = dp.deleteVips.bind(dp);
    dp.deleteVips = (keys) => {
      calls.push(keys.length);
      return real(keys);
    };
    dp.failOn('deleteVip', '10.0.0.11:80/tcp', new Error('EBUSY'));
    const d2 = desiredState({ config: config(three().slice(0, 1)), ids: d1.ids });
    const s = await reconcile(dp, d2);
    expect(calls).toEqual([2]);
    expect(s.failures).toEqual([{ op: 'deleteVip', target: '10.0.0.11:80/tcp', vips: [], error: 'EBUSY' }]);
    expect(s.vipsDeleted).toBe(1);
    expect((await dp.listVips()).map((v) => v.key.address).sort()).toEqual(['10.0.0.10', '10.0.0.11']);
  });

  it('a failed delete of a VIP no longer wanted withholds no desired VIP; a failed configure fails them all', async () => {
    const dp = new MemoryDatapath();
    const d1 = desiredState({ config: config(three()) });
    await reconcile(dp, d1);
    const d2 = desiredState({ config: config(three().slice(0, 2)), ids: d1.ids });
    dp.failOn('deleteVip', '10.0.0.12:80/tcp', new Error('EBUSY'));
    const s = await reconcile(dp, d2);
    expect(s.failures).toEqual([{ op: 'deleteVip', target: '10.0.0.12:80/tcp', vips: [], error: 'EBUSY' }]);
    // c's backend stays too: c's table still names it.
    expect(s.backendsDeleted).toBe(0);

    const fresh = new MemoryDatapath();
    const withConfig = desiredState({
      config: config(three()),
      datapathConfig: {
        ownMac: '02:00:00:00:00:01',
        nextHopMac: '02:00:00:00:00:02',
        encapSourceV4: null,
        encapSourceV6: null,
        mtu: 1500,
      },
    });
    fresh.failNext('configure', new Error('EFAULT'));
    const all = await reconcile(fresh, withConfig);
    expect(all.failures).toEqual([
      { op: 'configure', target: 'config', vips: ['a', 'b', 'c'], error: 'EFAULT' },
    ]);
    expect(await fresh.listVips()).toEqual([]);
  });
});

describe('announcements: only the failed VIP is withdrawn', () => {
  it('reconcile failures -> the daemon facts -> routes without that VIP, and it is back once programmed', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const cfg = config(three());
    const d = desiredState({ config: cfg });
    dp.failOn('installTable', idOf(d, 'b'), new Error('ENOMEM'));
    const s = await r.reconcile(d);
    const facts = (failedVips: Set<string>) => ({
      desired: d,
      vipConfigs: cfg.vips,
      attached: true,
      reconcileFailed: false,
      failedVips,
    });
    const failed = new Set(s.failures.flatMap((f) => f.vips));
    const dec = announcements(facts(failed));
    expect(dec.announce.map((x) => x.prefix)).toEqual(['10.0.0.10/32', '10.0.0.12/32']);
    expect(dec.withheld).toEqual([{ vip: '10.0.0.11', reason: 'not-programmed' }]);

    dp.failOn('installTable', idOf(d, 'b'), null);
    const healed = await r.reconcile(d);
    expect(announcements(facts(new Set(healed.failures.flatMap((f) => f.vips)))).announce).toHaveLength(3);
    // Node-wide facts still withdraw everything.
    expect(announcements({ ...facts(new Set()), attached: false }).announce).toEqual([]);
    expect(announcements({ ...facts(new Set()), reconcileFailed: true }).announce).toEqual([]);
  });

  it('a failed VIP that shares its address with a programmed one keeps the route (routes are per address)', () => {
    const cfg = config([
      { name: 'web', address: '10.0.0.10', port: 80, backends: ['10.1.0.1'] },
      { name: 'tls', address: '10.0.0.10', port: 443, backends: ['10.1.0.1'] },
    ]);
    const d = desiredState({ config: cfg });
    const dec = announcements({
      desired: d,
      vipConfigs: cfg.vips,
      attached: true,
      reconcileFailed: false,
      failedVips: new Set(['tls']),
    });
    expect(dec.announce.map((x) => x.prefix)).toEqual(['10.0.0.10/32']);
    expect(dec.withheld).toEqual([{ vip: '10.0.0.10', reason: 'not-programmed' }]);
  });
});
