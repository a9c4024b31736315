// BFD control packet codec (RFC 5880 §4, §6.7, §6.8.6): encoding, every drop reason, authentication.
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import {
  authSection,
  AuthSection,
  AuthType,
  checkAuthConfig,
  ControlPacket,
  decodeControl,
  Diag,
  diagName,
  DROP_REASONS,
  encodeControl,
  parseDiag,
  State,
  stateName,
  verifyAuth,
} from '../../src/bfd/codec';

function pkt(over: Partial<ControlPacket> = {}): ControlPacket {
  return {
    version: 1,
    diag: Diag.None,
    state: State.Up,
    poll: false,
    final: false,
    controlPlaneIndependent: true,
    demand: false,
    multipoint: false,
    detectMult: 3,
    myDiscr: 0x11223344,
    yourDiscr: 0x55667788,
    desiredMinTxUs: 300_000,
    requiredMinRxUs: 300_000,
    requiredMinEchoRxUs: 0,
    ...over,
  };
}

describe('encode', () => {
  test('lays out the header as in §4.1', () => {
    const b = encodeControl(pkt({ diag: Diag.PathDown, poll: true }));
    expect(b.toString('hex')).toBe(
      '2' + '5' + 'e8' + '03' + '18' + '11223344' + '55667788' + '000493e0' + '000493e0' + '00000000',
    );
    // version 1 in the top 3 bits, diag 5; state Up (3) << 6 | P 0x20 | C 0x08
    expect(b[0]).toBe(0x25);
    expect(b[1]).toBe(0xc0 | 0x20 | 0x08);
  });

  test('every flag bit lands on its own position', () => {
    const bits: [keyof ControlPacket, number][] = [
      ['poll', 0x20],
      ['final', 0x10],
      ['controlPlaneIndependent', 0x08],
      ['demand', 0x02],
      ['multipoint', 0x01],
    ];
    for (const [k, bit] of bits) {
      const b = encodeControl(pkt({ state: State.AdminDown, controlPlaneIndependent: false, [k]: true }));
      expect(b[1]).toBe(bit);
    }
    expect(encodeControl(pkt({ auth: authSection(simple, 0) }))[1]! & 0x04).toBe(0x04);
  });

  test('keyed SHA1 digest is SHA1 over the packet with the key in the digest field (§6.7.4)', () => {
    const key = Buffer.from('secret-key');
    const b = encodeControl(pkt({ auth: authSection(sha1, 7) }), { key });
    expect(b.length).toBe(24 + 28);
    expect(b[3]).toBe(52);
    expect(b.subarray(24, 28)).toEqual(Buffer.from([AuthType.KeyedSha1, 28, 9, 0]));
    expect(b.readUInt32BE(28)).toBe(7);
    const copy = Buffer.from(b);
    copy.fill(0, 32, 52);
    key.copy(copy, 32);
    expect(b.subarray(32)).toEqual(createHash('sha1').update(copy).digest());
  });
});

const simple = checkAuthConfig({ type: AuthType.SimplePassword, keyId: 2, secret: Buffer.from('pw') });
const sha1 = checkAuthConfig({ type: AuthType.KeyedSha1, keyId: 9, secret: Buffer.from('secret-key') });
const msha1 = checkAuthConfig({ type: AuthType.MeticulousKeyedSha1, keyId: 9, secret: Buffer.from('k') });
const md5 = checkAuthConfig({ type: AuthType.KeyedMd5, keyId: 1, secret: Buffer.from('m') });

