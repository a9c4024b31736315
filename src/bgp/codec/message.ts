// One whole message: header checks and dispatch to the per-type decoders; ROUTE-REFRESH (RFC 2918).
import { ErrCode, HEADER_LEN, HeaderSub, MARKER, MAX_MESSAGE_LEN, MsgType } from './constants';
import { fatal } from './errors';
import { frame } from './framing';
import { decodeNotification } from './notification';
import { decodeOpen } from './open';
import { decodeUpdate } from './update';
import { DecodeContext, DecodeResult, Family } from './types';

/** Smallest whole message of each type, and the exact length of the fixed-size ones (RFC 4271 §4). */
const MIN_LEN = { OPEN: 29, UPDATE: 23, NOTIFICATION: 21, KEEPALIVE: 19, ROUTE_REFRESH: 23 } as const;

/** Decode one whole message (header included). Never throws: every problem is a BgpError. */
export function decodeMessage(buf: Buffer, ctx: DecodeContext): DecodeResult {
  try {
    return decodeUnchecked(buf, ctx);
  } catch (e) {
    // A bounds slip in a decoder is still a malformed message, never a crash.
    return {
      ok: false,
      error: fatal(ErrCode.HEADER, HeaderSub.BAD_LENGTH, `undecodable message: ${(e as Error).message}`),
    };
  }
}

function decodeUnchecked(buf: Buffer, ctx: DecodeContext): DecodeResult {
  if (buf.length < HEADER_LEN)
    return {
      ok: false,
      error: fatal(ErrCode.HEADER, HeaderSub.BAD_LENGTH, `short header (${buf.length} bytes)`),
    };
  if (!buf.subarray(0, 16).equals(MARKER))
    return { ok: false, error: fatal(ErrCode.HEADER, HeaderSub.NOT_SYNCHRONIZED, 'marker is not all ones') };
  const len = buf.readUInt16BE(16);
  const lenField = buf.subarray(16, 18);
  const badLen = (why: string): DecodeResult => ({
    ok: false,
    error: fatal(ErrCode.HEADER, HeaderSub.BAD_LENGTH, why, lenField),
  });
  if (len !== buf.length || len < HEADER_LEN || len > MAX_MESSAGE_LEN)
    return badLen(`bad message length ${len}`);
  const type = buf[18] as number;
  const body = buf.subarray(HEADER_LEN);
  switch (type) {
    case MsgType.OPEN:
      if (len < MIN_LEN.OPEN) return badLen(`OPEN length ${len} < ${MIN_LEN.OPEN}`);
      return decodeOpen(body);
    case MsgType.UPDATE:
      if (len < MIN_LEN.UPDATE) return badLen(`UPDATE length ${len} < ${MIN_LEN.UPDATE}`);
      return decodeUpdate(body, ctx);
    case MsgType.NOTIFICATION:
      if (len < MIN_LEN.NOTIFICATION) return badLen(`NOTIFICATION length ${len} < ${MIN_LEN.NOTIFICATION}`);
      return { ok: true, msg: decodeNotification(body) };
    case MsgType.KEEPALIVE:
      if (len !== MIN_LEN.KEEPALIVE) return badLen(`KEEPALIVE length ${len} != ${MIN_LEN.KEEPALIVE}`);
      return { ok: true, msg: { type } };
    case MsgType.ROUTE_REFRESH:
      if (len !== MIN_LEN.ROUTE_REFRESH)
        return badLen(`ROUTE-REFRESH length ${len} != ${MIN_LEN.ROUTE_REFRESH}`);
      return { ok: true, msg: { type, afi: body.readUInt16BE(0), safi: body[3] as number } };
    default:
      return {
        ok: false,
        error: fatal(ErrCode.HEADER, HeaderSub.BAD_TYPE, `unknown message type ${type}`, Buffer.from([type])),
      };
  }
}

export function encodeRouteRefresh(f: Family): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(f.afi, 0);
  b[3] = f.safi;
  return frame(MsgType.ROUTE_REFRESH, b);
}
