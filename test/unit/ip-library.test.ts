// model/ip over ipaddr.js: what it accepts (node's isIP, not the library's looser forms), its one quirk we undo,
// special-purpose ranges against a bit-mask oracle, address <-> integer, prefix bounds, BGP's adapters.
import fc from 'fast-check';
import * as bgpIp from '../../src/bgp/ip';
import {
  bigIntToIp,
  canonicalIp,
  describeSpecialAddress,
  ipToBigInt,
  maskBytes,
  parseIp,
  parsePrefix,
  parsePrefixBytes,
  prefixBounds,
  SpecialAddress,
  specialAddress,
  unmapIpv4,
  writeIp,
} from '../../src/model/ip';

const bytesOf = (text: string): number[] => Array.from(parseIp(text)!.bytes);

describe('parseIp', () => {
  it('reads the IPv4-compatible "::a.b.c.d" as ::a.b.c.d, not as IPv4-mapped (ipaddr.js does the latter)', () => {
    expect(bytesOf('::1.2.3.4')).toEqual([...new Array<number>(12).fill(0), 1, 2, 3, 4]);
    expect(canonicalIp('::1.2.3.4')).toBe('::102:304');
    expect(canonicalIp('::ffff:1.2.3.4')).toBe('::ffff:102:304');
    expect(canonicalIp('1::1.2.3.4')).toBe('1::102:304');
    // The WHATWG URL parser agrees.
    expect(new URL('http://[::1.2.3.4]/').hostname).toBe('[::102:304]');
  });

  it.each([
    '0x7f.0.0.1',
    '127.1',
    '010.0.0.1',
    '0177.0.0.1',
    '4294967295',
    '1.2.3.4%x',
    'fe80::1%eth0',
    ' 1.2.3.4',
  ])('refuses %j, which ipaddr.js alone would read', (text) => {
    expect(parseIp(text)).toBeNull();
  });

  it('gives 4 or 16 bytes and the family', () => {
    expect(parseIp('192.0.2.1')).toEqual({ family: 4, bytes: Uint8Array.from([192, 0, 2, 1]) });
    expect(parseIp('2001:db8::1')?.family).toBe(6);
    expect(parseIp('2001:db8::1')?.bytes).toHaveLength(16);
  });
});

describe('writeIp', () => {
  const written = (text: string, at = 3): { family: number; out: number[] } => {
    const out = new Uint8Array(24).fill(0xee);
    return { family: writeIp(text, out, at), out: Array.from(out) };
  };
  const fill = (n: number): number[] => new Array<number>(n).fill(0xee);

  it("writes parseIp's bytes at the offset and gives the family", () => {
    expect(written('192.0.2.1')).toEqual({ family: 4, out: [...fill(3), 192, 0, 2, 1, ...fill(17)] });
    expect(written('255.255.255.255', 0).out.slice(0, 5)).toEqual([255, 255, 255, 255, 0xee]);
    expect(written('2001:db8::1', 8)).toEqual({ family: 6, out: [...fill(8), ...bytesOf('2001:db8::1')] });
    expect(written('::1.2.3.4', 0).out.slice(0, 16)).toEqual(bytesOf('::1.2.3.4'));
  });

  it.each([
    '0x7f.0.0.1',
    '127.1',
    '010.0.0.1',
    '1.2.3.256',
    '1.2.3.4.5',
    '1.2.3.',
    '.1.2.3',
    '1..2.3',
    ' 1.2.3.4',
    'fe80::1%eth0',
    '',
    'x',
  ])('writes nothing for %j, which parseIp refuses', (text) => {
    expect(parseIp(text)).toBeNull();
    expect(written(text)).toEqual({ family: 0, out: fill(24) });
  });

  it('agrees with parseIp on any dotted quad text, valid or not', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.nat(300).map(String), fc.constantFrom('', '00', '01', '1a', '-1')), {
          minLength: 1,
          maxLength: 5,
        }),
        (parts) => {
          const text = parts.join('.');
          const p = parseIp(text);
          const w = written(text, 0);
          expect(w.family).toBe(p?.family ?? 0);
          if (p !== null) expect(w.out.slice(0, p.bytes.length)).toEqual(Array.from(p.bytes));
          else expect(w.out).toEqual(fill(24));
        },
      ),
    );
  });
});

