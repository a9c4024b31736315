// The daemon's BFD link over a fake BfdClient and a fake speaker: Down holds, Up releases, AdminDown does not,
// an absent BFD process degrades without failing, a reconnect sends the sessions again.
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import type { SessionSpec } from '../../src/bfd/config';
import type { BfdStatus, SessionStatus, StateChangeEvent } from '../../src/bfd/protocol';
import { parseBgpConfig } from '../../src/model/bgp';
import { BfdClientLike, BfdLink, bfdSessionsOf, verdictOf } from '../../src/daemon/bfd-link';

const silent = { info() {}, warn() {}, error() {}, debug() {}, child: () => silent } as never;

const bgp = parseBgpConfig({
  asn: 65001,
  routerId: '192.0.2.1',
  peers: [
    { address: '10.66.0.2', asn: 65000, bfd: {} },
    {
      address: '2001:DB8::2',
      asn: 65000,
      localAddress: '2001:db8::1',
      bfd: { minRx: 100, minTx: 150, multiplier: 5 },
    },
    { address: '198.51.100.7', asn: 65002, bfd: { multihop: true } },
    { address: '10.66.0.9', asn: 65000 },
  ],
});
const SESSIONS = bfdSessionsOf(bgp, 'eth0');
const KEY = SESSIONS[0]!.key;

class FakeClient extends EventEmitter implements BfdClientLike {
  setCalls: SessionSpec[][] = [];
  holdDowns: { sessions?: string[]; diag?: string }[] = [];
  ups: { sessions?: string[] }[] = [];
  statusCalls = 0;
  setErrors: Record<string, string> = {};
  /** When set, setSessions waits for it (a slow BFD process). */
  gate: Promise<void> | null = null;
  subscribed = 0;
  statusSessions: Partial<SessionStatus>[] = [];
  closed = false;
  async setSessions(s: SessionSpec[]) {
    this.setCalls.push(s);
    if (this.gate) await this.gate;
    return { added: [], removed: [], changed: [], errors: this.setErrors };
  }
  async subscribe() {
    this.subscribed++;
  }
  async status(): Promise<BfdStatus> {
    this.statusCalls++;
    return {
      sessions: this.statusSessions as SessionStatus[],
      packetsIn: 40,
      packetsOut: 42,
    } as BfdStatus;
  }
  async holdDown(o: { sessions?: string[]; diag?: never } = {}) {
    this.holdDowns.push(o);
    return o.sessions ?? [];
  }
  async up(o: { sessions?: string[] } = {}) {
    this.ups.push(o);
    return o.sessions ?? [];
  }
  close() {
    this.closed = true;
  }
  event(e: Partial<StateChangeEvent>) {
    this.emit('stateChange', {
      event: 'stateChange',
      key: KEY,
      peer: '10.66.0.2',
      diag: 'none',
      remoteState: 'up',
      lostSinceUp: false,
      at: 1,
      ...e,
    } as StateChangeEvent);
  }
  /** The BFD process went away. */
  die() {
    this.emit('close');
  }
}

class FakeSpeaker {
  calls: string[] = [];
  holdPeer(peer: string, reason: string) {
    this.calls.push(`hold ${peer}: ${reason}`);
  }
  releasePeer(peer: string) {
    this.calls.push(`release ${peer}`);
  }
}

async function until(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`not within 2 s: ${what}`);
}

function rig(o: { clients: (FakeClient | Error)[]; registry?: Registry }) {
  const speaker = new FakeSpeaker();
  let connects = 0;
  const link = new BfdLink({
    path: '/run/test/bfd.sock',
    sessions: SESSIONS,
    connect: async () => {
      const c = o.clients[Math.min(connects++, o.clients.length - 1)]!;
      if (c instanceof Error) throw c;
      return c;
    },
    speaker,
    log: silent,
    registry: o.registry,
    backoff: { initialMs: 5, maxMs: 20 },
  });
  return { link, speaker, connects: () => connects };
}

