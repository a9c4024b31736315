// The daemon: config (file, optionally Kubernetes) -> desired state -> datapath; health checks; BGP; admin API.
// Restart-safe: programs and maps are pinned; a start adopts them, an exit leaves forwarding running. Built
// from its collaborators (collaborators.ts; the kernel and real sockets: wiring.ts).
import { Registry } from '../metrics/prom';
import type { Datapath, DatapathConfig } from '../datapath/types';
import type { Logger } from '../log';
import {
  conntrackTableOf,
  createMetrics,
  DaemonMetrics,
  kubernetesPoolOf,
  renderRegistryChunks,
} from '../metrics';
import type { Config, ListenAddress, VipConfig } from '../model/config';
import { formatIssue } from '../model/errors';
import { limitsOfDocument, limitsOfText } from '../model/schema';
import { desiredStateAsync, earliest } from '../reconcile';
import type { KubernetesSource } from '../sources/kubernetes/source';
import type { ReloadEvent } from '../sources/types';
import { type AdminServer, MetricsListenError, type Readiness } from './admin';
import { Announcer, resolveRouterId } from './announcer';
import { BfdConnect, BfdLink, bfdSessionsOf } from './bfd-link';
import type {
  DaemonCollaborators,
  DaemonConfigSource,
  DaemonHealthMonitor,
  VipRoutes,
} from './collaborators';
import { ConfigGate, type NodeIdentitySource } from './config-gate';
import { DatapathKeeper } from './datapath-keeper';
import { HealthFeed } from './health-feed';
import { hostDatapathConfig } from './host';
import { kubernetesSettings, kubernetesSource } from './kubernetes';
import { listenHint } from './preflight';
import { BUILDS_IN_THREAD_MSG, Programmer } from './programmer';
import {
  ComponentErrorLog,
  DaemonComponent,
  NO_KEEPER,
  pickSections,
  readinessOf,
  STATE_SECTIONS,
  stateDocument,
  type StateSection,
} from './state-view';
import { SyncLoop } from './sync-loop';
import { START_BOUND_HEAP_BYTES } from '../util/gc';
import { buildInfo } from '../version';
import { adminWriteApi, conntrackFlusherOf, desiredIds, isLoopback, WriteTarget } from './admin-write';
import { readAdminToken, RuntimeOverrides } from './override-store';
import { withOverrideView } from './overrides';

export type { DaemonComponent } from './state-view';

export interface DaemonSettings {
  configPath: string;
  /** Detach the program and remove the pins on exit (default: leave forwarding running). */
  detachOnExit: boolean;
  logger: Logger;
  /** Watch Services/EndpointSlices (node settings still come from the config file). */
  kubernetes?: { kubeconfig?: string; nodeName?: string };
  /** This node's name and labels, for the config's nodes section (default: unlabelled, named "unknown"). */
  node?: NodeIdentitySource;
  /** --metrics-listen: replaces admin.metricsListen. */
  metricsListen?: ListenAddress;
}

export type DaemonOptions = DaemonSettings & DaemonCollaborators;

