// FileConfigSource: loads a config file, reloads on SIGHUP and on file change (debounced), keeps the last good one.
import { EventEmitter } from 'node:events';
import { FSWatcher, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Config } from '../../model/config';
import type { ConfigSource, ReloadEvent, ReloadTrigger } from '../types';
import { loadConfigFile } from './load';

export interface FileConfigSourceOptions {
  path: string;
  /** Quiet time after the last file event before reloading (editors write in bursts); default 200 ms. */
  debounceMs?: number;
  /** Reload on SIGHUP (default true). */
  sighup?: boolean;
  /** Reload on file change (default true). */
  watchFile?: boolean;
  /** Largest file accepted, in bytes (default: DOCUMENT_BOUNDS.maxBytes of the format); a bigger one is rejected. */
  maxBytes?: number;
}

export class FileConfigSource extends EventEmitter implements ConfigSource {
  readonly path: string;
  private readonly debounceMs: number;
  private readonly sighup: boolean;
  private readonly watchFile: boolean;
  private readonly maxBytes: number | undefined;
  private last: Config | null = null;
  private lastText = '';
  private watcher: FSWatcher | null = null;
  private debounce: NodeJS.Timeout | null = null;
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
    this.sighup = opts.sighup ?? true;
    this.watchFile = opts.watchFile ?? true;
    this.maxBytes = opts.maxBytes;
    if (this.maxBytes !== undefined && !(Number.isSafeInteger(this.maxBytes) && this.maxBytes > 0))
      throw new RangeError(`maxBytes: ${opts.maxBytes} is not a positive integer`);
  }

  current(): Config | null {
    return this.last;
  }

  async start(): Promise<ReloadEvent> {
    const first = await this.reload('start');
    if (this.sighup) process.on('SIGHUP', this.onSignal);
    if (this.watchFile) {
      // Watch the directory: editors and ConfigMaps replace the file (rename), which a file watch would miss.
      const name = basename(this.path);
      this.watcher = watch(dirname(this.path), (_event, file) => {
        if (file === null || file === name || String(file).startsWith('..')) this.scheduleReload();
      });
      this.watcher.on('error', (e) => this.emit('error', e));
    }
    return first;
  }

  stop(): void {
    process.off('SIGHUP', this.onSignal);
    this.watcher?.close();
    this.watcher = null;
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = null;
  }

  /** Loads the file now (serialised with other reloads) and emits 'reload'. */
  reload(trigger: ReloadTrigger = 'manual'): Promise<ReloadEvent> {
    const run = this.chain.then(() => this.load(trigger));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private scheduleReload(): void {
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.reload('file').catch((e: unknown) => this.emit('error', e));
    }, this.debounceMs);
  }

  private async load(trigger: ReloadTrigger): Promise<ReloadEvent> {
    const r = await loadConfigFile(this.path, { maxBytes: this.maxBytes });
    let event: ReloadEvent;
    if (r.ok) {
      const text = JSON.stringify(r.config);
      event = { ok: true, trigger, config: r.config, warnings: r.warnings, changed: text !== this.lastText };
      this.last = r.config;
      this.lastText = text;
    } else {
      event = { ok: false, trigger, errors: r.errors, kept: this.last };
    }
    this.emit('reload', event);
    return event;
  }
}
