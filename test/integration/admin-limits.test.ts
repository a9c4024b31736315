// Admin API under connection floods on 127.0.0.1: the cap evicts idle connections so a fresh probe gets an
// answer, silent and slow connections time out, and under a low fd limit (prlimit) 300 idle connections
// neither starve the health checks nor, when the fds do run out, take a healthy backend down.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createServer as createHttpServer, get } from 'node:http';
import { AddressInfo, connect, createServer, Socket } from 'node:net';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { ADMIN_LIMITS, adminLimits, AdminServer, startAdmin } from '../../src/daemon/admin';
import { parseFdLimit, readFdLimit } from '../../src/daemon/fdlimit';
import { silentLogger } from '../../src/log';
import { sleep, waitUntil } from '../helpers/daemon-lab';
import { compileForChild, Runner } from '../helpers/k8s-process';

/** GET path on a fresh connection: status, body and elapsed ms; status 0 on error or after timeoutMs. */
function fetchOnce(
  port: number,
  path: string,
  timeoutMs = 2000,
): Promise<{ status: number; body: string; ms: number; error?: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: '', ms: performance.now() - t0, error: e.message }));
  });
}

/** Idle TCP connections (nothing sent) to 127.0.0.1:port, opened in batches; tracks which are still open. */
class IdleClients {
  readonly sockets: Socket[] = [];
  private closedCount = 0;

  async open(port: number, n: number, batch = 50): Promise<void> {
    for (let i = 0; i < n; i += batch) {
      const k = Math.min(batch, n - i);
      await Promise.all(
        Array.from(
          { length: k },
          () =>
            new Promise<void>((resolve) => {
              const s = connect({ host: '127.0.0.1', port });
              this.sockets.push(s);
              s.on('error', () => undefined);
              s.once('close', () => this.closedCount++);
              // Connected, or closed at once (evicted before the connect event is seen): either way done.
              s.once('connect', () => resolve());
              s.once('close', () => resolve());
            }),
        ),
      );
    }
  }

  get closed(): number {
    return this.closedCount;
  }

  get stillOpen(): number {
    return this.sockets.length - this.closedCount;
  }

  destroy(): void {
    for (const s of this.sockets) s.destroy();
  }
}

describe('admin limits: values and the fd-limit cap', () => {
  it('caps connections at a quarter of the soft fd limit, never above maxConnections', () => {
    expect(ADMIN_LIMITS).toEqual({
      maxConnections: 256,
      idleTimeoutMs: 5000,
      headersTimeoutMs: 10000,
      requestTimeoutMs: 15000,
      keepAliveTimeoutMs: 5000,
      stallTimeoutMs: 30000,
    });
    expect(adminLimits({}, 20000).maxConnections).toBe(256);
    expect(adminLimits({}, 1024).maxConnections).toBe(256);
    expect(adminLimits({}, 256).maxConnections).toBe(64);
    expect(adminLimits({}, 2).maxConnections).toBe(1);
    expect(adminLimits({}, null).maxConnections).toBe(256);
    expect(adminLimits({}, Infinity).maxConnections).toBe(256);
    expect(adminLimits({ maxConnections: 8 }, 1024).maxConnections).toBe(8);
    expect(() => adminLimits({ idleTimeoutMs: 0 }, null)).toThrow(
      'admin limits: idleTimeoutMs: 0 is not a positive integer',
    );
    expect(() => adminLimits({ headersTimeoutMs: 20000 }, null)).toThrow(
      'admin limits: headersTimeoutMs 20000 is more than requestTimeoutMs 15000',
    );
  });

  it('reads the soft and hard open-file limits from /proc/<pid>/limits', () => {
    const text = [
      'Limit                     Soft Limit           Hard Limit           Units     ',
      'Max cpu time              unlimited            unlimited            seconds   ',
      'Max open files            1024                 524288               files     ',
      'Max locked memory         8388608              8388608              bytes     ',
    ].join('\n');
    expect(parseFdLimit(text)).toEqual({ soft: 1024, hard: 524288 });
    expect(parseFdLimit('Max open files            unlimited            unlimited            files')).toEqual(
      {
        soft: Infinity,
        hard: Infinity,
      },
    );
    expect(parseFdLimit('nothing here')).toBeNull();
    const own = readFdLimit();
    expect(own).not.toBeNull();
    expect(own!.soft).toBeGreaterThan(0);
    expect(own!.soft).toBeLessThanOrEqual(own!.hard);
    expect(readFdLimit('/nonexistent/limits')).toBeNull();
  });
});

