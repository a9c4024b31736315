// UPDATE (RFC 4271 §4.3): withdrawn routes, path attributes, NLRI; RFC 7606 error handling; End-of-RIB.
import { AFI_IPV4 } from '../ip';
import {
  ATTR_FLAGS,
  AttrType,
  ErrCode,
  F_EXTENDED,
  F_OPTIONAL,
  F_PARTIAL,
  F_TRANSITIVE,
  MsgType,
  SAFI_UNICAST,
  UpdateSub,
} from './constants';
import { decodeAttr, encodeAttributes, Soft } from './attributes';
import { fatal } from './errors';
import { frame } from './framing';
import { decodePrefixes, encodePrefix } from './prefixes';
import { BgpError, DecodeContext, DecodeResult, Family, PathAttributes, UpdateMessage } from './types';

const isMpAttr = (type: number): boolean =>
  type === AttrType.MP_REACH_NLRI || type === AttrType.MP_UNREACH_NLRI;

/** Body of an UPDATE (its length, >= 4, was checked with the header). */
export function decodeUpdate(b: Buffer, ctx: DecodeContext): DecodeResult {
  const reset = (subcode: UpdateSub, reason: string, data?: Buffer): DecodeResult => ({
    ok: false,
    error: fatal(ErrCode.UPDATE, subcode, reason, data),
  });
  const wLen = b.readUInt16BE(0);
  if (2 + wLen + 2 > b.length)
    return reset(UpdateSub.MALFORMED_ATTR_LIST, `withdrawn routes length ${wLen} overruns the message`);
  const aLen = b.readUInt16BE(2 + wLen);
  const aStart = 4 + wLen;
  if (aStart + aLen > b.length)
    return reset(UpdateSub.MALFORMED_ATTR_LIST, `total path attribute length ${aLen} overruns the message`);
  const withdrawn = decodePrefixes(b.subarray(2, 2 + wLen), AFI_IPV4);
  if (!withdrawn) return reset(UpdateSub.INVALID_NETWORK_FIELD, 'malformed withdrawn routes field');
  const nlri = decodePrefixes(b.subarray(aStart + aLen), AFI_IPV4);
  if (!nlri) return reset(UpdateSub.INVALID_NETWORK_FIELD, 'malformed NLRI field');

  const attrs: PathAttributes = {};
  const errors: BgpError[] = [];
  const seen = new Set<number>();
  const soft: Soft = (action, subcode, reason, data) => {
    errors.push({ code: ErrCode.UPDATE, subcode, data: Buffer.from(data), action, reason });
  };
  const a = b.subarray(aStart, aStart + aLen);
  let off = 0;
  while (off < a.length) {
    // RFC 7606 §4: a header or length overrunning the attribute field is treat-as-withdraw.
    if (a.length - off < 3) {
      soft('treat-as-withdraw', UpdateSub.MALFORMED_ATTR_LIST, 'truncated attribute header', a.subarray(off));
      break;
    }
    const flags = a[off] as number;
    const type = a[off + 1] as number;
    const ext = (flags & F_EXTENDED) !== 0;
    const hdr = ext ? 4 : 3;
    if (a.length - off < hdr) {
      soft(
        'treat-as-withdraw',
        UpdateSub.MALFORMED_ATTR_LIST,
        'truncated extended attribute header',
        a.subarray(off),
      );
      break;
    }
    const len = ext ? a.readUInt16BE(off + 2) : (a[off + 2] as number);
    if (off + hdr + len > a.length) {
      if (isMpAttr(type))
        return reset(UpdateSub.MALFORMED_ATTR_LIST, `attribute ${type} overruns the attribute field`);
      soft(
        'treat-as-withdraw',
        UpdateSub.MALFORMED_ATTR_LIST,
        `attribute ${type} length ${len} overruns the attribute field`,
        a.subarray(off),
      );
      break;
    }
    const whole = a.subarray(off, off + hdr + len);
    const v = a.subarray(off + hdr, off + hdr + len);
    off += hdr + len;
    const isMp = isMpAttr(type);
    if (seen.has(type)) {
      // RFC 7606 §3 g: repeated MP attributes reset; other repeats keep the first.
      if (isMp) return reset(UpdateSub.MALFORMED_ATTR_LIST, `attribute ${type} repeated`);
      soft('attribute-discard', UpdateSub.MALFORMED_ATTR_LIST, `attribute ${type} repeated`, whole);
      continue;
    }
    seen.add(type);
    const expected = (ATTR_FLAGS as Partial<Record<number, number>>)[type];
    if (expected === undefined) {
      if ((flags & F_OPTIONAL) === 0)
        return reset(
          UpdateSub.UNRECOGNIZED_WELL_KNOWN,
          `unrecognized well-known attribute ${type}`,
          Buffer.from(whole),
        );
      (attrs.unknown ??= []).push({ flags: flags | F_PARTIAL, type, value: Buffer.from(v) });
      continue;
    }
    if ((flags & (F_OPTIONAL | F_TRANSITIVE)) !== expected) {
      if (isMp) return reset(UpdateSub.ATTR_FLAGS, `attribute ${type} flags 0x${flags.toString(16)}`, whole);
      soft(
        'treat-as-withdraw',
        UpdateSub.ATTR_FLAGS,
        `attribute ${type} flags 0x${flags.toString(16)}`,
        whole,
      );
      continue;
    }
    const err = decodeAttr(type, v, whole, attrs, ctx, soft);
    if (err) return { ok: false, error: err };
  }

  // Mandatory well-known attributes when something is announced (RFC 4271 §6.3, RFC 7606 §3 d).
  const announces = nlri.length > 0 || (attrs.mpReach?.nlri.length ?? 0) > 0;
  if (announces && errors.every((e) => e.action !== 'treat-as-withdraw')) {
    const missing: number[] = [];
    if (attrs.origin === undefined) missing.push(AttrType.ORIGIN);
    if (attrs.asPath === undefined) missing.push(AttrType.AS_PATH);
    if (nlri.length > 0 && attrs.nextHop === undefined) missing.push(AttrType.NEXT_HOP);
    if (ctx.ibgp && attrs.localPref === undefined) missing.push(AttrType.LOCAL_PREF);
    for (const t of missing)
      soft(
        'treat-as-withdraw',
        UpdateSub.MISSING_WELL_KNOWN,
        `missing well-known attribute ${t}`,
        Buffer.from([t]),
      );
  }
  const treatAsWithdraw = errors.some((e) => e.action === 'treat-as-withdraw');
  return { ok: true, msg: { type: MsgType.UPDATE, withdrawn, attrs, nlri, errors, treatAsWithdraw } };
}

