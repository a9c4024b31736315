// The BFD process's core shell: sessions (pure state machines from session.ts) driven by datagrams from a
// Transport and by one timer each; forwarding-plane fate; counters; state-change events. No sockets here.
import { EventEmitter } from 'node:events';
import { canonicalIp } from '../model/ip';
import { AttachCheckTimer } from '../daemon/attach-check';
import { ifNameToIndex } from '../datapath/bpf';
import {
  authSection,
  AUTH_TYPE_NAMES,
  ControlPacket,
  decodeControl,
  Diag,
  diagName,
  DropReason,
  encodeControl,
  State,
  stateName,
  verifyAuth,
} from './codec';
import { SessionConfig } from './config';
import type { ForwardingCheck, ForwardingVerdict } from './forwarding';
import type {
  BfdStatus,
  LatenessStats,
  SessionStatus,
  SetSessionsResult,
  StateChangeEvent,
} from './protocol';
import { CONTROL_PROTOCOL_VERSION } from './protocol';
import {
  adminDown,
  adminUp,
  Clock,
  createSession,
  detectionTimeUs,
  nextWake,
  packetFor,
  receive,
  Session,
  setHold,
  setParams,
  StateChange,
  tick,
  txIntervalUs,
} from './session';
import type { Datagram, Sender, Transport } from './socket';
import { Backoff, BackoffBounds } from '../util/backoff';

/** What the process reports to metrics (metrics.ts implements it with prom-client). */
export interface BfdMetricsSink {
  packet(direction: 'in' | 'out'): void;
  drop(reason: DropReason): void;
  stateChange(e: StateChangeEvent): void;
  sessionUp(key: string, peer: string, up: boolean | null): void;
  timerLateness(ms: number): void;
}

export interface BfdLogger {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
}

export interface BfdProcessOptions {
  transport: Transport;
  forwarding?: ForwardingCheck | null;
  metrics?: BfdMetricsSink;
  logger?: BfdLogger;
  /** Monotonic ms; default performance.now. */
  now?: () => number;
  /** Uniform [0, 1) for jitter; default Math.random. */
  random?: () => number;
  /** Retry of a session whose send socket could not be opened (ms); default 1000 .. 30 000. */
  openRetry?: BackoffBounds;
}

interface Entry {
  cfg: SessionConfig;
  s: Session;
  /** null until the send socket opens (the session waits, retried; it neither sends nor times out). */
  sender: Sender | null;
  /** Why the send socket did not open, until it does. */
  error: string | null;
  openRetry: Backoff;
  openTimer: NodeJS.Timeout | null;
  timer: NodeJS.Timeout | null;
  plannedAt: number;
  packetsIn: number;
  packetsOut: number;
  drops: Map<DropReason, number>;
  /** holdDown by command (diag), independent of the forwarding-plane hold. */
  commandHold: Diag | null;
  xmitSeq: number;
  ifindex: number | null;
}

/** A removed session says AdminDown this many times, one TX interval apart (at most 1 s), before it closes. */
const FAREWELL_PACKETS = 3;
const FAREWELL_MAX_GAP_MS = 1000;

/** How many recent lateness samples the percentiles are taken over. */
const LATENESS_WINDOW = 4096;

export class BfdProcess extends EventEmitter {
  private readonly o: BfdProcessOptions;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly sessions = new Map<string, Entry>();
  private readonly byDiscr = new Map<number, Entry>();
  private readonly drops = new Map<DropReason, number>();
  private packetsIn = 0;
  private packetsOut = 0;
  private readonly lateness: number[] = [];
  private latenessCount = 0;
  private latenessSum = 0;
  private latenessMax = 0;
  private fp: ForwardingVerdict = { ok: true, reason: null };
  private fpTimer: AttachCheckTimer | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly startedAt = Date.now();
  private started = false;
  /** Removed sessions still saying AdminDown (closed on stop()). */
  private readonly farewells = new Set<{ timer: NodeJS.Timeout | null; sender: Sender }>();

  constructor(o: BfdProcessOptions) {
    super();
    this.o = o;
    this.now = o.now ?? (() => performance.now());
    this.random = o.random ?? Math.random;
  }