describe('decode: §6.8.6 checks, each with its reason', () => {
  const good = encodeControl(pkt());
  const mutate = (f: (b: Buffer) => void, base = good): Buffer => {
    const b = Buffer.from(base);
    f(b);
    return b;
  };
  const cases: { name: string; input: Buffer; reason: string }[] = [
    { name: 'empty', input: Buffer.alloc(0), reason: 'short-packet' },
    { name: '23 bytes', input: good.subarray(0, 23), reason: 'short-packet' },
    { name: 'version 0', input: mutate((b) => (b[0] = b[0]! & 0x1f)), reason: 'bad-version' },
    { name: 'version 2', input: mutate((b) => (b[0] = 0x40)), reason: 'bad-version' },
    { name: 'length 23', input: mutate((b) => (b[3] = 23)), reason: 'bad-length' },
    { name: 'length beyond payload', input: mutate((b) => (b[3] = 25)), reason: 'bad-length' },
    {
      name: 'length 25 without A',
      input: Buffer.concat([mutate((b) => (b[3] = 25)), Buffer.alloc(1)]),
      reason: 'bad-length',
    },
    {
      name: 'A bit with length 24',
      input: mutate((b) => (b[1] = b[1]! | 0x04)),
      reason: 'bad-length',
    },
    { name: 'detect mult 0', input: mutate((b) => (b[2] = 0)), reason: 'detect-mult-zero' },
    { name: 'multipoint', input: mutate((b) => (b[1] = b[1]! | 0x01)), reason: 'multipoint' },
    { name: 'my discr 0', input: mutate((b) => b.writeUInt32BE(0, 4)), reason: 'my-discr-zero' },
    {
      name: 'your discr 0 in Up',
      input: mutate((b) => b.writeUInt32BE(0, 8)),
      reason: 'your-discr-zero-not-down',
    },
    {
      name: 'your discr 0 in Init',
      input: encodeControl(pkt({ state: State.Init, yourDiscr: 0 })),
      reason: 'your-discr-zero-not-down',
    },
    { name: 'P and F', input: mutate((b) => (b[1] = b[1]! | 0x30)), reason: 'poll-and-final' },
    {
      name: 'auth type unknown',
      input: mutate((b) => (b[24] = 9), encodeControl(pkt({ auth: authSection(sha1, 1) }))),
      reason: 'auth-section-bad',
    },
    {
      name: 'auth len disagrees',
      input: mutate((b) => (b[25] = 27), encodeControl(pkt({ auth: authSection(sha1, 1) }))),
      reason: 'auth-section-bad',
    },
    {
      name: 'SHA1 section with MD5 length',
      input: mutate((b) => (b[24] = AuthType.KeyedSha1), encodeControl(pkt({ auth: authSection(md5, 1) }))),
      reason: 'auth-section-bad',
    },
  ];
  test.each(cases)('$name -> $reason', ({ input, reason }) => {
    expect(decodeControl(input)).toEqual({ ok: false, reason });
  });

  test('every codec reason is named in DROP_REASONS', () => {
    expect(cases.length).toBeGreaterThan(10);
    for (const c of cases) expect(DROP_REASONS).toContain(c.reason);
  });

  test('accepts Down with your discr 0, and trailing bytes after Length', () => {
    const down = encodeControl(pkt({ state: State.Down, yourDiscr: 0 }));
    expect(decodeControl(down)).toEqual({ ok: true, packet: pkt({ state: State.Down, yourDiscr: 0 }) });
    expect(decodeControl(Buffer.concat([good, Buffer.alloc(8, 0xff)])).ok).toBe(true);
  });
});

