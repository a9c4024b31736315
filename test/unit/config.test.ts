// Config model: defaults, normalisation, and every rejection naming its path and value.
import fc from 'fast-check';
import { z } from 'zod';
import {
  BOUNDS,
  canonicalIp,
  checkBackends,
  DEFAULTS,
  ENCAPS,
  formatIssue,
  formatPath,
  parseConfig,
  ParseResult,
  showValue,
} from '../../src/model';
import { parseTolerant } from '../../src/model/unknown-keys';

const yaml = (text: string): ParseResult => parseConfig(text, { format: 'yaml' });
const errorsOf = (r: ParseResult): string[] => {
  if (r.ok) throw new Error('expected the config to be rejected');
  return r.errors.map(formatIssue);
};
const okConfig = (r: ParseResult) => {
  if (!r.ok) throw new Error(`expected a valid config, got ${r.errors.map(formatIssue).join('; ')}`);
  return r.config;
};

const base = {
  interface: 'eth0',
  vips: [{ name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }] }],
};
const json = (obj: unknown): ParseResult => parseConfig(JSON.stringify(obj), { format: 'json' });
const withVip = (vip: Record<string, unknown>, extra: Record<string, unknown> = {}): ParseResult =>
  json({ ...base, ...extra, vips: [{ ...base.vips[0], ...vip }] });

