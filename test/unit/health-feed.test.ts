// HealthFeed: the flips a shared probe causes in one turn (every membership of one backend) are logged one
// line per backend and change, and the daemon is asked for one sync, not one per membership.
import fc from 'fast-check';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { DaemonHealthMonitor } from '../../src/daemon/collaborators';
import { HealthFeed, LOOKS_PER_TURN, TARGETS_PER_TURN } from '../../src/daemon/health-feed';
import { DueLanes } from '../../src/health/due-queue';
import { HealthMonitor, type HealthTarget } from '../../src/health/monitor';
import { healthTargets, targetsChange, targetsChangeSteps } from '../../src/health/targets';
import { NEW_TARGET_STATUS } from '../../src/health/state';
import { DEFAULTS, validateConfig } from '../../src/model';
import { desiredState, type DesiredState } from '../../src/reconcile';
import { TEST_DATAPATH_CONFIG } from '../helpers/datapath-config';
import { countTurns } from '../helpers/turn-counter';

/** A pino logger whose lines are kept, parsed. */
function logged() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, log: pino({ level: 'info' }, sink) };
}

describe('HealthFeed change batching', () => {
  it('512 memberships of one backend flipping in one turn: one log line, one onChange', async () => {
    const { lines, log } = logged();
    const monitor = Object.assign(new EventEmitter(), {
      start: () => undefined,
    }) as unknown as DaemonHealthMonitor;
    const feed = new HealthFeed({ monitor, log });
    let changes = 0;
    feed.start(() => changes++);
    for (let v = 0; v < 512; v++)
      monitor.emit('change', { vip: `v${v}`, address: '10.1.0.1', from: 'up', to: 'down' });
    monitor.emit('change', { vip: 'v0', address: '10.1.0.2', from: 'down', to: 'up' });
    expect(changes).toBe(0);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(changes).toBe(1);
    const health = lines.filter((l) => l.msg === 'backend health changed');
    expect(
      health.map(({ vips, first, vip, backend, from, to }) => ({ vips, first, vip, backend, from, to })),
    ).toEqual([
      {
        vips: 512,
        first: ['v0', 'v1', 'v2', 'v3', 'v4'],
        vip: undefined,
        backend: '10.1.0.1',
        from: 'up',
        to: 'down',
      },
      { vips: undefined, first: undefined, vip: 'v0', backend: '10.1.0.2', from: 'down', to: 'up' },
    ]);
    // A later flip is a batch of its own.
    monitor.emit('change', { vip: 'v9', address: '10.1.0.1', from: 'down', to: 'up' });
    await new Promise((r) => setImmediate(r));
    expect(changes).toBe(2);
  });

  it('logs at most its budget of flip lines per window; the rest are counted in one line when the window ends', async () => {
    const { lines, log } = logged();
    const monitor = Object.assign(new EventEmitter(), {
      start: () => undefined,
    }) as unknown as DaemonHealthMonitor;
    const feed = new HealthFeed({
      monitor,
      log,
      flipLog: { lines: 3, windowMs: 200 },
    });
    let changes = 0;
    feed.start(() => changes++);
    // 8 backends down in one turn (one of them behind two VIPs), 2 up
    for (let b = 0; b < 8; b++)
      monitor.emit('change', { vip: 'v0', address: `10.1.0.${b}`, from: 'up', to: 'down' });
    monitor.emit('change', { vip: 'v1', address: '10.1.0.7', from: 'up', to: 'down' });
    for (let b = 8; b < 10; b++)
      monitor.emit('change', { vip: 'v0', address: `10.1.0.${b}`, from: 'down', to: 'up' });
    await new Promise((r) => setImmediate(r));
    expect(changes).toBe(1); // every change still reaches the daemon
    const flips = () => lines.filter((l) => l.msg === 'backend health changed');
    expect(flips().map((l) => l.backend)).toEqual(['10.1.0.0', '10.1.0.1', '10.1.0.2']);
    const summary = () =>
      lines.filter((l) => String(l.msg).startsWith('backend health changes past the log budget'));
    expect(summary()).toEqual([]);
    // the summary comes when the window ends (bounded wait: 200 ms window)
    for (let i = 0; i < 100 && summary().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const [s] = summary();
    expect(s).toMatchObject({
      changes: 7,
      memberships: 8,
      toDown: 5,
      toUp: 2,
      first: ['10.1.0.3', '10.1.0.4', '10.1.0.5', '10.1.0.6', '10.1.0.7'],
      lines: 3,
      windowMs: 200,
    });
    expect(summary().length).toBe(1);
    // a new window: lines again
    monitor.emit('change', { vip: 'v0', address: '10.1.0.0', from: 'down', to: 'up' });
    await new Promise((r) => setImmediate(r));
    expect(flips().length).toBe(4);
    expect(changes).toBe(2);
  });
});

describe('HealthFeed: probes late because of the in-flight cap are logged', () => {
  it('saturation warns (once per interval), its end is told; targets needing more slots than the cap warn once', async () => {
    const { lines, log } = logged();
    const stats = { probes: 51_200, worstCaseInFlight: 25_600, maxInFlight: 18_750 };
    const monitor = Object.assign(new EventEmitter(), {
      start: () => undefined,
      release: () => undefined,
      setTargets: () => undefined,
      statuses: () => new Map(),
      stats: () => stats,
    }) as unknown as DaemonHealthMonitor;
    const feed = new HealthFeed({ monitor, log });
    feed.start(() => undefined);
    const backlog = { maxInFlight: 18_750, backlog: 3000, delayedByCap: 10, since: 0, durationMs: 0 };
    monitor.emit('backlog', { ...backlog, saturated: true });
    monitor.emit('backlog', { ...backlog, saturated: false, durationMs: 4200, delayedByCap: 9000 });
    monitor.emit('backlog', { ...backlog, saturated: true }); // within the interval: not logged, nor its end
    monitor.emit('backlog', { ...backlog, saturated: false, durationMs: 10 });
    const desired = { vips: [] } as never;
    await feed.retarget(desired);
    await feed.retarget(desired); // still over: no second line
    stats.worstCaseInFlight = 100;
    await feed.retarget(desired);
    stats.worstCaseInFlight = 30_000;
    await feed.retarget(desired); // over again: warned again
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'health probes wait for in-flight slots: checks run late, dead backends are marked down late'],
      [30, 'health probes no longer wait for in-flight slots'],
      [40, expect.stringMatching(/^health probes: if every target timed out/)],
      [40, expect.stringMatching(/^health probes: if every target timed out/)],
    ]);
    expect(lines[0]).toMatchObject({ maxInFlight: 18_750, backlog: 3000, delayedByCap: 10 });
    expect(lines[1]).toMatchObject({ seconds: 4.2, delayedByCap: 9000 });
    expect(lines[2]).toMatchObject({ probes: 51_200, worstCaseInFlight: 25_600, maxInFlight: 18_750 });
  });
});