describe('prefixes', () => {
  it('parsePrefixBytes says whether the address or the length is wrong', () => {
    expect(parsePrefixBytes('x/8')).toEqual({ ok: false, error: 'address' });
    expect(parsePrefixBytes('10.0.0.0/33')).toEqual({ ok: false, error: 'length', family: 4 });
    expect(parsePrefixBytes('::/129')).toEqual({ ok: false, error: 'length', family: 6 });
    expect(parsePrefixBytes('10.1.2.3/8')).toEqual({
      ok: true,
      prefix: { family: 4, bytes: Uint8Array.from([10, 0, 0, 0]), prefixLength: 8 },
    });
  });

  it('maskBytes clears host bits and keeps a Buffer a Buffer', () => {
    const b = Buffer.from([10, 255, 255, 255]);
    const m = maskBytes(b, 12);
    expect(Buffer.isBuffer(m)).toBe(true);
    expect(Array.from(m)).toEqual([10, 240, 0, 0]);
    expect(Array.from(b)).toEqual([10, 255, 255, 255]);
    expect(Array.from(maskBytes(parseIp('2001:db8:ffff::1')!.bytes, 36))).toEqual(bytesOf('2001:db8:f000::'));
  });

  it.each([
    ['10.0.0.0/28', 0x0a000000n, 0x0a00000fn],
    ['10.0.0.7/32', 0x0a000007n, 0x0a000007n],
    ['0.0.0.0/0', 0n, 0xffffffffn],
    ['2001:db8::/120', ipToBigInt(parseIp('2001:db8::')!.bytes), ipToBigInt(parseIp('2001:db8::ff')!.bytes)],
    ['::/0', 0n, (1n << 128n) - 1n],
  ])('prefixBounds(%s)', (text, first, last) => {
    expect(prefixBounds(parsePrefix(text)!)).toEqual({ first, last });
  });

  it('address <-> integer round-trips for both families', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: 4, maxLength: 4 }),
          fc.uint8Array({ minLength: 16, maxLength: 16 }),
        ),
        (bytes) => {
          const text = bigIntToIp(ipToBigInt(bytes), bytes.length === 4 ? 4 : 6);
          expect(parseIp(text)?.bytes).toEqual(bytes);
        },
      ),
      { numRuns: 300 },
    );
    expect(ipToBigInt(parseIp('0.0.1.2')!.bytes)).toBe(258n);
    expect(bigIntToIp(258n, 6)).toBe('::102');
  });
});

/** The ranges of specialAddress's doc comment as bit masks: the oracle the library's matching must agree with. */
function oracle(b: Uint8Array): SpecialAddress | null {
  const at = (i: number): number => b[i] ?? 0;
  if (b.length === 4) {
    if (at(0) === 0) return b.every((x) => x === 0) ? 'unspecified' : 'this-network';
    if (at(0) === 127) return 'loopback';
    if (at(0) === 169 && at(1) === 254) return 'link-local';
    if (at(0) >> 4 === 0xe) return 'multicast';
    return b.every((x) => x === 255) ? 'broadcast' : null;
  }
  if (at(0) === 0xff) return 'multicast';
  if (at(0) === 0xfe && at(1) >> 6 === 2) return 'link-local';
  const zero = (from: number, to: number): boolean => b.subarray(from, to).every((x) => x === 0);
  if (zero(0, 15) && at(15) === 0) return 'unspecified';
  if (zero(0, 15) && at(15) === 1) return 'loopback';
  return zero(0, 10) && at(10) === 0xff && at(11) === 0xff ? 'ipv4-mapped' : null;
}

