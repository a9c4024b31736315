// desiredState incremental paths (VIPs reused without looking at their backends when no health is known) and
// desiredStateAsync (sliced with event-loop turns): both give exactly what a build from scratch gives.
import fc from 'fast-check';
import { Config, validateConfig } from '../../src/model';
import type { BackendSpec } from '../../src/datapath/types';
import {
  desiredState,
  desiredStateAsync,
  DesiredState,
  DesiredStateBuilder,
  IdState,
  planReconcile,
  planReconcileAsync,
  planSince,
  planSinceAsync,
} from '../../src/reconcile';
import { type HealthChangeLog, NEW_TARGET_STATUS } from '../../src/health/state';
import { countTurns } from '../helpers/turn-counter';

/** The same ids without the memo an earlier build left for them: the next build runs from scratch. */
const forgetMemo = (ids: IdState): IdState => ({
  vips: { ids: new Map(ids.vips.ids), cursor: ids.vips.cursor },
  backends: { ids: new Map(ids.backends.ids), cursor: ids.backends.cursor },
  adoptable: ids.adoptable,
});

const plain = (d: DesiredState) => ({
  vips: d.vips.map((v) => ({ ...v, table: [v.table.signature, Array.from(v.table.ids())] })),
  ids: [[...d.ids.vips.ids], d.ids.vips.cursor, [...d.ids.backends.ids], d.ids.backends.cursor],
  unavailableVips: d.unavailableVips,
  failOpenVips: d.failOpenVips,
  nextGraceEnd: d.nextGraceEnd,
  datapathConfig: d.datapathConfig,
});

interface VipIn {
  port: number;
  backends: { address: string; weight: number; drain: boolean }[];
}

const configOf = (vips: readonly VipIn[], maxBackends: number): Config | null => {
  const r = validateConfig({
    interface: 'eth0',
    limits: { maxVips: 16, maxBackends },
    vips: vips.map((v) => ({
      ...v,
      address: '10.0.0.10',
      name: `v${v.port}`,
      tableSize: 31,
      healthCheck: { type: 'tcp', downGraceSeconds: 2 },
    })),
  });
  return r.ok ? r.config : null;
};

const key = (port: number, b: number): string => `10.0.0.10:${port}/tcp>10.1.0.${b}`;

describe('desiredState, incremental without health', () => {
  const cfg = configOf(
    [1, 2, 3].map((port) => ({
      port,
      backends: [1, 2, 3].map((b) => ({ address: `10.1.0.${b}`, weight: 1, drain: false })),
    })),
    64,
  )!;

  it('hands back the very VIP objects of unchanged configs when no health is known, and recomputes the rest', () => {
    const d1 = desiredState({ config: cfg });
    const changed = configOf(
      [1, 2, 3].map((port) => ({
        port,
        backends: [1, 2, 3, ...(port === 2 ? [4] : [])].map((b) => ({
          address: `10.1.0.${b}`,
          weight: 1,
          drain: false,
        })),
      })),
      64,
    )!;
    const d2 = desiredState({ config: changed, ids: d1.ids });
    expect(d2.vips[0]).toBe(d1.vips[0]);
    expect(d2.vips[1]).not.toBe(d1.vips[1]);
    expect(d2.vips[1]!.backends).toHaveLength(4);
    expect(d2.vips[2]).toBe(d1.vips[2]);
    expect(plain(d2)).toEqual(plain(desiredState({ config: changed, ids: forgetMemo(d1.ids) })));
  });

  it('recomputes a VIP whose health entries went away (known health is not "no health")', () => {
    const down = new Map([[key(1, 2), 'down' as const]]);
    const d1 = desiredState({ config: cfg, health: down });
    expect(d1.vips[0]!.backends[1]!.state).toBe('down');
    const d2 = desiredState({ config: cfg, ids: d1.ids });
    expect(d2.vips[0]).not.toBe(d1.vips[0]);
    expect(d2.vips[0]!.backends[1]).toMatchObject({ health: NEW_TARGET_STATUS, state: 'up' });
    expect(d2.vips[1]).toBe(d1.vips[1]);
    const d3 = desiredState({ config: cfg, ids: d2.ids });
    expect(d3.vips[0]).toBe(d2.vips[0]);
  });

  it("a checked VIP's backend without a status shows what its new check target starts with; without checks, unknown", () => {
    // A valid config's VIP 2 without its check (null: what validation gives a VIP with no healthCheck).
    const unchecked: Config = { ...cfg, vips: cfg.vips.map((v, i) => (i === 1 ? { ...v, healthCheck: null } : v)) }; // prettier-ignore
    const d = desiredState({ config: unchecked });
    expect(NEW_TARGET_STATUS).toBe('up');
    expect(d.vips.map((v) => v.backends.map((b) => b.health))).toEqual([
      ['up', 'up', 'up'],
      ['unknown', 'unknown', 'unknown'],
      ['up', 'up', 'up'],
    ]);
    expect(d.vips.every((v) => v.backends.every((b) => b.state === 'up'))).toBe(true);
  });
});

