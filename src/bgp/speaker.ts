// BgpSpeaker: keeps each peer's Adj-RIB-Out equal to the desired route set, sending only the difference.
import { EventEmitter } from 'node:events';
import { createServer, isIP, isIPv4, Server, Socket } from 'node:net';
import {
  AFI_IPV4,
  AFI_IPV6,
  AsPathSegType,
  CeaseSub,
  encodeEndOfRib,
  encodeUpdate,
  encodedPrefixSize,
  Family,
  GRACEFUL_SHUTDOWN,
  HEADER_LEN,
  MAX_MESSAGE_LEN,
  Origin,
  parseCommunity,
  parseLargeCommunity,
  PathAttributes,
  SAFI_UNICAST,
  UpdateMessage,
} from './codec';
import { BgpConfig, BgpConfigInput, parseBgpConfig, BgpPeerConfig } from './config';
import { canonicalPrefix, parsePrefix } from './ip';
import { RouteSpec } from './policy';
import { BgpLogger, BgpSession, SessionState, SessionStatus, silentLogger } from './session';
import { BgpSocketFactory, plainBgpSockets } from './sockets';
import { canonicalIp, unmapIpv4 } from '../model/ip';
import { setTimeout as sleep } from 'node:timers/promises';

export interface SpeakerOptions extends BgpConfigInput {
  logger?: BgpLogger;
  /** Set the graceful-restart R bit on the first sessions (this process replaces one that forwarded). */
  restarted?: boolean;
  /** Reconnect backoff bounds (ms). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /**
   * Where TCP sockets come from: connects, and TCP MD5 keys on the listener. Default plain sockets, which
   * refuse a peer with a password; a composition root injects the native one (datapath/bgp-sockets).
   */
  sockets?: BgpSocketFactory;
  /** Shortest time between two re-advertisements for ROUTE-REFRESH to one peer (ms; default 1000). */
  refreshIntervalMs?: number;
}

/** Default of SpeakerOptions.refreshIntervalMs: at most one full re-advertisement per peer per second. */
export const REFRESH_INTERVAL_MS = 1000;

export interface PeerStatus extends SessionStatus {
  /** Prefixes currently announced to this peer (its Adj-RIB-Out), sorted. */
  announced: string[];
  /** Routes desired but not sendable to this peer (family not negotiated, no next hop). */
  skipped: { prefix: string; reason: string }[];
  updatesSent: number;
  /** Prefixes the peer announces to us (parsed and validated, not installed). */
  receivedPrefixes: number;
  prefixesAnnouncedTotal: number;
  prefixesWithdrawnTotal: number;
  /** Re-advertisements done for ROUTE-REFRESH (at most one per refreshIntervalMs). */
  routeRefreshServed: number;
  /** ROUTE-REFRESH messages folded into a re-advertisement already pending. */
  routeRefreshCoalesced: number;
  /** bgp.peers[].maxPrefixes, and how often the peer exceeded it (each time: CEASE, session reset). */
  maxPrefixes: number;
  maxPrefixesExceeded: number;
  /** Why the session is held down (BFD Down: holdPeer), or null. */
  heldDown: string | null;
}

export interface SpeakerStatus {
  asn: number;
  routerId: string;
  desired: RouteSpec[];
  draining: boolean;
  peers: PeerStatus[];
}

interface OutRoute {
  key: string;
  attrs: PathAttributes;
  afi: number;
}

interface Peer {
  cfg: BgpPeerConfig;
  session: BgpSession;
  /** What the peer has from us on the current session: prefix -> attribute key. */
  sent: Map<string, string>;
  skipped: { prefix: string; reason: string }[];
  updatesSent: number;
  /** Prefixes the peer announced to us (validated, never installed), at most cfg.maxPrefixes (+ one UPDATE). */
  received: Set<string>;
  announcedTotal: number;
  withdrawnTotal: number;
  refresh: {
    /** Families asked for since the last re-advertisement ("afi/safi"). */
    pending: Set<string>;
    timer: NodeJS.Timeout | null;
    /** performance.now() of the last re-advertisement. */
    lastAt: number;
    served: number;
    coalesced: number;
  };
  maxPrefixesExceeded: number;
  /** holdPeer: why the session is held closed; `closing` settles once its CEASE went out. */
  hold: { reason: string; closing: Promise<void> } | null;
}

