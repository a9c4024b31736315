// Two BgpSpeakers over loopback: announce, diff-only updates, withdraw, graceful shutdown, status.
import { BgpSpeaker } from '../../src/bgp/speaker';
import { Registry } from 'prom-client';
import { UpdateMessage } from '../../src/bgp/codec';
import { registerBgpMetrics } from '../../src/bgp/metrics';
import { formatBgpStatus } from '../../src/bgp/format';
import { testPorts } from '../helpers/ports';

const port = testPorts(1);

function waitFor(pred: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (pred()) return resolve();
      if (Date.now() > until) return reject(new Error(`condition not met within ${ms} ms`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe('BgpSpeaker over loopback', () => {
  let router: BgpSpeaker;
  let lb: BgpSpeaker;
  const updates: UpdateMessage[] = [];

  beforeAll(async () => {
    router = new BgpSpeaker({
      asn: 65000,
      routerId: '10.255.0.1',
      listen: { address: '127.0.0.1', port },
      peers: [{ address: '127.0.0.2', asn: 65001, passive: true, holdTime: 40, families: ['ipv4', 'ipv6'] }],
    });
    router.on('update', (_a: string, m: UpdateMessage) => updates.push(m));
    await router.start();
    lb = new BgpSpeaker({
      asn: 65001,
      routerId: '10.255.0.2',
      peers: [
        {
          address: '127.0.0.1',
          asn: 65000,
          port,
          localAddress: '127.0.0.2',
          holdTime: 30,
          families: ['ipv4', 'ipv6'],
          nextHop4: '192.0.2.2',
          nextHop6: '2001:db8::2',
          communities: ['65001:7'],
        },
      ],
      backoffMinMs: 100,
    });
    await lb.start();
    await waitFor(() => lb.status().peers[0]?.state === 'Established', 5000);
  });

  afterAll(async () => {
    await lb.stop();
    await router.stop();
  });

  it('establishes with negotiated hold time, families and 4-octet AS', () => {
    const s = lb.status().peers[0]!;
    // The smaller of the two offers (router 40 s, ours 30 s). Long on purpose: a starved test process must not
    // meet a hold-timer expiry (3 s once re-established the session mid-test on a loaded machine).
    expect(s.negotiatedHoldTime).toBe(30);
    expect(s.families).toEqual([
      { afi: 1, safi: 1 },
      { afi: 2, safi: 1 },
    ]);
    expect(s.fourOctetAs).toBe(true);
    expect(s.peerGracefulRestart).toBe(true);
  });

  it('announces v4 and v6 routes with communities, sends nothing for an unchanged set', async () => {
    lb.setRoutes([
      { prefix: '10.0.0.10/32', communities: ['65001:100'], largeCommunities: ['65001:1:2'] },
      { prefix: '2001:db8:10::10/128', communities: ['65001:100'] },
    ]);
    await waitFor(() => router.status().peers[0]!.receivedPrefixes === 2, 3000);
    const sentBefore = lb.status().peers[0]!.updatesSent;
    lb.setRoutes([
      { prefix: '2001:db8:10::10', communities: ['65001:100'] },
      { prefix: '10.0.0.10', communities: ['65001:100', '65001:100'], largeCommunities: ['65001:1:2'] },
    ]);
    expect(lb.status().peers[0]!.updatesSent).toBe(sentBefore);
    const v4 = updates.find((u) => u.nlri.includes('10.0.0.10/32'))!;
    expect(v4.attrs.nextHop).toBe('192.0.2.2');
    expect(v4.attrs.communities).toEqual(['65001:100', '65001:7']);
    expect(v4.attrs.largeCommunities).toEqual(['65001:1:2']);
    expect(v4.attrs.asPath).toEqual([{ type: 2, asns: [65001] }]);
    const v6 = updates.find((u) => u.attrs.mpReach?.nlri.includes('2001:db8:10::10/128'))!;
    expect(v6.attrs.mpReach!.nextHops).toEqual(['2001:db8::2']);
    expect(lb.status().peers[0]!.announced).toEqual(['10.0.0.10/32', '2001:db8:10::10/128']);
  });

  it('withdraws what leaves the set', async () => {
    lb.setRoutes([{ prefix: '10.0.0.10/32', communities: ['65001:100'], largeCommunities: ['65001:1:2'] }]);
    await waitFor(() => router.status().peers[0]!.receivedPrefixes === 1, 3000);
    expect(lb.status().peers[0]!.announced).toEqual(['10.0.0.10/32']);
    expect(lb.status().peers[0]!.prefixesWithdrawnTotal).toBe(1);
  });

  it('packs thousands of prefixes into UPDATEs of at most 4096 bytes and withdraws them again', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => ({ prefix: `10.${100 + (i >> 8)}.${i & 255}.1/32` }));
    const many6 = Array.from({ length: 700 }, (_, i) => ({ prefix: `2001:db8:1::${i.toString(16)}/128` }));
    const base = { prefix: '10.0.0.10/32', communities: ['65001:100'], largeCommunities: ['65001:1:2'] };
    const sent0 = lb.status().peers[0]!.updatesSent;
    lb.setRoutes([base, ...many, ...many6]);
    await waitFor(() => router.status().peers[0]!.receivedPrefixes === 3701, 5000);
    const msgs = lb.status().peers[0]!.updatesSent - sent0;
    // 3000 * 5 bytes need 4 messages and 700 * 17 bytes 3: packed, not one per prefix.
    expect(msgs).toBeGreaterThanOrEqual(7);
    expect(msgs).toBeLessThan(20);
    lb.setRoutes([base]);
    await waitFor(() => router.status().peers[0]!.receivedPrefixes === 1, 5000);
  });

  it('exports metrics and a text status from status()', async () => {
    const registry = new Registry();
    registerBgpMetrics({ registry, status: () => lb.status() });
    const text = await registry.metrics();
    expect(text).toContain('peak_xdp_bgp_session_state{peer="127.0.0.1",peer_asn="65000"} 5');
    expect(text).toContain('peak_xdp_bgp_announced_prefixes{peer="127.0.0.1"} 1');
    expect(text).toMatch(
      /peak_xdp_bgp_messages_total\{peer="127.0.0.1",direction="out",type="update"\} [1-9]/,
    );
    expect(text).toMatch(/peak_xdp_bgp_session_transitions_total\{peer="127.0.0.1"\} [1-9]/);
    // Counters do not double count across scrapes.
    const before = /direction="out",type="open"\} (\d+)/.exec(await registry.metrics())?.[1];
    expect(before).toBe('1');
    const out = formatBgpStatus(lb.status());
    expect(out).toMatch(/127\.0\.0\.1\s+65000\s+Established/);
    expect(out).toContain('127.0.0.1: 10.0.0.10/32');
  });

  it('re-announces with GRACEFUL_SHUTDOWN, then withdraws and closes with CEASE', async () => {
    updates.length = 0;
    const t0 = Date.now();
    await lb.stop({ gracefulShutdownMs: 300 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await waitFor(() => updates.some((u) => u.withdrawn.includes('10.0.0.10/32')), 2000);
    const gs = updates.find((u) => u.nlri.includes('10.0.0.10/32'));
    expect(gs?.attrs.communities).toContain('65535:0');
    // The GRACEFUL_SHUTDOWN re-announce comes before the withdraw.
    expect(updates.indexOf(gs!)).toBeLessThan(updates.findIndex((u) => u.withdrawn.includes('10.0.0.10/32')));
    await waitFor(() => router.status().peers[0]!.state !== 'Established', 3000);
    expect(router.status().peers[0]!.lastError).toMatch(/Cease \/ Administrative Shutdown/);
  });
});
