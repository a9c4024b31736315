// Codec: round trips of every message type, and a table of malformed inputs -> RFC 4271 §6 / RFC 7606
// NOTIFICATION code/subcode and action.
import {
  AsPathSegType,
  decodeMessage,
  describeNotification,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  endOfRibFamily,
  ErrorAction,
  MsgType,
  Origin,
  splitFrames,
  UpdateMessage,
  OpenMessage,
  parseCommunity,
  parseLargeCommunity,
} from '../../src/bgp/codec';
import { canonicalPrefix, parsePrefix } from '../../src/bgp/ip';
import { canonicalIp } from '../../src/model/ip';

const CTX4 = { fourOctetAs: true };
const CTX2 = { fourOctetAs: false };

/** Build a raw message: header + body with an optional length override. */
function raw(type: number, body: Buffer | number[], lenOverride?: number): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const h = Buffer.alloc(19, 0xff);
  h.writeUInt16BE(lenOverride ?? 19 + b.length, 16);
  h[18] = type;
  return Buffer.concat([h, b]);
}

/** UPDATE body from raw attribute bytes and optional v4 NLRI/withdrawn bytes. */
function updateBody(o: { attrs?: number[]; nlri?: number[]; withdrawn?: number[] }): Buffer {
  const w = Buffer.from(o.withdrawn ?? []);
  const a = Buffer.from(o.attrs ?? []);
  const n = Buffer.from(o.nlri ?? []);
  const b = Buffer.alloc(4 + w.length + a.length + n.length);
  b.writeUInt16BE(w.length, 0);
  w.copy(b, 2);
  b.writeUInt16BE(a.length, 2 + w.length);
  a.copy(b, 4 + w.length);
  n.copy(b, 4 + w.length + a.length);
  return b;
}

// Well-formed mandatory attributes for an IPv4 announcement with 4-octet AS.
const ORIGIN = [0x40, 1, 1, 0];
const ASPATH = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXTHOP = [0x40, 3, 4, 10, 0, 0, 1];
const NLRI = [32, 198, 51, 100, 10];

