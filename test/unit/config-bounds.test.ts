// Config documents within bounds: file size, FIFOs and devices, YAML alias bombs and anchor floods, deep nesting;
// each refused quickly with a message naming the bound, and a reload with such a file keeps the previous config.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DOCUMENT_BOUNDS, formatIssue, parseConfig, parseDocumentText, ParseResult } from '../../src/model';
import { FileConfigSource, loadConfigFile } from '../../src/sources/file';

const MiB = 1 << 20;
/** Every refusal here must come back well within this (today's parsers take seconds to minutes or hang). */

const errorsOf = (r: ParseResult): string[] => {
  if (r.ok) throw new Error('expected the config to be rejected');
  return r.errors.map(formatIssue);
};

/** Runs fn, returns its result and the elapsed ms. */
async function timed<T>(fn: () => T | Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, performance.now() - t0];
}

const good = (port: number): string =>
  `interface: eth0\nvips:\n  - name: web\n    address: 10.0.0.10\n    port: ${port}\n    backends: [{address: 10.1.0.1}]\n`;

/** The classic "billion laughs": 9 levels of 9 aliases each, 9^9 strings once expanded. */
function billionLaughs(): string {
  const names = 'abcdefghi';
  const lines = ['interface: eth0', 'lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (let i = 1; i < names.length; i++)
    lines.push(
      `${names[i]}: &${names[i]} [${Array(9)
        .fill(`*${names[i - 1]}`)
        .join(', ')}]`,
    );
  return lines.join('\n') + '\n';
}

/** 1,024 VIPs x 100 backends in block YAML, health checks and weights: the realistic big config. */
function bigConfig(vips: number, backends: number): string {
  const out = [
    'interface: eth0',
    'admin: {listen: "127.0.0.1:9470", perBackendMetrics: false}',
    `limits: {maxVips: 1024, maxBackends: ${vips * backends + 1}}`,
    'vips:',
  ];
  for (let i = 0; i < vips; i++) {
    out.push(
      `  - name: vip-${String(i).padStart(4, '0')}-service`,
      `    address: 10.${100 + (i >> 8)}.${i & 255}.1`,
      '    port: 443',
      '    healthCheck:',
      '      type: http',
      '      path: /healthz',
      '      intervalMs: 2000',
      '      timeoutMs: 1000',
      '    backends:',
    );
    for (let j = 0; j < backends; j++)
      out.push(`      - address: 10.${20 + (j >> 8)}.${j & 255}.${(i % 250) + 1}`, '        weight: 100');
  }
  return out.join('\n') + '\n';
}

describe('parseDocumentText: nesting, values and YAML anchors are bounded', () => {
  const { maxDepth, maxValues, maxYamlRefs } = DOCUMENT_BOUNDS;
  const nestedJson = (n: number) => '['.repeat(n) + ']'.repeat(n);

  it('accepts exactly maxDepth levels of lists and maps and refuses one more, in JSON and YAML', () => {
    expect(maxDepth).toBe(64);
    for (const format of ['json', 'yaml'] as const) {
      expect(parseDocumentText(nestedJson(maxDepth), format).ok).toBe(true);
      const r = parseDocumentText(nestedJson(maxDepth + 1), format);
      expect(r.ok).toBe(false);
      expect(!r.ok && r.errors[0]!.message).toContain(`nest deeper than ${maxDepth} levels (the bound)`);
    }
    // Block YAML: a map per indentation level.
    const block = (n: number) =>
      Array.from({ length: n }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n') + ' x\n';
    expect(parseDocumentText(block(maxDepth), 'yaml').ok).toBe(true);
    const r = parseDocumentText(block(maxDepth + 1), 'yaml');
    expect(!r.ok && r.errors[0]!.message).toMatch(/nest deeper than 64 levels/);
  });

  it('refuses a 12 KB document nested 6,000 deep quickly, as a result (no RangeError), with the position', async () => {
    const text = nestedJson(6000);
    expect(text.length).toBe(12000);
    const [j, jMs] = await timed(() => parseConfig(text, { format: 'json' }));
    expect(errorsOf(j)).toEqual([`(file): lists and maps nest deeper than ${maxDepth} levels (the bound)`]);
    const [y, yMs] = await timed(() => parseConfig(`interface: eth0\nx: ${text}\n`, { format: 'yaml' }));
    expect(errorsOf(y)).toEqual([
      `(file): YAML error at line 2, column ${4 + maxDepth + 1}: lists and maps nest deeper than ${maxDepth} levels (the bound)`,
    ]);
    const deepBlock = [
      'interface: eth0',
      'x:',
      ...Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i + 1)}- `),
    ];
    const [b, bMs] = await timed(() => parseConfig(deepBlock.join('\n') + '\n', { format: 'yaml' }));
    expect(errorsOf(b)[0]).toMatch(
      /^\(file\): YAML error at line \d+, column \d+: lists and maps nest deeper than 64/,
    );
    console.log(
      `deep nesting refused in ${[jMs, yMs, bMs].map((ms) => ms.toFixed(0)).join(', ')} ms (JSON, YAML flow, YAML block)`,
    );
  });

  it('refuses a billion-laughs alias bomb quickly, naming the bound on values', async () => {
    const [r, ms] = await timed(() => parseConfig(billionLaughs(), { format: 'yaml' }));
    expect(errorsOf(r)).toEqual([
      `(file): the document holds more than ${maxValues.toLocaleString('en-US')} values (the bound; lists, ` +
        'maps and scalars, each use of a YAML alias counted again)',
    ]);
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
    // A cycle through an alias is bounded by depth, not followed forever.
    const cyc = parseDocumentText('a: &a [*a]\n', 'yaml');
    expect(!cyc.ok && cyc.errors[0]!.message).toMatch(/nest deeper than 64/);
  });

  it('refuses more than maxYamlRefs anchors and aliases before resolving any (resolution is quadratic)', async () => {
    const pairs = (n: number) =>
      ['x:', ...Array.from({ length: n }, (_, i) => `  - &a${i} v\n  - *a${i}`)].join('\n') + '\n';
    expect(parseDocumentText(pairs(maxYamlRefs / 2), 'yaml').ok).toBe(true);
    // 20,000 pairs (500 KB) took 12 s to resolve before the bound.
    const [r, ms] = await timed(() => parseDocumentText(pairs(20000), 'yaml'));
    expect(!r.ok && r.errors[0]!.message).toBe(
      `YAML error at line ${maxYamlRefs + 2}, column 5: more than 4,096 anchors and aliases (the bound: ` +
        'resolving aliases takes time quadratic in their number); write the values out',
    );
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
  });

  it('accepts 1,024 VIPs sharing one health check and one backend list through anchors (over the old 1,000-alias cap)', () => {
    const lines = [
      'interface: eth0',
      'limits: {maxBackends: 131072}',
      'x-hc: &hc {type: http, path: /healthz}',
      'x-be: &be',
      ...Array.from({ length: 100 }, (_, j) => `  - address: 10.20.${j}.1`),
      'vips:',
      ...Array.from(
        { length: 1024 },
        (_, i) =>
          `  - {name: v${i}, address: 10.${100 + (i >> 8)}.${i & 255}.1, port: 443, healthCheck: *hc, backends: *be}`,
      ),
    ];
    const d = parseDocumentText(lines.join('\n') + '\n', 'yaml');
    expect(d.ok).toBe(true);
    // The x- keys are not config fields: the validator (not the document bounds) refuses them.
    const r = parseConfig(lines.join('\n') + '\n', { format: 'yaml' });
    expect(errorsOf(r).every((e) => /x-hc|x-be/.test(e))).toBe(true);
  });

  it('refuses a YAML file of more than maxValues items while reading it, before building a node for each', async () => {
    expect(maxValues).toBe(1 << 20);
    // 2 MiB: a flat flow list, the list and its items over maxValues (4M items took 42 s and 4 GB to parse).
    const text = '[' + 'a,'.repeat(maxValues) + 'a]';
    const [r, ms] = await timed(() => parseDocumentText(text, 'yaml'));
    // The list is value 1, so item number maxValues (at column 2 * maxValues) is one too many.
    expect(!r.ok && r.errors[0]!.message).toBe(
      `YAML error at line 1, column ${2 * maxValues}: more than 1,048,576 values (the bound)`,
    );
    console.log(`reject a flat YAML list of ${maxValues + 1} items: ${ms.toFixed(0)} ms`);
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
  }, 20000);

  it('finds duplicate keys in a 100,000-key map in linear time (yaml compares each key with every earlier one)', async () => {
    const lines = Array.from({ length: 100000 }, (_, i) => `k${i}: 1`);
    lines.push('k5: 2');
    const [r, ms] = await timed(() => parseDocumentText(lines.join('\n') + '\n', 'yaml'));
    expect(!r.ok && r.errors.map((e) => e.message)).toEqual([
      'YAML syntax error at line 100001, column 1: Map keys must be unique',
    ]);
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
  });

  it('refuses a second YAML document (a stream of --- would build a document each)', () => {
    const r = parseDocumentText('a: 1\n---\nb: 2\n' + '---\n'.repeat(100000), 'yaml');
    expect(!r.ok && r.errors[0]!.message).toBe(
      'YAML error at line 2, column 1: a second document (after ---); a config file holds one',
    );
  });

  it('keeps line and column in YAML syntax errors', () => {
    const r = parseConfig('interface: eth0\ninterface: eth1\n', { format: 'yaml' });
    expect(errorsOf(r)[0]).toMatch(/^\(file\): YAML syntax error at line 2, column 1: .*unique/i);
  });
});

describe('loadConfigFile: a bounded read of a regular file', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), `peak-xdp-bounds-${process.pid}-`));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fits a 1,024 VIPs x 100 backends YAML config within the YAML bound (with room to spare)', async () => {
    const text = bigConfig(1024, 100);
    const path = join(dir, 'big.yaml');
    writeFileSync(path, text);
    console.log(`1,024 x 100 YAML config: ${text.length} bytes; bound ${DOCUMENT_BOUNDS.maxBytes.yaml}`);
    expect(text.length).toBeGreaterThan(4 * MiB);
    expect(text.length * 1.5).toBeLessThan(DOCUMENT_BOUNDS.maxBytes.yaml);
    const r = await loadConfigFile(path);
    expect(r.ok && r.config.vips.length).toBe(1024);
    expect(r.ok && r.config.vips[1023]!.backends.length).toBe(100);
  }, 30000);

  it('refuses a 50 MiB file from its size alone, naming the file, the size and the bound', async () => {
    for (const [name, bound] of [
      ['huge.yaml', '8388608 bytes (8.0 MiB) a YAML'],
      ['huge.json', '16777216 bytes (16.0 MiB) a JSON'],
    ] as const) {
      const path = join(dir, name);
      writeFileSync(path, '');
      truncateSync(path, 50 * MiB); // sparse: 50 MiB of zeros, written in no time
      const [r, ms] = await timed(() => loadConfigFile(path));
      console.log(`reject 50 MiB ${name}: ${ms.toFixed(1)} ms`);
      expect(errorsOf(r)).toEqual([
        `(file): ${JSON.stringify(path)} is 52428800 bytes (50.0 MiB): more than the ${bound} config file may ` +
          'have (the bound keeps parsing within memory)',
      ]);
      // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
      console.log(`took ${ms.toFixed(0)} ms`);
    }
  });

  it('accepts a file of exactly maxBytes and refuses one byte more', async () => {
    const path = join(dir, 'edge.yaml');
    const text = good(80);
    writeFileSync(path, text);
    expect((await loadConfigFile(path, { maxBytes: text.length })).ok).toBe(true);
    expect(errorsOf(await loadConfigFile(path, { maxBytes: text.length - 1 }))[0]).toContain(
      `is ${text.length} bytes (0.0 MiB): more than the ${text.length - 1} bytes (0.0 MiB) a YAML config file`,
    );
    await expect(loadConfigFile(path, { maxBytes: 0 })).rejects.toThrow(
      'maxBytes: 0 is not a positive integer',
    );
  });

  it('refuses a FIFO at once instead of waiting for a writer', async () => {
    const path = join(dir, 'fifo.yaml');
    execFileSync('mkfifo', [path]);
    const [r, ms] = await timed(() => loadConfigFile(path));
    expect(errorsOf(r)).toEqual([`(file): cannot read ${JSON.stringify(path)}: a FIFO, not a regular file`]);
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
  }, 10000);

  it('refuses a symlink to /dev/zero at once instead of reading forever', async () => {
    const path = join(dir, 'zero.yaml');
    symlinkSync('/dev/zero', path);
    const [r, ms] = await timed(() => loadConfigFile(path));
    expect(errorsOf(r)).toEqual([
      `(file): cannot read ${JSON.stringify(path)}: a character device, not a regular file`,
    ]);
    // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
    console.log(`took ${ms.toFixed(0)} ms`);
    const d = join(dir, 'adir.yaml');
    execFileSync('mkdir', [d]);
    expect(errorsOf(await loadConfigFile(d))).toEqual([
      `(file): cannot read ${JSON.stringify(d)}: a directory, not a regular file`,
    ]);
  }, 10000);
});

describe('FileConfigSource: a reload with an out-of-bounds file keeps the previous config', () => {
  let dir: string;
  let source: FileConfigSource | null = null;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `peak-xdp-bounds-src-${process.pid}-`));
  });
  afterEach(() => {
    source?.stop();
    source = null;
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects an oversized file, an alias bomb, deep nesting and a FIFO in turn; the first config stays', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, good(80));
    source = new FileConfigSource({ path, sighup: false, watchFile: false });
    expect(await source.start()).toMatchObject({ ok: true, trigger: 'start' });

    /** Puts `make`'s file in place by rename (as an editor or a ConfigMap would) and reloads. */
    const reloadWith = async (make: (tmp: string) => void): Promise<string> => {
      const tmp = join(dir, 'next.yaml');
      make(tmp);
      renameSync(tmp, path);
      const [e, ms] = await timed(() => source!.reload('manual'));
      // Time is printed, not asserted (a loaded machine is slow); the bound above is what refused it.
      console.log(`took ${ms.toFixed(0)} ms`);
      expect(e.ok).toBe(false);
      if (e.ok) return '';
      expect(e.kept!.vips[0]!.port).toBe(80);
      expect(source!.current()!.vips[0]!.port).toBe(80);
      return e.errors.map(formatIssue).join('; ');
    };
    expect(
      await reloadWith((tmp) => {
        writeFileSync(tmp, '');
        truncateSync(tmp, 50 * MiB);
      }),
    ).toMatch(/is 52428800 bytes \(50.0 MiB\): more than the 8388608 bytes/);
    expect(await reloadWith((tmp) => writeFileSync(tmp, billionLaughs()))).toMatch(
      /more than 1,048,576 values/,
    );
    expect(await reloadWith((tmp) => writeFileSync(tmp, `interface: eth0\nx: ${'['.repeat(6000)}${']'.repeat(6000)}\n`))).toMatch(/nest deeper than 64 levels/); // prettier-ignore
    expect(await reloadWith((tmp) => execFileSync('mkfifo', [tmp]))).toMatch(/a FIFO, not a regular file/);

    // A good file is taken again afterwards.
    writeFileSync(join(dir, 'next.yaml'), good(81));
    renameSync(join(dir, 'next.yaml'), path);
    expect(await source.reload('manual')).toMatchObject({ ok: true, changed: true });
    expect(source.current()!.vips[0]!.port).toBe(81);
  }, 20000);

  it('rejects such a file at start (no config) and validates maxBytes', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, billionLaughs());
    source = new FileConfigSource({ path, sighup: false, watchFile: false });
    const first = await source.start();
    expect(first.ok).toBe(false);
    expect(!first.ok && first.kept).toBeNull();
    expect(() => new FileConfigSource({ path, maxBytes: 1.5 })).toThrow(
      'maxBytes: 1.5 is not a positive integer',
    );
  });
});