describe('specialAddress', () => {
  it.each([
    ['0.0.0.0', 'unspecified'],
    ['0.0.0.1', 'this-network'],
    ['0.255.255.255', 'this-network'],
    ['1.0.0.0', null],
    ['126.255.255.255', null],
    ['127.0.0.1', 'loopback'],
    ['128.0.0.0', null],
    ['169.254.0.0', 'link-local'],
    ['169.255.0.0', null],
    ['223.255.255.255', null],
    ['224.0.0.0', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['240.0.0.1', null],
    ['255.255.255.254', null],
    ['255.255.255.255', 'broadcast'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::2', null],
    ['fe80::', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fec0::', null],
    ['fc00::1', null],
    ['ff02::1', 'multicast'],
    ['::ffff:1.2.3.4', 'ipv4-mapped'],
    ['::fffe:1.2.3.4', null],
    ['::1.2.3.4', null],
    ['64:ff9b::1.2.3.4', null],
    ['2001:db8::1', null],
  ])('%s -> %s', (text, kind) => {
    expect(specialAddress(parseIp(text)!.bytes)).toBe(kind);
  });

  it('agrees with the bit-mask oracle on random and near-range addresses', () => {
    const near = fc
      .tuple(
        fc.constantFrom(0, 127, 169, 224, 239, 240, 255, 0xfe, 0xff),
        fc.nat(255),
        fc.nat(255),
        fc.nat(255),
      )
      .map((a) => Uint8Array.from(a));
    const near6 = fc
      .tuple(fc.constantFrom(0, 0xfe, 0xff), fc.nat(255), fc.boolean(), fc.nat(3))
      .map(([a, b, mapped, last]) => {
        const x = new Uint8Array(16);
        if (a !== 0) [x[0], x[1]] = [a, b];
        if (mapped) [x[10], x[11]] = [0xff, 0xff];
        x[15] = last;
        return x;
      });
    fc.assert(
      fc.property(
        fc.oneof(
          near,
          near6,
          fc.uint8Array({ minLength: 4, maxLength: 4 }),
          fc.uint8Array({ minLength: 16, maxLength: 16 }),
        ),
        (b) => {
          expect(specialAddress(b)).toBe(oracle(b));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('refuses a buffer that is not 4 or 16 bytes, and describes every kind', () => {
    expect(() => specialAddress(new Uint8Array(5))).toThrow('4 or 16 bytes, got 5');
    expect(describeSpecialAddress('this-network')).toBe('in 0.0.0.0/8 ("this network")');
    expect(describeSpecialAddress('ipv4-mapped')).toBe('an IPv4-mapped IPv6 address (never on the wire)');
  });
});

describe('unmapIpv4', () => {
  it.each([
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::ffff:a00:1', '10.0.0.1'],
    ['10.0.0.1', '10.0.0.1'],
    ['2001:db8::1', '2001:db8::1'],
    ['::1', '::1'],
    ['', ''],
  ])('%j -> %j', (text, out) => {
    expect(unmapIpv4(text)).toBe(out);
  });
});

describe('bgp/ip adapters', () => {
  it('drop an IPv6 zone (the wire has none) and refuse one on IPv4', () => {
    expect(bgpIp.ipToBytes('fe80::1%eth0')).toEqual({
      afi: bgpIp.AFI_IPV6,
      bytes: Buffer.from(parseIp('fe80::1')!.bytes),
    });
    expect(bgpIp.canonicalPrefix('fe80::1%eth0/64')).toBe('fe80::/64');
    expect(() => bgpIp.ipToBytes('1.2.3.4%x')).toThrow('"1.2.3.4%x" is not an IP address');
  });

  it('keep their messages', () => {
    expect(() => bgpIp.parsePrefix('x/8')).toThrow('prefix "x/8" does not start with an IP address');
    expect(() => bgpIp.parsePrefix('10.0.0.0/33')).toThrow(
      'prefix "10.0.0.0/33" has an invalid length (0..32)',
    );
    expect(() => bgpIp.parsePrefix('::/200')).toThrow('prefix "::/200" has an invalid length (0..128)');
    expect(() => bgpIp.parsePrefix(7 as unknown as string)).toThrow('prefix must be a string, got number');
    expect(bgpIp.parsePrefix('10.1.2.3/8')).toEqual({
      afi: bgpIp.AFI_IPV4,
      addr: Buffer.from([10, 0, 0, 0]),
      len: 8,
    });
  });
});
