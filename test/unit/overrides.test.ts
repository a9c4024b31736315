// Runtime overrides, the pure core: changes checked against the config's VIPs and backends, applied on top of a
// config (same object while unchanged), pruned when a reload removes their target, stored and parsed back; the
// store shell: file round trip (0600), a bad file, changes one at a time, a failed save refused.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/log';
import { validateConfig, type Config } from '../../src/model/config';
import {
  applyChange,
  changes,
  checkWeight,
  OverrideApplier,
  OverrideError,
  OverrideSet,
  overrideOf,
  parseOverrides,
  pruneOverrides,
  resolveTarget,
  serialiseOverrides,
  withOverrideView,
} from '../../src/daemon/overrides';
import {
  FileOverrideStore,
  OverrideStore,
  overridesPath,
  readAdminToken,
  RuntimeOverrides,
} from '../../src/daemon/override-store';
import { desiredState } from '../../src/reconcile';

const AT = '2026-01-01T00:00:00.000Z';

function config(
  vips: { name: string; backends: (string | { address: string; weight?: number; drain?: boolean })[] }[],
): Config {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:01',
    encapSource: ['10.0.0.1', '2001:db8::1'],
    vips: vips.map((v, i) => ({
      name: v.name,
      address: i % 2 === 0 ? `192.0.2.${i + 1}` : `2001:db8:100::${i + 1}`,
      port: 80,
      tableSize: 251,
      backends: v.backends.map((b) => (typeof b === 'string' ? { address: b } : b)),
    })),
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

const CFG = config([
  { name: 'web', backends: ['10.1.0.1', '10.1.0.2', { address: '10.1.0.3', weight: 3 }] },
  { name: 'dns6', backends: ['2001:db8:1::1', '2001:db8:1::2'] },
]);

function fails(f: () => unknown, kind: 'not-found' | 'invalid', text: RegExp): void {
  let caught: unknown = null;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(OverrideError);
  expect((caught as OverrideError).kind).toBe(kind);
  expect((caught as Error).message).toMatch(text);
}

describe('resolveTarget', () => {
  it('finds a VIP by name and a backend in any IP spelling', () => {
    const r = resolveTarget(CFG.vips, 'dns6', '2001:DB8:1:0::0001');
    expect(r.vip.name).toBe('dns6');
    expect(r.backend.address).toBe('2001:db8:1::1');
  });
  it('names an unknown VIP and lists the VIPs', () => {
    fails(
      () => resolveTarget(CFG.vips, 'nope', '10.1.0.1'),
      'not-found',
      /no VIP named "nope" \(VIPs: web, dns6\)/,
    );
  });
  it('names an unknown backend and the VIP', () => {
    fails(
      () => resolveTarget(CFG.vips, 'web', '10.9.9.9'),
      'not-found',
      /VIP "web" has no backend 10\.9\.9\.9 \(its backends: 10\.1\.0\.1, 10\.1\.0\.2, 10\.1\.0\.3\)/,
    );
  });
  it.each([
    ['', '10.1.0.1', /vip: "" is not a VIP name/],
    [7, '10.1.0.1', /vip: 7 is not a VIP name/],
    ['web', 'ten', /backend: "ten" is not an IP address/],
    ['web', undefined, /backend: undefined is not an IP address/],
  ])('rejects vip %p backend %p as invalid', (vip, backend, text) => {
    fails(() => resolveTarget(CFG.vips, vip, backend), 'invalid', text);
  });
});

describe('checkWeight', () => {
  it.each([0, 1, 65535])('accepts %p', (w) => expect(checkWeight(w)).toBe(w));
  it.each([-1, 65536, 1.5, '3', null, NaN])('rejects %p naming it', (w) => {
    fails(() => checkWeight(w), 'invalid', /^weight: .* is not an integer from 0 to 65535$/);
  });
});

describe('applyChange', () => {
  const apply = (overrides: OverrideSet, change: Parameters<typeof applyChange>[0]['change']) =>
    applyChange({ overrides, vips: CFG.vips, change, at: AT });

  it('drain, weight, then clearing each leaves nothing', () => {
    let s = apply({}, { kind: 'drain', vip: 'web', backend: '10.1.0.2' });
    expect(s).toEqual({ web: { '10.1.0.2': { drain: true, drainAt: AT, at: AT } } });
    s = apply(s, { kind: 'weight', vip: 'web', backend: '10.1.0.2', weight: 0 });
    expect(s).toEqual({ web: { '10.1.0.2': { drain: true, drainAt: AT, weight: 0, weightAt: AT, at: AT } } });
    s = apply(s, { kind: 'undrain', vip: 'web', backend: '10.1.0.2' });
    expect(s).toEqual({ web: { '10.1.0.2': { weight: 0, weightAt: AT, at: AT } } });
    s = apply(s, { kind: 'clear-weight', vip: 'web', backend: '10.1.0.2' });
    expect(s).toEqual({});
  });
  it('keys backends by canonical address and leaves other VIPs and the input alone', () => {
    const before: OverrideSet = { web: { '10.1.0.1': { drain: true, at: AT } } };
    const s = apply(before, { kind: 'drain', vip: 'dns6', backend: '2001:db8:1:0:0:0:0:2' });
    expect(s).toEqual({
      web: { '10.1.0.1': { drain: true, at: AT } },
      dns6: { '2001:db8:1::2': { drain: true, drainAt: AT, at: AT } },
    });
    expect(before).toEqual({ web: { '10.1.0.1': { drain: true, at: AT } } });
  });
  it('each override keeps its own time; `at` is the latest change', () => {
    const at = (t: string) => `2026-01-01T00:00:0${t}.000Z`;
    const step = (o: OverrideSet, change: Parameters<typeof applyChange>[0]['change'], t: string) =>
      applyChange({ overrides: o, vips: CFG.vips, change, at: at(t) });
    let s = step({}, { kind: 'weight', vip: 'web', backend: '10.1.0.2', weight: 3 }, '1');
    s = step(s, { kind: 'drain', vip: 'web', backend: '10.1.0.2' }, '2');
    expect(s.web!['10.1.0.2']).toEqual({
      weight: 3,
      weightAt: at('1'),
      drain: true,
      drainAt: at('2'),
      at: at('2'),
    });
    s = step(s, { kind: 'undrain', vip: 'web', backend: '10.1.0.2' }, '3');
    expect(s.web!['10.1.0.2']).toEqual({ weight: 3, weightAt: at('1'), at: at('3') });
    // A change that changes nothing keeps the set itself, times included.
    expect(step(s, { kind: 'weight', vip: 'web', backend: '10.1.0.2', weight: 3 }, '4')).toBe(s);
    expect(step(s, { kind: 'undrain', vip: 'web', backend: '10.1.0.2' }, '4')).toBe(s);
    const d = step(s, { kind: 'drain', vip: 'web', backend: '10.1.0.2' }, '5');
    expect(step(d, { kind: 'drain', vip: 'web', backend: '10.1.0.2' }, '6')).toBe(d);
  });
  it('changes(): whether a change alters an override', () => {
    const o = { drain: true as const, weight: 3, at: AT };
    expect([changes(null, 'drain'), changes(o, 'drain')]).toEqual([true, false]);
    expect([changes(null, 'undrain'), changes(o, 'undrain')]).toEqual([false, true]);
    expect([changes(o, 'weight', 3), changes(o, 'weight', 4), changes(null, 'weight', 3)]).toEqual([
      false,
      true,
      true,
    ]);
    expect([changes({ drain: true, at: AT }, 'clear-weight'), changes(o, 'clear-weight')]).toEqual([
      false,
      true,
    ]);
  });
  it('clearing what is not set is a no-op, not an error', () => {
    expect(apply({}, { kind: 'undrain', vip: 'web', backend: '10.1.0.1' })).toEqual({});
    expect(apply({}, { kind: 'clear-weight', vip: 'web', backend: '10.1.0.1' })).toEqual({});
  });
  it('refuses unknown targets and bad weights', () => {
    fails(() => apply({}, { kind: 'drain', vip: 'x', backend: '10.1.0.1' }), 'not-found', /no VIP named "x"/);
    fails(
      () => apply({}, { kind: 'weight', vip: 'web', backend: '10.1.0.1', weight: 70000 }),
      'invalid',
      /weight: 70000/,
    );
  });
});

describe('pruneOverrides', () => {
  const set: OverrideSet = {
    web: { '10.1.0.1': { drain: true, at: AT }, '10.1.0.3': { weight: 9, at: AT } },
    gone: { '10.5.0.1': { drain: true, at: AT } },
  };
  it('keeps the set as it is when every target exists', () => {
    const s = { web: set.web! };
    expect(pruneOverrides(s, CFG.vips).kept).toBe(s);
    expect(pruneOverrides(s, CFG.vips).dropped).toEqual([]);
  });
  it('drops overrides of removed VIPs and removed backends, listing each', () => {
    const smaller = config([{ name: 'web', backends: ['10.1.0.1', '10.1.0.2'] }]);
    const r = pruneOverrides(set, smaller.vips);
    expect(r.kept).toEqual({ web: { '10.1.0.1': { drain: true, at: AT } } });
    expect(r.dropped).toEqual([
      { vip: 'web', backend: '10.1.0.3', override: { weight: 9, at: AT } },
      { vip: 'gone', backend: '10.5.0.1', override: { drain: true, at: AT } },
    ]);
  });
});

describe('OverrideApplier', () => {
  it('returns the config itself without overrides', () => {
    const a = new OverrideApplier();
    expect(a.config(CFG, {})).toBe(CFG);
    expect(a.config(CFG, { other: { '10.0.0.9': { drain: true, at: AT } } })).toBe(CFG);
  });
  it('drains and reweights only the named backends; the config is untouched', () => {
    const a = new OverrideApplier();
    const out = a.config(CFG, {
      web: { '10.1.0.2': { drain: true, at: AT }, '10.1.0.3': { weight: 0, at: AT } },
    });
    expect(out).not.toBe(CFG);
    expect(out.vips[0]!.backends.map((b) => [b.address, b.weight, b.drain])).toEqual([
      ['10.1.0.1', 1, false],
      ['10.1.0.2', 1, true],
      ['10.1.0.3', 0, false],
    ]);
    expect(out.vips[1]).toBe(CFG.vips[1]);
    expect(CFG.vips[0]!.backends.map((b) => [b.weight, b.drain])).toEqual([
      [1, false],
      [1, false],
      [3, false],
    ]);
    expect(Object.isFrozen(out.vips[0])).toBe(true);
  });
  it('gives the same VIP object while its config and overrides are unchanged, a new one when they change', () => {
    const a = new OverrideApplier();
    const s1: OverrideSet = { web: { '10.1.0.2': { drain: true, at: AT } } };
    const v1 = a.config(CFG, s1).vips[0];
    // A later timestamp alone does not change what the VIP is.
    expect(a.config(CFG, { web: { '10.1.0.2': { drain: true, at: 'later' } } }).vips[0]).toBe(v1);
    expect(a.config(CFG, { web: { '10.1.0.2': { weight: 2, at: AT } } }).vips[0]).not.toBe(v1);
  });
  it('a drain override makes the backend draining in the desired state, a weight changes its table share', () => {
    const a = new OverrideApplier();
    const plain = desiredState({ config: CFG });
    const over = desiredState({
      config: a.config(CFG, {
        web: { '10.1.0.2': { drain: true, at: AT }, '10.1.0.3': { weight: 1, at: AT } },
      }),
    });
    const be = (d: typeof plain, addr: string) => d.vips[0]!.backends.find((b) => b.address === addr)!;
    expect(be(plain, '10.1.0.2').state).toBe('up');
    expect(be(over, '10.1.0.2').state).toBe('draining');
    expect(be(plain, '10.1.0.3').weight).toBe(3);
    expect(be(over, '10.1.0.3').weight).toBe(1);
  });
});

describe('serialise and parse', () => {
  const set: OverrideSet = {
    web: {
      '10.1.0.1': { drain: true, drainAt: AT, at: AT },
      '10.1.0.3': { weight: 0, weightAt: AT, at: AT },
    },
    dns6: {
      '2001:db8:1::2': {
        drain: true,
        drainAt: AT,
        weight: 65535,
        weightAt: '2025-12-31T00:00:00.000Z',
        at: AT,
      },
    },
  };
  it('round-trips', () => {
    const text = serialiseOverrides(set);
    expect(JSON.parse(text).version).toBe(1);
    expect(parseOverrides(text)).toEqual(set);
  });
  it('a file from before per-override times: each takes the shared `at`', () => {
    expect(
      parseOverrides(
        '{"version":1,"overrides":{"web":{"10.1.0.1":{"drain":true,"weight":2,"at":"2026-01-01T00:00:00Z"}}}}',
      ),
    ).toEqual({
      web: {
        '10.1.0.1': {
          drain: true,
          drainAt: '2026-01-01T00:00:00Z',
          weight: 2,
          weightAt: '2026-01-01T00:00:00Z',
          at: '2026-01-01T00:00:00Z',
        },
      },
    });
  });
  it.each([
    ['not json', /not JSON/],
    ['[]', /not a JSON object/],
    ['{"version":2,"overrides":{}}', /version: 2 is not 1/],
    ['{"version":1}', /overrides: not an object/],
    ['{"version":1,"overrides":{"web":3}}', /overrides\.web: not an object/],
    [
      '{"version":1,"overrides":{"web":{"10.01.0.1":{"drain":true,"at":"2026-01-01T00:00:00Z"}}}}',
      /overrides\.web\.10\.01\.0\.1: not a canonical IP address/,
    ],
    [
      '{"version":1,"overrides":{"web":{"10.1.0.1":{"drain":false,"at":"2026-01-01T00:00:00Z"}}}}',
      /\.drain: not true/,
    ],
    [
      '{"version":1,"overrides":{"web":{"10.1.0.1":{"weight":-1,"at":"2026-01-01T00:00:00Z"}}}}',
      /10\.1\.0\.1\.weight: -1/,
    ],
    ['{"version":1,"overrides":{"web":{"10.1.0.1":{"drain":true,"at":"never"}}}}', /\.at: not a timestamp/],
    [
      '{"version":1,"overrides":{"web":{"10.1.0.1":{"drain":true,"drainAt":5,"at":"2026-01-01T00:00:00Z"}}}}',
      /10\.1\.0\.1\.drainAt: not a timestamp/,
    ],
  ])('rejects %s', (text, msg) => {
    expect(() => parseOverrides(text)).toThrow(msg);
  });
  it('skips an entry with nothing overridden', () => {
    expect(
      parseOverrides('{"version":1,"overrides":{"web":{"10.1.0.1":{"at":"2026-01-01T00:00:00Z"}}}}'),
    ).toEqual({});
  });
});

describe('withOverrideView', () => {
  it('puts override (or null) on every desired backend and counts them', () => {
    const doc = {
      other: 1,
      desired: { vips: [{ name: 'web', backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }] }] },
    };
    const set: OverrideSet = { web: { '10.1.0.2': { drain: true, at: AT } } };
    const v = withOverrideView(doc, set, '/run/x');
    expect(v.other).toBe(1);
    expect(v.desired!.vips[0]!.backends).toEqual([
      { address: '10.1.0.1', override: null },
      { address: '10.1.0.2', override: { drain: true, at: AT } },
    ]);
    expect(v.overrides).toEqual({ location: '/run/x', count: 1 });
    expect(withOverrideView({ desired: null }, set, null).desired).toBeNull();
    expect(overrideOf(set, 'web', '10.1.0.1')).toBeNull();
  });
});

