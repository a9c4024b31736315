// The Kubernetes source's plain JSON requests (src/sources/kubernetes/http.ts) against the fake API server:
// lists with paging, merge-patched status, errors as ApiError with the HTTP status, auth headers from the
// kubeconfig layer on every request, connections kept alive across many writes, a server path prefix.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError, createRequester, RequestAuth } from '../../src/sources/kubernetes/http';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { service } from '../helpers/k8s-objects';

interface ListBody {
  metadata: { resourceVersion: string; continue?: string };
  items: { metadata: { name: string } }[];
}

const tokenAuth = (token: () => string) => async (): Promise<RequestAuth> => ({
  headers: { Authorization: `Bearer ${token()}` },
  tls: {},
});

describe('createRequester against the fake API server', () => {
  const api = new FakeApiServer();
  beforeAll(() => api.start());
  afterAll(() => api.stop());

  it('lists page by page with the continue token and sends the auth headers of each request', async () => {
    for (let i = 1; i <= 5; i++) api.upsert('services', service({ name: `s${i}` }));
    let n = 0;
    const r = createRequester({ server: api.url, auth: tokenAuth(() => `t${++n}`) });
    const names: string[] = [];
    let cont: string | undefined;
    for (let page = 0; page < 10; page++) {
      const body = await r.json<ListBody>({
        method: 'GET',
        path: '/api/v1/services',
        query: { limit: 2, continue: cont },
      });
      names.push(...body.items.map((o) => o.metadata.name));
      cont = body.metadata.continue;
      if (cont === undefined) break;
    }
    r.close();
    expect(names).toEqual(['s1', 's2', 's3', 's4', 's5']);
    const lists = api.requests.filter((q) => q.method === 'GET' && q.path === '/api/v1/services');
    // The first page has no continue parameter at all (undefined is left out), the later ones carry it.
    expect(lists.map((q) => 'continue' in q.query)).toEqual([false, true, true]);
    expect(lists.map((q) => q.query.limit)).toEqual(['2', '2', '2']);
    // Asked per request: a refreshed token is used by the next call.
    expect(lists.map((q) => q.authorization)).toEqual(['Bearer t1', 'Bearer t2', 'Bearer t3']);
  });

  it('merge-patches status as the server expects and returns the answer', async () => {
    api.upsert('services', service({ name: 'web', vip: '203.0.113.10' }));
    const r = createRequester({ server: api.url, auth: tokenAuth(() => 'x') });
    const res = await r.json<{ status: { loadBalancer: { ingress: { ip: string }[] } } }>({
      method: 'PATCH',
      path: '/api/v1/namespaces/default/services/web/status',
      contentType: 'application/merge-patch+json',
      body: { status: { loadBalancer: { ingress: [{ ip: '203.0.113.10', ipMode: 'VIP' }] } } },
    });
    r.close();
    expect(res.status.loadBalancer.ingress).toEqual([{ ip: '203.0.113.10', ipMode: 'VIP' }]);
    expect(api.get('services', 'default', 'web')?.status?.loadBalancer?.ingress).toEqual([
      { ip: '203.0.113.10', ipMode: 'VIP' },
    ]);
    const last = api.requests[api.requests.length - 1]!;
    expect(last.contentType).toBe('application/merge-patch+json');
  });

  it('rejects a non-2xx answer with an ApiError carrying the status and the server message', async () => {
    const r = createRequester({ server: api.url, auth: tokenAuth(() => 'x') });
    const err = await r.json({ method: 'GET', path: '/api/v1/nodes/nope' }).then(
      () => null,
      (e: unknown) => e,
    );
    const wrongType = await r
      .json({ method: 'PATCH', path: '/api/v1/namespaces/default/services/web/status', body: {} })
      .then(
        () => null,
        (e: unknown) => e,
      );
    r.close();
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe(404);
    expect((err as ApiError).message).toContain('nodes "nope" not found');
    // application/json is not a patch type the server takes.
    expect((wrongType as ApiError).code).toBe(415);
  });

  it('keeps connections alive: 200 status writes, 8 in flight, open at most 8 connections', async () => {
    for (let i = 0; i < 200; i++) api.upsert('services', service({ name: `k${i}` }));
    const before = api.connections;
    const r = createRequester({ server: api.url, auth: tokenAuth(() => 'x'), maxSockets: 8 });
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < 200) {
        const i = next++;
        await r.json({
          method: 'PATCH',
          path: `/api/v1/namespaces/default/services/k${i}/status`,
          contentType: 'application/merge-patch+json',
          body: { status: { loadBalancer: { ingress: [{ ip: `10.9.0.${i}` }] } } },
        });
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    const opened = api.connections - before;
    const counted = r.connections;
    r.close();
    console.log(`200 status writes opened ${opened} connection(s)`);
    expect(opened).toBeGreaterThanOrEqual(1);
    expect(opened).toBeLessThanOrEqual(8);
    expect(counted).toBe(opened);
    expect(api.get('services', 'default', 'k199')?.status?.loadBalancer?.ingress).toEqual([
      { ip: '10.9.0.199' },
    ]);
  });
});

describe('createRequester URL and failure handling', () => {
  let server: http.Server;
  let port = 0;
  const seen: string[] = [];
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push(req.url ?? '');
      if (req.url?.includes('silent')) return; // never answers
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(req.url?.includes('empty') ? '' : '{"ok":true}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('keeps a server path prefix, encodes the query and reads an empty body as undefined', async () => {
    const r = createRequester({ server: `http://127.0.0.1:${port}/k8s/c1/`, auth: tokenAuth(() => 'x') });
    expect(
      await r.json({
        method: 'GET',
        path: '/api/v1/services',
        query: { labelSelector: 'a=b c', x: undefined },
      }),
    ).toEqual({ ok: true });
    expect(await r.json({ method: 'GET', path: '/empty' })).toBeUndefined();
    r.close();
    expect(seen.slice(-2)).toEqual(['/k8s/c1/api/v1/services?labelSelector=a%3Db+c', '/k8s/c1/empty']);
  });

  it('fails a request left without an answer, naming it', async () => {
    const r = createRequester({
      server: `http://127.0.0.1:${port}`,
      auth: tokenAuth(() => 'x'),
      timeoutMs: 200,
    });
    await expect(r.json({ method: 'GET', path: '/silent' })).rejects.toThrow(
      'GET /silent: no answer in 200 ms',
    );
    r.close();
  });

  it('refuses a server that is not an http(s) URL, naming it', () => {
    expect(() => createRequester({ server: 'ftp://x', auth: tokenAuth(() => 'x') })).toThrow(
      'kubeconfig: server "ftp://x" is not http: or https:',
    );
    expect(() => createRequester({ server: 'not a url', auth: tokenAuth(() => 'x') })).toThrow(
      'kubeconfig: server "not a url" is not a URL',
    );
  });
});
