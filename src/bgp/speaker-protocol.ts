// The speaker contract the daemon uses, and the messages between its thread and the BGP speaker worker.
import type { EventEmitter } from 'node:events';
import type { RouteSpec } from './policy';
import type { PeerStatus, SpeakerOptions, SpeakerStatus } from './speaker';

/**
 * What the daemon needs of a speaker; BgpSpeaker (in-process) and BgpSpeakerThread (worker) both are one.
 * Events: 'peerUp' (address), 'peerDown' (address, reason), 'error' (Error).
 */
export interface BgpSpeakerHandle extends EventEmitter {
  /** Binds the listener (when a peer is passive) and starts every session. */
  start(): Promise<void>;
  /** Validates at once (throws naming routes[i].field), then makes each peer's Adj-RIB-Out equal to it. */
  setRoutes(routes: RouteSpec[]): void;
  /** Sessions, counters and what is announced to whom. */
  status(): SpeakerStatus;
  /** RFC 8326 drain (if configured), withdraw everything, CEASE every session. */
  stop(o?: { gracefulShutdownMs?: number }): Promise<void>;
  /** BFD Down (RFC 5882 §4.3): close this peer's session (CEASE / BFD Down) and keep it closed. */
  holdPeer(peer: string, reason: string): void;
  /** Ends holdPeer: the session connects / accepts again. */
  releasePeer(peer: string): void;
}

/** workerData of the speaker worker: plain data only (no logger, no socket factory). */
export interface SpeakerWorkerInit {
  options: Omit<SpeakerOptions, 'logger' | 'sockets'>;
  /** Post debug log records too (the daemon's logger has debug enabled). */
  debug: boolean;
  /** How often the worker checks its status for changes to push (ms). */
  statusEveryMs: number;
}

/** Daemon thread -> worker. */
export type ToSpeaker =
  | { t: 'start' }
  | { t: 'routes'; routes: RouteSpec[] }
  | { t: 'stop'; gracefulShutdownMs?: number }
  | { t: 'hold'; peer: string; reason: string }
  | { t: 'release'; peer: string };

export type LogLevel = 'info' | 'warn' | 'debug';

/**
 * A peer's status as posted: nextRetryMs is relative to the moment it was taken, so the worker also sends
 * nextRetryAt (ms since epoch) and the reader recomputes nextRetryMs when it reads.
 */
export type WirePeerStatus = PeerStatus & { nextRetryAt: number | null };

/** Status as posted by the worker; `desired` is what the daemon thread handed over (it keeps it). */
export type WireStatus = Omit<SpeakerStatus, 'desired' | 'peers'> & { peers: WirePeerStatus[] };

/** Worker -> daemon thread. */
export type FromSpeaker =
  | { t: 'started' }
  | { t: 'startFailed'; error: string }
  | { t: 'stopped' }
  | { t: 'status'; status: WireStatus }
  | { t: 'peerUp'; peer: string }
  | { t: 'peerDown'; peer: string; reason: string }
  | { t: 'error'; error: string }
  | { t: 'log'; level: LogLevel; obj: object; msg?: string; at: number };