  async start(): Promise<void> {
    await this.o.transport.start((d) => this.onDatagram(d));
    this.started = true;
    if (this.o.forwarding) {
      this.checkForwarding();
      // The daemon's pacing: every 250 ms on a normal node, so a detach is seen well within a detection time.
      this.fpTimer = new AttachCheckTimer(() => this.checkForwarding());
    }
  }

  stop(): void {
    this.fpTimer?.stop();
    for (const e of this.sessions.values()) this.close(e);
    for (const f of this.farewells) {
      if (f.timer) clearTimeout(f.timer);
      f.sender.close();
    }
    this.farewells.clear();
    this.sessions.clear();
    this.byDiscr.clear();
    this.o.transport.stop();
    this.started = false;
  }

  /** Replaces the desired set (serialised: one call at a time). Resolves with what changed. */
  setSessions(cfgs: SessionConfig[]): Promise<SetSessionsResult> {
    const run = this.queue.then(() => this.applySessions(cfgs));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applySessions(cfgs: SessionConfig[]): Promise<SetSessionsResult> {
    if (!this.started) throw new Error('BFD process not started');
    const want = new Map(cfgs.map((c) => [c.key, c]));
    const added: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    const errors: Record<string, string> = {};
    for (const [key, e] of this.sessions)
      if (!want.has(key)) {
        this.farewell(e);
        this.sessions.delete(key);
        this.byDiscr.delete(e.s.localDiscr);
        this.o.metrics?.sessionUp(key, e.cfg.peer, null);
        removed.push(key);
      }
    for (const [key, cfg] of want) {
      const e = this.sessions.get(key);
      if (e) {
        if (JSON.stringify(paramsOf(e.cfg)) !== JSON.stringify(paramsOf(cfg))) {
          e.cfg = cfg;
          e.s = setParams(e.s, cfg.params, this.clock());
          this.schedule(e);
          changed.push(key);
        }
        continue;
      }
      const entry: Entry = {
        cfg,
        s: createSession({ localDiscr: this.newDiscr(), params: cfg.params, now: this.now() }),
        sender: null,
        error: null,
        openRetry: new Backoff({ ...(this.o.openRetry ?? { initialMs: 1000, maxMs: 30_000 }), jitter: true }),
        openTimer: null,
        timer: null,
        plannedAt: 0,
        packetsIn: 0,
        packetsOut: 0,
        drops: new Map(),
        commandHold: null,
        xmitSeq: Math.floor(this.random() * 0x100000000) >>> 0,
        ifindex: null,
      };
      this.sessions.set(key, entry);
      this.byDiscr.set(entry.s.localDiscr, entry);
      this.applyHold(entry);
      this.o.metrics?.sessionUp(key, cfg.peer, false);
      added.push(key);
      // One session's socket failing (its local address not configured yet: EADDRNOTAVAIL) must not hold up
      // the others: it is kept, with its error, and retried.
      await this.open(entry);
      if (entry.error !== null) errors[key] = entry.error;
    }
    if (added.length + removed.length + changed.length > 0)
      this.o.logger?.info({ added, removed, changed, errors }, 'BFD sessions set');
    return { added, removed, changed, errors };
  }

  /** Opens the session's send socket; on failure records why and retries with backoff. */
  private async open(e: Entry): Promise<void> {
    e.openTimer = null;
    let sender: Sender;
    try {
      sender = await this.o.transport.openSender(e.cfg);
    } catch (err) {
      if (this.sessions.get(e.cfg.key) !== e) return;
      const first = e.error === null;
      e.error = (err as Error)?.message ?? String(err);
      const delay = e.openRetry.next();
      if (first)
        this.o.logger?.warn({ key: e.cfg.key, err: e.error, retryInMs: delay }, 'BFD session cannot send');
      e.openTimer = setTimeout(() => void this.open(e), delay);
      return;
    }
    // Removed (or the process stopped) while the socket was opening: it is nobody's.
    if (this.sessions.get(e.cfg.key) !== e) {
      sender.close();
      return;
    }
    if (e.error !== null) this.o.logger?.info({ key: e.cfg.key }, 'BFD session can send now');
    e.sender = sender;
    e.error = null;
    e.openRetry.reset();
    this.schedule(e);
  }

  /**
   * A removed session tells the peer AdminDown (RFC 5882 §3.2: not a failure) a few times, then closes: without
   * it the router would see a detection-time expiry, i.e. a failure.
   */
  private farewell(e: Entry): void {
    this.stopTimers(e);
    const sender = e.sender;
    if (!sender) return;
    const s =
      e.s.state === State.AdminDown ? e.s : adminDown(e.s, Diag.AdministrativelyDown, this.clock()).session;
    const gap = Math.min(FAREWELL_MAX_GAP_MS, txIntervalUs(s) / 1000 || FAREWELL_MAX_GAP_MS);
    const f = { timer: null as NodeJS.Timeout | null, sender };
    let left = FAREWELL_PACKETS;
    const say = () => {
      f.timer = null;
      this.send(e, packetFor(s, { final: false }), sender);
      if (--left > 0) f.timer = setTimeout(say, gap);
      else {
        sender.close();
        this.farewells.delete(f);
      }
    };
    this.farewells.add(f);
    say();
  }

  /** AdminDown (diag default administratively-down) for `keys` (all when undefined); returns the keys. */
  adminDown(keys: string[] | undefined, diag: Diag = Diag.AdministrativelyDown): string[] {
    return this.each(keys, (e) => {
      const r = adminDown(e.s, diag, this.clock());
      this.commit(e, r.session, r.events);
    });
  }

  /** Held Down with `diag`: the peer sees a failure. */
  holdDown(keys: string[] | undefined, diag: Diag = Diag.AdministrativelyDown): string[] {
    return this.each(keys, (e) => {
      e.commandHold = diag;
      this.applyHold(e);
    });
  }

  /** Undoes adminDown and holdDown. */
  up(keys: string[] | undefined): string[] {
    return this.each(keys, (e) => {
      e.commandHold = null;
      this.applyHold(e);
      const r = adminUp(e.s, this.clock());
      this.commit(e, r.session, r.events);
    });
  }

  /** Keys or peer addresses -> entries; throws naming an unknown one. */
  private each(keys: string[] | undefined, f: (e: Entry) => void): string[] {
    const list: Entry[] = [];
    if (keys === undefined) list.push(...this.sessions.values());
    else
      for (const k of keys) {
        const byKey = this.sessions.get(k);
        const matches = byKey
          ? [byKey]
          : [...this.sessions.values()].filter((e) => e.cfg.peer === canonicalIp(k));
        if (matches.length === 0)
          throw new Error(`no session ${JSON.stringify(k)} (give a key or a peer address)`);
        list.push(...matches);
      }
    for (const e of list) f(e);
    return list.map((e) => e.cfg.key);
  }

  status(): BfdStatus {
    const fwd = this.o.forwarding;
    return {
      version: CONTROL_PROTOCOL_VERSION,
      pid: process.pid,
      startedAt: this.startedAt,
      forwarding: fwd
        ? { interface: fwd.interface, pin: fwd.pin, ok: this.fp.ok, reason: this.fp.reason }
        : null,
      sessions: [...this.sessions.values()].map((e) => this.sessionStatus(e)),
      drops: Object.fromEntries(this.drops),
      packetsIn: this.packetsIn,
      packetsOut: this.packetsOut,
      timerLateness: this.latenessStats(),
    };
  }

  latenessStats(): LatenessStats {
    const sorted = [...this.lateness].sort((a, b) => a - b);
    const p99 = sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]! : 0;
    return {
      count: this.latenessCount,
      meanMs: this.latenessCount ? round3(this.latenessSum / this.latenessCount) : 0,
      p99Ms: round3(p99),
      maxMs: round3(this.latenessMax),
    };
  }