describe('FileOverrideStore and RuntimeOverrides', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'peak-overrides-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stores under <root>/<netns>/<ifname>/overrides.json with mode 0600, and loads it back', async () => {
    const path = overridesPath({ root: dir, netns: 'ns1', ifname: 'eth0' });
    expect(path).toBe(join(dir, 'ns1', 'eth0', 'overrides.json'));
    const store = new FileOverrideStore(path);
    expect(await store.load()).toEqual({});
    const set: OverrideSet = { web: { '10.1.0.1': { drain: true, drainAt: AT, at: AT } } };
    await store.save(set);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(await new FileOverrideStore(path).load()).toEqual(set);
  });

  it('a bad file: open logs and starts with none; load names the file', async () => {
    const path = join(dir, 'overrides.json');
    writeFileSync(path, '{"version":9}');
    const store = new FileOverrideStore(path);
    await expect(store.load()).rejects.toThrow(`${path}: version: 9 is not 1`);
    const errors: string[] = [];
    const log = {
      ...silentLogger,
      error: (_o: unknown, msg: string) => errors.push(msg),
    } as unknown as typeof silentLogger;
    const ro = await RuntimeOverrides.open({ store, log });
    expect(ro.set).toEqual({});
    expect(errors).toHaveLength(1);
  });

  it('changes are stored before they take effect; concurrent changes are all kept', async () => {
    const path = join(dir, 'o.json');
    const ro = await RuntimeOverrides.open({ store: new FileOverrideStore(path), log: silentLogger });
    await Promise.all(
      ['10.1.0.1', '10.1.0.2', '10.1.0.3'].map((b) =>
        ro.change({ kind: 'drain', vip: 'web', backend: b }, () => CFG.vips),
      ),
    );
    expect(Object.keys(ro.set.web!).sort()).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3']);
    expect(Object.keys(parseOverrides(readFileSync(path, 'utf8')).web!).sort()).toEqual([
      '10.1.0.1',
      '10.1.0.2',
      '10.1.0.3',
    ]);
    expect(ro.apply(CFG).vips[0]!.backends.every((b) => b.drain)).toBe(true);
  });

  it('a failed save refuses the change and keeps the previous set', async () => {
    const broken: OverrideStore = {
      location: 'broken',
      load: async () => ({}),
      save: async () => {
        throw new Error('disk full');
      },
    };
    const ro = await RuntimeOverrides.open({ store: broken, log: silentLogger });
    await expect(
      ro.change({ kind: 'drain', vip: 'web', backend: '10.1.0.1' }, () => CFG.vips),
    ).rejects.toThrow('disk full');
    expect(ro.set).toEqual({});
    // The queue goes on after a failure.
    await expect(
      ro.change({ kind: 'drain', vip: 'nope', backend: '10.1.0.1' }, () => CFG.vips),
    ).rejects.toThrow(/no VIP named/);
  });

  it('a change that changes nothing is neither stored nor logged', async () => {
    const saved: OverrideSet[] = [];
    const store: OverrideStore = {
      location: 'mem',
      load: async () => ({}),
      save: async (o) => void saved.push(o),
    };
    const infos: string[] = [];
    const log = {
      ...silentLogger,
      info: (_o: unknown, m: string) => infos.push(m),
    } as unknown as typeof silentLogger;
    const ro = await RuntimeOverrides.open({ store, log });
    await ro.change({ kind: 'undrain', vip: 'web', backend: '10.1.0.1' }, () => CFG.vips);
    expect([saved.length, infos.length]).toEqual([0, 0]);
    const first = await ro.change({ kind: 'drain', vip: 'web', backend: '10.1.0.1' }, () => CFG.vips);
    expect(await ro.change({ kind: 'drain', vip: 'web', backend: '10.1.0.1' }, () => CFG.vips)).toBe(first);
    expect([saved.length, infos]).toEqual([1, ['runtime override changed']]);
  });

  it('prune drops and stores, logging each dropped override', async () => {
    const path = join(dir, 'o.json');
    const store = new FileOverrideStore(path);
    await store.save({
      web: { '10.1.0.1': { drain: true, at: AT } },
      gone: { '10.5.0.1': { drain: true, at: AT } },
    });
    const warned: unknown[] = [];
    const log = { ...silentLogger, warn: (o: unknown) => warned.push(o) } as unknown as typeof silentLogger;
    const ro = await RuntimeOverrides.open({ store, log });
    ro.prune(CFG.vips);
    expect(ro.set).toEqual({ web: { '10.1.0.1': { drain: true, drainAt: AT, at: AT } } });
    expect(warned).toEqual([
      { vip: 'gone', backend: '10.5.0.1', override: { drain: true, drainAt: AT, at: AT } },
    ]);
    // Stored in the background: a change queued after it sees it stored.
    await ro.change({ kind: 'undrain', vip: 'web', backend: '10.1.0.1' }, () => CFG.vips);
    expect(await store.load()).toEqual({});
  });

  it('idle() resolves only once a background store has finished (a stopping daemon waits for it)', async () => {
    let release!: () => void;
    const saved: OverrideSet[] = [];
    const store: OverrideStore = {
      location: 'mem',
      load: async () => ({ gone: { '10.5.0.1': { drain: true, at: AT } } }),
      save: (o) =>
        new Promise<void>((r) => {
          release = () => {
            saved.push(o);
            r();
          };
        }),
    };
    const ro = await RuntimeOverrides.open({ store, log: silentLogger });
    ro.prune(CFG.vips);
    let idle = false;
    const waiting = ro.idle().then(() => (idle = true));
    await new Promise((r) => setImmediate(r));
    expect([idle, saved.length]).toEqual([false, 0]);
    release();
    await waiting;
    expect([idle, saved]).toEqual([true, [{}]]);
  });

  it('readAdminToken trims, and refuses short tokens and missing files naming them', async () => {
    const f = join(dir, 'token');
    writeFileSync(f, '  0123456789abcdef0123\n');
    expect(await readAdminToken(f)).toBe('0123456789abcdef0123');
    writeFileSync(f, 'short\n');
    await expect(readAdminToken(f)).rejects.toThrow(
      `admin.tokenFile ${f}: the token must be at least 16 characters`,
    );
    await expect(readAdminToken(join(dir, 'none'))).rejects.toThrow(
      `admin.tokenFile ${join(dir, 'none')}: ENOENT`,
    );
  });
});

describe('config: admin.tokenFile', () => {
  const base = { interface: 'eth0', nextHopMac: '02:00:00:00:00:01' };
  it('is optional and kept when given', () => {
    const a = validateConfig(base);
    expect(a.ok && a.config.admin.tokenFile).toBeUndefined();
    const b = validateConfig({ ...base, admin: { tokenFile: '/etc/peak-xdp/token' } });
    expect(b.ok && b.config.admin.tokenFile).toBe('/etc/peak-xdp/token');
  });
  it('must be an absolute path', () => {
    const r = validateConfig({ ...base, admin: { tokenFile: 'token' } });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors).toEqual([
      { path: 'admin.tokenFile', message: '"token" is not an absolute file path' },
    ]);
  });
});
