// What a peer can make the speaker do: a ROUTE-REFRESH flood costs at most one re-advertisement per second
// and leaves other peers alone; a refresh for a family not negotiated is ignored (RFC 2918 §4); received
// prefixes are capped by maxPrefixes (RFC 4486 CEASE, slow retry). Raw peers over loopback see every message.
import { AFI_IPV4, AFI_IPV6, CeaseSub, ErrCode, SAFI_UNICAST } from '../../src/bgp/codec';
import { parseBgpConfig } from '../../src/bgp/config';
import { BgpSpeaker } from '../../src/bgp/speaker';
import { keepaliveGaps, RawBgpPeer } from '../helpers/raw-bgp-peer';
import { setTimeout as sleep } from 'node:timers/promises';
import { testPorts } from '../helpers/ports';

const base = testPorts(5);

async function waitFor(what: string, pred: () => boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
  return Date.now() - t0;
}

const peerAt = (
  port: number,
  o: { families?: { afi: number; safi: number }[]; holdTime?: number } = {},
): RawBgpPeer =>
  new RawBgpPeer({ host: '127.0.0.1', port, asn: 65000, routerId: '10.255.0.1', holdTime: 30, ...o });

const lbPeer = (port: number, extra: Record<string, unknown> = {}) => ({
  address: '127.0.0.1',
  asn: 65000,
  port,
  holdTime: 30,
  families: ['ipv4' as const, 'ipv6' as const],
  nextHop4: '192.0.2.2',
  nextHop6: '2001:db8::2',
  ...extra,
});

const ROUTES = Array.from({ length: 2000 }, (_, i) => ({ prefix: `10.${100 + (i >> 8)}.${i & 255}.1/32` }));

describe('ROUTE-REFRESH: rate limit, coalescing, families', () => {
  // Hold 9 s (KEEPALIVE every 3 s): the flood must not starve the other peer's KEEPALIVEs past the hold time.
  const a = peerAt(base, { holdTime: 9 });
  const b = peerAt(base + 1, { holdTime: 9 });
  let lb: BgpSpeaker;

  beforeAll(async () => {
    await a.listen();
    await b.listen();
    lb = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.2',
      peers: [lbPeer(base, { holdTime: 9 }), lbPeer(base + 1, { holdTime: 9 })],
      backoffMinMs: 100,
    });
    await lb.start();
    lb.setRoutes(ROUTES);
    await waitFor('both peers have every route', () => a.announced === 2000 && b.announced === 2000, 10000);
  });

  afterAll(async () => {
    await lb?.stop();
    await a.close();
    await b.close();
  });

  it('5,000 ROUTE-REFRESH from one peer: two re-advertisements (now and one coalesced a second later); the other peer sees nothing', async () => {
    const t0 = Date.now();
    const bUpdates = b.events.filter((e) => e.ev === 'update').length;
    a.refresh(5000);
    const took = await waitFor('all 5000 read', () => lb.status().peers[0]!.messagesIn.routeRefresh === 5000, 10000); // prettier-ignore
    // The coalesced one is served refreshIntervalMs (1 s) after the first; wait past it and a little more.
    await sleep(2500);
    const st = lb.status().peers[0]!;
    const resent = a.events
      .filter((e) => e.t >= t0 && e.ev === 'update')
      .reduce((n, e) => n + (e.ev === 'update' ? e.announced : 0), 0);
    console.log(
      `[refresh] 5000 ROUTE-REFRESH read in ${took} ms; re-advertisements ${st.routeRefreshServed}, coalesced ${st.routeRefreshCoalesced}; ${resent} prefixes re-sent (2000 routes)`,
    );
    // At most one re-advertisement per refreshIntervalMs (1 s) while refreshes keep arriving: the first at once,
    // then one per interval that saw any. Read within a second (a quiet machine): exactly two. A loaded CI
    // machine read them over 5.6 s and served 5, which this rule allows and a fixed 2 does not.
    const served = st.routeRefreshServed;
    expect(served).toBeGreaterThanOrEqual(2);
    expect(served).toBeLessThanOrEqual(1 + Math.max(1, Math.ceil(took / 1000)));
    expect(served + st.routeRefreshCoalesced).toBe(5000);
    expect(resent).toBe(served * ROUTES.length);
    // The other peer: no UPDATE, no reset, KEEPALIVEs on time.
    expect(b.events.filter((e) => e.ev === 'update').length).toBe(bUpdates);
    const sb = lb.status().peers[1]!;
    expect(sb.state).toBe('Established');
    expect(sb.establishedCount).toBe(1);
    expect(st.establishedCount).toBe(1);
    const gaps = keepaliveGaps(b.events, t0 - 1000, Date.now());
    console.log(
      `[refresh] the other peer: ${gaps.count} KEEPALIVEs, largest gap ${gaps.maxGap} ms (every 3 s, hold 9 s)`,
    );
    expect(gaps.count).toBeGreaterThanOrEqual(1);
    // The protocol's bound, not a timing goal: a gap reaching the hold time would have reset the session.
    expect(gaps.maxGap).toBeLessThan(9000);
  });

  it('a sustained flood (a refresh every 20 ms for 3 s) is served about once a second, never queued', async () => {
    const served0 = lb.status().peers[0]!.routeRefreshServed;
    const t0 = Date.now();
    while (Date.now() - t0 < 3000) {
      a.refresh(1);
      await sleep(20);
    }
    await sleep(1200);
    const served = lb.status().peers[0]!.routeRefreshServed - served0;
    const elapsed = (Date.now() - t0) / 1000;
    console.log(
      `[refresh] refresh every 20 ms for 3 s: ${served} re-advertisements in ${elapsed.toFixed(1)} s`,
    );
    expect(served).toBeGreaterThanOrEqual(2);
    expect(served).toBeLessThanOrEqual(Math.ceil(elapsed) + 1);
  });

  it('ROUTE-REFRESH for a family not negotiated is ignored (RFC 2918 §4); a negotiated one is served', async () => {
    const c = peerAt(base + 2, { families: [{ afi: AFI_IPV4, safi: SAFI_UNICAST }] });
    await c.listen();
    const sp = new BgpSpeaker({ asn: 65001, routerId: '10.255.0.2', peers: [lbPeer(base + 2)] });
    try {
      await sp.start();
      sp.setRoutes(ROUTES.slice(0, 10));
      await waitFor('c has the routes', () => c.announced === 10, 5000);
      const n0 = c.events.length;
      c.refresh(3, { afi: AFI_IPV6, safi: SAFI_UNICAST });
      c.refresh(2, { afi: AFI_IPV4, safi: 128 });
      await waitFor('5 read', () => sp.status().peers[0]!.messagesIn.routeRefresh === 5, 3000);
      await sleep(300);
      const s = sp.status().peers[0]!;
      expect(s.routeRefreshIgnored).toBe(5);
      expect(s.routeRefreshServed).toBe(0);
      expect(c.events.slice(n0).filter((e) => e.ev === 'update' || e.ev === 'notification')).toEqual([]);
      expect(s.state).toBe('Established');
      c.refresh(1);
      await waitFor('served', () => sp.status().peers[0]!.routeRefreshServed === 1, 3000);
      await waitFor('re-sent', () => c.announced === 20, 3000);
    } finally {
      await sp.stop();
      await c.close();
    }
  });
});

