// Pure decisions of shared probing: which memberships share one probe, at what interval it runs, which
// results each membership takes, and how many probes may be in flight at once.
import type { HealthCheckConfig } from '../model/config';

/**
 * What makes two checks the same probe: the same packets to the same place with the same patience (type,
 * address, port, HTTP path, timeout). Interval, rise and fall are each membership's reading of the results.
 */
export function probeKey(address: string, c: HealthCheckConfig): string {
  return `${probeCheckKey(c)} ${address}`;
}

/** The part of probeKey a check gives (type, port, HTTP path, timeout): probes at one address differ by it. */
export function probeCheckKey(c: HealthCheckConfig): string {
  return [c.type, c.port, c.type === 'http' ? c.path : '', c.timeoutMs].join(' ');
}

/**
 * The check a probe runs for the memberships that share it (one probe key): the first one's, at the shortest
 * interval of all of them, so none is checked less often than it asked.
 */
export function probeCheck<T>(
  members: readonly T[],
  checkOf: (x: T) => HealthCheckConfig,
): HealthCheckConfig {
  let check = checkOf(members[0]!);
  for (const x of members) {
    const c = checkOf(x);
    if (c.intervalMs < check.intervalMs) check = { ...check, intervalMs: c.intervalMs };
  }
  return check;
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

/** File descriptors kept at least for everything but probes (admin API, BGP, maps, logs). */
export const FD_RESERVE = 1024;
/** Probes in flight at most, whatever the file limit: ~32k sockets is already ~100 MB of the process. */
export const MAX_IN_FLIGHT = 32_768;

/**
 * The default cap on probes in flight for an open-file limit (null or Infinity: unknown or unlimited): every
 * probe holds a socket, and running out of descriptors would fail checks as local errors (no verdict). The
 * limit less a reserve of FD_RESERVE or 1/16 of it, whichever is more, at least 64. Dead backends that time
 * out hold their slot for the whole timeout, so the cap bounds how fast they can be marked down (see
 * timeoutDownBoundMs): at a 20,000 limit, 18,750 slots take 51,200 targets with 1 s timeouts down in < 9.6 s;
 * three quarters of the limit less 1,024 (before: 13,976) could not do it in under 12.
 */
export function defaultMaxInFlight(fdSoftLimit: number | null): number {
  if (fdSoftLimit === null || !Number.isFinite(fdSoftLimit)) return MAX_IN_FLIGHT;
  const reserve = Math.max(FD_RESERVE, Math.ceil(fdSoftLimit / 16));
  return Math.max(64, Math.min(MAX_IN_FLIGHT, Math.floor(fdSoftLimit) - reserve));
}

/**
 * Slots slow probes may not take (1/64 of the cap, at most 64): kept for quick ones. Priority alone is not
 * enough: slots taken together (the first round) free together one timeout later, so between those waves a
 * healthy backend's probe would find none free and wait up to a timeout. 64 slots serve ~64,000 quick probes
 * a second (each holds its slot ~1 ms).
 */
export const quickReserve = (maxInFlight: number): number => Math.min(64, Math.floor(maxInFlight / 64));

export interface TimeoutDownInput {
  /** Distinct probes (targets) that all time out at once. */
  targets: number;
  intervalMs: number;
  timeoutMs: number;
  fall: number;
  jitter: number;
  maxInFlight: number;
}

/**
 * How soon every one of `targets` timing-out probes can have marked its backend down, from the monitor's
 * start (ms). checksMs: the checks themselves (first probe within one interval, fall - 1 jittered intervals
 * more, the last one's timeout). fdMs: a physical floor when slots bind: fall x targets probes each hold one of
 * the slots slow probes may use for timeoutMs. boundMs: what the monitor achieves when the event loop keeps up.
 * With slots binding, each slot runs probes back to back from its first start, spread over the fill time
 * (the first probes are due over an interval); W = fall x targets / slots waves: the last probe ends after
 * floor(W) + 1 timeouts plus frac(W) of the fill; each of the fall - 1 jittered reschedules can move a target
 * back in the queue by up to jitter x interval.
 */
export function timeoutDownBoundMs(o: TimeoutDownInput): { checksMs: number; fdMs: number; boundMs: number } {
  const checksMs = o.intervalMs + (o.fall - 1) * o.intervalMs * (1 + o.jitter) + o.timeoutMs;
  const slots = o.maxInFlight - quickReserve(o.maxInFlight);
  const waves = (o.fall * o.targets) / slots;
  const fdMs = waves * o.timeoutMs;
  if ((o.targets * o.timeoutMs) / o.intervalMs <= slots) return { checksMs, fdMs, boundMs: checksMs };
  const fillMs = Math.min(o.intervalMs, (slots * o.intervalMs) / o.targets);
  const lastEnd = (Math.floor(waves) + 1) * o.timeoutMs + (waves - Math.floor(waves)) * fillMs;
  return { checksMs, fdMs, boundMs: Math.max(checksMs, lastEnd + (o.fall - 1) * o.jitter * o.intervalMs) };
}

/** The delay to a probe's next start: interval x (1 ± jitter), from a uniform r in [0, 1). */
export const jittered = (intervalMs: number, jitter: number, r: number): number =>
  intervalMs * (1 + jitter * (2 * r - 1));
