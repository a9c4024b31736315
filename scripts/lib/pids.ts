// Signalling processes by pid from tests and scripts, safely.
//
// process.kill(0, sig) signals the caller's whole process group, and a negative pid a whole group: in CI that
// group is jest, npm and the CI runner itself. A pid read from a daemon's pid file too early (BIRD and nginx
// fork, the parent exits, and only then the child writes its pid) parses as Number('') === 0. That one race
// once SIGKILLed a whole CI run. Every pid-based signal in test/ and scripts/ goes through here (eslint
// forbids process.kill elsewhere).
import { existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Throws unless `pid` names exactly one process (a positive integer). */
function assertPid(pid: number, what: string): void {
  if (!Number.isInteger(pid) || pid <= 0)
    throw new Error(`${what}: refusing pid ${String(pid)} (not a single process)`);
}

/**
 * Sends `sig` to one process. Returns false when it is already gone (ESRCH); throws on a pid that is not a
 * positive integer, and on any other error (EPERM).
 */
export function signalPid(pid: number, sig: NodeJS.Signals | number): boolean {
  assertPid(pid, `signal ${String(sig)}`);
  try {
    process.kill(pid, sig);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** Is this process alive (signal 0)? False for a pid that is not a positive integer. */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in a pid file, or null while it is missing, empty, partly written or names no live process. */
export function pidFromFile(path: string): number | null {
  if (!existsSync(path)) return null;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  if (!/^\d+\n?$/.test(text)) return null;
  const pid = Number(text.trim());
  return pid > 0 && pidAlive(pid) ? pid : null;
}

/**
 * Waits (bounded) until a daemon's pid file names a live process, and returns that pid. Daemons that fork
 * write the file after the parent has exited, so it can be missing or empty right after the start command.
 */
export async function readPidFile(path: string, o: { timeoutMs?: number } = {}): Promise<number> {
  const deadline = Date.now() + (o.timeoutMs ?? 5000);
  for (;;) {
    const pid = pidFromFile(path);
    if (pid !== null) return pid;
    if (Date.now() > deadline) {
      const seen = existsSync(path) ? JSON.stringify(readFileSync(path, 'utf8')) : 'no file';
      throw new Error(`pid file ${path}: no live pid after ${o.timeoutMs ?? 5000} ms (${seen})`);
    }
    await sleep(20);
  }
}
