// The kernel host's preload: a fresh balancer loaded while the config is read is the one a fresh open uses
// (with the default limits), closed otherwise, and not loaded at all where a balancer is pinned already; the one the
// daemon command begins from the config file's text (preloadConfigFile) is taken over by the host of its bpffs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KernelDatapath } from '../../src/datapath/kernel';
import type { OpenedDatapath } from '../../src/daemon/datapath-host';
import type { Config } from '../../src/model/config';
import { KernelDatapathHost, preloadConfigFile } from '../../src/daemon/kernel-host';
import { DEFAULTS } from '../../src/model/defaults';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('KernelDatapathHost.preload', () => {
  const bpffs = `/run/pkpre${process.pid}-bpffs`;
  const dir = mkdtempSync(join(tmpdir(), 'pkpre-'));
  let mounted = false;
  /** Every balancer KernelDatapath.load made in this file, in order. */
  const made: KernelDatapath[] = [];
  const realLoad = KernelDatapath.load.bind(KernelDatapath);
  let spy: jest.SpiedFunction<typeof KernelDatapath.load>;
  const isClosed = (dp: KernelDatapath): boolean => (dp as unknown as { closed: boolean }).closed;
  /** Claims 'lo', opens a balancer for `limits`, runs `check` on it, then unpins, closes and releases it. */
  const withOpened = async (
    host: KernelDatapathHost,
    limits: Config['limits'],
    check: (opened: OpenedDatapath) => void,
  ): Promise<void> => {
    const claim = host.claim('lo');
    try {
      const opened = await claim.open({ limits, ifname: 'lo' });
      try {
        check(opened);
      } finally {
        opened.unpin();
        opened.close();
      }
    } finally {
      claim.release();
    }
  };

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
    rmSync(dir, { recursive: true, force: true });
  });

  it('a fresh open with the default limits takes the preloaded balancer; other limits close it', async () => {
    const host = new KernelDatapathHost({ bpffs });
    host.preload(DEFAULTS.limits);
    host.preload(DEFAULTS.limits); // one preload at a time
    expect(spy).toHaveBeenCalledTimes(1);
    await withOpened(host, DEFAULTS.limits, (opened) => {
      expect(spy).toHaveBeenCalledTimes(1);
      expect(opened.adopted).toBe(false);
      expect(opened.datapath).toBe(made[0]);
      expect(isClosed(made[0]!)).toBe(false);
    });

    const other = new KernelDatapathHost({ bpffs });
    other.preload(DEFAULTS.limits);
    await withOpened(other, { ...DEFAULTS.limits, maxVips: DEFAULTS.limits.maxVips / 2 }, (opened) => {
      expect(spy).toHaveBeenCalledTimes(3);
      expect(opened.datapath).toBe(made[2]);
      expect(isClosed(made[1]!)).toBe(true);
    });
  });

  it('asked again for other sizes, closes the first preload and loads for those', async () => {
    const before = made.length;
    const host = new KernelDatapathHost({ bpffs });
    const half = { ...DEFAULTS.limits, maxVips: DEFAULTS.limits.maxVips / 2 };
    host.preload(DEFAULTS.limits);
    host.preload(half);
    host.preload(half); // the same sizes: nothing more
    let used: KernelDatapath | null = null;
    await withOpened(host, half, (opened) => {
      used = opened.datapath as KernelDatapath;
      expect(made.slice(before)).toContain(used);
    });
    // the first one is closed once its load is done (the loads may finish in either order)
    for (let i = 0; i < 500 && !(made.length === before + 2 && made.slice(before).every(isClosed)); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(made).toHaveLength(before + 2);
    expect(made.slice(before).every(isClosed)).toBe(true); // the used one by withOpened, the other by the preload
    expect(used).not.toBeNull();
  });

  it('loads nothing where a balancer is pinned in this network namespace; dispose closes an unused preload', async () => {
    const calls = spy.mock.calls.length;
    const host = new KernelDatapathHost({ bpffs });
    await withOpened(host, DEFAULTS.limits, () => {
      expect(spy).toHaveBeenCalledTimes(calls + 1);
      // A second daemon (another interface, or this one restarting) finds a pinned balancer: no preload.
      const again = new KernelDatapathHost({ bpffs });
      again.preload(DEFAULTS.limits);
      expect(spy).toHaveBeenCalledTimes(calls + 1);
      again.dispose();
    });

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
  it('preloadConfigFile loads for the limits the file says; the host of that bpffs takes it over, or closes it for others', async () => {
    const half = { ...DEFAULTS.limits, maxVips: DEFAULTS.limits.maxVips / 2 };
    const json = join(dir, 'half.json');
    writeFileSync(json, JSON.stringify({ interface: 'lo', limits: { maxVips: half.maxVips }, vips: [] }));
    const calls = spy.mock.calls.length;
    await preloadConfigFile(json, bpffs);
    await preloadConfigFile(json, bpffs); // one early load per bpffs
    expect(spy).toHaveBeenCalledTimes(calls + 1);
    const early = spy.mock.results.at(-1)!.value as Promise<KernelDatapath>;
    const host = new KernelDatapathHost({ bpffs });
    host.preload(half); // the daemon's own preload, for the same sizes: takes the early one
    expect(spy).toHaveBeenCalledTimes(calls + 1);
    let used: unknown = null;
    await withOpened(host, half, (opened) => {
      expect(spy).toHaveBeenCalledTimes(calls + 1);
      expect(opened.adopted).toBe(false);
      used = opened.datapath;
    });
    expect(used).toBe(await early);

    // YAML saying other limits than the checked document: the host closes the early load and loads its own
    const yaml = join(dir, 'half.yaml');
    writeFileSync(yaml, `interface: lo\nlimits:\n  maxVips: ${half.maxVips}\nvips: []\n`);
    await preloadConfigFile(yaml, bpffs);
    expect(spy).toHaveBeenCalledTimes(calls + 2);
    const second = spy.mock.results.at(-1)!.value as Promise<KernelDatapath>;
    const other = new KernelDatapathHost({ bpffs });
    other.preload(DEFAULTS.limits);
    expect(spy).toHaveBeenCalledTimes(calls + 3);
    await withOpened(other, DEFAULTS.limits, (opened) => {
      expect(opened.datapath).toBe(made.at(-1));
    });
    const dropped = await second;
    for (let i = 0; i < 500 && !isClosed(dropped); i++) await new Promise((r) => setTimeout(r, 10));
    expect(isClosed(dropped)).toBe(true);

    // nothing to go by: a missing file, or limits the text does not tell plainly
    await preloadConfigFile(join(dir, 'missing.json'), bpffs);
    const twice = join(dir, 'twice.json');
    writeFileSync(twice, '{"limits": {"maxVips": 8}, "vips": [{"limits": 1}]}');
    await preloadConfigFile(twice, bpffs);
    expect(spy).toHaveBeenCalledTimes(calls + 3);
  });
});
