// TCP MD5 on a passive (listening) session between two BgpSpeakers on loopback: the key is set on the
// listening socket through the native binding; a wrong key never establishes.
import { describePrivileged } from '../helpers/privileged';
import { BgpSpeaker } from '../../src/bgp/speaker';
import { md5BgpSockets } from '../../src/datapath/bgp-sockets';
import { sleep, waitFor } from '../helpers/bgp-peers';
import { testPorts } from '../helpers/ports';

jest.setTimeout(30000);

describePrivileged('TCP MD5 on passive sessions (loopback)', () => {
  const port = testPorts(1);
  let router: BgpSpeaker;
  const others: BgpSpeaker[] = [];

  beforeAll(async () => {
    router = new BgpSpeaker({
      asn: 65000,
      routerId: '10.255.0.1',
      listen: { address: '127.0.0.1', port },
      sockets: md5BgpSockets,
      peers: [
        {
          address: '127.0.0.2',
          asn: 65001,
          passive: true,
          holdTime: 3,
          password: 'right',
          families: ['ipv4'],
        },
        {
          address: '127.0.0.3',
          asn: 65001,
          passive: true,
          holdTime: 3,
          password: 'right',
          families: ['ipv4'],
        },
      ],
    });
    await router.start();
  });

  afterAll(async () => {
    for (const s of others) await s.stop();
    await router.stop();
  });

  const client = (localAddress: string, password: string): BgpSpeaker => {
    const s = new BgpSpeaker({
      asn: 65001,
      routerId: localAddress,
      backoffMinMs: 200,
      sockets: md5BgpSockets,
      peers: [
        {
          address: '127.0.0.1',
          asn: 65000,
          port,
          localAddress,
          holdTime: 3,
          password,
          families: ['ipv4'],
          nextHop4: '192.0.2.9',
        },
      ],
    });
    others.push(s);
    return s;
  };

  it('the right key establishes and carries a route', async () => {
    const c = client('127.0.0.2', 'right');
    await c.start();
    c.setRoutes([{ prefix: '198.51.100.1/32' }]);
    await waitFor('route at the passive side', () => router.status().peers[0]!.receivedPrefixes === 1, 8000);
    expect(c.status().peers[0]!.state).toBe('Established');
  });

  it('a wrong key does not establish', async () => {
    const c = client('127.0.0.3', 'wrong');
    await c.start();
    await sleep(3000);
    expect(router.status().peers[1]!.establishedCount).toBe(0);
    expect(c.status().peers[0]!.establishedCount).toBe(0);
    expect(c.status().peers[0]!.state).not.toBe('Established');
  });
});
