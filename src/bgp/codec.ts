// Pure BGP-4 message codec over Buffer (RFC 4271, 4760, 6793, 2918, 4724, 1997, 8092, 7606): no I/O.
import { AFI_IPV4, AFI_IPV6, bytesToIp, formatPrefix, ipToBytes, maskBytes, parsePrefix } from './ip';

export const BGP_PORT = 179;
export const HEADER_LEN = 19;
export const MAX_MESSAGE_LEN = 4096;
/** AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS. */
export const AS_TRANS = 23456;
export const SAFI_UNICAST = 1;
/** GRACEFUL_SHUTDOWN well-known community (RFC 8326). */
export const GRACEFUL_SHUTDOWN = '65535:0';

export enum MsgType {
  OPEN = 1,
  UPDATE = 2,
  NOTIFICATION = 3,
  KEEPALIVE = 4,
  ROUTE_REFRESH = 5,
}

/** NOTIFICATION error codes (RFC 4271 §4.5). */
export enum ErrCode {
  HEADER = 1,
  OPEN = 2,
  UPDATE = 3,
  HOLD_TIMER_EXPIRED = 4,
  FSM = 5,
  CEASE = 6,
}

/** Message Header Error subcodes. */
export enum HeaderSub {
  NOT_SYNCHRONIZED = 1,
  BAD_LENGTH = 2,
  BAD_TYPE = 3,
}

/** OPEN Message Error subcodes (0 = unspecific, for a malformed recognised parameter). */
export enum OpenSub {
  UNSPECIFIC = 0,
  UNSUPPORTED_VERSION = 1,
  BAD_PEER_AS = 2,
  BAD_BGP_ID = 3,
  UNSUPPORTED_OPT_PARAM = 4,
  UNACCEPTABLE_HOLD_TIME = 6,
  UNSUPPORTED_CAPABILITY = 7,
}

/** UPDATE Message Error subcodes. */
export enum UpdateSub {
  MALFORMED_ATTR_LIST = 1,
  UNRECOGNIZED_WELL_KNOWN = 2,
  MISSING_WELL_KNOWN = 3,
  ATTR_FLAGS = 4,
  ATTR_LENGTH = 5,
  INVALID_ORIGIN = 6,
  INVALID_NEXT_HOP = 8,
  OPTIONAL_ATTR = 9,
  INVALID_NETWORK_FIELD = 10,
  MALFORMED_AS_PATH = 11,
}

/** Cease subcodes (RFC 4486). */
export enum CeaseSub {
  MAX_PREFIXES = 1,
  ADMIN_SHUTDOWN = 2,
  PEER_DECONFIGURED = 3,
  ADMIN_RESET = 4,
  CONNECTION_REJECTED = 5,
  OTHER_CONFIG_CHANGE = 6,
  COLLISION_RESOLUTION = 7,
}

export enum AttrType {
  ORIGIN = 1,
  AS_PATH = 2,
  NEXT_HOP = 3,
  MED = 4,
  LOCAL_PREF = 5,
  ATOMIC_AGGREGATE = 6,
  AGGREGATOR = 7,
  COMMUNITIES = 8,
  MP_REACH_NLRI = 14,
  MP_UNREACH_NLRI = 15,
  AS4_PATH = 17,
  AS4_AGGREGATOR = 18,
  LARGE_COMMUNITY = 32,
}

const F_OPTIONAL = 0x80;
const F_TRANSITIVE = 0x40;
const F_PARTIAL = 0x20;
const F_EXTENDED = 0x10;

/** Expected Optional/Transitive bits per recognised attribute. */
const ATTR_FLAGS: Record<number, number> = {
  [AttrType.ORIGIN]: F_TRANSITIVE,
  [AttrType.AS_PATH]: F_TRANSITIVE,
  [AttrType.NEXT_HOP]: F_TRANSITIVE,
  [AttrType.MED]: F_OPTIONAL,
  [AttrType.LOCAL_PREF]: F_TRANSITIVE,
  [AttrType.ATOMIC_AGGREGATE]: F_TRANSITIVE,
  [AttrType.AGGREGATOR]: F_OPTIONAL | F_TRANSITIVE,
  [AttrType.COMMUNITIES]: F_OPTIONAL | F_TRANSITIVE,
  [AttrType.MP_REACH_NLRI]: F_OPTIONAL,
  [AttrType.MP_UNREACH_NLRI]: F_OPTIONAL,
  [AttrType.AS4_PATH]: F_OPTIONAL | F_TRANSITIVE,
  [AttrType.AS4_AGGREGATOR]: F_OPTIONAL | F_TRANSITIVE,
  [AttrType.LARGE_COMMUNITY]: F_OPTIONAL | F_TRANSITIVE,
};

