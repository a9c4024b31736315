// What every CLI command shares: finding the pinned balancer, opening it, and asking the daemon (optional).
import { existsSync, readdirSync } from 'node:fs';
import type { Argv } from 'yargs';
import { join } from 'node:path';
import { BpfProgram, ifNameToIndex, queryXdp } from '../datapath/bpf';
import { BALANCER_PROGRAM, KernelDatapath } from '../datapath/kernel';
import { acquirePinLock, describeHolder, PinDirBusy, PinLock } from '../daemon/lock';
import {
  bpffsRoot,
  checkBpffs,
  currentNetnsName,
  pinDir,
  securePinPath,
  UntrustedPinPath,
} from '../daemon/pins';
import { CapName, privilegeProblem } from './capabilities';
import { CliError } from './output';

export interface GlobalArgs {
  bpffs?: string;
  interface?: string;
  json?: boolean;
  admin?: string;
}

/** yargs turns a repeated string flag into an array: say so instead of failing later on a bad path. */
export const once =
  (flag: string) =>
  (v: unknown): unknown => {
    if (Array.isArray(v))
      throw new CliError(`--${flag}: given ${v.length} times (${v.join(', ')}): give it once`, 2);
    return v;
  };

// The shared options, each added only by the commands that use it (so --help lists what a command reads).

/** --json: the versioned document of output.ts (jsonDocument). */
export const withJson = <T>(y: Argv<T>): Argv<T> =>
  y.option('json', {
    type: 'boolean',
    default: false,
    describe: 'machine-readable output (peak-xdp/v1 document; errors too)',
  }) as unknown as Argv<T>;

/** --bpffs: where the pins are. */
export const withBpffs = <T>(y: Argv<T>): Argv<T> =>
  y.option('bpffs', {
    type: 'string',
    describe: 'bpffs root of the pins (default: env PEAK_XDP_BPFFS or /sys/fs/bpf)',
    coerce: once('bpffs'),
  }) as unknown as Argv<T>;

/** --bpffs and --interface: which pinned balancer. */
export const withPins = <T>(
  y: Argv<T>,
  describe = 'the balanced interface (default: the only one pinned)',
): Argv<T> =>
  withBpffs(y).option('interface', {
    alias: 'i',
    type: 'string',
    describe,
    coerce: once('interface'),
  }) as unknown as Argv<T>;

/** --admin: where the daemon's admin API answers. */
export const withAdmin = <T>(y: Argv<T>): Argv<T> =>
  y.option('admin', {
    type: 'string',
    describe: 'daemon admin API HOST:PORT (default: env PEAK_XDP_ADMIN or 127.0.0.1:9470)',
    coerce: once('admin'),
  }) as unknown as Argv<T>;

/**
 * Exits 77 unless this process has the capabilities for `what` (default CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON):
 * root has them, and so may another user.
 */
export function requireCapabilities(what: string, needs?: readonly CapName[]): void {
  const why = privilegeProblem(what, { needs });
  if (why) throw new CliError(why, 77);
}

/**
 * For a command that writes the datapath (attach, detach): refuses an untrusted pin path, then takes the pin
 * directory's lock until the process exits (or release()), refusing while a daemon (or another command)
 * holds it: the daemon owns its balancer and would undo the change.
 */
export function holdPins(
  a: GlobalArgs,
  o: { ifname: string; dir: string; command: 'attach' | 'detach' },
): PinLock {
  const bpffs = bpffsRoot(a.bpffs);
  try {
    securePinPath({ bpffs, dir: o.dir, create: false });
    return acquirePinLock({
      bpffs,
      netns: currentNetnsName(),
      ifname: o.ifname,
      pinDir: o.dir,
      command: o.command,
    });
  } catch (e) {
    if (e instanceof UntrustedPinPath) throw new CliError(e.message, 3);
    if (!(e instanceof PinDirBusy)) throw new CliError((e as Error).message, 1);
    const daemon = e.holder.command === 'daemon';
    throw new CliError(
      `${describeHolder(e.holder)} holds ${o.dir} (lock ${e.lockPath}): ` +
        (daemon
          ? `the daemon owns this balancer and re-attaches it within seconds: stop the daemon first` +
            (o.command === 'detach' ? ' (with --detach-on-exit it detaches on exit), then detach' : '')
          : `wait for it to finish`),
      1,
    );
  }
}

/**
 * The XDP program attached to `ifname` when it looks like a balancer whose pins are gone: a program named
 * like ours, or one whose name we may not read (getting a program by id needs CAP_SYS_ADMIN). Null otherwise.
 */
export function unpinnedBalancer(ifname: string, o: { nameUnknownCounts: boolean }): number | null {
  let progId = 0;
  try {
    progId = queryXdp({ ifname }).progId;
  } catch {
    return null;
  }
  if (progId === 0) return null;
  try {
    const p = BpfProgram.fromId(progId);
    try {
      return p.info().name === BALANCER_PROGRAM ? progId : null;
    } finally {
      p.close();
    }
  } catch {
    return o.nameUnknownCounts ? progId : null;
  }
}

function pinsMissing(dir: string, ifname: string, progId: number): CliError {
  return new CliError(
    `pin directory missing: XDP program ${progId} is attached to ${ifname} but nothing is pinned at ${dir} ` +
      `(removed or moved away?). A running daemon pins its balancer again within seconds; without one, ` +
      `\`peak-xdp detach --interface ${ifname}\` stops forwarding and a daemon start loads a fresh balancer`,
    3,
  );
}

/** Interfaces of this network namespace (/sys/class/net is per namespace under `ip netns exec`). */
function interfaces(): string[] {
  try {
    return readdirSync('/sys/class/net');
  } catch {
    return [];
  }
}

