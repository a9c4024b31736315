// Config rejections found by review: special-purpose addresses as VIPs, backends or sources; backends equal to
// the VIP or to the node's own address (hostIssues); duplicate JSON keys; .nan/.inf shown as written; secrets
// never echoed; IPv4 VIPs with IPv6 backends (4in6) accepted, IPv6 VIPs with IPv4 backends refused.
import { parseBgpConfig } from '../../src/bgp/config';
import {
  ConfigRejectedError,
  describeSpecialAddress,
  formatIssue,
  hostIssues,
  parseConfig,
  parseDocumentText,
  ParseResult,
  parseIp,
  showValue,
  specialAddress,
} from '../../src/model';
import { jsonKeyCount } from '../../src/model/document';

const json = (obj: unknown): ParseResult => parseConfig(JSON.stringify(obj), { format: 'json' });
const yaml = (text: string): ParseResult => parseConfig(text, { format: 'yaml' });
const errorsOf = (r: ParseResult): string[] => {
  if (r.ok) throw new Error('expected the config to be rejected');
  return r.errors.map(formatIssue);
};
const okConfig = (r: ParseResult) => {
  if (!r.ok) throw new Error(`expected a valid config, got ${r.errors.map(formatIssue).join('; ')}`);
  return r.config;
};
const vip = (o: Record<string, unknown>) => ({
  interface: 'eth0',
  vips: [{ name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }], ...o }],
});

