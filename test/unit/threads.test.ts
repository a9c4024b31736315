// lowerHelperThreads: which threads it lowers, what it leaves, and a failure that stops nothing; lowerThread.
import { getPriority } from 'node:os';
import {
  currentThreadId,
  defaultHelperNice,
  lowerHelperThreads,
  lowerThread,
  NICE_MAX,
  PROC_THREADS,
  type ThreadHost,
} from '../../src/util/threads';

function host(threads: { tid: number; name: string }[], refuse: number[] = [], nice = 0) {
  const set: [number, number][] = [];
  const h: ThreadHost = {
    pid: 100,
    threads: () => threads,
    getNice: () => nice,
    setNice: (tid, nice) => {
      if (refuse.includes(tid)) throw new Error(`ESRCH: no such thread ${tid}`);
      set.push([tid, nice]);
    },
  };
  return { h, set };
}

describe('lowerHelperThreads', () => {
  it("lowers every thread but the main one (Node 20: every thread is named 'node')", () => {
    const { h, set } = host([100, 101, 102, 103, 104, 105, 106].map((tid) => ({ tid, name: 'node' })));
    expect(lowerHelperThreads(10, h)).toEqual({
      by: 10,
      lowered: [101, 102, 103, 104, 105, 106],
      failed: [],
    });
    expect(set).toEqual([101, 102, 103, 104, 105, 106].map((t) => [t, 10]));
  });

  it("skips the daemon's own threads where Node names them (22 and later)", () => {
    const { h, set } = host([
      { tid: 100, name: 'MainThread' },
      { tid: 101, name: 'DelayedTaskSche' },
      { tid: 102, name: 'V8Worker' },
      { tid: 103, name: 'V8Worker' },
      { tid: 104, name: 'SignalInspector' },
      { tid: 105, name: 'libuv-worker' },
      { tid: 106, name: 'WorkerThread' },
    ]);
    expect(lowerHelperThreads(7, h).lowered).toEqual([101, 102, 103, 104]);
    expect(set.map(([, n]) => n)).toEqual([7, 7, 7, 7]);
  });

  it('adds to the nice value each thread has, up to 19', () => {
    const { h, set } = host(
      [100, 101].map((tid) => ({ tid, name: 'node' })),
      [],
      5,
    );
    expect(lowerHelperThreads(10, h).lowered).toEqual([101]);
    expect(set).toEqual([[101, 15]]);
    const capped = host(
      [100, 101].map((tid) => ({ tid, name: 'node' })),
      [],
      15,
    );
    lowerHelperThreads(10, capped.h);
    expect(capped.set).toEqual([[101, NICE_MAX]]);
    expect(lowerThread(101, 3, host([], [], 2).h)).toBe(5);
  });

  it('defaults to 10 on Node 20 and older, 0 on later ones', () => {
    expect(defaultHelperNice('20.20.2')).toBe(10);
    expect(defaultHelperNice('18.19.0')).toBe(10);
    expect(defaultHelperNice('22.1.0')).toBe(0);
    expect(defaultHelperNice('24.22.3')).toBe(0);
    expect(defaultHelperNice()).toBe(defaultHelperNice(process.versions.node));
  });

  it('0 changes nothing', () => {
    const { h, set } = host([100, 101].map((tid) => ({ tid, name: 'node' })));
    expect(lowerHelperThreads(0, h)).toEqual({ by: 0, lowered: [], failed: [] });
    expect(set).toEqual([]);
  });

  it('a thread that cannot be lowered is reported; the others still are', () => {
    const { h, set } = host(
      [100, 101, 102, 103].map((tid) => ({ tid, name: 'node' })),
      [102],
    );
    const r = lowerHelperThreads(10, h);
    expect(r.lowered).toEqual([101, 103]);
    expect(r.failed).toEqual([{ tid: 102, error: 'ESRCH: no such thread 102' }]);
    expect(set).toEqual([
      [101, 10],
      [103, 10],
    ]);
  });

  it.each([-1, NICE_MAX + 1, 2.5, NaN])('refuses %p and changes nothing', (n) => {
    const { h, set } = host([100, 101].map((tid) => ({ tid, name: 'node' })));
    expect(() => lowerHelperThreads(n, h)).toThrow(`helper nice ${n} is not an integer in 0..${NICE_MAX}`);
    expect(set).toEqual([]);
  });

  it("this process: its threads are listed with names, the main thread's id is the pid", () => {
    const ts = PROC_THREADS.threads();
    expect(ts.map((t) => t.tid)).toContain(process.pid);
    expect(ts.length).toBeGreaterThan(1);
    expect(ts.every((t) => Number.isInteger(t.tid) && t.tid > 0 && t.name.length > 0)).toBe(true);
    expect(currentThreadId()).toBe(process.pid); // jest runs the test file on the main thread
    expect(PROC_THREADS.getNice(process.pid)).toBe(getPriority());
  });
});
