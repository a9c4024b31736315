// The socket-factory seam (src/bgp/sockets.ts): the speaker and session take their sockets from an injected
// factory, so TCP MD5 needs no native addon here: a fake factory records what it was asked for.
import { connect as netConnect, Server } from 'node:net';
import { BgpSpeaker } from '../../src/bgp/speaker';
import { BgpConnectOptions, BgpListenerKey, BgpSocketFactory, plainBgpSockets } from '../../src/bgp/sockets';
import { RawBgpPeer } from '../helpers/raw-bgp-peer';
import { testPorts } from '../helpers/ports';

jest.setTimeout(20000);

const base = testPorts(3);

async function waitFor(what: string, pred: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Plain sockets underneath, every call recorded (the key is not applied: nothing here signs). */
function fakeFactory(): BgpSocketFactory & {
  connects: BgpConnectOptions[];
  listenerKeys: { server: Server; keys: BgpListenerKey[] }[];
} {
  const connects: BgpConnectOptions[] = [];
  const listenerKeys: { server: Server; keys: BgpListenerKey[] }[] = [];
  return {
    md5: true,
    connects,
    listenerKeys,
    connect(o) {
      connects.push({ ...o });
      return netConnect({ host: o.host, port: o.port, localAddress: o.localAddress });
    },
    setListenerKeys(server, keys) {
      listenerKeys.push({ server, keys: keys.map((k) => ({ ...k })) });
    },
  };
}

const peer = (o: { port: number; password?: string; passive?: boolean; address?: string }) => ({
  address: o.address ?? '127.0.0.1',
  asn: 65000,
  port: o.port,
  holdTime: 3,
  families: ['ipv4' as const],
  nextHop4: '192.0.2.9',
  ...(o.password !== undefined ? { password: o.password } : {}),
  ...(o.passive ? { passive: true } : {}),
});

describe('plain socket factory (the default)', () => {
  it('refuses a password instead of connecting unsigned, and refuses listener keys', () => {
    expect(() => plainBgpSockets.connect({ host: '127.0.0.1', port: 1, password: 'k' })).toThrow(
      /connect to 127\.0\.0\.1: TCP MD5 needs a socket factory with MD5 support/,
    );
    expect(() =>
      plainBgpSockets.setListenerKeys(new Server(), [{ address: '192.0.2.7', password: 'k' }]),
    ).toThrow(/listener keys for 192\.0\.2\.7/);
    expect(() => plainBgpSockets.setListenerKeys(new Server(), [])).not.toThrow();
    expect(plainBgpSockets.md5).toBe(false);
  });

  it('a speaker with a keyed peer and no MD5 factory throws naming the peer field', () => {
    expect(
      () =>
        new BgpSpeaker({
          asn: 65001,
          routerId: '10.255.0.2',
          peers: [peer({ port: base }), peer({ port: base, address: '127.0.0.9', password: 'k' })],
        }),
    ).toThrow(/^bgp\.peers\[1\]\.password: TCP MD5 needs a socket factory/);
  });
});

describe('an injected factory', () => {
  it('active: the session connects through it with host, port, local address and key, and establishes', async () => {
    const raw = new RawBgpPeer({ host: '127.0.0.1', port: base + 1, asn: 65000, routerId: '10.255.0.1', holdTime: 3 }); // prettier-ignore
    await raw.listen();
    const f = fakeFactory();
    const sp = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.2',
      peers: [{ ...peer({ port: base + 1, password: 'sekrit' }), localAddress: '127.0.0.1' }],
      sockets: f,
    });
    try {
      await sp.start();
      await waitFor('established', () => sp.status().peers[0]?.state === 'Established', 5000);
      expect(f.connects[0]).toEqual({
        host: '127.0.0.1',
        port: base + 1,
        password: 'sekrit',
        localAddress: '127.0.0.1',
      });
      expect(f.listenerKeys).toEqual([]);
    } finally {
      await sp.stop();
      await raw.close();
    }
  });

  it('passive: the bound listener gets one key per keyed peer, none for the others', async () => {
    const f = fakeFactory();
    const port = base + 2;
    const sp = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.2',
      listen: { address: '127.0.0.1', port },
      peers: [
        peer({ port, address: '127.0.0.5', passive: true, password: 'five' }),
        peer({ port, address: '127.0.0.6', passive: true }),
        peer({ port, address: '127.0.0.7', passive: true, password: 'seven' }),
      ],
      sockets: f,
    });
    try {
      await sp.start();
      expect(f.listenerKeys).toHaveLength(1);
      const { server, keys } = f.listenerKeys[0]!;
      expect(server.listening).toBe(true);
      expect((server.address() as { port: number }).port).toBe(port);
      expect(keys).toEqual([
        { address: '127.0.0.5', password: 'five' },
        { address: '127.0.0.7', password: 'seven' },
      ]);
      expect(f.connects).toEqual([]);
    } finally {
      await sp.stop();
    }
  });
});
