// What a BFD session is configured with (file, flags, control socket): validation, defaults, the session key.
import { isIP } from 'node:net';
import { BFD_DEFAULTS, bfdIntervalProblem, BFD_BOUNDS } from '../model/bgp';
import { canonicalIp, isLinkLocal } from '../model/ip';
import { AuthConfig, AuthTypeName, authTypeFromName, checkAuthConfig, AUTH_TYPE_NAMES } from './codec';
import { SessionParams, checkParams } from './session';

/** Defaults like MetalLB's BFDProfile: 300 ms × 3 (the model holds them: the daemon's bgp section shares them). */
export const DEFAULT_MIN_RX_MS = BFD_DEFAULTS.minRx;
export const DEFAULT_MIN_TX_MS = BFD_DEFAULTS.minTx;
export const DEFAULT_MULTIPLIER = BFD_DEFAULTS.multiplier;
/** Where the control socket lives unless told otherwise. */
export const DEFAULT_CONTROL_PATH = BFD_DEFAULTS.controlSocket;
/** RFC 5881 (single-hop) and RFC 5883 (multihop) destination ports. */
export const SINGLE_HOP_PORT = 3784;
export const MULTIHOP_PORT = 4784;

/** One session as given by the operator or the daemon (JSON on the control socket, or the config file). */
export interface SessionSpec {
  /** The peer's address (IPv4 or IPv6; a link-local IPv6 needs `interface`). */
  peer: string;
  /** Our address: the source of our packets, and the destination the peer's must have. Default: any. */
  local?: string;
  /** Single-hop: the interface the peer is on (needed for link-local IPv6). */
  interface?: string;
  /** RFC 5883 multihop (UDP 4784, no TTL check). Default false. */
  multihop?: boolean;
  /** Required min RX interval (ms). Default 300. */
  minRx?: number;
  /** Desired min TX interval (ms). Default 300. */
  minTx?: number;
  /** Detect multiplier. Default 3. */
  multiplier?: number;
  /** Authentication; secret as UTF-8 text (or hex with `secretHex`). */
  auth?: { type: AuthTypeName; keyId: number; secret?: string; secretHex?: string };
}

/** A validated session spec, with defaults applied. */
export interface SessionConfig {
  key: string;
  peer: string;
  family: 4 | 6;
  local: string | null;
  interface: string | null;
  multihop: boolean;
  params: SessionParams;
  auth: AuthConfig | null;
}

/** The session's name everywhere (control socket, CLI, metrics): what makes two sessions different. */
export function sessionKey(o: {
  peer: string;
  local: string | null;
  interface: string | null;
  multihop: boolean;
}): string {
  return `${o.multihop ? 'multihop' : 'single-hop'} ${o.local ?? '*'} -> ${o.peer}${o.interface ? ` dev ${o.interface}` : ''}`;
}

function ms(v: unknown, field: string, dflt: number): number {
  if (v === undefined) return dflt;
  const problem = bfdIntervalProblem(v);
  if (problem) throw new TypeError(`${field} ${problem}`);
  return v as number;
}

/** Validates one spec; `field` prefixes every error ("sessions[2].minRx ..."). */
export function parseSessionSpec(raw: unknown, field = 'session'): SessionConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new TypeError(`${field} must be an object, got ${JSON.stringify(raw)}`);
  const s = raw as Record<string, unknown>;
  const known = ['peer', 'local', 'interface', 'multihop', 'minRx', 'minTx', 'multiplier', 'auth'];
  for (const k of Object.keys(s))
    if (!known.includes(k)) throw new TypeError(`${field}.${k}: unknown field (known: ${known.join(', ')})`);
  const peer = s.peer;
  const family = typeof peer === 'string' ? isIP(peer) : 0;
  if (family === 0) throw new TypeError(`${field}.peer must be an IP address, got ${JSON.stringify(peer)}`);
  let local: string | null = null;
  if (s.local !== undefined) {
    if (typeof s.local !== 'string' || isIP(s.local) !== family)
      throw new TypeError(
        `${field}.local must be an IPv${family} address like peer, got ${JSON.stringify(s.local)}`,
      );
    local = s.local;
  }
  let iface: string | null = null;
  if (s.interface !== undefined) {
    if (typeof s.interface !== 'string' || !/^[^\s/]{1,15}$/.test(s.interface))
      throw new TypeError(`${field}.interface must be an interface name, got ${JSON.stringify(s.interface)}`);
    iface = s.interface;
  }
  if (s.multihop !== undefined && typeof s.multihop !== 'boolean')
    throw new TypeError(`${field}.multihop must be true or false, got ${JSON.stringify(s.multihop)}`);
  const multihop = s.multihop === true;
  if (multihop && iface)
    throw new TypeError(`${field}.interface: only single-hop sessions name an interface`);
  if (!multihop && family === 6 && isLinkLocal(peer as string) && !iface)
    throw new TypeError(`${field}.interface is required for the link-local peer ${peer as string}`);
  const mult = s.multiplier ?? DEFAULT_MULTIPLIER;
  const mb = BFD_BOUNDS.multiplier;
  if (typeof mult !== 'number' || !Number.isInteger(mult) || mult < mb.min || mult > mb.max)
    throw new TypeError(
      `${field}.multiplier must be an integer ${mb.min}..${mb.max}, got ${JSON.stringify(s.multiplier)}`,
    );
  const params = checkParams(
    {
      desiredMinTxUs: Math.round(ms(s.minTx, `${field}.minTx`, DEFAULT_MIN_TX_MS) * 1000),
      requiredMinRxUs: Math.round(ms(s.minRx, `${field}.minRx`, DEFAULT_MIN_RX_MS) * 1000),
      detectMult: mult,
    },
    field,
  );
  const auth = s.auth === undefined ? null : parseAuth(s.auth, `${field}.auth`);
  const base = {
    peer: canonicalIp(peer as string)!,
    local: local && canonicalIp(local),
    interface: iface,
    multihop,
  };
  return { key: sessionKey(base), family: family as 4 | 6, ...base, params, auth };
}