describe('desiredState, incremental with health', () => {
  const cfg = configOf(
    [1, 2, 3].map((port) => ({
      port,
      backends: [1, 2, 3].map((b) => ({ address: `10.1.0.${b}`, weight: 1, drain: false })),
    })),
    64,
  )!;
  const keys = [1, 2, 3].flatMap((port) => [1, 2, 3].map((b) => key(port, b)));
  const healthOf = (down: string[]) =>
    new Map(keys.map((k) => [k, down.includes(k) ? 'down' : 'up'] as const));

  // Health as a plain map (diffed in one pass over it), or as a map with a change log like the monitor's
  // statuses() (diffed by its log, never passed over): each call gives the map for the keys that are down.
  const maps: [string, () => (down: string[]) => ReadonlyMap<string, 'up' | 'down'>][] = [
    ['a plain map, in a new map with the same keys and order', () => healthOf],
    [
      "a map with a change log (the monitor's statuses())",
      () => {
        let prev: LoggedHealth | null = null;
        return (down) => (prev = LoggedHealth.after(prev, healthOf(down), false));
      },
    ],
  ];
  it.each(maps)('recomputes only the VIP whose status flipped: %s', (_, make) => {
    const health = make();
    const d1 = desiredState({ config: cfg, health: health([]) });
    const d2 = desiredState({ config: cfg, ids: d1.ids, health: health([key(2, 3)]) });
    expect(d2.vips[0]).toBe(d1.vips[0]);
    expect(d2.vips[1]).not.toBe(d1.vips[1]);
    expect(d2.vips[1]!.backends[2]!.state).toBe('down');
    // In the recomputed VIP, the backends that did not flip are the previous objects; the flipped one is new.
    expect(d2.vips[1]!.backends[0]).toBe(d1.vips[1]!.backends[0]);
    expect(d2.vips[1]!.backends[1]).toBe(d1.vips[1]!.backends[1]);
    expect(d2.vips[1]!.backends[2]).not.toBe(d1.vips[1]!.backends[2]);
    expect(d2.vips[2]).toBe(d1.vips[2]);
    const fresh = desiredState({ config: cfg, ids: forgetMemo(d1.ids), health: healthOf([key(2, 3)]) });
    expect(plain(d2)).toEqual(plain(fresh));
  });

  it('with a since the log covers, reuses a VIP with a down backend until a grace of its ends or the clock goes back', () => {
    let h = LoggedHealth.after(null, healthOf([key(1, 1)]), false);
    const since = (): ReadonlyMap<string, number> =>
      coveredSince(new Map([[key(1, 1), 1000]]), h.changeSource);
    /** Health lookups of the last build: none for a VIP reused as it was. */
    let gets = 0;
    const build = (ids: IdState | undefined, now: number): DesiredState => {
      h = LoggedHealth.after(h, healthOf([key(1, 1)]), false);
      const get = jest.spyOn(h, 'get');
      const d = desiredState({ config: cfg, ...(ids ? { ids } : {}), health: h, healthSince: since(), now });
      gets = get.mock.calls.length;
      const fresh = desiredState({
        config: cfg,
        ...(ids ? { ids: forgetMemo(ids) } : {}),
        health: healthOf([key(1, 1)]),
        healthSince: new Map([[key(1, 1), 1000]]),
        now,
      });
      expect(plain(d)).toEqual(plain(fresh));
      return d;
    };
    const d1 = build(undefined, 1500);
    expect(d1.vips[0]!.backends[0]).toMatchObject({ state: 'draining', graceUntil: 3000 });
    const d2 = build(d1.ids, 2000); // within the grace: the same VIP object, nothing compared
    expect(d2.vips[0]).toBe(d1.vips[0]);
    expect(gets).toBe(0);
    const d3 = build(d2.ids, 3000); // the grace ended: computed again, down
    expect(d3.vips[0]).not.toBe(d2.vips[0]);
    expect(d3.vips[0]!.backends[0]).toMatchObject({ state: 'down', graceUntil: null });
    expect(gets).toBeGreaterThan(0);
    const d4 = build(d3.ids, 60_000); // no grace left to end: reused
    expect(d4.vips[0]).toBe(d3.vips[0]);
    expect(gets).toBe(0);
    const d5 = build(d4.ids, 2500); // the clock went back: computed again (draining at that time)
    expect(d5.vips[0]).not.toBe(d4.vips[0]);
    expect(d5.vips[0]!.backends[0]).toMatchObject({ state: 'draining', graceUntil: 3000 });
    // The other VIPs have no backend down: reused throughout.
    expect(d5.vips[1]).toBe(d1.vips[1]);
  });

  it('a change log that no longer reaches back: every VIP compared on its own (the same result)', () => {
    const h1 = LoggedHealth.after(null, healthOf([key(2, 3)]), false);
    const d1 = desiredState({ config: cfg, health: h1 });
    const d2 = desiredState({ config: cfg, ids: d1.ids, health: LoggedHealth.after(h1, healthOf([key(2, 3), key(3, 1)]), true) }); // prettier-ignore
    expect(d2.vips[2]!.backends[0]!.state).toBe('down');
    const fresh = desiredState({
      config: cfg,
      ids: forgetMemo(d1.ids),
      health: healthOf([key(2, 3), key(3, 1)]),
    });
    expect(plain(d2)).toEqual(plain(fresh));
  });

  it('a key added at the end or removed (the health monitor keeps its order) recomputes only its VIP', () => {
    const d1 = desiredState({ config: cfg, health: healthOf([key(2, 3)]) });
    // VIP 2's backend 3 (down) leaves the map, then comes back at its end, down.
    const without = new Map([...healthOf([])].filter(([k]) => k !== key(2, 3)));
    const d2 = desiredState({ config: cfg, ids: d1.ids, health: without });
    expect(d2.vips.map((v, i) => v === d1.vips[i])).toEqual([true, false, true]);
    expect(d2.vips[1]!.backends[2]).toMatchObject({ health: NEW_TARGET_STATUS, state: 'up' });
    const appended = new Map([...without, [key(2, 3), 'down' as const]]);
    const d3 = desiredState({ config: cfg, ids: d2.ids, health: appended });
    expect(d3.vips.map((v, i) => v === d2.vips[i])).toEqual([true, false, true]);
    expect(d3.vips[1]!.backends[2]!.state).toBe('down');
    expect(plain(d3)).toEqual(
      plain(desiredState({ config: cfg, ids: forgetMemo(d2.ids), health: appended })),
    );
    // Another order entirely (a merged map): more VIPs compared, the same result as from scratch.
    const reversed = new Map([...appended].reverse());
    const d4 = desiredState({ config: cfg, ids: d3.ids, health: reversed });
    expect(plain(d4)).toEqual(
      plain(desiredState({ config: cfg, ids: forgetMemo(d3.ids), health: reversed })),
    );
    // And back to the first order, one flip: the diff lines up again after the reversed build's snapshot.
    const flipped = new Map([...appended].map(([k, v]) => [k, k === key(1, 2) ? ('down' as const) : v]));
    const d5 = desiredState({ config: cfg, ids: d4.ids, health: flipped });
    expect(plain(d5)).toEqual(plain(desiredState({ config: cfg, ids: forgetMemo(d4.ids), health: flipped })));
  });

  it('gives the from-scratch result when builds branch from one ids (a later build took its snapshot over)', () => {
    const d1 = desiredState({ config: cfg, health: healthOf([]) });
    // d2 updates d1's health snapshot in place; d1's ids must not compare against it afterwards.
    const d2 = desiredState({ config: cfg, ids: d1.ids, health: healthOf([key(2, 3)]) });
    for (const down of [[key(2, 3)], [], [key(3, 1)], [key(2, 3), key(1, 2)]]) {
      const branch = desiredState({ config: cfg, ids: d1.ids, health: healthOf(down) });
      const fresh = desiredState({ config: cfg, ids: forgetMemo(d1.ids), health: healthOf(down) });
      expect(plain(branch)).toEqual(plain(fresh));
    }
    // The chain from d2 goes on comparing with what d2 saw: back to no VIP down recomputes VIP 2 only.
    const d3 = desiredState({ config: cfg, ids: d2.ids, health: healthOf([]) });
    expect(d3.vips[0]).toBe(d2.vips[0]);
    expect(d3.vips[1]).not.toBe(d2.vips[1]);
    expect(d3.vips[1]!.backends[2]!.state).toBe('up');
    expect(plain(d3)).toEqual(
      plain(desiredState({ config: cfg, ids: forgetMemo(d2.ids), health: healthOf([]) })),
    );
    // A map of another size, then the same size again: fresh arrays, then compared in place again.
    const fewer = new Map([...healthOf([key(1, 1)])].slice(1));
    const d4 = desiredState({ config: cfg, ids: d3.ids, health: fewer });
    expect(plain(d4)).toEqual(plain(desiredState({ config: cfg, ids: forgetMemo(d3.ids), health: fewer })));
    const d5 = desiredState({
      config: cfg,
      ids: d4.ids,
      health: new Map([...healthOf([key(3, 3)])].slice(1)),
    });
    expect(d5.vips[0]).toBe(d4.vips[0]);
    expect(d5.vips[2]!.backends[2]!.state).toBe('down');
  });

  it('recomputes a VIP with a down backend when only the time or its since moved (down grace)', () => {
    const down = healthOf([key(1, 1)]);
    const since = (t: number) => new Map([[key(1, 1), t]]);
    const d1 = desiredState({ config: cfg, health: down, healthSince: since(0), now: 1000 });
    expect(d1.vips[0]!.backends[0]).toMatchObject({ state: 'draining', graceUntil: 2000 });
    const d2 = desiredState({ config: cfg, ids: d1.ids, health: healthOf([key(1, 1)]), healthSince: since(0), now: 2500 }); // prettier-ignore
    expect(d2.vips[0]!.backends[0]).toMatchObject({ state: 'down', graceUntil: null });
    expect(d2.vips[1]).toBe(d1.vips[1]);
    const d3 = desiredState({ config: cfg, ids: d2.ids, health: healthOf([key(1, 1)]), healthSince: since(2000), now: 2500 }); // prettier-ignore
    expect(d3.vips[0]!.backends[0]).toMatchObject({ state: 'draining', graceUntil: 4000 });
  });
});

