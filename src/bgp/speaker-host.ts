// Runs a BgpSpeaker behind a message port (the worker side of BgpSpeakerThread): commands in, events out.
import type { BgpLogger } from './session';
import type { BgpSocketFactory } from './sockets';
import { BgpSpeaker, SpeakerStatus } from './speaker';
import type { FromSpeaker, LogLevel, SpeakerWorkerInit, ToSpeaker, WireStatus } from './speaker-protocol';

/** The part of a MessagePort (worker_threads parentPort, a MessageChannel end) the host uses. */
export interface SpeakerPort {
  postMessage(m: FromSpeaker): void;
  on(event: 'message', fn: (m: ToSpeaker) => void): unknown;
}

const errorText = (e: unknown): string => (e as Error)?.message ?? String(e);

/** Status as posted: `desired` stays with the daemon thread; nextRetryAt makes nextRetryMs re-computable. */
export function toWire(s: SpeakerStatus, now: number): WireStatus {
  return {
    asn: s.asn,
    routerId: s.routerId,
    draining: s.draining,
    peers: s.peers.map((p) => ({ ...p, nextRetryAt: p.nextRetryMs === null ? null : now + p.nextRetryMs })),
  };
}

/** What decides whether a status is new: everything but the retry countdown, which moves every ms. */
const fingerprint = (w: WireStatus): string =>
  JSON.stringify(w, (k, v: unknown) => (k === 'nextRetryMs' || k === 'nextRetryAt' ? undefined : v));

/**
 * Hosts a speaker on `port`: answers start/routes/stop, forwards peerUp/peerDown/error and log records,
 * and posts its status when it changed (at once after a session or route event, else checked every
 * statusEveryMs for counters). `sockets` comes from the worker's entry (the composition root). Returns the speaker (for tests) and close() (stops the status checks).
 */
export function hostSpeaker(o: { port: SpeakerPort; init: SpeakerWorkerInit; sockets?: BgpSocketFactory }): {
  speaker: BgpSpeaker;
  close(): void;
} {
  const { port, init } = o;
  const post = (m: FromSpeaker): void => {
    try {
      port.postMessage(m);
    } catch (e) {
      // A log object that cannot be cloned (a function, a socket) must not take the speaker down.
      if (m.t === 'log')
        port.postMessage({ ...m, obj: { unserializable: String(m.obj), err: errorText(e) } });
      else throw e;
    }
  };
  const log = (level: LogLevel) => (obj: object, msg?: string) =>
    post({ t: 'log', level, obj, msg, at: Date.now() });
  const logger: BgpLogger = {
    info: log('info'),
    warn: log('warn'),
    debug: init.debug ? log('debug') : () => undefined,
  };
  const speaker = new BgpSpeaker({ ...init.options, logger, sockets: o.sockets });

  let last = '';
  let scheduled = false;
  const pushStatus = (force = false): void => {
    const w = toWire(speaker.status(), Date.now());
    const f = fingerprint(w);
    if (!force && f === last) return;
    last = f;
    post({ t: 'status', status: w });
  };
  /** Coalesces a burst of events into one status push after the current turn. */
  const soon = (): void => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      pushStatus();
    });
  };
  const timer = setInterval(() => pushStatus(), init.statusEveryMs);

  speaker.on('peerUp', (peer: string) => {
    soon();
    post({ t: 'peerUp', peer });
  });
  speaker.on('peerDown', (peer: string, reason: string) => {
    soon();
    post({ t: 'peerDown', peer, reason });
  });
  speaker.on('error', (e: unknown) => {
    soon();
    post({ t: 'error', error: errorText(e) });
  });
  speaker.on('state', soon);
  speaker.on('sync', soon);

  port.on('message', (m: ToSpeaker) => {
    switch (m.t) {
      case 'start':
        speaker.start().then(
          () => {
            pushStatus(true);
            post({ t: 'started' });
          },
          (e: unknown) => post({ t: 'startFailed', error: errorText(e) }),
        );
        return;
      case 'routes':
        try {
          speaker.setRoutes(m.routes);
        } catch (e) {
          post({ t: 'error', error: `setRoutes: ${errorText(e)}` });
        }
        soon();
        return;
      case 'hold':
        if (!speaker.holdPeer(m.peer, m.reason)) post({ t: 'error', error: `hold: no peer ${m.peer}` });
        soon();
        return;
      case 'release':
        speaker.releasePeer(m.peer);
        soon();
        return;
      case 'stop':
        clearInterval(timer);
        speaker.stop({ gracefulShutdownMs: m.gracefulShutdownMs }).then(
          () => {
            pushStatus(true);
            post({ t: 'stopped' });
          },
          (e: unknown) => {
            post({ t: 'error', error: `stop: ${errorText(e)}` });
            post({ t: 'stopped' });
          },
        );
        return;
    }
  });
  return { speaker, close: () => clearInterval(timer) };
}
