// Path attributes of an UPDATE (RFC 4271 §5, 4760, 6793, 1997, 8092): each decoded and checked with its
// RFC 7606 action, and encoded in a fixed order.
import { formatIp as bytesToIp } from '../../model/ip';
import { AFI_IPV4, AFI_IPV6, ipToBytes } from '../ip';
import {
  AS_TRANS,
  AttrType,
  ErrCode,
  F_EXTENDED,
  F_OPTIONAL,
  F_TRANSITIVE,
  Origin,
  UpdateSub,
} from './constants';
import {
  decodeCommunities,
  decodeLargeCommunities,
  encodeCommunities,
  encodeLargeCommunities,
} from './communities';
import { fatal } from './errors';
import { decodePrefixes, encodePrefix } from './prefixes';
import { AsPathSegment, BgpError, DecodeContext, ErrorAction, PathAttributes } from './types';

/** Records an error that does not reset the session (treat-as-withdraw or attribute-discard). */
export type Soft = (action: ErrorAction, subcode: UpdateSub, reason: string, data: Buffer) => void;

/** MP_REACH/MP_UNREACH problems reset the session (RFC 7606 §7.11). */
const mpError = (reason: string, whole: Buffer): BgpError =>
  fatal(ErrCode.UPDATE, UpdateSub.OPTIONAL_ATTR, reason, Buffer.from(whole));

export function decodeAsPath(v: Buffer, asnSize: 2 | 4): AsPathSegment[] | null {
  const segs: AsPathSegment[] = [];
  let off = 0;
  while (off < v.length) {
    if (v.length - off < 2) return null;
    const type = v[off] as number;
    const count = v[off + 1] as number;
    if (type < 1 || type > 4 || count === 0) return null;
    if (off + 2 + count * asnSize > v.length) return null;
    const asns: number[] = [];
    for (let i = 0; i < count; i++) {
      const p = off + 2 + i * asnSize;
      asns.push(asnSize === 4 ? v.readUInt32BE(p) : v.readUInt16BE(p));
    }
    segs.push({ type, asns });
    off += 2 + count * asnSize;
  }
  return segs;
}

/**
 * Decodes one recognised attribute (flags already checked) into `attrs`. Soft problems go to `soft`;
 * a session-resetting one is returned.
 */
