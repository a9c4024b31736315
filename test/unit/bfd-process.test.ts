// The BFD process shell without sockets: two BfdProcess instances joined by an in-memory Transport, driven
// through the control socket (ControlServer + BfdClient on a temporary Unix socket).
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BfdClient } from '../../src/bfd/client';
import { encodeControl, State } from '../../src/bfd/codec';
import { parseProcessConfig, parseSessionSpec, parseSessionSpecs, SessionConfig } from '../../src/bfd/config';
import { ControlServer } from '../../src/bfd/control';
import type { ForwardingCheck, ForwardingVerdict } from '../../src/bfd/forwarding';
import { BfdProcess } from '../../src/bfd/process';
import type { BfdStatus, StateChangeEvent } from '../../src/bfd/protocol';
import type { Datagram, Sender, Transport } from '../../src/bfd/socket';
import { formatBfdStatus } from '../../src/cli/commands/bfd';

/** Delivers each side's packets to the other with TTL 255, from the sender's address. */
class MemoryNet {
  readonly sides = new Map<string, (d: Datagram) => void>();
  /** When set, packets are lost (a silent failure). */
  cut = false;
  transport(address: string): Transport {
    return {
      start: async (on) => {
        this.sides.set(address, on);
      },
      openSender: async (o): Promise<Sender> => ({
        localPort: 49152,
        send: (data) => {
          const to = this.sides.get(o.peer);
          if (to && !this.cut)
            setImmediate(() =>
              to({
                data,
                src: address,
                srcPort: 49152,
                dst: o.peer,
                ifindex: 1,
                ttl: 255,
                multihop: o.multihop,
              }),
            );
        },
        close: () => undefined,
      }),
      stop: () => {
        this.sides.delete(address);
      },
    };
  }
}

const FAST = { minTx: 20, minRx: 20, multiplier: 3 };