const famOf = (name: 'ipv4' | 'ipv6'): Family => ({
  afi: name === 'ipv4' ? AFI_IPV4 : AFI_IPV6,
  safi: SAFI_UNICAST,
});

/**
 * Events: 'peerUp' (address), 'peerDown' (address, reason), 'sync' (address, {announced, withdrawn}),
 * 'update' (address, UpdateMessage received), 'state' (address, state, previous),
 * 'error' (Error naming the peer: a session's 'error' event).
 */
export class BgpSpeaker extends EventEmitter {
  readonly config: BgpConfig;
  private readonly log: BgpLogger;
  private readonly peers: Peer[];
  private desired = new Map<string, RouteSpec>();
  private draining = false;
  private stopping = false;
  private servers: Server[] = [];
  private started = false;
  private readonly refreshIntervalMs: number;
  private readonly sockets: BgpSocketFactory;

  constructor(opts: SpeakerOptions) {
    super();
    const { logger, restarted, backoffMinMs, backoffMaxMs, sockets, refreshIntervalMs, ...cfg } = opts;
    this.config = speakerConfig(cfg);
    this.sockets = sockets ?? plainBgpSockets;
    const keyed = this.config.peers.findIndex((p) => p.password);
    if (keyed >= 0 && !this.sockets.md5)
      throw new TypeError(
        `bgp.peers[${keyed}].password: TCP MD5 needs a socket factory with MD5 support (SpeakerOptions.sockets)`,
      );
    this.refreshIntervalMs = refreshIntervalMs ?? REFRESH_INTERVAL_MS;
    this.log = logger ?? silentLogger;
    this.peers = this.config.peers.map((p) => {
      const session = new BgpSession({
        localAsn: this.config.asn,
        routerId: this.config.routerId,
        peerAddress: p.address,
        peerAsn: p.asn,
        port: p.port,
        localAddress: p.localAddress,
        holdTime: p.holdTime,
        passive: p.passive,
        password: p.password,
        families: p.families.map(famOf),
        gracefulRestartTime:
          this.config.gracefulRestartTime > 0 ? this.config.gracefulRestartTime : undefined,
        restarted,
        backoffMinMs,
        backoffMaxMs,
        logger: this.log,
        sockets: this.sockets,
      });
      const peer: Peer = {
        cfg: p,
        session,
        sent: new Map(),
        skipped: [],
        updatesSent: 0,
        received: new Set(),
        announcedTotal: 0,
        withdrawnTotal: 0,
        refresh: { pending: new Set(), timer: null, lastAt: -Infinity, served: 0, coalesced: 0 },
        maxPrefixesExceeded: 0,
        hold: null,
      };
      session.on('established', () => {
        peer.sent.clear();
        this.sync(peer);
        for (const f of session.families) this.sendUpdate(peer, encodeEndOfRib(f));
        this.emit('peerUp', p.address);
      });
      session.on('update', (m: UpdateMessage) => {
        applyReceived(peer.received, m);
        this.emit('update', p.address, m);
        if (peer.received.size > p.maxPrefixes) this.maxPrefixesReached(peer, m);
      });
      session.on('down', (reason: string) => {
        peer.sent.clear();
        peer.received.clear();
        peer.refresh.pending.clear();
        if (peer.refresh.timer) clearTimeout(peer.refresh.timer);
        peer.refresh.timer = null;
        this.emit('peerDown', p.address, reason);
      });
      session.on('state', (state: SessionState, prev: SessionState) =>
        this.emit('state', p.address, state, prev),
      );
      // A session handles its socket's errors itself; anything it emits as 'error' goes to our owner.
      session.on('error', (e: Error) =>
        this.emit('error', new Error(`bgp peer ${p.address}: ${e?.message ?? e}`, { cause: e })),
      );
      // Route refresh (RFC 2918): re-send that family's Adj-RIB-Out, at most once per refreshIntervalMs.
      session.on('routeRefresh', (f: Family) => this.onRouteRefresh(peer, f));
      return peer;
    });
  }

