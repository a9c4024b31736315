// Failures stay local, on the real kernel: one VIP's failed table install withdraws that VIP alone (the others
// stay announced and forwarding) and a retry brings it back; 'error' events of the daemon's emitters are
// logged and shown in /readyz and /state, and the daemon keeps running.
import type { Readiness } from '../../src/daemon/admin';
import { DaemonHarness, HarnessComponent } from '../helpers/daemon-harness';
import { DaemonLab, LB_ADDRESS, sleep, VIP, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

interface HarnessState {
  reconcileError: string | null;
  failedVips: { name: string; op: string; error: string }[];
  announcements: { withheld: { vip: string; reason: string }[] } | null;
  componentErrors: Record<string, { count: number; last: string }>;
  actual: { vips: { id: number; key: { address: string } }[] };
}

describePrivileged('daemon: per-VIP failure isolation and emitter errors (real kernel)', () => {
  const lab = new DaemonLab({ tag: 'i', backends: 2 });
  let h: DaemonHarness | null = null;
  const cfg = (vips: string[]) => {
    const base = lab.config({ backends: [1, 2] });
    const web = (base.vips as Record<string, unknown>[])[0]!;
    const more = vips.map((name, i) => ({ ...web, name, address: `10.0.0.${11 + i}` }));
    return {
      ...base,
      // A peer that never answers: the speaker still holds the routes the daemon hands it.
      bgp: { asn: 65001, routerId: LB_ADDRESS, peers: [{ address: '10.10.2.1', asn: 65000 }] },
      vips: [web, ...more],
    };
  };
  const routes = () => h!.call<string[]>('routes');
  const state = () => h!.call<HarnessState>('state');
  const readiness = () => h!.call<Readiness>('readiness');

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(cfg(['b']));
    h = await DaemonHarness.start({
      netns: lab.lb,
      configPath: lab.configPath,
      bpffs: lab.bpffs,
      dir: lab.dir,
    });
  }, 90000);

  afterAll(async () => {
    await h?.stop().catch(() => undefined);
    await lab.cleanup();
  }, 30000);

  it("one VIP's table install fails: only it is withdrawn and named; the others forward; a retry programs it", async () => {
    expect(await routes()).toEqual([`${VIP}/32`, '10.0.0.11/32']);
    await h!.call('failTable', { address: '10.0.0.12' });
    lab.writeConfig(cfg(['b', 'c']));
    // The reload reached the datapath (c's VIP entry is written before its table): let that sync finish.
    const seen = await waitUntil(
      async () => (await state()).actual.vips.some((v) => v.key.address === '10.0.0.12'),
      { timeoutMs: 10000 },
    );
    expect(seen).not.toBeNull();
    await sleep(300);
    expect(await routes()).toEqual([`${VIP}/32`, '10.0.0.11/32']);
    const st = await state();
    expect(st.reconcileError).toBeNull();
    expect(st.failedVips).toEqual([expect.objectContaining({ name: 'c', op: 'installTable' })]);
    expect(st.failedVips[0]!.error).toMatch(/injected failure/);
    expect(st.announcements!.withheld).toEqual([{ vip: '10.0.0.12', reason: 'not-programmed' }]);
    const r = await readiness();
    expect(r.ready).toBe(true);
    expect(r.reasons.join('\n')).toMatch(/VIP c not programmed, withdrawn \(installTable .*injected failure/);
    // The VIPs that did not fail forward as before.
    const bodies = await lab.curlMany(6);
    expect([...bodies.keys()].every((b) => b === 'be1' || b === 'be2')).toBe(true);
    // Retries keep failing while the cause stays, and touch nothing else.
    await sleep(1500);
    expect((await state()).failedVips.map((f) => f.name)).toEqual(['c']);
    expect(await routes()).toEqual([`${VIP}/32`, '10.0.0.11/32']);

    await h!.call('failTable', { address: null });
    const back = await waitUntil(async () => (await routes()).length === 3, {
      timeoutMs: 20000,
      intervalMs: 200,
    });
    expect(back).not.toBeNull();
    expect(await routes()).toEqual([`${VIP}/32`, '10.0.0.11/32', '10.0.0.12/32']);
    expect((await state()).failedVips).toEqual([]);
    expect((await readiness()).reasons).toEqual([]);
    const dp = lab.adopt();
    try {
      const c = (await dp.listVips()).find((v) => v.key.address === '10.0.0.12')!;
      expect((await dp.readTable(c.id))?.length).toBe(251);
    } finally {
      dp.close();
    }
  }, 60000);

  it("an 'error' on each emitter (file source, health monitor, BGP speaker and session) is survived and shown", async () => {
    const cases: [HarnessComponent, string][] = [
      ['config-source', 'config-source'],
      ['health-monitor', 'health-monitor'],
      ['bgp', 'bgp'],
      ['bgp-session', 'bgp'],
    ];
    for (const [emitter, component] of cases) {
      await h!.call('emitError', { component: emitter });
      await sleep(200);
      expect({ emitter, alive: h!.alive }).toEqual({ emitter, alive: true });
      const r = await readiness();
      expect(r.ready).toBe(true);
      expect(r.reasons.join('\n')).toContain(`${component} error`);
    }
    const st = await state();
    expect(Object.fromEntries(Object.entries(st.componentErrors).map(([k, v]) => [k, v.count]))).toEqual({
      'config-source': 1,
      'health-monitor': 1,
      bgp: 2,
    });
    expect(st.componentErrors.bgp!.last).toMatch(/bgp peer 10\.10\.2\.1: injected bgp-session error/);
    // Still working: a reload is applied and announced, traffic flows.
    lab.writeConfig(cfg(['b']));
    const applied = await waitUntil(async () => (await routes()).length === 2, { timeoutMs: 10000 });
    expect(applied).not.toBeNull();
    expect(await lab.curl()).toMatch(/^be[12]$/);
  }, 30000);
});