describe('HealthFeed seeds', () => {
  it('a seed bridges a restart until the monitor reports its key; no statuses() map per retarget', async () => {
    const log = pino({ level: 'silent' });
    let statusCalls = 0;
    const reported = new Map<string, string>([['k1', 'up']]);
    const monitor = Object.assign(new EventEmitter(), {
      start: () => undefined,
      release: () => undefined,
      setTargets: () => undefined,
      status: (k: string) => reported.get(k),
      statuses: () => (statusCalls++, new Map(reported)),
      since: () => new Map(),
      stats: () => ({ probes: 0, worstCaseInFlight: 0, maxInFlight: 100 }),
    }) as unknown as DaemonHealthMonitor;
    const feed = new HealthFeed({ monitor, log });
    const dp = { listBackends: async () => [1, 2, 3].map((id) => ({ id, state: id === 3 ? 'up' : 'down' })) };
    const probe = { vips: [{ backends: [1, 2, 3].map((id) => ({ id, key: `k${id}` })) }] };
    await feed.seed(dp as never, probe as never);
    // k1 and k2 were down in the datapath; the monitor already reports k1.
    expect(feed.inputs().health).toEqual(new Map([['k1', 'up'], ['k2', 'down']])); // prettier-ignore
    statusCalls = 0;
    expect(await feed.retarget({ vips: [] } as never)).toBe(false);
    // A map of every membership is no work per sync: the seeds are looked up one by one.
    expect(statusCalls).toBe(0);
    expect(feed.inputs().health).toEqual(new Map([['k1', 'up'], ['k2', 'down']])); // prettier-ignore
    // Once the monitor reports k2 too, its seed is gone for good.
    reported.set('k2', 'up');
    await feed.retarget({ vips: [] } as never);
    reported.delete('k2');
    expect(feed.inputs().health).toEqual(new Map([['k1', 'up']]));
  });
});

