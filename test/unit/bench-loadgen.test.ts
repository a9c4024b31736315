// The load generator's persistent mode against a local HTTP server: connection turnover (requestsPerConnection)
// opens new connections without counting them as broken.
import { createServer, Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { checkLoadOptions, runLoad } from '../../scripts/bench/lib/loadgen';

describe('loadgen persistent mode', () => {
  let server: Server;
  let port: number;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    server = createServer((_req, res) => res.end('ok\nbe1\n'));
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const run = (requestsPerConnection?: number) =>
    runLoad({
      targets: [{ host: '127.0.0.1', port }],
      mode: 'persistent',
      connections: 2,
      maxRequests: 24,
      durationMs: 10_000,
      timeoutMs: 2000,
      requestsPerConnection,
    });

  it('closes a connection after requestsPerConnection responses and opens another, none broken', async () => {
    const r = await run(3);
    expect(r.ok).toBe(24);
    expect(r.brokenConnections).toBe(0);
    // 24 requests, 3 per connection: 8 connections (the run may open one more per worker as it ends).
    expect(r.connectionsOpened).toBeGreaterThanOrEqual(8);
    expect(r.connectionsOpened).toBeLessThanOrEqual(10);
  });

  it('keeps each connection for the whole run without it', async () => {
    const r = await run();
    expect(r.ok).toBe(24);
    expect(r.brokenConnections).toBe(0);
    expect(r.connectionsOpened).toBe(2);
  });

  it('rejects a requestsPerConnection that is not a positive integer', () => {
    const o = {
      targets: [{ host: '127.0.0.1', port: 1 }],
      mode: 'persistent' as const,
      connections: 1,
      durationMs: 1,
      maxRequests: 1,
      timeoutMs: 1,
    };
    expect(() => checkLoadOptions({ ...o, requestsPerConnection: 0 })).toThrow('requestsPerConnection=0');
    expect(() => checkLoadOptions({ ...o, requestsPerConnection: 1.5 })).toThrow('requestsPerConnection=1.5');
  });
});