describe('received prefixes: maxPrefixes', () => {
  it('defaults to 10,000 per peer', () => {
    const c = parseBgpConfig({ asn: 1, routerId: '10.0.0.1', peers: [{ address: '10.0.0.2', asn: 2 }] });
    expect(c.peers[0]!.maxPrefixes).toBe(10_000);
    expect(() =>
      parseBgpConfig({
        asn: 1,
        routerId: '10.0.0.1',
        peers: [{ address: '10.0.0.2', asn: 2, maxPrefixes: 0 }],
      }),
    ).toThrow(/bgp\.peers\.0\.maxPrefixes/);
  });

  it('up to the limit is kept and counted; one more: CEASE / Maximum Number of Prefixes Reached with AFI, SAFI, limit; slow retry', async () => {
    const d = peerAt(base + 3);
    await d.listen();
    const sp = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.2',
      peers: [lbPeer(base + 3, { maxPrefixes: 100 })],
      backoffMinMs: 100,
      backoffMaxMs: 4000,
    });
    try {
      await sp.start();
      await waitFor('up', () => d.established, 5000);
      d.announce(
        ROUTES.slice(0, 100).map((r) => r.prefix.replace(/^10\./, '172.')),
        60,
      );
      await waitFor('100 received', () => sp.status().peers[0]!.receivedPrefixes === 100, 3000);
      expect(sp.status().peers[0]!.state).toBe('Established');
      d.announce(['192.0.2.128/25']);
      await waitFor('NOTIFICATION', () => d.events.some((e) => e.ev === 'notification'), 3000);
      const n = d.events.find((e) => e.ev === 'notification');
      // AFI 1, SAFI 1, upper bound 100 (RFC 4486 §4).
      expect(n).toEqual(
        expect.objectContaining({
          code: ErrCode.CEASE,
          subcode: CeaseSub.MAX_PREFIXES,
          data: '00010100000064',
        }),
      );
      const s = sp.status().peers[0]!;
      expect(s.state).not.toBe('Established');
      expect(s.maxPrefixes).toBe(100);
      expect(s.maxPrefixesExceeded).toBe(1);
      expect(s.receivedPrefixes).toBe(0);
      expect(s.lastError).toMatch(/more than 100 prefixes \(bgp\.peers\[\]\.maxPrefixes\)/);
      // The longest backoff (4 s here, jittered to 2..4 s), not the first (100 ms): the peer would resend.
      expect(s.nextRetryMs).toBeGreaterThan(1500);
    } finally {
      await sp.stop();
      await d.close();
    }
  });

  it('a peer sending 50,000 prefixes with the default limit: ceased after 10,000, memory kept to that', async () => {
    const e = peerAt(base + 4);
    await e.listen();
    const sp = new BgpSpeaker({ asn: 65001, routerId: '10.255.0.2', peers: [lbPeer(base + 4)] });
    try {
      await sp.start();
      await waitFor('up', () => e.established, 5000);
      let most = 0;
      sp.on('update', () => (most = Math.max(most, sp.status().peers[0]!.receivedPrefixes)));
      const many = Array.from(
        { length: 50_000 },
        (_, i) => `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`,
      );
      e.announce(many, 800);
      await waitFor('NOTIFICATION', () => e.events.some((x) => x.ev === 'notification'), 10000);
      console.log(`[max-prefix] 50000 announced, default limit 10000: at most ${most} kept, then CEASE 6/1`);
      expect(most).toBeGreaterThan(10_000);
      expect(most).toBeLessThanOrEqual(10_000 + 800);
      expect(sp.status().peers[0]!.maxPrefixesExceeded).toBe(1);
    } finally {
      await sp.stop();
      await e.close();
    }
  });
});