describe('HealthFeed: the monitor targets are set again only when they changed', () => {
  const DP = TEST_DATAPATH_CONFIG;
  const state = (
    vips: { backends: number[]; intervalMs?: number; port?: number }[],
    health?: Map<string, 'down'>,
  ) => {
    const r = validateConfig({
      interface: 'eth0',
      vips: vips.map((v, i) => ({
        name: `v${i}`,
        address: `10.0.0.${i + 1}`,
        port: v.port ?? 80,
        tableSize: 251,
        healthCheck: { type: 'tcp', intervalMs: v.intervalMs ?? 2000 },
        backends: v.backends.map((b) => ({ address: `10.1.${i}.${b}` })),
      })),
    });
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    return desiredState({ config: r.config, datapathConfig: DP, ...(health ? { health } : {}) });
  };

  it('sets the targets once, then updates only what changed (nothing for a flip or a state built again)', async () => {
    const set: HealthTarget[][] = [];
    const updates: { remove: readonly string[]; upsert: readonly HealthTarget[] }[] = [];
    const monitor = Object.assign(new EventEmitter(), {
      start: () => undefined,
      release: () => undefined,
      setTargets: (t: HealthTarget[]) => void set.push(t),
      updateTargets: (c: { remove: readonly string[]; upsert: readonly HealthTarget[] }) =>
        void updates.push(c),
      status: () => undefined,
      stats: () => ({ probes: 0, worstCaseInFlight: 0, maxInFlight: 100 }),
    }) as unknown as DaemonHealthMonitor;
    const log = pino({ level: 'silent' });
    const feed = new HealthFeed({ monitor, log });
    const base = [{ backends: [1, 2, 3] }, { backends: [1, 2] }];
    const d0 = state(base);
    await feed.retarget(d0);
    expect(set).toHaveLength(1);
    expect(set[0]!.map((t) => t.key)).toEqual(healthTargets(d0).map((t) => t.key));
    await feed.retarget(d0);
    await feed.retarget(state(base)); // built again: new objects, same targets
    const key = d0.vips[0]!.backends[1]!.key;
    await feed.retarget(state(base, new Map([[key, 'down']]))); // a health flip: same targets
    expect(updates).toHaveLength(0);
    // Each change updates only the memberships it touched: a backend added, one removed (the rest of its VIP
    // stays as it is), the check's interval (every target of the VIP), the port (every key of the VIP), a VIP gone.
    const changes = [
      [{ backends: [1, 2, 3, 4] }, { backends: [1, 2] }],
      [{ backends: [1, 2, 3, 4] }, { backends: [2] }],
      [{ backends: [1, 2, 3, 4] }, { backends: [2], intervalMs: 3000 }],
      [
        { backends: [1, 2, 3, 4], port: 81 },
        { backends: [2], intervalMs: 3000 },
      ],
      [{ backends: [1, 2, 3, 4], port: 81 }],
    ];
    for (const c of changes) await feed.retarget(state(c));
    expect(set).toHaveLength(1);
    const short = (k: string): string => k.replace(/:\d+\/tcp>10\.1\.\d+/, '');
    expect(updates.map((u) => [u.remove.map(short), u.upsert.map((t) => short(t.key))])).toEqual([
      [[], ['10.0.0.1.4']],
      [['10.0.0.2.1'], []],
      [[], ['10.0.0.2.2']],
      [['10.0.0.1.1', '10.0.0.1.2', '10.0.0.1.3', '10.0.0.1.4'], ['10.0.0.1.1', '10.0.0.1.2', '10.0.0.1.3', '10.0.0.1.4']],
      [['10.0.0.2.2'], []],
    ]); // prettier-ignore
    expect(updates[2]!.upsert[0]!.check.intervalMs).toBe(3000);
  });

  it('after the first targets the next desired state looks up no membership: they start as the state showed them', async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const r = validateConfig({
      interface: 'eth0',
      vips: [1, 2].map((i) => ({
        name: `v${i}`,
        address: `10.0.0.${i}`,
        port: 80,
        tableSize: 251,
        healthCheck: { type: 'tcp' },
        backends: [1, 2, 3].map((b) => ({ address: `10.1.${i}.${b}` })),
      })),
    });
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    const build = (ids?: DesiredState['ids']) =>
      desiredState({
        config: r.config,
        datapathConfig: DP,
        ...feed.inputs(),
        now: 0,
        ...(ids ? { ids } : {}),
      });
    const d1 = build();
    expect(await feed.retarget(d1)).toBe(false);
    expect(monitor.statuses().size).toBe(6);
    // the monitor's status view, as desiredState reads it
    const get = jest.spyOn(Object.getPrototypeOf(monitor.statuses()) as Map<string, unknown>, 'get');
    const d2 = build(d1.ids);
    expect(get).not.toHaveBeenCalled();
    expect(d2.vips.map((v, i) => v === d1.vips[i])).toEqual([true, true]);
    get.mockRestore();
    monitor.stop();
  });

  it('retarget resolves true only when a target set now has a status other than desired state gave it, and looks up only those', async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const ids = Array.from({ length: 50 }, (_, i) => i + 1);
    const keyOf = (b: number) => state([{ backends: [b] }]).vips[0]!.backends[0]!.key;
    // The first targets start with NEW_TARGET_STATUS, which a desired state built before them shows: no sync more.
    const first = state([{ backends: ids }]);
    expect(first.vips[0]!.backends.every((b) => b.health === NEW_TARGET_STATUS)).toBe(true);
    expect(await feed.retarget(first)).toBe(false);
    // one backend added: only its target is looked up; it starts as that state shows it
    const lookups: string[] = [];
    const status = monitor.status.bind(monitor);
    const spy = () => jest.spyOn(monitor, 'status').mockImplementation((k) => (lookups.push(k), status(k)));
    const d2 = state([{ backends: [...ids, 51] }]);
    spy();
    expect(await feed.retarget(d2)).toBe(false);
    expect(lookups).toEqual([keyOf(51)]);
    jest.restoreAllMocks();
    // one more, built from a health input that says down (stale): its new target starts up, and that differs
    const d3 = state([{ backends: [...ids, 51, 52] }], new Map([[keyOf(52), 'down']]));
    expect(d3.vips[0]!.backends[51]!.health).toBe('down');
    lookups.length = 0;
    spy();
    expect(await feed.retarget(d3)).toBe(true);
    expect(lookups).toEqual([keyOf(52)]);
    jest.restoreAllMocks();
    // the same targets again: nothing set, nothing looked up
    lookups.length = 0;
    spy();
    expect(await feed.retarget(state([{ backends: [...ids, 51, 52] }]))).toBe(false);
    expect(lookups).toEqual([]);
    jest.restoreAllMocks();
    monitor.stop();
  });

  it("targetsChange: nothing for equal targets; the new or changed targets (a VIP's check changed: all of its), and the keys that went", () => {
    const a = state([{ backends: [1, 2] }, { backends: [3] }]).vips;
    const none = { remove: [], upsert: [], health: [], vips: [] };
    expect(targetsChange(a, a)).toEqual(none);
    expect(targetsChange(a, state([{ backends: [1, 2] }, { backends: [3] }]).vips)).toEqual(none);
    expect(targetsChange([], [])).toEqual(none);
    const keys = (c: ReturnType<typeof targetsChange>) => ({
      remove: c.remove,
      upsert: c.upsert.map((t) => t.key),
      vips: c.vips.map((v) => v.name),
    });
    expect(keys(targetsChange(a, state([{ backends: [1, 2] }]).vips))).toEqual({
      remove: ['10.0.0.2:80/tcp>10.1.1.3'],
      upsert: [],
      vips: [],
    });
    expect(keys(targetsChange(a, state([{ backends: [1, 3] }, { backends: [3] }]).vips))).toEqual({
      remove: ['10.0.0.1:80/tcp>10.1.0.2'],
      upsert: ['10.0.0.1:80/tcp>10.1.0.3'],
      vips: ['v0'],
    });
    expect(
      keys(targetsChange(a, state([{ backends: [1, 2] }, { backends: [3], intervalMs: 2500 }]).vips)),
    ).toEqual({
      remove: [],
      upsert: ['10.0.0.2:80/tcp>10.1.1.3'],
      vips: ['v1'],
    });
    expect(keys(targetsChange([], a))).toEqual({
      remove: [],
      upsert: healthTargets({ vips: a } as never).map((t) => t.key),
      vips: ['v0', 'v1'],
    });
    // A membership whose address changed under the same key is upserted (its probe moves); the others are not.
    const moved = (addr: string) =>
      [
        {
          name: 'x',
          healthCheck: a[0]!.healthCheck,
          backends: [
            { key: 'k1', address: '10.9.0.1', health: 'unknown' },
            { key: 'k2', address: addr, health: 'unknown' },
          ],
        },
      ] as never;
    expect(keys(targetsChange(moved('10.9.0.2'), moved('10.9.0.3')))).toEqual({
      remove: [],
      upsert: ['k2'],
      vips: ['x'],
    });
    // Any edit of a VIP's memberships (same check): the new or moved ones upserted and the ones gone removed,
    // exactly as a Map of every membership finds them (property; the prefix and suffix are compared in place).
    const membersArb = fc.uniqueArray(
      fc.record({ key: fc.integer({ min: 0, max: 30 }).map((k) => `k${k}`), address: fc.constantFrom('10.9.0.1', '10.9.0.2', '10.9.0.3') }), // prettier-ignore
      { selector: (m) => m.key, maxLength: 12 },
    );
    const vipOf = (ms: { key: string; address: string }[]) =>
      [{ name: 'x', healthCheck: a[0]!.healthCheck, backends: ms.map((m) => ({ ...m, health: 'unknown' })) }] as never; // prettier-ignore
    fc.assert(
      fc.property(membersArb, membersArb, (before, after) => {
        const had = new Map(before.map((m) => [m.key, m.address]));
        const now = new Set(after.map((m) => m.key));
        const c = targetsChange(vipOf(before), vipOf(after));
        expect(c.upsert.map((t) => t.key).sort()).toEqual(after.filter((m) => had.get(m.key) !== m.address).map((m) => m.key).sort()); // prettier-ignore
        expect([...c.remove].sort()).toEqual(
          before
            .filter((m) => !now.has(m.key))
            .map((m) => m.key)
            .sort(),
        );
        // each upsert with the health desired state gave it
        expect(c.health).toEqual(c.upsert.map(() => 'unknown'));
      }),
      { numRuns: 500 },
    );
    // `initial` seeds the new targets' statuses, as healthTargets does.
    const seeded = targetsChange([], a, new Map([['10.0.0.2:80/tcp>10.1.1.3', 'down']]));
    expect(seeded.upsert.map((t) => t.initial)).toEqual([undefined, undefined, 'down']);
  });
});