export function decodeAttr(
  type: number,
  v: Buffer,
  whole: Buffer,
  attrs: PathAttributes,
  ctx: DecodeContext,
  soft: Soft,
): BgpError | null {
  const len = v.length;
  switch (type) {
    case AttrType.ORIGIN:
      if (len !== 1) soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `ORIGIN length ${len}`, whole);
      else if ((v[0] as number) > Origin.INCOMPLETE)
        soft('treat-as-withdraw', UpdateSub.INVALID_ORIGIN, `ORIGIN value ${v[0]}`, whole);
      else attrs.origin = v[0] as Origin;
      return null;
    case AttrType.AS_PATH: {
      const segs = decodeAsPath(v, ctx.fourOctetAs ? 4 : 2);
      if (!segs) soft('treat-as-withdraw', UpdateSub.MALFORMED_AS_PATH, 'malformed AS_PATH', whole);
      else attrs.asPath = segs;
      return null;
    }
    case AttrType.NEXT_HOP: {
      if (len !== 4) {
        soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `NEXT_HOP length ${len}`, whole);
        return null;
      }
      const first = v[0] as number;
      // 0.0.0.0, loopback, multicast/class E are never valid next hops (RFC 4271 §6.3).
      if (v.readUInt32BE(0) === 0 || first === 127 || first >= 224)
        soft(
          'treat-as-withdraw',
          UpdateSub.INVALID_NEXT_HOP,
          `NEXT_HOP ${bytesToIp(v)} is not a unicast address`,
          whole,
        );
      else attrs.nextHop = bytesToIp(v);
      return null;
    }
    case AttrType.MED:
      if (len !== 4) soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `MULTI_EXIT_DISC length ${len}`, whole);
      else attrs.med = v.readUInt32BE(0);
      return null;
    case AttrType.LOCAL_PREF:
      // RFC 7606 §7.5: from an external peer it is discarded; a bad length is treat-as-withdraw.
      if (!ctx.ibgp)
        soft('attribute-discard', UpdateSub.OPTIONAL_ATTR, 'LOCAL_PREF from an external peer', whole);
      else if (len !== 4) soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `LOCAL_PREF length ${len}`, whole);
      else attrs.localPref = v.readUInt32BE(0);
      return null;
    case AttrType.ATOMIC_AGGREGATE:
      if (len !== 0)
        soft('attribute-discard', UpdateSub.ATTR_LENGTH, `ATOMIC_AGGREGATE length ${len}`, whole);
      else attrs.atomicAggregate = true;
      return null;
    case AttrType.AGGREGATOR: {
      const want = ctx.fourOctetAs ? 8 : 6;
      if (len !== want)
        soft('attribute-discard', UpdateSub.ATTR_LENGTH, `AGGREGATOR length ${len} != ${want}`, whole);
      else
        attrs.aggregator = {
          asn: want === 8 ? v.readUInt32BE(0) : v.readUInt16BE(0),
          address: bytesToIp(v.subarray(want - 4)),
        };
      return null;
    }
    case AttrType.AS4_AGGREGATOR:
      if (len !== 8) soft('attribute-discard', UpdateSub.ATTR_LENGTH, `AS4_AGGREGATOR length ${len}`, whole);
      return null;
    case AttrType.AS4_PATH: {
      // RFC 6793 §6: a malformed AS4_PATH is discarded.
      const segs = decodeAsPath(v, 4);
      if (!segs) soft('attribute-discard', UpdateSub.OPTIONAL_ATTR, 'malformed AS4_PATH', whole);
      else attrs.as4Path = segs;
      return null;
    }
    case AttrType.COMMUNITIES: {
      const list = decodeCommunities(v);
      if (!list) soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `COMMUNITIES length ${len}`, whole);
      else attrs.communities = list;
      return null;
    }
    case AttrType.LARGE_COMMUNITY: {
      const list = decodeLargeCommunities(v);
      if (!list) soft('treat-as-withdraw', UpdateSub.ATTR_LENGTH, `LARGE_COMMUNITY length ${len}`, whole);
      else attrs.largeCommunities = list;
      return null;
    }
    case AttrType.MP_REACH_NLRI: {
      if (len < 5) return mpError(`MP_REACH_NLRI length ${len}`, whole);
      const afi = v.readUInt16BE(0);
      const safi = v[2] as number;
      const nhLen = v[3] as number;
      if (4 + nhLen + 1 > len) return mpError(`MP_REACH_NLRI next hop length ${nhLen}`, whole);
      const nhb = v.subarray(4, 4 + nhLen);
      const nextHops: string[] = [];
      if (afi === AFI_IPV6) {
        if (nhLen !== 16 && nhLen !== 32)
          return mpError(`MP_REACH_NLRI IPv6 next hop length ${nhLen}`, whole);
        for (let i = 0; i < nhLen; i += 16) nextHops.push(bytesToIp(nhb.subarray(i, i + 16)));
      } else if (afi === AFI_IPV4) {
        if (nhLen !== 4 && nhLen !== 16 && nhLen !== 32)
          return mpError(`MP_REACH_NLRI IPv4 next hop length ${nhLen}`, whole);
        for (let i = 0; i < nhLen; i += nhLen === 4 ? 4 : 16)
          nextHops.push(bytesToIp(nhb.subarray(i, i + (nhLen === 4 ? 4 : 16))));
      }
      // Skip the reserved SNPA octet (RFC 4760 §3).
      const nlriBytes = v.subarray(4 + nhLen + 1);
      let nlri: string[] = [];
      if (afi === AFI_IPV4 || afi === AFI_IPV6) {
        const p = decodePrefixes(nlriBytes, afi);
        if (!p) return mpError('malformed MP_REACH_NLRI prefixes', whole);
        nlri = p;
      }
      attrs.mpReach = { afi, safi, nextHops, nlri };
      return null;
    }
    case AttrType.MP_UNREACH_NLRI: {
      if (len < 3) return mpError(`MP_UNREACH_NLRI length ${len}`, whole);
      const afi = v.readUInt16BE(0);
      const safi = v[2] as number;
      let withdrawn: string[] = [];
      if (afi === AFI_IPV4 || afi === AFI_IPV6) {
        const p = decodePrefixes(v.subarray(3), afi);
        if (!p) return mpError('malformed MP_UNREACH_NLRI prefixes', whole);
        withdrawn = p;
      }
      attrs.mpUnreach = { afi, safi, withdrawn };
      return null;
    }
    default:
      return null;
  }
}

