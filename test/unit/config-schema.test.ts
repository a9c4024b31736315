// The checked-in JSON Schema of the config file is what the zod model generates (npm run schema), and editors find it.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { configJsonSchemaText } from '../../scripts/gen-schema';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { formatIssue, parseConfig } from '../../src/model';
import { checkBackends } from '../../src/model/backends';
import { backendDocumentSchema, CONFIG_SCHEMA_FILE } from '../../src/model/json-schema';
import { isHttpPath } from '../../src/model/types';
import { configSchema, limitsOfDocument, limitsOfText, vipSchema } from '../../src/model/schema';
import fc from 'fast-check';
import { packageRoot } from '../../src/paths';

const checkedIn = (): string => readFileSync(join(packageRoot, CONFIG_SCHEMA_FILE), 'utf8');

describe('config JSON Schema', () => {
  it(`${CONFIG_SCHEMA_FILE} is up to date with the model (else: npm run schema)`, () => {
    expect(checkedIn()).toBe(configJsonSchemaText());
  });

  it('describes every key the model knows, at the top level, in a VIP and in a backend', () => {
    const s = JSON.parse(checkedIn());
    expect(Object.keys(s.properties).sort()).toEqual(Object.keys(configSchema.shape).sort());
    expect(s.additionalProperties).toBe(false);
    const vipItem = s.properties.vips.items;
    expect(Object.keys(vipItem.properties).sort()).toEqual(Object.keys(vipSchema.shape).sort());
    expect(Object.keys(vipItem.properties.backends.items.properties).sort()).toEqual([
      'address',
      'drain',
      'encap',
      'weight',
    ]);
    // Sections validated apart from the top level are in the document schema, not left open.
    expect(s.properties.bgp.properties.peers.items.properties.asn.type).toBe('integer');
    expect(s.properties.kubernetes.properties).toHaveProperty('pool');
    expect(s.required).toEqual(['interface']);
  });

  it('the backend shape for the schema accepts and refuses what checkBackends does', () => {
    const samples: unknown[] = [
      { address: '10.0.0.1' },
      { address: '10.0.0.1', weight: 0, drain: true },
      { address: '10.0.0.1', weight: 65536 },
      { address: '10.0.0.1', weight: 1.5 },
      { address: '10.0.0.1', weight: -1 },
      { address: '10.0.0.1', drain: 'yes' },
      { address: '10.0.0.1', extra: 1 },
      { weight: 1 },
      'not an object',
    ];
    const verdicts = samples.map((b) => [
      checkBackends([b]).issues.length === 0,
      backendDocumentSchema.safeParse(b).success,
    ]);
    for (const [mine, schema] of verdicts) expect(mine).toBe(schema);
    expect(verdicts.filter(([ok]) => ok)).toHaveLength(2);
  });

  it('the example config names the schema for editors (yaml-language-server), by a path that exists', () => {
    const example = join(packageRoot, 'examples', 'config.yaml');
    const first = readFileSync(example, 'utf8').split('\n')[0]!;
    const m = /^# yaml-language-server: \$schema=(\S+)$/.exec(first);
    expect(m).not.toBeNull();
    expect(resolve(dirname(example), m![1]!)).toBe(join(packageRoot, CONFIG_SCHEMA_FILE));
    expect(existsSync(resolve(dirname(example), m![1]!))).toBe(true);
  });

  it("deploy/base/configmap.yaml's config.yaml is valid, and says where the schema is", () => {
    const text = readFileSync(join(packageRoot, 'deploy', 'base', 'configmap.yaml'), 'utf8');
    expect(text).toContain('../../schema/peak-xdp.schema.json');
    const cm = parseYaml(text) as { data: Record<string, string> };
    const r = parseConfig(cm.data['config.yaml']!, { format: 'yaml' });
    if (!r.ok) throw new Error(r.errors.map(formatIssue).join('\n'));
    expect(r.config.interface).toBe('eth0');
  });
});

describe('limitsOfDocument', () => {
  const defaults = { maxVips: 1024, maxBackends: 65536, conntrackEntries: 1048576 };
  it("a parsed document's limits with the defaults filled in, whatever the rest of the document holds", () => {
    expect(limitsOfDocument({})).toEqual(defaults);
    expect(limitsOfDocument({ vips: 'not even a list', limits: { maxVips: 64 } })).toEqual({
      ...defaults,
      maxVips: 64,
    });
    const r = parseConfig('interface: eth0\nlimits: {maxBackends: 200000}\n', { format: 'yaml' });
    expect(r.ok && r.config.limits).toEqual(limitsOfDocument({ limits: { maxBackends: 200000 } }));
  });
  it('null where the limits would not validate, or the document is not a mapping', () => {
    for (const doc of [
      null,
      'text',
      [1],
      { limits: { maxVips: 'many' } },
      { limits: { maxVips: 0 } },
      { limits: { other: 1 } },
      { limits: 5 },
    ])
      expect(limitsOfDocument(doc)).toBeNull();
  });
  it('parseConfig hands the parsed document to onDocument before validating it', () => {
    const docs: unknown[] = [];
    const r = parseConfig('{"limits": {"maxVips": 64}}', { format: 'json', onDocument: (d) => docs.push(d) });
    expect(r.ok).toBe(false);
    expect(docs).toEqual([{ limits: { maxVips: 64 } }]);
    parseConfig('{"limits": ', { format: 'json', onDocument: (d) => docs.push(d) });
    expect(docs).toHaveLength(1);
  });
});

