// The daemon's coordination without root: a MemoryDatapath behind an in-memory datapath host, fake config source,
// health monitor, BGP speaker, admin server and routes, and jest's fake timers. Covers reload coalescing and
// gating, announce gating, adoption, per-VIP retry with backoff, and surviving components' 'error' events.
import { EventEmitter } from 'node:events';
import type { RouteSpec } from '../../src/bgp/policy';
import { MemoryDatapath, type RecordedCall } from '../../src/datapath/memory';
import type { Datapath } from '../../src/datapath/types';
import type { HealthTarget } from '../../src/health/monitor';
import type { HealthStatus } from '../../src/health/state';
import { Config, validateConfig } from '../../src/model';
import type { DaemonCollaborators } from '../../src/daemon/collaborators';
import { Daemon } from '../../src/daemon/daemon';
import { BUILDS_IN_THREAD_MSG, BURST_COLLECT_MSG } from '../../src/daemon/programmer';
import { INLINE_TABLES } from '../../src/reconcile/reconciler';
import { RETRY_MAX_MS } from '../../src/daemon/sync-loop';
import type { DatapathHost, OpenedDatapath, XdpAttachment } from '../../src/daemon/datapath-host';
import type { ReloadEvent } from '../../src/sources/types';
import { recordingLogger } from '../helpers/daemon-fakes';

// ---- fakes ---------------------------------------------------------------------------------------------------

/** A node's kernel as far as the host interface goes: one datapath that outlives daemons, pins, attachment. */
class MemoryHost implements DatapathHost {
  readonly dp = new MemoryDatapath();
  /** The datapath every daemon sees: the memory one, or a wrapper a test puts in front of it. */
  view: Datapath = this.dp;
  pinned = false;
  attached: XdpAttachment['kind'] = 'none';

  claim(ifname: string) {
    return { pins: `/memory/${ifname}`, release: () => undefined, open: async () => this.open() };
  }

  private open(): OpenedDatapath {
    const adopted = this.pinned;
    this.pinned = true;
    return {
      datapath: this.view,
      adopted,
      attachment: () => (this.attached === 'other' ? { kind: 'other', progId: 99 } : { kind: this.attached }),
      attach: async () => {
        this.attached = 'ours';
        return { mode: 'generic', progId: 1 };
      },
      detach: async () => void (this.attached = 'none'),
      pinCheck: () => ({ missing: [], foreign: [] }),
      repin: () => undefined,
      unpin: () => void (this.pinned = false),
      removePinDir: () => void (this.pinned = false),
      close: () => undefined,
    };
  }
}

class FakeSource extends EventEmitter {
  constructor(private readonly first: ReloadEvent) {
    super();
  }
  async start(): Promise<ReloadEvent> {
    return this.first;
  }
  stop(): void {}
}

/** Statuses set by the test; a new target starts with its initial status (or `startsWith`: up, as HealthMonitor's
 * do). */
class FakeMonitor extends EventEmitter {
  readonly byKey = new Map<string, HealthStatus>();
  constructor(private readonly startsWith: HealthStatus = 'up') {
    super();
  }
  targets: HealthTarget[] = [];
  start(): void {}
  stop(): void {}
  setTargets(targets: readonly HealthTarget[]): void {
    this.targets = [];
    this.updateTargets({ remove: [], upsert: targets });
  }
  /** Called on each change of targets (setTargets, updateTargets). */
  onTargets: (() => void) | null = null;
  /** Probes its stats() report (the daemon collects the start's targets' garbage only when there are some). */
  probes = 0;
  updateTargets(c: { remove: readonly string[]; upsert: readonly HealthTarget[] }): void {
    this.onTargets?.();
    const upsert = new Map(c.upsert.map((t) => [t.key, t]));
    const gone = new Set(c.remove.filter((k) => !upsert.has(k)));
    this.targets = this.targets.filter((t) => !gone.has(t.key) && !upsert.has(t.key)).concat(c.upsert);
    for (const k of gone) this.byKey.delete(k);
    for (const t of c.upsert) if (!this.byKey.has(t.key)) this.byKey.set(t.key, t.initial ?? this.startsWith);
  }
  release(): void {}
  status(key: string): HealthStatus | undefined {
    return this.byKey.get(key);
  }
  statuses(): Map<string, HealthStatus> {
    return new Map(this.byKey);
  }
  since(): Map<string, number> {
    return new Map();
  }
  localErrors(): Map<string, number> {
    return new Map();
  }
  snapshot() {
    return [];
  }
  stats() {
    return { probes: this.probes, memberships: 0, inFlight: 0, maxInFlight: 1, started: 0, startedOnThread: 0, delayed: 0, delayedByCap: 0, maxLatenessMs: 0, backlog: 0, backlogAgeMs: 0, worstCaseInFlight: 0 }; // prettier-ignore
  }
  /** Every backend of `vip` goes to `to`, announced as the real monitor does (one 'change' each). */
  flip(vip: string, to: HealthStatus): void {
    for (const t of this.targets.filter((x) => x.vip === vip)) {
      const from = this.byKey.get(t.key)!;
      this.byKey.set(t.key, to);
      this.emit('change', { key: t.key, vip, address: t.address, from, to });
    }
  }
}

