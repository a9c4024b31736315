// The admin API's /v1 endpoints: access (loopback or token, JSON content type), routes and their errors (JSON
// bodies naming the VIP or backend), conntrack flush matching, over real HTTP against a fake daemon; then a real
// Daemon over a MemoryDatapath: a drain reaches the datapath and /state, survives a reload and a new daemon on
// the same store, and an override whose backend a reload removes is dropped with a log line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { AdminServer, startAdmin } from '../../src/daemon/admin';
import {
  adminWriteApi,
  authorise,
  ConntrackFlusher,
  flushMatch,
  handleWrite,
  isLoopback,
  MAX_BODY_BYTES,
  WriteAccess,
  WriteRequest,
  WriteTarget,
} from '../../src/daemon/admin-write';
import type { DaemonCollaborators } from '../../src/daemon/collaborators';
import { Daemon } from '../../src/daemon/daemon';
import type { DatapathHost, OpenedDatapath } from '../../src/daemon/datapath-host';
import { FileOverrideStore } from '../../src/daemon/override-store';
import { applyChange, OverrideSet } from '../../src/daemon/overrides';
import { MemoryDatapath } from '../../src/datapath/memory';
import { silentLogger } from '../../src/log';
import { Config, validateConfig } from '../../src/model';
import { FakeSource, QuietMonitor, recordingLogger } from '../helpers/daemon-fakes';

function config(vips: { name: string; address: string; backends: string[] }[]): Config {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:fe',
    admin: { listen: '127.0.0.1:9100' },
    vips: vips.map((v) => ({
      name: v.name,
      address: v.address,
      port: 80,
      tableSize: 101,
      backends: v.backends.map((address) => ({ address })),
    })),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}

const CFG = config([
  { name: 'web', address: '10.0.0.10', backends: ['10.1.0.1', '10.1.0.2'] },
  { name: 'api', address: '10.0.0.11', backends: ['10.1.0.2', '10.1.0.3'] },
]);

describe('isLoopback', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.1', false],
    ['::ffff:10.0.0.1', false],
    ['2001:db8::1', false],
    ['localhost', false],
  ])('%s -> %p', (h, want) => expect(isLoopback(h)).toBe(want));
});

const req = (o: Omit<Partial<WriteRequest>, 'body'> & { body?: unknown }): WriteRequest => ({
  method: o.method ?? 'POST',
  path: o.path ?? '/v1/backends/drain',
  headers: o.headers ?? { 'content-type': 'application/json' },
  body: typeof o.body === 'string' ? o.body : JSON.stringify(o.body ?? {}),
});
const LOCAL: WriteAccess = { listen: '127.0.0.1:9470', local: true, token: null };
const TOKEN = 'a-long-enough-token-0123';

describe('authorise', () => {
  it('serves a loopback listener without a token', () => {
    expect(authorise(req({}), LOCAL)).toBeNull();
  });
  it('refuses every mutating request on a non-loopback listener without a token, naming the listen address', () => {
    const r = authorise(req({}), { listen: '0.0.0.0:9470', local: false, token: null });
    expect(r?.status).toBe(403);
    expect((r?.body as { error: string }).error).toMatch(
      /admin\.listen 0\.0\.0\.0:9470 is not a loopback address and no admin\.tokenFile/,
    );
  });
  it.each([
    [undefined, 401, /^no token: /],
    ['Bearer wrong-token-wrong-token-x', 401, /^wrong token: /],
    ['Bearer x', 401, /^wrong token: /],
    [`Basic ${TOKEN}`, 401, /^no token: /],
    [`Bearer ${TOKEN}`, null, null],
    [`bearer   ${TOKEN}`, null, null],
  ])(
    'with a token (loopback or not), authorization %p -> %p (missing and wrong told apart)',
    (h, status, msg) => {
      for (const local of [true, false]) {
        const r = authorise(req({ headers: { 'content-type': 'application/json', authorization: h } }), {
          listen: 'x',
          local,
          token: TOKEN,
        });
        expect(r?.status ?? null).toBe(status);
        if (msg) expect((r?.body as { error: string }).error).toMatch(msg);
      }
    },
  );
  it.each([undefined, 'text/plain', 'application/x-www-form-urlencoded'])('content-type %p -> 415', (t) => {
    expect(authorise(req({ headers: { 'content-type': t } }), LOCAL)?.status).toBe(415);
  });
  it('accepts application/json with parameters', () => {
    expect(
      authorise(req({ headers: { 'content-type': 'application/json; charset=utf-8' } }), LOCAL),
    ).toBeNull();
  });
});