async function waitUntil<T>(
  what: string,
  f: () => T | null | false | Promise<T | null | false>,
  ms = 8000,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('BfdProcess through the control socket', () => {
  let dir = '';
  let net: MemoryNet;
  let a: BfdProcess;
  let b: BfdProcess;
  let ctl: ControlServer;
  let client: BfdClient;
  let fpVerdict: ForwardingVerdict;
  const fp: ForwardingCheck = { interface: 'eth0', pin: null, check: () => fpVerdict };
  const up = (st: BfdStatus) => st.sessions.length > 0 && st.sessions.every((s) => s.state === 'up');

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'h6bfd-unit-'));
    net = new MemoryNet();
    fpVerdict = { ok: true, reason: null };
    a = new BfdProcess({ transport: net.transport('10.0.0.1') });
    b = new BfdProcess({ transport: net.transport('10.0.0.2'), forwarding: fp });
    await a.start();
    await b.start();
    ctl = new ControlServer({ path: join(dir, 'ctl', 'bfd.sock'), process: a });
    await ctl.start();
    client = await BfdClient.connect({ path: join(dir, 'ctl', 'bfd.sock') });
    await b.setSessions(parseSessionSpecs([{ peer: '10.0.0.1', ...FAST }]));
  });

  afterEach(async () => {
    client.close();
    await ctl.stop();
    a.stop();
    b.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('setSessions over the socket brings a session Up; get shows it; the socket is 0600', async () => {
    expect(statSync(join(dir, 'ctl', 'bfd.sock')).mode & 0o777).toBe(0o600);
    expect(await client.hello()).toMatchObject({ version: 1, pid: process.pid });
    const r = await client.setSessions([{ peer: '10.0.0.2', ...FAST }]);
    expect(r).toEqual({ added: ['single-hop * -> 10.0.0.2'], removed: [], changed: [], errors: {} });
    const st = await waitUntil('A up', async () => {
      const s = await client.status();
      return up(s) && !s.sessions[0]!.pollActive && s;
    });
    const s = st.sessions[0]!;
    expect(s).toMatchObject({
      peer: '10.0.0.2',
      state: 'up',
      remoteState: 'up',
      txIntervalMs: 20,
      detectionTimeMs: 60,
      configured: { minTx: 20, minRx: 20, multiplier: 3 },
      heldBy: null,
    });
    expect(s.localDiscr).toBeGreaterThan(0);
    expect(s.remoteDiscr).toBe(b.status().sessions[0]!.localDiscr);
    expect(s.packetsIn).toBeGreaterThan(0);
    expect(st.timerLateness.count).toBeGreaterThan(0);
    // Same set again: nothing changes; a new interval: changed (a poll sequence), still Up afterwards.
    expect(await client.setSessions([{ peer: '10.0.0.2', ...FAST }])).toEqual({
      added: [],
      removed: [],
      changed: [],
      errors: {},
    });
    expect((await client.setSessions([{ peer: '10.0.0.2', ...FAST, minTx: 30 }])).changed).toHaveLength(1);
    await waitUntil('new interval', async () => (await client.status()).sessions[0]!.txIntervalMs === 30);
    expect((await client.status()).sessions[0]!.state).toBe('up');
    // And removed.
    expect(await client.setSessions([])).toEqual({
      added: [],
      removed: ['single-hop * -> 10.0.0.2'],
      changed: [],
      errors: {},
    });
    expect((await client.status()).sessions).toEqual([]);
  });

  test('subscribe gets state changes; adminDown / holdDown / up move the peer as the RFC says', async () => {
    const events: StateChangeEvent[] = [];
    await client.subscribe((e) => events.push(e));
    await client.setSessions([{ peer: '10.0.0.2', ...FAST }]);
    await waitUntil('up event', () => events.some((e) => e.to === 'up'));
    const peerB = () => b.status().sessions[0]!;

    expect(await client.adminDown({ sessions: ['10.0.0.2'] })).toEqual(['single-hop * -> 10.0.0.2']);
    await waitUntil('B down', () => peerB().state === 'down');
    expect(peerB()).toMatchObject({ diag: 'neighbor-signaled-down', remoteState: 'admin-down' });
    expect(events.at(-1)).toMatchObject({ from: 'up', to: 'admin-down', diag: 'administratively-down' });
    await client.up();
    await waitUntil('up again', () => peerB().state === 'up');

    await client.holdDown({ diag: 'path-down' });
    // B goes Down on our first Down packet, then to Init on the next (RFC 5880 6.8.6) and stays there while we
    // are held: Down is a window of one of our (slow, >= 1 s) Down-state packets, which a loaded poll can miss.
    await waitUntil('B left Up (hold)', () => peerB().state !== 'up' && peerB().remoteState === 'down');
    expect(['down', 'init']).toContain(peerB().state);
    expect(peerB()).toMatchObject({ remoteState: 'down', remoteDiag: 'path-down' });
    expect((await client.status()).sessions[0]).toMatchObject({
      state: 'down',
      heldBy: 'command',
      diag: 'path-down',
    });
    await sleep(200);
    expect((await client.status()).sessions[0]!.state).toBe('down');
    await client.up({ sessions: ['single-hop * -> 10.0.0.2'] });
    await waitUntil('up after hold', () => peerB().state === 'up');
  });

  test('errors name what was wrong; the connection stays usable', async () => {
    await expect(client.setSessions([{ peer: 'nope' }])).rejects.toThrow(
      'sessions[0].peer must be an IP address, got "nope"',
    );
    await expect(client.adminDown({ sessions: ['10.9.9.9'] })).rejects.toThrow('no session "10.9.9.9"');
    await expect(client.adminDown({ diag: 'bogus' })).rejects.toThrow('diag: unknown diagnostic "bogus"');
    await expect(client.request({ cmd: 'nope' } as never)).rejects.toThrow('cmd: unknown "nope"');
    expect((await client.status()).sessions).toEqual([]);
  });

  test('a second process on the same socket path is refused; a stale file is replaced', async () => {
    const other = new ControlServer({ path: join(dir, 'ctl', 'bfd.sock'), process: a });
    await expect(other.start()).rejects.toThrow('another BFD process answers on');
    const stale = join(dir, 'stale.sock');
    writeFileSync(stale, '');
    const s2 = new ControlServer({ path: stale, process: a });
    await s2.start();
    const c2 = await BfdClient.connect({ path: stale });
    expect((await c2.hello()).version).toBe(1);
    c2.close();
    await s2.stop();
  });

  test('clients come and go, sessions stay', async () => {
    // Detection 1.5 s, not FAST's 60 ms: this test counts state changes, and a loaded machine stalls this
    // process's timers past 60 ms (seen: 3 extra flaps at load 20), which is not what it is about.
    await client.setSessions([{ peer: '10.0.0.2', minTx: 300, minRx: 300, multiplier: 5 }]);
    await waitUntil('up', async () => up(await client.status()));
    const changes = (await client.status()).sessions[0]!.stateChanges;
    client.close();
    await sleep(200);
    client = await BfdClient.connect({ path: join(dir, 'ctl', 'bfd.sock') });
    const st = await client.status();
    expect(st.sessions[0]).toMatchObject({ state: 'up', stateChanges: changes });
  });

  test('forwarding plane gone: Down with forwarding-plane-reset until it is back (checks every 250 ms)', async () => {
    await client.setSessions([{ peer: '10.0.0.2', ...FAST }]);
    await waitUntil('up', async () => up(await client.status()));
    fpVerdict = { ok: false, reason: 'no XDP program attached to eth0' };
    // Held by the forwarding plane (its check runs every 250 ms), not merely down: with FAST's 60 ms detection a
    // loaded machine can stall this process's timers long enough for B to go down on silence first (seen once).
    await waitUntil('B held down', () => {
      const s = b.status().sessions[0]!;
      return s.state === 'down' && s.heldBy === 'forwarding-plane';
    });
    expect(b.status()).toMatchObject({
      forwarding: { ok: false, reason: 'no XDP program attached to eth0' },
    });
    expect(b.status().sessions[0]).toMatchObject({
      diag: 'forwarding-plane-reset',
      heldBy: 'forwarding-plane',
    });
    await waitUntil(
      'A sees it',
      async () => (await client.status()).sessions[0]!.remoteDiag === 'forwarding-plane-reset',
    );
    // A command "up" does not override the forwarding plane.
    b.up(undefined);
    await sleep(300);
    expect(b.status().sessions[0]!.state).toBe('down');
    fpVerdict = { ok: true, reason: null };
    await waitUntil('B up again', () => b.status().sessions[0]!.state === 'up');
  });

  test('silence: Down with control-detection-time-expired; GTSM drops TTL < 255 on single-hop only', async () => {
    await client.setSessions([{ peer: '10.0.0.2', ...FAST }]);
    await waitUntil('up', async () => up(await client.status()));
    const aSide = net.sides.get('10.0.0.1')!;
    const s = (await client.status()).sessions[0]!;
    const pkt = encodeControl({
      version: 1,
      diag: 0,
      state: State.Down,
      poll: false,
      final: false,
      controlPlaneIndependent: false,
      demand: false,
      multipoint: false,
      detectMult: 3,
      myDiscr: s.remoteDiscr,
      yourDiscr: s.localDiscr,
      desiredMinTxUs: 20_000,
      requiredMinRxUs: 20_000,
      requiredMinEchoRxUs: 0,
    });
    const base = { data: pkt, src: '10.0.0.2', srcPort: 50000, dst: '10.0.0.1', ifindex: 1 };
    // A Down from the peer with TTL 254 would take the session down if it were accepted.
    aSide({ ...base, ttl: 254, multihop: false });
    aSide({ ...base, ttl: -1, multihop: false });
    const st = await client.status();
    expect(st.sessions[0]).toMatchObject({ state: 'up', drops: { 'ttl-below-255': 2 } });
    // The same datagram on the multihop port matches no session (this one is single-hop): counted, not TTL.
    aSide({ ...base, ttl: 3, multihop: true });
    expect((await client.status()).drops['no-session']).toBe(1);

    const events: StateChangeEvent[] = [];
    await client.subscribe((e) => events.push(e));
    net.cut = true;
    await waitUntil('down', () => events.some((e) => e.to === 'down'));
    expect(events.find((e) => e.to === 'down')).toMatchObject({
      from: 'up',
      diag: 'control-detection-time-expired',
    });
  });

  test('the CLI text view names state, intervals and diag', async () => {
    await client.setSessions([{ peer: '10.0.0.2', ...FAST }]);
    await waitUntil('up', async () => up(await client.status()));
    const text = formatBfdStatus(await client.status());
    expect(text).toMatch(/^PEER\s+HOP\s+STATE\s+REMOTE\s+SINCE\s+TX ms\s+DETECT ms/);
    expect(text).toMatch(/10\.0\.0\.2\s+single\s+up\s+up\s/);
    expect(formatBfdStatus(b.status())).toContain('forwarding plane (eth0): ok');
  });
});

