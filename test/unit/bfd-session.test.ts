// BFD session state machine (RFC 5880 §6.2, §6.8): transitions, negotiated intervals, slow TX, poll/final,
// jitter, detection time, diagnostics. Two sessions exchange packets over a simulated lossless link.
import fc from 'fast-check';
import { ControlPacket, decodeControl, Diag, encodeControl, State } from '../../src/bfd/codec';
import {
  adminDown,
  adminUp,
  Clock,
  createSession,
  detectionDeadline,
  detectionTimeUs,
  jitteredMs,
  nextWake,
  packetFor,
  receive,
  Session,
  SessionParams,
  setHold,
  setParams,
  SLOW_TX_US,
  HELD_TX_US,
  StateChange,
  tick,
  txIntervalUs,
} from '../../src/bfd/session';

const P300: SessionParams = { desiredMinTxUs: 300_000, requiredMinRxUs: 300_000, detectMult: 3 };
const clock = (now: number, r = 0.5): Clock => ({ now, random: () => r });

/** A packet as the peer would see it: through the codec, so the test also covers what goes on the wire. */
function wire(p: ControlPacket): ControlPacket {
  const d = decodeControl(encodeControl(p));
  if (!d.ok) throw new Error(`session built an invalid packet: ${d.reason}`);
  return d.packet;
}

/** Two sessions on a lossless link with zero delay, driven by an event loop over virtual time. */
class Link {
  a: Session;
  b: Session;
  t = 0;
  events: { side: 'a' | 'b'; e: StateChange }[] = [];
  sent = { a: 0, b: 0 };
  /** Drop everything either way (a silent failure). */
  cut = false;
  constructor(pa: SessionParams, pb: SessionParams) {
    this.a = createSession({ localDiscr: 1, params: pa, now: 0 });
    this.b = createSession({ localDiscr: 2, params: pb, now: 0 });
  }
  private deliver(to: 'a' | 'b', p: ControlPacket): void {
    this.sent[to === 'a' ? 'b' : 'a']++;
    if (this.cut) return;
    const r = receive(this[to], wire(p), clock(this.t));
    this[to] = r.session;
    for (const e of r.events) this.events.push({ side: to, e });
    if (r.sendFinal) this.deliver(to === 'a' ? 'b' : 'a', packetFor(this[to], { final: true }));
  }
  /** Runs until `until` ms of virtual time, stepping to each session's next wake-up. */
  run(until: number): void {
    for (let guard = 0; guard < 100_000; guard++) {
      const wa = nextWake(this.a) ?? Infinity;
      const wb = nextWake(this.b) ?? Infinity;
      const next = Math.min(wa, wb);
      if (next > until) break;
      this.t = Math.max(this.t, next);
      for (const side of ['a', 'b'] as const) {
        if ((nextWake(this[side]) ?? Infinity) > this.t) continue;
        const r = tick(this[side], clock(this.t));
        this[side] = r.session;
        for (const e of r.events) this.events.push({ side, e });
        if (r.transmit) this.deliver(side === 'a' ? 'b' : 'a', r.transmit);
      }
    }
    this.t = until;
  }
}