describe('desiredStateAsync', () => {
  it('gives the event loop turns while it builds (slices of 0 ms: a turn after each VIP)', async () => {
    const cfg = configOf(
      Array.from({ length: 12 }, (_, i) => ({
        port: i + 1,
        backends: [1, 2, 3].map((b) => ({ address: `10.1.0.${b}`, weight: 1, drain: false })),
      })),
      256,
    )!;
    const counter = countTurns();
    const d = await new DesiredStateBuilder().buildAsync({ config: cfg }, 0);
    counter.stop();
    // Key strings of each new config, ids of each VIP, then each VIP: at least one turn per VIP.
    expect(counter.turns).toBeGreaterThanOrEqual(cfg.vips.length);
    expect(plain(d)).toEqual(plain(desiredState({ config: cfg })));
  });

  it('incremental (sync and async) and from scratch agree over sequences of configs and health (property)', async () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 6 }),
      backends: fc.uniqueArray(
        fc.record({
          address: fc.integer({ min: 1, max: 12 }).map((i) => `10.1.0.${i}`),
          weight: fc.integer({ min: 0, max: 2 }),
          drain: fc.boolean(),
        }),
        { selector: (b) => b.address, maxLength: 6 },
      ),
    });
    // Some steps know no health at all, some the same as the step before (in a new map, as the daemon
    // passes it): the paths that reuse VIPs without looking at their backends.
    const stepArb = fc.record({
      put: fc.option(vipArb, { nil: undefined }),
      remove: fc.nat(),
      health: fc.oneof(
        fc.constant(null),
        fc.constant('same' as const),
        fc.constant('same' as const),
        // The same keys in the same order, one status flipped (and its since moved).
        fc.constant('flip' as const),
        // One status flipped, its since not moved (only the health map tells).
        fc.constant('flipOnly' as const),
        // One key gone and another added at the end, down since a new time (the health monitor's order).
        fc.constant('edit' as const),
        fc.array(
          fc.record({
            port: fc.integer({ min: 1, max: 6 }),
            b: fc.integer({ min: 1, max: 12 }),
            status: fc.constantFrom('up' as const, 'down' as const),
            since: fc.integer({ min: 0, max: 5000 }),
          }),
          { maxLength: 6 },
        ),
      ),
      now: fc.integer({ min: 0, max: 8000 }),
      // Now and then the clock moves on a little from the step before (as a daemon's syncs do), else anywhere (also
      // back).
      onward: fc.boolean(),
      maxBackends: fc.constantFrom(24, 24, 24, 32),
    });
    let reusedWithoutHealth = 0;
    let reusedWithHealth = 0;
    let reusedViaLog = 0;
    let coveredSteps = 0;
    let reusedDownViaLog = 0;
    let steps = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
        fc.array(stepArb, { minLength: 2, maxLength: 10 }),
        async (initial, changes) => {
          let vips = initial;
          let prevSync: DesiredState | null = null;
          let prevAsync: DesiredState | null = null;
          let prevLogged: DesiredState | null = null;
          let prevCovered: DesiredState | null = null;
          let logged: LoggedHealth | null = null;
          let prevHealth = new Map<string, 'up' | 'down'>();
          let prevSince = new Map<string, number>();
          let lastNow = 0;
          let last: { h: [string, 'up' | 'down'][]; s: [string, number][] } = { h: [], s: [] };
          for (const step of changes) {
            const put = step.put;
            if (put !== undefined) vips = [...vips.filter((v) => v.port !== put.port), put];
            else if (vips.length > 0) vips = vips.filter((_, i) => i !== step.remove % vips.length);
            const cfg = configOf(vips, step.maxBackends);
            if (cfg === null) continue;
            if ((step.health === 'flip' || step.health === 'flipOnly') && last.h.length > 0) {
              const at = step.remove % last.h.length;
              const [k, st] = last.h[at]!;
              const moved = step.health === 'flip' ? 1000 : 0;
              last = {
                h: last.h.map((e, i) => (i === at ? [k, st === 'up' ? 'down' : 'up'] : e)),
                s: last.s.map(([sk, t]) => [sk, sk === k ? t + moved : t]),
              };
            } else if (step.health === 'edit' && last.h.length > 0) {
              const at = step.remove % last.h.length;
              const [gone] = last.h[at]!;
              const added = key(1 + (step.now % 6), 1 + (step.remove % 12));
              const keep = ([k]: [string, unknown]): boolean => k !== gone && k !== added;
              last = {
                h: [...last.h.filter(keep), [added, 'down']],
                s: [...last.s.filter(keep), [added, step.now]],
              };
            } else if (
              step.health !== 'same' &&
              step.health !== 'flip' &&
              step.health !== 'flipOnly' &&
              step.health !== 'edit'
            )
              last = {
                h: step.health?.map((h) => [key(h.port, h.b), h.status]) ?? [],
                s: step.health?.map((h) => [key(h.port, h.b), h.since]) ?? [],
              };
            const health = new Map(last.h);
            const healthSince = new Map(last.s);
            const now: number = step.onward ? lastNow + (step.now % 300) : step.now;
            lastNow = now;
            const o = { config: cfg, health, healthSince, now };
            const full = desiredState({ ...o, ...(prevSync ? { ids: forgetMemo(prevSync.ids) } : {}) });
            const inc: DesiredState = desiredState({ ...o, ...(prevSync ? { ids: prevSync.ids } : {}) });
            const sliced: DesiredState = await desiredStateAsync({
              ...o,
              ...(prevAsync ? { ids: prevAsync.ids } : {}),
            });
            // The same health as a map with a change log (the monitor's statuses()): diffed by its log, never
            // passed over; now and then its log no longer reaches back (every VIP compared on its own).
            logged = LoggedHealth.after(logged, health, step.now % 5 === 0);
            const viaLog: DesiredState = desiredState({
              ...o,
              health: logged,
              ...(prevLogged ? { ids: prevLogged.ids } : {}),
            });
            // And with a since whose changes that log tells (the monitor's since(): changeSource shared), where
            // this step keeps the monitor's rule: a since moves only where a status flipped, came or went.
            const covers = [...new Set([...prevSince.keys(), ...healthSince.keys()])].every(
              (k) => prevSince.get(k) === healthSince.get(k) || prevHealth.get(k) !== health.get(k),
            );
            const viaLogSince: DesiredState = desiredState({
              ...o,
              health: logged,
              healthSince: covers ? coveredSince(healthSince, logged.changeSource) : healthSince,
              ...(prevCovered ? { ids: prevCovered.ids } : {}),
            });
            if (covers) coveredSteps++;
            expect(plain(inc)).toEqual(plain(full));
            expect(plain(sliced)).toEqual(plain(full));
            expect(plain(viaLog)).toEqual(plain(full));
            expect(plain(viaLogSince)).toEqual(plain(full));
            if (covers && prevCovered !== null)
              reusedDownViaLog += viaLogSince.vips.filter(
                (v) => prevCovered!.vips.includes(v) && v.backends.some((b) => b.health === 'down'),
              ).length;
            prevCovered = viaLogSince;
            prevHealth = health;
            prevSince = healthSince;
            if (prevLogged !== null && health.size > 0)
              reusedViaLog += viaLog.vips.filter((v) => prevLogged!.vips.includes(v)).length;
            prevLogged = viaLog;
            if (prevSync !== null) {
              const reused = inc.vips.filter((v) => prevSync!.vips.includes(v)).length;
              if (health.size === 0) reusedWithoutHealth += reused;
              else reusedWithHealth += reused;
            }
            prevSync = inc;
            prevAsync = sliced;
            steps++;
          }
        },
      ),
      { numRuns: 100 },
    );
    console.log(
      `desired incremental property: ${steps} builds, VIPs reused: ${reusedWithoutHealth} with no health, ` +
        `${reusedWithHealth} with some, ${reusedViaLog} with a change-logged health map; ${coveredSteps} builds with ` +
        `a since the log covers, ${reusedDownViaLog} VIPs with a down backend reused there`,
    );
    // The reuse paths ran, not only computing from scratch.
    expect(reusedWithoutHealth).toBeGreaterThan(20);
    expect(reusedWithHealth).toBeGreaterThan(20);
    expect(reusedViaLog).toBeGreaterThan(20);
    expect(coveredSteps).toBeGreaterThan(100);
    // Not asserted: a VIP with a down backend reused through a covered since (its config kept, its health not) is
    // rare in these random sequences (7-14 of ~600 builds, and 0 in one CI run), so a bound on it failed by chance.
    // 'with a since the log covers, reuses a VIP with a down backend ...' above walks that path step by step.
  });
});