describe('admin API: connection cap and timeouts on 127.0.0.1', () => {
  let admin: AdminServer | null = null;
  let registry: Registry;
  const clients: IdleClients[] = [];
  const extra: Socket[] = [];
  /** /state answers only when the test calls these (a slow request in progress). */
  const pendingState: (() => void)[] = [];

  const start = async (limits: Parameters<typeof adminLimits>[0]): Promise<AdminServer> => {
    await admin?.stop();
    registry = new Registry();
    admin = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      registry,
      readiness: () => ({ ready: true, reasons: [] }),
      state: () => new Promise((resolve) => pendingState.push(() => resolve({ slow: true }))),
      logger: silentLogger,
      limits,
      fdLimit: null,
    });
    return admin;
  };
  const closedBy = async (reason: string): Promise<number> => {
    const m = await registry.getSingleMetric('peak_xdp_admin_connections_closed_total')!.get();
    return m.values.find((v) => v.labels.reason === reason)?.value ?? 0;
  };

  afterEach(async () => {
    for (const release of pendingState.splice(0)) release();
    for (const c of clients.splice(0)) c.destroy();
    for (const s of extra.splice(0)) s.destroy();
    await admin?.stop();
    admin = null;
  });

  it('300 idle connections against a cap of 32: at most 32 stay, a fresh /healthz answers at once, the rest close after the idle timeout', async () => {
    const a = await start({
      maxConnections: 32,
      idleTimeoutMs: 1500,
      headersTimeoutMs: 3000,
      requestTimeoutMs: 3000,
    });
    const idle = new IdleClients();
    clients.push(idle);
    await idle.open(a.address.port, 300);
    const opened = performance.now();
    expect(idle.sockets).toHaveLength(300);
    expect(a.connections()).toBeLessThanOrEqual(32);
    // The client sees the evictions a moment later.
    expect(await waitUntil(() => idle.stillOpen <= 32, { timeoutMs: 1000, intervalMs: 10 })).not.toBeNull();
    expect(await closedBy('evicted')).toBeGreaterThanOrEqual(268);

    const h = await fetchOnce(a.address.port, '/healthz');
    console.log(
      `/healthz with 300 idle connections open against a cap of 32: HTTP ${h.status} in ${h.ms.toFixed(1)} ms`,
    );
    expect(h).toMatchObject({ status: 200, body: 'ok\n' });

    // The survivors are still open before the idle timeout, and gone after it.
    await sleep(500);
    expect(idle.stillOpen).toBeGreaterThan(0);
    const gone = await waitUntil(() => idle.closed === 300, { timeoutMs: 4000, intervalMs: 20 });
    expect(gone).not.toBeNull();
    const afterMs = performance.now() - opened;
    console.log(
      `idle connections all closed ${afterMs.toFixed(0)} ms after the last was opened (idle timeout 1500 ms)`,
    );
    expect(afterMs).toBeGreaterThan(1400);
    expect(a.connections()).toBe(0);
    expect(await closedBy('timeout')).toBeGreaterThan(0);
  }, 20000);

  it('cuts off a client that trickles header bytes (slow headers) after headersTimeout', async () => {
    const a = await start({ idleTimeoutMs: 1000, headersTimeoutMs: 2000, requestTimeoutMs: 2000 });
    const s = connect({ host: '127.0.0.1', port: a.address.port });
    extra.push(s);
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    const t0 = performance.now();
    let closedAt: number | null = null;
    s.once('close', () => (closedAt = performance.now() - t0));
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    // A header line every 300 ms: never silent for the 1 s idle timeout; bounded to 30 writes (9 s).
    for (let i = 0; i < 30 && closedAt === null; i++) {
      await sleep(300);
      if (!s.destroyed) s.write(`X-Slow-${i}: y\r\n`);
    }
    console.log(
      `slow-header client closed after ${closedAt === null ? 'never' : (closedAt as number).toFixed(0)} ms`,
    );
    expect(closedAt).not.toBeNull();
    // headersTimeout 2 s, enforced every second.
    expect(closedAt!).toBeGreaterThan(1900);
    // Closed by the timeout, not by the end of the test (generous for busy cores).
    expect(closedAt!).toBeLessThan(15000);
  }, 20000);

  it('closes an idle keep-alive connection after keepAliveTimeout', async () => {
    const a = await start({ keepAliveTimeoutMs: 800 });
    const s = connect({ host: '127.0.0.1', port: a.address.port });
    extra.push(s);
    s.on('error', () => undefined);
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString()));
    await new Promise((r) => s.once('connect', r));
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await waitUntil(() => data.includes('ok\n'), { timeoutMs: 2000, intervalMs: 10 })).not.toBeNull();
    const t0 = performance.now();
    const closedIn = await waitUntil(() => s.destroyed || s.readableEnded, {
      timeoutMs: 4000,
      intervalMs: 20,
    });
    expect(closedIn).not.toBeNull();
    expect(performance.now() - t0).toBeGreaterThan(600);
  }, 10000);

  it('never evicts a connection with a request in progress; at the cap with every one busy, a new one is refused', async () => {
    const a = await start({ maxConnections: 2 });
    // Two slow /state requests hold both slots.
    const slow = [fetchOnce(a.address.port, '/state', 8000), fetchOnce(a.address.port, '/state', 8000)];
    expect(await waitUntil(() => a.connections() === 2, { timeoutMs: 2000, intervalMs: 10 })).not.toBeNull();
    await sleep(100);
    const refused = await fetchOnce(a.address.port, '/healthz', 2000);
    expect(refused.status).toBe(0);
    expect(await closedBy('refused')).toBe(1);
    expect(await closedBy('evicted')).toBe(0);
    // Both slow requests still get their answer (from one shared render: test/unit/admin-scrape.test.ts).
    expect(pendingState).toHaveLength(1);
    for (const release of pendingState.splice(0)) release();
    const done = await Promise.all(slow);
    expect(done.map((d) => d.status)).toEqual([200, 200]);
  }, 15000);
});

