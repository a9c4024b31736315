// Health: the rise/fall state machine, TCP/HTTP checks and the monitor against real servers on 127.0.0.1.
import { createServer as createHttp, Server as HttpServer } from 'node:http';
import { AddressInfo, createServer as createTcp, Server, Socket } from 'node:net';
import {
  checkHttp,
  checkTcp,
  CheckResult,
  HealthChange,
  HealthMonitor,
  HealthState,
  HealthTarget,
  healthTargets,
  HttpCheckOptions,
  initialHealth,
  netProbeHttp,
  nextHealth,
  RAW_HTTP_PROBES,
  VipAvailability,
} from '../../src/health';
import { validateConfig } from '../../src/model';
import { desiredState } from '../../src/reconcile';
import { setTimeout as sleep } from 'node:timers/promises';
import { testPorts } from '../helpers/ports';

describe('nextHealth', () => {
  const t = { rise: 2, fall: 3 };
  const run = (start: HealthState, results: boolean[]) => {
    let s = start;
    const trace: string[] = [];
    for (const ok of results) {
      const n = nextHealth(s, ok, t);
      s = n.state;
      trace.push(`${s.status}${n.changed ? '!' : ''}`);
    }
    return trace;
  };

  it('goes down after exactly `fall` consecutive failures and up after exactly `rise` successes', () => {
    expect(run(initialHealth(), [false, false, false, true, true, true])).toEqual([
      'up',
      'up',
      'down!',
      'down',
      'up!',
      'up',
    ]);
  });

  it('restarts counting when a streak is broken', () => {
    expect(run(initialHealth(), [false, false, true, false, false, true])).toEqual([
      'up',
      'up',
      'up',
      'up',
      'up',
      'up',
    ]);
    expect(run(initialHealth('down'), [true, false, true, true])).toEqual(['down', 'down', 'down', 'up!']);
  });

  it('tracks consecutive counters for every input of every state (exhaustive over 6 results)', () => {
    for (let mask = 0; mask < 64; mask++) {
      const results = Array.from({ length: 6 }, (_, i) => ((mask >> i) & 1) === 1);
      for (const start of ['up', 'down'] as const) {
        let s = initialHealth(start);
        let succ = 0;
        let fail = 0;
        for (const ok of results) {
          const { state, changed } = nextHealth(s, ok, t);
          succ = ok ? succ + 1 : 0;
          fail = ok ? 0 : fail + 1;
          const expectStatus = s.status === 'up' ? (fail >= 3 ? 'down' : 'up') : succ >= 2 ? 'up' : 'down';
          expect(state).toEqual({ status: expectStatus, successes: succ, failures: fail });
          expect(changed).toBe(expectStatus !== s.status);
          s = state;
        }
      }
    }
  });
});

/** The HTTP check through net.Socket (what a host name uses; checkHttp to an IP address uses the raw handle). */
const netCheckHttp = (o: HttpCheckOptions): Promise<CheckResult> =>
  new Promise((resolve) => netProbeHttp(o, resolve));

