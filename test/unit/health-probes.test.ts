// Shared probing: memberships that check the same target share one probe whose results fan out to each
// membership's own rise/fall state; the cadence counts from starts; in-flight cap; stop aborts in flight;
// TCP probes on the prober thread and on the raw handle give what net.Socket gives.
import { createServer, Server } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import {
  checkHttp,
  checkTcp,
  CheckResult,
  defaultMaxInFlight,
  FD_RESERVE,
  HealthChange,
  HealthMonitor,
  HealthTarget,
  jittered,
  MAX_IN_FLIGHT,
  netProbeHttp,
  netProbeTcp,
  probeHttp,
  probeCheck,
  probeKey,
  probeTcp,
  RAW_HTTP_PROBES,
  RAW_TCP_PROBES,
  setTcpProbeThread,
  takesResult,
  ThreadProbes,
  tcpProbePath,
} from '../../src/health';
import { spawn, type ChildProcess } from 'node:child_process';
import { signalPid } from '../../scripts/lib/pids';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect as connectTcp, createServer as createTcp } from 'node:net';
import { DEFAULTS, HealthCheckConfig } from '../../src/model';
import { DueLanes } from '../../src/health/due-queue';

const base: HealthCheckConfig = { ...DEFAULTS.healthCheck, type: 'tcp', port: 80, intervalMs: 100, timeoutMs: 50, rise: 1, fall: 2 }; // prettier-ignore
const target = (key: string, address: string, check: Partial<HealthCheckConfig> = {}, vip = key.split('>')[0]!): HealthTarget => ({
  key,
  vip,
  address,
  check: { ...base, ...check },
}); // prettier-ignore

describe('probe grouping (pure)', () => {
  it('one probe per (type, address, port, http path, timeout); interval, rise and fall do not split', () => {
    // Memberships by probe key, in order, each group with the check its probe runs.
    const byKey = (ts: HealthTarget[]) => {
      const groups = new Map<string, HealthTarget[]>();
      for (const t of ts) {
        const k = probeKey(t.address, t.check);
        groups.set(k, [...(groups.get(k) ?? []), t]);
      }
      return new Map(
        [...groups].map(([k, members]) => [k, { members, check: probeCheck(members, (t) => t.check) }]),
      );
    };
    const g = byKey([
      target('a>1', '10.0.0.1'),
      target('b>1', '10.0.0.1', { intervalMs: 50, rise: 5, fall: 9 }),
      target('c>1', '10.0.0.1', { path: '/other' }), // tcp: the path is not part of the probe
      target('d>1', '10.0.0.1', { port: 81 }),
      target('e>1', '10.0.0.1', { timeoutMs: 60 }),
      target('f>1', '10.0.0.1', { type: 'http', path: '/a' }),
      target('g>1', '10.0.0.1', { type: 'http', path: '/b' }),
      target('h>2', '10.0.0.2'),
    ]);
    expect([...g.values()].map((p) => [p.members[0]!.address, p.check.port, p.check.intervalMs, p.members.map((m) => m.key)])).toEqual([
      ['10.0.0.1', 80, 50, ['a>1', 'b>1', 'c>1']],
      ['10.0.0.1', 81, 100, ['d>1']],
      ['10.0.0.1', 80, 100, ['e>1']],
      ['10.0.0.1', 80, 100, ['f>1']],
      ['10.0.0.1', 80, 100, ['g>1']],
      ['10.0.0.2', 80, 100, ['h>2']],
    ]); // prettier-ignore
    // The first membership stands for the probe; the shortest interval is the probe's.
    expect(g.get(probeKey('10.0.0.1', base))!.check).toEqual({ ...base, intervalMs: 50 });
    expect(probeKey('10.0.0.1', { ...base, type: 'http', path: '/x' })).toBe('http 80 /x 50 10.0.0.1');
  });

  it('a membership takes a result once its own interval (less jitter) has passed since the last it took', () => {
    const cases: [number, number, number, number, boolean][] = [
      // fedAt, startedAt, interval, jitter, takes
      [-Infinity, 0, 2000, 0.1, true],
      [0, 1800, 2000, 0.1, true], // the earliest a jittered 2 s probe comes back
      [0, 1798, 2000, 0.1, false],
      [0, 2000, 10_000, 0.1, false], // a 10 s membership on a 2 s probe
      [0, 8999, 10_000, 0.1, true],
      [0, 8998, 10_000, 0.1, false],
      [0, 100, 100, 0, true],
    ];
    for (const [fedAt, startedAt, interval, jitter, takes] of cases)
      expect([fedAt, startedAt, interval, jitter, takesResult(fedAt, startedAt, interval, jitter)]).toEqual([
        fedAt,
        startedAt,
        interval,
        jitter,
        takes,
      ]);
  });

  it('default in-flight cap: the open-file limit less FD_RESERVE or 1/16 of it, within [64, MAX_IN_FLIGHT]', () => {
    expect(defaultMaxInFlight(null)).toBe(MAX_IN_FLIGHT);
    expect(defaultMaxInFlight(Infinity)).toBe(MAX_IN_FLIGHT);
    expect(defaultMaxInFlight(20_000)).toBe(20_000 - 1250);
    expect(defaultMaxInFlight(8192)).toBe(8192 - FD_RESERVE);
    expect(defaultMaxInFlight(1024)).toBe(64);
    expect(defaultMaxInFlight(1100)).toBe(76);
    expect(defaultMaxInFlight(1 << 20)).toBe(MAX_IN_FLIGHT);
    expect(jittered(1000, 0.1, 0)).toBe(900);
    expect(jittered(1000, 0.1, 0.5)).toBe(1000);
    expect(jittered(1000, 0, 0.99)).toBe(1000);
  });

  it('rejects a bad cap naming the field', () => {
    expect(() => new HealthMonitor({ maxInFlight: 0 })).toThrow('maxInFlight: 0 is not a positive integer');
    expect(() => new HealthMonitor({ startsPerTurn: 1.5 })).toThrow(
      'startsPerTurn: 1.5 is not a positive integer',
    );
  });
});