describe('three-way handshake and negotiated intervals', () => {
  test('Down -> Init -> Up on both sides, then intervals reach what was configured via poll/final', () => {
    const l = new Link(P300, { desiredMinTxUs: 200_000, requiredMinRxUs: 500_000, detectMult: 5 });
    l.run(50);
    expect(l.a.state).toBe(State.Up);
    expect(l.b.state).toBe(State.Up);
    const path = (side: 'a' | 'b') => l.events.filter((x) => x.side === side).map((x) => State[x.e.to]);
    // a speaks first: b goes Init on a's Down, a goes Up on b's Init, b goes Up on a's Up.
    expect(path('a')).toEqual(['Up']);
    expect(path('b')).toEqual(['Init', 'Up']);
    // Up: the poll sequence moved both off the slow 1 s rate.
    l.run(5000);
    expect(l.a.pollActive).toBe(false);
    expect(l.a.activeDesiredMinTxUs).toBe(300_000);
    // a sends at max(its 300 ms, b's required 500 ms); b at max(200, 300).
    expect(txIntervalUs(l.a)).toBe(500_000);
    expect(txIntervalUs(l.b)).toBe(300_000);
    // a detects with b's multiplier 5 × max(a's required 300, b's desired 200) = 1.5 s; b: 3 × max(500, 300).
    expect(detectionTimeUs(l.a)).toBe(1_500_000);
    expect(detectionTimeUs(l.b)).toBe(1_500_000);
    expect(l.events.filter((x) => x.e.to === State.Down)).toEqual([]);
  });

  test('while not Up, packets advertise at least 1 s desired TX and go out at most once a second (§6.8.3)', () => {
    const s = createSession({ localDiscr: 7, params: P300, now: 0 });
    expect(packetFor(s, { final: false }).desiredMinTxUs).toBe(SLOW_TX_US);
    expect(packetFor(s, { final: false }).requiredMinRxUs).toBe(300_000);
    let cur = s;
    const times: number[] = [];
    for (let t = 0; t <= 10_000; t += 10) {
      const r = tick(cur, clock(t, 0.99));
      cur = r.session;
      if (r.transmit) times.push(t);
    }
    expect(times.length).toBeGreaterThan(5);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(750);
  });

  test('a slower configured TX than 1 s is kept while not Up', () => {
    const s = createSession({ localDiscr: 7, params: { ...P300, desiredMinTxUs: 2_000_000 }, now: 0 });
    expect(packetFor(s, { final: false }).desiredMinTxUs).toBe(2_000_000);
  });

  test('packets carry C (control plane independent), our discriminators and the multiplier', () => {
    const l = new Link(P300, P300);
    l.run(50);
    const p = packetFor(l.a, { final: false });
    expect(p).toMatchObject({ controlPlaneIndependent: true, myDiscr: 1, yourDiscr: 2, detectMult: 3 });
  });
});

describe('failure detection and diagnostics', () => {
  test('silence for the detection time: Down with control-detection-time-expired, remote forgotten', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    expect(l.a.state).toBe(State.Up);
    const cutAt = l.t;
    l.cut = true;
    l.run(cutAt + 2000);
    const down = l.events.find((x) => x.side === 'a' && x.e.to === State.Down)!;
    expect(down.e.diag).toBe(Diag.ControlDetectionTimeExpired);
    // Last packet from b arrived within one jittered interval before the cut: down within (0.9, 0.9 + 0.3] s.
    const took = down.e.at - cutAt;
    console.log(`virtual detection after cut: ${took.toFixed(1)} ms (detection time 900 ms)`);
    expect(took).toBeLessThanOrEqual(900);
    expect(took).toBeGreaterThan(900 - 300);
    expect(l.a.remoteDiscr).toBe(0);
    expect(detectionDeadline(l.a)).toBeNull();
    // Back to slow TX.
    expect(packetFor(l.a, { final: false }).desiredMinTxUs).toBe(SLOW_TX_US);
    // Healed: both come Up again.
    l.cut = false;
    l.run(l.t + 5000);
    expect(l.a.state).toBe(State.Up);
    expect(l.b.state).toBe(State.Up);
  });

  test('peer Down while Up: neighbor-signaled-down; peer AdminDown: Down with neighbor-signaled-down', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    const downPkt = wire({ ...packetFor(l.b, { final: false }), state: State.Down, diag: Diag.PathDown });
    const r = receive(l.a, downPkt, clock(l.t));
    expect(r.session.state).toBe(State.Down);
    expect(r.session.localDiag).toBe(Diag.NeighborSignaledDown);
    expect(r.session.remoteDiag).toBe(Diag.PathDown);
    expect(r.events).toEqual([{ from: State.Up, to: State.Down, diag: Diag.NeighborSignaledDown, at: l.t }]);
    const ad = wire({ ...packetFor(l.b, { final: false }), state: State.AdminDown });
    expect(receive(l.a, ad, clock(l.t)).session.localDiag).toBe(Diag.NeighborSignaledDown);
    // AdminDown from the peer while we are Down changes nothing.
    expect(receive(r.session, ad, clock(l.t)).events).toEqual([]);
  });

  test('Init ignores a peer Down; Init goes Up on Init or Up', () => {
    let s = createSession({ localDiscr: 1, params: P300, now: 0 });
    const peer = (state: State): ControlPacket =>
      wire({
        ...packetFor(createSession({ localDiscr: 9, params: P300, now: 0 }), { final: false }),
        state,
        yourDiscr: 1,
      });
    s = receive(s, peer(State.Down), clock(1)).session;
    expect(s.state).toBe(State.Init);
    expect(receive(s, peer(State.Down), clock(2)).session.state).toBe(State.Init);
    expect(receive(s, peer(State.Up), clock(2)).session.state).toBe(State.Up);
    expect(receive(s, peer(State.Init), clock(2)).session.state).toBe(State.Up);
    // Down ignores a peer Up (it must see our Down/Init first).
    const d = createSession({ localDiscr: 1, params: P300, now: 0 });
    expect(receive(d, peer(State.Up), clock(1)).session.state).toBe(State.Down);
  });

  test('Init times out like Up (§6.8.4)', () => {
    let s = createSession({ localDiscr: 1, params: P300, now: 0 });
    const p = wire({
      ...packetFor(createSession({ localDiscr: 9, params: P300, now: 0 }), { final: false }),
    });
    s = receive(s, p, clock(0)).session;
    expect(s.state).toBe(State.Init);
    // Peer still at slow TX: detection 3 × max(300 ms, 1 s) = 3 s.
    expect(detectionDeadline(s)).toBe(3000);
    expect(tick(s, clock(2999)).session.state).toBe(State.Init);
    const r = tick(s, clock(3000));
    expect(r.events[0]).toMatchObject({
      from: State.Init,
      to: State.Down,
      diag: Diag.ControlDetectionTimeExpired,
    });
  });
});

