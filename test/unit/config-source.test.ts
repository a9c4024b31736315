// File source: loadConfigFile, and FileConfigSource reloading on file change (debounced) and SIGHUP.
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatIssue } from '../../src/model';
import {
  FileConfigSource,
  formatOf,
  loadConfigFile,
  readConfigFile,
  readConfigFileAhead,
} from '../../src/sources/file';
import type { ReloadEvent } from '../../src/sources/types';
import { setTimeout as sleep } from 'node:timers/promises';

const good = (port: number): string =>
  `interface: eth0\nvips:\n  - name: web\n    address: 10.0.0.10\n    port: ${port}\n    backends: [{address: 10.1.0.1}]\n`;

describe('file source', () => {
  let dir: string;
  let source: FileConfigSource | null = null;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `peak-xdp-cfg-${process.pid}-`));
  });
  afterEach(() => {
    source?.stop();
    source = null;
    rmSync(dir, { recursive: true, force: true });
  });

  const next = (s: FileConfigSource, ms = 3000): Promise<ReloadEvent> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no reload within ${ms} ms`)), ms);
      s.once('reload', (e: ReloadEvent) => {
        clearTimeout(t);
        resolve(e);
      });
    });

  it('picks the format from the extension and reads YAML or JSON files', async () => {
    expect([
      formatOf('a.json'),
      formatOf('a.JSON'),
      formatOf('a.yaml'),
      formatOf('a.yml'),
      formatOf('a'),
    ]).toEqual(['json', 'json', 'yaml', 'yaml', 'yaml']);
    const y = join(dir, 'c.yaml');
    writeFileSync(y, good(80));
    const j = join(dir, 'c.json');
    writeFileSync(j, JSON.stringify({ interface: 'eth0', vips: [] }));
    const ry = await loadConfigFile(y);
    expect(ry.ok && ry.config.vips[0]!.port).toBe(80);
    const rj = await loadConfigFile(j);
    expect(rj.ok && rj.config.vips).toEqual([]);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, good(80)); // YAML in a .json file
    const rb = await loadConfigFile(bad);
    expect(!rb.ok && formatIssue(rb.errors[0]!)).toMatch(/^\(file\): JSON syntax error/);
    const missing = await loadConfigFile(join(dir, 'nope.yaml'));
    expect(!missing.ok && formatIssue(missing.errors[0]!)).toBe(
      `(file): cannot read ${JSON.stringify(join(dir, 'nope.yaml'))}: ENOENT`,
    );
  });

  it('reloads on change once per burst, keeps the last good config on a bad file, follows renames', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, good(80));
    source = new FileConfigSource({ path, debounceMs: 100, sighup: false });
    const events: ReloadEvent[] = [];
    source.on('reload', (e: ReloadEvent) => events.push(e));
    const first = await source.start();
    expect(first).toMatchObject({ ok: true, trigger: 'start', changed: true });
    expect(source.current()!.vips[0]!.port).toBe(80);

    // A burst of writes: one reload.
    const changed = next(source);
    for (const p of [81, 82, 83]) writeFileSync(path, good(p));
    const e1 = await changed;
    expect(e1).toMatchObject({ ok: true, trigger: 'file', changed: true });
    await sleep(250);
    expect(events.filter((e) => e.trigger === 'file')).toHaveLength(1);
    expect(source.current()!.vips[0]!.port).toBe(83);

    // A bad file: rejected whole, last good config stays.
    const rejected = next(source);
    writeFileSync(path, good(83).replace('10.1.0.1', '10.1.0.300'));
    const e2 = await rejected;
    expect(e2.ok).toBe(false);
    if (!e2.ok) {
      expect(e2.errors.map(formatIssue)).toEqual([
        'vips[0].backends[0].address: "10.1.0.300" is not an IP address',
      ]);
      expect(e2.kept!.vips[0]!.port).toBe(83);
    }
    expect(source.current()!.vips[0]!.port).toBe(83);

    // Atomic replace by rename (editors, ConfigMaps).
    const renamed = next(source);
    writeFileSync(join(dir, 'tmp.yaml'), good(90));
    renameSync(join(dir, 'tmp.yaml'), path);
    const e3 = await renamed;
    expect(e3).toMatchObject({ ok: true, trigger: 'file', changed: true });
    expect(source.current()!.vips[0]!.port).toBe(90);
  });

  it('hands the first parsed document to onFirstDocument before validating it, once; an unparseable one not at all', async () => {
    const path = join(dir, 'c.yaml');
    // Valid YAML, invalid config (a VIP without backends' address): the document is handed over anyway.
    writeFileSync(path, 'interface: eth0\nlimits: {maxVips: 64}\nvips: [{name: web}]\n');
    const docs: unknown[] = [];
    const texts: [string, string][] = [];
    source = new FileConfigSource({
      path,
      sighup: false,
      watchFile: false,
      onFirstDocument: (d) => docs.push(d),
      onFirstText: (t, f) => texts.push([t, f]),
    });
    const first = await source.start();
    expect(first.ok).toBe(false);
    expect(docs).toEqual([{ interface: 'eth0', limits: { maxVips: 64 }, vips: [{ name: 'web' }] }]);
    expect(texts).toEqual([['interface: eth0\nlimits: {maxVips: 64}\nvips: [{name: web}]\n', 'yaml']]);
    writeFileSync(path, good(81));
    expect((await source.reload()).ok).toBe(true);
    expect(docs).toHaveLength(1);
    expect(texts).toHaveLength(1);
    source.stop();

    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{"interface": ');
    const seen: unknown[] = [];
    const seenText: string[] = [];
    source = new FileConfigSource({
      path: broken,
      sighup: false,
      watchFile: false,
      onFirstDocument: (d) => seen.push(d),
      onFirstText: (t, f) => seenText.push(`${f}: ${t}`),
    });
    expect((await source.start()).ok).toBe(false);
    expect(seen).toEqual([]);
    expect(seenText).toEqual(['json: {"interface": ']);
  });

  it('reloads on SIGHUP and reports unchanged content as such', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, good(80));
    source = new FileConfigSource({ path, watchFile: false });
    await source.start();
    const hup = next(source);
    // Jest's sandboxed `process` does not forward real signals to listeners, so deliver the event directly.
    process.emit('SIGHUP', 'SIGHUP');
    expect(await hup).toMatchObject({ ok: true, trigger: 'signal', changed: false });
    source.stop();
    expect(process.listeners('SIGHUP')).toHaveLength(0);
  });

  it('starts with an error result (no config) when the first file is bad, and validates options', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, 'interface: [\n');
    source = new FileConfigSource({ path, sighup: false, watchFile: false });
    const first = await source.start();
    expect(first.ok).toBe(false);
    expect(!first.ok && first.kept).toBeNull();
    expect(source.current()).toBeNull();
    expect(() => new FileConfigSource({ path: '' })).toThrow('path: "" is not a file path');
    expect(() => new FileConfigSource({ path, debounceMs: -1 })).toThrow('debounceMs: -1 is not >= 0');
  });
  it('a text read ahead is what the first load of that path and bound takes (the file read once), and only once', async () => {
    const path = join(dir, 'peak.yaml');
    writeFileSync(path, good(80));
    const ahead = await readConfigFileAhead(path);
    expect('text' in ahead && ahead.text).toBe(good(80));
    // another bound is another read
    writeFileSync(path, good(81));
    const bounded = await readConfigFile(path, { maxBytes: 4096 });
    expect('text' in bounded && bounded.text).toBe(good(81));
    // the source's first load takes the text read ahead (as if it had loaded then), its next reload reads the file
    source = new FileConfigSource({ path, sighup: false, watchFile: false });
    const first = await source.start();
    expect(first.ok && first.config.vips[0]!.port).toBe(80);
    const again = await source.reload();
    expect(again.ok && again.config.vips[0]!.port).toBe(81);
    expect(await readConfigFile(path)).toMatchObject({ text: good(81) });
    // read ahead by a relative path, taken by the source, which resolves its path
    writeFileSync(path, good(83));
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      expect(await readConfigFileAhead('peak.yaml')).toMatchObject({ text: good(83) });
    } finally {
      process.chdir(cwd);
    }
    writeFileSync(path, good(84));
    source.stop();
    source = new FileConfigSource({ path, sighup: false, watchFile: false });
    const third = await source.start();
    expect(third.ok && third.config.vips[0]!.port).toBe(83);
    // a refused file is not kept
    const missing = join(dir, 'missing.yaml');
    expect(await readConfigFileAhead(missing)).toMatchObject({ ok: false });
    writeFileSync(missing, good(82));
    expect(await readConfigFile(missing)).toMatchObject({ text: good(82) });
  });
});