export class Daemon {
  private readonly opts: DaemonOptions;
  private readonly log: Logger;
  private source: DaemonConfigSource | null = null;
  /** The config in force, and reloads. */
  private readonly gate: ConfigGate;
  /** The balancer: its pin directory (held from start to exit), the datapath, the attachment. */
  private keeper: DatapathKeeper | null = null;
  /** What the last sync applied, and what it could not. */
  private readonly programmer: Programmer;
  private readonly componentErrors = new ComponentErrorLog();
  private readonly monitor: DaemonHealthMonitor;
  private readonly health: HealthFeed;
  private announcer: Announcer | null = null;
  /** The BFD process's sessions for the peers with `bfd` (null: none has). */
  private bfd: BfdLink | null = null;
  private admin: AdminServer | null = null;
  private metrics: DaemonMetrics | null = null;
  /** The admin API serves it from before the datapath is opened; the metrics register into it after. */
  private readonly registry = new Registry();
  private kube: KubernetesSource | null = null;
  private kubeVips: VipConfig[] = [];
  /** Drains and weights set through the admin API, applied on top of the config (null before start). */
  private overrides: RuntimeOverrides | null = null;
  /** Blackhole routes for the VIP addresses (vipBlackholeRoutes), set on every sync. */
  private vipRoutes: VipRoutes | null = null;
  private readonly loop: SyncLoop;
  private stopped = false;
  /** start() has finished: the admin API answers from before (it is bound first), but not ready. */
  private started = false;
  /** The start's VIP routes, set once the daemon is ready (null: none pending; a later sync sets its own). */
  private startRoutes: (() => void) | null = null;
  /**
   * The start's sync set no health targets: they are set once the daemon is ready and the start's garbage is
   * collected (START_TARGETS), unless a sync before that sets them (every sync sets the targets of its desired state).
   */
  private targetsPending = false;
  /** The heap's used bytes when this start bounded its growth (boundHeapGrowth); null: not bounded. */
  private heapBounded: number | null = null;
  /** The START_TARGETS sync found a status that differs from the desired state's. */
  private startTargetsDiffer = false;
  private readonly startedAt = new Date().toISOString();

  constructor(opts: DaemonOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.monitor = opts.healthMonitor();
    this.programmer = new Programmer({
      log: opts.logger,
      trimMemory: opts.trimMemory,
      memoryPressure: opts.memoryPressure,
      collectIncrementally: opts.collectIncrementally,
      ...(opts.heapUsed === undefined ? {} : { heapUsed: opts.heapUsed }),
      freeBuffer: opts.freeBuffer,
    });
    this.health = new HealthFeed({ monitor: this.monitor, log: opts.logger });
    this.loop = new SyncLoop({ sync: (reason) => this.sync(reason) });
    this.gate = new ConfigGate({
      log: opts.logger,
      node: opts.node,
      registry: this.registry,
      resolve: (config) =>
        hostDatapathConfig({ config, configPath: opts.configPath, facts: opts.hostNetwork }),
      onApplied: () => {
        this.metrics?.configApplied();
        void this.loop.request('reload');
      },
    });
  }

  private get config(): Config | null {
    return this.gate.config;
  }

  private get datapathConfig(): DatapathConfig | null {
    return this.gate.datapathConfig;
  }

  private get dp(): Datapath | null {
    return this.keeper?.opened?.datapath ?? null;
  }

  private get speaker() {
    return this.announcer?.speaker ?? null;
  }

  /**
   * Loads config, takes the pin directory, checks what can fail (admin listener, BGP), then adopts or
   * loads + pins + attaches the balancer, reconciles, starts checks and BGP. A failed start removes a balancer
   * it loaded itself (nothing forwarded before it); an adopted one stays as it was found.
   */
  async start(): Promise<void> {
    try {
      await this.startUp();
    } catch (e) {
      this.unboundHeapGrowth();
      this.opts.datapathHost.dispose?.();
      // Routes this start made go with a balancer it loaded; with an adopted one (still forwarding) they stay.
      if (this.keeper?.inherited) await this.vipRoutes?.stop();
      else await this.vipRoutes?.removeAll();
      await this.keeper?.undoFresh();
      throw e;
    }
  }

  /** The start's garbage (its table buffers, the config's parse) collected and its memory given back right after
   * ready: V8 would otherwise keep it until it next collects (RSS at 512 x 100 with health checks, together with the
   * fixed malloc threshold: 173-177 -> 132-134 MB). Programmer.collectAtStart. `retireMs`: how long the table
   * workers took to end just before (logged with it). */
  private async collectStartGarbage(retireMs: number): Promise<void> {
    const t = performance.now();
    const before = process.memoryUsage.rss();
    const { how, collected } = await this.programmer.collectAtStart();
    if (how === null) return;
    this.log.debug(
      {
        how,
        // false: node runs without --expose-gc (not through the CLI's shebang), or the incremental one did not end
        // in time: only malloc_trim ran
        collected,
        ms: Math.round(performance.now() - t),
        retireMs,
        rssMB: Math.round(before / 2 ** 20),
        afterMB: Math.round(process.memoryUsage.rss() / 2 ** 20),
      },
      'start garbage collected, free memory given back',
    );
  }

