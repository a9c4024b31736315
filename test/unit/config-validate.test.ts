// An unknown key hides no other error (top level, VIP, backend, bgp, kubernetes), and suggests the key meant.
import { formatIssue, parseConfig, validateConfig } from '../../src/model';
import { configSchema, vipSchema } from '../../src/model/schema';
import { editDistance, knownKeysAt, suggestKey, unknownKeyMessage } from '../../src/model/unknown-keys';
import { bgpConfigSchema } from '../../src/model/bgp';
import { configJsonSchema } from '../../scripts/gen-schema';

const errorsOf = (doc: unknown): string[] => {
  const r = validateConfig(doc);
  if (r.ok) throw new Error('expected the config to be rejected');
  return r.errors.map(formatIssue);
};

const vip = (extra: Record<string, unknown> = {}) => ({
  name: 'web',
  address: '192.0.2.10',
  port: 80,
  backends: [{ address: '10.0.0.1' }],
  ...extra,
});

describe('edit distance and suggestions', () => {
  it.each([
    ['', '', 0],
    ['port', 'port', 0],
    ['prot', 'port', 1], // a swap of neighbours
    ['interfce', 'interface', 1],
    ['kitten', 'sitting', 3],
    ['abc', '', 3],
  ])('%j / %j: %d', (a, b, d) => {
    expect(editDistance(a, b)).toBe(d);
    expect(editDistance(b, a)).toBe(d);
  });

  it('suggests the closest known key only when it is close', () => {
    expect(suggestKey('tablesize', ['tableSize', 'port'])).toBe('tableSize');
    expect(suggestKey('helthCheck', ['healthCheck', 'name'])).toBe('healthCheck');
    expect(suggestKey('x', ['tableSize', 'port'])).toBeNull();
    expect(suggestKey('completelyDifferent', ['port'])).toBeNull();
    expect(unknownKeyMessage('wieght', ['address', 'weight', 'drain'])).toBe(
      'is not a known key (did you mean "weight"?)',
    );
    expect(unknownKeyMessage('zzz', ['address'])).toBe('is not a known key');
  });

  it('finds the known keys at a path through defaults, optionals, arrays and refinements', () => {
    expect(knownKeysAt(configSchema, [])).toContain('conntrackTimeouts');
    expect(knownKeysAt(configSchema, ['limits']).sort()).toEqual([
      'conntrackEntries',
      'maxBackends',
      'maxVips',
    ]);
    expect(knownKeysAt(vipSchema, ['healthCheck'])).toEqual(
      expect.arrayContaining(['intervalMs', 'timeoutMs']),
    );
    expect(knownKeysAt(bgpConfigSchema, ['peers', 0])).toEqual(
      expect.arrayContaining(['address', 'asn', 'holdTime']),
    );
    expect(knownKeysAt(configSchema, ['nope'])).toEqual([]);
  });
});