/** True when the UPDATE is an End-of-RIB marker (RFC 4724 §2); returns its family. */
export function endOfRibFamily(m: UpdateMessage): Family | null {
  const a = m.attrs;
  if (m.withdrawn.length || m.nlri.length) return null;
  const keys = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  if (keys.length === 0) return { afi: AFI_IPV4, safi: SAFI_UNICAST };
  if (keys.length === 1 && a.mpUnreach && a.mpUnreach.withdrawn.length === 0)
    return { afi: a.mpUnreach.afi, safi: a.mpUnreach.safi };
  return null;
}

export interface UpdateOptions {
  /** IPv4 prefixes withdrawn in the Withdrawn Routes field. */
  withdrawn?: string[];
  /** IPv4 prefixes announced in the NLRI field (needs origin, asPath, nextHop). */
  nlri?: string[];
  attrs?: PathAttributes;
}

/** Encode one UPDATE; `fourOctetAs` says whether AS numbers go out as 4 octets (else AS_TRANS + AS4_PATH). */
export function encodeUpdate(u: UpdateOptions, ctx: { fourOctetAs: boolean }): Buffer {
  const w = Buffer.concat((u.withdrawn ?? []).map(encodePrefix));
  const nlri = Buffer.concat((u.nlri ?? []).map(encodePrefix));
  const attrBytes = encodeAttributes(u.attrs ?? {}, ctx);
  const body = Buffer.alloc(4 + w.length + attrBytes.length + nlri.length);
  body.writeUInt16BE(w.length, 0);
  w.copy(body, 2);
  body.writeUInt16BE(attrBytes.length, 2 + w.length);
  attrBytes.copy(body, 4 + w.length);
  nlri.copy(body, 4 + w.length + attrBytes.length);
  return frame(MsgType.UPDATE, body);
}

/** End-of-RIB for a family (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an empty MP_UNREACH otherwise. */
export function encodeEndOfRib(f: Family): Buffer {
  if (f.afi === AFI_IPV4 && f.safi === SAFI_UNICAST) return encodeUpdate({}, { fourOctetAs: true });
  return encodeUpdate(
    { attrs: { mpUnreach: { afi: f.afi, safi: f.safi, withdrawn: [] } } },
    { fourOctetAs: true },
  );
}
