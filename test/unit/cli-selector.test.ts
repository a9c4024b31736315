// Pure parts of the CLI: VIP selectors (IPv4 and IPv6), the versioned JSON documents, number arguments, status lines.
import {
  daemonLines,
  findVip,
  formatCheck,
  formatOverride,
  parseVipSelector,
} from '../../src/cli/commands/inspect';
import {
  CliError,
  errorDocument,
  JSON_API_VERSION,
  jsonDocument,
  ndjsonLine,
  numberArg,
} from '../../src/cli/output';

describe('parseVipSelector', () => {
  it.each([
    ['10.0.0.1', { address: '10.0.0.1', port: null, protocol: null }],
    ['10.0.0.1:80', { address: '10.0.0.1', port: 80, protocol: null }],
    ['10.0.0.1:*', { address: '10.0.0.1', port: 0, protocol: null }],
    ['10.0.0.1/udp', { address: '10.0.0.1', port: null, protocol: 'udp' }],
    ['10.0.0.1:53/UDP', { address: '10.0.0.1', port: 53, protocol: 'udp' }],
    // The cases: a bare IPv6 VIP, with and without a protocol.
    ['2001:db8:100::53', { address: '2001:db8:100::53', port: null, protocol: null }],
    ['2001:db8:100::53/udp', { address: '2001:db8:100::53', port: null, protocol: 'udp' }],
    ['[2001:db8:100::53]', { address: '2001:db8:100::53', port: null, protocol: null }],
    ['[2001:db8:100::53]:53', { address: '2001:db8:100::53', port: 53, protocol: null }],
    ['[2001:db8:100::53]:53/udp', { address: '2001:db8:100::53', port: 53, protocol: 'udp' }],
    ['[2001:db8:100::53]:*/tcp', { address: '2001:db8:100::53', port: 0, protocol: 'tcp' }],
    // Written another way, found as the maps hold it (canonical).
    ['2001:DB8:100:0:0:0:0:53', { address: '2001:db8:100::53', port: null, protocol: null }],
    ['::ffff:10.0.0.1', { address: '::ffff:a00:1', port: null, protocol: null }],
  ])('%s', (text, expected) => {
    expect(parseVipSelector(text)).toEqual(expected);
  });

  it.each([
    'web',
    '7',
    '10.0.0.1:70000',
    '10.0.0.1:http',
    '[10.0.0.300]:80',
    '2001:db8::53:80:99:1:2:3',
    '[::1',
    '/udp',
    '',
  ])('not an address selector: %j', (text) => {
    expect(parseVipSelector(text)).toBeNull();
  });
});

describe('JSON documents', () => {
  it('every document starts with apiVersion and kind', () => {
    const d = jsonDocument('VipList', { items: [] });
    expect(Object.keys(d)).toEqual(['apiVersion', 'kind', 'items']);
    expect(d).toEqual({ apiVersion: 'peak-xdp/v1', kind: 'VipList', items: [] });
    expect(JSON_API_VERSION).toBe('peak-xdp/v1');
  });

  it('NDJSON lines are one line each, with the time, bigints as numbers', () => {
    const line = ndjsonLine('Stats', { counters: [{ total: 5n }] }, new Date('2026-01-02T03:04:05.678Z'));
    expect(line).not.toContain('\n');
    expect(JSON.parse(line)).toEqual({
      apiVersion: 'peak-xdp/v1',
      kind: 'Stats',
      time: '2026-01-02T03:04:05.678Z',
      counters: [{ total: 5 }],
    });
  });

  it('an error document carries the message and the exit code', () => {
    expect(errorDocument('no VIP "x"', 2)).toEqual({
      apiVersion: 'peak-xdp/v1',
      kind: 'Error',
      error: { message: 'no VIP "x"', exitCode: 2 },
    });
  });
});