describe('HealthMonitor with shared probes (fake clock)', () => {
  let monitor: HealthMonitor | null = null;
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => {
    monitor?.stop();
    jest.useRealTimers();
  });

  /** A checker whose probes resolve when told (or on abort); records each start. */
  function manual() {
    const running: { t: HealthTarget; at: number; resolve: (r: CheckResult) => void; signal: AbortSignal }[] =
      [];
    const starts: { address: string; at: number }[] = [];
    const checker = (t: HealthTarget, signal: AbortSignal): Promise<CheckResult> =>
      new Promise((resolve) => {
        const at = performance.now();
        starts.push({ address: t.address, at });
        const entry = { t, at, resolve, signal };
        running.push(entry);
        signal.addEventListener('abort', () =>
          resolve({ ok: false, durationMs: 0, detail: 'aborted', local: true }),
        );
      });
    const settle = (pred: (e: (typeof running)[number]) => boolean, ok: boolean): number => {
      let n = 0;
      for (let i = running.length - 1; i >= 0; i--)
        if (pred(running[i]!)) {
          running[i]!.resolve({ ok, durationMs: 1, detail: ok ? 'connected' : 'ECONNREFUSED' });
          running.splice(i, 1);
          n++;
        }
      return n;
    };
    return { checker, running, starts, settle };
  }

  it('512 VIPs on one backend: one probe per round, every membership flips with it', async () => {
    const results = { ok: true };
    let probes = 0;
    monitor = new HealthMonitor({
      jitter: 0,
      random: () => 0,
      checker: async () => (probes++, { ok: results.ok, durationMs: 1, detail: results.ok ? 'connected' : 'ECONNREFUSED' }),
    }); // prettier-ignore
    const targets = Array.from({ length: 512 }, (_, v) => target(`v${v}>10.1.0.1`, '10.1.0.1'));
    monitor.setTargets(targets);
    const changes: HealthChange[] = [];
    const vipDown: string[] = [];
    monitor.on('change', (c: HealthChange) => changes.push(c));
    monitor.on('vip', (a: { vip: string; up: number }) => a.up === 0 && vipDown.push(a.vip));
    monitor.start();
    await jest.advanceTimersByTimeAsync(950);
    expect(probes).toBe(10); // every 100 ms from 0: not 5,120
    expect(monitor.stats()).toMatchObject({ probes: 1, memberships: 512 });
    expect(monitor.snapshot().every((s) => s.checks === 10 && s.status === 'up')).toBe(true);
    results.ok = false;
    await jest.advanceTimersByTimeAsync(200);
    expect(changes).toHaveLength(512);
    expect(new Set(changes.map((c) => c.key))).toEqual(new Set(targets.map((t) => t.key)));
    expect(changes.every((c) => c.to === 'down' && c.result.detail === 'ECONNREFUSED')).toBe(true);
    expect(vipDown).toHaveLength(512);
    expect([...monitor.statuses().values()].every((s) => s === 'down')).toBe(true);
  });

  it('memberships with longer intervals take every n-th result of the shared probe and keep their rise/fall x interval', async () => {
    const ok = { v: true };
    monitor = new HealthMonitor({
      jitter: 0,
      random: () => 0,
      checker: async () => ({ ok: ok.v, durationMs: 1, detail: 'x' }),
    });
    monitor.setTargets([
      target('fast>1', '10.1.0.1', { intervalMs: 100, fall: 2 }),
      target('slow>1', '10.1.0.1', { intervalMs: 400, fall: 2 }),
    ]);
    const downAt = new Map<string, number>();
    monitor.on('change', (c: HealthChange) => downAt.set(c.key, performance.now()));
    monitor.start();
    const t0 = performance.now();
    await jest.advanceTimersByTimeAsync(1150);
    const snap = new Map(monitor.snapshot().map((s) => [s.key, s]));
    expect(snap.get('fast>1')!.checks).toBe(12); // 0, 100, ..., 1100
    expect(snap.get('slow>1')!.checks).toBe(3); // 0, 400, 800
    ok.v = false;
    // The probe at 1200 fails: fast goes down at its 2nd failure (1300), slow at its 2nd taken one (1200, 1600).
    await jest.advanceTimersByTimeAsync(600);
    expect(downAt.get('fast>1')! - t0).toBe(1300);
    expect(downAt.get('slow>1')! - t0).toBe(1600);
  });

  it('a probe slower than its interval keeps its cadence from its starts; a hanging target delays no other', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, checker: m.checker });
    monitor.setTargets([target('a>slow', '10.1.0.1', { intervalMs: 200 }), target('a>fast', '10.1.0.2', { intervalMs: 200 })]); // prettier-ignore
    monitor.start();
    for (let step = 0; step < 10; step++) {
      await jest.advanceTimersByTimeAsync(10);
      m.settle((e) => e.t.address === '10.1.0.2', true); // answers at once
      await jest.advanceTimersByTimeAsync(140);
      m.settle((e) => e.t.address === '10.1.0.1', false); // answers after 150 ms (a timeout)
      await jest.advanceTimersByTimeAsync(50);
    }
    const startsOf = (a: string) =>
      m.starts.filter((s) => s.address === a).map((s) => s.at - m.starts[0]!.at);
    // 0, 200, ..., 2000: each start 200 ms after the last, though the slow one took 150 ms of each 200.
    const expected = Array.from({ length: 11 }, (_, i) => 200 * i);
    expect(startsOf('10.1.0.1')).toEqual(expected);
    expect(startsOf('10.1.0.2')).toEqual(expected);
  });

  it('at most maxInFlight probes run; due ones wait and start earliest first as others finish', async () => {
    const m = manual();
    let r = 0;
    // Phases 0, 1/20, 2/20, ... of the interval: target i is due at 5 i ms.
    monitor = new HealthMonitor({
      jitter: 0,
      random: () => (r++ % 20) / 20,
      checker: m.checker,
      maxInFlight: 5,
    });
    monitor.setTargets(Array.from({ length: 20 }, (_, i) => target(`v>${i}`, `10.2.0.${i + 1}`)));
    monitor.start();
    await jest.advanceTimersByTimeAsync(99);
    expect(m.running).toHaveLength(5);
    expect(m.starts.map((s) => s.address)).toEqual([
      '10.2.0.1',
      '10.2.0.2',
      '10.2.0.3',
      '10.2.0.4',
      '10.2.0.5',
    ]);
    expect(monitor.stats()).toMatchObject({ inFlight: 5, maxInFlight: 5 });
    // Two finish: the two that were due earliest among the waiting start at once.
    m.settle((e) => e.t.address === '10.2.0.1' || e.t.address === '10.2.0.2', true);
    await jest.advanceTimersByTimeAsync(0);
    expect(m.running).toHaveLength(5);
    expect(m.starts.slice(5).map((s) => s.address)).toEqual(['10.2.0.6', '10.2.0.7']);
    const s = monitor.stats();
    expect(s.delayed).toBeGreaterThan(0);
    expect(s.maxLatenessMs).toBeGreaterThanOrEqual(99 - 35);
  });

  it('stop aborts every probe in flight and idle() resolves; nothing runs after', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, checker: m.checker });
    monitor.setTargets(Array.from({ length: 50 }, (_, i) => target(`v>${i}`, `10.3.0.${i + 1}`)));
    monitor.start();
    await jest.advanceTimersByTimeAsync(1);
    expect(m.running).toHaveLength(50);
    let changes = 0;
    monitor.on('change', () => changes++);
    monitor.stop();
    expect(m.running.every((e) => e.signal.aborted)).toBe(true);
    await monitor.idle();
    expect(monitor.stats().inFlight).toBe(0);
    await jest.advanceTimersByTimeAsync(1000);
    expect(m.starts).toHaveLength(50);
    expect(changes).toBe(0);
  });

  it("removing a target aborts its probe; a membership joining a probe with results takes its sibling's state", async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, checker: m.checker });
    monitor.setTargets([target('a>1', '10.4.0.1'), target('a>2', '10.4.0.2')]);
    monitor.start();
    for (let i = 0; i < 2; i++) {
      await jest.advanceTimersByTimeAsync(1);
      m.settle((e) => e.t.address === '10.4.0.1', false);
      await jest.advanceTimersByTimeAsync(99);
    }
    expect(monitor.statuses().get('a>1')).toBe('down');
    await jest.advanceTimersByTimeAsync(1);
    const stillRunning = m.running.find((e) => e.t.address === '10.4.0.2')!;
    // b joins 10.4.0.1 (known down) with the same check; 10.4.0.2 goes away.
    monitor.setTargets([target('a>1', '10.4.0.1'), target('b>1', '10.4.0.1')]);
    expect(stillRunning.signal.aborted).toBe(true);
    expect(new Map(monitor.statuses())).toEqual(new Map([['a>1', 'down'], ['b>1', 'down']])); // prettier-ignore
    expect(monitor.stats()).toMatchObject({ probes: 1, memberships: 2 });
    // A new membership with a different check is its own: initial status, fresh streaks.
    monitor.setTargets([target('a>1', '10.4.0.1'), target('c>1', '10.4.0.1', { rise: 3 })]);
    expect(monitor.statuses().get('c>1')).toBe('up');
  });
});