  private sessionStatus(e: Entry): SessionStatus {
    const s = e.s;
    const heldBy = !this.fp.ok
      ? 'forwarding-plane'
      : e.commandHold !== null || s.state === State.AdminDown
        ? 'command'
        : null;
    return {
      key: e.cfg.key,
      peer: e.cfg.peer,
      local: e.cfg.local,
      interface: e.cfg.interface,
      multihop: e.cfg.multihop,
      state: stateName(s.state),
      remoteState: stateName(s.remoteState),
      localDiscr: s.localDiscr,
      remoteDiscr: s.remoteDiscr,
      diag: diagName(s.localDiag),
      remoteDiag: diagName(s.remoteDiag),
      heldBy,
      lostSinceUp: s.lostSinceUp,
      error: e.error,
      configured: {
        minTx: s.config.desiredMinTxUs / 1000,
        minRx: s.config.requiredMinRxUs / 1000,
        multiplier: s.config.detectMult,
      },
      remote: {
        minTx: s.remoteDesiredMinTxUs / 1000,
        minRx: s.remoteMinRxUs / 1000,
        multiplier: s.remoteDetectMult,
      },
      txIntervalMs: txIntervalUs(s) / 1000,
      detectionTimeMs: detectionTimeUs(s) / 1000,
      pollActive: s.pollActive,
      auth: e.cfg.auth ? AUTH_TYPE_NAMES[e.cfg.auth.type] : null,
      packetsIn: e.packetsIn,
      packetsOut: e.packetsOut,
      drops: Object.fromEntries(e.drops),
      stateChanges: s.stateChanges,
      lastChangeAt: Math.round(Date.now() - (this.now() - s.lastChangeAt)),
    };
  }

