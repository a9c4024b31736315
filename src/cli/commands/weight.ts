// peak-xdp weight <vip> <backend> <w> | --clear: a runtime weight override through the daemon's admin API.
import type { Argv } from 'yargs';
import { BOUNDS } from '../../model/defaults';
import type { GlobalArgs } from '../context';
import { CliError } from '../output';
import {
  adminWrite,
  backendArg,
  daemonVip,
  overrideBody,
  OverrideReply,
  overrideWords,
  printReply,
  targetArgs,
  withTarget,
} from './drain';

/** A weight argument as typed: an integer 0..BOUNDS.weight.max. */
export function weightArg(text: unknown): number {
  const s = String(text);
  const w = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!(w >= 0 && w <= BOUNDS.weight.max))
    throw new CliError(`weight: "${s}" is not an integer from 0 to ${BOUNDS.weight.max}`, 2);
  return w;
}

/** The text of a weight reply (`weight` null: --clear). */
export function weightText(weight: number | null, r: OverrideReply): string {
  const head = `${r.backend} in VIP ${r.vip}`;
  const rest = r.override ? `; still overridden: ${overrideWords(r.override)}` : '';
  if (weight === null)
    return r.changed === false
      ? `${head}: had no weight override (the config's weight)${rest}`
      : `${head}: weight override cleared (the config's weight again)${rest}`;
  const since = r.override?.weightAt ?? r.override?.at;
  return `${head}: weight ${weight} (${r.changed === false ? 'already, ' : ''}since ${since}); --clear clears it`;
}

export function registerWeight(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'weight [vip] [backend] [weight]',
    "Set a backend's weight (0..65535; 0 takes it out of the table) through the daemon until --clear; survives reloads and daemon restarts",
    (y2) =>
      withTarget(y2)
        // A string: yargs would turn "abc" into NaN and "1e3" into 1000 before we could name the input.
        .positional('weight', { type: 'string', describe: 'the new weight' })
        .option('clear', {
          type: 'boolean',
          default: false,
          describe: 'clear the weight override (the config weight again)',
        }),
    async (a) => {
      const t = targetArgs(a);
      if (a.clear === (a.weight !== undefined))
        throw new CliError(
          a.clear ? 'give a weight or --clear, not both' : 'give a weight (0..65535) or --clear',
          2,
        );
      const weight = a.clear ? null : weightArg(a.weight);
      const vip = await daemonVip(a, t.vip);
      const backend = backendArg(t.backend);
      const r =
        weight === null
          ? await adminWrite<OverrideReply>(a, 'DELETE', '/v1/backends/weight', { vip: vip.name, backend })
          : await adminWrite<OverrideReply>(a, 'POST', '/v1/backends/weight', {
              vip: vip.name,
              backend,
              weight,
            });
      printReply(a, 'BackendOverride', await overrideBody(a, r, vip.ref), weightText(weight, r));
    },
  ) as unknown as Argv<GlobalArgs>;
}
