// BFD control packets (RFC 5880 §4): pure encode/decode, the §6.8.6 reception checks, and authentication
// (simple password, keyed MD5/SHA1 and their meticulous variants, §6.7) with sequence-number checks.
import { createHash, timingSafeEqual } from 'node:crypto';

export const BFD_VERSION = 1;
/** Length of a control packet without an authentication section. */
export const BFD_HEADER_LEN = 24;

/** Diagnostic codes (§4.1). */
export enum Diag {
  None = 0,
  ControlDetectionTimeExpired = 1,
  EchoFunctionFailed = 2,
  NeighborSignaledDown = 3,
  ForwardingPlaneReset = 4,
  PathDown = 5,
  ConcatenatedPathDown = 6,
  AdministrativelyDown = 7,
  ReverseConcatenatedPathDown = 8,
}

/** 'ControlDetectionTimeExpired' -> 'control-detection-time-expired': the name every output uses. */
function kebab(s: string): string {
  return s.replace(/([a-z])([A-Z])/g, '$1-$2').toLowerCase();
}

export type DiagName = string;
const DIAG_NAMES = new Map<number, DiagName>(
  Object.entries(Diag)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v as number, kebab(k)]),
);

/** The name of a diag code; codes 9-31 are reserved and named `reserved-<n>`. */
export function diagName(d: number): DiagName {
  return DIAG_NAMES.get(d) ?? `reserved-${d}`;
}

/** Parses a diag given by name ('forwarding-plane-reset') or number; throws naming the value. */
export function parseDiag(v: string | number, field = 'diag'): Diag {
  if (typeof v === 'number') {
    if (DIAG_NAMES.has(v)) return v as Diag;
  } else {
    for (const [code, name] of DIAG_NAMES) if (name === v) return code as Diag;
  }
  throw new TypeError(
    `${field}: unknown diagnostic ${JSON.stringify(v)} (one of ${[...DIAG_NAMES.values()].join(', ')})`,
  );
}

/** Session states as carried in the Sta field (§4.1). */
export enum State {
  AdminDown = 0,
  Down = 1,
  Init = 2,
  Up = 3,
}
export type StateName = 'admin-down' | 'down' | 'init' | 'up';
export function stateName(s: State): StateName {
  return (['admin-down', 'down', 'init', 'up'] as const)[s];
}

/** Authentication types (§4.1). */
export enum AuthType {
  SimplePassword = 1,
  KeyedMd5 = 2,
  MeticulousKeyedMd5 = 3,
  KeyedSha1 = 4,
  MeticulousKeyedSha1 = 5,
}
export type AuthTypeName =
  'simple-password' | 'keyed-md5' | 'meticulous-keyed-md5' | 'keyed-sha1' | 'meticulous-keyed-sha1';
export const AUTH_TYPE_NAMES: Record<AuthType, AuthTypeName> = {
  [AuthType.SimplePassword]: 'simple-password',
  [AuthType.KeyedMd5]: 'keyed-md5',
  [AuthType.MeticulousKeyedMd5]: 'meticulous-keyed-md5',
  [AuthType.KeyedSha1]: 'keyed-sha1',
  [AuthType.MeticulousKeyedSha1]: 'meticulous-keyed-sha1',
};
export function authTypeFromName(n: AuthTypeName): AuthType {
  const e = Object.entries(AUTH_TYPE_NAMES).find(([, v]) => v === n);
  if (!e) throw new TypeError(`auth.type: unknown ${JSON.stringify(n)}`);
  return Number(e[0]) as AuthType;
}

export type AuthSection =
  | { type: AuthType.SimplePassword; keyId: number; password: Buffer }
  | {
      type:
        AuthType.KeyedMd5 | AuthType.MeticulousKeyedMd5 | AuthType.KeyedSha1 | AuthType.MeticulousKeyedSha1;
      keyId: number;
      sequence: number;
      /** 16 bytes (MD5) or 20 bytes (SHA1). */
      digest: Buffer;
    };

