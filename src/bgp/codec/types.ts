// Decoded message shapes and the options the encoders take: plain data, shared by every codec part.
import { AsPathSegType, MsgType, Origin } from './constants';

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
