// Membership state kept as columns: the rise/fall decision over plain numbers agrees with nextHealth; a
// membership keeps or restarts its state across setTargets (same key, other address or check); snapshots,
// statuses, since and per-VIP availability read the columns; a result is applied to every membership before
// its events (a listener may replace the targets); the duration event is made only when listened to; short
// of slots, probes that can still mark a backend down go before those of backends all down already.
import {
  CheckResult,
  HealthChange,
  HealthMonitor,
  HealthTarget,
  initialHealth,
  NEW_TARGET_STATUS,
  nextHealth,
  statusAfter,
  type HealthStatus,
  type VipAvailability,
} from '../../src/health';
import { CHANGE_LOG_MAX } from '../../src/health/monitor';
import { manualProber } from '../helpers/manual-prober';
import { DEFAULTS, HealthCheckConfig } from '../../src/model';

const base: HealthCheckConfig = { ...DEFAULTS.healthCheck, type: 'tcp', port: 80, intervalMs: 100, timeoutMs: 50, rise: 2, fall: 2 }; // prettier-ignore
const target = (key: string, address: string, check: Partial<HealthCheckConfig> = {}): HealthTarget => ({
  key,
  vip: key.split('>')[0]!,
  address,
  check: { ...base, ...check },
});

describe('statusAfter (pure)', () => {
  it('agrees with nextHealth for every status, streak and result up to rise/fall 4', () => {
    let compared = 0;
    for (const status of ['up', 'down'] as HealthStatus[])
      for (let rise = 1; rise <= 4; rise++)
        for (let fall = 1; fall <= 4; fall++)
          for (let successes = 0; successes <= 4; successes++)
            for (let failures = 0; failures <= 4; failures++)
              for (const ok of [true, false]) {
                const t = { rise, fall };
                const { state } = nextHealth({ status, successes, failures }, ok, t);
                expect(statusAfter(status, state.successes, state.failures, t)).toBe(state.status);
                compared++;
              }
    expect(compared).toBe(2 * 4 * 4 * 5 * 5 * 2);
  });

  it('flips only at the thresholds', () => {
    expect(statusAfter('up', 0, 2, { rise: 2, fall: 3 })).toBe('up');
    expect(statusAfter('up', 0, 3, { rise: 2, fall: 3 })).toBe('down');
    expect(statusAfter('down', 1, 0, { rise: 2, fall: 3 })).toBe('down');
    expect(statusAfter('down', 2, 0, { rise: 2, fall: 3 })).toBe('up');
    expect(nextHealth(initialHealth('down'), true, { rise: 1, fall: 1 })).toEqual({
      state: { status: 'up', successes: 1, failures: 0 },
      changed: true,
    });
  });
});