  // ---- internals ----------------------------------------------------------------------------------

  private clock(): Clock {
    return { now: this.now(), random: this.random };
  }

  private newDiscr(): number {
    for (;;) {
      const d = (Math.floor(this.random() * 0xffffffff) + 1) >>> 0;
      if (d !== 0 && !this.byDiscr.has(d)) return d;
    }
  }

  private stopTimers(e: Entry): void {
    if (e.timer) clearTimeout(e.timer);
    if (e.openTimer) clearTimeout(e.openTimer);
    e.timer = e.openTimer = null;
  }

  private close(e: Entry): void {
    this.stopTimers(e);
    e.sender?.close();
  }

  private countDrop(reason: DropReason, e: Entry | null): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    if (e) e.drops.set(reason, (e.drops.get(reason) ?? 0) + 1);
    this.o.metrics?.drop(reason);
  }

  /** The session a datagram from `src` belongs to by addresses (for Your Discriminator 0, and drop counts). */
  private byAddress(d: Datagram, src: string): Entry | null {
    for (const e of this.sessions.values()) {
      const c = e.cfg;
      if (c.peer !== src || c.multihop !== d.multihop) continue;
      if (c.local !== null && d.dst !== '' && canonicalIp(d.dst) !== c.local) continue;
      if (c.interface !== null) {
        e.ifindex ??= resolveIfindex(c.interface);
        if (e.ifindex !== null && d.ifindex !== 0 && d.ifindex !== e.ifindex) continue;
      }
      return e;
    }
    return null;
  }

  private onDatagram(d: Datagram): void {
    this.packetsIn++;
    this.o.metrics?.packet('in');
    const src = canonicalIp(d.src) ?? d.src;
    // GTSM (RFC 5881 §5): single-hop packets must arrive with TTL / hop limit 255.
    if (!d.multihop && d.ttl !== 255) return this.countDrop('ttl-below-255', this.byAddress(d, src));
    const dec = decodeControl(d.data);
    if (!dec.ok) return this.countDrop(dec.reason, this.byAddress(d, src));
    const p = dec.packet;
    let e: Entry | null;
    if (p.yourDiscr !== 0) {
      e = this.byDiscr.get(p.yourDiscr) ?? null;
      if (e && (e.cfg.peer !== src || e.cfg.multihop !== d.multihop)) e = null;
    } else e = this.byAddress(d, src);
    if (!e) return this.countDrop('no-session', null);
    const auth = verifyAuth({
      packet: p,
      raw: d.data,
      config: e.cfg.auth ?? undefined,
      rx: e.s.authRx,
      detectMult: e.s.config.detectMult,
    });
    if (!auth.ok) return this.countDrop(auth.reason, e);
    e.packetsIn++;
    const r = receive({ ...e.s, authRx: auth.rx }, p, this.clock());
    this.commit(e, r.session, r.events);
    if (r.sendFinal) this.send(e, packetFor(e.s, { final: true }));
    this.schedule(e);
  }

  private send(e: Entry, p: ControlPacket, sender: Sender | null = e.sender): void {
    if (!sender) return;
    let buf: Buffer;
    if (e.cfg.auth) {
      const seq = e.xmitSeq;
      e.xmitSeq = (e.xmitSeq + 1) >>> 0;
      buf = encodeControl({ ...p, auth: authSection(e.cfg.auth, seq) }, { key: e.cfg.auth.secret });
    } else buf = encodeControl(p);
    sender.send(buf);
    e.packetsOut++;
    this.packetsOut++;
    this.o.metrics?.packet('out');
  }

  /** Stores the new session state and reports its state changes. */
  private commit(e: Entry, s: Session, events: StateChange[]): void {
    e.s = s;
    for (const ev of events) {
      const out: StateChangeEvent = {
        event: 'stateChange',
        key: e.cfg.key,
        peer: e.cfg.peer,
        from: stateName(ev.from),
        to: stateName(ev.to),
        diag: diagName(ev.diag),
        remoteState: stateName(s.remoteState),
        lostSinceUp: s.lostSinceUp,
        at: Math.round(Date.now() - (this.now() - ev.at)),
      };
      this.o.metrics?.stateChange(out);
      this.o.metrics?.sessionUp(e.cfg.key, e.cfg.peer, ev.to === State.Up);
      this.o.logger?.info({ ...out, event: undefined }, 'BFD state change');
      this.emit('stateChange', out);
    }
    if (events.length) this.schedule(e);
  }

  private schedule(e: Entry): void {
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
    // No socket yet: nothing to send, and a detection time we could not answer would only flap the session.
    if (!e.sender) return;
    const wake = nextWake(e.s);
    if (wake === null) return;
    e.plannedAt = wake;
    e.timer = setTimeout(() => this.fire(e), Math.max(0, Math.ceil(wake - this.now())));
  }

  private fire(e: Entry): void {
    e.timer = null;
    const now = this.now();
    const late = Math.max(0, now - e.plannedAt);
    this.recordLateness(late);
    const r = tick(e.s, { now, random: this.random });
    this.commit(e, r.session, r.events);
    if (r.transmit) this.send(e, r.transmit);
    this.schedule(e);
  }

  private recordLateness(ms: number): void {
    this.latenessCount++;
    this.latenessSum += ms;
    if (ms > this.latenessMax) this.latenessMax = ms;
    if (this.lateness.length >= LATENESS_WINDOW) this.lateness.shift();
    this.lateness.push(ms);
    this.o.metrics?.timerLateness(ms);
  }

  private checkForwarding(): void {
    const v = this.o.forwarding!.check();
    if (v.ok === this.fp.ok) {
      this.fp = v;
      return;
    }
    this.fp = v;
    this.o.logger?.warn(
      { interface: this.o.forwarding!.interface, ok: v.ok, reason: v.reason },
      'forwarding plane changed',
    );
    for (const e of this.sessions.values()) this.applyHold(e);
  }

  /** Forwarding plane down wins over a command hold; none: released. */
  private applyHold(e: Entry): void {
    const diag = !this.fp.ok ? Diag.ForwardingPlaneReset : e.commandHold;
    if (diag === e.s.hold) return;
    const r = setHold(e.s, diag, this.clock());
    this.commit(e, r.session, r.events);
    this.schedule(e);
  }
}

function paramsOf(c: SessionConfig) {
  return { params: c.params, auth: c.auth ? { ...c.auth, secret: c.auth.secret.toString('hex') } : null };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function resolveIfindex(name: string): number | null {
  try {
    return ifNameToIndex(name);
  } catch {
    return null;
  }
}
