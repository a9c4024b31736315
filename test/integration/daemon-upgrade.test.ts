// Upgrading over a balancer pinned by an older build (maps this build changed): the daemon loads this build's
// balancer aside, programs it, swaps it in atomically on the interface (XDP_FLAGS_REPLACE) and moves the pins.
// The "older build" is made from the running balancer's pins, as the change that added maglev_prev_tables and
// grew struct peak_config from 48 to 52 bytes left them: that map unpinned, and a 48-byte config map pinned in
// place of the real one (the old program keeps its own maps and forwards meanwhile).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, MapType, unpin } from '../../src/datapath/bpf';
import { BALANCER_PROGRAM, readPin } from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, sleep, type WrkResult } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

/** Turns the lab's pins into an older build's: no maglev_prev_tables, a 48-byte config value. */
function makePinsOlder(pinDir: string): void {
  const cur = BpfMap.fromPin(join(pinDir, 'config'));
  const held = cur.lookup(Buffer.alloc(4))!;
  cur.close();
  const old = BpfMap.create({
    type: MapType.ARRAY,
    keySize: 4,
    valueSize: 48,
    maxEntries: 1,
    name: 'config',
  });
  try {
    old.update(Buffer.alloc(4), held.subarray(0, 48));
    expect(unpin(join(pinDir, 'config'))).toBe(true);
    old.pin(join(pinDir, 'config'));
  } finally {
    old.close();
  }
  expect(unpin(join(pinDir, 'maglev_prev_tables'))).toBe(true);
}

const summary = (name: string, r: WrkResult): string =>
  `${name}: ${r.requests} requests, errors ${JSON.stringify(r.errors)}, per backend ${JSON.stringify(r.perBackend)}`;

