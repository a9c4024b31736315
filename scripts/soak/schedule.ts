// The seeded fault schedule (pure): which event when, on what, and the config each reload leads to.
import { createRng, Rng } from './rng';
import type { Range, SoakProfile } from './profile';

/** Every kind of event; the schedule covers each at least once before repeating any. */
export const EVENT_KINDS = [
  'backend-kill',
  'daemon-kill',
  'reload-add-backend',
  'reload-remove-backend',
  'reload-reweight',
  'reload-add-vip',
  'reload-remove-vip',
  'reload-invalid',
  'router-restart',
  'health-flap',
  'xdp-detach',
  'lb-blackhole',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/** What a kind does, one line each (schedule print-out and report). */
export const KIND_INFO: Record<EventKind, string> = {
  'backend-kill': "kill -9 a backend's nginx, restart it after the hold",
  'daemon-kill': 'kill -9 an LB daemon, restart it after the hold (BIRD keeps its routes: graceful restart)',
  'reload-add-backend': 'SIGHUP reload: a backend joins the web VIPs',
  'reload-remove-backend': 'SIGHUP reload: a backend leaves the web VIPs',
  'reload-reweight': "SIGHUP reload: a backend's weight changes",
  'reload-add-vip': 'SIGHUP reload: VIPs svc4/svc6 are added',
  'reload-remove-vip': 'SIGHUP reload: VIPs svc4/svc6 are removed',
  'reload-invalid': 'SIGHUP reload of an invalid config: must be rejected, the previous one stays in force',
  'router-restart': "restart the router's BIRD (graceful: -R, FIB kept; hard: SIGTERM, routes withdrawn)",
  'health-flap': "nftables drops a backend's health checks for the hold while nginx keeps serving",
  'xdp-detach': 'ip link set dev eth0 xdp off in an LB node; the daemon (else the CLI) re-attaches',
  'lb-blackhole':
    "an LB node silently drops for the hold, link up (wire: router-side netdev drop of all its packets; host: nftables in the LB's namespace, which XDP bypasses, so only its own traffic: BGP, health checks)",
};

export const INVALID_VARIANTS = [
  'yaml-syntax',
  'bad-weight',
  'unknown-key',
  'bad-address',
  'restart-field',
] as const;
export type InvalidVariant = (typeof INVALID_VARIANTS)[number];

/** The web VIPs' backends (name, weight) and whether the extra VIPs are configured. */
export interface ConfigModel {
  backends: { name: string; weight: number }[];
  extraVip: boolean;
}

export interface PlannedEvent {
  index: number;
  /** Planned start, seconds after the traffic started. */
  atS: number;
  kind: EventKind;
  /** Backend or LB node name, or null. */
  target: string | null;
  /** router-restart graceful|hard, lb-blackhole wire|host, reload-invalid: which invalid config. */
  variant: string | null;
  /** How long the fault lasts before it is repaired (s); null: an instant (reloads). */
  holdS: number | null;
  /** The config in force after this event (reloads change it; an invalid one does not). */
  model: ConfigModel;
  /** reload-reweight: the new weight. */
  weight?: number;
}

export interface Schedule {
  seed: number;
  events: PlannedEvent[];
  initial: ConfigModel;
  /** Kinds the duration left no room for. */
  missingKinds: EventKind[];
}

/** Minimum time an event needs after its hold before the next one (BGP re-establishment, health rise). */
const SETTLE_S: Record<EventKind, number> = {
  'backend-kill': 3,
  'daemon-kill': 5,
  'reload-add-backend': 4,
  'reload-remove-backend': 4,
  'reload-reweight': 4,
  'reload-add-vip': 5,
  'reload-remove-vip': 4,
  'reload-invalid': 5,
  'router-restart': 7,
  'health-flap': 3,
  'xdp-detach': 5,
  'lb-blackhole': 7,
};

const configured = (m: ConfigModel): string[] => m.backends.map((b) => b.name);

function allowed(kind: EventKind, m: ConfigModel, backendNames: readonly string[]): boolean {
  switch (kind) {
    case 'reload-add-backend':
      return m.backends.length < backendNames.length;
    case 'reload-remove-backend':
      // Two stay, so a killed or flapped backend always leaves one serving.
      return m.backends.length >= 3;
    case 'reload-add-vip':
      return !m.extraVip;
    case 'reload-remove-vip':
      return m.extraVip;
    default:
      return true;
  }
}

function holdFor(kind: EventKind, p: SoakProfile): Range | null {
  const h = p.holdS;
  const map: Partial<Record<EventKind, Range>> = {
    'backend-kill': h.backendKill,
    'daemon-kill': h.daemonKill,
    'health-flap': h.healthFlap,
    'xdp-detach': h.xdpDetach,
    'lb-blackhole': h.lbBlackhole,
    'router-restart': h.routerRestart,
  };
  return map[kind] ?? null;
}

/** Draws target, variant and the resulting config of one event. */
function draw(
  rng: Rng,
  kind: EventKind,
  m: ConfigModel,
  o: { lbNames: readonly string[]; backendNames: readonly string[] },
): Pick<PlannedEvent, 'target' | 'variant' | 'model' | 'weight'> {
  const copy = (x: ConfigModel): ConfigModel => ({
    backends: x.backends.map((b) => ({ ...b })),
    extraVip: x.extraVip,
  });
  const next = copy(m);
  switch (kind) {
    case 'backend-kill':
    case 'health-flap':
      return { target: rng.pick(configured(m)), variant: null, model: next };
    case 'daemon-kill':
    case 'xdp-detach':
      return { target: rng.pick(o.lbNames), variant: null, model: next };
    case 'lb-blackhole':
      return { target: rng.pick(o.lbNames), variant: rng.pick(['wire', 'host']), model: next };
    case 'router-restart':
      return { target: 'router', variant: rng.pick(['graceful', 'hard']), model: next };
    case 'reload-add-backend': {
      const name = rng.pick(o.backendNames.filter((b) => !configured(m).includes(b)));
      next.backends.push({ name, weight: 1 });
      next.backends.sort((a, b) => a.name.localeCompare(b.name));
      return { target: name, variant: null, model: next };
    }
    case 'reload-remove-backend': {
      const name = rng.pick(configured(m));
      next.backends = next.backends.filter((b) => b.name !== name);
      return { target: name, variant: null, model: next };
    }
    case 'reload-reweight': {
      const b = rng.pick(next.backends);
      const weight = rng.pick([1, 2, 3].filter((w) => w !== b.weight));
      b.weight = weight;
      return { target: b.name, variant: null, model: next, weight };
    }
    case 'reload-add-vip':
      next.extraVip = true;
      return { target: 'svc4+svc6', variant: null, model: next };
    case 'reload-remove-vip':
      next.extraVip = false;
      return { target: 'svc4+svc6', variant: null, model: next };
    case 'reload-invalid':
      return { target: null, variant: rng.pick(INVALID_VARIANTS), model: next };
  }
}

/**
 * The schedule for a seed: first every kind once in a seeded order (a kind whose precondition does not hold
 * yet, e.g. removing a VIP that is not there, waits for a later slot), then kinds drawn at random among those
 * allowed. Events follow each other by the profile's spacing, or longer when hold + settle need it.
 */
export function buildSchedule(o: {
  seed: number;
  profile: SoakProfile;
  lbNames: readonly string[];
  backendNames: readonly string[];
}): Schedule {
  const p = o.profile;
  const rng = createRng(o.seed);
  const initial: ConfigModel = {
    backends: o.backendNames.slice(0, p.initialBackends).map((name) => ({ name, weight: 1 })),
    extraVip: false,
  };
  let model = initial;
  const queue: EventKind[] = rng.shuffle(EVENT_KINDS);
  const events: PlannedEvent[] = [];
  const seen = new Set<EventKind>();
  let t = p.warmupS;
  for (;;) {
    let kind: EventKind;
    const fromQueue = queue.findIndex((k) => allowed(k, model, o.backendNames));
    if (fromQueue >= 0) kind = queue.splice(fromQueue, 1)[0]!;
    else kind = rng.pick(EVENT_KINDS.filter((k) => allowed(k, model, o.backendNames)));
    const range = holdFor(kind, p);
    const holdS = range ? rng.uniform(range[0], range[1]) : null;
    const spacing = rng.uniform(p.spacingS[0], p.spacingS[1]);
    const slot = Math.max(spacing, (holdS ?? 0) + SETTLE_S[kind]);
    if (t + slot > p.durationS - p.tailS) break;
    const d = draw(rng, kind, model, o);
    events.push({ index: events.length + 1, atS: Math.round(t * 10) / 10, kind, holdS, ...d });
    seen.add(kind);
    model = d.model;
    t += slot;
  }
  return { seed: o.seed, events, initial, missingKinds: EVENT_KINDS.filter((k) => !seen.has(k)) };
}

const fmtModel = (m: ConfigModel): string =>
  `web: ${m.backends.map((b) => (b.weight === 1 ? b.name : `${b.name}x${b.weight}`)).join(',')}${m.extraVip ? ' +svc' : ''}`;

/** The schedule as printed at the start of a run and in the report. */
export function formatSchedule(s: Schedule): string {
  const rows = [
    `seed ${s.seed}: ${s.events.length} events; initial config ${fmtModel(s.initial)}`,
    '   #    at  kind                    target      variant        hold  config after',
  ];
  for (const e of s.events)
    rows.push(
      `  ${String(e.index).padStart(2)} ${e.atS.toFixed(1).padStart(6)}s ${e.kind.padEnd(23)} ${(e.target ?? '-').padEnd(11)} ${(e.variant ?? (e.weight !== undefined ? `weight ${e.weight}` : '-')).padEnd(14)} ${e.holdS === null ? '    -' : `${e.holdS.toFixed(1).padStart(4)}s`}  ${fmtModel(e.model)}`,
    );
  if (s.missingKinds.length) rows.push(`  (no room for: ${s.missingKinds.join(', ')})`);
  return rows.join('\n');
}

export { fmtModel as formatModel };
