// The config in force: the start's, then each reload that passes the gate (reloadDecision, pure) once this node's
// settings (nodes section, nodeDecision, pure) and its host settings are resolved; a rejected reload leaves the
// previous config, and says why. Invalid node settings make the node not ready and change nothing.
import type { EventEmitter } from 'node:events';
import { Gauge, type Registry } from '../metrics/prom';
import type { DatapathConfig } from '../datapath/types';
import type { Logger } from '../log';
import type { Config } from '../model/config';
import { configChanges } from '../model/diff';
import { ConfigIssue, ConfigRejectedError, formatIssue } from '../model/errors';
import { applyNodeSettings, NodeIdentity, NodeSettings, resolveNodeSettings } from '../model/nodes';
import type { ReloadEvent, ReloadTrigger } from '../sources/types';

/** Where this node's name and labels come from (labels are read only for a config with a nodes section). */
export interface NodeIdentitySource {
  name: string;
  labels(): Promise<Record<string, string>>;
  /** Calls `onChange` when the labels may have changed (Kubernetes: its Node object); returns the stop. */
  watch?(onChange: () => void): () => void;
}

/** A node with no label source (unit tests, or a bare host without --node-labels): no labels. */
export const UNLABELLED_NODE = (name: string): NodeIdentitySource => ({
  name,
  labels: () => Promise.resolve({}),
});

/** This node's config: the file's with the node's settings in place, or why the node has no valid settings. */
export type NodeDecision =
  | { kind: 'resolved'; config: Config; settings: NodeSettings | null }
  | { kind: 'invalid'; errors: ConfigIssue[] };

