// Announce policy (pure) and the `bgp` config schema: decisions, stability, defaults, named errors.
import { decideAnnouncements, VipReadiness } from '../../src/bgp/policy';
import { parseBgpConfig, BGP_DEFAULTS } from '../../src/bgp/config';
import { validateRoute } from '../../src/bgp/speaker';

const ready = (vip: string, extra: Partial<VipReadiness> = {}): VipReadiness => ({
  vip,
  attached: true,
  programmed: true,
  healthyBackends: 2,
  ...extra,
});

describe('decideAnnouncements', () => {
  it.each([
    ['ready', {}, null],
    ['program not attached', { attached: false }, 'not-attached'],
    ['VIP not programmed', { programmed: false }, 'not-programmed'],
    ['no healthy backend', { healthyBackends: 0 }, 'too-few-healthy-backends'],
    ['below a per-VIP minimum of 3', { minHealthyBackends: 3 }, 'too-few-healthy-backends'],
    ['at a per-VIP minimum of 2', { minHealthyBackends: 2 }, null],
  ])('%s', (_n, extra, reason) => {
    const d = decideAnnouncements({ vips: [ready('10.0.0.10', extra)] });
    if (reason === null) {
      expect(d.announce.map((r) => r.prefix)).toEqual(['10.0.0.10/32']);
      expect(d.withheld).toEqual([]);
    } else {
      expect(d.announce).toEqual([]);
      expect(d.withheld).toEqual([{ vip: '10.0.0.10', reason }]);
    }
  });

  it('applies the node-wide minHealthyBackends', () => {
    const d = decideAnnouncements({
      vips: [ready('10.0.0.10'), ready('10.0.0.11', { healthyBackends: 5 })],
      minHealthyBackends: 3,
    });
    expect(d.announce.map((r) => r.prefix)).toEqual(['10.0.0.11/32']);
  });

  it('merges services sharing a VIP and gives the same output whatever the input order', () => {
    const vips = [
      ready('2001:db8::10', { communities: ['65001:2'] }),
      ready('10.0.0.10', { communities: ['65001:9', '65001:1'], largeCommunities: ['1:2:3'] }),
      ready('10.0.0.10/32', { communities: ['65001:1'] }),
    ];
    const a = decideAnnouncements({ vips });
    const b = decideAnnouncements({ vips: [...vips].reverse() });
    expect(a).toEqual(b);
    expect(a.announce).toEqual([
      { prefix: '10.0.0.10/32', communities: ['65001:1', '65001:9'], largeCommunities: ['1:2:3'] },
      { prefix: '2001:db8::10/128', communities: ['65001:2'], largeCommunities: [] },
    ]);
  });

  it('rejects bad input naming the field and value', () => {
    expect(() => decideAnnouncements({ vips: [], minHealthyBackends: 0 })).toThrow(
      'minHealthyBackends must be an integer >= 1, got 0',
    );
    expect(() => decideAnnouncements({ vips: [ready('10.0.0.300')] })).toThrow('10.0.0.300');
  });
});

describe('parseBgpConfig', () => {
  it('fills defaults', () => {
    const c = parseBgpConfig({
      asn: 65001,
      routerId: '10.0.0.2',
      peers: [{ address: '10.0.0.1', asn: 65000 }],
    });
    expect(c.gracefulRestartTime).toBe(BGP_DEFAULTS.gracefulRestartTime);
    expect(c.gracefulShutdownMs).toBe(0);
    expect(c.peers[0]).toEqual({
      address: '10.0.0.1',
      asn: 65000,
      port: 179,
      holdTime: 90,
      passive: false,
      communities: [],
      largeCommunities: [],
      families: ['ipv4', 'ipv6'],
      maxPrefixes: BGP_DEFAULTS.maxPrefixes,
    });
  });

  it('accepts a full config with several peers', () => {
    const c = parseBgpConfig({
      asn: 4200000001,
      routerId: '10.0.0.2',
      gracefulShutdownMs: 5000,
      listen: { port: 1179 },
      peers: [
        {
          address: '10.0.0.1',
          asn: 65000,
          holdTime: 3,
          password: 'k',
          communities: ['65000:1'],
          families: ['ipv4'],
        },
        {
          address: 'fd00::1',
          asn: 65002,
          passive: true,
          largeCommunities: ['4200000001:1:1'],
          families: ['ipv6'],
          nextHop4: '10.0.0.2',
        },
      ],
    });
    expect(c.peers).toHaveLength(2);
    expect(c.listen).toEqual({ address: '::', port: 1179 });
  });

  it.each([
    [{ asn: 0 }, 'bgp.asn'],
    [{ routerId: '::1' }, 'bgp.routerId: "::1" is not an IPv4 address'],
    [
      { peers: [{ address: 'router', asn: 1 }] },
      'bgp.peers.0.address: "router" is not an IP address (got "router")',
    ],
    [
      { peers: [{ address: '10.0.0.1', asn: 1, holdTime: 2 }] },
      'bgp.peers.0.holdTime: holdTime 2 must be 0 or 3..65535 (got 2)',
    ],
    [
      { peers: [{ address: '10.0.0.1', asn: 1, communities: ['70000:1'] }] },
      'bgp.peers.0.communities.0: community "70000:1"',
    ],
    [
      { peers: [{ address: '10.0.0.1', asn: 1, largeCommunities: ['1:2'] }] },
      'bgp.peers.0.largeCommunities.0',
    ],
    [{ peers: [{ address: '10.0.0.1', asn: 1, families: ['ipv5'] }] }, 'bgp.peers.0.families.0'],
    [
      { peers: [{ address: '10.0.0.1', asn: 1, password: 'x'.repeat(81) }] },
      'bgp.peers.0.password: password must be at most 80 bytes',
    ],
    [{ peers: [{ address: '10.0.0.1', asn: 1, colour: 'red' }] }, 'colour'],
    [
      {
        peers: [
          { address: '10.0.0.1', asn: 1 },
          { address: '10.0.0.1', asn: 2 },
        ],
      },
      'bgp.peers.1.address: peer 10.0.0.1:179 listed twice',
    ],
    [{ peers: [] }, 'bgp.peers'],
  ])('rejects %j naming %s', (bad, msg) => {
    const base = { asn: 65001, routerId: '10.0.0.2', peers: [{ address: '10.0.0.1', asn: 65000 }] };
    expect(() => parseBgpConfig({ ...base, ...bad })).toThrow(msg);
  });
});

describe('validateRoute', () => {
  it('returns the canonical prefix', () => {
    expect(validateRoute({ prefix: '2001:DB8::1', communities: ['1:2'], med: 0 }, 0)).toBe('2001:db8::1/128');
  });

  it.each([
    [{ prefix: '10.0.0.1/40' }, 'routes[3].prefix: prefix "10.0.0.1/40" has an invalid length'],
    [{ prefix: '10.0.0.1', communities: ['1:2', 'no'] }, 'routes[3].communities[1]: community "no"'],
    [{ prefix: '10.0.0.1', largeCommunities: ['1:2:99999999999'] }, 'routes[3].largeCommunities[0]'],
    [{ prefix: '10.0.0.1', nextHop: 'gw' }, 'routes[3].nextHop: "gw" is not an IP address'],
    [{ prefix: '10.0.0.1', med: -1 }, 'routes[3].med: -1 is not an integer'],
    [{ prefix: '10.0.0.1', localPref: 1.5 }, 'routes[3].localPref: 1.5'],
  ])('rejects %j', (r, msg) => {
    expect(() => validateRoute(r, 3)).toThrow(msg);
  });
});