  private async startUp(): Promise<void> {
    // Where a start's time goes, logged with 'daemon started' (ms per phase, in order).
    const phases: Record<string, number> = {};
    let phaseFrom = performance.now();
    const phase = (name: string): void => {
      const t = performance.now();
      phases[name] = Math.round(t - phaseFrom);
      phaseFrom = t;
    };
    // Before the start's large allocations (the config's text, the balancer's load, the first tables).
    this.opts.fixMallocThreshold?.();
    const source = this.opts.configSource({
      path: this.opts.configPath,
      // A fresh balancer for the file's limits loads on another core while the file is parsed and checked (the
      // open uses it if nothing is pinned and the checked limits are the same): first for the limits its text
      // says, then, if the parsed document says otherwise, for the document's.
      onFirstText: (text, format) => {
        const limits = limitsOfText(text, format);
        if (limits !== null) this.opts.datapathHost.preload?.(limits);
      },
      onFirstDocument: (doc) => {
        const limits = limitsOfDocument(doc);
        if (limits !== null) this.opts.datapathHost.preload?.(limits);
        this.boundHeapGrowth();
      },
    });
    this.source = source;
    // An emitter's 'error' with no listener throws and would end the daemon (and every announcement).
    source.on('error', (e: unknown) => this.onComponentError('config-source', e));
    this.monitor.on('error', (e: unknown) => this.onComponentError('health-monitor', e));
    const first = await source.start();
    if (!first.ok) {
      source.stop();
      throw new Error(
        `config ${this.opts.configPath} rejected:\n  ${first.errors.map(formatIssue).join('\n  ')}`,
      );
    }
    for (const w of first.warnings) this.log.warn({ path: w.path }, w.message);
    this.boundHeapGrowth();
    phase('config');
    // This node's settings (nodes section). Invalid: not ready (the admin API says why) until a reload or a
    // relabel makes them valid; nothing is touched meanwhile.
    const config = await this.gate.first(first.config, {
      source,
      onWaiting: () => this.startAdmin(first.config),
    });

    const keeper = new DatapathKeeper({
      claim: this.opts.datapathHost.claim(config.interface),
      log: this.log,
      onAttachedChange: () => this.announce(),
      onReattach: (result) => this.metrics?.reattaches.inc({ result }),
      registry: this.registry,
    });
    this.keeper = keeper;
    await this.gate.start(config);
    // Whatever else can refuse the start does so now, while the datapath is untouched.
    const bgpEarly = config.bgp;
    if (bgpEarly) await this.opts.bgpPreflight({ bgp: bgpEarly, ifname: config.interface });
    const kube = this.opts.kubernetes ? await kubernetesSettings(config) : null;
    this.overrides = await RuntimeOverrides.open({
      store: this.opts.overrideStore?.({ ifname: config.interface }) ?? null,
      log: this.log,
    });
    await this.startAdmin(config);
    phase('checks');
    // The table workers start while the balancer loads (they build the first sync's tables), unless every table is
    // small enough to be built on this thread (a Service's annotation may still ask for a bigger one).
    this.programmer.warm([
      ...config.vips.map((v) => v.tableSize),
      ...(kube?.ok === true ? [kube.settings.tableSize] : []),
    ]);
    const dp = (await keeper.open(config, this.datapathConfig!)).datapath;
    phase('datapath');
    const programmer = this.programmer;
    // Ids and health seeds from what the datapath holds: an adopted state is reconciled without churn.
    await programmer.use(dp);
    if (keeper.adopted)
      await this.health.seed(
        dp,
        await desiredStateAsync({
          config: this.overrides.apply(config),
          ids: programmer.ids,
          datapathConfig: this.datapathConfig,
        }),
      );

    this.metrics = createMetrics({
      datapath: dp,
      desired: () => programmer.desired,
      health: () => this.monitor.checkCounts(),
      healthLocalErrors: () => this.monitor.localErrors(),
      attached: () => keeper.attached,
      tableWorkers: () => programmer.tableWorkers,
      failedVips: () => programmer.failedVips.keys(),
      previousOwners: () => programmer.previousOwners(),
      healthChecks: this.monitor,
      healthStats: () => this.monitor.stats(),
      reloadError: () => this.gate.reloadError,
      conntrackTable: () => conntrackTableOf(dp),
      leader: this.opts.kubernetes ? () => this.kube?.isLeader() ?? false : undefined,
      pool: () => (this.kube ? kubernetesPoolOf(this.config, this.kubeVips) : null),
      perBackend: config.admin.perBackendMetrics,
      registry: this.registry,
      // after ready (below), or at a scrape before
      processMetrics: 'later',
    });
    // The first load happened before the registry existed: count it, as the metric's help promises.
    this.metrics.reloads.inc({ result: 'ok', trigger: first.trigger });
    this.metrics.configApplied();

    phase('ids');
    await this.sync(START_SYNC);
    phase('firstSync');
    // The first sync sets no health targets (they are set after ready: setStartTargets). Should it have asked for
    // another sync, that runs after the start, not before ready (at 1,024 VIPs a second pass over every membership).
    const labelSync = this.loop.takeWanted();
    // A balancer replacing an older build's takes the interface only now, programmed.
    await keeper.commit([...programmer.failedVips.keys()]);

    // Flips are paced (PACE_MAX_MS): in a storm of them syncs leave the event loop room.
    this.health.start(() => void this.loop.request('health', { paced: true }));

    source.on('reload', (e: ReloadEvent) => {
      this.metrics?.reloads.inc({ result: e.ok ? 'ok' : 'rejected', trigger: e.trigger });
      this.gate.reload(e);
    });
    // A relabelled node resolves its settings again, like a reload.
    this.gate.followNode();

    if (this.opts.kubernetes) {
      this.kube = await kubernetesSource({
        config,
        ...this.opts.kubernetes,
        registry: this.metrics.registry,
        log: this.log,
        onChange: async (vips) => {
          this.kubeVips = vips;
          await this.loop.request('kubernetes');
        },
      });
      await this.kube.start();
    }

    // The bgp section as at start (a change needs a restart).
    const bgp = config.bgp;
    if (bgp) {
      this.announcer = new Announcer({
        bgp,
        routerId: await resolveRouterId(bgp, config.interface, this.opts.hostNetwork),
        restarted: keeper.inherited,
        speaker: this.opts.bgpSpeaker,
        log: this.log,
        registry: this.metrics.registry,
        onError: (e) => this.onComponentError('bgp', e),
      });
      await this.announcer.start();
      this.announce();
      // After the speaker: a BFD Down holds its session. An absent BFD process only degrades (retried).
      const sessions = bfdSessionsOf(bgp, config.interface);
      if (sessions.length > 0) {
        this.bfd = new BfdLink({
          path: bgp.bfd.controlSocket,
          sessions,
          connect: this.opts.bfdConnect ?? noBfdClient,
          speaker: this.announcer.speaker,
          log: this.log.child({ component: 'bfd' }),
          registry: this.metrics.registry,
        });
        await this.bfd.start();
      }
    }

    phase('rest');
    keeper.watch();
    this.started = true;
    if (labelSync) void this.loop.request('health targets');
    this.log.info(
      {
        interface: config.interface,
        pins: keeper.pins,
        adopted: keeper.adopted,
        vips: programmer.desired?.vips.length,
        phasesMs: phases,
        // the process's own start (node, modules) is the rest of this
        uptimeMs: Math.round(process.uptime() * 1000),
        version: buildInfo.version,
        commit: buildInfo.commit,
      },
      'daemon started',
    );
    // Ready: what is left is housekeeping, which serves nothing (it made ready 0.08-0.13 s later at 512 x 100).
    // The start's burst of table builds is over: the workers end now (their memory given back), not IDLE_MS later;
    // a later burst starts them again (skipped while a sync, e.g. Kubernetes' first, still builds). Then the start's
    // garbage is collected. A failure here is logged: it must not undo a start that is serving.
    const t = performance.now();
    try {
      this.metrics.processMetrics();
      await programmer.retireWorkers();
      // A bounded start's health targets are set under a tighter bound, from this collection on.
      if (this.heapBounded !== null) this.opts.heapGrowth?.('targets');
      await this.collectStartGarbage(Math.round(performance.now() - t));
    } catch (e) {
      this.log.warn(
        { err: e },
        "the start's housekeeping failed (table workers, garbage): the daemon runs on",
      );
    }
    // After the collection: each `ip` the pass starts forks a smaller process.
    const routes = this.startRoutes;
    this.startRoutes = null;
    if (!this.stopped) routes?.();
    await this.setStartTargets();
    // The start's big allocations are over: a big daemon keeps the targets' bound (heapGrowth 'bounded': its bursts,
    // e.g. every backend flipping down at once, would otherwise grow the heap to several times what is live).
    if (this.heapBounded !== null) {
      this.opts.heapGrowth?.('bounded');
      // and builds its bursts' tables without the table workers' memory (BUILDS_IN_THREAD_MSG)
      this.programmer.keepBuildsInThread();
      this.log.debug({ boundedAtHeapMB: Math.round(this.heapBounded / 2 ** 20) }, BUILDS_IN_THREAD_MSG);
    }
  }

