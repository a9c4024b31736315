// Where a node's name and labels come from: its Node object (node-self.ts: GET by name, polled for relabels),
// --node-labels on a bare host (wiring.ts), or nothing; and the gate's pure nodeDecision.
import { nodeDecision, UNLABELLED_NODE } from '../../src/daemon/config-gate';
import { nodeIdentity } from '../../src/daemon/wiring';
import { formatIssue, validateConfig } from '../../src/model';
import type { Node } from '../../src/sources/kubernetes/objects';
import { labelsOf, nodeSelf, NodeGetter, sameLabels } from '../../src/sources/kubernetes/node-self';

const nodeObject = (name: string, labels?: Record<string, string> | null): Node => ({
  metadata: { name, ...(labels === undefined ? {} : { labels }) },
});

/** A fake API holding some Nodes; `fail` makes the next GETs throw. */
function fakeApi(nodes: Map<string, Node>) {
  const api = {
    gets: [] as string[],
    fail: null as Error | null,
    getter: {
      getNode: async (name: string) => {
        api.gets.push(name);
        if (api.fail) throw api.fail;
        return nodes.get(name) ?? null;
      },
    } satisfies NodeGetter,
  };
  return api;
}

/** A manual ticker standing in for setInterval. */
function manualEvery() {
  const t = { fns: [] as (() => void)[], ms: [] as number[], stopped: 0 };
  const every = (fn: () => void, ms: number) => {
    t.fns.push(fn);
    t.ms.push(ms);
    return () => void t.stopped++;
  };
  return { t, every };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('node-self: the Node object’s labels', () => {
  it('labelsOf copies the labels; none is {}', () => {
    const n = nodeObject('a', { zone: 'x' });
    const l = labelsOf(n);
    expect(l).toEqual({ zone: 'x' });
    l.zone = 'changed';
    expect(n.metadata.labels).toEqual({ zone: 'x' });
    expect(labelsOf(nodeObject('b'))).toEqual({});
    expect(labelsOf(nodeObject('c', null))).toEqual({});
  });

  it.each<[Record<string, string>, Record<string, string>, boolean]>([
    [{}, {}, true],
    [{ a: '1', b: '2' }, { b: '2', a: '1' }, true],
    [{ a: '1' }, { a: '2' }, false],
    [{ a: '1' }, { a: '1', b: '' }, false],
    [{ a: '' }, { b: '' }, false],
  ])('sameLabels(%j, %j) = %s', (a, b, same) => {
    expect(sameLabels(a, b)).toBe(same);
    expect(sameLabels(b, a)).toBe(same);
  });

  it('GETs its own Node by name, connecting once', async () => {
    const api = fakeApi(new Map([['lb-1', nodeObject('lb-1', { zone: 'rack-a' })]]));
    let connects = 0;
    const self = nodeSelf({ name: 'lb-1', api: async () => (connects++, api.getter) });
    expect(await self.labels()).toEqual({ zone: 'rack-a' });
    expect(await self.labels()).toEqual({ zone: 'rack-a' });
    expect(api.gets).toEqual(['lb-1', 'lb-1']);
    expect(connects).toBe(1);
  });

  it('a missing Node or a failed GET rejects naming the node', async () => {
    const api = fakeApi(new Map());
    const self = nodeSelf({ name: 'ghost', api: async () => api.getter });
    await expect(self.labels()).rejects.toThrow(
      'node "ghost" not found (NODE_NAME or --node-name must name this node)',
    );
    api.fail = new Error('connect ECONNREFUSED');
    await expect(self.labels()).rejects.toThrow('GET node ghost: connect ECONNREFUSED');
  });

  it('a failed connect is retried by the next read', async () => {
    const api = fakeApi(new Map([['n', nodeObject('n', { a: '1' })]]));
    let attempts = 0;
    const self = nodeSelf({
      name: 'n',
      api: async () => {
        if (++attempts === 1) throw new Error('no kubeconfig');
        return api.getter;
      },
    });
    await expect(self.labels()).rejects.toThrow('no kubeconfig');
    expect(await self.labels()).toEqual({ a: '1' });
    expect(attempts).toBe(2);
  });

  it('watch polls and calls back on the first read, on a change, and after a failed read only', async () => {
    const nodes = new Map([['n', nodeObject('n', { zone: 'a' })]]);
    const api = fakeApi(nodes);
    const { t, every } = manualEvery();
    const self = nodeSelf({ name: 'n', api: async () => api.getter, every, pollMs: 1234 });
    let changes = 0;
    const stop = self.watch(() => changes++);
    expect(t.ms).toEqual([1234]);
    const tick = async () => {
      t.fns[0]!();
      await flush();
      await flush();
    };
    await tick();
    expect(changes).toBe(1);
    await tick();
    expect(changes).toBe(1);
    nodes.set('n', nodeObject('n', { zone: 'b' }));
    await tick();
    expect(changes).toBe(2);
    api.fail = new Error('timeout');
    await tick();
    expect(changes).toBe(2);
    api.fail = null;
    await tick();
    expect(changes).toBe(3);
    expect(api.gets).toHaveLength(5);
    stop();
    expect(t.stopped).toBe(1);
  });
});

describe('nodeIdentity (the CLI’s node)', () => {
  const env = process.env.NODE_NAME;
  afterEach(() => {
    if (env === undefined) delete process.env.NODE_NAME;
    else process.env.NODE_NAME = env;
  });

  it('--node-labels: the given labels; the name from --node-name, else NODE_NAME', async () => {
    process.env.NODE_NAME = 'from-env';
    const n = nodeIdentity({ name: 'lb-9', labels: 'zone=rack-a,peak-xdp.io/lb-node=true' });
    expect(n.name).toBe('lb-9');
    expect(await n.labels()).toEqual({ zone: 'rack-a', 'peak-xdp.io/lb-node': 'true' });
    expect(n.watch).toBeUndefined();
    expect(nodeIdentity({ labels: '' }).name).toBe('from-env');
  });

  it('a bad --node-labels is refused, naming the pair', () => {
    expect(() => nodeIdentity({ name: 'x', labels: 'zone' })).toThrow(
      '--node-labels: "zone" is not key=value',
    );
  });

  it('neither labels nor Kubernetes: no labels', async () => {
    const n = nodeIdentity({ name: 'bare' });
    expect(await n.labels()).toEqual({});
    expect(await UNLABELLED_NODE('x').labels()).toEqual({});
  });

  it('with Kubernetes: a watchable node whose labels come from the API', () => {
    const n = nodeIdentity({ name: 'k', kubernetes: { kubeconfig: '/nonexistent/kubeconfig' } });
    expect(n.name).toBe('k');
    expect(typeof n.watch).toBe('function');
  });
});

describe('nodeDecision', () => {
  const config = (doc: Record<string, unknown>) => {
    const r = validateConfig({ interface: 'eth0', ...doc });
    if (!r.ok) throw new Error(r.errors.map(formatIssue).join('; '));
    return r.config;
  };

  it('without a nodes section: the config itself, no node needed', () => {
    const c = config({});
    expect(nodeDecision(c, null)).toEqual({ kind: 'resolved', config: c, settings: null });
    expect((nodeDecision(c, null) as { config: unknown }).config).toBe(c);
  });

  it('with one: the node’s config, or its errors', () => {
    const c = config({ nodes: [{ nodeSelector: { matchLabels: { z: 'a' } }, interface: 'eth1' }] });
    const d = nodeDecision(c, { name: 'n', labels: { z: 'a' } });
    expect(d.kind === 'resolved' && [d.config.interface, d.settings?.matched]).toEqual(['eth1', [0]]);
    const bgp = config({ bgp: { asn: 65001 }, nodes: [] });
    const bad = nodeDecision(bgp, { name: 'n', labels: {} });
    expect(bad.kind === 'invalid' && bad.errors.map((e) => e.path)).toEqual(['bgp.peers']);
    expect(() => nodeDecision(c, null)).toThrow(TypeError);
  });
});