describe('an unknown key hides nothing', () => {
  it('top level: the other fields, the VIPs and the sections are still checked', () => {
    expect(
      errorsOf({
        interface: 'eth0',
        admni: {},
        admin: { listen: 'nowhere' },
        encapSource: '127.0.0.1',
        vips: [vip({ address: '0.0.0.0' })],
        bgp: { asn: 65001, peers: [{ address: '10.0.0.300', asn: 1 }] },
        kubernetes: { pool: ['10.0.0.0/33'] },
      }),
    ).toEqual([
      'admni: is not a known key (did you mean "admin"?)',
      'admin.listen: "nowhere" is not an address:port (e.g. 127.0.0.1:9470 or [::1]:9470)',
      'encapSource: "127.0.0.1" is a loopback address, not a source address',
      'vips[0].address: "0.0.0.0" is the unspecified address, not a VIP address',
      expect.stringMatching(/^bgp\.peers\[0\]\.address: .*10\.0\.0\.300/),
      'kubernetes.pool[0]: "10.0.0.0/33" is not a CIDR (a.b.c.d/n) or a range (a-b)',
    ]);
  });

  it("in a VIP and its backends: the VIP's own checks still run", () => {
    expect(
      errorsOf({
        interface: 'eth0',
        vips: [
          vip({
            tablesize: 7,
            healthCheck: { intervalMs: 100, timeoutMs: 500, intervall: 3 },
            backends: [{ address: '192.0.2.10', wieght: 3 }],
          }),
        ],
      }),
    ).toEqual([
      'vips[0].healthCheck.intervall: is not a known key (did you mean "intervalMs"?)',
      'vips[0].backends[0].wieght: is not a known key (did you mean "weight"?)',
      'vips[0].healthCheck.timeoutMs: 500 is longer than intervalMs 100',
      'vips[0].backends[0].address: "192.0.2.10" is the VIP\'s own address',
      'vips[0].tablesize: is not a known key (did you mean "tableSize"?)',
    ]);
  });

  it('the cross-VIP checks still run with an unknown key in one VIP', () => {
    expect(errorsOf({ interface: 'eth0', vips: [vip(), vip({ x: 1 })] })).toEqual([
      'vips[1].x: is not a known key',
      'vips[1].name: "web" duplicates vips[0].name',
      'vips[1]: 192.0.2.10 port 80 tcp duplicates vips[0]',
    ]);
    expect(errorsOf({ interface: 'eth0', vips: [vip(), vip({ address: '192.0.2.11', nmae: 'a' })] })).toEqual(
      [
        'vips[1].nmae: is not a known key (did you mean "name"?)',
        'vips[1].name: "web" duplicates vips[0].name',
      ],
    );
  });

  it('the cross-VIP checks still run over VIPs with errors of their own (a bad weight, a bad address)', () => {
    expect(
      errorsOf({
        interface: 'eth0',
        vips: [
          vip(),
          vip({ backends: [{ address: '10.0.0.1', weight: -5 }] }),
          vip({ name: 'dns', address: '192.0.2.10', tableSize: 'x' }),
          vip({ name: 'web', address: 'nope' }),
        ],
      }),
    ).toEqual([
      expect.stringMatching(/^vips\[1\]\.backends\[0\]\.weight: /),
      expect.stringMatching(/^vips\[2\]\.tableSize: /),
      expect.stringMatching(/^vips\[3\]\.address: /),
      'vips[1].name: "web" duplicates vips[0].name',
      'vips[1]: 192.0.2.10 port 80 tcp duplicates vips[0]',
      'vips[2]: 192.0.2.10 port 80 tcp duplicates vips[0]',
      'vips[3].name: "web" duplicates vips[0].name',
    ]);
  });

  it('in the bgp and kubernetes sections', () => {
    const r = parseConfig(
      JSON.stringify({
        interface: 'eth0',
        bgp: { asn: 65001, peers: [{ address: '10.0.0.2', asn: 65000, holdtime: 9 }], minHealthy: 1 },
        kubernetes: { pol: [] },
      }),
      { format: 'json' },
    );
    expect(r.ok ? [] : r.errors.map(formatIssue)).toEqual([
      expect.stringMatching(/^bgp\.peers\[0\]\.holdtime: is not a known key \(did you mean "holdTime"\?\)$/),
      expect.stringMatching(
        /^bgp\.minHealthy: is not a known key \(did you mean "minHealthyBackends"\?\)$|^bgp\.minHealthy: is not a known key$/,
      ),
      'kubernetes.pol: is not a known key (did you mean "pool"?)',
    ]);
  });

  it('a good file is unchanged by all this', () => {
    const r = validateConfig({ interface: 'eth0', vips: [vip()] });
    expect(r.ok).toBe(true);
  });
});

describe('bgp.peers[].bfd intervals', () => {
  const peer = (bfd: Record<string, unknown>) => ({
    interface: 'eth0',
    bgp: { asn: 65001, peers: [{ address: '10.0.0.2', asn: 65000, bfd }] },
  });
  it.each([
    [{ minRx: 0 }, /^bgp\.peers\[0\]\.bfd\.minRx: 0 .*1$/],
    [{ minTx: 60001 }, /^bgp\.peers\[0\]\.bfd\.minTx: 60001 .*60000$/],
    [
      { minRx: 1.0001 },
      /^bgp\.peers\[0\]\.bfd\.minRx: must be a number of ms in 1\.\.60000 \(µs precision\), got 1\.0001$/,
    ],
  ])('%j: one error naming the value and the bound', (bfd, message) => {
    expect(errorsOf(peer(bfd))).toEqual([expect.stringMatching(message)]);
  });
  it('the JSON Schema carries the range', () => {
    const text = JSON.stringify(configJsonSchema());
    expect(text).toContain('"minRx":{"type":"number","minimum":1,"maximum":60000');
    expect(text).toContain('"minTx":{"type":"number","minimum":1,"maximum":60000');
  });
});
