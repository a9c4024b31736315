// NOTIFICATION: the error values decoders return, the names of every code/subcode, encode and decode.
import { CeaseSub, ErrCode, HeaderSub, MsgType, OpenSub, UpdateSub } from './constants';
import { frame } from './framing';
import { NotificationMessage } from './types';

/** Names of the subcodes of one error code; `satisfies` keeps them in step with the enum. */
const HEADER_NAMES = {
  [HeaderSub.NOT_SYNCHRONIZED]: 'Connection Not Synchronized',
  [HeaderSub.BAD_LENGTH]: 'Bad Message Length',
  [HeaderSub.BAD_TYPE]: 'Bad Message Type',
} satisfies Record<HeaderSub, string>;

// OpenSub.UNSPECIFIC (0) has no name of its own: it prints as "(subcode 0)".
const OPEN_NAMES = {
  [OpenSub.UNSUPPORTED_VERSION]: 'Unsupported Version Number',
  [OpenSub.BAD_PEER_AS]: 'Bad Peer AS',
  [OpenSub.BAD_BGP_ID]: 'Bad BGP Identifier',
  [OpenSub.UNSUPPORTED_OPT_PARAM]: 'Unsupported Optional Parameter',
  [OpenSub.UNACCEPTABLE_HOLD_TIME]: 'Unacceptable Hold Time',
  [OpenSub.UNSUPPORTED_CAPABILITY]: 'Unsupported Capability',
} satisfies Record<Exclude<OpenSub, OpenSub.UNSPECIFIC>, string>;

const UPDATE_NAMES = {
  [UpdateSub.MALFORMED_ATTR_LIST]: 'Malformed Attribute List',
  [UpdateSub.UNRECOGNIZED_WELL_KNOWN]: 'Unrecognized Well-known Attribute',
  [UpdateSub.MISSING_WELL_KNOWN]: 'Missing Well-known Attribute',
  [UpdateSub.ATTR_FLAGS]: 'Attribute Flags Error',
  [UpdateSub.ATTR_LENGTH]: 'Attribute Length Error',
  [UpdateSub.INVALID_ORIGIN]: 'Invalid ORIGIN Attribute',
  [UpdateSub.INVALID_NEXT_HOP]: 'Invalid NEXT_HOP Attribute',
  [UpdateSub.OPTIONAL_ATTR]: 'Optional Attribute Error',
  [UpdateSub.INVALID_NETWORK_FIELD]: 'Invalid Network Field',
  [UpdateSub.MALFORMED_AS_PATH]: 'Malformed AS_PATH',
} satisfies Record<UpdateSub, string>;

const CEASE_NAMES = {
  [CeaseSub.MAX_PREFIXES]: 'Maximum Number of Prefixes Reached',
  [CeaseSub.ADMIN_SHUTDOWN]: 'Administrative Shutdown',
  [CeaseSub.PEER_DECONFIGURED]: 'Peer De-configured',
  [CeaseSub.ADMIN_RESET]: 'Administrative Reset',
  [CeaseSub.CONNECTION_REJECTED]: 'Connection Rejected',
  [CeaseSub.OTHER_CONFIG_CHANGE]: 'Other Configuration Change',
  [CeaseSub.COLLISION_RESOLUTION]: 'Connection Collision Resolution',
  [CeaseSub.OUT_OF_RESOURCES]: 'Out of Resources',
  [CeaseSub.BFD_DOWN]: 'BFD Down',
} satisfies Record<CeaseSub, string>;

/** Name and subcode names of every error code (FSM subcodes, RFC 6608, print as numbers). */
const NAMES: Record<ErrCode, { name: string; subs: Partial<Record<number, string>> }> = {
  [ErrCode.HEADER]: { name: 'Message Header Error', subs: HEADER_NAMES },
  [ErrCode.OPEN]: { name: 'OPEN Message Error', subs: OPEN_NAMES },
  [ErrCode.UPDATE]: { name: 'UPDATE Message Error', subs: UPDATE_NAMES },
  [ErrCode.HOLD_TIMER_EXPIRED]: { name: 'Hold Timer Expired', subs: {} },
  [ErrCode.FSM]: { name: 'Finite State Machine Error', subs: {} },
  [ErrCode.CEASE]: { name: 'Cease', subs: CEASE_NAMES },
};

/** Human name of a NOTIFICATION code/subcode, for logs and status. */
export function describeNotification(code: number, subcode: number): string {
  const entry = (NAMES as Partial<Record<number, (typeof NAMES)[ErrCode]>>)[code];
  if (!entry) return `code ${code}/${subcode}`;
  const sub = entry.subs[subcode];
  return sub ? `${entry.name} / ${sub}` : `${entry.name} (subcode ${subcode})`;
}

export function encodeNotification(n: { code: number; subcode: number; data?: Buffer }): Buffer {
  return frame(
    MsgType.NOTIFICATION,
    Buffer.concat([Buffer.from([n.code, n.subcode]), n.data ?? Buffer.alloc(0)]),
  );
}

/** Body of a NOTIFICATION (its length, >= 2, was checked with the header). */
export function decodeNotification(body: Buffer): NotificationMessage {
  return {
    type: MsgType.NOTIFICATION,
    code: body[0] as number,
    subcode: body[1] as number,
    data: Buffer.from(body.subarray(2)),
  };
}