  /** Bind the listener (when a peer is passive) and start every session. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.config.listen || this.peers.some((p) => p.cfg.passive)) await this.listen();
    for (const p of this.peers) if (!p.hold) p.session.start();
  }

  /**
   * RFC 5882 §4.3: BFD says the forwarding path to this peer failed. Closes its session with CEASE / BFD Down
   * (RFC 9384) and no UPDATE first (the router drops every route of the session with it; a withdraw would say
   * nothing more and most likely not arrive), then keeps it closed (no connect, no accept) until releasePeer.
   * Other peers are untouched. False: no such peer.
   */
  holdPeer(address: string, reason: string): boolean {
    const peer = this.peerAt(address);
    if (!peer) return false;
    if (peer.hold) {
      peer.hold.reason = reason;
      return true;
    }
    this.log.warn({ peer: peer.cfg.address, reason }, 'bgp: session held down');
    const closing = peer.session.stop(CeaseSub.BFD_DOWN).catch((e: unknown) => {
      this.emit('error', new Error(`bgp peer ${peer.cfg.address}: hold: ${String(e)}`));
    });
    peer.hold = { reason, closing };
    return true;
  }

  /** Ends holdPeer: the session starts again (once its CEASE went out). False: no such peer, or not held. */
  releasePeer(address: string): boolean {
    const peer = this.peerAt(address);
    if (!peer?.hold) return false;
    const { closing } = peer.hold;
    peer.hold = null;
    this.log.info({ peer: peer.cfg.address }, 'bgp: session released');
    void closing.then(() => {
      // A hold again meanwhile, a stop, or no start yet: the session stays as it is.
      if (!peer.hold && this.started && !this.stopping) peer.session.start();
    });
    return true;
  }

  /** Make the announced set equal to `routes`; a call that changes nothing sends nothing. */
  setRoutes(routes: RouteSpec[]): void {
    this.desired = desiredRoutes(routes);
    if (this.stopping) return;
    for (const p of this.peers) this.sync(p);
  }

  /**
   * Graceful shutdown (RFC 8326): re-announce with GRACEFUL_SHUTDOWN, wait the drain time, withdraw
   * everything, then close each session with CEASE.
   */
  async stop(o: { gracefulShutdownMs?: number } = {}): Promise<void> {
    const drainMs = o.gracefulShutdownMs ?? this.config.gracefulShutdownMs;
    if (drainMs > 0 && !this.stopping) {
      this.draining = true;
      for (const p of this.peers) this.sync(p);
      await sleep(drainMs);
    }
    this.stopping = true;
    for (const p of this.peers) {
      if (p.refresh.timer) clearTimeout(p.refresh.timer);
      p.refresh.timer = null;
      this.sync(p);
    }
    await Promise.all(this.peers.map((p) => p.session.stop(CeaseSub.ADMIN_SHUTDOWN)));
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers = [];
  }

  status(): SpeakerStatus {
    return {
      asn: this.config.asn,
      routerId: this.config.routerId,
      desired: [...this.desired.values()],
      draining: this.draining,
      peers: this.peers.map((p) => ({
        ...p.session.status(),
        announced: [...p.sent.keys()].sort(),
        skipped: p.skipped,
        updatesSent: p.updatesSent,
        receivedPrefixes: p.received.size,
        prefixesAnnouncedTotal: p.announcedTotal,
        prefixesWithdrawnTotal: p.withdrawnTotal,
        routeRefreshServed: p.refresh.served,
        routeRefreshCoalesced: p.refresh.coalesced,
        maxPrefixes: p.cfg.maxPrefixes,
        maxPrefixesExceeded: p.maxPrefixesExceeded,
        heldDown: p.hold?.reason ?? null,
      })),
    };
  }

  // -------------------------------------------------------------------------------------------------

  /** The configured peer at `address` (any spelling of it). */
  private peerAt(address: string): Peer | undefined {
    const a = canonicalIp(address);
    return a === null ? undefined : this.peers.find((p) => canonicalIp(p.cfg.address) === a);
  }