describe('authentication', () => {
  const withAuth = (c: typeof sha1, seq: number, over: Partial<ControlPacket> = {}) => {
    const raw = encodeControl(pkt({ ...over, auth: authSection(c, seq) }), { key: c.secret });
    const d = decodeControl(raw);
    if (!d.ok) throw new Error(d.reason);
    return { raw, packet: d.packet };
  };
  const fresh = { known: false, seq: 0 };

  test('simple password: right one passes, wrong one, wrong key id, missing, unexpected are dropped', () => {
    const ok = withAuth(simple, 0);
    expect(verifyAuth({ ...ok, config: simple, rx: fresh, detectMult: 3 })).toEqual({ ok: true, rx: fresh });
    const bad = withAuth({ ...simple, secret: Buffer.from('px') }, 0);
    expect(verifyAuth({ ...bad, config: simple, rx: fresh, detectMult: 3 })).toEqual({
      ok: false,
      reason: 'auth-bad-password',
    });
    const otherLen = withAuth({ ...simple, secret: Buffer.from('pw2') }, 0);
    expect(verifyAuth({ ...otherLen, config: simple, rx: fresh, detectMult: 3 }).ok).toBe(false);
    const kid = withAuth({ ...simple, keyId: 3 }, 0);
    expect(verifyAuth({ ...kid, config: simple, rx: fresh, detectMult: 3 })).toEqual({
      ok: false,
      reason: 'auth-key-id-mismatch',
    });
    const none = { raw: encodeControl(pkt()), packet: pkt() };
    expect(verifyAuth({ ...none, config: simple, rx: fresh, detectMult: 3 })).toEqual({
      ok: false,
      reason: 'auth-missing',
    });
    expect(verifyAuth({ ...ok, config: undefined, rx: fresh, detectMult: 3 })).toEqual({
      ok: false,
      reason: 'auth-unexpected',
    });
    expect(verifyAuth({ ...none, config: undefined, rx: fresh, detectMult: 3 })).toEqual({
      ok: true,
      rx: fresh,
    });
  });

  test('keyed SHA1 / MD5: right key passes and learns the sequence; wrong key, type or a flipped bit fail', () => {
    for (const c of [sha1, md5]) {
      const ok = withAuth(c, 100);
      expect(verifyAuth({ ...ok, config: c, rx: fresh, detectMult: 3 })).toEqual({
        ok: true,
        rx: { known: true, seq: 100 },
      });
      const wrongKey = withAuth({ ...c, secret: Buffer.from('other') }, 100);
      expect(verifyAuth({ ...wrongKey, config: c, rx: fresh, detectMult: 3 })).toEqual({
        ok: false,
        reason: 'auth-bad-digest',
      });
      // A flipped bit anywhere in the covered packet (here: desired min TX) breaks the digest.
      const raw = Buffer.from(ok.raw);
      raw[15] = raw[15]! ^ 1;
      const d = decodeControl(raw);
      expect(d.ok && verifyAuth({ raw, packet: d.packet, config: c, rx: fresh, detectMult: 3 })).toEqual({
        ok: false,
        reason: 'auth-bad-digest',
      });
    }
    const ok = withAuth(sha1, 1);
    expect(verifyAuth({ ...ok, config: md5, rx: fresh, detectMult: 3 })).toEqual({
      ok: false,
      reason: 'auth-type-mismatch',
    });
  });

  test('keyed sequence window: [last, last + 3 × detectMult], modulo 2^32', () => {
    const rx = { known: true, seq: 0xfffffffe };
    const at = (seq: number) => verifyAuth({ ...withAuth(sha1, seq), config: sha1, rx, detectMult: 3 });
    expect(at(0xfffffffe).ok).toBe(true); // equal is fine for non-meticulous
    expect(at(7).ok).toBe(true); // 0xfffffffe + 9 wraps to 7
    expect(at(8)).toEqual({ ok: false, reason: 'auth-bad-sequence' });
    expect(at(0xfffffffd)).toEqual({ ok: false, reason: 'auth-bad-sequence' });
  });

  test('meticulous sequence window: [last + 1, last + 3 × detectMult]: a replay is refused', () => {
    const rx = { known: true, seq: 50 };
    const at = (seq: number) => verifyAuth({ ...withAuth(msha1, seq), config: msha1, rx, detectMult: 1 });
    expect(at(50)).toEqual({ ok: false, reason: 'auth-bad-sequence' });
    expect(at(51)).toEqual({ ok: true, rx: { known: true, seq: 51 } });
    expect(at(53).ok).toBe(true);
    expect(at(54)).toEqual({ ok: false, reason: 'auth-bad-sequence' });
  });

  test('config checks name the field and value', () => {
    expect(() => checkAuthConfig({ ...sha1, secret: Buffer.alloc(21) })).toThrow(
      'auth.secret must be 1..20 bytes for keyed-sha1, got 21',
    );
    expect(() => checkAuthConfig({ ...simple, secret: Buffer.alloc(0) })).toThrow('auth.secret');
    expect(() => checkAuthConfig({ ...simple, keyId: 256 })).toThrow('auth.keyId must be 0..255, got 256');
  });
});

describe('names', () => {
  test('diag names come from the enum', () => {
    expect(diagName(Diag.ControlDetectionTimeExpired)).toBe('control-detection-time-expired');
    expect(diagName(Diag.ForwardingPlaneReset)).toBe('forwarding-plane-reset');
    expect(diagName(Diag.AdministrativelyDown)).toBe('administratively-down');
    expect(diagName(17)).toBe('reserved-17');
    expect(parseDiag('path-down')).toBe(Diag.PathDown);
    expect(parseDiag(3)).toBe(Diag.NeighborSignaledDown);
    expect(() => parseDiag('nope')).toThrow('diag: unknown diagnostic "nope"');
    expect(stateName(State.AdminDown)).toBe('admin-down');
  });
});