/**
 * A health map with a change log, as HealthMonitor.statuses() is: the keys whose status changed, came or went,
 * per version. Passing over it is an error (desiredState must diff it by its log). `lost`: its log no longer
 * reaches back to any earlier version.
 */
class LoggedHealth extends Map<string, 'up' | 'down'> implements HealthChangeLog {
  private constructor(
    entries: ReadonlyMap<string, 'up' | 'down'>,
    readonly changeSource: object,
    private readonly log: readonly string[],
    private readonly lost: boolean,
  ) {
    super(entries);
  }

  static after(
    prev: LoggedHealth | null,
    next: ReadonlyMap<string, 'up' | 'down'>,
    lost: boolean,
  ): LoggedHealth {
    const before: ReadonlyMap<string, 'up' | 'down'> = prev ?? new Map();
    const changed: string[] = [];
    for (const [k, v] of next) if (Map.prototype.get.call(before, k) !== v) changed.push(k);
    for (const k of Map.prototype.keys.call(before)) if (!next.has(k)) changed.push(k);
    return new LoggedHealth(next, prev?.changeSource ?? {}, [...(prev?.log ?? []), ...changed], lost);
  }

  changeVersion(): number {
    return this.log.length;
  }

  changesSince(version: number): readonly string[] | null {
    return this.lost || version > this.log.length ? null : this.log.slice(version);
  }