describe('fd pressure: admin floods and EMFILE do not take healthy backends down (child under prlimit)', () => {
  const FD_LIMIT = 256;
  let child: ChildProcessWithoutNullStreams | null = null;
  let runner: Runner;
  const idle = new IdleClients();

  // The checked backends: one accepts and closes (tcp check), one answers 200 (http check). They run here, not
  // in the child: a backend is another host, and its accept() must not share the child's fd limit.
  const tcpBackend = createServer((s) => s.destroy());
  const httpBackend = createHttpServer((_req, res) => res.end('ok'));

  beforeAll(async () => {
    await new Promise<void>((r) => tcpBackend.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => httpBackend.listen(0, '127.0.0.1', r));
    const main = compileForChild(join(__dirname, '..', 'helpers', 'fd-pressure-main.ts'));
    child = spawn('prlimit', [`--nofile=${FD_LIMIT}:${FD_LIMIT}`, process.execPath, main], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        FD_PRESSURE_TCP_PORT: String((tcpBackend.address() as AddressInfo).port),
        FD_PRESSURE_HTTP_PORT: String((httpBackend.address() as AddressInfo).port),
      },
    });
    runner = new Runner(child);
  });

  afterAll(async () => {
    idle.destroy();
    if (child && child.exitCode === null && child.signalCode === null) {
      child.stdin.write('stop\n');
      const ended = await waitUntil(() => child!.exitCode !== null || child!.signalCode !== null, {
        timeoutMs: 3000,
      });
      if (ended === null) child.kill('SIGKILL');
    }
    tcpBackend.close();
    httpBackend.closeAllConnections();
    httpBackend.close();
  });

  const command = async (cmd: string, ev: string): Promise<Record<string, unknown>> => {
    const from = runner.lines.length;
    child!.stdin.write(`${cmd}\n`);
    return runner.waitFor((l) => l.ev === ev, { from, what: ev, timeoutMs: 5000 });
  };

  it('300 idle admin connections stay under the cap, /healthz answers; fd exhaustion is counted, the backend stays up', async () => {
    const ready = await runner.waitFor((l) => l.ev === 'ready', { what: 'ready', timeoutMs: 15000 });
    console.log(`child: ${JSON.stringify(ready)}`);
    expect(ready.fdLimit).toBe(FD_LIMIT);
    expect(ready.maxConnections).toBe(FD_LIMIT / 4);
    const port = ready.adminPort as number;
    await sleep(500);
    const before = await command('status', 'status');
    expect(before).toMatchObject({ status: 'up', localErrors: 0 });
    expect(before.minChecks as number).toBeGreaterThan(2);

    // More idle connections than the child has fds left.
    await idle.open(port, 300);
    await sleep(500);
    const flooded = await command('status', 'status');
    console.log(`under 300 idle admin connections: ${JSON.stringify(flooded)}`);
    expect(flooded.adminConnections as number).toBeLessThanOrEqual(FD_LIMIT / 4);
    expect(flooded).toMatchObject({ status: 'up', failedChecks: 0, localErrors: 0, changes: [] });
    expect(flooded.checks as number).toBeGreaterThan(before.checks as number);
    const h = await fetchOnce(port, '/healthz');
    expect(h).toMatchObject({ status: 200, body: 'ok\n' });

    // Now every fd is gone (a leak elsewhere): checks cannot open sockets, and that is not the backend's fault.
    const hogged = await command('hog', 'hogged');
    expect(hogged.code).toBe('EMFILE');
    expect(hogged.n as number).toBeGreaterThan(10);
    // Checks run every 100 ms; wait (bounded) until each has met EMFILE a few times rather than a fixed time.
    let starved = await command('status', 'status');
    for (let i = 0; i < 50 && (starved.minLocalErrors as number) < 5; i++) {
      await sleep(200);
      starved = await command('status', 'status');
    }
    console.log(`with every fd taken: ${JSON.stringify(starved)}`);
    expect(starved).toMatchObject({ status: 'up', failedChecks: 0, changes: [], lastLocal: 'EMFILE' });
    // Both the tcp and the http check met EMFILE.
    expect(starved.minLocalErrors as number).toBeGreaterThanOrEqual(5);
    expect(starved.byReason).toEqual({ EMFILE: starved.localErrors });

    // Released: checks give verdicts again.
    await command('release', 'released');
    await sleep(500);
    const after = await command('status', 'status');
    expect(after).toMatchObject({ status: 'up', failedChecks: 0, changes: [] });
    expect(after.checks as number).toBeGreaterThan(starved.checks as number);
    expect((await fetchOnce(port, '/healthz')).status).toBe(200);
  }, 30000);
});