describe('isHttpPath', () => {
  it('absolute, no spaces, control characters or characters beyond Latin-1', () => {
    for (const p of ['/', '/healthz', '/a?b=c&d=%20', '/caf\u00e9'])
      expect([p, isHttpPath(p)]).toEqual([p, true]);
    for (const p of ['', 'healthz', '/a b', '/a\tb', '/a\r\nX: y', '/\u007f', '/\u65e5', '/a\u0000'])
      expect([p, isHttpPath(p)]).toEqual([p, false]);
  });
});

describe('limitsOfText', () => {
  const defaults = { maxVips: 1024, maxBackends: 65536, conntrackEntries: 1048576 };
  it('reads the top-level limits of JSON text, or the defaults where it has none', () => {
    expect(limitsOfText('{"interface": "eth0", "vips": []}', 'json')).toEqual(defaults);
    expect(limitsOfText('{"interface":"eth0","limits":{"maxVips":64},"vips":[]}', 'json')).toEqual({
      ...defaults,
      maxVips: 64,
    });
    expect(
      limitsOfText(
        '{\n  "limits": {\n    "maxBackends": 102400,\n    "conntrackEntries": 4096\n  }\n}',
        'json',
      ),
    ).toEqual({
      ...defaults,
      maxBackends: 102400,
      conntrackEntries: 4096,
    });
  });
  it('reads YAML block and flow mappings at column 0, comments and CRLF allowed', () => {
    expect(limitsOfText('interface: eth0\nvips: []\n', 'yaml')).toEqual(defaults);
    expect(
      limitsOfText(
        'interface: eth0\nlimits:\n  maxVips: 64 # few\n\n  maxBackends: 200000\nvips: []\n',
        'yaml',
      ),
    ).toEqual({
      ...defaults,
      maxVips: 64,
      maxBackends: 200000,
    });
    expect(
      limitsOfText('limits: {maxVips: 64, conntrackEntries: 8192}\r\ninterface: eth0\r\n', 'yaml'),
    ).toEqual({
      ...defaults,
      maxVips: 64,
      conntrackEntries: 8192,
    });
  });
  it('null where the text says limits in a way it does not read, or the limits are not valid', () => {
    for (const [text, format] of [
      ['{"limits": {"maxVips": 64}, "vips": [{"name": "limits"}]}', 'json'],
      ['{"limits": {"maxVips": 64, "x": {"y": 1}}}', 'json'],
      ['{"limits": {"maxVips": 0}}', 'json'],
      ['{"limits": {"maxVips": 64,}}', 'json'],
      ['# limits are the defaults\ninterface: eth0\n', 'yaml'],
      ['limits:\n  maxVips: 0x40\n', 'yaml'],
      ['limits: &l\n  maxVips: 64\n', 'yaml'],
      ['limits:\n  maxVips: 64\n"limits": {}\n', 'yaml'],
      ['limits:\n  unknown: 5\n', 'yaml'],
    ] as const)
      expect([text, limitsOfText(text, format)]).toEqual([text, null]);
  });
  it('agrees with the parsed config wherever it reads anything (JSON and YAML, any limits set)', () => {
    // mostly within the bounds (BOUNDS), sometimes just outside them
    const limit = (min: number, max: number) =>
      fc.option(fc.integer({ min: min - 1, max: max + 1 }), { nil: undefined });
    const read = { json: 0, yaml: 0 };
    fc.assert(
      fc.property(
        fc.record({
          maxVips: limit(1, 65536),
          maxBackends: limit(2, 1 << 24),
          conntrackEntries: limit(1024, 1 << 26),
        }),
        fc.boolean(),
        (l, yamlFormat) => {
          const limits = Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined));
          const doc = {
            interface: 'eth0',
            ...(Object.keys(limits).length > 0 || yamlFormat ? { limits } : {}),
            vips: [],
          };
          const format = yamlFormat ? 'yaml' : 'json';
          const text = yamlFormat ? stringifyYaml(doc) : JSON.stringify(doc, null, 1);
          const guess = limitsOfText(text, format);
          const parsed = parseConfig(text, { format });
          if (!parsed.ok) expect(guess === null || limitsOfDocument(doc) === null).toBe(true);
          else if (guess !== null) {
            expect(guess).toEqual(parsed.config.limits);
            read[format]++;
          }
        },
      ),
      { numRuns: 300 },
    );
    // most documents are read (the rest have limits out of bounds): the property is not vacuous
    expect(read.json).toBeGreaterThan(50);
    expect(read.yaml).toBeGreaterThan(50);
  });
});
