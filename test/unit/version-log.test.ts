// One version for the CLI, the start line and build_info (git describe at build time, else package.json);
// log lines with string levels and ISO times; what a reload changed; gzip negotiation of /metrics.
import { Writable } from 'node:stream';
import pino from 'pino';
import { formatVersion } from '../../src/cli/commands/version';
import { buildCli } from '../../src/cli/main';
import { acceptsGzip } from '../../src/daemon/admin';
import { LOG_FORMAT, logTimeMs } from '../../src/log';
import { configChanges } from '../../src/model/diff';
import { buildInfo, resolveVersion } from '../../src/version';

const C = 'a'.repeat(40);

describe('resolveVersion', () => {
  it.each([
    ['v1.2.3', '1.2.3'],
    ['v1.2.3-dirty', '1.2.3+dirty'],
    ['v1.2.3-4-gabc1234', '1.2.3+4.gabc1234'],
    ['v1.2.3-4-gabc1234-dirty', '1.2.3+4.gabc1234.dirty'],
    ['v2.0.0-rc.1', '2.0.0-rc.1'],
    ['v2.0.0-rc.1-7-g0123abc', '2.0.0-rc.1+7.g0123abc'],
    ['abc1234', '0.1.0+gabc1234'],
    ['abc1234-dirty', '0.1.0+gabc1234.dirty'],
    ['release-candidate', '0.1.0'],
    [null, '0.1.0'],
  ])('git describe %p -> %p', (describe, version) => {
    expect(resolveVersion({ describe, commit: C, packageVersion: '0.1.0' })).toEqual({ version, commit: C });
  });

  it('a missing or malformed commit is "unknown"', () => {
    expect(resolveVersion({ describe: 'v1.0.0', commit: null, packageVersion: '0' }).commit).toBe('unknown');
    expect(resolveVersion({ describe: 'v1.0.0', commit: 'HEAD', packageVersion: '0' }).commit).toBe(
      'unknown',
    );
  });
});

describe('peak-xdp version', () => {
  it('prints the build version, which --version prints too', async () => {
    const out: string[] = [];
    const logged: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    // yargs prints --version with console.log.
    const log = jest.spyOn(console, 'log').mockImplementation((s: unknown) => void logged.push(String(s)));
    try {
      await buildCli(['version']).parseAsync();
      await buildCli(['version', '--json']).parseAsync();
      await buildCli(['--version']).exitProcess(false).parseAsync();
    } finally {
      spy.mockRestore();
      log.mockRestore();
    }
    const [text, json] = out;
    expect(text).toBe(`${formatVersion(buildInfo, process.version)}\n`);
    expect(text!.split(' ')[0]).toBe(buildInfo.version);
    expect(JSON.parse(json!)).toEqual({
      apiVersion: 'peak-xdp/v1',
      kind: 'Version',
      version: buildInfo.version,
      commit: buildInfo.commit,
      node: process.version,
    });
    expect(logged).toEqual([buildInfo.version]);
    expect(buildInfo.version).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('log format', () => {
  it('lines carry a string level and an ISO time', () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) });
    pino({ level: 'info', ...LOG_FORMAT }, sink).warn({ a: 1 }, 'hello');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!) as { level: unknown; time: unknown; msg: unknown };
    expect(j.level).toBe('warn');
    expect(j.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(logTimeMs(j.time)! - Date.now())).toBeLessThan(60_000);
    expect(j.msg).toBe('hello');
  });

  it('logTimeMs reads ISO strings and epoch numbers', () => {
    expect(logTimeMs('2026-12-01T16:02:22.123Z')).toBe(Date.UTC(2026, 11, 1, 16, 2, 22, 123));
    expect(logTimeMs(1700000000000)).toBe(1700000000000);
    expect(logTimeMs('yesterday')).toBeNull();
    expect(logTimeMs(undefined)).toBeNull();
  });
});

describe('configChanges', () => {
  const vip = (name: string, port: number, backends: { address: string; weight?: number }[]) => ({ name, port, backends }); // prettier-ignore
  it('counts VIPs and backends added, removed and changed', () => {
    const prev = {
      vips: [vip('a', 80, [{ address: '1' }, { address: '2' }]), vip('b', 80, [{ address: '3' }])],
    };
    const next = {
      vips: [
        vip('a', 8080, [{ address: '1', weight: 5 }, { address: '4' }]),
        vip('c', 53, [{ address: '5' }]),
      ],
    };
    expect(configChanges(prev, next)).toEqual({
      vips: { added: 1, removed: 1, changed: 1 },
      backends: { added: 2, removed: 2, changed: 1 },
    });
  });
  it('nothing changed: key order does not matter', () => {
    const a = { vips: [{ name: 'a', port: 1, backends: [{ address: '1', weight: 2 }] }] };
    const b = { vips: [{ port: 1, name: 'a', backends: [{ weight: 2, address: '1' }] }] };
    expect(configChanges(a, b)).toEqual({
      vips: { added: 0, removed: 0, changed: 0 },
      backends: { added: 0, removed: 0, changed: 0 },
    });
  });
});

describe('acceptsGzip', () => {
  it.each([
    ['gzip', true],
    ['gzip, deflate, br', true],
    ['deflate, gzip;q=0.5', true],
    ['*', true],
    ['GZIP', true],
    ['gzip;q=0', false],
    ['identity', false],
    ['', false],
    [undefined, false],
    ['x-gzip', false],
  ])('%p -> %p', (h, want) => {
    expect(acceptsGzip(h)).toBe(want);
  });
});
