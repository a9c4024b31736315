// Loopback ports for tests that must name a port before anything listens on it (a speaker's listener, a
// peer it dials). A port taken from `process.pid % N` in the kernel's ephemeral range can be held by any
// outgoing connection on the machine (a CI run failed with EADDRINUSE that way), and two files with
// different pids can land on the same one. So ports come from below the ephemeral range, and each jest
// worker has its own slice: two files running at once never share a port. Within a slice the block starts
// at a random place, so a file does not reuse the exact ports of the file the same worker ran just before.
import { readFileSync } from 'node:fs';

/** Lowest port handed out (above the well-known and the common registered service ports). */
const FLOOR = 10000;
/** Ports per jest worker. */
const SLICE = 3000;

/** The kernel's ephemeral range start (ports at or above it may be taken by outgoing connections). */
export function ephemeralLow(): number {
  try {
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(lo) && lo > 0) return lo;
  } catch {
    // not Linux: the IANA dynamic range
  }
  return 49152;
}

/** The slice of jest worker `worker` (1-based), checked to lie below `low`. */
export function workerSlice(worker: number, low: number): { from: number; to: number } {
  const from = FLOOR + (worker - 1) * SLICE;
  const to = from + SLICE;
  if (to > low) {
    throw new Error(
      `test ports: worker ${worker} needs ${from}-${to - 1}, but the ephemeral range starts at ${low} (ip_local_port_range)`,
    );
  }
  return { from, to };
}

/** `n` consecutive loopback ports for this file: returns the first. */
export function testPorts(n: number): number {
  const worker = Number(process.env.JEST_WORKER_ID ?? '1') || 1;
  const { from, to } = workerSlice(worker, ephemeralLow());
  if (n < 1 || n > to - from)
    throw new Error(`test ports: cannot hand out ${n} ports from a slice of ${to - from}`);
  return from + Math.floor(Math.random() * (to - from - n + 1));
}