function parseAuth(raw: unknown, field: string): AuthConfig {
  if (typeof raw !== 'object' || raw === null) throw new TypeError(`${field} must be an object`);
  const a = raw as Record<string, unknown>;
  const names = Object.values(AUTH_TYPE_NAMES) as string[];
  if (typeof a.type !== 'string' || !names.includes(a.type))
    throw new TypeError(`${field}.type must be one of ${names.join(', ')}, got ${JSON.stringify(a.type)}`);
  if ((a.secret === undefined) === (a.secretHex === undefined))
    throw new TypeError(`${field}: give exactly one of secret, secretHex`);
  let secret: Buffer;
  if (a.secret !== undefined) {
    if (typeof a.secret !== 'string') throw new TypeError(`${field}.secret must be a string`);
    secret = Buffer.from(a.secret, 'utf8');
  } else {
    if (typeof a.secretHex !== 'string' || !/^([0-9a-fA-F]{2})+$/.test(a.secretHex))
      throw new TypeError(`${field}.secretHex must be hex digits, got ${JSON.stringify(a.secretHex)}`);
    secret = Buffer.from(a.secretHex, 'hex');
  }
  return checkAuthConfig(
    { type: authTypeFromName(a.type as AuthTypeName), keyId: a.keyId as number, secret },
    field,
  );
}

/** Validates a list; duplicate keys are an error naming both positions. */
export function parseSessionSpecs(raw: unknown, field = 'sessions'): SessionConfig[] {
  if (!Array.isArray(raw)) throw new TypeError(`${field} must be an array, got ${JSON.stringify(raw)}`);
  const out = raw.map((r, i) => parseSessionSpec(r, `${field}[${i}]`));
  const seen = new Map<string, number>();
  out.forEach((c, i) => {
    const j = seen.get(c.key);
    if (j !== undefined) throw new TypeError(`${field}[${i}]: same session as ${field}[${j}] (${c.key})`);
    seen.set(c.key, i);
  });
  return out;
}

/** The process's own configuration (file or flags). */
export interface ProcessConfig {
  /** Control socket path (Unix, mode 0600). */
  control: string;
  /** HOST:PORT for Prometheus metrics; null: none. */
  metricsListen: string | null;
  /** Forwarding-plane fate: the balanced interface, and optionally the pinned balancer program. */
  forwarding: { interface: string; pin: string | null } | null;
  sessions: SessionConfig[];
}

/** Validates the process config document (JSON or YAML parsed). */
export function parseProcessConfig(raw: unknown): ProcessConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new TypeError(`config must be an object, got ${JSON.stringify(raw)}`);
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c))
    if (!['control', 'metricsListen', 'forwarding', 'sessions'].includes(k))
      throw new TypeError(`config.${k}: unknown field (known: control, metricsListen, forwarding, sessions)`);
  if (c.control !== undefined && (typeof c.control !== 'string' || !c.control.startsWith('/')))
    throw new TypeError(`config.control must be an absolute path, got ${JSON.stringify(c.control)}`);
  if (c.metricsListen !== undefined && c.metricsListen !== null)
    parseListen(c.metricsListen, 'config.metricsListen');
  let forwarding: ProcessConfig['forwarding'] = null;
  if (c.forwarding !== undefined && c.forwarding !== null) {
    const f = c.forwarding as Record<string, unknown>;
    if (typeof f.interface !== 'string' || !/^[^\s/]{1,15}$/.test(f.interface))
      throw new TypeError(
        `config.forwarding.interface must be an interface name, got ${JSON.stringify(f.interface)}`,
      );
    if (f.pin !== undefined && (typeof f.pin !== 'string' || !f.pin.startsWith('/')))
      throw new TypeError(`config.forwarding.pin must be an absolute path, got ${JSON.stringify(f.pin)}`);
    forwarding = { interface: f.interface, pin: (f.pin as string | undefined) ?? null };
  }
  return {
    control: (c.control as string | undefined) ?? DEFAULT_CONTROL_PATH,
    metricsListen: (c.metricsListen as string | undefined) ?? null,
    forwarding,
    sessions: parseSessionSpecs(c.sessions ?? [], 'config.sessions'),
  };
}

/** "HOST:PORT" / "[v6]:PORT" -> parts; throws naming the field. */
export function parseListen(v: unknown, field: string): { host: string; port: number } {
  const m = typeof v === 'string' ? /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw new TypeError(`${field} must be HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: (m[1] ?? m[2])!, port };
}
