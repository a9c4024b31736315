// A health Prober whose probes finish when the test says (by address); aborted ones finish at once, with no
// verdict. For HealthMonitor tests on fake timers.
import type { CheckResult, Prober } from '../../src/health';

export function manualProber() {
  const pending = new Map<string, ((r: CheckResult) => void)[]>();
  let started = 0;
  const starts: string[] = [];
  const prober: Prober = (t, done) => {
    started++;
    starts.push(t.address);
    const list = pending.get(t.address) ?? [];
    list.push(done);
    pending.set(t.address, list);
    return () => {
      const i = list.indexOf(done);
      if (i >= 0) list.splice(i, 1);
      done({ ok: false, durationMs: 0, detail: 'aborted', local: true });
    };
  };
  /** Finishes every probe running to `address` (refused or connected, or with `r`); how many. */
  const finish = (address: string, ok: boolean, r?: CheckResult): number => {
    const list = pending.get(address) ?? [];
    pending.delete(address);
    for (const done of list) done(r ?? { ok, durationMs: 1, detail: ok ? 'connected' : 'ECONNREFUSED' });
    return list.length;
  };
  return { prober, finish, started: () => started, starts };
}
