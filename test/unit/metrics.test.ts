// The metrics registry: per-VIP and per-backend series from the datapath and desired state; the
// admin.perBackendMetrics switch drops every per-backend series; counter families; operator metrics.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { MemoryDatapath } from '../../src/datapath/memory';
import type { CountersOptions } from '../../src/datapath/types';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMetrics, kubernetesPoolOf, poolUsage, renderRegistry } from '../../src/metrics';
import { placeCounter } from '../../src/metrics/counters';
import { Sampled } from '../../src/metrics/sampled';
import { parsePool } from '../../src/sources/kubernetes/pool';
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
    tableWorkers: () => 2,
    perBackend,
  });
  return { m, dp };
}

/** Packets of a few flows through the modelled datapath: the VIP's and its backends' traffic counters move. */
function sendTraffic(dp: MemoryDatapath): void {
  for (let i = 0; i < 20; i++)
    dp.forward({ vip: { address: '10.9.9.9', port: 80, protocol: 'tcp' }, source: `192.0.2.${i + 1}`, sourcePort: 1000 + i }); // prettier-ignore
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
    expect(text).toMatch(/^peak_xdp_table_workers 2$/m);
    expect(text).toMatch(/^peak_xdp_vip_fail_open\{vip="web"\} 0$/m);
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    // promtool: only counters end in _total (prom-client's three nodejs_active_*_total gauges are dropped).
    expect(text).not.toMatch(/^# TYPE \S+_total gauge$/m);
  });

  it("counts the process's CPU from the process's start, not from the metrics' registration", async () => {
    const before = process.cpuUsage();
    const { m } = await metricsOf(false);
    const value = async (name: string): Promise<number> =>
      ((await m.registry.getSingleMetric(name)!.get()) as { values: { value: number }[] }).values[0]!.value;
    // this jest worker has run for a while: well over the registration's own CPU
    expect(before.user + before.system).toBeGreaterThan(50_000);
    expect(await value('process_cpu_seconds_total')).toBeGreaterThanOrEqual(
      (before.user + before.system) / 1e6,
    );
    expect(await value('process_cpu_user_seconds_total')).toBeGreaterThanOrEqual(before.user / 1e6);
    expect(await value('process_cpu_system_seconds_total')).toBeGreaterThanOrEqual(before.system / 1e6);
  });

  it("processMetrics 'later': the process series come at processMetrics() or the first render", async () => {
    const make = () =>
      createMetrics({
        datapath: new MemoryDatapath(),
        desired: () => null,
        health: () => [],
        attached: () => true,
        perBackend: false,
        processMetrics: 'later',
      });
    const asked = make();
    expect(asked.registry.getSingleMetric('process_cpu_seconds_total')).toBeUndefined();
    expect(await asked.registry.metrics()).toMatch(/^peak_xdp_attached 1$/m);
    asked.processMetrics();
    asked.processMetrics(); // once only (a second registration would throw)
    expect(asked.registry.getSingleMetric('process_cpu_seconds_total')).toBeDefined();
    const scraped = make();
    const text = await scraped.render();
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    expect(text).toMatch(/^peak_xdp_attached 1$/m);
    expect((await make().renderChunks()).join('')).toMatch(/^process_resident_memory_bytes \d+/m);
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

  it.each([true, false])(
    "perBackend %s: a render reads backends' traffic only for the per-backend series",
    async (perBackend) => {
      const { m, dp } = await metricsOf(perBackend);
      sendTraffic(dp);
      const asked: (CountersOptions | undefined)[] = [];
      const real = dp.counters.bind(dp);
      dp.counters = (o?: CountersOptions) => {
        asked.push(o);
        return real(o);
      };
      const text = await m.render();
      expect(asked).toEqual([{ backends: perBackend }]);
      // the VIP's traffic either way; a backend's only with the per-backend series
      expect(text).toMatch(
        /^peak_xdp_vip_packets_total\{vip="web",address="10\.9\.9\.9",port="80",protocol="tcp"\} [1-9]\d*$/m,
      );
      if (perBackend)
        expect(text).toMatch(/^peak_xdp_backend_packets_total\{vip="web",backend="10\.1\.0\.1"\} [1-9]\d*$/m);
      else expect(text).not.toMatch(/peak_xdp_backend_packets_total\{/);
    },
  );

  it('render() reads the datapath counters once for the whole render, and again for the next one', async () => {
    const { m, dp } = await metricsOf(true);
    let reads = 0;
    const real = dp.counters.bind(dp);
    dp.counters = (o) => {
      reads++;
      return real(o);
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

describe('metric families of the datapath counters', () => {
  /** Counter names as userspace reads them from BTF: enum peak_counter in bpf/shared.h, lower-case. */
  const sharedCounters = (): string[] => {
    const h = readFileSync(join(__dirname, '..', '..', 'bpf', 'shared.h'), 'utf8');
    const body = /enum peak_counter \{([\s\S]*?)\};/.exec(h)![1]!;
    return [...body.matchAll(/PEAK_CNT_([A-Z0-9_]+)/g)]
      .map((m) => m[1]!.toLowerCase())
      .filter((n) => n !== 'max');
  };

  it('every counter of bpf/shared.h has a family of its own meaning (none in "other")', () => {
    const names = sharedCounters();
    expect(names.length).toBeGreaterThan(30);
    expect(names.filter((n) => placeCounter(n).family === 'other')).toEqual([]);
    // Each family+label value is taken by one counter only: no two counters collapse into one series.
    const keys = names.map((n) => `${placeCounter(n).family}|${placeCounter(n).value}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(placeCounter('drop_no_backend')).toEqual({ family: 'drop', value: 'no_backend' });
    expect(placeCounter('pass_not_vip')).toEqual({ family: 'pass', value: 'not_vip' });
    expect(placeCounter('xdp_tx')).toEqual({ family: 'verdict', value: 'tx' });
    expect(placeCounter('drop_some_new_reason')).toEqual({ family: 'drop', value: 'some_new_reason' });
    expect(placeCounter('brand_new')).toEqual({ family: 'other', value: 'brand_new' });
  });

  it('the scrape splits the counters into families whose members add up', async () => {
    const { m, dp } = await metricsOf(true);
    const real = dp.counters.bind(dp);
    dp.counters = async () => {
      const c = await real();
      return {
        ...c,
        global: { ...c.global, drop_fragment: 3n, drop_no_backend: 4n, encap_v4: 7n, xdp_drop: 7n },
      };
    };
    const text = await m.render();
    expect(text).toMatch(/^peak_xdp_dropped_packets_total\{reason="fragment"\} 3$/m);
    expect(text).toMatch(/^peak_xdp_dropped_packets_total\{reason="no_backend"\} 4$/m);
    expect(text).toMatch(/^peak_xdp_forwarded_packets_total\{encap="ipv4"\} 7$/m);
    expect(text).toMatch(/^peak_xdp_verdicts_total\{verdict="drop"\} 7$/m);
    expect(text).not.toMatch(/^peak_xdp_dropped_packets_total\{reason="ipv4"\}/m);
    // The deprecated mixed family is still there for one release.
    expect(text).toMatch(/^peak_xdp_datapath_events_total\{counter="drop_fragment"\} 3$/m);
  });
});

describe('operator metrics', () => {
  const build = { version: '1.2.3+4.gabc1234', commit: 'a'.repeat(40) };
  const base = async () => {
    const { dp } = await metricsOf(true);
    return {
      datapath: dp,
      desired: () => null,
      health: () => [],
      attached: () => true,
      perBackend: true,
      build,
    };
  };

  it('build info, reload success and timestamp, leader and pool', async () => {
    let reloadError: string | null = null;
    let leader = true;
    const m = createMetrics({
      ...(await base()),
      reloadError: () => reloadError,
      leader: () => leader,
      pool: () => ({ entries: ['10.0.0.0/30', '10.0.1.5-10.0.1.6'], addresses: ['10.0.0.1', '10.0.0.2', '10.9.9.9', '10.0.0.1'] }), // prettier-ignore
    });
    m.configApplied(1_700_000_000_000);
    let text = await m.render();
    expect(text).toMatch(
      new RegExp(`^peak_xdp_build_info\\{version="1\\.2\\.3\\+4\\.gabc1234",commit="${'a'.repeat(40)}",nodejs="v[^"]+"\\} 1$`, 'm'), // prettier-ignore
    );
    expect(text).toMatch(/^peak_xdp_config_last_reload_success 1$/m);
    expect(text).toMatch(/^peak_xdp_config_last_reload_timestamp_seconds 1700000000$/m);
    expect(text).toMatch(/^peak_xdp_k8s_leader 1$/m);
    // A /30's allocatable addresses: .1 and .2 (the pool leaves out network and broadcast addresses).
    expect(text).toMatch(/^peak_xdp_k8s_pool_addresses\{range="10\.0\.0\.0\/30"\} 2$/m);
    expect(text).toMatch(/^peak_xdp_k8s_pool_addresses_in_use\{range="10\.0\.0\.0\/30"\} 2$/m);
    expect(text).toMatch(/^peak_xdp_k8s_pool_addresses\{range="10\.0\.1\.5-10\.0\.1\.6"\} 2$/m);
    expect(text).toMatch(/^peak_xdp_k8s_pool_addresses_in_use\{range="10\.0\.1\.5-10\.0\.1\.6"\} 0$/m);
    reloadError = 'vips[0].port: "x" is not a number';
    leader = false;
    text = await m.render();
    expect(text).toMatch(/^peak_xdp_config_last_reload_success 0$/m);
    expect(text).toMatch(/^peak_xdp_k8s_leader 0$/m);
  });

  it('connection-table fill is counted at most once per interval', async () => {
    let counts = 0;
    let entries = 100;
    const m = createMetrics({
      ...(await base()),
      conntrackSampleMs: 60_000,
      conntrackTable: () => ({ maxEntries: 1000, countEntries: async () => (counts++, entries) }),
    });
    let text = await m.render();
    expect(text).toMatch(/^peak_xdp_conntrack_fill_ratio 0\.1$/m);
    expect(text).toMatch(/^peak_xdp_conntrack_entries 100$/m);
    expect(text).toMatch(/^peak_xdp_conntrack_max_entries 1000$/m);
    entries = 900;
    text = await m.render();
    // Within the interval: the last count, and no second walk of the table.
    expect(text).toMatch(/^peak_xdp_conntrack_fill_ratio 0\.1$/m);
    expect(counts).toBe(1);
  });

  it('health-check durations go into a histogram by type and result', async () => {
    const checks = new EventEmitter();
    const m = createMetrics({ ...(await base()), healthChecks: checks });
    checks.emit('checked', { type: 'http', result: 'success', durationMs: 3 });
    checks.emit('checked', { type: 'http', result: 'failure', durationMs: 700 });
    const text = await m.render();
    expect(text).toMatch(/^peak_xdp_health_check_duration_seconds_count\{type="http",result="success"\} 1$/m);
    expect(text).toMatch(/^peak_xdp_health_check_duration_seconds_bucket\{le="0\.005",type="http",result="success"\} 1$/m); // prettier-ignore
    expect(text).toMatch(/^peak_xdp_health_check_duration_seconds_bucket\{le="0\.5",type="http",result="failure"\} 0$/m); // prettier-ignore
  });

  it('Sampled shares one read between concurrent callers and re-reads after the interval', async () => {
    let now = 0;
    let reads = 0;
    const s = new Sampled({ intervalMs: 10, now: () => now, read: async () => ++reads });
    expect(await Promise.all([s.get(), s.get()])).toEqual([1, 1]);
    now = 9;
    expect(await s.get()).toBe(1);
    now = 10;
    expect(await s.get()).toBe(2);
    expect(() => new Sampled({ intervalMs: -1, read: async () => 0 })).toThrow(/intervalMs: -1/);
  });

  it('poolUsage counts distinct addresses per range; kubernetesPoolOf reads the kubernetes section', () => {
    const r = parsePool(['10.0.0.0/31', '2001:db8::/126']);
    if (!r.ok) throw new Error(r.errors.join());
    expect(poolUsage(r.pool, ['10.0.0.1', '10.0.0.1', '2001:db8::3', '10.0.0.9'])).toEqual([
      { range: '10.0.0.0/31', size: 2, used: 1 },
      { range: '2001:db8::/126', size: 4, used: 1 },
    ]);
    expect(kubernetesPoolOf({ kubernetes: { pool: ['10.0.0.0/31'] } }, [{ address: '10.0.0.1' }])).toEqual({
      entries: ['10.0.0.0/31'],
      addresses: ['10.0.0.1'],
    });
    expect(kubernetesPoolOf({}, [])).toBeNull();
  });
});
