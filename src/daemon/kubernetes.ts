// The daemon's Kubernetes side, loaded only when asked for (the client library is big): the kubernetes
// section of the config, and the Services/EndpointSlices source.
import { hostname } from 'node:os';
import type { Registry } from '../metrics/prom';
import type { Logger } from '../log';
import type { Config, VipConfig } from '../model/config';
import { formatIssue } from '../model/errors';
import type { KubernetesSource } from '../sources/kubernetes/source';

/** The kubernetes section, parsed (checked at start before the datapath is touched, used after). */
export async function kubernetesSettings(config: Config) {
  const { parseKubernetesSettings } = await import('../sources/kubernetes/settings');
  const raw = (config as Config & { kubernetes?: unknown }).kubernetes;
  const parsed = parseKubernetesSettings(raw ?? {});
  if (!parsed.ok)
    throw new Error(parsed.issues.map((i) => formatIssue({ ...i, path: `kubernetes.${i.path}` })).join('; '));
  return parsed;
}

/** The source, not started yet. */
export async function kubernetesSource(o: {
  config: Config;
  kubeconfig?: string;
  nodeName?: string;
  registry: Registry;
  log: Logger;
  onChange: (vips: VipConfig[]) => Promise<void>;
}): Promise<KubernetesSource> {
  const { KubernetesSource } = await import('../sources/kubernetes/source');
  const parsed = await kubernetesSettings(o.config);
  // The Lease holder identity and Event reporter: --node-name, NODE_NAME (the DaemonSet passes
  // spec.nodeName), else the host name (a hostNetwork pod's host name is the node's).
  const nodeName = o.nodeName || process.env.NODE_NAME || hostname();
  return new KubernetesSource({
    ...parsed.settings,
    kubeconfig: o.kubeconfig,
    nodeName,
    registry: o.registry,
    logger: o.log.child({ component: 'kubernetes' }),
    onChange: o.onChange,
  });
}
