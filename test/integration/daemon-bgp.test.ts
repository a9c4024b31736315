// Two `peak-xdp daemon`s announce over BGP to BIRD 2: ECMP in RIB and FIB, health withdraws, no flapping on
// reload, SIGTERM/kill -9 (graceful restart), `peak-xdp bgp`, TCP MD5 through the daemon.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fibNextHops, RouterDaemon, sh, startBird, waitFor, withoutBirdTimes } from '../helpers/bgp-peers';
import { DaemonBgpLab, LabDaemon, prefixOf, VIP4, VIP4B, VIP6 } from '../helpers/daemon-bgp-lab';
import { waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { setTimeout as sleep } from 'node:timers/promises';
import { signalPid } from '../../scripts/lib/pids';

jest.setTimeout(60000);

const PASSWORD = 'peak-md5-key';
const HOLD_MS = 3000;
const P4 = prefixOf(VIP4);
const P6 = prefixOf(VIP6);
const P4B = prefixOf(VIP4B);

describePrivileged('daemon + BGP vs BIRD 2 (two LB nodes)', () => {
  const lab = new DaemonBgpLab({ tag: 'db' });
  let bird: RouterDaemon & { sock: string };
  const daemons: LabDaemon[] = [];
  // lb1: graceful restart on (default 120 s); lb2: MD5 on both sessions, graceful restart off.
  const settings = [{}, { password: PASSWORD, gracefulRestartTime: 0 }];

  const v4 = (i: number): string => lab.lbs[i]!.v4;
  const v6 = (i: number): string => lab.lbs[i]!.v6;
  const same = (a: string[], b: string[]): boolean => JSON.stringify(a) === JSON.stringify(b);
  /** RIB and FIB of the router hold exactly these LBs as next hops for `prefix`. */
  const routed = (prefix: string, lbs: number[]) => (): boolean => {
    const want = lbs.map((i) => (prefix.includes(':') ? v6(i) : v4(i))).sort();
    return same(bird.ribNextHops(prefix), want) && same(fibNextHops(lab.topo, prefix), want);
  };
  const ribOnly = (prefix: string, lbs: number[]) => (): boolean =>
    same(bird.ribNextHops(prefix), lbs.map((i) => (prefix.includes(':') ? v6(i) : v4(i))).sort());
  const birdc = (...args: string[]): string => sh('birdc', ['-s', bird.sock, ...args], { allowFail: true });
  const start = async (i: number): Promise<LabDaemon> => {
    lab.writeConfig(i, lab.config(i, settings[i]));
    daemons[i] = await lab.startDaemon(i);
    return daemons[i]!;
  };

  beforeAll(async () => {
    lab.start();
    bird = await startBird({ topo: lab.topo, peers: lab.routerPeers([undefined, PASSWORD]) });
    await start(0);
    await start(1);
  }, 90000);

  afterAll(async () => {
    await bird?.stop();
    await lab.cleanup();
  }, 30000);

  it('both daemons establish (lb2 with MD5) and the router has both next hops for v4 and v6 in RIB and FIB', async () => {
    const ms = await waitFor(
      'ECMP for every VIP',
      () => routed(P4, [0, 1])() && routed(P6, [0, 1])() && routed(P4B, [0, 1])(),
      20000,
      50,
    );
    console.log(
      `[bird] ECMP in RIB+FIB ${ms} ms after both daemons were ready: ${P4} via ${fibNextHops(lab.topo, P4).join(', ')}; ${P6} via ${fibNextHops(lab.topo, P6).join(', ')}`,
    );
    for (const i of [0, 1]) {
      const st = await lab.state(i);
      expect(st.bgp!.peers.map((p) => p.state)).toEqual(['Established', 'Established']);
      expect(st.bgp!.peers[0]!.announced).toEqual([P4, P4B]);
      expect(st.bgp!.peers[1]!.announced).toEqual([P6]);
    }
    // MD5 is really on lb2's sessions: BIRD holds the key for those neighbours.
    expect(birdc('show', 'protocols', 'all', 'p2')).toMatch(/BGP state:\s+Established/);
  });

  it('`peak-xdp bgp` and `--json` show sessions and announced prefixes per peer', async () => {
    // On busy shared cores a session or a health check may have flapped since the previous test: wait for
    // the steady state before reading the output.
    const steady = await waitUntil(
      async () => {
        for (const i of [0, 1]) {
          const st = await lab.state(i);
          const ann = st.bgp?.peers.map((p) => p.announced.join(',')) ?? [];
          if (ann[0] !== [P4, P4B].join(',') || ann[1] !== P6) return false;
        }
        return true;
      },
      { timeoutMs: 20000, intervalMs: 100 },
    );
    expect(steady).not.toBeNull();
    const text = await lab.cli(0, ['bgp']);
    expect(text.code).toBe(0);
    console.log(`[bird] peak-xdp bgp on lb1:\n${text.stdout}`);
    expect(text.stdout).toMatch(/^BGP AS 65001, router id 10\.0\.1\.2/);
    for (const peer of [lab.lbs[0]!.routerV4, lab.lbs[0]!.routerV6])
      expect(text.stdout).toMatch(new RegExp(`^${peer.replace(/\./g, '\\.')}\\s+65000\\s+Established`, 'm'));
    expect(text.stdout).toContain(`${lab.lbs[0]!.routerV4}: ${P4}, ${P4B}`);
    expect(text.stdout).toContain(`${lab.lbs[0]!.routerV6}: ${P6}`);
    const j = await lab.cli(1, ['bgp', '--json']);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout) as { asn: number; peers: { peer: string; state: string; announced: string[] }[] }; // prettier-ignore
    expect(doc.asn).toBe(65001);
    expect(doc.peers.map((p) => [p.peer, p.state, p.announced])).toEqual([
      [lab.lbs[1]!.routerV4, 'Established', [P4, P4B]],
      [lab.lbs[1]!.routerV6, 'Established', [P6]],
    ]);
  });

  it('all IPv4 backends fail their checks -> the v4 VIPs are withdrawn on both nodes, v6 stays; recovery re-announces', async () => {
    for (const b of [1, 2]) lab.failBackend(b, 'ipv4', true);
    let down: number;
    try {
      down = await waitFor(
        'v4 VIPs withdrawn by both',
        () => routed(P4, [])() && routed(P4B, [])(),
        10000,
        25,
      );
      // IPv6 checks still pass: the v6 VIP keeps both next hops.
      expect(routed(P6, [0, 1])()).toBe(true);
      const st = await lab.state(0);
      expect(st.bgp!.peers[0]!.announced).toEqual([]);
      expect(st.desired!.vips.find((v) => v.name === 'web4')!.usableBackends).toBe(0);
    } finally {
      for (const b of [1, 2]) lab.failBackend(b, 'ipv4', false);
    }
    const up = await waitFor('v4 VIPs back on both', () => routed(P4, [0, 1])() && routed(P4B, [0, 1])(), 10000, 25); // prettier-ignore
    console.log(
      `[bird] all v4 backends failing -> withdrawn from RIB+FIB after ${down} ms; healthy again -> back after ${up} ms (checks: 200 ms interval, fall 2, rise 2)`,
    );
  });

  it("a reload that changes only another VIP's backends sends no UPDATE and leaves the routes untouched", async () => {
    const before = await Promise.all([0, 1].map((i) => lab.state(i)));
    // BIRD's entries for the prefix, without their timestamps (see withoutBirdTimes; updatesSent below is the
    // proof that nothing was sent).
    const birdRoutes = (): string =>
      withoutBirdTimes(birdc('show', 'route', 'all', 'for', P4))
        .split('\n')
        .sort()
        .join('\n');
    const birdBefore = birdRoutes();
    expect(birdBefore).toContain(P4);
    lab.writeConfig(0, lab.config(0, { ...settings[0], otherBackends: [1, 2] }));
    let applied = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 10000) {
      const st = await lab.state(0);
      const other = st.desired?.vips.find((v) => v.name === 'other4');
      if (other?.backends.length === 2 && other.usableBackends === 2) {
        applied = Date.now() - t0;
        break;
      }
      await sleep(50);
    }
    expect(applied).toBeGreaterThan(0);
    // Give a stray UPDATE time to arrive before comparing.
    await sleep(1000);
    const after = await Promise.all([0, 1].map((i) => lab.state(i)));
    for (const i of [0, 1])
      expect(after[i]!.bgp!.peers.map((p) => p.updatesSent)).toEqual(
        before[i]!.bgp!.peers.map((p) => p.updatesSent),
      );
    expect(birdRoutes()).toBe(birdBefore);
    console.log(
      `[bird] reload of other4 applied after ${applied} ms; updatesSent lb1 ${JSON.stringify(after[0]!.bgp!.peers.map((p) => p.updatesSent))} unchanged; BIRD route entries for ${P4} unchanged (attributes, next hops)`,
    );
  });

  it('SIGTERM withdraws within 1 s; the program stays attached and pinned', async () => {
    const prog = lab.xdpProgId(0);
    expect(prog).toBeGreaterThan(0);
    const t0 = Date.now();
    signalPid(daemons[0]!.pid, 'SIGTERM');
    const ms = await waitFor(
      'lb1 withdrawn from RIB+FIB',
      () => routed(P4, [1])() && routed(P6, [1])() && routed(P4B, [1])(),
      1000,
      5,
    );
    console.log(
      `[bird] SIGTERM of lb1: all its routes gone from RIB+FIB after ${ms} ms (${Date.now() - t0} ms wall)`,
    );
    expect(await daemons[0]!.exited).toBe(0);
    expect(lab.xdpProgId(0)).toBe(prog);
    expect(existsSync(join(lab.pinDir(0), 'balancer'))).toBe(true);
    await start(0);
    expect((await lab.state(0)).attached).toBe(true);
    const back = await waitFor('lb1 back', () => routed(P4, [0, 1])() && routed(P6, [0, 1])(), 15000, 25);
    console.log(`[bird] lb1 restarted (adopted pins): routes back ${back} ms after /readyz`);
  });

  it('kill -9 without graceful restart (lb2): withdrawn within the hold time', async () => {
    const t0 = Date.now();
    signalPid(daemons[1]!.pid, 'SIGKILL');
    const ms = await waitFor(
      'lb2 withdrawn after kill -9',
      () => routed(P4, [0])() && routed(P6, [0])(),
      HOLD_MS + 500,
      5,
    );
    console.log(
      `[bird] kill -9 of lb2 (no GR): withdrawn from RIB+FIB after ${ms} ms (${Date.now() - t0} ms wall)`,
    );
    await daemons[1]!.exited;
    await start(1);
    await waitFor('lb2 back', () => routed(P4, [0, 1])() && routed(P6, [0, 1])(), 15000, 25);
  });

  it('kill -9 with graceful restart (lb1): BIRD keeps the routes as stale, the restart refreshes them', async () => {
    signalPid(daemons[0]!.pid, 'SIGKILL');
    await daemons[0]!.exited;
    // Past the hold time, the routes through lb1 are still there (forwarding continues on lb1).
    await sleep(HOLD_MS + 1000);
    expect(routed(P4, [0, 1])()).toBe(true);
    expect(routed(P6, [0, 1])()).toBe(true);
    const stale = birdc('show', 'route', 'all', 'for', P4);
    console.log(`[bird] kill -9 of lb1 (GR 120 s), ${HOLD_MS + 1000} ms later:\n${stale}`);
    expect(birdc('show', 'protocols', 'all', 'p0')).not.toMatch(/BGP state:\s+Established/);
    // BIRD is the GR helper: session down, restart timer running, routes kept (RFC 4724).
    const proto = birdc('show', 'protocols', 'all', 'p0');
    expect(proto).toMatch(/Neighbor graceful restart active/);
    expect(proto).toMatch(/Restart timer:\s+\d+/);
    const t0 = Date.now();
    await start(0);
    await waitFor('lb1 session re-established', () => bird.established(v4(0)) && bird.established(v6(0)), 15000, 25); // prettier-ignore
    expect(routed(P4, [0, 1])()).toBe(true);
    expect(routed(P6, [0, 1])()).toBe(true);
    // The restarted speaker's End-of-RIB ends the helper mode: no stale state left.
    await waitFor('GR helper mode over', () => !/graceful restart active/.test(birdc('show', 'protocols', 'all', 'p0')), 5000, 25); // prettier-ignore
    console.log(
      `[bird] lb1 restarted after kill -9: sessions up ${Date.now() - t0} ms after spawn; routes never left`,
    );
  });

  it('MD5: a wrong password never establishes; the right one does', async () => {
    expect(await lab.signal(daemons[1]!, 'SIGTERM')).toBe(0);
    lab.writeConfig(1, lab.config(1, { ...settings[1], password: 'wrong-key' }));
    daemons[1] = await lab.startDaemon(1);
    await sleep(5000);
    const st = await lab.state(1);
    expect(st.bgp!.peers.map((p) => p.state)).not.toContain('Established');
    expect(bird.established(v4(1))).toBe(false);
    expect(bird.established(v6(1))).toBe(false);
    expect(ribOnly(P4, [0])()).toBe(true);
    console.log(
      `[bird] wrong MD5 key, 5 s: lb2 peers ${JSON.stringify(st.bgp!.peers.map((p) => [p.state, p.lastError]))}`,
    );
    expect(await lab.signal(daemons[1]!, 'SIGTERM')).toBe(0);
    await start(1);
    const ms = await waitFor('lb2 back with the right key', () => routed(P4, [0, 1])() && routed(P6, [0, 1])(), 15000, 25); // prettier-ignore
    console.log(`[bird] right MD5 key: ECMP again ${ms} ms after /readyz`);
  }, 40000);
});