  private async listen(): Promise<void> {
    const l = this.config.listen ?? { address: '::', port: 179 };
    const srv = createServer((sock) => this.onInbound(sock));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: l.address, port: l.port }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    srv.on('error', (e) => this.log.warn({ err: e.message }, 'bgp: listener error'));
    // TCP MD5 keys for passive peers live on the listening socket.
    this.sockets.setListenerKeys(
      srv,
      this.peers.flatMap((p) =>
        p.cfg.password ? [{ address: p.cfg.address, password: p.cfg.password }] : [],
      ),
    );
    this.servers.push(srv);
  }

  private onInbound(sock: Socket): void {
    const from = unmapIpv4(sock.remoteAddress ?? '');
    const peer = this.peers.find((p) => p.cfg.address === from);
    if (!peer || this.stopping) {
      this.log.info({ from }, 'bgp: closing connection from an unknown peer');
      sock.destroy();
      return;
    }
    peer.session.accept(sock);
  }

  /**
   * A ROUTE-REFRESH (family negotiated: the session checked). Token bucket of one per refreshIntervalMs:
   * served at once when the last re-advertisement is older, else folded into one pending re-advertisement,
   * so a flood costs one table walk per interval and never queues work.
   */
  private onRouteRefresh(peer: Peer, f: Family): void {
    const r = peer.refresh;
    r.pending.add(`${f.afi}/${f.safi}`);
    if (r.timer) {
      r.coalesced++;
      return;
    }
    const wait = r.lastAt + this.refreshIntervalMs - performance.now();
    if (wait <= 0) this.serveRefresh(peer);
    else r.timer = setTimeout(() => this.serveRefresh(peer), wait);
  }

  /** Re-sends the pending families' routes to `peer` (its Adj-RIB-Out for them is forgotten, then synced). */
  private serveRefresh(peer: Peer): void {
    const r = peer.refresh;
    r.timer = null;
    r.lastAt = performance.now();
    const families = new Set(r.pending);
    r.pending.clear();
    if (this.stopping || peer.session.state !== SessionState.Established) return;
    for (const prefix of [...peer.sent.keys()])
      if (families.has(`${parsePrefix(prefix).afi}/${SAFI_UNICAST}`)) peer.sent.delete(prefix);
    r.served++;
    this.sync(peer);
  }

  /** RFC 4486: the peer sent more prefixes than bgp.peers[].maxPrefixes allows: CEASE and retry slowly. */
  private maxPrefixesReached(peer: Peer, m: UpdateMessage): void {
    const max = peer.cfg.maxPrefixes;
    const fam = m.attrs.mpReach ?? m.attrs.mpUnreach ?? { afi: AFI_IPV4, safi: SAFI_UNICAST };
    // Data: AFI (2 octets), SAFI (1), the upper bound (4) (RFC 4486 §4).
    const data = Buffer.alloc(7);
    data.writeUInt16BE(fam.afi, 0);
    data[2] = fam.safi;
    data.writeUInt32BE(max, 3);
    peer.maxPrefixesExceeded++;
    peer.received.clear();
    peer.session.cease({
      subcode: CeaseSub.MAX_PREFIXES,
      data,
      slowRetry: true,
      reason: `peer sent more than ${max} prefixes (bgp.peers[].maxPrefixes): check its export policy or raise the limit`,
    });
  }

  /** Attributes of `r` as sent to `peer`, or why it cannot be sent. */
  private routeFor(peer: Peer, r: RouteSpec): OutRoute | { skip: string } {
    const s = peer.session;
    const afi = parsePrefix(r.prefix).afi;
    if (!s.families.some((f) => f.afi === afi && f.safi === SAFI_UNICAST))
      return { skip: `family ${afi === AFI_IPV4 ? 'ipv4' : 'ipv6'} not negotiated` };
    const local = s.localAddress;
    const localAfi = local === null ? 0 : local.includes(':') ? AFI_IPV6 : AFI_IPV4;
    const routeNh =
      r.nextHop && (r.nextHop.includes(':') ? AFI_IPV6 : AFI_IPV4) === afi ? r.nextHop : undefined;
    const nh =
      routeNh ??
      (afi === AFI_IPV4 ? peer.cfg.nextHop4 : peer.cfg.nextHop6) ??
      (localAfi === afi ? (local as string) : undefined);
    if (!nh)
      return {
        skip: `no ${afi === AFI_IPV4 ? 'IPv4' : 'IPv6'} next hop (set nextHop${afi === AFI_IPV4 ? 4 : 6})`,
      };
    const communities = [
      ...new Set([
        ...(r.communities ?? []),
        ...peer.cfg.communities,
        ...(this.draining ? [GRACEFUL_SHUTDOWN] : []),
      ]),
    ].sort();
    const largeCommunities = [
      ...new Set([...(r.largeCommunities ?? []), ...peer.cfg.largeCommunities]),
    ].sort();
    const ibgp = s.ibgp;
    const med = r.med ?? peer.cfg.med;
    // RFC 8326 §4: an iBGP sender may also lower LOCAL_PREF to 0 while draining.
    const localPref = ibgp ? (this.draining ? 0 : (r.localPref ?? peer.cfg.localPref ?? 100)) : undefined;
    const attrs: PathAttributes = {
      origin: Origin.IGP,
      asPath: ibgp ? [] : [{ type: AsPathSegType.AS_SEQUENCE, asns: [this.config.asn] }],
      ...(afi === AFI_IPV4 ? { nextHop: nh } : {}),
      ...(med !== undefined ? { med } : {}),
      ...(localPref !== undefined ? { localPref } : {}),
      ...(communities.length ? { communities } : {}),
      ...(largeCommunities.length ? { largeCommunities } : {}),
    };
    const key = JSON.stringify([nh, med, localPref, communities, largeCommunities]);
    return {
      key,
      attrs,
      afi: afi === AFI_IPV4 ? AFI_IPV4 : AFI_IPV6,
      ...(afi === AFI_IPV6 ? { nh6: nh } : {}),
    };
  }

  /** Send the difference between the desired set and what this peer has. */
  private sync(peer: Peer): void {
    if (peer.session.state !== SessionState.Established) return;
    const want = new Map<string, OutRoute & { nh6?: string }>();
    const skipped: Peer['skipped'] = [];
    if (!this.stopping)
      for (const r of this.desired.values()) {
        const o = this.routeFor(peer, r);
        if ('skip' in o) skipped.push({ prefix: r.prefix, reason: o.skip });
        else want.set(r.prefix, o);
      }
    peer.skipped = skipped;
    const withdraw4: string[] = [];
    const withdraw6: string[] = [];
    for (const prefix of peer.sent.keys())
      if (!want.has(prefix)) (parsePrefix(prefix).afi === AFI_IPV4 ? withdraw4 : withdraw6).push(prefix);
    const groups = new Map<string, { route: OutRoute & { nh6?: string }; prefixes: string[] }>();
    for (const [prefix, o] of want) {
      if (peer.sent.get(prefix) === o.key) continue;
      const g = groups.get(`${o.afi}|${o.key}`) ?? { route: o, prefixes: [] };
      g.prefixes.push(prefix);
      groups.set(`${o.afi}|${o.key}`, g);
    }
    if (!withdraw4.length && !withdraw6.length && !groups.size) return;
    const fourOctetAs = peer.session.fourOctetAs;
    for (const chunk of pack(withdraw4, 0))
      this.sendUpdate(peer, encodeUpdate({ withdrawn: chunk }, { fourOctetAs }));
    for (const chunk of pack(withdraw6, 10))
      this.sendUpdate(
        peer,
        encodeUpdate(
          { attrs: { mpUnreach: { afi: AFI_IPV6, safi: SAFI_UNICAST, withdrawn: chunk } } },
          { fourOctetAs },
        ),
      );
    for (const { route, prefixes } of groups.values()) {
      const base = encodeUpdate({ attrs: route.attrs }, { fourOctetAs }).length;
      if (route.afi === AFI_IPV4) {
        for (const chunk of pack(prefixes, base - HEADER_LEN))
          this.sendUpdate(peer, encodeUpdate({ attrs: route.attrs, nlri: chunk }, { fourOctetAs }));
      } else {
        const nh = route.nh6 as string;
        const mpBase = base - HEADER_LEN + 4 + 16 + 1 + 4;
        for (const chunk of pack(prefixes, mpBase))
          this.sendUpdate(
            peer,
            encodeUpdate(
              {
                attrs: {
                  ...route.attrs,
                  mpReach: { afi: AFI_IPV6, safi: SAFI_UNICAST, nextHops: [nh], nlri: chunk },
                },
              },
              { fourOctetAs },
            ),
          );
      }
      for (const p of prefixes) peer.sent.set(p, route.key);
    }
    for (const p of [...withdraw4, ...withdraw6]) peer.sent.delete(p);
    const announced = [...groups.values()].reduce((n, g) => n + g.prefixes.length, 0);
    peer.announcedTotal += announced;
    peer.withdrawnTotal += withdraw4.length + withdraw6.length;
    this.log.info(
      { peer: peer.cfg.address, announced, withdrawn: withdraw4.length + withdraw6.length },
      'bgp: sent update',
    );
    this.emit('sync', peer.cfg.address, { announced, withdrawn: withdraw4.length + withdraw6.length });
  }

  private sendUpdate(peer: Peer, msg: Buffer): void {
    if (peer.session.send(msg)) peer.updatesSent++;
  }
}

