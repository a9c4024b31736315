// The daemon's link to the BFD process (src/bfd): sessions for the peers with `bfd`, BFD Down -> BGP session
// held down (RFC 5882 §4.3), reconnects with backoff. The BFD process is optional at run time: while it is
// absent BGP runs without BFD, and the daemon says so in /readyz and /state.
import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Registry } from '../metrics/prom';
import type { DiagName, StateName } from '../bfd/codec';
import { parseSessionSpec, SessionSpec } from '../bfd/config';
import { BFD_METRIC_NAMES } from '../bfd/metrics';
import type { BfdStatus, SessionStatus, SetSessionsResult, StateChangeEvent } from '../bfd/protocol';
import type { BgpSpeakerHandle } from '../bgp/speaker-protocol';
import type { Logger } from '../log';
import type { BgpConfig } from '../model/bgp';
import { ipFamily, isLinkLocal } from '../model/ip';
import { Backoff, BackoffBounds } from '../util/backoff';

/** What the link needs of a BfdClient (src/bfd/client.ts); events 'stateChange' and 'close'. */
export interface BfdClientLike extends EventEmitter {
  setSessions(s: SessionSpec[]): Promise<SetSessionsResult>;
  subscribe(listener?: (e: StateChangeEvent) => void): Promise<void>;
  status(): Promise<BfdStatus>;
  holdDown(o?: { sessions?: string[]; diag?: DiagName }): Promise<string[]>;
  up(o?: { sessions?: string[] }): Promise<string[]>;
  close(): void;
}

export type BfdConnect = (o: { path: string }) => Promise<BfdClientLike>;

/** One BGP peer's BFD session. */
export interface BfdPeerSession {
  /** bgp.peers[].address as configured (what the speaker knows the peer by). */
  peer: string;
  /** The BFD process's name for the session. */
  key: string;
  spec: SessionSpec;
}

/** What a BFD state means for the BGP session: close and hold it, let it run again, or leave it. */
export type BfdVerdict = 'hold' | 'release' | 'keep';

/** The peers with `bfd`, as BFD session specs (single-hop unless multihop); pure. */
export function bfdSessionsOf(bgp: BgpConfig, ifname: string): BfdPeerSession[] {
  return bgp.peers.flatMap((p, i) => {
    if (!p.bfd) return [];
    const linkLocal = ipFamily(p.address) === 6 && isLinkLocal(p.address);
    const spec: SessionSpec = {
      peer: p.address,
      ...(p.localAddress ? { local: p.localAddress } : {}),
      // A link-local peer is on the balanced interface (the only one the daemon knows).
      ...(linkLocal && !p.bfd.multihop ? { interface: ifname } : {}),
      multihop: p.bfd.multihop,
      minRx: p.bfd.minRx,
      minTx: p.bfd.minTx,
      multiplier: p.bfd.multiplier,
    };
    return [{ peer: p.address, key: parseSessionSpec(spec, `bgp.peers[${i}].bfd`).key, spec }];
  });
}

/**
 * A session's verdict, the one rule for events (state = the new state) and for the status read at (re)connect;
 * pure. Up releases. Lost since Up (the BFD process's `lostSinceUp`: Up -> Down for a reason other than the
 * peer's AdminDown, not Up since) holds (RFC 5882 §4.3). Anything else holds nothing: the peer's AdminDown is
 * planned, not a failure (§3.2); our own AdminDown is a planned stop; a session that never came Up says nothing
 * about a path BGP may be using, and BGP must come up without BFD. A process without the field holds nothing.
 */
export function verdictOf(s: { state: StateName; lostSinceUp?: boolean }): BfdVerdict {
  if (s.state === 'up') return 'release';
  return s.lostSinceUp === true ? 'hold' : 'keep';
}

export interface BfdLinkOptions {
  /** The BFD process's control socket (bgp.bfd.controlSocket). */
  path: string;
  sessions: BfdPeerSession[];
  connect: BfdConnect;
  speaker: Pick<BgpSpeakerHandle, 'holdPeer' | 'releasePeer'>;
  log: Logger;
  /** Metrics (peak_xdp_bfd_*: the BFD process's names) go here. */
  registry?: Registry;
  /** Reconnect backoff (ms); default 500 .. 10 000. */
  backoff?: BackoffBounds;
  /** How often the process's counters are read while connected (ms); default 5000. */
  statusEveryMs?: number;
}

/** One session as the daemon sees it. */
export interface BfdLinkSession {
  peer: string;
  key: string;
  state: StateName | null;
  remoteState: StateName | null;
  diag: DiagName | null;
  /** The BGP session is held down because of this BFD session. */
  bgpHeld: boolean;
  txIntervalMs: number | null;
  detectionTimeMs: number | null;
  lastChangeAt: number | null;
}

