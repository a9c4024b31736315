// Per-node settings (model/nodes.ts): the nodes section's schema, label selectors as Kubernetes defines them, the
// order/override/union rules of resolveNodeSettings, and the errors naming the field.
import { Config, formatIssue, validateConfig } from '../../src/model';
import {
  applyNodeSettings,
  NodeResolution,
  NodeSelector,
  NodeSettings,
  parseNodeLabels,
  resolveNodeSettings,
  selectorMatches,
} from '../../src/model/nodes';

const vip = { name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }] };

const valid = (doc: Record<string, unknown>): Config => {
  const r = validateConfig({ interface: 'eth0', vips: [vip], ...doc });
  if (!r.ok) throw new Error(`expected a valid config, got ${r.errors.map(formatIssue).join('; ')}`);
  return r.config;
};
const rejected = (doc: Record<string, unknown>): string[] => {
  const r = validateConfig({ interface: 'eth0', vips: [vip], ...doc });
  if (r.ok) throw new Error('expected the config to be rejected');
  return r.errors.map(formatIssue);
};
const settingsOf = (r: NodeResolution): NodeSettings => {
  if ('errors' in r) throw new Error(`expected settings, got ${r.errors.map(formatIssue).join('; ')}`);
  return r.settings;
};
const errorsOf = (r: NodeResolution): string[] => {
  if (!('errors' in r)) throw new Error(`expected errors, got settings ${JSON.stringify(r.settings)}`);
  return r.errors.map(formatIssue);
};
const sel = (s: Partial<NodeSelector>): NodeSelector => ({ matchLabels: {}, matchExpressions: [], ...s });

const torA = { address: '192.0.2.1', asn: 65000 };
const torB = { address: '192.0.2.129', asn: 65000 };
const spine = { address: '198.51.100.1', asn: 65100 };
const rackA = {
  name: 'lb-a1',
  labels: { 'topology.kubernetes.io/zone': 'rack-a', 'peak-xdp.io/lb-node': 'true' },
};
const rackB = {
  name: 'lb-b1',
  labels: { 'topology.kubernetes.io/zone': 'rack-b', 'peak-xdp.io/lb-node': 'true' },
};

describe('selectorMatches: Kubernetes LabelSelector semantics', () => {
  const labels = { zone: 'a', role: 'lb', empty: '' };
  it.each<[string, NodeSelector | undefined, boolean]>([
    ['omitted selects every node', undefined, true],
    ['empty selects every node', sel({}), true],
    ['matchLabels equal', sel({ matchLabels: { zone: 'a' } }), true],
    ['matchLabels all must hold', sel({ matchLabels: { zone: 'a', role: 'web' } }), false],
    ['matchLabels missing key', sel({ matchLabels: { rack: '1' } }), false],
    ['matchLabels empty value equals an empty label', sel({ matchLabels: { empty: '' } }), true],
    [
      'In: value listed',
      sel({ matchExpressions: [{ key: 'zone', operator: 'In', values: ['b', 'a'] }] }),
      true,
    ],
    [
      'In: value not listed',
      sel({ matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] }),
      false,
    ],
    ['In: key absent', sel({ matchExpressions: [{ key: 'rack', operator: 'In', values: ['a'] }] }), false],
    [
      'NotIn: value listed',
      sel({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }),
      false,
    ],
    [
      'NotIn: value not listed',
      sel({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['b'] }] }),
      true,
    ],
    [
      'NotIn: key absent holds',
      sel({ matchExpressions: [{ key: 'rack', operator: 'NotIn', values: ['a'] }] }),
      true,
    ],
    [
      'Exists: present (empty value)',
      sel({ matchExpressions: [{ key: 'empty', operator: 'Exists' }] }),
      true,
    ],
    ['Exists: absent', sel({ matchExpressions: [{ key: 'rack', operator: 'Exists' }] }), false],
    ['DoesNotExist: absent', sel({ matchExpressions: [{ key: 'rack', operator: 'DoesNotExist' }] }), true],
    ['DoesNotExist: present', sel({ matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }), false],
    [
      'labels and expressions are ANDed',
      sel({
        matchLabels: { role: 'lb' },
        matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }],
      }),
      false,
    ],
    [
      'every expression must hold',
      sel({
        matchExpressions: [
          { key: 'zone', operator: 'Exists' },
          { key: 'role', operator: 'NotIn', values: ['lb'] },
        ],
      }),
      false,
    ],
  ])('%s', (_name, selector, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });

  it('a label named like an Object.prototype member is not inherited', () => {
    expect(selectorMatches(sel({ matchExpressions: [{ key: 'constructor', operator: 'Exists' }] }), {})).toBe(
      false,
    );
    expect(
      selectorMatches(sel({ matchExpressions: [{ key: 'toString', operator: 'DoesNotExist' }] }), {}),
    ).toBe(true);
  });
});

