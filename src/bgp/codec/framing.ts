// Framing (RFC 4271 §4.1): the 19-octet header around every message, and splitting a TCP stream into messages.
import { ErrCode, HEADER_LEN, HeaderSub, MARKER, MAX_MESSAGE_LEN, MsgType } from './constants';
import { fatal } from './errors';
import { BgpError } from './types';

/** Header + body; throws RangeError when the message would exceed MAX_MESSAGE_LEN. */
export function frame(type: MsgType, body: Buffer): Buffer {
  const len = HEADER_LEN + body.length;
  if (len > MAX_MESSAGE_LEN) throw new RangeError(`message of ${len} bytes exceeds ${MAX_MESSAGE_LEN}`);
  const out = Buffer.alloc(len);
  MARKER.copy(out, 0);
  out.writeUInt16BE(len, 16);
  out[18] = type;
  body.copy(out, HEADER_LEN);
  return out;
}

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
      return {
        frames,
        rest: Buffer.alloc(0),
        error: fatal(ErrCode.HEADER, HeaderSub.NOT_SYNCHRONIZED, 'marker is not all ones'),
      };
    const len = buf.readUInt16BE(off + 16);
    if (len < HEADER_LEN || len > MAX_MESSAGE_LEN)
      return {
        frames,
        rest: Buffer.alloc(0),
        error: fatal(
          ErrCode.HEADER,
          HeaderSub.BAD_LENGTH,
          `message length ${len} outside 19..4096`,
          buf.subarray(off + 16, off + 18),
        ),
      };
    if (buf.length - off < len) break;
    frames.push(buf.subarray(off, off + len));
    off += len;
  }
  return { frames, rest: buf.subarray(off) };
}

export function encodeKeepalive(): Buffer {
  return frame(MsgType.KEEPALIVE, Buffer.alloc(0));
}