describe('local down: admin and hold', () => {
  test('AdminDown is sent, ignores the peer, and admin up goes back through Down to Up', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    const r = adminDown(l.a, Diag.AdministrativelyDown, clock(l.t));
    l.a = r.session;
    expect(r.events[0]).toMatchObject({
      from: State.Up,
      to: State.AdminDown,
      diag: Diag.AdministrativelyDown,
    });
    l.run(l.t + 3000);
    expect(l.a.state).toBe(State.AdminDown);
    expect(l.b.state).toBe(State.Down);
    expect(l.b.localDiag).toBe(Diag.NeighborSignaledDown);
    expect(l.b.remoteState).toBe(State.AdminDown);
    l.a = adminUp(l.a, clock(l.t)).session;
    expect(l.a.state).toBe(State.Down);
    l.run(l.t + 5000);
    expect([l.a.state, l.b.state]).toEqual([State.Up, State.Up]);
    // Admin up on a session not AdminDown is a no-op.
    expect(adminUp(l.a, clock(l.t)).events).toEqual([]);
  });

  test('hold (forwarding plane reset): Down with that diag, stays Down while held, comes Up when released', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    const r = setHold(l.a, Diag.ForwardingPlaneReset, clock(l.t));
    l.a = r.session;
    expect(r.events[0]).toMatchObject({ from: State.Up, to: State.Down, diag: Diag.ForwardingPlaneReset });
    l.run(l.t + 5000);
    expect(l.a.state).toBe(State.Down);
    expect(l.b.state).not.toBe(State.Up);
    expect(l.b.remoteDiag).toBe(Diag.ForwardingPlaneReset);
    // b left Up on a's Down; since then it only goes Init and back (a never answers with Init).
    const bDown = l.events.filter((x) => x.side === 'b' && x.e.from === State.Up);
    expect(bDown.map((x) => x.e.diag)).toEqual([Diag.NeighborSignaledDown]);
    l.a = setHold(l.a, null, clock(l.t)).session;
    l.run(l.t + 5000);
    expect([l.a.state, l.b.state]).toEqual([State.Up, State.Up]);
  });

  test('held: the peer stays Down for at least 3/4 of HELD_TX_US (a peer that reads its state late still sees Down), the release is Up as fast as a cold start', () => {
    for (const r of [0, 0.5, 0.999]) {
      const l = new Link(P300, P300);
      l.run(3000);
      const t0 = l.t;
      l.a = setHold(l.a, Diag.ForwardingPlaneReset, { now: t0, random: () => r }).session;
      expect(packetFor(l.a, { final: false }).desiredMinTxUs).toBe(HELD_TX_US);
      l.run(t0 + 20_000);
      // b: Up -> Down at once (our first Down went out at t0), then Init only on our next Down.
      const b = l.events.filter((x) => x.side === 'b' && x.e.at >= t0);
      expect(b[0]!.e).toMatchObject({ from: State.Up, to: State.Down, at: t0 });
      expect(b[1]!.e).toMatchObject({ from: State.Down, to: State.Init });
      expect(b[1]!.e.at - t0).toBeGreaterThanOrEqual((HELD_TX_US / 1000) * 0.75);
      // Released: our Down goes out at once, b answers Init, both Up within one of b's slow intervals.
      const t1 = l.t;
      l.a = setHold(l.a, null, clock(t1)).session;
      expect(packetFor(l.a, { final: false }).desiredMinTxUs).toBe(SLOW_TX_US);
      expect(nextWake(l.a)).toBe(t1);
      l.run(t1 + SLOW_TX_US / 1000);
      expect([l.a.state, l.b.state]).toEqual([State.Up, State.Up]);
    }
  });
});

