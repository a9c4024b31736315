// The control socket's protocol: newline-delimited JSON requests and responses, and pushed events. The
// contract between the BFD process and its clients (daemon, CLI); src/bfd/README.md documents it.
import type { DiagName, DropReason, StateName } from './codec';
import type { SessionSpec } from './config';

/** Bumped on an incompatible change; `hello` returns it. */
export const CONTROL_PROTOCOL_VERSION = 1;

export type Request =
  | { id?: number; cmd: 'hello' }
  | { id?: number; cmd: 'get' }
  /** Replace the whole desired set: new sessions start, missing ones stop, changed ones poll (§6.8.3). */
  | { id?: number; cmd: 'setSessions'; sessions: SessionSpec[] }
  /** From now on this connection also receives `{"event":"stateChange",...}` lines. */
  | { id?: number; cmd: 'subscribe' }
  /** AdminDown (RFC: the peer must not treat it as a failure); all sessions when `sessions` is absent. */
  | { id?: number; cmd: 'adminDown'; sessions?: string[]; diag?: DiagName }
  /**
   * Held Down with `diag` (default administratively-down): the peer sees Down, i.e. a failure, and drops
   * the routes through this node (draining). Stays Down until `up`.
   */
  | { id?: number; cmd: 'holdDown'; sessions?: string[]; diag?: DiagName }
  /** Undoes adminDown / holdDown (not a forwarding-plane hold: that follows the program). */
  | { id?: number; cmd: 'up'; sessions?: string[] };

export type Response =
  ({ id?: number; ok: true } & Record<string, unknown>) | { id?: number; ok: false; error: string };

export interface StateChangeEvent {
  event: 'stateChange';
  key: string;
  peer: string;
  from: StateName;
  to: StateName;
  diag: DiagName;
  /**
   * The peer's state as last received: with to 'down' and diag neighbor-signaled-down, 'admin-down' means the
   * peer took the session down on purpose, which a client must not take for a failure (RFC 5882 §3.2).
   */
  remoteState: StateName;
  /**
   * After this change: the session went Up -> Down for a reason other than the peer's AdminDown and has not
   * been Up since (a path failure, RFC 5882 §4.3). Clients take their verdict from this alone.
   */
  lostSinceUp: boolean;
  /** Wall clock, ms since the epoch. */
  at: number;
}

/** Timer lateness of the session timers (how much later than planned a timeout ran). */
export interface LatenessStats {
  count: number;
  meanMs: number;
  p99Ms: number;
  maxMs: number;
}

export interface SessionStatus {
  key: string;
  peer: string;
  local: string | null;
  interface: string | null;
  multihop: boolean;
  state: StateName;
  remoteState: StateName;
  localDiscr: number;
  remoteDiscr: number;
  /** bfd.LocalDiag: why this side last went down. */
  diag: DiagName;
  remoteDiag: DiagName;
  /** Held Down by this side (forwarding plane, holdDown), or AdminDown by command; null otherwise. */
  heldBy: 'forwarding-plane' | 'command' | null;
  /** As in StateChangeEvent: lost since it was last Up (a path failure, not the peer's AdminDown). */
  lostSinceUp: boolean;
  /** Why the session cannot send (its socket could not be opened; retried with backoff); null when it can. */
  error: string | null;
  configured: { minTx: number; minRx: number; multiplier: number };
  remote: { minTx: number; minRx: number; multiplier: number };
  /** Negotiated: what we send at (ms; 0 = nothing), and after how long silence means down (ms; 0 = unarmed). */
  txIntervalMs: number;
  detectionTimeMs: number;
  pollActive: boolean;
  auth: string | null;
  packetsIn: number;
  packetsOut: number;
  drops: Partial<Record<DropReason, number>>;
  stateChanges: number;
  /** Wall clock of the last state change (ms since the epoch). */
  lastChangeAt: number;
}

/** setSessions' reply: keys, and per key why a session cannot send yet (it is kept and retried). */
export interface SetSessionsResult {
  added: string[];
  removed: string[];
  changed: string[];
  errors: Record<string, string>;
}

export interface BfdStatus {
  version: number;
  pid: number;
  startedAt: number;
  forwarding: { interface: string; pin: string | null; ok: boolean; reason: string | null } | null;
  sessions: SessionStatus[];
  /** Drops of datagrams that matched no session, and totals over all. */
  drops: Partial<Record<DropReason, number>>;
  packetsIn: number;
  packetsOut: number;
  timerLateness: LatenessStats;
}