/** The parsed `bgp` section a speaker runs with; throws naming each bad field (and an unresolved routerId). */
export function speakerConfig(cfg: BgpConfigInput): BgpConfig {
  const config = parseBgpConfig(cfg);
  if (!isIPv4(config.routerId))
    throw new TypeError(
      `bgp.routerId: "${config.routerId}" must be resolved to an IPv4 address before the speaker starts`,
    );
  return config;
}

/**
 * Validates every route before anything uses them (a bad route must not surface later inside an event);
 * returns them by canonical prefix, or throws naming routes[i].field and the value.
 */
export function desiredRoutes(routes: RouteSpec[]): Map<string, RouteSpec> {
  const next = new Map<string, RouteSpec>();
  routes.forEach((r, i) => {
    const prefix = validateRoute(r, i);
    if (next.has(prefix)) throw new TypeError(`routes[${i}].prefix "${r.prefix}" given twice`);
    next.set(prefix, { ...r, prefix });
  });
  return next;
}

/** Check one RouteSpec; returns its canonical prefix or throws naming the field and value. */
export function validateRoute(r: RouteSpec, i: number): string {
  const at = `routes[${i}]`;
  if (typeof r !== 'object' || r === null)
    throw new TypeError(`${at} must be an object, got ${JSON.stringify(r)}`);
  let prefix: string;
  try {
    prefix = canonicalPrefix(r.prefix);
  } catch (e) {
    throw new TypeError(`${at}.prefix: ${(e as Error).message}`);
  }
  (r.communities ?? []).forEach((c, j) => {
    try {
      parseCommunity(c);
    } catch (e) {
      throw new TypeError(`${at}.communities[${j}]: ${(e as Error).message}`);
    }
  });
  (r.largeCommunities ?? []).forEach((c, j) => {
    try {
      parseLargeCommunity(c);
    } catch (e) {
      throw new TypeError(`${at}.largeCommunities[${j}]: ${(e as Error).message}`);
    }
  });
  if (r.nextHop !== undefined && isIP(r.nextHop) === 0)
    throw new TypeError(`${at}.nextHop: "${r.nextHop}" is not an IP address`);
  for (const k of ['med', 'localPref'] as const) {
    const v = r[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= 0xffffffff))
      throw new TypeError(`${at}.${k}: ${JSON.stringify(v)} is not an integer in 0..4294967295`);
  }
  return prefix;
}

/** Apply a received UPDATE to a set of prefixes (RFC 7606: treat-as-withdraw removes the announced ones). */
export function applyReceived(rib: Set<string>, m: UpdateMessage): void {
  for (const p of m.withdrawn) rib.delete(p);
  for (const p of m.attrs.mpUnreach?.withdrawn ?? []) rib.delete(p);
  const announced = [...m.nlri, ...(m.attrs.mpReach?.nlri ?? [])];
  for (const p of announced) {
    if (m.treatAsWithdraw) rib.delete(p);
    else rib.add(p);
  }
}

/** Split prefixes into chunks whose encoding fits in one message after `overhead` body bytes. */
function pack(prefixes: string[], overhead: number): string[][] {
  const budget = MAX_MESSAGE_LEN - HEADER_LEN - 4 - overhead;
  const out: string[][] = [];
  let cur: string[] = [];
  let used = 0;
  for (const p of prefixes) {
    const n = encodedPrefixSize(p);
    if (used + n > budget && cur.length) {
      out.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(p);
    used += n;
  }
  if (cur.length) out.push(cur);
  return out;
}
