// One BGP session (RFC 4271 §8 FSM): TCP connect with backoff or accept, OPEN negotiation, timers, errors.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import {
  AFI_IPV4,
  BgpError,
  BgpMessage,
  Capabilities,
  CeaseSub,
  describeNotification,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  ErrCode,
  Family,
  FsmSub,
  MsgType,
  OpenMessage,
  OpenSub,
  SAFI_UNICAST,
  splitFrames,
  decodeMessage,
  UpdateMessage,
  BGP_PORT,
  AS_TRANS,
} from './codec';
import { BgpSocketFactory, plainBgpSockets } from './sockets';
import { unmapIpv4 } from '../model/ip';
import { Backoff } from '../util/backoff';

import { SessionState } from './session-state';
export { SessionState };

/** Minimal logger the session needs (pino satisfies it). */
export interface BgpLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export const silentLogger: BgpLogger = { info() {}, warn() {}, debug() {} };

export interface SessionOptions {
  localAsn: number;
  routerId: string;
  peerAddress: string;
  peerAsn: number;
  port?: number;
  /** Source address for active connects. */
  localAddress?: string;
  /** Proposed hold time in seconds (0 or >= 3). */
  holdTime: number;
  passive: boolean;
  password?: string;
  families: Family[];
  /** Graceful restart time advertised (s); undefined = capability not sent. */
  gracefulRestartTime?: number;
  /** Set the R bit: this speaker has just restarted. */
  restarted?: boolean;
  /** Reconnect backoff: first delay, cap (ms). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** How long a TCP connect may take before it counts as failed (ms). */
  connectTimeoutMs?: number;
  logger?: BgpLogger;
  /** Where active connections come from (default plain sockets: a password then fails each connect). */
  sockets?: BgpSocketFactory;
}

/** Counters per message type, in each direction. */
export type MessageCounts = Record<'open' | 'update' | 'notification' | 'keepalive' | 'routeRefresh', number>;

export interface SessionStatus {
  peer: string;
  peerAsn: number;
  state: SessionState;
  /** ms since epoch of the last state change. */
  stateSince: number;
  transitions: number;
  establishedCount: number;
  messagesIn: MessageCounts;
  messagesOut: MessageCounts;
  negotiatedHoldTime: number | null;
  peerRouterId: string | null;
  families: Family[];
  fourOctetAs: boolean;
  peerGracefulRestart: boolean;
  lastError: string | null;
  /** Delay before the next connect attempt (ms), when one is scheduled. */
  nextRetryMs: number | null;
  localAddress: string | null;
  /** ROUTE-REFRESH messages ignored: their AFI/SAFI was not negotiated (RFC 2918 §4). */
  routeRefreshIgnored: number;
}

const typeKey: Record<number, keyof MessageCounts> = {
  [MsgType.OPEN]: 'open',
  [MsgType.UPDATE]: 'update',
  [MsgType.NOTIFICATION]: 'notification',
  [MsgType.KEEPALIVE]: 'keepalive',
  [MsgType.ROUTE_REFRESH]: 'routeRefresh',
};

const zeroCounts = (): MessageCounts => ({
  open: 0,
  update: 0,
  notification: 0,
  keepalive: 0,
  routeRefresh: 0,
});

/** Hold timer while waiting for OPEN (RFC 4271 §8: a large value, 4 minutes suggested). */
const OPEN_HOLD_MS = 240_000;
/** A flood of one warning (e.g. ROUTE-REFRESH for a family not negotiated) is logged at most this often. */
const WARN_EVERY_MS = 10_000;

/**
 * Events: 'state' (state, previous), 'established' (), 'down' (reason), 'update' (UpdateMessage),
 * 'routeRefresh' (Family).
 */