describe('checks abort', () => {
  let server: Server;
  let port: number;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    server = createServer(() => undefined); // never answers
    server.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('an aborted check resolves at once as a local "aborted" and closes its socket', async () => {
    const ac = new AbortController();
    const pending = checkHttp({ host: '127.0.0.1', port, path: '/', timeoutMs: 10_000, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 50));
    expect(sockets.size).toBeGreaterThan(0);
    const closed = new Promise((r) => [...sockets].at(-1)!.once('close', r));
    ac.abort();
    expect(await pending).toMatchObject({ ok: false, detail: 'aborted', local: true });
    await closed;
    const done = new AbortController();
    done.abort();
    expect(await checkTcp({ host: '127.0.0.1', port, timeoutMs: 10_000, signal: done.signal })).toMatchObject(
      {
        ok: false,
        detail: 'aborted',
        local: true,
      },
    );
  });
});

/**
 * Ends of TCP connections to the local `port` open in this process, from /proc/net/tcp and tcp6 by socket inode:
 * `client` ends, whose remote port is `port`, and `server` ends, whose local port is (its listener aside). A closed
 * socket left in the kernel (TIME_WAIT) has no inode and is not counted. Not a count of every fd: a jest worker opens
 * and closes files of its own meanwhile (counts of them all were off by 8-9 in some runs, either way).
 */
