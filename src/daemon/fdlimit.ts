// The process's open-file limit (RLIMIT_NOFILE), read from /proc/self/limits: Node has no getrlimit.
import { readFileSync } from 'node:fs';

export interface FdLimit {
  /** The limit in force (what EMFILE is measured against); Infinity when unlimited. */
  soft: number;
  /** What the soft limit may be raised to (Node raises soft to hard at start). */
  hard: number;
}

const limitValue = (v: string): number => (v === 'unlimited' ? Infinity : Number(v));

/** The "Max open files" row of a /proc/<pid>/limits text, or null when it has none. */
export function parseFdLimit(text: string): FdLimit | null {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)\s+files\s*$/m.exec(text);
  return m ? { soft: limitValue(m[1]!), hard: limitValue(m[2]!) } : null;
}

/** This process's open-file limit, or null where /proc is missing (not Linux) or unreadable. */
export function readFdLimit(path = '/proc/self/limits'): FdLimit | null {
  try {
    return parseFdLimit(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}
