// The BFD session state machine (RFC 5880 §6.2, §6.8): plain functions over plain data. Times are
// milliseconds on a monotonic clock the caller passes in; intervals are microseconds, as on the wire.
import { AuthRxState, ControlPacket, BFD_VERSION, Diag, State } from './codec';

/** §6.8.3: while not Up, bfd.DesiredMinTxInterval is at least one second. */
export const SLOW_TX_US = 1_000_000;
/**
 * While held Down (a forwarding-plane reset, or a local down that must look like a failure) we send at most
 * every HELD_TX_US. Each Down we send takes a peer that has gone Down on to Init (§6.8.6), and a peer that
 * reads its session state late then loses the Down: BIRD 2 hands its BGP the state current when its main loop
 * gets round to the notification, and Up -> Init is no failure to it (a CI run: the router kept the route
 * until the BGP hold timer, 7.4 s after the detach, with its BFD session Down). At the slow rate of 1 s a main
 * loop only 750 ms late misses it; at this one the peer stays Down for at least 3.75 s. §6.8.3 allows any
 * interval of at least one second while not Up; the release sends at once, so coming back is not slower.
 */
export const HELD_TX_US = 5_000_000;
/** The initial bfd.RemoteMinRxInterval (§6.8.1): one microsecond, so the first packets go out. */
const INITIAL_REMOTE_MIN_RX_US = 1;

/** What the operator configures for a session (µs; multiplier as sent in Detect Mult). */
export interface SessionParams {
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  detectMult: number;
}

/** Checks a parameter set; throws naming the field and value. */
export function checkParams(p: SessionParams, field = 'session'): SessionParams {
  for (const k of ['desiredMinTxUs', 'requiredMinRxUs'] as const)
    if (!Number.isInteger(p[k]) || p[k] < 1 || p[k] > 0xffffffff)
      throw new TypeError(`${field}.${k} must be an integer 1..4294967295 µs, got ${p[k]}`);
  if (!Number.isInteger(p.detectMult) || p.detectMult < 1 || p.detectMult > 255)
    throw new TypeError(`${field}.detectMult must be an integer 1..255, got ${p.detectMult}`);
  return p;
}

export interface StateChange {
  from: State;
  to: State;
  diag: Diag;
  /** ms, caller's clock */
  at: number;
}

export interface Session {
  localDiscr: number;
  /** bfd.RemoteDiscr; 0 until the peer's first packet, and again after the detection time expires. */
  remoteDiscr: number;
  state: State;
  remoteState: State;
  /** bfd.LocalDiag: why this side last left Up (or went AdminDown / held Down). */
  localDiag: Diag;
  remoteDiag: number;
  config: SessionParams;
  /** Values carried in our packets (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval). */
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  /** Values timing uses: they follow the advertised ones when a poll sequence ends (§6.8.3). */
  activeDesiredMinTxUs: number;
  activeRequiredMinRxUs: number;
  remoteMinRxUs: number;
  remoteDesiredMinTxUs: number;
  remoteDetectMult: number;
  /** A poll sequence is in progress: our periodic packets carry P until a Final comes back. */
  pollActive: boolean;
  /** A Final owed to a peer that polled while Down and we were held: sent with our next periodic packet (see
   * receive()). */
  finalOwed: boolean;
  /**
   * Held Down by this side with this diag (forwarding plane reset, or a local "down" that must look like a
   * failure to the peer, unlike AdminDown): the session does not leave Down while set.
   */
  hold: Diag | null;
  /**
   * Left Up for Down for a reason other than the peer's AdminDown, and not Up since: the path failed (RFC 5882
   * §4.3). The one fact a client's verdict (hold BGP or not) is taken from, live and after a reconnect.
   */
  lostSinceUp: boolean;
  lastRxAt: number | null;
  nextTxAt: number;
  authRx: AuthRxState;
  stateChanges: number;
  lastChangeAt: number;
}

export interface Clock {
  now: number;
  /** Uniform in [0, 1): Math.random in production, a seeded source in tests. */
  random: () => number;
}

