// Incremental translation (TranslationCache) equals translating everything, and the source coalesces bursts.
import fc from 'fast-check';
import {
  EndpointSlice,
  KubeApi,
  KubernetesSource,
  parsePool,
  Pool,
  ReflectorIO,
  Service,
  TranslationCache,
  translate,
  WatchEventType,
} from '../../src/sources/kubernetes';
import type { VipConfig } from '../../src/model/config';

// Requested addresses must be allowed; these tests are about other things, so every address is.
const ANYWHERE = (() => {
  const p = parsePool(['0.0.0.0/0', '::/0'], 'allowedAddresses', { whole: true });
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
})();
import { EndpointSpec, service, slice } from '../helpers/k8s-objects';

const LB = 'peak-xdp.io/lb';
const poolOf = (entries: string[]): Pool => {
  const p = parsePool(entries);
  if (!p.ok) throw new Error(p.errors.join('; '));
  return p.pool;
};

// ---- a small cluster under random changes ----

const SERVICES = ['a', 'b', 'c', 'd'];
const SLICES = ['x', 'y', 'z'];

type Op =
  | {
      kind: 'service';
      name: string;
      vip: number;
      port: number;
      targetPort: number;
      lbClass: boolean;
      weights: boolean;
    }
  | { kind: 'deleteService'; name: string }
  | {
      kind: 'slice';
      name: string;
      owner: string;
      port: number;
      endpoints: { ip: number; state: 'up' | 'drain' | 'none' }[];
    }
  | { kind: 'deleteSlice'; name: string }
  /** A re-list: every object replaced by an equal copy with the same resourceVersion. */
  | { kind: 'relist' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('service' as const),
    name: fc.constantFrom(...SERVICES),
    // Few addresses and ports: Services collide (AddressConflict) now and then.
    vip: fc.integer({ min: 1, max: 3 }),
    port: fc.constantFrom(80, 443),
    targetPort: fc.constantFrom(80, 443, 8080),
    lbClass: fc.boolean(),
    weights: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('deleteService' as const), name: fc.constantFrom(...SERVICES) }),
  fc.record({
    kind: fc.constant('slice' as const),
    name: fc.constantFrom(...SLICES.flatMap((s) => SERVICES.map((v) => `${v}-${s}`))),
    owner: fc.constantFrom(...SERVICES, 'other'),
    port: fc.constantFrom(80, 443),
    endpoints: fc.array(
      fc.record({
        ip: fc.integer({ min: 1, max: 6 }),
        state: fc.constantFrom<'up' | 'drain' | 'none'>('up', 'drain', 'none'),
      }),
      { maxLength: 5 },
    ),
  }),
  fc.record({
    kind: fc.constant('deleteSlice' as const),
    name: fc.constantFrom(...SLICES.flatMap((s) => SERVICES.map((v) => `${v}-${s}`))),
  }),
  fc.constant({ kind: 'relist' as const }),
);

/** The API server's side: objects by name with a resourceVersion bumped on every write. */
class Cluster {
  services = new Map<string, Service>();
  slices = new Map<string, EndpointSlice>();
  private rv = 1;

  apply(op: Op): void {
    const meta = (name: string) => ({ name, namespace: 'default', resourceVersion: String(++this.rv), uid: `uid-${name}` }); // prettier-ignore
    if (op.kind === 'service') {
      const s = service({
        name: op.name,
        vip: `192.0.2.${op.vip}`,
        lbClass: op.lbClass ? LB : 'other.io/lb',
        ports: [{ name: 'http', port: op.port, targetPort: op.targetPort }],
        annotations: op.weights ? { 'peak-xdp.io/backend-weights': '10.1.0.1=5, 10.1.0.2=0' } : {},
      }) as unknown as Service;
      this.services.set(op.name, { ...s, metadata: { ...s.metadata, ...meta(op.name) } });
    } else if (op.kind === 'deleteService') this.services.delete(op.name);
    else if (op.kind === 'slice') {
      const eps: EndpointSpec[] = op.endpoints.map((e) => ({
        ip: `10.1.0.${e.ip}`,
        ...(e.state === 'up' ? {} : e.state === 'drain' ? { ready: false, serving: true, terminating: true } : { ready: false, serving: false }), // prettier-ignore
      }));
      const s = slice({
        name: op.name,
        service: op.owner,
        ports: [{ name: 'http', port: op.port }],
        endpoints: eps,
      }) as unknown as EndpointSlice;
      this.slices.set(op.name, { ...s, metadata: { ...s.metadata, ...meta(op.name) } });
    } else if (op.kind === 'deleteSlice') this.slices.delete(op.name);
    else {
      const copy = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
      for (const [k, v] of this.services) this.services.set(k, copy(v));
      for (const [k, v] of this.slices) this.slices.set(k, copy(v));
    }
  }
}

