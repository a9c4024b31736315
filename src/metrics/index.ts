// Prometheus metrics of the daemon: datapath counters read from the maps at scrape time, per VIP and per
// backend, health, reconcile and reload results, and Node process metrics.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Datapath, DatapathCounters } from '../datapath/types';
import type { TargetSnapshot } from '../health/monitor';
import type { DesiredState } from '../reconcile/desired';

export interface MetricsSources {
  datapath: Datapath;
  /** The last desired state (names of VIPs and backends, states, tables). */
  desired: () => DesiredState | null;
  health: () => TargetSnapshot[];
  /** Health checks that failed on this host (no verdict), by reason: HealthMonitor.localErrors. */
  healthLocalErrors?: () => Map<string, number>;
  attached: () => boolean;
  /** Names of desired VIPs whose datapath writes failed (withdrawn until a retry succeeds). */
  failedVips?: () => Iterable<string>;
  /** Per-backend series (traffic, state, health): 8 per membership; off for configs with huge backend sets. */
  perBackend: boolean;
  /** Register into this (fresh) registry, e.g. one the admin API already serves; default a new one. */
  registry?: Registry;
}

export interface DaemonMetrics {
  registry: Registry;
  /** The registry as Prometheus text, rendered as renderRegistry does, with one datapath counters read. */
  render(): Promise<string>;
  reconcileDuration: Histogram<'result'>;
  reloads: Counter<'result' | 'trigger'>;
  /** Re-attachments of the balancer after someone detached it, by result (ok, error). */
  reattaches: Counter<'result'>;
  /** 'error' events of the daemon's components (config source, health monitor, BGP), survived. */
  componentErrors: Counter<'component'>;
}

/**
 * Sets a counter to an absolute value the kernel keeps (prom-client counters only go up by inc, so the
 * collector resets and re-adds: scrapes see the kernel's monotonic total).
 */
