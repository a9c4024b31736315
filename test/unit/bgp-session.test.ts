// Session FSM against a scripted fake peer on loopback: negotiation, NOTIFICATIONs for errors, hold
// timer, reset and reconnect with backoff.
import fc from 'fast-check';
import { AddressInfo, createServer, Server, Socket } from 'node:net';
import {
  decodeMessage,
  encodeKeepalive,
  encodeOpen,
  encodeUpdate,
  MsgType,
  NotificationMessage,
  OpenMessage,
  splitFrames,
  BgpMessage,
} from '../../src/bgp/codec';
import { BgpSession, SessionState } from '../../src/bgp/session';

/** A scripted peer: records what it receives, lets the test write raw bytes. */
class FakePeer {
  readonly server: Server;
  readonly conns: Socket[] = [];
  readonly received: BgpMessage[][] = [];
  onConn: (s: Socket, i: number) => void = () => {};

  constructor() {
    this.server = createServer((s) => {
      const i = this.conns.length;
      this.conns.push(s);
      this.received.push([]);
      let rx = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        rx = Buffer.concat([rx, d]);
        const r = splitFrames(rx);
        rx = Buffer.from(r.rest);
        for (const f of r.frames) {
          const m = decodeMessage(f, { fourOctetAs: true });
          if (m.ok) this.received[i]!.push(m.msg);
        }
      });
      s.on('error', () => {});
      this.onConn(s, i);
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  notifications(i: number): NotificationMessage[] {
    return (this.received[i] ?? []).filter((m): m is NotificationMessage => m.type === MsgType.NOTIFICATION);
  }
}

const peerOpen = (o: { asn?: number; hold?: number } = {}): Buffer =>
  encodeOpen({
    asn: o.asn ?? 65000,
    holdTime: o.hold ?? 3,
    routerId: '10.9.9.9',
    families: [{ afi: 1, safi: 1 }],
  });

function waitFor(pred: () => boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (pred()) return resolve(Date.now() - t0);
      if (Date.now() - t0 > ms) return reject(new Error(`condition not met within ${ms} ms`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

describe('BgpSession FSM', () => {
  let peer: FakePeer;
  let port: number;
  let session: BgpSession | null = null;

  beforeEach(async () => {
    peer = new FakePeer();
    port = await peer.listen();
  });

  afterEach(async () => {
    await session?.stop();
    session = null;
    await peer.close();
  });

  const mk = (o: Partial<ConstructorParameters<typeof BgpSession>[0]> = {}): BgpSession => {
    session = new BgpSession({
      localAsn: 65001,
      routerId: '10.0.0.2',
      peerAddress: '127.0.0.1',
      peerAsn: 65000,
      port,
      holdTime: 3,
      passive: false,
      families: [
        { afi: 1, safi: 1 },
        { afi: 2, safi: 1 },
      ],
      backoffMinMs: 100,
      backoffMaxMs: 400,
      ...o,
    });
    return session;
  };

  it('sends OPEN, negotiates hold min(ours, theirs) and families, reaches Established', async () => {
    peer.onConn = (s) => s.write(Buffer.concat([peerOpen({ hold: 5 }), encodeKeepalive()]));
    const s = mk({ holdTime: 9 });
    const states: string[] = [];
    s.on('state', (st: string) => states.push(st));
    s.start();
    await waitFor(() => s.state === SessionState.Established, 3000);
    expect(states).toEqual(['Connect', 'OpenSent', 'OpenConfirm', 'Established']);
    const st = s.status();
    expect(st.negotiatedHoldTime).toBe(5);
    expect(st.families).toEqual([{ afi: 1, safi: 1 }]);
    const open = peer.received[0]![0] as OpenMessage;
    expect(open.type).toBe(MsgType.OPEN);
    expect(open.holdTime).toBe(9);
    expect(open.caps.fourOctetAs).toBe(65001);
    expect(st.messagesOut.open).toBe(1);
    expect(st.messagesIn.keepalive).toBe(1);
  });

  it.each([
    ['bad peer AS', 2, 2, () => peerOpen({ asn: 65099 })],
    ['KEEPALIVE before OPEN (FSM error in OpenSent)', 5, 1, () => encodeKeepalive()],
    [
      'OPEN with hold time 1',
      2,
      6,
      () => {
        const b = peerOpen();
        b.writeUInt16BE(1, 22);
        return b;
      },
    ],
    [
      'unknown message type',
      1,
      3,
      () => {
        const b = encodeKeepalive();
        b[18] = 9;
        return b;
      },
    ],
  ])('%s -> NOTIFICATION %i/%i, reset, reconnect with backoff', async (_n, code, subcode, bytes) => {
    peer.onConn = (s, i) => {
      if (i === 0) s.write(bytes());
    };
    const s = mk();
    s.start();
    await waitFor(() => peer.notifications(0).length === 1, 3000);
    expect(peer.notifications(0)[0]).toMatchObject({ code, subcode });
    // The session resets and comes back on its own after the backoff.
    await waitFor(() => peer.conns.length === 2, 3000);
    expect(s.status().lastError).toMatch(new RegExp(`NOTIFICATION ${code}/${subcode}`));
    expect(s.status().transitions).toBeGreaterThan(3);
  });

  it('a malformed UPDATE in Established resets with 3/x; treat-as-withdraw keeps the session', async () => {
    peer.onConn = (s, i) => {
      s.write(Buffer.concat([peerOpen(), encodeKeepalive()]));
      if (i > 0) return;
      setTimeout(() => {
        // COMMUNITIES of length 3: treat-as-withdraw, the session stays up.
        const bad = encodeUpdate(
          {
            nlri: ['10.0.0.0/8'],
            attrs: { origin: 0, asPath: [], nextHop: '10.0.0.9', communities: ['1:1'] },
          },
          { fourOctetAs: true },
        );
        const at = bad.indexOf(Buffer.from([0xc0, 8, 4]));
        bad[at + 2] = 3;
        s.write(bad);
      }, 100);
      setTimeout(() => {
        // NLRI prefix length 40: session reset with 3/10.
        const bad = encodeUpdate(
          { nlri: ['10.0.0.0/8'], attrs: { origin: 0, asPath: [], nextHop: '10.0.0.9' } },
          { fourOctetAs: true },
        );
        bad[bad.length - 2] = 40;
        s.write(bad);
      }, 300);
    };
    const s = mk();
    const updates: unknown[] = [];
    s.on('update', (m: unknown) => updates.push(m));
    s.start();
    await waitFor(() => updates.length === 1, 3000);
    expect(updates[0]).toMatchObject({ treatAsWithdraw: true, nlri: ['10.0.0.0/8'] });
    expect(s.state).toBe(SessionState.Established);
    await waitFor(() => peer.notifications(0).length === 1, 3000);
    expect(peer.notifications(0)[0]).toMatchObject({ code: 3, subcode: 10 });
    await waitFor(() => s.state === SessionState.Established && peer.conns.length === 2, 3000);
    expect(s.status().establishedCount).toBe(2);
  });

  it('hold timer expiry sends 4/0 when the peer goes silent', async () => {
    peer.onConn = (s, i) => {
      if (i === 0) s.write(Buffer.concat([peerOpen(), encodeKeepalive()]));
    };
    const s = mk();
    s.start();
    await waitFor(() => s.state === SessionState.Established, 3000);
    const ms = await waitFor(() => peer.notifications(0).length === 1, 5000);
    expect(peer.notifications(0)[0]).toMatchObject({ code: 4, subcode: 0 });
    // Our keepalives went out every hold/3 = 1 s meanwhile.
    expect(s.status().messagesOut.keepalive).toBeGreaterThanOrEqual(3);
    console.log(`[session] hold timer fired ${ms} ms after Established (hold 3 s)`);
  }, 10000);

  it('connection refused: backoff doubles up to the cap', async () => {
    await peer.close();
    const s = mk({ backoffMinMs: 100, backoffMaxMs: 400 });
    const delays: number[] = [];
    s.on('state', (st: string) => {
      if (st === SessionState.Active) delays.push(s.status().nextRetryMs ?? -1);
    });
    s.start();
    await waitFor(() => delays.length >= 5, 5000);
    // Jittered in [d/2, d] with d = 100, 200, 400, 400, ...
    const caps = [100, 200, 400, 400, 400];
    delays.slice(0, 5).forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(caps[i]! / 2 - 5);
      expect(d).toBeLessThanOrEqual(caps[i]!);
    });
    expect(s.status().lastError).toMatch(/ECONNREFUSED/);
    // Reopen so afterEach can close it.
    peer = new FakePeer();
    port = await peer.listen();
  });

  it('random garbage after Established: every connection ends in a valid NOTIFICATION and the session recovers', async () => {
    // 15 random streams (seeded): valid header prefix with a random body, or raw noise.
    const garbage = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
        fc.tuple(fc.integer({ min: 1, max: 5 }), fc.uint8Array({ maxLength: 100 })).map(([t, b]) => {
          const h = Buffer.alloc(19, 0xff);
          h.writeUInt16BE(19 + b.length, 16);
          h[18] = t;
          return Buffer.concat([h, Buffer.from(b)]);
        }),
      ),
      { numRuns: 15, seed: 42 },
    );
    peer.onConn = (sock, i) => {
      sock.write(Buffer.concat([peerOpen(), encodeKeepalive()]));
      const g = garbage[i];
      // Garbage that happens to be harmless is followed by a sure header error.
      if (g) setTimeout(() => sock.write(Buffer.concat([g, Buffer.alloc(19, 0)])), 30);
    };
    const s = mk({ backoffMinMs: 20, backoffMaxMs: 40 });
    s.start();
    await waitFor(() => peer.conns.length > garbage.length, 20000);
    const valid: Record<number, number[]> = {
      1: [1, 2, 3],
      2: [0, 1, 2, 3, 4, 6, 7],
      3: [1, 2, 3, 4, 5, 6, 8, 9, 10, 11],
      5: [0, 1, 2, 3],
    };
    for (let i = 0; i < garbage.length; i++) {
      const n = peer.notifications(i);
      // A garbage stream that is itself a NOTIFICATION closes the session without an answer (RFC 4271).
      const g = garbage[i]!;
      const peerNotified = g.length >= 21 && g.subarray(0, 16).equals(Buffer.alloc(16, 0xff)) && g[18] === 3;
      expect(n).toHaveLength(peerNotified ? 0 : 1);
      if (!peerNotified) expect(valid[n[0]!.code]).toContain(n[0]!.subcode);
    }
    await waitFor(() => s.state === SessionState.Established, 3000);
    expect(s.status().establishedCount).toBeGreaterThan(garbage.length);
  }, 30000);

  it('rejects a hold time of 1 or 2 naming the value', () => {
    expect(() => mk({ holdTime: 2 })).toThrow('holdTime must be 0 or 3..65535, got 2');
    session = null;
  });
});