describe('TranslationCache', () => {
  it('after any sequence of Service/slice adds, updates, deletes and re-lists equals translating everything', () => {
    let checked = 0;
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 40 }),
        (ops, withPool, orderSeeds) => {
          const pool = withPool ? poolOf(['192.0.2.0/28']) : null;
          const cluster = new Cluster();
          const cache = new TranslationCache();
          let prev: VipConfig[] = [];
          ops.forEach((op, step) => {
            cluster.apply(op);
            // Cache order differs between calls (a reflector's Map order is not the API's).
            const rot = orderSeeds[step] ?? 0;
            const rotate = <T>(xs: T[]): T[] => xs.slice(rot % Math.max(1, xs.length)).concat(xs.slice(0, rot % Math.max(1, xs.length))); // prettier-ignore
            const input = {
              loadBalancerClass: LB,
              pool,
              allowed: ANYWHERE,
              services: rotate([...cluster.services.values()]),
              slices: rotate([...cluster.slices.values()]),
            };
            const got = cache.translate(input);
            const want = translate(input);
            expect(got).toEqual(want);
            // Frozen all the way down: consumers memoise on identity.
            for (const v of got.vips) {
              expect(Object.isFrozen(v) && Object.isFrozen(v.backends)).toBe(true);
              for (const b of v.backends) expect(Object.isFrozen(b)).toBe(true);
            }
            // A VIP equal to one published before is that same object (content unchanged -> identity kept).
            const before = new Map(prev.map((v) => [v.name, v]));
            for (const v of got.vips) {
              const o = before.get(v.name);
              if (o !== undefined && JSON.stringify(o) === JSON.stringify(v)) expect(v).toBe(o);
            }
            // Only what the op touched is translated again; a re-list touches nothing.
            if (op.kind === 'relist') expect(cache.lastTranslated).toBe(0);
            else expect(cache.lastTranslated).toBeLessThanOrEqual(op.kind === 'slice' ? 2 : 1);
            prev = got.vips;
            checked++;
          });
        },
      ),
      { numRuns: 300 },
    );
    expect(checked).toBeGreaterThan(300);
  });

  it('re-translates only the Service whose slice changed, keeping every other VIP object', () => {
    const n = 50;
    const services = Array.from({ length: n }, (_, i) => {
      const s = service({ name: `s${i}`, vip: `10.100.0.${i + 1}` }) as unknown as Service;
      return { ...s, metadata: { ...s.metadata, resourceVersion: `${i + 1}` } };
    });
    const slices = Array.from({ length: n }, (_, i) => {
      const s = slice({
        name: `s${i}-a`,
        service: `s${i}`,
        endpoints: [{ ip: `10.1.${i}.1` }, { ip: `10.1.${i}.2` }],
      }) as unknown as EndpointSlice;
      return { ...s, metadata: { ...s.metadata, resourceVersion: `${100 + i}` } };
    });
    const cache = new TranslationCache();
    const opts = { loadBalancerClass: LB, pool: null, allowed: ANYWHERE };
    const first = cache.translate({ ...opts, services, slices });
    expect(cache.lastTranslated).toBe(n);
    expect(first.vips).toHaveLength(n);
    const changed = slice({
      name: 's7-a',
      service: 's7',
      endpoints: [{ ip: '10.1.7.1' }, { ip: '10.1.7.3' }],
    }) as unknown as EndpointSlice;
    const slices2 = slices.map((s, i) =>
      i === 7 ? { ...changed, metadata: { ...changed.metadata, resourceVersion: '999' } } : s,
    );
    const second = cache.translate({ ...opts, services, slices: slices2 });
    expect(cache.lastTranslated).toBe(1);
    const byName = (r: typeof first) => new Map(r.vips.map((v) => [v.name, v]));
    const a = byName(first);
    const b = byName(second);
    let same = 0;
    for (const [name, v] of b) {
      if (name === 'k8s.default.s7.80-tcp') {
        expect(v).not.toBe(a.get(name));
        expect(v.backends.map((x) => x.address)).toEqual(['10.1.7.1', '10.1.7.3']);
      } else {
        expect(v).toBe(a.get(name));
        same++;
      }
    }
    expect(same).toBe(n - 1);
    // The same update again with a new resourceVersion but equal content: translated, same object kept.
    const slices3 = slices2.map((s, i) => (i === 7 ? { ...s, metadata: { ...s.metadata, resourceVersion: '1000' } } : s)); // prettier-ignore
    const third = cache.translate({ ...opts, services, slices: slices3 });
    expect(cache.lastTranslated).toBe(1);
    expect(third.vips).toEqual(second.vips);
    third.vips.forEach((v, i) => expect(v).toBe(second.vips[i]));
  });
});