describe('parseConfig: valid files', () => {
  it('fills every default from DEFAULTS', () => {
    const c = okConfig(
      yaml(
        'interface: eth0\nvips:\n  - {name: web, address: 10.0.0.10, port: 80, backends: [{address: 10.1.0.1}]}\n',
      ),
    );
    expect(c.xdpMode).toBe(DEFAULTS.xdpMode);
    expect(c.nextHopMac).toBe('auto');
    expect(c.encapSource).toBe('auto');
    expect(c.mtu).toBe(DEFAULTS.mtu);
    expect(c.admin.listen).toEqual({ host: '127.0.0.1', port: 9470 });
    expect(c.limits).toEqual(DEFAULTS.limits);
    expect(c.bgp).toBeUndefined();
    expect(c.vips[0]).toEqual({
      name: 'web',
      address: '10.0.0.10',
      family: 4,
      port: 80,
      protocol: 'tcp',
      tableSize: 65537,
      persistence: 'none',
      conntrack: true,
      healthCheck: null,
      backends: [{ address: '10.1.0.1', family: 4, weight: 1, drain: false, encap: DEFAULTS.vip.encap }],
      communities: [],
      largeCommunities: [],
      minHealthyBackends: null,
      failOpen: DEFAULTS.vip.failOpen,
      encap: DEFAULTS.vip.encap,
      stateless: DEFAULTS.vip.stateless,
    });
    expect(c.conntrackTimeouts).toEqual(DEFAULTS.conntrackTimeouts);
  });

  it('takes per-VIP BGP fields and conntrack timeouts, and names bad ones', () => {
    const c = okConfig(
      yaml(`
interface: eth0
conntrackTimeouts: { tcp: 60, udp: 0 }
vips:
  - name: web
    address: 10.0.0.10
    port: 80
    communities: ["65001:20", "65001:10", "65001:10"]
    largeCommunities: ["65001:1:2"]
    minHealthyBackends: 2
`),
    );
    expect(c.conntrackTimeouts).toEqual({ tcp: 60, udp: 0 });
    expect(c.vips[0]).toMatchObject({
      communities: ['65001:10', '65001:20'],
      largeCommunities: ['65001:1:2'],
      minHealthyBackends: 2,
    });
    const r = yaml(`
interface: eth0
conntrackTimeouts: { tcp: -1 }
vips:
  - { name: web, address: 10.0.0.10, port: 80, communities: ["70000:1"], largeCommunities: ["1:2"], minHealthyBackends: 0 }
`);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const paths = r.errors.map((e) => e.path).sort();
    expect(paths).toEqual([
      'conntrackTimeouts.tcp',
      'vips[0].communities[0]',
      'vips[0].largeCommunities[0]',
      'vips[0].minHealthyBackends',
    ]);
  });

  it('normalises a full file (IPv6 canonical, MAC lower case, prefixes, health defaults)', () => {
    const c = okConfig(
      yaml(`
interface: lb0
xdpMode: native
nextHopMac: AA:BB:CC:00:11:22
encapSource: [10.9.0.0/24, "2001:DB8:9::1"]
mtu: 1600
admin: { listen: "[::1]:9999" }
bgp: { asn: 65001, peers: [{ address: 10.9.0.1, asn: 65000 }] }
vips:
  - name: v6
    address: 2001:DB8::0:10
    port: 0
    protocol: udp
    tableSize: 251
    persistence: source-ip
    conntrack: false
    healthCheck: { type: http, port: 8080, path: /healthz, intervalMs: 500, timeoutMs: 200, rise: 1, fall: 2, downGraceSeconds: 0 }
    backends:
      - { address: "2001:db8:1::0001", weight: 3 }
      - { address: "2001:db8:1::2", weight: 0, drain: true }
`),
    );
    expect(c.interface).toBe('lb0');
    expect(c.nextHopMac).toBe('aa:bb:cc:00:11:22');
    expect(c.encapSource).toEqual([
      { prefix: '10.9.0.0', prefixLength: 24, family: 4 },
      { prefix: '2001:db8:9::1', prefixLength: 128, family: 6 },
    ]);
    expect(c.admin.listen).toEqual({ host: '::1', port: 9999 });
    // The bgp section is parsed by its schema (before, an unvalidated { localAs: 65001 } passed through as written).
    expect(c.bgp).toMatchObject({
      asn: 65001,
      routerId: 'auto',
      peers: [{ address: '10.9.0.1', asn: 65000, port: 179 }],
    });
    const v = c.vips[0]!;
    expect(v.address).toBe('2001:db8::10');
    expect(v.healthCheck).toEqual({
      type: 'http',
      port: 8080,
      path: '/healthz',
      intervalMs: 500,
      timeoutMs: 200,
      rise: 1,
      fall: 2,
      downGraceSeconds: 0,
    });
    expect(v.backends.map((b) => [b.address, b.weight, b.drain])).toEqual([
      ['2001:db8:1::1', 3, false],
      ['2001:db8:1::2', 0, true],
    ]);
  });

  it('defaults the health-check port to the VIP port and the path to /', () => {
    const c = okConfig(withVip({ healthCheck: {} }));
    expect(c.vips[0]!.healthCheck).toEqual({ ...DEFAULTS.healthCheck, port: 80 });
    expect(c.vips[0]!.healthCheck!.downGraceSeconds).toBe(30);
  });

  it('warns (without rejecting) when a table has under 10 slots per backend', () => {
    const r = withVip({ tableSize: 7, backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }] });
    expect(r.ok && r.warnings.map(formatIssue)).toEqual([
      'vips[0].tableSize: 7 is under 10 slots per backend (2 backends): balance will be uneven',
    ]);
  });
});

