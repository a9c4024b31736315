// Daemon health-check flapping on the real kernel: nginx on be2 keeps serving while only its health checks
// fail on and off (an nftables reject for the check's address:port). With the default down grace the
// backend only drains, so no keep-alive connection through the VIP breaks; after a short grace it turns
// down on time; with downGraceSeconds 0 the same flapping re-selects its flows and breaks its connections.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, sleep, VIP, VIP_PORT, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

const CHECK = { type: 'http', path: '/', intervalMs: 200, timeoutMs: 200, rise: 2, fall: 2 };
/** Keep-alive connections held through the VIP (about a third land on be2). */
const CONNECTIONS = 24;
const GAP_MS = 100;

/**
 * The keep-alive client, run with node in the client namespace: CONNECTIONS sockets, each sending one GET at
 * a time every GAP_MS; a connection that errs, closes or gets no answer within 2 s is broken and never
 * reopened. Bounded by maxMs and maxPerConn (under nginx's keepalive_requests 1000); prints "ready" once
 * every connection has an answer, and its results as JSON on SIGTERM or at maxMs.
 */
const CLIENT_JS = `'use strict';
const net = require('node:net');
const [host, port, n, gapMs, maxMs, maxPerConn] = process.argv.slice(2).map((x, i) => (i === 0 ? x : Number(x)));
const conns = [];
let stopping = false;
let readyTold = false;
const tellReady = () => {
  if (!readyTold && conns.length === n && conns.every((c) => c.ok > 0 || c.broken)) {
    readyTold = true;
    process.stdout.write('ready\\n');
  }
};
for (let i = 0; i < n; i++) {
  const c = { localPort: 0, first: null, backends: {}, ok: 0, failed: 0, broken: null };
  conns.push(c);
  const s = net.connect({ host, port: Number(port) });
  s.setNoDelay(true);
  let buf = '';
  let timer = null;
  let pending = false;
  const fail = (why) => {
    if (c.broken || stopping) return;
    c.broken = why;
    if (pending) c.failed++;
    pending = false;
    clearTimeout(timer);
    s.destroy();
    tellReady();
  };
  const send = () => {
    if (stopping || c.broken || c.ok + c.failed >= maxPerConn) return;
    pending = true;
    s.write('GET / HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n');
    timer = setTimeout(() => fail('timeout'), 2000);
  };
  s.on('connect', () => {
    c.localPort = s.localPort;
    send();
  });
  s.on('data', (d) => {
    buf += d.toString('latin1');
    for (;;) {
      const h = buf.indexOf('\\r\\n\\r\\n');
      if (h < 0) return;
      const m = /content-length: *(\\d+)/i.exec(buf.slice(0, h));
      const len = m ? Number(m[1]) : 0;
      if (buf.length < h + 4 + len) return;
      const status = Number(buf.slice(9, 12));
      const body = buf.slice(h + 4, h + 4 + len).trim();
      buf = buf.slice(h + 4 + len);
      clearTimeout(timer);
      pending = false;
      if (status === 200) {
        c.ok++;
        c.first = c.first || body;
        c.backends[body] = (c.backends[body] || 0) + 1;
      } else c.failed++;
      tellReady();
      setTimeout(send, gapMs);
    }
  });
  s.on('error', (e) => fail(e.code || e.message));
  s.on('close', () => fail('closed'));
  c.socket = s;
}
const finish = () => {
  stopping = true;
  for (const c of conns) c.socket.destroy();
  process.stdout.write(JSON.stringify(conns.map(({ socket, ...c }) => c)) + '\\n');
  process.exit(0);
};
process.on('SIGTERM', finish);
setTimeout(finish, maxMs);
`;

interface ConnResult {
  localPort: number;
  /** The backend of the first answer (where Maglev put the connection). */
  first: string | null;
  backends: Record<string, number>;
  ok: number;
  failed: number;
  /** Why the connection broke (ECONNRESET, closed, timeout), or null: it lasted to the end. */
  broken: string | null;
}

interface KeepAlive {
  ready: Promise<void>;
  stop: () => Promise<ConnResult[]>;
}

