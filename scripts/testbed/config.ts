// Testbed configuration: zod schema, defaults, and loadTestbedConfig() (file + PEAK_TB_* overrides).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { z } from 'zod';

/** Interface names in the kernel are at most 15 characters; namespace names stay short to be readable. */
const PREFIX_RE = /^[a-z][a-z0-9]{0,11}$/;

const vipSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/),
    address: z.string().refine(
      (a) => isIP(a) !== 0,
      (a) => ({ message: `"${a}" is not an IP address` }),
    ),
    port: z.number().int().min(1).max(65535),
    /** Which backends hold this VIP on lo and serve it: every one, or all but the last (the last calls it). */
    servedBy: z.enum(['all', 'all-but-last']).default('all'),
  })
  .strict();

export const testbedSchema = z
  .object({
    prefix: z.string().refine(
      (p) => PREFIX_RE.test(p),
      (p) => ({
        message: `"${p}" is not a testbed prefix (1-12 of a-z 0-9, starting with a letter)`,
      }),
    ),
    router: z
      .object({
        daemon: z.enum(['bird', 'frr']).default('bird'),
        asn: z.number().int().min(1).max(4294967295).default(65000),
      })
      .strict(),
    clients: z.number().int().min(1).max(9).default(1),
    lbs: z
      .object({
        count: z.number().int().min(1).max(8),
        asnBase: z.number().int().min(1).max(4294967000).default(65100),
        mtu: z.number().int().min(1280).max(9000).default(1600),
      })
      .strict(),
    backends: z
      .object({
        count: z.number().int().min(1).max(32),
        port: z.number().int().min(1).max(65535).default(80),
        mtu: z.number().int().min(1280).max(9000).default(1600),
      })
      .strict(),
    addressing: z
      .object({
        ipv4Base: z.string().regex(/^\d{1,3}\.\d{1,3}$/, 'two octets, e.g. "10.77"'),
        ipv6Base: z.string().regex(/^[0-9a-f]{1,4}$/, 'one hextet, e.g. "fd77"'),
      })
      .strict(),
    vips: z.array(vipSchema).min(1),
    comparisonVips: z
      .object({
        ipv4Base: z.string().regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'three octets, e.g. "10.201.0"'),
        ipv6Base: z.string().regex(/^[0-9a-f:]+::$/, 'a prefix ending in ::, e.g. "fd00:201::"'),
      })
      .strict(),
    bpffs: z.string().startsWith('/'),
    stateDir: z.string().startsWith('/'),
  })
  .strict();

export type TestbedConfig = z.infer<typeof testbedSchema>;

/** The config file shipped with the repository. */
export function defaultConfigPath(root: string): string {
  return join(root, 'scripts', 'testbed', 'testbed.json');
}

/** Validates raw config data; throws an Error naming every bad field and its value. */
export function parseTestbedConfig(raw: unknown, source = 'testbed config'): TestbedConfig {
  const r = testbedSchema.safeParse(raw);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const path = i.path.join('.');
    const value = i.path.reduce<unknown>(
      (v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined),
      raw,
    );
    return `  ${path || '(root)'} = ${JSON.stringify(value)}: ${i.message}`;
  });
  throw new Error(`invalid ${source}:\n${lines.join('\n')}`);
}

/** Overrides a caller may apply on top of the file (env or command-line). */
export interface ConfigOverrides {
  prefix?: string;
  lbs?: number;
  backends?: number;
  clients?: number;
  routerDaemon?: string;
}

/** Reads the file, applies overrides (PEAK_TB_PREFIX / PEAK_TB_ROUTER from env win over the file). */
export function loadTestbedConfig(o: {
  path: string;
  overrides?: ConfigOverrides;
  env?: NodeJS.ProcessEnv;
}): TestbedConfig {
  const env = o.env ?? process.env;
  const raw = JSON.parse(readFileSync(o.path, 'utf8')) as Record<string, unknown>;
  const ov = o.overrides ?? {};
  const merged = structuredClone(raw);
  const obj = (k: string): Record<string, unknown> => (merged[k] ?? {}) as Record<string, unknown>;
  const prefix = ov.prefix ?? env.PEAK_TB_PREFIX;
  if (prefix !== undefined) merged.prefix = prefix;
  const routerDaemon = ov.routerDaemon ?? env.PEAK_TB_ROUTER;
  if (routerDaemon !== undefined) merged.router = { ...obj('router'), daemon: routerDaemon };
  if (ov.lbs !== undefined) merged.lbs = { ...obj('lbs'), count: ov.lbs };
  if (ov.backends !== undefined) merged.backends = { ...obj('backends'), count: ov.backends };
  if (ov.clients !== undefined) merged.clients = ov.clients;
  return parseTestbedConfig(merged, o.path);
}
