// peak-xdp on the testbed: daemon config per LB node (pure), availability check, start/stop of daemons and decap.
import { existsSync, mkdirSync, openSync, closeSync, writeFileSync, readFileSync, renameSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import YAML from 'yaml';
import { logTimeMs } from '../../src/log';
import { packageRoot } from '../../src/paths';
import { Host, lbPinRoot, Plan, vipBackends } from './plan';
import { run, runIn } from './sh';
import { nsPids } from './topology';
import { signalPid } from '../lib/pids';

/** The compiled CLI the testbed runs inside the namespaces. */
export const CLI_JS = join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const ADMIN_LISTEN = '127.0.0.1:9470';

/** The daemon config for one LB node: keys from the daemon issue (interface, bgp, vips, ...). */
export function daemonConfig(p: Plan, lb: Host, o: { backends: Host[] }): Record<string, unknown> {
  const l = lb.link!;
  return {
    interface: l.hostIf,
    xdpMode: 'native',
    // Every encapsulated frame goes to the router's side of this LB's link (fixed MACs in the plan).
    nextHopMac: l.routerMac,
    encapSource: [`${l.hostV4.address}/32`, `${l.hostV6.address}/128`],
    mtu: l.mtu,
    admin: { listen: ADMIN_LISTEN },
    bgp: {
      asn: lb.asn,
      routerId: l.hostV4.address,
      peers: [
        { address: l.routerV4.address, asn: p.routerAsn, holdTime: 3, families: ['ipv4'] },
        { address: l.routerV6.address, asn: p.routerAsn, holdTime: 3, families: ['ipv6'] },
      ],
    },
    // A VIP none of this deployment's backends serves is left out (the daemon would only withdraw it).
    vips: p.vips
      .filter((v) => vipBackends(v, o.backends).length > 0)
      .map((v) => ({
        name: v.name,
        address: v.address,
        port: v.port,
        protocol: 'tcp',
        healthCheck: {
          type: 'http',
          port: p.backendPort,
          path: '/',
          intervalMs: 500,
          timeoutMs: 300,
          rise: 2,
          fall: 2,
        },
        backends: vipBackends(v, o.backends).map((b) => ({
          address: v.family === 4 ? b.link!.hostV4.address : b.link!.hostV6.address,
          weight: 1,
        })),
      })),
  };
}

/** null when peak-xdp can run on the testbed; otherwise what is missing, by name. */
export function peakUnavailable(): string | null {
  if (!existsSync(CLI_JS))
    return `peak-xdp CLI not built: ${CLI_JS} is missing (src/cli/main.ts from the daemon/CLI issue is not merged yet)`;
  const help = run('node', [CLI_JS, '--help'], { allowFail: true, timeoutMs: 20_000 });
  const missing = ['daemon', 'decap'].filter((c) => !new RegExp(`\\b${c}\\b`).test(help));
  if (missing.length) return `peak-xdp CLI has no ${missing.join(' / ')} command (\`${CLI_JS} --help\`)`;
  return null;
}

function lbDir(p: Plan, lb: Host): string {
  return join(p.stateDir, lb.name);
}

/** The config file of an LB node's daemon (the daemon reloads it on change and on SIGHUP). */
export function daemonConfigPath(p: Plan, lb: Host): string {
  return join(lbDir(p, lb), 'peak-xdp.yaml');
}

/** Replaces an LB node's daemon config in one rename (a reload never reads half a file); text as given. */
export function writeDaemonConfig(p: Plan, lb: Host, text: string): void {
  mkdirSync(lbDir(p, lb), { recursive: true });
  const file = daemonConfigPath(p, lb);
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/**
 * Starts `peak-xdp daemon` in an LB namespace (detached, logs to the state dir); returns the pid. The config is
 * daemonConfig(p, lb, o), or `o.config` when given.
 */
export function startDaemon(
  p: Plan,
  lb: Host,
  o: { backends: Host[]; config?: Record<string, unknown> },
): number {
  const dir = lbDir(p, lb);
  mkdirSync(dir, { recursive: true });
  const cfg = daemonConfigPath(p, lb);
  writeDaemonConfig(p, lb, YAML.stringify(o.config ?? daemonConfig(p, lb, o)));
  const logFd = openSync(join(dir, 'daemon.log'), 'a');
  const pins = lbPinRoot(p, lb);
  mkdirSync(pins, { recursive: true });
  const child = spawn(
    'ip',
    ['netns', 'exec', lb.netns, 'node', CLI_JS, 'daemon', '--config', cfg, '--bpffs', pins],
    {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, PEAK_XDP_BPFFS: pins },
    },
  );
  closeSync(logFd);
  child.unref();
  writeFileSync(join(dir, 'daemon.pid'), String(child.pid));
  return child.pid!;
}

/** Pids of the peak-xdp daemon processes inside an LB node's namespace. */
export function daemonPids(lb: Host): number[] {
  return nsPids(lb.netns).filter((pid) => {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return cmd.includes(CLI_JS) && cmd.includes('daemon');
    } catch {
      return false; // Exited between listing and reading.
    }
  });
}

