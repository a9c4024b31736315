// Prometheus metrics of the daemon: datapath counters read from the maps at scrape time (one family per
// meaning), per VIP and per backend, health, reconcile and reload results, build info, connection-table fill,
// and the standard process_* / nodejs_* metrics under their usual names.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from './prom';
import type { Datapath, DatapathCounters } from '../datapath/types';
import type { ProbeStats, TargetCounts } from '../health/monitor';
import type { DesiredState } from '../reconcile/desired';
import type { PreviousOwnerView } from '../reconcile/second-chance';
import { parsePool, poolContains, type Pool } from '../sources/kubernetes/pool';
import { buildInfo, type BuildInfo } from '../version';
import type { ConntrackTable } from './conntrack';
import { COUNTER_FAMILIES, CounterFamily, FamilyKey, placeCounter } from './counters';
import { Sampled } from './sampled';
import { ChunkWriter } from '../util/chunk-writer';
import { isTextFamily, TextFamily } from './text-family';

export { conntrackTableOf, type ConntrackTable } from './conntrack';

/** The kubernetes.pool entries of a config (its kubernetes section, checked at load) and the VIP addresses. */
export function kubernetesPoolOf(
  config: unknown,
  vips: readonly { address: string }[],
): { entries: string[]; addresses: string[] } | null {
  const pool = (config as { kubernetes?: { pool?: unknown } } | null)?.kubernetes?.pool;
  if (!Array.isArray(pool) || pool.length === 0) return null;
  return {
    entries: pool.filter((x): x is string => typeof x === 'string'),
    addresses: vips.map((v) => v.address),
  };
}

/** One health check done (HealthMonitor's 'checked' event). */
export interface CheckDone {
  type: string;
  result: 'success' | 'failure' | 'local_error';
  durationMs: number;
}

/** How often the connection table is walked to count its entries (a scrape in between gets the last count). */
export const CONNTRACK_SAMPLE_MS = 30_000;

export interface MetricsSources {
  datapath: Datapath;
  /** The last desired state (names of VIPs and backends, states, tables). */
  desired: () => DesiredState | null;
  health: () => readonly TargetCounts[];
  /** Health checks that failed on this host (no verdict), by reason: HealthMonitor.localErrors. */
  healthLocalErrors?: () => Map<string, number>;
  /** Emits 'checked' (CheckDone) after every check: the health-check duration histogram. */
  healthChecks?: { on(event: 'checked', listener: (c: CheckDone) => void): unknown };
  attached: () => boolean;
  /** Maglev table worker threads running now (they start for a burst of builds and end when idle). */
  tableWorkers?: () => number;
  /** Names of desired VIPs whose datapath writes failed (withdrawn until a retry succeeds). */
  failedVips?: () => Iterable<string>;
  /** Why the last config load was rejected (the previous config stays in force); null: the last one applied. */
  reloadError?: () => string | null;
  /** The connection table (null while none is open): its fill ratio, counted every CONNTRACK_SAMPLE_MS. */
  conntrackTable?: () => ConntrackTable | null;
  /** Kubernetes leader election: this node holds the Lease (give it only when running with Kubernetes). */
  leader?: () => boolean;
  /** The Kubernetes address pool (kubernetes.pool entries) and the VIP addresses in use; null: no pool. */
  pool?: () => { entries: readonly string[]; addresses: Iterable<string> } | null;
  /**
   * Per-backend series (traffic, state, health): 8 per membership, written as text without an object per
   * series (admin.perBackendMetrics, default off: 512 x 1000 memberships are ~4M series). Per-VIP counts of
   * memberships by state are there either way.
   */
  perBackend: boolean;
  /** Shared health probes: distinct probes, in flight, and delayed (HealthMonitor.stats). */
  healthStats?: () => ProbeStats;
  /** Register into this (fresh) registry, e.g. one the admin API already serves; default a new one. */
  registry?: Registry;
  /** Default: this build's (src/version.ts). */
  build?: BuildInfo;
  /**
   * The standard process metrics (registerProcessMetrics): at once ('now', the default), or at
   * DaemonMetrics.processMetrics() or the first render, whichever comes first ('later': the daemon's start, where
   * loading prom-client's default metrics is ~40 ms of its event loop before the first sync).
   */
  processMetrics?: 'now' | 'later';
  /** Default CONNTRACK_SAMPLE_MS. */
  conntrackSampleMs?: number;
  /** What each VIP's previous table retains (Reconciler.previousOwners): peak_xdp_previous_table_*. */
  previousOwners?: () => readonly PreviousOwnerView[];
  /** The clock of previousOwners' times (ms; default Date.now, the reconciler's default). */
  now?: () => number;
}

