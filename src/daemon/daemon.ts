// The daemon: config (file, optionally Kubernetes) -> desired state -> datapath; health checks; BGP; admin API.
// Restart-safe: programs and maps are pinned; a start adopts them, an exit leaves forwarding running.
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { BgpSpeakerHandle } from '../bgp/speaker-protocol';
import { BgpSpeakerThread } from '../bgp/speaker-thread';
import { registerBgpMetrics } from '../bgp/metrics';
import type { AnnounceDecision } from '../bgp/policy';
import { bgpConfigSchema, BgpConfig } from '../bgp/config';
import { queryXdp, unpin } from '../datapath/bpf';
import {
  KernelDatapath,
  BALANCER_MAPS,
  BALANCER_PROGRAM,
  balancerMapSizes,
  SizeShortfall,
  sizeShortfalls,
} from '../datapath/kernel';
import type { DatapathConfig } from '../datapath/types';
import { HealthMonitor, LocalCheckError } from '../health/monitor';
import type { HealthStatus } from '../health/state';
import { healthTargets } from '../health/targets';
import { rateLimited, type Logger } from '../log';
import { createMetrics, DaemonMetrics, renderRegistry } from '../metrics';
import { hostIssues, type Config, type VipConfig } from '../model/config';
import { ConfigRejectedError, formatIssue } from '../model/errors';
import {
  desiredState,
  DesiredState,
  idStateFromDatapath,
  IdState,
  Reconciler,
  ReconcileFailure,
  ReconcileSummary,
  resolveDatapathConfig,
  TableCache,
} from '../reconcile';
import { FileConfigSource } from '../sources/file/watcher';
import type { ReloadEvent } from '../sources/types';
import { AdminServer, Readiness, startAdmin } from './admin';
import { announcements } from './announce';
import { AttachCheckTimer } from './attach-check';
import { defaultGatewayMac, interfaceAddresses, interfaceMac } from './host';
import { acquirePinLock, PinLock } from './lock';
import { checkBpffs, currentNetnsName, pinDir, securePinPath } from './pins';
import { bgpPreflight, listenHint } from './preflight';
import { installSectionValidators } from './validators';
import { VipRouteKeeper } from './vip-routes';

export interface DaemonOptions {
  configPath: string;
  /** bpffs root (pins go to <bpffs>/peak-xdp/<netns>/<interface>/). */
  bpffs: string;
  /** Detach the program and remove the pins on exit (default: leave forwarding running). */
  detachOnExit: boolean;
  logger: Logger;
  /** Watch Services/EndpointSlices (node settings still come from the config file). */
  kubernetes?: { kubeconfig?: string; nodeName?: string };
}

/** How often the daemon re-checks its pins (the attachment is checked every 250 ms: attach-check.ts). */
const PIN_CHECK_MS = 2000;
/** Health checks that fail on this host are logged once per this interval at most (with a count). */
const LOCAL_ERROR_LOG_MS = 10_000;
/** First wait before retrying VIPs whose datapath writes failed; doubles per failed retry up to the max. */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
/** How long a component's 'error' event stays in /readyz's reasons (it stays in /state for good). */
const COMPONENT_ERROR_RECENT_MS = 300_000;

/** The daemon's event-emitting components whose 'error' events it survives. */
export type DaemonComponent = 'config-source' | 'health-monitor' | 'bgp';

/** Pins found gone or replaced under the running daemon (the last time), and what was done about it. */
interface PinTrouble {
  count: number;
  at: string;
  atMs: number;
  missing: string[];
  foreign: string[];
  restored: boolean;
  error: string | null;
}

/** One component's 'error' events so far. */
interface ComponentErrors {
  count: number;
  last: string;
  at: string;
  atMs: number;
}

