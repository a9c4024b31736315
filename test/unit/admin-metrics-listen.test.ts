// The read-only metrics listener (admin.metricsListen): GET /metrics, /healthz and /readyz only, the same answers
// as the admin listener's; nothing that changes state (the write API) nor /state is reachable through it.
import { createServer, request, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { AdminServer, METRICS_LISTEN_PATHS, MetricsListenError, startAdmin } from '../../src/daemon/admin';
import { silentLogger } from '../../src/log';
import { validateConfig, formatIssue } from '../../src/model';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request on a fresh connection (status 0: the connection failed). */
function call(port: number, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, headers: {}, body: '' }));
    if (body !== undefined) req.setHeader('content-type', 'application/json');
    req.end(body);
  });
}

/** The metric lines other than the API's own per-response counter (each scrape counts itself there). */
const comparable = (text: string): string[] =>
  text.split('\n').filter((l) => l !== '' && !l.includes('peak_xdp_admin_rendered_responses_total'));

describe('admin API with a metrics listener', () => {
  let admin: AdminServer;
  const apiCalls: string[] = [];
  let ready = true;
  const registry = new Registry();
  const hits = new Counter({ name: 'test_hits_total', help: 'test', registers: [registry] });

  beforeAll(async () => {
    hits.inc(7);
    admin = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      metricsListen: { host: '127.0.0.1', port: 0 },
      registry,
      readiness: () =>
        ready ? { ready: true, reasons: [] } : { ready: false, reasons: ['node settings invalid'] },
      state: async () => ({ secret: 'state document' }),
      logger: silentLogger,
      fdLimit: 65536,
      // Every scrape renders anew: the two listeners' bodies are compared as rendered, not as one cached body.
      renderReuseMs: { '/metrics': 0 },
      // The write API: records what reached it and answers every /v1/ request.
      api: async (req, res) => {
        if (!(req.url ?? '').startsWith('/v1/')) return false;
        apiCalls.push(`${req.method} ${req.url}`);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"changed":true}\n');
        return true;
      },
    });
  });
  afterAll(async () => {
    await admin.stop();
  });

  it('listens on a second port', () => {
    expect(admin.metricsAddress).not.toBeNull();
    expect(admin.metricsAddress!.port).not.toBe(admin.address.port);
    expect(admin.metricsAddress!.port).toBeGreaterThan(0);
  });

  it('serves the same metrics as the admin listener', async () => {
    const a = await call(admin.address.port, 'GET', '/metrics');
    const m = await call(admin.metricsAddress!.port, 'GET', '/metrics');
    expect([a.status, m.status]).toEqual([200, 200]);
    expect(m.headers['content-type']).toBe(a.headers['content-type']);
    expect(m.body).toMatch(/^test_hits_total 7$/m);
    expect(m.body).toMatch(/^peak_xdp_admin_connections \d+$/m);
    expect(comparable(m.body).length).toBeGreaterThan(5);
    // The connection gauge counts both listeners' connections: one is open during each scrape.
    expect(comparable(m.body)).toEqual(comparable(a.body));
  });

  it('serves /healthz and /readyz as the admin listener does (GET and HEAD)', async () => {
    for (const r of [true, false]) {
      ready = r;
      const a = await call(admin.address.port, 'GET', '/readyz');
      const m = await call(admin.metricsAddress!.port, 'GET', '/readyz');
      expect(m.status).toBe(r ? 200 : 503);
      expect([m.status, m.body]).toEqual([a.status, a.body]);
    }
    ready = true;
    expect((await call(admin.metricsAddress!.port, 'GET', '/healthz')).body).toBe('ok\n');
    expect((await call(admin.metricsAddress!.port, 'HEAD', '/healthz')).status).toBe(200);
    expect((await call(admin.metricsAddress!.port, 'GET', '/metrics?x=1')).status).toBe(200);
  });

  it.each([
    ['POST', '/v1/vips/web/backends/10.1.0.1/drain', '{}'],
    ['PUT', '/v1/overrides', '{}'],
    ['DELETE', '/v1/overrides', undefined],
    ['PATCH', '/v1/vips/web', '{}'],
    ['GET', '/v1/overrides', undefined],
  ])('refuses %s %s with 404, never reaching the write API', async (method, path, body) => {
    const before = apiCalls.length;
    const m = await call(admin.metricsAddress!.port, method, path, body);
    expect(m.status).toBe(404);
    expect(m.body).toContain(METRICS_LISTEN_PATHS.join(', '));
    expect(apiCalls).toHaveLength(before);
    // The same request on the admin listener does reach it: the refusal above is the listener's doing.
    expect((await call(admin.address.port, method, path, body)).status).toBe(200);
    expect(apiCalls).toHaveLength(before + 1);
  });

  it.each(['POST', 'PUT', 'DELETE', 'PATCH'])(
    'refuses %s on its own paths with 405 and Allow',
    async (method) => {
      for (const path of METRICS_LISTEN_PATHS) {
        const m = await call(admin.metricsAddress!.port, method, path, '{}');
        expect(m.status).toBe(405);
        expect(m.headers.allow).toBe('GET, HEAD');
      }
    },
  );

  it('does not serve /state or anything else', async () => {
    expect((await call(admin.address.port, 'GET', '/state')).status).toBe(200);
    for (const path of ['/state', '/', '/v1/state', '/metrics/../state', '/METRICS']) {
      const m = await call(admin.metricsAddress!.port, 'GET', path);
      expect(m.status).toBe(404);
      expect(m.body).not.toContain('state document');
    }
  });
});

