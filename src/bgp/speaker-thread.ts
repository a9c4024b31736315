// BgpSpeakerThread: the BGP speaker on its own event loop (a worker thread), so the daemon's table builds,
// map writes and config parsing never delay a KEEPALIVE or a hold timer. Restarts the worker if it dies.
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BgpConfig, BgpPeerConfig } from './config';
import type { RouteSpec } from './policy';
import { BgpLogger, SessionState, silentLogger } from './session';
import { Backoff } from '../util/backoff';
import { desiredRoutes, SpeakerOptions, SpeakerStatus, speakerConfig } from './speaker';
import type {
  BgpSpeakerHandle,
  FromSpeaker,
  SpeakerWorkerInit,
  ToSpeaker,
  WirePeerStatus,
  WireStatus,
} from './speaker-protocol';

/** The daemon's logger (pino satisfies it). */
export interface ThreadLogger extends BgpLogger {
  error(obj: object, msg?: string): void;
  isLevelEnabled?(level: string): boolean;
}

export interface SpeakerThreadOptions extends Omit<SpeakerOptions, 'logger' | 'sockets'> {
  logger?: ThreadLogger;
  /** The worker's entry script (default: speaker-worker.js next to this file, i.e. in dist/). */
  workerPath?: string;
  /** Wait before restarting a dead worker: first, cap (ms); doubles per quick death. */
  restartMinMs?: number;
  restartMaxMs?: number;
  /** How often the worker checks its status for changes to push (ms). */
  statusEveryMs?: number;
  /**
   * V8 old-generation cap of the worker (MiB): a leak ends the worker (restarted), not the daemon. Default
   * 256 plus room for the received prefixes every peer's maxPrefixes allows.
   */
  maxHeapMb?: number;
}

const DEFAULTS = { restartMinMs: 200, restartMaxMs: 10_000, statusEveryMs: 1000 };
/** Worker heap without received prefixes (MiB); the cap adds room for every peer's maxPrefixes. */
const BASE_HEAP_MB = 256;
/** A worker that ran this long before dying restarts after restartMinMs again. */
const STABLE_MS = 60_000;
/** How long stop() waits beyond the drain time for the worker to withdraw and close. */
const STOP_GRACE_MS = 5000;
/** A worker log record logged this much later than it was made carries loggedLateMs. */
const LATE_LOG_MS = 1000;
/** Heap allowed per received prefix the peers' maxPrefixes permit (a prefix in a Set costs ~170 bytes). */
const HEAP_PER_PREFIX = 256;

type Phase = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

/** A peer as shown while no worker runs (before start, between a death and the restart). */
function offlinePeer(
  p: BgpPeerConfig,
  lastError: string | null,
  since: number,
  heldDown: string | null,
): WirePeerStatus {
  const zero = () => ({ open: 0, update: 0, notification: 0, keepalive: 0, routeRefresh: 0 });
  return {
    peer: p.address,
    peerAsn: p.asn,
    state: SessionState.Idle,
    stateSince: since,
    transitions: 0,
    establishedCount: 0,
    messagesIn: zero(),
    messagesOut: zero(),
    negotiatedHoldTime: null,
    peerRouterId: null,
    families: [],
    fourOctetAs: false,
    peerGracefulRestart: false,
    lastError,
    nextRetryMs: null,
    localAddress: null,
    routeRefreshIgnored: 0,
    announced: [],
    skipped: [],
    updatesSent: 0,
    receivedPrefixes: 0,
    prefixesAnnouncedTotal: 0,
    prefixesWithdrawnTotal: 0,
    routeRefreshServed: 0,
    routeRefreshCoalesced: 0,
    maxPrefixes: p.maxPrefixes,
    maxPrefixesExceeded: 0,
    heldDown,
    nextRetryAt: null,
  };
}

/**
 * Same surface as BgpSpeaker for the daemon (start, setRoutes, status, stop; events peerUp, peerDown,
 * error). status() answers at once from the status the worker last pushed (it pushes on every change).
 * A worker that dies is logged, counted (`restarts`), reported as 'error' and restarted with backoff; its
 * sessions re-establish (with graceful restart the routers keep our routes meanwhile).
 */
export class BgpSpeakerThread extends EventEmitter implements BgpSpeakerHandle {
  readonly config: BgpConfig;
  /** What each worker's BgpSpeaker is built from (plain data: it crosses into the worker). */
  private readonly speakerOptions: SpeakerWorkerInit['options'];
  private readonly o: typeof DEFAULTS & { maxHeapMb: number };
  private readonly log: ThreadLogger;
  private readonly workerPath: string;
  private phase: Phase = 'new';
  private worker: Worker | null = null;
  private workerStartedAt = 0;
  private workerError: Error | null = null;
  private desired = new Map<string, RouteSpec>();
  /** Peers held down (holdPeer) -> reason: posted to every worker, so a restarted one keeps them down. */
  private readonly holds = new Map<string, string>();
  /** JSON of the routes last posted to the current worker (an unchanged set is not posted again). */
  private posted: string | null = null;
  private last: WireStatus;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly restartBackoff: Backoff;
  private restartCount = 0;
  private pendingStart: { resolve(): void; reject(e: Error): void } | null = null;
  private stopped: { resolve(): void } | null = null;
  private stopping: Promise<void> | null = null;

