// Large families written as text (TextFamily): the same bytes prom-client writes, in chunks with event-loop
// turns between them; per-backend series off by default, per-VIP counts by state instead; probe gauges.
import { Gauge, Registry } from 'prom-client';
import { MemoryDatapath } from '../../src/datapath/memory';
import type { TargetSnapshot } from '../../src/health';
import { createMetrics, renderRegistry, renderRegistryChunks } from '../../src/metrics';
import { SERIES_PER_CHUNK, SERIES_PER_WRITE, TextFamily } from '../../src/metrics/text-family';
import { validateConfig } from '../../src/model';
import { desiredState, reconcile } from '../../src/reconcile';

const awkward = ['plain', 'with "quotes"', 'back\\slash', 'new\nline', ''];

describe('TextFamily', () => {
  it('writes what prom-client writes for the same series, escaping included', async () => {
    const values = [1, 0, -2.5, NaN, Infinity, -Infinity, 1e21, 123456789012];
    const ours = new Registry();
    const theirs = new Registry();
    new TextFamily({
      name: 'x_total',
      help: 'help with \\ and\nnewline',
      type: 'counter',
      labelNames: ['a', 'b'],
      registers: [ours],
      read: () => awkward,
      *series(data, emit) {
        for (const [i, a] of data.entries()) {
          emit([a, String(i)], values[i % values.length]!);
          yield;
        }
      },
    });
    const g = new Gauge({ name: 'x_total', help: 'help with \\ and\nnewline', labelNames: ['a', 'b'], registers: [theirs] }); // prettier-ignore
    for (const [i, a] of awkward.entries()) g.set({ a, b: String(i) }, values[i % values.length]!);
    const expected = (await theirs.metrics()).replace('# TYPE x_total gauge', '# TYPE x_total counter');
    expect(await renderRegistry(ours)).toBe(expected);
    // prom-client reading the family itself (get()) gives the same text.
    expect(await ours.metrics()).toBe(expected);
    expect(expected.split('\n').filter((l) => l.startsWith('x_total{'))).toHaveLength(awkward.length);
  });

  it('a family of no labels and of no series', async () => {
    const r = new Registry();
    new TextFamily({ name: 'one', help: 'h', type: 'gauge', labelNames: [], registers: [r], read: () => 7, *series(v, emit) { emit([], v); yield; } }); // prettier-ignore
    new TextFamily({ name: 'none', help: 'h', type: 'gauge', labelNames: ['l'], registers: [r], read: () => 0, *series() { yield; } }); // prettier-ignore
    expect(await renderRegistry(r)).toBe(
      '# HELP one h\n# TYPE one gauge\none 7\n\n# HELP none h\n# TYPE none gauge\n',
    );
    expect(await renderRegistry(r)).toBe(await r.metrics());
  });

  /** A family `name` of `n` series, label i = label(k) and value k for k = 0 .. n - 1. */
  const counting = (r: Registry, name: string, n: number, label: (k: number) => string) =>
    new TextFamily({
      name,
      help: 'h',
      type: 'gauge',
      labelNames: ['i'],
      registers: [r],
      read: () => n,
      *series(count, emit) {
        for (let k = 0; k < count; k++) {
          emit([label(k)], k);
          yield;
        }
      },
    });

  it('gives the event loop a turn between chunks of a large family', async () => {
    const r = new Registry();
    const n = 5 * SERIES_PER_CHUNK + 3;
    counting(r, 'big', n, String);
    let turns = 0;
    const tick = setInterval(() => turns++, 0);
    const text = await renderRegistry(r);
    clearInterval(tick);
    const lines = text.split('\n').filter((l) => l.startsWith('big{'));
    expect(lines).toHaveLength(n);
    expect(lines[n - 1]).toBe(`big{i="${n - 1}"} ${n - 1}`);
    expect(turns).toBeGreaterThanOrEqual(3);
  });

  it('writes a large family in strings of SERIES_PER_WRITE series; renderRegistryChunks is the same text in Buffers', async () => {
    const r = new Registry();
    const fam = counting(r, 'many', 3 * SERIES_PER_WRITE + 7, (k) => `é${k}`);
    const writes: string[] = [];
    await fam.text((s) => writes.push(s));
    // the HELP/TYPE lines, three full strings of series, then the rest
    expect(writes.map((w) => w.split('\n').filter((l) => l.startsWith('many{')).length)).toEqual([0, SERIES_PER_WRITE, SERIES_PER_WRITE, SERIES_PER_WRITE, 7]); // prettier-ignore
    const chunks = await renderRegistryChunks(r);
    expect(Buffer.concat(chunks).toString()).toBe(await renderRegistry(r));
    expect(Buffer.concat(chunks).toString()).toBe(await r.metrics());
  });

  it('rejects bad names naming the field', () => {
    const o = {
      help: 'h',
      type: 'gauge' as const,
      registers: [],
      read: () => 0,
      *series() {
        yield;
      },
    };
    expect(() => new TextFamily({ ...o, name: '1x', labelNames: [] })).toThrow(
      'name: "1x" is not a metric name',
    );
    expect(() => new TextFamily({ ...o, name: 'x', labelNames: ['a-b'] })).toThrow('labelNames: "a-b" is not a label name'); // prettier-ignore
  });
});

