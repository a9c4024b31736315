// Desired state, stable ids, plan = diff(actual, desired) and apply, checked against MemoryDatapath.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { MemoryDatapath } from '../../src/datapath/memory';
import type { BackendSpec, Datapath } from '../../src/datapath/types';
import { Config, validateConfig } from '../../src/model';
import {
  assignIds,
  backendState,
  BackendStateInput,
  desiredState,
  DesiredState,
  emptyIdState,
  fromDesiredState,
  GroupedIdMap,
  IdState,
  IdTable,
  idStateFromDatapath,
  BACKEND_ADDRESS,
  BACKEND_NEW,
  BACKEND_STATE,
  DesiredBackend,
  Op,
  Plan,
  planReconcile,
  planSince,
  readActual,
  reconcile,
  Reconciler,
  resolveDatapathConfig,
  TableCache,
  redirectSkipped,
  redirectedTable,
  tableFor,
  tableSignatureTexts,
  tableSignatures,
  digestSignature,
  summarisePlan,
} from '../../src/reconcile';
import { buildTable } from '../../src/maglev';

interface VipIn {
  name: string;
  port: number;
  backends: { address: string; weight?: number; drain?: boolean }[];
  tableSize?: number;
  persistence?: 'none' | 'source-ip';
  healthCheck?: Record<string, unknown>;
  failOpen?: boolean;
}
const config = (vips: VipIn[], extra: Record<string, unknown> = {}): Config => {
  const r = validateConfig({
    interface: 'eth0',
    ...extra,
    vips: vips.map((v) => ({ address: '10.0.0.10', tableSize: 101, ...v })),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
};
const be = (...n: number[]) => n.map((i) => ({ address: `10.1.0.${i}` }));
const threeVips = (): VipIn[] => [
  { name: 'a', port: 80, backends: be(1, 2, 3) },
  { name: 'b', port: 443, backends: be(2, 3, 4) },
  // One backend: down means down here (fail-open is tested in reconcile-fail-open.test.ts).
  { name: 'c', port: 53, backends: be(5), failOpen: false },
];

/** What the datapath holds, as plain comparable data. */
async function dump(dp: Datapath) {
  const vips = (await dp.listVips()).sort((x, y) => x.id - y.id);
  const tables: Record<number, number[]> = {};
  for (const v of vips) tables[v.id] = Array.from((await dp.readTable(v.id)) ?? []);
  return { vips, backends: (await dp.listBackends()).sort((x, y) => x.id - y.id), tables };
}
/** What desired says the datapath should hold, in the same shape. */
function expected(d: DesiredState) {
  const tables: Record<number, number[]> = {};
  for (const v of d.vips) tables[v.spec.id] = Array.from(v.table.ids());
  return {
    vips: d.vips.map((v) => v.spec).sort((x, y) => x.id - y.id),
    backends: d.vips
      .flatMap((v) => v.backends.map((b) => ({ id: b.id, address: b.address, state: b.state })))
      .sort((x, y) => x.id - y.id),
    tables,
  };
}
const methods = (dp: MemoryDatapath) => dp.calls.map((c) => `${c.method} ${c.target}`);

describe('assignIds', () => {
  it('keeps ids of kept keys and hands new keys the next free id after the cursor', () => {
    const a = assignIds({ ids: new Map(), cursor: 0 }, { keys: ['x', 'y', 'z'], min: 1, max: 10 });
    expect([...a.ids]).toEqual([
      ['x', 1],
      ['y', 2],
      ['z', 3],
    ]);
    const b = assignIds(a, { keys: ['x', 'z', 'w'], min: 1, max: 10 });
    // y's id 2 is not reused at once: w gets 4.
    expect([...b.ids]).toEqual([
      ['x', 1],
      ['z', 3],
      ['w', 4],
    ]);
  });

  it('wraps around, skips used ids, honours a free preferred id and fails when full', () => {
    const a = assignIds({ ids: new Map([['x', 2]]), cursor: 3 }, { keys: ['x', 'y', 'z'], min: 1, max: 4 });
    expect([...a.ids]).toEqual([
      ['x', 2],
      ['y', 3],
      ['z', 1],
    ]);
    const p = assignIds(
      { ids: new Map(), cursor: 1 },
      { keys: ['x', 'y'], min: 1, max: 9, prefer: (k) => (k === 'y' ? 7 : undefined) },
    );
    expect([...p.ids]).toEqual([
      ['x', 1],
      ['y', 7],
    ]);
    expect(() => assignIds({ ids: new Map(), cursor: 0 }, { keys: ['x', 'y', 'z'], min: 1, max: 3 })).toThrow(
      'ids: all 2 ids in 1..2 are in use',
    );
  });
});

describe('desiredState', () => {
  it('derives specs, states, tables and unavailable VIPs', () => {
    const cfg = config([
      {
        name: 'a',
        port: 80,
        persistence: 'source-ip',
        backends: [
          { address: '10.1.0.1' },
          { address: '10.1.0.2', drain: true },
          { address: '10.1.0.3', weight: 0 },
        ],
      },
      { name: 'b', port: 81, backends: be(4), failOpen: false },
      { name: 'empty', port: 82, backends: [] },
    ]);
    const d = desiredState({ config: cfg, health: new Map([['10.0.0.10:81/tcp>10.1.0.4', 'down']]) });
    const [a, b, empty] = d.vips;
    expect(a!.spec).toEqual({
      key: { address: '10.0.0.10', port: 80, protocol: 'tcp' },
      id: 0,
      flags: { sourceHash: true, noConntrack: false },
      tableSize: 101,
    });
    expect(a!.backends.map((x) => [x.id, x.state])).toEqual([
      [1, 'up'],
      [2, 'draining'],
      [3, 'draining'],
    ]);
    // Draining by drain:true stays a member of the table, its slots redirected to the owner probing would find
    // (the up backend); weight 0 is no member. A table whose every member is down is left as built.
    expect(new Set(a!.table.ids())).toEqual(new Set([1]));
    // Its identity: the digest of its natural inputs' text, and with a skipped member the digest of that digest and
    // the skipped ids (32-bit little-endian words).
    const texts = tableSignatureTexts(101, a!.backends);
    expect(texts).toEqual({ naturalText: '101|10.1.0.1=1*1,10.1.0.2=2*1', skip: [2] });
    const natural = digestSignature(texts.naturalText);
    expect(a!.table.naturalSignature).toBe(natural);
    const skipDigest = (of: string, ids: number[]): string => {
      const words = Buffer.alloc(4 * ids.length);
      ids.forEach((id, i) => words.writeUInt32LE(id, 4 * i));
      return createHash('sha256').update(of).update('|skip:').update(words).digest('base64url');
    };
    expect(a!.table.signature).toBe(skipDigest(natural, [2]));
    // several skipped ids, sorted, each a whole 32-bit word (ids past 16 bits too)
    const member = (id: number, state: 'up' | 'down'): DesiredBackend => ({ key: `k${id}`, id, address: `10.2.0.${id % 250}`, weight: 1, drain: false, encap: 'ipip', health: state, state, graceUntil: null }); // prettier-ignore
    const many = tableSignatures(101, [member(70_001, 'down'), member(5, 'up'), member(3, 'down'), member(2 ** 31 + 7, 'down')]); // prettier-ignore
    expect(many.signature).toBe(skipDigest(many.natural, [3, 70_001, 2 ** 31 + 7]));
    expect(many.natural).toBe(digestSignature(tableSignatureTexts(101, [member(70_001, 'down'), member(5, 'up'), member(3, 'down'), member(2 ** 31 + 7, 'down')]).naturalText)); // prettier-ignore
    expect(a!.table.signature).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(b!.backends[0]!.state).toBe('down');
    expect(Array.from(new Set(b!.table.ids()))).toEqual([4]);
    expect(Array.from(new Set(empty!.table.ids()))).toEqual([0]);
    expect(a!.table.equals(a!.table.ids())).toBe(true);
    expect(a!.table.equals(b!.table.ids())).toBe(false);
    // Desired tables hold their 2 member ids only; slots are built when installed or compared.
    expect(a!.table.byteLength).toBe(8);
    // A table made from an index table keeps 1 byte per slot plus the member ids, and reads the same.
    const eager = new IdTable(
      a!.table.signature,
      buildTable({
        backends: [
          { name: '10.1.0.1', weight: 1 },
          { name: '10.1.0.2', weight: 1 },
        ],
        size: 101,
      }),
      [1, 2],
    );
    expect(eager.byteLength).toBe(101 + 8);
    // The plain table differs from a's (whose drained member's slots are redirected) exactly on those slots.
    const plainIds = eager.ids();
    expect(eager.equals(redirectSkipped(plainIds.slice(), new Set([2])))).toBe(false);
    expect(a!.table.equals(redirectSkipped(plainIds.slice(), new Set([2])))).toBe(true);
    expect(a!.table.equals(plainIds)).toBe(false);
    // A recipe's skipped ids in any order, repeated: as the sorted list once (the table keeps them so).
    const members = [
      { name: '10.1.0.1', weight: 1, id: 1 },
      { name: '10.1.0.2', weight: 1, id: 2 },
      { name: '10.1.0.3', weight: 1, id: 3 },
    ];
    const skipped = (skip: number[]) => new IdTable('x', { size: 101, members, skip });
    expect(skipped([3, 1, 3, 1]).ids()).toEqual(skipped([1, 3]).ids());
    expect(Array.from(new Set(skipped([3, 1, 3, 1]).ids()))).toEqual([2]);
    expect(skipped([3, 3]).redirects).toBe(true);
    expect(skipped([]).redirects).toBe(false);
    expect(() => tableFor(4, d.vips[0]!.backends)).toThrow('size: 4 is not a prime between 3 and 1048573');
    expect([a!.usableBackends, b!.usableBackends, empty!.usableBackends]).toEqual([1, 0, 0]);
    expect(d.unavailableVips).toEqual(['b', 'empty']);
  });

  it('makes the table of the same members with other states from a natural one: equal to one made from scratch', () => {
    const member = (id: number, weight: number, state: DesiredBackend['state']): DesiredBackend => ({
      key: `10.0.0.1:80/tcp>10.1.0.${id}`,
      id,
      address: `10.1.0.${id}`,
      weight,
      drain: false,
      encap: 'ipip',
      health: state === 'down' ? 'down' : 'up',
      state,
      graceUntil: null,
    });
    // Weight 0 is no member (its state does not count); the states of the others vary, all down included (then
    // nothing is redirected: the natural table).
    const states: DesiredBackend['state'][][] = [
      ['up', 'up', 'up', 'up'],
      ['up', 'down', 'up', 'up'],
      ['draining', 'down', 'up', 'down'],
      ['down', 'down', 'up', 'down'],
      ['down', 'down', 'down', 'down'],
    ];
    const weights = [1, 2, 0, 1];
    const of = (st: DesiredBackend['state'][]) => st.map((s, i) => member(i + 1, weights[i]!, s));
    for (const from of states)
      for (const to of states) {
        const natural = tableFor(101, of(from));
        const cache = new TableCache();
        const t = redirectedTable(natural, of(to), cache)!;
        const scratch = tableFor(101, of(to));
        expect([t.signature, t.naturalSignature]).toEqual([scratch.signature, scratch.naturalSignature]);
        expect(t.naturalSignature).toBe(natural.naturalSignature);
        expect(Array.from(t.ids())).toEqual(Array.from(scratch.ids()));
        expect(Array.from(t.naturalIds())).toEqual(Array.from(natural.naturalIds()));
        expect(t.redirects).toBe(scratch.redirects);
        // From the cache when it has the table.
        expect(redirectedTable(natural, of(to), cache)).toBe(t);
      }
    // An index table lends no recipe.
    const index = new IdTable('x', tableFor(101, of(states[0]!)).ids(), [1, 2, 4]);
    expect(redirectedTable(index, of(states[1]!), new TableCache())).toBeNull();
    expect(() => new IdTable({ signature: 'y', natural: 'x' }, index, [2])).toThrow(
      'IdTable: a redirected table needs a recipe table to share',
    );
  });

  it('a desired backend reads its address, weight and drain from its config backend and packs encap, health and state; its JSON has all nine fields', () => {
    const checked = { type: 'tcp', downGraceSeconds: 0 };
    const vips = (backends: VipIn['backends']): VipIn[] => [
      { name: 'a', port: 80, backends, healthCheck: checked, failOpen: false },
      { name: 'b', port: 81, backends },
    ];
    const backends = [
      { address: '10.1.0.1' },
      { address: '10.1.0.2', drain: true },
      { address: '10.1.0.3', weight: 0 },
      { address: '10.1.0.4', weight: 3, encap: 'gue' },
    ] as VipIn['backends'];
    const cfg = config(vips(backends));
    const down = new Map([
      ['10.0.0.10:80/tcp>10.1.0.2', 'down'],
      ['10.0.0.10:80/tcp>10.1.0.4', 'down'],
    ] as const);
    const d = desiredState({ config: cfg, health: new Map(down) });
    const seen = d.vips.flatMap((v) => v.backends.map((b) => JSON.parse(JSON.stringify(b)) as unknown));
    expect(seen).toEqual([
      { key: '10.0.0.10:80/tcp>10.1.0.1', id: 1, address: '10.1.0.1', weight: 1, drain: false, encap: 'ipip', health: 'up', state: 'up', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:80/tcp>10.1.0.2', id: 2, address: '10.1.0.2', weight: 1, drain: true, encap: 'ipip', health: 'down', state: 'down', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:80/tcp>10.1.0.3', id: 3, address: '10.1.0.3', weight: 0, drain: false, encap: 'ipip', health: 'up', state: 'draining', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:80/tcp>10.1.0.4', id: 4, address: '10.1.0.4', weight: 3, drain: false, encap: 'gue', health: 'down', state: 'down', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:81/tcp>10.1.0.1', id: 5, address: '10.1.0.1', weight: 1, drain: false, encap: 'ipip', health: 'unknown', state: 'up', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:81/tcp>10.1.0.2', id: 6, address: '10.1.0.2', weight: 1, drain: true, encap: 'ipip', health: 'unknown', state: 'draining', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:81/tcp>10.1.0.3', id: 7, address: '10.1.0.3', weight: 0, drain: false, encap: 'ipip', health: 'unknown', state: 'draining', graceUntil: null }, // prettier-ignore
      { key: '10.0.0.10:81/tcp>10.1.0.4', id: 8, address: '10.1.0.4', weight: 3, drain: false, encap: 'gue', health: 'unknown', state: 'up', graceUntil: null }, // prettier-ignore
    ]);
    // The getters read what JSON shows.
    const b4 = d.vips[0]!.backends[3]!;
    expect([b4.address, b4.weight, b4.drain, b4.encap, b4.health, b4.state]).toEqual(['10.1.0.4', 3, false, 'gue', 'down', 'down']); // prettier-ignore
    // A hand-built config whose backends are not frozen may change after: the desired state does not.
    const loose = {
      ...cfg,
      vips: cfg.vips.map((v) => ({ ...v, backends: v.backends.map((x) => ({ ...x })) })),
    };
    const e = desiredState({ config: loose, health: new Map(down) });
    loose.vips[0]!.backends[0]!.weight = 9;
    loose.vips[0]!.backends[1]!.address = '10.1.0.99';
    expect([e.vips[0]!.backends[0]!.weight, e.vips[0]!.backends[1]!.address]).toEqual([1, '10.1.0.2']);
  });

  it('is pure: the same inputs give equal output, and ids stay stable across reloads', () => {
    const cfg = config(threeVips());
    const d1 = desiredState({ config: cfg });
    expect(desiredState({ config: cfg })).toEqual(d1);
    const next = threeVips();
    next.splice(1, 1);
    next[0]!.backends.push({ address: '10.1.0.9' });
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    const id = (d: DesiredState, name: string, addr: string) =>
      d.vips.find((v) => v.name === name)!.backends.find((b) => b.address === addr)!.id;
    expect(d2.vips.map((v) => [v.name, v.spec.id])).toEqual([
      ['a', 0],
      ['c', 2],
    ]);
    expect(id(d2, 'a', '10.1.0.2')).toBe(id(d1, 'a', '10.1.0.2'));
    expect(id(d2, 'c', '10.1.0.5')).toBe(id(d1, 'c', '10.1.0.5'));
    // The new membership does not reuse the ids the removed VIP just freed.
    const freed = d1.vips[1]!.backends.map((b) => b.id);
    expect(freed).not.toContain(id(d2, 'a', '10.1.0.9'));
  });

  it('reuses a cached table object for unchanged inputs; a member going down is a new table', () => {
    const cache = new TableCache();
    const d1 = desiredState({ config: config(threeVips()), tables: cache });
    const down = new Map([['10.0.0.10:80/tcp>10.1.0.1', 'down' as const]]);
    // Without the memo (no ids): every table looked up, b's and c's found.
    const d2 = desiredState({ config: config(threeVips()), tables: cache, health: down });
    expect(d2.vips[0]!.table).not.toBe(d1.vips[0]!.table);
    expect(d2.vips[1]!.table).toBe(d1.vips[1]!.table);
    expect(d2.vips[2]!.table).toBe(d1.vips[2]!.table);
    expect(cache.misses).toBe(4);
    expect(cache.hits).toBe(2);
    // With it, and a's health flipped back: b and c are reused whole (not even looked up); a's table is built
    // again (the cache keeps the last two builds' tables, and d2's is not a's first).
    const d3 = desiredState({ config: config(threeVips()), ids: d2.ids, tables: cache, health: new Map() });
    expect(d3.vips.map((v, i) => v.table === d2.vips[i]!.table)).toEqual([false, true, true]);
    expect(cache.misses).toBe(5);
    expect(cache.hits).toBe(2);
  });

  it('redirectSkipped: each skipped slot names the next kept id (wrapping); all or none skipped: unchanged', () => {
    const t = (a: number[]) => Uint32Array.from(a);
    expect(redirectSkipped(t([1, 2, 2, 3, 2]), new Set([2]))).toEqual(t([1, 3, 3, 3, 1]));
    expect(redirectSkipped(t([2, 2, 1, 3]), new Set([2, 3]))).toEqual(t([1, 1, 1, 1]));
    expect(redirectSkipped(t([2, 2]), new Set([2]))).toEqual(t([2, 2]));
    expect(redirectSkipped(t([1, 2]), new Set())).toEqual(t([1, 2]));
    // Against unbounded forward probing, on a real Maglev table with a heavy skipped member.
    const table = buildTable({
      backends: [
        { name: 'a', weight: 5 },
        { name: 'b', weight: 1 },
        { name: 'c', weight: 1 },
      ],
      size: 1009,
    });
    const out = redirectSkipped(table.slice(), new Set([0]));
    for (let s = 0; s < table.length; s++) {
      let j = s;
      while (table[j] === 0) j = (j + 1) % table.length;
      expect(out[s]).toBe(table[j]);
    }
  });

  it('redirectSkipped into another array: the same slots as in place, the input untouched, any ids (up to 2^24 - 1)', () => {
    /** unbounded forward probing, slot by slot */
    const probe = (t: Uint32Array, skip: Set<number>): Uint32Array => {
      if (skip.size === 0 || t.every((id) => skip.has(id))) return t.slice();
      return t.map((_, s) => {
        let j = s;
        while (skip.has(t[j]!)) j = (j + 1) % t.length;
        return t[j]!;
      });
    };
    const ids = fc.constantFrom(0, 1, 2, 3, 7, 255, 65536, 2 ** 24 - 1);
    fc.assert(
      fc.property(
        fc.array(ids, { minLength: 1, maxLength: 40 }),
        fc.uniqueArray(ids, { maxLength: 5 }),
        (a, k) => {
          const t = Uint32Array.from(a);
          const skip = new Set(k);
          const want = probe(t, skip);
          const out = new Uint32Array(t.length).fill(12345);
          expect(redirectSkipped(t, skip, out)).toBe(out);
          expect(Array.from(out)).toEqual(Array.from(want));
          expect(Array.from(t)).toEqual(a);
          // the ids as a list (repeats as once) or a typed array, as IdTable keeps them: the same slots
          expect(Array.from(redirectSkipped(t, [...k, ...k]))).toEqual(Array.from(want));
          expect(Array.from(redirectSkipped(t, Uint32Array.from(k)))).toEqual(Array.from(want));
          expect(Array.from(redirectSkipped(t, skip))).toEqual(Array.from(want));
        },
      ),
    );
    expect(() => redirectSkipped(Uint32Array.of(1, 2), new Set([1]), new Uint32Array(3))).toThrow(
      'out: length 3 is not the table',
    );
  });

  it('resolves the datapath config from the file and the host', () => {
    const cfg = config([], { encapSource: ['10.9.0.0/24'], mtu: 1600 });
    expect(
      resolveDatapathConfig({
        config: cfg,
        ownMac: '02:00:00:00:00:01',
        autoNextHopMac: '02:00:00:00:00:02',
      }),
    ).toEqual({
      ownMac: '02:00:00:00:00:01',
      nextHopMac: '02:00:00:00:00:02',
      encapSourceV4: { prefix: '10.9.0.0', prefixLength: 24 },
      encapSourceV6: null,
      mtu: 1600,
      conntrackTimeouts: { tcp: 900, udp: 300 },
      // config() gives no encap section: the default port.
      guePort: 6080,
    });
    const auto = config([]);
    expect(
      resolveDatapathConfig({
        config: auto,
        ownMac: 'm',
        autoNextHopMac: 'n',
        autoEncapAddresses: ['10.0.0.1', '2001:db8::1', '10.0.0.2'],
      }),
    ).toMatchObject({
      encapSourceV4: { prefix: '10.0.0.1', prefixLength: 32 },
      encapSourceV6: { prefix: '2001:db8::1', prefixLength: 128 },
    });
    expect(() => resolveDatapathConfig({ config: auto, ownMac: 'm' })).toThrow(
      'nextHopMac: "auto" but no neighbour',
    );
  });
});

describe('reconcile against MemoryDatapath', () => {
  const dpConfig = {
    ownMac: '02:00:00:00:00:01',
    nextHopMac: '02:00:00:00:00:02',
    encapSourceV4: null,
    encapSourceV6: null,
    mtu: 1500,
  };

  it('creates everything, then does nothing on a second pass', async () => {
    const dp = new MemoryDatapath();
    const d = desiredState({ config: config(threeVips()), datapathConfig: dpConfig });
    const s = await reconcile(dp, d);
    expect(s).toMatchObject({
      configured: true,
      vipsCreated: 3,
      tablesInstalled: 3,
      backendsCreated: 7,
      vipsDeleted: 0,
      backendsDeleted: 0,
      vipsUnchanged: 0,
    });
    expect(await dump(dp)).toEqual(expected(d));
    dp.calls.length = 0;
    const again = await reconcile(dp, d);
    expect(again.operations).toBe(0);
    expect(again.vipsUnchanged).toBe(3);
    expect(dp.calls).toEqual([]);
  });

  it('touches only the changed VIP when a backend is added', async () => {
    const dp = new MemoryDatapath();
    const d1 = desiredState({ config: config(threeVips()) });
    await reconcile(dp, d1);
    dp.calls.length = 0;
    const next = threeVips();
    next[1]!.backends.push({ address: '10.1.0.8' });
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    const s = await reconcile(dp, d2);
    expect(methods(dp)).toEqual([`upsertBackend ${d2.vips[1]!.backends[3]!.id}`, 'installTable 1']);
    expect(s).toMatchObject({ backendsCreated: 1, tablesInstalled: 1, vipsUnchanged: 2 });
    expect(await dump(dp)).toEqual(expected(d2));
  });

  it('on health changes and on drain flips the backend state and redirects its slots; no other VIP is touched', async () => {
    const dp = new MemoryDatapath();
    const cfg = config(threeVips());
    const d1 = desiredState({ config: cfg });
    await reconcile(dp, d1);
    dp.calls.length = 0;
    const d2 = desiredState({
      config: cfg,
      ids: d1.ids,
      health: new Map([['10.0.0.10:80/tcp>10.1.0.2', 'down']]),
    });
    const s = await reconcile(dp, d2);
    expect(methods(dp).sort()).toEqual(
      [`upsertBackend ${d1.vips[0]!.backends[1]!.id}`, 'installTable 0'].sort(),
    );
    expect(s).toMatchObject({ backendsStateChanged: 1, tablesInstalled: 1, vipsUnchanged: 2 });
    // Only the down backend's slots moved, each to the next slot's up owner.
    const before = d1.vips[0]!.table.ids();
    const after = d2.vips[0]!.table.ids();
    const downId = d1.vips[0]!.backends[1]!.id;
    let moved = 0;
    for (let i = 0; i < before.length; i++) {
      if (before[i] === downId) {
        moved++;
        let j = i;
        while (before[j] === downId) j = (j + 1) % before.length;
        expect(after[i]).toBe(before[j]);
      } else expect(after[i]).toBe(before[i]);
    }
    expect(moved).toBeGreaterThan(0);
    expect((await dp.listBackends()).find((b) => b.id === d1.vips[0]!.backends[1]!.id)!.state).toBe('down');

    dp.calls.length = 0;
    const drained = threeVips();
    drained[2]!.backends[0]!.drain = true;
    const d3 = desiredState({ config: config(drained), ids: d2.ids });
    await reconcile(dp, d3);
    // Back up (health map dropped) and the drain: two state flips; VIP 0's table is restored; VIP 2's only
    // member is drained, so its table stays (no up member to redirect to).
    expect(methods(dp).sort()).toEqual(
      [
        `upsertBackend ${d1.vips[0]!.backends[1]!.id}`,
        `upsertBackend ${d1.vips[2]!.backends[0]!.id}`,
        'installTable 0',
      ].sort(),
    );
    expect(d3.vips[0]!.table.ids()).toEqual(d1.vips[0]!.table.ids());
    expect(await dump(dp)).toEqual(expected(d3));
  });

  it('reinstalls the table when a weight changes or a backend goes to weight 0', async () => {
    const dp = new MemoryDatapath();
    const d1 = desiredState({ config: config(threeVips()) });
    await reconcile(dp, d1);
    dp.calls.length = 0;
    const next = threeVips();
    next[0]!.backends[0]!.weight = 0;
    next[1]!.backends[0]!.weight = 5;
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    await reconcile(dp, d2);
    expect(methods(dp)).toEqual([
      `upsertBackend ${d1.vips[0]!.backends[0]!.id}`,
      'installTable 0',
      'installTable 1',
    ]);
    expect(await dump(dp)).toEqual(expected(d2));
  });

  it('deletes a removed VIP and its backends only after nothing names them; VIP flag or size changes update in place', async () => {
    const dp = new MemoryDatapath();
    const d1 = desiredState({ config: config(threeVips()) });
    await reconcile(dp, d1);
    dp.calls.length = 0;
    const next = threeVips().slice(0, 2);
    next[0]!.persistence = 'source-ip';
    next[1]!.tableSize = 103;
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    const s = await reconcile(dp, d2);
    expect(methods(dp)).toEqual([
      'deleteVip 10.0.0.10:53/tcp',
      'upsertVip 10.0.0.10:80/tcp',
      'upsertVip 10.0.0.10:443/tcp',
      'installTable 1',
      `deleteBackend ${d1.vips[2]!.backends[0]!.id}`,
    ]);
    expect(s).toMatchObject({
      vipsDeleted: 1,
      vipsUpdated: 2,
      tablesInstalled: 1,
      backendsDeleted: 1,
      vipsUnchanged: 0,
    });
    expect(await dump(dp)).toEqual(expected(d2));
  });

  it('adopts a populated datapath after a restart without a single write', async () => {
    const dp = new MemoryDatapath();
    const vips = threeVips();
    vips[0]!.backends.push({ address: '10.1.0.7', weight: 0 });
    const cfg = config(vips);
    await reconcile(
      dp,
      desiredState({
        config: cfg,
        datapathConfig: dpConfig,
        ids: desiredState({ config: config(threeVips()) }).ids,
      }),
    );
    // A fresh process: no memory of ids, only the datapath.
    dp.calls.length = 0;
    const ids = await idStateFromDatapath(dp);
    expect(ids.adoptable).toHaveLength(1);
    const d = desiredState({ config: cfg, ids, datapathConfig: dpConfig });
    expect(planReconcile(await readActual(dp), d)).toEqual([]);
    expect((await reconcile(dp, d)).operations).toBe(0);
    expect(dp.calls).toEqual([]);
  });

  it('converges from any sequence of configs, and a second pass is always empty (property)', async () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 6 }),
      backends: fc.uniqueArray(
        fc.record({
          address: fc.integer({ min: 1, max: 12 }).map((i) => `10.1.0.${i}`),
          weight: fc.integer({ min: 0, max: 3 }),
          drain: fc.boolean(),
        }),
        { selector: (b) => b.address, maxLength: 6 },
      ),
      persistence: fc.constantFrom('none' as const, 'source-ip' as const),
      tableSize: fc.constantFrom(31, 37),
    });
    const stepArb = fc.record({
      vips: fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
      down: fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 3 }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArb, { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        async (steps, useReconciler) => {
          const dp = new MemoryDatapath({ maxVips: 16, maxBackends: 256 });
          const r = new Reconciler(dp);
          let ids = emptyIdState();
          for (const step of steps) {
            const cfg = config(
              step.vips.map((v) => ({ ...v, name: `v${v.port}` })),
              { limits: { maxVips: 16, maxBackends: 256 } },
            );
            const health = new Map<string, 'up' | 'down'>();
            for (const v of cfg.vips)
              for (const b of v.backends)
                if (step.down.some((d) => b.address === `10.1.0.${d}`))
                  health.set(`${v.address}:${v.port}/${v.protocol}>${b.address}`, 'down');
            const d = desiredState({ config: cfg, ids, health });
            ids = d.ids;
            await (useReconciler ? r.reconcile(d) : reconcile(dp, d));
            expect(await dump(dp)).toEqual(expected(d));
            expect(planReconcile(await readActual(dp), d)).toEqual([]);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('Reconciler: mirrors its writes, resyncs after a failure, and serialises calls', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const d1 = desiredState({ config: config(threeVips()) });
    await r.reconcile(d1);
    const next = threeVips();
    next[0]!.backends.push({ address: '10.1.0.9' });
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    expect((await r.dryRun(d2)).map((o) => o.op)).toEqual(['upsertBackends', 'installTable']);
    dp.failNext('installTable', new Error('ENOMEM'));
    const failed = await r.reconcile(d2);
    expect(failed.failures).toEqual([
      { op: 'installTable', target: `table of VIP ${d2.vips[0]!.spec.id}`, vips: ['a'], error: 'ENOMEM' },
    ]);
    expect(failed).toMatchObject({ operations: 1, backendsCreated: 1, tablesInstalled: 0 });
    // Someone else writes behind the reconciler's back; the next call re-reads after the failure.
    await dp.deleteVip({ address: '10.0.0.10', port: 53, protocol: 'tcp' });
    const [a, b] = await Promise.all([r.reconcile(d2), r.reconcile(d2)]);
    expect(a).toMatchObject({ vipsCreated: 1, tablesInstalled: 2 });
    expect(b.operations).toBe(0);
    expect(await dump(dp)).toEqual(expected(d2));
  });
});

// ---- incremental paths: same results as from scratch, in time that grows with what changed ----

/** A copy of an id state the incremental path does not know (plain Map): forces assignment from scratch. */
const forgetMemo = (ids: IdState): IdState => ({
  vips: { ids: new Map(ids.vips.ids), cursor: ids.vips.cursor },
  backends: { ids: new Map(ids.backends.ids), cursor: ids.backends.cursor },
  adoptable: [...ids.adoptable],
});
/** A desired state as plain comparable data (tables by signature and content). */
const plain = (d: DesiredState) => ({
  vips: d.vips.map((v) => ({ ...v, table: [v.table.signature, Array.from(v.table.ids())] })),
  ids: [[...d.ids.vips.ids], d.ids.vips.cursor, [...d.ids.backends.ids], d.ids.backends.cursor],
  unavailableVips: d.unavailableVips,
  datapathConfig: d.datapathConfig,
});
/** deleteBackend ops are independent of each other: compare plans with them in id order. */
const normalise = (plan: Plan): Plan => [
  ...plan.filter((o) => o.op !== 'deleteBackend'),
  ...plan
    .filter((o): o is Extract<typeof o, { op: 'deleteBackend' }> => o.op === 'deleteBackend')
    .sort((a, b) => a.id - b.id),
];

describe('GroupedIdMap', () => {
  it('reads like a map of membership keys, group by group', () => {
    const m = new GroupedIdMap(
      new Map([
        ['10.0.0.1:80/tcp', new Map([['10.0.0.1:80/tcp>10.1.0.1', 3]])],
        [
          '10.0.0.2:80/tcp',
          new Map([
            ['10.0.0.2:80/tcp>10.1.0.1', 1],
            ['10.0.0.2:80/tcp>10.1.0.2', 2],
          ]),
        ],
      ]),
    );
    expect(m.size).toBe(3);
    expect(m.get('10.0.0.2:80/tcp>10.1.0.2')).toBe(2);
    expect(m.get('10.0.0.3:80/tcp>10.1.0.2')).toBeUndefined();
    expect(m.get('no-group')).toBeUndefined();
    expect(m.has('10.0.0.1:80/tcp>10.1.0.1')).toBe(true);
    expect([...m]).toEqual([
      ['10.0.0.1:80/tcp>10.1.0.1', 3],
      ['10.0.0.2:80/tcp>10.1.0.1', 1],
      ['10.0.0.2:80/tcp>10.1.0.2', 2],
    ]);
    expect([...m.keys()]).toHaveLength(3);
    expect([...m.values()]).toEqual([3, 1, 2]);
    const seen: string[] = [];
    m.forEach((id, key) => seen.push(`${key}=${id}`));
    expect(seen).toEqual([
      '10.0.0.1:80/tcp>10.1.0.1=3',
      '10.0.0.2:80/tcp>10.1.0.1=1',
      '10.0.0.2:80/tcp>10.1.0.2=2',
    ]);
    expect(m.group('10.0.0.1:80/tcp')?.size).toBe(1);
    expect(String(m)).toBe('[object GroupedIdMap]');
  });

  it('rejects a key filed under the wrong VIP, naming both', () => {
    expect(
      () => new GroupedIdMap(new Map([['10.0.0.1:80/tcp', new Map([['10.0.0.2:80/tcp>10.1.0.1', 1]])]])),
    ).toThrow('groups: key "10.0.0.2:80/tcp>10.1.0.1" is not a membership of 10.0.0.1:80/tcp');
  });
});

describe('desiredState, incremental', () => {
  it('hands back the very VIP objects whose config and health did not change', () => {
    const cache = new TableCache();
    const d1 = desiredState({ config: config(threeVips()), tables: cache });
    const next = threeVips();
    next[1]!.backends.push({ address: '10.1.0.8' });
    const d2 = desiredState({
      config: config(next),
      ids: d1.ids,
      tables: cache,
      health: new Map([['10.0.0.10:53/tcp>10.1.0.5', 'down']]),
    });
    expect(d2.vips[0]).toBe(d1.vips[0]);
    expect(d2.vips[1]).not.toBe(d1.vips[1]);
    // Health changed: a new object, the same table and ids.
    expect(d2.vips[2]).not.toBe(d1.vips[2]);
    expect(d2.vips[2]!.table).toBe(d1.vips[2]!.table);
    expect(d2.vips[2]!.backends[0]).toMatchObject({ id: d1.vips[2]!.backends[0]!.id, state: 'down' });
    expect(d2.unavailableVips).toEqual(['c']);
    // The unchanged VIPs' id groups are shared, not copied.
    const g1 = (d1.ids.backends.ids as GroupedIdMap).group('10.0.0.10:80/tcp');
    expect((d2.ids.backends.ids as GroupedIdMap).group('10.0.0.10:80/tcp')).toBe(g1);
    expect(plain(d2)).toEqual(
      plain(
        desiredState({
          config: config(next),
          ids: forgetMemo(d1.ids),
          health: new Map([['10.0.0.10:53/tcp>10.1.0.5', 'down']]),
        }),
      ),
    );
  });

  it('gives exactly what assignment from scratch gives, for any sequence of configs and health (property)', () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 6 }),
      backends: fc.uniqueArray(
        fc.record({
          address: fc.integer({ min: 1, max: 12 }).map((i) => `10.1.0.${i}`),
          weight: fc.integer({ min: 0, max: 3 }),
        }),
        { selector: (b) => b.address, maxLength: 6 },
      ),
      tableSize: fc.constantFrom(31, 37),
    });
    // Each step edits the previous VIP list (replace or add one VIP, or remove one), so most VIPs carry over.
    const stepArb = fc.record({
      put: fc.option(vipArb, { nil: undefined }),
      remove: fc.nat(),
      down: fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 3 }),
      // Small id spaces wrap the cursor and reuse freed ids; a change of limits falls back to scratch.
      maxBackends: fc.constantFrom(16, 16, 16, 24),
    });
    let reused = 0;
    let wrapped = 0;
    fc.assert(
      fc.property(
        fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
        fc.array(stepArb, { minLength: 2, maxLength: 12 }),
        (initial, steps) => {
          let vips = initial;
          let prev: DesiredState | null = null;
          for (const step of steps) {
            const put = step.put;
            if (put !== undefined) vips = [...vips.filter((v) => v.port !== put.port), put];
            else if (vips.length > 0) vips = vips.filter((_, i) => i !== step.remove % vips.length);
            const r = validateConfig({
              interface: 'eth0',
              limits: { maxVips: 16, maxBackends: step.maxBackends },
              vips: vips.map((v) => ({ ...v, address: '10.0.0.10', name: `v${v.port}` })),
            });
            // More memberships than the id space holds: validation refuses it (tested in config tests).
            if (!r.ok) continue;
            const cfg = r.config;
            const health = new Map<string, 'up' | 'down'>();
            for (const v of cfg.vips)
              for (const b of v.backends)
                if (step.down.some((d) => b.address === `10.1.0.${d}`))
                  health.set(`${v.address}:${v.port}/${v.protocol}>${b.address}`, 'down');
            const ids = prev?.ids;
            const full = desiredState({ config: cfg, health, ...(ids ? { ids: forgetMemo(ids) } : {}) });
            const inc: DesiredState = desiredState({ config: cfg, health, ...(ids ? { ids } : {}) });
            expect(plain(inc)).toEqual(plain(full));
            if (prev !== null) {
              reused += inc.vips.filter((v) => prev!.vips.includes(v)).length;
              if (inc.ids.backends.cursor < prev.ids.backends.cursor) wrapped++;
            }
            prev = inc;
          }
        },
      ),
      { numRuns: 100 },
    );
    // The incremental path was exercised, not just the fallback, and so was the id cursor wrapping around.
    expect(reused).toBeGreaterThan(50);
    expect(wrapped).toBeGreaterThan(0);
  });

  it('marks its results; a replaced or resized VIP list or a hand-made state is not one', () => {
    const d = desiredState({ config: config(threeVips()) });
    expect(fromDesiredState(d)).toBe(true);
    expect(fromDesiredState({ ...d })).toBe(false);
    const resized = desiredState({ config: config(threeVips()) });
    resized.vips.pop();
    expect(fromDesiredState(resized)).toBe(false);
    const replaced = desiredState({ config: config(threeVips()) });
    replaced.vips = [...replaced.vips];
    expect(fromDesiredState(replaced)).toBe(false);
  });
});