function tcpEnds(port: number): { client: number; server: number } {
  const inodes = new Set<string>();
  for (const f of readdirSync('/proc/self/fd')) {
    let link = '';
    try {
      link = readlinkSync(`/proc/self/fd/${f}`);
    } catch {
      continue; // closed meanwhile
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  const out = { client: 0, server: 0 };
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6'])
    for (const row of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const c = row.trim().split(/\s+/);
      if (c.length <= 9 || !inodes.has(c[9]!) || c[3] === '0A') continue; // 0A: LISTEN
      const portOf = (endpoint: string) => parseInt(endpoint.split(':').pop()!, 16);
      if (portOf(c[2]!) === port) out.client++;
      else if (portOf(c[1]!) === port) out.server++;
    }
  return out;
}

/** Waits (`ms` at most) until no end of a connection to `port` is open in this process but `clients` client ends
 * the test keeps (0 unless said), then says so. */
async function closedWithin(port: number, ms: number, clients = 0): Promise<void> {
  const until = Date.now() + ms;
  const open = () => {
    const e = tcpEnds(port);
    return e.client + e.server > clients;
  };
  while (open() && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  expect(tcpEnds(port)).toEqual({ client: clients, server: 0 });
}

/** A TCP listener on 127.0.0.1 (each connection to `onConnection`) and its port. */
async function listenTcp(onConnection: (c: Socket) => void): Promise<[ReturnType<typeof createTcp>, number]> {
  const server = createTcp(onConnection);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return [server, (server.address() as AddressInfo).port];
}

/** A port of 127.0.0.1 that nothing listens on (one just closed). */
async function closedTcpPort(): Promise<number> {
  const [gone, port] = await listenTcp(() => undefined);
  await new Promise((r) => gone.close(r));
  return port;
}

describe('TCP probes on the raw handle agree with net.Socket', () => {
  let tcp: ReturnType<typeof createTcp>;
  let port: number;
  let closedPort: number;
  let accepted = 0;
  beforeAll(async () => {
    setTcpProbeThread(false); // the event loop's raw handles (the prober thread's own tests follow)
    expect(tcpProbePath()).toBe('loop');
    [tcp, port] = await listenTcp((c) => (accepted++, c.end()));
    closedPort = await closedTcpPort();
  });
  afterAll(async () => {
    setTcpProbeThread(true);
    await new Promise((r) => tcp.close(r));
  });

  const run = (probe: typeof probeTcp, p: number): Promise<CheckResult> =>
    new Promise((resolve) => probe({ host: '127.0.0.1', port: p, timeoutMs: 5000 }, resolve));
  it('this Node has the raw handle (else every TCP probe costs net.Socket: see checks.ts)', () => {
    expect(RAW_TCP_PROBES).toBe(true);
  });

  it('connected, refused, and a name (net.Socket) alike; no fd left open', async () => {
    const accepted0 = accepted;
    const raw = [await run(probeTcp, port), await run(probeTcp, closedPort)];
    const net = [await run(netProbeTcp, port), await run(netProbeTcp, closedPort)];
    const pick = (r: CheckResult) => [r.ok, r.detail, r.local ?? false];
    expect(raw.map(pick)).toEqual([[true, 'connected', false], [false, 'ECONNREFUSED', false]]); // prettier-ignore
    expect(net.map(pick)).toEqual(raw.map(pick));
    const named = await new Promise<CheckResult>((r) =>
      probeTcp({ host: 'localhost', port, timeoutMs: 5000 }, r),
    );
    expect(named.detail === 'connected' || named.detail === 'ECONNREFUSED').toBe(true); // ::1 may not listen
    // every end closed (the server's once it has ended them, net.Socket's on a later turn than its verdict)
    await closedWithin(port, 5000);
    expect(tcpEnds(closedPort)).toEqual({ client: 0, server: 0 });
    expect(accepted - accepted0).toBeGreaterThanOrEqual(2); // the raw and the net.Socket connection
  });

  it('cancel closes the socket at once and reports "aborted" from cancel, once', async () => {
    const results: CheckResult[] = [];
    const cancels = Array.from({ length: 200 }, () =>
      probeTcp({ host: '127.0.0.1', port, timeoutMs: 5000 }, (r) => results.push(r)),
    );
    expect(tcpEnds(port).client).toBe(200); // each connecting, or connected
    for (const c of cancels) c();
    expect(tcpEnds(port).client).toBe(0);
    expect(results).toHaveLength(200);
    expect(results.every((r) => r.detail === 'aborted' && r.local === true && !r.ok)).toBe(true);
    for (const c of cancels) c(); // again: nothing more
    await new Promise((r) => setTimeout(r, 50));
    expect(results).toHaveLength(200);
  });

  it('rejects bad arguments naming the field, before opening anything', () => {
    expect(() => probeTcp({ host: '127.0.0.1', port: 0, timeoutMs: 10 }, () => undefined)).toThrow(
      'port: 0 is not a port',
    );
    expect(() => probeTcp({ host: '', port: 80, timeoutMs: 10 }, () => undefined)).toThrow(
      'host: "" is not a host',
    );
    expect(() => probeTcp({ host: '127.0.0.1', port: 80, timeoutMs: 0 }, () => undefined)).toThrow(
      'timeoutMs: 0 is not positive',
    );
  });
});

/** A child's script: listens (backlog 1), prints its port, then blocks its thread for 60 s and exits. It blocks in the
 * same callback (a pipe's write is synchronous): with a turn of its event loop between, it accepted the first
 * connections made to it. */
const LISTEN_NEVER_ACCEPT = `
const s = require('net').createServer();
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  console.log(s.address().port);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
  process.exit(0);
});`;

describe('TCP probes on the prober thread (the addon)', () => {
  let tcp: ReturnType<typeof createTcp>;
  let port: number;
  let closedPort: number;
  /** A listener that never accepts (its process's thread blocked, for 60 s at most) with its queue full: a SYN to it is
   * dropped. */
  let listener: ChildProcess | null = null;
  let dropPort = 0;
  const fillers: Socket[] = [];
  beforeAll(async () => {
    [tcp, port] = await listenTcp((c) => c.end());
    closedPort = await closedTcpPort();
    const child = (listener = spawn(process.execPath, ['-e', LISTEN_NEVER_ACCEPT], { stdio: ['ignore', 'pipe', 'inherit'] })); // prettier-ignore
    dropPort = Number(
      await new Promise<string>((r) => child.stdout!.once('data', (d) => r(String(d).trim()))),
    );
    // backlog 1 holds two connections: once both are made, every later SYN is dropped (ListenOverflows)
    await Promise.all(
      [0, 1].map(
        () =>
          new Promise<void>((resolve, reject) => {
            const c = connectTcp(dropPort, '127.0.0.1', () => resolve()).on('error', reject);
            fillers.push(c);
          }),
      ),
    );
  });
  afterAll(async () => {
    for (const s of fillers) s.destroy();
    if (listener?.pid !== undefined) signalPid(listener.pid, 'SIGKILL');
    await new Promise((r) => tcp.close(r));
  });

  const run = (p: number, timeoutMs = 5000, host = '127.0.0.1'): Promise<CheckResult> =>
    new Promise((resolve) => probeTcp({ host, port: p, timeoutMs }, resolve));

  it('is the path TCP probes to addresses take where the addon loads (CI builds it)', () => {
    expect(tcpProbePath()).toBe('thread');
  });

  it('connected, refused and timed out as on the raw handle; IPv6; no socket left open', async () => {
    const pick = (r: CheckResult) => [r.ok, r.detail, r.local ?? false, r.timedOut ?? false];
    const got = await Promise.all([run(port), run(closedPort), run(dropPort, 200), run(port, 5000, '::1')]);
    expect(got.map(pick)).toEqual([
      [true, 'connected', false, false],
      [false, 'ECONNREFUSED', false, false],
      [false, 'timeout after 200 ms', false, true],
      [false, 'ECONNREFUSED', false, false], // the listener is on 127.0.0.1 only
    ]);
    expect(got[2]!.durationMs).toBeGreaterThanOrEqual(200);
    expect(got[0]!.durationMs).toBeLessThan(got[2]!.durationMs);
    await closedWithin(port, 5000);
    await closedWithin(dropPort, 5000, fillers.length);
  });

  it('many at once: every verdict comes, in batches, each once', async () => {
    const results = await Promise.all(
      Array.from({ length: 600 }, (_, i) => run(i % 2 === 0 ? port : closedPort)),
    );
    expect(results.filter((r) => r.detail === 'connected')).toHaveLength(300);
    expect(results.filter((r) => r.detail === 'ECONNREFUSED')).toHaveLength(300);
    await closedWithin(port, 5000);
  });

  it('cancel reports "aborted" from cancel, once, closes the socket, and no verdict follows', async () => {
    const results: CheckResult[] = [];
    const cancels = Array.from({ length: 50 }, () =>
      probeTcp({ host: '127.0.0.1', port: dropPort, timeoutMs: 10_000 }, (r) => results.push(r)),
    );
    // each connecting on the thread (a loaded machine may take a while to run it)
    const until = Date.now() + 5000;
    while (tcpEnds(dropPort).client < fillers.length + 50 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 5));
    expect(tcpEnds(dropPort).client).toBe(fillers.length + 50);
    expect(results).toHaveLength(0);
    for (const c of cancels) c();
    expect(results).toHaveLength(50);
    expect(results.every((r) => r.detail === 'aborted' && r.local === true && !r.ok)).toBe(true);
    // closed by the thread: nothing of them is pending there, so no verdict can come (one made before is dropped)
    await closedWithin(dropPort, 5000, fillers.length);
    for (const c of cancels) c(); // again: nothing more
    await new Promise((r) => setTimeout(r, 100));
    expect(results).toHaveLength(50);
  });

  it('the health monitor starts its TCP probes there itself: verdicts applied, slow runs counted, cancels on the thread', async () => {
    const monitor = new HealthMonitor({ jitter: 0, random: () => 0 });
    const changes: HealthChange[] = [];
    monitor.on('change', (c: HealthChange) => changes.push(c));
    const check = { intervalMs: 200, rise: 1, fall: 1 };
    try {
      monitor.setTargets([
        target('up>1', '127.0.0.1', { ...check, port }, 'up'),
        target('down>1', '127.0.0.1', { ...check, port: closedPort }, 'down'),
        target('v6>1', '::1', { ...check, port: closedPort }, 'v6'),
        target('drop>1', '127.0.0.1', { ...check, port: dropPort, timeoutMs: 150 }, 'drop'),
        target('gone>1', '127.0.0.1', { ...check, port: dropPort, timeoutMs: 10_000 }, 'gone'),
      ]);
      monitor.start();
      const until = Date.now() + 10_000;
      // new targets start up: the three that fail flip (the one timing out after its 150 ms), 'gone' waits 10 s
      while (Date.now() < until && new Set(changes.map((c) => c.key)).size < 3)
        await new Promise((r) => setTimeout(r, 20));
      expect(new Map(monitor.statuses())).toEqual(
        new Map([['up>1', 'up'], ['down>1', 'down'], ['v6>1', 'down'], ['drop>1', 'down'], ['gone>1', 'up']]), // prettier-ignore
      );
      const s = monitor.stats();
      expect(s.startedOnThread).toBe(s.started);
      expect(s.started).toBeGreaterThanOrEqual(5);
      const last = new Map(monitor.snapshot().map((t) => [t.key, t.last?.detail]));
      expect(last.get('drop>1')).toBe('timeout after 150 ms');
      expect(last.get('down>1')).toBe('ECONNREFUSED');
      // 'gone' is in flight (a 10 s timeout): removing it cancels it on the thread, and no result of it comes
      expect(tcpEnds(dropPort).client).toBeGreaterThan(fillers.length);
      monitor.setTargets([target('up>1', '127.0.0.1', { ...check, port }, 'up')]);
      expect(changes.filter((c) => c.key === 'gone>1')).toEqual([]);
      await closedWithin(dropPort, 5000, fillers.length);
    } finally {
      monitor.stop();
    }
    await monitor.idle();
    expect(monitor.stats().inFlight).toBe(0);
  });

  it('stop() with probes in flight on the thread: each cancelled there, none applied, in flight 0', async () => {
    const monitor = new HealthMonitor({ jitter: 0, random: () => 0 });
    let changes = 0;
    monitor.on('change', () => changes++);
    const check = { intervalMs: 60_000, timeoutMs: 10_000, rise: 1, fall: 1, port: dropPort };
    monitor.setTargets(Array.from({ length: 20 }, (_, i) => target(`v${i}>1`, '127.0.0.1', check, `v${i}`)));
    // every probe due at once (random 0), each one holding a connection to the listener that never accepts
    monitor.start();
    const until = Date.now() + 5000;
    while (monitor.stats().startedOnThread < 1 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 5));
    expect(monitor.stats()).toMatchObject({ inFlight: 1, startedOnThread: 1 }); // one probe: one address and check
    monitor.stop();
    expect(monitor.stats().inFlight).toBe(0);
    await closedWithin(dropPort, 5000, fillers.length);
    expect(changes).toBe(0);
  });
  it('probes in flight on the thread while the monitor renumbers its probes: each verdict reaches its own membership', async () => {
    const renumber = jest.spyOn(DueLanes.prototype as unknown as { renumber: () => void }, 'renumber');
    const monitor = new HealthMonitor({ jitter: 0, random: () => 0, maxInFlight: 300 });
    const check = (timeoutMs: number) => ({
      intervalMs: 60_000,
      timeoutMs,
      rise: 1,
      fall: 1,
      port: dropPort,
    });
    // 200 probes (one per timeout) of the listener that never accepts: the first 190 wait 20 s, the last 10 time out
    // after 400, 420, ... 580 ms
    const timeout = (x: number): number => (x < 190 ? 20_000 + x : 400 + 20 * (x - 190));
    const all = Array.from({ length: 200 }, (_, x) =>
      target(`v${x}>1`, '127.0.0.1', check(timeout(x)), `v${x}`),
    );
    try {
      monitor.setTargets(all);
      monitor.start();
      const until = Date.now() + 5000;
      while (monitor.stats().startedOnThread < 200 && Date.now() < until)
        await new Promise((r) => setTimeout(r, 5));
      expect(monitor.stats()).toMatchObject({ inFlight: 200, startedOnThread: 200 });
      // the first 190 go: cancelled on the thread, and the 10 left renumbered while their runs are in flight there
      monitor.setTargets(all.slice(190));
      expect(renumber).toHaveBeenCalled();
      expect(monitor.stats()).toMatchObject({ probes: 10, inFlight: 10 });
      const until2 = Date.now() + 10_000;
      while (monitor.stats().inFlight > 0 && Date.now() < until2) await new Promise((r) => setTimeout(r, 20));
      const last = new Map(monitor.snapshot().map((t) => [t.key, t.last?.detail]));
      for (let x = 190; x < 200; x++) {
        expect(last.get(`v${x}>1`)).toBe(`timeout after ${timeout(x)} ms`);
        expect(monitor.status(`v${x}>1`)).toBe('down');
      }
    } finally {
      monitor.stop();
      renumber.mockRestore();
    }
    await monitor.idle();
    await closedWithin(dropPort, 5000, fillers.length);
  });
});

describe('ThreadProbes (a stand-in for the addon)', () => {
  class FakeProber {
    static last: FakeProber;
    readonly started: number[] = [];
    readonly cancelled: number[] = [];
    refs = 0;
    constructor(readonly onVerdicts: (ids: Float64Array, codes: Int32Array, ms: Float64Array) => void) {
      FakeProber.last = this;
    }
    start(id: number, address: string): void {
      if (address === 'bad') throw new TypeError('address: bad');
      this.started.push(id);
    }
    cancel(id: number): void {
      this.cancelled.push(id);
    }
    ref(): void {
      this.refs = 1;
    }
    unref(): void {
      this.refs = 0;
    }
    close(): void {}
    deliver(rows: [id: number, code: number, ms: number][]): void {
      this.onVerdicts(Float64Array.from(rows, (r) => r[0]), Int32Array.from(rows, (r) => r[1]), Float64Array.from(rows, (r) => r[2])); // prettier-ignore
    }
  }
  const o = { host: '10.0.0.1', port: 80, timeoutMs: 700 };

  it('verdicts by code: connected, timeout, an errno, a local errno; the loop held only while some are in flight', () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const got: CheckResult[] = [];
    for (let i = 0; i < 4; i++) t.start(o, false, (r) => got.push(r));
    const [a, b, c, d] = f.started;
    expect(new Set(f.started).size).toBe(4);
    expect([f.refs, t.inFlight]).toEqual([1, 4]);
    f.deliver([[a!, 0, 1.5], [b!, -1, 700.2], [c!, 111, 0.3]]); // prettier-ignore
    expect(f.refs).toBe(1);
    f.deliver([[d!, 24, 0.1]]); // EMFILE
    expect([f.refs, t.inFlight]).toEqual([0, 0]);
    expect(got).toEqual([
      { ok: true, detail: 'connected', durationMs: 1.5 },
      { ok: false, detail: 'timeout after 700 ms', durationMs: 700.2, timedOut: true },
      { ok: false, detail: 'ECONNREFUSED', durationMs: 0.3 },
      { ok: false, detail: 'EMFILE', durationMs: 0.1, local: true },
    ]);
  });

  it('a cancelled probe: "aborted" from cancel, once; its late verdict and unknown ids are dropped', () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const got: CheckResult[] = [];
    const cancel = t.start(o, true, (r) => got.push(r));
    const id = f.started[0]!;
    cancel();
    cancel();
    expect(f.cancelled).toEqual([id]);
    expect(f.refs).toBe(0);
    f.deliver([[id, 0, 1], [99, 0, 1], [0, 0, 1], [id + 2 ** 20, 0, 1]]); // prettier-ignore
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ ok: false, detail: 'aborted', local: true });
  });

  it("remapOwners renumbers the owners of one sink's probes in flight, and only those", () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const got: [string, number][] = [];
    const mine = (r: CheckResult, owner: number): void => void got.push(['mine', owner]);
    const other = (r: CheckResult, owner: number): void => void got.push(['other', owner]);
    const a = t.begin('10.0.0.1', false, 80, 700, mine, 7);
    const b = t.begin('10.0.0.2', false, 80, 700, other, 7);
    const c = t.begin('10.0.0.3', false, 80, 700, mine, 9);
    const d = t.begin('10.0.0.4', false, 80, 700, mine, 3);
    f.deliver([[d, 0, 1]]); // done before: its slot is free, nothing to renumber
    expect(got).toEqual([['mine', 3]]);
    t.remapOwners(mine, (h: number) => h - 5);
    f.deliver([[a, 0, 1], [b, 0, 1], [c, 111, 1]]); // prettier-ignore
    expect(got).toEqual([['mine', 3], ['mine', 2], ['other', 7], ['mine', 4]]); // prettier-ignore
  });

  it('a freed slot is taken again under a new id: a verdict made before a cancel and delivered after it is dropped', () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const got: [string, CheckResult][] = [];
    const sink = (r: CheckResult, owner: string): void => void got.push([owner, r]);
    const first = t.begin('10.0.0.1', false, 80, 700, sink, 'first');
    expect(t.cancel(first)).toBe(true);
    expect(t.cancel(first)).toBe(false);
    const second = t.begin('10.0.0.2', false, 80, 700, sink, 'second');
    expect(second).not.toBe(first);
    expect(second % 2 ** 20).toBe(first % 2 ** 20); // the same slot
    expect(Number.isSafeInteger(second) && second > 0 && second < 2 ** 31).toBe(true);
    f.deliver([[first, 0, 1]]); // the thread's verdict of the first, made before its cancel
    expect(got.map(([w, r]) => [w, r.detail])).toEqual([['first', 'aborted']]);
    f.deliver([[second, 111, 2]]);
    expect(got.map(([w, r]) => [w, r.detail])).toEqual([
      ['first', 'aborted'],
      ['second', 'ECONNREFUSED'],
    ]);
    expect([t.inFlight, f.refs]).toEqual([0, 0]);
    // 3,000 probes one after another on that slot: their ids cycle through 2,047 generations, never 0 or a repeat
    // of the one before
    const ids = new Set<number>();
    let last = second;
    for (let k = 0; k < 3000; k++) {
      const id = t.begin('10.0.0.3', false, 80, 700, sink, 'n');
      expect(id).not.toBe(last);
      expect(id % 2 ** 20).toBe(first % 2 ** 20);
      ids.add(id);
      last = id;
      f.deliver([[id, 0, 1]]);
    }
    expect(ids.size).toBe(2047);
  });

  it('a start that fails takes no slot and holds no loop: a bad port or timeout, an address the thread refuses', () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const sink = (): void => undefined;
    expect(() => t.begin('10.0.0.1', false, 0, 700, sink, null)).toThrow('port: 0 is not 1..65535');
    expect(() => t.begin('10.0.0.1', false, 80, 0, sink, null)).toThrow(
      'timeoutMs: 0 is not a positive number',
    );
    expect(() => t.begin('bad', false, 80, 700, sink, null)).toThrow('address: bad');
    expect([t.inFlight, f.refs, f.started]).toEqual([0, 0, []]);
    // slots grow past their first room (64) and are all handed back
    const ids = Array.from({ length: 200 }, (_, k) => t.begin(`10.0.1.${k % 250}`, false, 80, 700, sink, k));
    expect(new Set(ids).size).toBe(200);
    expect(t.inFlight).toBe(200);
    f.deliver(ids.map((id) => [id, 0, 1]));
    expect([t.inFlight, f.refs]).toEqual([0, 0]);
  });

  it('a callback that throws loses none of the batch: the first error is thrown after it', () => {
    const t = new ThreadProbes(FakeProber);
    const f = FakeProber.last;
    const got: number[] = [];
    for (let i = 0; i < 3; i++)
      t.start(o, false, (r) => {
        got.push(r.durationMs);
        throw new Error(`boom ${r.durationMs}`);
      });
    const [a, b, c] = f.started;
    expect(() => f.deliver([[a!, 0, 1], [b!, 0, 2], [c!, 0, 3]])).toThrow('boom 1'); // prettier-ignore
    expect(got).toEqual([1, 2, 3]);
    expect(t.inFlight).toBe(0);
  });
});