describe('config', () => {
  test('defaults 300 ms × 3, keys, canonical addresses', () => {
    const c: SessionConfig = parseSessionSpec({ peer: '2001:DB8::0:1' });
    expect(c).toMatchObject({
      key: 'single-hop * -> 2001:db8::1',
      peer: '2001:db8::1',
      family: 6,
      multihop: false,
      params: { desiredMinTxUs: 300_000, requiredMinRxUs: 300_000, detectMult: 3 },
      auth: null,
    });
    expect(parseSessionSpec({ peer: '10.0.0.1', local: '10.0.0.2', multihop: true }).key).toBe(
      'multihop 10.0.0.2 -> 10.0.0.1',
    );
  });

  test('bad values name the field and value', () => {
    const bad: [unknown, string][] = [
      [{ peer: '10.0.0.1', local: 'fd00::1' }, 's.local must be an IPv4 address like peer, got "fd00::1"'],
      [{ peer: '10.0.0.1', minRx: 0 }, 's.minRx must be a number of ms in 1..60000'],
      [{ peer: '10.0.0.1', multiplier: 256 }, 's.multiplier must be an integer 1..255, got 256'],
      [{ peer: '10.0.0.1', multihop: true, interface: 'eth0' }, 's.interface: only single-hop sessions'],
      [{ peer: 'fe80::1' }, 's.interface is required for the link-local peer fe80::1'],
      [{ peer: 'fe90::1' }, 's.interface is required for the link-local peer fe90::1'],
      [
        { peer: '10.0.0.1', auth: { type: 'keyed-sha1', keyId: 1 } },
        's.auth: give exactly one of secret, secretHex',
      ],
      [{ peer: '10.0.0.1', auth: { type: 'md4', keyId: 1, secret: 'x' } }, 's.auth.type must be one of'],
      [{ peer: '10.0.0.1', extra: 1 }, 's.extra: unknown field'],
    ];
    for (const [raw, msg] of bad) expect(() => parseSessionSpec(raw, 's')).toThrow(msg);
    expect(() => parseSessionSpecs([{ peer: '10.0.0.1' }, { peer: '10.0.0.1' }])).toThrow(
      'sessions[1]: same session as sessions[0]',
    );
    expect(() => parseProcessConfig({ control: 'rel/path' })).toThrow(
      'config.control must be an absolute path',
    );
    expect(parseProcessConfig({}).control).toBe('/run/peak-xdp/bfd.sock');
  });
});