export class BgpSession extends EventEmitter {
  private readonly o: Required<
    Omit<SessionOptions, 'password' | 'gracefulRestartTime' | 'restarted' | 'localAddress'>
  > &
    SessionOptions;
  private st: SessionState = SessionState.Idle;
  private stateSince = Date.now();
  private socket: Socket | null = null;
  private rx: Buffer = Buffer.alloc(0);
  private holdTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private readonly backoff: Backoff;
  private nextRetryAt: number | null = null;
  private running = false;
  private transitions = 0;
  private establishedCount = 0;
  private readonly msgIn = zeroCounts();
  private readonly msgOut = zeroCounts();
  private negotiatedHold: number | null = null;
  private peerOpen: OpenMessage | null = null;
  private lastError: string | null = null;
  private negotiated: { families: Family[]; fourOctetAs: boolean } = { families: [], fourOctetAs: false };
  private refreshIgnored = 0;
  /** Ignored ROUTE-REFRESH messages since the last warning about them, and when that was (ms). */
  private refreshIgnoredWarn = { at: -Infinity, suppressed: 0 };

  constructor(opts: SessionOptions) {
    super();
    if (opts.holdTime !== 0 && (opts.holdTime < 3 || opts.holdTime > 65535))
      throw new TypeError(`holdTime must be 0 or 3..65535, got ${opts.holdTime}`);
    this.o = {
      port: BGP_PORT,
      backoffMinMs: 1000,
      backoffMaxMs: 30_000,
      connectTimeoutMs: 5000,
      logger: silentLogger,
      sockets: plainBgpSockets,
      // Explicit undefined must not override a default.
      ...(Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as SessionOptions),
    };
    this.backoff = new Backoff({ initialMs: this.o.backoffMinMs, maxMs: this.o.backoffMaxMs, jitter: true });
  }

  get state(): SessionState {
    return this.st;
  }

  get peerAddress(): string {
    return this.o.peerAddress;
  }

  /** Families usable on the established session (ours ∩ theirs). */
  get families(): Family[] {
    return this.negotiated.families;
  }

  get fourOctetAs(): boolean {
    return this.negotiated.fourOctetAs;
  }

  get ibgp(): boolean {
    return this.o.localAsn === this.o.peerAsn;
  }

  /** Local address of the TCP connection (next-hop self), when connected. */
  get localAddress(): string | null {
    const local = this.socket?.localAddress;
    return local === undefined ? null : unmapIpv4(local);
  }

  /** Begin: connect actively now, or wait for the peer when passive. */
  start(): void {
    if (this.running) return;
    this.running = true;
    if (this.o.passive) this.setState(SessionState.Active);
    else this.connect();
  }

