// The daemon as the CLI runs it: the kernel datapath under bpffs, real sockets, `ip`, the BGP speaker thread.
import { hostname } from 'node:os';
import { BfdClient } from '../bfd/client';
import { BgpSpeakerThread } from '../bgp/speaker-thread';
import { native } from '../datapath/native';
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
import { fullCollection } from '../util/gc';

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
    fixMallocThreshold: () => void native().mallocMmapThreshold(MALLOC_MMAP_THRESHOLD),
    freeBuffer: (b) => void native().freeArrayBuffer(b),
  };
}

/**
 * Blocks of this size and more are mapped on their own and unmapped when freed (glibc's initial threshold, kept
 * fixed). glibc raises its threshold to the size of the first large mapped block freed (seen with gdb in the
 * daemon at 512 x 100: 11.9 MB within 0.3 s of its start, the config's text), and from then on 256 KiB Maglev table
 * buffers came out of the table workers' malloc arenas and stayed resident there: at 512 x 100, RSS 175 MB at ready (health checks
 * on) against 130 MB with this and the start's collection (Daemon: trimMemory({ collect: true })).
 */
export const MALLOC_MMAP_THRESHOLD = 128 << 10;

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
