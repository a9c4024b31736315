// The write commands (drain, undrain, weight, conntrack flush) in-process against a fake daemon on loopback: its
// /state and the real /v1 handler over an in-memory override set. Their --json documents name the VIP by the
// VipRef object, their texts put overrides in words; and the pure parts of status (fail-open VIPs as problems)
// and ring (members with 0 slots).
import { createServer, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { main } from '../../src/cli/main';
import { daemonLines, ringRows } from '../../src/cli/commands/inspect';
import { overrideWords } from '../../src/cli/commands/drain';
import { adminWriteApi, ConntrackFlusher, WriteTarget } from '../../src/daemon/admin-write';
import { applyChange, OverrideSet, withOverrideView } from '../../src/daemon/overrides';
import { Config, validateConfig } from '../../src/model';

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
      {
        name: 'dns',
        address: '10.0.0.11',
        port: 53,
        protocol: 'udp',
        tableSize: 101,
        backends: [{ address: '10.1.0.2' }],
      },
    ],
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}
const CFG = config();
const IDS: Record<string, number> = { web: 4, dns: 7 };

/** A daemon as the CLI sees it: /state from the config and overrides, /v1 by the real handler. */
class FakeDaemon {
  set: OverrideSet = {};
  times = ['2026-01-01T00:00:01.000Z', '2026-01-01T00:00:02.000Z', '2026-01-01T00:00:03.000Z'];
  flushed: unknown[] = [];
  /** The /state requests, query included. */
  stateRequests: string[] = [];
  server!: Server;
  admin = '';

  target: WriteTarget = {
    started: () => true,
    vips: () => CFG.vips,
    overrides: () => this.set,
    overridesLocation: () => null,
    change: async (c) =>
      (this.set = applyChange({ overrides: this.set, vips: CFG.vips, change: c, at: this.times.shift()! })),
    ids: () => ({
      vips: new Map(Object.entries(IDS)),
      backends: new Map(
        CFG.vips.map((v) => [v.name, new Map(v.backends.map((b, i) => [b.address, IDS[v.name]! * 10 + i]))]),
      ),
    }),
    conntrack: (): ConntrackFlusher => ({
      flush: async (match) => {
        const entries = [
          { vipId: 4, backendId: 40 },
          { vipId: 4, backendId: 41 },
          { vipId: 7, backendId: 70 },
        ];
        const doomed = entries.filter(match);
        this.flushed.push(...doomed);
        return doomed.length;
      },
    }),
  };

  state() {
    const desired = {
      vips: CFG.vips.map((v) => ({
        name: v.name,
        id: IDS[v.name]!,
        address: v.address,
        port: v.port,
        protocol: v.protocol,
        backends: v.backends.map((b, i) => ({
          id: IDS[v.name]! * 10 + i,
          address: b.address,
          weight: b.weight,
          drain: b.drain,
          health: 'healthy',
          state: 'up',
        })),
      })),
      failOpenVips: [],
    };
    return withOverrideView({ desired, readiness: { ready: true, reasons: [] } }, this.set, null);
  }

  async start(): Promise<void> {
    const api = adminWriteApi({
      target: this.target,
      access: { listen: '127.0.0.1', local: true, token: null },
    });
    this.server = createServer((req, res) => {
      void (async () => {
        if (await api(req, res)) return;
        if (req.url?.split('?')[0] === '/state') {
          this.stateRequests.push(req.url);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(this.state()));
          return;
        }
        res.writeHead(404).end();
      })();
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.admin = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    stdout += String(c);
    return true;
  });
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
    stderr += String(c);
    return true;
  });
  const log = jest.spyOn(console, 'log').mockImplementation((...xs: unknown[]) => {
    stdout += `${xs.join(' ')}\n`;
  });
  const exit = jest.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
  try {
    return { code: await main(argv), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    log.mockRestore();
    exit.mockRestore();
  }
}

const WEB = { id: 4, name: 'web', address: '10.0.0.10', port: 80, protocol: 'tcp' };
const DNS = { id: 7, name: 'dns', address: '10.0.0.11', port: 53, protocol: 'udp' };

