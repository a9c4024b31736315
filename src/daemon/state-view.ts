// What the daemon shows of itself: /readyz's verdict and reasons, /state's desired view, and the record of
// its components' 'error' events.
import type { ReconcileFailure, ReconcileSummary } from '../reconcile';
import type { DesiredState } from '../reconcile/desired';
import type { Readiness } from './admin';

/** How long a component's 'error' event stays in /readyz's reasons (it stays in /state for good). */
export const COMPONENT_ERROR_RECENT_MS = 300_000;

/** The daemon's event-emitting components whose 'error' events it survives. */
export type DaemonComponent = 'config-source' | 'health-monitor' | 'bgp';

/** One component's 'error' events so far. */
export interface ComponentErrors {
  count: number;
  last: string;
  at: string;
  atMs: number;
}

/** Pins found gone or replaced under the running daemon (the last time), and what was done about it. */
export interface PinTrouble {
  count: number;
  at: string;
  atMs: number;
  missing: string[];
  foreign: string[];
  restored: boolean;
  error: string | null;
}

/** Every component's 'error' events: counted, the last one kept. */
export class ComponentErrorLog {
  private readonly byComponent = new Map<DaemonComponent, ComponentErrors>();

  record(component: DaemonComponent, e: unknown, at = new Date()): void {
    const prev = this.byComponent.get(component);
    this.byComponent.set(component, {
      count: (prev?.count ?? 0) + 1,
      last: (e as Error)?.message ?? String(e),
      at: at.toISOString(),
      atMs: at.getTime(),
    });
  }

  entries(): [DaemonComponent, ComponentErrors][] {
    return [...this.byComponent];
  }

  /** As /state shows it. */
  view(): Record<string, { count: number; last: string; at: string }> {
    return Object.fromEntries(
      [...this.byComponent].map(([c, e]) => [c, { count: e.count, last: e.last, at: e.at }]),
    );
  }
}

/** The datapath keeper as the views read it (datapath-keeper.ts). */
export interface KeeperView {
  pins: string;
  pinTrouble: PinTrouble | null;
  adopted: boolean;
  attached: boolean;
  /** Why the balancer is detached and was not re-attached. */
  attachError: string | null;
  reattachCount: number;
}

/** Before the pin directory is taken. */
export const NO_KEEPER: KeeperView = {
  pins: '',
  pinTrouble: null,
  adopted: false,
  attached: false,
  attachError: null,
  reattachCount: 0,
};

/** What the last sync applied and could not (programmer.ts). */
export interface ProgrammerView {
  desired: DesiredState | null;
  lastReconcile: (ReconcileSummary & { at: string }) | null;
  reconcileError: string | null;
  failedVips: ReadonlyMap<string, ReconcileFailure>;
  cleanupFailures: readonly ReconcileFailure[];
}

export interface ReadinessFacts {
  /** start() has finished. */
  started: boolean;
  ifname: string | undefined;
  keeper: KeeperView;
  programmer: ProgrammerView;
  /** null: no Kubernetes source. */
  kubernetesReady: boolean | null;
  reloadError: string | null;
  componentErrors: Iterable<[DaemonComponent, ComponentErrors]>;
  now: number;
  /** Why BFD does not work now (bfd-link.ts): degraded, not unready (BGP runs without it). */
  bfdProblem?: string | null;
  /** Why this node has no valid settings (nodes section; config-gate.ts): unready, the datapath left as it was. */
  nodeSettingsError?: string | null;
}

/** Ready or not, and why: reasons that make it unready first, then what is degraded; pure. */
export function readinessOf(f: ReadinessFacts): Readiness {
  const { keeper: k, programmer: p } = f;
  const reasons: string[] = [];
  if (f.nodeSettingsError)
    reasons.push(`node settings invalid (datapath left as it was): ${f.nodeSettingsError}`);
  if (!f.started) reasons.push('starting');
  if (!k.attached)
    reasons.push(`balancer not attached to ${f.ifname ?? '?'}${k.attachError ? `: ${k.attachError}` : ''}`);
  if (p.lastReconcile === null) reasons.push('datapath not reconciled yet');
  if (p.reconcileError) reasons.push(`last reconcile failed: ${p.reconcileError}`);
  // Failed VIPs are withdrawn one by one: the node stays ready while it serves any VIP at all.
  const failed = [...p.failedVips].map(
    ([name, x]) => `VIP ${name} not programmed, withdrawn (${x.op} ${x.target}: ${x.error}); retrying`,
  );
  const noneServed = p.failedVips.size > 0 && p.failedVips.size === p.desired?.vips.length;
  if (noneServed) reasons.push(...failed);
  if (f.kubernetesReady === false)
    reasons.push('kubernetes: not synced or API unreachable (serving last known state)');
  const degraded: string[] = noneServed ? [] : failed;
  for (const x of p.cleanupFailures)
    degraded.push(`datapath clean-up failed (${x.op} ${x.target}: ${x.error}); retrying`);
  if (f.reloadError) degraded.push(`config reload rejected, previous config in force: ${f.reloadError}`);
  if (f.bfdProblem) degraded.push(f.bfdProblem);
  const pt = k.pinTrouble;
  if (pt && !pt.restored)
    degraded.push(
      `pin directory ${k.pins}: ${pt.error}; a restart would not find this balancer (it would load a fresh one: connection table lost)`,
    );
  else if (pt && f.now - pt.atMs < COMPONENT_ERROR_RECENT_MS)
    degraded.push(
      `pin directory ${k.pins} went missing (${pt.missing.join(', ')}; ${pt.count} time(s), last at ${pt.at}) and was pinned again: find out who removes it`,
    );
  for (const [c, e] of f.componentErrors)
    if (f.now - e.atMs < COMPONENT_ERROR_RECENT_MS)
      degraded.push(`${c} error (${e.count} so far, last at ${e.at}), still running: ${e.last}`);
  return { ready: reasons.length === 0, reasons: [...reasons, ...degraded] };
}