export interface BfdLinkStatus {
  path: string;
  connected: boolean;
  /** Why the last connect failed, or why the connection ended; null while connected. */
  lastError: string | null;
  connects: number;
  nextRetryMs: number | null;
  sessions: BfdLinkSession[];
}

/**
 * Keeps the BFD process's sessions equal to the peers with `bfd` and turns their states into BGP holds.
 * start() resolves after the first connect attempt, never rejects; stop() ends the link and leaves the
 * sessions running in the BFD process (a daemon restart is invisible to the router).
 */
export class BfdLink {
  private client: BfdClientLike | null = null;
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryAt: number | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private lastError: string | null = null;
  private connects = 0;
  private last: BfdStatus | null = null;
  /** Per key: last state seen (event or status). */
  private readonly seen = new Map<
    string,
    Pick<SessionStatus, 'state' | 'remoteState' | 'diag'> & { at: number | null }
  >();
  /** Configured peer addresses whose BGP session we hold. */
  private readonly held = new Set<string>();
  private readonly byKey: Map<string, BfdPeerSession>;
  private readonly stateChanges?: Counter<'peer' | 'to'>;

  constructor(private readonly o: BfdLinkOptions) {
    this.backoff = new Backoff({ ...(o.backoff ?? { initialMs: 500, maxMs: 10_000 }), jitter: true });
    this.byKey = new Map(o.sessions.map((s) => [s.key, s]));
    if (o.registry) this.stateChanges = this.registerMetrics(o.registry);
  }

  /** Connects (or schedules retries); resolves after the first attempt. */
  async start(): Promise<void> {
    await this.connect();
  }

