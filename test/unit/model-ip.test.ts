// Address helpers: IPv4/IPv6 parsing, RFC 5952 canonical text, prefixes, MACs.
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';
import { canonicalIp, canonicalMac, formatIp, ipFamily, parseIp, parsePrefix } from '../../src/model/ip';

describe('canonicalIp', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::', 'fe80::'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
  ])('%s -> %s', (input, out) => {
    expect(canonicalIp(input)).toBe(out);
  });

  it.each(['10.0.0.300', '010.0.0.1', '1.2.3', 'fe80::1%eth0', '[::1]', '', 'x', '1:2:3:4:5:6:7:8:9'])(
    'rejects %j',
    (input) => {
      expect(canonicalIp(input)).toBeNull();
      expect(ipFamily(input)).toBe(0);
    },
  );

  it('agrees with the WHATWG URL serializer and round-trips for any 16 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const text = formatIp(bytes);
        expect(new URL(`http://[${text}]/`).hostname).toBe(`[${text}]`);
        expect(parseIp(text)?.bytes).toEqual(bytes);
      }),
      { numRuns: 500 },
    );
  });

  it('IPv4: the same text and bytes as ipaddr.js (and the URL serializer) for any 4 bytes, without it', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (bytes) => {
        const text = formatIp(bytes);
        expect(text).toBe(ipaddr.fromByteArray(Array.from(bytes)).toString());
        expect(new URL(`http://${text}/`).hostname).toBe(text);
        const p = parseIp(text)!;
        expect(p.family).toBe(4);
        expect(p.bytes).toEqual(bytes);
        expect(Array.from(p.bytes)).toEqual(ipaddr.parse(text).toByteArray());
        expect(canonicalIp(text)).toBe(text);
      }),
      { numRuns: 1000 },
    );
  });

  it("IPv4 parsing by hand accepts exactly what node's isIP takes as IPv4, with the split's bytes", () => {
    // Text near dotted quads: digits, dots and a few other characters, 0-16 long.
    const near = fc
      .array(fc.constantFrom(...'0123456789........0125 x%:-+'.split('')), { maxLength: 16 })
      .map((cs) => cs.join(''));
    const parts = fc
      .array(fc.oneof(fc.nat(300).map(String), fc.constantFrom('00', '01', '007', '', '0255')), {
        minLength: 3,
        maxLength: 5,
      })
      .map((ps) => ps.join('.'));
    fc.assert(
      fc.property(fc.oneof(near, parts), (text) => {
        const p = parseIp(text);
        if (isIP(text) === 4) {
          expect(p?.family).toBe(4);
          expect(Array.from(p!.bytes)).toEqual(text.split('.').map(Number));
        } else expect(p?.family).not.toBe(4);
      }),
      { numRuns: 20_000 },
    );
    for (const t of ['0.0.0.0', '255.255.255.255', '1.2.3.4', '10.201.123.45'])
      expect(Array.from(parseIp(t)!.bytes)).toEqual(t.split('.').map(Number));
    for (const t of [
      '256.0.0.1',
      '1.2.3.4.',
      '.1.2.3.4',
      '1..2.3',
      '1.2.3.04',
      '1.2.3.4%e',
      ' 1.2.3.4',
      '1.2.3.4 ',
    ])
      expect(parseIp(t)).toBeNull();
  });

  it('rejects a buffer that is not 4 or 16 bytes', () => {
    expect(() => formatIp(new Uint8Array(5))).toThrow('4 or 16 bytes, got 5');
  });
});

describe('parsePrefix', () => {
  it('parses prefixes, clears host bits, treats bare addresses as host routes', () => {
    expect(parsePrefix('10.1.2.3/24')).toEqual({ prefix: '10.1.2.0', prefixLength: 24, family: 4 });
    expect(parsePrefix('10.1.2.3')).toEqual({ prefix: '10.1.2.3', prefixLength: 32, family: 4 });
    expect(parsePrefix('2001:db8::ff/120')).toEqual({ prefix: '2001:db8::', prefixLength: 120, family: 6 });
    expect(parsePrefix('2001:db8::1')).toEqual({ prefix: '2001:db8::1', prefixLength: 128, family: 6 });
    expect(parsePrefix('10.1.2.3/0')).toEqual({ prefix: '0.0.0.0', prefixLength: 0, family: 4 });
  });
  it.each(['10.0.0.0/33', '2001:db8::/129', '10.0.0.0/', '10.0.0.0/x', '10.0.0/8', 'a/8'])(
    'rejects %j',
    (p) => {
      expect(parsePrefix(p)).toBeNull();
    },
  );
});

describe('canonicalMac', () => {
  it('accepts colon or dash forms, any case', () => {
    expect(canonicalMac('AA:bb:CC:00:11:22')).toBe('aa:bb:cc:00:11:22');
    expect(canonicalMac('aa-bb-cc-00-11-22')).toBe('aa:bb:cc:00:11:22');
  });
  it.each(['aa:bb:cc:00:11', 'aa:bb:cc:00:11:2g', 'aabbcc001122', ''])('rejects %j', (m) => {
    expect(canonicalMac(m)).toBeNull();
  });
});
