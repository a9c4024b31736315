// The daemon as the CLI runs it: the kernel datapath under bpffs, real sockets, `ip`, the BGP speaker thread.
import { BfdClient } from '../bfd/client';
import { BgpSpeakerThread } from '../bgp/speaker-thread';
import { HealthMonitor } from '../health/monitor';
import { defaultMaxInFlight } from '../health/probes';
import { FileConfigSource } from '../sources/file/watcher';
import { startAdmin } from './admin';
import type { DaemonCollaborators } from './collaborators';
import { Daemon, DaemonSettings } from './daemon';
import { readFdLimit } from './fdlimit';
import { defaultGatewayMac, interfaceAddresses, interfaceMac } from './host';
import { KernelDatapathHost } from './kernel-host';
import { FileOverrideStore, overridesPath, stateRoot } from './override-store';
import { currentNetnsName } from './pins';
import { bgpPreflight } from './preflight';
import { VipRouteKeeper } from './vip-routes';

/** The real collaborators; pins go to <bpffs>/peak-xdp/<netns>/<interface>/. */
export function kernelCollaborators(o: { bpffs: string }): DaemonCollaborators {
  return {
    datapathHost: new KernelDatapathHost({ bpffs: o.bpffs }),
    hostNetwork: { interfaceMac, interfaceAddresses, defaultGatewayMac },
    configSource: (s) => new FileConfigSource(s),
    // Probes in flight within the open-file limit (each holds a socket).
    healthMonitor: () => new HealthMonitor({ maxInFlight: defaultMaxInFlight(readFdLimit()?.soft ?? null) }),
    bgpPreflight,
    bgpSpeaker: (s) => new BgpSpeakerThread(s),
    adminServer: startAdmin,
    vipRoutes: (s) => new VipRouteKeeper(s),
    bfdConnect: (s) => BfdClient.connect(s),
    overrideStore: ({ ifname }) =>
      new FileOverrideStore(overridesPath({ root: stateRoot(), netns: currentNetnsName(), ifname })),
  };
}

/** A daemon on this host's kernel. */
export function createDaemon(o: DaemonSettings & { bpffs: string }): Daemon {
  const { bpffs, ...settings } = o;
  return new Daemon({ ...settings, ...kernelCollaborators({ bpffs }) });
}