describe('ip helpers', () => {
  it.each([
    ['10.0.0.10', '10.0.0.10/32'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1/128'],
    ['2001:db8::/32', '2001:db8::/32'],
    ['::ffff:1.2.3.4/128', '::ffff:102:304/128'],
    ['::/0', '::/0'],
    ['fe80::1:0:0:1/64', 'fe80::/64'],
  ])('canonicalPrefix(%s) = %s', (i, o) => expect(canonicalPrefix(i)).toBe(o));

  it.each(['10.0.0.1/33', '10.0.0/8', 'x', '2001:db8::/129', '10.0.0.1/-1', '10.0.0.1/'])(
    'rejects %s naming it',
    (p) => {
      expect(() => parsePrefix(p)).toThrow(p);
    },
  );

  it('formats IPv6 per RFC 5952 (longest zero run, not a single group)', () => {
    expect(canonicalIp('2001:db8:0:1:0:0:0:1')).toBe('2001:db8:0:1::1');
    expect(canonicalIp('2001:0:0:1:0:0:0:1')).toBe('2001:0:0:1::1');
  });
});

describe('round trips', () => {
  it('OPEN with every capability', () => {
    const b = encodeOpen({
      asn: 4200000001,
      holdTime: 3,
      routerId: '10.0.0.1',
      families: [
        { afi: 1, safi: 1 },
        { afi: 2, safi: 1 },
      ],
      gracefulRestart: { restartTime: 120, restarted: true, forwardingPreserved: true },
    });
    const r = decodeMessage(b, CTX2);
    expect(r.ok).toBe(true);
    const m = (r as { msg: OpenMessage }).msg;
    expect(m.myAs).toBe(23456); // AS_TRANS
    expect(m.holdTime).toBe(3);
    expect(m.routerId).toBe('10.0.0.1');
    expect(m.caps.fourOctetAs).toBe(4200000001);
    expect(m.caps.routeRefresh).toBe(true);
    expect(m.caps.multiprotocol).toEqual([
      { afi: 1, safi: 1 },
      { afi: 2, safi: 1 },
    ]);
    expect(m.caps.gracefulRestart).toEqual({
      restarted: true,
      restartTime: 120,
      families: [
        { afi: 1, safi: 1, forwardingPreserved: true },
        { afi: 2, safi: 1, forwardingPreserved: true },
      ],
    });
  });

  it('KEEPALIVE, NOTIFICATION, ROUTE-REFRESH', () => {
    expect(decodeMessage(encodeKeepalive(), CTX4)).toEqual({ ok: true, msg: { type: MsgType.KEEPALIVE } });
    expect(
      decodeMessage(encodeNotification({ code: 6, subcode: 2, data: Buffer.from('bye') }), CTX4),
    ).toEqual({
      ok: true,
      msg: { type: MsgType.NOTIFICATION, code: 6, subcode: 2, data: Buffer.from('bye') },
    });
    expect(decodeMessage(encodeRouteRefresh({ afi: 2, safi: 1 }), CTX4)).toEqual({
      ok: true,
      msg: { type: MsgType.ROUTE_REFRESH, afi: 2, safi: 1 },
    });
  });

  it.each([
    ['4-octet AS session', CTX4],
    ['2-octet AS session (AS_TRANS + AS4_PATH)', CTX2],
  ])('IPv4 UPDATE with all attributes, %s', (_n, ctx) => {
    const attrs = {
      origin: Origin.IGP,
      asPath: [{ type: AsPathSegType.AS_SEQUENCE, asns: [4200000001, 65001] }],
      nextHop: '10.0.1.2',
      med: 7,
      localPref: 200,
      communities: ['65001:100', '65535:0'],
      largeCommunities: ['4200000001:1:2'],
    };
    const b = encodeUpdate(
      { nlri: ['198.51.100.10/32', '10.0.0.0/8', '0.0.0.0/0'], withdrawn: ['192.0.2.0/24'], attrs },
      ctx,
    );
    const r = decodeMessage(b, { ...ctx, ibgp: true });
    expect(r.ok).toBe(true);
    const m = (r as { msg: UpdateMessage }).msg;
    expect(m.errors).toEqual([]);
    expect(m.nlri).toEqual(['198.51.100.10/32', '10.0.0.0/8', '0.0.0.0/0']);
    expect(m.withdrawn).toEqual(['192.0.2.0/24']);
    const { asPath, as4Path, ...rest } = m.attrs;
    expect(rest).toEqual({ ...attrs, asPath: undefined });
    if (ctx.fourOctetAs) {
      expect(asPath).toEqual(attrs.asPath);
      expect(as4Path).toBeUndefined();
    } else {
      expect(asPath).toEqual([{ type: 2, asns: [23456, 65001] }]);
      expect(as4Path).toEqual(attrs.asPath);
    }
  });

  it('IPv6 UPDATE via MP_REACH_NLRI and MP_UNREACH_NLRI', () => {
    const reach = encodeUpdate(
      {
        attrs: {
          origin: Origin.IGP,
          asPath: [],
          mpReach: {
            afi: 2,
            safi: 1,
            nextHops: ['2001:db8::2', 'fe80::2'],
            nlri: ['2001:db8:100::10/128', '2001:db8::/32'],
          },
        },
      },
      CTX4,
    );
    const m = (decodeMessage(reach, CTX4) as { msg: UpdateMessage }).msg;
    expect(m.errors).toEqual([]);
    expect(m.attrs.mpReach).toEqual({
      afi: 2,
      safi: 1,
      nextHops: ['2001:db8::2', 'fe80::2'],
      nlri: ['2001:db8:100::10/128', '2001:db8::/32'],
    });
    const un = encodeUpdate(
      { attrs: { mpUnreach: { afi: 2, safi: 1, withdrawn: ['2001:db8:100::10/128'] } } },
      CTX4,
    );
    expect((decodeMessage(un, CTX4) as { msg: UpdateMessage }).msg.attrs.mpUnreach?.withdrawn).toEqual([
      '2001:db8:100::10/128',
    ]);
  });

  it('End-of-RIB markers for IPv4 and IPv6', () => {
    for (const f of [
      { afi: 1, safi: 1 },
      { afi: 2, safi: 1 },
    ]) {
      const m = (decodeMessage(encodeEndOfRib(f), CTX4) as { msg: UpdateMessage }).msg;
      expect(endOfRibFamily(m)).toEqual(f);
    }
    const notEor = encodeUpdate({ withdrawn: ['10.0.0.0/8'] }, CTX4);
    expect(endOfRibFamily((decodeMessage(notEor, CTX4) as { msg: UpdateMessage }).msg)).toBeNull();
  });

  it('uses the extended length flag for attributes over 255 bytes', () => {
    const communities = Array.from({ length: 100 }, (_, i) => `65001:${i}`);
    const b = encodeUpdate(
      { nlri: ['10.0.0.0/8'], attrs: { origin: 0, asPath: [], nextHop: '10.0.0.1', communities } },
      CTX4,
    );
    const m = (decodeMessage(b, CTX4) as { msg: UpdateMessage }).msg;
    expect(m.attrs.communities).toHaveLength(100);
  });

  it('splits a byte stream into frames, keeping a partial tail', () => {
    const ka = encodeKeepalive();
    const rr = encodeRouteRefresh({ afi: 1, safi: 1 });
    const s = Buffer.concat([ka, rr, ka.subarray(0, 10)]);
    const r = splitFrames(s);
    expect(r.frames).toHaveLength(2);
    expect(r.rest).toHaveLength(10);
    expect(r.error).toBeUndefined();
  });

  it('community parsers name the bad value', () => {
    expect(parseCommunity('65535:0')).toBe(0xffff0000);
    expect(() => parseCommunity('65536:0')).toThrow('65536:0');
    expect(parseLargeCommunity('4294967295:0:1')).toEqual([4294967295, 0, 1]);
    expect(() => parseLargeCommunity('1:2')).toThrow('"1:2"');
  });
});

interface ErrCase {
  name: string;
  msg: Buffer;
  code: number;
  subcode: number;
  action: ErrorAction;
  ctx?: { fourOctetAs: boolean; ibgp?: boolean };
}

const okOpenBody = (): number[] => [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 0];

// Each row: malformed input -> the NOTIFICATION RFC 4271 §6 names, and the RFC 7606 action.
const ERRORS: ErrCase[] = [
  // Message header (§6.1)
  {
    name: 'marker not all ones',
    msg: (() => {
      const b = encodeKeepalive();
      b[3] = 0;
      return b;
    })(),
    code: 1,
    subcode: 1,
    action: 'session-reset',
  },
  { name: 'length below 19', msg: raw(4, [], 18), code: 1, subcode: 2, action: 'session-reset' },
  { name: 'KEEPALIVE with a body', msg: raw(4, [0]), code: 1, subcode: 2, action: 'session-reset' },
  { name: 'OPEN shorter than 29', msg: raw(1, [4, 0, 1]), code: 1, subcode: 2, action: 'session-reset' },
  { name: 'UPDATE shorter than 23', msg: raw(2, [0, 0]), code: 1, subcode: 2, action: 'session-reset' },
  { name: 'NOTIFICATION shorter than 21', msg: raw(3, [6]), code: 1, subcode: 2, action: 'session-reset' },
  {
    name: 'ROUTE-REFRESH not 23 bytes',
    msg: raw(5, [0, 1, 0]),
    code: 1,
    subcode: 2,
    action: 'session-reset',
  },
  { name: 'unknown type 9', msg: raw(9, []), code: 1, subcode: 3, action: 'session-reset' },
  // OPEN (§6.2)
  {
    name: 'version 3',
    msg: raw(1, [3, ...okOpenBody().slice(1)]),
    code: 2,
    subcode: 1,
    action: 'session-reset',
  },
  {
    name: 'hold time 2',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 2, 10, 0, 0, 1, 0]),
    code: 2,
    subcode: 6,
    action: 'session-reset',
  },
  {
    name: 'BGP identifier 0',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 90, 0, 0, 0, 0, 0]),
    code: 2,
    subcode: 3,
    action: 'session-reset',
  },
  {
    name: 'optional parameter type 1',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 3, 1, 1, 0]),
    code: 2,
    subcode: 4,
    action: 'session-reset',
  },
  {
    name: 'optional parameters length mismatch',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 5, 2, 0]),
    code: 2,
    subcode: 0,
    action: 'session-reset',
  },
  {
    name: 'capability overruns its parameter',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 4, 2, 2, 65, 4]),
    code: 2,
    subcode: 0,
    action: 'session-reset',
  },
  {
    name: 'multiprotocol capability length 3',
    msg: raw(1, [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 7, 2, 5, 1, 3, 0, 1, 0]),
    code: 2,
    subcode: 0,
    action: 'session-reset',
  },
  // UPDATE (§6.3, RFC 7606)
  {
    name: 'withdrawn length overruns',
    msg: raw(2, [0, 9, 0, 0]),
    code: 3,
    subcode: 1,
    action: 'session-reset',
  },
  {
    name: 'total attribute length overruns',
    msg: raw(2, [0, 0, 0, 9]),
    code: 3,
    subcode: 1,
    action: 'session-reset',
  },
  {
    name: 'NLRI prefix length 33',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP], nlri: [33, 1, 2, 3, 4, 5] })),
    code: 3,
    subcode: 10,
    action: 'session-reset',
  },
  {
    name: 'NLRI prefix bytes overrun',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP], nlri: [24, 1, 2] })),
    code: 3,
    subcode: 10,
    action: 'session-reset',
  },
  {
    name: 'withdrawn prefix length 40',
    msg: raw(2, updateBody({ withdrawn: [40, 1, 2, 3, 4, 5] })),
    code: 3,
    subcode: 10,
    action: 'session-reset',
  },
  {
    name: 'unrecognized well-known attribute 99',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0x40, 99, 0], nlri: NLRI })),
    code: 3,
    subcode: 2,
    action: 'session-reset',
  },
  {
    name: 'ORIGIN flags optional',
    msg: raw(2, updateBody({ attrs: [0xc0, 1, 1, 0, ...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 4,
    action: 'treat-as-withdraw',
  },
  {
    name: 'ORIGIN length 2',
    msg: raw(2, updateBody({ attrs: [0x40, 1, 2, 0, 0, ...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'ORIGIN value 3',
    msg: raw(2, updateBody({ attrs: [0x40, 1, 1, 3, ...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 6,
    action: 'treat-as-withdraw',
  },
  {
    name: 'AS_PATH segment type 7',
    msg: raw(
      2,
      updateBody({ attrs: [...ORIGIN, 0x40, 2, 6, 7, 1, 0, 0, 0xfd, 0xe9, ...NEXTHOP], nlri: NLRI }),
    ),
    code: 3,
    subcode: 11,
    action: 'treat-as-withdraw',
  },
  {
    name: 'AS_PATH segment overruns',
    msg: raw(
      2,
      updateBody({ attrs: [...ORIGIN, 0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9, ...NEXTHOP], nlri: NLRI }),
    ),
    code: 3,
    subcode: 11,
    action: 'treat-as-withdraw',
  },
  {
    name: 'NEXT_HOP length 5',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, 0x40, 3, 5, 10, 0, 0, 1, 0], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'NEXT_HOP 0.0.0.0',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, 0x40, 3, 4, 0, 0, 0, 0], nlri: NLRI })),
    code: 3,
    subcode: 8,
    action: 'treat-as-withdraw',
  },
  {
    name: 'NEXT_HOP multicast',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, 0x40, 3, 4, 224, 0, 0, 1], nlri: NLRI })),
    code: 3,
    subcode: 8,
    action: 'treat-as-withdraw',
  },
  {
    name: 'MED length 3',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0x80, 4, 3, 0, 0, 1], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'LOCAL_PREF length 2 (iBGP)',
    ctx: { fourOctetAs: true, ibgp: true },
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0x40, 5, 2, 0, 1], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'LOCAL_PREF from eBGP',
    msg: raw(
      2,
      updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0x40, 5, 4, 0, 0, 0, 1], nlri: NLRI }),
    ),
    code: 3,
    subcode: 9,
    action: 'attribute-discard',
  },
  {
    name: 'ATOMIC_AGGREGATE length 1',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0x40, 6, 1, 0], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'attribute-discard',
  },
  {
    name: 'AGGREGATOR length 5',
    msg: raw(
      2,
      updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0, 7, 5, 0, 1, 2, 3, 4], nlri: NLRI }),
    ),
    code: 3,
    subcode: 5,
    action: 'attribute-discard',
  },
  {
    name: 'COMMUNITIES length 3',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0, 8, 3, 0, 0, 1], nlri: NLRI })),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'LARGE_COMMUNITY length 8',
    msg: raw(
      2,
      updateBody({
        attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 1],
        nlri: NLRI,
      }),
    ),
    code: 3,
    subcode: 5,
    action: 'treat-as-withdraw',
  },
  {
    name: 'repeated ORIGIN',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ORIGIN, ...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 1,
    action: 'attribute-discard',
  },
  {
    name: 'missing ORIGIN',
    msg: raw(2, updateBody({ attrs: [...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 3,
    action: 'treat-as-withdraw',
  },
  {
    name: 'missing NEXT_HOP',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH], nlri: NLRI })),
    code: 3,
    subcode: 3,
    action: 'treat-as-withdraw',
  },
  {
    name: 'missing LOCAL_PREF on iBGP',
    ctx: { fourOctetAs: true, ibgp: true },
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP], nlri: NLRI })),
    code: 3,
    subcode: 3,
    action: 'treat-as-withdraw',
  },
  {
    name: 'attribute overruns the attribute field',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0, 8, 200, 0], nlri: NLRI })),
    code: 3,
    subcode: 1,
    action: 'treat-as-withdraw',
  },
  {
    name: 'truncated attribute header',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0], nlri: NLRI })),
    code: 3,
    subcode: 1,
    action: 'treat-as-withdraw',
  },
  {
    name: 'MP_REACH_NLRI length 3',
    msg: raw(2, updateBody({ attrs: [...ORIGIN, ...ASPATH, 0x80, 14, 3, 0, 2, 1] })),
    code: 3,
    subcode: 9,
    action: 'session-reset',
  },
  {
    name: 'MP_REACH_NLRI IPv6 next hop length 8',
    msg: raw(
      2,
      updateBody({ attrs: [...ORIGIN, ...ASPATH, 0x80, 14, 13, 0, 2, 1, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0] }),
    ),
    code: 3,
    subcode: 9,
    action: 'session-reset',
  },
  {
    name: 'MP_REACH_NLRI prefix length 129',
    msg: raw(
      2,
      updateBody({
        attrs: [
          ...ORIGIN,
          ...ASPATH,
          0x80,
          14,
          22,
          0,
          2,
          1,
          16,
          0x20,
          1,
          0xd,
          0xb8,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          2,
          0,
          129,
        ],
      }),
    ),
    code: 3,
    subcode: 9,
    action: 'session-reset',
  },
  {
    name: 'MP_UNREACH_NLRI length 2',
    msg: raw(2, updateBody({ attrs: [0x80, 15, 2, 0, 2] })),
    code: 3,
    subcode: 9,
    action: 'session-reset',
  },
  {
    name: 'MP_UNREACH_NLRI repeated',
    msg: raw(2, updateBody({ attrs: [0x80, 15, 3, 0, 2, 1, 0x80, 15, 3, 0, 2, 1] })),
    code: 3,
    subcode: 1,
    action: 'session-reset',
  },
  {
    name: 'MP_UNREACH_NLRI flags well-known',
    msg: raw(2, updateBody({ attrs: [0x40, 15, 3, 0, 2, 1] })),
    code: 3,
    subcode: 4,
    action: 'session-reset',
  },
];

