// Small process helpers the benches share: run a command for its output, read /proc/<pid>/status.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Runs a command (60 s at most) and returns its stdout; throws with its stderr on failure. */
export const run = (cmd: string, args: string[]): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });

/** kB value of a field in /proc/<pid>/status, in MiB. */
export function procStatusMB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]) / 1024;
}

/** Threads process `pid` runs now (0 once it is gone). */
export function threadCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 0;
  }
}

/** CPU time (user + system, all threads) process `pid` has used, in ms; null when unreadable. */
export function procCpuMs(pid: number): number | null {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}
/** USER_HZ: /proc's CPU times are in these ticks (100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * The Node flags the CLI runs with: those of the shebang of `main` (the built src/cli/main.js, `#!/usr/bin/env -S
 * node <flags>`), where the product keeps them; a bench starting the daemon with process.execPath passes them too.
 */
export function cliNodeFlags(main: string): string[] {
  const first = readFileSync(main, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\S*env(?: -S)? node((?: \S+)*)$/.exec(first);
  if (m === null) throw new Error(`${main}: its first line ${JSON.stringify(first)} is not a node shebang`);
  return m[1]!.split(' ').filter(Boolean);
}
