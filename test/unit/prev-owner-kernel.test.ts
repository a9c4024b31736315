// Previous tables through reconcile into the real kernel maps (KernelDatapath, maglev_prev_tables): written on a
// change of a GUE VIP, adopted unchanged by a reconciler on a re-adopted (pinned) datapath, expired later.
// Privileged (BPF maps); no interface, namespace or traffic: pins under /sys/fs/bpf/guc-<pid>, removed after.
import { rmSync } from 'node:fs';
import { KernelDatapath } from '../../src/datapath/kernel';
import { BpfMap } from '../../src/datapath/bpf';
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

/** What slot `i` of maglev_prev_tables holds: nothing, the empty table (M = 0: cleared), or a table of M slots. */
function prevSlot(dp: KernelDatapath, i: number): 'none' | 'empty' | { m: number } {
  const id = dp.maps.maglev_prev_tables.innerId(i);
  if (id === null) return 'none';
  const m = BpfMap.fromId(id);
  try {
    const head = m.readU32s(0, 1)[0]!;
    return head === 0 ? 'empty' : { m: head };
  } finally {
    m.close();
  }
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
    // generation 0 is cleared (it was never written: nothing there); the adoption below must find it through the
    // pinned table's parity bit
    expect(prevSlot(dp!, 1)).toEqual({ m: 251 });
    expect(prevSlot(dp!, 0)).toBe('none');

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
    // expiry swaps in the table with no previous table: the new generation is the empty table, the old one is
    // cleared to it after the swap (no slot deleted: a delete waits an RCU grace period per slot)
    expect([0, 1].map((i) => prevSlot(again!, i))).toEqual(['empty', 'empty']);
  });
});
