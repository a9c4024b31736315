// Decoding real messages: what BIRD 2, FRR (bgpd) and GoBGP sent to a raw client, captured in namespaces by
// scripts/capture-bgp-fixtures.ts and checked in as test/fixtures/bgp/<daemon>.hex. Each daemon ran as
// AS 65000 (10.0.0.1 / fd00::1, hold 9 s, graceful restart 120 s) announcing 198.51.100.0/24 and
// 203.0.113.0/25, and 2001:db8:100::/48, with community 65000:100, large community 65000:1:2 and MED 50.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AFI_IPV4,
  AFI_IPV6,
  AsPathSegType,
  BgpMessage,
  decodeMessage,
  describeNotification,
  encodeEndOfRib,
  encodeKeepalive,
  encodeUpdate,
  endOfRibFamily,
  ErrCode,
  HeaderSub,
  MsgType,
  Origin,
  SAFI_UNICAST,
  splitFrames,
  UpdateSub,
} from '../../src/bgp/codec';

const DIR = join(__dirname, '..', 'fixtures', 'bgp');
type Fam = 'ipv4' | 'ipv6';

interface Captured {
  family: Fam;
  label: string;
  bytes: Buffer;
}

/** `<family> <TYPE> <hex>` lines; '#' lines are comments (the first names the daemon and its version). */
function load(daemon: string): { header: string; messages: Captured[] } {
  const text = readFileSync(join(DIR, `${daemon}.hex`), 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const messages = lines
    .filter((l) => !l.startsWith('#'))
    .map((l) => {
      const [family, label, hex, ...rest] = l.split(' ');
      if (
        (family !== 'ipv4' && family !== 'ipv6') ||
        !label ||
        !hex ||
        rest.length ||
        !/^[0-9a-f]+$/.test(hex)
      )
        throw new Error(`${daemon}.hex: malformed line "${l.slice(0, 60)}"`);
      return { family, label, bytes: Buffer.from(hex, 'hex') } as Captured;
    });
  return { header: lines[0] ?? '', messages };
}

const decoded = (c: Captured): BgpMessage => {
  const r = decodeMessage(c.bytes, { fourOctetAs: true });
  if (!r.ok) throw new Error(`${c.family} ${c.label}: ${r.error.reason}`);
  return r.msg;
};

/** What differs between the daemons; everything else is the same configuration and asserted in common. */
const DAEMONS = {
  bird: {
    version: 'BIRD version 2.0.12',
    origin: Origin.IGP,
    // The R bit: FRR with `bgp graceful-restart` sets it on its first start too.
    restarted: false,
    // Capabilities our codec keeps as unknown: 70 enhanced route refresh (RFC 7313), 71 long-lived GR.
    unknownCaps: { ipv4: [70, 71], ipv6: [70, 71] },
    // Global + link-local IPv6 next hop (32 octets) on a link; GoBGP sends the global one only.
    v6NextHops: 2,
    notification: { code: ErrCode.HEADER, subcode: HeaderSub.BAD_TYPE, data: '09' },
    notificationName: 'Message Header Error / Bad Message Type',
  },
  frr: {
    version: 'bgpd version 8.4.4',
    origin: Origin.IGP,
    restarted: true,
    // 128 pre-standard route refresh, 70, 6 extended message (RFC 8654), 69 ADD-PATH (RFC 7911), 73 FQDN, 71.
    unknownCaps: { ipv4: [128, 70, 6, 69, 73, 71], ipv6: [128, 70, 6, 69, 73, 71] },
    v6NextHops: 2,
    notification: { code: ErrCode.HEADER, subcode: HeaderSub.BAD_TYPE, data: '09' },
    notificationName: 'Message Header Error / Bad Message Type',
  },
  gobgp: {
    version: 'gobgpd version 3.10.0',
    // Routes added with `gobgp global rib add` have ORIGIN INCOMPLETE.
    origin: Origin.INCOMPLETE,
    restarted: false,
    // 73 FQDN; on the IPv4 session also 5, extended next hop encoding (RFC 8950).
    unknownCaps: { ipv4: [73, 5], ipv6: [73] },
    v6NextHops: 1,
    // GoBGP was sent an UPDATE whose withdrawn length overruns it (it panics on an unknown type).
    notification: { code: ErrCode.UPDATE, subcode: UpdateSub.MALFORMED_ATTR_LIST, data: '' },
    notificationName: 'UPDATE Message Error / Malformed Attribute List',
  },
} as const;

const FAMILY = {
  ipv4: { afi: AFI_IPV4, nextHop: '10.0.0.1', prefixes: ['198.51.100.0/24', '203.0.113.0/25'] },
  ipv6: { afi: AFI_IPV6, nextHop: 'fd00::1', prefixes: ['2001:db8:100::/48'] },
} as const;

describe.each(Object.entries(DAEMONS))('captured from %s', (daemon, want) => {
  const { header, messages } = load(daemon);

  it('the fixture names the daemon and version and holds both sessions', () => {
    expect(header.startsWith(`# ${want.version} (${daemon})`)).toBe(true);
    expect(messages.filter((m) => m.family === 'ipv4').length).toBeGreaterThanOrEqual(5);
    expect(messages.filter((m) => m.family === 'ipv6').length).toBeGreaterThanOrEqual(5);
  });

  it('every message frames and decodes, as the type its line names, in the order the daemon sent them', () => {
    for (const fam of ['ipv4', 'ipv6'] as const) {
      const ms = messages.filter((m) => m.family === fam);
      const stream = Buffer.concat(ms.map((m) => m.bytes));
      const { frames, rest, error } = splitFrames(stream);
      expect(error).toBeUndefined();
      expect(rest.length).toBe(0);
      expect(frames.map((f) => f.toString('hex'))).toEqual(ms.map((m) => m.bytes.toString('hex')));
      const types = ms.map((m) => MsgType[decoded(m).type]);
      expect(types).toEqual(ms.map((m) => m.label));
      expect(types).toEqual(['OPEN', 'KEEPALIVE', 'UPDATE', 'UPDATE', 'NOTIFICATION']);
    }
  });

  describe.each(['ipv4', 'ipv6'] as const)('%s session', (fam) => {
    const ms = messages.filter((m) => m.family === fam).map(decoded);
    const f = FAMILY[fam];
    const byType = <T extends MsgType>(t: T) =>
      ms.filter((m): m is Extract<BgpMessage, { type: T }> => m.type === t);

    it('OPEN: version, AS (2- and 4-octet), hold time, identifier, capabilities', () => {
      const [open] = byType(MsgType.OPEN);
      expect(open).toMatchObject({ version: 4, myAs: 65000, holdTime: 9, routerId: '10.0.0.1' });
      expect(open!.caps.fourOctetAs).toBe(65000);
      expect(open!.caps.multiprotocol).toEqual([{ afi: f.afi, safi: SAFI_UNICAST }]);
      expect(open!.caps.routeRefresh).toBe(true);
      expect(open!.caps.gracefulRestart).toEqual({
        restarted: want.restarted,
        restartTime: 120,
        families: [{ afi: f.afi, safi: SAFI_UNICAST, forwardingPreserved: false }],
      });
      expect(open!.caps.unknown.map((c) => c.code)).toEqual(want.unknownCaps[fam]);
    });

    it('KEEPALIVE is byte-identical to ours', () => {
      const raw = messages.filter((m) => m.family === fam && m.label === 'KEEPALIVE');
      expect(raw).toHaveLength(1);
      expect(raw[0]!.bytes.equals(encodeKeepalive())).toBe(true);
    });

    it('UPDATE: prefixes, next hop, ORIGIN, AS_PATH, MED, communities, large communities; no errors', () => {
      const [announce, eor] = byType(MsgType.UPDATE);
      expect(announce!.errors).toEqual([]);
      expect(announce!.treatAsWithdraw).toBe(false);
      expect(announce!.withdrawn).toEqual([]);
      const a = announce!.attrs;
      expect(a.origin).toBe(want.origin);
      expect(a.asPath).toEqual([{ type: AsPathSegType.AS_SEQUENCE, asns: [65000] }]);
      expect(a.med).toBe(50);
      expect(a.communities).toEqual(['65000:100']);
      expect(a.largeCommunities).toEqual(['65000:1:2']);
      expect(a.localPref).toBeUndefined();
      expect(a.unknown).toBeUndefined();
      if (fam === 'ipv4') {
        expect(announce!.nlri).toEqual(f.prefixes);
        expect(a.nextHop).toBe(f.nextHop);
        expect(a.mpReach).toBeUndefined();
      } else {
        expect(announce!.nlri).toEqual([]);
        expect(a.nextHop).toBeUndefined();
        expect(a.mpReach?.afi).toBe(AFI_IPV6);
        expect(a.mpReach?.safi).toBe(SAFI_UNICAST);
        expect(a.mpReach?.nlri).toEqual(f.prefixes);
        expect(a.mpReach?.nextHops).toHaveLength(want.v6NextHops);
        expect(a.mpReach?.nextHops[0]).toBe(f.nextHop);
        if (want.v6NextHops === 2) expect(a.mpReach?.nextHops[1]).toMatch(/^fe80::/);
      }
      // Our encoder carries the same content: re-encoded, it decodes to the same message.
      const again = decodeMessage(
        encodeUpdate(
          { withdrawn: announce!.withdrawn, nlri: announce!.nlri, attrs: a },
          { fourOctetAs: true },
        ),
        { fourOctetAs: true },
      );
      expect(again).toEqual({ ok: true, msg: announce });
      // End-of-RIB for the session's family, byte-identical to the one we send.
      expect(endOfRibFamily(eor!)).toEqual({ afi: f.afi, safi: SAFI_UNICAST });
      const rawEor = messages.filter((m) => m.family === fam && m.label === 'UPDATE')[1]!;
      expect(rawEor.bytes.equals(encodeEndOfRib({ afi: f.afi, safi: SAFI_UNICAST }))).toBe(true);
    });

    it('NOTIFICATION for our bad message: code, subcode, data, name', () => {
      const [n] = byType(MsgType.NOTIFICATION);
      expect({ code: n!.code, subcode: n!.subcode, data: n!.data.toString('hex') }).toEqual(
        want.notification,
      );
      expect(describeNotification(n!.code, n!.subcode)).toBe(want.notificationName);
    });
  });
});