describe('bfdSessionsOf', () => {
  it('one session per peer with bfd: defaults 300 ms x 3, single-hop unless multihop, local from localAddress', () => {
    expect(SESSIONS.map((s) => [s.peer, s.key])).toEqual([
      ['10.66.0.2', 'single-hop * -> 10.66.0.2'],
      ['2001:DB8::2', 'single-hop 2001:db8::1 -> 2001:db8::2'],
      ['198.51.100.7', 'multihop * -> 198.51.100.7'],
    ]);
    expect(SESSIONS[0]!.spec).toEqual({
      peer: '10.66.0.2',
      multihop: false,
      minRx: 300,
      minTx: 300,
      multiplier: 3,
    });
    expect(SESSIONS[1]!.spec).toMatchObject({
      local: '2001:db8::1',
      minRx: 100,
      minTx: 150,
      multiplier: 5,
    });
  });

  it('a link-local peer gets the balanced interface', () => {
    const c = parseBgpConfig({
      asn: 65001,
      routerId: '192.0.2.1',
      peers: [{ address: 'fe80::1', asn: 65000, bfd: {} }],
    });
    expect(bfdSessionsOf(c, 'eth7')[0]!.key).toBe('single-hop * -> fe80::1 dev eth7');
    // All of fe80::/10, not only what is spelled fe80.
    const d = parseBgpConfig({
      asn: 65001,
      routerId: '192.0.2.1',
      peers: [{ address: 'febf::1', asn: 65000, bfd: {} }],
    });
    expect(bfdSessionsOf(d, 'eth7')[0]!.key).toBe('single-hop * -> febf::1 dev eth7');
  });
});

describe('verdicts (RFC 5882): one rule for events and the status read at (re)connect', () => {
  it.each([
    [{ state: 'up', lostSinceUp: false }, 'release'],
    // Up -> Down for a failure (detection time, the peer's Down, our forwarding plane): held until Up again.
    [{ state: 'down', lostSinceUp: true }, 'hold'],
    [{ state: 'init', lostSinceUp: true }, 'hold'],
    [{ state: 'admin-down', lostSinceUp: true }, 'hold'],
    // Never Up, the peer's AdminDown (also after it fell silent), our own AdminDown: nothing to hold.
    [{ state: 'down', lostSinceUp: false }, 'keep'],
    [{ state: 'init', lostSinceUp: false }, 'keep'],
    [{ state: 'admin-down', lostSinceUp: false }, 'keep'],
    // A BFD process without the field holds nothing.
    [{ state: 'down' }, 'keep'],
  ] as const)('%j -> %s', (s, v) => expect(verdictOf(s)).toBe(v));
});