describePrivileged('daemon: upgrade over a balancer pinned by an older build (replace path)', () => {
  const lab = new DaemonLab({ tag: 'upg', backends: 3 });
  let daemon: DaemonProcess;

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    daemon = await lab.startDaemon();
    // Version N exits (a DaemonSet's rolling update), leaving forwarding running.
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('`peak-xdp attach` leaves the older balancer forwarding (an empty one would not) and says why', async () => {
    makePinsOlder(lab.pinDir);
    const prog = lab.lbXdpProgId();
    const r = await lab.cli(['attach', '--interface', 'eth0', '--json']);
    console.log(`attach over older pins: exit ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      progId: prog,
      replaceDeferred: {
        reason: 'missing_map',
        // The CLI keeps a pinned balancer's size: its --max-* flags size a fresh one only.
        detail:
          "no map maglev_prev_tables; map config has key/value 4/48 bytes, flags 0 (this build's 4/52, flags 0)",
      },
    });
    expect(lab.lbXdpProgId()).toBe(prog);
    expect(readPin(join(lab.pinDir, 'maglev_prev_tables'), 'map')).toEqual({ kind: 'missing' });
  }, 30000);

  it('the daemon replaces it under load: zero failed requests, a new program id, the log line and the counter', async () => {
    const progBefore = lab.lbXdpProgId();
    expect(progBefore).toBeGreaterThan(0);
    // New connections (each placed by the program that sees its SYN) and keep-alive ones (established across
    // the swap: Maglev must keep them on their backend, the new program's connection table being empty).
    const fresh = lab.wrk({ seconds: 8, connections: 4 });
    const kept = lab.wrk({ seconds: 8, connections: 4, keepAlive: true });
    await sleep(1500);
    daemon = await lab.startDaemon();
    const [rf, rk] = await Promise.all([fresh, kept]);
    console.log(summary('wrk (new connections) across the replace', rf));
    console.log(summary('wrk (keep-alive) across the replace', rk));
    const progAfter = lab.lbXdpProgId();
    const log = readFileSync(daemon.log, 'utf8');
    const line = log
      .split('\n')
      .filter((l) => l.includes('balancer replaced: pinned by an older build ('))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    console.log(`program ${progBefore} -> ${progAfter}; replace log: ${JSON.stringify(line)}`);
    const metrics = (await lab.admin('/metrics')).body;
    const counter = metrics.split('\n').filter((l) => l.startsWith('peak_xdp_datapath_replacements_total'));
    console.log(`metrics: ${counter.join(' | ')}`);

    expect(rf.requests).toBeGreaterThan(100);
    expect(rk.requests).toBeGreaterThan(100);
    expect(rf.errorTotal).toBe(0);
    expect(rk.errorTotal).toBe(0);
    for (const b of ['be1', 'be2', 'be3']) expect(rf.perBackend[b]).toBeGreaterThan(0);
    expect(progAfter).toBeGreaterThan(0);
    expect(progAfter).not.toBe(progBefore);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({
      msg: "balancer replaced: pinned by an older build (no map maglev_prev_tables; map config has key/value 4/48 bytes, flags 0 (this build's 4/52, flags 0))",
      reason: 'missing_map',
      oldProgId: progBefore,
      progId: progAfter,
      connectionTableLost: true,
    });
    expect(counter).toEqual(['peak_xdp_datapath_replacements_total{reason="missing_map"} 1']);
    // The pins are this build's now, and name the attached program.
    expect(readPin(join(lab.pinDir, 'config'), 'map')).toMatchObject({ kind: 'map', valueSize: 52 });
    expect(readPin(join(lab.pinDir, 'maglev_prev_tables'), 'map')).toMatchObject({ kind: 'map' });
    expect(readPin(join(lab.pinDir, BALANCER_PROGRAM), 'program')).toMatchObject({ id: progAfter });
    const st = await lab.state();
    expect(st).toMatchObject({ adopted: false, attached: true });
  }, 60000);

  it('the next restart (kill -9) adopts the replaced balancer with zero writes', async () => {
    const prog = lab.lbXdpProgId();
    expect(await lab.signalDaemon(daemon, 'SIGKILL')).toBe('SIGKILL');
    daemon = await lab.startDaemon();
    const st = await lab.state();
    const last = JSON.parse((await lab.admin('/state')).body).lastReconcile as Record<string, unknown>;
    const log = readFileSync(daemon.log, 'utf8');
    console.log(`second restart: adopted ${st.adopted}, program ${prog} -> ${lab.lbXdpProgId()}, lastReconcile ${JSON.stringify(last)}`); // prettier-ignore
    expect(st.adopted).toBe(true);
    expect(lab.lbXdpProgId()).toBe(prog);
    expect(last).toMatchObject({ operations: 0, vipsUnchanged: 1 });
    expect(log).not.toMatch(/balancer replaced/);
    const seen = await lab.curlUntilSeen(['be1', 'be2', 'be3']);
    expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
  }, 40000);

  it('`peak-xdp attach` over older pins with nothing attached replaces the pins and attaches this build', async () => {
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    const d = await lab.cli(['detach', '--interface', 'eth0', '--json']);
    expect(d.code).toBe(0);
    expect(lab.lbXdpProgId()).toBe(0);
    makePinsOlder(lab.pinDir);
    const r = await lab.cli(['attach', '--interface', 'eth0', '--json']);
    console.log(
      `attach over older pins, nothing attached: exit ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`,
    );
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { progId: number; fresh: boolean; replaced: string };
    expect(doc).toMatchObject({ fresh: true, replaced: expect.stringMatching(/^no map maglev_prev_tables; map config/) }); // prettier-ignore
    expect(lab.lbXdpProgId()).toBe(doc.progId);
    expect(readPin(join(lab.pinDir, BALANCER_PROGRAM), 'program')).toMatchObject({ id: doc.progId });
    expect(readPin(join(lab.pinDir, 'config'), 'map')).toMatchObject({ kind: 'map', valueSize: 52 });
    expect(readPin(join(lab.pinDir, 'maglev_prev_tables'), 'map')).toMatchObject({ kind: 'map' });
    // The daemon adopts what the CLI pinned and programs it.
    daemon = await lab.startDaemon();
    expect((await lab.state()).adopted).toBe(true);
    const seen = await lab.curlUntilSeen(['be1', 'be2', 'be3']);
    expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
  }, 40000);

  it('a start after a replace killed between its steps (program pin and some map pins gone, the balancer still attached) replaces again under load', async () => {
    expect(await lab.signalDaemon(daemon, 'SIGKILL')).toBe('SIGKILL');
    const progBefore = lab.lbXdpProgId();
    // What a kill -9 while the old pins were being removed leaves: the program pin first, then maps in order.
    expect(unpin(join(lab.pinDir, BALANCER_PROGRAM))).toBe(true);
    for (const m of ['vips', 'vip_index', 'vip_addrs']) expect(unpin(join(lab.pinDir, m))).toBe(true);
    const load = lab.wrk({ seconds: 6, connections: 4 });
    await sleep(1000);
    daemon = await lab.startDaemon();
    const r = await load;
    console.log(summary('wrk across the second replace', r));
    const progAfter = lab.lbXdpProgId();
    const line = readFileSync(daemon.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('balancer replaced: pinned by an older build ('))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    console.log(`program ${progBefore} -> ${progAfter}; replace log: ${JSON.stringify(line)}`);
    const counter = (await lab.admin('/metrics')).body
      .split('\n')
      .filter((l) => l.startsWith('peak_xdp_datapath_replacements_total'));
    expect(r.requests).toBeGreaterThan(100);
    expect(r.errorTotal).toBe(0);
    expect(progAfter).not.toBe(progBefore);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ reason: 'unpinned_program', oldProgId: progBefore, progId: progAfter });
    expect(counter).toEqual(['peak_xdp_datapath_replacements_total{reason="unpinned_program"} 1']);
    expect(readPin(join(lab.pinDir, BALANCER_PROGRAM), 'program')).toMatchObject({ id: progAfter });
    for (const m of ['vips', 'vip_index', 'vip_addrs', 'config'])
      expect(readPin(join(lab.pinDir, m), 'map')).toMatchObject({ kind: 'map' });
  }, 40000);
});