describe('numberArg', () => {
  const limit = numberArg('limit');
  it.each([
    ['10', 10],
    [' 2.5 ', 2.5],
    ['-1', -1],
    ['0x10', 16],
    [7, 7],
    [undefined, undefined],
  ])('%j -> %j', (v, n) => {
    expect(limit(v)).toBe(n);
  });
  it.each([
    ['abc', '--limit: "abc" is not a number'],
    ['', '--limit: "" is not a number'],
    ['Infinity', '--limit: "Infinity" is not a number'],
    [['1', '2'], '--limit: given 2 times (1, 2): give it once'],
  ])('%j is refused, echoing the input', (v, message) => {
    let err: unknown;
    try {
      limit(v);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toBe(message);
    expect((err as CliError).code).toBe(2);
  });
});

describe('status and backends text', () => {
  it('status shows every readiness problem and a rejected reload on its own line', () => {
    expect(daemonLines(null)).toEqual(['daemon      not reachable (admin API: --admin)']);
    expect(daemonLines({ readiness: { ready: true, reasons: [] }, reloadError: null })).toEqual([
      'daemon      ready',
    ]);
    expect(
      daemonLines({
        readiness: {
          ready: false,
          reasons: ['balancer not attached to eth0', 'datapath not reconciled yet'],
        },
        reloadError: 'vips[0].port: 70000 is above the maximum 65535',
      }),
    ).toEqual([
      'daemon      NOT READY',
      '  problem   balancer not attached to eth0',
      '  problem   datapath not reconciled yet',
      '  problem   config reload rejected, previous config in force: vips[0].port: 70000 is above the maximum 65535',
    ]);
    // A reason that already names the reload error is not repeated.
    expect(
      daemonLines({
        readiness: { ready: true, reasons: ['config reload rejected, previous config in force: bad'] },
        reloadError: 'bad',
      }),
    ).toEqual([
      'daemon      ready, degraded (1)',
      '  problem   config reload rejected, previous config in force: bad',
    ]);
  });

  it('last check and override columns', () => {
    const now = Date.parse('2026-01-01T00:00:10Z');
    expect(formatCheck(null, now)).toBeNull();
    expect(
      formatCheck({ ok: true, detail: 'HTTP 200', durationMs: 2, at: '2026-01-01T00:00:07Z' }, now),
    ).toBe('ok HTTP 200, 3s ago');
    expect(
      formatCheck({ ok: false, detail: 'ECONNREFUSED', durationMs: 1, at: '2025-12-31T23:55:10Z' }, now),
    ).toBe('FAIL ECONNREFUSED, 5m ago');
    expect(formatOverride(null)).toBeNull();
    expect(formatOverride(undefined)).toBeNull();
    expect(formatOverride({ drain: true, at: '2026-01-01T00:00:00Z' })).toBe('drain (2026-01-01T00:00:00Z)');
    expect(formatOverride({ drain: false, weight: 0, at: 't' })).toBe('undrain, weight 0 (t)');
  });
});

describe('findVip', () => {
  // The datapath's VIP list is all findVip reads of it; no daemon answers on port 1.
  const spec = (id: number, address: string, port: number, protocol: 'tcp' | 'udp') => ({
    id,
    key: { address, port, protocol },
  });
  const dp = {
    listVips: async () => [
      spec(1, '2001:db8:100::53', 53, 'udp'),
      spec(2, '2001:db8:100::53', 53, 'tcp'),
      spec(3, '192.0.2.10', 80, 'tcp'),
    ],
  } as unknown as Parameters<typeof findVip>[0];
  const a = { admin: '127.0.0.1:1' };

  it.each([
    ['2001:db8:100::53/udp', 1],
    ['[2001:db8:100::53]:53/tcp', 2],
    ['2001:DB8:100::0:53/tcp', 2],
    ['192.0.2.10', 3],
    ['3', 3],
  ])('%s is VIP %d', async (sel, id) => {
    expect((await findVip(dp, a, sel)).id).toBe(id);
  });

  it('an ambiguous IPv6 selector names the candidates; an unknown one says how to write it', async () => {
    await expect(findVip(dp, a, '2001:db8:100::53')).rejects.toThrow(
      '"2001:db8:100::53" matches 2 VIPs ([2001:db8:100::53]:53/udp, [2001:db8:100::53]:53/tcp): add :port/proto',
    );
    await expect(findVip(dp, a, '2001:db8:100::54')).rejects.toThrow(/^no VIP "2001:db8:100::54"/);
  });
});
