// The kernel host's preload: a fresh balancer loaded while the config is read is the one a fresh open uses
// (with the default limits), closed otherwise, and not loaded at all where a balancer is pinned already.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { KernelDatapath } from '../../src/datapath/kernel';
import { KernelDatapathHost } from '../../src/daemon/kernel-host';
import { DEFAULTS } from '../../src/model/defaults';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('KernelDatapathHost.preload', () => {
  const bpffs = `/run/pkpre${process.pid}-bpffs`;
  let mounted = false;
  /** Every balancer KernelDatapath.load made in this file, in order. */
  const made: KernelDatapath[] = [];
  const realLoad = KernelDatapath.load.bind(KernelDatapath);
  let spy: jest.SpiedFunction<typeof KernelDatapath.load>;
  const isClosed = (dp: KernelDatapath): boolean => (dp as unknown as { closed: boolean }).closed;

  beforeAll(() => {
    mkdirSync(bpffs, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', bpffs]);
    mounted = true;
    spy = jest.spyOn(KernelDatapath, 'load').mockImplementation(async (o) => {
      const dp = await realLoad(o);
      made.push(dp);
      return dp;
    });
  });
  afterAll(() => {
    spy?.mockRestore();
    for (const dp of made) dp.close();
    if (mounted) execFileSync('umount', [bpffs]);
    rmSync(bpffs, { recursive: true, force: true });
  });

  it('a fresh open with the default limits takes the preloaded balancer; other limits close it', async () => {
    const host = new KernelDatapathHost({ bpffs });
    host.preload(DEFAULTS.limits);
    host.preload(DEFAULTS.limits); // one preload at a time
    expect(spy).toHaveBeenCalledTimes(1);
    const claim = host.claim('lo');
    try {
      const opened = await claim.open({ limits: DEFAULTS.limits, ifname: 'lo' });
      expect(spy).toHaveBeenCalledTimes(1);
      expect(opened.adopted).toBe(false);
      expect(opened.datapath).toBe(made[0]);
      expect(isClosed(made[0]!)).toBe(false);
      opened.unpin();
      opened.close();
    } finally {
      claim.release();
    }

    const other = new KernelDatapathHost({ bpffs });
    other.preload(DEFAULTS.limits);
    const claim2 = other.claim('lo');
    try {
      const limits = { ...DEFAULTS.limits, maxVips: DEFAULTS.limits.maxVips / 2 };
      const opened = await claim2.open({ limits, ifname: 'lo' });
      expect(spy).toHaveBeenCalledTimes(3);
      expect(opened.datapath).toBe(made[2]);
      expect(isClosed(made[1]!)).toBe(true);
      opened.unpin();
      opened.close();
    } finally {
      claim2.release();
    }
  });

  it('loads nothing where a balancer is pinned in this network namespace; dispose closes an unused preload', async () => {
    const calls = spy.mock.calls.length;
    const host = new KernelDatapathHost({ bpffs });
    const claim = host.claim('lo');
    try {
      const opened = await claim.open({ limits: DEFAULTS.limits, ifname: 'lo' });
      expect(spy).toHaveBeenCalledTimes(calls + 1);
      // A second daemon (another interface, or this one restarting) finds a pinned balancer: no preload.
      const again = new KernelDatapathHost({ bpffs });
      again.preload(DEFAULTS.limits);
      expect(spy).toHaveBeenCalledTimes(calls + 1);
      again.dispose();
      opened.unpin();
      opened.close();
    } finally {
      claim.release();
    }

    const unused = new KernelDatapathHost({ bpffs });
    unused.preload(DEFAULTS.limits);
    expect(spy).toHaveBeenCalledTimes(calls + 2);
    const before = made.length;
    unused.dispose();
    // The load finishes in the background and is closed then.
    for (let i = 0; i < 500 && !(made.length > before && isClosed(made.at(-1)!)); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(made).toHaveLength(before + 1);
    expect(isClosed(made.at(-1)!)).toBe(true);
  });
});
