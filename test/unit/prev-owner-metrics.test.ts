// Metrics of issue 15: the previous-table gauges per VIP from Reconciler.previousOwners, and the datapath's
// hint / GUE / stateless counters in families of their own.
import { Registry } from 'prom-client';
import { MemoryDatapath } from '../../src/datapath/memory';
import { createMetrics } from '../../src/metrics';
import { COUNTER_FAMILIES, placeCounter } from '../../src/metrics/counters';
import { validateConfig } from '../../src/model';
import { desiredState, DesiredState, IdState, Reconciler } from '../../src/reconcile';

function config(backends: number[]) {
  const r = validateConfig({
    interface: 'eth0',
    vips: [
      {
        name: 'web',
        address: '10.0.0.10',
        port: 80,
        tableSize: 101,
        encap: 'gue',
        backends: backends.map((i) => ({ address: `10.1.0.${i}` })),
      },
      { name: 'plain', address: '10.0.0.11', port: 80, tableSize: 101, backends: [{ address: '10.1.0.9' }] },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

describe('previous-table metrics', () => {
  test('age, time to expiry and retained slots per VIP; none for a VIP with nothing retained', async () => {
    let t = 1_000_000;
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp, { now: () => t });
    let ids: IdState | undefined;
    let desired: DesiredState | null = null;
    const apply = async (backends: number[]) => {
      desired = desiredState({ config: config(backends), ids });
      ids = desired.ids;
      return r.reconcile(desired);
    };
    const m = createMetrics({
      datapath: dp,
      desired: () => desired,
      health: () => [],
      attached: () => true,
      perBackend: false,
      previousOwners: () => r.previousOwners(),
      now: () => t,
      registry: new Registry(),
    });
    await apply([1, 2, 3]);
    let text = await m.render();
    expect(text).not.toMatch(/^peak_xdp_previous_table_age_seconds\{/m);
    await apply([1, 2, 3, 4]);
    t += 30_000;
    text = await m.render();
    expect(text).toMatch(/^peak_xdp_previous_table_age_seconds\{vip="web"\} 30$/m);
    expect(text).toMatch(/^peak_xdp_previous_table_expiry_seconds\{vip="web"\} 270$/m);
    const slots = Number(/^peak_xdp_previous_table_slots\{vip="web"\} (\d+)$/m.exec(text)?.[1]);
    expect(slots).toBe(r.previousOwners().find((v) => v.vipId === 0)!.retainedSlots);
    expect(slots).toBeGreaterThan(0);
    expect(text).not.toMatch(/^peak_xdp_previous_table_\w+\{vip="plain"\}/m);
    t += 300_000;
    await apply([1, 2, 3, 4]);
    text = await m.render();
    expect(text).not.toMatch(/^peak_xdp_previous_table_slots\{/m);
  });

  test('the issue-15 datapath counters each have a family of their own', () => {
    expect(placeCounter('hint_sent')).toEqual({ family: 'hint', value: null });
    expect(placeCounter('hint_skipped_owner')).toEqual({ family: 'hintSkipped', value: null });
    expect(placeCounter('encap_gue')).toEqual({ family: 'gue', value: null });
    expect(placeCounter('stateless_forward')).toEqual({ family: 'stateless', value: null });
    expect(COUNTER_FAMILIES.hint.name).toBe('peak_xdp_second_chance_hints_total');
  });

  test('a scrape exports the hint counters under their family names', async () => {
    const dp = new MemoryDatapath();
    dp.counters = async () => ({
      global: { hint_sent: 7n, hint_skipped_owner: 2n, encap_gue: 11n, stateless_forward: 5n },
      vips: new Map(),
      backends: new Map(),
    });
    const m = createMetrics({
      datapath: dp,
      desired: () => null,
      health: () => [],
      attached: () => true,
      perBackend: false,
      registry: new Registry(),
    });
    const text = await m.render();
    expect(text).toMatch(/^peak_xdp_second_chance_hints_total 7$/m);
    expect(text).toMatch(/^peak_xdp_second_chance_hints_skipped_owner_total 2$/m);
    expect(text).toMatch(/^peak_xdp_gue_encapsulated_packets_total 11$/m);
    expect(text).toMatch(/^peak_xdp_stateless_forwarded_packets_total 5$/m);
  });
});
