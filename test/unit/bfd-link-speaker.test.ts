// holdPeer / releasePeer on real BgpSpeakers over loopback: BFD Down closes the session with CEASE / BFD Down
// (RFC 9384) and no withdraw, keeps it closed across retries, and Up brings it back with the routes.
import { BgpSpeaker } from '../../src/bgp/speaker';
import { hostSpeaker } from '../../src/bgp/speaker-host';
import type { FromSpeaker, ToSpeaker } from '../../src/bgp/speaker-protocol';
import { testPorts } from '../helpers/ports';

const port = testPorts(1);

async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('BgpSpeaker.holdPeer (BFD Down)', () => {
  let router: BgpSpeaker;
  let lb: BgpSpeaker;

  beforeAll(async () => {
    router = new BgpSpeaker({
      asn: 65000,
      routerId: '10.255.0.1',
      listen: { address: '127.0.0.1', port },
      peers: [{ address: '127.0.0.2', asn: 65001, passive: true, holdTime: 3 }],
    });
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
          holdTime: 3,
          nextHop4: '192.0.2.2',
        },
      ],
      backoffMinMs: 50,
      backoffMaxMs: 100,
    });
    await lb.start();
    lb.setRoutes([{ prefix: '10.0.0.10/32' }]);
    await until(() => router.status().peers[0]!.receivedPrefixes === 1, 'route received');
  });

  afterAll(async () => {
    await lb.stop();
    await router.stop();
  });

  it('closes with CEASE / BFD Down, sends no withdraw, and stays closed until released', async () => {
    const before = lb.status().peers[0]!;
    expect(lb.holdPeer('127.0.0.1', 'BFD session went up -> down')).toBe(true);
    await until(() => router.status().peers[0]!.state !== 'Established', 'router saw the session go');
    const r = router.status().peers[0]!;
    expect(r.lastError).toMatch(/BFD Down/);
    expect(r.messagesIn.notification).toBe(1);
    const held = lb.status().peers[0]!;
    expect(held.heldDown).toBe('BFD session went up -> down');
    expect(held.prefixesWithdrawnTotal).toBe(before.prefixesWithdrawnTotal);
    expect(held.updatesSent).toBe(before.updatesSent);
    // Many reconnect backoffs (50-100 ms) later, still closed: no connect was tried.
    await new Promise((r) => setTimeout(r, 600));
    const still = lb.status().peers[0]!;
    console.log(`held: state ${still.state}, established ${still.establishedCount} time(s)`);
    expect(still.state).toBe('Idle');
    expect(still.establishedCount).toBe(before.establishedCount);
    expect(still.nextRetryMs).toBeNull();

    expect(lb.releasePeer('127.0.0.1')).toBe(true);
    expect(lb.releasePeer('127.0.0.1')).toBe(false);
    await until(() => lb.status().peers[0]!.state === 'Established', 'session back');
    await until(() => router.status().peers[0]!.receivedPrefixes === 1, 'route back');
    expect(lb.status().peers[0]!.heldDown).toBeNull();
  });

  it('an unknown peer is refused; a second hold only updates the reason', async () => {
    expect(lb.holdPeer('127.0.0.9', 'x')).toBe(false);
    expect(lb.releasePeer('127.0.0.1')).toBe(false);
    expect(lb.holdPeer('127.0.0.1', 'first')).toBe(true);
    expect(lb.holdPeer('127.0.0.1', 'second')).toBe(true);
    expect(lb.status().peers[0]!.heldDown).toBe('second');
    expect(lb.releasePeer('127.0.0.1')).toBe(true);
    await until(() => lb.status().peers[0]!.state === 'Established', 'session back');
  });
});

describe('speaker worker messages hold / release', () => {
  it('reach the speaker; a hold for an unknown peer is reported', async () => {
    const posted: FromSpeaker[] = [];
    let handler: ((m: ToSpeaker) => void) | null = null;
    const { speaker, close } = hostSpeaker({
      port: { postMessage: (m) => posted.push(m), on: (_e, fn) => (handler = fn) },
      init: {
        options: {
          asn: 65001,
          routerId: '10.255.0.3',
          peers: [{ address: '192.0.2.9', asn: 65000, passive: true }],
        },
        debug: false,
        statusEveryMs: 60_000,
      },
    });
    handler!({ t: 'hold', peer: '192.0.2.9', reason: 'BFD down' });
    expect(speaker.status().peers[0]!.heldDown).toBe('BFD down');
    handler!({ t: 'hold', peer: '192.0.2.77', reason: 'BFD down' });
    expect(posted.filter((m) => m.t === 'error')).toEqual([
      { t: 'error', error: 'hold: no peer 192.0.2.77' },
    ]);
    handler!({ t: 'release', peer: '192.0.2.9' });
    expect(speaker.status().peers[0]!.heldDown).toBeNull();
    close();
    await speaker.stop();
  });
});
