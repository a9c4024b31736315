// Pure health state machine: consecutive results against rise/fall thresholds.
export type HealthStatus = 'up' | 'down';

/**
 * A map of statuses that can tell which of its keys changed (status, or came or went) since a version of it:
 * HealthMonitor.statuses(). desiredState then diffs health by what changed, not by a pass over every key.
 */
export interface HealthChangeLog {
  /** Versions compare only within one source (an object identity). */
  readonly changeSource: object;
  /** The version this map shows. */
  changeVersion(): number;
  /** The keys that changed from `version` to changeVersion() (repeats possible): status, or came or went with a
   * status other than NEW_TARGET_STATUS (absent counts as that); null: not known that far back. */
  changesSince(version: number): readonly string[] | null;
}

export interface HealthState {
  status: HealthStatus;
  /** Consecutive successes since the last failure. */
  successes: number;
  /** Consecutive failures since the last success. */
  failures: number;
}

export interface Thresholds {
  /** Consecutive successes that bring a down backend up. */
  rise: number;
  /** Consecutive failures that take an up backend down. */
  fall: number;
}

/**
 * The status of a check target before its first result: up, so a (re)started daemon does not blackhole a VIP.
 * The desired state shows it for a backend of a checked VIP that has no status yet (its target is set after the
 * desired state is built), so a new target's status is what that state already holds: no sync more to show it.
 */
export const NEW_TARGET_STATUS: HealthStatus = 'up';

export const initialHealth = (status: HealthStatus = NEW_TARGET_STATUS): HealthState => ({
  status,
  successes: 0,
  failures: 0,
});

/**
 * The status after a result, from the streaks counted with it (successes and failures in a row): what
 * nextHealth decides, over plain numbers (the monitor keeps streaks in typed arrays, not objects).
 */
export function statusAfter(
  status: HealthStatus,
  successes: number,
  failures: number,
  t: Thresholds,
): HealthStatus {
  if (status === 'down' && successes >= t.rise) return 'up';
  if (status === 'up' && failures >= t.fall) return 'down';
  return status;
}

/** The state after one check result; `changed` when the status flipped. */
export function nextHealth(
  s: HealthState,
  ok: boolean,
  t: Thresholds,
): { state: HealthState; changed: boolean } {
  const successes = ok ? s.successes + 1 : 0;
  const failures = ok ? 0 : s.failures + 1;
  const status = statusAfter(s.status, successes, failures, t);
  return { state: { status, successes, failures }, changed: status !== s.status };
}
