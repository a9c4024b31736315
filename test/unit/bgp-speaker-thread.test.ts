// The BGP speaker on its own event loop: the host (worker side) over a MessageChannel; BgpSpeakerThread with
// the built worker against raw peers in child processes: KEEPALIVEs on time while this thread is blocked (and
// the in-process speaker's are not), status from the pushed cache, worker death -> restart, graceful stop,
// TCP MD5 set by the addon inside the worker (active and passive).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { CeaseSub, ErrCode } from '../../src/bgp/codec';
import { BgpSpeaker } from '../../src/bgp/speaker';
import { hostSpeaker } from '../../src/bgp/speaker-host';
import { md5BgpSockets } from '../../src/datapath/bgp-sockets';
import type { FromSpeaker } from '../../src/bgp/speaker-protocol';
import { BgpSpeakerThread, ThreadLogger } from '../../src/bgp/speaker-thread';
import { packageRoot } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { keepaliveGaps, RawBgpPeer } from '../helpers/raw-bgp-peer';
import { RawPeerProcess } from '../helpers/raw-bgp-peer-process';
import { setTimeout as sleep } from 'node:timers/promises';
import { testPorts } from '../helpers/ports';

jest.setTimeout(60000);

/** The built worker (the daemon runs dist/ too): build with npx tsc -p tsconfig.build.json. */
const WORKER = join(packageRoot, 'dist', 'src', 'bgp', 'speaker-worker.js');
const base = testPorts(4);

async function waitFor(what: string, pred: () => boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
  return Date.now() - t0;
}

/** Blocks this thread (a table build, a huge config parse) for `ms`. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x += Math.sqrt(x + 1);
  expect(x).toBeGreaterThan(0);
}

const peerCfg = (port: number, extra: Record<string, unknown> = {}) => ({
  address: '127.0.0.1',
  asn: 65000,
  port,
  holdTime: 3,
  families: ['ipv4' as const],
  nextHop4: '192.0.2.2',
  ...extra,
});
const ROUTES = Array.from({ length: 300 }, (_, i) => ({ prefix: `10.${100 + (i >> 8)}.${i & 255}.1/32` }));

/** A logger that keeps what it was given (the worker's records arrive here as messages). */
function recordingLogger(): ThreadLogger & { lines: { level: string; msg?: string; obj: object }[] } {
  const lines: { level: string; msg?: string; obj: object }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, msg, obj });
  return { lines, info: at('info'), warn: at('warn'), debug: at('debug'), error: at('error') };
}

describe('hostSpeaker (the worker side) over a MessageChannel', () => {
  it('start -> started + status; routes; a session error names the peer; bad routes; stop -> withdraw, CEASE, stopped', async () => {
    const raw = new RawBgpPeer({ host: '127.0.0.1', port: base, asn: 65000, routerId: '10.255.0.1', holdTime: 3 }); // prettier-ignore
    await raw.listen();
    const { port1, port2 } = new MessageChannel();
    const got: FromSpeaker[] = [];
    port2.on('message', (m: FromSpeaker) => got.push(m));
    const host = hostSpeaker({
      port: port1,
      init: {
        options: { asn: 65001, routerId: '10.255.0.2', peers: [peerCfg(base)] },
        debug: false,
        statusEveryMs: 100,
      },
    });
    try {
      port2.postMessage({ t: 'start' });
      await waitFor('started', () => got.some((m) => m.t === 'started'), 5000);
      port2.postMessage({ t: 'routes', routes: ROUTES.slice(0, 3) });
      await waitFor('announced', () => raw.announced === 3, 5000);
      const last = (): FromSpeaker & { t: 'status' } =>
        got.filter((m): m is FromSpeaker & { t: 'status' } => m.t === 'status').at(-1)!;
      await waitFor('status pushed', () => last()?.status.peers[0]?.announced.length === 3, 3000);
      expect(last().status.peers[0]!.state).toBe('Established');
      expect(got.some((m) => m.t === 'peerUp' && m.peer === '127.0.0.1')).toBe(true);
      expect(got.some((m) => m.t === 'log' && m.msg === 'bgp: established')).toBe(true);
      // A session's 'error' (what the daemon-isolation test delivers from the harness) becomes this message.
      const session = (host.speaker as unknown as { peers: { session: NodeJS.EventEmitter }[] }).peers[0]!
        .session;
      session.emit('error', new Error('injected'));
      await waitFor('error message', () => got.some((m) => m.t === 'error'), 2000);
      expect(got.find((m) => m.t === 'error')).toEqual({ t: 'error', error: 'bgp peer 127.0.0.1: injected' });
      port2.postMessage({ t: 'routes', routes: [{ prefix: '10.0.0.300/32' }] });
      await waitFor('bad routes', () => got.some((m) => m.t === 'error' && /^setRoutes: routes\[0\]\.prefix/.test(m.error)), 2000); // prettier-ignore
      port2.postMessage({ t: 'stop' });
      await waitFor('stopped', () => got.some((m) => m.t === 'stopped'), 5000);
      expect(raw.events.find((e) => e.ev === 'notification')).toEqual(
        expect.objectContaining({ code: ErrCode.CEASE, subcode: CeaseSub.ADMIN_SHUTDOWN }),
      );
      expect(raw.announced).toBe(0);
    } finally {
      host.close();
      port1.close();
      port2.close();
      await raw.close();
    }
  });
});