export class Daemon {
  private readonly opts: DaemonOptions;
  private readonly log: Logger;
  private source: FileConfigSource | null = null;
  private config: Config | null = null;
  private dp: KernelDatapath | null = null;
  private pins = '';
  /** This daemon's hold on its pin directory (one owner per directory), from start to exit. */
  private lock: PinLock | null = null;
  /** Pins found gone (or replaced) under the running daemon, and whether they were pinned again. */
  private pinTrouble: PinTrouble | null = null;
  private adopted = false;
  private attached = false;
  private datapathConfig: DatapathConfig | null = null;
  private readonly reconciler: { r: Reconciler | null } = { r: null };
  private readonly tables = new TableCache();
  private ids: IdState | undefined;
  private desired: DesiredState | null = null;
  private lastReconcile: (ReconcileSummary & { at: string }) | null = null;
  /** The last reconcile failed as a whole (nothing written: e.g. the datapath could not be read). */
  private reconcileError: string | null = null;
  /** Desired VIPs whose datapath writes failed in the last reconcile, by name: withdrawn and retried. */
  private failedVips = new Map<string, ReconcileFailure>();
  /** Failed clean-up of what is no longer desired (no VIP withheld for it). */
  private cleanupFailures: ReconcileFailure[] = [];
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = 0;
  private reloadError: string | null = null;
  /** Why the balancer is detached and was not re-attached (null while attached). */
  private attachError: string | null = null;
  private reattaching: Promise<void> | null = null;
  private reattachCount = 0;
  private readonly componentErrors = new Map<DaemonComponent, ComponentErrors>();
  private lastDecision: AnnounceDecision | null = null;
  private readonly monitor = new HealthMonitor();
  private healthSeeds = new Map<string, HealthStatus>();
  /** The BGP speaker, on its own event loop (a worker thread): nothing here can delay its KEEPALIVEs. */
  private speaker: BgpSpeakerHandle | null = null;
  private bgp: BgpConfig | null | undefined;
  private admin: AdminServer | null = null;
  private metrics: DaemonMetrics | null = null;
  /** The admin API serves it from before the datapath is opened; the metrics register into it after. */
  private readonly registry = new Registry();
  private kube: import('../sources/kubernetes/source').KubernetesSource | null = null;
  private kubeVips: VipConfig[] = [];
  private attachTimer: NodeJS.Timeout | null = null;
  private attachChecks: AttachCheckTimer | null = null;
  /** Blackhole routes for the VIP addresses (vipBlackholeRoutes), set on every sync. */
  private vipRoutes: VipRouteKeeper | null = null;
  /** Fires when a backend's health-down grace ends (desired.nextGraceEnd): it then becomes down. */
  private graceTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private resyncWanted = false;
  private waiters: (() => void)[] = [];
  private stopped = false;
  /** start() has finished: the admin API answers from before (it is bound first), but not ready. */
  private started = false;
  private readonly startedAt = new Date().toISOString();

