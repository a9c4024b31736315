// The config file's zod schema: shape and scalar checks (cross-field checks are in vip.ts and config.ts).
import { z } from 'zod';
import { isPrime, MAGLEV_MAX_SIZE } from '../maglev/maglev';
import { communitySchema, largeCommunitySchema } from './bgp';
import { BOUNDS, DEFAULTS } from './defaults';
import { showValue } from './errors';
import { canonicalIp, canonicalMac } from './ip';
import { ENCAPS, isHttpPath, type ListenAddress } from './types';

/** The one wording of "not an IP address" (the schema's and the hand-written backend checks'). */
export const notAnIpAddress = (v: unknown): string => `${showValue(v)} is not an IP address`;

const ipString = z.string().superRefine((v, ctx) => {
  if (canonicalIp(v) === null) ctx.addIssue({ code: 'custom', message: notAnIpAddress(v) });
});
const port = z.number().int().min(0).max(65535);
const intIn = (b: { min: number; max: number }): z.ZodNumber => z.number().int().min(b.min).max(b.max);

/** A Linux interface name (the top-level `interface` and nodes[].interface). */
export const interfaceNameSchema = z.string().refine(
  (n) => /^[^\s/:]{1,15}$/.test(n) && n !== '.' && n !== '..',
  (n) => ({
    message: `${showValue(n)} is not a network interface name (1-15 characters, no space, / or :)`,
  }),
);

/** A MAC address or "auto" (the top-level `nextHopMac` and nodes[].nextHopMac). */
export const nextHopMacSchema = z.string().refine(
  (m) => m === 'auto' || canonicalMac(m) !== null,
  (m) => ({
    message: `${showValue(m)} is not a MAC address (aa:bb:cc:dd:ee:ff) or "auto"`,
  }),
);

/** A VIP's `stateless`: "auto", true or false (a string other than "auto" gets its own message). The string first:
 * most VIPs leave it "auto" (the default), and a union that tries boolean first builds an issue for each of them
 * (~10 µs apiece in a start's cold code: 5 ms at 512 VIPs). */
export const statelessSchema = z.union([z.string(), z.boolean()]).superRefine((v, ctx) => {
  if (typeof v === 'string' && v !== 'auto')
    ctx.addIssue({ code: 'custom', message: `${showValue(v)} is not "auto", true or false` });
}) as unknown as z.ZodType<'auto' | boolean>;

/** A Maglev table size: a prime between 3 and MAGLEV_MAX_SIZE, `fallback` when absent (a VIP's tableSize:
 * DEFAULTS.vip.tableSize; kubernetes.tableSize: DEFAULTS.kubernetes.tableSize). */
export const tableSizeSchema = (fallback: number) =>
  z
    .number()
    .int()
    .default(fallback)
    .superRefine((m, ctx) => {
      if (m < 3 || m > MAGLEV_MAX_SIZE || !isPrime(m))
        ctx.addIssue({
          code: 'custom',
          message: `${showValue(m)} is not a prime between 3 and ${MAGLEV_MAX_SIZE}`,
        });
    });

const healthCheckSchema = z
  .object({
    type: z.enum(['tcp', 'http']).default(DEFAULTS.healthCheck.type),
    port: port.min(1).optional(),
    path: z
      .string()
      .refine(isHttpPath, (p) => ({
        message: `${showValue(p)} is not an absolute HTTP path (starts with /; no spaces or control characters)`,
      }))
      .optional(),
    intervalMs: intIn(BOUNDS.intervalMs).default(DEFAULTS.healthCheck.intervalMs),
    timeoutMs: intIn(BOUNDS.timeoutMs).default(DEFAULTS.healthCheck.timeoutMs),
    rise: intIn(BOUNDS.riseFall).default(DEFAULTS.healthCheck.rise),
    fall: intIn(BOUNDS.riseFall).default(DEFAULTS.healthCheck.fall),
    downGraceSeconds: intIn(BOUNDS.downGraceSeconds).default(DEFAULTS.healthCheck.downGraceSeconds),
  })
  .strict();