  override forEach(): void {
    throw new Error('a pass over a health map with a change log');
  }
}

/** `since` as a map whose changes the log of `changeSource` tells (as HealthMonitor.since() declares). */
function coveredSince(since: ReadonlyMap<string, number>, changeSource: object): ReadonlyMap<string, number> {
  return Object.assign(new Map(since), { changeSource });
}

/** What the datapath holds after `d` was applied in full (as the Reconciler's mirror has it). */
function appliedState(d: DesiredState) {
  const backends = new Map<number, BackendSpec>();
  for (const v of d.vips)
    for (const b of v.backends)
      backends.set(b.id, { id: b.id, address: b.address, state: b.state, ...(b.encap === 'gue' ? { encap: 'gue' as const } : {}) }); // prettier-ignore
  return {
    config: null,
    vips: d.vips.map((v) => v.spec),
    backends,
    tables: new Map(d.vips.map((v) => [v.spec.id, v.table])),
  };
}

describe('planSinceAsync, planReconcileAsync', () => {
  it('plan what planSince and planReconcile plan, with event-loop turns (property)', async () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 6 }),
      backends: fc.uniqueArray(
        fc.record({
          address: fc.integer({ min: 1, max: 12 }).map((i) => `10.1.0.${i}`),
          weight: fc.integer({ min: 0, max: 2 }),
          drain: fc.boolean(),
        }),
        { selector: (b) => b.address, maxLength: 6 },
      ),
    });
    let ops = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
        fc.array(fc.record({ put: fc.option(vipArb, { nil: undefined }), remove: fc.nat() }), {
          minLength: 2,
          maxLength: 8,
        }),
        async (initial, changes) => {
          let vips = initial;
          let prev: DesiredState | null = null;
          for (const step of changes) {
            const put = step.put;
            if (put !== undefined) vips = [...vips.filter((v) => v.port !== put.port), put];
            else if (vips.length > 0) vips = vips.filter((_, i) => i !== step.remove % vips.length);
            const cfg = configOf(vips, 32);
            if (cfg === null) continue;
            const d: DesiredState = desiredState({ config: cfg, ...(prev ? { ids: prev.ids } : {}) });
            if (prev !== null) {
              const actual = appliedState(prev);
              const since = planSince(actual, d, prev);
              expect(await planSinceAsync(actual, d, prev, 0)).toEqual(since);
              const snapshot = { ...actual, backends: [...actual.backends.values()] };
              const full = planReconcile(snapshot, d);
              expect(await planReconcileAsync(snapshot, d, 0)).toEqual(full);
              // the backends given indexed by id (as the Reconciler's mirror gives them), not as a list: the same plan
              const indexed = { ...actual, vips: [...actual.vips], backends: actual.backends };
              expect(planReconcile(indexed, d)).toEqual(full);
              expect(await planReconcileAsync(indexed, d, 0)).toEqual(full);
              ops += since.length;
            }
            prev = d;
          }
        },
      ),
      { numRuns: 100 },
    );
    // Plans with operations were compared, not only empty ones.
    expect(ops).toBeGreaterThan(50);
  });

  it('rejects states desiredState did not produce, like planSince', async () => {
    const d = desiredState({ config: configOf([{ port: 1, backends: [] }], 32)! });
    const actual = appliedState(d);
    await expect(async () => planSinceAsync(actual, { ...d }, d)).rejects.toThrow(
      'planSince: desired and previous must be unmutated desiredState results',
    );
  });
});

