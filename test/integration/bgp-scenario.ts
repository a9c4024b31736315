// Shared interop scenario for real routers (BIRD, FRR, GoBGP): two LB namespaces announce v4+v6 VIPs.
import { decideAnnouncements } from '../../src/bgp/policy';
import {
  Announcer,
  buildAnnouncer,
  createTopology,
  fibNextHops,
  RouterDaemon,
  RouterPeer,
  ROUTER_ASN,
  Topology,
  waitFor,
} from '../helpers/bgp-peers';

export const VIP4 = '198.51.100.10/32';
export const VIP6 = '2001:db8:100::10/128';
export const LB_ASN = 65001;
const HOLD_MS = 3000;

export interface ScenarioOptions {
  tag: string;
  startRouter(o: { topo: Topology; peers: RouterPeer[] }): Promise<RouterDaemon>;
  /** The daemon installs routes into the kernel FIB (BIRD, FRR). */
  checksFib: boolean;
}

/** Routes an LB announces, through the policy helper the daemon will use. */
export function lbRoutes(healthy: number): object[] {
  return decideAnnouncements({
    vips: [VIP4, VIP6].map((vip) => ({
      vip,
      attached: true,
      programmed: true,
      healthyBackends: healthy,
      communities: ['65001:100'],
      largeCommunities: ['65001:1:1'],
    })),
  }).announce;
}

export function routerPeers(topo: Topology): RouterPeer[] {
  return topo.lbs.flatMap((lb) => [
    { address: lb.v4, asn: LB_ASN, family: 'ipv4' as const },
    { address: lb.v6, asn: LB_ASN, family: 'ipv6' as const },
  ]);
}

export function announcerConfig(topo: Topology, i: number, extra: object = {}): object {
  const lb = topo.lbs[i]!;
  return {
    asn: LB_ASN,
    routerId: lb.v4,
    gracefulRestartTime: 0,
    backoffMinMs: 200,
    backoffMaxMs: 2000,
    peers: [
      { address: lb.routerV4, asn: ROUTER_ASN, holdTime: 3, families: ['ipv4'] },
      { address: lb.routerV6, asn: ROUTER_ASN, holdTime: 3, families: ['ipv6'] },
    ],
    routes: lbRoutes(1),
    ...extra,
  };
}