  /**
   * A big start (its heap past START_BOUND_HEAP_BYTES once the config is parsed) keeps its garbage within
   * START_HEAP_GROWING_PERCENT of the live heap until ready (heapGrowth 'start'), then TARGETS_HEAP_GROWING_PERCENT
   * from then on ('targets' while its health targets are set, after the start's own collection: they were its peak;
   * then 'bounded'): at 512 VIPs x
   * 1000 backends V8's own rule let the heap grow from ~100 MB to ~325 MB before it collected, and RSS peaked at
   * 400-463 MB without health checks (364-394 MB bounded). A small one is left to V8's own rule: at 512 x 100 (~25 MB)
   * the bound made 5-6 full collections by ready instead of 2-3, for ~8 MB. The limit V8 set at its last collection
   * followed its own rule, so V8 is asked to collect soon (memoryPressure), under the bound. Once per start.
   */
  private boundHeapGrowth(): void {
    if (this.heapBounded !== null || this.opts.heapGrowth === undefined) return;
    const used = this.opts.heapUsed?.() ?? process.memoryUsage().heapUsed;
    if (used < START_BOUND_HEAP_BYTES) return;
    this.heapBounded = used;
    this.opts.heapGrowth('start');
    this.opts.memoryPressure?.();
    this.log.debug({ heapMB: Math.round(used / 2 ** 20) }, "the start's heap growth bounded");
  }

