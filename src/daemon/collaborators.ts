// What the daemon is built from: the contracts of its collaborators. wiring.ts gives the real ones (kernel,
// sockets, `ip`); unit tests give in-memory ones.
import type { EventEmitter } from 'node:events';
import type { BgpConfig } from '../bgp/config';
import type { BgpSpeakerHandle } from '../bgp/speaker-protocol';
import type { SpeakerThreadOptions } from '../bgp/speaker-thread';
import type { HealthMonitor } from '../health/monitor';
import type { Logger } from '../log';
import type { ConfigFormat } from '../model/config';
import type { ReloadEvent } from '../sources/types';
import type { AdminOptions, AdminServer } from './admin';
import type { BfdConnect } from './bfd-link';
import type { DatapathHost } from './datapath-host';
import type { OverrideStore } from './override-store';
import type { VipRoutesStatus } from './vip-routes';
import type { HeapPhase } from '../util/gc';

/** Facts about this host's interfaces (src/daemon/host.ts). */
export interface HostNetwork {
  interfaceMac(ifname: string): Promise<string>;
  /** Global addresses, IPv4 first. */
  interfaceAddresses(ifname: string): Promise<string[]>;
  defaultGatewayMac(ifname: string): Promise<string | undefined>;
}

/** Events: 'reload' (ReloadEvent), 'error'. */
export interface DaemonConfigSource extends EventEmitter {
  start(): Promise<ReloadEvent>;
  stop(): void;
}

/** Events: 'change' (HealthChange), 'localError' (LocalCheckError), 'backlog' (BacklogChange), 'error'. */
export type DaemonHealthMonitor = EventEmitter &
  Pick<
    HealthMonitor,
    | 'start'
    | 'stop'
    | 'setTargets'
    | 'updateTargets'
    | 'release'
    | 'status'
    | 'statuses'
    | 'since'
    | 'localErrors'
    | 'snapshot'
    | 'checkCounts'
    | 'stats'
  > &
  /** Absent: the monitor grows as targets come (HealthMonitor.reserve, growRoom). */
  Partial<Pick<HealthMonitor, 'reserve' | 'growRoom'>>;

export interface DaemonSpeaker extends BgpSpeakerHandle {
  /** Times the speaker's worker was restarted. */
  readonly restarts: number;
}

/** The VIP blackhole routes (vip-routes.ts VipRouteKeeper). */
export interface VipRoutes {
  set(addresses: Iterable<string>, enabled: boolean): void;
  /** Stops keeping the routes; they stay. */
  stop(): Promise<void>;
  removeAll(): Promise<void>;
  status(): VipRoutesStatus;
}

export interface DaemonCollaborators {
  datapathHost: DatapathHost;
  hostNetwork: HostNetwork;
  /** `onFirstText`, `onFirstDocument`: the first text read and the first document parsed, before they are parsed
   * and validated (see FileConfigSourceOptions). */
  configSource(o: {
    path: string;
    onFirstText?: (text: string, format: ConfigFormat) => void;
    onFirstDocument?: (doc: unknown) => void;
  }): DaemonConfigSource;
  healthMonitor(): DaemonHealthMonitor;
  /** Fails a start whose BGP settings cannot work here (routerId "auto", the listener), before the datapath. */
  bgpPreflight(o: { bgp: BgpConfig; ifname: string }): Promise<void>;
  bgpSpeaker(o: SpeakerThreadOptions): DaemonSpeaker;
  adminServer(o: AdminOptions): Promise<AdminServer>;
  vipRoutes(o: { ifname: string; log: Logger }): VipRoutes;
  /** Connects to the BFD process's control socket (peers with `bfd`); absent: BFD is never reachable. */
  bfdConnect?: BfdConnect;
  /** Where runtime overrides are stored (override-store.ts); absent: kept in memory only. */
  overrideStore?(o: { ifname: string }): OverrideStore;
  /** Gives the process's free heap memory back to the kernel (glibc malloc_trim), once the Maglev table workers
   * ended: their threads' malloc arenas keep it otherwise (~25 MB of RSS after a start at 512 x 100). With `collect`
   * a full garbage collection runs first where Node exposes it (--expose-gc, in the CLI's shebang), so that the
   * start's garbage (table buffers above all) is freed now, not whenever V8 next collects: the daemon asks for it
   * once, at the end of its start, since it pauses the event loop (~40 ms at 512 x 100, ~250 ms at 512 x 1000).
   * Returns whether a collection ran. Absent: never. */
  trimMemory?(o?: { collect?: boolean }): boolean | void;
  /** Asks V8 to collect soon, incrementally, and to shrink its heap (native memoryPressure): after a sync that built
   * many tables (a burst's garbage would otherwise stay until V8's limit, tens of MB per Kubernetes burst of 1,000
   * Services). No full collection: V8 marks on its helper threads and in short steps. Absent: never. */
  memoryPressure?(): void;
  /** memoryPressure, then resolves once V8's next full collection has ended (true), or after START_COLLECT_WAIT_MS
   * (false): the daemon's start collects this way where a full, blocking collection would pause the event loop too
   * long (Programmer.collectAtStart). Absent: the start collects with trimMemory({ collect: true }) whatever the
   * heap. */
  collectIncrementally?(): Promise<boolean>;
  /** The main heap's used bytes now, which picks how the start collects (startCollectsIncrementally). Absent:
   * process.memoryUsage().heapUsed. */
  heapUsed?(): number;
  /** Called first thing in a start: large allocations from then on are mapped on their own and unmapped when freed
   * (glibc mallopt M_MMAP_THRESHOLD; see MALLOC_MMAP_THRESHOLD). Absent: the C library's defaults. */
  fixMallocThreshold?(): void;
  /** How far V8's heap grows between full collections (util/gc heapGrowth): 'start' first thing in a start (its big
   * builds' garbage kept within START_HEAP_GROWING_PERCENT of the live heap), 'targets' once it is ready, before it
   * collects and sets its health targets (TARGETS_HEAP_GROWING_PERCENT), 'bounded' once they are set and collected (the
   * targets' bound for good), 'run' if the start failed (V8's own rule). Only a big start (its heap past
   * START_BOUND_HEAP_BYTES once its config is parsed) calls it. Absent: V8's own rule throughout. */
  heapGrowth?(phase: HeapPhase): void;
  /** Frees a table buffer the Maglev pool lets go (WorkerTableBuilderOptions.free) at once, instead of leaving it to
   * V8's next full collection (native freeArrayBuffer). Absent: left to the collector. */
  freeBuffer?(buffer: ArrayBuffer): void;
}
