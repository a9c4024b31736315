// The daemon's runtime overrides: held in memory, stored as JSON under /run (a daemon restart keeps them, a
// host reboot does not, like the pinned balancer), changed one at a time; and the admin token file.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../log';
import { BOUNDS } from '../model/defaults';
import type { Config, VipConfig } from '../model/types';
import {
  applyChange,
  OverrideApplier,
  OverrideChange,
  OverrideSet,
  parseOverrides,
  pruneOverrides,
  serialiseOverrides,
} from './overrides';

/** Where the overrides of one balancer live: <root>/<netns>/<interface>/overrides.json. */
export const DEFAULT_STATE_ROOT = '/run/peak-xdp/state';

/** The state root: env PEAK_XDP_STATE_DIR, else DEFAULT_STATE_ROOT. */
export function stateRoot(): string {
  return process.env.PEAK_XDP_STATE_DIR ?? DEFAULT_STATE_ROOT;
}

export function overridesPath(o: { root: string; netns: string; ifname: string }): string {
  return join(o.root, o.netns, o.ifname, 'overrides.json');
}

/** Persistence of the override set. */
export interface OverrideStore {
  /** Where (for logs and /state). */
  readonly location: string;
  /** The stored set ({} when nothing is stored); throws on a file that is there but unreadable or bad. */
  load(): Promise<OverrideSet>;
  save(overrides: OverrideSet): Promise<void>;
}

/** A JSON file, replaced atomically (write to a temporary file, rename), mode 0600. */
export class FileOverrideStore implements OverrideStore {
  constructor(readonly location: string) {}

  async load(): Promise<OverrideSet> {
    let text: string;
    try {
      text = await readFile(this.location, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw e;
    }
    try {
      return parseOverrides(text);
    } catch (e) {
      throw new Error(`${this.location}: ${(e as Error).message}`);
    }
  }

  async save(overrides: OverrideSet): Promise<void> {
    await mkdir(dirname(this.location), { recursive: true, mode: 0o700 });
    const tmp = `${this.location}.${process.pid}.tmp`;
    await writeFile(tmp, serialiseOverrides(overrides), { mode: 0o600 });
    await rename(tmp, this.location);
  }
}

/** Reads the admin token (whitespace around it trimmed); throws naming the file and what is wrong. */
export async function readAdminToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`admin.tokenFile ${path}: ${(e as Error).message}`);
  }
  const token = text.trim();
  if (token.length < BOUNDS.adminTokenLength.min || /\s/.test(token))
    throw new Error(
      `admin.tokenFile ${path}: the token must be at least ${BOUNDS.adminTokenLength.min} characters without whitespace (it has ${token.length})`,
    );
  return token;
}

/**
 * The overrides in force. Changes run one at a time: checked against the VIPs, stored, then applied (a store
 * that fails leaves the previous set in force and the change is refused).
 */
export class RuntimeOverrides {
  #set: OverrideSet;
  readonly #store: OverrideStore | null;
  readonly #log: Logger;
  readonly #applier = new OverrideApplier();
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(set: OverrideSet, store: OverrideStore | null, log: Logger) {
    this.#set = set;
    this.#store = store;
    this.#log = log;
  }

  /** Loads the stored set; a bad file is logged and set aside (no overrides), not fatal. */
  static async open(o: { store: OverrideStore | null; log: Logger }): Promise<RuntimeOverrides> {
    let set: OverrideSet = {};
    try {
      set = (await o.store?.load()) ?? {};
    } catch (e) {
      o.log.error(
        { err: e, file: o.store?.location },
        'runtime overrides could not be read: starting without them (drains and weights set at runtime are lost)',
      );
    }
    const n = Object.values(set).reduce((s, x) => s + Object.keys(x).length, 0);
    if (n > 0)
      o.log.info({ file: o.store?.location, backends: n, overrides: set }, 'runtime overrides loaded');
    return new RuntimeOverrides(set, o.store, o.log);
  }

  get set(): OverrideSet {
    return this.#set;
  }

  get location(): string | null {
    return this.#store?.location ?? null;
  }

  /** `config` with the overrides applied. */
  apply(config: Config): Config {
    return this.#applier.config(config, this.#set);
  }

  /** Applies `change` against `vips()` (read when its turn comes); throws OverrideError or a store error. */
  change(change: OverrideChange, vips: () => readonly VipConfig[]): Promise<OverrideSet> {
    const run = this.#queue.then(async () => {
      const next = applyChange({ overrides: this.#set, vips: vips(), change, at: new Date().toISOString() });
      if (next === this.#set) return next; // nothing changed: nothing to store or log
      await this.#store?.save(next);
      this.#set = next;
      this.#log.info({ change }, 'runtime override changed');
      return next;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every change and background store queued so far has settled (a stop waits for it: a store in
   * flight would otherwise write into the directory after the daemon is gone). */
  idle(): Promise<void> {
    return this.#queue.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Drops overrides whose VIP or backend `vips` lacks (logged); stores the result in the background. */
  prune(vips: readonly VipConfig[]): void {
    const { kept, dropped } = pruneOverrides(this.#set, vips);
    if (dropped.length === 0) return;
    this.#set = kept;
    for (const d of dropped)
      this.#log.warn(
        { vip: d.vip, backend: d.backend, override: d.override },
        'runtime override dropped: the config no longer has its VIP or backend',
      );
    this.#queue = this.#queue
      .then(() => this.#store?.save(this.#set))
      .catch((e: Error) => this.#log.error({ err: e, file: this.location }, 'runtime overrides not stored'));
  }
}
