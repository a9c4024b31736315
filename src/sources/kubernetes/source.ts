// KubernetesSource: informers -> translate -> onChange(vips); leader election, status and Events; readiness.
import type { Registry } from '../../metrics/prom';
import type { VipConfig } from '../../model/config';
import { DEFAULT_LEADER_ELECTION, type LeaderElectionOptions } from '../../model/kubernetes';
import { ClientKind, connectKube, KubeApi } from './client';
import { decideLease, Observation, releasedSpec } from './election';
import { createSourceMetrics, noMetrics, ResourceKind, SourceMetrics } from './metrics';
import { NODE_SKIP_REASONS, NodeSkipReason, slimNode } from './node-backends';
import { DEFAULT_LOAD_BALANCER_CLASS, EndpointSlice, Node, Service } from './objects';
import { parsePool, Pool } from './pool';
import { Backoff, Reflector, ReflectorIO } from './reflector';
import { planStatus } from './status';
import { ClaimMemo, Problem, TranslationCache } from './translate';
import { setTimeout as sleep } from 'node:timers/promises';

/** pino-compatible subset. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const silent: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

export { DEFAULT_LEADER_ELECTION };
export type { LeaderElectionOptions };

export interface KubernetesSourceOptions {
  /** Called with every VIP of ours whenever the set changes (never before the first full sync). Awaited. */
  onChange: (vips: VipConfig[]) => Promise<void> | void;
  /** This node's name: the Lease holder identity and the Event reporter. */
  nodeName: string;
  /** kubeconfig path; absent: in-cluster config. Ignored when `api` is given. */
  kubeconfig?: string;
  /** A ready API client (tests, or a daemon sharing one). */
  api?: KubeApi;
  loadBalancerClass?: string;
  /** Maglev table size of a Service without the table-size annotation (kubernetes.tableSize); absent: the
   * Kubernetes default (DEFAULTS.kubernetes.tableSize). */
  tableSize?: number;
  /** Address pool entries (CIDR or a-b ranges) for Services without an explicit address. */
  pool?: readonly string[];
  /** Addresses Services may request besides the pool's (kubernetes.allowedAddresses); never allocated. */
  allowedAddresses?: readonly string[];
  /** false: this node always acts as leader (single LB node); default DEFAULT_LEADER_ELECTION. */
  leaderElection?: Partial<LeaderElectionOptions> | false;
  onLeaderChange?: (leader: boolean) => void;
  logger?: Logger;
  /** The daemon's prom-client registry. */
  registry?: Registry;
  /**
   * Coalesces bursts of watch events: a publish waits until no event came for this long (default
   * DEFAULT_DEBOUNCE_MS), but never more than maxDebounceMs after the first unpublished event.
   */
  debounceMs?: number;
  /** Bound on the wait of debounceMs (default DEFAULT_MAX_DEBOUNCE_MS). */
  maxDebounceMs?: number;
  /** The bound instead while BURST_CHANGES or more changes are pending and events still come (default
   * DEFAULT_MAX_BURST_DEBOUNCE_MS; at least maxDebounceMs). */
  maxBurstDebounceMs?: number;
  backoff?: Backoff;
  watchTimeoutSeconds?: number;
  /** A watch silent for this long is treated as dead; default watchTimeoutSeconds + 30 s. */
  watchIdleTimeoutMs?: number;
}

export interface KubernetesSourceStatus {
  /** Every kind (Services, EndpointSlices, Nodes) listed at least once: the VIP set is meaningful. */
  synced: boolean;
  /** Every watch currently connected (false: degraded, serving the last known state). */
  connected: boolean;
  leader: boolean;
  lastError: string | null;
  vips: number;
  problems: Problem[];
}

/** Quiet time before a publish: a burst of watch events (a rollout, a re-list) becomes one onChange. */
export const DEFAULT_DEBOUNCE_MS = 10;
/** A steady stream of events still publishes this often. */
export const DEFAULT_MAX_DEBOUNCE_MS = 100;
/**
 * Pending changes from which a batch counts as a burst (a rollout over many Services, a re-list), and how long its
 * publish may then wait for the rest of it. A burst's reconcile takes ~1 s at 1,000 Services, and events that miss
 * it wait for all of it and then a reconcile of their own: in `bench:k8s` 2 of 3 rolling-update bursts went out in
 * two publishes at the 100 ms bound (events reach the daemon over ~250 ms while it parses them).
 */