/** One attribute: flags, type, length (extended past 255 octets), value. */
function attr(flags: number, type: number, v: Buffer): Buffer {
  const ext = v.length > 255;
  const h = Buffer.alloc(ext ? 4 : 3);
  h[0] = flags | (ext ? F_EXTENDED : 0);
  h[1] = type;
  if (ext) h.writeUInt16BE(v.length, 2);
  else h[2] = v.length;
  return Buffer.concat([h, v]);
}

function encodeAsPath(segs: AsPathSegment[], size: 2 | 4): Buffer {
  const parts: Buffer[] = [];
  for (const s of segs) {
    for (let i = 0; i < s.asns.length; i += 255) {
      const chunk = s.asns.slice(i, i + 255);
      const b = Buffer.alloc(2 + chunk.length * size);
      b[0] = s.type;
      b[1] = chunk.length;
      chunk.forEach((asn, j) => {
        if (size === 4) b.writeUInt32BE(asn, 2 + j * 4);
        else b.writeUInt16BE(asn > 0xffff ? AS_TRANS : asn, 2 + j * 2);
      });
      parts.push(b);
    }
  }
  return Buffer.concat(parts);
}

const u32 = (x: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(x, 0);
  return b;
};

/** The Path Attributes field; `fourOctetAs` says whether ASNs go out as 4 octets (else AS_TRANS + AS4_PATH). */
export function encodeAttributes(a: PathAttributes, ctx: { fourOctetAs: boolean }): Buffer {
  const parts: Buffer[] = [];
  if (a.origin !== undefined) parts.push(attr(F_TRANSITIVE, AttrType.ORIGIN, Buffer.from([a.origin])));
  if (a.asPath !== undefined) {
    parts.push(attr(F_TRANSITIVE, AttrType.AS_PATH, encodeAsPath(a.asPath, ctx.fourOctetAs ? 4 : 2)));
    const needs4 = !ctx.fourOctetAs && a.asPath.some((s) => s.asns.some((x) => x > 0xffff));
    if (needs4) parts.push(attr(F_OPTIONAL | F_TRANSITIVE, AttrType.AS4_PATH, encodeAsPath(a.asPath, 4)));
  }
  if (a.nextHop !== undefined) {
    const nh = ipToBytes(a.nextHop);
    if (nh.afi !== AFI_IPV4) throw new TypeError(`NEXT_HOP "${a.nextHop}" must be IPv4`);
    parts.push(attr(F_TRANSITIVE, AttrType.NEXT_HOP, nh.bytes));
  }
  if (a.med !== undefined) parts.push(attr(F_OPTIONAL, AttrType.MED, u32(a.med)));
  if (a.localPref !== undefined) parts.push(attr(F_TRANSITIVE, AttrType.LOCAL_PREF, u32(a.localPref)));
  if (a.atomicAggregate) parts.push(attr(F_TRANSITIVE, AttrType.ATOMIC_AGGREGATE, Buffer.alloc(0)));
  if (a.communities?.length)
    parts.push(attr(F_OPTIONAL | F_TRANSITIVE, AttrType.COMMUNITIES, encodeCommunities(a.communities)));
  if (a.mpReach) {
    const r = a.mpReach;
    const nhs = r.nextHops.map((n) => ipToBytes(n).bytes);
    const head = Buffer.alloc(4);
    head.writeUInt16BE(r.afi, 0);
    head[2] = r.safi;
    const nhb = Buffer.concat(nhs);
    head[3] = nhb.length;
    const v = Buffer.concat([head, nhb, Buffer.from([0]), ...r.nlri.map(encodePrefix)]);
    parts.push(attr(F_OPTIONAL, AttrType.MP_REACH_NLRI, v));
  }
  if (a.mpUnreach) {
    const r = a.mpUnreach;
    const head = Buffer.alloc(3);
    head.writeUInt16BE(r.afi, 0);
    head[2] = r.safi;
    parts.push(
      attr(F_OPTIONAL, AttrType.MP_UNREACH_NLRI, Buffer.concat([head, ...r.withdrawn.map(encodePrefix)])),
    );
  }
  if (a.largeCommunities?.length)
    parts.push(
      attr(F_OPTIONAL | F_TRANSITIVE, AttrType.LARGE_COMMUNITY, encodeLargeCommunities(a.largeCommunities)),
    );
  for (const x of a.unknown ?? []) parts.push(attr(x.flags & ~F_EXTENDED, x.type, x.value));
  return Buffer.concat(parts);
}
