// Collaborators for daemon tests without root that behave the same in every such test: a health monitor that
// probes nothing, a BGP speaker that peers with nobody, a config source that answers its first event, and a
// logger that records. (Datapath hosts differ per test: each file keeps its own.)
import { EventEmitter } from 'node:events';
import type { Logger } from '../../src/log';
import type { Config } from '../../src/model';
import type { ReloadEvent } from '../../src/sources/types';

/** A config source whose start() answers `first` (a ReloadEvent, or a Config as a successful start). */
export class FakeSource extends EventEmitter {
  private readonly first: ReloadEvent;
  constructor(first: ReloadEvent | Config) {
    super();
    this.first =
      'trigger' in first ? first : { ok: true, trigger: 'start', config: first, warnings: [], changed: true };
  }
  async start(): Promise<ReloadEvent> {
    return this.first;
  }
  stop(): void {}
}

/** A health monitor with no targets and no verdicts. */
export class QuietMonitor extends EventEmitter {
  start(): void {}
  stop(): void {}
  setTargets(): void {}
  updateTargets(): void {}
  release(): void {}
  status(): undefined {
    return undefined;
  }
  statuses() {
    return new Map();
  }
  since() {
    return new Map();
  }
  localErrors() {
    return new Map();
  }
  snapshot() {
    return [];
  }
  stats() {
    return {
      probes: 0,
      memberships: 0,
      inFlight: 0,
      maxInFlight: 1,
      started: 0,
      startedOnThread: 0,
      delayed: 0,
      delayedByCap: 0,
      maxLatenessMs: 0,
      backlog: 0,
      backlogAgeMs: 0,
      worstCaseInFlight: 0,
    };
  }
}

/** A BGP speaker with no peers. */
export class FakeSpeaker extends EventEmitter {
  readonly restarts = 0;
  async start(): Promise<void> {}
  setRoutes(): void {}
  status() {
    return { asn: 0, routerId: '', desired: [], draining: false, peers: [] };
  }
  async stop(): Promise<void> {}
}

/** A Logger that keeps every record (level, object, message) for the test to read. */
export function recordingLogger() {
  const records: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const log: Record<string, unknown> = {};
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
    log[level] = (obj: Record<string, unknown>, msg: string) => records.push({ level, obj, msg });
  log.child = () => log;
  log.isLevelEnabled = () => true;
  return { log: log as unknown as Logger, records };
}