class FakeSpeaker extends EventEmitter {
  readonly restarts = 0;
  /** Prefixes handed over by each setRoutes call, in order. */
  readonly sets: string[][] = [];
  started = false;
  /** What the datapath held when the speaker started (VIP addresses). */
  heldAtStart: string[] | null = null;
  constructor(private readonly dp: () => Datapath) {
    super();
  }
  async start(): Promise<void> {
    this.heldAtStart = (await this.dp().listVips()).map((v) => v.key.address);
    this.started = true;
  }
  setRoutes(routes: RouteSpec[]): void {
    this.sets.push(routes.map((r) => r.prefix));
  }
  status() {
    return { asn: 65001, routerId: '192.0.2.1', desired: [], draining: false, peers: [] };
  }
  async stop(): Promise<void> {}
  get last(): string[] | undefined {
    return this.sets[this.sets.length - 1];
  }
}

// ---- config --------------------------------------------------------------------------------------------------

interface VipIn {
  name: string;
  address: string;
  backends: string[];
  check?: boolean;
}
const VIPS: VipIn[] = [
  { name: 'a', address: '10.0.0.10', backends: ['10.1.0.1', '10.1.0.2'], check: true },
  { name: 'b', address: '10.0.0.11', backends: ['10.1.0.3'] },
];