  /** Ends the link; the BFD process keeps the sessions. Holds end with the daemon (the speaker stops too). */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.retryTimer = this.statusTimer = null;
    const c = this.client;
    this.client = null;
    c?.close();
  }

  /**
   * The node leaves for good (detach on exit): the router must drop it at once, so our sessions go Down
   * (holdDown: a failure to the peer, unlike AdminDown). Not for a daemon restart. False: not connected.
   */
  async holdDownForGood(): Promise<boolean> {
    const c = this.client;
    if (!c) return false;
    await c.holdDown({ sessions: [...this.byKey.keys()], diag: 'administratively-down' });
    return true;
  }

  /** For /readyz: why BFD does not work now, or null. */
  problem(): string | null {
    if (this.client || this.stopped) return null;
    return `BFD process not reachable at ${this.o.path} (${this.lastError ?? 'not connected yet'}); BGP runs without BFD, retrying`;
  }

  status(): BfdLinkStatus {
    const byKey = new Map((this.last?.sessions ?? []).map((s) => [s.key, s]));
    return {
      path: this.o.path,
      connected: this.client !== null,
      lastError: this.lastError,
      connects: this.connects,
      nextRetryMs: this.retryAt === null ? null : Math.max(0, this.retryAt - Date.now()),
      sessions: this.o.sessions.map((s) => {
        const seen = this.client ? this.seen.get(s.key) : undefined;
        const st = this.client ? byKey.get(s.key) : undefined;
        return {
          peer: s.peer,
          key: s.key,
          state: seen?.state ?? null,
          remoteState: seen?.remoteState ?? null,
          diag: seen?.diag ?? null,
          bgpHeld: this.held.has(s.peer),
          txIntervalMs: st?.txIntervalMs ?? null,
          detectionTimeMs: st?.detectionTimeMs ?? null,
          lastChangeAt: seen?.at ?? null,
        };
      }),
    };
  }

  // -------------------------------------------------------------------------------------------------

  private async connect(): Promise<void> {
    this.retryTimer = null;
    this.retryAt = null;
    let c: BfdClientLike;
    try {
      c = await this.o.connect({ path: this.o.path });
    } catch (e) {
      this.failed(e);
      return;
    }
    if (this.stopped) {
      c.close();
      return;
    }
    this.client = c;
    c.on('close', () => this.onClose(c));
    c.on('stateChange', (e: StateChangeEvent) => this.onEvent(e));
    try {
      // Subscribed first: no change between the status read and the subscription is missed.
      await c.subscribe();
      const r = await c.setSessions(this.o.sessions.map((s) => s.spec));
      // A starting daemon means the node is back: a holdDown left by `--detach-on-exit` (or by hand) ends
      // here, else an unchanged session would stay Down, and BGP held, for ever.
      if (this.o.sessions.length > 0) await c.up({ sessions: this.o.sessions.map((s) => s.key) });
      await this.readStatus(c, { applyVerdicts: true });
      if (this.stopped || this.client !== c) return;
      this.connects++;
      this.lastError = null;
      this.backoff.reset();
      this.o.log.info(
        { path: this.o.path, sessions: this.o.sessions.length, ...r },
        'bfd: connected to the BFD process; sessions set',
      );
      for (const [key, err] of Object.entries(r.errors ?? {}))
        this.o.log.warn({ key, err }, 'bfd: session cannot send yet (the BFD process retries)');
      this.statusTimer = setInterval(
        () => void this.readStatus(c, { applyVerdicts: false }),
        this.o.statusEveryMs ?? 5000,
      );
      this.statusTimer.unref?.();
    } catch (e) {
      if (this.client === c) {
        this.client = null;
        c.close();
      }
      this.failed(e);
    }
  }

  /** Reads the process's status; at (re)connect (applyVerdicts) also takes each session's verdict from it. */
  private async readStatus(c: BfdClientLike, o: { applyVerdicts: boolean }): Promise<void> {
    const apply = o.applyVerdicts;
    let st: BfdStatus;
    try {
      st = await c.status();
    } catch (e) {
      if (apply) throw e;
      return;
    }
    if (c !== this.client) return;
    this.last = st;
    for (const s of st.sessions) {
      if (!this.byKey.has(s.key)) continue;
      const prev = this.seen.get(s.key);
      if (apply || !prev)
        this.seen.set(s.key, {
          state: s.state,
          remoteState: s.remoteState,
          diag: s.diag,
          at: s.lastChangeAt,
        });
      if (apply) this.apply(s.key, verdictOf(s), `BFD session ${s.key} is ${s.state} (${s.diag})`);
    }
  }

  private onEvent(e: StateChangeEvent): void {
    if (!this.byKey.has(e.key)) return;
    this.seen.set(e.key, { state: e.to, remoteState: e.remoteState, diag: e.diag, at: e.at });
    this.stateChanges?.inc({ peer: e.peer, to: e.to });
    this.o.log.info(
      { key: e.key, from: e.from, to: e.to, diag: e.diag, remoteState: e.remoteState },
      'bfd: state change',
    );
    this.apply(
      e.key,
      verdictOf({ state: e.to, lostSinceUp: e.lostSinceUp }),
      `BFD session ${e.key} went ${e.from} -> ${e.to} (${e.diag})`,
    );
  }

  private apply(key: string, v: BfdVerdict, why: string): void {
    const peer = this.byKey.get(key)!.peer;
    if (v === 'hold' && !this.held.has(peer)) {
      this.held.add(peer);
      this.o.log.warn({ peer, key }, `bfd: ${why}: BGP session held down (RFC 5882)`);
      this.o.speaker.holdPeer(peer, why);
    } else if (v === 'release' && this.held.has(peer)) {
      this.held.delete(peer);
      this.o.log.info({ peer, key }, `bfd: ${why}: BGP session released`);
      this.o.speaker.releasePeer(peer);
    }
  }

  private onClose(c: BfdClientLike): void {
    if (c !== this.client) return;
    this.client = null;
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.statusTimer = null;
    this.last = null;
    this.seen.clear();
    // No BFD process, no BFD opinion: BGP runs on its own until the process is back (its sessions died with it,
    // and the router's own BFD decides for its side). The status read at reconnect restores any hold.
    for (const peer of this.held) this.o.speaker.releasePeer(peer);
    this.held.clear();
    if (this.stopped) return;
    this.failed(new Error('the BFD process closed the control connection'));
  }

  private failed(e: unknown): void {
    this.lastError = (e as Error)?.message ?? String(e);
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.retryAt = Date.now() + delay;
    this.o.log.warn(
      { path: this.o.path, err: this.lastError, retryInMs: delay },
      'bfd: BFD process not reachable',
    );
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  /** The BFD process's metric names (one list: src/bfd/metrics.ts), read from this link. */
  private registerMetrics(registry: Registry): Counter<'peer' | 'to'> {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const link = this;
    new Gauge({
      name: BFD_METRIC_NAMES.sessionUp,
      help: 'BFD session state as the daemon last saw it: 1 Up, 0 any other state (absent: BFD process unreachable)',
      labelNames: ['peer', 'session'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of link.status().sessions)
          if (s.state !== null) this.set({ peer: s.peer, session: s.key }, s.state === 'up' ? 1 : 0);
      },
    });
    new Gauge({
      name: BFD_METRIC_NAMES.bgpHeld,
      help: 'BGP session held down because its BFD session went Down (RFC 5882): 1 held, 0 not',
      labelNames: ['peer'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of link.status().sessions) this.set({ peer: s.peer }, s.bgpHeld ? 1 : 0);
      },
    });
    // The process's own totals (read every statusEveryMs): a restart of the process resets them, as a counter may.
    new Counter({
      name: BFD_METRIC_NAMES.controlPackets,
      help: 'BFD control packets of the BFD process: received datagrams (in, valid or not) and sent packets (out)',
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ direction: 'in' }, link.last?.packetsIn ?? 0);
        this.inc({ direction: 'out' }, link.last?.packetsOut ?? 0);
      },
    });
    return new Counter({
      name: BFD_METRIC_NAMES.stateChanges,
      help: 'BFD session state changes the daemon was told of, by new state',
      labelNames: ['peer', 'to'],
      registers: [registry],
    });
  }
}