export interface DaemonMetrics {
  registry: Registry;
  /** The registry as Prometheus text, rendered as renderRegistry does, with one datapath counters read. */
  render(): Promise<string>;
  /** render()'s text as renderRegistryChunks gives it (what the admin API sends). */
  renderChunks(): Promise<Buffer[]>;
  reconcileDuration: Histogram<'result'>;
  reloads: Counter<'result' | 'trigger'>;
  /** Re-attachments of the balancer after someone detached it, by result (ok, error). */
  reattaches: Counter<'result'>;
  /** 'error' events of the daemon's components (config source, health monitor, BGP), survived. */
  componentErrors: Counter<'component'>;
  /** A config was applied (at start, or a reload whose changes are in force): the reload timestamp. */
  configApplied(atMs?: number): void;
  /** Registers the standard process metrics now if they are not yet (MetricsSources.processMetrics 'later'). */
  processMetrics(): void;
}

/**
 * Sets a counter to an absolute value the kernel keeps (prom-client counters only go up by inc, so the
 * collector resets and re-adds: scrapes see the kernel's monotonic total).
 */
function setCounter(c: Counter<string>, labels: Record<string, string>, value: bigint): void {
  c.inc(labels, Number(value));
}

const BACKEND_STATES = ['up', 'draining', 'down'] as const;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The same text as registry.metrics(), rendered one metric at a time with a turn of the event loop between
 * metrics: at 100 VIPs x 20 backends a render is ~100-400 ms of CPU, which registry.metrics() spends in one
 * piece (it starts every collector at once), holding up /healthz, health checks and BGP for all of it. Large
 * families (TextFamily: a series per backend membership) are written as text in chunks, with turns between.
 */
export async function renderRegistry(registry: Registry): Promise<string> {
  const parts: string[] = [];
  await renderInto(registry, (s) => parts.push(s));
  return parts.join('');
}

/** renderRegistry's text as UTF-8 in Buffers, written as it is made (ChunkWriter): what the admin API sends. No string
 * of it outlives its piece (per-backend series at 512 x 100: 30 MB of text). */
export async function renderRegistryChunks(registry: Registry): Promise<Buffer[]> {
  const w = new ChunkWriter();
  await renderInto(registry, (s) => w.write(s));
  return w.finish();
}

async function renderInto(registry: Registry, write: (s: string) => void): Promise<void> {
  let first = true;
  for (const m of registry.getMetricsAsArray() as unknown[]) {
    if (!first) write('\n\n');
    first = false;
    if (isTextFamily(m)) await m.text(write);
    else write(await registry.getSingleMetricAsString((m as unknown as { name: string }).name));
    await nextTurn();
  }
  write('\n');
}

