// TCP MD5 (RFC 2385) and graceful restart (RFC 4724) against BIRD 2 and FRR in network namespaces.
import { describePrivileged } from '../helpers/privileged';
import {
  Announcer,
  buildAnnouncer,
  createTopology,
  fibNextHops,
  RouterDaemon,
  RouterPeer,
  ROUTER_ASN,
  sleep,
  startBird,
  startFrr,
  Topology,
  waitFor,
} from '../helpers/bgp-peers';
import { LB_ASN, lbRoutes, VIP4 } from './bgp-scenario';

jest.setTimeout(60000);
const KEY = 'peak-secret-1';

type Start = (o: { topo: Topology; peers: RouterPeer[] }) => Promise<RouterDaemon>;

function suite(tag: string, start: Start): void {
  let topo: Topology;
  let router: RouterDaemon;
  let build: { script: string; cleanup(): void };
  const running: Announcer[] = [];
  const lbConfig = (extra: {
    password?: string;
    gracefulRestartTime?: number;
    restarted?: boolean;
  }): object => {
    const lb = topo.lbs[0]!;
    return {
      asn: LB_ASN,
      routerId: lb.v4,
      gracefulRestartTime: extra.gracefulRestartTime ?? 0,
      restarted: extra.restarted,
      backoffMinMs: 200,
      backoffMaxMs: 1000,
      peers: [
        { address: lb.routerV4, asn: ROUTER_ASN, holdTime: 3, families: ['ipv4'], password: extra.password },
        // The second session has no key on either side.
        { address: lb.routerV6, asn: ROUTER_ASN, holdTime: 3, families: ['ipv6'] },
      ],
      routes: lbRoutes(1),
    };
  };
  const startLb = async (extra: Parameters<typeof lbConfig>[0]): Promise<Announcer> => {
    const a = await Announcer.start({
      script: build.script,
      ns: topo.lbs[0]!.ns,
      dir: topo.dir,
      name: `lb-${Date.now()}`,
      config: lbConfig(extra),
    });
    running.push(a);
    return a;
  };
  const v4Present = (): boolean => router.ribNextHops(VIP4).length === 1;

  beforeAll(async () => {
    build = buildAnnouncer();
    topo = createTopology({ tag, lbs: 1 });
    const lb = topo.lbs[0]!;
    router = await start({
      topo,
      peers: [
        { address: lb.v4, asn: LB_ASN, family: 'ipv4', password: KEY },
        { address: lb.v6, asn: LB_ASN, family: 'ipv6' },
      ],
    });
  }, 120000);

  afterAll(async () => {
    for (const a of running) await a.kill();
    await router?.stop();
    topo?.destroy();
    build?.cleanup();
  }, 30000);

  it('an MD5-protected session with the right key establishes and carries the route', async () => {
    const a = await startLb({ password: KEY });
    await waitFor('MD5 session route', v4Present, 10000);
    expect(router.ribNextHops(VIP4)).toEqual([topo.lbs[0]!.v4]);
    expect((await a.status()).peers[0]!.state).toBe('Established');
    await a.kill();
    await waitFor('route gone after kill', () => !v4Present(), 5000);
  });

  it('a wrong key does not establish (the unkeyed v6 session still does)', async () => {
    const a = await startLb({ password: 'wrong-key' });
    await waitFor('v6 session up', () => router.established(topo.lbs[0]!.v6), 10000);
    // A keyed SYN without a matching key is dropped: the attempt fails by the 5 s connect timeout.
    let st = await a.status();
    for (let i = 0; i < 40 && st.peers[0]!.lastError === null; i++) {
      await sleep(200);
      st = await a.status();
    }
    expect(st.peers[0]!.lastError).toMatch(/connect timed out|tcp:/);
    expect(st.peers[0]!.state).not.toBe('Established');
    expect((st.peers[0] as unknown as { establishedCount: number }).establishedCount).toBe(0);
    expect(router.established(topo.lbs[0]!.v4)).toBe(false);
    expect(v4Present()).toBe(false);
    await a.kill();
  });

  it('graceful restart: after kill -9 the router keeps the route (stale) until the speaker is back', async () => {
    const a = await startLb({ password: KEY, gracefulRestartTime: 30 });
    await waitFor('route with GR', v4Present, 10000);
    await a.kill();
    const t0 = Date.now();
    await waitFor('router sees the session down', () => !router.established(topo.lbs[0]!.v4), 4000, 20);
    const downMs = Date.now() - t0;
    // Forwarding on the LB keeps running across a daemon restart: the route must not go.
    let gone = 0;
    const watch = setInterval(() => {
      if (!v4Present()) gone++;
    }, 50);
    try {
      await sleep(1500);
      expect(fibNextHops(topo, VIP4)).toEqual([topo.lbs[0]!.v4]);
      const b = await startLb({ password: KEY, gracefulRestartTime: 30, restarted: true });
      await waitFor('re-established after restart', () => router.established(topo.lbs[0]!.v4), 10000);
      await sleep(500);
      expect((await b.status()).peers[0]!.announced).toEqual([VIP4]);
    } finally {
      clearInterval(watch);
    }
    console.log(
      `[${tag}] GR: session down seen after ${downMs} ms; route absent in ${gone} of the RIB polls (0 expected)`,
    );
    expect(gone).toBe(0);
    expect(router.ribNextHops(VIP4)).toEqual([topo.lbs[0]!.v4]);
  });

  it('graceful stop still withdraws at once when graceful restart is negotiated', async () => {
    const a = running[running.length - 1]!;
    const t0 = Date.now();
    a.signal('SIGTERM');
    await waitFor('withdrawn after SIGTERM with GR', () => !v4Present(), 2900, 5);
    console.log(`[${tag}] GR + graceful stop: withdrawn ${Date.now() - t0} ms after SIGTERM`);
    await a.waitExit();
  });
}

describePrivileged('BGP speaker MD5 and graceful restart vs BIRD 2', () => suite('bmd5', startBird));
describePrivileged('BGP speaker MD5 and graceful restart vs FRR', () => suite('fmd5', startFrr));