export function createSession(o: { localDiscr: number; params: SessionParams; now: number }): Session {
  if (!Number.isInteger(o.localDiscr) || o.localDiscr < 1 || o.localDiscr > 0xffffffff)
    throw new TypeError(`localDiscr must be 1..4294967295, got ${o.localDiscr}`);
  const config = checkParams(o.params);
  const tx = Math.max(config.desiredMinTxUs, SLOW_TX_US);
  return {
    localDiscr: o.localDiscr,
    remoteDiscr: 0,
    state: State.Down,
    remoteState: State.Down,
    localDiag: Diag.None,
    remoteDiag: 0,
    config,
    desiredMinTxUs: tx,
    requiredMinRxUs: config.requiredMinRxUs,
    activeDesiredMinTxUs: tx,
    activeRequiredMinRxUs: config.requiredMinRxUs,
    remoteMinRxUs: INITIAL_REMOTE_MIN_RX_US,
    remoteDesiredMinTxUs: 0,
    remoteDetectMult: 0,
    pollActive: false,
    finalOwed: false,
    hold: null,
    lostSinceUp: false,
    lastRxAt: null,
    nextTxAt: o.now,
    authRx: { known: false, seq: 0 },
    stateChanges: 0,
    lastChangeAt: o.now,
  };
}

/** §6.8.7: the interval between our packets; 0 = send none (the peer asked for none: RequiredMinRx 0). */
export function txIntervalUs(s: Session): number {
  if (s.remoteMinRxUs === 0) return 0;
  return Math.max(s.activeDesiredMinTxUs, s.remoteMinRxUs);
}

/** §6.8.4: the detection time in asynchronous mode; 0 before the peer's first packet. */
export function detectionTimeUs(s: Session): number {
  return s.remoteDetectMult * Math.max(s.activeRequiredMinRxUs, s.remoteDesiredMinTxUs);
}

/** §6.8.7: the interval reduced by a random 0-25% (10-25% when the detect multiplier is 1), in ms. */
export function jitteredMs(intervalUs: number, detectMult: number, random: () => number): number {
  const r = Math.min(Math.max(random(), 0), 0.999999);
  const factor = detectMult === 1 ? 0.75 + 0.15 * r : 0.75 + 0.25 * r;
  return (intervalUs * factor) / 1000;
}

/** When the detection time runs out (ms), or null when it is not armed. */
export function detectionDeadline(s: Session): number | null {
  const d = detectionTimeUs(s);
  if (s.lastRxAt === null || d === 0) return null;
  return s.lastRxAt + d / 1000;
}

/** The earliest time tick() has something to do (ms), or null when nothing is pending. */
export function nextWake(s: Session): number | null {
  const times: number[] = [];
  if (txIntervalUs(s) > 0) times.push(s.nextTxAt);
  const d = detectionDeadline(s);
  if (d !== null) times.push(d);
  return times.length === 0 ? null : Math.min(...times);
}

/** The advertised intervals the session should reach (slow TX while not Up, §6.8.3; slower while held). */
function wanted(s: Session): { tx: number; rx: number } {
  const slow = s.hold !== null ? HELD_TX_US : SLOW_TX_US;
  const tx = s.state === State.Up ? s.config.desiredMinTxUs : Math.max(s.config.desiredMinTxUs, slow);
  return { tx, rx: s.config.requiredMinRxUs };
}

/**
 * Moves advertised values towards wanted(): at once while not Up (no poll is needed there), through a poll
 * sequence while Up (never starting one while one runs, §6.8.3).
 */
function syncAdvertised(s: Session, c: Clock): Session {
  const w = wanted(s);
  if (w.tx === s.desiredMinTxUs && w.rx === s.requiredMinRxUs) return s;
  if (s.state !== State.Up)
    return rescheduleTx(
      {
        ...s,
        desiredMinTxUs: w.tx,
        requiredMinRxUs: w.rx,
        activeDesiredMinTxUs: w.tx,
        activeRequiredMinRxUs: w.rx,
        pollActive: false,
      },
      c,
    );
  if (s.pollActive) return s;
  // Up: advertise now, with P at once. §6.8.3: only a larger TX interval or a smaller RX interval must wait
  // for the Final; a smaller TX (e.g. the 1 s -> configured step on reaching Up) and a larger RX take effect now,
  // else the peer's detection time, already computed from what we advertise, could run out before our next packet.
  return {
    ...s,
    desiredMinTxUs: w.tx,
    requiredMinRxUs: w.rx,
    activeDesiredMinTxUs: Math.min(s.activeDesiredMinTxUs, w.tx),
    activeRequiredMinRxUs: Math.max(s.activeRequiredMinRxUs, w.rx),
    pollActive: true,
    nextTxAt: c.now,
  };
}