describe('BfdLink', () => {
  it('sets the sessions, subscribes; Down tears the BGP session down, Up releases it', async () => {
    const c = new FakeClient();
    const { link, speaker } = rig({ clients: [c] });
    await link.start();
    expect(c.subscribed).toBe(1);
    expect(c.setCalls).toEqual([SESSIONS.map((s) => s.spec)]);
    expect(link.problem()).toBeNull();

    c.event({ from: 'down', to: 'init' });
    c.event({ from: 'init', to: 'up' });
    expect(speaker.calls).toEqual([]);
    c.event({
      from: 'up',
      to: 'down',
      diag: 'control-detection-time-expired',
      remoteState: 'up',
      lostSinceUp: true,
    });
    expect(speaker.calls).toEqual([
      'hold 10.66.0.2: BFD session single-hop * -> 10.66.0.2 went up -> down (control-detection-time-expired)',
    ]);
    expect(link.status().sessions[0]).toMatchObject({ state: 'down', bgpHeld: true });
    c.event({ from: 'down', to: 'init', lostSinceUp: true });
    expect(speaker.calls).toHaveLength(1);
    c.event({ from: 'init', to: 'up' });
    expect(speaker.calls[1]).toBe('release 10.66.0.2');
    expect(link.status().sessions[0]).toMatchObject({ state: 'up', bgpHeld: false });
    link.stop();
    expect(c.closed).toBe(true);
  });

  it("the peer's AdminDown does not tear BGP down", async () => {
    const c = new FakeClient();
    const { link, speaker } = rig({ clients: [c] });
    await link.start();
    c.event({ from: 'init', to: 'up' });
    c.event({ from: 'up', to: 'down', diag: 'neighbor-signaled-down', remoteState: 'admin-down' });
    expect(speaker.calls).toEqual([]);
    // The same diag from a peer that is Down (it detected a failure) does.
    c.event({ from: 'init', to: 'up' });
    c.event({
      from: 'up',
      to: 'down',
      diag: 'neighbor-signaled-down',
      remoteState: 'down',
      lostSinceUp: true,
    });
    expect(speaker.calls).toHaveLength(1);
    expect(speaker.calls[0]).toMatch(/^hold 10\.66\.0\.2/);
    link.stop();
  });

  it('BFD process absent at start: start resolves, the problem is reported, and it connects later', async () => {
    const c = new FakeClient();
    const absent = new Error('cannot reach the BFD process at /run/test/bfd.sock: connect ENOENT');
    const { link, connects } = rig({ clients: [absent, absent, c] });
    await link.start();
    expect(link.problem()).toMatch(
      /BFD process not reachable at \/run\/test\/bfd\.sock \(.*ENOENT\); BGP runs without BFD/,
    );
    expect(link.status()).toMatchObject({ connected: false, connects: 0 });
    await until(() => link.status().connected, 'reconnected');
    expect(connects()).toBe(3);
    expect(link.problem()).toBeNull();
    expect(c.setCalls).toHaveLength(1);
    link.stop();
  });

  it('a reconnect sends the sessions again and restores holds from the status; a lost process releases them', async () => {
    const first = new FakeClient();
    const second = new FakeClient();
    second.statusSessions = [
      {
        key: KEY,
        state: 'down',
        remoteState: 'down',
        diag: 'control-detection-time-expired',
        lostSinceUp: true,
        lastChangeAt: 5,
      },
      { key: SESSIONS[1]!.key, state: 'up', remoteState: 'up', diag: 'none', lastChangeAt: 6 },
    ];
    const { link, speaker } = rig({ clients: [first, second] });
    await link.start();
    first.event({ from: 'init', to: 'up' });
    first.event({ from: 'up', to: 'down', diag: 'control-detection-time-expired', lostSinceUp: true });
    expect(speaker.calls).toHaveLength(1);
    first.die();
    // No BFD process, no BFD opinion: BGP runs on its own meanwhile.
    expect(speaker.calls[1]).toBe('release 10.66.0.2');
    expect(link.problem()).toMatch(/closed the control connection/);
    await until(() => link.status().connected, 'reconnected');
    expect(second.setCalls).toEqual([SESSIONS.map((s) => s.spec)]);
    expect(second.subscribed).toBe(1);
    expect(speaker.calls.slice(2)).toEqual([
      'hold 10.66.0.2: BFD session single-hop * -> 10.66.0.2 is down (control-detection-time-expired)',
    ]);
    expect(link.status().sessions.map((s) => s.state)).toEqual(['down', 'up', null]);
    link.stop();
  });

  it('a Down that is not a loss since Up holds nothing after a reconnect (never Up; the peer AdminDown, then silence)', async () => {
    const c = new FakeClient();
    c.statusSessions = [
      // Created while the balancer was detached, released since; the router runs no BFD: never Up.
      { key: KEY, state: 'down', remoteState: 'down', diag: 'forwarding-plane-reset', lostSinceUp: false },
      // The peer said AdminDown and then fell silent (the remote state is forgotten on expiry).
      {
        key: SESSIONS[1]!.key,
        state: 'down',
        remoteState: 'down',
        diag: 'neighbor-signaled-down',
        lostSinceUp: false,
      },
      // A real loss since Up.
      {
        key: SESSIONS[2]!.key,
        state: 'down',
        remoteState: 'down',
        diag: 'control-detection-time-expired',
        lostSinceUp: true,
      },
    ];
    const { link, speaker } = rig({ clients: [c] });
    await link.start();
    expect(speaker.calls).toEqual([
      'hold 198.51.100.7: BFD session multihop * -> 198.51.100.7 is down (control-detection-time-expired)',
    ]);
    link.stop();
  });

  it('every connect lifts a command hold on our sessions (a holdDown left by --detach-on-exit ends)', async () => {
    const first = new FakeClient();
    const second = new FakeClient();
    const { link } = rig({ clients: [first, second] });
    await link.start();
    const keys = SESSIONS.map((s) => s.key);
    expect(first.ups).toEqual([{ sessions: keys }]);
    first.die();
    await until(() => link.status().connected, 'reconnected');
    expect(second.ups).toEqual([{ sessions: keys }]);
    link.stop();
  });

  it('per-session errors from setSessions do not fail the connection', async () => {
    const c = new FakeClient();
    c.setErrors = { [KEY]: 'bind EADDRNOTAVAIL 10.66.0.1' };
    const { link, connects } = rig({ clients: [c] });
    await link.start();
    expect(link.status().connected).toBe(true);
    expect(connects()).toBe(1);
    link.stop();
  });

  it('stop() during a connect: no status polling starts afterwards', async () => {
    const c = new FakeClient();
    let open!: () => void;
    c.gate = new Promise((r) => (open = r));
    const speaker = new FakeSpeaker();
    const link = new BfdLink({
      path: '/run/test/bfd.sock',
      sessions: SESSIONS,
      connect: async () => c,
      speaker,
      log: silent,
      backoff: { initialMs: 5, maxMs: 20 },
      statusEveryMs: 5,
    });
    const started = link.start();
    await until(() => c.setCalls.length === 1, 'setSessions sent');
    link.stop();
    open();
    await started;
    const calls = c.statusCalls;
    await new Promise((r) => setTimeout(r, 60));
    console.log(`status calls after stop: ${c.statusCalls - calls} (at ${calls})`);
    expect(c.statusCalls).toBe(calls);
    expect(link.status().connected).toBe(false);
  });

  it('holdDownForGood asks the BFD process to hold exactly our sessions Down', async () => {
    const c = new FakeClient();
    const { link } = rig({ clients: [c] });
    await link.start();
    expect(await link.holdDownForGood()).toBe(true);
    expect(c.holdDowns).toEqual([{ sessions: SESSIONS.map((s) => s.key), diag: 'administratively-down' }]);
    link.stop();
    expect(await link.holdDownForGood()).toBe(false);
  });

  it('exports session_up, held BGP sessions, state changes and packet totals under the BFD process names', async () => {
    const c = new FakeClient();
    const registry = new Registry();
    const { link } = rig({ clients: [c], registry });
    await link.start();
    c.event({ from: 'init', to: 'up' });
    c.event({ from: 'up', to: 'down', lostSinceUp: true });
    const text = await registry.metrics();
    expect(text).toContain('peak_xdp_bfd_session_up{peer="10.66.0.2",session="single-hop * -> 10.66.0.2"} 0');
    expect(text).toContain('peak_xdp_bfd_bgp_session_held{peer="10.66.0.2"} 1');
    expect(text).toContain('peak_xdp_bfd_state_changes_total{peer="10.66.0.2",to="up"} 1');
    expect(text).toContain('peak_xdp_bfd_state_changes_total{peer="10.66.0.2",to="down"} 1');
    expect(text).toContain('peak_xdp_bfd_control_packets_total{direction="in"} 40');
    expect(text).toContain('peak_xdp_bfd_control_packets_total{direction="out"} 42');
    link.stop();
  });
});

