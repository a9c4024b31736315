// The `bgp` config section: community syntax, zod schema, defaults, and the parsed types the speaker takes.
import { isIPv4, isIPv6, isIP } from 'node:net';
import { z } from 'zod';
import { hiddenValue, isSecretPath, showValue } from './errors';

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

/** "asn:value" (RFC 1997), 16-bit parts. */
export const communitySchema = z.string().refine(
  (s) => {
    try {
      parseCommunity(s);
      return true;
    } catch {
      return false;
    }
  },
  (s) => ({ message: `community "${s}" must be 'asn:value' with 16-bit parts` }),
);
/** "global:local1:local2" (RFC 8092), 32-bit parts. */
export const largeCommunitySchema = z.string().refine(
  (s) => {
    try {
      parseLargeCommunity(s);
      return true;
    } catch {
      return false;
    }
  },
  (s) => ({ message: `large community "${s}" must be 'global:local1:local2' with 32-bit parts` }),
);
/** A 4-byte AS number (RFC 6793). */
export const asnSchema = z.number().int().min(1).max(4294967295);
const asn = asnSchema;
/** An IPv4 address (router ids, next hops). */
export const ipv4Schema = z.string().refine(isIPv4, (s) => ({ message: `"${s}" is not an IPv4 address` }));
const ipv4 = ipv4Schema;
const ipv6 = z.string().refine(isIPv6, (s) => ({ message: `"${s}" is not an IPv6 address` }));
const holdTime = z
  .number()
  .int()
  .refine(
    (h) => h === 0 || (h >= 3 && h <= 65535),
    (h) => ({ message: `holdTime ${h} must be 0 or 3..65535` }),
  );

export const BGP_DEFAULTS = {
  port: 179,
  holdTime: 90,
  gracefulRestartTime: 120,
  gracefulShutdownMs: 0,
  families: ['ipv4', 'ipv6'] as ('ipv4' | 'ipv6')[],
  /** Received prefixes kept per peer (we never use them; counted only) before the session is ceased. */
  maxPrefixes: 10_000,
};

/**
 * BFD (RFC 5880) defaults and bounds: one source for the bgp section and the BFD process (src/bfd/config.ts).
 * 300 ms × 3 like MetalLB's BFDProfile: a silent peer is declared down after 900 ms.
 */
export const BFD_DEFAULTS = {
  minRx: 300,
  minTx: 300,
  multiplier: 3,
  /** The BFD process's control socket (src/bfd/README.md). */
  controlSocket: '/run/peak-xdp/bfd.sock',
};
/** Intervals in ms with µs precision (the wire carries µs); multiplier as on the wire (8 bits, not 0). */
export const BFD_BOUNDS = { intervalMs: { min: 1, max: 60_000 }, multiplier: { min: 1, max: 255 } };

/** An interval in ms within BFD_BOUNDS, at most µs precision; the message names the value. */
export function bfdIntervalProblem(v: unknown): string | null {
  const { min, max } = BFD_BOUNDS.intervalMs;
  return typeof v === 'number' &&
    Number.isFinite(v) &&
    v >= min &&
    v <= max &&
    Math.round(v * 1000) === v * 1000
    ? null
    : `must be a number of ms in ${min}..${max} (µs precision), got ${JSON.stringify(v)}`;
}

