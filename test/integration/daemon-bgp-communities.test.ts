// Per-VIP BGP fields through the daemon to BIRD 2: `communities`, `largeCommunities` on the route, a changed
// community re-announced by a reload, and a per-VIP `minHealthyBackends` that withdraws early.
import { sh, startBird, waitFor, withoutBirdTimes } from '../helpers/bgp-peers';
import { DaemonBgpLab, prefixOf, VIP4, VIP4B, VIP6 } from '../helpers/daemon-bgp-lab';
import { describePrivileged } from '../helpers/privileged';

jest.setTimeout(60000);

const P4 = prefixOf(VIP4);
const P6 = prefixOf(VIP6);
const P4B = prefixOf(VIP4B);

describePrivileged('daemon + BGP: per-VIP communities and minHealthyBackends reach BIRD 2', () => {
  const lab = new DaemonBgpLab({ tag: 'dc' });
  let bird: Awaited<ReturnType<typeof startBird>>;
  const extra = (web4Communities: string[]) => ({
    otherBackends: [1, 2],
    vipExtra: {
      web4: { communities: web4Communities, largeCommunities: ['65001:1:1'] },
      web6: { communities: ['65001:600'] },
      other4: { minHealthyBackends: 2 },
    },
  });
  /** BIRD's `show route all` for one prefix. */
  const route = (prefix: string): string =>
    sh('birdc', ['-s', bird.sock, 'show', 'route', 'all', 'for', prefix], { allowFail: true });

  beforeAll(async () => {
    lab.start();
    bird = await startBird({ topo: lab.topo, peers: lab.routerPeers() });
    lab.writeConfig(0, lab.config(0, extra(['65001:200', '65001:100'])));
    await lab.startDaemon(0);
    await waitFor(
      'all three routes from lb1',
      () => [P4, P6, P4B].every((p) => bird.ribNextHops(p).length === 1),
      15000,
      50,
    );
  }, 90000);

  afterAll(async () => {
    await bird?.stop();
    await lab.cleanup();
  }, 30000);

  it('communities and large communities of each VIP are on its route; a VIP without them has none', () => {
    const r4 = route(P4);
    console.log(`[bird] ${P4} as BIRD holds it:\n${r4}`);
    expect(r4).toMatch(/BGP\.community: \(65001,100\) \(65001,200\)/);
    expect(r4).toMatch(/BGP\.large_community: \(65001, 1, 1\)/);
    const r6 = route(P6);
    expect(r6).toMatch(/BGP\.community: \(65001,600\)/);
    expect(r6).not.toMatch(/large_community/);
    const rb = route(P4B);
    expect(rb).toContain(P4B);
    expect(rb).not.toMatch(/community/);
  });

  it("a reload that changes a VIP's communities re-announces that route only", async () => {
    const before = (await lab.state(0)).bgp!.peers.map((p) => p.updatesSent);
    const r6 = withoutBirdTimes(route(P6));
    const imports = (): number[] => [lab.lbs[0]!.v4, lab.lbs[0]!.v6].map((a) => bird.importUpdates(a));
    const importsBefore = imports();
    lab.writeConfig(0, lab.config(0, extra(['65001:300'])));
    const ms = await waitFor('new community at BIRD', () => /BGP\.community: \(65001,300\)\s*$/m.test(route(P4)), 10000, 25); // prettier-ignore
    const after = (await lab.state(0)).bgp!.peers.map((p) => p.updatesSent);
    console.log(`[bird] community change by reload seen at BIRD after ${ms} ms; updatesSent ${JSON.stringify(before)} -> ${JSON.stringify(after)}`); // prettier-ignore
    // One UPDATE on the IPv4 session, none on the IPv6 one: BIRD received none there and its v6 route is the same.
    expect(after).toEqual([before[0]! + 1, before[1]]);
    expect(imports()).toEqual([importsBefore[0]! + 1, importsBefore[1]]);
    expect(withoutBirdTimes(route(P6))).toBe(r6);
  });

  it('minHealthyBackends 2: one failing backend withdraws that VIP only; recovery re-announces', async () => {
    lab.failBackend(2, 'ipv4', true);
    let ms: number;
    try {
      ms = await waitFor('other4 withdrawn', () => bird.ribNextHops(P4B).length === 0, 10000, 25);
      // web4 (minimum 1) keeps its route with be1 alone.
      expect(bird.ribNextHops(P4)).toEqual([lab.lbs[0]!.v4]);
    } finally {
      lab.failBackend(2, 'ipv4', false);
    }
    const back = await waitFor('other4 back', () => bird.ribNextHops(P4B).length === 1, 10000, 25);
    console.log(`[bird] minHealthyBackends 2 with 1 healthy: withdrawn after ${ms} ms; back ${back} ms after recovery`); // prettier-ignore
  });
});
