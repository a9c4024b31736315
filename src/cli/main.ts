#!/usr/bin/env node
// peak-xdp: the CLI. Commands work on the pinned maps directly (with or without a daemon); tables for
// people, --json for scripts.
import yargs, { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { registerAttach } from './commands/attach';
import { registerBfd } from './commands/bfd';
import { registerBgp } from './commands/bgp';
import { registerDaemon } from './commands/daemon';
import { registerInspect } from './commands/inspect';
import { registerMaglev } from './commands/maglev';
import { registerTrace } from './commands/trace';
import { registerVersion } from './commands/version';
import type { GlobalArgs } from './context';
import { CliError } from './output';
import { buildInfo } from '../version';

/** yargs turns a repeated string flag into an array: say so instead of failing later on a bad path. */
const once =
  (flag: string) =>
  (v: unknown): unknown => {
    if (Array.isArray(v))
      throw new CliError(`--${flag}: given ${v.length} times (${v.join(', ')}): give it once`, 2);
    return v;
  };

export function buildCli(argv: string[]): Argv<GlobalArgs> {
  let y = yargs(argv)
    .scriptName('peak-xdp')
    .usage('$0 <command> [options]')
    .option('bpffs', {
      type: 'string',
      describe: 'bpffs root of the pins (default: env PEAK_XDP_BPFFS or /sys/fs/bpf)',
      coerce: once('bpffs'),
    })
    .option('interface', {
      alias: 'i',
      type: 'string',
      describe: 'the balanced interface (default: the only one pinned)',
      coerce: once('interface'),
    })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output' })
    .option('admin', {
      type: 'string',
      describe: 'daemon admin API HOST:PORT (default: env PEAK_XDP_ADMIN or 127.0.0.1:9470)',
      coerce: once('admin'),
    })
    .strict()
    .demandCommand(1, 'give a command (peak-xdp --help lists them)')
    .recommendCommands()
    .help()
    // --version and `peak-xdp version` print the same version (src/version.ts).
    .version(buildInfo.version)
    .fail((msg, err) => {
      // yargs re-wraps errors thrown by coerce in a YError: those are usage errors too (exit 2).
      if (err && !(err instanceof CliError) && err.name === 'YError') throw new CliError(err.message, 2);
      throw err ?? new CliError(msg, 2);
    }) as unknown as Argv<GlobalArgs>;
  for (const reg of [
    registerDaemon,
    registerInspect,
    registerTrace,
    registerMaglev,
    registerAttach,
    registerBgp,
    registerBfd,
    registerVersion,
  ])
    y = reg(y);
  return y;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli(argv).parseAsync();
    return 0;
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`peak-xdp: ${e.message}\n`);
      return e.code;
    }
    const err = e as Error & { code?: string };
    process.stderr.write(`peak-xdp: ${err.message}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(hideBin(process.argv)).then((code) => {
    if (code !== 0) process.exit(code);
  });
}
