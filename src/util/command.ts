// The programs the daemon runs (ip, ping), started with posix_spawn through the addon instead of Node's
// child_process, which forks. A fork copies the caller's page tables on the event loop and write-protects every
// page: in a daemon of ~500 MB (512 x 1000 with health checks) the VIP route keeper's `ip` every 10 s was followed by
// ~4,000 copy-on-write faults per 256 health-check results (40-60 ms each time), and /healthz waited 100-140 ms;
// without the fork, 9-36 ms.
import { constants } from 'node:os';
import { native } from '../datapath/native';

export interface CommandResult {
  /** Exit status; null when it did not run, was killed for its time or output, or a signal ended it. */
  code: number | null;
  /** The signal that ended it (SIGSEGV, ...), not ours; else null. */
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Why it did not run or was killed (spawn ENOENT, timed out after N ms, output over N bytes); else null. */
  error: string | null;
}

export interface CommandOptions {
  /** Written to its standard input (closed after). */
  input?: string;
  /** Killed (SIGKILL) after this long. */
  timeoutMs: number;
  /** Killed when stdout and stderr together pass this many bytes (default 64 MiB). */
  maxBytes?: number;
}

const signalNames = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** Runs `file` (looked up in PATH) with `args`; never rejects (see CommandResult). */
export async function runCommand(
  file: string,
  args: readonly string[],
  o: CommandOptions,
): Promise<CommandResult> {
  const r = await native().spawnCapture(file, [...args], o.input ?? '', o.timeoutMs, o.maxBytes ?? 64 << 20);
  return {
    code: r.code,
    signal: r.signal === null ? null : (signalNames.get(r.signal) ?? `signal ${r.signal}`),
    stdout: r.stdout.toString('utf8'),
    stderr: r.stderr.toString('utf8'),
    error: r.error,
  };
}

/** What went wrong with a run that did not exit 0, for messages ("exit 2: <stderr>", "timed out after ..."). */
export function commandFailure(r: CommandResult): string {
  const why = r.error ?? (r.signal !== null ? `killed by ${r.signal}` : `exit ${r.code}`);
  return r.stderr.trim() ? `${why}: ${r.stderr.trim()}` : why;
}

/** runCommand's stdout when it exits 0; else an Error naming the command and what went wrong. */
export async function runChecked(file: string, args: readonly string[], o: CommandOptions): Promise<string> {
  const r = await runCommand(file, args, o);
  if (r.code !== 0) throw new Error(`${[file, ...args].join(' ')}: ${commandFailure(r)}`);
  return r.stdout;
}