describe('checks against real servers', () => {
  let http: HttpServer;
  let httpPort: number;
  let tcp: Server;
  let tcpPort: number;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    http = createHttp((req, res) => {
      if (req.url === '/ok') res.end('ok');
      else if (req.url === '/redirect') res.writeHead(302, { location: '/ok' }).end();
      else if (req.url === '/fail') res.writeHead(503).end();
      else if (req.url === '/hang')
        req.socket.setTimeout(0); // never answers
      else res.writeHead(404).end();
    });
    http.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    httpPort = (http.address() as AddressInfo).port;
    tcp = createTcp((s) => s.end());
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    tcpPort = (tcp.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => http.close(r));
    await new Promise((r) => tcp.close(r));
  });

  const closedPort = async (): Promise<number> => {
    const s = createTcp();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const p = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    return p;
  };

  it('tcp: healthy on connect, unhealthy when refused', async () => {
    expect(await checkTcp({ host: '127.0.0.1', port: tcpPort, timeoutMs: 1000 })).toMatchObject({
      ok: true,
      detail: 'connected',
    });
    expect(await checkTcp({ host: '127.0.0.1', port: await closedPort(), timeoutMs: 1000 })).toMatchObject({
      ok: false,
      detail: 'ECONNREFUSED',
    });
  });

  it('this Node has the raw handle for HTTP probes (else each costs net.Socket: see checks.ts)', () => {
    expect(RAW_HTTP_PROBES).toBe(true);
  });

  describe.each([
    ['raw handle', checkHttp],
    ['net.Socket', netCheckHttp],
  ] as const)('HTTP through the %s', (_name, check) => {
    it('http: 2xx and 3xx healthy; 4xx, 5xx, refused and timeouts unhealthy', async () => {
      const get = (path: string, timeoutMs = 1000) =>
        check({ host: '127.0.0.1', port: httpPort, path, timeoutMs });
      expect(await get('/ok')).toMatchObject({ ok: true, detail: 'HTTP 200' });
      expect(await get('/redirect')).toMatchObject({ ok: true, detail: 'HTTP 302' });
      expect(await get('/missing')).toMatchObject({ ok: false, detail: 'HTTP 404' });
      expect(await get('/fail')).toMatchObject({ ok: false, detail: 'HTTP 503' });
      const hung = await get('/hang', 150);
      expect(hung).toMatchObject({ ok: false, detail: 'timeout after 150 ms', timedOut: true });
      expect(hung.durationMs).toBeGreaterThanOrEqual(140);
      expect(
        await check({ host: '127.0.0.1', port: await closedPort(), path: '/', timeoutMs: 500 }),
      ).toMatchObject({ ok: false, detail: 'ECONNREFUSED' });
    });

    it('http: the request line and headers; the Host of an IPv6 address in brackets', async () => {
      const seen: string[] = [];
      const server = createTcp((s) => {
        let got = '';
        s.setEncoding('latin1');
        s.on('data', (c: string) => {
          got += c;
          if (!got.includes('\r\n\r\n')) return;
          seen.push(got);
          s.end('HTTP/1.1 204 No Content\r\n\r\n');
        });
      });
      await new Promise<void>((r) => server.listen(0, '::1', r));
      try {
        const port = (server.address() as AddressInfo).port;
        expect(await check({ host: '::1', port, path: '/healthz?x=1', timeoutMs: 1000 })).toMatchObject({
          ok: true,
          detail: 'HTTP 204',
        });
        expect(seen).toEqual([
          `GET /healthz?x=1 HTTP/1.1\r\nHost: [::1]:${port}\r\nUser-Agent: peak-xdp-health\r\nConnection: close\r\n\r\n`,
        ]);
      } finally {
        await new Promise((r) => server.close(r));
      }
    });

    it('http: a status line in pieces, interim 1xx responses, HTTP/1.0; garbage and an early close are unhealthy', async () => {
      // Each case: what the server writes, chunk by chunk (a turn apart), then whether it closes.
      const cases: [string, string[], boolean, Partial<CheckResult>][] = [
        ['byte by byte', [...'HTTP/1.1 200 OK\r\n'], false, { ok: true, detail: 'HTTP 200' }],
        ['1.0, no reason', ['HTTP/1.0 301\r\n\r\n'], true, { ok: true, detail: 'HTTP 301' }],
        [
          'interim, then final',
          ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 X\r\n'],
          false,
          { ok: false, detail: 'HTTP 500' },
        ],
        [
          'interim with a header, split',
          ['HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n', '\r\nHTTP/1.1 200 OK\r\n'],
          false,
          { ok: true, detail: 'HTTP 200' },
        ],
        ['not HTTP', ['SSH-2.0-OpenSSH_9.2\r\n'], false, { ok: false, detail: 'bad HTTP response' }],
        ['closed mid-line', ['HTTP/1.1 20'], true, { ok: false, detail: 'bad HTTP response' }],
        ['closed silently', [], true, { ok: false, detail: 'closed before a response' }],
        [
          'an endless first line',
          ['HTTP/1.1 200 ' + 'x'.repeat(5000)],
          false,
          { ok: false, detail: 'bad HTTP response' },
        ],
      ];
      for (const [name, chunks, close, want] of cases) {
        const server = createTcp((s) => {
          s.on('error', () => undefined);
          s.once('data', async () => {
            for (const c of chunks) {
              if (s.destroyed) return;
              s.write(c);
              await sleep(2);
            }
            if (close) s.end();
          });
        });
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
        try {
          const port = (server.address() as AddressInfo).port;
          const r = await check({ host: '127.0.0.1', port, path: '/', timeoutMs: 2000 });
          expect({ name, ...r }).toMatchObject({ name, ...want });
          expect(r.timedOut).toBeUndefined();
        } finally {
          server.close();
        }
      }
    });
  });

  it('rejects bad arguments naming the field', () => {
    expect(() => checkTcp({ host: '127.0.0.1', port: 0, timeoutMs: 1 })).toThrow('port: 0 is not a port');
    expect(() => checkTcp({ host: '', port: 1, timeoutMs: 1 })).toThrow('host: "" is not a host');
    expect(() => checkHttp({ host: '127.0.0.1', port: 1, path: 'x', timeoutMs: 1 })).toThrow(
      'path: "x" is not an absolute path',
    );
    expect(() => checkHttp({ host: '127.0.0.1', port: 1, path: '/a b', timeoutMs: 1 })).toThrow(
      'path: "/a b" is not an absolute path',
    );
    expect(() => checkHttp({ host: '127.0.0.1', port: 1, path: '/a\r\nX: y', timeoutMs: 1 })).toThrow(
      'is not an absolute path',
    );
    expect(() => checkTcp({ host: '127.0.0.1', port: 1, timeoutMs: 0 })).toThrow(
      'timeoutMs: 0 is not positive',
    );
  });
});