describe('planReconcile with tableMatches (comparisons made before planning)', () => {
  it('takes a read-back table as matching or not as tableMatches says; compares slots itself when absent', () => {
    const cfg = configOf(
      [1, 2].map((port) => ({
        port,
        backends: [1, 2].map((b) => ({ address: `10.1.0.${b}`, weight: 1, drain: false })),
      })),
      32,
    )!;
    const d = desiredState({ config: cfg });
    const applied = appliedState(d);
    const [a, b] = d.vips.map((v) => v.spec.id) as [number, number];
    // Both read back: a's slots equal the desired ones, b's are zeroed.
    const tables = new Map([
      [a, d.vips[0]!.table.ids()],
      [b, new Uint32Array(d.vips[1]!.table.size)],
    ]);
    const actual = { ...applied, backends: [...applied.backends.values()], tables };
    const installs = (tableMatches?: Map<number, boolean>) =>
      planReconcile({ ...actual, ...(tableMatches ? { tableMatches } : {}) }, d)
        .filter((o) => o.op === 'installTable')
        .map((o) => (o as { vipId: number }).vipId);
    expect(installs()).toEqual([b]);
    expect(installs(new Map([[a, false], [b, true]]))).toEqual([a]); // prettier-ignore
    // A VIP the map leaves out is compared slot by slot.
    expect(installs(new Map([[a, true]]))).toEqual([b]);
  });
});
