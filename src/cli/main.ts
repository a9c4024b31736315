#!/usr/bin/env -S node --max-semi-space-size=4 --expose-gc --no-allocation-site-pretenuring --max-inlined-bytecode-size=60
// peak-xdp: the CLI. Commands work on the pinned maps directly (with or without a daemon); tables for
// people, --json for scripts.
// The shebang's Node flags are the daemon's (one place: the image's and setup.sh's wrappers exec this file, and the
// benches read them from it): a young generation of 2 x 4 MB instead of 2 x 16 MB, which V8 takes only from the
// command line. Measured on the daemon at 512 VIPs x 100 backends, RSS at ready / settled: 224 / 207 -> 205 / 185
// MB (without health checks 193 / 176 -> 172 / 141 MB); Kubernetes 1,000 x 20 at ready 185 -> 160 MB; start and
// bursts unchanged; no difference at 512 x 1000. --expose-gc: the daemon collects its start's garbage once, right
// after it reports ready (Daemon: trimMemory({ collect: true })). --no-allocation-site-pretenuring: V8 otherwise marks
// object-literal sites whose objects survived the start's big builds (every one did) to allocate in the old
// generation from then on, and a probe's objects, referenced from such an object, survived every scavenge with it:
// 512 VIPs x 1000 backends with checks once a minute (8,500 probes/s) promoted ~8 MB/s of garbage, RSS 456 MB
// settled, 720-1,270 MB a minute later; with the flag, the heap stays at ~280 MB and RSS at 420-430 MB (start
// unchanged, 8.6 s against 8.7 s). --max-inlined-bytecode-size=60 (V8's default 460): the optimizing compiler
// inlines no function of more than 60 bytes of bytecode. A start compiles ~145 functions on V8's helper threads (its
// config parse, first sync and each table worker's Maglev build: ~0.6 s of CPU of a 512 x 100 start's ~3.4 s on 2
// cores, functions like the schema parser's or the first sync's taking 20-40 ms each with their inlined callees);
// with the bound, CPU at ready ~150-170 ms less and ready ~0.1 s sooner (eight interleaved pairs: median 2.20 s
// against 2.31 s); the steady state's syncs, renders and Kubernetes bursts alike within this VM's noise.
import yargs, { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { GlobalArgs } from './context';
import { CliError, errorDocument, ExitStatus, toJson } from './output';
import { buildInfo } from '../version';

export function buildCli(argv: string[]): Argv<GlobalArgs> {
  let y = yargs(argv)
    .scriptName('peak-xdp')
    .usage('$0 <command> [options]')
    .strict()
    .demandCommand(1, 'give a command (peak-xdp --help lists them)')
    .recommendCommands()
    // Shared options (--json, --interface, --bpffs, --admin) are added by the commands that use them.
    .help()
    .alias('h', 'help')
    // yargs' own completion command prints the script even for --help: a hidden one answers the shell's
    // --get-yargs-completions, and `completion` is an ordinary command (with help) that prints the script.
    .completion('__completion-script', false)
    // --version and `peak-xdp version` print the same version (src/version.ts).
    .version(buildInfo.version)
    .fail((msg, err) => {
      // yargs re-wraps errors thrown by coerce in a YError: those are usage errors too (exit 2).
      if (err && !(err instanceof CliError) && err.name === 'YError') throw new CliError(err.message, 2);
      // yargs lists bad choices over several lines ("Invalid values:", "Argument: x, Given: ..., Choices: ...").
      const choice = /Argument: ([\w-]+), Given: (.+?), Choices: (.+)$/m.exec(msg ?? '');
      if (choice) throw new CliError(`${choice[1]}: ${choice[2]} is not one of ${choice[3]!.trim()}`, 2);
      // recommendCommands says only "Did you mean X?": name what was typed.
      const typo = /^Did you mean (.+)\?$/.exec(msg ?? '');
      const typed = argv.find((x) => !x.startsWith('-'));
      if (typo && typed) throw new CliError(`unknown command "${typed}" (did you mean "${typo[1]}"?)`, 2);
      throw err ?? new CliError(msg, 2);
    }) as unknown as Argv<GlobalArgs>;
  y = y.command(
    'completion',
    'Print a bash/zsh completion script (e.g. peak-xdp completion >> ~/.bashrc)',
    {},
    () => {
      y.showCompletionScript();
    },
  );
  // --version belongs to peak-xdp itself: each subcommand's builder turns it off, so its --help does not list it.
  const command = y.command.bind(y) as (...xs: unknown[]) => Argv<GlobalArgs>;
  (y as unknown as { command: unknown }).command = (...xs: unknown[]) => {
    const builder = xs[2];
    if (typeof builder === 'function')
      xs[2] = (y2: Argv) => (builder as (y3: Argv) => Argv)(y2.version(false));
    else if (xs.length === 1 && typeof xs[0] === 'object' && xs[0] !== null) {
      const m = xs[0] as { builder?: unknown };
      const b = m.builder;
      if (typeof b === 'function')
        xs[0] = { ...m, builder: (y2: Argv) => (b as (y3: Argv) => Argv)(y2.version(false)) };
    }
    return command(...xs);
  };
  for (const m of commandModulesFor(argv)) y = m.load()(y);
  return y;
}

type Registrar = (y: Argv<GlobalArgs>) => Argv<GlobalArgs>;

/**
 * The command modules in help order, the top-level commands each registers, and its file and registrar. The CLI
 * loads only the modules of the commands its command line names (measured: `peak-xdp status` required 360 modules
 * in ~210 ms, inspect's own 22 in ~30 ms; the daemon 314 instead of 360), and every module when it names none of
 * them (--help, --version, completion, a typo that "did you mean" answers). test/unit/cli-commands.test.ts checks
 * these names against what each module registers.
 */
export const COMMAND_MODULES: readonly { names: readonly string[]; load: () => Registrar }[] = [
  { names: ['daemon'], load: lazy('daemon', 'registerDaemon') },
  {
    names: ['status', 'vips', 'backends', 'stats', 'conntrack', 'ring'],
    load: lazy('inspect', 'registerInspect'),
  },
  { names: ['trace'], load: lazy('trace', 'registerTrace') },
  { names: ['lookup'], load: lazy('lookup', 'registerLookup') },
  { names: ['drain', 'undrain'], load: lazy('drain', 'registerDrain') },
  { names: ['weight'], load: lazy('weight', 'registerWeight') },
  { names: ['maglev'], load: lazy('maglev', 'registerMaglev') },
  { names: ['attach', 'detach', 'decap'], load: lazy('attach', 'registerAttach') },
  { names: ['bgp'], load: lazy('bgp', 'registerBgp') },
  { names: ['bfd', 'bfd-daemon'], load: lazy('bfd', 'registerBfd') },
  { names: ['version'], load: lazy('version', 'registerVersion') },
  { names: ['config'], load: lazy('config', 'registerConfig') },
];

/** The registrar `name` of ./commands/`file`, required when called. */
function lazy(file: string, name: string): () => Registrar {
  return () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when its command is named
    const register = (require(`./commands/${file}`) as Record<string, unknown>)[name];
    if (typeof register !== 'function') throw new Error(`./commands/${file} exports no ${name}`);
    return register as Registrar;
  };
}