/** Brings the next transmission forward when the interval got shorter than what is left. */
function rescheduleTx(s: Session, c: Clock): Session {
  const iv = txIntervalUs(s);
  if (iv === 0) return s;
  const soonest = c.now + jitteredMs(iv, s.config.detectMult, c.random);
  return soonest < s.nextTxAt ? { ...s, nextTxAt: soonest } : s;
}

function changeState(s: Session, to: State, diag: Diag, c: Clock, events: StateChange[]): Session {
  if (s.state === to) return { ...s, localDiag: to === State.Up ? s.localDiag : diag };
  events.push({ from: s.state, to, diag, at: c.now });
  const next: Session = {
    ...s,
    state: to,
    localDiag: diag,
    stateChanges: s.stateChanges + 1,
    lastChangeAt: c.now,
    // Tell the peer at once (no wait for the periodic timer): the handshake and a Down travel fast.
    nextTxAt: c.now,
    pollActive: to === State.Up ? s.pollActive : false,
    lostSinceUp:
      to === State.Up
        ? false
        : s.lostSinceUp || (s.state === State.Up && to === State.Down && s.remoteState !== State.AdminDown),
  };
  return syncAdvertised(next, c);
}

export interface ReceiveResult {
  session: Session;
  events: StateChange[];
  /** Answer at once with a packet carrying F (the peer polled, §6.8.6). */
  sendFinal: boolean;
}

/**
 * §6.8.6 from "set bfd.RemoteDiscr" on: the packet already passed decodeControl() and verifyAuth(), and was
 * matched to this session (by Your Discriminator, or by addresses when that is 0).
 */
export function receive(s0: Session, p: ControlPacket, c: Clock): ReceiveResult {
  const events: StateChange[] = [];
  let s: Session = {
    ...s0,
    remoteDiscr: p.myDiscr,
    remoteState: p.state,
    remoteDiag: p.diag,
    remoteMinRxUs: p.requiredMinRxUs,
    remoteDesiredMinTxUs: p.desiredMinTxUs,
    remoteDetectMult: p.detectMult,
    lastRxAt: c.now,
  };
  if (p.final && s.pollActive) {
    s = {
      ...s,
      pollActive: false,
      activeDesiredMinTxUs: s.desiredMinTxUs,
      activeRequiredMinRxUs: s.requiredMinRxUs,
    };
    s = syncAdvertised(s, c);
  }
  s = rescheduleTx(s, c);
  // Held Down, a peer that is Down and polls gets its Final with our next periodic packet, not at once (a
  // deliberate delay of §6.5's "as soon as practicable"): any packet of ours takes a Down peer on to Init
  // (§6.8.6), and BIRD 2 polls the moment it leaves Up (its slower idle TX interval), then hands its BGP the
  // session state current when its main loop reads the notification. A Final back within milliseconds made that
  // Up -> Init, no failure to BIRD: the router kept the node until the BGP hold timer (a CI run under load, its
  // BFD session Down, the route there 7.6 s after the detach). The poll only confirms a timer the Down peer already
  // applied (§6.8.3: at once while not Up).
  let sendFinal = p.poll;
  if (sendFinal && s.hold !== null && p.state === State.Down) {
    sendFinal = false;
    s = { ...s, finalOwed: true };
  }
  if (s.state === State.AdminDown) return { session: s, events, sendFinal };
  if (p.state === State.AdminDown) {
    if (s.state !== State.Down) s = changeState(s, State.Down, Diag.NeighborSignaledDown, c, events);
  } else if (s.state === State.Down) {
    if (s.hold === null) {
      if (p.state === State.Down) s = changeState(s, State.Init, Diag.None, c, events);
      else if (p.state === State.Init) s = changeState(s, State.Up, Diag.None, c, events);
    }
  } else if (s.state === State.Init) {
    if (p.state === State.Init || p.state === State.Up) s = changeState(s, State.Up, Diag.None, c, events);
  } else if (p.state === State.Down) {
    s = changeState(s, State.Down, Diag.NeighborSignaledDown, c, events);
  }
  return { session: s, events, sendFinal };
}