describe('parseConfig: rejections name path and value', () => {
  it('reports the example from the issue', () => {
    const vips = [0, 1, 2].map((i) => ({
      name: `v${i}`,
      address: `10.0.0.${i + 1}`,
      port: 80,
      backends: [{ address: '10.1.0.1' }],
    }));
    vips[2]!.backends[0]!.address = '10.0.0.300';
    expect(errorsOf(json({ interface: 'eth0', vips }))).toEqual([
      'vips[2].backends[0].address: "10.0.0.300" is not an IP address',
    ]);
  });

  it.each<[string, Record<string, unknown>, Record<string, unknown>, string]>([
    [
      'weight < 0',
      { backends: [{ address: '10.1.0.1', weight: -1 }] },
      {},
      'vips[0].backends[0].weight: -1 is below the minimum 0',
    ],
    [
      'fractional weight',
      { backends: [{ address: '10.1.0.1', weight: 1.5 }] },
      {},
      'vips[0].backends[0].weight: 1.5 is not an integer',
    ],
    [
      'table size not prime',
      { tableSize: 65536 },
      {},
      'vips[0].tableSize: 65536 is not a prime between 3 and 1048573',
    ],
    [
      'table size too big',
      { tableSize: 2097143 },
      {},
      'vips[0].tableSize: 2097143 is not a prime between 3 and 1048573',
    ],
    ['bad protocol', { protocol: 'sctp' }, {}, 'vips[0].protocol: "sctp" is not one of tcp, udp'],
    ['port out of range', { port: 70000 }, {}, 'vips[0].port: 70000 is above the maximum 65535'],
    ['port as string', { port: '80' }, {}, 'vips[0].port: "80" is not a number'],
    ['unknown key', { prot: 'tcp' }, {}, 'vips[0].prot: is not a known key (did you mean "port"?)'],
    [
      'bad VIP name',
      { name: 'has space' },
      {},
      'vips[0].name: "has space" is not a VIP name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)',
    ],
    [
      'unspecified VIP',
      { address: '0.0.0.0' },
      {},
      'vips[0].address: "0.0.0.0" is the unspecified address, not a VIP address',
    ],
    [
      'v4 backend in v6 VIP',
      { address: '2001:db8::10', backends: [{ address: '10.1.0.1' }] },
      {},
      'vips[0].backends[0].address: "10.1.0.1" is IPv4 but the VIP is IPv6 (IPv6 is not carried in IPv4: an IPv6 VIP needs IPv6 backends; an IPv4 VIP may have both)',
    ],
    [
      'IPv6 backend without v6 support',
      { address: '2001:db8::10', backends: [{ address: '2001:db8::5' }] },
      { encapSource: '10.9.0.1' },
      'vips[0].backends[0].address: "2001:db8::5" is IPv6 but encapSource has no IPv6 address (no v6 support)',
    ],
    [
      'duplicate backend',
      { backends: [{ address: '2001:db8::1' }, { address: '2001:DB8::0:1' }], address: '2001:db8::10' },
      {},
      'vips[0].backends[1].address: "2001:DB8::0:1" duplicates backends[0]',
    ],
    [
      'health port needed for port 0',
      { port: 0, healthCheck: { type: 'tcp' } },
      {},
      'vips[0].healthCheck.port: is required when the VIP port is 0 (every port)',
    ],
    [
      'path on a tcp check',
      { healthCheck: { type: 'tcp', path: '/x' } },
      {},
      'vips[0].healthCheck.path: "/x" is set but only http checks use a path',
    ],
    [
      'relative http path',
      { healthCheck: { type: 'http', path: 'x' } },
      {},
      'vips[0].healthCheck.path: "x" is not an absolute HTTP path (starts with /; no spaces or control characters)',
    ],
    [
      'timeout over interval',
      { healthCheck: { intervalMs: 500, timeoutMs: 600 } },
      {},
      'vips[0].healthCheck.timeoutMs: 600 is longer than intervalMs 500',
    ],
    ['rise 0', { healthCheck: { rise: 0 } }, {}, 'vips[0].healthCheck.rise: 0 is below the minimum 1'],
    [
      'negative down grace',
      { healthCheck: { downGraceSeconds: -1 } },
      {},
      'vips[0].healthCheck.downGraceSeconds: -1 is below the minimum 0',
    ],
    [
      'down grace over a day',
      { healthCheck: { downGraceSeconds: 86401 } },
      {},
      'vips[0].healthCheck.downGraceSeconds: 86401 is above the maximum 86400',
    ],
    [
      'bad check type',
      { healthCheck: { type: 'icmp' } },
      {},
      'vips[0].healthCheck.type: "icmp" is not one of tcp, http',
    ],
    [
      'table smaller than backends',
      { tableSize: 3, backends: ['1', '2', '3', '4'].map((x) => ({ address: `10.1.0.${x}` })) },
      {},
      'vips[0].tableSize: 3 is smaller than the 4 backends',
    ],
    [
      'bad MAC',
      {},
      { nextHopMac: 'aa:bb' },
      'nextHopMac: "aa:bb" is not a MAC address (aa:bb:cc:dd:ee:ff) or "auto"',
    ],
    ['bad xdpMode', {}, { xdpMode: 'offload' }, 'xdpMode: "offload" is not one of native, generic, auto'],
    ['bad mtu', {}, { mtu: 1000 }, 'mtu: 1000 is below the minimum 1280'],
    [
      'bad listen',
      {},
      { admin: { listen: 'localhost:9470' } },
      'admin.listen: "localhost:9470" is not an address:port (e.g. 127.0.0.1:9470 or [::1]:9470)',
    ],
    [
      'bad encap source',
      {},
      { encapSource: ['10.0.0.0/40'] },
      'encapSource[0]: "10.0.0.0/40" is not an IP address or prefix (e.g. 10.0.0.0/24)',
    ],
    [
      'two v4 encap sources',
      {},
      { encapSource: ['10.0.0.1', '10.0.0.0/24'] },
      'encapSource[1]: "10.0.0.0/24" is a second IPv4 source (encapSource[0])',
    ],
    [
      'bad interface',
      {},
      { interface: 'a/b' },
      'interface: "a/b" is not a network interface name (1-15 characters, no space, / or :)',
    ],
  ])('%s', (_what, vip, extra, message) => {
    expect(errorsOf(withVip(vip, extra))).toEqual([message]);
  });

  it('requires interface and rejects unknown top-level keys', () => {
    expect(errorsOf(json({ vips: [], interfce: 'eth0' })).sort()).toEqual([
      'interface: is required',
      'interfce: is not a known key (did you mean "interface"?)',
    ]);
  });

  it('enforces limits on VIPs and backend memberships', () => {
    const v = base.vips[0]!;
    expect(
      errorsOf(json({ ...base, limits: { maxVips: 1 }, vips: [v, { ...v, name: 'b', port: 81 }] })),
    ).toEqual(['vips: has 2 VIPs, more than limits.maxVips 1']);
    const three = ['1', '2', '3'].map((x) => ({ address: `10.1.0.${x}` }));
    expect(
      errorsOf(json({ ...base, limits: { maxBackends: 3 }, vips: [{ ...v, backends: three }] })),
    ).toEqual(['vips: has 3 backends in all, more than limits.maxBackends - 1 = 2']);
    expect(errorsOf(json({ ...base, limits: { conntrackEntries: 5 } }))).toEqual([
      'limits.conntrackEntries: 5 is below the minimum 1024',
    ]);
  });

  it('rejects duplicate VIPs by key and by name, and lists every cross-field error at once', () => {
    const v = base.vips[0]!;
    const errors = errorsOf(
      json({
        interface: 'eth0',
        vips: [
          v,
          { ...v, name: 'other' },
          { ...v, port: 443 },
          { ...v, name: 'x', port: 8080, backends: [{ address: '10.0.0.10' }] },
        ],
      }),
    );
    expect(errors).toEqual([
      'vips[3].backends[0].address: "10.0.0.10" is the VIP\'s own address',
      'vips[1]: 10.0.0.10 port 80 tcp duplicates vips[0]',
      'vips[2].name: "web" duplicates vips[0].name',
    ]);
  });

  it('lists every shape error at once', () => {
    const errors = errorsOf(
      withVip({ port: -1, backends: [{ address: 'x' }, { address: '10.1.0.2', weight: 'heavy' }] }),
    );
    expect(errors).toEqual([
      'vips[0].port: -1 is below the minimum 0',
      'vips[0].backends[0].address: "x" is not an IP address',
      'vips[0].backends[1].weight: "heavy" is not a number',
    ]);
  });

  it('reports YAML syntax errors with line and column, and duplicate keys', () => {
    const [e] = errorsOf(yaml('interface: eth0\nvips:\n  - name: [unclosed\n'));
    expect(e).toMatch(/^\(file\): YAML syntax error at line \d+, column \d+: /);
    expect(errorsOf(yaml('interface: eth0\ninterface: eth1\n'))[0]).toMatch(
      /^\(file\): YAML syntax error at line 2, column 1: .*unique/i,
    );
  });

  it('reports JSON syntax errors and non-mapping documents', () => {
    expect(errorsOf(parseConfig('{"interface": ', { format: 'json' }))[0]).toMatch(
      /^\(file\): JSON syntax error at line \d+, column \d+: /,
    );
    expect(errorsOf(yaml(''))).toEqual(['(file): null is not a mapping of config keys']);
    expect(errorsOf(yaml('- 1\n'))).toEqual(['(file): [1] is not a mapping of config keys']);
    expect(errorsOf(parseConfig('{}', { format: 'toml' as 'json' }))).toEqual([
      '(file): format "toml" is not yaml or json',
    ]);
  });
});

