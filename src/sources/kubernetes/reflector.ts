// List-then-watch cache of one resource kind: 410 Gone -> re-list and diff, dropped watch -> reconnect with backoff.
import type { ObjectMeta } from './objects';
import { objectKey } from './objects';
import { backoffDelayMs, BackoffBounds, jitter } from '../../util/backoff';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface ListPage<T> {
  items: T[];
  resourceVersion: string;
}

export interface WatchHandle {
  stop(): void;
}

/** The I/O a reflector needs; the client adapter implements it over @kubernetes/client-node. */
export interface ReflectorIO<T> {
  /** A full, consistent list (all pages). */
  list(): Promise<ListPage<T>>;
  /** Opens a watch from resourceVersion; onDone is called once when it ends (err null: closed cleanly). */
  watch(opts: {
    resourceVersion: string;
    onEvent: (type: WatchEventType, object: unknown) => void;
    onDone: (err: unknown) => void;
  }): Promise<WatchHandle>;
}

export type Backoff = BackoffBounds;

export const DEFAULT_BACKOFF: Backoff = { initialMs: 200, maxMs: 30_000 };

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ReflectorOptions<T> {
  kind: string;
  io: ReflectorIO<T>;
  /** Called for each change of the cache (watch event or re-list diff), with the time it arrived. */
  onChange: (c: { type: ChangeType; object: T; atMs: number }) => void;
  /** Called after every (re-)list with the reason, how many objects it held and how long it took. */
  onList?: (reason: 'start' | 'gone' | 'error', info: { items: number; ms: number }) => void;
  onWatchEvent?: (type: WatchEventType) => void;
  onError?: (what: 'list' | 'watch', err: unknown) => void;
  backoff?: Backoff;
  /** Keeps only what the source reads of each object (e.g. a Node's addresses, not its image list). */
  transform?: (obj: T) => T;
  /** Ends a watch that delivered nothing (not even a bookmark) for this long: a silent dead connection. */
  idleTimeoutMs?: number;
  /** Injectable for tests. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/** A watch ERROR event or HTTP status of 410: our resourceVersion is too old. */
export function isGone(err: unknown): boolean {
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  return e !== null && typeof e === 'object' && (e.code === 410 || e.statusCode === 410);
}

type WatchEnd = { kind: 'gone' } | { kind: 'error'; err: unknown } | { kind: 'closed'; events: number };

export class Reflector<T extends { metadata: ObjectMeta }> {
  private readonly cache = new Map<string, T>();
  private resourceVersion: string | null = null;
  private stopped = true;
  private handle: WatchHandle | null = null;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private failures = 0;
  private listReason: 'start' | 'gone' | 'error' = 'start';
  /** True once a list succeeded. */
  synced = false;
  /** True while the last API interaction succeeded (watch open or list done). */
  connected = false;
  lastError: string | null = null;

  constructor(private readonly opts: ReflectorOptions<T>) {}

  /** Starts the list/watch loop; resolves once the first list is in the cache (or stop() is called). */
  start(): Promise<void> {
    if (!this.stopped) throw new Error(`reflector ${this.opts.kind} already started`);
    this.stopped = false;
    let resolveSynced!: () => void;
    const synced = new Promise<void>((r) => (resolveSynced = r));
    this.loop = this.run(resolveSynced).catch((e: unknown) => {
      this.lastError = `loop failed: ${(e as Error).message}`;
      resolveSynced();
    });
    return synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.handle?.stop();
    this.wake?.();
    // A list hanging on a dead server must not hold shutdown for long.
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.loop, new Promise<void>((r) => (t = setTimeout(r, 2000)))]);
    clearTimeout(t);
  }

  items(): T[] {
    return [...this.cache.values()];
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private sleep(ms: number): Promise<void> {
    if (this.opts.sleep) return this.opts.sleep(ms);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  private backoffMs(): number {
    // Jitter spreads reconnects of many nodes after an API server restart.
    return jitter(backoffDelayMs(this.failures, this.opts.backoff ?? DEFAULT_BACKOFF));
  }

  private async run(onSynced: () => void): Promise<void> {
    while (!this.stopped) {
      if (this.resourceVersion === null) {
        try {
          const listStart = performance.now();
          const page = await this.opts.io.list();
          if (this.stopped) break;
          this.replace(this.opts.transform ? page.items.map(this.opts.transform) : page.items);
          this.resourceVersion = page.resourceVersion;
          this.synced = true;
          this.connected = true;
          this.opts.onList?.(this.listReason, {
            items: page.items.length,
            ms: Math.round(performance.now() - listStart),
          });
          onSynced();
        } catch (err) {
          this.fail('list', err);
          this.listReason = 'error';
          await this.sleep(this.backoffMs());
          continue;
        }
      }
      const end = await this.watchOnce();
      if (this.stopped) break;
      if (end.kind === 'gone') {
        // Our resourceVersion was compacted away: re-list now and diff to find what we missed (deletions too).
        this.resourceVersion = null;
        this.listReason = 'gone';
      } else if (end.kind === 'error') {
        this.fail('watch', end.err);
        await this.sleep(this.backoffMs());
      } else if (end.events === 0) {
        // A clean close with nothing in it (e.g. a proxy cutting idle streams): do not spin.
        this.failures = Math.max(this.failures, 1);
        await this.sleep(this.backoffMs());
      }
    }
    onSynced();
  }

  private fail(what: 'list' | 'watch', err: unknown): void {
    this.failures++;
    this.connected = false;
    this.lastError = `${what} ${this.opts.kind}: ${(err as Error)?.message ?? String(err)}`;
    this.opts.onError?.(what, err);
  }

  private watchOnce(): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve) => {
      let events = 0;
      let finished = false;
      let idle: NodeJS.Timeout | null = null;
      const finish = (end: WatchEnd): void => {
        if (finished) return;
        finished = true;
        if (idle) clearTimeout(idle);
        this.handle?.stop();
        this.handle = null;
        resolve(end);
      };
      const armIdle = (): void => {
        if (this.opts.idleTimeoutMs === undefined) return;
        if (idle) clearTimeout(idle);
        idle = setTimeout(
          () => finish({ kind: 'error', err: new Error(`no watch data for ${this.opts.idleTimeoutMs} ms`) }),
          this.opts.idleTimeoutMs,
        );
      };
      armIdle();
      this.opts.io
        .watch({
          resourceVersion: this.resourceVersion ?? '',
          onEvent: (type, object) => {
            if (finished) return;
            armIdle();
            this.opts.onWatchEvent?.(type);
            if (type === 'ERROR') {
              // A Status object: 410 means re-list; anything else ends this watch as an error.
              if (isGone(object)) finish({ kind: 'gone' });
              else finish({ kind: 'error', err: new Error(`watch error event: ${JSON.stringify(object)}`) });
              return;
            }
            events++;
            // A live stream proves the connection is good again.
            this.failures = 0;
            this.connected = true;
            this.apply(type, object as T);
          },
          onDone: (err) => {
            if (err === null || err === undefined) finish({ kind: 'closed', events });
            else if (isGone(err)) finish({ kind: 'gone' });
            else finish({ kind: 'error', err });
          },
        })
        .then(
          (h) => {
            if (finished || this.stopped) h.stop();
            else {
              this.handle = h;
              this.connected = true;
            }
          },
          (err: unknown) => finish(isGone(err) ? { kind: 'gone' } : { kind: 'error', err }),
        );
    });
  }

  private apply(type: WatchEventType, raw: T): void {
    const rv = raw?.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    if (type === 'BOOKMARK') return;
    const obj = this.opts.transform ? this.opts.transform(raw) : raw;
    const key = objectKey(obj.metadata);
    const at = this.now();
    if (type === 'DELETED') {
      const old = this.cache.get(key);
      this.cache.delete(key);
      this.opts.onChange({ type, object: old ?? obj, atMs: at });
      return;
    }
    const had = this.cache.has(key);
    this.cache.set(key, obj);
    this.opts.onChange({ type: had ? 'MODIFIED' : 'ADDED', object: obj, atMs: at });
  }

  /** Replaces the cache by a fresh list, reporting deletions, additions and changed resourceVersions. */
  private replace(items: T[]): void {
    const at = this.now();
    const fresh = new Map(items.map((o) => [objectKey(o.metadata), o]));
    for (const [key, old] of this.cache)
      if (!fresh.has(key)) {
        this.cache.delete(key);
        this.opts.onChange({ type: 'DELETED', object: old, atMs: at });
      }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (old === undefined) this.opts.onChange({ type: 'ADDED', object: obj, atMs: at });
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion)
        this.opts.onChange({ type: 'MODIFIED', object: obj, atMs: at });
    }
  }
}