/** Exits 3 unless the interface exists in this network namespace (every command taking --interface says it so). */
export function requireInterface(ifname: string): void {
  try {
    ifNameToIndex(ifname);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENODEV') throw e;
    throw new CliError(`--interface: no interface "${ifname}" in this network namespace`, 3);
  }
}

/** The pin directory of the balancer this command is about (--interface, or the only one pinned here). */
export function resolvePins(a: GlobalArgs): { dir: string; ifname: string } {
  const root = bpffsRoot(a.bpffs);
  try {
    checkBpffs(root);
  } catch (e) {
    throw new CliError((e as Error).message, 3);
  }
  const netns = currentNetnsName();
  const base = join(root, 'peak-xdp', netns);
  if (a.interface) {
    const dir = pinDir({ bpffs: root, netns, ifname: a.interface });
    if (!existsSync(join(dir, BALANCER_PROGRAM))) {
      const progId = unpinnedBalancer(a.interface, { nameUnknownCounts: true });
      if (progId !== null) throw pinsMissing(dir, a.interface, progId);
      requireInterface(a.interface);
      throw new CliError(
        `nothing attached: no pinned balancer for ${a.interface} under ${base} (is the daemon running here? --bpffs / PEAK_XDP_BPFFS set the bpffs root)`,
        3,
      );
    }
    return { dir, ifname: a.interface };
  }
  let names: string[] = [];
  try {
    names = readdirSync(base).filter((n) => existsSync(join(base, n, BALANCER_PROGRAM)));
  } catch {
    // no directory: nothing pinned
  }
  if (names.length === 0) {
    // Only programs we can tell are balancers: this namespace may run other XDP programs.
    for (const ifname of interfaces()) {
      const progId = unpinnedBalancer(ifname, { nameUnknownCounts: false });
      if (progId !== null) throw pinsMissing(join(base, ifname), ifname, progId);
    }
    throw new CliError(
      `nothing attached: no pinned balancer under ${base} (is the daemon running in this network namespace? --bpffs / PEAK_XDP_BPFFS set the bpffs root)`,
      3,
    );
  }
  if (names.length > 1)
    throw new CliError(
      `balancers are pinned for several interfaces (${names.join(', ')}): pick one with --interface`,
      2,
    );
  return { dir: join(base, names[0]!), ifname: names[0]! };
}

/** Opens the pinned balancer for reading/writing; the caller closes it. */
export function openPinned(a: GlobalArgs): { dp: KernelDatapath; dir: string; ifname: string } {
  requireCapabilities('reading the pinned maps');
  const p = resolvePins(a);
  return { ...p, dp: KernelDatapath.adopt({ pinDir: p.dir }) };
}

export function adminUrl(a: GlobalArgs): string {
  const v = a.admin ?? process.env.PEAK_XDP_ADMIN ?? '127.0.0.1:9470';
  return v.startsWith('http') ? v : `http://${v}`;
}

/** GET a JSON document from the daemon's admin API; null when no daemon answers (short timeout). */
export async function fetchAdmin<T>(a: GlobalArgs, path: string, timeoutMs = 1500): Promise<T | null> {
  try {
    const r = await fetch(`${adminUrl(a)}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok && r.status !== 503) return null;
    return (await r.json()) as T;
  } catch {
    return null;
  }
}

/** The subset of the daemon's /state the CLI reads (names for ids). */
export interface DaemonState {
  interface?: string;
  desired?: {
    vips: {
      name: string;
      id: number;
      address: string;
      port: number;
      protocol: string;
      backends: {
        id: number;
        address: string;
        state: string;
        health: string;
        weight: number;
        drain?: boolean;
        /** A runtime override (peak-xdp drain / weight) in force, if any. */
        override?: {
          drain?: boolean;
          drainAt?: string;
          weight?: number;
          weightAt?: string;
          at: string;
        } | null;
      }[];
    }[];
    /** Names of the VIPs failing open (every serving backend failing its checks, all treated as up). */
    failOpenVips?: string[];
  } | null;
  bgp?: unknown;
  /** Per health-check target (health/monitor.ts TargetSnapshot). */
  health?: {
    vip: string;
    address: string;
    type: string;
    status: string;
    last: { ok: boolean; detail: string; durationMs: number; at: number } | null;
  }[];
  readiness?: { ready: boolean; reasons: string[] };
  reloadError?: string | null;
}

/** The /state sections DaemonState holds (the daemon sends only those: the whole document is ~200 MB at 512 VIPs x
 * 1,000 backends). A daemon of an older build ignores the parameter and sends them all. */
const NAME_SECTIONS = ['interface', 'desired', 'readiness', 'reloadError'] as const;

/** /state with only `sections` (comma-separated in the query). */
export function statePath(sections: readonly string[]): string {
  return `/state?sections=${sections.join(',')}`;
}

/** id -> name maps from the daemon, when it answers; `health`: with the last check of every target (costly at
 * scale: one entry per membership). */
export async function daemonNames(
  a: GlobalArgs,
  o: { health?: boolean } = {},
): Promise<{
  vips: Map<number, string>;
  backendVip: Map<number, string>;
  state: DaemonState | null;
}> {
  const st = await fetchAdmin<DaemonState>(a, statePath([...NAME_SECTIONS, ...(o.health ? ['health'] : [])]));
  const vips = new Map<number, string>();
  const backendVip = new Map<number, string>();
  for (const v of st?.desired?.vips ?? []) {
    vips.set(v.id, v.name);
    for (const b of v.backends) backendVip.set(b.id, v.name);
  }
  return { vips, backendVip, state: st };
}