describe('HealthFeed: a big change of targets is set in pieces', () => {
  const check = { ...DEFAULTS.healthCheck, type: 'tcp' as const, port: 80 };
  const vip = (v: number, n: number, from = 0, name = `v${v}`, health = 'unknown') => ({
    name,
    healthCheck: check,
    backends: Array.from({ length: n }, (_, i) => {
      const b = i + from;
      return { key: `v${v}>${b}`, address: `10.${v}.${b >> 8}.${b & 255}`, health };
    }),
  });
  const held = (m: HealthMonitor) =>
    m
      .snapshot()
      .map((s) => `${s.key} ${s.vip} ${s.address} ${s.status}`)
      .sort();
  /** The memberships `monitor` held at each event-loop turn from now until stop(). */
  const membershipsPerTurn = (monitor: HealthMonitor): { seen: number[]; stop: () => void } => {
    const seen: number[] = [];
    let on = true;
    const tick = (): void => {
      seen.push(monitor.stats().memberships);
      if (on) setImmediate(tick);
    };
    setImmediate(tick);
    return { seen, stop: () => void (on = false) };
  };

  it('with event-loop turns between pieces of TARGETS_PER_TURN, ending where one setTargets ends', async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const ref = new HealthMonitor();
    const d1 = { vips: Array.from({ length: 5 }, (_, v) => vip(v, 4000)) } as never;
    // Turns the event loop gave while the targets were set, and the memberships the monitor held at each.
    const { seen, stop } = membershipsPerTurn(monitor);
    expect(await feed.retarget(d1)).toBe(true); // new targets: up, where the state has them unknown
    stop();
    expect(new Set(seen.filter((n) => n > 0 && n < 20_000)).size).toBeGreaterThanOrEqual(
      Math.ceil(20_000 / TARGETS_PER_TURN) - 1,
    );
    ref.setTargets(healthTargets(d1));
    expect(held(monitor)).toEqual(held(ref));
    // Every VIP's backends replaced (removals in pieces too), and v0 renamed v9 over the same keys: they move.
    const d2 = {
      vips: [vip(0, 4000, 0, 'v9'), ...[1, 2, 3, 4].map((v) => vip(v, 4000, 4000))],
    } as never;
    await feed.retarget(d2);
    ref.setTargets(healthTargets(d2));
    expect(held(monitor)).toEqual(held(ref));
    expect(monitor.stats()).toMatchObject({ memberships: 20_000, probes: 20_000 });
  });

  it('the probe queues are cut to size once per change, after its last piece, not after every piece', async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const fit = jest.spyOn(DueLanes.prototype, 'fit');
    // the cuts themselves (renumber: every held id copied; resizeIds: every id array copied)
    const renumber = jest.spyOn(DueLanes.prototype as unknown as { renumber: () => void }, 'renumber');
    try {
      const d1 = { vips: Array.from({ length: 5 }, (_, v) => vip(v, 4000)) } as never; // 10 pieces
      await feed.retarget(d1);
      expect(fit).toHaveBeenCalledTimes(1);
      // piece by piece, the room doubled and was cut back to 1.25x every few pieces (two copies of every id at once)
      expect(renumber.mock.calls.length).toBeLessThanOrEqual(1);
      const d2 = { vips: [vip(0, 4000, 0, 'v9'), ...[1, 2, 3, 4].map((v) => vip(v, 4000, 4000))] } as never;
      fit.mockClear();
      await feed.retarget(d2); // upserts and removals, both in pieces
      expect(fit).toHaveBeenCalledTimes(1);
      expect(monitor.stats()).toMatchObject({ memberships: 20_000, probes: 20_000 });
    } finally {
      fit.mockRestore();
      renumber.mockRestore();
    }
  });

  it("the start's targets are made, set and compared in pieces too, and the monitor's room is made once", async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const n = 5 * LOOKS_PER_TURN;
    // Each VIP's state says what a new target starts with: nothing differs, so every status is looked at.
    const d = {
      vips: Array.from({ length: 8 }, (_, v) => vip(v, n / 8, 0, `v${v}`, NEW_TARGET_STATUS)),
    } as never;
    const { seen, stop } = membershipsPerTurn(monitor);
    // the room is made an array at a time, each in a turn of its own (no piece in that turn)
    const grown: { turn: number; pieces: number }[] = [];
    let pieces = 0;
    const turns = countTurns();
    const growRoom = monitor.growRoom.bind(monitor);
    monitor.growRoom = () => {
      const g = growRoom();
      if (g) grown.push({ turn: turns.turns, pieces });
      return g;
    };
    const update = monitor.updateTargets.bind(monitor);
    monitor.updateTargets = (c, o) => {
      pieces++;
      update(c, o);
    };
    expect(await feed.retarget(d)).toBe(false);
    turns.stop();
    stop();
    // 14 typed and 3 object columns of the memberships, its key index, 4 id arrays of the probe queue and the probes'
    // 7 columns
    expect(grown.length).toBe(29);
    expect(new Set(grown.map((g) => g.turn)).size).toBe(29);
    expect(grown.every((g) => g.pieces === 0)).toBe(true); // before the pieces: nothing grew piece by piece
    // the targets made and set a piece a turn (none made ahead), then the statuses compared (all set) in turns
    expect(seen.filter((m) => m === 0).length).toBeGreaterThanOrEqual(23);
    for (let t = 1; t < seen.length; t++)
      expect(seen[t]! - seen[t - 1]!).toBeLessThanOrEqual(TARGETS_PER_TURN);
    expect(seen.filter((m) => m > 0 && m < n).length).toBeGreaterThanOrEqual(n / TARGETS_PER_TURN - 1);
    expect(seen.filter((m) => m === n).length).toBeGreaterThanOrEqual(4);
    // room for all of them (and a 32nd and 1,024 more) made before the first piece: the columns never grew piece by
    // piece
    expect(monitor.capacity).toBe(n + (n >> 5) + 1024);
    const ref = new HealthMonitor();
    ref.setTargets(healthTargets(d));
    expect(held(monitor)).toEqual(held(ref));
    // A new status against the state's: found (true) however far in it is.
    const flipped = { vips: [...(d as DesiredState).vips] } as DesiredState;
    const last = flipped.vips[7]!;
    (flipped.vips as unknown[])[7] = { ...last, backends: last.backends.map((b, i) => (i === last.backends.length - 1 ? { ...b, health: 'down' } : b)) }; // prettier-ignore
    const fresh = new HealthFeed({ monitor: new HealthMonitor(), log: pino({ level: 'silent' }) });
    expect(await fresh.retarget(flipped)).toBe(true);
  });
});

