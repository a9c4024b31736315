// Counters of an adopted balancer pinned by an older build: its stats map's value holds fewer counters than
// this build's enum names (new counters are appended to enum peak_counter). counters() reads the ones the
// pinned value holds, under their own names, and leaves the newer ones out (it used to read past the value).
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, MapType, unpin } from '../../src/datapath/bpf';
import { counterNames, KernelDatapath } from '../../src/datapath/kernel';
import { bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('KernelDatapath.counters(): a pinned stats map of an older build', () => {
  const root = `/sys/fs/bpf/peak-xdp-test-cnt-${process.pid}`;
  const dir = join(root, 'ns', 'eth0');
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('reads only the counters the pinned value holds, each under its own name', async () => {
    const names = counterNames(bpfObjectPath('balancer'));
    // The build before drop_l2_broadcast had exactly the counters before it.
    const old = names.indexOf('drop_l2_broadcast');
    expect(old).toBeGreaterThan(20);
    expect(names.length).toBeGreaterThan(old);
    const fresh = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    fresh.pin(dir);
    fresh.close();
    // Put an "older" stats map in place of the pin: counter i holds i + 1 on every CPU.
    const stats = BpfMap.create({ type: MapType.PERCPU_ARRAY, keySize: 4, valueSize: 8 * old, maxEntries: 1 });
    const cpus = stats.valueBytes / (8 * old);
    const value = Buffer.alloc(stats.valueBytes);
    for (let c = 0; c < cpus; c++) for (let i = 0; i < old; i++) value.writeBigUInt64LE(BigInt(i + 1), 8 * (c * old + i));
    stats.update(Buffer.alloc(4), value);
    expect(unpin(join(dir, 'stats'))).toBe(true);
    stats.pin(join(dir, 'stats'));
    stats.close();

    const dp = KernelDatapath.adopt({ pinDir: dir });
    try {
      const c = await dp.counters();
      expect(Object.keys(c.global)).toEqual(names.slice(0, old));
      names.slice(0, old).forEach((n, i) => expect({ n, v: c.global[n] }).toEqual({ n, v: BigInt((i + 1) * cpus) }));
      expect(c.global.drop_bad_source).toBeUndefined();
    } finally {
      dp.close();
    }
  });
});
