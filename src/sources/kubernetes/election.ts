// Pure leader-election step over a coordination.k8s.io/v1 Lease (client-go semantics: expiry by local observation).

export interface LeaseSpec {
  holderIdentity: string | null;
  leaseDurationSeconds: number;
  acquireTime: string | null;
  renewTime: string | null;
  leaseTransitions: number;
}

/** What this candidate last saw of the Lease and when (its own clock), so no cross-node clock comparison. */
export interface Observation {
  holderIdentity: string | null;
  renewTime: string | null;
  observedAtMs: number;
}

export type LeaseDecision =
  /** No Lease yet: create it holding it. */
  | { action: 'create'; spec: LeaseSpec }
  /** Write the Lease (renew ours, or take an empty/expired one) with the read resourceVersion. */
  | { action: 'update'; spec: LeaseSpec; acquired: boolean }
  /** Someone else holds a live Lease. */
  | { action: 'follow'; holder: string; expiresInMs: number };

/** Kubernetes MicroTime text (RFC 3339 with microseconds). */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/**
 * One election step. `current`: the Lease spec as read (null if it does not exist). Returns the decision and
 * the observation to keep for the next step.
 */
export function decideLease(opts: {
  identity: string;
  nowMs: number;
  leaseDurationSeconds: number;
  current: LeaseSpec | null;
  previous: Observation | null;
}): { decision: LeaseDecision; observation: Observation | null } {
  const { identity, nowMs, current } = opts;
  const now = microTime(nowMs);
  if (current === null)
    return {
      decision: {
        action: 'create',
        spec: {
          holderIdentity: identity,
          leaseDurationSeconds: opts.leaseDurationSeconds,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: 0,
        },
      },
      observation: null,
    };
  const prev = opts.previous;
  const changed =
    prev === null || prev.holderIdentity !== current.holderIdentity || prev.renewTime !== current.renewTime;
  const observation: Observation = changed
    ? { holderIdentity: current.holderIdentity, renewTime: current.renewTime, observedAtMs: nowMs }
    : prev;
  const holder = current.holderIdentity ?? '';
  if (holder === identity)
    return {
      decision: {
        action: 'update',
        acquired: false,
        spec: { ...current, leaseDurationSeconds: opts.leaseDurationSeconds, renewTime: now },
      },
      observation,
    };
  // The holder's own duration decides when its Lease lapses (as client-go does).
  const durationMs =
    (current.leaseDurationSeconds > 0 ? current.leaseDurationSeconds : opts.leaseDurationSeconds) * 1000;
  const expiresInMs = observation.observedAtMs + durationMs - nowMs;
  if (holder !== '' && expiresInMs > 0)
    return { decision: { action: 'follow', holder, expiresInMs }, observation };
  return {
    decision: {
      action: 'update',
      acquired: true,
      spec: {
        holderIdentity: identity,
        leaseDurationSeconds: opts.leaseDurationSeconds,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: current.leaseTransitions + 1,
      },
    },
    observation,
  };
}

/** The spec written on a graceful release: no holder, so the next candidate takes it at once. */
export function releasedSpec(current: LeaseSpec, nowMs: number): LeaseSpec {
  return { ...current, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(nowMs) };
}