// ---- KubernetesSource: a burst of watch events becomes a few onChange calls ----

/** ReflectorIO over an in-memory list whose watch the test drives. */
class FakeIO<T> implements ReflectorIO<T> {
  onEvent: ((type: WatchEventType, object: unknown) => void) | null = null;
  constructor(private readonly initial: T[]) {}
  list() {
    return Promise.resolve({ items: this.initial, resourceVersion: '1' });
  }
  watch(o: { onEvent: (type: WatchEventType, object: unknown) => void; onDone: (err: unknown) => void }) {
    this.onEvent = o.onEvent;
    return Promise.resolve({
      stop: () => {
        this.onEvent = null;
        o.onDone(null);
      },
    });
  }
}

describe('KubernetesSource publishing', () => {
  afterEach(() => jest.useRealTimers());

  it('coalesces a burst of 1,000 slice updates into a few onChange calls with the final state', async () => {
    const n = 1000;
    const services = Array.from({ length: n }, (_, i) => ({
      ...(service({ name: `s${i}`, vip: `10.100.${i >> 8}.${i & 255}` }) as unknown as Service),
    }));
    const sliceOf = (i: number, extra: boolean, rv: string): EndpointSlice => {
      const s = slice({
        name: `s${i}-a`,
        service: `s${i}`,
        endpoints: [
          { ip: `10.1.${i >> 8}.${i & 255}` },
          ...(extra ? [{ ip: `10.2.${i >> 8}.${i & 255}` }] : []),
        ],
      }) as unknown as EndpointSlice;
      return { ...s, metadata: { ...s.metadata, resourceVersion: rv } };
    };
    const svcIO = new FakeIO<Service>(services);
    const sliceIO = new FakeIO<EndpointSlice>(Array.from({ length: n }, (_, i) => sliceOf(i, false, '1')));
    const api = { services: svcIO, endpointSlices: sliceIO, nodes: new FakeIO([]) } as unknown as KubeApi;
    jest.useFakeTimers();
    const calls: VipConfig[][] = [];
    const src = new KubernetesSource({
      api,
      nodeName: 'n1',
      allowedAddresses: ['0.0.0.0/0'],
      leaderElection: false,
      tableSize: 16381, // kubernetes.tableSize: every Service here has no table-size annotation
      onChange: (vips) => {
        calls.push(vips);
      },
    });
    // leaderWork writes status for Services without one (none here: annotation addresses, already absent).
    (api as unknown as { patchServiceStatus: () => Promise<void> }).patchServiceStatus = () =>
      Promise.resolve();
    await src.start();
    expect(calls).toHaveLength(1);
    expect(calls[0]!).toHaveLength(n);
    expect(new Set(calls[0]!.map((v) => v.tableSize))).toEqual(new Set([16381]));
    const first = calls[0]!;
    // The burst: one event per slice, in chunks 1 ms apart like a watch stream's.
    for (let c = 0; c < 10; c++) {
      for (let i = c * 100; i < (c + 1) * 100; i++)
        sliceIO.onEvent!('MODIFIED', sliceOf(i, true, `${2 + i}`));
      await jest.advanceTimersByTimeAsync(1);
    }
    await jest.advanceTimersByTimeAsync(500);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.every((v) => v.backends.length === 2)).toBe(true);
    expect(calls[1]![0]).not.toBe(first[0]);
    // A burst that reaches the source in three pieces 25 ms apart (as watch events parsed a few ms at a time under
    // load do): one onChange, as 256 or more changes are pending (quiet time 30 ms, bound 300 ms); a 10 ms quiet
    // time made three.
    for (let c = 0; c < 3; c++) {
      for (let i = c * 334; i < Math.min(n, (c + 1) * 334); i++)
        sliceIO.onEvent!('MODIFIED', sliceOf(i, false, `${3000 + i}`));
      await jest.advanceTimersByTimeAsync(25);
    }
    await jest.advanceTimersByTimeAsync(500);
    expect(calls).toHaveLength(3);
    expect(calls[2]!.every((v) => v.backends.length === 1)).toBe(true);
    // A burst that goes on (300 changes every 20 ms for 600 ms) still publishes within the 300 ms bound: 2 or 3.
    const before = calls.length;
    for (let c = 0; c < 30; c++) {
      for (let i = 0; i < 300; i++)
        sliceIO.onEvent!('MODIFIED', sliceOf((c * 300 + i) % n, c % 2 === 0, `${4000 + c * 300 + i}`));
      await jest.advanceTimersByTimeAsync(20);
    }
    await jest.advanceTimersByTimeAsync(500);
    const long = calls.length - before;
    expect(long).toBeGreaterThanOrEqual(2);
    expect(long).toBeLessThanOrEqual(3);
    const base = calls.length;
    // A steady stream (one event every 5 ms for 1 s) still publishes every maxDebounceMs (100 ms).
    for (let t = 0; t < 200; t++) {
      const i = t % n;
      sliceIO.onEvent!('MODIFIED', sliceOf(i, t % 2 === 0, `${5000 + t}`));
      await jest.advanceTimersByTimeAsync(5);
    }
    await jest.advanceTimersByTimeAsync(500);
    const stream = calls.length - base;
    console.log(
      `[k8s-incremental] 1,000 slice updates -> 1 onChange; in 3 pieces -> 1; 600 ms of a burst -> ${long}; ` +
        `a 1 s stream -> ${stream}`,
    );
    expect(stream).toBeGreaterThanOrEqual(9);
    expect(stream).toBeLessThanOrEqual(11);
    // Only the Services the stream touched got new VIP objects.
    const last = calls.at(-1)!;
    const touched = new Set(Array.from({ length: 200 }, (_, t) => `k8s.default.s${t % n}.80-tcp`));
    let kept = 0;
    for (const [j, v] of last.entries())
      if (!touched.has(v.name)) {
        expect(v).toBe(calls[base - 1]![j]);
        kept++;
      }
    expect(kept).toBe(n - 200);
    jest.useRealTimers();
    await src.stop();
  });
});