export enum Capability {
  MULTIPROTOCOL = 1,
  ROUTE_REFRESH = 2,
  GRACEFUL_RESTART = 64,
  FOUR_OCTET_AS = 65,
}

export enum Origin {
  IGP = 0,
  EGP = 1,
  INCOMPLETE = 2,
}

export enum AsPathSegType {
  AS_SET = 1,
  AS_SEQUENCE = 2,
  CONFED_SEQUENCE = 3,
  CONFED_SET = 4,
}

export interface Family {
  afi: number;
  safi: number;
}

export interface GracefulRestartCap {
  /** R bit: the sender has restarted. */
  restarted: boolean;
  /** Seconds the peer should keep our routes while we come back (12 bits). */
  restartTime: number;
  families: (Family & { forwardingPreserved: boolean })[];
}

export interface Capabilities {
  multiprotocol: Family[];
  routeRefresh: boolean;
  /** The 4-octet AS carried by the capability, when present. */
  fourOctetAs?: number;
  gracefulRestart?: GracefulRestartCap;
  unknown: { code: number; value: Buffer }[];
}

export interface OpenMessage {
  type: MsgType.OPEN;
  version: number;
  /** The 2-octet My AS field (AS_TRANS when the real AS needs 4 octets). */
  myAs: number;
  holdTime: number;
  routerId: string;
  caps: Capabilities;
}

export interface AsPathSegment {
  type: AsPathSegType;
  asns: number[];
}

export interface MpReach {
  afi: number;
  safi: number;
  /** Global next hop, then the link-local one when 32 bytes were sent. */
  nextHops: string[];
  nlri: string[];
}

export interface MpUnreach {
  afi: number;
  safi: number;
  withdrawn: string[];
}

export interface PathAttributes {
  origin?: Origin;
  asPath?: AsPathSegment[];
  nextHop?: string;
  med?: number;
  localPref?: number;
  atomicAggregate?: boolean;
  aggregator?: { asn: number; address: string };
  /** RFC 1997 communities as 'asn:value'. */
  communities?: string[];
  /** RFC 8092 large communities as 'global:local1:local2'. */
  largeCommunities?: string[];
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
  as4Path?: AsPathSegment[];
  /** Attributes the codec does not interpret, kept as received. */
  unknown?: { flags: number; type: number; value: Buffer }[];
}

/** How a malformed attribute is handled (RFC 7606 §2). */
export type ErrorAction = 'session-reset' | 'treat-as-withdraw' | 'attribute-discard';

/** A protocol error: the NOTIFICATION an RFC 4271 speaker would send, and the RFC 7606 action. */
export interface BgpError {
  code: number;
  subcode: number;
  data: Buffer;
  action: ErrorAction;
  reason: string;
}

export interface UpdateMessage {
  type: MsgType.UPDATE;
  /** IPv4 prefixes from the Withdrawn Routes field. */
  withdrawn: string[];
  attrs: PathAttributes;
  /** IPv4 prefixes from the NLRI field. */
  nlri: string[];
  /** Attribute errors that did not reset the session (treat-as-withdraw or attribute-discard). */
  errors: BgpError[];
  /** True when an error demands every announced prefix in this UPDATE be treated as withdrawn. */
  treatAsWithdraw: boolean;
}

export interface NotificationMessage {
  type: MsgType.NOTIFICATION;
  code: number;
  subcode: number;
  data: Buffer;
}

export interface KeepaliveMessage {
  type: MsgType.KEEPALIVE;
}

export interface RouteRefreshMessage {
  type: MsgType.ROUTE_REFRESH;
  afi: number;
  safi: number;
}

export type BgpMessage =
  OpenMessage | UpdateMessage | NotificationMessage | KeepaliveMessage | RouteRefreshMessage;

export type DecodeResult = { ok: true; msg: BgpMessage } | { ok: false; error: BgpError };

/** Session facts the UPDATE decoder needs. */
export interface DecodeContext {
  /** Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet ASNs. */
  fourOctetAs: boolean;
  /** The peer is in our AS (LOCAL_PREF expected, not discarded). */
  ibgp?: boolean;
}

const MARKER = Buffer.alloc(16, 0xff);

/** Error constructor for a session-resetting problem. */
function fatal(code: number, subcode: number, reason: string, data: Buffer = Buffer.alloc(0)): BgpError {
  return { code, subcode, data, action: 'session-reset', reason };
}