  /** Close with CEASE (admin shutdown by default) and stay down. */
  async stop(subcode: number = CeaseSub.ADMIN_SHUTDOWN): Promise<void> {
    this.running = false;
    this.clearRetry();
    const sock = this.socket;
    const open =
      this.st === SessionState.OpenSent ||
      this.st === SessionState.OpenConfirm ||
      this.st === SessionState.Established;
    // Detach first so the socket's close is not taken for a failure.
    this.socket = null;
    if (sock && open && !sock.destroyed) {
      this.msgOut.notification++;
      sock.write(encodeNotification({ code: ErrCode.CEASE, subcode }));
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        sock.end(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (sock) sock.destroy();
    this.teardown(`stopped (${describeNotification(ErrCode.CEASE, subcode)})`, false);
  }

  /** An inbound connection from this peer (passive side, or collision with our own attempt). */
  accept(sock: Socket): void {
    if (!this.running) {
      sock.destroy();
      return;
    }
    // Simple collision rule: a session past Connect/Active keeps its connection (RFC 4271 §6.8 lite).
    if (
      this.st !== SessionState.Idle &&
      this.st !== SessionState.Connect &&
      this.st !== SessionState.Active
    ) {
      this.o.logger.info({ peer: this.o.peerAddress }, 'bgp: rejecting inbound connection, session busy');
      sock.end(encodeNotification({ code: ErrCode.CEASE, subcode: CeaseSub.CONNECTION_REJECTED }));
      return;
    }
    this.clearRetry();
    if (this.socket) this.dropSocket();
    this.attach(sock);
    this.onConnected();
  }

  /** Send an UPDATE (or any encoded message) on an established session; false when not established. */
  send(msg: Buffer): boolean {
    if (this.st !== SessionState.Established || !this.socket) return false;
    this.writeRaw(msg, msg[18] as number);
    return true;
  }

  status(): SessionStatus {
    return {
      peer: this.o.peerAddress,
      peerAsn: this.o.peerAsn,
      state: this.st,
      stateSince: this.stateSince,
      transitions: this.transitions,
      establishedCount: this.establishedCount,
      messagesIn: { ...this.msgIn },
      messagesOut: { ...this.msgOut },
      negotiatedHoldTime: this.negotiatedHold,
      peerRouterId: this.peerOpen?.routerId ?? null,
      families: this.negotiated.families,
      fourOctetAs: this.negotiated.fourOctetAs,
      peerGracefulRestart: this.peerOpen?.caps.gracefulRestart !== undefined,
      lastError: this.lastError,
      nextRetryMs: this.nextRetryAt === null ? null : Math.max(0, this.nextRetryAt - Date.now()),
      localAddress: this.localAddress,
      routeRefreshIgnored: this.refreshIgnored,
    };
  }

  /**
   * Closes an open session with CEASE/`subcode` (e.g. RFC 4486 Maximum Number of Prefixes Reached) and
   * reconnects later; `slowRetry` waits the longest backoff, for a cause the peer will likely repeat.
   */
  cease(o: { subcode: number; data?: Buffer; reason: string; slowRetry?: boolean }): void {
    if (!this.socket) return;
    if (o.slowRetry) this.backoff.saturate();
    this.protocolError({
      code: ErrCode.CEASE,
      subcode: o.subcode,
      data: o.data ?? Buffer.alloc(0),
      action: 'session-reset',
      reason: o.reason,
    });
  }

  // -------------------------------------------------------------------------------------------------

  private setState(s: SessionState): void {
    if (s === this.st) return;
    const prev = this.st;
    this.st = s;
    this.stateSince = Date.now();
    this.transitions++;
    this.o.logger.debug({ peer: this.o.peerAddress, from: prev, to: s }, 'bgp: state');
    this.emit('state', s, prev);
  }

  private connect(): void {
    this.nextRetryAt = null;
    this.setState(SessionState.Connect);
    let sock: Socket;
    try {
      sock = this.o.sockets.connect({
        host: this.o.peerAddress,
        port: this.o.port,
        password: this.o.password,
        localAddress: this.o.localAddress,
      });
    } catch (e) {
      this.fail(`connect: ${(e as Error).message}`);
      return;
    }
    this.attach(sock);
    // MD5 mismatch shows as a connect that never completes: bound it.
    this.connectTimer = setTimeout(() => this.fail('connect timed out'), this.o.connectTimeoutMs);
    sock.once('connect', () => {
      if (this.connectTimer) clearTimeout(this.connectTimer);
      this.connectTimer = null;
      this.onConnected();
    });
  }

  private attach(sock: Socket): void {
    this.socket = sock;
    this.rx = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      if (this.socket === sock) this.onData(d);
    });
    sock.on('error', (e) => {
      if (this.socket === sock) this.fail(`tcp: ${e.message}`);
    });
    sock.on('close', () => {
      if (this.socket === sock) this.fail('tcp: connection closed');
    });
  }

  private onConnected(): void {
    this.writeRaw(
      encodeOpen({
        asn: this.o.localAsn,
        holdTime: this.o.holdTime,
        routerId: this.o.routerId,
        families: this.o.families,
        routeRefresh: true,
        gracefulRestart:
          this.o.gracefulRestartTime === undefined
            ? undefined
            : {
                restartTime: this.o.gracefulRestartTime,
                restarted: this.o.restarted,
                forwardingPreserved: true,
              },
      }),
      MsgType.OPEN,
    );
    this.setState(SessionState.OpenSent);
    this.armHold(OPEN_HOLD_MS);
  }

  private onData(d: Buffer): void {
    this.rx = this.rx.length ? Buffer.concat([this.rx, d]) : d;
    const { frames, rest, error } = splitFrames(this.rx);
    this.rx = Buffer.from(rest);
    for (const f of frames) {
      if (!this.socket) return;
      const r = decodeMessage(f, { fourOctetAs: this.negotiated.fourOctetAs, ibgp: this.ibgp });
      const t = f[18] as number;
      if (typeKey[t]) this.msgIn[typeKey[t]]++;
      if (!r.ok) {
        this.protocolError(r.error);
        return;
      }
      this.onMessage(r.msg);
    }
    if (error) this.protocolError(error);
  }

