// The replace path's order in the daemon, without root: a datapath host whose open() says "replacing an older
// build's balancer". The new balancer is configured and programmed by the first sync before takeOver() swaps it
// in; the swap is logged and counted; a start that fails before the swap leaves the old balancer untouched
// (nothing detached or unpinned), and VIPs the first sync could not write stop the swap.
import { MemoryDatapath } from '../../src/datapath/memory';
import type { Datapath } from '../../src/datapath/types';
import { Config, validateConfig } from '../../src/model';
import type { DaemonCollaborators } from '../../src/daemon/collaborators';
import { Daemon } from '../../src/daemon/daemon';
import type { DatapathHost, OpenedDatapath, PendingReplace } from '../../src/daemon/datapath-host';
import { REPLACED_MESSAGE } from '../../src/daemon/datapath-keeper';
import { FakeSource, QuietMonitor, recordingLogger } from '../helpers/daemon-fakes';

const REPLACING: PendingReplace = {
  reason: 'missing_map',
  detail: 'no map maglev_prev_tables',
  leftovers: [],
};

/** What the host saw, in order. */
type Event = { what: string; vipsHeld?: number; configured?: boolean };

class ReplacingHost implements DatapathHost {
  readonly dp = new MemoryDatapath();
  view: Datapath = this.dp;
  readonly events: Event[] = [];
  /** The old balancer's program stays attached until takeOver. */
  attached: 'old' | 'new' = 'old';
  replacing: PendingReplace | null = REPLACING;
  /** The limits of each preload asked for, and how many times an unused preload was dropped. */
  readonly preloads: Config['limits'][] = [];
  disposes = 0;

  preload(limits: Config['limits']): void {
    this.preloads.push(limits);
  }
  dispose(): void {
    this.disposes++;
  }

  claim(ifname: string) {
    return { pins: `/memory/${ifname}`, release: () => undefined, open: async () => this.open() };
  }

  private open(): OpenedDatapath {
    const replacing = (): PendingReplace | null => this.replacing;
    return {
      datapath: this.view,
      adopted: false,
      get replacing() {
        return replacing();
      },
      takeOver: async () => {
        this.events.push({
          what: 'takeOver',
          vipsHeld: (await this.dp.listVips()).length,
          configured: (await this.dp.readConfig()) !== null,
        });
        this.attached = 'new';
        this.replacing = null;
        return { mode: 'native', progId: 2, oldProgId: 1, pinError: null };
      },
      attachment: () => (this.attached === 'new' ? { kind: 'ours' } : { kind: 'other', progId: 1 }),
      attach: async () => {
        this.events.push({ what: 'attach' });
        this.attached = 'new';
        return { mode: 'native', progId: 2 };
      },
      detach: async () => void this.events.push({ what: 'detach' }),
      pinCheck: () => ({ missing: [], foreign: [] }),
      repin: () => undefined,
      unpin: () => void this.events.push({ what: 'unpin' }),
      removePinDir: () => void this.events.push({ what: 'removePinDir' }),
      close: () => void this.events.push({ what: 'close' }),
    };
  }
}

function config(): Config {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:fe',
    admin: { listen: '127.0.0.1:9100' },
    vips: [
      {
        name: 'web',
        address: '10.0.0.10',
        port: 80,
        tableSize: 101,
        backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }],
      },
    ],
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}

/** `doc`: the document the config source hands its onFirstDocument (and its JSON text to onFirstText first), as
 * the file source does, in its start. */
function rig(host: ReplacingHost, doc?: unknown, text: string = JSON.stringify(doc)) {
  const { log, records } = recordingLogger();
  let renderMetrics: (() => Promise<string | readonly Buffer[]>) | null = null;
  const collaborators: DaemonCollaborators = {
    datapathHost: host,
    hostNetwork: {
      interfaceMac: async () => '02:00:00:00:00:01',
      interfaceAddresses: async () => ['192.0.2.1'],
      defaultGatewayMac: async () => '02:00:00:00:00:fe',
    },
    configSource: (o: {
      onFirstText?: (text: string, format: 'json' | 'yaml') => void;
      onFirstDocument?: (doc: unknown) => void;
    }) => {
      const source = new FakeSource(config());
      if (doc === undefined) return source as never;
      const start = source.start.bind(source);
      source.start = async () => {
        o.onFirstText?.(text, 'json');
        o.onFirstDocument?.(doc);
        return start();
      };
      return source as never;
    },
    healthMonitor: () => new QuietMonitor() as never,
    bgpPreflight: async () => undefined,
    bgpSpeaker: () => {
      throw new Error('no BGP in this test');
    },
    adminServer: async (o: { renderMetrics: () => Promise<string | readonly Buffer[]> }) => {
      renderMetrics = o.renderMetrics;
      return {
        address: { host: '127.0.0.1', port: 9100 },
        limits: {} as never,
        connections: () => 0,
        stop: async () => undefined,
      };
    },
    vipRoutes: () => ({
      set: () => undefined,
      stop: async () => undefined,
      removeAll: async () => void records.push({ level: 'test', obj: {}, msg: 'routes removed' }),
      status: () => ({}) as never,
    }),
  } as unknown as DaemonCollaborators;
  const daemon = new Daemon({
    configPath: '/memory/c.yaml',
    detachOnExit: false,
    logger: log,
    ...collaborators,
  });
  // the body as the admin API sends it: the daemon renders /metrics into Buffers
  const metrics = async (): Promise<string> => {
    const body = await renderMetrics!();
    return typeof body === 'string' ? body : Buffer.concat(body).toString();
  };
  return { daemon, records, metrics };
}

