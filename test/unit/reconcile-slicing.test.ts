// A big reconcile shares the event loop: tables go to the datapath in batches (installTables), VIP writes
// before tables, and timers get turns while it runs (the admin API, BGP timers and SIGTERM are served).
import { MemoryDatapath } from '../../src/datapath/memory';
import { validateConfig } from '../../src/model';
import { desiredState, Reconciler, TABLE_BATCH } from '../../src/reconcile';

const VIPS = 40;
const config = () => {
  const r = validateConfig({
    interface: 'eth0',
    vips: Array.from({ length: VIPS }, (_, v) => ({
      name: `v${v}`,
      address: `10.0.${v >> 8}.${v & 255}`,
      port: 80,
      backends: Array.from({ length: 5 }, (_, b) => ({ address: `10.1.${v}.${b + 1}` })),
    })),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
};

describe('reconcile slicing', () => {
  it('installs tables in batches after every VIP write, and gives the event loop turns while it runs', async () => {
    const dp = new MemoryDatapath({ maxVips: 64 });
    const batches: number[] = [];
    const real = dp.installTables.bind(dp);
    dp.installTables = (batch) => {
      batches.push(batch.length);
      return real(batch);
    };
    // Counts event-loop turns (timers) while the reconcile runs; 65537-slot tables take well over the slice.
    let ticks = 0;
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      ticks++;
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    const s = await new Reconciler(dp).reconcile(desiredState({ config: config() }));
    clearInterval(timer);
    console.log('turns during the reconcile', ticks, 'longest gap ms', maxGap.toFixed(1), 'batches', batches);

    expect(s.failures).toEqual([]);
    expect(s.tablesInstalled).toBe(VIPS);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(VIPS);
    expect(Math.max(...batches)).toBeLessThanOrEqual(TABLE_BATCH);
    expect(batches.length).toBe(Math.ceil(VIPS / TABLE_BATCH));
    expect(ticks).toBeGreaterThan(0);
    // Every VIP write comes before the first table (one burst for the kernel's VIP index).
    const order = dp.calls.map((c) => c.method).filter((m) => m === 'upsertVip' || m === 'installTable');
    expect(order.lastIndexOf('upsertVip')).toBeLessThan(order.indexOf('installTable'));
    expect(order.filter((m) => m === 'installTable')).toHaveLength(VIPS);
  });
});