// ---- translateAsync, status-only updates, and the leader's writes off the publish path ----

describe('TranslationCache: time-sliced translation and updates that change nothing it reads', () => {
  const opts = { loadBalancerClass: LB, pool: null, allowed: ANYWHERE };
  const withRv = <T extends { metadata: object }>(o: T, rv: string): T => ({
    ...o,
    metadata: { ...o.metadata, resourceVersion: rv },
  });
  const cluster = (n: number): { services: Service[]; slices: EndpointSlice[] } => ({
    services: Array.from({ length: n }, (_, i) =>
      withRv(
        service({ name: `s${i}`, vip: `10.100.${i >> 8}.${i & 255}` }) as unknown as Service,
        `${i + 1}`,
      ),
    ),
    slices: Array.from({ length: n }, (_, i) =>
      withRv(
        slice({
          name: `s${i}-a`,
          service: `s${i}`,
          // Mixed forms: canonical IPv4 takes the fast path, the others are canonicalised as before.
          endpoints: [{ ip: `10.1.${i >> 8}.${i & 255}` }, { ip: '2001:DB8::1' }, { ip: '::ffff:10.9.0.1' }],
        }) as unknown as EndpointSlice,
        `${100000 + i}`,
      ),
    ),
  });

  it("translateAsync gives translate()'s result and lets other work run while it translates", async () => {
    const input = { ...opts, ...cluster(200) };
    const expected = translate(input);
    expect(expected.vips).toHaveLength(200);
    const cache = new TranslationCache();
    let ticks = 0;
    let done = false;
    const tick = (): void => {
      if (done) return;
      ticks++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const got = await cache.translateAsync(input, 0);
    done = true;
    expect(got).toEqual(expected);
    expect(cache.lastTranslated).toBe(200);
    // sliceMs 0: it gives the loop back after every Service it translates.
    expect(ticks).toBeGreaterThanOrEqual(100);
    // Unchanged input: nothing translated, the same objects.
    const again = await cache.translateAsync(input, 0);
    expect(cache.lastTranslated).toBe(0);
    again.vips.forEach((v, i) => expect(v).toBe(got.vips[i]));
  });

  it('refuses a second translation while one is running', async () => {
    const input = { ...opts, ...cluster(10) };
    const cache = new TranslationCache();
    const running = cache.translateAsync(input, 0);
    expect(() => cache.translate(input)).toThrow(/already running/);
    await running;
    expect(cache.translate(input).vips).toHaveLength(10);
  });

  it('a status-only update re-translates nothing where the address is requested, the Service where it comes from the pool', () => {
    const pool = poolOf(['10.200.0.0/24']);
    const annotated = withRv(service({ name: 'a', vip: '10.200.0.9' }) as unknown as Service, '1');
    const pooled = withRv(
      {
        ...(service({ name: 'p' }) as unknown as Service),
        status: { loadBalancer: { ingress: [{ ip: '10.200.0.5', ipMode: 'VIP' }] } },
      } as Service,
      '2',
    );
    const slices = ['a', 'p'].map((s, i) =>
      withRv(
        slice({
          name: `${s}-x`,
          service: s,
          endpoints: [{ ip: `10.1.0.${i + 1}` }],
        }) as unknown as EndpointSlice,
        `${10 + i}`,
      ),
    );
    const base = { loadBalancerClass: LB, pool, allowed: null };
    const cache = new TranslationCache();
    const first = cache.translate({ ...base, services: [annotated, pooled], slices });
    expect(cache.lastTranslated).toBe(2);
    expect(first.vips.map((v) => v.address)).toEqual(['10.200.0.9', '10.200.0.5']);
    // The echo of the leader's status write on the annotated Service: a new version, nothing it reads changed
    // (its spec keys in another order, as a listed object built by the client's model classes has them).
    const reordered = Object.fromEntries(Object.entries(annotated.spec!).reverse()) as Service['spec'];
    const echoed = withRv(
      {
        ...annotated,
        spec: reordered,
        status: { loadBalancer: { ingress: [{ ip: '10.200.0.9', ipMode: 'VIP' }] } },
      } as Service,
      '3',
    );
    expect(JSON.stringify(echoed.spec)).not.toBe(JSON.stringify(annotated.spec));
    const second = cache.translate({ ...base, services: [echoed, pooled], slices });
    expect(cache.lastTranslated).toBe(0);
    second.vips.forEach((v, i) => expect(v).toBe(first.vips[i]));
    expect(second).toEqual(translate({ ...base, services: [echoed, pooled], slices }));
    // The pool Service's status is its address: re-translated, and the VIP moves.
    const moved = withRv(
      { ...pooled, status: { loadBalancer: { ingress: [{ ip: '10.200.0.6', ipMode: 'VIP' }] } } } as Service,
      '4',
    );
    const third = cache.translate({ ...base, services: [echoed, moved], slices });
    expect(cache.lastTranslated).toBe(1);
    expect(third.vips.map((v) => v.address)).toEqual(['10.200.0.9', '10.200.0.6']);
    // A spec change (a new port) is translated even with the status unchanged.
    const respec = withRv(
      {
        ...echoed,
        spec: { ...echoed.spec, ports: [{ name: 'http', port: 81, targetPort: 81, protocol: 'TCP' }] },
      } as Service,
      '5',
    );
    cache.translate({ ...base, services: [respec, moved], slices });
    expect(cache.lastTranslated).toBe(1);
  });
});

describe('KubernetesSource: the leader writes status off the publish path', () => {
  it('start() and later publishes do not wait for status writes, which run a few at a time', async () => {
    const n = 40;
    // Pool Services without an address: the leader allocates and writes status for every one.
    const services = Array.from({ length: n }, (_, i) => ({
      ...(service({ name: `s${i}` }) as unknown as Service),
      metadata: {
        ...(service({ name: `s${i}` }) as unknown as Service).metadata,
        resourceVersion: `${i + 1}`,
      },
    }));
    // And one with a requested address, so a slice change is a visible publish.
    const web = service({ name: 'web', vip: '10.200.0.200' }) as unknown as Service;
    services.push({ ...web, metadata: { ...web.metadata, resourceVersion: '100' } });
    const sliceOf = (rv: string, ip: string): EndpointSlice => {
      const s = slice({ name: 'web-a', service: 'web', endpoints: [{ ip }] }) as unknown as EndpointSlice;
      return { ...s, metadata: { ...s.metadata, resourceVersion: rv } };
    };
    const sliceIO = new FakeIO<EndpointSlice>([sliceOf('500', '10.1.0.1')]);
    let inFlight = 0;
    let maxInFlight = 0;
    let written = 0;
    const held: (() => void)[] = [];
    const api = {
      services: new FakeIO<Service>(services),
      endpointSlices: sliceIO,
      nodes: new FakeIO([]),
      patchServiceStatus: () => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        // Held until the test lets go: an API server that is slow to answer.
        return new Promise<void>((resolve) =>
          held.push(() => {
            inFlight--;
            written++;
            resolve();
          }),
        );
      },
      createEvent: () => Promise.resolve(),
    } as unknown as KubeApi;
    const calls: VipConfig[][] = [];
    const src = new KubernetesSource({
      api,
      nodeName: 'n1',
      pool: ['10.200.0.0/24'],
      leaderElection: false,
      debounceMs: 1,
      maxDebounceMs: 5,
      onChange: (vips) => {
        calls.push(vips);
      },
    });
    await src.start();
    expect(calls).toHaveLength(1);
    // Another change is published while every status write is still unanswered.
    sliceIO.onEvent!('MODIFIED', sliceOf('501', '10.1.0.2'));
    for (let i = 0; i < 100 && held.length < 8; i++) await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 100 && calls.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    expect(written).toBe(0);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.map((v) => v.backends.map((b) => b.address))).toEqual([['10.1.0.2']]);
    expect(maxInFlight).toBe(8);
    // Let every write through, in order, as they come.
    for (let i = 0; i < 1000 && written < n + 1; i++) {
      held.splice(0).forEach((f) => f());
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(written).toBe(n + 1);
    expect(maxInFlight).toBe(8);
    await src.stop();
  });
});