export interface TickResult {
  session: Session;
  events: StateChange[];
  /** A periodic packet to send now, or null. */
  transmit: ControlPacket | null;
}

/** Runs what is due at `c.now`: detection-time expiry (§6.8.4), forgetting the auth sequence, periodic TX. */
export function tick(s0: Session, c: Clock): TickResult {
  const events: StateChange[] = [];
  let s = s0;
  const deadline = detectionDeadline(s);
  if (deadline !== null && c.now >= deadline) {
    if (s.state === State.Init || s.state === State.Up)
      s = changeState(s, State.Down, Diag.ControlDetectionTimeExpired, c, events);
    // The peer is gone: start over as if never heard from (the next peer packet re-learns everything). The
    // auth receive sequence goes too: earlier than the 2 × detection time of §6.7.3, which only shortens the
    // time a replayed sequence would be refused after a silence.
    s = {
      ...s,
      remoteDiscr: 0,
      remoteState: State.Down,
      remoteMinRxUs: INITIAL_REMOTE_MIN_RX_US,
      remoteDesiredMinTxUs: 0,
      remoteDetectMult: 0,
      lastRxAt: null,
      authRx: { known: false, seq: 0 },
    };
  }
  let transmit: ControlPacket | null = null;
  const iv = txIntervalUs(s);
  if (iv > 0 && c.now >= s.nextTxAt) {
    transmit = packetFor(s, { final: s.finalOwed });
    s = { ...s, finalOwed: false, nextTxAt: c.now + jitteredMs(iv, s.config.detectMult, c.random) };
  }
  return { session: s, events, transmit };
}

/** The control packet this session sends now (without authentication: the shell adds it). */
export function packetFor(s: Session, o: { final: boolean }): ControlPacket {
  return {
    version: BFD_VERSION,
    diag: s.localDiag,
    state: s.state,
    poll: s.pollActive && !o.final,
    final: o.final,
    controlPlaneIndependent: true,
    demand: false,
    multipoint: false,
    detectMult: s.config.detectMult,
    myDiscr: s.localDiscr,
    yourDiscr: s.remoteDiscr,
    desiredMinTxUs: s.desiredMinTxUs,
    requiredMinRxUs: s.requiredMinRxUs,
    requiredMinEchoRxUs: 0,
  };
}

/** New configured intervals / multiplier: a poll sequence when Up (§6.8.3), at once otherwise. */
export function setParams(s: Session, params: SessionParams, c: Clock): Session {
  return syncAdvertised({ ...s, config: checkParams(params) }, c);
}

/** §6.8.16: AdminDown with `diag` (administratively down by default); the peer must not see a failure. */
export function adminDown(s: Session, diag: Diag, c: Clock): { session: Session; events: StateChange[] } {
  const events: StateChange[] = [];
  return { session: changeState(s, State.AdminDown, diag, c, events), events };
}

/** Leaves AdminDown (to Down, which the peer's packets take on to Init/Up). */
export function adminUp(s: Session, c: Clock): { session: Session; events: StateChange[] } {
  const events: StateChange[] = [];
  if (s.state !== State.AdminDown) return { session: s, events };
  return { session: changeState(s, State.Down, s.localDiag, c, events), events };
}

/**
 * Holds the session Down with `diag` (e.g. forwarding plane reset) — the peer sees Down, a failure — or,
 * with null, releases it. AdminDown stays AdminDown.
 */
export function setHold(
  s: Session,
  diag: Diag | null,
  c: Clock,
): { session: Session; events: StateChange[] } {
  const events: StateChange[] = [];
  const released = diag === null && s.hold !== null;
  let next: Session = { ...s, hold: diag };
  if (diag !== null && next.state !== State.AdminDown && next.state !== State.Down)
    next = changeState(next, State.Down, diag, c, events);
  else if (diag !== null && next.state === State.Down) next = { ...next, localDiag: diag, nextTxAt: c.now };
  else if (released && next.state === State.Down) next = { ...next, nextTxAt: c.now };
  return { session: syncAdvertised(next, c), events };
}