describe('BfdProcess sessions one by one', () => {
  let net: MemoryNet;
  let a: BfdProcess;
  let b: BfdProcess;
  /** Peers whose send socket fails to open (as bind() does while `local` is not configured yet). */
  const failing = new Set<string>();
  let opens = 0;
  let gate: Promise<void> | null = null;
  const closed: string[] = [];

  /** MemoryNet's transport with openSender failures, a gate on openSender, and closes recorded. */
  function flaky(address: string): Transport {
    const t = net.transport(address);
    return {
      ...t,
      openSender: async (o) => {
        opens++;
        if (gate) await gate;
        if (failing.has(o.peer)) throw new Error(`bind EADDRNOTAVAIL ${o.local}`);
        const s = await t.openSender(o);
        return { ...s, close: () => closed.push(o.peer) };
      },
    };
  }

  beforeEach(async () => {
    net = new MemoryNet();
    failing.clear();
    closed.length = 0;
    opens = 0;
    gate = null;
    a = new BfdProcess({ transport: flaky('10.0.0.1'), openRetry: { initialMs: 10, maxMs: 40 } });
    b = new BfdProcess({ transport: net.transport('10.0.0.2') });
    await a.start();
    await b.start();
    await b.setSessions(parseSessionSpecs([{ peer: '10.0.0.1', ...FAST }]));
  });

  afterEach(() => {
    a.stop();
    b.stop();
  });

  test('a session whose socket cannot open is kept with its error and retried; the others proceed', async () => {
    failing.add('10.0.0.3');
    const r = await a.setSessions(
      parseSessionSpecs([
        { peer: '10.0.0.3', local: '10.0.0.9', ...FAST },
        { peer: '10.0.0.2', ...FAST },
      ]),
    );
    expect(r.added).toHaveLength(2);
    expect(r.errors).toEqual({ 'single-hop 10.0.0.9 -> 10.0.0.3': 'bind EADDRNOTAVAIL 10.0.0.9' });
    await waitUntil(
      'the good one Up',
      () => a.status().sessions.find((s) => s.peer === '10.0.0.2')?.state === 'up',
    );
    const bad = () => a.status().sessions.find((s) => s.peer === '10.0.0.3')!;
    expect(bad()).toMatchObject({ state: 'down', error: 'bind EADDRNOTAVAIL 10.0.0.9', packetsOut: 0 });
    const before = opens;
    await waitUntil('retried', () => opens >= before + 2);
    failing.delete('10.0.0.3');
    await waitUntil('the bad one can send', () => bad().error === null && bad().packetsOut > 0);
    console.log(`openSender calls: ${opens}`);
  });

  test('a removed session says AdminDown before it closes: the peer sees no failure (RFC 5882 §3.2)', async () => {
    const events: StateChangeEvent[] = [];
    b.on('stateChange', (e: StateChangeEvent) => events.push(e));
    await a.setSessions(parseSessionSpecs([{ peer: '10.0.0.2', ...FAST }]));
    await waitUntil('up', () => b.status().sessions[0]!.state === 'up');
    const out0 = a.status().packetsOut;
    await a.setSessions([]);
    await waitUntil('B down', () => b.status().sessions[0]!.state === 'down');
    expect(events.at(-1)).toMatchObject({
      from: 'up',
      to: 'down',
      diag: 'neighbor-signaled-down',
      remoteState: 'admin-down',
      lostSinceUp: false,
    });
    await waitUntil('closed', () => closed.includes('10.0.0.2'));
    console.log(`packets after removal: ${a.status().packetsOut - out0}`);
    expect(a.status().packetsOut - out0).toBe(3);
    // Silence after that: B's verdict stays "not lost" (the old rule held here after the expiry).
    await sleep(150);
    expect(b.status().sessions[0]).toMatchObject({ state: 'down', lostSinceUp: false });
  });

  test('stop() while a socket is opening: the late socket is closed, nothing is sent', async () => {
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    const pending = a.setSessions(parseSessionSpecs([{ peer: '10.0.0.2', ...FAST }]));
    await waitUntil('opening', () => opens === 1);
    a.stop();
    open();
    await pending;
    expect(closed).toEqual(['10.0.0.2']);
    await sleep(100);
    expect(a.status()).toMatchObject({ sessions: [], packetsOut: 0 });
  });
});