export function runRouterScenario(o: ScenarioOptions): void {
  let topo: Topology;
  let router: RouterDaemon;
  let build: { script: string; cleanup(): void };
  const lbs: (Announcer | null)[] = [null, null];
  const expectBoth = (): string[] => [topo.lbs[0]!.v4, topo.lbs[1]!.v4].sort();
  const expectBoth6 = (): string[] => [topo.lbs[0]!.v6, topo.lbs[1]!.v6].sort();
  const same = (a: string[], b: string[]): boolean => JSON.stringify(a) === JSON.stringify(b);
  const ribIs = (v4: string[], v6: string[]) => (): boolean =>
    same(router.ribNextHops(VIP4), v4) && same(router.ribNextHops(VIP6), v6);
  const fibIs = (v4: string[], v6: string[]) => (): boolean =>
    !o.checksFib || (same(fibNextHops(topo, VIP4), v4) && same(fibNextHops(topo, VIP6), v6));
  const startLb = async (i: number, extra: object = {}): Promise<Announcer> => {
    const a = await Announcer.start({
      script: build.script,
      ns: topo.lbs[i]!.ns,
      dir: topo.dir,
      name: `lb${i}-${Date.now()}`,
      config: announcerConfig(topo, i, extra),
    });
    lbs[i] = a;
    return a;
  };

  beforeAll(async () => {
    build = buildAnnouncer();
    topo = createTopology({ tag: o.tag, lbs: 2 });
    router = await o.startRouter({ topo, peers: routerPeers(topo) });
    await startLb(0);
    await startLb(1);
  }, 120000);

  afterAll(async () => {
    for (const a of lbs) await a?.kill();
    await router?.stop();
    topo?.destroy();
    build?.cleanup();
  }, 30000);

  it('both LB nodes establish and the router holds both next hops for v4 and v6 (ECMP)', async () => {
    const ms = await waitFor('both next hops in the RIB', ribIs(expectBoth(), expectBoth6()), 15000);
    await waitFor('both next hops in the FIB', fibIs(expectBoth(), expectBoth6()), 10000);
    console.log(
      `[${o.tag}] RIB has both next hops ${ms} ms after start; FIB v4: ${o.checksFib ? JSON.stringify(fibNextHops(topo, VIP4)) : 'n/a (RIB-only peer)'}`,
    );
    const st = await lbs[0]!.status();
    expect(st.peers.map((p) => p.state)).toEqual(['Established', 'Established']);
    expect(st.peers[0]!.announced).toEqual([VIP4]);
    expect(st.peers[1]!.announced).toEqual([VIP6]);
  });

  it('a VIP whose backends all fail is withdrawn, and comes back', async () => {
    const a = lbs[0]!;
    a.setRoutes(lbRoutes(0));
    const down = await waitFor('lb0 withdrawn', ribIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]), 5000);
    await waitFor('lb0 gone from FIB', fibIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]), 5000);
    a.setRoutes(lbRoutes(2));
    const up = await waitFor('lb0 back', ribIs(expectBoth(), expectBoth6()), 5000);
    await waitFor('lb0 back in FIB', fibIs(expectBoth(), expectBoth6()), 5000);
    console.log(
      `[${o.tag}] backends down -> withdrawn in RIB after ${down} ms; healthy -> back after ${up} ms`,
    );
    const st = await a.status();
    expect(st.peers[0]!.announced).toEqual([VIP4]);
  });

  it('a graceful stop (SIGTERM) withdraws before the hold time could', async () => {
    const a = lbs[0]!;
    const t0 = Date.now();
    a.signal('SIGTERM');
    // Bound below the 3 s hold time: only an explicit withdraw/CEASE can meet it.
    await waitFor(
      'lb0 withdrawn after SIGTERM',
      ribIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]),
      HOLD_MS - 100,
      5,
    );
    const rib = Date.now() - t0;
    await waitFor('FIB after SIGTERM', fibIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]), HOLD_MS - 100, 5);
    console.log(`[${o.tag}] graceful stop: RIB withdrawn ${rib} ms, FIB ${Date.now() - t0} ms after SIGTERM`);
    await a.waitExit();
    expect(a.has('stopped')).toBe(true);
    await startLb(0);
    await waitFor('lb0 back after restart', ribIs(expectBoth(), expectBoth6()), 10000);
  });

  it('kill -9 of an LB speaker is seen within the hold time', async () => {
    const a = lbs[0]!;
    const t0 = Date.now();
    await a.kill();
    await waitFor('lb0 gone after kill -9', ribIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]), HOLD_MS + 500, 5);
    console.log(`[${o.tag}] kill -9: withdrawn from RIB after ${Date.now() - t0} ms`);
    await startLb(0);
    await waitFor('lb0 back after kill', ribIs(expectBoth(), expectBoth6()), 10000);
  });

  it('a silent failure (SIGSTOP) is seen by the router hold timer, and the speaker recovers after SIGCONT', async () => {
    const a = lbs[0]!;
    const t0 = Date.now();
    a.signal('SIGSTOP');
    try {
      await waitFor('hold timer expiry', ribIs([topo.lbs[1]!.v4], [topo.lbs[1]!.v6]), HOLD_MS + 1500, 10);
    } finally {
      console.log(`[${o.tag}] SIGSTOP: withdrawn from RIB after ${Date.now() - t0} ms (hold time 3 s)`);
      a.signal('SIGCONT');
    }
    await waitFor('lb0 re-established after SIGCONT', ribIs(expectBoth(), expectBoth6()), 15000, 50);
  }, 30000);

  it('recovers from a router restart', async () => {
    await router.stop();
    const t0 = Date.now();
    router = await o.startRouter({ topo, peers: routerPeers(topo) });
    await waitFor('both LBs back after router restart', ribIs(expectBoth(), expectBoth6()), 20000, 50);
    await waitFor('FIB after router restart', fibIs(expectBoth(), expectBoth6()), 15000);
    console.log(
      `[${o.tag}] router restart: both next hops back ${Date.now() - t0} ms after the daemon started`,
    );
    const st = await lbs[1]!.status();
    expect(st.peers.every((p) => p.state === 'Established')).toBe(true);
  }, 40000);
}