/** The modules of every command word in `argv` (any token: an option's value that happens to be a command name only
 * loads one module more), or all of them when it has none. */
export function commandModulesFor(argv: readonly string[]): typeof COMMAND_MODULES {
  const words = new Set(argv);
  const named = COMMAND_MODULES.filter((m) => m.names.some((n) => words.has(n)));
  return named.length > 0 ? named : COMMAND_MODULES;
}

/** Whether the command line asks for JSON (read from argv: a parse error has no parsed arguments). */
const wantsJson = (argv: readonly string[]): boolean =>
  argv.some((x) => x === '--json' || x === '--json=true') && !argv.includes('--no-json');

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli(argv).parseAsync();
    return 0;
  } catch (e) {
    if (e instanceof ExitStatus) return e.code;
    const code = e instanceof CliError ? e.code : 1;
    // One line naming the thing: a multi-line message (a tool's stderr) is folded.
    const message = (e as Error).message.trim().replace(/\s*\n\s*/g, '; ');
    if (wantsJson(argv)) process.stdout.write(`${toJson(errorDocument(message, code))}\n`);
    else process.stderr.write(`peak-xdp: ${message}\n`);
    return code;
  }
}

if (require.main === module) {
  void main(hideBin(process.argv)).then((code) => {
    if (code !== 0) process.exit(code);
  });
}