describe('HTTP probes on the raw handle', () => {
  let server: Server;
  let port: number;
  const held = new Set<Socket>();
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/hang') return; // answers never: a probe waits in its read
      res.writeHead(req.url === '/fail' ? 503 : 200).end('x'.repeat(req.url === '/big' ? 100_000 : 10));
    });
    server.on('connection', (s) => (held.add(s), s.on('close', () => held.delete(s))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const opts = (path: string, timeoutMs = 5000) => ({ host: '127.0.0.1', port, path, timeoutMs });
  /** Waits (5 s at most) until no end of a connection to the server is open, in the client or in the server. */
  const allClosed = async (): Promise<void> => {
    await closedWithin(port, 5000);
    expect(held.size).toBe(0);
  };

  it('many at once: the verdicts of net.Socket, and no fd left open', async () => {
    expect(RAW_HTTP_PROBES).toBe(true);
    const paths = Array.from({ length: 60 }, (_, i) => ['/ok', '/fail', '/big'][i % 3]!);
    const raw = await Promise.all(paths.map((p) => new Promise<CheckResult>((r) => probeHttp(opts(p), r))));
    const net = await Promise.all(
      paths.map((p) => new Promise<CheckResult>((r) => netProbeHttp(opts(p), r))),
    );
    const pick = (r: CheckResult) => [r.ok, r.detail, r.local ?? false, r.timedOut ?? false];
    expect(raw.map(pick)).toEqual(paths.map((p) => (p === '/fail' ? [false, 'HTTP 503', false, false] : [true, 'HTTP 200', false, false]))); // prettier-ignore
    expect(net.map(pick)).toEqual(raw.map(pick));
    // net.Socket's ends close on a later turn than its verdict, and the server's once they read the close
    await allClosed();
  });

  it('cancel while connecting or while reading closes the socket at once and reports "aborted", once', async () => {
    const results: CheckResult[] = [];
    const connecting = Array.from({ length: 20 }, () => probeHttp(opts('/ok'), (r) => results.push(r)));
    for (const c of connecting) c();
    expect(results).toHaveLength(20);
    const reading = Array.from({ length: 20 }, () => probeHttp(opts('/hang'), (r) => results.push(r)));
    const deadline = Date.now() + 5000;
    while (held.size < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(held.size).toBeGreaterThanOrEqual(20); // each reached the server and waits for its answer
    expect(results).toHaveLength(20);
    for (const c of reading) c();
    for (const c of [...connecting, ...reading]) c(); // again: nothing more
    expect(results).toHaveLength(40);
    expect(results.every((r) => r.detail === 'aborted' && r.local === true && !r.ok)).toBe(true);
    // the client ends closed at once; the server's ends (in this process too) close once they read the close
    expect(tcpEnds(port).client).toBe(0);
    await allClosed();
    const hung = await new Promise<CheckResult>((r) => probeHttp(opts('/hang', 100), r));
    expect(hung).toMatchObject({ ok: false, detail: 'timeout after 100 ms', timedOut: true });
  });
});