describe('properties', () => {
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const arbPacket: fc.Arbitrary<ControlPacket> = fc
    .record({
      diag: fc.integer({ min: 0, max: 31 }),
      state: fc.constantFrom(State.AdminDown, State.Down, State.Init, State.Up),
      pf: fc.constantFrom<[boolean, boolean]>([false, false], [true, false], [false, true]),
      controlPlaneIndependent: fc.boolean(),
      demand: fc.boolean(),
      detectMult: fc.integer({ min: 1, max: 255 }),
      myDiscr: fc.integer({ min: 1, max: 0xffffffff }),
      yourDiscr: fc.integer({ min: 1, max: 0xffffffff }),
      desiredMinTxUs: u32,
      requiredMinRxUs: u32,
      requiredMinEchoRxUs: u32,
      auth: fc.option(
        fc.oneof(
          fc.record({
            type: fc.constant(AuthType.SimplePassword as const),
            keyId: fc.integer({ min: 0, max: 255 }),
            password: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((a) => Buffer.from(a)),
          }),
          fc
            .record({
              type: fc.constantFrom(
                AuthType.KeyedMd5,
                AuthType.MeticulousKeyedMd5,
                AuthType.KeyedSha1,
                AuthType.MeticulousKeyedSha1,
              ),
              keyId: fc.integer({ min: 0, max: 255 }),
              sequence: u32,
              seed: fc.uint8Array({ minLength: 20, maxLength: 20 }),
            })
            .map(({ seed, ...a }) => ({
              ...a,
              digest: Buffer.from(seed).subarray(
                0,
                a.type === AuthType.KeyedMd5 || a.type === AuthType.MeticulousKeyedMd5 ? 16 : 20,
              ),
            })),
        ),
        { nil: undefined },
      ),
    })
    .map(({ pf, auth, ...r }) => {
      const p: ControlPacket = { version: 1, multipoint: false, poll: pf[0], final: pf[1], ...r };
      if (auth) p.auth = auth as AuthSection;
      return p;
    });

  test('decode(encode(p)) = p for every valid packet', () => {
    let withAuth = 0;
    fc.assert(
      fc.property(arbPacket, (p) => {
        if (p.auth) withAuth++;
        expect(decodeControl(encodeControl(p))).toEqual({ ok: true, packet: p });
      }),
      { numRuns: 3000 },
    );
    console.log(`round-trip: 3000 packets, ${withAuth} with an auth section`);
    expect(withAuth).toBeGreaterThan(300);
  });

  test('random bytes never throw and every drop has a listed reason', () => {
    const reasons = new Map<string, number>();
    fc.assert(
      // Half the inputs get version 1 and a plausible Length, so the later checks are reached too.
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 80, size: 'max' }), fc.boolean(), (a, shape) => {
        const b = Buffer.from(a);
        if (shape && b.length >= 24) {
          b[0] = 0x20 | (b[0]! & 0x1f);
          b[3] = b[1]! & 0x04 ? Math.min(b.length, 24 + (b[3]! % 32)) : 24;
        }
        const r = decodeControl(b);
        const key = r.ok ? 'ok' : r.reason;
        reasons.set(key, (reasons.get(key) ?? 0) + 1);
        if (!r.ok) expect(DROP_REASONS).toContain(r.reason);
      }),
      { numRuns: 20000 },
    );
    console.log('random bytes, outcome counts:', Object.fromEntries(reasons));
    expect(reasons.size).toBeGreaterThan(6);
    expect(reasons.get('ok')).toBeGreaterThan(0);
  });

  test('mutating one byte of a valid packet never throws', () => {
    const base = encodeControl(pkt({ auth: authSection(sha1, 5) }), { key: sha1.secret });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 255 }), (i, v) => {
        const b = Buffer.from(base);
        b[i] = v;
        const d = decodeControl(b);
        if (d.ok)
          verifyAuth({ raw: b, packet: d.packet, config: sha1, rx: { known: false, seq: 0 }, detectMult: 3 });
      }),
      { numRuns: 5000 },
    );
  });
});