describe("bgp and kubernetes sections (the model's own schemas)", () => {
  const bgp = { asn: 65001, routerId: '10.0.0.2', peers: [{ address: '10.0.0.1', asn: 65000 }] };

  it('parseConfig alone rejects a bad bgp section, reporting its issues under bgp.', () => {
    expect(errorsOf(json({ ...base, bgp: { anything: 1 } }))).toEqual([
      'bgp.asn: is required',
      'bgp.peers: is required',
      'bgp.anything: is not a known key',
    ]);
    expect(errorsOf(json({ ...base, bgp: { ...bgp, peers: [{ address: '10.0.0.1', asn: 0 }] } }))).toEqual([
      'bgp.peers[0].asn: 0 is below the minimum 1',
    ]);
    expect(errorsOf(json({ ...base, bgp: 5 }))).toEqual(['bgp: 5 is not an object']);
  });

  it('keeps the bgp section parsed (defaults filled in), so nothing parses it again', () => {
    expect(okConfig(json({ ...base, bgp })).bgp).toEqual({
      asn: 65001,
      routerId: '10.0.0.2',
      gracefulRestartTime: 120,
      gracefulShutdownMs: 0,
      minHealthyBackends: 1,
      bfd: { controlSocket: '/run/peak-xdp/bfd.sock' },
      peers: [
        {
          address: '10.0.0.1',
          asn: 65000,
          port: 179,
          holdTime: 90,
          passive: false,
          communities: [],
          largeCommunities: [],
          families: ['ipv4', 'ipv6'],
          maxPrefixes: 10_000,
        },
      ],
    });
    expect(okConfig(json(base)).bgp).toBeUndefined();
  });

  it('parseConfig alone rejects a bad kubernetes section and keeps a good one as written', () => {
    // An unknown key hides nothing: the pool is checked in the same pass.
    expect(errorsOf(json({ ...base, kubernetes: { pool: ['10.0.0.0/33'], x: 1 } }))).toEqual([
      'kubernetes.x: is not a known key',
      'kubernetes.pool[0]: "10.0.0.0/33" is not a CIDR (a.b.c.d/n) or a range (a-b)',
    ]);
    expect(errorsOf(json({ ...base, kubernetes: { pool: ['10.0.0.0/33'] } }))).toEqual([
      'kubernetes.pool[0]: "10.0.0.0/33" is not a CIDR (a.b.c.d/n) or a range (a-b)',
    ]);
    const kubernetes = { pool: ['10.0.0.0/28'] };
    expect(okConfig(json({ ...base, kubernetes })).kubernetes).toEqual(kubernetes);
  });
});