  private unboundHeapGrowth(): void {
    if (this.heapBounded === null) return;
    this.heapBounded = null;
    this.opts.heapGrowth?.('run');
  }

  /**
   * The start's health targets, set now that the daemon is ready and the start's garbage is collected (a sync of the
   * loop, so no other sync runs meanwhile), then their own garbage collected. At 512 x 1000 setting them is ~1.6 s of
   * this thread and ~170 MB allocated: before ready, on top of the start's garbage, they made RSS at ready ~560 MB
   * and the peak ~615 MB. The first probes start with them (before, at ready); until then every backend has the
   * status a new target starts with, as it had until its first result anyway.
   */
  private async setStartTargets(): Promise<void> {
    if (!this.targetsPending || this.stopped) return;
    const t = performance.now();
    try {
      await this.loop.request(START_TARGETS);
      if (this.startTargetsDiffer) await this.loop.request('health targets');
      this.startTargetsDiffer = false;
      if (!this.stopped && this.monitor.stats().probes > 0)
        await this.collectStartGarbage(Math.round(performance.now() - t));
    } catch (e) {
      this.log.warn({ err: e }, "the start's health targets after ready failed: a later sync sets them");
    }
  }

  /**
   * The admin API (and the read-only metrics listener); once. Before the datapath: a start waiting for valid
   * node settings serves /readyz (503, why) and /metrics meanwhile.
   */
  private async startAdmin(config: Config): Promise<void> {
    if (this.admin !== null) return;
    const listen = config.admin.listen;
    const metricsListen = this.opts.metricsListen ?? config.admin.metricsListen;
    const token = config.admin.tokenFile ? await readAdminToken(config.admin.tokenFile) : null;
    this.admin = await this.opts
      .adminServer({
        host: listen.host,
        port: listen.port,
        ...(metricsListen === undefined ? {} : { metricsListen }),
        registry: this.registry,
        // Once the metrics exist, their render shares one datapath counters read per scrape.
        renderMetrics: () => this.metrics?.renderChunks() ?? renderRegistryChunks(this.registry),
        readiness: () => this.readiness(),
        state: (sections) => this.state(sections as ReadonlySet<StateSection> | null),
        stateSections: STATE_SECTIONS,
        logger: this.log,
        api: adminWriteApi({
          target: this.writeTarget(),
          access: { listen: `${listen.host}:${listen.port}`, local: isLoopback(listen.host), token },
        }),
      })
      .catch((e: NodeJS.ErrnoException) => {
        const [key, at] =
          e instanceof MetricsListenError
            ? ['admin.metricsListen', metricsListen!]
            : ['admin.listen', listen];
        throw new Error(`${key} ${at.host}:${at.port}: ${e.message}${listenHint(e.code, at.port)}`);
      });
  }

