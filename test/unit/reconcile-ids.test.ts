// The one backend id allocator: carrying unchanged VIPs' groups over gives the ids assignIds gives from scratch.
import fc from 'fast-check';
import { validateConfig } from '../../src/model';
import { assignIds, desiredState, DesiredState, IdSpace } from '../../src/reconcile';
import { allocateBackendIds, BackendIds, VipKeys } from '../../src/reconcile/backend-ids';

/** The reference: assignIds over every membership key in config order, ids in [1, max). */
const reference = (
  prev: IdSpace,
  keys: readonly VipKeys[],
  max: number,
  prefer?: (k: string) => number | undefined,
) => assignIds(prev, { keys: keys.flatMap((k) => k.members), min: 1, max, prefer });

const entries = (m: ReadonlyMap<string, number>): [string, number][] =>
  [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

describe('allocateBackendIds', () => {
  it('from scratch: the ids and cursor of assignIds, adoption preferences and repeated VIPs included', () => {
    const keys: VipKeys[] = [
      { vip: 'a', members: ['a>1', 'a>2', 'a>3'] },
      { vip: 'b', members: ['b>1', 'b>2'] },
      { vip: 'a', members: ['a>1', 'a>4'] },
    ];
    const prev: IdSpace = {
      ids: new Map([
        ['a>2', 5],
        ['b>2', 5],
        ['b>1', 9],
        ['a>3', 12],
      ]),
      cursor: 6,
    };
    const prefs = (): ((k: string) => number | undefined) => {
      const p = new Map([
        ['a>1', [5, 7]],
        ['a>4', [2]],
      ]);
      return (k) => p.get(k)?.shift();
    };
    const got = allocateBackendIds({ keys, max: 10, prev, prefer: prefs() });
    const want = reference(prev, keys, 10, prefs());
    expect(entries(got.ids)).toEqual(entries(want.ids));
    expect(got.cursor).toBe(want.cursor);
    // a>2 keeps 5 (b>2 loses it), 12 is out of range, a>1 prefers 5 (taken) and so takes the next free id.
    expect(Object.fromEntries(got.ids)).toEqual({
      'a>1': 6,
      'a>2': 5,
      'a>3': 7,
      'a>4': 2,
      'b>1': 9,
      'b>2': 8,
    });
    expect(got.sameGroup).toEqual([false, false, false]);
  });

  it('names the id space when it is full', () => {
    const keys: VipKeys[] = [{ vip: 'a', members: ['a>1', 'a>2', 'a>3'] }];
    expect(() => allocateBackendIds({ keys, max: 3, prev: { ids: new Map(), cursor: 0 } })).toThrow(
      'ids: all 2 ids in 1..2 are in use',
    );
  });

  it('carrying groups over gives what allocating from scratch gives, over sequences of changes (property)', () => {
    const vipArb = fc.record({
      vip: fc.constantFrom('v1', 'v2', 'v3', 'v4'),
      members: fc.uniqueArray(fc.integer({ min: 1, max: 9 }), { maxLength: 4 }),
    });
    let carried = 0;
    fc.assert(
      fc.property(
        fc.uniqueArray(vipArb, { selector: (v) => v.vip, maxLength: 4 }),
        fc.array(fc.record({ put: fc.option(vipArb, { nil: undefined }), remove: fc.nat() }), {
          minLength: 2,
          maxLength: 8,
        }),
        (initial, changes) => {
          // Each step puts (adds or replaces) or removes one VIP: most groups carry over.
          const steps = [initial];
          for (const c of changes) {
            const last = steps[steps.length - 1]!;
            const put = c.put;
            steps.push(
              put !== undefined
                ? [...last.filter((v) => v.vip !== put.vip), put]
                : last.filter((_, i) => i !== c.remove % Math.max(1, last.length)),
            );
          }
          let prev: BackendIds | null = null;
          let prevKeys: VipKeys[] = [];
          for (const step of steps) {
            const keys: VipKeys[] = step.map((v) => ({
              vip: v.vip,
              members: v.members.map((m) => `${v.vip}>${m}`),
            }));
            const space: IdSpace =
              prev === null ? { ids: new Map(), cursor: 0 } : { ids: prev.ids, cursor: prev.cursor };
            const before = prevKeys;
            const unchanged = (i: number): boolean => {
              const was = before.find((k) => k.vip === keys[i]!.vip);
              return was !== undefined && was.members.join() === keys[i]!.members.join();
            };
            const got: BackendIds =
              prev === null
                ? allocateBackendIds({ keys, max: 20, prev: space })
                : allocateBackendIds({
                    keys,
                    max: 20,
                    prev: space,
                    carry: { groups: prev.ids, used: prev.used, unchanged },
                  });
            const want = reference(space, keys, 20);
            expect(entries(got.ids)).toEqual(entries(want.ids));
            expect(got.cursor).toBe(want.cursor);
            carried += got.sameGroup.filter(Boolean).length;
            // The bitmap holds exactly the ids handed out (the next step frees from it).
            const inUse = new Set(got.ids.values());
            for (let id = 0; id < 20; id++)
              expect(((got.used[id >>> 5]! >>> (id & 31)) & 1) === 1).toBe(inUse.has(id));
            prev = got;
            prevKeys = keys;
          }
        },
      ),
      { numRuns: 300 },
    );
    console.log(`allocator property: ${carried} groups carried over`);
    expect(carried).toBeGreaterThan(100);
  });
});

describe('desiredState backend ids', () => {
  it('incremental builds give the ids of assignIds from scratch over sequences of reloads (property)', () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 5 }),
      backends: fc.uniqueArray(
        fc.integer({ min: 1, max: 9 }).map((i) => ({ address: `10.1.0.${i}` })),
        { selector: (b) => b.address, maxLength: 4 },
      ),
    });
    let steps = 0;
    let reused = 0;
    fc.assert(
      fc.property(
        fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
        fc.array(fc.record({ put: fc.option(vipArb, { nil: undefined }), remove: fc.nat() }), {
          minLength: 2,
          maxLength: 8,
        }),
        (initial, changes) => {
          const configs = [initial];
          for (const c of changes) {
            const last = configs[configs.length - 1]!;
            const put = c.put;
            configs.push(
              put !== undefined
                ? [...last.filter((v) => v.port !== put.port), put]
                : last.filter((_, i) => i !== c.remove % Math.max(1, last.length)),
            );
          }
          let prev: DesiredState | null = null;
          for (const vips of configs) {
            const r = validateConfig({
              interface: 'eth0',
              limits: { maxVips: 16, maxBackends: 24 },
              vips: vips.map((v) => ({ ...v, name: `v${v.port}`, address: '10.0.0.10' })),
            });
            if (!r.ok) continue;
            const d: DesiredState = desiredState({ config: r.config, ...(prev ? { ids: prev.ids } : {}) });
            const space: IdSpace = prev?.ids.backends ?? { ids: new Map(), cursor: 0 };
            const keys = r.config.vips.flatMap((v) =>
              v.backends.map((b) => `${v.address}:${v.port}/${v.protocol}>${b.address}`),
            );
            const want = assignIds(space, { keys, min: 1, max: 24 });
            expect(entries(d.ids.backends.ids)).toEqual(entries(want.ids));
            expect(d.ids.backends.cursor).toBe(want.cursor);
            for (const v of d.vips) for (const b of v.backends) expect(b.id).toBe(want.ids.get(b.key));
            if (prev !== null) reused += d.vips.filter((v) => prev!.vips.includes(v)).length;
            steps++;
            prev = d;
          }
        },
      ),
      { numRuns: 150 },
    );
    console.log(`desiredState id property: ${steps} builds, ${reused} VIPs reused from the previous build`);
    expect(steps).toBeGreaterThan(300);
    expect(reused).toBeGreaterThan(50);
  });
});