describe('held: a Down peer that polls gets its Final with our next periodic packet (BIRD polls as it leaves Up)', () => {
  test('the peer stays Down until our next periodic packet, which carries F; an Up peer or an unheld session is answered at once', () => {
    for (const r of [0, 0.999]) {
      const l = new Link(P300, P300);
      l.run(3000);
      const t0 = l.t;
      l.a = setHold(l.a, Diag.ForwardingPlaneReset, { now: t0, random: () => r }).session;
      // Our first Down goes out at once; b leaves Up.
      const first = tick(l.a, { now: t0, random: () => r });
      l.a = first.session;
      expect(first.transmit).toMatchObject({ state: State.Down, final: false });
      const rb = receive(l.b, wire(first.transmit!), clock(t0));
      l.b = rb.session;
      expect(l.b.state).toBe(State.Down);
      // b, as BIRD does leaving Up, polls at once (a new, slower TX interval): Down with P.
      const poll = wire({ ...packetFor(l.b, { final: false }), poll: true });
      const ra = receive(l.a, poll, clock(t0 + 1));
      expect(ra.sendFinal).toBe(false);
      l.a = ra.session;
      expect(l.a.finalOwed).toBe(true);
      // Nothing more goes out before the held interval (3/4 of it at least); then F, and b goes Init only then.
      let t = t0 + 1;
      let next: ReturnType<typeof tick> | null = null;
      for (; t < t0 + 10_000; t += 10) {
        const k = tick(l.a, { now: t, random: () => r });
        l.a = k.session;
        if (k.transmit) {
          next = k;
          break;
        }
      }
      expect(t - t0).toBeGreaterThanOrEqual((HELD_TX_US / 1000) * 0.75);
      expect(next!.transmit).toMatchObject({ state: State.Down, final: true, poll: false });
      expect(l.a.finalOwed).toBe(false);
      expect(receive(l.b, wire(next!.transmit!), clock(t)).session.state).toBe(State.Init);
    }
    // Not owed: a held session polled by a peer still Up, and an unheld session polled by a Down peer.
    const l = new Link(P300, P300);
    l.run(3000);
    const up = wire({ ...packetFor(l.b, { final: false }), poll: true });
    const held = setHold(l.a, Diag.ForwardingPlaneReset, clock(l.t)).session;
    expect(receive(held, up, clock(l.t)).sendFinal).toBe(true);
    const fresh = createSession({ localDiscr: 9, params: P300, now: 0 });
    const downPoll = wire({ ...packetFor(createSession({ localDiscr: 8, params: P300, now: 0 }), { final: false }), poll: true, yourDiscr: 9 }); // prettier-ignore
    expect(receive(fresh, downPoll, clock(0)).sendFinal).toBe(true);
  });
});