describe('flushMatch', () => {
  const ids = {
    vips: new Map([
      ['web', 1],
      ['api', 2],
    ]),
    backends: new Map([
      [
        'web',
        new Map([
          ['10.1.0.1', 11],
          ['10.1.0.2', 12],
        ]),
      ],
      [
        'api',
        new Map([
          ['10.1.0.2', 21],
          ['10.1.0.3', 22],
        ]),
      ],
    ]),
  };
  const entries = [
    { vipId: 1, backendId: 11 },
    { vipId: 1, backendId: 12 },
    { vipId: 2, backendId: 21 },
    { vipId: 2, backendId: 22 },
  ];
  const pick = (vip: unknown, backend: unknown) =>
    entries.filter(flushMatch({ vips: CFG.vips, ids, vip, backend })).map((e) => e.backendId);
  it('by VIP, by backend in a VIP, by backend address in every VIP, everything', () => {
    expect(pick('web', undefined)).toEqual([11, 12]);
    expect(pick('api', '10.1.0.2')).toEqual([21]);
    expect(pick(undefined, '10.1.0.2')).toEqual([12, 21]);
    expect(pick(undefined, undefined)).toEqual([11, 12, 21, 22]);
  });
  it('names what does not exist', () => {
    expect(() => pick('nope', undefined)).toThrow(/no VIP named "nope"/);
    expect(() => pick('web', '10.1.0.3')).toThrow(/VIP "web" has no backend 10\.1\.0\.3/);
    expect(() => pick(undefined, '10.9.9.9')).toThrow(/no VIP has a backend 10\.9\.9\.9/);
    expect(() => pick(undefined, 'x')).toThrow(/backend: "x" is not an IP address/);
  });
});

/** A daemon as the endpoints see it: config VIPs, overrides applied in memory, a recorded flush. */
class FakeTarget implements WriteTarget {
  set: OverrideSet = {};
  isStarted = true;
  flushed: { vipId: number; backendId: number }[] = [];
  entries = [
    { vipId: 1, backendId: 11 },
    { vipId: 2, backendId: 21 },
    { vipId: 2, backendId: 22 },
  ];
  hasConntrack = true;
  started = () => this.isStarted;
  vips = () => CFG.vips;
  overrides = () => this.set;
  overridesLocation = () => '/run/test/overrides.json';
  change = async (c: Parameters<WriteTarget['change']>[0]) =>
    (this.set = applyChange({
      overrides: this.set,
      vips: CFG.vips,
      change: c,
      at: '2026-01-01T00:00:00.000Z',
    }));
  ids = () => ({
    vips: new Map([
      ['web', 1],
      ['api', 2],
    ]),
    backends: new Map([
      [
        'web',
        new Map([
          ['10.1.0.1', 11],
          ['10.1.0.2', 12],
        ]),
      ],
      [
        'api',
        new Map([
          ['10.1.0.2', 21],
          ['10.1.0.3', 22],
        ]),
      ],
    ]),
  });
  conntrack = (): ConntrackFlusher | null =>
    this.hasConntrack
      ? {
          flush: async (match) => {
            const doomed = this.entries.filter(match);
            this.flushed.push(...doomed);
            this.entries = this.entries.filter((e) => !match(e));
            return doomed.length;
          },
        }
      : null;
}