describe('write commands against a fake daemon', () => {
  let d: FakeDaemon;
  beforeEach(async () => {
    d = new FakeDaemon();
    await d.start();
  });
  afterEach(() => d.stop());
  const cli = (...argv: string[]) => run([...argv, '--admin', d.admin]);

  it('drain/weight --json name the VIP by the VipRef object (by name and by address selector)', async () => {
    const r = await cli('drain', 'web', '10.1.0.2', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      apiVersion: 'peak-xdp/v1',
      kind: 'BackendOverride',
      vip: WEB,
      backend: '10.1.0.2',
      override: { drain: true, drainAt: '2026-01-01T00:00:01.000Z', at: '2026-01-01T00:00:01.000Z' },
      changed: true,
    });
    const w = await cli('weight', '10.0.0.11:53/udp', '10.1.0.2', '3', '--json');
    expect(w.code).toBe(0);
    expect(JSON.parse(w.stdout)).toMatchObject({
      kind: 'BackendOverride',
      vip: DNS,
      override: { weight: 3 },
    });
    // Only the sections the commands read (never the datapath's or every target's): the whole /state is ~200 MB
    // at 512 VIPs x 1,000 backends.
    expect(d.stateRequests.length).toBeGreaterThan(0);
    for (const u of d.stateRequests) {
      expect(u).toMatch(/^\/state\?sections=[a-zA-Z,]+$/);
      expect(u).toContain('desired');
      expect(u).not.toMatch(/actual|health/);
    }
  });

  it('drain keeps the weight override its own time; undrain says what stays, in words', async () => {
    expect((await cli('weight', 'web', '10.1.0.2', '3')).stdout).toBe(
      '10.1.0.2 in VIP web: weight 3 (since 2026-01-01T00:00:01.000Z); --clear clears it\n',
    );
    expect((await cli('drain', 'web', '10.1.0.2')).stdout).toBe(
      '10.1.0.2 in VIP web: drained (since 2026-01-01T00:00:02.000Z); peak-xdp undrain clears it\n',
    );
    expect(d.set.web!['10.1.0.2']).toEqual({
      weight: 3,
      weightAt: '2026-01-01T00:00:01.000Z',
      drain: true,
      drainAt: '2026-01-01T00:00:02.000Z',
      at: '2026-01-01T00:00:02.000Z',
    });
    const u = await cli('undrain', 'web', '10.1.0.2');
    expect(u.code).toBe(0);
    expect(u.stdout).toBe(
      '10.1.0.2 in VIP web: drain override cleared; still overridden: weight 3 since 2026-01-01T00:00:01.000Z\n',
    );
  });

  it('undrain of a backend that is not drained says so (exit 0, changed: false)', async () => {
    const u = await cli('undrain', 'web', '10.1.0.1');
    expect(u.code).toBe(0);
    expect(u.stdout).toBe('10.1.0.1 in VIP web: was not drained (no drain override to clear)\n');
    const j = JSON.parse((await cli('undrain', 'web', '10.1.0.1', '--json')).stdout);
    expect(j).toMatchObject({ vip: WEB, override: null, changed: false });
    expect(d.set).toEqual({});
  });

  it('conntrack flush --json: the VIP object, or null for --all and a backend in every VIP', async () => {
    const v = JSON.parse((await cli('conntrack', 'flush', '--vip', 'web', '--json')).stdout);
    expect(v).toEqual({
      apiVersion: 'peak-xdp/v1',
      kind: 'ConntrackFlush',
      deleted: 2,
      vip: WEB,
      backend: null,
    });
    const b = await cli('conntrack', 'flush', '--vip', '10.0.0.11:53/udp', '--backend', '10.1.0.2');
    expect(b.stdout).toBe('1 connection-table entries deleted (VIP dns, backend 10.1.0.2)\n');
    const all = JSON.parse((await cli('conntrack', 'flush', '--all', '--json')).stdout);
    expect(all).toMatchObject({ kind: 'ConntrackFlush', deleted: 3, vip: null, backend: null });
  });

  it('an unknown VIP exits 3 naming it, also with --json', async () => {
    const r = await cli('drain', 'nope', '10.1.0.2', '--json');
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout).error.message).toMatch(/no VIP named "nope" \(VIPs: web, dns\)/);
  });

  it("drain's help says what a drain does to a VIP that fails open", async () => {
    expect((await run(['drain', '--help'])).stdout.replace(/\s+/g, ' ')).toMatch(
      /While its VIP fails open .* a drained backend is taken out as down: its established flows move too/,
    );
  });
});

describe('override words', () => {
  it('each override with its own time', () => {
    expect(overrideWords({ drain: true, drainAt: 'T1', weight: 0, weightAt: 'T2', at: 'T2' })).toBe(
      'drain since T1, weight 0 since T2',
    );
    // An older daemon without per-override times: the shared `at`.
    expect(overrideWords({ weight: 5, at: 'T' })).toBe('weight 5 since T');
  });
});

describe('status: fail-open VIPs are problems', () => {
  it('a ready daemon with a fail-open VIP is degraded, naming the VIP', () => {
    expect(
      daemonLines({
        readiness: { ready: true, reasons: [] },
        reloadError: null,
        desired: { vips: [], failOpenVips: ['web', 'dns'] },
      }),
    ).toEqual([
      'daemon      ready, degraded (2)',
      '  problem   VIP web fails open: every backend fails its checks, new flows go to all of them',
      '  problem   VIP dns fails open: every backend fails its checks, new flows go to all of them',
    ]);
    expect(
      daemonLines({ readiness: { ready: true, reasons: [] }, desired: { vips: [], failOpenVips: [] } }),
    ).toEqual(['daemon      ready']);
  });
});

describe('ring rows', () => {
  const table = [1, 2, 1, 2, 1, 0, 2];
  const dp = new Map([
    [1, { address: '10.1.0.1', state: 'up' }],
    [2, { address: '10.1.0.2', state: 'up' }],
    [3, { address: '10.1.0.3', state: 'draining' }],
  ]);

  it('with the daemon: every member, 0 slots included; without: what the table holds', () => {
    const members = [
      { id: 1, address: '10.1.0.1', state: 'up' },
      { id: 2, address: '10.1.0.2', state: 'up' },
      { id: 3, address: '10.1.0.3', state: 'draining' },
      { id: 9, address: '10.1.0.9', state: 'down' },
    ];
    const rows = ringRows(table, dp, members);
    expect(rows.map((r) => [r.id, r.address, r.state, r.slots])).toEqual([
      [0, '(empty)', null, 1],
      [1, '10.1.0.1', 'up', 3],
      [2, '10.1.0.2', 'up', 3],
      [3, '10.1.0.3', 'draining', 0],
      // Not in the datapath's backend list: the daemon's address and state.
      [9, '10.1.0.9', 'down', 0],
    ]);
    expect(rows[1]!.share).toBeCloseTo(3 / 7);
    expect(rows[3]!.share).toBe(0);
    expect(ringRows(table, dp, null).map((r) => r.id)).toEqual([0, 1, 2]);
  });
});