describe('lostSinceUp: the one fact a client holds BGP on (RFC 5882 §4.3, §3.2)', () => {
  test('set by Up -> Down for a failure, cleared by Up; not by the peer AdminDown, our AdminDown, or never Up', () => {
    // Detection-time expiry from Up, then healed.
    const l = new Link(P300, P300);
    l.run(3000);
    expect(l.a.lostSinceUp).toBe(false);
    l.cut = true;
    l.run(l.t + 2000);
    expect([l.a.state, l.a.lostSinceUp]).toEqual([State.Down, true]);
    l.cut = false;
    l.run(l.t + 5000);
    expect([l.a.state, l.a.lostSinceUp]).toEqual([State.Up, false]);

    // The peer's AdminDown, then silence: the remote state is forgotten on expiry, the fact stays false.
    const ad = wire({ ...packetFor(l.b, { final: false }), state: State.AdminDown });
    let s = receive(l.a, ad, clock(l.t)).session;
    expect([s.state, s.lostSinceUp]).toEqual([State.Down, false]);
    s = tick(s, clock(l.t + 10_000)).session;
    expect([s.state, s.remoteState, s.lostSinceUp]).toEqual([State.Down, State.Down, false]);

    // Our AdminDown from Up is planned; a hold from Up (forwarding plane) is a loss.
    expect(adminDown(l.a, Diag.AdministrativelyDown, clock(l.t)).session.lostSinceUp).toBe(false);
    const held = setHold(l.a, Diag.ForwardingPlaneReset, clock(l.t)).session;
    expect(held.lostSinceUp).toBe(true);
    // ... and stays set through Init and AdminDown until Up.
    expect(adminDown(held, Diag.AdministrativelyDown, clock(l.t)).session.lostSinceUp).toBe(true);

    // Created while held (balancer not attached yet), released, never Up (the router runs no BFD).
    let n = createSession({ localDiscr: 5, params: P300, now: 0 });
    n = setHold(n, Diag.ForwardingPlaneReset, clock(1)).session;
    n = setHold(n, null, clock(2)).session;
    n = tick(n, clock(10_000)).session;
    expect([n.state, n.localDiag, n.lostSinceUp]).toEqual([State.Down, Diag.ForwardingPlaneReset, false]);
  });
});