describe('admin API metrics listener: start and stop', () => {
  const base = {
    host: '127.0.0.1',
    port: 0,
    readiness: () => ({ ready: true, reasons: [] }),
    state: async () => ({}),
    logger: silentLogger,
    fdLimit: 65536,
  };

  it('without metricsListen there is no second listener', async () => {
    const admin = await startAdmin({ ...base, registry: new Registry() });
    try {
      expect(admin.metricsAddress).toBeNull();
    } finally {
      await admin.stop();
    }
  });

  it('stop closes both listeners', async () => {
    const admin = await startAdmin({
      ...base,
      registry: new Registry(),
      metricsListen: { host: '127.0.0.1', port: 0 },
    });
    const port = admin.metricsAddress!.port;
    expect((await call(port, 'GET', '/healthz')).status).toBe(200);
    await admin.stop();
    expect((await call(port, 'GET', '/healthz')).status).toBe(0);
    expect((await call(admin.address.port, 'GET', '/healthz')).status).toBe(0);
  });

  it('a metrics port in use fails the start with MetricsListenError, and the admin port is closed again', async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    // The admin port is chosen by the test (free now) so it can check that it is released.
    const probe: Server = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const adminPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    try {
      const err = await startAdmin({
        ...base,
        port: adminPort,
        registry: new Registry(),
        metricsListen: { host: '127.0.0.1', port },
      }).then(
        (a) => a.stop().then(() => null),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(MetricsListenError);
      expect((err as MetricsListenError).code).toBe('EADDRINUSE');
      expect((await call(adminPort, 'GET', '/healthz')).status).toBe(0);
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});

describe('admin.metricsListen in the config', () => {
  it('is parsed to an address, absent by default', () => {
    const r = validateConfig({ interface: 'eth0', admin: { metricsListen: '0.0.0.0:9471' } });
    if (!r.ok) throw new Error(r.errors.map(formatIssue).join('; '));
    expect(r.config.admin.metricsListen).toEqual({ host: '0.0.0.0', port: 9471 });
    expect(r.config.admin.listen).toEqual({ host: '127.0.0.1', port: 9470 });
    const d = validateConfig({ interface: 'eth0' });
    expect(d.ok && d.config.admin.metricsListen).toBeUndefined();
    const v6 = validateConfig({ interface: 'eth0', admin: { metricsListen: '[::]:9471' } });
    expect(v6.ok && v6.config.admin.metricsListen).toEqual({ host: '::', port: 9471 });
  });

  it('refuses a malformed address, naming the field', () => {
    const r = validateConfig({ interface: 'eth0', admin: { metricsListen: '9471' } });
    expect(r.ok ? [] : r.errors.map(formatIssue)).toEqual([
      'admin.metricsListen: "9471" is not an address:port (e.g. 0.0.0.0:9471 or [::]:9471)',
    ]);
  });
});
