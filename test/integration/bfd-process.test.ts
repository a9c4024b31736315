// The BFD process (dist/src/bfd/main.js) in two network namespaces over a veth pair, ours <-> ours, then
// ours <-> BIRD: sessions Up on v4 and v6 with negotiated intervals, clients that come and go, bad datagrams
// dropped and counted, forwarding-plane fate, failure detection. Timings are printed, not asserted.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BfdClient } from '../../src/bfd/client';
import {
  authSection,
  AuthType,
  ControlPacket,
  DROP_REASONS,
  encodeControl,
  State,
} from '../../src/bfd/codec';
import type { BfdStatus, SessionStatus, StateChangeEvent } from '../../src/bfd/protocol';
import { packageRoot } from '../../src/paths';
import { Lab, run, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';
import { INJECT_JS } from '../helpers/bfd-lab';
import { readPidFile, signalPid } from '../../scripts/lib/pids';

const MAIN = join(packageRoot, 'dist', 'src', 'bfd', 'main.js');
const PROBE = join(packageRoot, 'build', 'bpf', 'fixtures', 'probe.bpf.o');
const A4 = '10.66.0.1';
const B4 = '10.66.0.2';
const A6 = 'fd66::1';
const B6 = 'fd66::2';
const AUTH = { type: 'meticulous-keyed-sha1' as const, keyId: 5, secret: 's3cret' };

async function waitUntil<T>(
  what: string,
  f: () => Promise<T | null | false>,
  ms: number,
): Promise<{ v: T; ms: number }> {
  const t0 = performance.now();
  for (;;) {
    const v = await f();
    if (v) return { v, ms: performance.now() - t0 };
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function bySession(st: BfdStatus, peer: string): SessionStatus {
  const s = st.sessions.find((x) => x.peer === peer);
  if (!s) throw new Error(`no session to ${peer} in ${JSON.stringify(st.sessions.map((x) => x.key))}`);
  return s;
}

const sumDrops = (d: Partial<Record<string, number>>) =>
  Object.values(d).reduce<number>((a, b) => a + (b ?? 0), 0);

describePrivileged('BFD process: ours <-> ours in two namespaces, and ours <-> BIRD', () => {
  const lab = new Lab();
  const sfx = uniqueSuffix();
  const va = `h6x${sfx}`;
  const vb = `h6y${sfx}`;
  let nsA = '';
  let nsB = '';
  let dir = '';
  let bpffs = '';
  let bpffsMounted = false;
  const procs: ChildProcess[] = [];
  let procB: ChildProcess;
  let birdPid: number | null = null;
  const sock = (n: string) => join(dir, `${n}.sock`);

  function startBfd(name: string, ns: string, config: object): ChildProcess {
    const cfg = join(dir, `${name}.json`);
    writeFileSync(cfg, JSON.stringify(config));
    const p = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, MAIN, '--config', cfg, '--log-level', 'warn'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code, sig) => {
      if (code !== 0 && sig === null) console.log(`BFD ${name} exited ${code}: ${err}`);
    });
    procs.push(p);
    return p;
  }

  async function status(name: string): Promise<BfdStatus> {
    const c = await BfdClient.connect({ path: sock(name) });
    try {
      return await c.status();
    } finally {
      c.close();
    }
  }

  async function statusOrNull(name: string): Promise<BfdStatus | null> {
    try {
      return await status(name);
    } catch {
      return null;
    }
  }

  async function allUp(name: string, peers: string[]): Promise<BfdStatus | null> {
    const st = await statusOrNull(name);
    return st && peers.every((p) => st.sessions.find((s) => s.peer === p)?.state === 'up') ? st : null;
  }

  /** Sends datagrams from inside a namespace with a given TTL / hop limit; resolves with what it sent. */
  async function inject(
    ns: string,
    o: { dst: string; port?: number; items?: { hex: string; ttl: number }[]; random?: number },
  ): Promise<{ sent: number; ms: number }> {
    const file = join(dir, `inject-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ port: 3784, ...o }));
    const script = INJECT_JS;
    const out = run('ip', ['netns', 'exec', ns, process.execPath, '-e', script, file]);
    return JSON.parse(out) as { sent: number; ms: number };
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'h6bfd-'));
    nsA = lab.addNamespace('h6a');
    nsB = lab.addNamespace('h6b');
    run('ip', ['link', 'add', va, 'type', 'veth', 'peer', 'name', vb]);
    run('ip', ['link', 'set', va, 'netns', nsA]);
    run('ip', ['link', 'set', vb, 'netns', nsB]);
    for (const [ns, dev, a4, a6] of [
      [nsA, va, A4, A6],
      [nsB, vb, B4, B6],
    ] as const) {
      lab.ns(ns, 'ip', ['addr', 'add', `${a4}/24`, 'dev', dev]);
      lab.ns(ns, 'ip', ['addr', 'add', `${a6}/64`, 'dev', dev, 'nodad']);
      lab.ns(ns, 'ip', ['link', 'set', dev, 'up']);
    }
    // A pinned XDP program B's process watches (forwarding-plane fate), on a bpffs every `ip netns exec` sees.
    bpffs = join(dir, 'bpffs');
    mkdirSync(bpffs);
    run('mount', ['-t', 'bpf', 'bpf', bpffs]);
    bpffsMounted = true;
    run('bpftool', ['prog', 'load', PROBE, join(bpffs, 'prog'), 'type', 'xdp']);
    lab.ns(nsB, 'ip', ['link', 'set', 'dev', vb, 'xdpgeneric', 'pinned', join(bpffs, 'prog')]);

    startBfd('a', nsA, {
      control: sock('a'),
      sessions: [
        { peer: B4, minTx: 100, minRx: 200, multiplier: 3, auth: AUTH },
        { peer: B6, minTx: 100, minRx: 200, multiplier: 3 },
      ],
    });
    procB = startBfd('b', nsB, {
      control: sock('b'),
      forwarding: { interface: vb, pin: join(bpffs, 'prog') },
      sessions: [
        { peer: A4, minTx: 150, minRx: 200, multiplier: 5, auth: AUTH },
        { peer: A6, minTx: 150, minRx: 200, multiplier: 5 },
      ],
    });
  }, 30_000);

  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    if (birdPid !== null) {
      try {
        signalPid(birdPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sleep(100);
    lab.cleanup();
    if (bpffsMounted) run('umount', [bpffs], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  });

  test('sessions come Up on v4 (keyed SHA1) and v6 with the negotiated intervals', async () => {
    const a = await waitUntil('A: both sessions up', () => allUp('a', [B4, B6]), 15_000);
    const b = await waitUntil('B: both sessions up', () => allUp('b', [A4, A6]), 15_000);
    console.log(`both sides Up ${a.ms.toFixed(0)} ms after the first status answer`);
    // Poll sequences done: the configured intervals are in force.
    const st = await waitUntil<[BfdStatus, BfdStatus]>(
      'poll sequences finished',
      async () => {
        const [x, y] = [await status('a'), await status('b')];
        return [...x.sessions, ...y.sessions].every((s) => !s.pollActive && s.txIntervalMs < 1000)
          ? ([x, y] as [BfdStatus, BfdStatus])
          : null;
      },
      10_000,
    );
    const [sa, sb] = st.v;
    for (const peer of [B4, B6]) {
      const s = bySession(sa, peer);
      // A sends at max(its 100, B's required 200); detects with B's 5 × max(A's required 200, B's 150).
      expect([s.txIntervalMs, s.detectionTimeMs]).toEqual([200, 1000]);
      expect(s.remote).toEqual({ minTx: 150, minRx: 200, multiplier: 5 });
    }
    for (const peer of [A4, A6]) {
      const s = bySession(sb, peer);
      // B sends at max(150, A's 200); detects with A's 3 × max(200, 100).
      expect([s.txIntervalMs, s.detectionTimeMs]).toEqual([200, 600]);
    }
    expect(bySession(sa, B4).auth).toBe('meticulous-keyed-sha1');
    expect(bySession(sa, B6).auth).toBeNull();
    expect(b.v.forwarding).toMatchObject({ ok: true, interface: vb });
    console.log('A timer lateness:', sa.timerLateness, 'B:', sb.timerLateness);
  }, 40_000);

  test('a client killed with SIGKILL leaves the sessions alone', async () => {
    const before = await status('a');
    const script = `
      const { BfdClient } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'bfd', 'client.js'))});
      BfdClient.connect({ path: process.argv[1] }).then(async (c) => {
        await c.subscribe(() => {});
        await c.status();
        process.stdout.write('ready\\n');
        setInterval(() => {}, 1000);
      });`;
    const child = spawn(process.execPath, ['-e', script, sock('a')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`client exited ${c} before it was ready`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    await sleep(1500);
    const after = await status('a');
    for (const peer of [B4, B6]) {
      expect(bySession(after, peer).state).toBe('up');
      expect(bySession(after, peer).stateChanges).toBe(bySession(before, peer).stateChanges);
      expect(bySession(after, peer).packetsIn).toBeGreaterThan(bySession(before, peer).packetsIn);
    }
  }, 20_000);

  test('bad datagrams are dropped and counted by reason; the sessions stay Up', async () => {
    const b0 = await status('b');
    const a0 = await status('a');
    const s4 = bySession(b0, A4);
    const s6 = bySession(b0, A6);
    // A packet as A would send it on the v4 session (right discriminators), then spoiled one way at a time.
    const base = (over: Partial<ControlPacket> = {}): ControlPacket => ({
      version: 1,
      diag: 0,
      state: State.Up,
      poll: false,
      final: false,
      controlPlaneIndependent: true,
      demand: false,
      multipoint: false,
      detectMult: 3,
      myDiscr: s4.remoteDiscr,
      yourDiscr: s4.localDiscr,
      desiredMinTxUs: 100_000,
      requiredMinRxUs: 200_000,
      requiredMinEchoRxUs: 0,
      ...over,
    });
    const sha = (key: string, seq: number, over: Partial<ControlPacket> = {}) =>
      encodeControl(
        base({
          ...over,
          auth: authSection({ type: AuthType.MeticulousKeyedSha1, keyId: 5, secret: Buffer.from(key) }, seq),
        }),
        { key: Buffer.from(key) },
      );
    const N = 5;
    const wrongVersion = Buffer.from(sha(AUTH.secret, 1));
    wrongVersion[0] = (2 << 5) | (wrongVersion[0]! & 0x1f);
    const shortLength = Buffer.from(sha(AUTH.secret, 1));
    shortLength[3] = 20;
    const cases: { name: string; buf: Buffer; ttl: number; reason: string; dst: string }[] = [
      { name: 'version 2', buf: wrongVersion, ttl: 255, reason: 'bad-version', dst: B4 },
      { name: 'Length 20', buf: shortLength, ttl: 255, reason: 'bad-length', dst: B4 },
      {
        name: '10 bytes',
        buf: sha(AUTH.secret, 1).subarray(0, 10),
        ttl: 255,
        reason: 'short-packet',
        dst: B4,
      },
      {
        name: 'multiplier 0',
        buf: sha(AUTH.secret, 1, { detectMult: 0 }),
        ttl: 255,
        reason: 'detect-mult-zero',
        dst: B4,
      },
      {
        name: 'wrong SHA1 key',
        buf: sha('not-the-key', 0xfffff),
        ttl: 255,
        reason: 'auth-bad-digest',
        dst: B4,
      },
      { name: 'no auth section', buf: encodeControl(base()), ttl: 255, reason: 'auth-missing', dst: B4 },
      { name: 'TTL 254 (v4)', buf: sha(AUTH.secret, 1), ttl: 254, reason: 'ttl-below-255', dst: B4 },
      {
        name: 'hop limit 254 (v6)',
        buf: encodeControl(base({ myDiscr: s6.remoteDiscr, yourDiscr: s6.localDiscr })),
        ttl: 254,
        reason: 'ttl-below-255',
        dst: B6,
      },
    ];
    for (const c of cases) {
      const r = await inject(nsA, {
        dst: c.dst,
        items: Array.from({ length: N }, () => ({ hex: c.buf.toString('hex'), ttl: c.ttl })),
      });
      expect(r.sent).toBe(N);
    }
    await sleep(300);
    const b1 = await status('b');
    const d4 = (r: string) =>
      (bySession(b1, A4).drops[r as 'bad-version'] ?? 0) - (s4.drops[r as 'bad-version'] ?? 0);
    const d6 = (r: string) =>
      (bySession(b1, A6).drops[r as 'bad-version'] ?? 0) - (s6.drops[r as 'bad-version'] ?? 0);
    const table = cases.map((c) => ({
      case: c.name,
      reason: c.reason,
      counted: c.dst === B4 ? d4(c.reason) : d6(c.reason),
    }));
    console.table(table);
    // ttl-below-255 on v4 and short-packet... each reason counts exactly the N sent for it.
    for (const c of cases)
      expect({ case: c.name, n: c.dst === B4 ? d4(c.reason) : d6(c.reason) }).toEqual({ case: c.name, n: N });

    // 10^4 random datagrams to both sessions' addresses (bounded: 30 s of sending at most). What the kernel
    // drops for want of buffer space (UDP RcvbufErrors in B's namespace) never reaches the process.
    const udpLost = () => {
      const v4 = lab
        .ns(nsB, 'cat', ['/proc/net/snmp'])
        .split('\n')
        .filter((l) => l.startsWith('Udp:'));
      const i = v4[0]!.split(/\s+/).indexOf('RcvbufErrors');
      const v6 = /Udp6RcvbufErrors\s+(\d+)/.exec(lab.ns(nsB, 'cat', ['/proc/net/snmp6']));
      return Number(v4[1]!.split(/\s+/)[i]) + Number(v6?.[1] ?? 0);
    };
    const lost0 = udpLost();
    const r4 = await inject(nsA, { dst: B4, random: 5000 });
    const r6 = await inject(nsA, { dst: B6, random: 5000 });
    await sleep(300);
    const lost = udpLost() - lost0;
    const b2 = await status('b');
    const valid = (st: BfdStatus) => st.sessions.reduce((a, s) => a + s.packetsIn, 0);
    const inDelta = b2.packetsIn - b1.packetsIn;
    const dropDelta = sumDrops(b2.drops) - sumDrops(b1.drops);
    const validDelta = valid(b2) - valid(b1);
    console.log(
      `random: sent ${r4.sent + r6.sent} in ${r4.ms + r6.ms} ms; B received ${inDelta} datagrams: ` +
        `${dropDelta} dropped, ${validDelta} valid (A's own packets meanwhile); kernel receive-buffer drops ${lost}`,
      Object.fromEntries(
        DROP_REASONS.map((r) => [r, (b2.drops[r] ?? 0) - (b1.drops[r] ?? 0)]).filter(
          ([, n]) => (n as number) > 0,
        ),
      ),
    );
    expect(r4.sent + r6.sent).toBe(10_000);
    // Every datagram is either one of A's (valid) or dropped with a reason: nothing else happens to it.
    expect(dropDelta + validDelta).toBe(inDelta);
    // Each random datagram was either dropped by the process with a reason or lost in the kernel.
    expect(dropDelta).toBeLessThanOrEqual(10_000);
    expect(dropDelta + lost).toBeGreaterThanOrEqual(10_000);
    expect(dropDelta).toBeGreaterThan(0);
    const a2 = await status('a');
    for (const [st0, st2, peers] of [
      [b0, b2, [A4, A6]],
      [a0, a2, [B4, B6]],
    ] as const)
      for (const p of peers) {
        expect(bySession(st2, p).state).toBe('up');
        expect(bySession(st2, p).stateChanges).toBe(bySession(st0, p).stateChanges);
      }
  }, 90_000);

  test('balancer program detached: B goes Down with forwarding-plane-reset, A sees it; re-attached: Up', async () => {
    const c = await BfdClient.connect({ path: sock('a') });
    const events: (StateChangeEvent & { t: number })[] = [];
    await c.subscribe((e) => events.push({ ...e, t: performance.now() }));
    try {
      const t0 = performance.now();
      lab.ns(nsB, 'ip', ['link', 'set', 'dev', vb, 'xdpgeneric', 'off']);
      const down = await waitUntil(
        'A: both sessions down',
        async () => events.filter((e) => e.to === 'down').length >= 2 && events,
        10_000,
      );
      const sb = await status('b');
      console.log(
        `detach -> A Down: ${down.v
          .filter((e) => e.to === 'down')
          .map((e) => `${e.peer} ${(e.t - t0).toFixed(0)} ms`)
          .join(', ')} (B's check runs every 250 ms)`,
      );
      expect(sb.forwarding).toMatchObject({ ok: false });
      for (const p of [A4, A6]) {
        expect(bySession(sb, p)).toMatchObject({
          state: 'down',
          diag: 'forwarding-plane-reset',
          heldBy: 'forwarding-plane',
        });
      }
      for (const e of down.v.filter((x) => x.to === 'down')) expect(e.diag).toBe('neighbor-signaled-down');
      const sa = await status('a');
      for (const p of [B4, B6]) expect(bySession(sa, p).remoteDiag).toBe('forwarding-plane-reset');
      // Stays Down while detached.
      await sleep(1500);
      expect(bySession(await status('b'), A4).state).toBe('down');
      lab.ns(nsB, 'ip', ['link', 'set', 'dev', vb, 'xdpgeneric', 'pinned', join(bpffs, 'prog')]);
      const up = await waitUntil('A: both up again', () => allUp('a', [B4, B6]), 10_000);
      console.log(`re-attach -> A Up: ${up.ms.toFixed(0)} ms`);
    } finally {
      c.close();
    }
  }, 40_000);

  test('B killed (silent): A goes Down with control-detection-time-expired after about its detection time', async () => {
    await waitUntil('A: both sessions up', () => allUp('a', [B4, B6]), 10_000);
    const c = await BfdClient.connect({ path: sock('a') });
    const events: (StateChangeEvent & { t: number })[] = [];
    await c.subscribe((e) => events.push({ ...e, t: performance.now() }));
    try {
      const t0 = performance.now();
      procB.kill('SIGKILL');
      const down = await waitUntil(
        'A: both sessions down',
        async () => events.filter((e) => e.to === 'down').length >= 2 && events,
        10_000,
      );
      const downs = down.v.filter((e) => e.to === 'down');
      console.log(
        `B killed -> A Down: ${downs.map((e) => `${e.peer} ${(e.t - t0).toFixed(0)} ms`).join(', ')} (detection time 1000 ms)`,
      );
      for (const e of downs) expect(e.diag).toBe('control-detection-time-expired');
      const sa = await status('a');
      for (const p of [B4, B6])
        expect(bySession(sa, p)).toMatchObject({
          state: 'down',
          diag: 'control-detection-time-expired',
          remoteDiscr: 0,
        });
    } finally {
      c.close();
    }
  }, 30_000);

  test("ours <-> BIRD 2: sessions come Up on v4 and v6 with BIRD's intervals", async () => {
    // A without auth now (BIRD's side below has none), through the control socket: a poll, no restart.
    const c = await BfdClient.connect({ path: sock('a') });
    try {
      const r = await c.setSessions([
        { peer: B4, minTx: 100, minRx: 200, multiplier: 3 },
        { peer: B6, minTx: 100, minRx: 200, multiplier: 3 },
      ]);
      // Only the v4 session changes (its auth goes); the v6 one already has these parameters.
      expect(r).toMatchObject({ changed: [`single-hop * -> ${B4}`], added: [], removed: [] });
    } finally {
      c.close();
    }
    const bdir = join(dir, 'bird');
    mkdirSync(bdir);
    writeFileSync(
      join(bdir, 'bird.conf'),
      `router id ${B4};
log "${join(bdir, 'bird.log')}" all;
protocol device {}
protocol bfd {
  interface "*" { min rx interval 150 ms; min tx interval 120 ms; multiplier 4; };
  neighbor ${A4};
  neighbor ${A6};
}
`,
    );
    lab.ns(nsB, 'bird', [
      '-c',
      join(bdir, 'bird.conf'),
      '-s',
      join(bdir, 'bird.ctl'),
      '-P',
      join(bdir, 'bird.pid'),
    ]);
    birdPid = await readPidFile(join(bdir, 'bird.pid'));
    const up = await waitUntil('A: both sessions up with BIRD', () => allUp('a', [B4, B6]), 20_000);
    const sa = (
      await waitUntil(
        'negotiated with BIRD',
        async () => {
          const st = await status('a');
          return st.sessions.every((s) => s.remote.minRx === 150 && !s.pollActive) && st;
        },
        10_000,
      )
    ).v;
    console.log(`Up with BIRD after ${up.ms.toFixed(0)} ms`);
    console.log(lab.ns(nsB, 'birdc', ['-s', join(bdir, 'bird.ctl'), 'show', 'bfd', 'sessions']));
    for (const p of [B4, B6]) {
      const s = bySession(sa, p);
      // A: TX max(100, BIRD's rx 150); detection BIRD's 4 × max(200, BIRD's tx 120).
      expect([s.state, s.txIntervalMs, s.detectionTimeMs]).toEqual(['up', 150, 800]);
      expect(s.remote).toEqual({ minTx: 120, minRx: 150, multiplier: 4 });
    }
    const bird = lab.ns(nsB, 'birdc', ['-s', join(bdir, 'bird.ctl'), 'show', 'bfd', 'sessions']);
    expect(bird.match(/\sUp\s/g)?.length).toBe(2);
  }, 60_000);
});
