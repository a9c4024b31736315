// FileConfigSource: loads a config file, reloads on SIGHUP and when its content changes: directory watches along
// its symlinks (ConfigMap swaps, replaced directories) plus a periodic check; keeps the last good config.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { resolve } from 'node:path';
import type { Config, ConfigFormat } from '../../model/config';
import type { ConfigSource, ReloadEvent, ReloadTrigger } from '../types';
import { defaultWatch, DirWatches, dirsToWatch, pathIdentity, statIdentity, WatchFn } from './follow';
import { formatOf, parseConfigText, readConfigFile } from './load';

/**
 * A file modified this close (ms) to when it was read may be written again with the same size and timestamp
 * (timestamps are as coarse as the kernel's tick, or a second on some file systems): until a later read, the
 * periodic check reads it again rather than trusting its stat (git's "racy clean" rule).
 */
const RACY_MS = 1000;

export interface FileConfigSourceOptions {
  path: string;
  /** Quiet time after the last file event before checking (editors write in bursts); default 200 ms. */
  debounceMs?: number;
  /** Reload on SIGHUP (default true). */
  sighup?: boolean;
  /** Reload on file change (default true): directory watches plus the periodic check. */
  watchFile?: boolean;
  /**
   * Checks the file this often (ms) whatever the watches say, and re-makes watches of replaced directories:
   * the fallback for file systems whose events are missing (NFS, some overlays) or a watch that failed.
   * Default 2000: a stat per check, a read only when the stat changed.
   */
  pollMs?: number;
  /** Makes a directory watch (default fs.watch). */
  watch?: WatchFn;
  /** Largest file accepted, in bytes (default: DOCUMENT_BOUNDS.maxBytes of the format); a bigger one is rejected. */
  maxBytes?: number;
  /**
   * Called once, with the first document parsed, before it is validated (the daemon starts loading its balancer
   * for the document's limits meanwhile); it must not change the document.
   */
  onFirstDocument?: (doc: unknown) => void;
  /** Called once, with the first text read and its format, before it is parsed; it must not keep the text. */
  onFirstText?: (text: string, format: ConfigFormat) => void;
}

/** What the last load saw: the file's stat identity and its content, to tell whether anything changed. */
interface Seen {
  /** statIdentity of what was read, or pathIdentity when the read failed. */
  identity: string | null;
  /** sha256 of the text, or the read errors. */
  content: string | null;
  /** Modified within RACY_MS of the read: the next check reads again (hashing, not trusting the stat). */
  racy: boolean;
}

export class FileConfigSource extends EventEmitter implements ConfigSource {
  readonly path: string;
  private readonly debounceMs: number;
  private readonly sighup: boolean;
  private readonly watchFile: boolean;
  private readonly pollMs: number;
  private readonly maxBytes: number | undefined;
  private readonly watches: DirWatches;
  private last: Config | null = null;
  /** The digest of `last`, made when a reload first compares against it (null: not made yet). */
  private lastDigest: string | null = null;
  private seen: Seen = { identity: null, content: null, racy: false };
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private checkQueued = false;
  private stopped = false;
  private onFirstDocument: ((doc: unknown) => void) | null;
  private onFirstText: ((text: string, format: ConfigFormat) => void) | null;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly onSignal = (): void => {
    this.reload('signal').catch((e: unknown) => this.emit('error', e));
  };

  constructor(opts: FileConfigSourceOptions) {
    super();
    if (typeof opts.path !== 'string' || opts.path === '')
      throw new TypeError(`path: ${JSON.stringify(opts.path)} is not a file path`);
    this.path = resolve(opts.path);
    this.debounceMs = opts.debounceMs ?? 200;
    if (!(this.debounceMs >= 0)) throw new RangeError(`debounceMs: ${opts.debounceMs} is not >= 0`);
    this.pollMs = opts.pollMs ?? 2000;
    if (!(this.pollMs > 0)) throw new RangeError(`pollMs: ${opts.pollMs} is not > 0`);
    this.sighup = opts.sighup ?? true;
    this.watchFile = opts.watchFile ?? true;
    this.maxBytes = opts.maxBytes;
    this.onFirstDocument = opts.onFirstDocument ?? null;
    this.onFirstText = opts.onFirstText ?? null;
    if (this.maxBytes !== undefined && !(Number.isSafeInteger(this.maxBytes) && this.maxBytes > 0))
      throw new RangeError(`maxBytes: ${opts.maxBytes} is not a positive integer`);
    this.watches = new DirWatches({
      watch: opts.watch ?? defaultWatch,
      onEvent: () => this.scheduleCheck(),
      onError: (e) => this.emit('error', e),
    });
  }