describe('the nodes section: schema', () => {
  it('accepts entries with selectors and every override, and keeps them parsed in the Config', () => {
    const c = valid({
      bgp: { asn: 65001 },
      nodes: [
        {
          nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } },
          interface: 'ens1f0',
          asn: 65011,
          routerId: '10.0.0.1',
          nextHopMac: 'AA:BB:CC:00:00:01',
          outerSource: { ipv4: '10.10.0.0/24', ipv6: '2001:db8::/64' },
          peers: [torA],
        },
        { peers: [spine] },
      ],
    });
    expect(c.nodes).toHaveLength(2);
    expect(c.nodes![0]!.nodeSelector).toEqual({
      matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' },
      matchExpressions: [],
    });
    // Peers get their defaults like bgp.peers.
    expect(c.nodes![1]!.peers![0]).toMatchObject({ address: '198.51.100.1', port: 179, holdTime: 90 });
    expect(c.bgp!.peers).toEqual([]);
  });

  it.each<[string, unknown, RegExp]>([
    [
      'an unknown key, with a suggestion',
      [{ interfce: 'eth1' }],
      /^nodes\[0\]\.interfce: is not a known key \(did you mean "interface"\?\)/,
    ],
    [
      'a bad interface name',
      [{ interface: 'a/b' }],
      /^nodes\[0\]\.interface: "a\/b" is not a network interface name/,
    ],
    ['a bad MAC', [{ nextHopMac: 'zz' }], /^nodes\[0\]\.nextHopMac: "zz" is not a MAC address/],
    [
      'an IPv6 outer source under ipv4',
      [{ outerSource: { ipv4: '2001:db8::1' } }],
      /^nodes\[0\]\.outerSource\.ipv4: "2001:db8::1" is not an IPv4 address/,
    ],
    [
      'a loopback outer source',
      [{ outerSource: { ipv4: '127.0.0.1' } }],
      /^nodes\[0\]\.outerSource\.ipv4: "127\.0\.0\.1" is .*loopback.*not a source address/,
    ],
    [
      'not an address',
      [{ outerSource: { ipv6: 'x' } }],
      /^nodes\[0\]\.outerSource\.ipv6: "x" is not an IP address or prefix/,
    ],
    [
      'In without values',
      [{ nodeSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }],
      /^nodes\[0\]\.nodeSelector\.matchExpressions\[0\]\.values: operator In needs at least one value/,
    ],
    [
      'Exists with values',
      [{ nodeSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }],
      /^nodes\[0\]\.nodeSelector\.matchExpressions\[0\]\.values: operator Exists takes no values/,
    ],
    [
      'an unknown operator',
      [{ nodeSelector: { matchExpressions: [{ key: 'a', operator: 'Gt', values: ['1'] }] } }],
      /^nodes\[0\]\.nodeSelector\.matchExpressions\[0\]\.operator: /,
    ],
    [
      'a bad label key',
      [{ nodeSelector: { matchLabels: { '-bad': 'x' } } }],
      /^nodes\[0\]\.nodeSelector\.matchLabels\.-bad: "-bad" is not a label key/,
    ],
    [
      'a bad label value',
      [{ nodeSelector: { matchLabels: { zone: 'a b' } } }],
      /^nodes\[0\]\.nodeSelector\.matchLabels\.zone: "a b" is not a label value/,
    ],
    ['not a list', { interface: 'eth1' }, /^nodes: /],
    [
      'BGP fields without a bgp section',
      [{ asn: 65001, peers: [torA] }],
      /^nodes\[0\]\.asn: is a BGP setting, but the file has no bgp section/,
    ],
  ])('refuses %s, naming the field', (_name, nodes, message) => {
    const errors = rejected({ nodes });
    expect(errors.some((e) => message.test(e))).toBe(true);
  });

  it('refuses a peer listed twice within one entry (as bgp.peers does)', () => {
    expect(rejected({ bgp: { asn: 65001 }, nodes: [{ peers: [torA, torA] }] }).join('\n')).toMatch(
      /^nodes\[0\]\.peers\[1\]\.address: peer 192\.0\.2\.1:179 listed twice/m,
    );
  });

  it('without a nodes section, bgp.peers stays required (as before)', () => {
    expect(rejected({ bgp: { asn: 65001, peers: [] } }).join('\n')).toMatch(/^bgp\.peers: /m);
    expect(rejected({ bgp: { asn: 65001 } }).join('\n')).toMatch(/^bgp\.peers: /m);
  });

  it('a peer password in a nodes entry is never echoed', () => {
    const errors = rejected({
      bgp: { asn: 65001 },
      nodes: [{ peers: [{ ...torA, password: 'sekrit-value', holdTime: 1 }] }],
    }).join('\n');
    expect(errors).toMatch(/nodes\[0\]\.peers\[0\]\.holdTime/);
    expect(errors).not.toContain('sekrit-value');
  });
});