/** Human name of a NOTIFICATION code/subcode, for logs and status. */
export function describeNotification(code: number, subcode: number): string {
  const names: Record<number, [string, Record<number, string>]> = {
    1: [
      'Message Header Error',
      { 1: 'Connection Not Synchronized', 2: 'Bad Message Length', 3: 'Bad Message Type' },
    ],
    2: [
      'OPEN Message Error',
      {
        1: 'Unsupported Version Number',
        2: 'Bad Peer AS',
        3: 'Bad BGP Identifier',
        4: 'Unsupported Optional Parameter',
        6: 'Unacceptable Hold Time',
        7: 'Unsupported Capability',
      },
    ],
    3: [
      'UPDATE Message Error',
      {
        1: 'Malformed Attribute List',
        2: 'Unrecognized Well-known Attribute',
        3: 'Missing Well-known Attribute',
        4: 'Attribute Flags Error',
        5: 'Attribute Length Error',
        6: 'Invalid ORIGIN Attribute',
        8: 'Invalid NEXT_HOP Attribute',
        9: 'Optional Attribute Error',
        10: 'Invalid Network Field',
        11: 'Malformed AS_PATH',
      },
    ],
    4: ['Hold Timer Expired', {}],
    5: ['Finite State Machine Error', {}],
    6: [
      'Cease',
      {
        1: 'Maximum Number of Prefixes Reached',
        2: 'Administrative Shutdown',
        3: 'Peer De-configured',
        4: 'Administrative Reset',
        5: 'Connection Rejected',
        6: 'Other Configuration Change',
        7: 'Connection Collision Resolution',
        8: 'Out of Resources',
      },
    ],
  };
  const entry = names[code];
  if (!entry) return `code ${code}/${subcode}`;
  const sub = entry[1][subcode];
  return sub ? `${entry[0]} / ${sub}` : `${entry[0]} (subcode ${subcode})`;
}

// ---------------------------------------------------------------------------------------------------
// Framing

export interface FrameResult {
  /** Complete messages, header included. */
  frames: Buffer[];
  /** Bytes of an incomplete trailing message. */
  rest: Buffer;
  /** A header error: the stream cannot be resynchronised, the session must reset. */
  error?: BgpError;
}

