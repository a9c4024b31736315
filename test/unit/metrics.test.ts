// The metrics registry: per-VIP and per-backend series from the datapath and desired state; the
// admin.perBackendMetrics switch drops every per-backend series.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { MemoryDatapath } from '../../src/datapath/memory';
import { createMetrics, renderRegistry } from '../../src/metrics';
import { validateConfig } from '../../src/model';
import { desiredState, reconcile } from '../../src/reconcile';

async function metricsOf(perBackend: boolean) {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:02',
    encapSource: ['10.0.0.1'],
    vips: [
      {
        name: 'web',
        address: '10.9.9.9',
        port: 80,
        tableSize: 13,
        healthCheck: { type: 'tcp', port: 80 },
        backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', drain: true }],
      },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const dp = new MemoryDatapath();
  const desired = desiredState({ config: r.config });
  await reconcile(dp, desired);
  const m = createMetrics({
    datapath: dp,
    desired: () => desired,
    health: () => [],
    attached: () => true,
    perBackend,
  });
  return { m, dp };
}

async function scrape(perBackend: boolean): Promise<string> {
  return (await metricsOf(perBackend)).m.registry.metrics();
}

describe('metrics', () => {
  it('exports VIP, backend state and process series', async () => {
    const text = await scrape(true);
    expect(text).toMatch(/^peak_xdp_vip_usable_backends\{vip="web"\} 1$/m);
    expect(text).toMatch(/^peak_xdp_backend_state\{vip="web",backend="10\.1\.0\.2",state="draining"\} 1$/m);
    expect(text).toMatch(/^peak_xdp_backend_state\{vip="web",backend="10\.1\.0\.1",state="up"\} 1$/m);
    expect(text).toMatch(/^peak_xdp_attached 1$/m);
    expect(text).toMatch(/^peak_xdp_vip_fail_open\{vip="web"\} 0$/m);
    expect(text).toMatch(/^# TYPE peak_xdp_process_cpu_seconds_total counter$/m);
  });

  it('admin.perBackendMetrics: false drops every per-backend series and keeps the rest', async () => {
    const text = await scrape(false);
    expect(text).not.toMatch(/peak_xdp_backend_state|peak_xdp_backend_packets_total|peak_xdp_health_status/);
    expect(text).toMatch(/^peak_xdp_vip_usable_backends\{vip="web"\} 1$/m);
  });

  it('renderRegistry gives the text registry.metrics() gives, one metric at a time', async () => {
    const registry = new Registry();
    const c = new Counter({ name: 'a_total', help: 'a "counter"\nwith a newline', labelNames: ['x'], registers: [registry] }); // prettier-ignore
    c.inc({ x: 'one' }, 2);
    c.inc({ x: 'tw"o\\' });
    new Gauge({ name: 'b', help: 'a gauge', registers: [registry] }).set(-1.5);
    const h = new Histogram({ name: 'c_seconds', help: 'h', buckets: [0.1, 1], labelNames: ['y'], registers: [registry] }); // prettier-ignore
    h.observe({ y: 'z' }, 0.5);
    new Gauge({ name: 'd_empty', help: 'no samples', labelNames: ['z'], registers: [registry] });
    expect(registry.getMetricsAsArray()).toHaveLength(4);
    expect(await renderRegistry(registry)).toBe(await registry.metrics());
  });

  it('render() reads the datapath counters once for the whole render, and again for the next one', async () => {
    const { m, dp } = await metricsOf(true);
    let reads = 0;
    const real = dp.counters.bind(dp);
    dp.counters = () => {
      reads++;
      return real();
    };
    const text = await m.render();
    expect(text).toMatch(/^peak_xdp_vip_usable_backends\{vip="web"\} 1$/m);
    expect(text).toMatch(/^# TYPE peak_xdp_datapath_events_total counter$/m);
    expect(text).toMatch(/^# TYPE peak_xdp_backend_packets_total counter$/m);
    expect(reads).toBe(1);
    await m.render();
    expect(reads).toBe(2);
  });
});