/** One control packet; the A bit is `auth !== undefined` and Length is derived. */
export interface ControlPacket {
  version: number;
  diag: number;
  state: State;
  poll: boolean;
  final: boolean;
  /** C: control plane independent (§4.1): this process does not share fate with the BGP daemon. */
  controlPlaneIndependent: boolean;
  demand: boolean;
  multipoint: boolean;
  detectMult: number;
  myDiscr: number;
  yourDiscr: number;
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  requiredMinEchoRxUs: number;
  auth?: AuthSection;
}

/** Every reason a received datagram is dropped, codec, authentication and socket level: metrics iterate it. */
export const DROP_REASONS = [
  'short-packet',
  'bad-version',
  'bad-length',
  'detect-mult-zero',
  'multipoint',
  'my-discr-zero',
  'your-discr-zero-not-down',
  'auth-section-bad',
  'auth-missing',
  'auth-unexpected',
  'auth-type-mismatch',
  'auth-key-id-mismatch',
  'auth-bad-password',
  'auth-bad-digest',
  'auth-bad-sequence',
  'ttl-below-255',
  'no-session',
  'poll-and-final',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type DecodeResult = { ok: true; packet: ControlPacket } | { ok: false; reason: DropReason };

const DIGEST_LEN: Partial<Record<AuthType, number>> = {
  [AuthType.KeyedMd5]: 16,
  [AuthType.MeticulousKeyedMd5]: 16,
  [AuthType.KeyedSha1]: 20,
  [AuthType.MeticulousKeyedSha1]: 20,
};

function authLen(a: AuthSection): number {
  if (a.type === AuthType.SimplePassword) return 3 + a.password.length;
  return 8 + (DIGEST_LEN[a.type] ?? 0);
}

/**
 * Encodes a packet. With a `key`, a keyed MD5/SHA1 section gets its digest computed (§6.7.3, §6.7.4);
 * without, the digest is written as given (tests, and the input of sign()).
 */
export function encodeControl(p: ControlPacket, o: { key?: Buffer } = {}): Buffer {
  const len = BFD_HEADER_LEN + (p.auth ? authLen(p.auth) : 0);
  const b = Buffer.alloc(len);
  b[0] = ((p.version & 0x7) << 5) | (p.diag & 0x1f);
  b[1] =
    ((p.state & 0x3) << 6) |
    (p.poll ? 0x20 : 0) |
    (p.final ? 0x10 : 0) |
    (p.controlPlaneIndependent ? 0x08 : 0) |
    (p.auth ? 0x04 : 0) |
    (p.demand ? 0x02 : 0) |
    (p.multipoint ? 0x01 : 0);
  b[2] = p.detectMult & 0xff;
  b[3] = len;
  b.writeUInt32BE(p.myDiscr >>> 0, 4);
  b.writeUInt32BE(p.yourDiscr >>> 0, 8);
  b.writeUInt32BE(p.desiredMinTxUs >>> 0, 12);
  b.writeUInt32BE(p.requiredMinRxUs >>> 0, 16);
  b.writeUInt32BE(p.requiredMinEchoRxUs >>> 0, 20);
  const a = p.auth;
  if (a) {
    b[24] = a.type;
    b[25] = authLen(a);
    b[26] = a.keyId & 0xff;
    if (a.type === AuthType.SimplePassword) a.password.copy(b, 27);
    else {
      b.writeUInt32BE(a.sequence >>> 0, 28);
      if (o.key) signInPlace(b, a.type, o.key);
      else a.digest.copy(b, 32, 0, DIGEST_LEN[a.type]);
    }
  }
  return b;
}

function hashName(t: AuthType): 'md5' | 'sha1' {
  return t === AuthType.KeyedMd5 || t === AuthType.MeticulousKeyedMd5 ? 'md5' : 'sha1';
}

/** Puts the key (zero-padded) in the digest field, hashes the whole packet, writes the hash there (§6.7.3/4). */
function signInPlace(b: Buffer, t: AuthType, key: Buffer): void {
  const n = DIGEST_LEN[t]!;
  b.fill(0, 32, 32 + n);
  key.copy(b, 32, 0, Math.min(n, key.length));
  const h = createHash(hashName(t)).update(b.subarray(0, b[3])).digest();
  h.copy(b, 32);
}

/**
 * Decodes and applies the context-free checks of §6.8.6: never throws, whatever the bytes; every drop has a
 * named reason. Bytes after Length are ignored (the RFC allows a payload longer than Length).
 */
export function decodeControl(b: Buffer): DecodeResult {
  if (b.length < BFD_HEADER_LEN) return { ok: false, reason: 'short-packet' };
  const version = b[0]! >> 5;
  if (version !== BFD_VERSION) return { ok: false, reason: 'bad-version' };
  const flags = b[1]!;
  const hasAuth = (flags & 0x04) !== 0;
  const len = b[3]!;
  if (len < BFD_HEADER_LEN || (hasAuth && len < BFD_HEADER_LEN + 2) || len > b.length)
    return { ok: false, reason: 'bad-length' };
  const detectMult = b[2]!;
  if (detectMult === 0) return { ok: false, reason: 'detect-mult-zero' };
  if (flags & 0x01) return { ok: false, reason: 'multipoint' };
  const myDiscr = b.readUInt32BE(4);
  if (myDiscr === 0) return { ok: false, reason: 'my-discr-zero' };
  const yourDiscr = b.readUInt32BE(8);
  const state = ((flags >> 6) & 0x3) as State;
  if (yourDiscr === 0 && state !== State.Down && state !== State.AdminDown)
    return { ok: false, reason: 'your-discr-zero-not-down' };
  const poll = (flags & 0x20) !== 0;
  const final = (flags & 0x10) !== 0;
  if (poll && final) return { ok: false, reason: 'poll-and-final' };
  const packet: ControlPacket = {
    version,
    diag: b[0]! & 0x1f,
    state,
    poll,
    final,
    controlPlaneIndependent: (flags & 0x08) !== 0,
    demand: (flags & 0x02) !== 0,
    multipoint: false,
    detectMult,
    myDiscr,
    yourDiscr,
    desiredMinTxUs: b.readUInt32BE(12),
    requiredMinRxUs: b.readUInt32BE(16),
    requiredMinEchoRxUs: b.readUInt32BE(20),
  };
  if (hasAuth) {
    const auth = decodeAuth(b.subarray(BFD_HEADER_LEN, len));
    if (!auth) return { ok: false, reason: 'auth-section-bad' };
    packet.auth = auth;
  } else if (len !== BFD_HEADER_LEN) {
    // Without an authentication section there is nothing between 24 and Length.
    return { ok: false, reason: 'bad-length' };
  }
  return { ok: true, packet };
}

/** The authentication section, or null when its type, length or shape is wrong. */
function decodeAuth(s: Buffer): AuthSection | null {
  if (s.length < 3) return null;
  const type = s[0]!;
  const len = s[1]!;
  if (len !== s.length) return null;
  if (type === AuthType.SimplePassword) {
    if (len < 4 || len > 19) return null;
    return { type, keyId: s[2]!, password: Buffer.from(s.subarray(3, len)) };
  }
  const dl = DIGEST_LEN[type as AuthType];
  if (dl === undefined || len !== 8 + dl) return null;
  return {
    type: type as AuthType.KeyedSha1,
    keyId: s[2]!,
    sequence: s.readUInt32BE(4),
    digest: Buffer.from(s.subarray(8, 8 + dl)),
  };
}

/** A session's authentication: one key (§6.7: bfd.AuthType, key id, secret). */
export interface AuthConfig {
  type: AuthType;
  keyId: number;
  /** Password (1-16 bytes) or key (MD5 ≤ 16, SHA1 ≤ 20 bytes). */
  secret: Buffer;
}

/** Receive-side sequence state (bfd.RcvAuthSeq, bfd.AuthSeqKnown). */
export interface AuthRxState {
  known: boolean;
  seq: number;
}

export function isMeticulous(t: AuthType): boolean {
  return t === AuthType.MeticulousKeyedMd5 || t === AuthType.MeticulousKeyedSha1;
}

/** Checks a config's secret length; throws naming the field and value. */
export function checkAuthConfig(a: AuthConfig, field = 'auth'): AuthConfig {
  if (!Number.isInteger(a.keyId) || a.keyId < 0 || a.keyId > 255)
    throw new TypeError(`${field}.keyId must be 0..255, got ${a.keyId}`);
  const max = a.type === AuthType.SimplePassword ? 16 : DIGEST_LEN[a.type];
  if (max === undefined) throw new TypeError(`${field}.type: unknown authentication type ${a.type}`);
  if (a.secret.length < 1 || a.secret.length > max)
    throw new TypeError(
      `${field}.secret must be 1..${max} bytes for ${AUTH_TYPE_NAMES[a.type]}, got ${a.secret.length}`,
    );
  return a;
}

/**
 * Authenticates a decoded packet (§6.7.2-6.7.4): `raw` is the datagram it came from, `detectMult` the
 * local bfd.DetectMult (sequence window 3 × it). Returns the drop reason, or the new receive state.
 */
export function verifyAuth(o: {
  packet: ControlPacket;
  raw: Buffer;
  config: AuthConfig | undefined;
  rx: AuthRxState;
  detectMult: number;
}): { ok: true; rx: AuthRxState } | { ok: false; reason: DropReason } {
  const { packet: p, config: c } = o;
  if (!c) return p.auth ? { ok: false, reason: 'auth-unexpected' } : { ok: true, rx: o.rx };
  const a = p.auth;
  if (!a) return { ok: false, reason: 'auth-missing' };
  if (a.type !== c.type) return { ok: false, reason: 'auth-type-mismatch' };
  if (a.keyId !== c.keyId) return { ok: false, reason: 'auth-key-id-mismatch' };
  if (a.type === AuthType.SimplePassword) {
    const ok = a.password.length === c.secret.length && timingSafeEqual(a.password, c.secret);
    return ok ? { ok: true, rx: o.rx } : { ok: false, reason: 'auth-bad-password' };
  }
  // The digest before the sequence (§6.7.4 checks the sequence first; both drop): a forged packet counts as
  // a bad digest and only an authentic old one as a bad sequence, which tells replay from forgery.
  const copy = Buffer.from(o.raw.subarray(0, o.raw[3]));
  signInPlace(copy, a.type, c.secret);
  const n = DIGEST_LEN[a.type]!;
  if (!timingSafeEqual(copy.subarray(32, 32 + n), a.digest)) return { ok: false, reason: 'auth-bad-digest' };
  if (o.rx.known) {
    const lo = isMeticulous(a.type) ? 1 : 0;
    const ahead = (a.sequence - o.rx.seq) >>> 0;
    if (ahead < lo || ahead > 3 * o.detectMult) return { ok: false, reason: 'auth-bad-sequence' };
  }
  return { ok: true, rx: { known: true, seq: a.sequence } };
}

/** The authentication section to send with transmit sequence number `seq` (digest filled by encodeControl). */
export function authSection(c: AuthConfig, seq: number): AuthSection {
  if (c.type === AuthType.SimplePassword) return { type: c.type, keyId: c.keyId, password: c.secret };
  return { type: c.type, keyId: c.keyId, sequence: seq >>> 0, digest: Buffer.alloc(DIGEST_LEN[c.type]!) };
}
