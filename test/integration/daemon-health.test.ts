// Daemon health checks on the real kernel: a stopped nginx leaves the datapath within interval x fall and
// gets no request afterwards (draining for the default down grace, test/integration/daemon-health-flap.test.ts);
// restarted, it comes back after rise checks and takes traffic again.
import type { KernelDatapath } from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

const CHECK = { intervalMs: 300, timeoutMs: 300, rise: 2, fall: 2 };
/** The monitor's jitter is ±10 % per interval. */
const JITTER = 0.1;

describePrivileged('daemon: health checks take a backend out and bring it back', () => {
  const lab = new DaemonLab({ tag: 'h', backends: 3 });
  let daemon: DaemonProcess;
  let dp: KernelDatapath;

  const stateOf = async (address: string) =>
    (await dp.listBackends()).find((b) => b.address === address)?.state ?? 'missing';
  const packetsTo = async (address: string) => {
    const b = (await dp.listBackends()).find((x) => x.address === address)!;
    return (await dp.counters()).backends.get(b.id)?.packets ?? 0n;
  };
  const metric = async (re: RegExp) => Number(re.exec((await lab.admin('/metrics')).body)?.[1]);

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3], healthCheck: CHECK }));
    daemon = await lab.startDaemon();
    dp = lab.adopt();
    const allUp = await waitUntil(
      async () =>
        (await lab.state()).health.filter((h) => h.status === 'up' && h.checks >= CHECK.rise).length === 3,
      { timeoutMs: 10000 },
    );
    if (allUp === null) throw new Error(`health checks never passed:\n${lab.logTail(daemon)}`);
  }, 90000);

  afterAll(async () => {
    dp?.close();
    await lab.cleanup();
  }, 30000);

  it('a stopped nginx is taken out within interval x fall; no request reaches it afterwards', async () => {
    const be2 = lab.backend(2).address;
    expect(await stateOf(be2)).toBe('up');
    const t0 = performance.now();
    await lab.stopNginx(2);
    // Out of new-flow selection: draining (it keeps established flows for healthCheck.downGraceSeconds).
    const downMs = await waitUntil(async () => (await stateOf(be2)) === 'draining', {
      timeoutMs: 10000,
      intervalMs: 5,
    });
    expect(downMs).not.toBeNull();
    const total = performance.now() - t0;
    const bound = CHECK.intervalMs * CHECK.fall * (1 + JITTER) + CHECK.timeoutMs;
    console.log(
      `health-out time: ${total.toFixed(0)} ms from stopping nginx to "draining" in the datapath (interval ${CHECK.intervalMs} x fall ${CHECK.fall} = ${CHECK.intervalMs * CHECK.fall} ms, with jitter and timeout ${bound.toFixed(0)} ms)`,
    );
    // Generous slack for 2 shared cores; the printed figure is the measurement.
    expect(total).toBeLessThan(bound + 3000);
    const before = await packetsTo(be2);
    const r = await lab.wrk({ seconds: 2 });
    expect(r.requests).toBeGreaterThan(50);
    expect(r.errorTotal).toBe(0);
    expect(r.perBackend.be2).toBeUndefined();
    expect(r.perBackend.be1).toBeGreaterThan(0);
    expect(r.perBackend.be3).toBeGreaterThan(0);
    // The datapath sent it nothing at all (health checks do not pass through the balancer).
    expect(await packetsTo(be2)).toBe(before);
    expect(await metric(/peak_xdp_vip_usable_backends\{vip="web"\} (\d+)/)).toBe(2);
    expect(await metric(new RegExp(`peak_xdp_health_status\\{vip="web",backend="${be2.replace(/\./g, '\\.')}",type="http"\\} (\\d+)`))).toBe(0); // prettier-ignore
    const cli = await lab.cliJson<{ address: string; state: string }[]>(['backends']);
    expect(cli.find((b) => b.address === be2)?.state).toBe('draining');
  }, 30000);

  it('a restarted nginx comes back after rise checks and takes traffic again', async () => {
    const be2 = lab.backend(2).address;
    const t0 = performance.now();
    lab.startNginx(2);
    const upMs = await waitUntil(async () => (await stateOf(be2)) === 'up', {
      timeoutMs: 10000,
      intervalMs: 5,
    });
    expect(upMs).not.toBeNull();
    const total = performance.now() - t0;
    console.log(
      `health-in time: ${total.toFixed(0)} ms from starting nginx to "up" in the datapath (interval ${CHECK.intervalMs} x rise ${CHECK.rise})`,
    );
    // It cannot come back before `rise` consecutive good checks.
    const h = (await lab.state()).health.find((x) => x.address === be2)!;
    expect(h.status).toBe('up');
    expect(total).toBeGreaterThanOrEqual(CHECK.intervalMs * (CHECK.rise - 1) * (1 - JITTER));
    const before = await packetsTo(be2);
    const r = await lab.wrk({ seconds: 2 });
    expect(r.errorTotal).toBe(0);
    expect(r.perBackend.be2).toBeGreaterThan(0);
    expect(await packetsTo(be2)).toBeGreaterThan(before);
    expect(await metric(/peak_xdp_vip_usable_backends\{vip="web"\} (\d+)/)).toBe(3);
    expect(daemon.child.exitCode).toBeNull();
  }, 30000);
});