describe('malformed messages map to the RFC NOTIFICATION code/subcode and action', () => {
  it('the table is not empty', () => expect(ERRORS.length).toBeGreaterThan(40));

  it.each(ERRORS.map((e) => [e.name, e] as const))('%s', (_n, e) => {
    const r = decodeMessage(e.msg, e.ctx ?? CTX4);
    let got: { code: number; subcode: number; action: ErrorAction };
    if (!r.ok) got = r.error;
    else {
      expect(r.msg.type).toBe(MsgType.UPDATE);
      const u = r.msg as UpdateMessage;
      expect(u.errors.length).toBeGreaterThan(0);
      got = u.errors[0]!;
      // Treat-as-withdraw must flag the UPDATE; attribute-discard must drop the attribute only.
      expect(u.treatAsWithdraw).toBe(u.errors.some((x) => x.action === 'treat-as-withdraw'));
    }
    expect({ code: got.code, subcode: got.subcode, action: got.action }).toEqual({
      code: e.code,
      subcode: e.subcode,
      action: e.action,
    });
    expect(describeNotification(e.code, e.subcode)).not.toMatch(/^code /);
  });

  it('a treat-as-withdraw UPDATE still yields its prefixes and withdrawn routes for removal', () => {
    const msg = raw(
      2,
      updateBody({ withdrawn: [24, 192, 0, 2], attrs: [0x40, 1, 1, 3, ...ASPATH, ...NEXTHOP], nlri: NLRI }),
    );
    const m = (decodeMessage(msg, CTX4) as { msg: UpdateMessage }).msg;
    expect(m.treatAsWithdraw).toBe(true);
    expect(m.nlri).toEqual(['198.51.100.10/32']);
    expect(m.withdrawn).toEqual(['192.0.2.0/24']);
  });

  it('an unknown optional transitive attribute is kept with the Partial bit', () => {
    const msg = raw(
      2,
      updateBody({ attrs: [...ORIGIN, ...ASPATH, ...NEXTHOP, 0xc0, 99, 2, 1, 2], nlri: NLRI }),
    );
    const m = (decodeMessage(msg, CTX4) as { msg: UpdateMessage }).msg;
    expect(m.errors).toEqual([]);
    expect(m.attrs.unknown).toEqual([{ flags: 0xe0, type: 99, value: Buffer.from([1, 2]) }]);
  });

  it('a header error in the stream stops framing', () => {
    const bad = raw(4, [], 5000);
    const r = splitFrames(Buffer.concat([encodeKeepalive(), bad]));
    expect(r.frames).toHaveLength(1);
    expect(r.error).toMatchObject({ code: 1, subcode: 2 });
  });
});
