// The contract of a desired-state source (file now; Kubernetes later): the latest good Config and reload events.
import type { Config } from '../model/config';
import type { ConfigIssue } from '../model/errors';

export type ReloadTrigger = 'start' | 'signal' | 'file' | 'manual';

export type ReloadEvent =
  | { ok: true; trigger: ReloadTrigger; config: Config; warnings: ConfigIssue[]; changed: boolean }
  | {
      ok: false;
      trigger: ReloadTrigger;
      errors: ConfigIssue[];
      /** The last good config stays in force. */ kept: Config | null;
    };

export interface ConfigSource {
  /** Loads once and starts watching; resolves with the first load's outcome. */
  start(): Promise<ReloadEvent>;
  stop(): void;
  /** Reloads now (e.g. from an admin API call). */
  reload(trigger?: ReloadTrigger): Promise<ReloadEvent>;
  /** The last good config, or null if none was ever good. */
  current(): Config | null;
  on(event: 'reload', listener: (e: ReloadEvent) => void): this;
  off(event: 'reload', listener: (e: ReloadEvent) => void): this;
}