describe('KubernetesSource: never a half-listed world', () => {
  it('a Lease won after the Services are listed but before the slices are publishes nothing until both are', async () => {
    const web = service({ name: 'web', vip: '203.0.113.10' }) as unknown as Service;
    const webSlice = slice({ name: 'web-1', service: 'web', endpoints: [{ ip: '10.1.0.1' }] }) as unknown as EndpointSlice; // prettier-ignore
    let releaseSlices!: () => void;
    const slicesListed = new Promise<void>((r) => (releaseSlices = r));
    class HeldIO extends FakeIO<EndpointSlice> {
      override async list() {
        await slicesListed;
        return super.list();
      }
    }
    let leader = false;
    const api = {
      services: new FakeIO<Service>([web]),
      endpointSlices: new HeldIO([webSlice]),
      nodes: new FakeIO([]),
      getLease: () => Promise.resolve(null),
      createLease: () => Promise.resolve(true),
      updateLease: () => Promise.resolve(true),
      patchServiceStatus: () => Promise.resolve(),
      createEvent: () => Promise.resolve(),
    } as unknown as KubeApi;
    const calls: VipConfig[][] = [];
    const src = new KubernetesSource({
      api,
      nodeName: 'n1',
      pool: ['203.0.113.0/24'],
      leaderElection: { leaseDurationSeconds: 15, renewDeadlineSeconds: 10, retryPeriodSeconds: 0.05 },
      debounceMs: 1,
      maxDebounceMs: 5,
      onLeaderChange: (l) => (leader = l),
      onChange: (vips) => {
        calls.push(vips);
      },
    });
    const started = src.start();
    try {
      // Leader, Services listed, slices still listing: a few election rounds (each once flushed the status).
      for (let i = 0; i < 200 && !leader; i++) await new Promise((r) => setTimeout(r, 5));
      expect(leader).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      expect(calls).toEqual([]);
      releaseSlices();
      await started;
      expect(calls.length).toBeGreaterThanOrEqual(1);
      for (const c of calls) expect(c.map((v) => v.backends.map((b) => b.address))).toEqual([['10.1.0.1']]);
    } finally {
      releaseSlices();
      await started.catch(() => undefined);
      await src.stop();
    }
  });
});
