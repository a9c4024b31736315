// Interop: the UPDATEs BgpSpeaker sends decode in GoBGP exactly as sent (prefix, next hop, AS path,
// origin, MED, communities, large communities), for IPv4 and IPv6 (MP_REACH_NLRI).
import { describePrivileged } from '../helpers/privileged';
import {
  Announcer,
  buildAnnouncer,
  createTopology,
  GobgpRib,
  RouterDaemon,
  startGobgp,
  Topology,
  waitFor,
} from '../helpers/bgp-peers';
import { LB_ASN } from './bgp-scenario';

jest.setTimeout(60000);

const ROUTES = [
  {
    prefix: '198.51.100.10/32',
    communities: ['65001:100', '65535:666'],
    largeCommunities: ['65001:1:2'],
    med: 50,
  },
  { prefix: '198.51.100.0/24', communities: ['1:2'] },
  { prefix: '2001:db8:100::10/128', communities: ['65001:200'], largeCommunities: ['4200000000:7:8'] },
];

/** RFC 1997 'a:b' -> the 32-bit value GoBGP prints. */
const c32 = (s: string): number => Number(s.split(':')[0]) * 65536 + Number(s.split(':')[1]);

describePrivileged('BGP speaker interop: GoBGP decodes our UPDATEs as sent', () => {
  let topo: Topology;
  let router: RouterDaemon & { ribJson(f: 'ipv4' | 'ipv6'): GobgpRib };
  let build: { script: string; cleanup(): void };
  let lb: Announcer | undefined;

  beforeAll(async () => {
    build = buildAnnouncer();
    topo = createTopology({ tag: 'iop', lbs: 1 });
    const n = topo.lbs[0]!;
    router = await startGobgp({
      topo,
      peers: [
        { address: n.v4, asn: LB_ASN, family: 'ipv4' },
        { address: n.v6, asn: LB_ASN, family: 'ipv6' },
      ],
    });
    lb = await Announcer.start({
      script: build.script,
      ns: n.ns,
      dir: topo.dir,
      name: 'iop',
      config: {
        asn: LB_ASN,
        routerId: n.v4,
        peers: [
          {
            address: n.routerV4,
            asn: 65000,
            holdTime: 3,
            families: ['ipv4'],
            largeCommunities: ['65001:0:9'],
          },
          { address: n.routerV6, asn: 65000, holdTime: 3, families: ['ipv6'] },
        ],
        routes: ROUTES,
      },
    });
  }, 120000);

  afterAll(async () => {
    await lb?.kill();
    await router?.stop();
    topo?.destroy();
    build?.cleanup();
  }, 30000);

  it('every route arrives with exactly the attributes sent', async () => {
    const n = topo.lbs[0]!;
    await waitFor(
      'three routes in GoBGP',
      () =>
        Object.keys(router.ribJson('ipv4')).length === 2 && Object.keys(router.ribJson('ipv6')).length === 1,
      15000,
    );
    const rib = { ...router.ribJson('ipv4'), ...router.ribJson('ipv6') };
    console.log(`[interop] GoBGP RIB: ${JSON.stringify(rib)}`);
    for (const r of ROUTES) {
      const paths = rib[r.prefix];
      expect(paths).toHaveLength(1);
      const attrs = paths![0]!.attrs;
      const byType = (t: number): Record<string, unknown> | undefined => attrs.find((a) => a.type === t);
      const v6 = r.prefix.includes(':');
      expect(paths![0]!.nlri.prefix).toBe(r.prefix);
      expect(byType(1)?.value).toBe(0);
      expect(byType(2)?.as_paths).toEqual([{ segment_type: 2, num: 1, asns: [LB_ASN] }]);
      if (v6) {
        expect(byType(14)?.nexthop).toBe(n.v6);
        expect(byType(14)?.value).toEqual([{ prefix: r.prefix }]);
      } else expect(byType(3)?.nexthop).toBe(n.v4);
      expect(byType(4)?.metric).toBe(r.med);
      expect(byType(8)?.communities).toEqual(r.communities.map(c32).sort((a, b) => a - b));
      // Per-peer large community (IPv4 session only) joins the per-route ones.
      const large = [...(r.largeCommunities ?? []), ...(v6 ? [] : ['65001:0:9'])].sort();
      const got =
        (byType(32)?.value as { ASN: number; LocalData1: number; LocalData2: number }[] | undefined) ?? [];
      expect(got.map((x) => `${x.ASN}:${x.LocalData1}:${x.LocalData2}`).sort()).toEqual(large);
      // Nothing else: ORIGIN, AS_PATH, NEXT_HOP/MP_REACH and the optional ones we set.
      const expected = [
        1,
        2,
        v6 ? 14 : 3,
        ...(r.med !== undefined ? [4] : []),
        8,
        ...(large.length ? [32] : []),
      ].sort((a, b) => a - b);
      expect(attrs.map((a) => a.type).sort((a, b) => a - b)).toEqual(expected);
    }
  });
});
