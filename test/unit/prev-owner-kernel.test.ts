// Previous tables through reconcile into the real kernel maps (KernelDatapath, maglev_prev_tables): written on a
// change of a GUE VIP, adopted unchanged by a reconciler on a re-adopted (pinned) datapath, expired later.
// Privileged (BPF maps); no interface, namespace or traffic: pins under /sys/fs/bpf/guc-<pid>, removed after.
import { rmSync } from 'node:fs';
import { KernelDatapath } from '../../src/datapath/kernel';
import type { DatapathConfig } from '../../src/datapath/types';
import { validateConfig } from '../../src/model';
import { desiredState, DesiredState, IdState, Reconciler } from '../../src/reconcile';
import { describePrivileged } from '../helpers/privileged';

const DP_CONFIG: DatapathConfig = {
  ownMac: '02:00:00:00:01:01',
  nextHopMac: '02:00:00:00:01:fe',
  encapSourceV4: { prefix: '10.255.0.1', prefixLength: 32 },
  encapSourceV6: null,
  mtu: 1500,
};

function desired(backends: number[], ids: IdState | undefined): DesiredState {
  const r = validateConfig({
    interface: 'eth0',
    secondChance: { retainSeconds: 60 },
    limits: { maxVips: 16, maxBackends: 256, conntrackEntries: 4096 },
    vips: [
      {
        name: 'web',
        address: '10.0.0.10',
        port: 80,
        tableSize: 251,
        encap: 'gue',
        backends: backends.map((i) => ({ address: `10.1.0.${i}` })),
      },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return desiredState({ config: r.config, ids, datapathConfig: DP_CONFIG });
}

describePrivileged('previous tables in the kernel', () => {
  const root = `/sys/fs/bpf/guc-${process.pid}`;
  const pinDir = `${root}/ns/eth0`;
  let dp: KernelDatapath | null = null;
  let again: KernelDatapath | null = null;
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096, vips: 16, backends: 256 } });
  });
  afterAll(() => {
    again?.close();
    dp?.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('written before the change, adopted untouched after a restart, cleared at expiry', async () => {
    let t = 1_000_000;
    const r = new Reconciler(dp!, { now: () => t });
    const d1 = desired([1, 2, 3], undefined);
    expect((await r.reconcile(d1)).failures).toEqual([]);
    expect((await dp!.listVips())[0]!.flags.stateless).toBe(true);
    expect(await dp!.readPreviousTable(0)).toBe(null);
    const before = (await dp!.readTable(0))!;
    t += 1000;
    const d2 = desired([1, 2, 3, 4], d1.ids);
    const s2 = await r.reconcile(d2);
    expect(s2.failures).toEqual([]);
    expect(s2.previousTablesWritten).toBe(1);
    const after = (await dp!.readTable(0))!;
    const prev = (await dp!.readPreviousTable(0))!;
    let moved = 0;
    for (let s = 0; s < after.length; s++) {
      expect(prev[s]).toBe(before[s] !== after[s] ? before[s] : after[s]);
      if (before[s] !== after[s]) moved++;
    }
    console.log(`kernel: ${moved} of ${after.length} slots moved and name their previous owner`);
    expect(moved).toBeGreaterThan(0);
    // the pair went in as one swap: the new table carries generation 1, its previous table sits at 0 * 2 + 1 and
    // generation 0 is gone; the adoption below must find it through the pinned table's parity bit
    expect(dp!.maps.maglev_prev_tables.innerId(1)).not.toBeNull();
    expect(dp!.maps.maglev_prev_tables.innerId(0)).toBeNull();

    // Restart: the maps are pinned and adopted by a new datapath object and a new reconciler.
    dp!.pin(pinDir);
    again = KernelDatapath.adopt({ pinDir });
    t += 5000;
    const r2 = new Reconciler(again, { now: () => t });
    const s3 = await r2.reconcile(desired([1, 2, 3, 4], d2.ids));
    expect(s3.failures).toEqual([]);
    expect(s3.tablesInstalled).toBe(0);
    expect([...(await again.readPreviousTable(0))!]).toEqual([...prev]);
    expect(s3.nextPreviousExpiry).toBe(t + 60_000);
    t += 60_000;
    const s4 = await r2.reconcile(desired([1, 2, 3, 4], d2.ids));
    expect(s4.previousTablesWritten).toBe(1);
    expect(await again.readPreviousTable(0)).toBe(null);
    expect([0, 1].map((i) => again!.maps.maglev_prev_tables.innerId(i))).toEqual([null, null]);
  });
});