describe('BgpSpeakerThread (built worker) against raw peers in child processes', () => {
  let threadPeer: RawPeerProcess;
  let inprocPeer: RawPeerProcess;
  let thread: BgpSpeakerThread;
  let inproc: BgpSpeaker;
  const log = recordingLogger();
  const events: string[] = [];

  beforeAll(async () => {
    expect({ worker: WORKER, built: existsSync(WORKER) }).toEqual({ worker: WORKER, built: true });
    const raw = { host: '127.0.0.1', asn: 65000, routerId: '10.255.0.1', holdTime: 3 };
    threadPeer = await RawPeerProcess.start({ ...raw, port: base + 1 });
    inprocPeer = await RawPeerProcess.start({ ...raw, port: base + 2 });
    thread = new BgpSpeakerThread({
      asn: 65001,
      routerId: '10.255.0.2',
      peers: [peerCfg(base + 1)],
      backoffMinMs: 100,
      logger: log,
      workerPath: WORKER,
      restartMinMs: 100,
    });
    thread.on('peerUp', (p: string) => events.push(`up ${p}`));
    thread.on('peerDown', (p: string) => events.push(`down ${p}`));
    thread.on('error', (e: Error) => events.push(`error ${e.message}`));
    inproc = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.3',
      peers: [peerCfg(base + 2)],
      backoffMinMs: 100,
    });
    await thread.start();
    await inproc.start();
    thread.setRoutes(ROUTES);
    inproc.setRoutes(ROUTES);
    await waitFor(
      'both announced',
      () => threadPeer.announced === 300 && inprocPeer.announced === 300,
      10000,
    );
  });

  afterAll(async () => {
    await thread?.stop();
    await inproc?.stop();
    await threadPeer?.stop();
    await inprocPeer?.stop();
  });

  it('status() comes from the pushed cache, with the shape of the in-process speaker', async () => {
    await waitFor('cache', () => thread.status().peers[0]?.announced.length === 300, 3000);
    const t = thread.status();
    const i = inproc.status();
    expect(Object.keys(t)).toEqual(Object.keys(i));
    expect(Object.keys(t.peers[0]!)).toEqual(Object.keys(i.peers[0]!));
    expect(t.desired).toEqual(i.desired);
    expect(t.peers[0]!.state).toBe('Established');
    expect(t.peers[0]!.negotiatedHoldTime).toBe(3);
    expect(events).toContain('up 127.0.0.1');
    expect(log.lines.some((l) => l.msg === 'bgp: established')).toBe(true);
  });

  it('this thread blocked 4.5 s (a table build): the worker keeps KEEPALIVEs under 1.5 s apart; the in-process speaker does not', async () => {
    await sleep(1200);
    const t0 = Date.now();
    busy(4500);
    await sleep(1500);
    const t1 = Date.now();
    const w = keepaliveGaps(threadPeer.events, t0 - 1000, t1);
    const p = keepaliveGaps(inprocPeer.events, t0 - 1000, t1);
    const expired = inproc.status().peers[0]!.lastError ?? 'none';
    console.log(
      `[stall] this thread blocked 4500 ms: worker speaker max KEEPALIVE gap ${w.maxGap} ms (${w.count} KEEPALIVEs); in-process speaker ${p.maxGap} ms (last error: ${expired})`,
    );
    expect(w.count).toBeGreaterThanOrEqual(5);
    expect(w.maxGap).toBeLessThan(1500);
    // The failure mode the worker removes, measured on the same stall.
    expect(p.maxGap).toBeGreaterThan(3000);
    const st = thread.status().peers[0]!;
    expect(st.state).toBe('Established');
    expect(st.establishedCount).toBe(1);
    expect(threadPeer.events.filter((e) => e.ev === 'notification')).toEqual([]);
  });

  it('the worker dies: logged, counted, reported, restarted with the R bit; the session and routes come back', async () => {
    const opens = threadPeer.events.filter((e) => e.ev === 'open').length;
    const w = (thread as unknown as { worker: { terminate(): Promise<number> } }).worker;
    await w.terminate();
    const back = await waitFor(
      'restarted and re-announced',
      () =>
        thread.restarts === 1 &&
        threadPeer.events.filter((e) => e.ev === 'open').length === opens + 1 &&
        threadPeer.established &&
        threadPeer.announced === 300,
      10000,
    );
    console.log(`[restart] worker terminated: session up and 300 routes re-announced after ${back} ms`);
    expect(threadPeer.events.filter((e) => e.ev === 'open').at(-1)).toEqual(
      expect.objectContaining({ restarted: true, holdTime: 3 }),
    );
    expect(events).toContain('down 127.0.0.1');
    expect(events.some((e) => /^error BGP speaker worker died \(exit code 1\); restart 1/.test(e))).toBe(
      true,
    );
    expect(log.lines.some((l) => l.level === 'error' && /worker died/.test(l.msg ?? ''))).toBe(true);
    await waitFor('status Established again', () => thread.status().peers[0]!.state === 'Established', 3000);
    expect(thread.status().peers[0]!.announced.length).toBe(300);
  });

  it('stop(): withdraw, CEASE, the worker ends', async () => {
    await thread.stop();
    // The peer's events come through its own process: give them a moment to arrive here.
    await waitFor('CEASE seen', () => threadPeer.events.some((e) => e.ev === 'notification'), 3000);
    const last = threadPeer.events.filter((e) => e.ev === 'notification').at(-1);
    expect(last).toEqual(expect.objectContaining({ code: ErrCode.CEASE, subcode: CeaseSub.ADMIN_SHUTDOWN }));
    expect(threadPeer.announced).toBe(0);
    expect((thread as unknown as { worker: unknown }).worker).toBeNull();
    expect(thread.restarts).toBe(1);
  });
});

