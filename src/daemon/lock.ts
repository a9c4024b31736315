// One owner per pin directory: an flock(2) on a file under /run/peak-xdp/locks, held by a daemon for its
// whole life (and by `peak-xdp attach`/`detach` while they run). The kernel drops it when the holder dies.
import {
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileLocks } from '../datapath/bpf';
import { untrustedDirReason } from './pins';

/**
 * Under /run, not on bpffs: bpffs holds only BPF objects (no regular files), and /run is the same for every
 * `ip netns exec` (which remounts /sys). Kept apart from the bpffs the testbed mounts at /run/peak-xdp/bpffs.
 */
export const DEFAULT_LOCK_DIR = '/run/peak-xdp/locks';

/** The lock directory: PEAK_XDP_LOCK_DIR, else /run/peak-xdp/locks. */
export function lockDir(): string {
  return process.env.PEAK_XDP_LOCK_DIR ?? DEFAULT_LOCK_DIR;
}

/** Who holds a pin directory's lock, as far as we can tell. */
export interface LockHolder {
  /** From /proc/locks (in our PID namespace) or, failing that, from the holder's note in the file. */
  pid: number | null;
  /** What the holder runs: "daemon", "attach", "detach". */
  command: string | null;
  since: string | null;
}

/** The pin directory is held by another process (a daemon, or a CLI command writing it). */
export class PinDirBusy extends Error {
  constructor(
    readonly pinDir: string,
    readonly lockPath: string,
    readonly holder: LockHolder,
  ) {
    super(
      `pin directory ${pinDir} is held by ${describeHolder(holder)} through the lock ${lockPath}: one daemon ` +
        `per interface and network namespace; stop that one first`,
    );
    this.name = 'PinDirBusy';
  }
}

/** "peak-xdp daemon (pid 123, since ...)". */
export function describeHolder(h: LockHolder): string {
  const what = h.command ? `peak-xdp ${h.command}` : 'another peak-xdp process';
  const details = [h.pid !== null ? `pid ${h.pid}` : 'pid unknown', ...(h.since ? [`since ${h.since}`] : [])];
  return `${what} (${details.join(', ')})`;
}

export interface PinLock {
  readonly path: string;
  /** Drops the lock (and its file); idempotent. Process exit drops it too. */
  release(): void;
}

export interface PinLockOptions {
  /** The bpffs root (its device and inode name the lock, so every path to the same bpffs shares it). */
  bpffs: string;
  netns: string;
  ifname: string;
  /** The pin directory (for messages and the holder's note). */
  pinDir: string;
  /** What takes the lock ("daemon", "attach", "detach"). */
  command: string;
  /** Default lockDir(). */
  dir?: string;
}

/**
 * The lock file of a pin directory: named after the bpffs instance (device and inode of its root, the same
 * through every mount of it) plus the network namespace and interface of the pin directory under it.
 */
export function pinLockPath(o: Pick<PinLockOptions, 'bpffs' | 'netns' | 'ifname' | 'dir'>): string {
  const root = statSync(o.bpffs, { bigint: true });
  // '+' cannot occur in a netns or interface name (pins.ts SAFE): the name splits one way only.
  return join(o.dir ?? lockDir(), `${o.netns}+${o.ifname}+bpffs-${root.dev}-${root.ino}.lock`);
}

/** major:minor of a dev_t as glibc encodes it (what /proc/locks prints, in hex). */
export function devMajorMinor(dev: bigint): { major: number; minor: number } {
  return {
    major: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)),
    minor: Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn)),
  };
}

/** The pid holding an flock on the file (major, minor, inode) in a /proc/locks text; null when none shown. */
export function flockHolderPid(
  procLocks: string,
  file: { major: number; minor: number; ino: bigint },
): number | null {
  for (const line of procLocks.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF"; waiters are "1: -> FLOCK ...".
    const m = /^\d+:\s+FLOCK\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (!m) continue;
    if (parseInt(m[2]!, 16) !== file.major || parseInt(m[3]!, 16) !== file.minor) continue;
    if (BigInt(m[4]!) !== file.ino) continue;
    const pid = Number(m[1]);
    // 0: the holder is not visible in our PID namespace.
    return pid > 0 ? pid : null;
  }
  return null;
}