describe('validation memo', () => {
  it('returns the same frozen VIP object for unchanged VIPs and re-checks changed ones', () => {
    const two = {
      ...base,
      vips: [
        base.vips[0],
        { name: 'b', address: '10.0.0.11', port: 80, backends: [{ address: '10.1.0.2' }] },
      ],
    };
    const c1 = okConfig(json(two));
    const changed = { ...two, vips: [two.vips[0], { ...two.vips[1], backends: [{ address: '10.1.0.3' }] }] };
    const c2 = okConfig(json(changed));
    expect(c2.vips[0]).toBe(c1.vips[0]);
    expect(c2.vips[1]).not.toBe(c1.vips[1]);
    expect(c2.vips[1]!.backends[0]!.address).toBe('10.1.0.3');
    expect(Object.isFrozen(c2.vips[0])).toBe(true);
    expect(Object.isFrozen(c2.vips[0]!.backends[0])).toBe(true);
    // The same VIP content under a different encapSource is checked again.
    const v6 = {
      interface: 'eth0',
      vips: [{ name: 'x', address: '2001:db8::1', port: 80, backends: [{ address: '2001:db8::2' }] }],
    };
    expect(json(v6).ok).toBe(true);
    expect(errorsOf(json({ ...v6, encapSource: '10.0.0.1' }))).toEqual([
      'vips[0].backends[0].address: "2001:db8::2" is IPv6 but encapSource has no IPv6 address (no v6 support)',
    ]);
  });

  it('names a VIP that is not a mapping', () => {
    expect(errorsOf(json({ ...base, vips: [5] }))).toEqual(['vips[0]: 5 is not an object']);
  });
});