describe('poll sequence (§6.8.3)', () => {
  test('reaching Up: the faster configured TX applies at once, not after the Final (a lost Final starves no one)', () => {
    let s = createSession({ localDiscr: 1, params: P300, now: 0 });
    const peer = wire({
      ...packetFor(createSession({ localDiscr: 9, params: P300, now: 0 }), { final: false }),
      state: State.Init,
      yourDiscr: 1,
    });
    const r = receive(s, peer, clock(0));
    s = r.session;
    expect(s.state).toBe(State.Up);
    // We advertise 300 ms, so the peer's detection time is 3 × 300 ms: we must send that often at once.
    expect([s.desiredMinTxUs, s.activeDesiredMinTxUs, s.pollActive]).toEqual([300_000, 300_000, true]);
    expect(txIntervalUs(s)).toBe(300_000);
    // No Final ever comes (and no packet at all, within 800 ms, the peer's detection time then is 900 ms).
    const times: number[] = [];
    for (let t = 0; t <= 800; t += 1) {
      const k = tick(s, clock(t, 0.99));
      s = k.session;
      if (k.transmit) times.push(t);
    }
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    console.log(`TX gaps before the Final: ${gaps.join(', ')} ms`);
    expect(gaps.length).toBeGreaterThanOrEqual(2);
    for (const g of gaps) expect(g).toBeLessThanOrEqual(300);
  });

  test('a larger required RX applies at once (only a smaller one waits for the Final)', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    l.cut = true;
    const s = setParams(l.a, { ...P300, requiredMinRxUs: 600_000 }, clock(l.t));
    expect([s.pollActive, s.requiredMinRxUs, s.activeRequiredMinRxUs]).toEqual([true, 600_000, 600_000]);
    expect(detectionTimeUs(s)).toBe(1_800_000);
  });

  test('slower TX while Up: P until F, the old interval stays in force until then', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    expect(l.a.activeDesiredMinTxUs).toBe(300_000);
    const s = setParams(l.a, { ...P300, desiredMinTxUs: 600_000 }, clock(l.t));
    expect(s.pollActive).toBe(true);
    expect(s.desiredMinTxUs).toBe(600_000);
    expect(s.activeDesiredMinTxUs).toBe(300_000);
    expect(packetFor(s, { final: false }).poll).toBe(true);
    expect(s.nextTxAt).toBe(l.t);
    l.a = s;
    l.run(l.t + 1);
    expect(l.a.pollActive).toBe(false);
    expect(l.a.activeDesiredMinTxUs).toBe(600_000);
    expect(txIntervalUs(l.a)).toBe(600_000);
    // b's detection time follows a's new desired TX: 3 × 600 ms.
    expect(detectionTimeUs(l.b)).toBe(1_800_000);
  });

  test('lower required RX: detection time keeps the old value until Final', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    const s = setParams(l.a, { ...P300, requiredMinRxUs: 100_000, desiredMinTxUs: 100_000 }, clock(l.t));
    expect(detectionTimeUs(s)).toBe(900_000);
    l.a = s;
    l.run(l.t + 1);
    l.run(l.t + 1000);
    expect(detectionTimeUs(l.a)).toBe(3 * 300_000); // b still sends at its 300 ms desired TX
    l.b = setParams(l.b, { ...P300, desiredMinTxUs: 100_000 }, clock(l.t));
    l.run(l.t + 1000);
    expect(detectionTimeUs(l.a)).toBe(300_000);
  });

  test('a change during a poll waits for it to finish, then polls again', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    l.cut = true;
    l.a = setParams(l.a, { ...P300, desiredMinTxUs: 400_000 }, clock(l.t));
    l.a = setParams(l.a, { ...P300, desiredMinTxUs: 500_000 }, clock(l.t));
    expect(l.a.desiredMinTxUs).toBe(400_000);
    l.cut = false;
    // The Final for the first poll comes back; then the second poll runs and finishes too.
    l.run(l.t + 2000);
    expect(l.a.pollActive).toBe(false);
    expect(l.a.activeDesiredMinTxUs).toBe(500_000);
    expect(l.events.filter((x) => x.e.to === State.Down)).toEqual([]);
  });

  test('multiplier change needs no poll and applies at once', () => {
    const l = new Link(P300, P300);
    l.run(3000);
    l.a = setParams(l.a, { ...P300, detectMult: 5 }, clock(l.t));
    expect(l.a.pollActive).toBe(false);
    expect(packetFor(l.a, { final: false }).detectMult).toBe(5);
    l.run(l.t + 1000);
    expect(detectionTimeUs(l.b)).toBe(5 * 300_000);
  });

  test('a received Poll is answered with Final; a Final with no poll running changes nothing', () => {
    const s = createSession({ localDiscr: 1, params: P300, now: 0 });
    const peer = packetFor(createSession({ localDiscr: 9, params: P300, now: 0 }), { final: false });
    expect(receive(s, { ...peer, poll: true }, clock(0)).sendFinal).toBe(true);
    expect(receive(s, peer, clock(0)).sendFinal).toBe(false);
    const f = receive(s, { ...peer, final: true }, clock(0)).session;
    expect(f.activeDesiredMinTxUs).toBe(s.activeDesiredMinTxUs);
    expect(packetFor(s, { final: true })).toMatchObject({ final: true, poll: false });
  });

  test('peer asks for no packets (required min RX 0): none are sent', () => {
    const s = createSession({ localDiscr: 1, params: P300, now: 0 });
    const peer = packetFor(createSession({ localDiscr: 9, params: P300, now: 0 }), { final: false });
    const r = receive(s, { ...peer, requiredMinRxUs: 0 }, clock(0));
    expect(txIntervalUs(r.session)).toBe(0);
    expect(tick(r.session, clock(2000)).transmit).toBeNull();
    // After the detection time (3 × 1 s) the peer is forgotten and packets go out again.
    expect(tick(r.session, clock(3000)).transmit).not.toBeNull();
  });
});

