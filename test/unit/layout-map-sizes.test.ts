// Map sizes have one source: DEFAULTS.limits (src/model/defaults.ts). The daemon (config limits), `peak-xdp attach`
// (its --max-* flags) and a bare KernelDatapath.load() size the maps with the same numbers; bpf/shared.h's
// compiled sizes never reach a loaded map. test/bpf/kernel.test.ts checks a loaded balancer's sizes.
import { BpfObject } from '../../src/datapath/bpf';
import { BALANCER_MAPS, balancerMapSizes, loadMapSizes, MAP_LIMITS } from '../../src/datapath/kernel';
import { buildCli } from '../../src/cli/main';
import { DEFAULTS } from '../../src/model/defaults';
import { parseConfig } from '../../src/model';
import { bpfObjectPath } from '../../src/paths';

/** `peak-xdp attach --help`, as yargs prints it (nothing runs). */
async function attachHelp(): Promise<string> {
  return new Promise((resolve, reject) => {
    void buildCli([])
      .exitProcess(false)
      .wrap(null) // one line per option
      .parse(['attach', '--help'], {}, (err: Error | undefined, _argv: unknown, output: string) =>
        err ? reject(err) : resolve(output),
      );
  });
}

/** The default a help text gives for --flag. */
function helpDefault(help: string, flag: string): number {
  const line = help.split('\n').find((l) => l.trimStart().startsWith(`--${flag} `));
  const m = line === undefined ? null : /\[default: "?(\d+)"?\]/.exec(line);
  if (m === null) throw new Error(`no default for --${flag} in:\n${help}`);
  return Number(m[1]);
}

describe('one source of map sizes', () => {
  const fromDefaults = balancerMapSizes(DEFAULTS.limits);

  it('every limit-sized map gets its size from DEFAULTS.limits on a bare load', () => {
    expect(Object.keys(MAP_LIMITS).length).toBeGreaterThanOrEqual(3);
    expect(loadMapSizes()).toEqual(fromDefaults);
    expect(fromDefaults).toMatchObject({
      vips: DEFAULTS.limits.maxVips,
      backends: DEFAULTS.limits.maxBackends,
      conntrack: DEFAULTS.limits.conntrackEntries,
    });
    // A caller's size wins for its map only.
    expect(loadMapSizes({ conntrack: 4096 })).toEqual({ ...fromDefaults, conntrack: 4096 });
  });

  it('the daemon: a config without limits sizes the maps exactly so', () => {
    const r = parseConfig(
      JSON.stringify({
        interface: 'eth0',
        vips: [{ name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }] }],
      }),
      { format: 'json' },
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(balancerMapSizes(r.config.limits)).toEqual(fromDefaults);
  });

  it('peak-xdp attach: its --max-* defaults are the same limits', async () => {
    const help = await attachHelp();
    const limits = {
      maxVips: helpDefault(help, 'max-vips'),
      maxBackends: helpDefault(help, 'max-backends'),
      conntrackEntries: helpDefault(help, 'conntrack-entries'),
    };
    expect(limits).toEqual(DEFAULTS.limits);
    expect(balancerMapSizes(limits)).toEqual(fromDefaults);
  });

  it("the object's compiled sizes differ, and every map they size is overridden at load", () => {
    const compiled = Object.fromEntries(
      BpfObject.inspect(bpfObjectPath('balancer')).maps.map((m) => [m.name, m.maxEntries]),
    );
    const sized = loadMapSizes();
    for (const m of BALANCER_MAPS) {
      expect(compiled[m]).toBeGreaterThan(0);
      // Maps of fixed size (config, stats, the index holder) have 1 entry; every other map is sized at load.
      if (compiled[m] !== 1)
        expect({ map: m, sized: sized[m] !== undefined }).toEqual({ map: m, sized: true });
    }
    expect(compiled.vips).not.toBe(DEFAULTS.limits.maxVips);
  });
});
