// Fail-open on the real kernel: nftables in both backend namespaces drops the LB's health checks while nginx
// keeps serving VIP traffic (which arrives encapsulated and is decapsulated by XDP before nftables). With
// failOpen (the default) new connections still succeed, spread over both backends; with failOpen: false they
// are dropped (drop_no_backend) until it is turned back on.
import type { KernelDatapath } from '../../src/datapath/kernel';
import {
  DaemonLab,
  DaemonProcess,
  LB_ADDRESS,
  runAsync,
  VIP,
  VIP_PORT,
  waitUntil,
} from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

const CHECK = {
  type: 'http',
  path: '/',
  intervalMs: 300,
  timeoutMs: 300,
  rise: 2,
  fall: 2,
  downGraceSeconds: 0,
};
const TABLE = 'peakfailopen';

describePrivileged('daemon: fail-open when every backend fails its health checks', () => {
  const lab = new DaemonLab({ tag: 'fo', backends: 2 });
  let daemon: DaemonProcess;
  let dp: KernelDatapath;

  const writeConfig = (failOpen: boolean): void =>
    lab.writeConfig(lab.config({ backends: [1, 2], vipExtra: { healthCheck: CHECK, failOpen } }));
  const states = async (): Promise<string[]> => (await dp.listBackends()).map((b) => b.state).sort();
  const metric = async (re: RegExp): Promise<number> => Number(re.exec((await lab.admin('/metrics')).body)?.[1] ?? NaN); // prettier-ignore
  const failOpenGauge = () => metric(/^peak_xdp_vip_fail_open\{vip="web"\} (\d+)$/m);
  const noBackendDrops = () =>
    metric(/^peak_xdp_datapath_events_total\{counter="drop_no_backend"\} (\d+)$/m).then((n) => (Number.isNaN(n) ? 0 : n)); // prettier-ignore
  /** `n` new connections from the client, 1 s connect timeout each: the bodies ("be1", ...) or null. */
  const connections = async (n: number): Promise<(string | null)[]> => {
    const out: (string | null)[] = [];
    for (let i = 0; i < n; i++) {
      const r = await runAsync(
        'ip',
        ['netns', 'exec', lab.client, 'curl', '-s', '--connect-timeout', '1', '-m', '2', `http://${VIP}:${VIP_PORT}/`], // prettier-ignore
        { timeoutMs: 5000 },
      );
      out.push(r.code === 0 ? r.stdout.trim() : null);
    }
    return out;
  };
  /** Drops (or stops dropping) TCP from the LB to port 80 in every backend: its checks, not VIP traffic. */
  const blockChecks = (on: boolean): void => {
    for (const b of lab.backends)
      if (on) {
        lab.ns(b.netns, 'nft', ['add', 'table', 'inet', TABLE]);
        lab.ns(b.netns, 'nft', ['add', 'chain', 'inet', TABLE, 'input', '{ type filter hook input priority 0; }']); // prettier-ignore
        lab.ns(b.netns, 'nft', ['add', 'rule', 'inet', TABLE, 'input', 'ip', 'saddr', LB_ADDRESS, 'tcp', 'dport', '80', 'drop']); // prettier-ignore
      } else lab.ns(b.netns, 'nft', ['delete', 'table', 'inet', TABLE]);
  };

  beforeAll(async () => {
    await lab.start();
    writeConfig(true);
    daemon = await lab.startDaemon();
    dp = lab.adopt();
    const allUp = await waitUntil(
      async () =>
        (await lab.state()).health.filter((h) => h.status === 'up' && h.checks >= CHECK.rise).length === 2,
      { timeoutMs: 10000 },
    );
    if (allUp === null) throw new Error(`health checks never passed:\n${lab.logTail(daemon)}`);
  }, 90000);

  afterAll(async () => {
    dp?.close();
    await lab.cleanup();
  }, 30000);

  it('checks blocked, nginx serving: all backends down by health, the VIP fails open and still serves', async () => {
    expect(await connections(4)).not.toContain(null);
    const t0 = performance.now();
    blockChecks(true);
    const openMs = await waitUntil(
      async () => {
        const st = await lab.state();
        return st.health.every((h) => h.status === 'down') && (await failOpenGauge()) === 1;
      },
      { timeoutMs: 10000, intervalMs: 50 },
    );
    expect(openMs).not.toBeNull();
    console.log(
      `fail-open: ${(performance.now() - t0).toFixed(0)} ms from blocking the checks to the VIP failing open ` +
        `(interval ${CHECK.intervalMs} x fall ${CHECK.fall}, timeout ${CHECK.timeoutMs})`,
    );
    const st = await lab.state();
    const web = (st.desired as unknown as { vips: { failOpen: boolean; usableBackends: number }[]; failOpenVips: string[] }); // prettier-ignore
    expect(web.vips[0]).toMatchObject({ failOpen: true, usableBackends: 2 });
    expect(web.failOpenVips).toEqual(['web']);
    expect(await states()).toEqual(['up', 'up']);
    expect(st.readiness.ready).toBe(true);
    const dropsBefore = await noBackendDrops();
    const got = await connections(30);
    expect(got.filter((b) => b === null)).toHaveLength(0);
    expect(new Set(got)).toEqual(new Set(['be1', 'be2']));
    expect(await noBackendDrops()).toBe(dropsBefore);
    expect(lab.logTail(daemon, 400)).toMatch(/VIP fails open/);
  }, 40000);

  it('failOpen: false (reload): the same failing checks drop every new connection; back on, they succeed', async () => {
    writeConfig(false);
    const closedMs = await waitUntil(async () => (await states()).every((s) => s === 'down'), {
      timeoutMs: 10000,
      intervalMs: 50,
    });
    expect(closedMs).not.toBeNull();
    // /metrics may serve a body up to 1 s old.
    expect(await waitUntil(async () => (await failOpenGauge()) === 0, { timeoutMs: 3000 })).not.toBeNull();
    const dropsBefore = await noBackendDrops();
    expect(await connections(3)).toEqual([null, null, null]);
    // Each refused SYN (and its retransmissions) was dropped for want of a backend.
    expect(await noBackendDrops()).toBeGreaterThanOrEqual(dropsBefore + 3);

    writeConfig(true);
    expect(await waitUntil(async () => (await states()).every((s) => s === 'up'), { timeoutMs: 10000, intervalMs: 50 })).not.toBeNull(); // prettier-ignore
    expect(await connections(6)).not.toContain(null);
  }, 40000);

  it('checks pass again: fail-open ends, health rules', async () => {
    blockChecks(false);
    expect(
      await waitUntil(
        async () =>
          (await lab.state()).health.every((h) => h.status === 'up') && (await failOpenGauge()) === 0,
        { timeoutMs: 10000, intervalMs: 50 },
      ),
    ).not.toBeNull();
    expect(await states()).toEqual(['up', 'up']);
    expect(await connections(4)).not.toContain(null);
    expect(lab.logTail(daemon, 400)).toMatch(/VIP no longer fails open/);
    expect(daemon.child.exitCode).toBeNull();
  }, 30000);
});
