// Where a node's programs and maps are pinned: <bpffs>/peak-xdp/<network namespace>/<interface>/.
import { lstatSync, mkdirSync, readdirSync, statfsSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

export const DEFAULT_BPFFS = '/sys/fs/bpf';

/** The bpffs root: --bpffs flag, then PEAK_XDP_BPFFS, then /sys/fs/bpf. */
export function bpffsRoot(flag?: string): string {
  return flag ?? process.env.PEAK_XDP_BPFFS ?? DEFAULT_BPFFS;
}

/**
 * A name for the current network namespace: its `ip netns` name (/run/netns), else "root" (the host's, as a
 * hostNetwork DaemonSet sees it; also any unnamed namespace, where /proc/1 cannot tell us more).
 */
export function currentNetnsName(): string {
  const self = statSync('/proc/self/ns/net');
  try {
    const init = statSync('/proc/1/ns/net');
    if (init.ino === self.ino && init.dev === self.dev) return 'root';
  } catch {
    // /proc/1 not readable (sandboxes, containers with their own PID namespace): try the names.
  }
  for (const dir of ['/run/netns', '/var/run/netns']) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        const st = statSync(join(dir, n));
        if (st.ino === self.ino && st.dev === self.dev) return n;
      } catch {
        // A stale entry: skip.
      }
    }
  }
  return 'root';
}

const BPF_FS_MAGIC = 0xcafe4a11;

/** Throws a clear error unless `root` is a mounted bpffs (pins elsewhere fail, or vanish). */
export function checkBpffs(root: string): void {
  let type: number;
  try {
    type = statfsSync(root).type;
  } catch (e) {
    throw new Error(`bpffs root ${root}: ${(e as Error).message} (mount one: mount -t bpf bpf ${root})`);
  }
  if (type !== BPF_FS_MAGIC)
    throw new Error(
      `bpffs root ${root} is not a bpffs mount` +
        (root.startsWith('/sys')
          ? ' (inside `ip netns exec`, /sys/fs/bpf is not mounted: mount a bpffs outside /sys, e.g. /run/peak-xdp/bpffs, and pass --bpffs or PEAK_XDP_BPFFS)'
          : ` (mount -t bpf bpf ${root})`),
    );
}

const SAFE = /^[A-Za-z0-9_.@-]+$/;

/** The pin directory of one balancer instance. */
export function pinDir(o: { bpffs: string; netns: string; ifname: string }): string {
  for (const [k, v] of [
    ['netns', o.netns],
    ['interface', o.ifname],
  ] as const) {
    if (!SAFE.test(v) || v === '.' || v === '..')
      throw new TypeError(`${k} "${v}" cannot be used in a pin path`);
  }
  return join(o.bpffs, 'peak-xdp', o.netns, o.ifname);
}

/** What decides whether a directory on the pin path can be trusted. */
export interface DirFacts {
  uid: number;
  mode: number;
  isDirectory: boolean;
}

/** The mode directories under the pin root are created with: only their owner may enter them. */
export const PIN_DIR_MODE = 0o700;

/**
 * Why a directory on a pin path cannot be trusted, or null: it must be a real directory (not a symlink),
 * owned by root or by this process's user, and writable by nobody else (or others could move the pins away,
 * swap them, or plant their own).
 */
export function untrustedDirReason(path: string, st: DirFacts, euid: number): string | null {
  if (!st.isDirectory) return `${path} is not a directory (a symlink or file planted there?)`;
  if (st.uid !== 0 && st.uid !== euid)
    return `${path} is owned by uid ${st.uid}, not by root or this process's user (uid ${euid})`;
  if ((st.mode & 0o022) !== 0)
    return `${path} is writable by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  return null;
}

/** A pin path that others could tamper with. */
export class UntrustedPinPath extends Error {
  constructor(reason: string) {
    super(
      `refusing the pin path: ${reason}. Another user could move or replace the balancer's pins ` +
        `(a restart would then lose the connection table and leak the old maps). Inspect it, then remove it ` +
        `or fix its owner and mode (pin directories are created ${PIN_DIR_MODE.toString(8).padStart(4, '0')}, ` +
        `owned by the daemon's user)`,
    );
    this.name = 'UntrustedPinPath';
  }
}

const euid = (): number => (typeof process.geteuid === 'function' ? process.geteuid() : 0);

/**
 * Checks every directory from <bpffs>/peak-xdp down to `dir` (and the bpffs root itself), creating the
 * missing ones mode 0700 when `create`. Throws UntrustedPinPath; a missing directory is fine without
 * `create` (nothing is there to trust yet). A directory someone plants between our mkdir and our check is
 * still caught: the check runs after the mkdir, on what is there.
 */
export function securePinPath(o: { bpffs: string; dir: string; create: boolean }): void {
  const rel = relative(o.bpffs, o.dir);
  if (rel.split(sep)[0] !== 'peak-xdp')
    throw new TypeError(`pin directory ${o.dir} is not under ${join(o.bpffs, 'peak-xdp')}`);
  const root = statSync(o.bpffs);
  // bpffs roots are 1777 by default: the sticky bit keeps others from renaming our entries.
  if ((root.mode & 0o022) !== 0 && (root.mode & 0o1000) === 0)
    throw new UntrustedPinPath(
      `bpffs root ${o.bpffs} is writable by group or others without the sticky bit (mode ${(root.mode & 0o7777).toString(8)}), so anyone can rename the pin root away`,
    );
  let path = o.bpffs;
  for (const part of rel.split(sep)) {
    path = join(path, part);
    if (o.create) {
      try {
        mkdirSync(path, { mode: PIN_DIR_MODE });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
          throw new Error(`create pin directory ${path}: ${(e as Error).message}`);
      }
    }
    let st;
    try {
      st = lstatSync(path);
    } catch (e) {
      if (!o.create && (e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new Error(`pin directory ${path}: ${(e as Error).message}`);
    }
    const why = untrustedDirReason(
      path,
      { uid: st.uid, mode: st.mode, isDirectory: st.isDirectory() },
      euid(),
    );
    if (why) throw new UntrustedPinPath(why);
  }
}