  current(): Config | null {
    return this.last;
  }

  async start(): Promise<ReloadEvent> {
    // Watches first: a change between the first read and the watch is not missed.
    if (this.watchFile) await this.watches.set(await dirsToWatch(this.path));
    const first = await this.reload('start');
    if (this.stopped) return first;
    if (this.sighup) process.on('SIGHUP', this.onSignal);
    if (this.watchFile) {
      // A check pending from an event makes a poll redundant.
      this.poll = setInterval(() => {
        if (this.debounce === null) this.requestCheck();
      }, this.pollMs);
      this.poll.unref();
    }
    return first;
  }

  stop(): void {
    this.stopped = true;
    process.off('SIGHUP', this.onSignal);
    this.watches.close();
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = null;
  }

  /** Loads the file now (serialised with other loads and checks) and emits 'reload', changed or not. */
  reload(trigger: ReloadTrigger = 'manual'): Promise<ReloadEvent> {
    const run = this.chain.then(() => this.load(trigger, { quietIfSame: false }) as Promise<ReloadEvent>);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private scheduleCheck(): void {
    if (this.stopped) return;
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.requestCheck();
    }, this.debounceMs);
  }

  /** Queues one check (a check already waiting to run covers this request too). */
  private requestCheck(): void {
    if (this.checkQueued || this.stopped) return;
    this.checkQueued = true;
    const run = this.chain.then(() => {
      this.checkQueued = false;
      return this.check();
    });
    // The chain goes on whatever this check did (and whether anyone listens for 'error').
    this.chain = run.catch(() => undefined);
    run.catch((e: unknown) => this.emit('error', e));
  }

  /** Re-makes the watches, then loads the file if its stat (or a racy read) says it may have changed. */
  private async check(): Promise<void> {
    if (this.stopped) return;
    await this.watches.set(await dirsToWatch(this.path));
    const identity = await pathIdentity(this.path);
    if (identity === this.seen.identity && !this.seen.racy) return;
    await this.load('file', { quietIfSame: true });
  }

  /** Reads and validates the file; emits 'reload' unless quietIfSame and the content (or failure) is unchanged. */
  private async load(trigger: ReloadTrigger, o: { quietIfSame: boolean }): Promise<ReloadEvent | null> {
    const read = await readConfigFile(this.path, { maxBytes: this.maxBytes });
    let seen: Seen;
    if ('text' in read) {
      const mtimeMs = Number(read.stat.mtimeNs / 1_000_000n);
      seen = {
        identity: statIdentity(read.stat),
        content: createHash('sha256').update(read.text).digest('hex'),
        racy: Math.abs(Date.now() - mtimeMs) < RACY_MS,
      };
    } else {
      seen = { identity: await pathIdentity(this.path), content: JSON.stringify(read.errors), racy: false };
    }
    const same = seen.content === this.seen.content;
    this.seen = seen;
    if (o.quietIfSame && same) return null;
    const first = this.onFirstDocument;
    this.onFirstDocument = null;
    const firstText = this.onFirstText;
    this.onFirstText = null;
    if ('text' in read) firstText?.(read.text, formatOf(this.path));
    const r = 'text' in read ? parseConfigText(this.path, read.text, first ?? undefined) : read;
    let event: ReloadEvent;
    if (r.ok) {
      // Digests of the configs' JSON, not the JSON (~3 MB at 512 x 100, ~35 MB at 512 x 1000, kept for good); none
      // for the first config until a reload compares against it (~30 ms at 512 x 100, off the start's path).
      let changed = true;
      let digest: string | null = null;
      if (this.last !== null) {
        digest = configDigest(r.config);
        changed = digest !== (this.lastDigest ?? configDigest(this.last));
      }
      event = { ok: true, trigger, config: r.config, warnings: r.warnings, changed };
      this.last = r.config;
      this.lastDigest = digest;
    } else {
      event = { ok: false, trigger, errors: r.errors, kept: this.last };
    }
    this.emit('reload', event);
    return event;
  }
}

/** sha256 of a config's JSON: equal configs, equal digests. */
const configDigest = (c: Config): string => createHash('sha256').update(JSON.stringify(c)).digest('hex');