describe('HealthMonitor memberships (fake clock)', () => {
  let monitor: HealthMonitor | null = null;
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => {
    monitor?.stop();
    monitor = null;
    jest.useRealTimers();
  });

  const manual = manualProber;

  /** One round: every probe starts (interval 100 ms, no jitter), those to `address` finish with `ok`. */
  async function round(m: ReturnType<typeof manual>, address: string, ok: boolean): Promise<void> {
    await jest.advanceTimersByTimeAsync(100);
    expect(m.finish(address, ok)).toBe(1);
  }

  it("the probes' columns take the room reserved, give it back once most probes go, and grow to a new reservation only", () => {
    const m = manual();
    const mon = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    try {
      mon.reserve(20_000, { ahead: true });
      while (mon.growRoom());
      expect(mon.probeCapacity).toBe(20_000); // what was reserved: not the probe queue's quarter more
      const many = Array.from({ length: 20_000 }, (_, i) => target(`b>${i}`, `10.2.${i >> 8}.${i & 255}`));
      mon.setTargets(many);
      expect(mon.probeCapacity).toBe(20_000);
      // most go: the change's end renumbers the probes and cuts the columns to the 100 left and an eighth (+ 64)
      mon.setTargets(many.slice(0, 100));
      expect(mon.probeCapacity).toBe(100 + 12 + 64);
      // a new reservation grows them to it, not to the first one
      mon.reserve(1_000, { ahead: true });
      while (mon.growRoom());
      expect(mon.probeCapacity).toBe(1_100);
      mon.updateTargets({ remove: [], upsert: many.slice(100, 1_100) });
      expect(mon.probeCapacity).toBe(1_100);
      expect(mon.stats()).toMatchObject({ probes: 1_100, memberships: 1_100 });
      expect(mon.status('b>1099')).toBe(NEW_TARGET_STATUS);
      // past the room without a reservation: by an eighth (+ 64), not one probe at a time
      mon.updateTargets({ remove: [], upsert: [target('c>1', '10.3.0.1')] });
      expect(mon.probeCapacity).toBe(1_100 + 137 + 64);
    } finally {
      mon.stop();
    }
  });

  it('a monitor given room for many memberships grows its arrays of objects one per growRoom call, and keeps every membership', () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    monitor.setTargets([target('a>1', '10.0.0.1')]);
    monitor.reserve(40_000);
    // the room reserved, an array at a time: the three object columns (the probe queue's arrays and the probes' columns
    // were made by reserve itself)
    let grown = 0;
    while (monitor.growRoom()) grown++;
    expect(grown).toBe(3);
    expect(monitor.growRoom()).toBe(false);
    const many = Array.from({ length: 30_000 }, (_, i) => target(`b>${i}`, `10.1.${i >> 8}.${i & 255}`));
    monitor.updateTargets({ remove: [], upsert: [target('a>2', '10.0.0.2'), ...many] });
    const view = monitor.statuses();
    expect(view.size).toBe(30_002);
    expect([...view.keys()].slice(0, 3)).toEqual(['a>1', 'a>2', 'b>0']);
    expect(monitor.status('b>29999')).toBe(NEW_TARGET_STATUS);
    // room promised ahead and never grown by growRoom: made at once by the first target that needs it
    const ahead = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    ahead.reserve(40_000, { ahead: true });
    expect(ahead.capacity).toBe(0);
    ahead.setTargets([target('c>1', '10.0.0.9')]);
    expect(ahead.capacity).toBe(40_000 + 1_250 + 1_024); // a 32nd and 1,024 more
    expect(ahead.growRoom()).toBe(true); // the object columns still get theirs a call at a time
    ahead.stop();
    monitor.updateTargets({ remove: ['a>1', 'b>0', 'not a key'], upsert: [] });
    expect(monitor.statuses().size).toBe(30_000);
    expect(monitor.status('a>1')).toBeUndefined();
    expect(monitor.snapshot()[0]!.key).toBe('a>2');
  });

  it("statuses()' change log: the keys that flipped, came or went (other than up) since a version; a frozen view keeps its version; a log that no longer reaches back says so", async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    monitor.setTargets([target('a>1', '10.0.0.1'), target('a>2', '10.0.0.2'), target('b>1', '10.0.0.1')]);
    const v0 = monitor.statuses();
    const at0 = v0.changeVersion();
    expect(v0.changesSince(at0)).toEqual([]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.2', true)).toBe(1); // no flip: nothing logged
    expect(monitor.statuses().changesSince(at0)).toEqual([]);
    // v0 is out: the flip freezes it first, at its version; the live view logs both memberships of 10.0.0.1
    const out = monitor.statuses();
    expect(m.finish('10.0.0.1', false)).toBe(1);
    await round(m, '10.0.0.1', false); // fall 2: down
    expect(out.get('a>1')).toBe('up');
    expect(out.changeVersion()).toBe(at0);
    expect(out.changesSince(at0)).toEqual([]);
    const v1 = monitor.statuses();
    expect(v1.get('a>1')).toBe('down');
    expect([...v1.changesSince(at0)!].sort()).toEqual(['a>1', 'b>1']);
    const at1 = v1.changeVersion();
    // memberships that come and go: logged when down; up (NEW_TARGET_STATUS, what a key without a target counts
    // as) changes nothing for a reader
    expect(NEW_TARGET_STATUS).toBe('up');
    monitor.updateTargets({
      remove: ['a>1', 'a>2'],
      upsert: [target('c>1', '10.0.0.3'), { ...target('e>1', '10.0.0.4'), initial: 'down' }],
    });
    expect([...monitor.statuses().changesSince(at1)!].sort()).toEqual(['a>1', 'e>1']);
    expect(monitor.statuses().changesSince(at1 + 100)).toBeNull();
    // past CHANGE_LOG_MAX keys the log starts again: a reader from before gets null (it diffs every key)
    monitor.setTargets(Array.from({ length: CHANGE_LOG_MAX + 1 }, (_, i) => ({ ...target(`d>${i}`, `10.2.${i >> 8}.${i & 255}`), initial: 'down' as const }))); // prettier-ignore
    expect(monitor.statuses().changesSince(at1)).toBeNull();
    const v2 = monitor.statuses().changeVersion();
    expect(monitor.statuses().changesSince(v2)).toEqual([]);
  });

  it('a key whose address changes keeps its status, since and counts; its streaks start anew on the new probe', async () => {
    const m = manual();
    let now = 1_000;
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober, clock: () => now });
    monitor.setTargets([target('a>1', '10.0.0.1'), target('a>2', '10.0.0.2')]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', false)).toBe(1);
    now = 2_000;
    await round(m, '10.0.0.1', false); // fall 2: down at clock 2000
    expect(new Map(monitor.statuses())).toEqual(new Map([['a>1', 'down'], ['a>2', 'up']])); // prettier-ignore
    await round(m, '10.0.0.1', false);
    const before = monitor.snapshot().find((s) => s.key === 'a>1')!;
    expect(before).toMatchObject({ address: '10.0.0.1', status: 'down', since: 2_000, failures: 3, checks: 3, failedChecks: 3 }); // prettier-ignore
    monitor.setTargets([target('a>1', '10.0.0.9'), target('a>2', '10.0.0.2')]);
    const after = monitor.snapshot().find((s) => s.key === 'a>1')!;
    expect(after).toMatchObject({ address: '10.0.0.9', vip: 'a', type: 'tcp', status: 'down', since: 2_000, successes: 0, failures: 0, checks: 3, failedChecks: 3 }); // prettier-ignore
    expect(new Map(monitor.since())).toEqual(new Map([['a>1', 2_000]]));
    expect(monitor.stats()).toMatchObject({ probes: 2, memberships: 2 });
    // Its new probe starts within an interval; rise 2 brings it up.
    await jest.advanceTimersByTimeAsync(100);
    expect(m.finish('10.0.0.9', true)).toBe(1);
    expect(monitor.statuses().get('a>1')).toBe('down');
    await round(m, '10.0.0.9', true);
    expect(monitor.statuses().get('a>1')).toBe('up');
    expect(monitor.snapshot().find((s) => s.key === 'a>1')).toMatchObject({ successes: 2, failures: 0, checks: 5 }); // prettier-ignore
  });

  it('a membership never flipped has since null; an unchanged one keeps its last result across setTargets', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    const targets = [target('a>1', '10.0.0.1'), target('b>1', '10.0.0.1')];
    monitor.setTargets(targets);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', true)).toBe(1);
    const snap = monitor.snapshot();
    expect(snap).toHaveLength(2);
    expect(snap.every((s) => s.since === null && s.checks === 1 && s.last?.detail === 'connected')).toBe(
      true,
    );
    // The one result, taken by both memberships, as the prober gave it and when.
    expect(snap[0]!.last).toStrictEqual({ ok: true, durationMs: 1, detail: 'connected', at: Date.now() });
    expect(snap[1]!.last).toStrictEqual(snap[0]!.last);
    monitor.setTargets(targets.map((t) => ({ ...t })));
    expect(monitor.snapshot()[0]!.last).toStrictEqual(snap[0]!.last);
    expect(monitor.since().size).toBe(0);
  });

  it('a last result keeps the optional fields it had, and only those (the monitor keeps results in columns)', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    monitor.setTargets([target('a>1', '10.0.0.1'), target('b>1', '10.0.0.2'), target('c>1', '10.0.0.3')]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    m.finish('10.0.0.1', false, {
      ok: false,
      durationMs: 500.25,
      detail: 'timeout after 500 ms',
      timedOut: true,
    });
    m.finish('10.0.0.2', false, {
      ok: false,
      durationMs: 0.5,
      detail: 'ECONNREFUSED',
      timedOut: false,
      local: false,
    });
    m.finish('10.0.0.3', false, { ok: false, durationMs: 0, detail: 'EMFILE', local: true });
    const at = Date.now();
    expect(monitor.snapshot().map((s) => s.last)).toStrictEqual([
      { ok: false, durationMs: 500.25, detail: 'timeout after 500 ms', timedOut: true, at },
      { ok: false, durationMs: 0.5, detail: 'ECONNREFUSED', timedOut: false, local: false, at },
      { ok: false, durationMs: 0, detail: 'EMFILE', local: true, at },
    ]);
    // What the per-backend metrics read: the snapshot's counts, without the last results.
    const counts = monitor.checkCounts();
    expect(counts).toEqual(
      monitor.snapshot().map(({ key, vip, address, type, status, checks, failedChecks }) => ({ key, vip, address, type, status, checks, failedChecks })), // prettier-ignore
    );
    expect(counts.map((c) => [c.checks, c.failedChecks])).toEqual([
      [1, 1],
      [1, 1],
      [0, 0],
    ]);
  });

  it('availability per VIP follows flips and target changes; a VIP losing its last up backend is an event', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    const vipEvents: VipAvailability[] = [];
    monitor.on('vip', (a: VipAvailability) => vipEvents.push(a));
    monitor.setTargets([target('a>1', '10.0.0.1'), target('a>2', '10.0.0.2'), target('b>1', '10.0.0.1')]);
    expect(vipEvents).toEqual([
      { vip: 'a', up: 2, total: 2 },
      { vip: 'b', up: 1, total: 1 },
    ]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', false)).toBe(1);
    expect(m.finish('10.0.0.2', true)).toBe(1);
    await round(m, '10.0.0.1', false);
    expect(m.finish('10.0.0.2', true)).toBe(1);
    expect(monitor.availability()).toEqual(
      new Map([
        ['a', { vip: 'a', up: 1, total: 2 }],
        ['b', { vip: 'b', up: 0, total: 1 }],
      ]),
    );
    expect(vipEvents.slice(2)).toEqual([{ vip: 'b', up: 0, total: 1 }]);
    // b gains an up backend (a new address: initial up): an event; a's count is unchanged in kind: none.
    monitor.setTargets([target('a>1', '10.0.0.1'), target('a>2', '10.0.0.2'), target('b>1', '10.0.0.1'), target('b>3', '10.0.0.3')]); // prettier-ignore
    expect(vipEvents.slice(3)).toEqual([{ vip: 'b', up: 1, total: 2 }]);
    expect(monitor.availability().get('a')).toEqual({ vip: 'a', up: 1, total: 2 });
  });

  it('a change listener that replaces the targets while a result fans out leaves a consistent state', async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    const all = Array.from({ length: 6 }, (_, v) => target(`v${v}>1`, '10.0.0.1', { fall: 1 }));
    monitor.setTargets(all);
    const changes: HealthChange[] = [];
    let replaced = false;
    monitor.on('change', (c: HealthChange) => {
      changes.push(c);
      if (!replaced) {
        replaced = true;
        // Drop half the memberships from inside the fan-out of the result that flips them all.
        monitor!.setTargets(all.slice(0, 3));
      }
    });
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', false)).toBe(1);
    // Every membership took the result before the first event: the listener's targets copied whole states.
    expect(changes.map((c) => c.key)).toEqual(all.map((t) => t.key));
    expect(new Map(monitor.statuses())).toEqual(new Map([['v0>1', 'down'], ['v1>1', 'down'], ['v2>1', 'down']])); // prettier-ignore
    expect(monitor.stats()).toMatchObject({ probes: 1, memberships: 3 });
    expect(monitor.availability()).toEqual(new Map([['v0', { vip: 'v0', up: 0, total: 1 }], ['v1', { vip: 'v1', up: 0, total: 1 }], ['v2', { vip: 'v2', up: 0, total: 1 }]])); // prettier-ignore
    // The probe goes on for the memberships left.
    await round(m, '10.0.0.1', true);
    expect(monitor.snapshot().map((x) => x.checks)).toEqual([2, 2, 2]);
  });

  it('when slots run short, a timing-out probe that can still mark a backend down goes before one whose backends are all down', async () => {
    const m = manual();
    const phases = [0, 0, 0.5];
    // One slot (the quick reserve of a cap of 1 is 0); fall 1.
    monitor = new HealthMonitor({ jitter: 0, random: () => phases.shift() ?? 0, prober: m.prober, maxInFlight: 1 }); // prettier-ignore
    const timeout: CheckResult = { ok: false, durationMs: 50, detail: 'timeout after 50 ms', timedOut: true };
    monitor.setTargets([
      target('a>1', '10.0.0.1', { fall: 1, intervalMs: 20 }), // due at 0, then every 20 ms
      target('b>1', '10.0.0.2', { fall: 1 }), // due at 0
      target('c>1', '10.0.0.3', { fall: 1 }), // due at 50
    ]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', false, timeout)).toBe(1); // a: down, next due at 20 (all down: settled)
    expect(m.starts).toEqual(['10.0.0.1', '10.0.0.2']);
    await jest.advanceTimersByTimeAsync(150);
    expect(m.finish('10.0.0.2', false, timeout)).toBe(1); // b: down; the slot frees with a (due 20) and c (due 50) waiting
    expect(m.starts).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    expect(new Map(monitor.statuses())).toEqual(new Map([['a>1', 'down'], ['b>1', 'down'], ['c>1', 'up']])); // prettier-ignore
    expect(m.finish('10.0.0.3', false, timeout)).toBe(1);
    expect(monitor.statuses().get('c>1')).toBe('down');
    // Nothing left that could fall: the settled ones run, earliest due first.
    expect(m.starts.slice(3)).toEqual(['10.0.0.1']);
    expect(monitor.stats().delayed).toBeGreaterThan(0);
  });

  it("the 'checked' event is emitted once per probe while someone listens", async () => {
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0, prober: m.prober });
    monitor.setTargets([target('a>1', '10.0.0.1'), target('b>1', '10.0.0.1')]);
    monitor.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(m.finish('10.0.0.1', true)).toBe(1);
    const checked: unknown[] = [];
    monitor.on('checked', (c: unknown) => checked.push(c));
    await round(m, '10.0.0.1', false);
    expect(checked).toEqual([{ type: 'tcp', result: 'failure', durationMs: 1, address: '10.0.0.1', startedAt: 100, timedOut: false }]); // prettier-ignore
    expect(m.started()).toBe(2);
  });

  it('targets added to a started monitor are each queued once and each started once', async () => {
    // Once, schedule() compacted the queues when they held more than twice the live probes; counted against the
    // set before the change (none here), every new probe past 1,024 compacted them: 32 s for 51,200 targets.
    // DueLanes moves a requeued probe in place (nothing to compact).
    const m = manual();
    monitor = new HealthMonitor({ jitter: 0, random: () => 0.5, prober: m.prober, maxInFlight: 10_000, startsPerTurn: 10_000 }); // prettier-ignore
    monitor.setTargets([target('a>1', '10.0.0.1')]);
    monitor.start();
    {
      const n = 5_000;
      monitor.setTargets(
        Array.from({ length: n }, (_, i) =>
          target(`v${i}>1`, `10.1.${i >> 8}.${i & 255}`, { intervalMs: 60_000 }),
        ),
      );
      // every new probe is queued (half an interval out) and none is due yet; the first target went before its
      // probe was due (50 ms), so that probe never starts
      expect(monitor.stats()).toMatchObject({ probes: n, memberships: n, backlog: 0, inFlight: 0 });
      await jest.advanceTimersByTimeAsync(30_000);
      expect(m.started()).toBe(n);
      expect(new Set(m.starts).size).toBe(n);
    }
  });
});
