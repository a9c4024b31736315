// Waiting for V8's next full (mark-compact) collection, as Node's performance timeline reports it.
import { constants, PerformanceObserver } from 'node:perf_hooks';

/** While waiting, the event loop turns at least this often (ms): Node delivers a `gc` entry from an immediate that
 * does not wake a loop asleep in its poll (seen: an idle process got it only when its 20 s timeout fired). */
const TURN_MS = 10;

/**
 * Resolves true once a full collection of this isolate's heap has ended (a `gc` performance entry of kind major), or
 * false when none did within `timeoutMs`. The entry is delivered a turn or so after the collection itself.
 */
export function fullCollection(timeoutMs: number): Promise<boolean> {
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0)
    return Promise.reject(new RangeError(`timeoutMs: ${timeoutMs} is not a non-negative number`));
  return new Promise((resolve) => {
    const done = (seen: boolean): void => {
      clearTimeout(timer);
      clearInterval(turns);
      observer.disconnect();
      resolve(seen);
    };
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        if ((e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)
          return done(true);
    });
    observer.observe({ entryTypes: ['gc'] });
    const timer = setTimeout(() => done(false), timeoutMs);
    const turns = setInterval(() => undefined, TURN_MS);
  });
}