export function createMetrics(src: MetricsSources): DaemonMetrics {
  const registry = src.registry ?? new Registry();
  let processMetricsIn = false;
  const processMetrics = (): void => {
    if (processMetricsIn) return;
    processMetricsIn = true;
    registerProcessMetrics(registry);
  };
  if (src.processMetrics !== 'later') processMetrics();
  const registers = [registry];
  // Metrics built with no registry are never collected or exported.
  const perBackendRegisters = src.perBackend ? registers : [];

  // One counters() read per scrape, shared by the collectors below: for the whole of a render(), else for
  // the collectors started together (registry.metrics() starts them all at once).
  let pending: Promise<DatapathCounters> | null = null;
  let rendering = false;
  const counters = (): Promise<DatapathCounters> => {
    if (pending === null) {
      // Backends' traffic only for the per-backend series (no other family reads it).
      pending = src.datapath.counters({ backends: src.perBackend });
      if (!rendering)
        void pending.finally(() => setTimeout(() => (pending = null), 0)).catch(() => undefined);
    }
    return pending;
  };
  /** A render with one counters() read for all of it. */
  const withOneRead = async <T>(f: () => Promise<T>): Promise<T> => {
    rendering = true;
    pending = null;
    try {
      return await f();
    } finally {
      rendering = false;
      pending = null;
    }
  };
  const render = (): Promise<string> => {
    processMetrics();
    return withOneRead(() => renderRegistry(registry));
  };
  const renderChunks = (): Promise<Buffer[]> => {
    processMetrics();
    return withOneRead(() => renderRegistryChunks(registry));
  };

  // One family per meaning; each collects its members from the shared counters read.
  for (const [key, f] of Object.entries(COUNTER_FAMILIES) as [FamilyKey, CounterFamily][])
    new Counter({
      name: f.name,
      help: f.help,
      labelNames: f.label === null ? [] : [f.label],
      registers,
      async collect() {
        const c = await counters();
        this.reset();
        for (const [name, v] of Object.entries(c.global)) {
          const place = placeCounter(name);
          if (place.family !== key) continue;
          setCounter(this, f.label === null || place.value === null ? {} : { [f.label]: place.value }, v);
        }
      },
    });

  // Deprecated: kept for one release so existing queries keep working; sum() over it mixes meanings.
  new Counter({
    name: 'peak_xdp_datapath_events_total',
    help:
      'DEPRECATED, removed in the next release: use peak_xdp_verdicts_total, peak_xdp_dropped_packets_total, ' +
      'peak_xdp_passed_packets_total, peak_xdp_forwarded_packets_total, peak_xdp_conntrack_*. Every datapath ' +
      'counter by name (enum peak_counter in bpf/shared.h)',
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
    new TextFamily({
      name: `peak_xdp_backend_${what}_total`,
      help: `${what} sent to each backend (per VIP membership)`,
      type: 'counter',
      labelNames: ['vip', 'backend'],
      registers: perBackendRegisters,
      read: counters,
      *series(c, emit) {
        for (const v of src.desired()?.vips ?? []) {
          for (const b of v.backends) {
            const t = c.backends.get(b.id);
            if (t !== undefined) emit([v.name, b.address], Number(t[what]));
          }
          yield;
        }
      },
    });
  }

  new TextFamily({
    name: 'peak_xdp_backend_state',
    help: 'Backend state in the datapath: 1 for the current state (up, draining, down)',
    type: 'gauge',
    labelNames: ['vip', 'backend', 'state'],
    registers: perBackendRegisters,
    read: () => src.desired(),
    *series(desired, emit) {
      for (const v of desired?.vips ?? []) {
        for (const b of v.backends)
          for (const s of BACKEND_STATES) emit([v.name, b.address, s], b.state === s ? 1 : 0);
        yield;
      }
    },
  });

  new Gauge({
    name: 'peak_xdp_vip_backends',
    help: 'Backend memberships of each VIP by datapath state (up, draining, down): per-backend detail without a series per backend',
    labelNames: ['vip', 'state'],
    registers,
    collect() {
      this.reset();
      for (const v of src.desired()?.vips ?? []) {
        const n = { up: 0, draining: 0, down: 0 };
        for (const b of v.backends) n[b.state]++;
        for (const s of BACKEND_STATES) this.set({ vip: v.name, state: s }, n[s]);
      }
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

  new TextFamily({
    name: 'peak_xdp_health_status',
    help: 'Health check status per backend: 1 up, 0 down',
    type: 'gauge',
    labelNames: ['vip', 'backend', 'type'],
    registers: perBackendRegisters,
    read: () => src.health(),
    *series(health, emit) {
      for (let i = 0; i < health.length; i++) {
        const t = health[i]!;
        emit([t.vip, t.address, t.type], t.status === 'up' ? 1 : 0);
        if (i % 1024 === 1023) yield;
      }
    },
  });
  new TextFamily({
    name: 'peak_xdp_health_checks_total',
    help: 'Health checks run per backend, by result (a probe shared by several VIPs counts for each)',
    type: 'counter',
    labelNames: ['vip', 'backend', 'result'],
    registers: perBackendRegisters,
    read: () => src.health(),
    *series(health, emit) {
      for (let i = 0; i < health.length; i++) {
        const t = health[i]!;
        emit([t.vip, t.address, 'success'], t.checks - t.failedChecks);
        emit([t.vip, t.address, 'failure'], t.failedChecks);
        if (i % 1024 === 1023) yield;
      }
    },
  });

  if (src.healthStats) {
    const stats = src.healthStats;
    new Gauge({
      name: 'peak_xdp_health_probes',
      help: 'Distinct health probes (memberships that check the same address, port, type, path and timeout share one)',
      registers,
      collect() {
        this.set(stats().probes);
      },
    });
    new Gauge({
      name: 'peak_xdp_health_probes_in_flight',
      help: 'Health probes running now (each holds a socket; at most peak_xdp_health_probes_max_in_flight)',
      registers,
      collect() {
        this.set(stats().inFlight);
      },
    });
    new Gauge({
      name: 'peak_xdp_health_probes_max_in_flight',
      help: 'Cap on health probes in flight (from the open-file limit): due probes beyond it wait',
      registers,
      collect() {
        this.set(stats().maxInFlight);
      },
    });
    new Counter({
      name: 'peak_xdp_health_probes_delayed_total',
      help: 'Health probes started more than 50 ms after they were due (the in-flight cap was reached, or the event loop was busy)',
      registers,
      collect() {
        this.reset();
        this.inc(stats().delayed);
      },
    });
    new Counter({
      name: 'peak_xdp_health_probes_delayed_by_cap_total',
      help: 'Of the delayed health probes, those that waited because the in-flight cap was reached (dead backends are marked down late)',
      registers,
      collect() {
        this.reset();
        this.inc(stats().delayedByCap);
      },
    });
    new Gauge({
      name: 'peak_xdp_health_probes_backlog',
      help: 'Health probes due and not started (waiting for an in-flight slot or the event loop)',
      registers,
      collect() {
        this.set(stats().backlog);
      },
    });
    new Gauge({
      name: 'peak_xdp_health_probes_backlog_age_seconds',
      help: 'How long the longest-waiting due health probe has waited (0: none waits)',
      registers,
      collect() {
        this.set(stats().backlogAgeMs / 1000);
      },
    });
    new Gauge({
      name: 'peak_xdp_health_probes_worst_case_in_flight',
      help: 'Slots the health probes would hold if every target timed out (sum of timeout / interval); above max_in_flight, dead backends are marked down late',
      registers,
      collect() {
        this.set(stats().worstCaseInFlight);
      },
    });
  }

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

  if (src.tableWorkers !== undefined) {
    const workers = src.tableWorkers;
    new Gauge({
      name: 'peak_xdp_table_workers',
      help: 'Maglev table worker threads running now (started for a burst of builds, ended when idle)',
      registers,
      collect() {
        this.set(workers());
      },
    });
  }

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
  if (src.previousOwners) {
    const previousOwners = src.previousOwners;
    const now = src.now ?? Date.now;
    // VIPs by id as the last desired state names them; a VIP with nothing retained has no series.
    const retained = (): { vip: string; v: PreviousOwnerView }[] => {
      const names = new Map((src.desired()?.vips ?? []).map((v) => [v.spec.id, v.name]));
      return previousOwners()
        .filter((v) => v.retainedSlots > 0 && names.has(v.vipId))
        .map((v) => ({ vip: names.get(v.vipId)!, v }));
    };
    new Gauge({
      name: 'peak_xdp_previous_table_age_seconds',
      help:
        'Per VIP with retained table changes: seconds since the newest one (its previous owners are hinted to GUE ' +
        'backends until secondChance.retainSeconds after each change)',
      labelNames: ['vip'],
      registers,
      collect() {
        this.reset();
        const t = now();
        for (const { vip, v } of retained()) this.set({ vip }, Math.max(0, (t - v.newestChangeAt!) / 1000));
      },
    });
    new Gauge({
      name: 'peak_xdp_previous_table_expiry_seconds',
      help: 'Per VIP with retained table changes: seconds until the oldest retained slot expires (its hint stops)',
      labelNames: ['vip'],
      registers,
      collect() {
        this.reset();
        const t = now();
        for (const { vip, v } of retained()) this.set({ vip }, Math.max(0, (v.expiresAt! - t) / 1000));
      },
    });
    new Gauge({
      name: 'peak_xdp_previous_table_slots',
      help: 'Per VIP: Maglev slots whose previous owner (from a retained table change) is hinted',
      labelNames: ['vip'],
      registers,
      collect() {
        this.reset();
        for (const { vip, v } of retained()) this.set({ vip }, v.retainedSlots);
      },
    });
  }

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
  new Gauge({
    name: 'peak_xdp_config_last_reload_success',
    help: '1 when the last configuration read is in force, 0 when it was rejected (the previous one still is)',
    registers,
    collect() {
      this.set((src.reloadError?.() ?? null) === null ? 1 : 0);
    },
  });
  const reloadTimestamp = new Gauge({
    name: 'peak_xdp_config_last_reload_timestamp_seconds',
    help: 'When the configuration in force was applied (Unix time): time() minus this is how old it is',
    registers,
  });

  const build = src.build ?? buildInfo;
  new Gauge({
    name: 'peak_xdp_build_info',
    help: 'Always 1; labels: the version (git tag at build time) and commit of this daemon, and Node.js',
    labelNames: ['version', 'commit', 'nodejs'],
    registers,
  }).set({ version: build.version, commit: build.commit, nodejs: process.version }, 1);

  // Counting a million-entry LRU hash is a walk of the map (~tens of ms): sampled, never per scrape.
  const ctSample = new Sampled<{ entries: number; max: number } | null>({
    intervalMs: src.conntrackSampleMs ?? CONNTRACK_SAMPLE_MS,
    read: async () => {
      const t = src.conntrackTable?.() ?? null;
      return t === null ? null : { entries: await t.countEntries(), max: t.maxEntries };
    },
  });
  if (src.conntrackTable) {
    new Gauge({
      name: 'peak_xdp_conntrack_entries',
      help: `Entries in the connection table, counted at most every ${(src.conntrackSampleMs ?? CONNTRACK_SAMPLE_MS) / 1000} s`,
      registers,
      async collect() {
        this.reset();
        const s = await ctSample.get();
        if (s !== null) this.set(s.entries);
      },
    });
    new Gauge({
      name: 'peak_xdp_conntrack_max_entries',
      help: 'Capacity of the connection table (limits.conntrackEntries of the loaded map)',
      registers,
      collect() {
        this.reset();
        const t = src.conntrackTable?.() ?? null;
        if (t !== null) this.set(t.maxEntries);
      },
    });
    new Gauge({
      name: 'peak_xdp_conntrack_fill_ratio',
      help:
        'Connection-table entries / capacity (0..1, like cilium_bpf_map_pressure), sampled as ' +
        'peak_xdp_conntrack_entries; near 1 the LRU evicts live flows, which may then change backend',
      registers,
      async collect() {
        this.reset();
        const s = await ctSample.get();
        if (s !== null && s.max > 0) this.set(s.entries / s.max);
      },
    });
  }

  if (src.leader)
    new Gauge({
      name: 'peak_xdp_k8s_leader',
      help: '1 while this node holds the Kubernetes leader Lease (it writes Service status and Events), else 0',
      registers,
      collect() {
        this.set(src.leader?.() ? 1 : 0);
      },
    });

  if (src.pool) {
    let parsed: { entries: string; pool: Pool } | null = null;
    const usage = () => {
      const p = src.pool?.() ?? null;
      if (p === null) return [];
      const key = p.entries.join(',');
      if (parsed?.entries !== key) {
        const r = parsePool(p.entries, 'kubernetes.pool');
        parsed = { entries: key, pool: r.ok ? r.pool : [] };
      }
      return poolUsage(parsed.pool, p.addresses);
    };
    new Gauge({
      name: 'peak_xdp_k8s_pool_addresses',
      help: 'Addresses in each range of the Kubernetes address pool (kubernetes.pool)',
      labelNames: ['range'],
      registers,
      collect() {
        this.reset();
        for (const u of usage()) this.set({ range: u.range }, u.size);
      },
    });
    new Gauge({
      name: 'peak_xdp_k8s_pool_addresses_in_use',
      help: 'Addresses of each pool range that VIPs use now (allocated or asked for explicitly)',
      labelNames: ['range'],
      registers,
      collect() {
        this.reset();
        for (const u of usage()) this.set({ range: u.range }, u.used);
      },
    });
  }

  const checkDuration = new Histogram({
    name: 'peak_xdp_health_check_duration_seconds',
    help: 'Time a health check took, by check type and result (success, failure, local_error: no verdict)',
    labelNames: ['type', 'result'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  src.healthChecks?.on('checked', (c: CheckDone) =>
    checkDuration.observe({ type: c.type, result: c.result }, c.durationMs / 1000),
  );

  return {
    registry,
    render,
    renderChunks,
    reconcileDuration,
    reloads,
    reattaches,
    componentErrors,
    configApplied: (atMs = Date.now()) => reloadTimestamp.set(atMs / 1000),
    processMetrics,
  };
}

/** Size and use of each pool range: the distinct addresses (canonical) that fall in it. */
export function poolUsage(
  pool: Pool,
  addresses: Iterable<string>,
): { range: string; size: number; used: number }[] {
  const distinct = new Set(addresses);
  return pool.map((r) => {
    let used = 0;
    for (const a of distinct) if (poolContains([r], a)) used++;
    return { range: r.text, size: Number(r.last - r.first + 1n), used };
  });
}

/** prom-client's gauges whose names end in _total (promtool: only counters may); nodejs_active_* {type} stay. */
const TOTAL_GAUGES = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** prom-client's CPU counters and what each counts of process.cpuUsage(). */
const CPU_COUNTERS: readonly [string, (u: NodeJS.CpuUsage) => number][] = [
  ['process_cpu_user_seconds_total', (u) => u.user],
  ['process_cpu_system_seconds_total', (u) => u.system],
  ['process_cpu_seconds_total', (u) => u.user + u.system],
];

/**
 * The standard Node.js process metrics under their usual names (process_cpu_seconds_total,
 * process_resident_memory_bytes, nodejs_heap_size_used_bytes, ...) so stock dashboards find them, less the
 * three *_total gauges: sum(nodejs_active_handles) is the same number. The CPU counters count from the process's
 * start, as their name says everywhere else: prom-client's count from their registration (the daemon's first ~1.5 s
 * of CPU at 512 x 100 were missing), so the CPU used before it is added once.
 */
export function registerProcessMetrics(registry: Registry): void {
  const before = process.cpuUsage();
  collectDefaultMetrics({ register: registry });
  for (const name of TOTAL_GAUGES) registry.removeSingleMetric(name);
  for (const [name, of] of CPU_COUNTERS) {
    const c = registry.getSingleMetric(name);
    if (c instanceof Counter) c.inc(of(before) / 1e6);
  }
}