describe('targetsChangeSteps: targetsChange a VIP at a time', () => {
  const check = { ...DEFAULTS.healthCheck, type: 'tcp' as const, port: 80 };
  const vip = (v: number, n: number, from = 0) => ({
    name: `v${v}`,
    healthCheck: check,
    backends: Array.from({ length: n }, (_, i) => ({
      key: `v${v}>${i + from}`,
      address: `10.${v}.0.${i + from}`,
      health: 'unknown',
    })),
  });

  it('yields each VIP of the new state that is not the same object (its memberships), returns targetsChange', () => {
    const same = vip(0, 3);
    const a = [same, vip(1, 4), vip(2, 5), vip(3, 2)] as never[];
    // v0 the same object, v1 built again alike, v2 one backend more, v3 gone, v4 new
    const b = [same, vip(1, 4), vip(2, 6), vip(4, 7)] as never[];
    const steps = targetsChangeSteps(a, b);
    const yields: number[] = [];
    let s = steps.next();
    for (; s.done !== true; s = steps.next()) yields.push(s.value);
    expect(yields).toEqual([4, 6, 7]);
    expect(s.value).toEqual(targetsChange(a, b));
    expect(s.value.upsert.map((t) => t.key)).toEqual([
      'v2>5',
      ...Array.from({ length: 7 }, (_, i) => `v4>${i}`),
    ]);
    expect(s.value.remove).toEqual(['v3>0', 'v3>1']);
  });

  it("the feed gives the event loop turns while it computes a big change (every VIP's backends replaced)", async () => {
    const monitor = new HealthMonitor();
    const feed = new HealthFeed({ monitor, log: pino({ level: 'silent' }) });
    const per = LOOKS_PER_TURN / 4;
    await feed.retarget({ vips: Array.from({ length: 16 }, (_, v) => vip(v, per)) } as never);
    const updates: number[] = [];
    const update = monitor.updateTargets.bind(monitor);
    const turns = countTurns();
    monitor.updateTargets = (c) => {
      updates.push(turns.turns);
      update(c);
    };
    await feed.retarget({ vips: Array.from({ length: 16 }, (_, v) => vip(v, per, per)) } as never);
    turns.stop();
    // 16 VIPs of LOOKS_PER_TURN / 4: a turn after every fourth, before the first update
    expect(updates[0]).toBeGreaterThanOrEqual(3);
  });
});