  constructor(opts: SpeakerThreadOptions) {
    super();
    const { logger, workerPath, restartMinMs, restartMaxMs, statusEveryMs, maxHeapMb, ...speaker } = opts;
    const { restarted: _r, backoffMinMs: _b0, backoffMaxMs: _b1, refreshIntervalMs: _i, ...cfg } = speaker;
    // Validated here too, so a bad config throws in the constructor as BgpSpeaker's does.
    this.config = speakerConfig(cfg);
    this.speakerOptions = speaker;
    this.o = {
      restartMinMs: restartMinMs ?? DEFAULTS.restartMinMs,
      restartMaxMs: restartMaxMs ?? DEFAULTS.restartMaxMs,
      statusEveryMs: statusEveryMs ?? DEFAULTS.statusEveryMs,
      maxHeapMb:
        maxHeapMb ??
        BASE_HEAP_MB +
          Math.ceil((this.config.peers.reduce((n, p) => n + p.maxPrefixes, 0) * HEAP_PER_PREFIX) / 2 ** 20),
    };
    this.workerPath = workerPath ?? join(__dirname, 'speaker-worker.js');
    this.log = logger ?? { ...silentLogger, error() {} };
    this.restartBackoff = new Backoff({ initialMs: this.o.restartMinMs, maxMs: this.o.restartMaxMs });
    this.last = this.offline(null);
  }

  /** Worker deaths so far (each one restarted). */
  get restarts(): number {
    return this.restartCount;
  }

  /** Starts the worker; resolves once it has bound its listener and started every session. */
  async start(): Promise<void> {
    if (this.phase !== 'new') return;
    if (!existsSync(this.workerPath))
      throw new Error(
        `BGP speaker worker script ${this.workerPath} is missing (build: npx tsc -p tsconfig.build.json)`,
      );
    this.phase = 'starting';
    try {
      await this.spawn(this.speakerOptions.restarted ?? false);
      this.phase = 'running';
    } catch (e) {
      this.phase = 'stopped';
      throw e;
    }
  }

  setRoutes(routes: RouteSpec[]): void {
    this.desired = desiredRoutes(routes);
    this.postRoutes();
  }

  holdPeer(peer: string, reason: string): void {
    this.holds.set(peer, reason);
    this.worker?.postMessage({ t: 'hold', peer, reason } satisfies ToSpeaker);
  }

  releasePeer(peer: string): void {
    if (!this.holds.delete(peer)) return;
    this.worker?.postMessage({ t: 'release', peer } satisfies ToSpeaker);
  }

  status(): SpeakerStatus {
    const now = Date.now();
    return {
      asn: this.last.asn,
      routerId: this.last.routerId,
      desired: [...this.desired.values()],
      draining: this.last.draining,
      peers: this.last.peers.map(({ nextRetryAt, ...p }) => ({
        ...p,
        nextRetryMs: nextRetryAt === null ? null : Math.max(0, nextRetryAt - now),
      })),
    };
  }

  /** Graceful stop in the worker (drain, withdraw, CEASE), then the worker ends; bounded. */
  stop(o: { gracefulShutdownMs?: number } = {}): Promise<void> {
    this.stopping ??= this.doStop(o);
    return this.stopping;
  }

  // -------------------------------------------------------------------------------------------------

