// `decap attach --vip --no-sysctls` where /proc/sys is read-only, as in an unprivileged container (the pod-mode
// init container of deploy/examples/service-pod-mode.yaml): without the flag the sysctls fail (exit 3); with it
// the VIP still goes on lo, no sysctl changes and the skipped ones are reported. The read-only /proc/sys is a
// read-only bind mount in a private mount namespace (unshare -m), inside a namespace this test makes.
import { CLI_JS, runAsync } from '../helpers/daemon-lab';
import { Lab } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const VIP = '198.51.100.77';
const ADDR = '10.77.0.2';
const SKIPPED = [
  'net.ipv4.conf.all.arp_ignore=1',
  'net.ipv4.conf.all.arp_announce=2',
  'net.ipv4.conf.all.rp_filter=2',
];

describePrivileged('decap attach --no-sysctls (read-only /proc/sys)', () => {
  const lab = new Lab();
  let ns = '';
  let ifname = '';

  const sysctls = (): Record<string, string> =>
    Object.fromEntries(
      ['arp_ignore', 'arp_announce', 'rp_filter'].map((k) => [
        `net.ipv4.conf.all.${k}`,
        lab.ns(ns, 'sysctl', ['-n', `net.ipv4.conf.all.${k}`]).trim(),
      ]),
    );
  const onLo = (): string[] =>
    (
      JSON.parse(lab.ns(ns, 'ip', ['-j', 'addr', 'show', 'dev', 'lo']))[0].addr_info as { local: string }[]
    ).map((a) => a.local);
  /** The CLI in the namespace; `readOnlySys`: with /proc/sys mounted read-only first. No bpffs: no pins. */
  const cli = (args: string[], readOnlySys: boolean) => {
    const node = [process.execPath, CLI_JS, ...args].map((x) => `'${x}'`).join(' ');
    const script = readOnlySys
      ? `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec ${node}`
      : `exec ${node}`;
    return runAsync(
      'ip',
      ['netns', 'exec', ns, 'env', 'PEAK_XDP_BPFFS=/nonexistent', 'unshare', '-m', 'sh', '-c', script],
      { timeoutMs: 30000 },
    );
  };
  const detach = async () => {
    const d = await cli(['decap', 'detach', '--interface', ifname, '--vip', VIP], false);
    expect([d.code, d.stderr]).toEqual([0, d.stderr]);
  };

  beforeAll(() => {
    ns = lab.addNamespace('dpf');
    ifname = `dpfa${ns.slice(3)}`.slice(0, 15);
    const peer = `dpfb${ns.slice(3)}`.slice(0, 15);
    lab.addVeth({ name: ifname, ns }, { name: peer, ns });
    lab.ns(ns, 'ip', ['addr', 'add', `${ADDR}/24`, 'dev', ifname]);
    for (const l of [ifname, peer]) lab.ns(ns, 'ip', ['link', 'set', l, 'up']);
    // A new netns starts from the kernel defaults; make them explicit so a change is visible.
    for (const kv of ['arp_ignore=0', 'arp_announce=0', 'rp_filter=0'])
      lab.ns(ns, 'sysctl', ['-qw', `net.ipv4.conf.all.${kv}`]);
  });

  afterAll(() => lab.cleanup());

  it('the read-only mount is real: writing a sysctl through it fails', async () => {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', ns, 'unshare', '-m', 'sh', '-c', 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && sysctl -qw net.ipv4.conf.all.arp_ignore=1'], // prettier-ignore
      { timeoutMs: 10000 },
    );
    console.log(`sysctl -w on the read-only /proc/sys: exit ${r.code}: ${r.stderr.trim()}`);
    expect(r.code).not.toBe(0);
    expect(sysctls()['net.ipv4.conf.all.arp_ignore']).toBe('0');
  });

  it('without --no-sysctls: exit 3, the message points at --no-sysctls', async () => {
    try {
      const r = await cli(['decap', 'attach', '--interface', ifname, '--vip', VIP], true);
      console.log(`decap attach --vip (read-only /proc/sys): exit ${r.code}: ${r.stderr.trim()}`);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(new RegExp(`add VIP ${VIP.replace(/\./g, '\\.')} to lo: .*--no-sysctls`));
    } finally {
      await detach();
    }
  }, 60000);

  it('with --no-sysctls: exit 0, the VIP on lo, no sysctl changed, the skipped ones reported', async () => {
    const before = sysctls();
    try {
      const r = await cli(['decap', 'attach', '--interface', ifname, '--vip', VIP, '--no-sysctls', '--json'], true); // prettier-ignore
      expect([r.code, r.stderr]).toEqual([0, '']);
      const doc = JSON.parse(r.stdout) as { kind: string; vips: string[]; sysctlsSkipped: string[] };
      console.log(`decap attach --no-sysctls: ${r.stdout.trim()}`);
      expect(doc).toMatchObject({ kind: 'DecapAttach', vips: [VIP] });
      expect(doc.sysctlsSkipped).toEqual([...SKIPPED, `net.ipv4.conf.${ifname}.rp_filter=2`]);
      expect(onLo()).toContain(VIP);
      expect(sysctls()).toEqual(before);
      // The text form names what was skipped too.
      await detach();
      const t = await cli(['decap', 'attach', '--interface', ifname, '--vip', VIP, '--no-sysctls'], true);
      expect(t.code).toBe(0);
      expect(t.stdout).toContain(`sysctls not set (--no-sysctls): ${SKIPPED[0]}`);
    } finally {
      await detach();
    }
    expect(onLo()).not.toContain(VIP);
  }, 60000);

  it('the control: with a writable /proc/sys and no flag, the sysctls are set', async () => {
    try {
      const r = await cli(['decap', 'attach', '--interface', ifname, '--vip', VIP, '--json'], false);
      expect([r.code, r.stderr]).toEqual([0, '']);
      expect((JSON.parse(r.stdout) as { sysctlsSkipped: string[] }).sysctlsSkipped).toEqual([]);
      expect(sysctls()).toEqual({
        'net.ipv4.conf.all.arp_ignore': '1',
        'net.ipv4.conf.all.arp_announce': '2',
        'net.ipv4.conf.all.rp_filter': '2',
      });
    } finally {
      await detach();
    }
  }, 60000);
});
