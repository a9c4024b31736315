// pino logger for the daemon and CLI: JSON lines with string levels and ISO timestamps, pretty on a TTY,
// level from --log-level or env.
import pino, { Logger } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * "level":"info" rather than 30 and "time":"2026-12-01T16:02:22.123Z" rather than epoch ms: what log
 * pipelines (Loki, Elasticsearch, journald readers) and people expect without a pino-specific mapping.
 */
export const LOG_FORMAT = {
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label: string) => ({ level: label }) },
} as const;

/** A log line's time in epoch ms: ISO strings (this logger) and pino's default epoch numbers; else null. */
export function logTimeMs(time: unknown): number | null {
  if (typeof time === 'number') return Number.isFinite(time) ? time : null;
  if (typeof time !== 'string') return null;
  const t = Date.parse(time);
  return Number.isNaN(t) ? null : t;
}

export function createLogger(opts: { level?: string; name?: string; pretty?: boolean } = {}): Logger {
  const level = opts.level ?? process.env.PEAK_XDP_LOG_LEVEL ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level))
    throw new TypeError(`log level must be one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
  const pretty = opts.pretty ?? Boolean(process.stderr.isTTY);
  return pino(
    { name: opts.name ?? 'peak-xdp', level, base: { pid: process.pid }, ...LOG_FORMAT },
    pretty
      ? pino.transport({ target: 'pino-pretty', options: { destination: 2, colorize: true } })
      : pino.destination(2),
  );
}

/** A logger that drops everything (tests, library defaults). */
export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * At most one `emit` per intervalMs; calls in between are only counted and the next emit is told how many
 * (a flood of one warning becomes a line per interval saying how many it stands for).
 */
export function rateLimited(
  intervalMs: number,
  now: () => number = () => performance.now(),
): (emit: (suppressed: number) => void) => void {
  let last = -Infinity;
  let suppressed = 0;
  return (emit) => {
    const t = now();
    if (t - last < intervalMs) {
      suppressed++;
      return;
    }
    last = t;
    const n = suppressed;
    suppressed = 0;
    emit(n);
  };
}

/**
 * A budget of `perWindow` lines per window of `windowMs` (a window starts at the first call after the last one
 * ended): true while the current window has some left. Lines past it are the caller's to count and summarise.
 */
export function lineBudget(
  perWindow: number,
  windowMs: number,
  now: () => number = () => performance.now(),
): () => boolean {
  let start = -Infinity;
  let used = 0;
  return () => {
    const t = now();
    if (t - start >= windowMs) {
      start = t;
      used = 0;
    }
    return used++ < perWindow;
  };
}