// min/max as zod checks so the JSON Schema carries the range; every message is bfdIntervalProblem's.
const bfdInterval = z
  .number({
    errorMap: (issue, ctx) => ({
      message:
        issue.code === 'too_small' || issue.code === 'too_big'
          ? (bfdIntervalProblem(ctx.data) ?? ctx.defaultError)
          : ctx.defaultError,
    }),
  })
  .min(BFD_BOUNDS.intervalMs.min)
  .max(BFD_BOUNDS.intervalMs.max)
  .superRefine((v, ctx) => {
    const { min, max } = BFD_BOUNDS.intervalMs;
    // Out of range is already reported by min/max.
    const problem = v >= min && v <= max ? bfdIntervalProblem(v) : null;
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** bgp.peers[].bfd: a BFD session to the peer; BFD Down tears the BGP session down (RFC 5882 §4.3). */
export const peerBfdSchema = z
  .object({
    /** Required min RX interval (ms): how often we can take the peer's packets. */
    minRx: bfdInterval.default(BFD_DEFAULTS.minRx),
    /** Desired min TX interval (ms). */
    minTx: bfdInterval.default(BFD_DEFAULTS.minTx),
    /** Detect multiplier: packets missed before the session is Down. */
    multiplier: z
      .number()
      .int()
      .min(BFD_BOUNDS.multiplier.min)
      .max(BFD_BOUNDS.multiplier.max)
      .default(BFD_DEFAULTS.multiplier),
    /** RFC 5883 multihop (UDP 4784, no TTL check): for eBGP multihop peers. Default single-hop (RFC 5881). */
    multihop: z.boolean().default(false),
  })
  .strict();

/** bgp.bfd: how the daemon reaches the BFD process (used only when a peer has `bfd`). */
export const bgpBfdSchema = z
  .object({
    /** The BFD process's control socket (Unix, absolute path). */
    controlSocket: z
      .string()
      .refine(
        (f) => f.startsWith('/') && !f.includes('\0'),
        (f) => ({ message: `${JSON.stringify(f)} is not an absolute path` }),
      )
      .default(BFD_DEFAULTS.controlSocket),
  })
  .strict();

export const peerSchema = z
  .object({
    /** Neighbour address (IPv4 or IPv6): the TCP session runs to it. */
    address: z.string().refine(
      (s) => isIP(s) !== 0,
      (s) => ({ message: `"${s}" is not an IP address` }),
    ),
    asn,
    port: z.number().int().min(1).max(65535).default(BGP_DEFAULTS.port),
    /** Source address of our TCP connection (default: chosen by the kernel). */
    localAddress: z
      .string()
      .refine(
        (s) => isIP(s) !== 0,
        (s) => ({ message: `"${s}" is not an IP address` }),
      )
      .optional(),
    holdTime: holdTime.default(BGP_DEFAULTS.holdTime),
    /** TCP MD5 key (RFC 2385), at most 80 bytes. */
    password: z
      .string()
      .min(1)
      .refine((s) => Buffer.byteLength(s) <= 80, { message: 'password must be at most 80 bytes' })
      .optional(),
    /** Wait for the peer to connect instead of connecting. */
    passive: z.boolean().default(false),
    communities: z.array(communitySchema).default([]),
    largeCommunities: z.array(largeCommunitySchema).default([]),
    families: z
      .array(z.enum(['ipv4', 'ipv6']))
      .min(1)
      .default(BGP_DEFAULTS.families),
    /** Next hop for IPv4 routes when the session is IPv6 (default: the session's local address). */
    nextHop4: ipv4.optional(),
    /** Global next hop for IPv6 routes when the session is IPv4 (default: the session's local address). */
    nextHop6: ipv6.optional(),
    med: z.number().int().min(0).max(4294967295).optional(),
    /** LOCAL_PREF sent to iBGP peers (default 100). */
    localPref: z.number().int().min(0).max(4294967295).optional(),
    /**
     * Most prefixes this peer may announce to us (all families). One more closes the session with
     * CEASE / Maximum Number of Prefixes Reached (RFC 4486) and it is retried after the longest backoff.
     */
    maxPrefixes: z.number().int().min(1).max(10_000_000).default(BGP_DEFAULTS.maxPrefixes),
    /** BFD to this peer ({} for the defaults); absent: none. */
    bfd: peerBfdSchema.optional(),
  })
  .strict();

/**
 * The bgp section's schema. `peersRequired` false: the file has a `nodes` section, whose entries may carry the
 * peers (model/nodes.ts checks each node's merged list); the top-level list may then be empty or omitted.
 */
function bgpSectionSchema(peersRequired: boolean) {
  return z
    .object({
      asn,
      /** IPv4 BGP identifier; "auto" (daemon only): the first IPv4 address of the balanced interface. */
      routerId: z.union([ipv4, z.literal('auto')]).default('auto'),
      /** Restart time advertised in the graceful restart capability (s); 0 disables the capability. */
      gracefulRestartTime: z.number().int().min(0).max(4095).default(BGP_DEFAULTS.gracefulRestartTime),
      /** Time routes stay announced with GRACEFUL_SHUTDOWN before the withdraw on stop (ms). */
      gracefulShutdownMs: z.number().int().min(0).max(600_000).default(BGP_DEFAULTS.gracefulShutdownMs),
      /** Where passive peers connect to. */
      listen: z
        .object({
          address: z
            .string()
            .refine(
              (s) => isIP(s) !== 0,
              (s) => ({ message: `"${s}" is not an IP address` }),
            )
            .default('::'),
          port: z.number().int().min(1).max(65535).default(BGP_DEFAULTS.port),
        })
        .strict()
        .optional(),
      peers: peersRequired ? z.array(peerSchema).min(1) : z.array(peerSchema).default([]),
      /** A VIP is announced only with at least this many healthy backends (per-VIP override in vips[]). */
      minHealthyBackends: z.number().int().min(1).max(65535).default(1),
      /** The BFD process (peers with `bfd`); defaults apply when omitted. */
      bfd: bgpBfdSchema.default({}),
    })
    .strict()
    .superRefine((c, ctx) => peersListedTwice(c.peers, ctx, ['peers']));
}

/** A peer (address and port) listed twice in one list: an issue at the second. */
export function peersListedTwice(
  peers: readonly { address: string; port: number }[],
  ctx: z.RefinementCtx,
  at: (string | number)[],
): void {
  const seen = new Set<string>();
  peers.forEach((p, i) => {
    const k = `${p.address}:${p.port}`;
    if (seen.has(k))
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: [...at, i, 'address'],
        message: `peer ${k} listed twice`,
      });
    seen.add(k);
  });
}

export const bgpConfigSchema = bgpSectionSchema(true);
/** The bgp section of a file with a `nodes` section (peers may come from there). */
export const bgpConfigSchemaPerNode = bgpSectionSchema(false);

export type BgpPeerConfig = z.infer<typeof peerSchema>;
export type PeerBfdConfig = z.infer<typeof peerBfdSchema>;
export type BgpConfig = z.infer<typeof bgpConfigSchema>;
export type BgpPeerInput = z.input<typeof peerSchema>;
export type BgpConfigInput = z.input<typeof bgpConfigSchema>;

/** Validate a `bgp` section; the error names each bad field and value. */
export function parseBgpConfig(input: unknown): BgpConfig {
  const r = bgpConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const path = ['bgp', ...i.path].join('.');
    let value: unknown = input;
    for (const k of i.path) value = (value as Record<string | number, unknown> | undefined)?.[k];
    // A secret (peers[].password) is never echoed, whatever its type, nor inside a value that holds one.
    return `${path}: ${i.message} (got ${isSecretPath(i.path) ? hiddenValue(value) : showValue(value)})`;
  });
  throw new TypeError(`invalid bgp config:\n  ${lines.join('\n  ')}`);
}
