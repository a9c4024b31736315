// Two `peak-xdp daemon`s announce over BGP to FRR (bgpd + zebra): ECMP in RIB and FIB for v4 and v6,
// health withdraw and recovery, SIGTERM withdraw time, kill -9 with graceful restart (FRR as GR helper).
import { fibNextHops, RouterDaemon, startFrr, waitFor } from '../helpers/bgp-peers';
import { DaemonBgpLab, LabDaemon, prefixOf, VIP4, VIP6 } from '../helpers/daemon-bgp-lab';
import { describePrivileged } from '../helpers/privileged';
import { setTimeout as sleep } from 'node:timers/promises';
import { signalPid } from '../../scripts/lib/pids';

jest.setTimeout(60000);

const P4 = prefixOf(VIP4);
const P6 = prefixOf(VIP6);

describePrivileged('daemon + BGP vs FRR (two LB nodes)', () => {
  const lab = new DaemonBgpLab({ tag: 'df' });
  let frr: RouterDaemon & { vtysh(cmd: string): string };
  const daemons: LabDaemon[] = [];
  const same = (a: string[], b: string[]): boolean => JSON.stringify(a) === JSON.stringify(b);
  /** RIB and FIB hold exactly these LBs as next hops for the v4 and the v6 VIP. */
  const routed = (lbs: number[]) => (): boolean =>
    [P4, P6].every((p) => {
      const want = lbs.map((i) => (p.includes(':') ? lab.lbs[i]!.v6 : lab.lbs[i]!.v4)).sort();
      return same(frr.ribNextHops(p), want) && same(fibNextHops(lab.topo, p), want);
    });
  const start = async (i: number): Promise<void> => {
    lab.writeConfig(i, lab.config(i));
    daemons[i] = await lab.startDaemon(i);
  };

  beforeAll(async () => {
    lab.start();
    frr = await startFrr({ topo: lab.topo, peers: lab.routerPeers() });
    await start(0);
    await start(1);
  }, 90000);

  afterAll(async () => {
    await frr?.stop();
    await lab.cleanup();
  }, 30000);

  it('both daemons establish; FRR has both next hops for v4 and v6 in RIB and FIB', async () => {
    const ms = await waitFor('ECMP', routed([0, 1]), 20000, 50);
    console.log(`[frr] ECMP in RIB+FIB ${ms} ms after both daemons were ready; ${P6} via ${fibNextHops(lab.topo, P6).join(', ')}`); // prettier-ignore
  });

  it('all backends of the v4 VIP fail -> withdrawn by both; recovery re-announces', async () => {
    for (const b of [1, 2]) lab.failBackend(b, 'ipv4', true);
    let down: number;
    try {
      down = await waitFor('v4 withdrawn', () => frr.ribNextHops(P4).length === 0 && fibNextHops(lab.topo, P4).length === 0, 10000, 25); // prettier-ignore
      expect(frr.ribNextHops(P6)).toEqual([lab.lbs[0]!.v6, lab.lbs[1]!.v6].sort());
    } finally {
      for (const b of [1, 2]) lab.failBackend(b, 'ipv4', false);
    }
    const up = await waitFor('v4 back', routed([0, 1]), 10000, 25);
    console.log(`[frr] v4 backends failing -> withdrawn from RIB+FIB after ${down} ms; back after ${up} ms`);
  });

  it('SIGTERM withdraws within 1 s', async () => {
    signalPid(daemons[0]!.pid, 'SIGTERM');
    const ms = await waitFor('lb1 withdrawn', routed([1]), 1000, 5);
    console.log(`[frr] SIGTERM of lb1: withdrawn from RIB+FIB after ${ms} ms`);
    expect(await daemons[0]!.exited).toBe(0);
    await start(0);
    await waitFor('lb1 back', routed([0, 1]), 15000, 25);
  });

  it('kill -9 with graceful restart: FRR keeps the routes (stale) past the hold time; the restart refreshes them', async () => {
    signalPid(daemons[0]!.pid, 'SIGKILL');
    await daemons[0]!.exited;
    await sleep(4000);
    const j = frr.vtysh(`show bgp ipv4 unicast ${P4} json`);
    console.log(`[frr] 4 s after kill -9 of lb1 (GR 120 s): RIB ${JSON.stringify(frr.ribNextHops(P4))}, FIB ${JSON.stringify(fibNextHops(lab.topo, P4))}`); // prettier-ignore
    expect(routed([0, 1])()).toBe(true);
    expect(frr.established(lab.lbs[0]!.v4)).toBe(false);
    expect(j).toMatch(/"stale":true/);
    await start(0);
    await waitFor('lb1 re-established', () => frr.established(lab.lbs[0]!.v4), 15000, 25);
    await waitFor('no stale paths', () => !/"stale":true/.test(frr.vtysh(`show bgp ipv4 unicast ${P4} json`)), 10000, 50); // prettier-ignore
    expect(routed([0, 1])()).toBe(true);
  });
});
