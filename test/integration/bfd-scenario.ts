// The five checks of issue 14 ("Proven against real routers"), run by bfd-bird.test.ts and bfd-frr.test.ts
// against a BfdLab (test/helpers/bfd-lab.ts) with that router.
import type { BfdStatus, SessionStatus } from '../../src/bfd/protocol';
import {
  BfdLab,
  ControlPacket,
  encodeControl,
  HOLD_S,
  KEEPALIVE_S,
  OUR_BFD,
  ROUTER_BFD,
  RouterKind,
  State,
  VIP4,
  VIP6,
} from '../helpers/bfd-lab';
import { nsExec } from '../helpers/bgp-peers';
import { sleep } from '../helpers/daemon-lab';
import { signalPid } from '../../scripts/lib/pids';

/**
 * "same" when a router session's "up since" did not change between two reads. BIRD prints it as a wall-clock
 * time computed from its monotonic clock, so two reads of one unchanged session can differ by a millisecond
 * (seen: .961 -> .962); a flap moves it by the session's whole re-establishment. FRR's is counters, compared as is.
 */
function sinceChange(before: string, after: string): string {
  const ms = (x: string): number | null => {
    const m = /^(\d\d):(\d\d):(\d\d(?:\.\d+)?)$/.exec(x);
    return m ? (Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3])) * 1000 : null;
  };
  const a = ms(before);
  const b = ms(after);
  const same = a !== null && b !== null ? Math.abs(a - b) <= 50 : before === after;
  return same ? 'same' : `${before} -> ${after}`;
}

