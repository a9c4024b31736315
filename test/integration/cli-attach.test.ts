// peak-xdp CLI without a daemon on the real kernel: nothing-attached errors, failed attaches leave nothing
// pinned, attach / detach (--purge), someone else's program, decap attach / detach on a backend, bgp with no daemon.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_JS, DaemonLab, runAsync, VIP } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { bpfObjectPath } from '../../src/paths';

describePrivileged('peak-xdp CLI: attach/detach, decap, errors with no daemon', () => {
  const lab = new DaemonLab({ tag: 'a', backends: 1 });

  const backendXdp = () =>
    (
      JSON.parse(lab.ns(lab.backend(1).netns, 'ip', ['-j', '-d', 'link', 'show', 'dev', 'eth0'])) as {
        xdp?: { prog?: { id: number } };
      }[]
    )[0]?.xdp?.prog?.id ?? 0;
  const loAddrs = () => lab.ns(lab.backend(1).netns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'lo']);

  beforeAll(async () => {
    await lab.start();
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('with nothing pinned, inspecting commands exit 3 with "nothing attached"', async () => {
    for (const cmd of [
      ['status'],
      ['vips'],
      ['backends'],
      ['conntrack'],
      ['ring', 'web'],
      ['trace', '--src', '1.2.3.4:5', '--dst', `${VIP}:80`],
    ]) {
      const r = await lab.cli(cmd);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 3 });
      expect(r.stderr).toMatch(/nothing attached: no pinned balancer under .* \(is the daemon running/);
    }
    const r = await lab.cli(['status', '--interface', 'eth9']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/--interface: no interface "eth9" in this network namespace/);
    const nofs = await lab.cli(['status', '--bpffs', lab.bpffs, '--bpffs', '/tmp']);
    expect(nofs.code).toBe(2);
    expect(nofs.stderr).toMatch(/--bpffs: given 2 times \(.*, \/tmp\): give it once/);
    const notBpf = await runAsync('ip', ['netns', 'exec', lab.lb, process.execPath, CLI_JS, '--bpffs', '/tmp', 'status'], { timeoutMs: 30000 }); // prettier-ignore
    expect(notBpf.code).toBe(3);
    expect(notBpf.stderr).toMatch(/bpffs root \/tmp is not a bpffs mount \(mount -t bpf bpf \/tmp\)/);
    const bgp = await lab.cli(['bgp']);
    expect(bgp.code).toBe(3);
    expect(bgp.stderr).toMatch(/no daemon answered at http:\/\/127\.0\.0\.1:9470/);
  }, 60000);

  it('attach to a missing interface, or one that refuses the program, leaves nothing pinned', async () => {
    const base = join(lab.bpffs, 'peak-xdp', lab.lb);
    const r = await lab.cli(['attach', '--interface', 'nosuch0']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/--interface: no interface "nosuch0" in this network namespace/);
    expect(existsSync(join(base, 'nosuch0'))).toBe(false);
    // lo exists but has no native XDP: the fresh balancer is loaded and pinned, the attach fails, the pins go.
    const lo = await lab.cli(['attach', '--interface', 'lo', '--mode', 'native']);
    expect(lo.code).toBe(1);
    expect(lo.stderr).toMatch(/attach to lo: .*EOPNOTSUPP.*\(nothing left pinned\)/);
    expect(existsSync(join(base, 'lo'))).toBe(false);
    // So commands without --interface still find nothing, rather than asking which of several balancers.
    const st = await lab.cli(['status']);
    expect(st.code).toBe(3);
    expect(st.stderr).toMatch(/nothing attached: no pinned balancer under/);
  }, 60000);

  it('attach pins a fresh balancer; status says unconfigured and no daemon; detach keeps the pins', async () => {
    const noIf = await lab.cli(['attach']);
    expect(noIf.code).toBe(2);
    expect(noIf.stderr).toMatch(/attach: give the interface \(--interface\/-i NAME\)/);
    const a = JSON.parse(
      (await lab.cli(['attach', '--interface', 'eth0', '--mode', 'native', '--json'])).stdout,
    );
    expect(a).toMatchObject({ apiVersion: 'peak-xdp/v1', kind: 'Attach', interface: 'eth0', pins: lab.pinDir, fresh: true, mode: 'native' }); // prettier-ignore
    expect(a.progId).toBe(lab.lbXdpProgId());
    const s = JSON.parse((await lab.cli(['status', '--json'])).stdout);
    expect(s).toMatchObject({ attached: true, config: null, vips: 0, daemon: { reachable: false } });
    const st = (await lab.cli(['status'])).stdout;
    expect(st).toMatch(/^config\s+not configured \(VIP traffic passes\)$/m);
    expect(st).toMatch(/^daemon\s+not reachable \(admin API: --admin\)$/m);
    expect(JSON.parse((await lab.cli(['vips', '--json'])).stdout)).toEqual({ apiVersion: 'peak-xdp/v1', kind: 'VipList', items: [] }); // prettier-ignore
    const d = await lab.cli(['detach', '--interface', 'eth0']);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(
      new RegExp(`^detached program ${a.progId} from eth0; pins kept at ${lab.pinDir}`),
    );
    expect(lab.lbXdpProgId()).toBe(0);
    expect(existsSync(join(lab.pinDir, 'balancer'))).toBe(true);
    // attach again resumes the pinned program.
    const again = JSON.parse((await lab.cli(['attach', '--interface', 'eth0', '--json'])).stdout);
    expect(again).toMatchObject({ fresh: false, progId: a.progId });
  }, 60000);

  it("detach refuses someone else's program; --purge removes the pins; a second detach has nothing to do", async () => {
    const ours = lab.lbXdpProgId();
    lab.ns(lab.lb, 'ip', ['link', 'set', 'dev', 'eth0', 'xdp', 'off']);
    lab.ns(lab.lb, 'ip', [
      'link',
      'set',
      'dev',
      'eth0',
      'xdpgeneric',
      'obj',
      bpfObjectPath('pass'),
      'sec',
      'xdp',
    ]);
    const other = lab.lbXdpProgId();
    expect(other).not.toBe(ours);
    const r = await lab.cli(['detach', '--interface', 'eth0']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      new RegExp(`eth0 runs program ${other}, not the pinned balancer \\(${ours}\\): not detaching`),
    );
    expect(lab.lbXdpProgId()).toBe(other);
    lab.ns(lab.lb, 'ip', ['link', 'set', 'dev', 'eth0', 'xdpgeneric', 'off']);
    const p = JSON.parse((await lab.cli(['detach', '--interface', 'eth0', '--purge', '--json'])).stdout);
    expect(p).toMatchObject({ interface: 'eth0', detached: false, purged: true });
    expect(existsSync(lab.pinDir)).toBe(false);
    const none = await lab.cli(['detach', '--interface', 'eth0']);
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/nothing attached to eth0 and nothing pinned/);
  }, 60000);

  it('decap detach / attach on a backend: XDP, pins and the VIP on lo follow', async () => {
    const be = lab.backend(1);
    const pins = join(lab.bpffs, 'peak-xdp', be.netns, 'eth0', 'decap');
    expect(backendXdp()).toBeGreaterThan(0);
    expect(existsSync(join(pins, 'decap'))).toBe(true);
    expect(loAddrs()).toContain(`${VIP}/32`);
    const d = await lab.cliIn(be.netns, ['decap', 'detach', '--interface', 'eth0', '--vip', VIP, '--json']);
    expect(d.code).toBe(0);
    expect(JSON.parse(d.stdout)).toMatchObject({ interface: 'eth0', vipsRemoved: [VIP] });
    expect(backendXdp()).toBe(0);
    expect(existsSync(pins)).toBe(false);
    expect(loAddrs()).not.toContain(VIP);
    const a = await lab.cliIn(be.netns, ['decap', 'attach', '--interface', 'eth0', '--vip', VIP, '--json']);
    expect(a.code).toBe(0);
    const j = JSON.parse(a.stdout);
    expect(j).toMatchObject({ interface: 'eth0', addresses: [be.address], vips: [VIP], pins });
    expect(j.progId).toBe(backendXdp());
    expect(loAddrs()).toContain(`${VIP}/32`);
    const t = await lab.cliIn(be.netns, ['decap', 'attach', '--interface', 'eth0', '--vip', VIP]);
    expect(t.stdout).toMatch(new RegExp(`^decap attached to eth0 \\(\\w+, program \\d+\\) for ${be.address.replace(/\./g, '\\.')}; VIPs on lo: ${VIP.replace(/\./g, '\\.')}; pinned at ${pins}$`, 'm')); // prettier-ignore
    const bad = await lab.cliIn(be.netns, ['decap', 'attach', '--interface', 'eth0', '--vip', 'notanip']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--vip: "notanip" is not an IP address/);
    const badAction = await lab.cliIn(be.netns, ['decap', 'sideways', '--interface', 'eth0']);
    expect(badAction.code).toBe(2);
    expect(badAction.stderr).toMatch(/action: "sideways" is not one of "attach", "detach"/);
    // A missing interface is one line naming it, before anything is loaded (was a raw `ip -j addr` failure).
    const noIf = await lab.cliIn(be.netns, ['decap', 'attach', '-i', 'eth9']);
    expect(noIf.code).toBe(3);
    expect(noIf.stderr).toBe('peak-xdp: --interface: no interface "eth9" in this network namespace\n');
    const noIfJson = await lab.cliIn(be.netns, ['decap', 'attach', '-i', 'eth9', '--json']);
    expect(noIfJson.code).toBe(3);
    expect(JSON.parse(noIfJson.stdout).error).toEqual({ message: '--interface: no interface "eth9" in this network namespace', exitCode: 3 }); // prettier-ignore
  }, 60000);
});
