// CLI output: aligned tables for people, JSON for scripts, and errors that say what to do.
export interface Column<T> {
  header: string;
  value: (row: T) => string | number | bigint | boolean | null | undefined;
  align?: 'left' | 'right';
}

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