describe('planSince', () => {
  it('refuses states that desiredState did not produce', () => {
    const d = desiredState({ config: config(threeVips()) });
    const actual = { config: null, vips: [], backends: new Map(), tables: new Map() };
    expect(() => planSince(actual, { ...d }, d)).toThrow(
      'planSince: desired and previous must be unmutated desiredState results',
    );
  });

  it("an upsertBackends op carries the desired backends themselves, not copies (what the mirror keeps): a VIP's own list when all are written", () => {
    const none = desiredState({ config: config([]) });
    const d = desiredState({ config: config(threeVips()), ids: none.ids });
    const tables = new Map();
    const desired = new Set(d.vips.flatMap((v) => v.backends));
    for (const plan of [
      planReconcile({ config: null, vips: [], backends: [], tables }, d),
      planSince({ config: null, vips: [], backends: new Map(), tables }, d, none),
    ]) {
      const ops = plan.flatMap((o) => (o.op === 'upsertBackends' ? [o] : []));
      expect(ops.map((o) => o.vipName)).toEqual(d.vips.map((v) => v.name));
      for (const o of ops) {
        expect(o.backends).toBe(d.vips.find((v) => v.name === o.vipName)!.backends);
        expect([...o.reasons]).toEqual(o.backends.map(() => BACKEND_NEW));
      }
      const ups = ops.flatMap((o) => [...o.backends]);
      expect(ups).toHaveLength(desired.size);
      for (const b of ups) expect(desired.has(b as never)).toBe(true);
      expect(summarisePlan(plan, d)).toMatchObject({
        backendsCreated: desired.size,
        operations: plan.length - ops.length + desired.size,
      });
    }
  });

  it('an upsertBackends op holds only the backends to write, each with its reason, and the summary counts them', () => {
    const d1 = desiredState({ config: config([{ name: 'a', port: 80, backends: be(1, 2, 3, 4, 5) }]) });
    const a = d1.vips[0]!;
    const [b0, b1, b2, b3, b4] = a.backends as [
      DesiredBackend,
      DesiredBackend,
      DesiredBackend,
      DesiredBackend,
      DesiredBackend,
    ];
    // b0 and b3 as held, b1 held with another state, b2 held with another encap, b4 not held
    // (fields named: a desired backend reads some of them through getters, which a spread does not copy)
    const spec = (b: DesiredBackend): BackendSpec => ({
      id: b.id,
      address: b.address,
      state: b.state,
      encap: b.encap,
    });
    const held: BackendSpec[] = [
      b0,
      { ...spec(b1), state: b1.state === 'up' ? 'draining' : 'up' },
      { ...spec(b2), encap: 'gue' },
      b3,
    ];
    const tables = new Map([[a.spec.id, a.table]]);
    const plan = planReconcile({ config: null, vips: [a.spec], backends: held, tables }, d1);
    expect(plan.map((o) => o.op)).toEqual(['upsertBackends']);
    const op = plan[0] as Extract<Op, { op: 'upsertBackends' }>;
    expect(op.vipName).toBe('a');
    expect(op.backends).toHaveLength(3);
    [b1, b2, b4].forEach((b, i) => expect(op.backends[i]).toBe(b));
    expect([...op.reasons]).toEqual([BACKEND_STATE, BACKEND_ADDRESS, BACKEND_NEW]);
    expect(summarisePlan(plan, d1)).toMatchObject({
      backendsStateChanged: 1,
      backendsUpdated: 1,
      backendsCreated: 1,
      operations: 3,
    });
  });

  it('plans what planReconcile plans, from the state the previous plan left (property)', async () => {
    const vipArb = fc.record({
      port: fc.integer({ min: 1, max: 6 }),
      backends: fc.uniqueArray(
        fc.record({
          address: fc.integer({ min: 1, max: 12 }).map((i) => `10.1.0.${i}`),
          weight: fc.integer({ min: 0, max: 3 }),
          drain: fc.boolean(),
        }),
        { selector: (b) => b.address, maxLength: 6 },
      ),
      persistence: fc.constantFrom('none' as const, 'source-ip' as const),
      tableSize: fc.constantFrom(31, 37),
    });
    const stepArb = fc.record({
      vips: fc.uniqueArray(vipArb, { selector: (v) => v.port, maxLength: 5 }),
      down: fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 3 }),
    });
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 2, maxLength: 6 }), async (steps) => {
        const dp = new MemoryDatapath({ maxVips: 16, maxBackends: 256 });
        let prev: DesiredState | null = null;
        for (const step of steps) {
          const cfg = config(
            step.vips.map((v) => ({ ...v, name: `v${v.port}` })),
            { limits: { maxVips: 16, maxBackends: 256 } },
          );
          const health = new Map<string, 'up' | 'down'>();
          for (const v of cfg.vips)
            for (const b of v.backends)
              if (step.down.some((d) => b.address === `10.1.0.${d}`))
                health.set(`${v.address}:${v.port}/${v.protocol}>${b.address}`, 'down');
          const d: DesiredState = desiredState({ config: cfg, health, ...(prev ? { ids: prev.ids } : {}) });
          if (prev !== null) {
            // What the Reconciler's mirror holds after applying prev: its tables are prev's IdTables.
            const read = await readActual(dp);
            const actual = { ...read, tables: new Map(prev.vips.map((v) => [v.spec.id, v.table])) };
            const indexed = { ...actual, backends: new Map(actual.backends.map((b) => [b.id, b])) };
            expect(normalise(planSince(indexed, d, prev))).toEqual(normalise(planReconcile(actual, d)));
            compared++;
          }
          await reconcile(dp, d);
          prev = d;
        }
      }),
      { numRuns: 150 },
    );
    expect(compared).toBeGreaterThan(150);
  });

  it('Reconciler plans incrementally and still converges after a resync and an adoption', async () => {
    const dp = new MemoryDatapath();
    const r = new Reconciler(dp);
    const d1 = desiredState({ config: config(threeVips()) });
    await r.reconcile(d1);
    const next = threeVips();
    next[2]!.backends = be(6);
    const d2 = desiredState({ config: config(next), ids: d1.ids });
    const plan = await r.dryRun(d2);
    expect(plan.map((o) => o.op)).toEqual(['upsertBackends', 'installTable', 'deleteBackend']);
    expect(await r.reconcile(d2)).toMatchObject({
      backendsCreated: 1,
      backendsDeleted: 1,
      tablesInstalled: 1,
    });
    expect(await dump(dp)).toEqual(expected(d2));
    // A fresh reconciler adopts what is there (tables read back) and then plans incrementally too.
    const r2 = new Reconciler(dp);
    const ids = await idStateFromDatapath(dp);
    const d3 = desiredState({ config: config(next), ids });
    expect((await r2.reconcile(d3)).operations).toBe(0);
    const d4 = desiredState({ config: config(threeVips()), ids: d3.ids });
    await r2.reconcile(d4);
    expect(await dump(dp)).toEqual(expected(d4));
    r2.resync();
    expect(await r2.dryRun(d4)).toEqual([]);
  });
});