export const BURST_CHANGES = 256;
export const DEFAULT_MAX_BURST_DEBOUNCE_MS = 300;
/** The quiet time instead of debounceMs while a burst is pending (at least debounceMs): the daemon parses watch events
 * a few ms at a time with turns between (LinePump), and a collection or a turn of other work left 10 ms gaps that
 * published half a burst. */
export const BURST_QUIET_MS = 30;

/** Status and Event writes the leader keeps in flight at once. */
const API_WRITES_IN_FLIGHT = 8;

/** Runs fn over items with at most `limit` calls pending at a time; fn must not throw. */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const problemKey = (p: Problem): string => `${p.namespace}/${p.name}|${p.reason}|${p.message}`;

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class KubernetesSource {
  private readonly opts: KubernetesSourceOptions;
  private readonly log: Logger;
  private readonly metrics: SourceMetrics;
  private readonly pool: Pool | null;
  private readonly allowed: Pool | null;
  private readonly lbClass: string;
  private readonly election: LeaderElectionOptions | null;
  private api: KubeApi | null = null;
  private services: Reflector<Service> | null = null;
  private slices: Reflector<EndpointSlice> | null = null;
  private nodes: Reflector<Node> | null = null;
  private stopped = true;
  private leader = false;
  private timer: NodeJS.Timeout | null = null;
  private electionTimer: NodeJS.Timeout | null = null;
  private electionLoop: Promise<void> | null = null;
  private electionWake: (() => void) | null = null;
  private publishing: Promise<void> | null = null;
  /** The leader's status and Event writes: their own loop, so a publish never waits for API round trips. */
  private leaderRun: Promise<void> | null = null;
  private leaderAgain = false;
  /** Changes (watch events, re-list diffs) since the last publish began. */
  private pendingChanges = 0;
  private dirty = false;
  private statusDirty = true;
  /** Arrival time of the oldest change not yet in the datapath. */
  private pendingSinceMs: number | null = null;
  /** Time of the last change not yet published (the debounce's quiet time runs from here). */
  private lastChangeMs = 0;
  /** onChange succeeded at least once. */
  private published = false;
  private lastVips: VipConfig[] = [];
  /** Per-Service translations: a publish re-translates only what changed. */
  private readonly translator = new TranslationCache();
  /** Per-Service address parsing for planStatus (pool and allowed list are fixed for the source's life). */
  private readonly claimMemo: ClaimMemo = new WeakMap();
  private readonly debounceMs: number;
  private readonly maxDebounceMs: number;
  private readonly maxBurstDebounceMs: number;
  private problems: Problem[] = [];
  private readonly logged = new Set<string>();
  private readonly reported = new Set<string>();
  private observation: Observation | null = null;
  private lastRenewMs = 0;
  private lastError: string | null = null;

  constructor(opts: KubernetesSourceOptions) {
    if (typeof opts.onChange !== 'function')
      throw new TypeError('KubernetesSource: onChange must be a function');
    if (typeof opts.nodeName !== 'string' || opts.nodeName === '')
      throw new TypeError(
        `KubernetesSource: nodeName ${JSON.stringify(opts.nodeName)} must be a non-empty string`,
      );
    this.opts = opts;
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.maxDebounceMs = Math.max(this.debounceMs, opts.maxDebounceMs ?? DEFAULT_MAX_DEBOUNCE_MS);
    this.maxBurstDebounceMs = Math.max(
      this.maxDebounceMs,
      opts.maxBurstDebounceMs ?? DEFAULT_MAX_BURST_DEBOUNCE_MS,
    );
    for (const [field, v] of [
      ['debounceMs', this.debounceMs],
      ['maxDebounceMs', opts.maxDebounceMs ?? DEFAULT_MAX_DEBOUNCE_MS],
      ['maxBurstDebounceMs', opts.maxBurstDebounceMs ?? DEFAULT_MAX_BURST_DEBOUNCE_MS],
    ] as const)
      if (!(Number.isFinite(v) && v >= 0))
        throw new TypeError(`KubernetesSource: ${field} ${v} must be a number >= 0`);
    this.log = opts.logger ?? silent;
    this.metrics = opts.registry ? createSourceMetrics(opts.registry) : noMetrics;
    this.lbClass = opts.loadBalancerClass ?? DEFAULT_LOAD_BALANCER_CLASS;
    if (this.lbClass === '') throw new TypeError('KubernetesSource: loadBalancerClass "" must not be empty');
    if (opts.pool && opts.pool.length > 0) {
      const p = parsePool(opts.pool, 'kubernetes.pool');
      if (!p.ok) throw new TypeError(`KubernetesSource: ${p.errors.join('; ')}`);
      this.pool = p.pool;
    } else this.pool = null;
    const allowed = parsePool(opts.allowedAddresses ?? [], 'kubernetes.allowedAddresses', { whole: true });
    if (!allowed.ok) throw new TypeError(`KubernetesSource: ${allowed.errors.join('; ')}`);
    this.allowed = allowed.pool.length > 0 ? allowed.pool : null;
    this.election =
      opts.leaderElection === false ? null : { ...DEFAULT_LEADER_ELECTION, ...opts.leaderElection };
    if (this.election && this.election.renewDeadlineSeconds >= this.election.leaseDurationSeconds)
      throw new TypeError(
        `KubernetesSource: leaderElection.renewDeadlineSeconds ${this.election.renewDeadlineSeconds} must be below leaseDurationSeconds ${this.election.leaseDurationSeconds}`,
      );
  }

  /** Connects, lists both kinds and starts watching; resolves after the first full sync and first onChange. */
  async start(): Promise<void> {
    if (!this.stopped) throw new Error('KubernetesSource already started');
    this.stopped = false;
    const connectStart = performance.now();
    let client: ClientKind | null = null;
    if (this.opts.api) this.api = this.opts.api;
    else {
      const api = await connectKube({
        kubeconfig: this.opts.kubeconfig,
        metrics: this.metrics,
        watchTimeoutSeconds: this.opts.watchTimeoutSeconds,
      });
      client = api.client;
      this.api = api;
    }
    // Loading @kubernetes/client-node (only for exec plugins, auth providers, proxies) is a second or so.
    this.log.debug(
      {
        ms: Math.round(performance.now() - connectStart),
        client: client === null ? 'given' : client.kind === 'lite' ? 'lite' : `full (${client.because})`,
      },
      'kubernetes: client ready',
    );
    const idle = this.opts.watchIdleTimeoutMs ?? ((this.opts.watchTimeoutSeconds ?? 300) + 30) * 1000;
    const listCall = { services: 'listServices', endpointslices: 'listEndpointSlices', nodes: 'listNodes' } as const; // prettier-ignore
    const mk = <T extends Service | EndpointSlice | Node>(
      kind: ResourceKind,
      io: ReflectorIO<T>,
      transform?: (o: T) => T,
    ): Reflector<T> =>
      new Reflector<T>({
        kind,
        io,
        transform,
        backoff: this.opts.backoff,
        idleTimeoutMs: idle,
        // Status (addresses) depends on Services only; slices matter to it through problems (noteProblems).
        onChange: (c) => this.changed(c.atMs, kind === 'services'),
        onList: (reason, info) => {
          this.metrics.relist(kind, reason);
          this.log.debug({ kind, reason, ...info }, 'kubernetes: listed');
          if (reason !== 'start') this.log.info({ kind, reason }, 'kubernetes: re-listed');
        },
        onWatchEvent: (type) => this.metrics.watchEvent(kind, type),
        onError: (what, err) => {
          if (what === 'list') this.metrics.apiError(listCall[kind]);
          this.lastError = `${what} ${kind}: ${(err as Error)?.message ?? String(err)}`;
          this.log.warn(
            { kind, what, err: this.lastError },
            'kubernetes: API unreachable, keeping the last known state',
          );
        },
      });
    this.services = mk<Service>('services', this.api.services);
    this.slices = mk<EndpointSlice>('endpointslices', this.api.endpointSlices);
    this.nodes = mk<Node>('nodes', this.api.nodes, slimNode);
    if (this.election === null) this.setLeader(true);
    else this.electionLoop = this.runElection();
    await Promise.all([this.services.start(), this.slices.start(), this.nodes.start()]);
    this.changed(Date.now());
    await this.flush();
  }

  /** Ready: synced once and every watch connected. While not connected the last state stays programmed. */
  ready(): boolean {
    const s = this.status();
    return s.synced && s.connected;
  }

  status(): KubernetesSourceStatus {
    const r = [this.services, this.slices, this.nodes];
    return {
      synced: r.every((x) => x?.synced === true),
      connected: r.every((x) => x?.connected === true),
      leader: this.leader,
      lastError: this.lastError,
      vips: this.lastVips.length,
      problems: [...this.problems],
    };
  }

  isLeader(): boolean {
    return this.leader;
  }

  /** The VIPs last handed to onChange. */
  vips(): VipConfig[] {
    return this.lastVips;
  }

  /** Stops watching and releases the Lease if held; leaves the datapath as it is. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.electionTimer) clearTimeout(this.electionTimer);
    this.electionWake?.();
    await Promise.all([this.services?.stop(), this.slices?.stop(), this.nodes?.stop()]);
    await this.electionLoop;
    await this.publishing;
    await this.leaderRun;
    if (this.leader && this.election && this.api) {
      try {
        const cur = await this.api.getLease(this.election);
        if (cur && cur.spec.holderIdentity === this.opts.nodeName)
          await this.api.updateLease({
            ...this.election,
            spec: releasedSpec(cur.spec, Date.now()),
            resourceVersion: cur.resourceVersion,
          });
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'kubernetes: could not release the Lease');
      }
    }
    this.setLeader(false);
    this.api?.close?.();
  }

  private changed(atMs: number, status = true): void {
    this.dirty = true;
    this.pendingChanges++;
    if (status) this.statusDirty = true;
    this.pendingSinceMs ??= atMs;
    this.lastChangeMs = Date.now();
    if (this.stopped || this.timer !== null) return;
    if (!this.allSynced()) return; // never publish a half-listed world
    this.armDebounce(this.debounceMs);
  }

  private allSynced(): boolean {
    return this.services?.synced === true && this.slices?.synced === true && this.nodes?.synced === true;
  }

  /** Publishes once events paused for debounceMs, or maxDebounceMs after the first pending one (BURST_QUIET_MS and
   * maxBurstDebounceMs while BURST_CHANGES or more are pending). */
  private armDebounce(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.stopped) return;
      const now = Date.now();
      const burst = this.pendingChanges >= BURST_CHANGES;
      const quietLeft =
        this.lastChangeMs + (burst ? Math.max(this.debounceMs, BURST_QUIET_MS) : this.debounceMs) - now;
      const bound = burst ? this.maxBurstDebounceMs : this.maxDebounceMs;
      const maxLeft = (this.pendingSinceMs ?? now) + bound - now;
      // Re-arming on the timer (not on every event) keeps a burst of thousands of events cheap.
      if (quietLeft > 0 && maxLeft > 0) this.armDebounce(Math.min(quietLeft, maxLeft));
      else void this.flush();
    }, ms);
  }

  /** Publishes until nothing is dirty; one publish at a time. */
  private flush(): Promise<void> {
    if (this.publishing) return this.publishing;
    const p = (async () => {
      await Promise.resolve(); // so `publishing` is set before the loop can finish
      // Never a half-listed world, whoever asked for the flush (start() flushes once every kind is listed).
      while (this.dirty && !this.stopped && this.allSynced()) {
        this.dirty = false;
        const since = this.pendingSinceMs;
        this.pendingSinceMs = null;
        await this.publishOnce(since);
        if (this.leader) void this.kickLeader();
      }
    })().finally(() => {
      if (this.publishing === p) this.publishing = null;
      // A change that landed after the last loop check is published by a fresh run.
      if (this.dirty && !this.stopped && this.allSynced()) void this.flush();
    });
    this.publishing = p;
    return p;
  }

  private async publishOnce(sinceMs: number | null): Promise<void> {
    const t0 = performance.now();
    const changes = this.pendingChanges;
    this.pendingChanges = 0;
    const result = await this.translator.translateAsync({
      loadBalancerClass: this.lbClass,
      pool: this.pool,
      allowed: this.allowed,
      services: this.services!.items(),
      slices: this.slices!.items(),
      nodes: this.nodes!.items(),
      ...(this.opts.tableSize === undefined ? {} : { tableSize: this.opts.tableSize }),
    });
    this.noteProblems(result.problems);
    const skips = new Map<NodeSkipReason, number>();
    for (const p of result.problems)
      if ((NODE_SKIP_REASONS as readonly string[]).includes(p.reason))
        skips.set(p.reason as NodeSkipReason, (skips.get(p.reason as NodeSkipReason) ?? 0) + 1);
    this.metrics.nodeSkips(skips);
    const t1 = performance.now();
    // What the bench (and an operator at debug level) reads to split a change's latency: waiting for the
    // debounce and earlier publishes, translating, and the consumer's reconcile.
    const timing = {
      changes,
      translated: this.translator.lastTranslated,
      vips: result.vips.length,
      waitedMs: sinceMs === null ? null : Math.round(Date.now() - (t1 - t0) - sinceMs),
      translateMs: Math.round(t1 - t0),
      translateBusyMs: Math.round(this.translator.lastBusyMs),
    };
    // Unchanged VIPs keep their (frozen) objects, so comparing identities finds every change.
    if (this.published && sameItems(result.vips, this.lastVips)) {
      this.log.debug({ ...timing, onChangeMs: null }, 'kubernetes: translated, nothing to publish');
      return;
    }
    try {
      await this.opts.onChange(result.vips);
      this.published = true;
      this.lastVips = result.vips;
      this.log.debug({ ...timing, onChangeMs: Math.round(performance.now() - t1) }, 'kubernetes: published');
      if (sinceMs !== null) this.metrics.eventToDatapath((Date.now() - sinceMs) / 1000);
    } catch (e) {
      // The consumer failed (e.g. a datapath write): try again on the next change or retry tick.
      this.log.error({ err: (e as Error).message }, 'kubernetes: onChange failed');
      this.dirty = true;
      this.pendingSinceMs ??= sinceMs;
      await sleep(200);
    }
  }

  private noteProblems(problems: Problem[]): void {
    const keys = new Set(problems.map(problemKey));
    for (const p of problems) {
      const k = problemKey(p);
      if (!this.reported.has(k)) this.statusDirty = true; // the leader writes an Event for it
      if (this.logged.has(k)) continue;
      this.logged.add(k);
      this.log.warn({ service: `${p.namespace}/${p.name}`, reason: p.reason }, p.message);
    }
    for (const k of [...this.logged]) if (!keys.has(k)) this.logged.delete(k);
    for (const k of [...this.reported]) if (!keys.has(k)) this.reported.delete(k);
    this.problems = problems;
  }

  /** Runs leaderWork after a publish; a kick while it runs makes it run once more after. */
  private kickLeader(): Promise<void> {
    if (this.leaderRun) {
      this.leaderAgain = true;
      return this.leaderRun;
    }
    const p = (async () => {
      do {
        this.leaderAgain = false;
        if (this.leader && !this.stopped) await this.leaderWork();
      } while (this.leaderAgain && !this.stopped);
    })().finally(() => {
      if (this.leaderRun === p) this.leaderRun = null;
    });
    this.leaderRun = p;
    return p;
  }

  /** Leader only: pool allocation, status.loadBalancer.ingress, Events for problems. */
  private async leaderWork(): Promise<void> {
    const api = this.api;
    if (!api || !this.statusDirty) return;
    this.statusDirty = false;
    const plan = planStatus({
      loadBalancerClass: this.lbClass,
      pool: this.pool,
      allowed: this.allowed,
      services: this.services!.items(),
      memo: this.claimMemo,
    });
    // A few writes in flight: 1,000 Services' first status one round trip after another took seconds.
    await eachLimited(plan.updates, API_WRITES_IN_FLIGHT, async (u) => {
      try {
        await api.patchServiceStatus(u);
        this.log.info(
          { service: `${u.namespace}/${u.name}`, ingress: u.ingress.map((i) => i.ip) },
          'kubernetes: status written',
        );
      } catch (e) {
        this.statusDirty = true;
        this.log.warn(
          { service: `${u.namespace}/${u.name}`, err: (e as Error).message },
          'kubernetes: status write failed',
        );
      }
    });
    const events = new Map<string, Problem>();
    for (const p of [...this.problems, ...plan.problems]) {
      const k = problemKey(p);
      if (!this.reported.has(k) && !events.has(k)) events.set(k, p);
    }
    await eachLimited([...events], API_WRITES_IN_FLIGHT, async ([k, p]) => {
      try {
        await api.createEvent({
          namespace: p.namespace,
          service: { name: p.name, uid: p.uid },
          type: 'Warning',
          reason: p.reason,
          message: p.message,
          reporter: this.opts.nodeName,
        });
        this.reported.add(k);
      } catch (e) {
        this.statusDirty = true;
        this.log.warn(
          { service: `${p.namespace}/${p.name}`, err: (e as Error).message },
          'kubernetes: Event write failed',
        );
      }
    });
    if (plan.problems.length > 0)
      for (const p of plan.problems) this.log.warn({ service: `${p.namespace}/${p.name}` }, p.message);
  }

  private setLeader(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    this.log.info(
      { node: this.opts.nodeName, leader },
      leader ? 'kubernetes: became leader' : 'kubernetes: not leader',
    );
    this.opts.onLeaderChange?.(leader);
    if (leader) {
      this.statusDirty = true;
      this.reported.clear();
      if (this.allSynced()) {
        this.dirty = true;
        void this.flush();
      }
    }
  }

  private async runElection(): Promise<void> {
    const e = this.election!;
    while (!this.stopped) {
      try {
        await this.electionStep(e);
      } catch (err) {
        this.lastError = `lease: ${(err as Error).message}`;
        this.log.warn({ err: this.lastError }, 'kubernetes: leader election step failed');
      }
      if (this.leader && Date.now() - this.lastRenewMs > e.renewDeadlineSeconds * 1000) {
        this.log.warn(
          { node: this.opts.nodeName },
          'kubernetes: could not renew the Lease in time, stepping down',
        );
        this.setLeader(false);
      }
      // All listed, not only Services: the flush publishes VIPs too, and a world with Services but no slices yet
      // would program every VIP with no backends (seen: a Lease won between the two lists published one).
      if (this.leader && this.statusDirty && this.allSynced()) void this.flushLeader();
      if (this.stopped) break;
      await new Promise<void>((r) => {
        this.electionWake = r;
        this.electionTimer = setTimeout(r, e.retryPeriodSeconds * 1000);
      });
    }
  }

  private flushLeader(): Promise<void> {
    this.dirty = true;
    return this.flush();
  }

  private async electionStep(e: LeaderElectionOptions): Promise<void> {
    const api = this.api!;
    const cur = await api.getLease(e);
    const now = Date.now();
    const { decision, observation } = decideLease({
      identity: this.opts.nodeName,
      nowMs: now,
      leaseDurationSeconds: e.leaseDurationSeconds,
      current: cur?.spec ?? null,
      previous: this.observation,
    });
    this.observation = observation;
    if (decision.action === 'follow') {
      this.setLeader(false);
      return;
    }
    const ok =
      decision.action === 'create'
        ? await api.createLease({ ...e, spec: decision.spec })
        : await api.updateLease({ ...e, spec: decision.spec, resourceVersion: cur!.resourceVersion });
    if (ok) {
      this.lastRenewMs = now;
      this.setLeader(true);
    } else this.setLeader(false); // someone else wrote first
  }
}
