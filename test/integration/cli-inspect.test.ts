// peak-xdp CLI against a running daemon on the real kernel: status, vips, backends, stats, conntrack, ring,
// trace, maglev — table output (headers, rows) and --json fields; bad flags and non-root exit codes.
import { CmdResult, DaemonLab, LB_ADDRESS, VIP } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { setTimeout as sleep } from 'node:timers/promises';

/** The header line and the row lines of a table printed by the CLI. */
function table(text: string, header: string[]): string[][] {
  const lines = text.split('\n');
  const h = lines.findIndex((l) => header.every((x) => l.includes(x)) && l.trim().startsWith(header[0]!));
  if (h < 0) throw new Error(`no table with headers ${header.join(' ')} in:\n${text}`);
  const rows: string[][] = [];
  for (const l of lines.slice(h + 1)) {
    const cells = l.trim().split(/\s{2,}/);
    // A blank line or a footer ends the table.
    if (l.trim() === '' || cells.length !== header.length) break;
    rows.push(cells);
  }
  return rows;
}

function ok(r: CmdResult): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

describePrivileged('peak-xdp CLI with a running daemon', () => {
  const lab = new DaemonLab({ tag: 'i', backends: 3 });
  const addrOf = (name: string) => lab.backends.find((b) => b.name === name)!.address;
  /** The backend that served a request from a fixed client port (filled by the conntrack test). */
  const CLIENT_PORT = 40123;
  let servedBy = '';

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    await lab.startDaemon();
    // Every backend must have served something (the tests read per-backend packets): Maglev spreads flows by
    // their random source port, so 9 requests miss one of 3 backends ~7% of the time. Bounded: 90 requests.
    const seen = new Map<string | null, number>();
    for (let round = 0; round < 10 && lab.backends.some((b) => !seen.has(b.name)); round++)
      for (const [b, n] of await lab.curlMany(9)) seen.set(b, (seen.get(b) ?? 0) + n);
    if (lab.backends.some((b) => !seen.has(b.name)))
      throw new Error(`after 90 requests not every backend served one: ${JSON.stringify([...seen])}`);
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('status: table and --json', async () => {
    const j = JSON.parse(ok(await lab.cli(['status', '--json'])));
    expect(j).toMatchObject({
      apiVersion: 'peak-xdp/v1',
      kind: 'Status',
      interface: 'eth0',
      pins: lab.pinDir,
      attached: true,
      mode: 'native',
      vips: 1,
      backends: { total: 3, up: 3, draining: 0, down: 0 },
      daemon: { reachable: true, readiness: { ready: true, reasons: [] }, reloadError: null },
    });
    expect(j.attachedProgramId).toBe(j.pinnedProgramId);
    expect(j.config).toMatchObject({ nextHopMac: lab.routerMacToLb, mtu: 1600 });
    expect(j.counters.encap_v4).toBeGreaterThan(0);
    const t = ok(await lab.cli(['status']));
    expect(t).toMatch(/^interface\s+eth0 \(attached, native\)$/m);
    expect(t).toMatch(new RegExp(`^program\\s+id ${j.pinnedProgramId}, pinned at ${lab.pinDir}$`, 'm'));
    expect(t).toMatch(/^vips\s+1$/m);
    expect(t).toMatch(/^backends\s+3 \(3 up, 0 draining, 0 down\)$/m);
    expect(t).toMatch(/^daemon\s+ready$/m);
    expect(t).toMatch(new RegExp(`encap v4 ${LB_ADDRESS}/32`));
    const rows = table(t, ['COUNTER', 'VALUE']);
    expect(rows.find((r) => r[0] === 'encap_v4')?.[1]).toMatch(/^\d+$/);
  });

  it('vips: table and --json', async () => {
    const doc = JSON.parse(ok(await lab.cli(['vips', '--json'])));
    expect(doc).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'VipList' });
    const j = doc.items;
    expect(j).toHaveLength(1);
    expect(j[0]).toMatchObject({ name: 'web', address: VIP, port: 80, protocol: 'tcp', tableSize: 251, persistence: 'none', conntrack: true, backends: 3 }); // prettier-ignore
    expect(j[0].packets).toBeGreaterThan(0);
    expect(j[0].bytes).toBeGreaterThan(0);
    const rows = table(ok(await lab.cli(['vips'])), ['ID', 'NAME', 'VIP', 'TABLE', 'PERSIST', 'CT', 'BACKENDS', 'PACKETS', 'BYTES']); // prettier-ignore
    expect(rows).toHaveLength(1);
    expect(rows[0]!.slice(0, 7)).toEqual([
      String(j[0].id),
      'web',
      `${VIP}:80/tcp`,
      '251',
      'none',
      'yes',
      '3',
    ]);
  });

  it('backends: table, --json, --vip filters by name or address, unknown VIP is an error', async () => {
    const doc = JSON.parse(ok(await lab.cli(['backends', '--json'])));
    expect(doc).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'BackendList' });
    const j = doc.items as { address: string; state: string; vip: unknown; weight: number; slots: number; share: number; packets: number }[]; // prettier-ignore
    expect(j.map((b) => b.address).sort()).toEqual(lab.backends.map((b) => b.address).sort());
    expect(j.reduce((n, b) => n + b.slots, 0)).toBe(251);
    for (const b of j) {
      // The VIP is always the whole reference, name and key alike.
      expect(b).toMatchObject({ state: 'up', weight: 1, vip: { name: 'web', address: VIP, port: 80, protocol: 'tcp' } }); // prettier-ignore
      expect(b.share).toBeCloseTo(b.slots / 251, 6);
      expect(b.packets).toBeGreaterThan(0);
    }
    for (const sel of ['web', `${VIP}:80/tcp`, VIP, `[${VIP}]:80`, `${VIP}/tcp`])
      expect(JSON.parse(ok(await lab.cli(['backends', '--vip', sel, '--json']))).items).toHaveLength(3);
    const rows = table(ok(await lab.cli(['backends'])), ['ID', 'ADDRESS', 'STATE', 'WEIGHT', 'VIP', 'LAST CHECK', 'SHARE', 'PACKETS', 'BYTES']); // prettier-ignore
    expect(rows.map((r) => r[1]).sort()).toEqual(lab.backends.map((b) => b.address).sort());
    for (const r of rows) {
      expect(r[2]).toBe('up');
      expect(r[3]).toBe('1');
      expect(r[4]).toBe('web');
      expect(r[6]).toMatch(/^\d+\.\d\d%$/);
    }
    const bad = await lab.cli(['backends', '--vip', 'nosuch']);
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/no VIP "nosuch"/);
    // With --json the error is a document on stdout, the exit code the same.
    const badJson = await lab.cli(['backends', '--vip', 'nosuch', '--json']);
    expect(badJson.code).toBe(3);
    expect(badJson.stderr).toBe('');
    expect(JSON.parse(badJson.stdout)).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'Error', error: { exitCode: 3, message: expect.stringMatching(/no VIP "nosuch"/) } }); // prettier-ignore
  });

  it('stats: rates over a short interval while traffic runs; --watch --count; bad --interval', async () => {
    // The load runs until the three stats commands are done (a fixed duration ended before them on a loaded
    // machine: CLI start-up alone can take seconds), bounded at 60 s.
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const load = lab.wrk({ seconds: 60, until: finished });
    let j, t, w;
    try {
      await sleep(500);
      j = JSON.parse(ok(await lab.cli(['stats', '--interval', '0.5', '--json'])));
      t = ok(await lab.cli(['stats', '--interval', '0.3']));
      w = ok(await lab.cli(['stats', '--watch', '--count', '2', '--interval', '0.2', '--json']));
    } finally {
      done();
    }
    const served = await load;
    expect(served.requests).toBeGreaterThan(0);
    expect(j.intervalSeconds).toBeGreaterThan(0.45);
    expect(j.intervalSeconds).toBeLessThan(2);
    expect(j.vips).toHaveLength(1);
    expect(j).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'Stats' });
    expect(j.vips[0]).toMatchObject({ vip: { name: 'web', address: VIP, port: 80, protocol: 'tcp' } });
    expect(j.vips[0].pps).toBeGreaterThan(0);
    expect(j.backends).toHaveLength(3);
    expect(j.backends.filter((b: { pps: number }) => b.pps > 0)).toHaveLength(3);
    expect(j.counters.find((c: { counter: string }) => c.counter === 'encap_v4').perSecond).toBeGreaterThan(
      0,
    );
    expect(table(t, ['VIP', 'PKT/S', 'BIT/S'])[0]![0]).toBe('web');
    expect(table(t, ['BACKEND', 'VIP', 'PKT/S', 'BIT/S'])).toHaveLength(3);
    expect(table(t, ['COUNTER', 'TOTAL', 'PER SEC']).some((r) => r[0] === 'encap_v4')).toBe(true);
    // --watch --json: NDJSON, one document per line with its time.
    const lines = w.trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      const d = JSON.parse(l);
      expect(d).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'Stats' });
      expect(Number.isNaN(Date.parse(d.time))).toBe(false);
      expect(d.intervalSeconds).toBeGreaterThan(0);
    }
    const neg = await lab.cli(['stats', '--watch', '--count', '-1']);
    expect(neg.code).toBe(2);
    expect(neg.stderr).toMatch(/--count: -1 is not a positive integer/);
    const bad = await lab.cli(['stats', '--interval', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--interval: 0 is not in \(0, 3600\]/);
  }, 30000);

  it('conntrack --vip: the entry of a real flow names the backend that served it', async () => {
    const body = await lab.curl({ localPort: CLIENT_PORT });
    expect(body).toMatch(/^be[123]$/);
    servedBy = addrOf(body!);
    const doc = JSON.parse(ok(await lab.cli(['conntrack', '--vip', 'web', '--limit', '1000000', '--json'])));
    expect(doc).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'ConntrackList', limitReached: false });
    const j = doc.items as { protocol: string; source: string; sourcePort: number; destination: string; destinationPort: number; backend: string }[]; // prettier-ignore
    expect(j.length).toBeGreaterThan(0);
    for (const e of j) expect(e).toMatchObject({ protocol: 'tcp', destination: VIP, destinationPort: 80 });
    const mine = j.filter((e) => e.source === '10.10.1.2' && e.sourcePort === CLIENT_PORT);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.backend).toBe(servedBy);
    // curl ended its connection: its FIN went through, and the entry serves only that connection's tail.
    expect(mine[0]).toMatchObject({ closed: true });
    const t = ok(await lab.cli(['conntrack', '--vip', `${VIP}:80/tcp`, '--limit', '2']));
    expect(table(t, ['PROTO', 'SOURCE', 'DESTINATION', 'BACKEND', 'STATE'])).toHaveLength(2);
    expect(t).toMatch(/^2 entries \(limit reached: --limit\)$/m);
    const bad = await lab.cli(['conntrack', '--limit', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--limit: 0 is not a positive integer/);
    const nan = await lab.cli(['conntrack', '--limit', 'abc']);
    expect(nan.code).toBe(2);
    expect(nan.stderr).toMatch(/--limit: "abc" is not a number/);
  });

  it('ring: shares per backend, --slots dumps every slot, --json', async () => {
    const j = JSON.parse(ok(await lab.cli(['ring', 'web', '--slots', '--json'])));
    expect(j).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'Ring' });
    expect(j.vip).toMatchObject({ name: 'web', address: VIP, port: 80, protocol: 'tcp' });
    expect(j.size).toBe(251);
    expect(j.slots).toHaveLength(251);
    expect(j.backends.map((b: { address: string }) => b.address).sort()).toEqual(lab.backends.map((b) => b.address).sort()); // prettier-ignore
    for (const b of j.backends as { id: number; slots: number }[])
      expect(j.slots.filter((s: number) => s === b.id)).toHaveLength(b.slots);
    expect(j.maxOverMean).toBeGreaterThanOrEqual(1);
    expect(j.maxOverMean).toBeLessThan(1.1);
    const t = ok(await lab.cli(['ring', 'web']));
    expect(t).toMatch(
      new RegExp(`^${VIP.replace(/\./g, '\\.')}:80/tcp: 251 slots, max/mean \\d\\.\\d{4}$`, 'm'),
    );
    expect(table(t, ['ID', 'BACKEND', 'STATE', 'SLOTS', 'SHARE'])).toHaveLength(3);
    expect(
      ok(await lab.cli(['ring', 'web', '--slots']))
        .trim()
        .split('\n')
        .pop()!
        .split(' '),
    ).toHaveLength(251);
  });

  it('trace: --src/--dst of a served flow gives that backend; --packet-hex replays; non-VIP passes', async () => {
    expect(servedBy).not.toBe('');
    const j = JSON.parse(ok(await lab.cli(['trace', '--src', `10.10.1.2:${CLIENT_PORT}`, '--dst', `${VIP}:80`, '--json']))); // prettier-ignore
    expect(j.verdict).toBe('TX');
    expect(j.backend.address).toBe(servedBy);
    expect(j.backend.id).toBeGreaterThan(0);
    expect(j.reason).toBe(`encapsulated IPv4 ${LB_ADDRESS} -> ${servedBy}`);
    const out = Buffer.from(j.packetHex, 'hex');
    // Ethernet to the router, IPv4 with protocol 4 (IPIP), outer destination = the backend.
    expect(out.subarray(0, 6).toString('hex')).toBe(lab.routerMacToLb.replace(/:/g, ''));
    expect(out[14 + 9]).toBe(4);
    expect([...out.subarray(14 + 16, 14 + 20)].join('.')).toBe(servedBy);
    expect(typeof j.inputHex).toBe('string');
    const replay = JSON.parse(ok(await lab.cli(['trace', '--packet-hex', j.inputHex, '--json'])));
    expect(replay).toMatchObject({ verdict: 'TX', backend: j.backend, packetHex: j.packetHex });
    const t = ok(await lab.cli(['trace', '--src', `10.10.1.2:${CLIENT_PORT}`, '--dst', `${VIP}:80`]));
    expect(t).toMatch(new RegExp(`^verdict\\s+TX$`, 'm'));
    expect(t).toMatch(
      new RegExp(`^backend\\s+${servedBy.replace(/\./g, '\\.')} \\(#${j.backend.id}\\)$`, 'm'),
    );
    const pass = JSON.parse(
      ok(await lab.cli(['trace', '--src', '10.10.1.2:1000', '--dst', '10.0.0.99:80', '--json'])),
    );
    expect(pass).toMatchObject({ verdict: 'PASS', backend: null });
    expect(pass.reason).toMatch(/not for a VIP/);
    for (const [args, msg] of [
      [['--src', 'x', '--dst', `${VIP}:80`], /--src: "x" is not IP:PORT/],
      [['--dst', `${VIP}:80`], /give --src IP:PORT and --dst VIP:PORT, or --packet-hex/],
      [['--packet-hex', 'zz'], /--packet-hex: not an even-length hex string/],
      [['--src', '[2001:db8::1]:5', '--dst', `${VIP}:80`], /different IP families/],
    ] as const) {
      const r = await lab.cli(['trace', ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  }, 30000);

  it('maglev: --json fields and table; bad sizes are rejected', async () => {
    const j = JSON.parse(
      ok(await lab.cli(['maglev', '--backends', '10', '--size', '251', '--remove', '1', '--json'])),
    );
    expect(j).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'MaglevAnalysis', size: 251, backends: 10, removed: 1, idealChangedFraction: 0.1 }); // prettier-ignore
    expect(j.maxOverMean).toBeGreaterThanOrEqual(1);
    expect(j.maxOverMean).toBeLessThan(1.2);
    expect(j.changedFraction).toBeGreaterThanOrEqual(0.09);
    expect(j.changedFraction).toBeLessThan(0.2);
    expect(j.buildMs).toBeGreaterThanOrEqual(0);
    const t = ok(await lab.cli(['maglev', '--backends', '3']));
    expect(t).toMatch(/^backends\s+3$/m);
    expect(t).toMatch(/^max\/mean slots\s+1\.\d{4}$/m);
    const bad = await lab.cli(['maglev', '--backends', '3', '--size', '250']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--size: 250 is not a prime/);
  });

  it('bad flags and unknown commands exit 2 with a message; non-root exits 77', async () => {
    for (const [args, msg] of [
      [['vips', '--bogus'], /Unknown argument: bogus/],
      [['nosuch'], /Unknown argument: nosuch|unknown command "nosuch"/],
      [[], /give a command/],
      [['ring'], /ring: give the VIP/],
      [['daemon', '--config', 'x.yaml', '--admin', '127.0.0.1:1'], /Unknown argument: admin/],
    ] as const) {
      const r = await lab.cli([...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
    // As nobody (the CLI itself checks before touching the maps).
    const r = await lab.cliAs({ uid: 65534 }, ['status']);
    expect(r.code).toBe(77);
    expect(r.stderr).toMatch(/needs root/);
  });
});