describe('health-down grace: a backend down by health check alone keeps its flows for a while', () => {
  const T0 = 1_700_000_000_000;
  const KEY = '10.0.0.10:80/tcp>10.1.0.2';
  const checked = (downGraceSeconds?: number): Config =>
    config([
      {
        name: 'a',
        port: 80,
        backends: be(1, 2, 3),
        healthCheck: { type: 'tcp', ...(downGraceSeconds === undefined ? {} : { downGraceSeconds }) },
        // All three down means down here (fail-open: reconcile-fail-open.test.ts).
        failOpen: false,
      },
    ]);
  const down = new Map([[KEY, 'down' as const]]);
  const since = new Map([[KEY, T0]]);
  const b2 = (d: DesiredState) => d.vips[0]!.backends[1]!;

  it('backendState: draining within the grace, down after it or without one; drained or weight 0 down at once', () => {
    const base = { weight: 1, drain: false, health: 'down' as const, since: T0, downGraceSeconds: 30 };
    const at = (o: Partial<BackendStateInput>) => backendState({ ...base, ...o });
    const graced = { state: 'draining', graceUntil: T0 + 30_000 };
    const isDown = { state: 'down', graceUntil: null };
    expect(at({ now: T0 })).toEqual(graced);
    expect(at({ now: T0 + 29_999 })).toEqual(graced);
    expect(at({ now: T0 + 30_000 })).toEqual(isDown);
    expect(at({ downGraceSeconds: 0, now: T0 })).toEqual(isDown);
    // Without a time of the flip or a now (a restart's seeds, callers that pass none): down, as before.
    expect(at({ since: undefined, now: T0 })).toEqual(isDown);
    expect(at({})).toEqual(isDown);
    // Drained and weight-0 backends behave as before the grace existed.
    expect(at({ drain: true, now: T0 })).toEqual(isDown);
    expect(at({ weight: 0, now: T0 })).toEqual(isDown);
    expect(at({ health: 'up', now: T0 })).toEqual({ state: 'up', graceUntil: null });
    expect(at({ health: 'unknown', drain: true, now: T0 })).toEqual({ state: 'draining', graceUntil: null });
  });

  it('desiredState: grace -> draining (not usable, re-sync due at its end), after it -> down; default 30 s', () => {
    const cfg = checked();
    expect(cfg.vips[0]!.healthCheck!.downGraceSeconds).toBe(30);
    const tables = new TableCache();
    const during = desiredState({ config: cfg, tables, health: down, healthSince: since, now: T0 + 1000 });
    expect(b2(during)).toMatchObject({ health: 'down', state: 'draining', graceUntil: T0 + 30_000 });
    expect(during.vips[0]!.usableBackends).toBe(2);
    expect(during.vips[0]!.nextGraceEnd).toBe(T0 + 30_000);
    expect(during.nextGraceEnd).toBe(T0 + 30_000);
    // The same inputs passed back through the memo at the grace's end: down, nothing pending.
    const after = desiredState({ config: cfg, tables, ids: during.ids, health: down, healthSince: since, now: T0 + 30_000 }); // prettier-ignore
    expect(b2(after)).toMatchObject({ health: 'down', state: 'down', graceUntil: null });
    expect(after.vips[0]!.usableBackends).toBe(2);
    expect(after.nextGraceEnd).toBeNull();
    expect(after.vips[0]).not.toBe(during.vips[0]);
    expect(after.vips[0]!.table).toBe(during.vips[0]!.table);
  });

  it('desiredState: downGraceSeconds 0 -> down at once; no health check -> down at once', () => {
    const d = desiredState({ config: checked(0), health: down, healthSince: since, now: T0 });
    expect(b2(d)).toMatchObject({ state: 'down', graceUntil: null });
    expect(d.nextGraceEnd).toBeNull();
    const unchecked = desiredState({ config: config([{ name: 'a', port: 80, backends: be(1, 2, 3) }]), health: down, healthSince: since, now: T0 }); // prettier-ignore
    expect(b2(unchecked).state).toBe('down');
  });

  it('a flap back up within the grace: the backend is up again and its established flows never moved', async () => {
    const run = async (grace: number) => {
      const dp = new MemoryDatapath();
      const cfg = checked(grace);
      let d = desiredState({ config: cfg, now: T0 });
      await reconcile(dp, d);
      const id = b2(d).id;
      const vipKey = d.vips[0]!.spec.key;
      const flows = Array.from({ length: 300 }, (_, i) => ({ vip: vipKey, source: `192.0.2.${i % 200}`, sourcePort: 2000 + i })); // prettier-ignore
      const owner = flows.map((f) => (dp.forward({ ...f, syn: true }) as { backendId: number }).backendId);
      const on2 = flows.filter((_, i) => owner[i] === id);
      expect(on2.length).toBeGreaterThan(50);
      const states: string[] = [];
      let moved = 0;
      // up -> down at T0 -> up at T0 + 5 s (the flap), packets of every established flow in between.
      const steps: { now: number; health?: Map<string, 'down'>; since?: Map<string, number> }[] = [
        { now: T0, health: down, since },
        { now: T0 + 2500, health: down, since },
        { now: T0 + 5000, since: new Map([[KEY, T0 + 5000]]) },
        { now: T0 + 60_000, since: new Map([[KEY, T0 + 5000]]) },
      ];
      for (const s of steps) {
        d = desiredState({ config: cfg, ids: d.ids, health: s.health, healthSince: s.since, now: s.now });
        await reconcile(dp, d);
        states.push((await dp.listBackends()).find((b) => b.id === id)!.state);
        for (const f of on2) {
          const v = dp.forward(f);
          if (v.kind !== 'forward' || v.backendId !== id || !v.fromConntrack) moved++;
        }
      }
      return { states, moved, reselects: (await dp.counters()).global.ct_reselect ?? 0n, flows: on2.length };
    };
    const graced = await run(30);
    expect(graced.states).toEqual(['draining', 'draining', 'up', 'up']);
    expect(graced.moved).toBe(0);
    expect(graced.reselects).toBe(0n);
    // The contrast: without a grace the same flap moves every flow of the backend at once.
    const none = await run(0);
    expect(none.states).toEqual(['down', 'down', 'up', 'up']);
    expect(none.moved).toBeGreaterThanOrEqual(none.flows);
    expect(none.reselects).toBe(BigInt(none.flows));
  });

  it('incremental and from-scratch results agree for any sequence of health, flip times and clock (property)', () => {
    const keys = [1, 2, 3].map((i) => `10.0.0.10:80/tcp>10.1.0.${i}`);
    const stepArb = fc.record({
      down: fc.subarray([0, 1, 2]),
      since: fc.array(fc.integer({ min: 0, max: 40_000 }), { minLength: 3, maxLength: 3 }),
      advance: fc.integer({ min: 0, max: 20_000 }),
      grace: fc.constantFrom(0, 10, 30),
    });
    let draining = 0;
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 10 }), (steps) => {
        let now = T0;
        let prev: DesiredState | null = null;
        for (const s of steps) {
          now += s.advance;
          const cfg = checked(s.grace);
          const health = new Map(s.down.map((i) => [keys[i]!, 'down' as const]));
          const healthSince = new Map(keys.map((k, i) => [k, now - s.since[i]!]));
          const ids = prev?.ids;
          const full = desiredState({ config: cfg, health, healthSince, now, ...(ids ? { ids: forgetMemo(ids) } : {}) }); // prettier-ignore
          const inc = desiredState({ config: cfg, health, healthSince, now, ...(ids ? { ids } : {}) });
          expect(plain(inc)).toEqual(plain(full));
          expect(inc.nextGraceEnd).toBe(full.nextGraceEnd);
          for (const b of inc.vips[0]!.backends) {
            const grace = s.grace * 1000;
            const inGrace = b.health === 'down' && grace > 0 && now - healthSince.get(b.key)! < grace;
            expect(b.state).toBe(b.health === 'down' ? (inGrace ? 'draining' : 'down') : 'up');
            if (inGrace) draining++;
          }
          prev = inc;
        }
      }),
      { numRuns: 200 },
    );
    console.log(`grace property: ${draining} backends seen in their grace`);
    expect(draining).toBeGreaterThan(20);
  });
});