/** Parses the holder's note ({"pid":..,"command":..,"since":..}); nulls for anything unreadable. */
export function parseHolderNote(text: string): LockHolder {
  try {
    const j = JSON.parse(text) as Record<string, unknown>;
    return {
      pid: Number.isInteger(j.pid) ? (j.pid as number) : null,
      command: typeof j.command === 'string' ? j.command : null,
      since: typeof j.since === 'string' ? j.since : null,
    };
  } catch {
    return { pid: null, command: null, since: null };
  }
}

function readHolder(fd: number): LockHolder {
  const buf = Buffer.alloc(4096);
  let note: LockHolder = { pid: null, command: null, since: null };
  try {
    note = parseHolderNote(buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8'));
  } catch {
    // unreadable: the pid may still come from /proc/locks
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    const pid = flockHolderPid(readFileSync('/proc/locks', 'utf8'), {
      ...devMajorMinor(st.dev),
      ino: st.ino,
    });
    // /proc/locks names the pid as our PID namespace sees it (a containerised holder's note has its own).
    if (pid !== null) note = { ...note, pid };
  } catch {
    // no /proc/locks: the note's pid stands
  }
  return note;
}

/**
 * A lock directory others could write to lets them steal or fake locks: it must be a real directory owned
 * by root or us and writable by no one else; its parent may be shared only with the sticky bit (e.g. /tmp).
 */
function ensureLockDir(dir: string): void {
  const parent = dirname(dir);
  for (const d of [parent, dir]) {
    try {
      mkdirSync(d, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new Error(`lock directory ${d}: ${(e as Error).message}`);
    }
  }
  const p = lstatSync(parent);
  if (!p.isDirectory() || ((p.mode & 0o022) !== 0 && (p.mode & 0o1000) === 0))
    throw new Error(
      `lock directory ${dir}: its parent ${parent} is not a directory, or is writable by others without the sticky bit: refusing it (set PEAK_XDP_LOCK_DIR)`,
    );
  const st = lstatSync(dir);
  const why = untrustedDirReason(
    dir,
    { uid: st.uid, mode: st.mode, isDirectory: st.isDirectory() },
    typeof process.geteuid === 'function' ? process.geteuid() : 0,
  );
  if (why) throw new Error(`refusing the lock directory: ${why} (fix it, or set PEAK_XDP_LOCK_DIR)`);
}

/**
 * Takes the pin directory's lock without waiting, or throws PinDirBusy naming the holder. The fd is
 * O_CLOEXEC (Node opens every file so): a child the holder spawns cannot keep the lock alive after it.
 */
export function acquirePinLock(o: PinLockOptions): PinLock {
  const dir = o.dir ?? lockDir();
  ensureLockDir(dir);
  const path = pinLockPath({ ...o, dir });
  // The last holder unlinks the file on release: a file we opened just before that is stale, so retry.
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openLockFile(path);
    } catch (e) {
      throw new Error(`lock file ${path} for ${o.pinDir}: ${(e as Error).message}`);
    }
    let kept = false;
    try {
      if (!fileLocks.tryExclusive(fd)) throw new PinDirBusy(o.pinDir, path, readHolder(fd));
      const mine = fstatSync(fd, { bigint: true });
      let now: ReturnType<typeof lstatSync> | undefined;
      try {
        now = lstatSync(path, { bigint: true });
      } catch {
        continue;
      }
      if (now.ino !== mine.ino || now.dev !== mine.dev) continue;
      const note = JSON.stringify({ pid: process.pid, command: o.command, since: new Date().toISOString() });
      ftruncateSync(fd, 0);
      writeSync(fd, `${note}\n`, 0);
      kept = true;
      return new HeldLock(path, fd, mine.ino);
    } finally {
      if (!kept) closeSync(fd);
    }
  }
  throw new Error(`lock file ${path} for ${o.pinDir} kept being replaced while taking it`);
}

function openLockFile(path: string): number {
  // O_NOFOLLOW: a symlink planted in the lock directory is not followed.
  return openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
}

class HeldLock implements PinLock {
  private fd: number;
  constructor(
    readonly path: string,
    fd: number,
    private readonly ino: bigint,
  ) {
    this.fd = fd;
  }

  release(): void {
    if (this.fd < 0) return;
    // Unlinked while still held, so no one can lock this inode and believe it current afterwards.
    try {
      if (lstatSync(this.path, { bigint: true }).ino === this.ino) unlinkSync(this.path);
    } catch {
      // already gone
    }
    closeSync(this.fd);
    this.fd = -1;
  }
}
