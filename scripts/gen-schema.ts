// The config file's JSON Schema from the zod model; `npm run schema` writes schema/peak-xdp.schema.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { CONFIG_SCHEMA_FILE, CONFIG_SCHEMA_ID, configDocumentSchema } from '../src/model/json-schema';
import { packageRoot } from '../src/paths';

/** The JSON Schema (draft-07) of the config file. Deterministic: the same model gives the same text. */
export function configJsonSchema(): Record<string, unknown> {
  // The cast: zod-to-json-schema types its input against zod's v3/v4 union, too deep for tsc to check here.
  const input = configDocumentSchema as unknown as Parameters<typeof zodToJsonSchema>[0];
  const s = zodToJsonSchema(input, { $refStrategy: 'none', target: 'jsonSchema7' }) as Record<
    string,
    unknown
  >;
  return {
    $schema: s.$schema,
    $id: CONFIG_SCHEMA_ID,
    title: 'peak-xdp config',
    description:
      'The peak-xdp daemon config file (YAML or JSON). Generated from src/model by `npm run schema`: do not edit. ' +
      '`peak-xdp config validate FILE` also runs the checks a schema cannot (address families, duplicates, limits).',
    ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== '$schema')),
  };
}

/** The checked-in file's text for the current model. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

if (require.main === module) {
  const path = join(packageRoot, CONFIG_SCHEMA_FILE);
  writeFileSync(path, configJsonSchemaText());
  process.stdout.write(`wrote ${path}\n`);
}
