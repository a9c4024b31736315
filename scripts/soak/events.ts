// Running one scheduled event: inject the fault, hold, repair, then wait until the whole system converged
// (daemons ready, config in force, backends up, BGP established, ECMP over every LB node) and record checks.
import { findHost, Host, lbPinRoot, Plan } from '../testbed/plan';
import { CLI_JS, daemonPids, startDaemon, stopDaemon, writeDaemonConfig } from '../testbed/peak';
import {
  bgpSessions,
  killBackendNginx,
  nsPids,
  startBackendNginx,
  startRouterDaemon,
  stopRouterDaemon,
} from '../testbed/topology';
import { run, runIn, sleep } from '../testbed/sh';
import { expectedVips, invalidConfigText, soakConfigText, soakDaemonConfig, soakVips } from './config';
import {
  adminGet,
  counterDeltas,
  DaemonState,
  fibLbs,
  formatDeltas,
  kernelCounters,
  KernelCounters,
  Observer,
  readCounters,
  xdpProgId,
} from './observe';
import type { SoakProfile } from './profile';
import type { ConfigModel, EventKind, InvalidVariant, PlannedEvent } from './schedule';
import { signalPid } from '../lib/pids';

export interface SoakContext {
  plan: Plan;
  profile: SoakProfile;
  /** The config in force (reloads replace it). */
  model: ConfigModel;
  observer: Observer;
  log: (msg: string) => void;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** What happened in one event; times are epoch ms. */
export interface EventRecord {
  index: number;
  kind: EventKind;
  target: string | null;
  variant: string | null;
  holdS: number | null;
  plannedAt: number;
  startedAt: number;
  injectedAt: number | null;
  repairedAt: number | null;
  /** When the system was whole again (null: it did not converge in time). */
  settledAt: number | null;
  ok: boolean;
  checks: Check[];
  notes: string[];
  modelAfter: ConfigModel;
  /** Telling datapath counters that moved from the event's start to its settling, per LB node. */
  counters: Record<string, Record<string, number>>;
  /** LB nodes whose kernel forwarded packets or sent ICMP time-exceeded during the event (XDP let VIP packets by). */
  kernel: Record<string, KernelCounters>;
}

const addr = (h: Host, f: 4 | 6): string => (f === 4 ? h.link!.hostV4.address : h.link!.hostV6.address);

function sighup(lb: Host): number[] {
  const pids = daemonPids(lb);
  for (const pid of pids) signalPid(pid, 'SIGHUP');
  return pids;
}

/** Writes every LB node's config for a model (or the text given per LB) and sends SIGHUP. */
function reloadAll(ctx: SoakContext, text: (lb: Host) => string): void {
  for (const lb of ctx.plan.lbs) {
    writeDaemonConfig(ctx.plan, lb, text(lb));
    sighup(lb);
  }
}

/** Health of a backend on one LB's daemon for every web VIP ('missing' when not in its desired state). */
function healthOf(st: DaemonState | null, ctx: SoakContext, be: Host): string[] {
  if (!st?.desired) return ['no answer'];
  const { web } = soakVips(ctx.plan);
  return web.map((name, i) => {
    const v = st.desired!.vips.find((x) => x.name === name);
    const b = v?.backends.find((x) => x.address === addr(be, i === 0 ? 4 : 6));
    return b ? b.health : 'missing';
  });
}

/** Why the system is not converged for the model (empty: converged). */
async function unconverged(ctx: SoakContext): Promise<string[]> {
  const p = ctx.plan;
  const why: string[] = [];
  const want = expectedVips(p, ctx.model);
  await Promise.all(
    p.lbs.map(async (lb) => {
      if (daemonPids(lb).length === 0) return void why.push(`${lb.name}: no daemon`);
      const ready = await adminGet<{ ready: boolean; reasons: string[] }>(lb, '/readyz');
      if (!ready) return void why.push(`${lb.name}: admin API does not answer`);
      // Degraded reasons other than a rejected reload (e.g. a component error shown for minutes) do not block.
      const rejected = ready.reasons.filter((r) => /reload rejected/.test(r));
      if (!ready.ready || rejected.length > 0)
        why.push(
          `${lb.name}: readyz ${ready.ready ? 'ready but' : 'not ready:'} ${(ready.ready ? rejected : ready.reasons).join('; ')}`,
        );
      const st = await adminGet<DaemonState>(lb, '/state');
      if (!st?.desired) return void why.push(`${lb.name}: no desired state`);
      const have = new Map(st.desired.vips.map((v) => [v.name, v]));
      for (const [name, bes] of want) {
        const v = have.get(name);
        if (!v) {
          why.push(`${lb.name}: VIP ${name} missing`);
          continue;
        }
        const got = new Map(v.backends.map((b) => [b.address, b]));
        for (const [a, w] of bes) {
          const b = got.get(a);
          if (!b) why.push(`${lb.name}: ${name} lacks backend ${a}`);
          else if (b.weight !== w) why.push(`${lb.name}: ${name} ${a} weight ${b.weight}, want ${w}`);
          else if (b.health !== 'up' || b.state !== 'up')
            why.push(`${lb.name}: ${name} ${a} health ${b.health} state ${b.state}`);
        }
        for (const a of got.keys()) if (!bes.has(a)) why.push(`${lb.name}: ${name} still has backend ${a}`);
      }
      for (const name of have.keys()) if (!want.has(name)) why.push(`${lb.name}: VIP ${name} still there`);
    }),
  );
  const sessions = bgpSessions(p);
  if (sessions.length === 0) why.push('router: BIRD does not answer');
  for (const s of sessions) if (!s.state.startsWith('Established')) why.push(`router: ${s.peer} ${s.state}`);
  const all = p.lbs.map((l) => l.name).join(',');
  for (const v of p.vips) {
    const lbs = (await fibLbs(p, v.address)).join(',');
    if (want.has(v.name) && lbs !== all) why.push(`router: ${v.name} via [${lbs}], want [${all}]`);
    if (!want.has(v.name) && lbs !== '') why.push(`router: ${v.name} still routed via [${lbs}]`);
  }
  return why;
}

/** Waits until converged; returns when (epoch ms) or null with the last reasons. */
export async function converge(
  ctx: SoakContext,
  timeoutS: number,
): Promise<{ at: number | null; why: string[] }> {
  const end = Date.now() + timeoutS * 1000;
  let why: string[] = [];
  for (;;) {
    why = await unconverged(ctx);
    if (why.length === 0) return { at: Date.now(), why };
    if (Date.now() >= end) return { at: null, why };
    await sleep(400);
  }
}

/** Runs one event; never throws for a fault that misbehaves (it is recorded as a failed check). */
export async function runEvent(ctx: SoakContext, e: PlannedEvent, plannedAt: number): Promise<EventRecord> {
  const rec: EventRecord = {
    index: e.index,
    kind: e.kind,
    target: e.target,
    variant: e.variant,
    holdS: e.holdS,
    plannedAt,
    startedAt: Date.now(),
    injectedAt: null,
    repairedAt: null,
    settledAt: null,
    ok: true,
    checks: [],
    notes: [],
    modelAfter: e.model,
    counters: {},
    kernel: {},
  };
  const check = (name: string, ok: boolean, detail: string): void => {
    rec.checks.push({ name, ok, detail });
    if (!ok) rec.ok = false;
  };
  const holdMs = (e.holdS ?? 0) * 1000;
  const c0 = await readCounters(ctx.plan);
  const k0 = new Map(ctx.plan.lbs.map((lb) => [lb.name, kernelCounters(lb)]));
  try {
    await KINDS[e.kind](ctx, e, rec, { check, holdMs });
  } catch (err) {
    check('event ran', false, `harness error: ${(err as Error).message}`);
  }
  const c = await converge(ctx, ctx.profile.settleTimeoutS);
  rec.settledAt = c.at;
  rec.counters = counterDeltas(c0, await readCounters(ctx.plan));
  if (Object.keys(rec.counters).length) rec.notes.push(`datapath: ${formatDeltas(rec.counters)}`);
  for (const lb of ctx.plan.lbs) {
    const a = k0.get(lb.name)!;
    const b = kernelCounters(lb);
    const d = { forwarded: b.forwarded - a.forwarded, timeExceeded: b.timeExceeded - a.timeExceeded };
    if (d.forwarded > 0 || d.timeExceeded > 0) {
      rec.kernel[lb.name] = d;
      rec.notes.push(
        `${lb.name}'s kernel forwarded ${d.forwarded} packets and sent ${d.timeExceeded} ICMP time-exceeded: ` +
          'XDP let VIP packets through and they went back to the router (ip_forward is on in the testbed LB nodes)',
      );
    }
  }
  check(
    'converged',
    c.at !== null,
    c.at !== null
      ? `whole again ${((c.at - (rec.repairedAt ?? rec.injectedAt ?? rec.startedAt)) / 1000).toFixed(1)} s after the repair`
      : `not converged ${ctx.profile.settleTimeoutS} s after the repair: ${c.why.slice(0, 6).join('; ')}`,
  );
  return rec;
}

type Runner = (
  ctx: SoakContext,
  e: PlannedEvent,
  rec: EventRecord,
  o: { check: (name: string, ok: boolean, detail: string) => void; holdMs: number },
) => Promise<void>;

/** Health of a backend on every LB after a fault that should take it down (backend-kill, health-flap). */
async function expectDown(
  ctx: SoakContext,
  be: Host,
  check: (n: string, ok: boolean, d: string) => void,
): Promise<void> {
  const seen = await Promise.all(
    ctx.plan.lbs.map(async (lb) => ({
      lb: lb.name,
      h: healthOf(await adminGet<DaemonState>(lb, '/state'), ctx, be),
    })),
  );
  const notDown = seen.filter((s) => s.h.some((x) => x !== 'down'));
  check(
    'health checks saw it down on every LB node',
    notDown.length === 0,
    notDown.length === 0 ? 'down on all' : notDown.map((s) => `${s.lb}: ${s.h.join('/')}`).join('; '),
  );
}

/**
 * Polls the router's next hops of the first web VIP for `ms` (or, with untilFull, until every LB node is back):
 * the fewest seen, when `lb` first went missing, when the route first vanished and when it came back whole.
 */
async function watchFib(
  ctx: SoakContext,
  ms: number,
  lb: string | null,
  o: { untilFull?: boolean } = {},
): Promise<{ minLbs: number; lbGoneAfterMs: number | null; emptyAt: number | null; fullAt: number | null }> {
  const { web } = soakVips(ctx.plan);
  const v = ctx.plan.vips.find((x) => x.name === web[0])!;
  const t0 = Date.now();
  let minLbs = Infinity;
  let gone: number | null = null;
  let emptyAt: number | null = null;
  let fullAt: number | null = null;
  while (Date.now() - t0 < ms) {
    const lbs = await fibLbs(ctx.plan, v.address);
    const now = Date.now();
    minLbs = Math.min(minLbs, lbs.length);
    if (lbs.length === 0) emptyAt ??= now;
    if (lb && gone === null && !lbs.includes(lb)) gone = now - t0;
    if (lbs.length === ctx.plan.lbs.length) {
      fullAt ??= now;
      if (o.untilFull) break;
    } else fullAt = null;
    await sleep(100);
  }
  return { minLbs: minLbs === Infinity ? 0 : minLbs, lbGoneAfterMs: gone, emptyAt, fullAt };
}

/** Runs the fault; the repair runs even when the fault part throws (no fault outlives its event). */
async function withRepair(rec: EventRecord, fault: () => Promise<void>, repair: () => void): Promise<void> {
  try {
    await fault();
  } finally {
    repair();
    rec.repairedAt = Date.now();
  }
}

function nftIn(netns: string, script: string): void {
  runIn(netns, 'nft', ['-f', '-'], { input: script });
}

const KINDS: Record<EventKind, Runner> = {
  async 'backend-kill'(ctx, e, rec, { check, holdMs }) {
    const be = findHost(ctx.plan, e.target!);
    killBackendNginx(be);
    rec.injectedAt = Date.now();
    await withRepair(
      rec,
      async () => {
        await sleep(300);
        const left = nsPids(be.netns).length;
        check(
          'nginx killed',
          left === 0,
          left === 0 ? 'no process left' : `${left} processes left in ${be.netns}`,
        );
        await sleep(Math.max(0, holdMs - 300));
        await expectDown(ctx, be, check);
      },
      () => startBackendNginx(ctx.plan, be),
    );
  },

  async 'daemon-kill'(ctx, e, rec, { check, holdMs }) {
    const lb = findHost(ctx.plan, e.target!);
    stopDaemon(ctx.plan, lb, { signal: 'SIGKILL' });
    rec.injectedAt = Date.now();
    const hosts = ctx.model.backends.map((b) => findHost(ctx.plan, b.name));
    await withRepair(
      rec,
      async () => {
        const fib = await watchFib(ctx, holdMs, lb.name);
        const gone = daemonPids(lb).length === 0;
        check('daemon gone', gone, gone ? 'killed' : `still running: ${daemonPids(lb).join(', ')}`);
        check(
          'routes kept while the daemon was down (graceful restart)',
          fib.lbGoneAfterMs === null,
          fib.lbGoneAfterMs === null
            ? `${lb.name} stayed in the ECMP set for ${(holdMs / 1000).toFixed(1)} s`
            : `${lb.name} left the ECMP set ${fib.lbGoneAfterMs} ms after kill -9`,
        );
      },
      () =>
        void startDaemon(ctx.plan, lb, {
          backends: hosts,
          config: soakDaemonConfig(ctx.plan, lb, ctx.model),
        }),
    );
  },

  async 'reload-add-backend'(ctx, e, rec) {
    reload(ctx, e, rec);
  },
  async 'reload-remove-backend'(ctx, e, rec) {
    reload(ctx, e, rec);
  },
  async 'reload-reweight'(ctx, e, rec) {
    reload(ctx, e, rec);
  },
  async 'reload-remove-vip'(ctx, e, rec) {
    reload(ctx, e, rec);
  },
  async 'reload-add-vip'(ctx, e, rec, { check }) {
    reload(ctx, e, rec);
    const c = await converge(ctx, ctx.profile.settleTimeoutS);
    if (c.at === null) return; // The final convergence check reports why.
    const { extra } = soakVips(ctx.plan);
    for (const name of extra) {
      const v = ctx.plan.vips.find((x) => x.name === name)!;
      const url = v.family === 4 ? `http://${v.address}:${v.port}/` : `http://[${v.address}]:${v.port}/`;
      const body = run(
        'ip',
        ['netns', 'exec', ctx.plan.clients[0]!.netns, 'curl', '-sS', '-m', '3', '-g', url],
        {
          allowFail: true,
        },
      ).trim();
      check(`new VIP ${name} answers`, /^be\d+$/.test(body), body ? `answered by ${body}` : 'no answer');
    }
  },

  async 'reload-invalid'(ctx, e, rec, { check }) {
    const variant = e.variant as InvalidVariant;
    let what = '';
    reloadAll(ctx, (lb) => {
      const r = invalidConfigText(ctx.plan, lb, ctx.model, variant);
      what = r.what;
      return r.text;
    });
    rec.injectedAt = Date.now();
    rec.notes.push(`invalid config: ${what}`);
    await withRepair(
      rec,
      async () => {
        const want = expectedVips(ctx.plan, ctx.model);
        const verdicts = await Promise.all(
          ctx.plan.lbs.map(async (lb) => {
            const end = Date.now() + 5000;
            let reasons: string[] = [];
            for (;;) {
              const r = await adminGet<{ ready: boolean; reasons: string[] }>(lb, '/readyz');
              reasons = r?.reasons ?? [];
              if (reasons.some((x) => /reload rejected/.test(x)) || Date.now() > end) break;
              await sleep(250);
            }
            const st = await adminGet<DaemonState>(lb, '/state');
            // null: /state did not answer, so nothing is known about what is in force.
            const applied = st?.desired ? !sameDesired(st, want) : null;
            return {
              lb: lb.name,
              rejected: reasons.find((x) => /reload rejected/.test(x)) ?? null,
              applied,
              alive: daemonPids(lb).length > 0,
            };
          }),
        );
        for (const v of verdicts) {
          check(`${v.lb}: daemon survived`, v.alive, v.alive ? 'running' : 'exited');
          check(
            `${v.lb}: rejected (readyz)`,
            v.rejected !== null,
            v.rejected ?? 'no rejection in /readyz within 5 s',
          );
          check(
            `${v.lb}: previous config in force`,
            v.applied === false,
            v.applied === null
              ? '/state did not answer'
              : v.applied
                ? 'INVALID CONFIG APPLIED: /state desired differs from the previous config'
                : '/state unchanged',
          );
        }
      },
      () => reloadAll(ctx, (lb) => soakConfigText(ctx.plan, lb, ctx.model)),
    );
  },

  async 'router-restart'(ctx, e, rec, { check, holdMs }) {
    const graceful = e.variant === 'graceful';
    const t = Date.now();
    await stopRouterDaemon(ctx.plan, { mode: graceful ? 'graceful' : 'term' });
    rec.injectedAt = t;
    let fib = { minLbs: 0, emptyAt: null as number | null };
    await withRepair(
      rec,
      async () => void (fib = await watchFib(ctx, holdMs, null)),
      () => startRouterDaemon(ctx.plan, ctx.log, { gracefulRestart: true, recovery: graceful }),
    );
    // The FIB while BIRD starts and the sessions return.
    const after = await watchFib(ctx, ctx.profile.settleTimeoutS * 1000, null, { untilFull: true });
    const fewest = Math.min(fib.minLbs, after.minLbs);
    const emptyAt = fib.emptyAt ?? after.emptyAt;
    const outage =
      emptyAt === null
        ? 'the route never vanished'
        : `no route from +${((emptyAt - t) / 1000).toFixed(1)} s after the stop`;
    rec.notes.push(
      `${outage}; every LB node back ${after.fullAt === null ? 'NOT within the settle time' : `${((after.fullAt - t) / 1000).toFixed(1)} s after the stop`} (BIRD down ${(holdMs / 1000).toFixed(1)} s)`,
    );
    if (graceful)
      check(
        'FIB kept through the graceful restart',
        fewest === ctx.plan.lbs.length,
        `fewest next hops seen ${fewest} of ${ctx.plan.lbs.length}`,
      );
  },

  async 'health-flap'(ctx, e, rec, { check, holdMs }) {
    const be = findHost(ctx.plan, e.target!);
    const l = be.link!;
    nftIn(
      be.netns,
      `table inet soakflap {\n  chain input {\n    type filter hook input priority -10; policy accept;\n` +
        `    ip daddr ${l.hostV4.address} tcp dport ${ctx.plan.backendPort} drop\n` +
        `    ip6 daddr ${l.hostV6.address} tcp dport ${ctx.plan.backendPort} drop\n  }\n}\n`,
    );
    rec.injectedAt = Date.now();
    await withRepair(
      rec,
      async () => {
        await sleep(holdMs);
        await expectDown(ctx, be, check);
      },
      () => void runIn(be.netns, 'nft', ['delete', 'table', 'inet', 'soakflap']),
    );
  },

  async 'xdp-detach'(ctx, e, rec, { check, holdMs }) {
    const lb = findHost(ctx.plan, e.target!);
    const before = xdpProgId(lb);
    const reattachesBefore = (await adminGet<DaemonState>(lb, '/state'))?.reattaches ?? null;
    runIn(lb.netns, 'ip', ['link', 'set', 'dev', lb.link!.hostIf, 'xdp', 'off']);
    rec.injectedAt = Date.now();
    // The daemon may put the same program back before we look (its check runs every 250 ms: seen after 50 ms),
    // so the detach shows either as no program, another one, or one more re-attach counted by the daemon.
    const gone = xdpProgId(lb) === 0 || xdpProgId(lb) !== before;
    const reattachesNow = gone ? null : ((await adminGet<DaemonState>(lb, '/state'))?.reattaches ?? null);
    check(
      'XDP detached',
      gone || (reattachesBefore !== null && reattachesNow !== null && reattachesNow > reattachesBefore),
      `program ${before} before; daemon re-attaches ${reattachesBefore ?? '?'} -> ${reattachesNow ?? '-'}`,
    );
    let back: number | null = null;
    try {
      while (Date.now() - rec.injectedAt < holdMs) {
        if (xdpProgId(lb) !== 0) {
          back = Date.now() - rec.injectedAt;
          break;
        }
        await sleep(100);
      }
    } finally {
      if (back === null && xdpProgId(lb) !== 0) back = Date.now() - rec.injectedAt;
    }
    if (back !== null) rec.notes.push(`re-attached by the daemon ${back} ms after the detach`);
    else {
      runIn(
        lb.netns,
        process.execPath,
        [
          CLI_JS,
          'attach',
          '--interface',
          lb.link!.hostIf,
          '--mode',
          'native',
          '--bpffs',
          lbPinRoot(ctx.plan, lb),
        ],
        {
          timeoutMs: 30_000,
        },
      );
      rec.notes.push(
        `the daemon did not re-attach within ${(holdMs / 1000).toFixed(1)} s: re-attached with \`peak-xdp attach\``,
      );
    }
    check('XDP attached again', xdpProgId(lb) !== 0, `program ${xdpProgId(lb)}`);
    rec.repairedAt = Date.now();
  },

  async 'lb-blackhole'(ctx, e, rec, { holdMs }) {
    const lb = findHost(ctx.plan, e.target!);
    const wire = e.variant === 'wire';
    if (wire) {
      const dev = lb.link!.routerIf;
      nftIn(
        ctx.plan.router.netns,
        `table netdev soakbh {\n  chain in { type filter hook ingress device "${dev}" priority -500; policy drop; }\n` +
          `  chain out { type filter hook egress device "${dev}" priority -500; policy drop; }\n}\n`,
      );
    } else
      nftIn(
        lb.netns,
        'table inet soakbh {\n  chain in { type filter hook input priority -300; policy drop; iif "lo" accept; }\n' +
          '  chain out { type filter hook output priority -300; policy drop; oif "lo" accept; }\n}\n',
      );
    rec.injectedAt = Date.now();
    await withRepair(
      rec,
      async () => {
        const fib = await watchFib(ctx, holdMs, lb.name);
        rec.notes.push(
          fib.lbGoneAfterMs === null
            ? `${lb.name} stayed in the ECMP set for the whole hold`
            : `${lb.name} left the ECMP set ${fib.lbGoneAfterMs} ms after the drop began`,
        );
      },
      () =>
        void (wire
          ? runIn(ctx.plan.router.netns, 'nft', ['delete', 'table', 'netdev', 'soakbh'])
          : runIn(lb.netns, 'nft', ['delete', 'table', 'inet', 'soakbh'])),
    );
  },
};

function reload(ctx: SoakContext, e: PlannedEvent, rec: EventRecord): void {
  ctx.model = e.model;
  reloadAll(ctx, (lb) => soakConfigText(ctx.plan, lb, ctx.model));
  rec.injectedAt = Date.now();
  rec.repairedAt = rec.injectedAt;
}

/** Does a daemon's desired state hold exactly these VIPs, backends and weights? */
function sameDesired(st: DaemonState | null, want: Map<string, Map<string, number>>): boolean {
  if (!st?.desired) return false;
  if (st.desired.vips.length !== want.size) return false;
  for (const v of st.desired.vips) {
    const w = want.get(v.name);
    if (!w || w.size !== v.backends.length) return false;
    for (const b of v.backends) if (w.get(b.address) !== b.weight) return false;
  }
  return true;
}