function config(vips: VipIn[], extra: Record<string, unknown> = {}): Config {
  const r = validateConfig({
    interface: 'eth0',
    nextHopMac: '02:00:00:00:00:fe',
    admin: { listen: '127.0.0.1:9100' },
    vips: vips.map((v) => ({
      name: v.name,
      address: v.address,
      port: 80,
      tableSize: 101,
      failOpen: false,
      ...(v.check ? { healthCheck: { type: 'tcp', port: 80, downGraceSeconds: 0 } } : {}),
      backends: v.backends.map((address) => ({ address })),
    })),
    ...extra,
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}
const BGP = { bgp: { asn: 65001, routerId: '192.0.2.1', peers: [{ address: '192.0.2.254', asn: 65000 }] } };

/** A start syncs once: the health targets it sets start with the status its desired state already shows
 * (NEW_TARGET_STATUS), so no sync more follows to show theirs. */
const START = ['start'];

const ok = (c: Config, changed = true): ReloadEvent => ({
  ok: true,
  trigger: 'file',
  config: c,
  warnings: [],
  changed,
});

// ---- harness -------------------------------------------------------------------------------------------------

interface Rig {
  daemon: Daemon;
  host: MemoryHost;
  source: FakeSource;
  monitor: FakeMonitor;
  speaker: FakeSpeaker | null;
  records: { level: string; obj: Record<string, unknown>; msg: string }[];
  /** Reasons of the syncs that reconciled, in order. */
  syncs(): string[];
}

function rig(o: {
  config: Config;
  host?: MemoryHost;
  extra?: Partial<DaemonCollaborators>;
  monitorStartsWith?: HealthStatus;
}): Rig {
  const host = o.host ?? new MemoryHost();
  const { log, records } = recordingLogger();
  const source = new FakeSource({
    ok: true,
    trigger: 'start',
    config: o.config,
    warnings: [],
    changed: true,
  });
  const monitor = new FakeMonitor(o.monitorStartsWith);
  const r: Rig = {
    daemon: null as unknown as Daemon,
    host,
    source,
    monitor,
    speaker: null,
    records,
    syncs: () => records.filter((x) => x.msg === 'reconciled').map((x) => String(x.obj.reason)),
  };
  const collaborators: DaemonCollaborators = {
    datapathHost: host,
    hostNetwork: {
      interfaceMac: async () => '02:00:00:00:00:01',
      interfaceAddresses: async () => ['192.0.2.1'],
      defaultGatewayMac: async () => '02:00:00:00:00:fe',
    },
    configSource: () => source,
    healthMonitor: () => monitor as never,
    bgpPreflight: async () => undefined,
    bgpSpeaker: () => (r.speaker = new FakeSpeaker(() => host.view)) as never,
    adminServer: async () => ({
      address: { host: '127.0.0.1', port: 9100 },
      limits: {} as never,
      connections: () => 0,
      stop: async () => undefined,
    }),
    vipRoutes: () => ({
      set: () => undefined,
      stop: async () => undefined,
      removeAll: async () => undefined,
      status: () => ({}) as never,
    }),
  };
  r.daemon = new Daemon({
    configPath: '/memory/config.yaml',
    detachOnExit: false,
    logger: log,
    ...collaborators,
    ...o.extra,
  });
  return r;
}

/** Lets promise chains settle (the timers stay fake; setImmediate is real). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

const mutations = (dp: MemoryDatapath, from: number): RecordedCall[] => dp.calls.slice(from);
const heldAddresses = async (dp: Datapath) => (await dp.listVips()).map((v) => v.key.address).sort();
const state = async (d: Daemon) =>
  (await d.state()) as {
    desired: { vips: { name: string; address: string }[] } | null;
    reloadError: string | null;
    adopted: boolean;
    failedVips: { name: string }[];
    componentErrors: Record<string, { count: number; last: string }>;
  };

/** A datapath whose reads wait while `held` is set: a sync started then stays in flight until release(). */
function gated(inner: Datapath) {
  let release: (() => void) | null = null;
  let gate: Promise<void> | null = null;
  const view = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return async (...args: unknown[]) => {
        if (gate) await gate;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    view,
    hold: (): void => {
      gate = new Promise<void>((r) => (release = r));
    },
    release: () => {
      gate = null;
      release?.();
    },
  };
}

beforeEach(() => {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
});
afterEach(() => {
  jest.useRealTimers();
});

/**
 * A rig whose start's housekeeping after ready collects incrementally (a big heap), and meanwhile (in its first
 * collection) `reloaded` comes in as a reload and syncs; `afterReload` runs once that sync has settled.
 */
function rigReloadingInHousekeeping(
  first: Config,
  reloaded: Config,
  o: { afterReload?: () => void } & Partial<DaemonCollaborators> = {},
): Rig {
  const { afterReload, ...extra } = o;
  let reloads = 0;
  const r: Rig = rig({
    config: first,
    extra: {
      heapUsed: () => 2 ** 40,
      trimMemory: () => false,
      collectIncrementally: async () => {
        if (reloads++ === 0) {
          r.source.emit('reload', ok(reloaded));
          await settle();
          afterReload?.();
        }
        return true;
      },
      ...extra,
    },
  });
  return r;
}

// ---- tests ---------------------------------------------------------------------------------------------------

describe('daemon coordination over a memory datapath', () => {
  it('coalesces reloads arriving during a sync into one more sync, which applies the last of them', async () => {
    const r = rig({ config: config(VIPS) });
    const g = gated(r.host.dp);
    r.host.view = g.view;
    await r.daemon.start();
    const written = r.host.dp.calls.length;
    await settle(); // nothing runs after it
    expect(r.syncs()).toEqual(START);
    expect(mutations(r.host.dp, written)).toEqual([]);

    g.hold();
    r.monitor.flip('a', 'down'); // a sync starts and waits on the datapath
    await settle();
    const c2 = config([...VIPS, { name: 'c', address: '10.0.0.12', backends: ['10.1.0.4'] }]);
    const c3 = config([...VIPS, { name: 'd', address: '10.0.0.13', backends: ['10.1.0.5'] }]);
    r.source.emit('reload', ok(c2));
    await settle();
    r.source.emit('reload', ok(c3));
    await settle();
    r.monitor.flip('a', 'up');
    await settle();
    expect(r.syncs()).toEqual(START); // the health sync still in flight
    g.release();
    await settle();

    console.log('syncs', r.syncs());
    // The health sync that was running, then exactly one more for everything that came meanwhile.
    expect(r.syncs()).toEqual([...START, 'health', 'queued']);
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11', '10.0.0.13']);
    await r.daemon.stop();
  });

  it("fixes malloc's threshold before anything is read, and collects the start's garbage once, right after ready", async () => {
    const order: string[] = [];
    // the rig's callbacks read `r` once it is made (during the start)
    const r: ReturnType<typeof rig> = rig({
      config: config(VIPS),
      extra: {
        fixMallocThreshold: () => void order.push('fixMallocThreshold'),
        // ready already (/readyz answers 200) when the start's housekeeping collects
        trimMemory: (t) => (
          order.push(`trimMemory ${JSON.stringify(t ?? null)} ready ${r.daemon.readiness().ready}`),
          t?.collect === true
        ),
      },
    });
    const start = r.source.start.bind(r.source);
    r.source.start = () => (order.push(`config source start ready ${r.daemon.readiness().ready}`), start());
    await r.daemon.start().then(() => order.push('start resolved'));
    expect(order).toEqual([
      'fixMallocThreshold',
      'config source start ready false',
      'trimMemory {"collect":true} ready true',
      'start resolved',
    ]);
    const line = r.records.find((x) => x.msg === 'start garbage collected, free memory given back');
    expect(line?.level).toBe('debug');
    expect(line?.obj.collected).toBe(true);
    expect(typeof line?.obj.ms).toBe('number');
    expect(line?.obj.rssMB).toBeGreaterThan(0);
    expect(typeof line?.obj.retireMs).toBe('number');
    // logged after 'daemon started' (which splits the start up to ready, housekeeping not included)
    const started = r.records.findIndex((x) => x.msg === 'daemon started');
    expect(started).toBeGreaterThanOrEqual(0);
    expect(r.records.indexOf(line!)).toBeGreaterThan(started);
    expect(Object.keys(r.records[started]!.obj.phasesMs as object)).toEqual([
      'config',
      'checks',
      'datapath',
      'ids',
      'firstSync',
      'rest',
    ]);
    await settle();
    // a later sync (a flip's) collects nothing
    r.monitor.flip('a', 'down');
    await settle();
    expect(r.syncs()).toEqual([...START, 'health']);
    expect(order.filter((x) => x.startsWith('trimMemory'))).toHaveLength(1);
    await r.daemon.stop();
  });

  it("bounds a big start's heap growth once its config is parsed, tighter once ready until its health targets are set; not a small one's", async () => {
    const MiB = 2 ** 20;
    const started = async (heapMB: number): Promise<string[]> => {
      const order: string[] = [];
      const r: ReturnType<typeof rig> = rig({
        config: config(VIPS),
        extra: {
          heapUsed: () => heapMB * MiB,
          heapGrowth: (phase) => void order.push(`heapGrowth ${phase} ready ${r.daemon.readiness().ready}`),
          memoryPressure: () => void order.push('memoryPressure'),
          trimMemory: (t) => (order.push('trimMemory'), t?.collect === true),
        },
      });
      r.monitor.probes = 3;
      r.monitor.onTargets = () => void order.push('targets');
      const start = r.source.start.bind(r.source);
      r.source.start = () => (order.push('config source start'), start());
      await r.daemon.start();
      order.push('start resolved');
      // a big daemon builds its tables on its own thread once the start is over (no table workers' memory)
      const inThread = r.records.filter((x) => x.msg === BUILDS_IN_THREAD_MSG);
      expect(inThread).toHaveLength(heapMB >= 64 ? 1 : 0);
      await r.daemon.stop();
      return order;
    };
    // START_BOUND_HEAP_BYTES is 64 MiB
    const big = await started(65);
    expect(big.filter((x) => x.startsWith('heapGrowth'))).toEqual(['heapGrowth start ready false', 'heapGrowth targets ready true', 'heapGrowth bounded ready true']); // prettier-ignore
    const bounded = big.indexOf('heapGrowth start ready false');
    expect(bounded).toBeGreaterThan(big.indexOf('config source start'));
    // V8's limit from its last collection followed its own rule: it is asked to collect soon, under the bound
    expect(big[bounded + 1]).toBe('memoryPressure');
    // once ready, the tighter bound from the start's own collection on, through the health targets
    const tight = big.indexOf('heapGrowth targets ready true');
    expect(big[tight + 1]).toBe('trimMemory');
    expect(big.indexOf('targets')).toBeGreaterThan(tight);
    // the start's bound again after the health targets and their collection, for good, before start() resolves
    expect(big.slice(-4)).toEqual([
      'targets',
      'trimMemory',
      'heapGrowth bounded ready true',
      'start resolved',
    ]);

    const small = await started(63);
    expect(small.filter((x) => x.startsWith('heapGrowth'))).toEqual([]);
    expect(small).toContain('targets');
  });

  it('gives V8 its own heap growth back when a bounded start fails', async () => {
    const phases: string[] = [];
    const r = rig({
      config: config(VIPS),
      extra: {
        heapUsed: () => 2 ** 30,
        heapGrowth: (phase) => void phases.push(phase),
        adminServer: () => Promise.reject(new Error('port taken')),
      },
    });
    await expect(r.daemon.start()).rejects.toThrow('port taken');
    expect(phases).toEqual(['start', 'run']);
  });

  it("sets the health targets after ready, once the start's garbage is collected, then collects theirs", async () => {
    const order: string[] = [];
    const r: ReturnType<typeof rig> = rig({
      config: config(VIPS),
      extra: {
        trimMemory: (t) => (
          order.push(`trimMemory ready ${r.daemon.readiness().ready}`),
          t?.collect === true
        ),
      },
    });
    r.monitor.probes = 3;
    r.monitor.onTargets = () => void order.push(`targets ready ${r.daemon.readiness().ready}`);
    await r.daemon.start();
    await settle();
    // the start's sync set none: the loop's sync after ready sets them (one change of targets), and logs no reconcile
    expect(order).toEqual(['trimMemory ready true', 'targets ready true', 'trimMemory ready true']);
    expect(r.monitor.targets.map((t) => t.vip).sort()).toEqual(['a', 'a']); // b has no health check
    expect(r.syncs()).toEqual(START);
    const started = r.records.findIndex((x) => x.msg === 'daemon started');
    const collected = r.records.filter((x) => x.msg === 'start garbage collected, free memory given back');
    expect(collected).toHaveLength(2);
    expect(r.records.indexOf(collected[0]!)).toBeGreaterThan(started);
    await r.daemon.stop();
  });

  it("leaves the start's health targets to a sync that came first: a reload during the housekeeping sets its own", async () => {
    const c2 = config([...VIPS, { name: 'c', address: '10.0.0.12', backends: ['10.1.0.4'], check: true }]);
    let changes = 0;
    const r = rigReloadingInHousekeeping(config(VIPS), c2);
    r.monitor.onTargets = () => void changes++;
    await r.daemon.start();
    await settle();
    // the reload's sync set every target of its desired state (c's too); the start's were not set after it
    expect(r.syncs()).toEqual([...START, 'reload']);
    expect(changes).toBe(1);
    expect(r.monitor.targets.map((t) => t.vip).sort()).toEqual(['a', 'a', 'c']);
    await r.daemon.stop();
  });

  it("retries the start's health targets with a whole sync when setting them fails", async () => {
    const r = rig({ config: config(VIPS) });
    let failures = 1;
    r.monitor.onTargets = () => {
      if (failures-- > 0) throw new Error('monitor refused');
    };
    await r.daemon.start();
    await settle();
    const logged = r.records.find((x) => x.msg === 'setting the health targets failed; retrying');
    expect(logged?.level).toBe('error');
    expect(r.monitor.targets).toEqual([]);
    expect(r.syncs()).toEqual(START);
    await jest.advanceTimersByTimeAsync(RETRY_MAX_MS);
    await settle();
    expect(r.syncs()).toEqual([...START, 'retry']);
    expect(r.monitor.targets.map((t) => t.vip)).toEqual(['a', 'a']);
    await r.daemon.stop();
  });

  it("keeps serving when the start's housekeeping after ready fails", async () => {
    const r = rig({
      config: config(VIPS),
      extra: {
        trimMemory: () => {
          throw new Error('malloc_trim exploded');
        },
      },
    });
    await r.daemon.start();
    expect(r.daemon.readiness().ready).toBe(true);
    const warn = r.records.find((x) => x.msg.startsWith("the start's housekeeping failed"));
    expect(warn?.level).toBe('warn');
    expect(String((warn?.obj.err as Error | undefined)?.message)).toContain('malloc_trim exploded');
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11']); // both VIPs programmed
    await r.daemon.stop();
  });

  it("asks V8 to collect after a burst's sync once started, never during the start", async () => {
    // More VIPs than INLINE_TABLES: the start's sync and a reload changing each are bursts.
    const many = (b: number): VipIn[] =>
      Array.from({ length: INLINE_TABLES + 4 }, (_, i) => ({
        name: `m${i}`,
        address: `10.0.1.${i + 1}`,
        backends: [`10.2.${i}.${b}`],
      }));
    let pressures = 0;
    const r = rig({ config: config(many(1)), extra: { memoryPressure: () => void pressures++ } });
    await r.daemon.start();
    await settle();
    expect(r.syncs()).toEqual(START);
    expect(pressures).toBe(0);
    expect(r.records.filter((x) => x.msg === BURST_COLLECT_MSG)).toEqual([]);
    r.source.emit('reload', ok(config(many(2))));
    await settle();
    expect(r.syncs()).toEqual([...START, 'reload']);
    const logged = r.records.filter((x) => x.msg === BURST_COLLECT_MSG);
    expect(logged).toHaveLength(1);
    expect(logged[0]!.obj.tables).toBe(INLINE_TABLES + 4);
    // asked when the heap was small enough (this test process's heap decides which; both are logged)
    expect(pressures).toBe(logged[0]!.obj.collect === true ? 1 : 0);
    // a small change is no burst
    r.source.emit(
      'reload',
      ok(config([...many(2).slice(1), { name: 'm0', address: '10.0.1.1', backends: ['10.2.0.9'] }])),
    );
    await settle();
    expect(r.syncs()).toEqual([...START, 'reload', 'reload']);
    expect(r.records.filter((x) => x.msg === BURST_COLLECT_MSG)).toHaveLength(1);
    await r.daemon.stop();
  });

  it('runs one sync more after ready when the new health targets start with a status the desired state does not show', async () => {
    // A monitor whose new targets start down (HealthMonitor's start NEW_TARGET_STATUS, which the desired state shows).
    const r = rig({ config: config(VIPS), monitorStartsWith: 'down' });
    await r.daemon.start();
    const startedAt = r.records.findIndex((x) => x.msg === 'daemon started');
    expect(startedAt).toBeGreaterThanOrEqual(0);
    await settle();
    expect(r.syncs()).toEqual(['start', 'health targets']);
    // after ready, not before it
    expect(r.records.findIndex((x) => x.msg === 'reconciled' && x.obj.reason === 'health targets')).toBeGreaterThan(startedAt); // prettier-ignore
    const d = (await r.daemon.state()) as {
      desired: { vips: { name: string; backends: { health: string }[] }[] };
    };
    expect(d.desired.vips.map((v) => [v.name, v.backends.map((b) => b.health)])).toEqual([
      ['a', ['down', 'down']],
      ['b', ['unknown']],
    ]);
    await r.daemon.stop();
  });

  it('keeps the previous config and desired state when a reload is rejected', async () => {
    const r = rig({ config: config(VIPS) });
    await r.daemon.start();
    await settle();
    const before = await state(r.daemon);
    const writes = r.host.dp.calls.length;

    // Invalid file: the source reports it rejected.
    r.source.emit('reload', {
      ok: false,
      trigger: 'file',
      errors: [{ path: 'vips.0.port', message: 'is not a port' }],
      kept: null,
    } as unknown as ReloadEvent);
    await settle();
    let after = await state(r.daemon);
    expect(after.desired).toEqual(before.desired);
    expect(after.reloadError).toContain('vips.0.port');
    expect(r.daemon.readiness().reasons.join('\n')).toContain(
      'config reload rejected, previous config in force',
    );

    // Valid, but changes a field bound at start; and valid, but a VIP is this host's own address.
    r.source.emit(
      'reload',
      ok(config([{ name: 'x', address: '10.0.0.99', backends: ['10.1.0.9'] }], { interface: 'eth1' })),
    );
    await settle();
    expect((await state(r.daemon)).reloadError).toBe('interface: changing these needs a daemon restart');
    r.source.emit('reload', ok(config([{ name: 'x', address: '192.0.2.1', backends: ['10.1.0.9'] }])));
    await settle();
    after = await state(r.daemon);
    expect(after.reloadError).toContain('192.0.2.1');
    expect(after.desired).toEqual(before.desired);
    expect(r.syncs()).toEqual(START);
    expect(mutations(r.host.dp, writes)).toEqual([]);
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11']);

    // A good reload then applies and clears the error.
    r.source.emit('reload', ok(config([VIPS[1]!])));
    await settle();
    expect((await state(r.daemon)).reloadError).toBeNull();
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.11']);
    await r.daemon.stop();
  });

  it('announces nothing before the first sync is applied, and withdraws a VIP with no usable backend', async () => {
    const r = rig({ config: config(VIPS, BGP) });
    await r.daemon.start();
    const speaker = r.speaker!;
    // The speaker starts only after the start sync wrote both VIPs; every route handed over is one held.
    expect(speaker.heldAtStart?.sort()).toEqual(['10.0.0.10', '10.0.0.11']);
    expect(speaker.sets.length).toBeGreaterThan(0);
    expect(speaker.sets[0]!.sort()).toEqual(['10.0.0.10/32', '10.0.0.11/32']);

    r.monitor.flip('a', 'down'); // failOpen: false, so a has no usable backend
    await settle();
    expect(speaker.last).toEqual(['10.0.0.11/32']);
    r.monitor.flip('a', 'up');
    await settle();
    expect(speaker.last!.sort()).toEqual(['10.0.0.10/32', '10.0.0.11/32']);

    // Detached and not re-attachable (another program there): everything is withdrawn.
    r.host.attached = 'other';
    await jest.advanceTimersByTimeAsync(300);
    await settle();
    expect(speaker.last).toEqual([]);
    expect(r.daemon.readiness().ready).toBe(false);
    await r.daemon.stop();
  });

  it("sets the VIP blackhole routes once the start's sync wrote its VIPs and it is ready, and before a later sync's writes", async () => {
    // Each set() of the real keeper starts `ip` processes (a fork of the daemon each): at the start they wait until
    // the daemon reports ready (its CPU-bound first sync done, and not before /readyz).
    const sets: { addresses: string[]; vipsHeld: string[]; ready: boolean }[] = [];
    let dp: MemoryDatapath | null = null;
    const r: ReturnType<typeof rig> = rig({
      config: config(VIPS),
      extra: {
        vipRoutes: () => ({
          set: (addresses: Iterable<string>) => {
            const held = dp!.calls.filter((c) => c.method === 'upsertVip').map((c) => c.target);
            sets.push({
              addresses: [...addresses].sort(),
              vipsHeld: held,
              ready: r.daemon.readiness().ready,
            });
          },
          stop: async () => undefined,
          removeAll: async () => undefined,
          status: () => ({}) as never,
        }),
      },
    });
    dp = r.host.dp;
    await r.daemon.start();
    expect(sets.length).toBe(1);
    expect(sets[0]!.addresses).toEqual(['10.0.0.10', '10.0.0.11']);
    // both VIPs were written before it
    expect(sets[0]!.vipsHeld.length).toBe(2);
    expect(sets[0]!.ready).toBe(true);
    const c2 = config([...VIPS, { name: 'c', address: '10.0.0.12', backends: ['10.1.0.4'] }]);
    r.source.emit('reload', ok(c2));
    await settle();
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11', '10.0.0.12']);
    // once started, before the sync that writes the new VIP (its traffic may come either way)
    expect(sets.length).toBe(2);
    expect(sets[1]!.addresses).toEqual(['10.0.0.10', '10.0.0.11', '10.0.0.12']);
    expect(sets[1]!.vipsHeld.length).toBe(2);
    await r.daemon.stop();
  });

  it("never sets the start's VIP routes over a later sync's: a reload during the start's housekeeping wins", async () => {
    const sets: string[][] = [];
    const c2 = config([...VIPS, { name: 'c', address: '10.0.0.12', backends: ['10.1.0.4'] }]);
    const r = rigReloadingInHousekeeping(config(VIPS), c2, {
      afterReload: () => expect(sets).toEqual([['10.0.0.10', '10.0.0.11', '10.0.0.12']]), // its sync set its routes
      vipRoutes: () => ({
        set: (addresses: Iterable<string>) => void sets.push([...addresses].sort()),
        stop: async () => undefined,
        removeAll: async () => undefined,
        status: () => ({}) as never,
      }),
    });
    await r.daemon.start();
    await settle();
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11', '10.0.0.12']);
    // the start's (two VIPs) were never set over them
    expect(sets).toEqual([['10.0.0.10', '10.0.0.11', '10.0.0.12']]);
    await r.daemon.stop();
  });

  it('adopts what a previous daemon left without writing a VIP, backend or table', async () => {
    const host = new MemoryHost();
    // The previous daemon leaves ids a fresh start would not pick (z came first and went) and a's backends down.
    const z: VipIn = { name: 'z', address: '10.0.0.9', backends: ['10.1.0.9'] };
    const first = rig({ config: config([z, ...VIPS]), host });
    await first.daemon.start();
    first.source.emit('reload', ok(config(VIPS)));
    await settle();
    first.monitor.flip('a', 'down');
    await settle();
    await first.daemon.stop();
    expect(await heldAddresses(host.dp)).toEqual(['10.0.0.10', '10.0.0.11']);
    expect((await host.dp.listBackends()).map((b) => b.state).sort()).toEqual(['down', 'down', 'up']);
    const heldConfig = await host.dp.readConfig();
    const before = host.dp.calls.length;

    const second = rig({ config: config(VIPS), host });
    await second.daemon.start();
    await settle();
    const writes = mutations(host.dp, before);
    console.log('datapath writes on adoption', writes);
    expect((await state(second.daemon)).adopted).toBe(true);
    // The config is written before the attach check, as on every start; it is the one already held.
    expect(writes.filter((w) => w.method !== 'configure')).toEqual([]);
    expect(await host.dp.readConfig()).toEqual(heldConfig);
    await second.daemon.stop();
  });

  it('retries a VIP whose writes failed with backoff, while the other VIP is programmed and announced', async () => {
    const r = rig({ config: config(VIPS, BGP) });
    r.host.dp.failOn('upsertVip', '10.0.0.10:80/tcp', new Error('injected: ENOMEM'));
    await r.daemon.start();
    await settle();
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.11']);
    expect((await state(r.daemon)).failedVips.map((v) => v.name)).toEqual(['a']);
    expect(r.speaker!.last).toEqual(['10.0.0.11/32']);
    const readiness = r.daemon.readiness();
    expect(readiness.ready).toBe(true);
    expect(readiness.reasons.join('\n')).toContain('VIP a not programmed, withdrawn');

    // Retries at 1 s, then 2 s, then 4 s after each failure.
    const retriesAt: number[] = [];
    const t0 = Date.now();
    for (let ms = 0; ms < 7000; ms += 100) {
      const n = r.syncs().length;
      await jest.advanceTimersByTimeAsync(100);
      if (r.syncs().length > n) retriesAt.push(Date.now() - t0);
    }
    console.log('retries at (fake ms)', retriesAt);
    expect(retriesAt).toEqual([1000, 3000, 7000]);
    expect(r.syncs()).toEqual([...START, 'retry', 'retry', 'retry']);

    r.host.dp.failOn('upsertVip', '10.0.0.10:80/tcp', null);
    await jest.advanceTimersByTimeAsync(8000);
    expect(r.syncs()).toEqual([...START, 'retry', 'retry', 'retry', 'retry']);
    expect(await heldAddresses(r.host.dp)).toEqual(['10.0.0.10', '10.0.0.11']);
    expect(r.speaker!.last!.sort()).toEqual(['10.0.0.10/32', '10.0.0.11/32']);
    // Nothing failed any more: no further retries.
    await jest.advanceTimersByTimeAsync(60_000);
    expect(r.syncs()).toHaveLength(START.length + 4);
    await r.daemon.stop();
  });

  it("survives components' 'error' events, and reports them", async () => {
    const r = rig({ config: config(VIPS, BGP) });
    await r.daemon.start();
    r.source.emit('error', new Error('watch failed'));
    r.monitor.emit('error', new Error('checker threw'));
    r.speaker!.emit('error', new Error('worker died'));
    r.speaker!.emit('error', new Error('worker died again'));
    await settle();

    const s = await state(r.daemon);
    expect(s.componentErrors).toEqual({
      'config-source': expect.objectContaining({ count: 1, last: 'watch failed' }),
      'health-monitor': expect.objectContaining({ count: 1, last: 'checker threw' }),
      bgp: expect.objectContaining({ count: 2, last: 'worker died again' }),
    });
    const readiness = r.daemon.readiness();
    expect(readiness.ready).toBe(true);
    expect(readiness.reasons.join('\n')).toContain('bgp error (2 so far');
    expect(r.records.filter((x) => x.msg === 'component error; the daemon keeps running')).toHaveLength(4);

    // Still working: a health change is applied and announced.
    r.monitor.flip('a', 'down');
    await settle();
    expect(r.speaker!.last).toEqual(['10.0.0.11/32']);
    // After a while /readyz stops naming them; /state keeps them.
    await jest.advanceTimersByTimeAsync(300_001);
    expect(r.daemon.readiness().reasons.join('\n')).not.toContain('error (');
    expect(Object.keys((await state(r.daemon)).componentErrors)).toHaveLength(3);
    await r.daemon.stop();
  });
});
