// The whole config file as one zod schema, the source of its JSON Schema (scripts/gen-schema.ts), for editors.
import { z } from 'zod';
import { bgpConfigSchemaPerNode } from './bgp';
import { BOUNDS, DEFAULTS } from './defaults';
import { kubernetesSectionSchema } from './kubernetes';
import { nodesSectionSchema } from './nodes';
import { configSchema, vipSchema } from './schema';
import { ENCAPS } from './types';

/** Where the generated schema is checked in (relative to the package root), and its $id. */
export const CONFIG_SCHEMA_FILE = 'schema/peak-xdp.schema.json';
export const CONFIG_SCHEMA_ID = 'https://peak-xdp.io/schema/peak-xdp.schema.json';

/**
 * A backend as checkBackends (backends.ts) checks it by hand for speed; the same shape as a zod schema, for the
 * JSON Schema only (test/unit/config-schema.test.ts checks that both accept and refuse the same samples).
 */
export const backendDocumentSchema = z
  .object({
    address: z.string().describe('IPv4 or IPv6 address of the real server'),
    weight: z.number().int().min(0).max(BOUNDS.weight.max).default(DEFAULTS.backend.weight),
    drain: z.boolean().default(DEFAULTS.backend.drain),
    encap: z.enum(ENCAPS).optional().describe("Encapsulation toward this backend (default: the VIP's encap)"),
  })
  .strict();

/**
 * The whole file: the top-level schema with the parts it validates separately (each VIP, each backend, the bgp,
 * kubernetes and nodes sections) put back in place. bgp.peers is optional here: with a nodes section the peers
 * may come from its entries (the validator requires them without one).
 */
export const configDocumentSchema = configSchema.extend({
  vips: z.array(vipSchema.extend({ backends: z.array(backendDocumentSchema).default([]) })).default([]),
  bgp: bgpConfigSchemaPerNode.optional(),
  kubernetes: kubernetesSectionSchema.optional(),
  nodes: nodesSectionSchema.optional(),
});
