// A minimal BGP peer over raw TCP with the project's codec, for tests that need to see every message: it
// records when each KEEPALIVE arrives, can flood ROUTE-REFRESH or announce prefixes, and answers OPENs.
import { EventEmitter } from 'node:events';
import { createServer, Server, Socket } from 'node:net';
import {
  AFI_IPV4,
  AsPathSegType,
  BgpMessage,
  decodeMessage,
  encodeKeepalive,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  Family,
  MsgType,
  OpenMessage,
  Origin,
  SAFI_UNICAST,
  splitFrames,
} from '../../src/bgp/codec';
import { unmapIpv4 } from '../../src/model/ip';

export interface RawPeerOptions {
  /** Where to listen (the speaker under test connects here). */
  host: string;
  port: number;
  asn: number;
  routerId: string;
  /** Proposed hold time (s); our KEEPALIVEs go out every hold/3 s. */
  holdTime: number;
  /** Families in our OPEN (default IPv4 unicast only). */
  families?: Family[];
  /** NEXT_HOP of what we announce (default 192.0.2.1: loopback would be treated as withdraw). */
  nextHop?: string;
}

/** What the peer saw, in order; `t` is Date.now() at arrival. */
export type RawEvent =
  | { ev: 'connected'; t: number; from: string }
  | { ev: 'open'; t: number; holdTime: number; restarted: boolean | null }
  | { ev: 'keepalive'; t: number }
  | { ev: 'update'; t: number; announced: number; withdrawn: number }
  | { ev: 'notification'; t: number; code: number; subcode: number; data: string }
  | { ev: 'routeRefresh'; t: number }
  | { ev: 'closed'; t: number };

/** Largest gap between consecutive KEEPALIVE arrival times within [from, to] (ms), and how many there were. */
export function keepaliveGaps(
  events: RawEvent[],
  from = -Infinity,
  to = Infinity,
): { maxGap: number; count: number } {
  const ts = events.filter((e) => e.ev === 'keepalive' && e.t >= from && e.t <= to).map((e) => e.t);
  let maxGap = 0;
  for (let i = 1; i < ts.length; i++) maxGap = Math.max(maxGap, ts[i]! - ts[i - 1]!);
  return { maxGap, count: ts.length };
}

/** Events since the last OPEN (the current or last session). */
const lastSession = (events: RawEvent[]): RawEvent[] => {
  const i = events.map((e) => e.ev).lastIndexOf('open');
  return i < 0 ? [] : events.slice(i);
};

/** A session is up: the speaker's OPEN, then a KEEPALIVE, and the connection not closed since. */
export const establishedIn = (events: RawEvent[]): boolean => {
  const s = lastSession(events);
  return s.some((e) => e.ev === 'keepalive') && !s.some((e) => e.ev === 'closed');
};

/** Prefixes announced minus withdrawn on the last session (what the speaker announces to us). */
export const announcedIn = (events: RawEvent[]): number =>
  lastSession(events).reduce((n, e) => (e.ev === 'update' ? n + e.announced - e.withdrawn : n), 0);

/**
 * Listens for one connection at a time (a new one replaces the old); answers OPEN with OPEN + KEEPALIVE and
 * keeps the session up with KEEPALIVEs. Events: 'event' (RawEvent).
 */
export class RawBgpPeer extends EventEmitter {
  readonly events: RawEvent[] = [];
  private server: Server | null = null;
  private sock: Socket | null = null;
  private rx = Buffer.alloc(0);
  private ka: NodeJS.Timeout | null = null;
  private fourOctetAs = false;

  constructor(private readonly o: RawPeerOptions) {
    super();
  }