describe('handleWrite', () => {
  const run = (t: FakeTarget, r: Omit<Partial<WriteRequest>, 'body'> & { body?: unknown }, access = LOCAL) =>
    handleWrite(req(r), { target: t, access });

  it('drain, weight, clear: replies with the override in force and whether it changed', async () => {
    const t = new FakeTarget();
    const AT = '2026-01-01T00:00:00.000Z';
    let r = await run(t, { body: { vip: 'web', backend: '10.1.0.2' } });
    expect(r).toEqual({
      status: 200,
      body: {
        vip: 'web',
        backend: '10.1.0.2',
        override: { drain: true, drainAt: AT, at: AT },
        changed: true,
      },
    });
    r = await run(t, { body: { vip: 'web', backend: '10.1.0.2' } });
    expect((r.body as { changed: boolean }).changed).toBe(false);
    r = await run(t, { path: '/v1/backends/weight', body: { vip: 'web', backend: '10.1.0.2', weight: 7 } });
    expect(r.body).toMatchObject({
      override: { drain: true, drainAt: AT, weight: 7, weightAt: AT, at: AT },
      changed: true,
    });
    r = await run(t, { method: 'DELETE', body: { vip: 'web', backend: '10.1.0.2' } });
    expect(r.body).toMatchObject({ override: { weight: 7, weightAt: AT, at: AT }, changed: true });
    // Undrain of a backend that is not drained: 200, nothing changed, and it says so.
    r = await run(t, { method: 'DELETE', body: { vip: 'web', backend: '10.1.0.2' } });
    expect(r).toMatchObject({ status: 200, body: { changed: false, override: { weight: 7 } } });
    r = await run(t, {
      method: 'DELETE',
      path: '/v1/backends/weight',
      body: { vip: 'web', backend: '10.1.0.2' },
    });
    expect(r.body).toEqual({ vip: 'web', backend: '10.1.0.2', override: null, changed: true });
    expect(t.set).toEqual({});
  });

  it('GET /v1/overrides needs no token', async () => {
    const t = new FakeTarget();
    await run(t, { body: { vip: 'api', backend: '10.1.0.3' } });
    const r = await run(
      t,
      { method: 'GET', path: '/v1/overrides', headers: {} },
      { listen: 'x', local: false, token: TOKEN },
    );
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ version: 1, location: '/run/test/overrides.json', overrides: t.set });
  });

  it.each([
    [{ vip: 'nope', backend: '10.1.0.1' }, 404, /no VIP named "nope"/],
    [{ vip: 'web', backend: '10.1.0.3' }, 404, /VIP "web" has no backend 10\.1\.0\.3/],
    [{ vip: 'web' }, 400, /backend: undefined is not an IP address/],
    [{ vip: 'web', backend: '10.1.0.1', extra: 1 }, 400, /unknown field\(s\) extra/],
    ['{not json', 400, /body is not JSON/],
    ['[1]', 400, /body is not a JSON object/],
  ])('drain body %p -> %p', async (body, status, text) => {
    const t = new FakeTarget();
    const r = await run(t, { body });
    expect(r.status).toBe(status);
    expect((r.body as { error: string }).error).toMatch(text);
    expect(t.set).toEqual({});
  });

  it('weight: a bad weight is named', async () => {
    const r = await run(new FakeTarget(), {
      path: '/v1/backends/weight',
      body: { vip: 'web', backend: '10.1.0.1', weight: 'x' },
    });
    expect(r).toEqual({ status: 400, body: { error: 'weight: "x" is not an integer from 0 to 65535' } });
  });

  it('unknown paths and methods', async () => {
    const t = new FakeTarget();
    expect((await run(t, { path: '/v1/nope' })).status).toBe(404);
    const r = await run(t, { method: 'PUT' });
    expect(r.status).toBe(405);
    expect((r.body as { error: string }).error).toMatch(
      /use POST \/v1\/backends\/drain or DELETE \/v1\/backends\/drain/,
    );
  });

  it('refuses before start and without access', async () => {
    const t = new FakeTarget();
    t.isStarted = false;
    expect((await run(t, { body: { vip: 'web', backend: '10.1.0.1' } })).status).toBe(503);
    t.isStarted = true;
    const r = await run(
      t,
      { body: { vip: 'web', backend: '10.1.0.1' } },
      { listen: '0.0.0.0:1', local: false, token: null },
    );
    expect(r.status).toBe(403);
    expect(t.set).toEqual({});
  });

  it('conntrack flush: filters, --all, and the refusals', async () => {
    const t = new FakeTarget();
    const flush = (body: unknown) => run(t, { path: '/v1/conntrack/flush', body });
    expect((await flush({})).status).toBe(400);
    expect(((await flush({})).body as { error: string }).error).toMatch(/all: true/);
    expect((await flush({ all: true, vip: 'web' })).status).toBe(400);
    expect((await flush({ all: 'yes' })).status).toBe(400);
    expect((await flush({ vip: 'nope' })).status).toBe(404);
    expect(await flush({ vip: 'api', backend: '10.1.0.3' })).toEqual({
      status: 200,
      body: { deleted: 1, vip: 'api', backend: '10.1.0.3' },
    });
    expect(t.flushed).toEqual([{ vipId: 2, backendId: 22 }]);
    expect(((await flush({ all: true })).body as { deleted: number }).deleted).toBe(2);
    expect(t.entries).toEqual([]);
    t.hasConntrack = false;
    expect((await flush({ all: true })).status).toBe(501);
  });
});