describe('bgp.peers[].bfd and bgp.bfd in the model', () => {
  const base = { asn: 65001, routerId: '192.0.2.1' };
  it('defaults: 300 ms x 3 single-hop, control socket /run/peak-xdp/bfd.sock', () => {
    const c = parseBgpConfig({ ...base, peers: [{ address: '10.0.0.1', asn: 65000, bfd: {} }] });
    expect(c.peers[0]!.bfd).toEqual({ minRx: 300, minTx: 300, multiplier: 3, multihop: false });
    expect(c.bfd).toEqual({ controlSocket: '/run/peak-xdp/bfd.sock' });
  });
  it.each([
    [{ minRx: 0 }, /bgp\.peers\.0\.bfd\.minRx: must be a number of ms in 1\.\.60000 .*got 0/],
    [{ minTx: 0.0005 }, /bgp\.peers\.0\.bfd\.minTx: .*got 0\.0005/],
    [{ multiplier: 0 }, /bgp\.peers\.0\.bfd\.multiplier: .*\(got 0\)/],
    [{ multiplier: 256 }, /bgp\.peers\.0\.bfd\.multiplier: .*\(got 256\)/],
    [{ multihop: 'yes' }, /bgp\.peers\.0\.bfd\.multihop: .*\(got "yes"\)/],
    [{ minRxMs: 300 }, /bgp\.peers\.0\.bfd: .*minRxMs/],
  ])('rejects %j naming field and value', (bfd, msg) => {
    expect(() => parseBgpConfig({ ...base, peers: [{ address: '10.0.0.1', asn: 65000, bfd }] })).toThrow(msg);
  });
  it('rejects a relative control socket naming it', () => {
    expect(() =>
      parseBgpConfig({
        ...base,
        bfd: { controlSocket: 'bfd.sock' },
        peers: [{ address: '10.0.0.1', asn: 65000 }],
      }),
    ).toThrow(/bgp\.bfd\.controlSocket: "bfd\.sock" is not an absolute path/);
  });
});
