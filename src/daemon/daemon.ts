// The daemon: config (file, optionally Kubernetes) -> desired state -> datapath; health checks; BGP; admin API.
// Restart-safe: programs and maps are pinned; a start adopts them, an exit leaves forwarding running.
import { existsSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { BgpSpeaker } from '../bgp/speaker';
import { registerBgpMetrics } from '../bgp/metrics';
import { decideAnnouncements, VipReadiness } from '../bgp/policy';
import { bgpConfigSchema, BgpConfig } from '../bgp/config';
import { KernelDatapath, BALANCER_PROGRAM, BalancerMap } from '../datapath/kernel';
import type { DatapathConfig } from '../datapath/types';
import { HealthMonitor } from '../health/monitor';
import type { HealthStatus } from '../health/state';
import { healthTargets } from '../health/targets';
import type { Logger } from '../log';
import { createMetrics, DaemonMetrics } from '../metrics';
import type { Config, VipConfig } from '../model/config';
import { formatIssue } from '../model/errors';
import {
  desiredState,
  DesiredState,
  idStateFromDatapath,
  IdState,
  Reconciler,
  ReconcileSummary,
  resolveDatapathConfig,
  TableCache,
} from '../reconcile';
import { FileConfigSource } from '../sources/file/watcher';
import type { ReloadEvent } from '../sources/types';
import { AdminServer, Readiness, startAdmin } from './admin';
import { defaultGatewayMac, interfaceAddresses, interfaceMac } from './host';
import { checkBpffs, currentNetnsName, pinDir } from './pins';
import { installSectionValidators } from './validators';

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

/** How often the daemon re-checks that its program is still attached (someone may detach it). */
const ATTACH_CHECK_MS = 2000;

export class Daemon {
  private readonly opts: DaemonOptions;
  private readonly log: Logger;
  private source: FileConfigSource | null = null;
  private config: Config | null = null;
  private dp: KernelDatapath | null = null;
  private pins = '';
  private adopted = false;
  private attached = false;
  private datapathConfig: DatapathConfig | null = null;
  private readonly reconciler: { r: Reconciler | null } = { r: null };
  private readonly tables = new TableCache();
  private ids: IdState | undefined;
  private desired: DesiredState | null = null;
  private lastReconcile: (ReconcileSummary & { at: string }) | null = null;
  private reconcileError: string | null = null;
  private reloadError: string | null = null;
  private readonly monitor = new HealthMonitor();
  private healthSeeds = new Map<string, HealthStatus>();
  private speaker: BgpSpeaker | null = null;
  private bgp: BgpConfig | null | undefined;
  private admin: AdminServer | null = null;
  private metrics: DaemonMetrics | null = null;
  private kube: import('../sources/kubernetes/source').KubernetesSource | null = null;
  private kubeVips: VipConfig[] = [];
  private attachTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private resyncWanted = false;
  private waiters: (() => void)[] = [];
  private stopped = false;
  private readonly startedAt = new Date().toISOString();

  constructor(opts: DaemonOptions) {
    this.opts = opts;
    this.log = opts.logger;
    installSectionValidators();
  }

  /** Loads config, adopts or loads + pins + attaches the balancer, reconciles, starts checks, BGP and the API. */
  async start(): Promise<void> {
    const source = new FileConfigSource({ path: this.opts.configPath });
    this.source = source;
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
    this.pins = pinDir({ bpffs: this.opts.bpffs, netns: currentNetnsName(), ifname: config.interface });
    this.datapathConfig = await this.resolveHost(config);
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
      attached: () => this.attached,
      perBackend: config.admin.perBackendMetrics,
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
      this.speaker = new BgpSpeaker({
        ...bgp,
        routerId,
        logger: this.log.child({ component: 'bgp' }),
        restarted: this.adopted,
      });
      registerBgpMetrics({ registry: this.metrics.registry, status: () => this.speaker!.status() });
      await this.speaker.start();
      this.announce();
    }

    this.attachTimer = setInterval(() => this.checkAttached(), ATTACH_CHECK_MS);
    this.attachTimer.unref();

    const listen = config.admin.listen;
    this.admin = await startAdmin({
      host: listen.host,
      port: listen.port,
      registry: this.metrics.registry,
      readiness: () => this.readiness(),
      state: () => this.state(),
      logger: this.log,
    });
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
    if (this.speaker)
      await this.speaker.stop().catch((e: Error) => this.log.warn({ err: e }, 'BGP stop failed'));
    this.monitor.stop();
    this.source?.stop();
    await this.kube?.stop().catch((e: Error) => this.log.warn({ err: e }, 'kubernetes source stop failed'));
    await this.syncing?.catch(() => undefined);
    await this.admin?.stop();
    if (this.dp && this.config && this.opts.detachOnExit) {
      await this.dp
        .detach({ ifname: this.config.interface })
        .catch((e: Error) => this.log.warn({ err: e }, 'detach failed'));
      rmSync(this.pins, { recursive: true, force: true });
      this.log.info({ interface: this.config.interface }, 'detached and unpinned (--detach-on-exit)');
    } else if (this.config) {
      this.log.info(
        { interface: this.config.interface, pins: this.pins },
        'exiting; forwarding stays in place',
      );
    }
    this.dp?.close();
  }

  /** Everything /state shows: desired and actual, health, BGP, sources. */
  async state(): Promise<unknown> {
    const dp = this.dp;
    const desired = this.desired;
    return {
      startedAt: this.startedAt,
      interface: this.config?.interface,
      pins: this.pins,
      adopted: this.adopted,
      attached: this.attached,
      readiness: this.readiness(),
      datapathConfig: this.datapathConfig,
      lastReconcile: this.lastReconcile,
      reconcileError: this.reconcileError,
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
      },
      actual: dp && {
        vips: await dp.listVips(),
        backends: await dp.listBackends(),
        counters: await dp.counters(),
      },
      health: this.monitor.snapshot(),
      bgp: this.speaker?.status() ?? null,
      kubernetes: this.kube?.status() ?? null,
    };
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.attached) reasons.push(`balancer not attached to ${this.config?.interface ?? '?'}`);
    if (this.lastReconcile === null) reasons.push('datapath not reconciled yet');
    if (this.reconcileError) reasons.push(`last reconcile failed: ${this.reconcileError}`);
    if (this.kube && !this.kube.ready())
      reasons.push('kubernetes: not synced or API unreachable (serving last known state)');
    const degraded: string[] = [];
    if (this.reloadError)
      degraded.push(`config reload rejected, previous config in force: ${this.reloadError}`);
    return { ready: reasons.length === 0, reasons: [...reasons, ...degraded] };
  }

  private async resolveHost(config: Config): Promise<DatapathConfig> {
    const ownMac = await interfaceMac(config.interface);
    const autoNextHopMac =
      config.nextHopMac === 'auto' ? await defaultGatewayMac(config.interface) : undefined;
    const autoEncapAddresses =
      config.encapSource === 'auto' ? await interfaceAddresses(config.interface) : undefined;
    return resolveDatapathConfig({ config, ownMac, autoNextHopMac, autoEncapAddresses });
  }

  /** Adopts pinned state if present (restart), else loads, pins and attaches a fresh balancer. */
  private async openDatapath(config: Config): Promise<void> {
    const ifname = config.interface;
    if (existsSync(join(this.pins, BALANCER_PROGRAM))) {
      this.dp = KernelDatapath.adopt({ pinDir: this.pins });
      this.adopted = true;
      this.log.info({ pins: this.pins }, 'adopted pinned balancer');
    } else {
      const maxEntries: Partial<Record<BalancerMap, number>> = {
        vips: config.limits.maxVips,
        maglev_tables: config.limits.maxVips,
        vip_addrs: config.limits.maxVips,
        vip_stats: config.limits.maxVips,
        backends: config.limits.maxBackends,
        backend_stats: config.limits.maxBackends,
        conntrack: config.limits.conntrackEntries,
      };
      const dp = await KernelDatapath.load({ maxEntries });
      try {
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
    const health = new Map(this.healthSeeds);
    for (const [k, s] of this.monitor.statuses()) health.set(k, s);
    const started = performance.now();
    try {
      const desired = desiredState({
        config: merged,
        health,
        ids: this.ids,
        datapathConfig: this.datapathConfig,
        tables: this.tables,
      });
      const summary = await this.reconciler.r!.reconcile(desired);
      this.ids = desired.ids;
      this.desired = desired;
      this.reconcileError = null;
      this.lastReconcile = { ...summary, at: new Date().toISOString() };
      this.metrics?.reconcileDuration.observe({ result: 'ok' }, (performance.now() - started) / 1000);
      // Seeds only bridge a restart: once checks report, their statuses rule.
      this.monitor.setTargets(healthTargets(desired, this.healthSeeds));
      this.healthSeeds = new Map([...this.healthSeeds].filter(([k]) => !this.monitor.statuses().has(k)));
      // New targets start with a status but emit no change: reconcile once more so /state and the
      // datapath show it (otherwise a new backend reads health "unknown" until its first flip).
      const now = this.monitor.statuses();
      if (desired.vips.some((v) => v.backends.some((b) => now.has(b.key) && now.get(b.key) !== b.health)))
        this.resyncWanted = true;
      this.log.debug({ reason, summary }, 'reconciled');
    } catch (e) {
      this.reconcileError = (e as Error).message;
      this.metrics?.reconcileDuration.observe({ result: 'error' }, (performance.now() - started) / 1000);
      this.log.error({ err: e, reason }, 'reconcile failed');
      this.announce();
      throw e;
    }
    this.announce();
  }

  /** Hands BGP the routes this node can serve now; the speaker sends nothing when they did not change. */
  private announce(): void {
    if (!this.speaker) return;
    const bgp = this.bgpConfig();
    const programmed = this.reconcileError === null && this.desired !== null;
    // Names are unique across file and Kubernetes VIPs (one desired state is built from both).
    const byName = new Map([...(this.config?.vips ?? []), ...this.kubeVips].map((v) => [v.name, v]));
    const vips: VipReadiness[] = (this.desired?.vips ?? []).map((v) => {
      const cfg = byName.get(v.name);
      return {
        vip: v.spec.key.address,
        attached: this.attached,
        programmed,
        healthyBackends: v.usableBackends,
        minHealthyBackends: cfg?.minHealthyBackends ?? undefined,
        communities: cfg?.communities,
        largeCommunities: cfg?.largeCommunities,
      };
    });
    const d = decideAnnouncements({ vips, minHealthyBackends: bgp?.minHealthyBackends });
    this.speaker.setRoutes(d.announce);
  }

  private checkAttached(): void {
    if (!this.dp || !this.config) return;
    let now = false;
    try {
      now = this.dp.isAttached({ ifname: this.config.interface });
    } catch (e) {
      this.log.warn({ err: e }, 'could not query the XDP attachment');
    }
    if (now !== this.attached) {
      this.attached = now;
      this.log.warn({ interface: this.config.interface, attached: now }, 'balancer attachment changed');
      this.announce();
    }
  }

  /** The bgp section, parsed once (a change needs a restart, so the start-time value stays right). */
  private bgpConfig(): BgpConfig | null {
    if (this.bgp === undefined) {
      const raw = this.config?.bgp;
      this.bgp = raw === undefined ? null : bgpConfigSchema.parse(raw);
    }
    return this.bgp;
  }

  private async startKubernetes(): Promise<void> {
    const { KubernetesSource } = await import('../sources/kubernetes/source');
    const { parseKubernetesSettings } = await import('../sources/kubernetes/settings');
    const raw = (this.config as Config & { kubernetes?: unknown }).kubernetes;
    const parsed = parseKubernetesSettings(raw ?? {});
    if (!parsed.ok)
      throw new Error(
        parsed.issues.map((i) => formatIssue({ ...i, path: `kubernetes.${i.path}` })).join('; '),
      );
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