describePrivileged('BgpSpeakerThread: TCP MD5 through the addon inside the worker', () => {
  const key = 'peak-md5-worker';
  const router = (o: { passive: boolean; port: number; password: string }): BgpSpeaker =>
    new BgpSpeaker({
      asn: 65000,
      routerId: '10.255.0.1',
      ...(o.passive ? { listen: { address: '127.0.0.1', port: o.port } } : {}),
      peers: [
        {
          address: '127.0.0.1',
          asn: 65001,
          port: o.port,
          passive: o.passive,
          password: o.password,
          holdTime: 3,
          families: ['ipv4'],
        },
      ],
      backoffMinMs: 100,
      // This side is built here, not in a worker: it gets the native socket factory the way a root does.
      sockets: md5BgpSockets,
    });
  const lb = (o: { passive: boolean; port: number; password: string }): BgpSpeakerThread =>
    new BgpSpeakerThread({
      asn: 65001,
      routerId: '10.255.0.2',
      ...(o.passive ? { listen: { address: '127.0.0.1', port: o.port } } : {}),
      peers: [{ ...peerCfg(o.port), passive: o.passive, password: o.password }],
      backoffMinMs: 100,
      workerPath: WORKER,
    });

  it.each([
    ['active (native socket + connect in the worker)', false],
    ['passive (key on the worker listening socket)', true],
  ])('%s: the right key establishes, a wrong one does not', async (_name, lbPassive) => {
    for (const [password, up] of [
      [key, true],
      ['wrong-key', false],
    ] as const) {
      const port = base + 3;
      const r = router({ passive: !lbPassive, port, password: key });
      const t = lb({ passive: lbPassive, port, password });
      try {
        if (!lbPassive) await r.start();
        await t.start();
        if (lbPassive) await r.start();
        if (up)
          await waitFor('established over MD5', () => t.status().peers[0]?.state === 'Established', 8000);
        else {
          await sleep(2500);
          expect(t.status().peers[0]!.state).not.toBe('Established');
          expect(r.status().peers[0]!.state).not.toBe('Established');
        }
      } finally {
        await t.stop();
        await r.stop();
      }
    }
  });
});