  constructor(opts: DaemonOptions) {
    this.opts = opts;
    this.log = opts.logger;
    installSectionValidators();
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
      await this.undoFreshDatapath();
      throw e;
    }
  }

  private async startUp(): Promise<void> {
    const source = new FileConfigSource({ path: this.opts.configPath });
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
    const config = first.config;
    this.config = config;

    checkBpffs(this.opts.bpffs);
    const netns = currentNetnsName();
    this.pins = pinDir({ bpffs: this.opts.bpffs, netns, ifname: config.interface });
    // One owner per pin directory, taken before any map is read or written: a second daemon stops here.
    this.lock = acquirePinLock({
      bpffs: this.opts.bpffs,
      netns,
      ifname: config.interface,
      pinDir: this.pins,
      command: 'daemon',
    });
    securePinPath({ bpffs: this.opts.bpffs, dir: this.pins, create: false });
    this.datapathConfig = await this.resolveHost(config);
    // Whatever else can refuse the start does so now, while the datapath is untouched.
    const bgpEarly = this.bgpConfig();
    if (bgpEarly) await bgpPreflight({ bgp: bgpEarly, ifname: config.interface });
    if (this.opts.kubernetes) await this.kubernetesSettings();
    const listen = config.admin.listen;
    this.admin = await startAdmin({
      host: listen.host,
      port: listen.port,
      registry: this.registry,
      // Once the metrics exist, their render shares one datapath counters read per scrape.
      renderMetrics: () => this.metrics?.render() ?? renderRegistry(this.registry),
      readiness: () => this.readiness(),
      state: () => this.state(),
      logger: this.log,
    }).catch((e: NodeJS.ErrnoException) => {
      throw new Error(
        `admin.listen ${listen.host}:${listen.port}: ${e.message}${listenHint(e.code, listen.port)}`,
      );
    });
    await this.openDatapath(config);
    const dp = this.dp!;
    this.reconciler.r = new Reconciler(dp);

    // Ids and health seeds from what the datapath holds: an adopted state is reconciled without churn.
    this.ids = await idStateFromDatapath(dp);
    if (this.adopted) {
      const states = new Map((await dp.listBackends()).map((b) => [b.id, b.state]));
      const probe = desiredState({ config, ids: this.ids, datapathConfig: this.datapathConfig });
      for (const v of probe.vips)
        for (const b of v.backends) if (states.get(b.id) === 'down') this.healthSeeds.set(b.key, 'down');
    }

    this.metrics = createMetrics({
      datapath: dp,
      desired: () => this.desired,
      health: () => this.monitor.snapshot(),
      healthLocalErrors: () => this.monitor.localErrors(),
      attached: () => this.attached,
      failedVips: () => this.failedVips.keys(),
      perBackend: config.admin.perBackendMetrics,
      registry: this.registry,
    });
    // The first load happened before the registry existed: count it, as the metric's help promises.
    this.metrics.reloads.inc({ result: 'ok', trigger: first.trigger });

    await this.sync('start');
    if (this.resyncWanted) {
      this.resyncWanted = false;
      await this.sync('health targets');
    }

    this.monitor.on('change', (c: { vip: string; address: string; from: string; to: string }) => {
      this.log.info({ vip: c.vip, backend: c.address, from: c.from, to: c.to }, 'backend health changed');
      void this.requestSync('health');
    });
    // Checks failing on this host (EMFILE, ...) leave statuses alone; say so, once per interval at most.
    const localErrorLog = rateLimited(LOCAL_ERROR_LOG_MS);
    this.monitor.on('localError', (c: LocalCheckError) =>
      localErrorLog((suppressed) =>
        this.log.warn(
          { vip: c.vip, backend: c.address, detail: c.result.detail, suppressedSinceLast: suppressed },
          'health check failed on this host, not the backend: no verdict, the backend keeps its status',
        ),
      ),
    );
    this.monitor.start();

    source.on('reload', (e: ReloadEvent) => this.onReload(e));

    if (this.opts.kubernetes) await this.startKubernetes();

    const bgp = this.bgpConfig();
    if (bgp) {
      let routerId = bgp.routerId;
      if (routerId === 'auto') {
        const v4 = (await interfaceAddresses(config.interface)).find((a) => !a.includes(':'));
        if (!v4) throw new Error(`bgp.routerId: "auto" but ${config.interface} has no IPv4 address: set it`);
        routerId = v4;
      }
      const speaker = new BgpSpeakerThread({
        ...bgp,
        routerId,
        logger: this.log.child({ component: 'bgp' }),
        restarted: this.adopted,
      });
      this.speaker = speaker;
      // Session errors and worker deaths (the worker is restarted) are counted here; the daemon lives on.
      speaker.on('error', (e: unknown) => this.onComponentError('bgp', e));
      registerBgpMetrics({
        registry: this.metrics.registry,
        status: () => speaker.status(),
        workerRestarts: () => speaker.restarts,
      });
      await speaker.start();
      this.announce();
    }

    this.attachTimer = setInterval(() => this.checkPins(), PIN_CHECK_MS);
    this.attachTimer.unref();
    this.attachChecks = new AttachCheckTimer(() => this.checkAttached());

    this.started = true;
    this.log.info(
      {
        interface: config.interface,
        pins: this.pins,
        adopted: this.adopted,
        vips: this.desired?.vips.length,
      },
      'daemon started',
    );
  }

  /** Graceful stop: BGP withdraws first (RFC 8326 drain if configured), then checks and the API stop. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.attachTimer) clearInterval(this.attachTimer);
    this.attachChecks?.stop();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (this.speaker)
      await this.speaker.stop().catch((e: Error) => this.log.warn({ err: e }, 'BGP stop failed'));
    this.monitor.stop();
    this.source?.stop();
    await this.kube?.stop().catch((e: Error) => this.log.warn({ err: e }, 'kubernetes source stop failed'));
    await this.syncing?.catch(() => undefined);
    await this.reattaching;
    await this.admin?.stop();
    if (this.dp && this.config && this.opts.detachOnExit) {
      await this.dp
        .detach({ ifname: this.config.interface })
        .catch((e: Error) => this.log.warn({ err: e }, 'detach failed'));
      rmSync(this.pins, { recursive: true, force: true });
      // Forwarding stops on purpose: VIP packets that still come are the kernel's business again.
      await this.vipRoutes?.removeAll();
      this.log.info({ interface: this.config.interface }, 'detached and unpinned (--detach-on-exit)');
    } else if (this.config && this.dp) {
      this.log.info(
        { interface: this.config.interface, pins: this.pins },
        'exiting; forwarding stays in place',
      );
    }
    // Otherwise the routes stay: harmless with the balancer attached, and they cover a later detach.
    await this.vipRoutes?.stop();
    this.dp?.close();
    this.lock?.release();
  }

  /** Everything /state shows: desired and actual, health, BGP, sources. */
  async state(): Promise<unknown> {
    const dp = this.dp;
    const desired = this.desired;
    return {
      startedAt: this.startedAt,
      interface: this.config?.interface,
      pins: this.pins,
      pinTrouble: this.pinTrouble,
      adopted: this.adopted,
      attached: this.attached,
      readiness: this.readiness(),
      datapathConfig: this.datapathConfig,
      lastReconcile: this.lastReconcile,
      reconcileError: this.reconcileError,
      failedVips: [...this.failedVips].map(([name, f]) => ({ name, ...f })),
      cleanupFailures: this.cleanupFailures,
      attachError: this.attachError,
      reattaches: this.reattachCount,
      componentErrors: Object.fromEntries(
        [...this.componentErrors].map(([c, e]) => [c, { count: e.count, last: e.last, at: e.at }]),
      ),
      announcements: this.lastDecision,
      reloadError: this.reloadError,
      desired: desired && {
        vips: desired.vips.map((v) => ({
          name: v.name,
          id: v.spec.id,
          address: v.spec.key.address,
          port: v.spec.key.port,
          protocol: v.spec.key.protocol,
          tableSize: v.spec.tableSize,
          flags: v.spec.flags,
          usableBackends: v.usableBackends,
          failOpen: v.failOpen,
          backends: v.backends.map((b) => ({
            id: b.id,
            address: b.address,
            weight: b.weight,
            drain: b.drain,
            health: b.health,
            state: b.state,
          })),
        })),
        unavailableVips: desired.unavailableVips,
        failOpenVips: desired.failOpenVips,
      },
      actual: dp && {
        vips: await dp.listVips(),
        backends: await dp.listBackends(),
        counters: await dp.counters(),
      },
      health: this.monitor.snapshot(),
      bgp: this.speaker?.status() ?? null,
      kubernetes: this.kube?.status() ?? null,
      vipRoutes: this.vipRoutes?.status() ?? null,
    };
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.started) reasons.push('starting');
    if (!this.attached)
      reasons.push(
        `balancer not attached to ${this.config?.interface ?? '?'}${this.attachError ? `: ${this.attachError}` : ''}`,
      );
    if (this.lastReconcile === null) reasons.push('datapath not reconciled yet');
    if (this.reconcileError) reasons.push(`last reconcile failed: ${this.reconcileError}`);
    // Failed VIPs are withdrawn one by one: the node stays ready while it serves any VIP at all.
    const failed = [...this.failedVips].map(
      ([name, f]) => `VIP ${name} not programmed, withdrawn (${f.op} ${f.target}: ${f.error}); retrying`,
    );
    const noneServed = this.failedVips.size > 0 && this.failedVips.size === this.desired?.vips.length;
    if (noneServed) reasons.push(...failed);
    if (this.kube && !this.kube.ready())
      reasons.push('kubernetes: not synced or API unreachable (serving last known state)');
    const degraded: string[] = noneServed ? [] : failed;
    for (const f of this.cleanupFailures)
      degraded.push(`datapath clean-up failed (${f.op} ${f.target}: ${f.error}); retrying`);
    if (this.reloadError)
      degraded.push(`config reload rejected, previous config in force: ${this.reloadError}`);
    const now = Date.now();
    const pt = this.pinTrouble;
    if (pt && !pt.restored)
      degraded.push(
        `pin directory ${this.pins}: ${pt.error}; a restart would not find this balancer (it would load a fresh one: connection table lost)`,
      );
    else if (pt && now - pt.atMs < COMPONENT_ERROR_RECENT_MS)
      degraded.push(
        `pin directory ${this.pins} went missing (${pt.missing.join(', ')}; ${pt.count} time(s), last at ${pt.at}) and was pinned again: find out who removes it`,
      );
    for (const [c, e] of this.componentErrors)
      if (now - e.atMs < COMPONENT_ERROR_RECENT_MS)
        degraded.push(`${c} error (${e.count} so far, last at ${e.at}), still running: ${e.last}`);
    return { ready: reasons.length === 0, reasons: [...reasons, ...degraded] };
  }

  private async resolveHost(config: Config): Promise<DatapathConfig> {
    const ownMac = await interfaceMac(config.interface);
    const addresses = await interfaceAddresses(config.interface);
    // The config checks that need this host (a VIP or backend that is the node's own address): refused at
    // start and on reload like any other config error.
    const issues = hostIssues(config, { interface: config.interface, addresses });
    if (issues.length > 0) throw new ConfigRejectedError(this.opts.configPath, issues);
    const autoNextHopMac =
      config.nextHopMac === 'auto' ? await defaultGatewayMac(config.interface) : undefined;
    const autoEncapAddresses = config.encapSource === 'auto' ? addresses : undefined;
    return resolveDatapathConfig({ config, ownMac, autoNextHopMac, autoEncapAddresses });
  }

  /** Adopts pinned state if present (restart), else loads, pins and attaches a fresh balancer. */
  private async openDatapath(config: Config): Promise<void> {
    const ifname = config.interface;
    if (existsSync(join(this.pins, BALANCER_PROGRAM))) {
      const dp = KernelDatapath.adopt({ pinDir: this.pins });
      // Before anything is written: a map smaller than the limits would fail later, id by id.
      const short = sizeShortfalls(dp, config.limits);
      if (short.length > 0) {
        dp.close();
        throw new Error(this.shortfallMessage(short));
      }
      this.dp = dp;
      this.adopted = true;
      this.log.info({ pins: this.pins }, 'adopted pinned balancer');
    } else {
      const dp = await KernelDatapath.load({ maxEntries: balancerMapSizes(config.limits) });
      try {
        securePinPath({ bpffs: this.opts.bpffs, dir: this.pins, create: true });
        dp.pin(this.pins);
      } catch (e) {
        dp.close();
        throw new Error(
          `pin the balancer under ${this.pins}: ${(e as Error).message} (is bpffs mounted there?)`,
        );
      }
      this.dp = dp;
      this.log.info({ pins: this.pins }, 'loaded and pinned a new balancer');
    }
    // Configure before attaching, so the first packet sees a ready config.
    if (this.datapathConfig) await this.dp.configure(this.datapathConfig);
    if (!this.dp.isAttached({ ifname })) {
      const st = await this.dp.attach({ ifname, mode: config.xdpMode });
      this.log.info({ interface: ifname, mode: st.mode, progId: st.progId }, 'balancer attached');
    }
    this.attached = true;
  }

  /** Why a pinned balancer cannot be adopted, and the two ways out. */
  private shortfallMessage(short: SizeShortfall[]): string {
    const ifname = this.config?.interface ?? '<interface>';
    const maps = short
      .map((s) => `map ${s.map} has ${s.maxEntries} entries but limits.${s.limit} is ${s.needed}`)
      .join('; ');
    const keys = [...new Set(short.map((s) => s.limit))]
      .map(
        (k) =>
          `limits.${k} to at most ${Math.min(...short.filter((s) => s.limit === k).map((s) => s.maxEntries))}`,
      )
      .join(', ');
    return (
      `the pinned balancer at ${this.pins} is smaller than the config needs: ${maps}. Nothing was changed. ` +
      `Either run \`peak-xdp detach --interface ${ifname} --purge --bpffs ${this.opts.bpffs}\` (forwarding stops ` +
      `until the daemon is back) and start the daemon again to load maps of the configured sizes, or set ${keys}.`
    );
  }

  private onReload(e: ReloadEvent): void {
    this.metrics?.reloads.inc({ result: e.ok ? 'ok' : 'rejected', trigger: e.trigger });
    if (!e.ok) {
      this.reloadError = e.errors.map(formatIssue).join('; ');
      this.log.error(
        { trigger: e.trigger, errors: e.errors.map(formatIssue) },
        'config rejected; previous config stays in force',
      );
      return;
    }
    const prev = this.config!;
    // Fields bound at start (the attachment, map sizes, the admin socket, the BGP sessions): a change is
    // rejected as a whole so the running state never mixes two configs.
    const fixed: string[] = (['interface', 'xdpMode'] as const).filter((k) => e.config[k] !== prev[k]);
    for (const k of ['limits', 'admin', 'bgp'] as const)
      if (JSON.stringify(e.config[k]) !== JSON.stringify(prev[k])) fixed.push(k);
    if (fixed.length > 0) {
      this.reloadError = `${fixed.join(', ')}: changing these needs a daemon restart`;
      this.log.error({ fields: fixed }, 'config reload rejected: these fields need a restart');
      return;
    }
    // Skip only when this exact config is already applied (a failed apply is retried by the next reload).
    if (e.config === this.config || (!e.changed && this.reloadError === null)) return;
    this.log.info({ trigger: e.trigger, vips: e.config.vips.length }, 'config reloaded');
    this.resolveHost(e.config)
      .then((dc) => {
        this.config = e.config;
        this.datapathConfig = dc;
        this.reloadError = null;
        void this.requestSync('reload');
      })
      .catch((err: Error) => {
        if (err instanceof ConfigRejectedError) {
          this.reloadError = err.issues.map(formatIssue).join('; ');
          this.log.error(
            { trigger: e.trigger, errors: err.issues.map(formatIssue) },
            'config rejected; previous config stays in force',
          );
          return;
        }
        this.reloadError = `host settings for the new config: ${err.message}`;
        this.log.error({ err }, 'config reload: host settings could not be resolved; previous config stays');
      });
  }

  /**
   * Coalesces sync requests: one sync runs at a time and at most one more is queued. The promise resolves
   * when a sync that started after this request has finished (so a caller knows its change is applied).
   */
  private requestSync(reason: string): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      this.waiters.push(resolve);
      if (this.syncing) {
        this.resyncWanted = true;
        return;
      }
      this.runSync(reason);
    });
  }

  private runSync(reason: string): void {
    const waiters = this.waiters.splice(0);
    this.syncing = this.sync(reason)
      .catch(() => undefined)
      .finally(() => {
        for (const w of waiters) w();
        this.syncing = null;
        if (this.resyncWanted && !this.stopped) {
          this.resyncWanted = false;
          this.runSync('queued');
        } else for (const w of this.waiters.splice(0)) w();
      });
  }

  /** Desired state from config + Kubernetes VIPs + health, reconciled into the datapath, then BGP updated. */
  private async sync(reason: string): Promise<void> {
    const config = this.config!;
    const merged: Config =
      this.kubeVips.length > 0 ? { ...config, vips: [...config.vips, ...this.kubeVips] } : config;
    // Every VIP address gets its route, programmed or not (traffic for it may come either way); not awaited.
    this.vipRoutes ??= new VipRouteKeeper({ ifname: config.interface, log: this.log });
    this.vipRoutes.set(
      merged.vips.map((v) => v.address),
      config.vipBlackholeRoutes,
    );
    const health = new Map(this.healthSeeds);
    for (const [k, s] of this.monitor.statuses()) health.set(k, s);
    const started = performance.now();
    const startedAt = new Date().toISOString();
    try {
      const desired = desiredState({
        config: merged,
        health,
        healthSince: this.monitor.since(),
        now: Date.now(),
        ids: this.ids,
        datapathConfig: this.datapathConfig,
        tables: this.tables,
      });
      const summary = await this.reconciler.r!.reconcile(desired);
      this.ids = desired.ids;
      // When a backend's health-down grace ends, sync again: it turns down and its flows move.
      if (this.graceTimer) clearTimeout(this.graceTimer);
      const end = desired.nextGraceEnd;
      this.graceTimer =
        end === null ? null : setTimeout(() => void this.requestSync('health grace'), end - Date.now());
      this.graceTimer?.unref();
      this.noteFailOpen(this.desired, desired);
      this.desired = desired;
      this.reconcileError = null;
      this.noteFailures(summary.failures);
      this.lastReconcile = { ...summary, at: new Date().toISOString() };
      this.metrics?.reconcileDuration.observe(
        { result: summary.failures.length > 0 ? 'partial' : 'ok' },
        (performance.now() - started) / 1000,
      );
      // Seeds only bridge a restart: once checks report, their statuses rule.
      this.monitor.setTargets(healthTargets(desired, this.healthSeeds));
      this.healthSeeds = new Map([...this.healthSeeds].filter(([k]) => !this.monitor.statuses().has(k)));
      // New targets start with a status but emit no change: reconcile once more so /state and the
      // datapath show it (otherwise a new backend reads health "unknown" until its first flip).
      const now = this.monitor.statuses();
      if (desired.vips.some((v) => v.backends.some((b) => now.has(b.key) && now.get(b.key) !== b.health)))
        this.resyncWanted = true;
      // startedAt lets a reader tell a sync that began before some moment from one that began after it.
      this.log.debug({ reason, summary, startedAt }, 'reconciled');
    } catch (e) {
      this.reconcileError = (e as Error).message;
      this.metrics?.reconcileDuration.observe({ result: 'error' }, (performance.now() - started) / 1000);
      this.log.error({ err: e, reason }, 'reconcile failed');
      this.scheduleRetry();
      this.announce();
      throw e;
    }
    this.announce();
  }

  /** Hands BGP the routes this node can serve now; the speaker sends nothing when they did not change. */
  private announce(): void {
    if (!this.speaker) return;
    this.lastDecision = announcements({
      desired: this.desired,
      // Names are unique across file and Kubernetes VIPs (one desired state is built from both).
      vipConfigs: [...(this.config?.vips ?? []), ...this.kubeVips],
      attached: this.attached,
      reconcileFailed: this.reconcileError !== null,
      failedVips: new Set(this.failedVips.keys()),
      minHealthyBackends: this.bgpConfig()?.minHealthyBackends,
    });
    this.speaker.setRoutes(this.lastDecision.announce);
  }

  /** Records the VIPs the last reconcile left not programmed (logging each change) and arranges a retry. */
  private noteFailures(failures: ReconcileFailure[]): void {
    const failed = new Map<string, ReconcileFailure>();
    for (const f of failures) for (const v of f.vips) if (!failed.has(v)) failed.set(v, f);
    for (const [vip, f] of failed)
      if (!this.failedVips.has(vip))
        this.log.error(
          { vip, op: f.op, target: f.target, error: f.error },
          'VIP not programmed: its datapath writes failed; withdrawn, retrying',
        );
    for (const vip of this.failedVips.keys())
      if (!failed.has(vip) && this.desired?.vips.some((v) => v.name === vip))
        this.log.info({ vip }, 'VIP programmed after its failed writes; announced again if ready');
    const cleanup = failures.filter((f) => f.vips.length === 0);
    for (const f of cleanup)
      this.log.warn({ op: f.op, target: f.target, error: f.error }, 'datapath clean-up failed; retrying');
    this.failedVips = failed;
    this.cleanupFailures = cleanup;
    if (failures.length > 0) this.scheduleRetry();
    else {
      this.retryDelayMs = 0;
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  /** Logs VIPs that start or stop failing open (every serving backend failing its checks, all forwarded to). */
  private noteFailOpen(before: DesiredState | null, after: DesiredState): void {
    const was = new Set(before?.failOpenVips ?? []);
    const now = new Set(after.failOpenVips);
    for (const v of after.vips)
      if (v.failOpen && !was.has(v.name))
        this.log.warn(
          { vip: v.name, backends: v.usableBackends },
          'VIP fails open: every backend fails its health checks; new flows go to all of them and the VIP ' +
            'stays announced (failOpen: false drops them instead)',
        );
    const present = new Set(after.vips.map((v) => v.name));
    for (const name of was)
      if (!now.has(name) && present.has(name))
        this.log.info({ vip: name }, 'VIP no longer fails open: health checks rule again');
  }

  /** Syncs again after a failed one, with backoff (the reconciler re-reads the datapath after a failure). */
  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    this.retryDelayMs = Math.min(
      RETRY_MAX_MS,
      this.retryDelayMs === 0 ? RETRY_MIN_MS : this.retryDelayMs * 2,
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.requestSync('retry');
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  /** An 'error' event of a component: logged, counted, shown in /state (and in /readyz for a while). */
  private onComponentError(component: DaemonComponent, e: unknown): void {
    const last = (e as Error)?.message ?? String(e);
    const prev = this.componentErrors.get(component);
    const at = new Date();
    this.componentErrors.set(component, {
      count: (prev?.count ?? 0) + 1,
      last,
      at: at.toISOString(),
      atMs: at.getTime(),
    });
    this.metrics?.componentErrors.inc({ component });
    this.log.error({ err: e, component }, 'component error; the daemon keeps running');
  }

  /**
   * After a failed start: detaches and unpins a balancer this start loaded (nothing forwarded before it), so
   * forwarding never runs on a config the daemon refused. An adopted balancer is left as it was found.
   */
  private async undoFreshDatapath(): Promise<void> {
    // Routes this start made go with a balancer it loaded; with an adopted one (still forwarding) they stay.
    if (this.adopted) await this.vipRoutes?.stop();
    else await this.vipRoutes?.removeAll();
    const dp = this.dp;
    if (!dp || this.adopted || !this.config) return;
    const ifname = this.config.interface;
    try {
      if (dp.isAttached({ ifname })) await dp.detach({ ifname });
      this.attached = false;
      for (const name of [BALANCER_PROGRAM, ...BALANCER_MAPS]) unpin(join(this.pins, name));
      try {
        rmdirSync(this.pins);
      } catch {
        // not empty (someone else's pins there, e.g. decap/): leave it
      }
      this.log.warn(
        { interface: ifname, pins: this.pins },
        'start failed: removed the balancer it had loaded',
      );
    } catch (e) {
      this.log.error(
        { err: e, pins: this.pins },
        'start failed, and removing the balancer it loaded failed too',
      );
    }
    dp.close();
    this.dp = null;
  }

  /**
   * Notices pins removed (or moved away) under the running daemon: a restart would not find this balancer,
   * load a fresh one and lose the connection table. Pins the live program and maps again at the same path
   * (pins that now hold other objects are left alone and reported).
   */
  private checkPins(): void {
    if (!this.dp || this.stopped) return;
    let found: { missing: string[]; foreign: string[] };
    try {
      found = this.dp.pinCheck(this.pins);
    } catch (e) {
      this.log.warn({ err: e, pins: this.pins }, 'could not check the pins');
      return;
    }
    const { missing, foreign } = found;
    if (missing.length === 0 && foreign.length === 0) {
      if (this.pinTrouble && !this.pinTrouble.restored) {
        this.pinTrouble = { ...this.pinTrouble, restored: true, error: null };
        this.log.info({ pins: this.pins }, 'pins are back in place');
      }
      return;
    }
    const known = this.pinTrouble;
    // Foreign pins stay until someone removes them: say so once, not every check.
    if (missing.length === 0 && known && !known.restored && known.foreign.join() === foreign.join()) return;
    const at = new Date();
    this.log.error(
      { pins: this.pins, missing, foreign },
      'pins gone under the running daemon: a restart would not find this balancer; pinning it again',
    );
    let error: string | null = null;
    try {
      securePinPath({ bpffs: this.opts.bpffs, dir: this.pins, create: true });
      this.dp.repin(this.pins, missing);
      if (foreign.length > 0)
        error = `pins ${foreign.join(', ')} hold other objects than the running balancer's`;
    } catch (e) {
      error = `pinning again failed: ${(e as Error).message}`;
    }
    if (error) this.log.error({ pins: this.pins, error }, 'balancer not (fully) pinned');
    else this.log.warn({ pins: this.pins, repinned: missing }, 'balancer pinned again');
    this.pinTrouble = {
      count: (known?.count ?? 0) + 1,
      at: at.toISOString(),
      atMs: at.getTime(),
      missing,
      foreign,
      restored: error === null,
      error,
    };
  }

  /**
   * Notices a detached (or replaced) program and puts ours back at once when the interface is free. The VIPs
   * stay announced when that works (the node forwards again within this check, and withdrawing would move
   * flows between LB nodes for nothing); they are withdrawn only when it cannot be put back (another program
   * in its place, an attach error), and announced again once it is.
   */
  private checkAttached(): void {
    if (!this.dp || !this.config || this.stopped || this.reattaching) return;
    let now = false;
    try {
      now = this.dp.isAttached({ ifname: this.config.interface });
    } catch (e) {
      this.log.warn({ err: e }, 'could not query the XDP attachment');
    }
    if (now && !this.attached) {
      // Back without us (someone attached the pinned program again): announce again.
      this.attached = true;
      this.attachError = null;
      this.log.warn({ interface: this.config.interface, attached: true }, 'balancer attachment changed');
      this.announce();
    }
    if (!now) this.reattaching = this.reattach().finally(() => (this.reattaching = null));
  }

  /**
   * Re-attaches the pinned program (the daemon owns the interface). Another XDP program in its place is left
   * alone: someone put it there on purpose; then, or when the attach fails, the VIPs are withdrawn. Never rejects.
   */
  private async reattach(): Promise<void> {
    const dp = this.dp!;
    const { interface: ifname, xdpMode } = this.config!;
    // Still attached as far as BGP knows: the detach is undone within the check that saw it, nothing withdrawn.
    const quiet = this.attached;
    const t0 = performance.now();
    let why: string;
    try {
      const current = queryXdp({ ifname }).progId;
      if (current !== 0 && current !== dp.program.id)
        why = `another XDP program (id ${current}) is attached there; not replacing it (detach it and the balancer is re-attached)`;
      else {
        const st = await dp.attach({ ifname, mode: xdpMode });
        this.attached = true;
        this.attachError = null;
        this.reattachCount++;
        this.metrics?.reattaches.inc({ result: 'ok' });
        this.log.warn(
          {
            interface: ifname,
            mode: st.mode,
            progId: st.progId,
            withdrawn: !quiet,
            attachMs: Math.round(performance.now() - t0),
            checkEveryMs: this.attachChecks?.intervalMs,
          },
          'balancer re-attached',
        );
        if (!quiet) this.announce();
        return;
      }
    } catch (e) {
      why = `re-attach failed: ${(e as Error).message}`;
      this.metrics?.reattaches.inc({ result: 'error' });
    }
    if (this.attached) {
      this.attached = false;
      this.log.warn({ interface: ifname, attached: false }, 'balancer attachment changed');
      this.announce();
    }
    if (why !== this.attachError)
      this.log.error({ interface: ifname, reason: why }, 'balancer detached; VIPs stay withdrawn');
    this.attachError = why;
  }

  /** The bgp section, parsed once (a change needs a restart, so the start-time value stays right). */
  private bgpConfig(): BgpConfig | null {
    if (this.bgp === undefined) {
      const raw = this.config?.bgp;
      this.bgp = raw === undefined ? null : bgpConfigSchema.parse(raw);
    }
    return this.bgp;
  }

  /** The kubernetes section, parsed (checked at start before the datapath is touched, used after). */
  private async kubernetesSettings() {
    const { parseKubernetesSettings } = await import('../sources/kubernetes/settings');
    const raw = (this.config as Config & { kubernetes?: unknown }).kubernetes;
    const parsed = parseKubernetesSettings(raw ?? {});
    if (!parsed.ok)
      throw new Error(
        parsed.issues.map((i) => formatIssue({ ...i, path: `kubernetes.${i.path}` })).join('; '),
      );
    return parsed;
  }

  private async startKubernetes(): Promise<void> {
    const { KubernetesSource } = await import('../sources/kubernetes/source');
    const parsed = await this.kubernetesSettings();
    // The Lease holder identity and Event reporter: --node-name, NODE_NAME (the DaemonSet passes
    // spec.nodeName), else the host name (a hostNetwork pod's host name is the node's).
    const nodeName = this.opts.kubernetes?.nodeName || process.env.NODE_NAME || hostname();
    this.kube = new KubernetesSource({
      ...parsed.settings,
      kubeconfig: this.opts.kubernetes?.kubeconfig,
      nodeName,
      registry: this.metrics!.registry,
      logger: this.log.child({ component: 'kubernetes' }),
      onChange: async (vips) => {
        this.kubeVips = vips;
        await this.requestSync('kubernetes');
      },
    });
    await this.kube.start();
  }
}
