// Library entry: the pieces a program embedding peak-xdp uses (the CLI and daemon are built from these).
export * as bpf from './datapath/bpf';
export type * from './datapath/types';
export { KernelDatapath } from './datapath/kernel';
export { MemoryDatapath } from './datapath/memory';
export { buildTable, MAGLEV_ALGORITHM } from './maglev';
export { parseConfig, validateConfig } from './model';
export { desiredState, Reconciler, reconcile } from './reconcile';
export { HealthMonitor } from './health';
export { BgpSpeaker } from './bgp/speaker';
export { BgpSpeakerThread } from './bgp/speaker-thread';
export type { BgpSocketFactory } from './bgp/sockets';
export { md5BgpSockets } from './datapath/bgp-sockets';
export type { BgpSpeakerHandle } from './bgp/speaker-protocol';
export { decideAnnouncements } from './bgp/policy';
export { Daemon } from './daemon/daemon';
export { createDaemon, kernelCollaborators } from './daemon/wiring';