describe('jitter (§6.8.7)', () => {
  test('75-100% of the interval, 75-90% with detect multiplier 1', () => {
    expect(jitteredMs(300_000, 3, () => 0)).toBe(225);
    expect(jitteredMs(300_000, 3, () => 0.999999)).toBeCloseTo(300, 3);
    expect(jitteredMs(300_000, 1, () => 0)).toBe(225);
    expect(jitteredMs(300_000, 1, () => 0.999999)).toBeCloseTo(270, 3);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000_000 }),
        fc.integer({ min: 1, max: 255 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (iv, mult, r) => {
          const ms = jitteredMs(iv, mult, () => r);
          const hi = mult === 1 ? 0.9 : 1;
          return ms >= (iv * 0.75) / 1000 - 1e-9 && ms <= (iv * hi) / 1000 + 1e-9;
        },
      ),
      { numRuns: 5000 },
    );
  });

  test('successive periodic packets use the random source', () => {
    const rs = [0, 0.5, 0.99];
    let i = 0;
    const c = (now: number): Clock => ({ now, random: () => rs[i++ % rs.length]! });
    const l = new Link(P300, P300);
    l.run(5000);
    let s = l.a;
    const gaps: number[] = [];
    let t = s.nextTxAt;
    for (let k = 0; k < 3; k++) {
      const r = tick(s, c(t));
      expect(r.transmit).not.toBeNull();
      gaps.push(r.session.nextTxAt - t);
      s = r.session;
      t = s.nextTxAt;
    }
    expect(gaps.map((g) => Math.round(g))).toEqual([225, 263, 299]);
  });
});

describe('arguments', () => {
  test('bad parameters name the field and value', () => {
    expect(() => createSession({ localDiscr: 0, params: P300, now: 0 })).toThrow(
      'localDiscr must be 1..4294967295, got 0',
    );
    expect(() => createSession({ localDiscr: 1, params: { ...P300, detectMult: 0 }, now: 0 })).toThrow(
      'session.detectMult must be an integer 1..255, got 0',
    );
    expect(() => createSession({ localDiscr: 1, params: { ...P300, requiredMinRxUs: 0.5 }, now: 0 })).toThrow(
      'session.requiredMinRxUs',
    );
  });
});

describe('property: any two configurations come Up and stay Up on a lossless link', () => {
  test('random intervals and multipliers', () => {
    const ms = fc.integer({ min: 10, max: 2000 }).map((x) => x * 1000);
    const params = fc.record({
      desiredMinTxUs: ms,
      requiredMinRxUs: ms,
      detectMult: fc.integer({ min: 1, max: 10 }),
    });
    let runs = 0;
    fc.assert(
      fc.property(params, params, (pa, pb) => {
        runs++;
        const l = new Link(pa, pb);
        l.run(20_000);
        expect([l.a.state, l.b.state]).toEqual([State.Up, State.Up]);
        expect(l.events.filter((x) => x.e.to === State.Down)).toEqual([]);
        expect(txIntervalUs(l.a)).toBe(Math.max(pa.desiredMinTxUs, pb.requiredMinRxUs));
        expect(detectionTimeUs(l.a)).toBe(pb.detectMult * Math.max(pa.requiredMinRxUs, pb.desiredMinTxUs));
      }),
      { numRuns: 150 },
    );
    expect(runs).toBe(150);
  });
});
