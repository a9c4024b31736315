// What every CLI command shares: finding the pinned balancer, opening it, and asking the daemon (optional).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BALANCER_PROGRAM, KernelDatapath } from '../datapath/kernel';
import { bpffsRoot, checkBpffs, currentNetnsName, pinDir } from '../daemon/pins';
import { CliError } from './output';

export interface GlobalArgs {
  bpffs?: string;
  interface?: string;
  json?: boolean;
  admin?: string;
}

export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new CliError(`${what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo`, 77);
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
    if (!existsSync(join(dir, BALANCER_PROGRAM)))
      throw new CliError(
        `nothing attached: no pinned balancer for ${a.interface} under ${base} (is the daemon running here? --bpffs / PEAK_XDP_BPFFS set the bpffs root)`,
        3,
      );
    return { dir, ifname: a.interface };
  }
  let names: string[] = [];
  try {
    names = readdirSync(base).filter((n) => existsSync(join(base, n, BALANCER_PROGRAM)));
  } catch {
    // no directory: nothing pinned
  }
  if (names.length === 0)
    throw new CliError(
      `nothing attached: no pinned balancer under ${base} (is the daemon running in this network namespace? --bpffs / PEAK_XDP_BPFFS set the bpffs root)`,
      3,
    );
  if (names.length > 1)
    throw new CliError(
      `balancers are pinned for several interfaces (${names.join(', ')}): pick one with --interface`,
      2,
    );
  return { dir: join(base, names[0]!), ifname: names[0]! };
}

/** Opens the pinned balancer for reading/writing; the caller closes it. */
export function openPinned(a: GlobalArgs): { dp: KernelDatapath; dir: string; ifname: string } {
  requireRoot('reading the pinned maps');
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
      backends: { id: number; address: string; state: string; health: string; weight: number }[];
    }[];
  } | null;
  bgp?: unknown;
  health?: unknown[];
  readiness?: { ready: boolean; reasons: string[] };
}

/** id -> name maps from the daemon, when it answers. */
export async function daemonNames(a: GlobalArgs): Promise<{
  vips: Map<number, string>;
  backendVip: Map<number, string>;
  state: DaemonState | null;
}> {
  const st = await fetchAdmin<DaemonState>(a, '/state');
  const vips = new Map<number, string>();
  const backendVip = new Map<number, string>();
  for (const v of st?.desired?.vips ?? []) {
    vips.set(v.id, v.name);
    for (const b of v.backends) backendVip.set(b.id, v.name);
  }
  return { vips, backendVip, state: st };
}