  async listen(): Promise<void> {
    const srv = createServer((s) => this.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: this.o.host, port: this.o.port }, () => resolve());
    });
    this.server = srv;
  }

  get established(): boolean {
    return establishedIn(this.events);
  }

  get announced(): number {
    return announcedIn(this.events);
  }

  /** Sends `count` ROUTE-REFRESH messages for `family` in one write. */
  refresh(count: number, family: Family = { afi: AFI_IPV4, safi: SAFI_UNICAST }): void {
    const one = encodeRouteRefresh(family);
    this.sock?.write(Buffer.concat(Array.from({ length: count }, () => one)));
  }

  /** Announces IPv4 prefixes to the speaker, packed `perUpdate` per UPDATE. */
  announce(prefixes: string[], perUpdate = 500): void {
    for (let i = 0; i < prefixes.length; i += perUpdate)
      this.sock?.write(
        encodeUpdate(
          {
            nlri: prefixes.slice(i, i + perUpdate),
            attrs: {
              origin: Origin.IGP,
              asPath: [{ type: AsPathSegType.AS_SEQUENCE, asns: [this.o.asn] }],
              nextHop: this.o.nextHop ?? '192.0.2.1',
            },
          },
          { fourOctetAs: this.fourOctetAs },
        ),
      );
  }

  /** Drops the current connection (the speaker sees it closed). */
  drop(): void {
    this.sock?.destroy();
  }

  async close(): Promise<void> {
    if (this.ka) clearInterval(this.ka);
    this.ka = null;
    this.sock?.destroy();
    this.sock = null;
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }

  private record(e: RawEvent): void {
    this.events.push(e);
    this.emit('event', e);
  }

  private onConnection(s: Socket): void {
    this.sock?.destroy();
    if (this.ka) clearInterval(this.ka);
    this.ka = null;
    this.sock = s;
    this.rx = Buffer.alloc(0);
    s.setNoDelay(true);
    this.record({ ev: 'connected', t: Date.now(), from: unmapIpv4(s.remoteAddress ?? '') });
    s.on('data', (d: Buffer) => {
      if (this.sock === s) this.onData(d);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (this.sock !== s) return;
      this.sock = null;
      if (this.ka) clearInterval(this.ka);
      this.ka = null;
      this.record({ ev: 'closed', t: Date.now() });
    });
  }

  private onData(d: Buffer): void {
    this.rx = Buffer.concat([this.rx, d]);
    const { frames, rest } = splitFrames(this.rx);
    this.rx = Buffer.from(rest);
    const t = Date.now();
    for (const f of frames) {
      const r = decodeMessage(f, { fourOctetAs: this.fourOctetAs });
      if (r.ok) this.onMessage(r.msg, t);
    }
  }

  private onMessage(m: BgpMessage, t: number): void {
    switch (m.type) {
      case MsgType.OPEN:
        return this.onOpen(m, t);
      case MsgType.KEEPALIVE:
        return this.record({ ev: 'keepalive', t });
      case MsgType.UPDATE:
        return this.record({
          ev: 'update',
          t,
          announced: m.nlri.length + (m.attrs.mpReach?.nlri.length ?? 0),
          withdrawn: m.withdrawn.length + (m.attrs.mpUnreach?.withdrawn.length ?? 0),
        });
      case MsgType.NOTIFICATION:
        return this.record({ ev: 'notification', t, code: m.code, subcode: m.subcode, data: m.data.toString('hex') }); // prettier-ignore
      case MsgType.ROUTE_REFRESH:
        return this.record({ ev: 'routeRefresh', t });
    }
  }

  private onOpen(m: OpenMessage, t: number): void {
    this.fourOctetAs = m.caps.fourOctetAs !== undefined;
    this.record({
      ev: 'open',
      t,
      holdTime: m.holdTime,
      restarted: m.caps.gracefulRestart?.restarted ?? null,
    });
    const s = this.sock!;
    s.write(
      encodeOpen({
        asn: this.o.asn,
        holdTime: this.o.holdTime,
        routerId: this.o.routerId,
        families: this.o.families ?? [{ afi: AFI_IPV4, safi: SAFI_UNICAST }],
        routeRefresh: true,
      }),
    );
    s.write(encodeKeepalive());
    const hold = Math.min(this.o.holdTime, m.holdTime);
    if (hold > 0)
      this.ka = setInterval(() => this.sock?.write(encodeKeepalive()), Math.max(1000, (hold * 1000) / 3));
  }
}
