// The write path on the real kernel: peak-xdp drain/undrain/weight/conntrack flush through a running daemon's
// admin API: /state, `backends --json` and the Maglev table slots follow, the override survives a reload and a
// daemon restart, unknown VIPs/backends fail naming them, and a non-loopback admin listener without a token
// refuses every change (with a token file, the token is needed). lookup and trace read what they report.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { DEFAULT_STATE_ROOT } from '../../src/daemon/override-store';
import { join } from 'node:path';
import { CLI_JS, CmdResult, DaemonLab, runAsync, VIP, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

function ok(r: CmdResult): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

interface BackendRow {
  address: string;
  state: string;
  slots: number;
  weight: number | null;
  override: { drain?: boolean; weight?: number; at: string } | null;
}

interface StateBackend {
  address: string;
  state: string;
  drain: boolean;
  weight: number;
  override: { drain?: boolean; weight?: number; at: string } | null;
}

describePrivileged('peak-xdp write commands through the daemon', () => {
  const lab = new DaemonLab({ tag: 'h9', backends: 3 });
  const be = (i: number) => lab.backend(i).address;
  let daemon: Awaited<ReturnType<DaemonLab['startDaemon']>>;
  // Where the daemon keeps its overrides (override-store.ts; the namespace name is unique to this lab). The
  // daemon runs as a child process: jest's sandboxed process.env cannot point it elsewhere.
  const stateDir = join(DEFAULT_STATE_ROOT, lab.lb);

  /** A write command in the LB namespace (they talk to the daemon only: no --bpffs). */
  const w = (args: string[]) =>
    runAsync('ip', ['netns', 'exec', lab.lb, 'node', CLI_JS, ...args], { timeoutMs: 30000 });
  const backends = async (): Promise<BackendRow[]> =>
    JSON.parse(ok(await lab.cli(['backends', '--json']))).items as BackendRow[];
  const row = async (address: string) => (await backends()).find((b) => b.address === address)!;
  const stateOf = async (address: string): Promise<StateBackend> => {
    const st = (await lab.state()) as unknown as {
      desired: { vips: { name: string; backends: StateBackend[] }[] };
    };
    return st.desired.vips.find((v) => v.name === 'web')!.backends.find((b) => b.address === address)!;
  };

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    daemon = await lab.startDaemon();
    await lab.curlMany(6);
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
    rmSync(stateDir, { recursive: true, force: true });
  }, 30000);

  it('drain: the daemon drains the backend; /state, backends --json and the table slots show it', async () => {
    const before = await row(be(2));
    expect(before).toMatchObject({ state: 'up', override: null });
    expect(before.slots).toBeGreaterThan(0);
    const out = JSON.parse(ok(await w(['drain', 'web', be(2), '--json'])));
    expect(out).toMatchObject({
      kind: 'BackendOverride',
      vip: { name: 'web', address: VIP, port: 80, protocol: 'tcp' },
      backend: be(2),
      override: { drain: true },
    });
    // The reply comes after the daemon's sync: the datapath already has it.
    const after = await row(be(2));
    expect(after.state).toBe('draining');
    expect(after.slots).toBe(0);
    expect(after.override).toMatchObject({ drain: true });
    expect((await row(be(1))).override).toBeNull();
    expect(await stateOf(be(2))).toMatchObject({ drain: true, state: 'draining', override: { drain: true } });
    const stored = JSON.parse(readFileSync(join(stateDir, 'eth0', 'overrides.json'), 'utf8'));
    expect(stored.overrides.web[be(2)]).toMatchObject({ drain: true });
    // New flows avoid it.
    const seen = await lab.curlMany(9);
    expect(seen.get('be2') ?? 0).toBe(0);
    expect((seen.get('be1') ?? 0) + (seen.get('be3') ?? 0)).toBe(9);
    // The address selector names the same VIP.
    const text = ok(await w(['drain', `${VIP}:80/tcp`, be(2)]));
    expect(text).toMatch(new RegExp(`^${be(2).replace(/\./g, '\\.')} in VIP web: drained`));
  }, 30000);

  it('a reload keeps the override; a daemon restart keeps it', async () => {
    // A change elsewhere in the VIP: the file's config reloads, the drain stays.
    lab.writeConfig(lab.config({ backends: [1, 2, 3], vipExtra: { failOpen: false } }));
    const reloaded = await waitUntil(() => /config reloaded/.test(readFileSync(daemon.log, 'utf8')), {
      timeoutMs: 10000,
      intervalMs: 100,
    });
    console.log(`reload seen after ${reloaded?.toFixed(0)} ms`);
    expect(reloaded).not.toBeNull();
    expect(await stateOf(be(2))).toMatchObject({ state: 'draining', override: { drain: true } });
    expect((await row(be(2))).slots).toBe(0);

    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    daemon = await lab.startDaemon();
    const st = await stateOf(be(2));
    expect(st).toMatchObject({ drain: true, state: 'draining', override: { drain: true } });
    expect((await row(be(2))).state).toBe('draining');
  }, 60000);

  it('undrain clears it; weight sets and --clear clears a weight', async () => {
    const out = JSON.parse(ok(await w(['undrain', 'web', be(2), '--json'])));
    expect(out).toMatchObject({ vip: { name: 'web' }, backend: be(2), override: null });
    let r = await row(be(2));
    expect(r).toMatchObject({ state: 'up', override: null });
    expect(r.slots).toBeGreaterThan(0);
    const base = r.slots;
    ok(await w(['weight', 'web', be(2), '4']));
    r = await row(be(2));
    expect(r).toMatchObject({ weight: 4, override: { weight: 4 } });
    expect(r.slots).toBeGreaterThan(base);
    ok(await w(['weight', 'web', be(2), '--clear']));
    r = await row(be(2));
    expect(r).toMatchObject({ weight: 1, override: null, slots: base });
    const bad = await w(['weight', 'web', be(2), 'abc']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/weight: "abc" is not an integer from 0 to 65535/);
  }, 30000);

  it('unknown VIP or backend: exit 3 (not found) and a message naming it', async () => {
    const v = await w(['drain', 'nosuch', be(1)]);
    expect(v.code).toBe(3);
    expect(v.stderr).toMatch(/no VIP named "nosuch"/);
    const b = await w(['drain', 'web', '10.10.99.9']);
    expect(b.code).toBe(3);
    expect(b.stderr).toMatch(/VIP "web" has no backend 10\.10\.99\.9/);
    const f = await w(['conntrack', 'flush', '--backend', '10.10.99.9']);
    expect(f.code).toBe(3);
    expect(f.stderr).toMatch(/no VIP has a backend 10\.10\.99\.9/);
    expect((await w(['conntrack', 'flush'])).code).toBe(2);
  });

  it('lookup names the backend of a live flow from its entry; conntrack flush deletes it, lookup then picks by Maglev', async () => {
    const port = 40555;
    const body = await lab.curl({ localPort: port });
    expect(body).toMatch(/^be[123]$/);
    const served = lab.backends.find((x) => x.name === body)!.address;
    const args = ['lookup', '--src', `10.10.1.2:${port}`, '--dst', `${VIP}:80`, '--json'];
    const l = JSON.parse(ok(await lab.cli(args)));
    expect(l).toMatchObject({ kind: 'Lookup', from: 'conntrack', backend: { address: served } });
    const n = JSON.parse(ok(await w(['conntrack', 'flush', '--vip', 'web', '--backend', served, '--json'])));
    expect(n.deleted).toBeGreaterThan(0);
    console.log(`flushed ${n.deleted} entries of ${served}`);
    const l2 = JSON.parse(ok(await lab.cli(args)));
    expect(l2.conntrack).toBeNull();
    expect(l2.from).toBe('maglev');
    expect(l2.backend.address).toMatch(/^10\.10\.1[123]\.2$/);
    const all = JSON.parse(ok(await w(['conntrack', 'flush', '--all', '--json'])));
    expect(all.deleted).toBeGreaterThanOrEqual(0);
    const left = JSON.parse(ok(await lab.cli(['conntrack', '--json']))).items;
    expect(left).toEqual([]);
  }, 30000);

  it('trace names the counters it moved and the reason', async () => {
    const t = JSON.parse(
      ok(await lab.cli(['trace', '--src', '10.10.1.2:40999', '--dst', `${VIP}:81`, '--json'])),
    );
    expect(t.verdict).toBe('PASS');
    expect(t.counters.map((c: { counter: string }) => c.counter)).toContain('pass_not_vip');
    expect(t.reason).toMatch(/^not for a VIP \(no VIP matches/);
    const fwd = JSON.parse(
      ok(await lab.cli(['trace', '--src', '10.10.1.2:41000', '--dst', `${VIP}:80`, '--syn', '--json'])),
    );
    expect(fwd.verdict).toBe('TX');
    expect(fwd.counters.map((c: { counter: string }) => c.counter)).toEqual(
      expect.arrayContaining(['xdp_tx', 'encap_v4']),
    );
  });

  it('a non-loopback admin listener without a token refuses changes; with admin.tokenFile the token is needed', async () => {
    lab.writeConfig({ ...lab.config({ backends: [1, 2, 3] }), admin: { listen: '0.0.0.0:9470' } });
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    daemon = await lab.startDaemon();
    const r = await w(['drain', 'web', be(1)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /admin\.listen 0\.0\.0\.0:9470 is not a loopback address and no admin\.tokenFile/,
    );
    expect((await row(be(1))).state).toBe('up');
    // Read-only endpoints still answer there.
    expect((await lab.admin('/v1/overrides')).status).toBe(200);

    const tokenFile = join(lab.dir, 'token');
    writeFileSync(tokenFile, 'h9-test-token-0123456789\n', { mode: 0o600 });
    const wrong = join(lab.dir, 'wrong');
    writeFileSync(wrong, 'not-the-token-000000000\n', { mode: 0o600 });
    lab.writeConfig({ ...lab.config({ backends: [1, 2, 3] }), admin: { listen: '0.0.0.0:9470', tokenFile } });
    expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    daemon = await lab.startDaemon();
    const no = await w(['drain', 'web', be(1)]);
    expect(no.code).toBe(1);
    expect(no.stderr).toMatch(/no token: .*Authorization: Bearer/);
    const bad = await w(['drain', 'web', be(1), '--token-file', wrong]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/wrong token: /);
    ok(await w(['drain', 'web', be(1), '--token-file', tokenFile]));
    expect((await row(be(1))).state).toBe('draining');
    ok(await w(['undrain', 'web', be(1), '--token-file', tokenFile]));
    expect((await row(be(1))).state).toBe('up');
  }, 60000);
});
