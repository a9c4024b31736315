// KernelDatapath.listBackends reads the backends array map in chunks (8192 entries, event-loop turns between
// them): every set entry is found, whichever chunk it falls in, and nothing else. Privileged (BPF maps only).
import { KernelDatapath } from '../../src/datapath/kernel';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('KernelDatapath.listBackends over a big backends map', () => {
  let dp: KernelDatapath | null = null;
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 1024, vips: 8, backends: 40_000 } });
  });
  afterAll(() => dp?.close());

  it('finds the entries at every chunk edge and at the map end, with their fields', async () => {
    const ids = [1, 8191, 8192, 8193, 16384, 24575, 32768, 39_999];
    for (const id of ids)
      await dp!.upsertBackend({
        id,
        address:
          id % 2 === 0 ? `10.${id >> 16}.${(id >> 8) & 255}.${id & 255}` : `2001:db8::${id.toString(16)}`,
        state: id === 8192 ? 'down' : 'up',
        ...(id === 39_999 ? { encap: 'gue' as const } : {}),
      });
    const got = await dp!.listBackends();
    expect(got.map((b) => b.id)).toEqual(ids);
    expect(got.find((b) => b.id === 8192)).toEqual({ id: 8192, address: '10.0.32.0', state: 'down' });
    expect(got.find((b) => b.id === 39_999)).toEqual({
      id: 39_999,
      address: '2001:db8::9c3f',
      state: 'up',
      encap: 'gue',
    });
  });
});