/** Resolves once `cond()` holds, polled every 5 ms; fails naming `what` after `ms` (no fixed sleep: CI machines are
 * loaded). */
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

describe('HealthMonitor', () => {
  const check = {
    type: 'http' as const,
    port: 0,
    path: '/ok',
    intervalMs: 100,
    timeoutMs: 80,
    rise: 2,
    fall: 2,
    downGraceSeconds: 30,
  };
  let monitor: HealthMonitor | null = null;
  /** Servers a test opened, closed after it also when it fails (an open one kept the jest worker from exiting). */
  const servers: { server: HttpServer; conns: Set<Socket> }[] = [];
  afterEach(async () => {
    monitor?.stop();
    for (const { server, conns } of servers.splice(0)) {
      for (const s of conns) s.destroy();
      if (server.listening) await new Promise((r) => server.close(r));
    }
  });

  const waitFor = <T>(em: HealthMonitor, event: string, pred: (x: T) => boolean, ms: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching ${event} within ${ms} ms`)), ms);
      const on = (x: T): void => {
        if (!pred(x)) return;
        clearTimeout(timer);
        em.off(event, on);
        resolve(x);
      };
      em.on(event, on);
    });

  it('takes a stopped server out within interval x fall and back in after rise, reporting the VIP', async () => {
    const server = createHttp((_req, res) => res.end('ok'));
    const conns = new Set<Socket>();
    server.on('connection', (s) => conns.add(s));
    servers.push({ server, conns });
    // A port below the ephemeral range: it is re-listened on after a close, and a probe's own ephemeral port
    // could otherwise be it (a TCP self-connect to a closed port).
    const port = testPorts(1);
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    monitor = new HealthMonitor();
    const vipEvents: VipAvailability[] = [];
    monitor.on('vip', (a: VipAvailability) => vipEvents.push(a));
    monitor.setTargets([{ key: 'k1', vip: 'web', address: '127.0.0.1', check: { ...check, port } }]);
    monitor.start();
    // Until two checks are done (a fixed 350 ms saw one on a loaded CI machine), then both must have passed.
    await until(() => (monitor!.snapshot()[0]?.checks ?? 0) >= 2, 'two checks');
    expect(monitor.snapshot()[0]).toMatchObject({ status: 'up', failedChecks: 0 });
    expect(monitor.snapshot()[0]!.checks).toBeGreaterThanOrEqual(2);

    for (const s of conns) s.destroy();
    await new Promise((r) => server.close(r));
    const stoppedAt = Date.now();
    // Failed checks since the stop, counted when the down arrives: it must be the fall-th (2). Counted, not
    // timed: a wall-clock deadline is the event loop's lateness on a loaded CI machine, not the rule.
    let failedSinceStop = 0;
    const onChecked = (c: { result: string }): void => {
      if (c.result === 'failure') failedSinceStop++;
    };
    monitor.on('checked', onChecked);
    const down = await waitFor<HealthChange>(monitor, 'change', (c) => c.to === 'down', 10_000);
    const failedAtDown = failedSinceStop;
    monitor.off('checked', onChecked);
    const tookDown = Date.now() - stoppedAt;
    expect(down).toMatchObject({ key: 'k1', vip: 'web', from: 'up', to: 'down' });
    expect(down.result.detail).toBe('ECONNREFUSED');
    console.log(`health: stopped server marked down after ${tookDown} ms, at failed check ${failedAtDown} (interval 100, fall 2)`); // prettier-ignore
    expect(failedAtDown).toBe(2);
    expect(monitor.statuses().get('k1')).toBe('down');
    expect(monitor.availability().get('web')).toEqual({ vip: 'web', up: 0, total: 1 });
    expect(vipEvents.at(-1)).toEqual({ vip: 'web', up: 0, total: 1 });

    const again = createHttp((_req, res) => res.end('ok'));
    servers.push({ server: again, conns: new Set() });
    await new Promise<void>((r) => again.listen(port, '127.0.0.1', r));
    try {
      const up = await waitFor<HealthChange>(monitor, 'change', (c) => c.to === 'up', 2000);
      expect(up.result.detail).toBe('HTTP 200');
      expect(vipEvents.at(-1)).toEqual({ vip: 'web', up: 1, total: 1 });
    } finally {
      monitor.stop();
      again.closeAllConnections();
      await new Promise((r) => again.close(r));
    }
  });

  it('keeps state for unchanged targets, restarts changed ones, drops removed ones and ignores their late results', async () => {
    const results = new Map<string, boolean>([
      ['a', false],
      ['b', false],
    ]);
    const pending: (() => void)[] = [];
    const checker = (t: HealthTarget): Promise<CheckResult> =>
      new Promise((resolve) =>
        pending.push(() => resolve({ ok: results.get(t.key)!, durationMs: 0, detail: 'x' })),
      );
    monitor = new HealthMonitor({ checker, jitter: 0, random: () => 0 });
    const fast = { ...check, port: 1, intervalMs: 100, fall: 1 };
    monitor.setTargets([
      { key: 'a', vip: 'v', address: '127.0.0.1', check: fast },
      { key: 'b', vip: 'v', address: '127.0.0.2', check: fast },
    ]);
    monitor.start();
    await until(() => pending.length >= 2, 'both first probes');
    expect(pending).toHaveLength(2);
    pending.splice(0).forEach((f) => f());
    await sleep(20);
    expect([...monitor.statuses()]).toEqual([
      ['a', 'down'],
      ['b', 'down'],
    ]);
    // Unchanged a keeps 'down'; b's check changes (fresh counters, status kept); c is new (initial down).
    monitor.setTargets([
      { key: 'a', vip: 'v', address: '127.0.0.1', check: fast },
      { key: 'b', vip: 'v', address: '127.0.0.2', check: { ...fast, rise: 5 } },
      { key: 'c', vip: 'w', address: '127.0.0.3', check: fast, initial: 'down' },
    ]);
    expect([...monitor.statuses()]).toEqual([
      ['a', 'down'],
      ['b', 'down'],
      ['c', 'down'],
    ]);
    expect(monitor.snapshot().find((s) => s.key === 'b')).toMatchObject({ failures: 0, checks: 1 });
    await until(() => pending.length >= 3, 'a probe of each target after the change');
    monitor.setTargets([]);
    let late = 0;
    monitor.on('change', () => late++);
    results.set('a', true).set('b', true).set('c', true);
    expect(pending.length).toBeGreaterThan(0);
    pending.splice(0).forEach((f) => f());
    await sleep(20);
    expect(monitor.snapshot()).toEqual([]);
    expect(late).toBe(0);
    expect(() =>
      monitor!.setTargets([
        { key: 'a', vip: 'v', address: '127.0.0.1', check: fast },
        { key: 'a', vip: 'v', address: '127.0.0.1', check: fast },
      ]),
    ).toThrow('targets: key "a" appears twice');
  });

  it('keeps per-VIP up counts in step with statuses and reports only zero crossings', async () => {
    // Each round every target gets the result the script says; fall 1 and rise 1 flip at once.
    const script: Record<string, boolean[]> = {
      a1: [true, false, false, true, true],
      a2: [true, false, true, false, true],
      b1: [false, false, true, true, false],
      b2: [true, true, true, false, false],
    };
    let round = 0;
    const pending: (() => void)[] = [];
    const checker = (t: HealthTarget): Promise<CheckResult> =>
      new Promise((resolve) =>
        pending.push(() => resolve({ ok: script[t.key]![round]!, durationMs: 0, detail: 'x' })),
      );
    monitor = new HealthMonitor({ checker, jitter: 0, random: () => 0 });
    const fast = { ...check, port: 1, intervalMs: 100, rise: 1, fall: 1 };
    const vipEvents: string[] = [];
    monitor.on('vip', (a: VipAvailability) => vipEvents.push(`${a.vip}:${a.up}/${a.total}`));
    monitor.setTargets(
      // Distinct addresses: each membership its own probe (equal targets would share one, and one result).
      Object.keys(script).map((key, i) => ({ key, vip: key[0]!, address: `127.0.0.${i + 1}`, check: fast })),
    );
    expect(vipEvents).toEqual(['a:2/2', 'b:2/2']);
    monitor.start();
    const counted = (): Map<string, VipAvailability> => {
      const out = new Map<string, VipAvailability>();
      for (const [key, status] of monitor!.statuses()) {
        const a = out.get(key[0]!) ?? { vip: key[0]!, up: 0, total: 0 };
        a.total++;
        if (status === 'up') a.up++;
        out.set(key[0]!, a);
      }
      return out;
    };
    for (round = 0; round < 5; round++) {
      for (let wait = 0; pending.length < 4 && wait < 100; wait++) await sleep(10);
      expect(pending).toHaveLength(4);
      pending.splice(0).forEach((f) => f());
      await sleep(5);
      expect(monitor.availability()).toEqual(counted());
    }
    // a: 2 -> 0 (round 1) -> 1 -> 1 -> 2; b: 2 -> 1 -> 1 -> 2 -> 1 -> 0 (round 4).
    expect(vipEvents).toEqual(['a:2/2', 'b:2/2', 'a:0/2', 'a:1/2', 'b:0/2']);
  });

  it('runs every target on its own cadence (one queue, one timer) and nothing after stop', async () => {
    const counts = new Map<string, number>();
    const checker = async (t: HealthTarget): Promise<CheckResult> => {
      counts.set(t.key, (counts.get(t.key) ?? 0) + 1);
      return { ok: true, durationMs: 0, detail: 'x' };
    };
    monitor = new HealthMonitor({ checker, jitter: 0.1 });
    const intervals = [30, 60, 120];
    monitor.setTargets(
      Array.from({ length: 30 }, (_, i) => ({
        key: `k${i}`,
        vip: 'v',
        // Distinct addresses: each target its own probe (equal ones would share one at the shortest interval).
        address: `127.0.0.${i + 1}`,
        check: { ...check, port: 1, intervalMs: intervals[i % 3]!, timeoutMs: 10 },
      })),
    );
    monitor.start();
    await sleep(600);
    monitor.stop();
    const stopped = new Map(counts);
    await sleep(150);
    expect(counts).toEqual(stopped);
    const mean = (interval: number): number => {
      const keys = [...Array(30).keys()].filter((i) => intervals[i % 3] === interval).map((i) => `k${i}`);
      expect(keys.every((k) => (counts.get(k) ?? 0) >= 1)).toBe(true);
      return keys.reduce((n, k) => n + counts.get(k)!, 0) / keys.length;
    };
    // Every target ran repeatedly, the 30 ms ones about 4 times as often as the 120 ms ones.
    expect(mean(30)).toBeGreaterThan(2 * mean(120));
    expect(mean(60)).toBeGreaterThan(mean(120));
  });

  it('derives one target per checked backend membership from desired state', () => {
    const r = validateConfig({
      interface: 'eth0',
      vips: [
        {
          name: 'checked',
          address: '10.0.0.1',
          port: 80,
          healthCheck: { type: 'http' },
          backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }],
        },
        { name: 'unchecked', address: '10.0.0.2', port: 80, backends: [{ address: '10.1.0.3' }] },
      ],
    });
    if (!r.ok) throw new Error('config');
    const targets = healthTargets(
      desiredState({ config: r.config }),
      new Map([['10.0.0.1:80/tcp>10.1.0.2', 'down']]),
    );
    expect(targets.map((t) => [t.key, t.vip, t.check.port, t.initial])).toEqual([
      ['10.0.0.1:80/tcp>10.1.0.1', 'checked', 80, undefined],
      ['10.0.0.1:80/tcp>10.1.0.2', 'checked', 80, 'down'],
    ]);
  });

  it('reports when each status flipped; desiredState keeps a backend that flaps within the grace draining, then up', async () => {
    const T0 = 1_700_000_000_000;
    let now = T0;
    const ok = new Map([
      ['10.0.0.1:80/tcp>10.1.0.1', true],
      ['10.0.0.1:80/tcp>10.1.0.2', false],
    ]);
    const checker = async (t: HealthTarget): Promise<CheckResult> => ({
      ok: ok.get(t.key)!,
      durationMs: 0,
      detail: 'x',
    });
    monitor = new HealthMonitor({ checker, jitter: 0, random: () => 0, clock: () => now });
    const r = validateConfig({
      interface: 'eth0',
      vips: [
        {
          name: 'web',
          address: '10.0.0.1',
          port: 80,
          healthCheck: {
            type: 'tcp',
            intervalMs: 100,
            timeoutMs: 50,
            rise: 1,
            fall: 1,
            downGraceSeconds: 10,
          },
          backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }],
          // Both down at once means down here (fail-open: test/unit/reconcile-fail-open.test.ts).
          failOpen: false,
        },
      ],
    });
    if (!r.ok) throw new Error('config');
    const [k1, k2] = ['10.0.0.1:80/tcp>10.1.0.1', '10.0.0.1:80/tcp>10.1.0.2'];
    // k2 starts down (a restart's seed): no flip seen, so no time; it stays down throughout.
    monitor.setTargets(healthTargets(desiredState({ config: r.config }), new Map([[k2, 'down']])));
    const states = () =>
      desiredState({
        config: r.config,
        health: monitor!.statuses(),
        healthSince: monitor!.since(),
        now,
      }).vips[0]!.backends.map((b) => b.state);
    expect(new Map(monitor.since())).toEqual(new Map());
    expect(states()).toEqual(['up', 'down']);
    monitor.start();

    now = T0 + 500;
    ok.set(k1, false);
    await waitFor<HealthChange>(monitor, 'change', (c) => c.key === k1 && c.to === 'down', 2000);
    expect(new Map(monitor.since())).toEqual(new Map([[k1, T0 + 500]]));
    expect(monitor.snapshot().find((t) => t.key === k1)).toMatchObject({ status: 'down', since: T0 + 500 });
    now = T0 + 3000;
    expect(states()).toEqual(['draining', 'down']);
    // Re-set with the same check: the time is kept.
    monitor.setTargets(healthTargets(desiredState({ config: r.config })));
    expect(monitor.since().get(k1)).toBe(T0 + 500);

    now = T0 + 5000;
    ok.set(k1, true);
    await waitFor<HealthChange>(monitor, 'change', (c) => c.key === k1 && c.to === 'up', 2000);
    expect(monitor.since().get(k1)).toBe(T0 + 5000);
    expect(states()).toEqual(['up', 'down']);

    // Down again and never back: draining within the 10 s grace, down after it.
    now = T0 + 6000;
    ok.set(k1, false);
    await waitFor<HealthChange>(monitor, 'change', (c) => c.key === k1 && c.to === 'down', 2000);
    now = T0 + 15_999;
    expect(states()).toEqual(['draining', 'down']);
    now = T0 + 16_000;
    expect(states()).toEqual(['down', 'down']);
  });
});
