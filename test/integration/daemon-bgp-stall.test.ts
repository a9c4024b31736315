// The daemon's BGP sessions do not wait on its main thread: a raw BGP peer (hold 3 s, keepalive 1 s) in the
// router namespace records the arrival of every KEEPALIVE while the daemon applies the largest reload its
// limits allow and while it parses and rejects a huge config file; the main thread's stall is measured too
// (its event-loop lag from /metrics, and the longest wait for /healthz). A killed speaker worker is restarted.
import { DaemonHarness } from '../helpers/daemon-harness';
import { DaemonLab, LB_ADDRESS, runAsync, sleep, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { keepaliveGaps, RawEvent } from '../helpers/raw-bgp-peer';
import { RawPeerProcess } from '../helpers/raw-bgp-peer-process';

jest.setTimeout(180000);

/**
 * limits.maxVips of this lab, and the reload size: every VIP with the default table size (65,537 slots), one
 * backend. 512 keeps the reload near 20 s on 2 shared cores (1,024, the default limit, took 40 s here).
 */
const MAX_VIPS = 512;
/** VIPs in the rejected file (70,000 as in the incident; far over limits.maxVips). */
const HUGE_VIPS = 70_000;
const ROUTER = '10.10.2.1';
/** The acceptance bound: KEEPALIVEs every 1 s must never be more than 1.5 s apart. */
const MAX_GAP_MS = 1500;

interface StallState {
  reloadError: string | null;
  lastReconcile: { at: string } | null;
  desired: { vips: unknown[] } | null;
  componentErrors: Record<string, { count: number; last: string }>;
  bgp: { peers: { state: string; announced: string[] }[] } | null;
}

describePrivileged(
  'daemon: KEEPALIVEs and hold timers never wait on reloads, parsing or a worker restart',
  () => {
    const lab = new DaemonLab({ tag: 'k', backends: 1 });
    let peer: RawPeerProcess | null = null;
    let h: DaemonHarness | null = null;

    const vip = (i: number) => ({
      name: `v${i}`,
      address: `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      port: 80,
      protocol: 'tcp',
      backends: [{ address: lab.backend(1).address }],
    });
    /** The lab config with `n` VIPs in all (the lab's "web" and n - 1 more), no health checks. */
    const cfg = (n: number): Record<string, unknown> => {
      const base = lab.config({ backends: [1], healthCheck: null });
      return {
        ...base,
        limits: { maxVips: MAX_VIPS, maxBackends: 4 * MAX_VIPS, conntrackEntries: 65536 },
        bgp: { asn: 65001, routerId: LB_ADDRESS, peers: [{ address: ROUTER, asn: 65000, holdTime: 3 }] },
        vips: [...(base.vips as unknown[]), ...Array.from({ length: n - 1 }, (_, i) => vip(i + 1))],
      };
    };
    const state = () => h!.call<StallState>('state');
    const metric = async (name: string): Promise<number> => {
      const r = await lab.admin('/metrics');
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(r.body);
      if (!m) throw new Error(`${name} not in /metrics (HTTP ${r.status})`);
      return Number(m[1]);
    };
    const events = (): RawEvent[] => peer!.events;
    const count = (ev: RawEvent['ev']) => events().filter((e) => e.ev === ev).length;

    /**
     * Polls /healthz back to back (curl in the LB namespace, 60 s timeout) until stop(); resolves with the
     * longest answer time: how long the daemon's main thread could not answer.
     */
    function pollHealthz(): { stop(): Promise<number> } {
      let running = true;
      const done = (async () => {
        let longest = 0;
        while (running) {
          const t0 = performance.now();
          await runAsync('ip', ['netns', 'exec', lab.lb, 'curl', '-s', '-o', '/dev/null', '-m', '60', 'http://127.0.0.1:9470/healthz'], { timeoutMs: 65000 }); // prettier-ignore
          longest = Math.max(longest, performance.now() - t0);
          await sleep(20);
        }
        return longest;
      })();
      return {
        stop: async () => {
          running = false;
          return done;
        },
      };
    }

    beforeAll(async () => {
      await lab.start();
      peer = await RawPeerProcess.start({
        netns: lab.router,
        host: ROUTER,
        port: 179,
        asn: 65000,
        routerId: ROUTER,
        holdTime: 3,
      });
      lab.writeConfig(cfg(1));
      h = await DaemonHarness.start({
        netns: lab.lb,
        configPath: lab.configPath,
        bpffs: lab.bpffs,
        dir: lab.dir,
      });
      const up = await waitUntil(() => peer!.established && peer!.announced === 1, { timeoutMs: 20000 });
      if (up === null) throw new Error(`no session to the raw peer:\n${h.logTail()}`);
    }, 90000);

    afterAll(async () => {
      await h?.stop().catch(() => undefined);
      await peer?.stop().catch(() => undefined);
      await lab.cleanup();
    }, 60000);

    it(`a reload from 1 to ${MAX_VIPS} VIPs (limits.maxVips, 65,537-slot tables): no KEEPALIVE gap over ${MAX_GAP_MS} ms while the main thread works`, async () => {
      await sleep(2500);
      await metric('nodejs_eventloop_lag_max_seconds'); // resets the lag histogram
      const healthz = pollHealthz();
      const t0 = Date.now();
      lab.writeConfig(cfg(MAX_VIPS));
      const applied = await waitUntil(() => peer!.announced === MAX_VIPS, {
        timeoutMs: 120000,
        intervalMs: 50,
      });
      if (applied === null) throw new Error(`${MAX_VIPS} routes never reached the peer:\n${h!.logTail()}`);
      const t1 = Date.now();
      await sleep(1500);
      const longestHealthz = await healthz.stop();
      const lagMs = (await metric('nodejs_eventloop_lag_max_seconds')) * 1000;
      const gaps = keepaliveGaps(events(), t0 - 1000, Date.now());
      console.log(
        `[stall] reload 1 -> ${MAX_VIPS} VIPs: announced to the peer after ${t1 - t0} ms; main thread: event-loop lag max ${lagMs.toFixed(0)} ms, longest /healthz wait ${longestHealthz.toFixed(0)} ms; BGP worker: max KEEPALIVE gap ${gaps.maxGap} ms over ${gaps.count} KEEPALIVEs (hold 3 s)`,
      );
      const st = await state();
      expect(st.desired?.vips.length).toBe(MAX_VIPS);
      // The reconcile now yields every few ms (its lag is printed above), so this case no longer stalls the main
      // thread past a KEEPALIVE interval; the 70,000-VIP parse below still does, and asserts that it did.
      expect(gaps.count).toBeGreaterThanOrEqual(Math.floor((Date.now() - t0) / 1000) - 2);
      expect(gaps.maxGap).toBeLessThan(MAX_GAP_MS);
      // One session all along: never reset, no NOTIFICATION either way.
      expect([count('open'), count('closed'), count('notification')]).toEqual([1, 0, 0]);
      expect(st.bgp!.peers[0]!.state).toBe('Established');
    });

    it(`a ${HUGE_VIPS.toLocaleString('en-US')}-VIP config file is parsed and rejected: no KEEPALIVE gap over ${MAX_GAP_MS} ms`, async () => {
      // JSON text in the YAML file (YAML's flow style): the parser the daemon uses for its config.
      const text = JSON.stringify({
        ...cfg(1),
        vips: Array.from({ length: HUGE_VIPS }, (_, i) => vip(i + 1)),
      });
      await sleep(1500);
      await metric('nodejs_eventloop_lag_max_seconds');
      const healthz = pollHealthz();
      const t0 = Date.now();
      lab.writeConfig(text);
      const rejected = await waitUntil(async () => /maxVips/.test((await state()).reloadError ?? ''), {
        timeoutMs: 90000,
        intervalMs: 100,
      });
      if (rejected === null) throw new Error(`the huge config was not rejected:\n${h!.logTail()}`);
      const t1 = Date.now();
      await sleep(1500);
      const longestHealthz = await healthz.stop();
      const lagMs = (await metric('nodejs_eventloop_lag_max_seconds')) * 1000;
      const gaps = keepaliveGaps(events(), t0 - 1000, Date.now());
      console.log(
        `[stall] ${(text.length / 2 ** 20).toFixed(1)} MiB config with ${HUGE_VIPS} VIPs rejected after ${t1 - t0} ms; main thread: event-loop lag max ${lagMs.toFixed(0)} ms, longest /healthz wait ${longestHealthz.toFixed(0)} ms; BGP worker: max KEEPALIVE gap ${gaps.maxGap} ms over ${gaps.count} KEEPALIVEs`,
      );
      expect((await state()).desired?.vips.length).toBe(MAX_VIPS);
      expect(lagMs).toBeGreaterThan(MAX_GAP_MS);
      expect(gaps.maxGap).toBeLessThan(MAX_GAP_MS);
      expect([count('open'), count('closed'), count('notification')]).toEqual([1, 0, 0]);
      expect(peer!.announced).toBe(MAX_VIPS);
    });

    it('the speaker worker dies: the daemon logs and counts it, restarts it; the session comes back with the R bit and every route', async () => {
      const t0 = Date.now();
      await h!.call('killBgpWorker');
      const back = await waitUntil(
        () => count('open') === 2 && peer!.established && peer!.announced === MAX_VIPS,
        { timeoutMs: 20000, intervalMs: 20 },
      );
      if (back === null) throw new Error(`no new session after the worker died:\n${h!.logTail()}`);
      console.log(
        `[restart] speaker worker killed: new session and ${MAX_VIPS} routes back after ${Date.now() - t0} ms`,
      );
      expect(h!.alive).toBe(true);
      expect(
        events()
          .filter((e) => e.ev === 'open')
          .at(-1),
      ).toEqual(expect.objectContaining({ restarted: true }));
      const st = await state();
      expect(st.componentErrors.bgp?.count).toBeGreaterThanOrEqual(1);
      expect(st.componentErrors.bgp?.last).toMatch(/BGP speaker worker died/);
      // The admin API re-serves a /metrics body rendered less than a second ago: poll past that.
      const counted = await waitUntil(
        async () => (await metric('peak_xdp_bgp_worker_restarts_total')) === 1,
        {
          timeoutMs: 5000,
          intervalMs: 250,
        },
      );
      expect(counted).not.toBeNull();
      await waitUntil(async () => (await state()).bgp?.peers[0]?.state === 'Established', {
        timeoutMs: 5000,
      });
      expect((await state()).bgp!.peers[0]!.announced.length).toBe(MAX_VIPS);
    });
  },
);
