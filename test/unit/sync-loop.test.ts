// SyncLoop: one sync at a time, requests coalesced, a request resolved by a sync that started after it, and paced
// requests (health flips) spaced out after a sync by as long as it ran (at most paceMaxMs).
import { PACE_MAX_MS, SyncLoop } from '../../src/daemon/sync-loop';

/** A loop whose syncs each take `ms` of a fake clock (advanced by the sync itself) and are recorded. */
function harness(o: { ms: number; paceMaxMs?: number }) {
  const clock = { t: 1000 };
  const runs: { reason: string; at: number }[] = [];
  const gate: { release: (() => void) | null } = { release: null };
  const loop = new SyncLoop({
    sync: (reason) => {
      runs.push({ reason, at: clock.t });
      return new Promise<void>((resolve) => {
        gate.release = () => {
          clock.t += o.ms;
          gate.release = null;
          resolve();
        };
      });
    },
    now: () => clock.t,
    ...(o.paceMaxMs === undefined ? {} : { paceMaxMs: o.paceMaxMs }),
  });
  /** Ends the running sync and lets its promise chain settle. */
  const finish = async (): Promise<void> => {
    expect(gate.release).not.toBeNull();
    gate.release!();
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { loop, runs, clock, gate, finish };
}

describe('SyncLoop', () => {
  beforeEach(() => jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask'] }));
  afterEach(() => jest.useRealTimers());

  it('runs one sync at a time and coalesces requests made meanwhile into one more', async () => {
    const h = harness({ ms: 10 });
    const done: string[] = [];
    void h.loop.request('a').then(() => done.push('a'));
    void h.loop.request('b').then(() => done.push('b'));
    void h.loop.request('c').then(() => done.push('c'));
    expect(h.runs.map((r) => r.reason)).toEqual(['a']);
    await h.finish();
    // 'a' is done; 'b' and 'c' wait for a sync that started after them: the one queued, run at once (unpaced)
    expect(done).toEqual(['a']);
    expect(h.runs.map((r) => r.reason)).toEqual(['a', 'queued']);
    await h.finish();
    expect(done).toEqual(['a', 'b', 'c']);
    expect(h.runs).toHaveLength(2);
  });

  it('starts a paced sync no sooner after the last one ended than it ran', async () => {
    const h = harness({ ms: 120 });
    void h.loop.request('reload');
    await h.finish(); // ran 120 ms, ended at 1120
    h.clock.t += 20;
    let resolved = false;
    void h.loop.request('health', { paced: true }).then(() => (resolved = true));
    expect(h.runs).toHaveLength(1);
    expect(h.loop.paceDelay).toBe(100);
    h.clock.t += 99;
    jest.advanceTimersByTime(99);
    expect(h.runs).toHaveLength(1);
    h.clock.t += 1;
    jest.advanceTimersByTime(1);
    expect(h.runs.map((r) => r.reason)).toEqual(['reload', 'health']);
    expect(h.runs[1]!.at - 1120).toBe(120);
    await h.finish();
    expect(resolved).toBe(true);
  });

  it('waits at most paceMaxMs however long the last sync ran', async () => {
    const h = harness({ ms: 5000 });
    void h.loop.request('reload');
    await h.finish();
    void h.loop.request('health', { paced: true });
    expect(h.loop.paceDelay).toBe(PACE_MAX_MS);
    h.clock.t += PACE_MAX_MS;
    jest.advanceTimersByTime(PACE_MAX_MS);
    expect(h.runs.map((r) => r.reason)).toEqual(['reload', 'health']);
  });

  it('runs a paced request at once after a quiet spell, and always with paceMaxMs 0', async () => {
    const h = harness({ ms: 100 });
    void h.loop.request('health', { paced: true }); // no sync ran yet
    expect(h.runs).toHaveLength(1);
    await h.finish();
    h.clock.t += 100;
    void h.loop.request('health', { paced: true });
    expect(h.runs).toHaveLength(2);
    await h.finish();
    const z = harness({ ms: 100, paceMaxMs: 0 });
    void z.loop.request('reload');
    await z.finish();
    void z.loop.request('health', { paced: true });
    expect(z.runs).toHaveLength(2);
  });

  it('paces the sync queued behind a running one when every request for it was paced', async () => {
    const h = harness({ ms: 80 });
    void h.loop.request('reload');
    void h.loop.request('health', { paced: true });
    void h.loop.request('health', { paced: true });
    await h.finish(); // ended at 1080
    expect(h.runs).toHaveLength(1);
    h.clock.t += 80;
    jest.advanceTimersByTime(80);
    expect(h.runs.map((r) => [r.reason, r.at])).toEqual([
      ['reload', 1000],
      ['queued', 1160],
    ]);
  });

  it('runs the queued sync at once when one request for it was not paced', async () => {
    const h = harness({ ms: 80 });
    void h.loop.request('reload');
    void h.loop.request('health', { paced: true });
    void h.loop.request('override');
    await h.finish();
    expect(h.runs.map((r) => [r.reason, r.at])).toEqual([
      ['reload', 1000],
      ['queued', 1080],
    ]);
  });

  it('an unpaced request cuts a paced wait short, and the paced requests are served by its sync', async () => {
    const h = harness({ ms: 200 });
    void h.loop.request('reload');
    await h.finish();
    let paced = false;
    void h.loop.request('health', { paced: true }).then(() => (paced = true));
    expect(h.runs).toHaveLength(1);
    void h.loop.request('override');
    expect(h.runs.map((r) => r.reason)).toEqual(['reload', 'override']);
    await h.finish();
    expect(paced).toBe(true);
    // the paced wait's timer is gone: no third sync
    jest.advanceTimersByTime(1000);
    expect(h.runs).toHaveLength(2);
  });

  it('wantAnother() asks for the next sync at once', async () => {
    const h = harness({ ms: 300 });
    void h.loop.request('reload');
    h.loop.wantAnother();
    await h.finish();
    expect(h.runs.map((r) => [r.reason, r.at])).toEqual([
      ['reload', 1000],
      ['queued', 1300],
    ]);
  });

  it('stop() resolves requests waiting for a paced sync, which never runs', async () => {
    const h = harness({ ms: 200 });
    void h.loop.request('reload');
    await h.finish();
    let resolved = false;
    void h.loop.request('health', { paced: true }).then(() => (resolved = true));
    h.loop.stop();
    await Promise.resolve();
    expect(resolved).toBe(true);
    jest.advanceTimersByTime(1000);
    expect(h.runs).toHaveLength(1);
    await expect(h.loop.request('later')).resolves.toBeUndefined();
    expect(h.runs).toHaveLength(1);
  });

  it('syncAt() passes the pacing on to its request', async () => {
    const h = harness({ ms: 200 });
    void h.loop.request('reload');
    await h.finish(); // ran 200 ms (the pace reads the harness's clock; syncAt's time is Date.now()'s)
    h.loop.syncAt(Date.now() + 50, 'grace', { paced: true });
    h.clock.t += 50;
    jest.advanceTimersByTime(50); // due, but 150 ms of the pace wait remain
    expect(h.runs).toHaveLength(1);
    h.clock.t += 150;
    jest.advanceTimersByTime(150);
    expect(h.runs.map((r) => r.reason)).toEqual(['reload', 'grace']);
  });
});