/** /state: every fact in one document (the parts read elsewhere passed in as read). */
/** The top-level keys of /state, in order: `GET /state?sections=a,b` shows only those (the CLI asks for what it
 * reads: at 512 VIPs x 1,000 backends the whole document is ~200 MB of JSON). */
export const STATE_SECTIONS = [
  'startedAt',
  'interface',
  'pins',
  'pinTrouble',
  'adopted',
  'attached',
  'readiness',
  'datapathConfig',
  'lastReconcile',
  'reconcileError',
  'failedVips',
  'cleanupFailures',
  'attachError',
  'reattaches',
  'componentErrors',
  'announcements',
  'reloadError',
  'desired',
  'actual',
  'health',
  'bgp',
  'kubernetes',
  'vipRoutes',
  'bfd',
  'node',
  'overrides',
] as const;
export type StateSection = (typeof STATE_SECTIONS)[number];

/** The document with only `sections` (all when null), in STATE_SECTIONS order. */
export function pickSections<T extends Partial<Record<StateSection, unknown>>>(
  doc: T,
  sections: ReadonlySet<string> | null,
): Partial<T> {
  if (sections === null) return doc;
  const out: Partial<Record<StateSection, unknown>> = {};
  for (const k of STATE_SECTIONS) if (sections.has(k) && k in doc) out[k] = doc[k];
  return out as Partial<T>;
}

export function stateDocument(f: {
  startedAt: string;
  ifname: string | undefined;
  keeper: KeeperView;
  programmer: ProgrammerView;
  readiness: Readiness;
  datapathConfig: unknown;
  componentErrors: ComponentErrorLog;
  announcements: unknown;
  reloadError: string | null;
  actual: unknown;
  health: unknown;
  bgp: unknown;
  kubernetes: unknown;
  vipRoutes: unknown;
  /** The BFD link (null: no peer has bfd). */
  bfd?: unknown;
  /** This node's name, labels and matching nodes[] entries (config-gate.ts nodeView). */
  node?: unknown;
  /** The sections shown (null: all): `desired`, the one this function builds per membership, only if asked for. */
  sections?: ReadonlySet<StateSection> | null;
}) {
  const { keeper: k, programmer: p } = f;
  const wantDesired = f.sections == null || f.sections.has('desired');
  return {
    startedAt: f.startedAt,
    interface: f.ifname,
    pins: k.pins,
    pinTrouble: k.pinTrouble,
    adopted: k.adopted,
    attached: k.attached,
    readiness: f.readiness,
    datapathConfig: f.datapathConfig,
    lastReconcile: p.lastReconcile,
    reconcileError: p.reconcileError,
    failedVips: [...p.failedVips].map(([name, x]) => ({ name, ...x })),
    cleanupFailures: p.cleanupFailures,
    attachError: k.attachError,
    reattaches: k.reattachCount,
    componentErrors: f.componentErrors.view(),
    announcements: f.announcements,
    reloadError: f.reloadError,
    desired: wantDesired ? desiredView(p.desired) : null,
    actual: f.actual,
    health: f.health,
    bgp: f.bgp,
    kubernetes: f.kubernetes,
    vipRoutes: f.vipRoutes,
    bfd: f.bfd ?? null,
    node: f.node ?? null,
  };
}

/** The desired state as /state shows it. */
function desiredView(desired: DesiredState | null) {
  return (
    desired && {
      vips: desired.vips.map((v) => ({
        name: v.name,
        id: v.spec.id,
        address: v.spec.key.address,
        port: v.spec.key.port,
        protocol: v.spec.key.protocol,
        tableSize: v.spec.tableSize,
        flags: v.spec.flags,
        usableBackends: v.usableBackends,
        failOpen: v.failOpen,
        backends: v.backends.map((b) => ({
          id: b.id,
          address: b.address,
          weight: b.weight,
          drain: b.drain,
          health: b.health,
          state: b.state,
        })),
      })),
      unavailableVips: desired.unavailableVips,
      failOpenVips: desired.failOpenVips,
    }
  );
}