describe('specialAddress', () => {
  it.each([
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'this-network'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.255', 'loopback'],
    ['169.254.1.1', 'link-local'],
    ['224.0.0.5', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fe80::1', 'link-local'],
    ['febf:ffff::', 'link-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:10.0.0.1', 'ipv4-mapped'],
    ['1.0.0.0', null],
    ['126.255.255.255', null],
    ['169.253.1.1', null],
    ['223.255.255.255', null],
    ['240.0.0.1', null],
    ['255.255.255.254', null],
    ['::2', null],
    ['fec0::1', null],
    ['2001:db8::1', null],
    ['::1:ffff:0:1', null],
  ])('%s -> %s', (addr, kind) => {
    expect(specialAddress(parseIp(addr)!.bytes)).toBe(kind);
  });
});

describe('addresses a VIP, a backend or a source cannot have', () => {
  const v4Special = ['255.255.255.255', '127.0.0.1', '224.0.0.5', '0.0.0.0', '0.0.0.7', '169.254.0.1'];
  const v6Special = ['::', '::1', 'ff02::5', 'FF00::', 'fe80::1', '::ffff:10.0.0.1'];

  it.each([...v4Special, ...v6Special])('VIP %s is refused, naming field, value and why', (a) => {
    const kind = describeSpecialAddress(specialAddress(parseIp(a)!.bytes)!);
    const backends = a.includes(':') ? [{ address: '2001:db8::5' }] : [{ address: '10.1.0.1' }];
    expect(errorsOf(json(vip({ address: a, backends })))).toEqual([
      `vips[0].address: "${a}" is ${kind}, not a VIP address`,
    ]);
  });

  it.each([...v4Special, ...v6Special])('backend %s is refused, naming field, value and why', (a) => {
    const kind = describeSpecialAddress(specialAddress(parseIp(a)!.bytes)!);
    const address = a.includes(':') ? '2001:db8::10' : '10.0.0.10';
    expect(errorsOf(json(vip({ address, backends: [{ address: a }] })))).toEqual([
      `vips[0].backends[0].address: "${a}" is ${kind}, not a backend address`,
    ]);
  });

  it('a backend equal to its VIP (however written) is refused', () => {
    expect(errorsOf(json(vip({ backends: [{ address: '10.0.0.10' }] })))).toEqual([
      'vips[0].backends[0].address: "10.0.0.10" is the VIP\'s own address',
    ]);
    expect(
      errorsOf(json(vip({ address: '2001:db8::10', backends: [{ address: '2001:DB8:0::10' }] }))),
    ).toEqual(['vips[0].backends[0].address: "2001:DB8:0::10" is the VIP\'s own address']);
  });

  it('ordinary addresses next to the special ranges are accepted', () => {
    const c = okConfig(
      json(
        vip({
          address: '240.0.0.1',
          backends: ['1.0.0.1', '126.255.255.255', '169.253.0.1', '223.255.255.255', '255.255.255.254'].map(
            (address) => ({ address }),
          ),
        }),
      ),
    );
    expect(c.vips[0]!.backends).toHaveLength(5);
  });

  it('an encapSource in a special range is refused', () => {
    expect(errorsOf(json({ ...vip({}), encapSource: ['127.0.0.1', 'fe80::/64'] }))).toEqual([
      'encapSource[0]: "127.0.0.1" is a loopback address, not a source address',
      'encapSource[1]: "fe80::/64" is a link-local address, not a source address',
    ]);
  });
});

describe("hostIssues: the node's own interface addresses (checked by the daemon at start and on reload)", () => {
  const cfg = okConfig(
    json({
      interface: 'eth0',
      vips: [
        {
          name: 'a',
          address: '10.0.0.10',
          port: 80,
          backends: [{ address: '10.1.0.1' }, { address: '10.9.0.2' }],
        },
        { name: 'b', address: '2001:db8::10', port: 80, backends: [{ address: '2001:db8::2' }] },
        { name: 'c', address: '10.9.0.2', port: 443, backends: [{ address: '10.1.0.1' }] },
      ],
    }),
  );

  it('names every VIP and backend that is an address of the interface', () => {
    const issues = hostIssues(cfg, { interface: 'eth0', addresses: ['10.9.0.2', '2001:DB8::2'] });
    expect(issues.map(formatIssue)).toEqual([
      'vips[0].backends[1].address: "10.9.0.2" is an address of this node\'s interface eth0 (the balancer would send the VIP\'s traffic to itself)',
      'vips[1].backends[0].address: "2001:db8::2" is an address of this node\'s interface eth0 (the balancer would send the VIP\'s traffic to itself)',
      'vips[2].address: "10.9.0.2" is an address of this node\'s interface eth0 (the balancer would take the node\'s own traffic)',
    ]);
    expect(new ConfigRejectedError('/etc/peak-xdp.yaml', issues).message).toBe(
      `config /etc/peak-xdp.yaml rejected:\n  ${issues.map(formatIssue).join('\n  ')}`,
    );
  });

  it('finds nothing when no address matches', () => {
    expect(hostIssues(cfg, { interface: 'eth0', addresses: ['10.9.0.3', 'fd00::1'] })).toEqual([]);
    expect(hostIssues(cfg, { interface: 'eth0', addresses: [] })).toEqual([]);
  });
});

describe('4in6: IPv4 VIPs may have IPv6 backends; IPv6 VIPs need IPv6 backends', () => {
  it('accepts an IPv4 VIP with IPv4 and IPv6 backends', () => {
    const c = okConfig(json(vip({ backends: [{ address: '10.1.0.1' }, { address: '2001:DB8::1' }] })));
    expect(c.vips[0]!.backends).toEqual([
      { address: '10.1.0.1', family: 4, weight: 1, drain: false, encap: 'ipip' },
      { address: '2001:db8::1', family: 6, weight: 1, drain: false, encap: 'ipip' },
    ]);
  });

  it('still needs an IPv6 encapSource for an IPv6 backend when encapSource is given', () => {
    expect(
      errorsOf(json({ ...vip({ backends: [{ address: '2001:db8::1' }] }), encapSource: '10.9.0.1' })),
    ).toEqual([
      'vips[0].backends[0].address: "2001:db8::1" is IPv6 but encapSource has no IPv6 address (no v6 support)',
    ]);
  });

  it('refuses an IPv6 VIP with an IPv4 backend', () => {
    expect(errorsOf(json(vip({ address: '2001:db8::10', backends: [{ address: '10.1.0.1' }] })))).toEqual([
      'vips[0].backends[0].address: "10.1.0.1" is IPv4 but the VIP is IPv6 (IPv6 is not carried in IPv4: an IPv6 VIP needs IPv6 backends; an IPv4 VIP may have both)',
    ]);
  });
});

describe('JSON: duplicate keys are refused with their path (JSON.parse would keep the last)', () => {
  it('names a top-level duplicate with line and column', () => {
    expect(
      errorsOf(parseConfig('{\n  "interface": "eth0",\n  "interface": "eth1"\n}', { format: 'json' })),
    ).toEqual([
      'interface: JSON error at line 3, column 3: the key appears twice in its object (keys must be unique; JSON.parse would keep the last silently)',
    ]);
  });

  it('names nested duplicates by path, sees through escapes, and ignores the same key in other objects', () => {
    const text = JSON.stringify(
      vip({ backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', weight: 1 }] }),
    )
      .replace('"weight":1', '"weight":1,"weigh\\u0074":2')
      .replace('"port":80', '"port":80,"port":81');
    const errs = errorsOf(parseConfig(text, { format: 'json' }));
    expect(errs.map((e) => e.split(':')[0])).toEqual(['vips[0].port', 'vips[0].backends[1].weight']);
  });

  it('accepts keys repeated across objects and strings that look like keys', () => {
    const c = okConfig(
      parseConfig(
        JSON.stringify({
          interface: 'eth0',
          vips: [
            {
              name: 'a "quoted" \\ name',
              address: '10.0.0.10',
              port: 80,
              backends: [{ address: '10.1.0.1' }],
            },
            { name: 'b', address: '10.0.0.11', port: 80, backends: [{ address: '10.1.0.1' }] },
          ],
        }).replace('"a \\"quoted\\" \\\\ name"', '"a-name"'),
        { format: 'json' },
      ),
    );
    expect(c.vips.map((v) => v.name)).toEqual(['a-name', 'b']);
  });

  it('finds duplicates among many keys of one object (past the short list, kept in a Set then)', () => {
    const keys = Array.from({ length: 40 }, (_, i) => `"k${i}": ${i}`);
    // k3 repeated while the object has few keys, k17 and k30 once it has many; k39 in a sibling object is no duplicate
    const text = `{"a": {${[...keys.slice(0, 5), '"k3": 0', ...keys.slice(5, 20), '"k17": 0', ...keys.slice(20), '"k30": 0'].join(', ')}}, "b": {"k39": 1}}`;
    const r = parseDocumentText(text, 'json');
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.errors.map((e) => e.path)).toEqual(['a.k3', 'a.k17', 'a.k30']);
    expect(parseDocumentText(`{"a": {${keys.join(', ')}}, "b": {"k39": 1}}`, 'json').ok).toBe(true);
  });

  it('counts the keys of a JSON text as JSON.parse sees them, each repeat counted (the check before the key pass)', () => {
    const keysOf = (v: unknown): number => {
      if (v === null || typeof v !== 'object') return 0;
      const xs = Array.isArray(v) ? (v as unknown[]) : Object.values(v);
      return (Array.isArray(v) ? 0 : xs.length) + xs.reduce<number>((n, x) => n + keysOf(x), 0);
    };
    // strings holding braces, brackets, commas, colons, quotes and backslashes; keys with escapes; empty containers
    const tricky = {
      'a{': ['}', ']', ',', '"k":', { '': {}, 'x\\"': [[], {}] }],
      'q"uo\\te': '\\',
      __proto__x: { n: 1, s: '{"not": "a key"}', t: true, z: null },
      list: [1, 'a,b', { deep: [{ d: [{}] }] }],
    };
    for (const indent of [0, 2]) {
      const text = JSON.stringify(tricky, null, indent);
      expect(jsonKeyCount(text)).toBe(keysOf(JSON.parse(text)));
    }
    expect(jsonKeyCount(JSON.stringify({ __proto__: null, a: 1 }))).toBe(1);
    expect(jsonKeyCount('{"__proto__": {"a": 1}}')).toBe(keysOf(JSON.parse('{"__proto__": {"a": 1}}')));
    expect(jsonKeyCount('[]')).toBe(0);
    expect(jsonKeyCount('"{\\"a\\": 1}"')).toBe(0);
    // a repeat: one key more in the text than in the document
    const dup = '{"a": {"k": 1, "k": 2}, "b": [{"k": 1}]}';
    expect(jsonKeyCount(dup)).toBe(5);
    expect(keysOf(JSON.parse(dup))).toBe(4);
    // random documents: the text's count is the parsed document's
    let seed = 7;
    const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const gen = (depth: number): unknown => {
      const k = rnd(depth > 3 ? 3 : 6);
      if (k === 0) return rnd(1000);
      if (k === 1) return ['x', '{', '"', '\\', ',', ':]'][rnd(6)]! + String(rnd(9));
      if (k === 2) return null;
      if (k === 3) return Array.from({ length: rnd(4) }, () => gen(depth + 1));
      return Object.fromEntries(
        Array.from({ length: rnd(5) }, (_, i) => [`k${i}${['', '"', '{', '\\'][rnd(4)]!}`, gen(depth + 1)]),
      );
    };
    for (let i = 0; i < 200; i++) {
      const text = JSON.stringify(gen(0), null, rnd(2) * 2);
      expect(jsonKeyCount(text)).toBe(keysOf(JSON.parse(text)));
    }
  });

  it('lists at most 20 duplicates, then how many more', () => {
    const keys = Array.from({ length: 30 }, () => '"interface": "eth0"').join(', ');
    const errs = errorsOf(parseConfig(`{${keys}}`, { format: 'json' }));
    expect(errs).toHaveLength(21);
    expect(errs[20]).toBe('(file): and 9 more duplicate keys');
  });

  it('scans a 1,024-VIP x 100-backend JSON file quickly', () => {
    const vips = Array.from({ length: 1024 }, (_, i) => ({
      name: `v${i}`,
      address: `10.${(i >> 8) & 255}.${i & 255}.1`,
      port: 80,
      tableSize: 1021,
      backends: Array.from({ length: 100 }, (__, j) => ({
        address: `172.16.${i % 256}.${j + 1}`,
        weight: 1,
      })),
    }));
    const text = JSON.stringify(
      { interface: 'eth0', limits: { maxVips: 2048, maxBackends: 1 << 20 }, vips },
      null,
      2,
    );
    const t0 = performance.now();
    const r = parseConfig(text, { format: 'json' });
    const ms = performance.now() - t0;
    // Backend addresses and keys repeat across VIPs and backends: not duplicates.
    expect(okConfig(r).vips).toHaveLength(1024);
    expect(ms).toBeLessThan(10_000);
  });
});

describe('JSON syntax errors give line and column and never quote the text', () => {
  it.each<[string, string]>([
    [
      '{"bgp": {"peers": [{"password": hunter2}]}}',
      '(file): JSON syntax error at line 1, column 33: unexpected character',
    ],
    [
      '{\n  "a": 1,\n}',
      '(file): JSON syntax error at line 3, column 1: Expected double-quoted property name',
    ],
    [
      '{"password": "s3cret" "x": 1}',
      "(file): JSON syntax error at line 1, column 23: Expected ',' or '}' after property value",
    ],
    ['{"a": tru', '(file): JSON syntax error at line 1, column 10: unexpected end of the text'],
  ])('%j', (text, message) => {
    const errs = errorsOf(parseConfig(text, { format: 'json' }));
    expect(errs).toEqual([message]);
    for (const secret of ['hunter2', 'unter', 's3cret']) expect(errs.join('')).not.toContain(secret);
  });
});

describe('.nan and .inf are shown as YAML writes them, not as null', () => {
  it.each<[string, string]>([
    ['    backends: [{address: 10.1.0.1, weight: .nan}]', 'vips[0].backends[0].weight: .nan is not a number'],
    [
      '    backends: [{address: 10.1.0.1, weight: .inf}]',
      'vips[0].backends[0].weight: .inf is not an integer',
    ],
    ['    tableSize: -.inf', 'vips[0].tableSize: -.inf is not an integer'],
    ['    tableSize: .NaN', 'vips[0].tableSize: .nan is not a number'],
    ['    tableSize: .inf', 'vips[0].tableSize: .inf is not a prime'],
  ])('%s', (line, start) => {
    const errs = errorsOf(
      yaml(`interface: eth0\nvips:\n  - name: web\n    address: 10.0.0.10\n    port: 80\n${line}\n`),
    );
    expect(errs.some((e) => e.startsWith(start))).toBe(true);
    expect(errs.join('\n')).not.toMatch(/null/);
  });

  it('showValue: inside lists and maps too', () => {
    expect(showValue([NaN, { a: -Infinity }, Infinity, 'x'])).toBe('[.nan,{"a":-.inf},.inf,"x"]');
    expect(showValue(NaN)).toBe('.nan');
  });
});

describe('secrets (bgp.peers[].password) are never echoed', () => {
  const withPassword = (pw: string) =>
    yaml(`interface: eth0
bgp:
  asn: 65001
  routerId: 10.0.0.2
  peers:
    - address: 10.0.0.1
      asn: 65000
      password: ${pw}
vips: []
`);

  it('an unquoted numeric password: rejected, the value not in the message, the fix named', () => {
    const errs = errorsOf(withPassword('123456'));
    expect(errs).toEqual([
      'bgp.peers[0].password: the secret value (a number) is not a string (write it in quotes)',
    ]);
    expect(errs.join('\n')).not.toContain('123456');
  });

  it.each([
    '987654321987654321',
    'true',
    '[hunter2, x]',
    '{k: hunter2}',
    `"${'p'.repeat(81)}"`,
    '""',
    '.nan',
  ])('password %s: the value is not in any message', (pw) => {
    const errs = errorsOf(withPassword(pw)).join('\n');
    expect(errs).toMatch(/^bgp\.peers\[0\]\.password: /);
    for (const part of ['987654321', 'hunter2', 'ppppp', '.nan']) expect(errs).not.toContain(part);
  });

  it("parseBgpConfig (the speaker's own check) does not echo it either", () => {
    const base = {
      asn: 65001,
      routerId: '10.0.0.2',
      peers: [{ address: '10.0.0.1', asn: 65000, password: 123456 }],
    };
    expect(() => parseBgpConfig(base)).toThrow(/password: .*\(got the secret value \(a number\)\)/);
    try {
      parseBgpConfig(base);
    } catch (e) {
      expect((e as Error).message).not.toContain('123456');
    }
  });

  it('a peer written as a map (not a list) is quoted with its password masked', () => {
    const errs = errorsOf(
      yaml(`interface: eth0
bgp: { asn: 65001, routerId: 10.0.0.2, peers: { address: 10.0.0.1, asn: 65000, password: hunter2 } }
vips: []
`),
    );
    expect(errs).toEqual([
      'bgp.peers: {"address":"10.0.0.1","asn":65000,"password":(secret)} is not an array',
    ]);
    expect(() =>
      parseBgpConfig({ asn: 65001, peers: { address: '10.0.0.1', asn: 65000, password: 'hunter2' } }),
    ).toThrow(/bgp\.peers: .*\(got \{"address":"10\.0\.0\.1","asn":65000,"password":\(secret\)\}\)/);
  });

  it('a valid quoted password is accepted', () => {
    expect(withPassword('"123456"').ok).toBe(true);
  });
});
