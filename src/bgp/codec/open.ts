// OPEN (RFC 4271 §4.2) with capabilities (RFC 5492): multiprotocol, route refresh, 4-octet AS, graceful restart.
import { formatIp as bytesToIp } from '../../model/ip';
import { ipToBytes } from '../ip';
import { AS_TRANS, Capability, ErrCode, MsgType, OPT_PARAM_CAPABILITIES, OpenSub } from './constants';
import { fatal } from './errors';
import { frame } from './framing';
import { BgpError, Capabilities, DecodeResult, Family, GracefulRestartCap } from './types';

/** The only BGP version there is. */
const BGP_VERSION = 4;
/** Graceful restart flags word: R bit, and the 12-bit restart time (RFC 4724 §3). */
const GR_RESTARTED = 0x8000;
const GR_TIME_MASK = 0x0fff;
/** Per-family flags octet: F bit, forwarding state preserved. */
const GR_FORWARDING = 0x80;

/** Body of an OPEN (its length, >= 10, was checked with the header). */
export function decodeOpen(b: Buffer): DecodeResult {
  const version = b[0] as number;
  if (version !== BGP_VERSION)
    return {
      ok: false,
      error: fatal(
        ErrCode.OPEN,
        OpenSub.UNSUPPORTED_VERSION,
        `unsupported version ${version}`,
        Buffer.from([0, BGP_VERSION]),
      ),
    };
  const myAs = b.readUInt16BE(1);
  const holdTime = b.readUInt16BE(3);
  if (holdTime === 1 || holdTime === 2)
    return {
      ok: false,
      error: fatal(ErrCode.OPEN, OpenSub.UNACCEPTABLE_HOLD_TIME, `unacceptable hold time ${holdTime}`),
    };
  const idBytes = b.subarray(5, 9);
  if (idBytes.readUInt32BE(0) === 0)
    return { ok: false, error: fatal(ErrCode.OPEN, OpenSub.BAD_BGP_ID, 'BGP identifier 0.0.0.0') };
  const optLen = b[9] as number;
  if (10 + optLen !== b.length)
    return {
      ok: false,
      error: fatal(
        ErrCode.OPEN,
        OpenSub.UNSPECIFIC,
        `optional parameters length ${optLen} != ${b.length - 10}`,
      ),
    };
  const caps: Capabilities = { multiprotocol: [], routeRefresh: false, unknown: [] };
  let off = 10;
  while (off < b.length) {
    if (b.length - off < 2)
      return { ok: false, error: fatal(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'truncated optional parameter') };
    const ptype = b[off] as number;
    const plen = b[off + 1] as number;
    if (off + 2 + plen > b.length)
      return { ok: false, error: fatal(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'optional parameter overruns') };
    if (ptype !== OPT_PARAM_CAPABILITIES)
      return {
        ok: false,
        error: fatal(
          ErrCode.OPEN,
          OpenSub.UNSUPPORTED_OPT_PARAM,
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
  const malformed = (why: string): BgpError => fatal(ErrCode.OPEN, OpenSub.UNSPECIFIC, why);
  let off = 0;
  while (off < b.length) {
    if (b.length - off < 2) return malformed('truncated capability');
    const code = b[off] as number;
    const len = b[off + 1] as number;
    if (off + 2 + len > b.length) return malformed(`capability ${code} overruns its parameter`);
    const v = b.subarray(off + 2, off + 2 + len);
    switch (code) {
      case Capability.MULTIPROTOCOL:
        if (len !== 4) return malformed(`multiprotocol capability length ${len} != 4`);
        caps.multiprotocol.push({ afi: v.readUInt16BE(0), safi: v[3] as number });
        break;
      case Capability.ROUTE_REFRESH:
        if (len !== 0) return malformed(`route refresh capability length ${len} != 0`);
        caps.routeRefresh = true;
        break;
      case Capability.FOUR_OCTET_AS:
        if (len !== 4) return malformed(`4-octet AS capability length ${len} != 4`);
        caps.fourOctetAs = v.readUInt32BE(0);
        break;
      case Capability.GRACEFUL_RESTART: {
        if (len < 2 || (len - 2) % 4 !== 0) return malformed(`graceful restart capability length ${len}`);
        const word = v.readUInt16BE(0);
        const families: GracefulRestartCap['families'] = [];
        for (let i = 2; i < len; i += 4)
          families.push({
            afi: v.readUInt16BE(i),
            safi: v[i + 2] as number,
            forwardingPreserved: ((v[i + 3] as number) & GR_FORWARDING) !== 0,
          });
        caps.gracefulRestart = {
          restarted: (word & GR_RESTARTED) !== 0,
          restartTime: word & GR_TIME_MASK,
          families,
        };
        break;
      }
      default:
        caps.unknown.push({ code, value: Buffer.from(v) });
    }
    off += 2 + len;
  }
  return null;
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
    v.writeUInt16BE((g.restarted ? GR_RESTARTED : 0) | (g.restartTime & GR_TIME_MASK), 0);
    o.families.forEach((f, i) => {
      v.writeUInt16BE(f.afi, 2 + i * 4);
      v[4 + i * 4] = f.safi;
      v[5 + i * 4] = g.forwardingPreserved ? GR_FORWARDING : 0;
    });
    cap(Capability.GRACEFUL_RESTART, v);
  }
  // One capabilities parameter per capability (RFC 5492 allows either; this is the common form).
  const params = Buffer.concat(
    caps.map((c) => Buffer.concat([Buffer.from([OPT_PARAM_CAPABILITIES, c.length]), c])),
  );
  if (params.length > 255) throw new RangeError('optional parameters exceed 255 bytes');
  const body = Buffer.alloc(10);
  body[0] = BGP_VERSION;
  body.writeUInt16BE(o.asn > 0xffff ? AS_TRANS : o.asn, 1);
  body.writeUInt16BE(o.holdTime, 3);
  ipToBytes(o.routerId).bytes.copy(body, 5);
  body[9] = params.length;
  return frame(MsgType.OPEN, Buffer.concat([body, params]));
}
