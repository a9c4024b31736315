// Pure decisions of shared probing: which memberships share one probe, at what interval it runs, which
// results each membership takes, and how many probes may be in flight at once.
import type { HealthCheckConfig } from '../model/config';

/**
 * What makes two checks the same probe: the same packets to the same place with the same patience (type,
 * address, port, HTTP path, timeout). Interval, rise and fall are each membership's reading of the results.
 */
export function probeKey(address: string, c: HealthCheckConfig): string {
  return `${c.type} ${address} ${c.port} ${c.type === 'http' ? c.path : ''} ${c.timeoutMs}`;
}

/** A probe and the memberships it serves. */
export interface ProbeGroup<T> {
  key: string;
  /** The check as probed: the first membership's, at the shortest interval of all of them. */
  check: HealthCheckConfig;
  members: T[];
}

/**
 * Groups memberships by their probe key (in input order, the first membership of each group standing for
 * it); a probe runs at the shortest interval of its memberships, so none is checked less often than it
 * asked. keyOf is probeKey of the membership's address and check (a caller may pass one it cached).
 */
export function groupProbes<T>(
  items: readonly T[],
  keyOf: (x: T) => string,
  checkOf: (x: T) => HealthCheckConfig,
): Map<string, ProbeGroup<T>> {
  const out = new Map<string, ProbeGroup<T>>();
  for (const x of items) {
    const key = keyOf(x);
    const c = checkOf(x);
    const g = out.get(key);
    if (g === undefined) out.set(key, { key, check: c, members: [x] });
    else {
      g.members.push(x);
      if (c.intervalMs < g.check.intervalMs) g.check = { ...g.check, intervalMs: c.intervalMs };
    }
  }
  return out;
}

/**
 * Whether a membership takes the result of a probe started at `startedAt`, having last taken the one started
 * at `fedAt` (-Infinity: none yet): only once its own interval (less the jitter) has passed, so a membership
 * with a 10 s interval sharing a 2 s probe counts about every fifth result and keeps its rise/fall x interval
 * meaning. Measured between probe starts, not completions: a timeout before a fast failure shifts nothing.
 */
export function takesResult(fedAt: number, startedAt: number, intervalMs: number, jitter: number): boolean {
  // 1 ms of slack: a probe at exactly (1 - jitter) x interval counts, whatever the float rounding.
  return startedAt - fedAt >= intervalMs * (1 - jitter) - 1;
}

/** File descriptors kept for everything but probes (admin API, BGP, maps, logs) when the limit is low. */
export const FD_RESERVE = 1024;
/** Probes in flight at most, whatever the file limit: ~32k sockets is already ~100 MB of the process. */
export const MAX_IN_FLIGHT = 32_768;

/**
 * The default cap on probes in flight for an open-file limit (null or Infinity: unknown or unlimited): every
 * probe holds a socket, and running out of descriptors would fail checks as local errors (no verdict). Three
 * quarters of the limit, less a reserve, at least 64. A dead backend that times out holds its slot for the
 * whole timeout: N such targets need N x timeout / interval slots to be probed on time.
 */
export function defaultMaxInFlight(fdSoftLimit: number | null): number {
  if (fdSoftLimit === null || !Number.isFinite(fdSoftLimit)) return MAX_IN_FLIGHT;
  return Math.max(64, Math.min(MAX_IN_FLIGHT, Math.floor(fdSoftLimit * 0.75) - FD_RESERVE));
}

/** The delay to a probe's next start: interval x (1 ± jitter), from a uniform r in [0, 1). */
export const jittered = (intervalMs: number, jitter: number, r: number): number =>
  intervalMs * (1 + jitter * (2 * r - 1));
