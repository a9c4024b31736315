// The daemon as the CLI runs it: the kernel datapath under bpffs, real sockets, `ip`, the BGP speaker thread.
import { hostname } from 'node:os';
import { BfdClient } from '../bfd/client';
import type { BgpSpeakerThread } from '../bgp/speaker-thread';
import { native } from '../datapath/native';
import { fixMallocThreshold } from './malloc';
import { HealthMonitor } from '../health/monitor';
import { defaultMaxInFlight } from '../health/probes';
import { FileConfigSource } from '../sources/file/watcher';
import { startAdmin } from './admin';
import type { DaemonCollaborators } from './collaborators';
import { NodeIdentitySource, UNLABELLED_NODE } from './config-gate';
import { Daemon, DaemonSettings } from './daemon';
import { readFdLimit } from './fdlimit';
import { defaultGatewayMac, interfaceAddresses, interfaceMac } from './host';
import { KernelDatapathHost } from './kernel-host';
import { FileOverrideStore, overridesPath, stateRoot } from './override-store';
import { currentNetnsName } from './pins';
import { parseNodeLabels } from '../model/nodes';
import { bgpPreflight } from './preflight';
import { VipRouteKeeper } from './vip-routes';
import { START_COLLECT_WAIT_MS } from './programmer';
import { fullCollection, heapGrowth } from '../util/gc';

/** The BGP speaker thread's class, loaded on first use. */
function speakerThread(): typeof BgpSpeakerThread {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- only a config with a bgp section needs it
  return (require('../bgp/speaker-thread') as { BgpSpeakerThread: typeof BgpSpeakerThread }).BgpSpeakerThread;
}

/** The real collaborators; pins go to <bpffs>/peak-xdp/<netns>/<interface>/. */
export function kernelCollaborators(o: { bpffs: string }): DaemonCollaborators {
  return {
    datapathHost: new KernelDatapathHost({ bpffs: o.bpffs }),
    hostNetwork: { interfaceMac, interfaceAddresses, defaultGatewayMac },
    configSource: (s) => new FileConfigSource(s),
    // Probes in flight within the open-file limit (each holds a socket).
    healthMonitor: () => new HealthMonitor({ maxInFlight: defaultMaxInFlight(readFdLimit()?.soft ?? null) }),
    bgpPreflight,
    // Loaded when the config has a bgp section (the speaker and its codec: ~18 ms of a start without one).
    bgpSpeaker: (s) => new (speakerThread())(s),
    adminServer: startAdmin,
    vipRoutes: (s) => new VipRouteKeeper(s),
    bfdConnect: (s) => BfdClient.connect(s),
    overrideStore: ({ ifname }) =>
      new FileOverrideStore(overridesPath({ root: stateRoot(), netns: currentNetnsName(), ifname })),
    trimMemory: (t) => {
      // gc() is there when node runs with --expose-gc (the CLI's shebang has it; `node main.js` does not)
      const gc = t?.collect === true ? (globalThis as { gc?: () => void }).gc : undefined;
      gc?.();
      native().mallocTrim();
      return gc !== undefined;
    },
    memoryPressure: () => native().memoryPressure(),
    collectIncrementally: () => {
      const ended = fullCollection(START_COLLECT_WAIT_MS);
      native().memoryPressure();
      return ended;
    },
    fixMallocThreshold,
    heapGrowth: (phase) => void heapGrowth(phase),
    freeBuffer: (b) => void native().freeArrayBuffer(b),
  };
}

export { MALLOC_MMAP_THRESHOLD } from './malloc';

/** A daemon on this host's kernel. */
export function createDaemon(o: DaemonSettings & { bpffs: string }): Daemon {
  const { bpffs, ...settings } = o;
  return new Daemon({ ...settings, ...kernelCollaborators({ bpffs }) });
}

/**
 * This node for the config's nodes section: its name (--node-name, NODE_NAME, else the host name) and labels
 * (--node-labels on a bare host; with Kubernetes, its Node object's, polled for relabels; else none).
 */
export function nodeIdentity(o: {
  name?: string;
  labels?: string;
  kubernetes?: { kubeconfig?: string };
}): NodeIdentitySource {
  const name = o.name || process.env.NODE_NAME || hostname();
  if (o.labels !== undefined) {
    const parsed = parseNodeLabels(o.labels);
    if (!parsed.ok) throw new TypeError(`--node-labels: ${parsed.error}`);
    return { name, labels: () => Promise.resolve({ ...parsed.labels }) };
  }
  if (o.kubernetes === undefined) return UNLABELLED_NODE(name);
  const kubeconfig = o.kubernetes.kubeconfig;
  let self: Promise<import('../sources/kubernetes/node-self').NodeSelf> | null = null;
  // The Kubernetes client is loaded only when a config with a nodes section asks for the labels.
  const load = () =>
    (self ??= Promise.all([
      import('../sources/kubernetes/node-self'),
      import('../sources/kubernetes/client'),
    ]).then(([ns, client]) => ns.nodeSelf({ name, api: () => client.connectKube({ kubeconfig }) })));
  return {
    name,
    labels: async () => (await load()).labels(),
    watch: (onChange) => {
      let stop: (() => void) | null = null;
      let stopped = false;
      void load().then((x) => {
        if (!stopped) stop = x.watch(onChange);
      });
      return () => {
        stopped = true;
        stop?.();
      };
    },
  };
}
