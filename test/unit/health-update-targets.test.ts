// HealthMonitor.updateTargets (a change of some targets, at the cost of what changed) ends in the same state as
// setTargets with every target: statuses, each membership's counters, probes, availability and events, over random
// sequences of target sets with probe results between them (property); and its cost does not grow with the
// targets it keeps (counted in probe-key strings made, not timed).
import fc from 'fast-check';
import { HealthMonitor, HealthTarget, probeKey } from '../../src/health';
import * as probes from '../../src/health/probes';
import { DEFAULTS, HealthCheckConfig } from '../../src/model';
import { DueLanes } from '../../src/health/due-queue';
import { manualProber } from '../helpers/manual-prober';

const base: HealthCheckConfig = { ...DEFAULTS.healthCheck, type: 'tcp', port: 80, intervalMs: 100, timeoutMs: 50, rise: 2, fall: 2 }; // prettier-ignore
const CHECKS: HealthCheckConfig[] = [
  base,
  { ...base, intervalMs: 50 }, // the same probe, a shorter interval
  { ...base, rise: 1, fall: 1 }, // the same probe, other thresholds
  { ...base, port: 81 }, // another probe
  { ...base, timeoutMs: base.timeoutMs - 10 }, // another probe: a check kind of its own at the same addresses
];
const VIPS = ['a', 'b', 'c', 'd'];
const ADDRESSES = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'];

const manual = manualProber;

/** A started monitor with targets a>1 and a>2 (rise 1, fall 1) on a manual prober, their first probes under way. */
async function startedPair(): Promise<{ mm: ReturnType<typeof manual>; m: HealthMonitor }> {
  const mm = manual();
  const m = new HealthMonitor({ jitter: 0, random: () => 0, prober: mm.prober });
  const check = { ...base, rise: 1, fall: 1 };
  m.setTargets([
    { key: 'a>1', vip: 'a', address: '10.0.0.1', check },
    { key: 'a>2', vip: 'a', address: '10.0.0.2', check },
  ]);
  m.start();
  await jest.advanceTimersByTimeAsync(0);
  return { mm, m };
}

/** Everything a reader of the monitor sees, in an order that does not depend on slots. */
function observed(m: HealthMonitor) {
  const stats = m.stats();
  return {
    statuses: [...m.statuses()].sort(),
    since: [...m.since()].sort(),
    snapshot: m
      .snapshot()
      .map((s) => ({ ...s, last: s.last === null ? null : { ok: s.last.ok, detail: s.last.detail } }))
      .sort((x, y) => (x.key < y.key ? -1 : 1)),
    availability: [...m.availability()].sort(),
    probes: stats.probes,
    memberships: stats.memberships,
    worstCaseInFlight: Math.round(stats.worstCaseInFlight * 1e6),
    started: stats.started,
  };
}

/** What the monitor holds agrees with the targets it was given and with itself (counts from the memberships). */
function consistent(m: HealthMonitor, targets: ReadonlyMap<string, HealthTarget>): void {
  const snap = m.snapshot();
  expect(snap.map((s) => [s.key, s.vip, s.address]).sort()).toEqual(
    [...targets.values()].map((t) => [t.key, t.vip, t.address]).sort(),
  );
  const counts = new Map<string, { up: number; total: number }>();
  for (const s of snap) {
    const c = counts.get(s.vip) ?? { up: 0, total: 0 };
    c.total++;
    if (s.status === 'up') c.up++;
    counts.set(s.vip, c);
  }
  expect([...m.availability()].map(([v, a]) => [v, a.up, a.total]).sort()).toEqual(
    [...counts].map(([v, c]) => [v, c.up, c.total]).sort(),
  );
  expect([...m.statuses()].sort()).toEqual(snap.map((s) => [s.key, s.status]).sort());
  expect(m.stats().memberships).toBe(snap.length);
  expect(m.stats().probes).toBe(new Set([...targets.values()].map((t) => probeKey(t.address, t.check))).size);
}

