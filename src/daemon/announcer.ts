// The daemon's BGP side: the speaker built from the bgp section, and the routes it is handed after every
// change of what this node can forward (the decision itself is announce.ts, pure).
import type { Registry } from '../metrics/prom';
import type { BgpConfig } from '../bgp/config';
import { registerBgpMetrics } from '../bgp/metrics';
import type { AnnounceDecision } from '../bgp/policy';
import type { Logger } from '../log';
import { AnnounceFacts, announcements } from './announce';
import type { DaemonSpeaker, DaemonCollaborators, HostNetwork } from './collaborators';

/** bgp.routerId, with "auto" resolved to the interface's first IPv4 address. */
export async function resolveRouterId(bgp: BgpConfig, ifname: string, host: HostNetwork): Promise<string> {
  if (bgp.routerId !== 'auto') return bgp.routerId;
  const v4 = (await host.interfaceAddresses(ifname)).find((a) => !a.includes(':'));
  if (!v4) throw new Error(`bgp.routerId: "auto" but ${ifname} has no IPv4 address: set it`);
  return v4;
}

export interface AnnouncerOptions {
  bgp: BgpConfig;
  routerId: string;
  /** The balancer was adopted (a restart): the speaker asks routers to keep our routes meanwhile. */
  restarted: boolean;
  speaker: DaemonCollaborators['bgpSpeaker'];
  log: Logger;
  registry: Registry;
  /** Session errors and worker deaths (the worker is restarted): the daemon lives on. */
  onError: (e: unknown) => void;
}

export class Announcer {
  /** The BGP speaker, on its own event loop (a worker thread): nothing here can delay its KEEPALIVEs. */
  readonly speaker: DaemonSpeaker;
  private readonly minHealthyBackends: number | undefined;
  private last: AnnounceDecision | null = null;

  constructor(o: AnnouncerOptions) {
    this.minHealthyBackends = o.bgp.minHealthyBackends;
    const speaker = o.speaker({
      ...o.bgp,
      routerId: o.routerId,
      logger: o.log.child({ component: 'bgp' }),
      restarted: o.restarted,
    });
    this.speaker = speaker;
    speaker.on('error', o.onError);
    registerBgpMetrics({
      registry: o.registry,
      status: () => speaker.status(),
      workerRestarts: () => speaker.restarts,
    });
  }

  start(): Promise<void> {
    return this.speaker.start();
  }

  /** Hands BGP the routes this node can serve now; the speaker sends nothing when they did not change. */
  update(facts: Omit<AnnounceFacts, 'minHealthyBackends'>): void {
    this.last = announcements({ ...facts, minHealthyBackends: this.minHealthyBackends });
    this.speaker.setRoutes(this.last.announce);
  }

  /** The last decision (null: none yet). */
  get decision(): AnnounceDecision | null {
    return this.last;
  }

  /** Withdraws everything (RFC 8326 drain first if configured). */
  stop(): Promise<void> {
    return this.speaker.stop();
  }
}
