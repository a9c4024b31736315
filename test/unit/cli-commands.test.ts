// The CLI loads a command's module only when the command line names it (src/cli/main.ts COMMAND_MODULES): the
// table's names must be exactly what each module registers, and a command line must load every module it needs.
import yargs from 'yargs';
import { buildCli, COMMAND_MODULES, commandModulesFor } from '../../src/cli/main';

/** The top-level commands a yargs instance has registered. */
function commandsOf(y: unknown): string[] {
  const internal = (y as { getInternalMethods(): { getCommandInstance(): { getCommands(): string[] } } })
    .getInternalMethods()
    .getCommandInstance();
  return internal.getCommands();
}

/** What yargs prints for `argv` (a --help: nothing runs). */
function helpOf(y: ReturnType<typeof buildCli>, argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    void y
      .exitProcess(false)
      .wrap(null)
      .parse(argv, {}, (err: Error | undefined, _argv: unknown, output: string) =>
        err ? reject(err) : resolve(output),
      );
  });
}

/** The modules chosen for `argv`, by their first command's name. */
const chosen = (argv: string[]): string[] => commandModulesFor(argv).map((m) => m.names[0]!);

describe('command modules loaded on demand', () => {
  it('each module registers exactly the commands the table names for it', () => {
    for (const m of COMMAND_MODULES) {
      const y = yargs([]);
      m.load()(y as never);
      expect(commandsOf(y).sort()).toEqual([...m.names].sort());
    }
  });

  it("the whole CLI has the table's commands and its own completion commands, nothing else", () => {
    const all = COMMAND_MODULES.flatMap((m) => m.names);
    expect(new Set(all).size).toBe(all.length);
    expect(commandsOf(buildCli([])).sort()).toEqual([...all, 'completion', '__completion-script'].sort());
  });

  it('loads the modules of the command words given, else every module', () => {
    expect(chosen(['status', '--json'])).toEqual(['status']);
    expect(chosen(['daemon', '--config', '/etc/peak-xdp/config.yaml'])).toEqual(['daemon']);
    expect(chosen(['conntrack', 'flush', '--vip', '10.0.0.1'])).toEqual(['status']);
    expect(chosen(['bfd-daemon', '--control', '/run/x.sock'])).toEqual(['bfd']);
    // an option's value that is a command name too: both modules, so the real command is always there
    expect(chosen(['--interface', 'trace', 'vips'])).toEqual(['status', 'trace']);
    const everything = COMMAND_MODULES.map((m) => m.names[0]!);
    expect(chosen([])).toEqual(everything);
    expect(chosen(['--help'])).toEqual(everything);
    expect(chosen(['--version'])).toEqual(everything);
    expect(chosen(['stauts'])).toEqual(everything); // a typo: "did you mean" needs every command
    expect(chosen(['--get-yargs-completions', 'peak-xdp', ''])).toEqual(everything);
  });

  it("a command's help is the same with only its module loaded as with every module", async () => {
    for (const argv of [
      ['weight', '--help'],
      ['status', '--help'],
      ['daemon', '--help'],
      ['conntrack', 'flush', '--help'],
    ]) {
      const only = buildCli(argv);
      expect(commandsOf(only)).not.toContain(argv[0] === 'daemon' ? 'status' : 'daemon');
      const help = await helpOf(only, argv);
      expect(help).toContain(`peak-xdp ${argv.slice(0, -1).join(' ')}`);
      expect(help).toEqual(await helpOf(buildCli([]), argv));
    }
  });
});