describe('createMetrics at a few hundred memberships', () => {
  async function setup(raw: Record<string, unknown>) {
    const r = validateConfig({
      interface: 'eth0',
      nextHopMac: '02:00:00:00:00:02',
      encapSource: ['10.0.0.1'],
      ...raw,
      vips: Array.from({ length: 4 }, (_, v) => ({
        name: `vip${v}`,
        address: `10.9.9.${v + 1}`,
        port: 80,
        tableSize: 251,
        healthCheck: { type: 'tcp' },
        backends: Array.from({ length: 50 }, (_, b) => ({
          address: `10.1.${v}.${b + 1}`,
          drain: b % 10 === 0,
        })),
      })),
    });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const dp = new MemoryDatapath();
    const desired = desiredState({ config: r.config });
    await reconcile(dp, desired);
    const health: TargetSnapshot[] = desired.vips.flatMap((v) =>
      v.backends.map((b, i) => ({
        key: b.key,
        vip: v.name,
        address: b.address,
        type: 'tcp' as const,
        status: i % 7 === 0 ? ('down' as const) : ('up' as const),
        since: null,
        successes: 0,
        failures: 0,
        checks: 10 + i,
        failedChecks: i % 3,
        localErrors: 0,
        last: null,
      })),
    );
    return { r, dp, desired, health };
  }

  it('admin.perBackendMetrics defaults to off: per-VIP counts by state, no per-backend series', async () => {
    const { r, dp, desired } = await setup({});
    expect(r.ok && r.config.admin.perBackendMetrics).toBe(false);
    const m = createMetrics({ datapath: dp, desired: () => desired, health: () => [], attached: () => true, perBackend: r.config.admin.perBackendMetrics }); // prettier-ignore
    const text = await m.render();
    expect(text).not.toMatch(/peak_xdp_backend_|peak_xdp_health_status|peak_xdp_health_checks_total/);
    expect(text).toMatch(/^peak_xdp_vip_backends\{vip="vip0",state="up"\} 45$/m);
    expect(text).toMatch(/^peak_xdp_vip_backends\{vip="vip3",state="draining"\} 5$/m);
    expect(text).toMatch(/^peak_xdp_vip_backends\{vip="vip3",state="down"\} 0$/m);
  });

  it('per-backend on: render() streams exactly what registry.metrics() builds, one series per membership', async () => {
    const { dp, desired, health } = await setup({ admin: { perBackendMetrics: true } });
    const real = dp.counters.bind(dp);
    dp.counters = async () => {
      const c = await real();
      for (const v of desired.vips)
        for (const b of v.backends)
          c.backends.set(b.id, { packets: BigInt(b.id) * 3n, bytes: BigInt(b.id) * 300n });
      return c;
    };
    const m = createMetrics({ datapath: dp, desired: () => desired, health: () => health, attached: () => true, perBackend: true }); // prettier-ignore
    const families = /^(# (HELP|TYPE) )?peak_xdp_(backend_|health_status|health_checks_total)/;
    const pick = (t: string) => t.split('\n').filter((l) => families.test(l));
    const streamed = pick(await m.render());
    const built = pick(await m.registry.metrics());
    expect(streamed).toEqual(built);
    const count = (name: string) => streamed.filter((l) => l.startsWith(`${name}{`)).length;
    expect(count('peak_xdp_backend_packets_total')).toBe(200);
    expect(count('peak_xdp_backend_bytes_total')).toBe(200);
    expect(count('peak_xdp_backend_state')).toBe(600);
    expect(count('peak_xdp_health_status')).toBe(200);
    expect(count('peak_xdp_health_checks_total')).toBe(400);
    const b = desired.vips[1]!.backends[7]!;
    expect(streamed).toContain(
      `peak_xdp_backend_packets_total{vip="vip1",backend="${b.address}"} ${b.id * 3}`,
    );
    expect(streamed).toContain(
      `peak_xdp_health_checks_total{vip="vip1",backend="${b.address}",result="failure"} 1`,
    );
    expect(streamed).toContain(`peak_xdp_health_status{vip="vip1",backend="${b.address}",type="tcp"} 0`);
  });

  it('shared-probe gauges from the monitor stats', async () => {
    const { dp, desired } = await setup({});
    const stats = { probes: 3, memberships: 9, inFlight: 2, maxInFlight: 100, started: 50, startedOnThread: 40, delayed: 4, delayedByCap: 3, maxLatenessMs: 70, backlog: 7, backlogAgeMs: 1500, worstCaseInFlight: 150 }; // prettier-ignore
    const m = createMetrics({ datapath: dp, desired: () => desired, health: () => [], attached: () => true, perBackend: false, healthStats: () => stats }); // prettier-ignore
    const text = await m.render();
    expect(text).toMatch(/^peak_xdp_health_probes 3$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_in_flight 2$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_max_in_flight 100$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_delayed_total 4$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_delayed_by_cap_total 3$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_backlog 7$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_backlog_age_seconds 1.5$/m);
    expect(text).toMatch(/^peak_xdp_health_probes_worst_case_in_flight 150$/m);
  });
});
