// Connection-table idle timeouts: an entry idle past its protocol's timeout is stale and the flow is re-selected
// by the current Maglev table; traffic keeps an entry fresh; 0 means never. Also what an entry stores.
import { readFileSync } from 'node:fs';
import { flowHash } from '../../src/datapath/flowhash';
import { KernelDatapath, KernelConfig } from '../../src/datapath/kernel';
import { decodeCtValue, encodeFlowKey } from '../../src/datapath/layout';
import { parseIp } from '../../src/model/ip';
import { describePrivileged } from '../helpers/privileged';
import { frame, parseFrame, TCP_FLAGS } from '../helpers/packet';
import { setTimeout as sleep } from 'node:timers/promises';

const VIP = '10.0.0.10';
const CLIENT = '192.0.2.5';
const cfg: KernelConfig = {
  ownMac: '02:00:00:00:01:01',
  nextHopMac: '02:00:00:00:01:fe',
  encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
  encapSourceV6: null,
  mtu: 1500,
};
/** Distance between two 32-bit jiffies values, modulo 2^32: they wrap ~5 minutes after boot (they start at -300 HZ). */
const jiffiesApart = (a: number, b: number): number => Math.min((a - b) >>> 0, (b - a) >>> 0);
/** The kernel's jiffies now, low 32 bits (what the datapath stores), from /proc/timer_list (root). */
const jiffiesNow = (): number => {
  const m = /^jiffies: (\d+)$/m.exec(readFileSync('/proc/timer_list', 'utf8'));
  if (!m) throw new Error('/proc/timer_list has no "jiffies:" line');
  return Number(BigInt(m[1]!) & 0xffffffffn);
};

describePrivileged('conntrack idle timeouts', () => {
  let dp: KernelDatapath;
  beforeAll(async () => {
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    await dp.configure({ ...cfg, conntrackTimeouts: { tcp: 1, udp: 1 } });
    for (let id = 1; id <= 3; id++) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    const flags = { sourceHash: false, noConntrack: false };
    await dp.upsertVip({ key: { address: VIP, port: 80, protocol: 'tcp' }, id: 1, flags, tableSize: 7 });
    await dp.upsertVip({ key: { address: VIP, port: 0, protocol: 'udp' }, id: 2, flags, tableSize: 7 });
  });
  afterAll(() => dp?.close());

  /** Points both VIPs' tables at one backend. */
  const allTo = async (backend: number) => {
    await dp.installTable(1, new Uint32Array(7).fill(backend));
    await dp.installTable(2, new Uint32Array(7).fill(backend));
  };
  const send = (sport: number, proto: 'tcp' | 'udp'): number => {
    const data = frame({
      ip: { src: CLIENT, dst: VIP },
      l4:
        proto === 'tcp'
          ? { type: 'tcp', sport, dport: 80, flags: TCP_FLAGS.ACK }
          : { type: 'udp', sport, dport: 5353 },
    });
    const r = dp.program.testRun({ data });
    expect(r.verdictName).toBe('TX');
    return parseIp(parseFrame(r.data!).ip!.dst)!.bytes[3]!;
  };
  const counter = async (name: string) => (await dp.counters()).global[name]!;

  it('a UDP entry sticks while fresh and is re-selected once idle past the timeout', async () => {
    await allTo(1);
    expect(send(1000, 'udp')).toBe(1);
    await allTo(2);
    expect(send(1000, 'udp')).toBe(1);
    const expired = await counter('ct_expired');
    await sleep(1300);
    expect(send(1000, 'udp')).toBe(2);
    expect(await counter('ct_expired')).toBe(expired + 1n);
    // The re-selection was recorded: the next table change does not move the flow while it is fresh.
    await allTo(3);
    expect(send(1000, 'udp')).toBe(2);
  });

  it('traffic keeps an entry fresh past the timeout', async () => {
    await allTo(1);
    expect(send(2000, 'udp')).toBe(1);
    await allTo(2);
    for (let i = 0; i < 5; i++) {
      await sleep(400);
      expect(send(2000, 'udp')).toBe(1);
    }
  });

  it('TCP entries expire on their own timeout; 0 means never', async () => {
    await allTo(1);
    expect(send(3000, 'tcp')).toBe(1);
    await dp.configure({ ...cfg, conntrackTimeouts: { tcp: 0, udp: 1 } });
    await allTo(2);
    await sleep(1300);
    expect(send(3000, 'tcp')).toBe(1);
    await dp.configure({ ...cfg, conntrackTimeouts: { tcp: 1, udp: 1 } });
    await sleep(1300);
    expect(send(3000, 'tcp')).toBe(2);
  });

  it('an entry stores its backend, VIP, the flow hash (the TS twin agrees) and a recent time', async () => {
    await allTo(3);
    expect(send(4000, 'tcp')).toBe(3);
    const key = encodeFlowKey({ source: CLIENT, sourcePort: 4000, destination: VIP, destinationPort: 80, proto: 6 });
    const v = decodeCtValue(dp.maps.conntrack.lookup(key)!);
    expect(v).toMatchObject({ backendId: 3, vipId: 1 });
    expect(v.hash).toBe(flowHash({ source: CLIENT, destination: VIP, sourcePort: 4000, destinationPort: 80, proto: 6 }));
    const other = decodeCtValue(dp.maps.conntrack.lookup(encodeFlowKey({ source: CLIENT, sourcePort: 1000, destination: VIP, destinationPort: 5353, proto: 17 }))!);
    // Both were written within the last few seconds (10_000 jiffies is >= 10 s at any HZ), compared modulo 2^32.
    expect(jiffiesApart(v.lastSeen, jiffiesNow())).toBeLessThan(10_000);
    expect(jiffiesApart(v.lastSeen, other.lastSeen)).toBeLessThan(10_000);
    expect(v.lastSeen).not.toBe(other.lastSeen);
  });
});
