// Testbed command line: `up`, `down`, `status`, `exec <host> cmd...` (node dist/scripts/testbed/cli.js).
import { spawnSync } from 'node:child_process';
import { ConfigOverrides, defaultConfigPath, loadTestbedConfig } from './config';
import { buildPlan, findHost, lbPinRoot, Plan } from './plan';
import { down, status, up } from './topology';
import { packageRoot } from '../../src/paths';

const USAGE = `usage: testbed [--config FILE] [--prefix P] [--lbs K] [--backends M] [--router bird|frr] <command>
  up                 create (or complete) the testbed
  down               remove everything the testbed with this prefix created
  status             hosts, processes, BGP sessions, VIP routes
  exec <host> cmd..  run a command inside a host (client1, router, lb1, be1, ...)
env: PEAK_TB_PREFIX (default from the config file), PEAK_TB_ROUTER (bird|frr)`;

function intFlag(name: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n))
    throw new Error(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

/** Parses leading flags; the rest is the command. */
export function parseArgs(argv: string[]): {
  configPath: string;
  overrides: ConfigOverrides;
  rest: string[];
} {
  let configPath = defaultConfigPath(packageRoot);
  const overrides: ConfigOverrides = {};
  let i = 0;
  for (; i < argv.length && argv[i]!.startsWith('--'); i++) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    i++;
    if (flag === '--config') configPath = value ?? '';
    else if (flag === '--prefix') overrides.prefix = value;
    else if (flag === '--lbs') overrides.lbs = intFlag('lbs', value);
    else if (flag === '--backends') overrides.backends = intFlag('backends', value);
    else if (flag === '--router') overrides.routerDaemon = value;
    else throw new Error(`unknown flag ${flag}\n${USAGE}`);
  }
  return { configPath, overrides, rest: argv.slice(i) };
}

/** `exec`: inherits stdio; LB hosts get PEAK_XDP_BPFFS pointing at their own pin root. */
function execIn(p: Plan, hostName: string, cmd: string[]): number {
  const h = findHost(p, hostName);
  if (cmd.length === 0) throw new Error('exec needs a command: exec <host> cmd...');
  const env = { ...process.env };
  if (h.role === 'lb') env.PEAK_XDP_BPFFS = lbPinRoot(p, h);
  const r = spawnSync('ip', ['netns', 'exec', h.netns, ...cmd], { stdio: 'inherit', env });
  return r.status ?? 1;
}

async function main(): Promise<number> {
  const { configPath, overrides, rest } = parseArgs(process.argv.slice(2));
  const [command, ...args] = rest;
  const p = buildPlan(loadTestbedConfig({ path: configPath, overrides }));
  const log = (m: string): void => console.log(`[testbed] ${m}`);
  switch (command) {
    case 'up':
      up(p, log);
      console.log(status(p).text);
      return 0;
    case 'down': {
      const r = await down(p, log);
      if (r.leftovers.length) {
        console.error(`left behind: ${r.leftovers.join(', ')}`);
        return 1;
      }
      return 0;
    }
    case 'status': {
      const s = status(p);
      console.log(s.text);
      return s.complete ? 0 : 3;
    }
    case 'exec':
      return execIn(p, args[0] ?? '', args.slice(1));
    default:
      console.error(command === undefined ? USAGE : `unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(`[testbed] ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