describe('resolveNodeSettings', () => {
  it('without a nodes section: the top level, and applyNodeSettings returns the very same config', () => {
    const c = valid({ bgp: { asn: 65001, peers: [torA] } });
    const s = settingsOf(resolveNodeSettings(c, rackA));
    expect(s).toEqual({
      node: 'lb-a1',
      matched: [],
      interface: 'eth0',
      nextHopMac: 'auto',
      encapSource: 'auto',
      bgp: { asn: 65001, routerId: 'auto', peers: c.bgp!.peers },
    });
    expect(applyNodeSettings(c, s)).toBe(c);
  });

  it('two racks: each node gets its rack’s peers plus the shared ones, its own interface and ASN', () => {
    const c = valid({
      bgp: { asn: 65001, peers: [spine] },
      nodes: [
        {
          nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } },
          peers: [torA],
          asn: 65011,
        },
        {
          nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-b' } },
          peers: [torB],
          interface: 'ens2',
          routerId: '10.0.1.1',
        },
      ],
    });
    const a = settingsOf(resolveNodeSettings(c, rackA));
    const b = settingsOf(resolveNodeSettings(c, rackB));
    expect(a.matched).toEqual([0]);
    expect(b.matched).toEqual([1]);
    expect(a.bgp!.peers.map((p) => p.address)).toEqual(['198.51.100.1', '192.0.2.1']);
    expect(b.bgp!.peers.map((p) => p.address)).toEqual(['198.51.100.1', '192.0.2.129']);
    expect([a.interface, a.bgp!.asn, a.bgp!.routerId]).toEqual(['eth0', 65011, 'auto']);
    expect([b.interface, b.bgp!.asn, b.bgp!.routerId]).toEqual(['ens2', 65001, '10.0.1.1']);
    const applied = applyNodeSettings(c, b);
    expect(applied.interface).toBe('ens2');
    expect(applied.bgp).toEqual({ ...c.bgp, asn: 65001, routerId: '10.0.1.1', peers: b.bgp!.peers });
    // Only the node's settings change: the VIPs (frozen, memoised) are the same objects.
    expect(applied.vips).toBe(c.vips);
    expect(c.interface).toBe('eth0');
  });

  it('entries apply in order: a later entry overrides an earlier one field by field', () => {
    const c = valid({
      bgp: { asn: 65001, peers: [spine] },
      nodes: [
        { interface: 'eth1', asn: 65010, nextHopMac: 'aa:bb:cc:00:00:01' },
        { nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } }, interface: 'eth2' },
        { nodeSelector: { matchExpressions: [{ key: 'gpu', operator: 'Exists' }] }, interface: 'eth9' },
        { nodeSelector: { matchLabels: { 'peak-xdp.io/lb-node': 'true' } }, nextHopMac: 'AA-BB-CC-00-00-02' },
      ],
    });
    const s = settingsOf(resolveNodeSettings(c, rackA));
    expect(s.matched).toEqual([0, 1, 3]);
    expect(s.interface).toBe('eth2');
    expect(s.bgp!.asn).toBe(65010);
    expect(s.nextHopMac).toBe('aa:bb:cc:00:00:02');
    const other = settingsOf(resolveNodeSettings(c, { name: 'x', labels: {} }));
    expect([other.matched, other.interface, other.nextHopMac]).toEqual([[0], 'eth1', 'aa:bb:cc:00:00:01']);
  });

  it('a node no entry selects runs with the top level', () => {
    const c = valid({
      bgp: { asn: 65001, peers: [spine] },
      nodes: [{ nodeSelector: { matchLabels: { zone: 'z' } }, interface: 'eth7', peers: [torA] }],
    });
    const s = settingsOf(resolveNodeSettings(c, { name: 'n', labels: { zone: 'y' } }));
    expect(s.matched).toEqual([]);
    expect(s.interface).toBe('eth0');
    expect(s.bgp!.peers.map((p) => p.address)).toEqual(['198.51.100.1']);
  });

  it('peers are the union, a peer listed again unchanged counted once', () => {
    const c = valid({
      bgp: { asn: 65001, peers: [spine] },
      nodes: [{ peers: [torA, spine] }, { peers: [{ ...torA }, torB] }],
    });
    const s = settingsOf(resolveNodeSettings(c, rackA));
    expect(s.bgp!.peers.map((p) => `${p.address}:${p.port}`)).toEqual([
      '198.51.100.1:179',
      '192.0.2.1:179',
      '192.0.2.129:179',
    ]);
  });

  it('the same address on another port is another peer', () => {
    const c = valid({
      bgp: { asn: 65001 },
      nodes: [{ peers: [torA] }, { peers: [{ ...torA, port: 1790 }] }],
    });
    expect(settingsOf(resolveNodeSettings(c, rackA)).bgp!.peers).toHaveLength(2);
  });

  it('one peer defined two ways for one node is an error naming both places', () => {
    const c = valid({
      bgp: { asn: 65001, peers: [torA] },
      nodes: [
        {
          nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } },
          peers: [{ ...torA, asn: 65009 }],
        },
      ],
    });
    expect(errorsOf(resolveNodeSettings(c, rackA))).toEqual([
      'nodes[0].peers[0]: peer 192.0.2.1:179 differs from bgp.peers[0], which also applies to node "lb-a1" (one session per peer address and port: define it once, or the same in both places)',
    ]);
    // A node the entry does not select has no conflict.
    expect(settingsOf(resolveNodeSettings(c, rackB)).bgp!.peers).toHaveLength(1);
  });

  it('no peer for a node while bgp is on: an error at bgp.peers naming the node, its labels and the entries', () => {
    const c = valid({
      bgp: { asn: 65001 },
      nodes: [
        { nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } }, peers: [torA] },
        { nodeSelector: { matchLabels: { 'peak-xdp.io/lb-node': 'true' } }, interface: 'eth3' },
      ],
    });
    expect(settingsOf(resolveNodeSettings(c, rackA)).bgp!.peers).toHaveLength(1);
    const errors = errorsOf(resolveNodeSettings(c, rackB));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      /^bgp\.peers: node "lb-b1" \(labels .*rack-b.*\) has no BGP peer: bgp\.peers is empty and no nodes\[\] entry with peers selects it \(entries selecting it: nodes\[1\]\)$/,
    );
    expect(errorsOf(resolveNodeSettings(c, { name: 'bare', labels: {} }))[0]).toMatch(
      /entries selecting it: none\)$/,
    );
  });

  it('without bgp, nodes need no peers', () => {
    const c = valid({ nodes: [{ interface: 'eth5' }] });
    const s = settingsOf(resolveNodeSettings(c, rackA));
    expect([s.interface, s.bgp]).toEqual(['eth5', null]);
    expect(applyNodeSettings(c, s).bgp).toBeUndefined();
  });

  it('outer sources: per family over encapSource prefixes; over "auto" only both families at once', () => {
    const prefixes = valid({
      encapSource: ['10.9.0.0/24'],
      nodes: [
        {
          nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } },
          outerSource: { ipv4: '10.10.0.1', ipv6: '2001:db8:a::/64' },
        },
      ],
    });
    expect(settingsOf(resolveNodeSettings(prefixes, rackA)).encapSource).toEqual([
      { prefix: '10.10.0.1', prefixLength: 32, family: 4 },
      { prefix: '2001:db8:a::', prefixLength: 64, family: 6 },
    ]);
    expect(settingsOf(resolveNodeSettings(prefixes, rackB)).encapSource).toEqual([
      { prefix: '10.9.0.0', prefixLength: 24, family: 4 },
    ]);
    const addV6 = valid({ encapSource: '10.9.0.0/24', nodes: [{ outerSource: { ipv6: '2001:db8::1' } }] });
    expect(settingsOf(resolveNodeSettings(addV6, rackA)).encapSource).toEqual([
      { prefix: '10.9.0.0', prefixLength: 24, family: 4 },
      { prefix: '2001:db8::1', prefixLength: 128, family: 6 },
    ]);
    const auto = valid({ nodes: [{ outerSource: { ipv4: '10.10.0.1', ipv6: '2001:db8::1' } }] });
    expect(settingsOf(resolveNodeSettings(auto, rackA)).encapSource).toHaveLength(2);
    const half = valid({ nodes: [{}, { outerSource: { ipv4: '10.10.0.1' } }] });
    expect(errorsOf(resolveNodeSettings(half, rackA))).toEqual([
      'nodes[1].outerSource.ipv4: sets the ipv4 outer source of node "lb-a1" while its ipv6 source stays "auto" (encapSource): set outerSource.ipv6 too, or encapSource to prefixes',
    ]);
  });

  it('reports every error of a node at once', () => {
    const c = valid({
      bgp: { asn: 65001 },
      nodes: [
        { outerSource: { ipv6: '2001:db8::1' } },
        { peers: [torA] },
        { peers: [{ ...torA, holdTime: 30 }] },
      ],
    });
    const errors = errorsOf(resolveNodeSettings(c, rackA));
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(
      /^nodes\[2\]\.peers\[0\]: peer 192\.0\.2\.1:179 differs from nodes\[1\]\.peers\[0\]/,
    );
    expect(errors[1]).toMatch(/^nodes\[0\]\.outerSource\.ipv6: sets the ipv6 outer source/);
  });

  it('is pure: the same inputs give equal results, and the config is not changed', () => {
    const c = valid({ bgp: { asn: 65001, peers: [spine] }, nodes: [{ peers: [torA], interface: 'eth1' }] });
    const before = JSON.stringify(c);
    const r1 = resolveNodeSettings(c, rackA);
    const r2 = resolveNodeSettings(c, rackA);
    expect(r1).toEqual(r2);
    applyNodeSettings(c, settingsOf(r1));
    expect(JSON.stringify(c)).toBe(before);
  });

  it('relabelling a node changes what it resolves to', () => {
    const c = valid({
      bgp: { asn: 65001 },
      nodes: [
        { nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-a' } }, peers: [torA] },
        { nodeSelector: { matchLabels: { 'topology.kubernetes.io/zone': 'rack-b' } }, peers: [torB] },
      ],
    });
    const before = settingsOf(resolveNodeSettings(c, rackA));
    const after = settingsOf(resolveNodeSettings(c, { name: 'lb-a1', labels: rackB.labels }));
    expect(before.bgp!.peers.map((p) => p.address)).toEqual(['192.0.2.1']);
    expect(after.bgp!.peers.map((p) => p.address)).toEqual(['192.0.2.129']);
  });
});

describe('parseNodeLabels (--node-labels)', () => {
  it.each<[string, Record<string, string>]>([
    ['', {}],
    ['zone=a', { zone: 'a' }],
    [
      'topology.kubernetes.io/zone=rack-a, peak-xdp.io/lb-node=true',
      { 'topology.kubernetes.io/zone': 'rack-a', 'peak-xdp.io/lb-node': 'true' },
    ],
    ['empty=', { empty: '' }],
  ])('%j', (text, labels) => {
    expect(parseNodeLabels(text)).toEqual({ ok: true, labels });
  });

  it.each<[string, RegExp]>([
    ['zone', /^"zone" is not key=value$/],
    ['=a', /^"" is not a label key/],
    ['zone=a b', /^"a b" is not a label value/],
    ['Bad.Prefix/x=1', /^"Bad\.Prefix\/x" is not a label key: its prefix is not a DNS subdomain/],
    ['a=1,a=2', /^label "a" is given twice$/],
  ])('refuses %j', (text, message) => {
    const r = parseNodeLabels(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(message);
  });
});