/** Split a TCP byte stream into whole messages, checking marker and length (RFC 4271 §6.1). */
export function splitFrames(buf: Buffer): FrameResult {
  const frames: Buffer[] = [];
  let off = 0;
  while (buf.length - off >= HEADER_LEN) {
    if (!buf.subarray(off, off + 16).equals(MARKER))
      return { frames, rest: Buffer.alloc(0), error: fatal(1, 1, 'marker is not all ones') };
    const len = buf.readUInt16BE(off + 16);
    if (len < HEADER_LEN || len > MAX_MESSAGE_LEN)
      return {
        frames,
        rest: Buffer.alloc(0),
        error: fatal(1, 2, `message length ${len} outside 19..4096`, buf.subarray(off + 16, off + 18)),
      };
    if (buf.length - off < len) break;
    frames.push(buf.subarray(off, off + len));
    off += len;
  }
  return { frames, rest: buf.subarray(off) };
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/** Decode one whole message (header included). Never throws: every problem is a BgpError. */
export function decodeMessage(buf: Buffer, ctx: DecodeContext): DecodeResult {
  try {
    return decodeUnchecked(buf, ctx);
  } catch (e) {
    // A bounds slip in a decoder is still a malformed message, never a crash.
    return { ok: false, error: fatal(1, 2, `undecodable message: ${(e as Error).message}`) };
  }
}

function decodeUnchecked(buf: Buffer, ctx: DecodeContext): DecodeResult {
  if (buf.length < HEADER_LEN) return { ok: false, error: fatal(1, 2, `short header (${buf.length} bytes)`) };
  if (!buf.subarray(0, 16).equals(MARKER)) return { ok: false, error: fatal(1, 1, 'marker is not all ones') };
  const len = buf.readUInt16BE(16);
  const lenField = buf.subarray(16, 18);
  if (len !== buf.length || len < HEADER_LEN || len > MAX_MESSAGE_LEN)
    return { ok: false, error: fatal(1, 2, `bad message length ${len}`, lenField) };
  const type = buf[18] as number;
  const body = buf.subarray(HEADER_LEN);
  const badLen = (why: string): DecodeResult => ({ ok: false, error: fatal(1, 2, why, lenField) });
  switch (type) {
    case MsgType.OPEN:
      if (len < 29) return badLen(`OPEN length ${len} < 29`);
      return decodeOpen(body);
    case MsgType.UPDATE:
      if (len < 23) return badLen(`UPDATE length ${len} < 23`);
      return decodeUpdate(body, ctx);
    case MsgType.NOTIFICATION:
      if (len < 21) return badLen(`NOTIFICATION length ${len} < 21`);
      return {
        ok: true,
        msg: {
          type,
          code: body[0] as number,
          subcode: body[1] as number,
          data: Buffer.from(body.subarray(2)),
        },
      };
    case MsgType.KEEPALIVE:
      if (len !== 19) return badLen(`KEEPALIVE length ${len} != 19`);
      return { ok: true, msg: { type } };
    case MsgType.ROUTE_REFRESH:
      if (len !== 23) return badLen(`ROUTE-REFRESH length ${len} != 23`);
      return { ok: true, msg: { type, afi: body.readUInt16BE(0), safi: body[3] as number } };
    default:
      return { ok: false, error: fatal(1, 3, `unknown message type ${type}`, Buffer.from([type])) };
  }
}

function decodeOpen(b: Buffer): DecodeResult {
  const version = b[0] as number;
  if (version !== 4)
    return { ok: false, error: fatal(2, 1, `unsupported version ${version}`, Buffer.from([0, 4])) };
  const myAs = b.readUInt16BE(1);
  const holdTime = b.readUInt16BE(3);
  if (holdTime === 1 || holdTime === 2)
    return { ok: false, error: fatal(2, 6, `unacceptable hold time ${holdTime}`) };
  const idBytes = b.subarray(5, 9);
  if (idBytes.readUInt32BE(0) === 0) return { ok: false, error: fatal(2, 3, 'BGP identifier 0.0.0.0') };
  const optLen = b[9] as number;
  if (10 + optLen !== b.length)
    return { ok: false, error: fatal(2, 0, `optional parameters length ${optLen} != ${b.length - 10}`) };
  const caps: Capabilities = { multiprotocol: [], routeRefresh: false, unknown: [] };
  let off = 10;
  while (off < b.length) {
    if (b.length - off < 2) return { ok: false, error: fatal(2, 0, 'truncated optional parameter') };
    const ptype = b[off] as number;
    const plen = b[off + 1] as number;
    if (off + 2 + plen > b.length) return { ok: false, error: fatal(2, 0, 'optional parameter overruns') };
    if (ptype !== 2)
      return {
        ok: false,
        error: fatal(
          2,
          4,
          `unsupported optional parameter ${ptype}`,
          Buffer.from(b.subarray(off, off + 2 + plen)),
        ),
      };
    const err = decodeCapabilities(b.subarray(off + 2, off + 2 + plen), caps);
    if (err) return { ok: false, error: err };
    off += 2 + plen;
  }
  return {
    ok: true,
    msg: { type: MsgType.OPEN, version, myAs, holdTime, routerId: bytesToIp(idBytes), caps },
  };
}

function decodeCapabilities(b: Buffer, caps: Capabilities): BgpError | null {
  let off = 0;
  while (off < b.length) {
    if (b.length - off < 2) return fatal(2, 0, 'truncated capability');
    const code = b[off] as number;
    const len = b[off + 1] as number;
    if (off + 2 + len > b.length) return fatal(2, 0, `capability ${code} overruns its parameter`);
    const v = b.subarray(off + 2, off + 2 + len);
    switch (code) {
      case Capability.MULTIPROTOCOL:
        if (len !== 4) return fatal(2, 0, `multiprotocol capability length ${len} != 4`);
        caps.multiprotocol.push({ afi: v.readUInt16BE(0), safi: v[3] as number });
        break;
      case Capability.ROUTE_REFRESH:
        if (len !== 0) return fatal(2, 0, `route refresh capability length ${len} != 0`);
        caps.routeRefresh = true;
        break;
      case Capability.FOUR_OCTET_AS:
        if (len !== 4) return fatal(2, 0, `4-octet AS capability length ${len} != 4`);
        caps.fourOctetAs = v.readUInt32BE(0);
        break;
      case Capability.GRACEFUL_RESTART: {
        if (len < 2 || (len - 2) % 4 !== 0) return fatal(2, 0, `graceful restart capability length ${len}`);
        const word = v.readUInt16BE(0);
        const families: GracefulRestartCap['families'] = [];
        for (let i = 2; i < len; i += 4)
          families.push({
            afi: v.readUInt16BE(i),
            safi: v[i + 2] as number,
            forwardingPreserved: ((v[i + 3] as number) & 0x80) !== 0,
          });
        caps.gracefulRestart = { restarted: (word & 0x8000) !== 0, restartTime: word & 0x0fff, families };
        break;
      }
      default:
        caps.unknown.push({ code, value: Buffer.from(v) });
    }
    off += 2 + len;
  }
  return null;
}

/** Decode prefixes of one family; null when a length is out of range or the field overruns. */
function decodePrefixes(b: Buffer, afi: number): string[] | null {
  const max = afi === AFI_IPV4 ? 32 : 128;
  const width = max / 8;
  const out: string[] = [];
  let off = 0;
  while (off < b.length) {
    const len = b[off] as number;
    if (len > max) return null;
    const n = Math.ceil(len / 8);
    if (off + 1 + n > b.length) return null;
    const addr = Buffer.alloc(width);
    b.copy(addr, 0, off + 1, off + 1 + n);
    out.push(formatPrefix({ afi: afi as 1 | 2, addr: maskBytes(addr, len), len }));
    off += 1 + n;
  }
  return out;
}

function decodeAsPath(v: Buffer, asnSize: 2 | 4): AsPathSegment[] | null {
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

function decodeUpdate(b: Buffer, ctx: DecodeContext): DecodeResult {
  const wLen = b.readUInt16BE(0);
  if (2 + wLen + 2 > b.length)
    return { ok: false, error: fatal(3, 1, `withdrawn routes length ${wLen} overruns the message`) };
  const aLen = b.readUInt16BE(2 + wLen);
  const aStart = 4 + wLen;
  if (aStart + aLen > b.length)
    return { ok: false, error: fatal(3, 1, `total path attribute length ${aLen} overruns the message`) };
  const withdrawn = decodePrefixes(b.subarray(2, 2 + wLen), AFI_IPV4);
  if (!withdrawn) return { ok: false, error: fatal(3, 10, 'malformed withdrawn routes field') };
  const nlri = decodePrefixes(b.subarray(aStart + aLen), AFI_IPV4);
  if (!nlri) return { ok: false, error: fatal(3, 10, 'malformed NLRI field') };

  const attrs: PathAttributes = {};
  const errors: BgpError[] = [];
  const seen = new Set<number>();
  const soft = (action: ErrorAction, subcode: number, reason: string, data: Buffer): void => {
    errors.push({ code: 3, subcode, data: Buffer.from(data), action, reason });
  };
  const a = b.subarray(aStart, aStart + aLen);
  let off = 0;
  while (off < a.length) {
    // RFC 7606 §4: a header or length overrunning the attribute field is treat-as-withdraw.
    if (a.length - off < 3) {
      soft('treat-as-withdraw', 1, 'truncated attribute header', a.subarray(off));
      break;
    }
    const flags = a[off] as number;
    const type = a[off + 1] as number;
    const ext = (flags & F_EXTENDED) !== 0;
    const hdr = ext ? 4 : 3;
    if (a.length - off < hdr) {
      soft('treat-as-withdraw', 1, 'truncated extended attribute header', a.subarray(off));
      break;
    }
    const len = ext ? a.readUInt16BE(off + 2) : (a[off + 2] as number);
    if (off + hdr + len > a.length) {
      if (type === AttrType.MP_REACH_NLRI || type === AttrType.MP_UNREACH_NLRI)
        return { ok: false, error: fatal(3, 1, `attribute ${type} overruns the attribute field`) };
      soft(
        'treat-as-withdraw',
        1,
        `attribute ${type} length ${len} overruns the attribute field`,
        a.subarray(off),
      );
      break;
    }
    const whole = a.subarray(off, off + hdr + len);
    const v = a.subarray(off + hdr, off + hdr + len);
    off += hdr + len;
    const isMp = type === AttrType.MP_REACH_NLRI || type === AttrType.MP_UNREACH_NLRI;
    if (seen.has(type)) {
      // RFC 7606 §3 g: repeated MP attributes reset; other repeats keep the first.
      if (isMp) return { ok: false, error: fatal(3, 1, `attribute ${type} repeated`) };
      soft('attribute-discard', 1, `attribute ${type} repeated`, whole);
      continue;
    }
    seen.add(type);
    const expected = ATTR_FLAGS[type];
    if (expected === undefined) {
      if ((flags & F_OPTIONAL) === 0)
        return {
          ok: false,
          error: fatal(3, 2, `unrecognized well-known attribute ${type}`, Buffer.from(whole)),
        };
      (attrs.unknown ??= []).push({ flags: flags | F_PARTIAL, type, value: Buffer.from(v) });
      continue;
    }
    if ((flags & (F_OPTIONAL | F_TRANSITIVE)) !== expected) {
      if (isMp)
        return { ok: false, error: fatal(3, 4, `attribute ${type} flags 0x${flags.toString(16)}`, whole) };
      soft('treat-as-withdraw', 4, `attribute ${type} flags 0x${flags.toString(16)}`, whole);
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
      soft('treat-as-withdraw', 3, `missing well-known attribute ${t}`, Buffer.from([t]));
  }
  const treatAsWithdraw = errors.some((e) => e.action === 'treat-as-withdraw');
  return { ok: true, msg: { type: MsgType.UPDATE, withdrawn, attrs, nlri, errors, treatAsWithdraw } };
}

type Soft = (action: ErrorAction, subcode: number, reason: string, data: Buffer) => void;

function decodeAttr(
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
      if (len !== 1) soft('treat-as-withdraw', 5, `ORIGIN length ${len}`, whole);
      else if ((v[0] as number) > 2) soft('treat-as-withdraw', 6, `ORIGIN value ${v[0]}`, whole);
      else attrs.origin = v[0] as Origin;
      return null;
    case AttrType.AS_PATH: {
      const segs = decodeAsPath(v, ctx.fourOctetAs ? 4 : 2);
      if (!segs) soft('treat-as-withdraw', 11, 'malformed AS_PATH', whole);
      else attrs.asPath = segs;
      return null;
    }
    case AttrType.NEXT_HOP: {
      if (len !== 4) {
        soft('treat-as-withdraw', 5, `NEXT_HOP length ${len}`, whole);
        return null;
      }
      const first = v[0] as number;
      // 0.0.0.0, loopback, multicast/class E are never valid next hops (RFC 4271 §6.3).
      if (v.readUInt32BE(0) === 0 || first === 127 || first >= 224)
        soft('treat-as-withdraw', 8, `NEXT_HOP ${bytesToIp(v)} is not a unicast address`, whole);
      else attrs.nextHop = bytesToIp(v);
      return null;
    }
    case AttrType.MED:
      if (len !== 4) soft('treat-as-withdraw', 5, `MULTI_EXIT_DISC length ${len}`, whole);
      else attrs.med = v.readUInt32BE(0);
      return null;
    case AttrType.LOCAL_PREF:
      // RFC 7606 §7.5: from an external peer it is discarded; a bad length is treat-as-withdraw.
      if (!ctx.ibgp) soft('attribute-discard', 9, 'LOCAL_PREF from an external peer', whole);
      else if (len !== 4) soft('treat-as-withdraw', 5, `LOCAL_PREF length ${len}`, whole);
      else attrs.localPref = v.readUInt32BE(0);
      return null;
    case AttrType.ATOMIC_AGGREGATE:
      if (len !== 0) soft('attribute-discard', 5, `ATOMIC_AGGREGATE length ${len}`, whole);
      else attrs.atomicAggregate = true;
      return null;
    case AttrType.AGGREGATOR: {
      const want = ctx.fourOctetAs ? 8 : 6;
      if (len !== want) soft('attribute-discard', 5, `AGGREGATOR length ${len} != ${want}`, whole);
      else
        attrs.aggregator = {
          asn: want === 8 ? v.readUInt32BE(0) : v.readUInt16BE(0),
          address: bytesToIp(v.subarray(want - 4)),
        };
      return null;
    }
    case AttrType.AS4_AGGREGATOR:
      if (len !== 8) soft('attribute-discard', 5, `AS4_AGGREGATOR length ${len}`, whole);
      return null;
    case AttrType.AS4_PATH: {
      // RFC 6793 §6: a malformed AS4_PATH is discarded.
      const segs = decodeAsPath(v, 4);
      if (!segs) soft('attribute-discard', 9, 'malformed AS4_PATH', whole);
      else attrs.as4Path = segs;
      return null;
    }
    case AttrType.COMMUNITIES:
      if (len === 0 || len % 4 !== 0) soft('treat-as-withdraw', 5, `COMMUNITIES length ${len}`, whole);
      else {
        const out: string[] = [];
        for (let i = 0; i < len; i += 4) out.push(`${v.readUInt16BE(i)}:${v.readUInt16BE(i + 2)}`);
        attrs.communities = out;
      }
      return null;
    case AttrType.LARGE_COMMUNITY:
      if (len === 0 || len % 12 !== 0) soft('treat-as-withdraw', 5, `LARGE_COMMUNITY length ${len}`, whole);
      else {
        const out: string[] = [];
        for (let i = 0; i < len; i += 12)
          out.push(`${v.readUInt32BE(i)}:${v.readUInt32BE(i + 4)}:${v.readUInt32BE(i + 8)}`);
        attrs.largeCommunities = out;
      }
      return null;
    case AttrType.MP_REACH_NLRI: {
      // RFC 7606 §7.11: a malformed MP_REACH_NLRI resets the session.
      if (len < 5) return fatal(3, 9, `MP_REACH_NLRI length ${len}`, Buffer.from(whole));
      const afi = v.readUInt16BE(0);
      const safi = v[2] as number;
      const nhLen = v[3] as number;
      if (4 + nhLen + 1 > len)
        return fatal(3, 9, `MP_REACH_NLRI next hop length ${nhLen}`, Buffer.from(whole));
      const nhb = v.subarray(4, 4 + nhLen);
      const nextHops: string[] = [];
      if (afi === AFI_IPV6) {
        if (nhLen !== 16 && nhLen !== 32)
          return fatal(3, 9, `MP_REACH_NLRI IPv6 next hop length ${nhLen}`, Buffer.from(whole));
        for (let i = 0; i < nhLen; i += 16) nextHops.push(bytesToIp(nhb.subarray(i, i + 16)));
      } else if (afi === AFI_IPV4) {
        if (nhLen !== 4 && nhLen !== 16 && nhLen !== 32)
          return fatal(3, 9, `MP_REACH_NLRI IPv4 next hop length ${nhLen}`, Buffer.from(whole));
        for (let i = 0; i < nhLen; i += nhLen === 4 ? 4 : 16)
          nextHops.push(bytesToIp(nhb.subarray(i, i + (nhLen === 4 ? 4 : 16))));
      }
      // Skip the reserved SNPA octet (RFC 4760 §3).
      const nlriBytes = v.subarray(4 + nhLen + 1);
      let nlri: string[] = [];
      if (afi === AFI_IPV4 || afi === AFI_IPV6) {
        const p = decodePrefixes(nlriBytes, afi);
        if (!p) return fatal(3, 9, 'malformed MP_REACH_NLRI prefixes', Buffer.from(whole));
        nlri = p;
      }
      attrs.mpReach = { afi, safi, nextHops, nlri };
      return null;
    }
    case AttrType.MP_UNREACH_NLRI: {
      if (len < 3) return fatal(3, 9, `MP_UNREACH_NLRI length ${len}`, Buffer.from(whole));
      const afi = v.readUInt16BE(0);
      const safi = v[2] as number;
      let withdrawn: string[] = [];
      if (afi === AFI_IPV4 || afi === AFI_IPV6) {
        const p = decodePrefixes(v.subarray(3), afi);
        if (!p) return fatal(3, 9, 'malformed MP_UNREACH_NLRI prefixes', Buffer.from(whole));
        withdrawn = p;
      }
      attrs.mpUnreach = { afi, safi, withdrawn };
      return null;
    }
    default:
      return null;
  }
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

// ---------------------------------------------------------------------------------------------------
// Encoding

function frame(type: MsgType, body: Buffer): Buffer {
  const len = HEADER_LEN + body.length;
  if (len > MAX_MESSAGE_LEN) throw new RangeError(`message of ${len} bytes exceeds ${MAX_MESSAGE_LEN}`);
  const out = Buffer.alloc(len);
  MARKER.copy(out, 0);
  out.writeUInt16BE(len, 16);
  out[18] = type;
  body.copy(out, HEADER_LEN);
  return out;
}

export interface OpenOptions {
  asn: number;
  holdTime: number;
  routerId: string;
  families: Family[];
  routeRefresh?: boolean;
  /** Advertise graceful restart with this restart time (s, 0..4095); omitted = no capability. */
  gracefulRestart?: { restartTime: number; restarted?: boolean; forwardingPreserved?: boolean };
}

export function encodeOpen(o: OpenOptions): Buffer {
  const caps: Buffer[] = [];
  const cap = (code: number, v: Buffer): void => {
    caps.push(Buffer.concat([Buffer.from([code, v.length]), v]));
  };
  for (const f of o.families) {
    const v = Buffer.alloc(4);
    v.writeUInt16BE(f.afi, 0);
    v[3] = f.safi;
    cap(Capability.MULTIPROTOCOL, v);
  }
  if (o.routeRefresh !== false) cap(Capability.ROUTE_REFRESH, Buffer.alloc(0));
  const as4 = Buffer.alloc(4);
  as4.writeUInt32BE(o.asn, 0);
  cap(Capability.FOUR_OCTET_AS, as4);
  if (o.gracefulRestart) {
    const g = o.gracefulRestart;
    const v = Buffer.alloc(2 + 4 * o.families.length);
    v.writeUInt16BE((g.restarted ? 0x8000 : 0) | (g.restartTime & 0x0fff), 0);
    o.families.forEach((f, i) => {
      v.writeUInt16BE(f.afi, 2 + i * 4);
      v[4 + i * 4] = f.safi;
      v[5 + i * 4] = g.forwardingPreserved ? 0x80 : 0;
    });
    cap(Capability.GRACEFUL_RESTART, v);
  }
  // One capabilities parameter per capability (RFC 5492 allows either; this is the common form).
  const params = Buffer.concat(caps.map((c) => Buffer.concat([Buffer.from([2, c.length]), c])));
  if (params.length > 255) throw new RangeError('optional parameters exceed 255 bytes');
  const body = Buffer.alloc(10);
  body[0] = 4;
  body.writeUInt16BE(o.asn > 0xffff ? AS_TRANS : o.asn, 1);
  body.writeUInt16BE(o.holdTime, 3);
  ipToBytes(o.routerId).bytes.copy(body, 5);
  body[9] = params.length;
  return frame(MsgType.OPEN, Buffer.concat([body, params]));
}

export function encodeKeepalive(): Buffer {
  return frame(MsgType.KEEPALIVE, Buffer.alloc(0));
}

export function encodeNotification(n: { code: number; subcode: number; data?: Buffer }): Buffer {
  return frame(
    MsgType.NOTIFICATION,
    Buffer.concat([Buffer.from([n.code, n.subcode]), n.data ?? Buffer.alloc(0)]),
  );
}

export function encodeRouteRefresh(f: Family): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(f.afi, 0);
  b[3] = f.safi;
  return frame(MsgType.ROUTE_REFRESH, b);
}

/** Wire form of one prefix: length octet + significant address octets. */
export function encodePrefix(prefix: string): Buffer {
  const p = parsePrefix(prefix);
  const n = Math.ceil(p.len / 8);
  return Buffer.concat([Buffer.from([p.len]), p.addr.subarray(0, n)]);
}

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

/** Parse 'a:b' (RFC 1997) into its 32-bit value; throws naming the value. */
export function parseCommunity(s: string): number {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(s);
  const hi = m ? Number(m[1]) : NaN;
  const lo = m ? Number(m[2]) : NaN;
  if (!(hi <= 0xffff && lo <= 0xffff))
    throw new TypeError(`community "${s}" is not 'asn:value' with 16-bit parts`);
  return hi * 0x10000 + lo;
}

/** Parse 'g:l1:l2' (RFC 8092) into three 32-bit values; throws naming the value. */
export function parseLargeCommunity(s: string): [number, number, number] {
  const m = /^(\d{1,10}):(\d{1,10}):(\d{1,10})$/.exec(s);
  const parts = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
  if (parts.length !== 3 || parts.some((x) => x > 0xffffffff))
    throw new TypeError(`large community "${s}" is not 'global:local1:local2' with 32-bit parts`);
  return parts as [number, number, number];
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
  const a = u.attrs ?? {};
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
  const u32 = (x: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(x, 0);
    return b;
  };
  if (a.med !== undefined) parts.push(attr(F_OPTIONAL, AttrType.MED, u32(a.med)));
  if (a.localPref !== undefined) parts.push(attr(F_TRANSITIVE, AttrType.LOCAL_PREF, u32(a.localPref)));
  if (a.atomicAggregate) parts.push(attr(F_TRANSITIVE, AttrType.ATOMIC_AGGREGATE, Buffer.alloc(0)));
  if (a.communities?.length)
    parts.push(
      attr(
        F_OPTIONAL | F_TRANSITIVE,
        AttrType.COMMUNITIES,
        Buffer.concat(a.communities.map((c) => u32(parseCommunity(c)))),
      ),
    );
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
      attr(
        F_OPTIONAL | F_TRANSITIVE,
        AttrType.LARGE_COMMUNITY,
        Buffer.concat(a.largeCommunities.map((c) => Buffer.concat(parseLargeCommunity(c).map(u32)))),
      ),
    );
  for (const x of a.unknown ?? []) parts.push(attr(x.flags & ~F_EXTENDED, x.type, x.value));
  const attrBytes = Buffer.concat(parts);
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

/** Bytes an encoded prefix takes in an UPDATE (for packing several into one message). */
export function encodedPrefixSize(prefix: string): number {
  return 1 + Math.ceil(parsePrefix(prefix).len / 8);
}

export { AFI_IPV4, AFI_IPV6 };
