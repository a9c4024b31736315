// Daemon reload on the real kernel: file rewrite and SIGHUP add / drain / remove backends under wrk; a bad
// config is rejected whole and the old state stays in the maps; fields that need a restart are refused; files
// beyond the document bounds (size, alias bombs, FIFOs) are refused on reload and at start; so is a backend that
// is the node's own address (known only to the daemon); a secret is never echoed in /readyz, /state or the log.
import { execFileSync } from 'node:child_process';
import { readFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, LB_ADDRESS, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { setTimeout as sleep } from 'node:timers/promises';
import { signalPid } from '../../scripts/lib/pids';

interface CliBackend {
  id: number;
  address: string;
  state: string;
  vip: { name: string | null; address: string; port: number; protocol: string } | null;
  share: number;
}

/** What the datapath holds: backends by address and the VIP's table (backend ids per slot). */
async function snapshot(dp: KernelDatapath): Promise<{
  backends: Map<string, { id: number; state: string }>;
  vips: string;
  table: number[];
}> {
  const vips = await dp.listVips();
  const table = vips[0] ? await dp.readTable(vips[0].id) : null;
  return {
    backends: new Map((await dp.listBackends()).map((b) => [b.address, { id: b.id, state: b.state }])),
    vips: JSON.stringify(vips),
    table: table ? [...table] : [],
  };
}

describePrivileged('daemon: reload (file and SIGHUP) under load; bad configs rejected whole', () => {
  const lab = new DaemonLab({ tag: 'r', backends: 4 });
  let daemon: DaemonProcess;
  let dp: KernelDatapath;
  const addr = (i: number) => lab.backend(i).address;

  /** Waits until the datapath satisfies `fn`; returns the elapsed ms (fails the test on timeout). */
  async function until(
    what: string,
    fn: (s: Awaited<ReturnType<typeof snapshot>>) => boolean,
  ): Promise<number> {
    const ms = await waitUntil(async () => fn(await snapshot(dp)), { timeoutMs: 10000, intervalMs: 5 });
    if (ms === null) throw new Error(`datapath never showed: ${what}\n${lab.logTail(daemon)}`);
    return ms;
  }

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    daemon = await lab.startDaemon();
    dp = lab.adopt();
  }, 90000);

  afterAll(async () => {
    dp?.close();
    await lab.cleanup();
  }, 30000);

  it('a file rewrite adds a backend while wrk runs: no errors, the new backend gets traffic', async () => {
    const load = lab.wrk({ seconds: 5 });
    await sleep(1500);
    lab.writeConfig(lab.config({ backends: [1, 2, 3, 4] }));
    const ms = await until('be4 up and in the table', (s) => {
      const b = s.backends.get(addr(4));
      return b?.state === 'up' && s.table.includes(b.id);
    });
    console.log(
      `reload-to-datapath (file rewrite, add a backend; includes the 200 ms debounce): ${ms.toFixed(0)} ms`,
    );
    const r = await load;
    console.log(
      `wrk during add: ${r.requests} requests, errors ${JSON.stringify(r.errors)}, per backend ${JSON.stringify(r.perBackend)}`,
    );
    expect(r.requests).toBeGreaterThan(100);
    expect(r.errorTotal).toBe(0);
    for (const b of ['be1', 'be2', 'be3', 'be4']) expect(r.perBackend[b]).toBeGreaterThan(0);
    const cli = await lab.cliJson<CliBackend[]>(['backends']);
    expect(cli.map((b) => b.address).sort()).toEqual([1, 2, 3, 4].map(addr).sort());
    for (const b of cli) {
      expect(b.state).toBe('up');
      expect(b.vip?.name).toBe('web');
      expect(b.share).toBeGreaterThan(0.15);
    }
  }, 30000);

  it('SIGHUP: drain first, then remove a backend while wrk runs: zero errors', async () => {
    const reloads = async () =>
      Number(
        /peak_xdp_config_reloads_total\{result="ok",trigger="signal"\} (\d+)/.exec(
          (await lab.admin('/metrics')).body,
        )?.[1] ?? 0,
      );
    const signalled0 = await reloads();
    const load = lab.wrk({ seconds: 6 });
    await sleep(1000);
    // The watcher would also see the rewrite after its 200 ms debounce: SIGHUP at once is applied first.
    lab.writeConfig(lab.config({ backends: [1, 2, 3, 4], drain: [4] }));
    signalPid(daemon.pid, 'SIGHUP');
    // Draining keeps its table slots (the datapath skips it for new flows; established ones stay).
    const drainMs = await until('be4 draining', (s) => s.backends.get(addr(4))?.state === 'draining');
    console.log(`reload-to-datapath (SIGHUP, drain): ${drainMs.toFixed(0)} ms`);
    // Connections are short (Connection: close): a second lets every flow on be4 finish.
    await sleep(1500);
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    signalPid(daemon.pid, 'SIGHUP');
    const removeMs = await until('be4 removed', (s) => !s.backends.has(addr(4)));
    console.log(`reload-to-datapath (SIGHUP, remove): ${removeMs.toFixed(0)} ms`);
    const r = await load;
    console.log(
      `wrk during drain + remove: ${r.requests} requests, errors ${JSON.stringify(r.errors)}, per backend ${JSON.stringify(r.perBackend)}`,
    );
    expect(r.requests).toBeGreaterThan(100);
    expect(r.errorTotal).toBe(0);
    expect(await reloads()).toBeGreaterThanOrEqual(signalled0 + 2);
    const cli = await lab.cliJson<CliBackend[]>(['backends']);
    expect(cli.map((b) => b.address).sort()).toEqual([1, 2, 3].map(addr).sort());
  }, 30000);

  it('removing a backend without draining breaks at most the flows in flight to it (counted)', async () => {
    const load = lab.wrk({ seconds: 4, connections: 4 });
    await sleep(1500);
    const s0 = await snapshot(dp);
    const be3 = s0.backends.get(addr(3))!.id;
    const inFlight = (await dp.conntrack()).filter((e) => e.backendId === be3).length;
    lab.writeConfig(lab.config({ backends: [1, 2] }));
    signalPid(daemon.pid, 'SIGHUP');
    await until('be3 removed', (s) => !s.backends.has(addr(3)));
    const r = await load;
    console.log(
      `abrupt removal: ${r.errorTotal} failed requests of ${r.requests} (${inFlight} connection-table entries, open or recently closed, pointed at the removed backend; wrk keeps 4 connections)`,
    );
    // Only connections open at the moment of removal can break: at most wrk's 4.
    expect(r.errorTotal).toBeLessThanOrEqual(4);
    expect(r.perBackend.be1).toBeGreaterThan(0);
    expect(r.perBackend.be2).toBeGreaterThan(0);
  }, 30000);

  it('a bad config is rejected whole: maps unchanged, /readyz and /state name the field', async () => {
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    signalPid(daemon.pid, 'SIGHUP');
    await until('be3 back in the table', (s) => {
      const b = s.backends.get(addr(3));
      return b?.state === 'up' && s.table.includes(b.id);
    });
    // The watcher's own reload of the same file follows 200 ms later (unchanged: no operation).
    await sleep(400);
    const before = await snapshot(dp);
    // A valid change (drop be2) and an invalid field in the same file: nothing of it may apply.
    lab.writeConfig(lab.config({ backends: [1, 3], vipExtra: { tableSize: 250 } }));
    signalPid(daemon.pid, 'SIGHUP');
    const seen = await waitUntil(async () => (await lab.state()).reloadError !== null, { timeoutMs: 5000 });
    expect(seen).not.toBeNull();
    const st = await lab.state();
    expect(st.reloadError).toContain('vips[0].tableSize');
    expect(st.reloadError).toContain('250');
    const ready = await lab.admin('/readyz');
    // Still serving the previous config: ready, with the rejection listed.
    expect(ready.status).toBe(200);
    const rz = JSON.parse(ready.body) as { ready: boolean; reasons: string[] };
    expect(rz.ready).toBe(true);
    expect(rz.reasons.join('\n')).toMatch(
      /config reload rejected, previous config in force: .*vips\[0\]\.tableSize/,
    );
    await sleep(500);
    const after = await snapshot(dp);
    expect(after.vips).toBe(before.vips);
    expect([...after.backends]).toEqual([...before.backends]);
    expect(after.table).toEqual(before.table);
    const m = (await lab.admin('/metrics')).body;
    expect(m).toMatch(/peak_xdp_config_reloads_total\{result="rejected",trigger="signal"\} [1-9]/);
    // Traffic still reaches all three backends of the old config.
    const bodies = await lab.curlUntilSeen(['be1', 'be2', 'be3']);
    expect([...bodies.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
  }, 30000);

  it('a syntax error and a restart-only field are rejected too; a good file clears the error', async () => {
    const before = await snapshot(dp);
    lab.writeConfig('interface: eth0\nvips: [ {name: web\n');
    signalPid(daemon.pid, 'SIGHUP');
    expect(
      await waitUntil(async () => /YAML syntax error/.test((await lab.state()).reloadError ?? ''), {
        timeoutMs: 5000,
      }),
    ).not.toBeNull();
    const cfg = lab.config({ backends: [1] });
    lab.writeConfig({ ...cfg, admin: { listen: '127.0.0.1:9471' } });
    signalPid(daemon.pid, 'SIGHUP');
    expect(await waitUntil(async () => /admin: changing these needs a daemon restart/.test((await lab.state()).reloadError ?? ''), { timeoutMs: 5000 })).not.toBeNull(); // prettier-ignore
    const after = await snapshot(dp);
    expect([...after.backends]).toEqual([...before.backends]);
    expect(after.table).toEqual(before.table);
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    signalPid(daemon.pid, 'SIGHUP');
    expect(
      await waitUntil(async () => (await lab.state()).reloadError === null, { timeoutMs: 5000 }),
    ).not.toBeNull();
    expect((await lab.state()).readiness).toEqual({ ready: true, reasons: [] });
    expect(daemon.child.exitCode).toBeNull();
  }, 30000);

  it('a 50 MiB file, an alias bomb and a FIFO are refused on reload naming the bound; such a file does not start a daemon', async () => {
    const before = await snapshot(dp);
    const laughs = ['interface: eth0', 'a: &a [x, x, x, x, x, x, x, x, x]'];
    for (const [p, c] of ['ab', 'bc', 'cd', 'de', 'ef', 'fg', 'gh', 'hi'])
      laughs.push(`${c}: &${c} [${Array(9).fill(`*${p}`).join(', ')}]`);
    const cases: [string, (tmp: string) => void, RegExp][] = [
      [
        '50 MiB (sparse)',
        (tmp) => {
          writeFileSync(tmp, '');
          truncateSync(tmp, 50 << 20);
        },
        /is 52428800 bytes \(50\.0 MiB\): more than the 8388608 bytes/,
      ],
      [
        'alias bomb',
        (tmp) => writeFileSync(tmp, laughs.join('\n') + '\n'),
        /more than 1,048,576 values \(the bound/,
      ],
      ['FIFO', (tmp) => execFileSync('mkfifo', [tmp]), /a FIFO, not a regular file/],
    ];
    for (const [what, make, re] of cases) {
      const tmp = `${lab.configPath}.tmp`;
      make(tmp);
      renameSync(tmp, lab.configPath);
      signalPid(daemon.pid, 'SIGHUP');
      const ms = await waitUntil(async () => re.test((await lab.state()).reloadError ?? ''), {
        timeoutMs: 5000,
      });
      expect({ what, refused: ms !== null }).toEqual({ what, refused: true });
      const rz = JSON.parse((await lab.admin('/readyz')).body) as { ready: boolean; reasons: string[] };
      expect(rz.reasons.join('\n')).toMatch(/config reload rejected, previous config in force/);
      expect(rz.reasons.join('\n')).toMatch(re);
    }
    const after = await snapshot(dp);
    expect([...after.backends]).toEqual([...before.backends]);
    expect(after.table).toEqual(before.table);
    expect([...(await lab.curlUntilSeen(['be1', 'be2', 'be3'])).keys()].sort()).toEqual([
      'be1',
      'be2',
      'be3',
    ]);
    expect(daemon.child.exitCode).toBeNull();

    // At start the same file is fatal, with the same message (and nothing is loaded or attached).
    const huge = join(lab.dir, 'huge.yaml');
    writeFileSync(huge, '');
    truncateSync(huge, 50 << 20);
    const r = await lab.cli(['daemon', '--config', huge], 20000);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(
      /huge\.yaml\\?" is 52428800 bytes \(50\.0 MiB\): more than the 8388608 bytes/,
    );

    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    signalPid(daemon.pid, 'SIGHUP');
    expect(
      await waitUntil(async () => (await lab.state()).reloadError === null, { timeoutMs: 5000 }),
    ).not.toBeNull();
  }, 60000);

  it("a backend that is the node's own address is refused on reload and at start; a bad password is never echoed", async () => {
    const before = await snapshot(dp);
    const own = lab.config({ backends: [1, 2] });
    (own.vips as { backends: { address: string }[] }[])[0]!.backends.push({ address: LB_ADDRESS });
    const why = `vips[0].backends[2].address: "${LB_ADDRESS}" is an address of this node's interface eth0 (the balancer would send the VIP's traffic to itself)`;
    lab.writeConfig(own);
    signalPid(daemon.pid, 'SIGHUP');
    expect(
      await waitUntil(async () => (await lab.state()).reloadError === why, { timeoutMs: 5000 }),
    ).not.toBeNull();
    const rz = JSON.parse((await lab.admin('/readyz')).body) as { ready: boolean; reasons: string[] };
    expect(rz.reasons).toContain(`config reload rejected, previous config in force: ${why}`);

    // An unquoted numeric MD5 password: rejected naming the field, the value nowhere.
    const secret = '918273645';
    const bgp = {
      asn: 65001,
      routerId: '10.10.2.2',
      peers: [{ address: '10.10.2.1', asn: 65000, password: Number(secret) }],
    };
    lab.writeConfig({ ...lab.config({ backends: [1, 2, 3] }), bgp });
    signalPid(daemon.pid, 'SIGHUP');
    const pw = 'bgp.peers[0].password: the secret value (a number) is not a string (write it in quotes)';
    expect(
      await waitUntil(async () => (await lab.state()).reloadError === pw, { timeoutMs: 5000 }),
    ).not.toBeNull();
    expect((await lab.admin('/readyz')).body).toContain(pw);
    for (const text of [
      (await lab.admin('/readyz')).body,
      (await lab.admin('/state')).body,
      readFileSync(daemon.log, 'utf8'),
    ])
      expect(text).not.toContain(secret);
    const after = await snapshot(dp);
    expect([...after.backends]).toEqual([...before.backends]);
    expect(after.table).toEqual(before.table);

    // At start the same file is fatal, with the same message, before anything is loaded (runs last: it needs
    // the running daemon gone, since one daemon owns the pin directory).
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    lab.writeConfig(own);
    const r = await lab.cli(['daemon', '--config', lab.configPath], 20000);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain(`config ${lab.configPath} rejected:`);
    expect(r.stdout + r.stderr).toContain(why);
  }, 60000);
});