describe('backend checks (hand-written hot path)', () => {
  // The zod schema the hand-written checks replaced: the reference for checks, paths, order and messages.
  const reference = z.object({
    backends: z.array(
      z
        .object({
          address: z.string().superRefine((v, ctx) => {
            if (canonicalIp(v) === null)
              ctx.addIssue({ code: 'custom', message: `${showValue(v)} is not an IP address` });
          }),
          weight: z.number().int().min(0).max(BOUNDS.weight.max).default(DEFAULTS.backend.weight),
          drain: z.boolean().default(DEFAULTS.backend.drain),
          // issue 15; without it the reference suggested nothing for a key near "encap" (e.g. "eCap") where the
          // checks suggest "encap", and refused "encap" itself
          encap: z.enum(ENCAPS).optional(),
        })
        .strict(),
    ),
  });
  const field = <T>(values: fc.Arbitrary<T>) => fc.oneof(values, fc.anything());
  const backendArb = fc.oneof(
    fc.anything(),
    fc.record(
      {
        address: field(
          fc.constantFrom(
            '10.1.0.1',
            '255.255.255.255',
            '2001:DB8::0:1',
            '::ffff:1.2.3.4',
            '01.2.3.4',
            'x',
            '',
          ),
        ),
        weight: field(
          fc.constantFrom(0, 1, 7, 65535, 65536, -1, 1.5, -2.5, 70000.5, NaN, Infinity, -Infinity, '2'),
        ),
        drain: field(fc.constantFrom(true, false, 'yes', 0)),
        encap: field(fc.constantFrom('ipip', 'gue', 'GUE', 'fou', 1)),
        eCap: fc.anything(), // near "encap": "did you mean" alike in both
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    ),
  );

  it('reports exactly what the zod schema reported and returns what it returned (property)', () => {
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(fc.array(backendArb, { maxLength: 4 }), (list) => {
        const mine = checkBackends(list);
        // as the config's own parse reports it: unknown keys with the closest known key (parseTolerant)
        const ref = parseTolerant(reference, { backends: list });
        if (ref.issues.length === 0) {
          accepted++;
          expect(mine.issues).toEqual([]);
          expect(
            mine.backends.map(({ address, weight, drain, encap }) => ({
              address,
              weight,
              drain,
              ...(encap === undefined ? {} : { encap }),
            })),
          ).toEqual(
            // prettier-ignore
            ref.data!.backends.map((b) => ({ ...b, address: canonicalIp(b.address) })),
          );
        } else {
          rejected++;
          expect(mine.issues.map((i) => ({ path: formatPath(i.path), message: i.message }))).toEqual(
            ref.issues,
          );
        }
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(50);
    expect(rejected).toBeGreaterThan(50);
  });

  it('orders backend errors after the VIP field errors and before the VIP unknown keys, as zod did', () => {
    expect(
      errorsOf(
        withVip({ name: '-bad', extraKey: 1, port: 'x', backends: [{ address: 'nope', weight: -1 }] }),
      ),
    ).toEqual([
      'vips[0].name: "-bad" is not a VIP name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)',
      'vips[0].port: "x" is not a number',
      'vips[0].backends[0].address: "nope" is not an IP address',
      'vips[0].backends[0].weight: -1 is below the minimum 0',
      'vips[0].extraKey: is not a known key',
    ]);
  });
});
