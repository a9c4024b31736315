// peak-xdp maglev: offline balance and churn analysis of the Maglev builder (no kernel needed).
import type { Argv } from 'yargs';
import {
  buildTable,
  changedFraction,
  isPrime,
  MAGLEV_ALGORITHM,
  MAGLEV_DEFAULT_SIZE,
  slotCounts,
  tableNames,
} from '../../maglev';
import { GlobalArgs, withJson } from '../context';
import { CliError, emit, numberArg } from '../output';

export interface MaglevAnalysis {
  algorithm: string;
  size: number;
  backends: number;
  removed: number;
  maxOverMean: number;
  minOverMean: number;
  changedFraction: number | null;
  idealChangedFraction: number | null;
  buildMs: number;
}

export function analyseMaglev(o: { backends: number; size: number; remove: number }): MaglevAnalysis {
  const names = Array.from({ length: o.backends }, (_, i) => `backend-${i}`);
  const members = names.map((name) => ({ name, weight: 1 }));
  const t0 = performance.now();
  const table = buildTable({ backends: members, size: o.size });
  const buildMs = performance.now() - t0;
  const counts = slotCounts(table, o.backends);
  const mean = o.size / o.backends;
  let changed: number | null = null;
  if (o.remove > 0) {
    // Remove evenly spread backends, as a rolling restart or a failed rack would.
    const step = o.backends / o.remove;
    const gone = new Set(Array.from({ length: o.remove }, (_, i) => Math.floor(i * step)));
    const kept = members.filter((_, i) => !gone.has(i));
    const after = buildTable({ backends: kept, size: o.size });
    changed = changedFraction(tableNames(table, members), tableNames(after, kept));
  }
  return {
    algorithm: MAGLEV_ALGORITHM,
    size: o.size,
    backends: o.backends,
    removed: o.remove,
    maxOverMean: Math.max(...counts) / mean,
    minOverMean: Math.min(...counts) / mean,
    changedFraction: changed,
    idealChangedFraction: o.remove > 0 ? o.remove / o.backends : null,
    buildMs,
  };
}

export function registerMaglev(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'maglev',
    'Offline Maglev analysis: balance and the share of slots that move when backends leave',
    (y2) =>
      withJson(y2)
        .option('backends', {
          type: 'string',
          describe: 'number of backends (equal weights; required)',
          coerce: numberArg('backends'),
        })
        .option('size', {
          type: 'string',
          default: String(MAGLEV_DEFAULT_SIZE),
          describe: 'table size M (prime)',
          coerce: numberArg('size'),
        })
        .option('remove', {
          type: 'string',
          default: '0',
          describe: 'backends removed for the churn figure',
          coerce: numberArg('remove'),
        }),
    (args) => {
      if (args.backends === undefined) throw new CliError('maglev: give --backends N', 2);
      const a = {
        ...args,
        backends: args.backends,
        size: args.size as number,
        remove: args.remove as number,
      };
      if (!Number.isInteger(a.backends) || a.backends < 1 || a.backends > a.size)
        throw new CliError(`--backends: ${a.backends} is not an integer in 1..${a.size}`, 2);
      if (!Number.isInteger(a.size) || !isPrime(a.size))
        throw new CliError(`--size: ${a.size} is not a prime`, 2);
      if (!Number.isInteger(a.remove) || a.remove < 0 || a.remove >= a.backends)
        throw new CliError(`--remove: ${a.remove} is not an integer in 0..${a.backends - 1}`, 2);
      const r = analyseMaglev({ backends: a.backends, size: a.size, remove: a.remove });
      emit(a.json, 'MaglevAnalysis', r, () =>
        [
          `algorithm        ${r.algorithm}`,
          `table size       ${r.size}`,
          `backends         ${r.backends}`,
          `build            ${r.buildMs.toFixed(2)} ms`,
          `max/mean slots   ${r.maxOverMean.toFixed(4)}`,
          `min/mean slots   ${r.minOverMean.toFixed(4)}`,
          ...(r.changedFraction !== null
            ? [
                `removed          ${r.removed}`,
                `slots changed    ${(r.changedFraction * 100).toFixed(3)}% (ideal ${(r.idealChangedFraction! * 100).toFixed(3)}%)`,
              ]
            : []),
        ].join('\n'),
      );
    },
  ) as unknown as Argv<GlobalArgs>;
}