describe('ControlServer', () => {
  test('a subscriber that stops reading is dropped once its unread output passes the cap', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'h6bfd-cap-'));
    const p = new BfdProcess({ transport: new MemoryNet().transport('10.0.0.1') });
    await p.start();
    const ctl = new ControlServer({ path: join(dir, 'bfd.sock'), process: p, maxBufferedOut: 64 << 10 });
    await ctl.start();
    const sock = createConnection(join(dir, 'bfd.sock'));
    let sent = 0;
    let closedAt = -1;
    sock.on('close', () => (closedAt = sent));
    sock.on('error', () => undefined);
    try {
      await new Promise((r) => sock.once('connect', r));
      sock.write('{"cmd":"subscribe","id":1}\n');
      await waitUntil('subscribed', () => p.listenerCount('stateChange') === 1);
      sock.pause();
      const big = { event: 'stateChange', key: 'x'.repeat(1000), peer: '10.0.0.2' };
      // Bounded: 20 000 events of ~1 kB (20 MB) at most; the kernel's socket buffer takes a few hundred kB.
      for (; sent < 20_000 && closedAt < 0 && p.listenerCount('stateChange') > 0; sent++) {
        p.emit('stateChange', big);
        if (sent % 100 === 0) await sleep(1);
      }
      await waitUntil(
        'dropped',
        () => closedAt >= 0 || sock.destroyed || p.listenerCount('stateChange') === 0,
      );
      console.log(`subscriber dropped after ${sent} events of ~1 kB`);
      expect(p.listenerCount('stateChange')).toBe(0);
      expect(sent).toBeLessThan(20_000);
    } finally {
      sock.destroy();
      await ctl.stop();
      p.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