  /** Graceful stop: BGP withdraws first (RFC 8326 drain if configured), then checks and the API stop. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.gate.stop();
    const keeper = this.keeper;
    keeper?.stopWatching();
    this.loop.stop();
    await this.announcer?.stop().catch((e: Error) => this.log.warn({ err: e }, 'BGP stop failed'));
    // Only a node leaving for good takes BFD Down (the router drops it at once); a restart leaves BFD Up,
    // which is the point of BFD in its own process (graceful restart keeps the routes meanwhile).
    if (this.opts.detachOnExit)
      await this.bfd?.holdDownForGood().catch((e: Error) => this.log.warn({ err: e }, 'BFD holdDown failed'));
    this.bfd?.stop();
    this.monitor.stop();
    this.source?.stop();
    await this.kube?.stop().catch((e: Error) => this.log.warn({ err: e }, 'kubernetes source stop failed'));
    await this.loop.idle();
    await keeper?.idle();
    await this.admin?.stop();
    // After the last sync (it may prune overrides) and the admin API (it may change them): their stores are done.
    await this.overrides?.idle();
    if (keeper?.opened && this.config && this.opts.detachOnExit) {
      await keeper.detachAndUnpin();
      // Forwarding stops on purpose: VIP packets that still come are the kernel's business again.
      await this.vipRoutes?.removeAll();
      this.log.info({ interface: this.config.interface }, 'detached and unpinned (--detach-on-exit)');
    } else if (this.config && keeper?.opened) {
      this.log.info(
        { interface: this.config.interface, pins: keeper.pins },
        'exiting; forwarding stays in place',
      );
    }
    // Otherwise the routes stay: harmless with the balancer attached, and they cover a later detach.
    await this.vipRoutes?.stop();
    keeper?.close();
    this.opts.datapathHost.dispose?.();
    await this.programmer.close();
  }

  /** Everything /state shows: desired and actual, health, BGP, sources; only `sections` when given (the costly
   * ones, reading every membership or backend, are then made only if asked for). */
  async state(sections: ReadonlySet<StateSection> | null = null): Promise<unknown> {
    const dp = this.dp;
    const want = (k: StateSection): boolean => sections === null || sections.has(k);
    const doc = stateDocument({
      sections,
      startedAt: this.startedAt,
      ifname: this.config?.interface,
      keeper: this.keeper ?? NO_KEEPER,
      programmer: this.programmer,
      readiness: this.readiness(),
      datapathConfig: this.datapathConfig,
      componentErrors: this.componentErrors,
      announcements: this.announcer?.decision ?? null,
      reloadError: this.gate.reloadError,
      actual: !want('actual')
        ? null
        : dp && {
            vips: await dp.listVips(),
            backends: await dp.listBackends(),
            counters: await dp.counters(),
          },
      health: want('health') ? this.monitor.snapshot() : null,
      bgp: this.speaker?.status() ?? null,
      kubernetes: this.kube?.status() ?? null,
      vipRoutes: this.vipRoutes?.status() ?? null,
      bfd: this.bfd?.status() ?? null,
      node: this.gate.nodeView(),
    });
    return pickSections(
      this.overrides ? withOverrideView(doc, this.overrides.set, this.overrides.location) : doc,
      sections,
    );
  }