  private onMessage(m: BgpMessage): void {
    if (m.type === MsgType.NOTIFICATION) {
      this.fail(`peer sent NOTIFICATION ${m.code}/${m.subcode}: ${describeNotification(m.code, m.subcode)}`);
      return;
    }
    switch (this.st) {
      case SessionState.OpenSent:
        if (m.type !== MsgType.OPEN)
          return this.fsmError(FsmSub.UNEXPECTED_IN_OPEN_SENT, `${MsgType[m.type]} in OpenSent`);
        return this.onOpen(m);
      case SessionState.OpenConfirm:
        if (m.type !== MsgType.KEEPALIVE)
          return this.fsmError(FsmSub.UNEXPECTED_IN_OPEN_CONFIRM, `${MsgType[m.type]} in OpenConfirm`);
        this.restartHold();
        this.backoff.reset();
        this.establishedCount++;
        this.lastError = null;
        this.setState(SessionState.Established);
        this.o.logger.info({ peer: this.o.peerAddress, hold: this.negotiatedHold }, 'bgp: established');
        this.emit('established');
        return;
      case SessionState.Established:
        this.restartHold();
        if (m.type === MsgType.OPEN)
          return this.fsmError(FsmSub.UNEXPECTED_IN_ESTABLISHED, 'OPEN in Established');
        if (m.type === MsgType.UPDATE) this.onUpdate(m);
        else if (m.type === MsgType.ROUTE_REFRESH) this.onRouteRefresh({ afi: m.afi, safi: m.safi });
        return;
      default:
        return this.fsmError(FsmSub.UNSPECIFIED, `${MsgType[m.type]} in ${this.st}`);
    }
  }

  private onUpdate(m: UpdateMessage): void {
    for (const e of m.errors)
      this.o.logger.warn(
        { peer: this.o.peerAddress, code: e.code, subcode: e.subcode, action: e.action },
        `bgp: received UPDATE: ${e.reason}`,
      );
    if (m.errors.length) this.lastError = `received UPDATE: ${m.errors[0]?.reason} (${m.errors[0]?.action})`;
    this.emit('update', m);
  }

  /** RFC 2918 §4: a ROUTE-REFRESH for an AFI/SAFI not negotiated is ignored (and logged, rate-limited). */
  private onRouteRefresh(f: Family): void {
    if (this.negotiated.families.some((n) => n.afi === f.afi && n.safi === f.safi)) {
      this.emit('routeRefresh', f);
      return;
    }
    this.refreshIgnored++;
    const w = this.refreshIgnoredWarn;
    const now = performance.now();
    if (now - w.at < WARN_EVERY_MS) {
      w.suppressed++;
      return;
    }
    this.o.logger.warn(
      { peer: this.o.peerAddress, afi: f.afi, safi: f.safi, suppressedSinceLast: w.suppressed },
      'bgp: ignoring ROUTE-REFRESH for an AFI/SAFI not negotiated (RFC 2918 §4)',
    );
    w.at = now;
    w.suppressed = 0;
  }

  private onOpen(m: OpenMessage): void {
    const peerAs = m.caps.fourOctetAs ?? m.myAs;
    if (peerAs !== this.o.peerAsn || (m.caps.fourOctetAs === undefined && m.myAs === AS_TRANS)) {
      const data = Buffer.alloc(2);
      data.writeUInt16BE(m.myAs, 0);
      return this.protocolError({
        code: ErrCode.OPEN,
        subcode: OpenSub.BAD_PEER_AS,
        data,
        action: 'session-reset',
        reason: `peer AS ${peerAs} != configured ${this.o.peerAsn}`,
      });
    }
    if (m.routerId === this.o.routerId && !this.ibgp) {
      // RFC 6286: only iBGP requires distinct identifiers; eBGP may share one.
    } else if (m.routerId === this.o.routerId) {
      return this.protocolError({
        code: ErrCode.OPEN,
        subcode: OpenSub.BAD_BGP_ID,
        data: Buffer.alloc(0),
        action: 'session-reset',
        reason: `peer BGP identifier ${m.routerId} equals ours`,
      });
    }
    const theirs = m.caps.multiprotocol.length
      ? m.caps.multiprotocol
      : [{ afi: AFI_IPV4, safi: SAFI_UNICAST }];
    this.peerOpen = m;
    this.negotiated = {
      families: this.o.families.filter((f) => theirs.some((t) => t.afi === f.afi && t.safi === f.safi)),
      fourOctetAs: m.caps.fourOctetAs !== undefined,
    };
    this.negotiatedHold = Math.min(this.o.holdTime, m.holdTime);
    this.writeRaw(encodeKeepalive(), MsgType.KEEPALIVE);
    this.setState(SessionState.OpenConfirm);
    this.restartHold();
    if (this.negotiatedHold > 0) {
      const every = Math.max(1000, Math.floor((this.negotiatedHold * 1000) / 3));
      this.keepaliveTimer = setInterval(() => this.writeRaw(encodeKeepalive(), MsgType.KEEPALIVE), every);
    }
  }

