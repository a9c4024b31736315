// BGP-4 numbers: message types, NOTIFICATION codes and subcodes, attribute types and flags, capabilities.
import { AFI_IPV4, AFI_IPV6 } from '../ip';

export { AFI_IPV4, AFI_IPV6 };

export const BGP_PORT = 179;
export const HEADER_LEN = 19;
export const MAX_MESSAGE_LEN = 4096;
/** AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS. */
export const AS_TRANS = 23456;
export const SAFI_UNICAST = 1;
/** GRACEFUL_SHUTDOWN well-known community (RFC 8326). */
export const GRACEFUL_SHUTDOWN = '65535:0';
/** The header's 16-octet marker (RFC 4271 §4.1): all ones. */
export const MARKER = Buffer.alloc(16, 0xff);
/** Optional parameter type of a capabilities list in OPEN (RFC 5492). */
export const OPT_PARAM_CAPABILITIES = 2;

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

/** Finite State Machine Error subcodes (RFC 6608): which state got an unexpected message. */
export enum FsmSub {
  UNSPECIFIED = 0,
  UNEXPECTED_IN_OPEN_SENT = 1,
  UNEXPECTED_IN_OPEN_CONFIRM = 2,
  UNEXPECTED_IN_ESTABLISHED = 3,
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
  OUT_OF_RESOURCES = 8,
  /** RFC 9384: closed because the BFD session to the peer went Down. */
  BFD_DOWN = 10,
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

/** Attribute flag bits (RFC 4271 §4.3). */
export const F_OPTIONAL = 0x80;
export const F_TRANSITIVE = 0x40;
export const F_PARTIAL = 0x20;
/** The length field is two octets. */
export const F_EXTENDED = 0x10;

/** Expected Optional/Transitive bits per recognised attribute. */
export const ATTR_FLAGS: Readonly<Record<AttrType, number>> = {
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