  /** What the admin API's write endpoints change and read (admin-write.ts). */
  private writeTarget(): WriteTarget {
    const configured = () => [...(this.config?.vips ?? []), ...this.kubeVips];
    return {
      started: () => this.started,
      vips: configured,
      overrides: () => this.overrides?.set ?? {},
      overridesLocation: () => this.overrides?.location ?? null,
      change: async (c) => {
        const set = await this.overrides!.change(c, configured);
        // Resolves once a sync that started after the change has run: the datapath has it.
        await this.loop.request('override');
        return set;
      },
      ids: () => desiredIds(this.programmer.desired),
      conntrack: () => (this.dp ? conntrackFlusherOf(this.dp) : null),
    };
  }

  readiness(): Readiness {
    return readinessOf({
      started: this.started,
      ifname: this.config?.interface,
      keeper: this.keeper ?? NO_KEEPER,
      programmer: this.programmer,
      kubernetesReady: this.kube ? this.kube.ready() : null,
      reloadError: this.gate.reloadError,
      componentErrors: this.componentErrors.entries(),
      now: Date.now(),
      bfdProblem: this.bfd?.problem() ?? null,
      nodeSettingsError: this.gate.nodeError,
    });
  }

  /** Desired state from config + Kubernetes VIPs + health, reconciled into the datapath, then BGP updated. */
  private async sync(reason: string): Promise<void> {
    const config = this.config!;
    const configured: Config =
      this.kubeVips.length > 0 ? { ...config, vips: [...config.vips, ...this.kubeVips] } : config;
    // Overrides of VIPs or backends the config dropped go (Kubernetes VIPs are unknown until it has synced).
    if (!this.opts.kubernetes || this.kube?.ready()) this.overrides?.prune(configured.vips);
    const merged = this.overrides ? this.overrides.apply(configured) : configured;
    // Every VIP address gets its route, programmed or not (traffic for it may come either way); not awaited. At
    // the start, once the daemon is ready (startUp runs startRoutes): a pass starts `ip` processes, each a fork of
    // this process (~20 ms of this thread each at 512 x 100; with the first made at the end of this sync, the start
    // reported ready ~20-60 ms later). The routes are the safety net for a balancer taken off the interface: the
    // start's attaches it before it announces, and one restarted after kill -9 finds its last run's routes in place.
    const routes = (): void => {
      this.vipRoutes ??= this.opts.vipRoutes({ ifname: config.interface, log: this.log });
      this.vipRoutes.set(
        merged.vips.map((v) => v.address),
        config.vipBlackholeRoutes,
      );
    };
    if (reason === START_TARGETS) {
      // The start's targets, unless a sync since set its own (this request may also have been coalesced into another).
      const desired = this.programmer.desired;
      if (!this.targetsPending || desired === null) return;
      this.targetsPending = false;
      try {
        // A status already differs from the desired state's: a sync more shows it (setStartTargets asks for it).
        this.startTargetsDiffer = await this.health.retarget(desired);
      } catch (e) {
        // A retry is a whole sync, which sets every target of its desired state.
        this.targetsPending = true;
        this.log.error({ err: e, reason }, 'setting the health targets failed; retrying');
        this.loop.retryLater();
      }
      return;
    }
    const starting = !this.started;
    // The start's sync sets no health targets (setStartTargets, after ready).
    const deferTargets = reason === START_SYNC;
    if (!starting) {
      this.startRoutes = null; // this sync's VIPs, not the start's
      routes();
    }
    const started = performance.now();
    const startedAt = new Date().toISOString();
    try {
      // The health targets are set while the workers build the first tables (this thread waits for them then),
      // else after the reconcile.
      let targeted: Promise<boolean> | null = null;
      const { desired, summary } = await this.programmer
        .apply(
          {
            config: merged,
            ...this.health.inputs(),
            now: Date.now(),
            datapathConfig: this.datapathConfig,
          },
          deferTargets
            ? {}
            : {
                whileBuilding: (d) => {
                  this.targetsPending = false;
                  targeted = this.health.retarget(d);
                },
              },
        )
        .catch(async (e: unknown) => {
          // The targets still being set are awaited (their failure is this one's), so the next sync starts after.
          await (targeted as Promise<boolean> | null)?.catch(() => undefined);
          throw e;
        });
      const differs = await (targeted as Promise<boolean> | null);
      // When a backend's health-down grace ends (it turns down, its flows move) or a retained table change
      // expires (the VIP's previous table is written without it), sync again.
      this.loop.syncAt(
        earliest([desired.nextGraceEnd, summary.nextPreviousExpiry]),
        'health grace or previous-table expiry',
        { paced: true },
      );
      // VIPs whose writes failed are withdrawn (announce below) and retried with backoff.
      if (summary.failures.length > 0) this.loop.retryLater();
      else this.loop.succeeded();
      this.metrics?.reconcileDuration.observe(
        { result: summary.failures.length > 0 ? 'partial' : 'ok' },
        (performance.now() - started) / 1000,
      );
      if (deferTargets) this.targetsPending = true;
      else {
        this.targetsPending = false;
        if (differs ?? (await this.health.retarget(desired))) this.loop.wantAnother();
      }
      // startedAt lets a reader tell a sync that began before some moment from one that began after it.
      this.log.debug({ reason, summary, startedAt }, 'reconciled');
      // The start collects its own garbage right after ready (collectStartGarbage).
      if (this.started) this.programmer.afterSync(summary);
    } catch (e) {
      this.metrics?.reconcileDuration.observe({ result: 'error' }, (performance.now() - started) / 1000);
      this.log.error({ err: e, reason }, 'reconcile failed');
      this.loop.retryLater();
      if (starting) routes();
      this.announce();
      throw e;
    }
    if (starting) this.startRoutes = routes;
    this.announce();
  }

