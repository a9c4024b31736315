// This node's own Node object: its labels for the config's nodes section (a GET by name, polled for relabels).
import type { Node } from './objects';

/** How often the Node is read again to notice a relabel (a GET of one object: cheap for the API server). */
export const NODE_LABELS_POLL_MS = 30_000;

/** The one call this needs (KubeApi.getNode in client.ts; RBAC: nodes get). */
export interface NodeGetter {
  getNode(name: string): Promise<Node | null>;
}

/** Runs `fn` every `ms`; returns the stop. */
export type Every = (fn: () => void, ms: number) => () => void;

const realEvery: Every = (fn, ms) => {
  const t = setInterval(fn, ms);
  t.unref();
  return () => clearInterval(t);
};

/** The labels of a Node (none: {}). */
export function labelsOf(node: Node): Record<string, string> {
  return { ...(node.metadata.labels ?? {}) };
}

/** Same labels, whatever their order. */
export function sameLabels(
  a: Readonly<Record<string, string>>,
  b: Readonly<Record<string, string>>,
): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

export interface NodeSelf {
  name: string;
  /** The Node's labels now (a GET); rejects naming the node when it is missing or unreadable. */
  labels(): Promise<Record<string, string>>;
  /** Polls the Node; `onChange` when its labels differ from the last read (or a read works again). */
  watch(onChange: () => void): () => void;
}

/**
 * This node as the daemon's node identity: its name (NODE_NAME / --node-name, the DaemonSet passes
 * spec.nodeName) and its Node object's labels. `api` is connected on first use.
 */
export function nodeSelf(o: {
  name: string;
  api: () => Promise<NodeGetter>;
  pollMs?: number;
  every?: Every;
}): NodeSelf {
  let api: Promise<NodeGetter> | null = null;
  const labels = async (): Promise<Record<string, string>> => {
    api ??= o.api();
    // A failed connect is retried by the next read.
    const getter = await api.catch((e: Error) => {
      api = null;
      throw e;
    });
    let node: Node | null;
    try {
      node = await getter.getNode(o.name);
    } catch (e) {
      throw new Error(`GET node ${o.name}: ${(e as Error).message}`);
    }
    if (node === null)
      throw new Error(
        `node ${JSON.stringify(o.name)} not found (NODE_NAME or --node-name must name this node)`,
      );
    return labelsOf(node);
  };
  return {
    name: o.name,
    labels,
    watch(onChange) {
      let last: Record<string, string> | null = null;
      let busy = false;
      return (o.every ?? realEvery)(() => {
        if (busy) return;
        busy = true;
        labels()
          .then((now) => {
            const changed = last === null || !sameLabels(last, now);
            last = now;
            if (changed) onChange();
          })
          // Unreadable: the next read that works calls onChange (the resolution in force stays meanwhile).
          .catch(() => (last = null))
          .finally(() => (busy = false));
      }, o.pollMs ?? NODE_LABELS_POLL_MS);
    },
  };
}
