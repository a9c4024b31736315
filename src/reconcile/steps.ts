// Step generators: long pure computations written as generators that yield where a caller may pause, run to
// the end in one go (sync API) or in time slices with event-loop turns between them (async API).
import { setImmediate as nextTurn } from 'node:timers/promises';

/** Runs a step generator to its end in one go. */
export function runAll<T>(g: Generator<void, T, void>): T {
  for (;;) {
    const r = g.next();
    if (r.done) return r.value;
  }
}

/** Runs a step generator, giving the event loop a turn whenever `sliceMs` of steps ran since the last one. */
export async function runSliced<T>(g: Generator<void, T, void>, sliceMs: number): Promise<T> {
  let last = performance.now();
  for (;;) {
    const r = g.next();
    if (r.done) return r.value;
    if (performance.now() - last >= sliceMs) {
      await nextTurn();
      last = performance.now();
    }
  }
}
