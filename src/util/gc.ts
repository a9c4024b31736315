// Waiting for V8's next full (mark-compact) collection, as Node's performance timeline reports it; how far V8's heap
// grows between full collections during a daemon's start.
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';

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

/**
 * How far (percent) V8's heap may grow past what survived its last full collection before it collects again, while a
 * daemon starts (heapGrowth('start')). V8's own rule lets a big heap grow to several times that: at 512 VIPs x 1000
 * backends the start's heap went from ~100 MB after the config's parse to ~325 MB (~215 MB of it live) before its next
 * full collection, and RSS peaked at 400-463 MB; with 30, 364-394 MB. The cost is more full collections (marked on
 * V8's helper threads): CPU by ready 7.9-8.2 s against 7.4-8.3 s there.
 */
export const START_HEAP_GROWING_PERCENT = 30;

/** A daemon's start bounds its heap's growth (START_HEAP_GROWING_PERCENT) once its used heap is this big after the
 * config's parse (Daemon.boundHeapGrowth): ~100 MB at 512 VIPs x 1000 backends, ~25 MB at 512 x 100. */
export const START_BOUND_HEAP_BYTES = 64 * 2 ** 20;

/**
 * The bound of a big daemon once it is ready: while its start sets its health targets (heapGrowth('targets')), and
 * from then on ('bounded'). The targets were the start's peak, ~50 MB of memberships and probes a second made and
 * their garbage with them: at 512 x 1000 with checks, two pairs, RSS peak 399-402 MB with 10 against 414 MB with 30.
 * For good after them, every backend failing at once (512,000 health flips over ~80 s, `bench:control
 * --daemon-checking 200`), three interleaved pairs: RSS peak 499-509 MB with 10 against 526-537 MB with 30 (520 in a
 * run before them), the storm's CPU ~3% more (1.13 against 1.10 cores), RSS after the scrape that follows 451-456
 * against 471-474 MB. It costs CPU after ready, not the time to ready (a whole start at 10 made ready 0.7-1.7 s later:
 * the start keeps START_HEAP_GROWING_PERCENT).
 */
export const TARGETS_HEAP_GROWING_PERCENT = 10;

/**
 * A phase of a daemon for V8's heap growth: 'start' to ready, 'targets' while the health targets are set, then
 * 'bounded' for a big daemon (the targets' bound, TARGETS_HEAP_GROWING_PERCENT, for good) or 'run' (V8's own rule: a
 * small one, or a start that failed). Why a big daemon stays bounded: at 512 VIPs x 1000 backends with checks, every
 * backend failing at once (512,000 health flips over a minute) let the heap grow under V8's own rule to ~790 MB before
 * a full collection found ~320 MB of it live, and RSS peaked at 1,088 MB; bounded at 30, 583 MB (Node 24: 690 MB
 * against 631 MB; one run each); at 10, see TARGETS_HEAP_GROWING_PERCENT.
 */
export type HeapPhase = 'start' | 'targets' | 'bounded' | 'run';

/** V8's --heap-growing-percent for a phase: START_HEAP_GROWING_PERCENT ('start'), TARGETS_HEAP_GROWING_PERCENT
 * ('targets', 'bounded'), V8's own rule (0). */
export function heapGrowingFlag(phase: HeapPhase): string {
  const percent = {
    start: START_HEAP_GROWING_PERCENT,
    targets: TARGETS_HEAP_GROWING_PERCENT,
    bounded: TARGETS_HEAP_GROWING_PERCENT,
    run: 0,
  }[phase];
  return `--heap-growing-percent=${percent}`;
}

/**
 * Sets V8's heap growth for a phase of the process (heapGrowingFlag), at once: V8 reads the flag each time it sets its
 * next limit. Does nothing when node was given --heap-growing-percent itself (its arguments or NODE_OPTIONS): that
 * setting stays. Returns whether it set the flag.
 */
export function heapGrowth(
  phase: HeapPhase,
  node: { execArgv: readonly string[]; nodeOptions: string | undefined } = {
    execArgv: process.execArgv,
    nodeOptions: process.env.NODE_OPTIONS,
  },
): boolean {
  const given = /(^|\s)--heap[-_]growing[-_]percent\b/;
  if (node.execArgv.some((a) => given.test(a)) || given.test(node.nodeOptions ?? '')) return false;
  setFlagsFromString(heapGrowingFlag(phase));
  return true;
}
