// Daemon restart safety on the real kernel: kill -9 + restart under wrk loses nothing and adopts the pins
// unchanged; SIGTERM leaves forwarding running; --detach-on-exit detaches and removes the pins.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, sleep } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

/** Everything the datapath holds that a restart must not change. */
async function held(dp: KernelDatapath): Promise<string> {
  const vips = (await dp.listVips()).sort((a, b) => a.id - b.id);
  const tables = await Promise.all(vips.map(async (v) => [...((await dp.readTable(v.id)) ?? [])]));
  return JSON.stringify({
    config: await dp.readConfig(),
    vips,
    backends: (await dp.listBackends()).sort((a, b) => a.id - b.id),
    tables,
  });
}

describePrivileged('daemon: restart safety (kill -9, SIGTERM, --detach-on-exit)', () => {
  const lab = new DaemonLab({ tag: 's', backends: 3 });
  let daemon: DaemonProcess;

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    daemon = await lab.startDaemon();
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('kill -9 and restart under wrk: zero failed requests; the restart adopts the pins without changes', async () => {
    const dp = lab.adopt();
    let before: string;
    const progBefore = lab.lbXdpProgId();
    try {
      before = await held(dp);
    } finally {
      dp.close();
    }
    expect(progBefore).toBeGreaterThan(0);
    const load = lab.wrk({ seconds: 7 });
    await sleep(1500);
    expect(await lab.signalDaemon(daemon, 'SIGKILL')).toBe('SIGKILL');
    // No daemon for a second: the attached program keeps forwarding.
    await sleep(1000);
    daemon = await lab.startDaemon();
    const st = await lab.state();
    console.log(
      `restart adoption time: ${(daemon as DaemonProcess & { readyMs: number }).readyMs.toFixed(0)} ms from spawn to /readyz 200 (adopted: ${st.adopted})`,
    );
    expect(st.adopted).toBe(true);
    const r = await load;
    console.log(
      `wrk across kill -9 + restart: ${r.requests} requests, errors ${JSON.stringify(r.errors)}, per backend ${JSON.stringify(r.perBackend)}`,
    );
    expect(r.requests).toBeGreaterThan(100);
    expect(r.errorTotal).toBe(0);
    for (const b of ['be1', 'be2', 'be3']) expect(r.perBackend[b]).toBeGreaterThan(0);
    // The same program stays attached; VIP, backend and table ids are identical.
    expect(lab.lbXdpProgId()).toBe(progBefore);
    const dp2 = lab.adopt();
    try {
      expect(await held(dp2)).toBe(before);
    } finally {
      dp2.close();
    }
    const s2 = (await lab.admin('/state')).body;
    // The adopting reconcile found nothing to do.
    expect(JSON.parse(s2).lastReconcile).toMatchObject({ operations: 0, vipsUnchanged: 1 });
  }, 40000);

  it('SIGTERM exits 0 and leaves forwarding running', async () => {
    const prog = lab.lbXdpProgId();
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    expect(lab.lbXdpProgId()).toBe(prog);
    expect(existsSync(join(lab.pinDir, 'balancer'))).toBe(true);
    const seen = await lab.curlUntilSeen(['be1', 'be2', 'be3']);
    expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
  }, 30000);

  it('--detach-on-exit: SIGTERM detaches the program and removes the pins', async () => {
    daemon = await lab.startDaemon({ args: ['--detach-on-exit'] });
    expect((await lab.state()).adopted).toBe(true);
    expect(lab.lbXdpProgId()).toBeGreaterThan(0);
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    expect(lab.lbXdpProgId()).toBe(0);
    expect(existsSync(lab.pinDir)).toBe(false);
    // Nothing balances the VIP any more.
    expect(await lab.curl()).toBeNull();
    // The CLI says so.
    const r = await lab.cli(['status']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/nothing attached: no pinned balancer/);
  }, 30000);
});