function setCounter(c: Counter<string>, labels: Record<string, string>, value: bigint): void {
  c.inc(labels, Number(value));
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The same text as registry.metrics(), rendered one metric at a time with a turn of the event loop between
 * metrics: at 100 VIPs x 20 backends a render is ~100-400 ms of CPU, which registry.metrics() spends in one
 * piece (it starts every collector at once), holding up /healthz, health checks and BGP for all of it.
 */
export async function renderRegistry(registry: Registry): Promise<string> {
  const parts: string[] = [];
  for (const m of registry.getMetricsAsArray()) {
    parts.push(await registry.getSingleMetricAsString((m as unknown as { name: string }).name));
    await nextTurn();
  }
  return `${parts.join('\n\n')}\n`;
}

export function createMetrics(src: MetricsSources): DaemonMetrics {
  const registry = src.registry ?? new Registry();
  // prom-client names already start with process_ / nodejs_: peak_xdp_process_cpu_seconds_total etc.
  collectDefaultMetrics({ register: registry, prefix: 'peak_xdp_' });
  const registers = [registry];
  // Metrics built with no registry are never collected or exported.
  const perBackendRegisters = src.perBackend ? registers : [];

  // One counters() read per scrape, shared by the collectors below: for the whole of a render(), else for
  // the collectors started together (registry.metrics() starts them all at once).
  let pending: Promise<DatapathCounters> | null = null;
  let rendering = false;
  const counters = (): Promise<DatapathCounters> => {
    if (pending === null) {
      pending = src.datapath.counters();
      if (!rendering)
        void pending.finally(() => setTimeout(() => (pending = null), 0)).catch(() => undefined);
    }
    return pending;
  };
  const render = async (): Promise<string> => {
    rendering = true;
    pending = null;
    try {
      return await renderRegistry(registry);
    } finally {
      rendering = false;
      pending = null;
    }
  };

  new Counter({
    name: 'peak_xdp_datapath_events_total',
    help: 'Datapath counters by name (enum peak_counter in bpf/shared.h): verdicts, drop and pass reasons, conntrack',
    labelNames: ['counter'],
    registers,
    async collect() {
      const c = await counters();
      this.reset();
      for (const [name, v] of Object.entries(c.global)) setCounter(this, { counter: name }, v);
    },
  });

  const vipLabels = ['vip', 'address', 'port', 'protocol'] as const;
  const vipNames = () => {
    const m = new Map<number, Record<(typeof vipLabels)[number], string>>();
    for (const v of src.desired()?.vips ?? [])
      m.set(v.spec.id, {
        vip: v.name,
        address: v.spec.key.address,
        port: String(v.spec.key.port),
        protocol: v.spec.key.protocol,
      });
    return m;
  };
  for (const what of ['packets', 'bytes'] as const) {
    new Counter({
      name: `peak_xdp_vip_${what}_total`,
      help: `${what} forwarded for each VIP`,
      labelNames: vipLabels,
      registers,
      async collect() {
        const c = await counters();
        const names = vipNames();
        this.reset();
        for (const [id, t] of c.vips) {
          const l = names.get(id);
          if (l) setCounter(this, l, t[what]);
        }
      },
    });
    new Counter({
      name: `peak_xdp_backend_${what}_total`,
      help: `${what} sent to each backend (per VIP membership)`,
      labelNames: ['vip', 'backend'],
      registers: perBackendRegisters,
      async collect() {
        const c = await counters();
        const names = new Map<number, { vip: string; backend: string }>();
        for (const v of src.desired()?.vips ?? [])
          for (const b of v.backends) names.set(b.id, { vip: v.name, backend: b.address });
        this.reset();
        for (const [id, t] of c.backends) {
          const l = names.get(id);
          if (l) setCounter(this, l, t[what]);
        }
      },
    });
  }

  new Gauge({
    name: 'peak_xdp_backend_state',
    help: 'Backend state in the datapath: 1 for the current state (up, draining, down)',
    labelNames: ['vip', 'backend', 'state'],
    registers: perBackendRegisters,
    collect() {
      this.reset();
      for (const v of src.desired()?.vips ?? [])
        for (const b of v.backends)
          for (const s of ['up', 'draining', 'down'] as const)
            this.set({ vip: v.name, backend: b.address, state: s }, b.state === s ? 1 : 0);
    },
  });

  new Gauge({
    name: 'peak_xdp_vip_usable_backends',
    help: 'Backends of each VIP that take new flows (0: the VIP cannot be served and is withdrawn)',
    labelNames: ['vip'],
    registers,
    collect() {
      this.reset();
      for (const v of src.desired()?.vips ?? []) this.set({ vip: v.name }, v.usableBackends);
    },
  });

  new Gauge({
    name: 'peak_xdp_vip_fail_open',
    help:
      'Per VIP: 1 while it fails open (every backend with weight > 0 and not drained fails its checks; all of ' +
      'them take new flows and the VIP stays announced), else 0',
    labelNames: ['vip'],
    registers,
    collect() {
      this.reset();
      for (const v of src.desired()?.vips ?? []) this.set({ vip: v.name }, v.failOpen ? 1 : 0);
    },
  });

  new Gauge({
    name: 'peak_xdp_health_status',
    help: 'Health check status per backend: 1 up, 0 down',
    labelNames: ['vip', 'backend', 'type'],
    registers: perBackendRegisters,
    collect() {
      this.reset();
      for (const t of src.health())
        this.set({ vip: t.vip, backend: t.address, type: t.type }, t.status === 'up' ? 1 : 0);
    },
  });
  new Counter({
    name: 'peak_xdp_health_checks_total',
    help: 'Health checks run per backend, by result',
    labelNames: ['vip', 'backend', 'result'],
    registers: perBackendRegisters,
    collect() {
      this.reset();
      for (const t of src.health()) {
        this.inc({ vip: t.vip, backend: t.address, result: 'success' }, t.checks - t.failedChecks);
        this.inc({ vip: t.vip, backend: t.address, result: 'failure' }, t.failedChecks);
      }
    },
  });

  new Counter({
    name: 'peak_xdp_health_check_local_errors_total',
    help:
      'Health checks that could not be made from this host (EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL; ' +
      '"checker": the checker threw), by reason: no verdict, the backend keeps its status',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      for (const [reason, n] of src.healthLocalErrors?.() ?? []) this.inc({ reason }, n);
    },
  });

  new Gauge({
    name: 'peak_xdp_attached',
    help: '1 while the balancer program is attached to the configured interface',
    registers,
    collect() {
      this.set(src.attached() ? 1 : 0);
    },
  });

  new Gauge({
    name: 'peak_xdp_vip_programmed',
    help: 'Per desired VIP: 1 when its datapath writes succeeded, 0 when they failed (withdrawn, retried)',
    labelNames: ['vip'],
    registers,
    collect() {
      this.reset();
      const failed = new Set(src.failedVips?.() ?? []);
      for (const v of src.desired()?.vips ?? []) this.set({ vip: v.name }, failed.has(v.name) ? 0 : 1);
    },
  });
  const reattaches = new Counter({
    name: 'peak_xdp_reattaches_total',
    help: 'Re-attachments of the balancer to its interface after it was found detached, by result',
    labelNames: ['result'],
    registers,
  });
  const componentErrors = new Counter({
    name: 'peak_xdp_component_errors_total',
    help: "'error' events from the daemon's components (config-source, health-monitor, bgp); the daemon keeps running",
    labelNames: ['component'],
    registers,
  });

  const reconcileDuration = new Histogram({
    name: 'peak_xdp_reconcile_duration_seconds',
    help: 'Time to bring the datapath to the desired state, by result',
    labelNames: ['result'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  const reloads = new Counter({
    name: 'peak_xdp_config_reloads_total',
    help: 'Configuration loads by result (ok, rejected) and trigger (start, signal, file, manual)',
    labelNames: ['result', 'trigger'],
    registers,
  });
  return { registry, render, reconcileDuration, reloads, reattaches, componentErrors };
}
