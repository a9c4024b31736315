// The config in force: the start's, then each reload that passes the gate (reloadDecision, pure) once its host
// settings are resolved; a rejected reload leaves the previous config, and says why.
import type { DatapathConfig } from '../datapath/types';
import type { Logger } from '../log';
import type { Config } from '../model/config';
import { configChanges } from '../model/diff';
import { ConfigIssue, ConfigRejectedError, formatIssue } from '../model/errors';
import type { ReloadEvent, ReloadTrigger } from '../sources/types';

/** What to do with a config reload. */
export type ReloadDecision =
  | { kind: 'rejected'; errors: readonly ConfigIssue[] }
  /** Fields bound at start changed: the whole reload is refused. */
  | { kind: 'needs-restart'; fields: string[] }
  | { kind: 'unchanged' }
  | { kind: 'apply'; config: Config };

/** Decides a reload against the config in force; pure. */
export function reloadDecision(o: {
  event: ReloadEvent;
  applied: Config;
  /** The last reload's error (null: the applied config is the file's). */
  reloadError: string | null;
}): ReloadDecision {
  const e = o.event;
  if (!e.ok) return { kind: 'rejected', errors: e.errors };
  const prev = o.applied;
  // The attachment, map sizes, the admin socket, the BGP sessions: a change is rejected as a whole so the
  // running state never mixes two configs.
  const fields: string[] = (['interface', 'xdpMode'] as const).filter((k) => e.config[k] !== prev[k]);
  for (const k of ['limits', 'admin', 'bgp'] as const)
    if (JSON.stringify(e.config[k]) !== JSON.stringify(prev[k])) fields.push(k);
  if (fields.length > 0) return { kind: 'needs-restart', fields };
  // Skip only when this exact config is already applied (a failed apply is retried by the next reload).
  if (e.config === prev || (!e.changed && o.reloadError === null)) return { kind: 'unchanged' };
  return { kind: 'apply', config: e.config };
}

export interface ConfigGateOptions {
  log: Logger;
  /** The datapath config on this host; ConfigRejectedError for host-dependent config errors. */
  resolve: (config: Config) => Promise<DatapathConfig>;
  /** A reload took effect (config and datapathConfig are the new ones): sync. */
  onApplied: () => void;
}

export class ConfigGate {
  private readonly o: ConfigGateOptions;
  /** The config in force (null before the first load). */
  config: Config | null = null;
  datapathConfig: DatapathConfig | null = null;
  /** Why the last reload was not applied (null: the config in force is the source's latest). */
  reloadError: string | null = null;

  constructor(o: ConfigGateOptions) {
    this.o = o;
  }

  /** The start's config and its host settings (a rejection fails the start). */
  async start(config: Config): Promise<void> {
    this.config = config;
    this.datapathConfig = await this.o.resolve(config);
  }

  reload(e: ReloadEvent): void {
    const log = this.o.log;
    const d = reloadDecision({ event: e, applied: this.config!, reloadError: this.reloadError });
    if (d.kind === 'rejected') return this.reject(e.trigger, d.errors);
    if (d.kind === 'needs-restart') {
      this.reloadError = `${d.fields.join(', ')}: changing these needs a daemon restart`;
      log.error({ fields: d.fields }, 'config reload rejected: these fields need a restart');
      return;
    }
    if (d.kind === 'unchanged') return;
    log.info(
      { trigger: e.trigger, vips: d.config.vips.length, changes: configChanges(this.config!, d.config) },
      'config reloaded',
    );
    this.o
      .resolve(d.config)
      .then((dc) => {
        this.config = d.config;
        this.datapathConfig = dc;
        this.reloadError = null;
        this.o.onApplied();
      })
      .catch((err: Error) => {
        if (err instanceof ConfigRejectedError) return this.reject(e.trigger, err.issues);
        this.reloadError = `host settings for the new config: ${err.message}`;
        log.error({ err }, 'config reload: host settings could not be resolved; previous config stays');
      });
  }

  private reject(trigger: ReloadTrigger, errors: readonly ConfigIssue[]): void {
    this.reloadError = errors.map(formatIssue).join('; ');
    this.o.log.error(
      { trigger, errors: errors.map(formatIssue) },
      'config rejected; previous config stays in force',
    );
  }
}