describe('HealthMonitor.reserve', () => {
  const check = { ...DEFAULTS.healthCheck, type: 'tcp' as const, port: 80 };
  const targets = (from: number, n: number): HealthTarget[] =>
    Array.from({ length: n }, (_, i) => ({
      key: `k${from + i}`,
      vip: 'v',
      address: `10.1.${(from + i) >> 8}.${(from + i) & 255}`,
      check,
    }));

  it('makes room for n more memberships at once; adding them in pieces then grows nothing', () => {
    const m = new HealthMonitor();
    m.setTargets(targets(0, 100));
    m.reserve(10_000);
    const cap = m.capacity;
    expect(cap).toBeGreaterThanOrEqual(10_100);
    for (let i = 100; i < 10_100; i += 1000) m.updateTargets({ remove: [], upsert: targets(i, 1000) });
    expect(m.capacity).toBe(cap);
    expect(m.stats().memberships).toBe(10_100);
    // without it the columns grow as the pieces come
    const g = new HealthMonitor();
    g.setTargets(targets(0, 100));
    const caps = new Set<number>();
    for (let i = 100; i < 10_100; i += 1000) {
      g.updateTargets({ remove: [], upsert: targets(i, 1000) });
      caps.add(g.capacity);
    }
    expect(caps.size).toBeGreaterThan(3);
  });

  it('refuses a bad count, naming it', () => {
    const m = new HealthMonitor();
    expect(() => m.reserve(-1)).toThrow('n: -1 is not a non-negative integer');
    expect(() => m.reserve(1.5)).toThrow('n: 1.5');
  });
});
