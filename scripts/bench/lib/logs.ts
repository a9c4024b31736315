// Keeps the testbed's logs (daemon, BFD, proxies) in the results folder: the testbed's state directory, where
// they are written, is deleted by down().
import { copyFileSync, mkdirSync, readdirSync, truncateSync } from 'node:fs';
import { join, relative } from 'node:path';

/** Files under `dir` (recursively) whose name ends in `.log`. */
function logFiles(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) =>
    e.isDirectory() ? logFiles(join(dir, e.name)) : e.name.endsWith('.log') ? [join(dir, e.name)] : [],
  );
}

/**
 * Copies every log under `stateDir` to `dest` (same relative paths) and empties the originals, so the next
 * system or round starts its own logs; returns the copied paths relative to `dest`.
 */
export function keepLogs(stateDir: string, dest: string): string[] {
  const out: string[] = [];
  for (const f of logFiles(stateDir)) {
    const rel = relative(stateDir, f);
    mkdirSync(join(dest, rel, '..'), { recursive: true });
    copyFileSync(f, join(dest, rel));
    // Processes keep appending to the same inode (O_APPEND): truncating keeps their writes.
    truncateSync(f, 0);
    out.push(rel);
  }
  return out;
}