  /** The peer's capabilities, once its OPEN arrived. */
  peerCapabilities(): Capabilities | null {
    return this.peerOpen?.caps ?? null;
  }

  private armHold(ms: number): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = setTimeout(() => {
      this.protocolError({
        code: ErrCode.HOLD_TIMER_EXPIRED,
        subcode: 0,
        data: Buffer.alloc(0),
        action: 'session-reset',
        reason: 'hold timer expired',
      });
    }, ms);
  }

  private restartHold(): void {
    if (this.negotiatedHold === null) return;
    if (this.negotiatedHold === 0) {
      if (this.holdTimer) clearTimeout(this.holdTimer);
      this.holdTimer = null;
      return;
    }
    this.armHold(this.negotiatedHold * 1000);
  }

  private fsmError(subcode: FsmSub, reason: string): void {
    this.protocolError({
      code: ErrCode.FSM,
      subcode,
      data: Buffer.alloc(0),
      action: 'session-reset',
      reason,
    });
  }

  /** Send the NOTIFICATION for an error, then reset. */
  private protocolError(e: BgpError): void {
    if (this.socket && !this.socket.destroyed)
      this.writeRaw(
        encodeNotification({ code: e.code, subcode: e.subcode, data: e.data }),
        MsgType.NOTIFICATION,
      );
    this.fail(
      `sent NOTIFICATION ${e.code}/${e.subcode} (${describeNotification(e.code, e.subcode)}): ${e.reason}`,
    );
  }

  private writeRaw(b: Buffer, type: number): void {
    if (!this.socket || this.socket.destroyed) return;
    const k = typeKey[type];
    if (k) this.msgOut[k]++;
    this.socket.write(b);
  }

  /** Reset to Idle and, while running, schedule the next attempt with exponential backoff. */
  private fail(reason: string): void {
    this.lastError = reason;
    this.o.logger.warn({ peer: this.o.peerAddress, state: this.st }, `bgp: session reset: ${reason}`);
    this.teardown(reason, true);
  }

  private teardown(reason: string, retry: boolean): void {
    const wasEstablished = this.st === SessionState.Established;
    this.dropSocket();
    this.negotiatedHold = null;
    this.negotiated = { families: [], fourOctetAs: false };
    this.setState(SessionState.Idle);
    if (wasEstablished) this.emit('down', reason);
    if (retry && this.running) this.scheduleRetry();
  }

  private dropSocket(): void {
    for (const t of [this.holdTimer, this.connectTimer]) if (t) clearTimeout(t);
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.holdTimer = this.connectTimer = this.keepaliveTimer = null;
    const s = this.socket;
    this.socket = null;
    if (s) {
      // Let a queued NOTIFICATION go out, then close.
      s.end();
      setTimeout(() => s.destroy(), 200).unref();
    }
  }

  private scheduleRetry(): void {
    this.clearRetry();
    // Jittered, so several LB nodes do not reconnect in lock-step.
    const delay = this.backoff.next();
    this.nextRetryAt = Date.now() + delay;
    this.setState(SessionState.Active);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.running) return;
      if (this.o.passive) {
        this.nextRetryAt = null;
        return;
      }
      this.connect();
    }, delay);
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.nextRetryAt = null;
  }
}
