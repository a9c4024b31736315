// Pool CIDR bounds (model/ip prefixBounds over ipaddr.js): exact first/last per prefix length and family,
// network/broadcast left out only for IPv4 /0../30, host bits in the entry ignored, allocation at the edges.
import { allocate, parsePool, Pool } from '../../src/model/pool';

const poolOf = (entries: string[]): Pool => {
  const p = parsePool(entries);
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
};
const range = (entry: string): [bigint, bigint] => {
  const [r] = poolOf([entry]);
  return [r!.first, r!.last];
};

describe('pool CIDR bounds', () => {
  it.each([
    ['10.0.0.0/24', 0x0a000001n, 0x0a0000fen],
    ['10.0.0.77/24', 0x0a000001n, 0x0a0000fen],
    ['10.0.0.4/30', 0x0a000005n, 0x0a000006n],
    ['10.0.0.4/31', 0x0a000004n, 0x0a000005n],
    ['10.0.0.4/32', 0x0a000004n, 0x0a000004n],
    ['0.0.0.0/0', 1n, 0xfffffffen],
    ['2001:db8::/126', 0x20010db8n << 96n, (0x20010db8n << 96n) + 3n],
    ['2001:db8::1/128', (0x20010db8n << 96n) + 1n, (0x20010db8n << 96n) + 1n],
    ['::/0', 0n, (1n << 128n) - 1n],
  ])('%s -> [%s, %s]', (entry, first, last) => {
    expect(range(entry)).toEqual([first, last]);
  });

  it('allocates the lowest usable address and reports exhaustion at the last one', () => {
    const pool = poolOf(['192.0.2.0/30', '2001:db8::/127']);
    const got = allocate({
      pool,
      requests: [
        { key: 'a/1', family: 4, current: null },
        { key: 'a/2', family: 4, current: null },
        { key: 'a/3', family: 4, current: null },
        { key: 'b/1', family: 6, current: null },
        { key: 'b/2', family: 6, current: '2001:db8::1' },
      ],
    });
    expect(Object.fromEntries(got)).toEqual({
      'a/1': { ok: true, address: '192.0.2.1' },
      'a/2': { ok: true, address: '192.0.2.2' },
      'a/3': { ok: false, reason: 'the IPv4 pool (192.0.2.0/30) is exhausted' },
      'b/1': { ok: true, address: '2001:db8::' },
      'b/2': { ok: true, address: '2001:db8::1' },
    });
  });
});