describe('over HTTP (startAdmin with the api hook)', () => {
  let server: AdminServer;
  const target = new FakeTarget();
  const base = () => `http://127.0.0.1:${server.address.port}`;
  beforeAll(async () => {
    server = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      registry: new Registry(),
      readiness: () => ({ ready: true, reasons: [] }),
      state: async () => ({}),
      logger: silentLogger,
      api: adminWriteApi({ target, access: { listen: '127.0.0.1:0', local: true, token: TOKEN } }),
    });
  });
  afterAll(() => server.stop());

  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${base()}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, ...headers },
      body,
    });

  it('serves /v1 as JSON and leaves the other paths to the read-only API', async () => {
    const r = await post('/v1/backends/drain', JSON.stringify({ vip: 'web', backend: '10.1.0.1' }));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(((await r.json()) as { override: { drain: boolean } }).override.drain).toBe(true);
    expect(target.set.web?.['10.1.0.1']?.drain).toBe(true);
    expect((await fetch(`${base()}/healthz`)).status).toBe(200);
    // Only /v1 takes other methods than GET.
    expect((await fetch(`${base()}/state`, { method: 'POST' })).status).toBe(405);
  });

  it('errors are JSON bodies', async () => {
    const r = await post('/v1/backends/drain', JSON.stringify({ vip: 'nope', backend: '10.1.0.1' }));
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: 'no VIP named "nope" (VIPs: web, api)' });
    const u = await post('/v1/backends/drain', '{}', { authorization: 'Bearer nope' });
    expect(u.status).toBe(401);
    expect(((await u.json()) as { error: string }).error).toMatch(/^wrong token: /);
  });

  it('refuses a body over the limit with 413', async () => {
    const r = await post('/v1/backends/drain', JSON.stringify({ vip: 'x'.repeat(MAX_BODY_BYTES) }));
    expect(r.status).toBe(413);
  });
});

// ---- a real Daemon over a MemoryDatapath ------------------------------------------------------------------------

class MemoryHost implements DatapathHost {
  readonly dp = new MemoryDatapath();
  pinned = false;
  claim(ifname: string) {
    return { pins: `/memory/${ifname}`, release: () => undefined, open: async () => this.open() };
  }
  private open(): OpenedDatapath {
    const adopted = this.pinned;
    this.pinned = true;
    let attached = false;
    return {
      datapath: this.dp,
      adopted,
      attachment: () => ({ kind: attached ? 'ours' : 'none' }),
      attach: async () => {
        attached = true;
        return { mode: 'generic', progId: 1 };
      },
      detach: async () => void (attached = false),
      pinCheck: () => ({ missing: [], foreign: [] }),
      repin: () => undefined,
      unpin: () => undefined,
      removePinDir: () => undefined,
      close: () => undefined,
    };
  }
}

interface StateDoc {
  desired: {
    vips: {
      name: string;
      backends: { address: string; drain: boolean; weight: number; state: string; override: unknown }[];
    }[];
  };
  overrides: { location: string | null; count: number };
}

