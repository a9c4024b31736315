// Following a config path through symlinks and directory replacement: which directories decide what the path
// reads, a set of directory watches that is re-made when a directory is replaced or a watch fails, identities.
import type { BigIntStats, WatchListener } from 'node:fs';
import { watch as fsWatch } from 'node:fs';
import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';

/** Symlinks followed at most (the kernel's own limit is 40). */
const MAX_LINKS = 40;
/** A directory watch that keeps failing the same way is reported again after this long (ms). */
const REPORT_AGAIN_MS = 60_000;

/** Which file and its size and times: equal identities mean unchanged content, unless written within the
 * timestamp granularity (see FileConfigSource's racy check). */
export function statIdentity(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** statIdentity of the file `path` resolves to now, or "missing: <code>". */
export async function pathIdentity(path: string): Promise<string> {
  try {
    return statIdentity(await stat(path, { bigint: true }));
  } catch (e) {
    return `missing: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/** A directory's identity (device, inode, birth time): another one after it was removed and recreated. */
async function dirIdentity(dir: string): Promise<string | null> {
  try {
    const st = await stat(dir, { bigint: true });
    return st.isDirectory() ? `${st.dev}:${st.ino}:${st.birthtimeNs}` : null;
  } catch {
    return null;
  }
}

/**
 * The directories whose entries decide what `path` reads: the directory of the path and of every symlink it
 * goes through, and the directory of the file it resolves to (a ConfigMap's `..data` swap happens in the
 * first, an edit of a symlink's target in the last). A directory that does not exist (removed, not yet
 * recreated) is replaced by its nearest existing ancestor, whose events tell when it is back.
 */
export async function dirsToWatch(path: string): Promise<string[]> {
  const dirs: string[] = [];
  let p = resolve(path);
  for (let i = 0; i <= MAX_LINKS; i++) {
    dirs.push(dirname(p));
    let target: string;
    try {
      if (!(await lstat(p)).isSymbolicLink()) break;
      target = await readlink(p);
    } catch {
      break;
    }
    p = resolve(dirname(p), target);
  }
  try {
    dirs.push(dirname(await realpath(path)));
  } catch {
    // Does not resolve now (missing, a loop): the link directories above are what can change that.
  }
  const out: string[] = [];
  for (const d of dirs) {
    let e = d;
    while ((await dirIdentity(e)) === null && dirname(e) !== e) e = dirname(e);
    if (!out.includes(e)) out.push(e);
  }
  return out;
}

/** What a directory watch must offer (fs.FSWatcher has it). */
export interface WatchHandle {
  close(): void;
  on(event: 'error', listener: (e: Error) => void): unknown;
}

/** Makes a directory watch: fs.watch by default; another for file systems without events (and tests). */
export type WatchFn = (dir: string, listener: WatchListener<string>) => WatchHandle;

export const defaultWatch: WatchFn = (dir, listener) => fsWatch(dir, listener);

interface Watch {
  id: string;
  handle: WatchHandle;
  /** Gone from under us (the directory itself was removed or renamed, or the watch failed): make anew. */
  stale: boolean;
}

export interface DirWatchesOptions {
  watch: WatchFn;
  /** Something changed in a watched directory (or a watch failed): check the file. */
  onEvent: () => void;
  /** A watch failed or could not be made (reported once per directory and message a minute). */
  onError: (e: Error) => void;
}

/** A set of directory watches, each re-made when its directory is replaced, removed or its watch fails. */
export class DirWatches {
  private readonly o: DirWatchesOptions;
  private readonly watches = new Map<string, Watch>();
  private readonly reported = new Map<string, { message: string; at: number }>();
  private closed = false;

  constructor(o: DirWatchesOptions) {
    this.o = o;
  }

  /** Watches exactly `dirs`; a directory that is another one than when it was watched is watched anew. */
  async set(dirs: readonly string[]): Promise<void> {
    const want = new Map<string, string | null>();
    for (const d of dirs) want.set(d, await dirIdentity(d));
    if (this.closed) return;
    for (const [d, w] of this.watches)
      if (w.stale || want.get(d) !== w.id) {
        w.handle.close();
        this.watches.delete(d);
      }
    for (const [dir, id] of want) {
      if (id === null || this.watches.has(dir)) continue;
      const w: Watch = { id, handle: { close: () => undefined, on: () => undefined }, stale: false };
      try {
        w.handle = this.o.watch(dir, (_event, name) => {
          // inotify names the directory itself when it is deleted or moved: the watch is dead from then on.
          if (name === basename(dir)) w.stale = true;
          this.o.onEvent();
        });
      } catch (e) {
        this.report(dir, e as Error);
        continue;
      }
      w.handle.on('error', (e: Error) => {
        w.stale = true;
        w.handle.close();
        this.report(dir, e);
        this.o.onEvent();
      });
      this.watches.set(dir, w);
    }
  }

  /** The directories watched now. */
  dirs(): string[] {
    return [...this.watches.keys()];
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.handle.close();
    this.watches.clear();
  }

  private report(dir: string, e: Error): void {
    const message = `watching ${dir}: ${e.message}`;
    const last = this.reported.get(dir);
    const now = Date.now();
    if (last !== undefined && last.message === message && now - last.at < REPORT_AGAIN_MS) return;
    this.reported.set(dir, { message, at: now });
    this.o.onError(
      Object.assign(new Error(`${message} (the watch is re-made; the file is also checked periodically)`), {
        code: (e as NodeJS.ErrnoException).code,
      }),
    );
  }
}