  private async doStop(o: { gracefulShutdownMs?: number }): Promise<void> {
    const wasStarting = this.phase === 'starting';
    this.phase = 'stopping';
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const w = this.worker;
    if (w) {
      const drainMs = o.gracefulShutdownMs ?? this.config.gracefulShutdownMs;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.stopped = { resolve };
        timer = setTimeout(() => {
          this.log.warn(
            { waitedMs: drainMs + STOP_GRACE_MS },
            'bgp: speaker worker did not stop in time; ending it',
          );
          resolve();
        }, drainMs + STOP_GRACE_MS);
        w.postMessage({ t: 'stop', gracefulShutdownMs: o.gracefulShutdownMs } satisfies ToSpeaker);
      });
      clearTimeout(timer);
      this.stopped = null;
      this.worker = null;
      await w.terminate();
    }
    if (wasStarting) this.pendingStart?.reject(new Error('BGP speaker stopped while starting'));
    this.pendingStart = null;
    this.phase = 'stopped';
  }

  private offline(lastError: string | null): WireStatus {
    const since = Date.now();
    return {
      asn: this.config.asn,
      routerId: this.config.routerId,
      draining: false,
      peers: this.config.peers.map((p) =>
        offlinePeer(p, lastError, since, this.holds.get(p.address) ?? null),
      ),
    };
  }

  /** Starts a worker (`restarted`: the graceful-restart R bit); resolves when it reports 'started'. */
  private spawn(restarted: boolean): Promise<void> {
    const init: SpeakerWorkerInit = {
      options: { ...this.speakerOptions, restarted },
      debug: this.log.isLevelEnabled?.('debug') ?? false,
      statusEveryMs: this.o.statusEveryMs,
    };
    const w = new Worker(this.workerPath, {
      workerData: init,
      resourceLimits: { maxOldGenerationSizeMb: this.o.maxHeapMb },
    });
    this.worker = w;
    this.workerStartedAt = performance.now();
    this.workerError = null;
    this.posted = null;
    w.on('message', (m: FromSpeaker) => {
      if (w === this.worker) this.onMessage(m);
    });
    w.on('messageerror', (e: Error) =>
      this.log.warn({ err: e.message }, 'bgp: unreadable message from the speaker worker'),
    );
    w.on('error', (e: Error) => {
      if (w === this.worker) this.workerError = e;
    });
    w.on('exit', (code: number) => this.onExit(w, code));
    // Holds before start: the worker's speaker starts no held session.
    for (const [peer, reason] of this.holds) w.postMessage({ t: 'hold', peer, reason } satisfies ToSpeaker);
    w.postMessage({ t: 'start' } satisfies ToSpeaker);
    // Routes first thing: a restarted worker announces them as soon as each session is up again.
    this.postRoutes();
    return new Promise<void>((resolve, reject) => (this.pendingStart = { resolve, reject }));
  }

  private postRoutes(): void {
    const w = this.worker;
    if (!w) return;
    const routes = [...this.desired.values()];
    const json = JSON.stringify(routes);
    if (json === this.posted) return;
    this.posted = json;
    w.postMessage({ t: 'routes', routes } satisfies ToSpeaker);
  }

  private onMessage(m: FromSpeaker): void {
    switch (m.t) {
      case 'status':
        this.last = m.status;
        return;
      case 'log': {
        // A record that waited for this (busy) thread says how long, so its time is not misread.
        const late = Date.now() - m.at;
        this.log[m.level](late > LATE_LOG_MS ? { ...m.obj, loggedLateMs: late } : m.obj, m.msg);
        return;
      }
      case 'peerUp':
        this.emit('peerUp', m.peer);
        return;
      case 'peerDown':
        this.emit('peerDown', m.peer, m.reason);
        return;
      case 'error':
        this.emit('error', new Error(m.error));
        return;
      case 'started':
        this.pendingStart?.resolve();
        this.pendingStart = null;
        return;
      case 'startFailed': {
        const p = this.pendingStart;
        this.pendingStart = null;
        if (this.phase === 'starting') {
          // The first start: the caller (the daemon's start) gets the error, as with BgpSpeaker.start().
          const w = this.worker;
          this.worker = null;
          void w?.terminate();
          p?.reject(new Error(m.error));
        } else {
          // A restart that could not bind (yet): end this worker; onExit schedules the next attempt.
          this.workerError = new Error(`start failed: ${m.error}`);
          void this.worker?.terminate();
        }
        return;
      }
      case 'stopped':
        this.stopped?.resolve();
        return;
    }
  }

  private onExit(w: Worker, code: number): void {
    if (w !== this.worker) return;
    this.worker = null;
    if (this.phase === 'stopping' || this.phase === 'stopped') {
      this.stopped?.resolve();
      return;
    }
    const why = this.workerError ? this.workerError.message : `exit code ${code}`;
    if (this.phase === 'starting') {
      this.pendingStart?.reject(new Error(`BGP speaker worker ended while starting: ${why}`));
      this.pendingStart = null;
      return;
    }
    // A restart's worker that died before it started: its spawn() promise ends here; the next one is below.
    this.pendingStart?.reject(new Error(`BGP speaker worker ended while starting: ${why}`));
    this.pendingStart = null;
    const wasUp = this.last.peers.filter((p) => p.state === SessionState.Established).map((p) => p.peer);
    this.restartCount++;
    if (performance.now() - this.workerStartedAt >= STABLE_MS) this.restartBackoff.reset();
    const delay = this.restartBackoff.next();
    const reason = `BGP speaker worker died (${why}); restart ${this.restartCount} in ${delay} ms`;
    this.last = this.offline(reason);
    this.log.error(
      { reason: why, restarts: this.restartCount, inMs: delay },
      'bgp: speaker worker died; restarting it',
    );
    for (const peer of wasUp) this.emit('peerDown', peer, reason);
    if (this.listenerCount('error') > 0) this.emit('error', new Error(reason));
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.phase !== 'running') return;
      this.spawn(true).then(
        () => this.log.info({ restarts: this.restartCount }, 'bgp: speaker worker restarted'),
        (e: Error) => this.log.warn({ err: e.message }, 'bgp: speaker worker restart failed; retrying'),
      );
    }, delay);
  }
}