describe('daemon: replacing a balancer pinned by an older build', () => {
  it('programs the new balancer first, then swaps it in once; logs and counts the replace', async () => {
    const host = new ReplacingHost();
    const { daemon, records, metrics } = rig(host);
    await daemon.start();
    try {
      // No plain attach: the only way onto the interface was the swap, after the VIP was written.
      expect(host.events.map((e) => e.what)).toEqual(['takeOver']);
      expect(host.events[0]).toEqual({ what: 'takeOver', vipsHeld: 1, configured: true });
      const line = records.find((r) => r.msg.startsWith(REPLACED_MESSAGE));
      expect(line?.msg).toBe('balancer replaced: pinned by an older build (no map maglev_prev_tables)');
      expect(line?.obj).toMatchObject({
        reason: 'missing_map',
        oldProgId: 1,
        progId: 2,
        connectionTableLost: true,
      });
      // Within the start: the replace came before 'daemon started'.
      const at = (m: string) => records.findIndex((r) => r.msg.startsWith(m));
      expect(at(REPLACED_MESSAGE)).toBeLessThan(at('daemon started'));
      expect(await metrics()).toMatch(/^peak_xdp_datapath_replacements_total\{reason="missing_map"\} 1$/m);
      const st = (await daemon.state()) as { adopted: boolean; attached: boolean };
      expect(st).toMatchObject({ adopted: false, attached: true });
    } finally {
      await daemon.stop();
    }
    // An exit leaves the new balancer forwarding: nothing detached or unpinned.
    expect(host.events.map((e) => e.what)).toEqual(['takeOver', 'close']);
  });

  it('VIPs the first sync could not write: no swap, the start fails, the old balancer is left as found', async () => {
    const host = new ReplacingHost();
    // Every table write fails: the VIP is not programmed.
    host.view = new Proxy(host.dp, {
      get(t, p, r) {
        if (p === 'installTables')
          return async (batch: unknown[]) => batch.map(() => new Error('injected table write failure'));
        if (p === 'installTable')
          return async () => Promise.reject(new Error('injected table write failure'));
        const v = Reflect.get(t, p, r) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const { daemon, records } = rig(host);
    await expect(daemon.start()).rejects.toThrow(
      /^not replacing the balancer pinned by an older build \(no map maglev_prev_tables\): the first sync could not program VIPs web; the old balancer keeps forwarding$/,
    );
    await daemon.stop();
    // Closed, never attached, detached or unpinned; the routes of a forwarding node stay.
    expect(host.events.map((e) => e.what)).toEqual(['close']);
    expect(host.attached).toBe('old');
    expect(records.some((r) => r.msg === 'routes removed')).toBe(false);
    expect(records.some((r) => r.msg === 'start failed: the pinned balancer was not replaced and keeps forwarding')).toBe(true); // prettier-ignore
  });

  it('a swap that fails (the attached program changed under it) fails the start and leaves things as they were', async () => {
    const host = new ReplacingHost();
    const { daemon } = rig(host);
    (host as unknown as { open: () => OpenedDatapath }).open = ((orig) =>
      function (this: ReplacingHost) {
        const o = orig.call(this);
        return {
          ...o,
          replacing: REPLACING,
          takeOver: async () => Promise.reject(new Error('attach xdp to eth0: EEXIST')),
        };
      })((host as unknown as { open: () => OpenedDatapath }).open);
    await expect(daemon.start()).rejects.toThrow(/EEXIST/);
    await daemon.stop();
    expect(host.events.map((e) => e.what)).toEqual(['close']);
    expect(host.attached).toBe('old');
  });

  it("preloads a balancer for the first document's limits (defaults filled in), none for invalid limits", async () => {
    const host = new ReplacingHost();
    const { daemon } = rig(host, { interface: 'eth0', limits: { maxVips: 64 } });
    await daemon.start();
    await daemon.stop();
    // from the text first, then from the document (the host loads only once for the same sizes)
    const asked = { maxVips: 64, maxBackends: 65536, conntrackEntries: 1048576 };
    expect(host.preloads).toEqual([asked, asked]);
    expect(host.disposes).toBeGreaterThan(0);

    // a text the guess misreads (here: it says other limits than the document): the document's come second
    const misread = new ReplacingHost();
    const third = rig(misread, { interface: 'eth0', limits: { maxVips: 64 } }, '{"limits": {"maxVips": 32}}');
    await third.daemon.start();
    await third.daemon.stop();
    expect(misread.preloads).toEqual([{ ...asked, maxVips: 32 }, asked]);

    const bad = new ReplacingHost();
    const second = rig(bad, { interface: 'eth0', limits: { maxVips: 'many' } });
    await second.daemon.start();
    await second.daemon.stop();
    expect(bad.preloads).toEqual([]);
  });
});