describe('Daemon with runtime overrides (MemoryDatapath)', () => {
  let dir: string;
  const daemons: Daemon[] = [];
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'peak-admin-write-'))));
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function start(host: MemoryHost, cfg: Config) {
    const { log, records } = recordingLogger();
    const source = new FakeSource(cfg);
    let admin: AdminServer | null = null;
    const collaborators: DaemonCollaborators = {
      datapathHost: host,
      hostNetwork: {
        interfaceMac: async () => '02:00:00:00:00:01',
        interfaceAddresses: async () => ['192.0.2.1'],
        defaultGatewayMac: async () => '02:00:00:00:00:fe',
      },
      configSource: () => source,
      healthMonitor: () => new QuietMonitor() as never,
      bgpPreflight: async () => undefined,
      bgpSpeaker: () => {
        throw new Error('no BGP here');
      },
      adminServer: async (o) => (admin = await startAdmin({ ...o, port: 0 })),
      vipRoutes: () => ({
        set: () => undefined,
        stop: async () => undefined,
        removeAll: async () => undefined,
        status: () => ({}) as never,
      }),
      overrideStore: () => new FileOverrideStore(join(dir, 'eth0', 'overrides.json')),
    };
    const daemon = new Daemon({
      configPath: '/memory/c.yaml',
      detachOnExit: false,
      logger: log,
      ...collaborators,
    });
    daemons.push(daemon);
    return {
      daemon,
      source,
      records,
      url: (p: string) => `http://127.0.0.1:${admin!.address.port}${p}`,
    };
  }

  const backend = (doc: StateDoc, vip: string, address: string) =>
    doc.desired.vips.find((v) => v.name === vip)!.backends.find((b) => b.address === address)!;
  const dpState = async (host: MemoryHost, address: string) =>
    (await host.dp.listBackends()).filter((b) => b.address === address).map((b) => b.state);

  it('drain reaches the datapath and /state, survives a reload and a new daemon, and goes with its backend', async () => {
    const host = new MemoryHost();
    const a = start(host, CFG);
    await a.daemon.start();
    const callsBefore = host.dp.calls.length;
    const r = await fetch(a.url('/v1/backends/drain'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vip: 'web', backend: '10.1.0.2' }),
    });
    expect(r.status).toBe(200);
    expect(host.dp.calls.slice(callsBefore).map((c) => c.method)).toContain('upsertBackend');
    // The reply comes after the sync: the datapath already has it (web's 10.1.0.2 draining, api's up).
    expect((await dpState(host, '10.1.0.2')).sort()).toEqual(['draining', 'up']);
    const doc = (await a.daemon.state()) as StateDoc;
    expect(backend(doc, 'web', '10.1.0.2')).toMatchObject({
      drain: true,
      state: 'draining',
      override: { drain: true },
    });
    expect(backend(doc, 'web', '10.1.0.1').override).toBeNull();
    expect(doc.overrides).toEqual({ location: join(dir, 'eth0', 'overrides.json'), count: 1 });

    // A reload with an unrelated change keeps it.
    const bigger = config([
      { name: 'web', address: '10.0.0.10', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.4'] },
      { name: 'api', address: '10.0.0.11', backends: ['10.1.0.2', '10.1.0.3'] },
    ]);
    a.source.emit('reload', { ok: true, trigger: 'file', config: bigger, warnings: [], changed: true });
    await fetch(a.url('/v1/backends/weight'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vip: 'web', backend: '10.1.0.4', weight: 5 }),
    }).then((x) => expect(x.status).toBe(200));
    let d = (await a.daemon.state()) as StateDoc;
    expect(backend(d, 'web', '10.1.0.2').state).toBe('draining');
    expect(backend(d, 'web', '10.1.0.4')).toMatchObject({ weight: 5, override: { weight: 5 } });

    // A new daemon (a restart) on the same store and datapath starts with them.
    await a.daemon.stop();
    const b = start(host, bigger);
    await b.daemon.start();
    d = (await b.daemon.state()) as StateDoc;
    expect(backend(d, 'web', '10.1.0.2')).toMatchObject({ state: 'draining', override: { drain: true } });
    expect(backend(d, 'web', '10.1.0.4').weight).toBe(5);

    // A reload without web's 10.1.0.2 drops its override, with a log line; api's 10.1.0.2 was never drained.
    b.source.emit('reload', {
      ok: true,
      trigger: 'file',
      config: config([
        { name: 'web', address: '10.0.0.10', backends: ['10.1.0.1', '10.1.0.4'] },
        { name: 'api', address: '10.0.0.11', backends: ['10.1.0.2', '10.1.0.3'] },
      ]),
      warnings: [],
      changed: true,
    });
    for (let i = 0; i < 50 && b.records.every((x) => !/override dropped/.test(x.msg)); i++)
      await new Promise((res) => setTimeout(res, 10));
    const dropped = b.records.filter((x) => /override dropped/.test(x.msg));
    expect(dropped.map((x) => [x.level, x.obj.vip, x.obj.backend])).toEqual([['warn', 'web', '10.1.0.2']]);
    const over = (await fetch(b.url('/v1/overrides')).then((x) => x.json())) as {
      overrides: Record<string, object>;
    };
    expect(Object.keys(over.overrides.web!)).toEqual(['10.1.0.4']);
  });

  it('rejects an unknown backend with 404 naming it, and changes nothing', async () => {
    const host = new MemoryHost();
    const a = start(host, CFG);
    await a.daemon.start();
    const before = host.dp.calls.length;
    const r = await fetch(a.url('/v1/backends/drain'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vip: 'api', backend: '10.1.0.1' }),
    });
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({
      error: 'VIP "api" has no backend 10.1.0.1 (its backends: 10.1.0.2, 10.1.0.3)',
    });
    // MemoryDatapath records mutations only: none happened.
    expect(host.dp.calls.slice(before)).toEqual([]);
    // The in-memory datapath has no connection table to flush.
    const f = await fetch(a.url('/v1/conntrack/flush'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ all: true }),
    });
    expect(f.status).toBe(501);
  });
});
