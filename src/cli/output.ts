// CLI output: aligned tables for people, JSON for scripts, and errors that say what to do.
export interface Column<T> {
  header: string;
  value: (row: T) => string | number | bigint | boolean | null | undefined;
  align?: 'left' | 'right';
}

/** ADDRESS:PORT, IPv6 in brackets ([2001:db8::1]:53): the one address:port spelling of every command. */
export const hostPort = (address: string, port: number | string): string =>
  `${address.includes(':') ? `[${address}]` : address}:${port}`;

/** Renders rows as an aligned text table (numbers right-aligned by default). */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => String(c.value(r) ?? '-')));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const rightAligned = columns.map(
    (c, i) =>
      c.align === 'right' || (c.align === undefined && rows.length > 0 && isNumeric(columns[i], rows[0])),
  );
  const line = (vals: string[]) =>
    vals
      .map((v, i) => (rightAligned[i] ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

function isNumeric<T>(c: Column<T> | undefined, row: T | undefined): boolean {
  if (!c || row === undefined) return false;
  const v = c.value(row);
  return typeof v === 'number' || typeof v === 'bigint';
}

/** JSON with bigint as decimal strings would lose type; numbers are safe below 2^53, so convert. */
export function toJson(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) =>
      typeof x === 'bigint'
        ? x <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(x)
          : x.toString()
        : x instanceof Map
          ? Object.fromEntries(x)
          : x,
    2,
  );
}

/** An error the CLI prints as one line (no stack) with exit code `code`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = 1,
  ) {
    super(message);
  }
}

export function formatRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)}M`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)}k`;
  return perSecond.toFixed(perSecond < 10 ? 1 : 0);
}

export function formatBytes(n: number | bigint): string {
  const v = Number(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/**
 * The version of every --json document: `{ "apiVersion": "peak-xdp/v1", "kind": ..., ...fields }`. Fields are only
 * added within a version; a rename or removal makes peak-xdp/v2.
 */
export const JSON_API_VERSION = 'peak-xdp/v1';

/** One --json document: version and kind first, then the command's fields. */
export function jsonDocument(kind: string, body: object): Record<string, unknown> {
  return { apiVersion: JSON_API_VERSION, kind, ...body };
}

/** Prints `body` as a `kind` document with --json, else the text (both end in one newline). */
export function emit(json: boolean | undefined, kind: string, body: object, text: () => string): void {
  process.stdout.write((json ? toJson(jsonDocument(kind, body)) : text()) + '\n');
}

/** One line of NDJSON (--watch --json): the document with the time it was taken, on one line. */
export function ndjsonLine(kind: string, body: object, at: Date): string {
  return JSON.stringify(JSON.parse(toJson({ ...jsonDocument(kind, { time: at.toISOString() }), ...body })));
}

/** The --json form of an error: printed on stdout instead of the stderr line; the exit code is the same. */
export function errorDocument(message: string, exitCode: number): Record<string, unknown> {
  return jsonDocument('Error', { error: { message, exitCode } });
}

/**
 * A yargs coerce for a numeric option, echoing what was typed when it is not a number ("--limit: "abc" is not a
 * number" rather than "NaN"). Range checks stay with the command, which prints the number.
 */
export const numberArg =
  (flag: string) =>
  (v: unknown): number | undefined => {
    if (v === undefined) return undefined;
    if (Array.isArray(v))
      throw new CliError(`--${flag}: given ${v.length} times (${v.join(', ')}): give it once`, 2);
    const text = String(v).trim();
    const n = text === '' ? NaN : Number(text);
    if (!Number.isFinite(n)) throw new CliError(`--${flag}: ${JSON.stringify(String(v))} is not a number`, 2);
    return n;
  };

/** A non-zero exit whose report is already printed (config validate: "invalid" is the output, not an error). */
export class ExitStatus extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
