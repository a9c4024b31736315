// Thread priorities: batch work and V8's helpers below the daemon's event loop (Linux: a thread's nice value is its own).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** The highest nice value (setpriority's range ends at 19). */
export const NICE_MAX = 19;

/**
 * What is added to the nice value of Node's platform threads by default (the daemon's --helper-nice; 0 leaves them
 * alone), by Node major: 10 on Node 20 and older, 0 on later ones. Measured at 512 VIPs x 1000 backends with health
 * checks while every backend goes down (the mass flip, ~90 s of syncs with the event loop ~87% busy), /healthz asked
 * every 0.5 s. Node 20: max 69-94 ms in five runs at +10 against 106-212 ms in six at 0, no answer over 100 ms
 * against 2-6 of ~355, RSS peak alike (463-479 against 468-480 MB), the 512 x 100 start alike (four pairs); +5 one run,
 * 133 ms. There the event loop's long turns were spent mostly waiting for a core: CFS shares a core between runnable
 * threads by weight, and during a collection V8's four helpers each want one on this 2-core machine; at +10 a helper
 * weighs ~1/9 of the event loop and still gets every idle core. Node 24 (V8 13): /healthz 61-106 ms at 0 and 72-148
 * ms at +10, but the heap grew further with the helpers lowered: RSS peak 497-539 MB at 0 against 620-622 at +10 and
 * 583-610 at +5 (two runs each).
 */
export function defaultHelperNice(nodeVersion: string = process.versions.node): number {
  return Number(nodeVersion.split('.')[0]) <= 20 ? 10 : 0;
}

/** Thread names of threads the daemon starts itself (Node 22 and later name them; Node 20 names every thread "node"). */
const OWN_THREAD_NAMES: ReadonlySet<string> = new Set(['libuv-worker', 'WorkerThread']);

export interface ThreadHost {
  /** The process id: the main thread's id. */
  pid: number;
  /** The process's threads: id and name (comm). */
  threads(): { tid: number; name: string }[];
  getNice(tid: number): number;
  /** setpriority(PRIO_PROCESS, tid, nice): Linux applies it to that one thread. */
  setNice(tid: number, nice: number): void;
}

/** This process, through /proc/self/task and os.getPriority / setPriority. */
export const PROC_THREADS: ThreadHost = {
  pid: process.pid,
  threads: () =>
    readdirSync('/proc/self/task').map((t) => {
      let name = '';
      try {
        name = readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
      } catch {
        // the thread ended meanwhile
      }
      return { tid: Number(t), name };
    }),
  getNice: (tid) => getPriority(tid),
  setNice: (tid, nice) => setPriority(tid, nice),
};

/** The calling thread's id (gettid): /proc/thread-self is /proc/<pid>/task/<tid>. */
export function currentThreadId(): number {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (!Number.isSafeInteger(tid) || tid <= 0) throw new Error('no thread id');
  return tid;
}

/** Adds `by` to thread `tid`'s nice value, at most NICE_MAX; returns the new value. Raising it needs no privilege. */
export function lowerThread(tid: number, by: number, host: ThreadHost = PROC_THREADS): number {
  const nice = Math.min(NICE_MAX, host.getNice(tid) + by);
  host.setNice(tid, nice);
  return nice;
}

export interface LoweredThreads {
  /** Added to each thread's nice value. */
  by: number;
  /** Thread ids lowered. */
  lowered: number[];
  /** Threads that could not be (ended meanwhile, or refused): id and why. */
  failed: { tid: number; error: string }[];
}

/**
 * Lowers every thread of this process but the main one by `by` (0..NICE_MAX; 0: nothing is changed). Call it first
 * thing in the daemon, before anything starts a thread of its own: then the threads are Node's platform threads (V8's
 * helpers, its delayed-task scheduler, the inspector's signal thread), made at the process's start. libuv's pool,
 * worker threads (the table workers, which lower themselves, and the BGP speaker) and the BFD process start later
 * from the main thread and inherit its priority; threads named as such (Node 22 and later) are skipped should one
 * exist already. Never throws for one thread: its failure is in `failed`.
 */
export function lowerHelperThreads(by: number, host: ThreadHost = PROC_THREADS): LoweredThreads {
  if (!Number.isInteger(by) || by < 0 || by > NICE_MAX)
    throw new RangeError(`helper nice ${by} is not an integer in 0..${NICE_MAX}`);
  const out: LoweredThreads = { by, lowered: [], failed: [] };
  if (by === 0) return out;
  for (const t of host.threads()) {
    if (t.tid === host.pid || OWN_THREAD_NAMES.has(t.name)) continue;
    try {
      lowerThread(t.tid, by, host);
      out.lowered.push(t.tid);
    } catch (e) {
      out.failed.push({ tid: t.tid, error: (e as Error).message });
    }
  }
  return out;
}