describe('HealthMonitor.updateTargets', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('ends where setTargets with every target ends, over sequences of changes and results (property)', async () => {
    const setArb = fc.array(
      fc.record({
        vip: fc.constantFrom(...VIPS),
        address: fc.constantFrom(...ADDRESSES),
        check: fc.integer({ min: 0, max: CHECKS.length - 1 }),
        // Keys are per VIP and slot: the same key may come back with another address (a replaced endpoint), or
        // (shared) move to another VIP.
        slot: fc.integer({ min: 0, max: 3 }),
        shared: fc.boolean(),
      }),
      { maxLength: 12 },
    );
    const stepArb = fc.record({
      targets: setArb,
      // Upsert only what changed (as the daemon's feed does), or every target.
      onlyChanged: fc.boolean(),
      results: fc.array(fc.boolean(), { minLength: ADDRESSES.length, maxLength: ADDRESSES.length }),
      rounds: fc.integer({ min: 0, max: 3 }),
    });
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 8 }), async (steps) => {
        const ma = manual();
        const mb = manual();
        const opts = { jitter: 0, random: () => 0 };
        const a = new HealthMonitor({ ...opts, prober: ma.prober });
        const b = new HealthMonitor({ ...opts, prober: mb.prober });
        const events = { a: [] as string[], b: [] as string[] };
        for (const [name, m] of [
          ['a', a],
          ['b', b],
        ] as const) {
          m.on('change', (c: { key: string; from: string; to: string }) => events[name].push(`${c.key} ${c.from}>${c.to}`)); // prettier-ignore
          m.on('vip', (v: { vip: string; up: number; total: number }) => events[name].push(`${v.vip} ${v.up}/${v.total}`)); // prettier-ignore
        }
        a.start();
        b.start();
        let prev = new Map<string, HealthTarget>();
        try {
          for (const step of steps) {
            const next = new Map<string, HealthTarget>();
            for (const t of step.targets) {
              const key = t.shared ? `k${t.slot}` : `${t.vip}>${t.slot}`;
              if (!next.has(key))
                next.set(key, { key, vip: t.vip, address: t.address, check: CHECKS[t.check]! });
            }
            const targets = [...next.values()];
            a.setTargets(targets);
            const remove = [...prev.keys()].filter((k) => !next.has(k));
            const same = (t: HealthTarget): boolean => {
              const p = prev.get(t.key);
              return p !== undefined && p.vip === t.vip && p.address === t.address && p.check === t.check;
            };
            b.updateTargets({ remove, upsert: step.onlyChanged ? targets.filter((t) => !same(t)) : targets });
            prev = next;
            expect(observed(b)).toEqual(observed(a));
            consistent(b, next);
            for (let r = 0; r < step.rounds; r++) {
              await jest.advanceTimersByTimeAsync(50);
              ADDRESSES.forEach((address, i) => {
                ma.finish(address, step.results[i]!);
                mb.finish(address, step.results[i]!);
              });
              expect(observed(b)).toEqual(observed(a));
              consistent(b, next);
            }
            expect([...events.b].sort()).toEqual([...events.a].sort());
            compared++;
          }
        } finally {
          a.stop();
          b.stop();
        }
      }),
      { numRuns: 150 },
    );
    expect(compared).toBeGreaterThan(150);
  });

  it('statuses() and since() handed out keep what they showed through flips until release()', async () => {
    const { mm, m } = await startedPair();
    try {
      const held = m.statuses();
      const heldSince = m.since();
      mm.finish('10.0.0.1', false); // a>1 flips down while both are out
      expect([...held]).toEqual([['a>1', 'up'], ['a>2', 'up']]); // prettier-ignore
      expect(held.get('a>1')).toBe('up');
      expect(heldSince.size).toBe(0);
      // Handed out after the flip: new views that show it; the first ones keep showing the version before it.
      const second = m.statuses();
      const secondSince = m.since();
      expect(second).not.toBe(held);
      expect(second.get('a>1')).toBe('down');
      expect(secondSince.has('a>1')).toBe(true);
      expect(second.changeVersion()).toBe(held.changeVersion() + 1);
      expect(second.changesSince(held.changeVersion())).toEqual(['a>1']);
      // A flip while both pairs are out: each pair keeps what it showed.
      await jest.advanceTimersByTimeAsync(100);
      mm.finish('10.0.0.2', false);
      expect([...held]).toEqual([['a>1', 'up'], ['a>2', 'up']]); // prettier-ignore
      expect(new Map(heldSince)).toEqual(new Map());
      expect([...second]).toEqual([['a>1', 'down'], ['a>2', 'up']]); // prettier-ignore
      expect([...secondSince.keys()]).toEqual(['a>1']);
      expect(second.size).toBe(2);
      expect(secondSince.size).toBe(1);
      const third = m.statuses();
      expect([...third.values()]).toEqual(['down', 'down']);
      expect(m.since().size).toBe(2);
      expect(third.changesSince(second.changeVersion())).toEqual(['a>2']);
      // Released: the next flip shows in the maps handed out last (nothing held for them).
      const now = m.statuses();
      const nowSince = m.since();
      expect(now).toBe(third);
      m.release();
      await jest.advanceTimersByTimeAsync(100);
      mm.finish('10.0.0.2', true); // rise 1: a>2 up again
      expect(now.get('a>2')).toBe('up');
      expect(nowSince.get('a>2')).toBe(Date.now());
      expect(m.statuses()).toBe(now);
    } finally {
      m.stop();
    }
  });

  it('views handed out again and again without release(): the oldest copy themselves, each keeps what it showed', async () => {
    const { mm, m } = await startedPair();
    try {
      mm.finish('10.0.0.2', true);
      // As syncs that fail before they retarget: views handed out, a flip, views handed out, ..., never released.
      const seen: {
        view: ReadonlyMap<string, string>;
        since: ReadonlyMap<string, number>;
        status: string;
      }[] = [];
      for (let n = 0; n < 12; n++) {
        const view = m.statuses();
        const since = m.since();
        seen.push({ view, since, status: view.get('a>1')! });
        mm.finish('10.0.0.1', n % 2 === 1); // down, up, down, ...
        await jest.advanceTimersByTimeAsync(100);
        if (n < 11) mm.finish('10.0.0.2', true);
      }
      // a>2 flips only now: every view handed out showed it up, the oldest ones too (they copied themselves).
      mm.finish('10.0.0.2', false);
      // The views out (a private of the monitor, read here on purpose) stay bounded.
      expect((m as unknown as { out: unknown[] }).out.length).toBeLessThanOrEqual(8);
      expect(seen.map((x) => x.status)).toEqual(seen.map((_, n) => (n % 2 === 0 ? 'up' : 'down')));
      for (const [n, x] of seen.entries()) {
        expect(x.view.get('a>1')).toBe(x.status);
        expect([...x.view]).toEqual([['a>1', x.status], ['a>2', 'up']]); // prettier-ignore
        expect(x.since.has('a>1')).toBe(n > 0);
        expect(x.since.has('a>2')).toBe(false);
      }
      expect([...m.statuses()]).toEqual([['a>1', 'up'], ['a>2', 'down']]); // prettier-ignore
    } finally {
      m.stop();
    }
  });

  it('setting the same targets again takes no more room (the columns grow for new keys only)', () => {
    const m = new HealthMonitor();
    const targets: HealthTarget[] = [];
    for (let x = 0; x < 5000; x++) targets.push({ key: `v>${x}`, vip: 'v', address: `10.9.${x >> 8}.${x & 255}`, check: base }); // prettier-ignore
    // The columns' room (a private of the monitor, read here on purpose: nothing public shows it).
    const room = (): number => (m as unknown as { m: { capacity(): number } }).m.capacity();
    m.setTargets(targets);
    const first = room();
    expect(first).toBeGreaterThanOrEqual(5000);
    m.setTargets(targets.map((t) => ({ ...t })));
    m.updateTargets({ remove: [], upsert: targets.slice(0, 2500) });
    expect(room()).toBe(first);
    m.updateTargets({ remove: [], upsert: [{ key: 'v>new', vip: 'v', address: '10.9.99.1', check: base }] });
    expect(room()).toBeLessThanOrEqual(Math.max(first, 5001 + (5001 >> 3) + 1024));
    expect(m.stats().memberships).toBe(5001);
  });

  it('finds its probes by address after the probe queue renumbers them (most probes gone), and fans results out', async () => {
    const renumber = jest.spyOn(DueLanes.prototype as unknown as { renumber: () => void }, 'renumber');
    const mm = manual();
    const m = new HealthMonitor({ jitter: 0, random: () => 0, prober: mm.prober });
    try {
      const check = { ...base, rise: 1, fall: 1 };
      const addr = (x: number): string => `10.8.${x >> 8}.${x & 255}`;
      const first = Array.from({ length: 600 }, (_, x) => ({
        key: `a>${x}`,
        vip: 'a',
        address: addr(x),
        check,
      }));
      m.setTargets(first);
      m.start();
      await jest.advanceTimersByTimeAsync(0);
      // the last 50 stay; the probes of the others go, one change at a time (the queue renumbers on the way)
      for (let x = 0; x < 550; x += 50)
        m.updateTargets({ remove: first.slice(x, x + 50).map((t) => t.key), upsert: [] });
      expect(renumber).toHaveBeenCalled();
      expect(m.stats()).toMatchObject({ probes: 50, memberships: 50 });
      // another VIP's memberships at the same addresses join those probes (no second probe per address)
      m.updateTargets({
        remove: [],
        upsert: first.slice(550).map((t) => ({ ...t, key: `b>${t.address}`, vip: 'b' })),
      });
      expect(m.stats()).toMatchObject({ probes: 50, memberships: 100 });
      // a result of one address reaches both of its memberships
      const x = 575;
      let ran = 0;
      for (let t = 0; t < 20 && ran === 0; t++) {
        await jest.advanceTimersByTimeAsync(10);
        ran = mm.finish(addr(x), false);
      }
      expect(ran).toBeGreaterThan(0);
      await jest.advanceTimersByTimeAsync(0);
      expect(m.status(`a>${x}`)).toBe('down');
      expect(m.status(`b>${addr(x)}`)).toBe('down');
      expect(m.status(`a>${x + 1}`)).toBe('up');
      // and the gone addresses have no probe: a new membership there makes one
      m.updateTargets({ remove: [], upsert: [{ key: 'c>0', vip: 'c', address: addr(0), check }] });
      expect(m.stats()).toMatchObject({ probes: 51, memberships: 101 });
    } finally {
      m.stop();
      renumber.mockRestore();
    }
  });

  it('runs in flight while the probes are renumbered take their results to their own probes (no id mixed up)', async () => {
    const renumber = jest.spyOn(DueLanes.prototype as unknown as { renumber: () => void }, 'renumber');
    const mm = manual();
    const m = new HealthMonitor({
      jitter: 0,
      random: () => 0,
      prober: mm.prober,
      maxInFlight: 1000,
      startsPerTurn: 1000,
    });
    try {
      const check = { ...base, rise: 1, fall: 1, intervalMs: 60_000 };
      const addr = (x: number): string => `10.7.${x >> 8}.${x & 255}`;
      const all = Array.from({ length: 400 }, (_, x) => ({
        key: `a>${x}`,
        vip: 'a',
        address: addr(x),
        check,
      }));
      m.setTargets(all);
      m.start();
      await jest.advanceTimersByTimeAsync(0);
      expect(m.stats()).toMatchObject({ inFlight: 400, started: 400 });
      // every other probe of the first 380 goes in one change, then the rest of those 380: the queue renumbers
      // the 20 left (their ids move down) while their first runs are still in flight
      m.updateTargets({ remove: all.filter((_, x) => x < 380 && x % 2 === 0).map((t) => t.key), upsert: [] });
      m.updateTargets({ remove: all.filter((_, x) => x < 380 && x % 2 === 1).map((t) => t.key), upsert: [] });
      expect(renumber).toHaveBeenCalled();
      expect(m.stats()).toMatchObject({ probes: 20, memberships: 20, inFlight: 20 });
      // the runs from before: odd ones refused, even ones connected, each taken by its own membership only
      for (let x = 380; x < 400; x++) expect(mm.finish(addr(x), x % 2 === 0)).toBe(1);
      await jest.advanceTimersByTimeAsync(0);
      const want = all.slice(380).map((t, k) => [t.key, k % 2 === 0 ? 'up' : 'down']);
      expect([...m.statuses()].sort()).toEqual(want.sort());
      const last = new Map(m.snapshot().map((t) => [t.key, t.last?.detail]));
      for (let x = 380; x < 400; x++)
        expect(last.get(`a>${x}`)).toBe(x % 2 === 0 ? 'connected' : 'ECONNREFUSED');
      // and each is queued again under its new id: the next round starts all 20, at their own addresses
      expect(m.stats().inFlight).toBe(0);
      await jest.advanceTimersByTimeAsync(60_000);
      expect(m.stats()).toMatchObject({ inFlight: 20, started: 420 });
      expect(mm.starts.slice(400).sort()).toEqual(
        all
          .slice(380)
          .map((t) => t.address)
          .sort(),
      );
    } finally {
      m.stop();
      renumber.mockRestore();
    }
  });

  it('changes nothing for a key given twice', () => {
    const m = new HealthMonitor();
    const t = { key: 'a>1', vip: 'a', address: '10.0.0.1', check: base };
    m.setTargets([t]);
    expect(() =>
      m.updateTargets({
        remove: ['a>1'],
        upsert: [
          { ...t, key: 'a>2' },
          { ...t, key: 'a>2' },
        ],
      }),
    ).toThrow('targets: key "a>2" appears twice');
    expect(m.snapshot().map((s) => s.key)).toEqual(['a>1']);
    expect(m.stats()).toMatchObject({ probes: 1, memberships: 1 });
    // A key the monitor holds, given twice (after a new one): the same.
    expect(() => m.setTargets([{ ...t, key: 'a>3' }, t, { ...t, address: '10.0.0.9' }])).toThrow(
      'targets: key "a>1" appears twice',
    );
    expect(m.snapshot().map((s) => [s.key, s.address])).toEqual([['a>1', '10.0.0.1']]);
    expect(m.status('a>3')).toBeUndefined();
    m.setTargets([{ ...t, key: 'a>3' }]);
    expect(m.snapshot().map((s) => s.key)).toEqual(['a>3']);
  });

  it('one backend of one VIP among 20,000 memberships: work for that backend only (probe check keys made)', () => {
    const m = new HealthMonitor();
    const targets: HealthTarget[] = [];
    for (let v = 0; v < 200; v++)
      for (let x = 0; x < 100; x++)
        targets.push({ key: `v${v}>${x}`, vip: `v${v}`, address: `10.${v}.0.${x}`, check: base });
    m.setTargets(targets);
    const made = jest.spyOn(probes, 'probeCheckKey');
    try {
      m.updateTargets({
        remove: ['v7>3'],
        upsert: [{ key: 'v7>100', vip: 'v7', address: '10.7.1.0', check: base }],
      });
      // At most the new target's probe looked up and the removed one's probe dropped: nothing per membership.
      expect(made.mock.calls.length).toBeLessThanOrEqual(2);
    } finally {
      made.mockRestore();
    }
    expect(m.stats()).toMatchObject({ probes: 20_000, memberships: 20_000 });
    expect(m.status('v7>3')).toBeUndefined();
    expect(m.status('v7>100')).toBe('up');
    expect(m.availability().get('v7')).toEqual({ vip: 'v7', up: 100, total: 100 });
    // A statuses() view keeps the membership order: the new key comes last.
    expect([...m.statuses().keys()].slice(-2)).toEqual(['v199>99', 'v7>100']);
    expect(probeKey('10.7.1.0', base)).toBe('tcp 80  50 10.7.1.0');
  });
});