describePrivileged('daemon: health-check flapping keeps established connections (down grace)', () => {
  const lab = new DaemonLab({ tag: 'f', backends: 3 });
  let daemon: DaemonProcess;
  let dp: KernelDatapath;
  let clientJs = '';
  const t0 = performance.now();
  const be2 = () => lab.backend(2);

  const stateOf = async (address: string) =>
    (await dp.listBackends()).find((b) => b.address === address)?.state ?? 'missing';
  const reselects = async () => (await dp.counters()).global.ct_reselect ?? 0n;
  /** Health checks of be2 fail (TCP reset for its own address on port 80); VIP traffic is untouched. */
  const blockChecks = () =>
    lab.ns(be2().netns, 'nft', [
      `add table inet peakflap; add chain inet peakflap input { type filter hook input priority 0; }; add rule inet peakflap input ip daddr ${be2().address} tcp dport 80 reject with tcp reset`,
    ]);
  const unblockChecks = () => lab.ns(be2().netns, 'nft', ['delete', 'table', 'inet', 'peakflap']);
  const reloads = async () => {
    const m = (await lab.admin('/metrics')).body.matchAll(
      /peak_xdp_config_reloads_total\{result="ok",trigger="[^"]*"\} (\d+)/g,
    );
    return [...m].reduce((n, x) => n + Number(x[1]), 0);
  };
  /** Rewrites the config with this down grace (undefined: the default) and waits until it is applied. */
  const configure = async (downGraceSeconds?: number) => {
    const before = await reloads();
    const hc = { ...CHECK, ...(downGraceSeconds === undefined ? {} : { downGraceSeconds }) };
    lab.writeConfig(lab.config({ backends: [1, 2, 3], vipExtra: { healthCheck: hc } }));
    if ((await waitUntil(async () => (await reloads()) > before, { timeoutMs: 5000 })) === null)
      throw new Error(`config not reloaded:\n${lab.logTail(daemon)}`);
    await sleep(300); // the reload's sync
  };
  /** Polls be2's datapath state every 10 ms: every distinct state in order, with when it was first seen. */
  const watchState = () => {
    const seen: { state: string; at: number }[] = [];
    let on = true;
    const poll = async () => {
      const s = await stateOf(be2().address);
      if (seen.at(-1)?.state !== s) seen.push({ state: s, at: Date.now() });
    };
    const loop = (async () => {
      while (on) {
        await poll();
        await sleep(10);
      }
    })();
    return {
      seen,
      /** Stops polling after one last poll (the caller may have seen a change the loop has not yet). */
      stop: async () => {
        on = false;
        await loop;
        await poll();
        return seen;
      },
    };
  };
  const keepAlive = (maxMs: number): KeepAlive => {
    const child = spawn(
      'ip',
      ['netns', 'exec', lab.client, process.execPath, clientJs, VIP, String(VIP_PORT), String(CONNECTIONS), String(GAP_MS), String(maxMs), '900'], // prettier-ignore
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // 'close', not 'exit': the results line is written just before the client exits, and 'exit' may come before
    // the last of its stdout is read (a CI run saw only "ready" in `out` after 'exit')
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`keep-alive client not ready in 10 s: ${err}`)), 10000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.startsWith('ready\n')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`keep-alive client exited early: ${err}`));
      });
    });
    ready.catch(() => undefined);
    return {
      ready,
      stop: async () => {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 5000)))]);
        clearTimeout(timer);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        const line = out.split('\n').find((l) => l.startsWith('['));
        if (!line) throw new Error(`keep-alive client printed no results: ${out} ${err}`);
        return JSON.parse(line) as ConnResult[];
      },
    };
  };
  const summary = (conns: ConnResult[], backend: string) => {
    const on = conns.filter((c) => c.first === backend);
    return {
      connections: on.length,
      requests: on.reduce((n, c) => n + c.ok, 0),
      failed: on.reduce((n, c) => n + c.failed, 0),
      broken: on.filter((c) => c.broken !== null).length,
      /** Connections that got an answer from another backend than their first (moved mid-connection). */
      moved: on.filter((c) => Object.keys(c.backends).length > 1).length,
    };
  };

  beforeAll(async () => {
    await lab.start();
    clientJs = join(lab.dir, 'keepalive-client.js');
    writeFileSync(clientJs, CLIENT_JS);
    lab.writeConfig(lab.config({ backends: [1, 2, 3], vipExtra: { healthCheck: CHECK } }));
    daemon = await lab.startDaemon();
    dp = lab.adopt();
    const allUp = await waitUntil(
      async () =>
        (await lab.state()).health.filter((h) => h.status === 'up' && h.checks >= CHECK.rise).length === 3,
      { timeoutMs: 10000 },
    );
    if (allUp === null) throw new Error(`health checks never passed:\n${lab.logTail(daemon)}`);
  }, 60000);

  afterAll(async () => {
    dp?.close();
    await lab.cleanup();
    console.log(
      `health flap test: ${((performance.now() - t0) / 1000).toFixed(1)} s with set-up and clean-up`,
    );
  }, 30000);

  it('default grace (30 s): 3 flaps of be2 health, be2 only drains; 0 failed requests, 0 broken connections, 0 re-selects', async () => {
    const client = keepAlive(30000);
    await client.ready;
    const reselect0 = await reselects();
    const watch = watchState();
    const flaps: { downMs: number; upMs: number }[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        blockChecks();
        const drained = await waitUntil(async () => (await stateOf(be2().address)) !== 'up', {
          timeoutMs: 5000,
          intervalMs: 10,
        });
        expect(drained).not.toBeNull();
        expect(await stateOf(be2().address)).toBe('draining');
        await sleep(400); // keep-alive requests keep flowing to be2 while its checks fail
        const downMs = performance.now() - t;
        unblockChecks();
        const up = await waitUntil(async () => (await stateOf(be2().address)) === 'up', {
          timeoutMs: 5000,
          intervalMs: 10,
        });
        expect(up).not.toBeNull();
        flaps.push({ downMs, upMs: performance.now() - t - downMs });
        await sleep(300);
      }
    } finally {
      lab.ns(be2().netns, 'nft', ['delete', 'table', 'inet', 'peakflap'], { allowFail: true });
    }
    const states = await watch.stop();
    const conns = await client.stop();
    const reselect1 = await reselects();
    const s2 = summary(conns, 'be2');
    const s1 = summary(conns, 'be1');
    const s3 = summary(conns, 'be3');
    console.log(
      `flapping, default grace: ${flaps.length} flaps (${flaps.map((f) => `${f.downMs.toFixed(0)}/${f.upMs.toFixed(0)} ms`).join(', ')} failing/recovering); be2 states ${states.map((s) => s.state).join(' > ')}; ` +
        `be2 connections ${s2.connections} (${s2.requests} requests), be1 ${s1.connections}, be3 ${s3.connections}; ` +
        `failed ${conns.reduce((n, c) => n + c.failed, 0)}, broken ${conns.filter((c) => c.broken).length}, ct_reselect +${reselect1 - reselect0}`,
    );
    expect(conns).toHaveLength(CONNECTIONS);
    expect(s2.connections).toBeGreaterThan(0);
    // Requests reached be2 over its connections throughout the flapping (not only before it).
    expect(s2.requests).toBeGreaterThan(s2.connections * 20);
    expect(states.map((s) => s.state)).toEqual(['up', 'draining', 'up', 'draining', 'up', 'draining', 'up']);
    expect(conns.reduce((n, c) => n + c.failed, 0)).toBe(0);
    expect(conns.filter((c) => c.broken !== null)).toEqual([]);
    expect(s2.moved).toBe(0);
    expect(reselect1).toBe(reselect0);
  }, 40000);

  it('a grace of 2 s: checks failing for good turn be2 down 2 s after the flip, with no other health change', async () => {
    await configure(2);
    const watch = watchState();
    try {
      blockChecks();
      expect(await waitUntil(async () => (await stateOf(be2().address)) === 'down', { timeoutMs: 8000, intervalMs: 10 })).not.toBeNull(); // prettier-ignore
    } finally {
      unblockChecks();
    }
    const states = await watch.stop();
    const h = (await lab.state()).health.find((x) => x.address === be2().address) as unknown as {
      status: string;
      since: number;
    };
    expect(h.status).toBe('down');
    const draining = states.find((s) => s.state === 'draining')!;
    const down = states.find((s) => s.state === 'down')!;
    console.log(
      `grace 2 s: health flip at ${h.since}, draining seen +${draining.at - h.since} ms, down seen +${down.at - h.since} ms after the flip`,
    );
    expect(states.map((s) => s.state)).toEqual(['up', 'draining', 'down']);
    // Down at the grace's end (the daemon's timer), not before; the slack is for polling and 2 shared cores.
    expect(down.at - h.since).toBeGreaterThanOrEqual(2000);
    expect(down.at - h.since).toBeLessThan(2000 + 8000);
    expect(await waitUntil(async () => (await stateOf(be2().address)) === 'up', { timeoutMs: 5000 })).not.toBeNull(); // prettier-ignore
  }, 30000);

  it('contrast, downGraceSeconds 0: one flap re-selects be2 flows and breaks its keep-alive connections', async () => {
    await configure(0);
    const client = keepAlive(30000);
    await client.ready;
    const reselect0 = await reselects();
    try {
      blockChecks();
      expect(await waitUntil(async () => (await stateOf(be2().address)) === 'down', { timeoutMs: 5000, intervalMs: 10 })).not.toBeNull(); // prettier-ignore
      await sleep(1000); // every connection sends a few requests meanwhile
    } finally {
      unblockChecks();
    }
    expect(await waitUntil(async () => (await stateOf(be2().address)) === 'up', { timeoutMs: 5000 })).not.toBeNull(); // prettier-ignore
    const conns = await client.stop();
    const reselect1 = await reselects();
    const s2 = summary(conns, 'be2');
    const others = conns.filter((c) => c.first !== 'be2');
    console.log(
      `flapping, grace 0: be2 connections ${s2.connections}, broken ${s2.broken} (${[...new Set(conns.filter((c) => c.broken).map((c) => c.broken))].join(', ')}), failed requests ${s2.failed}; ` +
        `other connections ${others.length}, broken ${others.filter((c) => c.broken).length}; ct_reselect +${reselect1 - reselect0}`,
    );
    expect(s2.connections).toBeGreaterThan(0);
    expect(reselect1 - reselect0).toBeGreaterThanOrEqual(BigInt(s2.connections));
    expect(s2.broken).toBe(s2.connections);
    expect(others.filter((c) => c.broken !== null)).toEqual([]);
    expect(daemon.child.exitCode).toBeNull();
  }, 30000);
});
