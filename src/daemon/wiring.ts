// The daemon as the CLI runs it: the kernel datapath under bpffs, real sockets, `ip`, the BGP speaker thread.
import { BgpSpeakerThread } from '../bgp/speaker-thread';
import { HealthMonitor } from '../health/monitor';
import { FileConfigSource } from '../sources/file/watcher';
import { startAdmin } from './admin';
import type { DaemonCollaborators } from './collaborators';
import { Daemon, DaemonSettings } from './daemon';
import { defaultGatewayMac, interfaceAddresses, interfaceMac } from './host';
import { KernelDatapathHost } from './kernel-host';
import { bgpPreflight } from './preflight';
import { VipRouteKeeper } from './vip-routes';

/** The real collaborators; pins go to <bpffs>/peak-xdp/<netns>/<interface>/. */
export function kernelCollaborators(o: { bpffs: string }): DaemonCollaborators {
  return {
    datapathHost: new KernelDatapathHost({ bpffs: o.bpffs }),
    hostNetwork: { interfaceMac, interfaceAddresses, defaultGatewayMac },
    configSource: (s) => new FileConfigSource(s),
    healthMonitor: () => new HealthMonitor(),
    bgpPreflight,
    bgpSpeaker: (s) => new BgpSpeakerThread(s),
    adminServer: startAdmin,
    vipRoutes: (s) => new VipRouteKeeper(s),
  };
}

/** A daemon on this host's kernel. */
export function createDaemon(o: DaemonSettings & { bpffs: string }): Daemon {
  const { bpffs, ...settings } = o;
  return new Daemon({ ...settings, ...kernelCollaborators({ bpffs }) });
}