/** Stops the daemon of an LB node: SIGTERM (graceful: withdraw) or SIGKILL (crash). */
export function stopDaemon(p: Plan, lb: Host, o: { signal: NodeJS.Signals }): void {
  for (const pid of daemonPids(lb)) {
    try {
      signalPid(pid, o.signal);
    } catch {
      // Exited already.
    }
  }
}

/** The last lines of an LB's daemon log (for error messages). */
export function daemonLogTail(p: Plan, lb: Host, lines = 15): string {
  const f = join(lbDir(p, lb), 'daemon.log');
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
}

/** Attaches bpf/decap on a backend through the CLI. */
export function attachDecap(p: Plan, be: Host): void {
  // Pins go to the shared bpffs: /sys/fs/bpf is not mounted inside `ip netns exec`.
  runIn(
    be.netns,
    'node',
    [CLI_JS, 'decap', 'attach', '--interface', be.link!.hostIf, '--bpffs', p.bpffsDir],
    {
      timeoutMs: 30_000,
    },
  );
}

/** Removes XDP from an LB's or backend's own interface (inside namespaces the testbed created). */
export function detachXdpIn(h: Host): void {
  runIn(h.netns, 'ip', ['link', 'set', 'dev', h.link!.hostIf, 'xdp', 'off'], { allowFail: true });
}

/** Milestones of one daemon start, in ms after `sinceEpochMs`, from its pino JSON log (null: not seen). */
export interface StartMilestones {
  started: number | null;
  established: number | null;
  announced: number | null;
}

/** Reads the first 'daemon started', 'bgp: established' and announcing 'bgp: sent update' (to `peer`) after a time. */
export function startMilestones(o: { log: string; sinceEpochMs: number; peer: string }): StartMilestones {
  const m: StartMilestones = { started: null, established: null, announced: null };
  for (const line of o.log.split('\n')) {
    if (!line.startsWith('{')) continue;
    let j: { time?: unknown; msg?: string; peer?: string; announced?: number };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      continue; // A torn last line while the daemon writes.
    }
    const t = logTimeMs(j.time);
    if (t === null || t < o.sinceEpochMs) continue;
    const at = t - o.sinceEpochMs;
    if (j.msg === 'daemon started') m.started ??= at;
    else if (j.msg === 'bgp: established' && j.peer === o.peer) m.established ??= at;
    else if (j.msg === 'bgp: sent update' && j.peer === o.peer && (j.announced ?? 0) > 0) m.announced ??= at;
  }
  return m;
}

/** The whole daemon log of an LB node ('' if none yet). */
export function daemonLog(p: Plan, lb: Host): string {
  const f = join(lbDir(p, lb), 'daemon.log');
  return existsSync(f) ? readFileSync(f, 'utf8') : '';
}
