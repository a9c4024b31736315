// Command runners for the testbed: every failure throws with the command line and its stderr (set -e semantics).
import { execFileSync, spawn, SpawnOptions } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RunOptions {
  /** Return '' instead of throwing when the command fails. */
  allowFail?: boolean;
  input?: string;
  timeoutMs?: number;
}

/** Runs a command without a shell and returns its stdout. */
export function run(cmd: string, args: string[], o: RunOptions = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      input: o.input,
      stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: o.timeoutMs ?? 60_000,
    });
  } catch (e) {
    if (o.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`command failed: ${cmd} ${args.join(' ')}\n${err.stderr?.trim() || err.message}`);
  }
}

/** Runs a command inside a network namespace. */
export function runIn(netns: string, cmd: string, args: string[], o: RunOptions = {}): string {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], o);
}

/** Result of an asynchronous command. */
export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously (used for load generators); kills it after timeoutMs. */
export function runAsync(
  cmd: string,
  args: string[],
  o: { timeoutMs: number; onStderrLine?: (line: string) => void; spawnOptions?: SpawnOptions },
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...o.spawnOptions });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!o.onStderrLine) return;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) o.onStderrLine(l);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export { sleep };

/** Polls fn every intervalMs until it returns true or timeoutMs passes; returns whether it became true. */
export async function waitFor(
  fn: () => boolean,
  o: { timeoutMs: number; intervalMs?: number },
): Promise<boolean> {
  const end = Date.now() + o.timeoutMs;
  for (;;) {
    if (fn()) return true;
    if (Date.now() >= end) return false;
    await sleep(o.intervalMs ?? 100);
  }
}