  /** Hands BGP the routes this node can serve now (nothing before BGP starts). */
  private announce(): void {
    const p = this.programmer;
    this.announcer?.update({
      desired: p.desired,
      // Names are unique across file and Kubernetes VIPs (one desired state is built from both).
      vipConfigs: [...(this.config?.vips ?? []), ...this.kubeVips],
      attached: this.keeper?.attached ?? false,
      reconcileFailed: p.reconcileError !== null,
      failedVips: new Set(p.failedVips.keys()),
    });
  }

  /** An 'error' event of a component: logged, counted, shown in /state (and in /readyz for a while). */
  private onComponentError(component: DaemonComponent, e: unknown): void {
    this.componentErrors.record(component, e);
    this.metrics?.componentErrors.inc({ component });
    this.log.error({ err: e, component }, 'component error; the daemon keeps running');
  }
}

/** Without a BFD client (a daemon built without one): BFD is reported unreachable, BGP runs without it. */
/** The reason of the start's own sync (it sets no health targets: Daemon.setStartTargets). */
const START_SYNC = 'start';
/** The reason of the loop's sync that sets the start's health targets after ready. */
export const START_TARGETS = 'health targets after start';

const noBfdClient: BfdConnect = () => Promise.reject(new Error('this daemon has no BFD client'));