async function until<T>(
  what: string,
  f: () => Promise<T | null | false> | T | null | false,
  ms: number,
): Promise<{ v: T; ms: number }> {
  // prettier-ignore
  const t0 = performance.now();
  for (;;) {
    const v = await f();
    if (v) return { v, ms: performance.now() - t0 };
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** The five checks of issue 14 ("Proven against real routers") against one router. */
export function bfdInteropScenario(kind: RouterKind): void {
  const lab = new BfdLab(kind);
  const tag = `[bfd ${kind}]`;
  const routerSessions = (i: number) => {
    const lb = lab.lbs[i]!;
    return lab.router.bfdSessions().filter((s) => s.peer === lb.v4 || s.peer === lb.v6);
  };
  const allOursUp = async (): Promise<BfdStatus[] | null> => {
    const st = await Promise.all([0, 1].map((i) => lab.bfdStatusOrNull(i)));
    if (st.some((s) => s === null)) return null;
    const ok = st.every((s, i) => lab.ourSessions(s!, i).every((x) => x.state === 'up' && !x.pollActive && x.remote.minTx === ROUTER_BFD.minTx)); // prettier-ignore
    return ok ? (st as BfdStatus[]) : null;
  };
  const routerAllUp = () => {
    const s = lab.router.bfdSessions();
    return s.length === 4 && s.every((x) => x.state === 'up');
  };
  /** Everything back to normal: BFD Up on both sides, BGP Established, both LBs in the FIB for v4 and v6. */
  const healthy = async (ms: number) => {
    const r = await until('BFD Up both sides, ECMP over both LBs in the FIB', async () => (await allOursUp()) !== null && routerAllUp() && lab.fullyRouted(), ms); // prettier-ignore
    return r.ms;
  };

  beforeAll(async () => {
    const t0 = performance.now();
    await lab.start();
    await healthy(40000);
    console.log(`${tag} lab up (2 LBs, daemons, BFD processes, ${kind}) in ${(performance.now() - t0).toFixed(0)} ms`); // prettier-ignore
  }, 120000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('1. sessions Up on v4 and v6 with the negotiated intervals, seen from both sides', async () => {
    const st = (await until('our sessions settled', allOursUp, 15000)).v;
    console.log(`${tag} router:\n${lab.router.bfdText()}`);
    for (let i = 0; i < 2; i++)
      for (const s of lab.ourSessions(st[i]!, i)) {
        // We send at max(our 300, router's required 300); we detect with its 3 x max(our RX 300, its TX 200).
        expect({ peer: s.peer, state: s.state, tx: s.txIntervalMs, detect: s.detectionTimeMs, remote: s.remote, configured: s.configured }).toEqual({ // prettier-ignore
          peer: s.peer, state: 'up', tx: 300, detect: 900,
          remote: { minTx: ROUTER_BFD.minTx, minRx: ROUTER_BFD.minRx, multiplier: ROUTER_BFD.multiplier },
          configured: OUR_BFD,
        }); // prettier-ignore
      }
    // `peak-xdp bfd --json` shows the same negotiated values.
    for (let i = 0; i < 2; i++) {
      const cli = lab.ourSessions(await lab.bfdStatusCli(i), i);
      expect(cli.map((s) => [s.peer, s.state, s.txIntervalMs, s.detectionTimeMs])).toEqual(lab.ourSessions(st[i]!, i).map((s) => [s.peer, 'up', 300, 900])); // prettier-ignore
    }
    console.log(`${tag} ours (lb1):`, lab.ourSessions(st[0]!, 0).map((s) => ({ peer: s.peer, state: s.state, txMs: s.txIntervalMs, detectMs: s.detectionTimeMs, remote: s.remote }))); // prettier-ignore
    const rs = lab.router.bfdSessions();
    expect(rs.map((s) => s.peer).sort()).toEqual(lab.lbs.flatMap((l) => [l.v4, l.v6]).sort());
    for (const s of rs) {
      expect(s.state).toBe('up');
      // The router sends at max(its 200, our required 300) and detects with our 3 x max(its RX 300, our TX 300).
      if (s.txMs !== null) expect([s.txMs, s.detectMs]).toEqual([300, 900]);
      if (s.remote !== null) expect(s.remote).toEqual(OUR_BFD);
    }
  }, 30000);

  it('2. silent failure (nftables drop, link up): the router drops the next hop in < 3 s with BFD (hold 9 s); without BFD only at the hold timer', async () => {
    const lb1 = lab.lbs[0]!;
    const results: { bfd: boolean; fibMs: number | null; v6Ms: number | null; ok: number; failed: number; lastFailMs: number | null; errors: Record<string, number> }[] = []; // prettier-ignore
    let noBfdCheck = { established: false, routed: false };
    for (const withBfd of [true, false]) {
      if (!withBfd) {
        // The contrast: the router's BGP sessions with lb1 without BFD (live reconfiguration, no reset).
        lab.router.setBfd([lb1.v4, lb1.v6], false);
        await sleep(1000);
        noBfdCheck = { established: lab.router.established(lb1.v4), routed: lab.fib(VIP4).includes(lb1.v4) };
      }
      const load = lab.load({ seconds: withBfd ? 6 : 14 });
      await sleep(1500);
      const t0 = performance.now();
      const wall0 = Date.now();
      lab.silence(0, true);
      let v6Ms: number | null = null;
      const v6 = (async () => {
        for (;;) {
          if (!(await lab.fibAsync(VIP6)).includes(lb1.v6)) return (v6Ms = performance.now() - t0);
          if (performance.now() - t0 > 15000) return null;
          await sleep(5);
        }
      })();
      const fibMs = await lab.timeUntilFibDrops(0, t0, 15000);
      await v6;
      const w = await load;
      const lastFail = w.failedAt.length ? Math.max(...w.failedAt) - wall0 : null;
      results.push({ bfd: withBfd, fibMs, v6Ms, ok: w.ok, failed: w.failed, lastFailMs: lastFail, errors: w.errors }); // prettier-ignore
      if (withBfd) {
        const ours = await lab.bfdStatus(0);
        console.log(`${tag} lb1 side after the silence:`, lab.ourSessions(ours, 0).map((s) => `${s.peer} ${s.state} (${s.diag})`).join(', ')); // prettier-ignore
        console.log(`${tag} router BFD after the silence:\n${lab.router.bfdText()}`);
      }
      lab.silence(0, false);
      if (!withBfd) lab.router.setBfd([lb1.v4, lb1.v6], true);
      const back = await healthy(40000);
      console.log(`${tag} silence lifted -> healthy again after ${back.toFixed(0)} ms`);
    }
    console.log(`${tag} silent failure of lb1 (BFD ${OUR_BFD.minTx} ms x ${OUR_BFD.multiplier}, BGP hold ${HOLD_S} s), 8 HTTP loops, new connection per request, 1 s timeout:`); // prettier-ignore
    console.table(results.map((r) => ({ bfd: r.bfd, 'v4 next hop gone (ms)': r.fibMs?.toFixed(0) ?? 'never', 'v6 (ms)': r.v6Ms?.toFixed(0) ?? 'never', ok: r.ok, failed: r.failed, 'last failed request started (ms)': r.lastFailMs ?? '-', errors: JSON.stringify(r.errors) }))); // prettier-ignore
    const [w, wo] = results;
    expect(noBfdCheck).toEqual({ established: true, routed: true });
    expect(w!.fibMs).not.toBeNull();
    expect(w!.fibMs!).toBeLessThan(3000);
    expect(w!.v6Ms).not.toBeNull();
    expect(w!.v6Ms!).toBeLessThan(3000);
    // Without BFD only the hold timer finds it (the generous lower bound: more than a keepalive interval).
    expect(wo!.fibMs).not.toBeNull();
    expect(wo!.fibMs!).toBeGreaterThan(KEEPALIVE_S * 1000);
  }, 120000);

  it('3. balancer detached by hand: BFD Down (forwarding-plane-reset), the router drops the node', async () => {
    const lb1 = lab.lbs[0]!;
    const d = lab.daemons[0]!;
    await healthy(40000);
    // The daemon re-attaches a detached balancer within its check interval: frozen, it cannot. (Before the
    // kill -9 test on purpose: once, right after a graceful restart, BIRD 2.0.12 let the hold timer drop the
    // node instead of the BFD Down; see the report.)
    signalPid(d.pid, 'SIGSTOP');
    try {
      const t0 = performance.now();
      nsExec(lb1.ns, ['ip', 'link', 'set', 'dev', 'eth0', 'xdp', 'off']);
      expect(lab.bgp.xdpProgId(0)).toBe(0);
      const fib = lab.timeUntilFibDrops(0, t0, 10000);
      const down = await until('lb1 BFD Down (forwarding-plane-reset)', async () => {
        const st = await lab.bfdStatus(0);
        const s = lab.ourSessions(st, 0);
        return s.every((x) => x.state === 'down' && x.diag === 'forwarding-plane-reset') && st;
      }, 10000); // prettier-ignore
      const ourMs = performance.now() - t0;
      const fibMs = await fib;
      const rs = routerSessions(0);
      console.log(`${tag} detach -> our sessions Down (forwarding-plane-reset) seen after ${ourMs.toFixed(0)} ms (polling the control socket); router FIB without lb1 after ${fibMs?.toFixed(0) ?? 'never'} ms; router BFD: ${rs.map((s) => `${s.peer} ${s.state}`).join(', ')}`); // prettier-ignore
      expect(down.v.forwarding).toMatchObject({ ok: false });
      expect(fibMs).not.toBeNull();
      expect(fibMs!).toBeLessThan(5000);
      expect(rs.every((s) => s.state !== 'up')).toBe(true);
    } finally {
      signalPid(d.pid, 'SIGCONT');
    }
    const back = await healthy(40000);
    console.log(`${tag} daemon resumed -> re-attached, BFD Up, routes back after ${back.toFixed(0)} ms`);
    expect(lab.bgp.xdpProgId(0)).not.toBe(0);
  }, 90000);

  it('4. daemon kill -9 under load (router helps graceful restart): BFD stays Up, routes stay, 0 failed requests', async () => {
    await healthy(40000);
    const lb1 = lab.lbs[0]!;
    const before = lab.ourSessions(await lab.bfdStatus(0), 0);
    const rBefore = routerSessions(0);
    const load = lab.load({ seconds: 10 });
    await sleep(1500);
    signalPid(lab.daemons[0]!.pid, 'SIGKILL');
    await lab.daemons[0]!.exited;
    const tKill = performance.now();
    let samples = 0;
    let missing = 0;
    let bgpDown = false;
    while (performance.now() - tKill < 3000) {
      samples++;
      if (!(await lab.fibAsync(VIP4)).includes(lb1.v4)) missing++;
      bgpDown ||= !lab.router.established(lb1.v4);
      await sleep(10);
    }
    const rDuring = routerSessions(0);
    lab.daemons[0] = await lab.startDaemon(0);
    const readyMs = performance.now() - tKill;
    const w = await load;
    const after = lab.ourSessions(await lab.bfdStatus(0), 0);
    console.log(`${tag} kill -9 of lb1's daemon: router BGP session went down: ${bgpDown}; FIB samples without lb1: ${missing}/${samples} over 3 s; daemon ready again ${readyMs.toFixed(0)} ms after the kill; load: ${w.ok} ok, ${w.failed} failed ${JSON.stringify(w.errors)}`); // prettier-ignore
    console.log(`${tag} router BFD during the restart: ${rDuring.map((s) => `${s.peer} ${s.state} since ${s.upSince}`).join(', ')}`); // prettier-ignore
    expect(bgpDown).toBe(true); // the kill was real: the router saw the BGP session go
    expect(missing).toBe(0);
    expect(w.failed).toBe(0);
    expect(w.ok).toBeGreaterThan(0);
    for (const [b, a] of before.map((s, k) => [s, after[k]!] as const)) {
      expect(a.state).toBe('up');
      expect(a.stateChanges).toBe(b.stateChanges);
    }
    expect(rDuring.map((s) => [s.peer, s.state])).toEqual(rBefore.map((s) => [s.peer, 'up']));
    expect(rDuring.map((s, i) => sinceChange(rBefore[i]!.upSince, s.upSince))).toEqual(
      rBefore.map(() => 'same'),
    );
    await healthy(30000);
  }, 90000);

  it('5. bad BFD packets from the router namespace: dropped and counted by reason, the session stays Up', async () => {
    await healthy(40000);
    const lb1 = lab.lbs[0]!;
    const st0 = await lab.bfdStatus(0);
    const [s4, s6] = lab.ourSessions(st0, 0) as [SessionStatus, SessionStatus];
    const r0 = routerSessions(0);
    const base = (s: SessionStatus, over: Partial<ControlPacket> = {}): ControlPacket => ({
      version: 1, diag: 0, state: State.Up, poll: false, final: false, controlPlaneIndependent: false,
      demand: false, multipoint: false, detectMult: ROUTER_BFD.multiplier, myDiscr: s.remoteDiscr,
      yourDiscr: s.localDiscr, desiredMinTxUs: ROUTER_BFD.minTx * 1000, requiredMinRxUs: ROUTER_BFD.minRx * 1000,
      requiredMinEchoRxUs: 0, ...over,
    }); // prettier-ignore
    const good4 = encodeControl(base(s4));
    const wrongVersion = Buffer.from(good4);
    wrongVersion[0] = (2 << 5) | (wrongVersion[0]! & 0x1f);
    const shortLength = Buffer.from(good4);
    shortLength[3] = 20;
    const longLength = Buffer.from(good4);
    longLength[3] = 60; // more than the datagram holds
    // The session has no authentication: a packet with an auth section (A bit) is not ours to accept.
    const withAuth = encodeControl(base(s4, { auth: { type: 1, keyId: 1, password: Buffer.from('guess') } as ControlPacket['auth'] })); // prettier-ignore
    // A detect-multiplier different from the router's is legal (RFC 5880 §6.8.6 takes the peer's value), so
    // a "mismatch" is no drop reason; multiplier 0 is.
    const cases = [
      { name: 'version 2', buf: wrongVersion, ttl: 255, reason: 'bad-version', dst: lb1.v4 },
      { name: 'Length 20', buf: shortLength, ttl: 255, reason: 'bad-length', dst: lb1.v4 },
      { name: 'Length 60 > datagram', buf: longLength, ttl: 255, reason: 'bad-length', dst: lb1.v4 },
      { name: '10 bytes', buf: good4.subarray(0, 10), ttl: 255, reason: 'short-packet', dst: lb1.v4 },
      { name: 'multiplier 0', buf: encodeControl(base(s4, { detectMult: 0 })), ttl: 255, reason: 'detect-mult-zero', dst: lb1.v4 }, // prettier-ignore
      { name: 'auth on a no-auth session', buf: withAuth, ttl: 255, reason: 'auth-unexpected', dst: lb1.v4 },
      { name: 'TTL 254 (v4)', buf: good4, ttl: 254, reason: 'ttl-below-255', dst: lb1.v4 },
      { name: 'hop limit 254 (v6)', buf: encodeControl(base(s6)), ttl: 254, reason: 'ttl-below-255', dst: lb1.v6 }, // prettier-ignore
      { name: 'TTL 1 (v4)', buf: good4, ttl: 1, reason: 'ttl-below-255', dst: lb1.v4 },
    ];
    const N = 5;
    for (const c of cases)
      expect(lab.inject({ dst: c.dst, items: Array.from({ length: N }, () => ({ hex: c.buf.toString('hex'), ttl: c.ttl })) }).sent).toBe(N); // prettier-ignore
    await sleep(300);
    const st1 = await lab.bfdStatus(0);
    const want: Record<string, number> = {};
    for (const c of cases) want[c.reason] = (want[c.reason] ?? 0) + N;
    const got = Object.fromEntries(Object.keys(want).map((r) => [r, (st1.drops[r as 'bad-version'] ?? 0) - (st0.drops[r as 'bad-version'] ?? 0)])); // prettier-ignore
    console.log(`${tag} crafted bad packets (${N} each of ${cases.length} kinds), drops by reason:`, got);
    expect(got).toEqual(want);

    const sum = (d: Partial<Record<string, number>>) =>
      Object.values(d).reduce<number>((a, b) => a + (b ?? 0), 0);
    const r4 = lab.inject({ dst: lb1.v4, random: 5000 });
    const r6 = lab.inject({ dst: lb1.v6, random: 5000 });
    await sleep(500);
    const st2 = await lab.bfdStatus(0);
    const validIn = (st: BfdStatus) => st.sessions.reduce((a, s) => a + s.packetsIn, 0);
    const inD = st2.packetsIn - st1.packetsIn;
    const dropD = sum(st2.drops) - sum(st1.drops);
    const validD = validIn(st2) - validIn(st1);
    const byReason = Object.fromEntries(Object.keys(st2.drops).map((r) => [r, (st2.drops[r as 'bad-version'] ?? 0) - (st1.drops[r as 'bad-version'] ?? 0)]).filter(([, n]) => (n as number) > 0)); // prettier-ignore
    console.log(`${tag} random: sent ${r4.sent + r6.sent} in ${r4.ms + r6.ms} ms; lb1 received ${inD}: ${dropD} dropped, ${validD} valid (the router's own)`, byReason); // prettier-ignore
    expect(r4.sent + r6.sent).toBe(10000);
    expect(dropD + validD).toBe(inD);
    expect(dropD).toBeGreaterThan(9000); // the rest, if any, lost in the kernel before the socket
    expect(dropD).toBeLessThanOrEqual(10000);
    const after = lab.ourSessions(st2, 0);
    for (const [b, a] of [s4, s6].map((s, k) => [s, after[k]!] as const)) {
      expect(a.state).toBe('up');
      expect(a.stateChanges).toBe(b.stateChanges);
    }
    const r1 = routerSessions(0);
    expect(r1.map((s) => [s.peer, s.state])).toEqual(r0.map((s) => [s.peer, 'up']));
    expect(r1.map((s, i) => sinceChange(r0[i]!.upSince, s.upSince))).toEqual(r0.map(() => 'same'));
  }, 90000);
}