export const vipSchema = z
  .object({
    name: z.string().refine(
      (n) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(n),
      (n) => ({
        message: `${showValue(n)} is not a VIP name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
      }),
    ),
    address: ipString,
    port,
    protocol: z.enum(['tcp', 'udp']).default(DEFAULTS.vip.protocol),
    tableSize: tableSizeSchema(DEFAULTS.vip.tableSize),
    persistence: z.enum(['none', 'source-ip']).default(DEFAULTS.vip.persistence),
    conntrack: z.boolean().default(DEFAULTS.vip.conntrack),
    // Issue 15: the default encapsulation of this VIP's backends, and whether it keeps a connection table.
    encap: z.enum(ENCAPS).default(DEFAULTS.vip.encap),
    stateless: statelessSchema.default(DEFAULTS.vip.stateless),
    healthCheck: healthCheckSchema.optional(),
    communities: z.array(communitySchema).default([]),
    largeCommunities: z.array(largeCommunitySchema).default([]),
    minHealthyBackends: z.number().int().min(1).max(65535).optional(),
    failOpen: z.boolean().default(DEFAULTS.vip.failOpen),
    // Elements are checked by checkBackends (the hot path: zod's cost per backend dominated big files).
    backends: z.array(z.unknown()).default([]),
  })
  .strict();

const limitsSchema = z
  .object({
    maxVips: intIn(BOUNDS.maxVips).default(DEFAULTS.limits.maxVips),
    maxBackends: intIn(BOUNDS.maxBackends).default(DEFAULTS.limits.maxBackends),
    conntrackEntries: intIn(BOUNDS.conntrackEntries).default(DEFAULTS.limits.conntrackEntries),
  })
  .strict()
  .default({});

/**
 * The limits a parsed, not yet validated, document asks for (defaults filled in), or null where its limits are
 * not valid: what the daemon loads a balancer for while the rest of the document is checked.
 */
export function limitsOfDocument(doc: unknown): z.infer<typeof limitsSchema> | null {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return null;
  const r = limitsSchema.safeParse((doc as { limits?: unknown }).limits);
  return r.success ? r.data : null;
}

/**
 * A guess at the limits a config file's text asks for, before it is parsed (a big file takes 50 ms to parse as JSON,
 * seconds as YAML): the top-level `limits` mapping found by its text (JSON: `"limits": {...}` with no nested
 * braces; YAML: a `limits:` line at column 0 with a flow mapping or indented `key: number` lines after it), or the
 * defaults where the text never says `limits`; null where it says so in a way this does not read. Only a guess:
 * the daemon compares it with the checked document's limits (limitsOfDocument) before using anything made for it.
 */
export function limitsOfText(text: string, format: 'json' | 'yaml'): z.infer<typeof limitsSchema> | null {
  const parse = (v: unknown): z.infer<typeof limitsSchema> | null => {
    const r = limitsSchema.safeParse(v);
    return r.success ? r.data : null;
  };
  if (format === 'json') {
    const all = text.match(/"limits"/g)?.length ?? 0;
    if (all === 0) return parse(undefined);
    const m = /"limits"\s*:\s*(\{[^{}]*\})/.exec(text);
    if (all !== 1 || m === null) return null;
    try {
      return parse(JSON.parse(m[1]!));
    } catch {
      return null;
    }
  }
  if (!/\blimits\b/.test(text)) return parse(undefined);
  const lines = text.split('\n', 100_000);
  const at = lines.findIndex((l) => /^limits\s*:/.test(l));
  if (at < 0 || lines.findIndex((l, i) => i !== at && /^['"]?limits['"]?\s*:/.test(l)) >= 0) return null;
  const out: Record<string, number> = {};
  const pair = (k: string, v: string): boolean => {
    const n = Number(v);
    if (!/^[A-Za-z]+$/.test(k) || !Number.isSafeInteger(n)) return false;
    out[k] = n;
    return true;
  };
  const rest = lines[at]!.replace(/^limits\s*:/, '')
    .replace(/\s+#.*$/, '')
    .trim();
  if (rest.startsWith('{')) {
    const m = /^\{([^{}]*)\}$/.exec(rest);
    if (m === null) return null;
    for (const p of m[1]!.split(',').filter((x) => x.trim() !== '')) {
      const kv = /^\s*(\w+)\s*:\s*([0-9]+)\s*$/.exec(p);
      if (kv === null || !pair(kv[1]!, kv[2]!)) return null;
    }
    return parse(out);
  }
  if (rest !== '') return null;
  for (let i = at + 1; i < lines.length; i++) {
    const l = lines[i]!.replace(/\s+#.*$/, '').replace(/\r$/, '');
    if (l.trim() === '' || /^\s*#/.test(l)) continue;
    if (!/^\s/.test(l)) break;
    const kv = /^\s+(\w+)\s*:\s*([0-9]+)\s*$/.exec(l);
    if (kv === null || !pair(kv[1]!, kv[2]!)) return null;
  }
  return parse(out);
}

export const configSchema = z
  .object({
    interface: interfaceNameSchema,
    xdpMode: z.enum(['native', 'generic', 'auto']).default(DEFAULTS.xdpMode),
    nextHopMac: nextHopMacSchema.default(DEFAULTS.nextHopMac),
    encapSource: z.union([z.string(), z.array(z.string()).min(1)]).default(DEFAULTS.encapSource),
    mtu: intIn(BOUNDS.mtu).default(DEFAULTS.mtu),
    admin: z
      .object({
        listen: z.string().default(DEFAULTS.admin.listen),
        // A second, read-only listener (GET /metrics, /healthz, /readyz only), e.g. 0.0.0.0:9471 for Prometheus.
        metricsListen: z.string().optional(),
        perBackendMetrics: z.boolean().default(DEFAULTS.admin.perBackendMetrics),
        // A file holding the bearer token mutating admin requests must carry (read by the daemon at start).
        tokenFile: z
          .string()
          .refine(
            (f) => f.startsWith('/') && !f.includes('\0'),
            (f) => ({ message: `${showValue(f)} is not an absolute file path` }),
          )
          .optional(),
      })
      .strict()
      .default({}),
    limits: limitsSchema,
    // Each section has its own schema (sections.ts), checked once the rest of the file is good.
    bgp: z.unknown().optional(),
    kubernetes: z.unknown().optional(),
    // Per-node settings by node labels (nodes.ts), checked with the sections.
    nodes: z.unknown().optional(),
    conntrackTimeouts: z
      .object({
        tcp: intIn(BOUNDS.conntrackTimeout).default(DEFAULTS.conntrackTimeouts.tcp),
        udp: intIn(BOUNDS.conntrackTimeout).default(DEFAULTS.conntrackTimeouts.udp),
      })
      .strict()
      .default({}),
    vipBlackholeRoutes: z.boolean().default(DEFAULTS.vipBlackholeRoutes),
    // Issue 15: GUE's UDP port, and how long previous Maglev owners are hinted (second chance).
    encap: z
      .object({ guePort: intIn(BOUNDS.guePort).default(DEFAULTS.encap.guePort) })
      .strict()
      .default({}),
    secondChance: z
      .object({
        enabled: z.boolean().default(DEFAULTS.secondChance.enabled),
        retainSeconds: intIn(BOUNDS.retainSeconds).default(DEFAULTS.secondChance.retainSeconds),
      })
      .strict()
      .default({}),
    // Each VIP is validated on its own (vipSchema), memoised: a reload re-checks only changed VIPs.
    vips: z.array(z.unknown()).default([]),
  })
  .strict();

export type RawVip = z.infer<typeof vipSchema>;
export type RawConfig = z.infer<typeof configSchema>;

/** "127.0.0.1:9470" or "[::1]:9470" to host and port; null if malformed. */
export function parseListen(text: string): ListenAddress | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const host = canonicalIp(m[1]!);
  const p = Number(m[2]);
  if (host === null || p > 65535) return null;
  return { host, port: p };
}
