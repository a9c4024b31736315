// Testbed on the real kernel: a small instance with a unique prefix comes up, is reachable (v4, v6, via the
// router's BGP ECMP route from a reference speaker), `up` is idempotent, and `down` leaves nothing behind.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describePrivileged } from '../helpers/privileged';
import { packageRoot } from '../../src/paths';
import { defaultConfigPath, loadTestbedConfig } from '../../scripts/testbed/config';
import { allHosts, buildPlan, Plan } from '../../scripts/testbed/plan';
import {
  bgpSessions,
  down,
  fibNextHops,
  listNamespaces,
  nsPids,
  status,
  up,
} from '../../scripts/testbed/topology';
import { runIn, waitFor } from '../../scripts/testbed/sh';
import { getSystem } from '../../scripts/bench/lib/systems';
import { killExabgp, startExabgp } from '../../scripts/bench/lib/measure';

jest.setTimeout(120_000);

function curl(p: Plan, _host: string, url: string): string {
  return runIn(p.clients[0]!.netns, 'curl', ['-sS', '-m', '3', '-g', url]).trim();
}

describePrivileged('testbed (netns topology)', () => {
  const prefix = `tt${randomBytes(3).toString('hex')}`;
  const plan = buildPlan(
    loadTestbedConfig({
      path: defaultConfigPath(packageRoot),
      overrides: { prefix, lbs: 2, backends: 2 },
      env: {},
    }),
  );

  beforeAll(() => {
    up(plan);
  });
  afterAll(async () => {
    await down(plan);
  });

  it('creates every namespace with its processes and XDP_PASS on the router-side LB peers', () => {
    const ns = listNamespaces();
    for (const h of allHosts(plan)) expect(ns).toContain(h.netns);
    expect(status(plan).complete).toBe(true);
    for (const be of plan.backends) expect(nsPids(be.netns).length).toBeGreaterThan(0);
    for (const lb of plan.lbs) {
      const link = runIn(plan.router.netns, 'ip', ['-d', 'link', 'show', lb.link!.routerIf]);
      expect(link).toMatch(/prog\/xdp id \d+/);
      expect(link).toContain(`mtu ${lb.link!.mtu}`);
    }
    expect(runIn(plan.clients[0]!.netns, 'sysctl', ['-n', 'net.core.txrehash']).trim()).toBe('0');
    expect(runIn(plan.router.netns, 'sysctl', ['-n', 'net.ipv4.fib_multipath_hash_policy']).trim()).toBe('1');
  });

  it('reaches every backend from the client over IPv4 and IPv6, each naming itself', () => {
    for (const be of plan.backends) {
      expect(curl(plan, 'client1', `http://${be.link!.hostV4.address}/`)).toBe(be.name);
      expect(curl(plan, 'client1', `http://[${be.link!.hostV6.address}]/`)).toBe(be.name);
    }
  });

  it('is idempotent: a second up changes nothing and keeps serving', () => {
    const before = nsPids(plan.backends[0]!.netns).sort();
    up(plan);
    expect(nsPids(plan.backends[0]!.netns).sort()).toEqual(before);
    expect(curl(plan, 'client1', `http://${plan.backends[0]!.link!.hostV4.address}/`)).toBe('be1');
  });

  it('installs an ECMP route over both LB nodes from BGP announcements (ExaBGP as reference speaker)', async () => {
    for (const lb of plan.lbs) startExabgp(plan, lb, '10.201.0.100/32');
    try {
      const want = plan.lbs.map((l) => l.link!.hostV4.address).sort();
      const ok = await waitFor(() => fibNextHops(plan, '10.201.0.100').sort().join() === want.join(), {
        timeoutMs: 20_000,
      });
      expect(fibNextHops(plan, '10.201.0.100').sort()).toEqual(want);
      expect(ok).toBe(true);
      expect(bgpSessions(plan).filter((s) => s.state.startsWith('Established')).length).toBe(2);
      killExabgp(plan.lbs[0]!);
      await waitFor(() => fibNextHops(plan, '10.201.0.100').length === 1, { timeoutMs: 10_000 });
      expect(fibNextHops(plan, '10.201.0.100')).toEqual([plan.lbs[1]!.link!.hostV4.address]);
    } finally {
      for (const lb of plan.lbs) killExabgp(lb);
    }
  });

  it('balances through nftables DNAT on both LB nodes (comparison system) with no errors', async () => {
    const sys = getSystem('nft-dnat');
    const d = { plan, lbs: plan.lbs, backends: plan.backends, family: 4 as const };
    await sys.setup(d);
    try {
      const t = sys.targets(d)[0]!;
      const body = curl(plan, 'client1', `http://${t.host}/`);
      expect(['be1', 'be2']).toContain(body);
      // A handful of new connections from the client must reach both backends.
      const seen = new Set<string>();
      for (let i = 0; i < 30 && seen.size < 2; i++) seen.add(curl(plan, 'client1', `http://${t.host}/`));
      expect([...seen].sort()).toEqual(['be1', 'be2']);
    } finally {
      await sys.teardown(d);
    }
  });

  it('down removes every namespace, process, state directory and pin directory it created', async () => {
    const pidsBefore = allHosts(plan).flatMap((h) => nsPids(h.netns));
    expect(pidsBefore.length).toBeGreaterThan(0);
    const r = await down(plan);
    expect(r.removed.length).toBe(allHosts(plan).length);
    expect(r.leftovers).toEqual([]);
    const ns = listNamespaces();
    for (const h of allHosts(plan)) expect(ns).not.toContain(h.netns);
    for (const pid of pidsBefore) expect(existsSync(join('/proc', String(pid)))).toBe(false);
    expect(existsSync(plan.stateDir)).toBe(false);
    expect(existsSync(plan.bpffsDir)).toBe(false);
    // A second down (e.g. after a crash) is harmless.
    expect((await down(plan)).removed).toEqual([]);
  });
});
