// Pure BGP-4 message codec over Buffer (RFC 4271, 4760, 6793, 2918, 4724, 1997, 8092, 7606): no I/O.
// One file per concern: constants, types, errors, framing, notification, open, update (attributes,
// prefixes, communities), message (decode dispatch, ROUTE-REFRESH).
export {
  AFI_IPV4,
  AFI_IPV6,
  AS_TRANS,
  AsPathSegType,
  AttrType,
  BGP_PORT,
  Capability,
  CeaseSub,
  ErrCode,
  FsmSub,
  GRACEFUL_SHUTDOWN,
  HEADER_LEN,
  HeaderSub,
  MAX_MESSAGE_LEN,
  MsgType,
  OpenSub,
  Origin,
  SAFI_UNICAST,
  UpdateSub,
} from './constants';
export type * from './types';
export { splitFrames, encodeKeepalive, type FrameResult } from './framing';
export { describeNotification, encodeNotification } from './notification';
export { encodeOpen, type OpenOptions } from './open';
export { encodeEndOfRib, encodeUpdate, endOfRibFamily, type UpdateOptions } from './update';
export { encodePrefix, encodedPrefixSize } from './prefixes';
export { parseCommunity, parseLargeCommunity } from './communities';
export { decodeMessage, encodeRouteRefresh } from './message';