/** The config this node runs with; without a nodes section, the file's own (the same object). Pure. */
export function nodeDecision(config: Config, node: NodeIdentity | null): NodeDecision {
  if (config.nodes === undefined) return { kind: 'resolved', config, settings: null };
  if (node === null) throw new TypeError('nodeDecision: a config with a nodes section needs the node');
  const r = resolveNodeSettings(config, node);
  if ('errors' in r) return { kind: 'invalid', errors: r.errors };
  return { kind: 'resolved', config: applyNodeSettings(config, r.settings), settings: r.settings };
}

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
  /** This node (default: an unlabelled node named "unknown"). */
  node?: NodeIdentitySource;
  /** Where peak_xdp_node_config_valid is registered (absent: nowhere). */
  registry?: Registry;
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
  /** Why this node has no valid settings (null: it has): the node is not ready. */
  nodeError: string | null = null;
  /** The node's resolved settings in force (null: no nodes section, or none resolved yet). */
  nodeSettings: NodeSettings | null = null;
  /** The labels the last resolution used (null: none read). */
  private nodeLabels: Record<string, string> | null = null;
  /** The source's latest good config, before the node's settings are applied. */
  private raw: Config | null = null;
  /** Node resolutions run one after another (each may read the labels). */
  private chain: Promise<void> = Promise.resolve();
  private stopWatch: (() => void) | null = null;
  /** Relabels are followed (set by followNode, and while the start waits). */
  private following = false;
  private waiting: {
    resolve: (d: NodeDecision & { kind: 'resolved' }) => void;
    reject: (e: Error) => void;
  } | null = null;
  /** Resolutions queued or running. */
  private inFlight = 0;
  private readonly node: NodeIdentitySource;

  constructor(o: ConfigGateOptions) {
    this.o = o;
    this.node = o.node ?? UNLABELLED_NODE('unknown');
    const valid = (): boolean => this.nodeError === null;
    if (o.registry)
      new Gauge({
        name: 'peak_xdp_node_config_valid',
        help:
          "1 when this node's settings (the nodes section resolved for its labels) are valid; 0 when not: the " +
          'node is not ready (/readyz says why) and its datapath is left as it was',
        registers: [o.registry],
        collect() {
          this.set(valid() ? 1 : 0);
        },
      });
  }

  /**
   * The start's config with this node's settings. Invalid settings: not ready, `onWaiting` runs (the admin API
   * starts, so /readyz says why), and this resolves once a reload or a relabel gives valid settings.
   */
  async first(raw: Config, o: { source: EventEmitter; onWaiting: () => Promise<void> }): Promise<Config> {
    this.raw = raw;
    const d = await this.decide(raw, 'start');
    if (d.kind === 'resolved') {
      this.config = d.config;
      this.nodeSettings = d.settings;
      return d.config;
    }
    await o.onWaiting();
    const valid = new Promise<NodeDecision & { kind: 'resolved' }>(
      (resolve, reject) => (this.waiting = { resolve, reject }),
    );
    const onReload = (e: ReloadEvent): void => {
      if (e.ok) this.retry(e.config, e.trigger);
    };
    o.source.on('reload', onReload);
    this.following = true;
    this.watchNode();
    try {
      const resolved = await valid;
      this.config = resolved.config;
      this.nodeSettings = resolved.settings;
      return resolved.config;
    } finally {
      o.source.off('reload', onReload);
      this.waiting = null;
    }
  }

  /** The start's host settings (a rejection fails the start). */
  async start(config: Config): Promise<void> {
    this.config = config;
    this.datapathConfig = await this.o.resolve(config);
  }

  /** From now on a relabel of this node resolves its settings again (once the daemon takes reloads). */
  followNode(): void {
    this.following = true;
    this.watchNode();
  }

  /** Stops following relabels; a start still waiting for valid settings fails. */
  stop(): void {
    this.following = false;
    this.stopWatch?.();
    this.stopWatch = null;
    this.waiting?.reject(new Error('stopped while waiting for valid node settings'));
  }

  /** /state's view of the node. */
  nodeView(): unknown {
    return {
      name: this.node.name,
      labels: this.nodeLabels,
      perNode: this.raw?.nodes !== undefined,
      matched: this.nodeSettings?.matched.map((i) => `nodes[${i}]`) ?? [],
      error: this.nodeError,
    };
  }

  reload(e: ReloadEvent): void {
    if (!e.ok) return this.reject(e.trigger, e.errors);
    this.raw = e.config;
    this.watchNode();
    // Without a nodes section (before or now) the decision is the file's own, at once, as it always was.
    if (
      e.config.nodes === undefined &&
      this.nodeError === null &&
      this.nodeSettings === null &&
      this.inFlight === 0
    )
      return this.decideReload(e, null);
    this.enqueue(async () => {
      const d = await this.decide(e.config, e.trigger);
      if (d.kind === 'resolved')
        this.decideReload(
          { ...e, config: d.config, changed: e.changed || this.settingsChanged(d) },
          d.settings,
        );
    });
  }

  /** The labels may have changed: the config in force is resolved again (a reload with the same file). */
  relabelled(): void {
    const raw = this.raw;
    if (raw === null || raw.nodes === undefined) return;
    if (this.waiting !== null) return this.retry(raw, 'manual');
    this.enqueue(async () => {
      // A reload queued meanwhile resolved a newer config.
      if (this.raw !== raw) return;
      const d = await this.decide(raw, 'manual');
      if (d.kind === 'resolved')
        this.decideReload(
          { ok: true, trigger: 'manual', config: d.config, warnings: [], changed: this.settingsChanged(d) },
          d.settings,
        );
    });
  }

  /** Resolves once every queued resolution has run (tests, and a stop that wants a quiet gate). */
  idle(): Promise<void> {
    return this.chain;
  }

  private enqueue(task: () => Promise<void>): void {
    this.inFlight++;
    this.chain = this.chain
      .then(task)
      .catch((err: Error) => this.o.log.error({ err }, 'node settings: resolution failed'))
      .finally(() => this.inFlight--);
  }

  /** While the start waits: a config to try. */
  private retry(raw: Config, trigger: ReloadTrigger): void {
    this.raw = raw;
    this.enqueue(async () => {
      const d = await this.decide(raw, trigger);
      if (d.kind === 'resolved') this.waiting?.resolve(d);
    });
  }

  /** Labels matter only to a config with a nodes section: without one, the node is never read. */
  private watchNode(): void {
    if (this.following && this.raw?.nodes !== undefined && this.stopWatch === null && this.node.watch)
      this.stopWatch = this.node.watch(() => this.relabelled());
  }

  private settingsChanged(d: { settings: NodeSettings | null }): boolean {
    return JSON.stringify(d.settings) !== JSON.stringify(this.nodeSettings);
  }

  /** This node's decision for `raw` (labels read when it has a nodes section); records and logs an invalid one. */
  private async decide(raw: Config, trigger: ReloadTrigger): Promise<NodeDecision> {
    let d: NodeDecision;
    if (raw.nodes === undefined) d = nodeDecision(raw, null);
    else {
      let labels: Record<string, string>;
      try {
        labels = await this.node.labels();
      } catch (err) {
        d = {
          kind: 'invalid',
          errors: [
            {
              path: 'nodes',
              message: `the labels of node "${this.node.name}" could not be read: ${(err as Error).message}`,
            },
          ],
        };
        return this.recordNode(d, trigger);
      }
      this.nodeLabels = labels;
      d = nodeDecision(raw, { name: this.node.name, labels });
    }
    return this.recordNode(d, trigger);
  }

  private recordNode(d: NodeDecision, trigger: ReloadTrigger): NodeDecision {
    if (d.kind === 'invalid') {
      const reason = d.errors.map(formatIssue).join('; ');
      if (reason !== this.nodeError)
        this.o.log.error(
          {
            trigger,
            node: this.node.name,
            fields: d.errors.map((x) => x.path),
            errors: d.errors.map(formatIssue),
          },
          'node settings invalid: this node is not ready and its datapath is left as it was',
        );
      this.nodeError = reason;
      return d;
    }
    if (this.nodeError !== null)
      this.o.log.info(
        { trigger, node: this.node.name, matched: d.settings?.matched },
        'node settings valid again',
      );
    this.nodeError = null;
    return d;
  }

  /** A reload whose node settings are resolved: the decision against the config in force. */
  private decideReload(e: Extract<ReloadEvent, { ok: true }>, settings: NodeSettings | null): void {
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
        this.nodeSettings = settings;
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
