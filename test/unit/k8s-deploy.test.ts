// deploy/ as kustomize renders it: every overlay renders with kubectl, every object validates against the
// Kubernetes API models (unknown fields and wrong types fail), RBAC verbs equal the API calls the code makes,
// each role's capabilities, mounts, ports and probes, the monitoring objects, the examples, the Containerfile.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import YAML from 'yaml';
import { DEFAULT_LOCK_DIR } from '../../src/daemon/lock';
import { BFD_DEFAULTS } from '../../src/model/bgp';
import { validateConfig } from '../../src/model/config';
import {
  DEFAULT_LEADER_ELECTION,
  DEFAULT_LOAD_BALANCER_CLASS,
  parseKubernetesSettings,
  requiredRules,
} from '../../src/sources/kubernetes';

const root = join(__dirname, '..', '..');
const deployDir = join(root, 'deploy');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE = `localhost/peak-xdp:${version}`;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;

/** `kubectl kustomize DIR` (offline: kustomize needs no API server), as parsed documents. */
function render(dir: string): Doc[] {
  const out = execFileSync('kubectl', ['kustomize', dir], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return YAML.parseAllDocuments(out).map((d) => {
    if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]!.message}`);
    return d.toJS() as Doc;
  });
}

function parseFile(path: string): Doc[] {
  return YAML.parseAllDocuments(readFileSync(path, 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0]!.message}`);
    return d.toJS() as Doc;
  });
}

interface Attr {
  name: string;
  baseName: string;
  type: string;
}
/**
 * The API's object models (OpenAPI types) as @kubernetes/client-node generates them: name -> fields. The package
 * is ESM-only, which jest's CommonJS runtime cannot import, so a child node process reads them out.
 */
const models: Record<string, Attr[]> = JSON.parse(
  execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import * as k from '@kubernetes/client-node';
       const out = {};
       for (const [n, c] of Object.entries(k)) if (Array.isArray(c?.attributeTypeMap)) out[n] = c.attributeTypeMap;
       process.stdout.write(JSON.stringify(out));`,
    ],
    { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 },
  ),
);

/**
 * Problems of `value` as an instance of the client-node model type `type` (the API's OpenAPI types): fields the
 * model does not have, and values of the wrong JSON type. Empty when it validates.
 */
function validate(value: unknown, type: string, path: string): string[] {
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (!Array.isArray(value)) return [`${path}: expected a list (${type}), got ${JSON.stringify(value)}`];
    return value.flatMap((v, i) => validate(v, arr[1]!, `${path}[${i}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return [`${path}: expected a map (${type})`];
    return Object.entries(value).flatMap(([k, v]) => validate(v, map[1]!, `${path}.${k}`));
  }
  switch (type) {
    case 'string':
    case 'Date':
      return typeof value === 'string' ? [] : [`${path}: expected a string, got ${JSON.stringify(value)}`];
    case 'number':
      return typeof value === 'number' ? [] : [`${path}: expected a number, got ${JSON.stringify(value)}`];
    case 'boolean':
      return typeof value === 'boolean' ? [] : [`${path}: expected a boolean, got ${JSON.stringify(value)}`];
    case 'IntOrString':
      return typeof value === 'number' || typeof value === 'string'
        ? []
        : [`${path}: expected int or string`];
    case 'any':
    case 'object':
      return [];
  }
  const attrs = models[type];
  if (!attrs) return [`${path}: no model ${type}`];
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return [`${path}: expected an object (${type}), got ${JSON.stringify(value)}`];
  const byName = new Map(attrs.map((a) => [a.baseName, a]));
  return Object.entries(value).flatMap(([k, v]) => {
    const a = byName.get(k);
    if (!a) return [`${path}.${k}: not a field of ${type}`];
    return validate(v, a.type, `${path}.${k}`);
  });
}

/** Validates a built-in object by its kind (apiVersion group/v1 -> model V1<Kind>); names what is wrong. */
function validateObject(doc: Doc): string[] {
  const where = `${doc?.kind}/${doc?.metadata?.name}`;
  if (typeof doc?.apiVersion !== 'string' || typeof doc?.kind !== 'string')
    return [`${where}: apiVersion/kind`];
  if (typeof doc.metadata?.name !== 'string' || doc.metadata.name === '') return [`${where}: metadata.name`];
  if (!/^(v1|[a-z0-9.]+\/v1)$/.test(doc.apiVersion))
    return [`${where}: ${doc.apiVersion} is not a stable v1 API`];
  return validate(doc, `V1${doc.kind}`, where);
}

const MONITORING_KINDS = ['PodMonitor', 'ServiceMonitor', 'PrometheusRule'];

/** The Prometheus Operator's objects (no client model): the fields the operator needs, no typo'd top level. */
function validateMonitoring(doc: Doc): string[] {
  const where = `${doc.kind}/${doc.metadata?.name}`;
  const errs: string[] = [];
  if (doc.apiVersion !== 'monitoring.coreos.com/v1') errs.push(`${where}: apiVersion ${doc.apiVersion}`);
  for (const k of Object.keys(doc))
    if (!['apiVersion', 'kind', 'metadata', 'spec'].includes(k)) errs.push(`${where}: ${k}`);
  errs.push(...validate(doc.metadata, 'V1ObjectMeta', `${where}.metadata`));
  if (doc.kind === 'PrometheusRule') {
    for (const g of doc.spec?.groups ?? [])
      for (const r of g.rules ?? [])
        if (typeof r.alert !== 'string' || typeof r.expr !== 'string')
          errs.push(`${where}: rule ${JSON.stringify(r)}`);
    if (!(doc.spec?.groups?.length > 0)) errs.push(`${where}: no groups`);
  } else {
    const eps = doc.kind === 'PodMonitor' ? doc.spec?.podMetricsEndpoints : doc.spec?.endpoints;
    if (!(eps?.length > 0)) errs.push(`${where}: no endpoints`);
    for (const e of eps ?? [])
      if (typeof e.port !== 'string') errs.push(`${where}: endpoint without a port name`);
    errs.push(...validate(doc.spec?.selector, 'V1LabelSelector', `${where}.spec.selector`));
  }
  return errs;
}

const DIRS = {
  top: deployDir,
  all: join(deployDir, 'overlays', 'all'),
  lb: join(deployDir, 'overlays', 'lb'),
  backend: join(deployDir, 'overlays', 'backend'),
  monitoring: join(deployDir, 'monitoring'),
  serviceMonitor: join(deployDir, 'monitoring', 'servicemonitor'),
};
const rendered = Object.fromEntries(Object.entries(DIRS).map(([k, d]) => [k, render(d)])) as Record<
  keyof typeof DIRS,
  Doc[]
>;
const EXAMPLES = ['service-node-mode.yaml', 'service-pod-mode.yaml'];
const examples = Object.fromEntries(
  EXAMPLES.map((f) => [f, parseFile(join(deployDir, 'examples', f))]),
) as Record<string, Doc[]>;

const kinds = (docs: Doc[]): string[] => docs.map((d) => `${d.kind}/${d.metadata.name}`).sort();
const ofKind = (docs: Doc[], kind: string): Doc[] => docs.filter((d) => d.kind === kind);
const one = (docs: Doc[], kind: string, name?: string): Doc => {
  const all = ofKind(docs, kind).filter((d) => name === undefined || d.metadata.name === name);
  if (all.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${all.length}`);
  return all[0];
};
const all = rendered.all;
const lbDs = one(all, 'DaemonSet', 'peak-xdp');
const beDs = one(all, 'DaemonSet', 'peak-xdp-backend');
const container = (ds: Doc, name: string): Doc => {
  const c = ds.spec.template.spec.containers.find((x: Doc) => x.name === name);
  if (!c) throw new Error(`${ds.metadata.name} has no container ${name}`);
  return c;
};
const flatten = (rules: Doc[]): string[] =>
  rules
    .flatMap((r: Doc) =>
      r.apiGroups.flatMap((g: string) =>
        r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${g}|${res}|${v}`)),
      ),
    )
    .sort();
const portOf = (listen: string): number => Number(/:(\d+)$/.exec(listen)![1]);

describe('deploy/ (kustomize)', () => {
  it('every overlay renders and every object validates against the API models', () => {
    const counts: Record<string, number> = {};
    for (const [name, docs] of Object.entries(rendered)) {
      counts[name] = docs.length;
      expect(docs.length).toBeGreaterThan(0);
      const errs = docs.flatMap((d) =>
        MONITORING_KINDS.includes(d.kind) ? validateMonitoring(d) : validateObject(d),
      );
      expect([name, errs]).toEqual([name, []]);
    }
    for (const [f, docs] of Object.entries(examples))
      expect([f, docs.flatMap(validateObject)]).toEqual([f, []]);
    console.log(`rendered objects: ${JSON.stringify(counts)}`);
  });

  it('the validator itself refuses a misspelt field, a wrong type and an unknown kind', () => {
    const ds = structuredClone(lbDs);
    ds.spec.template.spec.containers[0].readinesProbe = {};
    ds.spec.template.spec.hostNetwork = 'yes';
    expect(validateObject(ds)).toEqual([
      'DaemonSet/peak-xdp.spec.template.spec.containers[0].readinesProbe: not a field of V1Container',
      'DaemonSet/peak-xdp.spec.template.spec.hostNetwork: expected a boolean, got "yes"',
    ]);
    expect(validateObject({ apiVersion: 'v1', kind: 'Nope', metadata: { name: 'x' } })).toEqual([
      'Nope/x: no model V1Nope',
    ]);
  });

  it('deploy/ is overlays/all; lb and backend each carry their role only, with what it needs', () => {
    expect(kinds(rendered.top)).toEqual(kinds(all));
    expect(kinds(all)).toEqual(
      [
        'ClusterRole/peak-xdp',
        'ClusterRoleBinding/peak-xdp',
        'ConfigMap/peak-xdp-config',
        'DaemonSet/peak-xdp',
        'DaemonSet/peak-xdp-backend',
        'Namespace/peak-xdp-system',
        'Role/peak-xdp-leader-election',
        'RoleBinding/peak-xdp-leader-election',
        'ServiceAccount/peak-xdp',
        'ServiceAccount/peak-xdp-backend',
      ].sort(),
    );
    expect(kinds(rendered.lb)).toEqual(
      kinds(all).filter((k) => k !== 'DaemonSet/peak-xdp-backend' && k !== 'ServiceAccount/peak-xdp-backend'),
    );
    expect(kinds(rendered.backend)).toEqual(
      ['DaemonSet/peak-xdp-backend', 'Namespace/peak-xdp-system', 'ServiceAccount/peak-xdp-backend'].sort(),
    );
    // Namespaced objects all live in the one namespace.
    const ns = one(all, 'Namespace').metadata.name;
    for (const d of all.filter((x) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind)))
      expect([d.kind, d.metadata.namespace]).toEqual([d.kind, ns]);
  });

  it('uses the image localhost/peak-xdp:<package version> everywhere (an overlay `images:` entry replaces it)', () => {
    const images = [...all, ...examples['service-pod-mode.yaml']!]
      .filter((d) => d.kind === 'DaemonSet' || d.kind === 'Deployment')
      .flatMap((d) => [...(d.spec.template.spec.initContainers ?? []), ...d.spec.template.spec.containers])
      .map((c: Doc) => c.image)
      .filter((i: string) => i.includes('peak-xdp'));
    expect(images.length).toBe(4);
    expect(new Set(images)).toEqual(new Set([IMAGE]));
    // The documented override works: a kustomization naming the image by its base name rewrites every use.
    const dir = mkdtempSync(join(tmpdir(), 'pkg-kustomize-'));
    try {
      writeFileSync(
        join(dir, 'kustomization.yaml'),
        YAML.stringify({
          resources: [relative(dir, DIRS.all)],
          images: [{ name: 'localhost/peak-xdp', newName: 'registry.example.com/peak-xdp', newTag: '9.9.9' }],
        }),
      );
      const out = render(dir)
        .filter((d) => d.kind === 'DaemonSet')
        .flatMap((d) => d.spec.template.spec.containers.map((c: Doc) => c.image));
      expect(new Set(out)).toEqual(new Set(['registry.example.com/peak-xdp:9.9.9']));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('grants exactly the verbs the code calls: cluster-wide in the ClusterRole (Nodes included), the Lease in a Role', () => {
    const want = requiredRules();
    const cluster = want
      .filter((r) => r.scope === 'cluster')
      .flatMap((r) => r.verbs.map((v) => `${r.group}|${r.resource}|${v}`))
      .sort();
    const ns = want
      .filter((r) => r.scope === 'namespace')
      .flatMap((r) => r.verbs.map((v) => `${r.group}|${r.resource}|${v}`))
      .sort();
    expect(cluster).toEqual(expect.arrayContaining(['|nodes|get', '|nodes|list', '|nodes|watch']));
    expect(flatten(one(all, 'ClusterRole').rules)).toEqual(cluster);
    const role = one(all, 'Role');
    expect(flatten(role.rules)).toEqual(ns);
    expect(role.metadata.namespace).toBe(DEFAULT_LEADER_ELECTION.namespace);
    for (const r of [...one(all, 'ClusterRole').rules, ...role.rules])
      for (const k of ['apiGroups', 'resources', 'verbs']) expect(r[k]).not.toContain('*');
  });

  it('every container of both roles: not privileged, no escalation, read-only root, seccomp Unconfined (bpf())', () => {
    const cs = [lbDs, beDs].flatMap((ds) => ds.spec.template.spec.containers);
    expect(cs).toHaveLength(3);
    for (const c of cs)
      expect([c.name, c.securityContext]).toMatchObject([
        c.name,
        {
          privileged: false,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          seccompProfile: { type: 'Unconfined' },
          capabilities: { drop: ['ALL'] },
        },
      ]);
  });

  it('binds the roles to the LB service account; the backend account has no role and no token', () => {
    const sa = one(all, 'ServiceAccount', 'peak-xdp');
    expect(lbDs.spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    for (const [binding, role] of [
      [one(all, 'ClusterRoleBinding'), one(all, 'ClusterRole')],
      [one(all, 'RoleBinding'), one(all, 'Role')],
    ]) {
      expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: role.kind, name: role.metadata.name }); // prettier-ignore
      expect(binding.subjects).toEqual([
        { kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace },
      ]);
    }
    const beSa = one(all, 'ServiceAccount', 'peak-xdp-backend');
    expect(beDs.spec.template.spec.serviceAccountName).toBe(beSa.metadata.name);
    expect(beSa.automountServiceAccountToken).toBe(false);
    expect(beDs.spec.template.spec.automountServiceAccountToken).toBe(false);
  });

  it('LB role: LB nodes only, host network, bpffs, host lock dir, only BPF, NET_ADMIN, PERFMON, NET_BIND_SERVICE', () => {
    const pod = lbDs.spec.template.spec;
    expect(lbDs.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'peak-xdp' });
    expect(lbDs.spec.template.metadata.labels).toMatchObject(lbDs.spec.selector.matchLabels);
    expect(pod.hostNetwork).toBe(true);
    // The image is amd64 only.
    expect(pod.nodeSelector).toEqual({ 'peak-xdp.io/lb-node': 'true', 'kubernetes.io/arch': 'amd64' });
    expect(pod.containers.map((x: Doc) => x.name)).toEqual(['peak-xdp', 'bfd']);
    const c = container(lbDs, 'peak-xdp');
    expect(c.args).toEqual([
      'daemon',
      '--config=/etc/peak-xdp/config.yaml',
      '--kubernetes',
      '--metrics-listen=0.0.0.0:9471',
    ]);
    expect(c.securityContext.privileged).toBe(false);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.capabilities.add.sort()).toEqual([
      'BPF',
      'NET_ADMIN',
      'NET_BIND_SERVICE',
      'PERFMON',
    ]);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    const bpffs = pod.volumes.find((v: Doc) => v.hostPath?.path === '/sys/fs/bpf');
    expect(c.volumeMounts).toContainEqual({ name: bpffs.name, mountPath: '/sys/fs/bpf' });
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    const locks = pod.volumes.find((v: Doc) => v.hostPath?.path === dirname(DEFAULT_LOCK_DIR));
    expect(c.volumeMounts).toContainEqual({ name: locks.name, mountPath: dirname(DEFAULT_LOCK_DIR) });
    const cfgVol = pod.volumes.find((v: Doc) => v.configMap);
    expect(cfgVol.configMap.name).toBe(one(all, 'ConfigMap').metadata.name);
    expect(c.volumeMounts).toContainEqual({ name: cfgVol.name, mountPath: '/etc/peak-xdp', readOnly: true });
    expect(c.env).toContainEqual({
      name: 'NODE_NAME',
      valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } },
    });
  });

  it('LB role: port `metrics` is the --metrics-listen arg (not the replaceable ConfigMap); probes use it; admin writes stay on loopback', () => {
    const c = container(lbDs, 'peak-xdp');
    const cfg = YAML.parse(one(all, 'ConfigMap').data['config.yaml']);
    expect(cfg.admin.listen).toMatch(/^127\.0\.0\.1:/);
    // One source of truth: the flag (which replaces admin.metricsListen), so a user's ConfigMap cannot drop it.
    expect(cfg.admin.metricsListen).toBeUndefined();
    const listen = c.args.filter((a: string) => a.startsWith('--metrics-listen='));
    expect(listen).toEqual([expect.stringMatching(/^--metrics-listen=0\.0\.0\.0:\d+$/)]);
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: portOf(listen[0]), protocol: 'TCP' }]);
    expect(c.ports[0].containerPort).toBe(9471);
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      expect([p, c[p].httpGet.port, c[p].httpGet.host]).toEqual([p, 'metrics', undefined]);
      expect(['/healthz', '/readyz']).toContain(c[p].httpGet.path);
    }
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    // Sized from the README's measurements: start -> ready up to 114.5 s (1,000 Services x 20 endpoints), RSS
    // peaks ~550 MB (8 MiB YAML config) and ~515 MB (a /metrics scrape at 512 x 100 with per-backend series).
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(120);
    expect(c.resources.limits.memory).toBe('1Gi');
  });

  it('LB role: BFD in its own container, the bpffs read-only, the host /run/peak-xdp, only BPF and NET_ADMIN, interface from the balancer pin', () => {
    const pod = lbDs.spec.template.spec;
    const daemon = container(lbDs, 'peak-xdp');
    const bfd = container(lbDs, 'bfd');
    expect(bfd.image).toBe(daemon.image);
    expect(bfd.securityContext.privileged).toBe(false);
    expect(bfd.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(bfd.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN']);
    expect(bfd.securityContext.capabilities.drop).toEqual(['ALL']);
    const run = pod.volumes.find((v: Doc) => v.hostPath?.path === dirname(BFD_DEFAULTS.controlSocket));
    for (const c of [bfd, daemon])
      expect(c.volumeMounts).toContainEqual({
        name: run.name,
        mountPath: dirname(BFD_DEFAULTS.controlSocket),
      });
    const bpffs = pod.volumes.find((v: Doc) => v.hostPath?.path === '/sys/fs/bpf');
    expect(bfd.volumeMounts).toContainEqual({ name: bpffs.name, mountPath: '/sys/fs/bpf', readOnly: true });
    // The script finds the interface by the daemon's pin (peak-xdp/root/<if>/balancer), the newest of several,
    // waiting for one as long as it takes: no fallback to a configured name (test/integration/image.test.ts runs it).
    expect(bfd.command).toEqual(['/bin/sh', '-c']);
    const script: string = bfd.args[0];
    expect(script).toContain('pins=/sys/fs/bpf/peak-xdp/root');
    expect(script).toContain('ls -td "$pins"/*/balancer');
    expect(script).not.toMatch(/PEAK_XDP_INTERFACE|seq /);
    expect(script).toContain(
      'exec peak-xdp bfd-daemon --forwarding-interface="$ifname" --forwarding-pin="$pins/$ifname/balancer"',
    );
    // Kubernetes expands $(NAME) in args: the script must hold none.
    expect(script).not.toMatch(/\$\(/);
    expect(bfd.env).toBeUndefined();
  });

  it('backend role: every node but LB nodes, host network, decap run on the NODE_IP interface, kept across restarts, only BPF, NET_ADMIN, PERFMON, metrics 9472', () => {
    const pod = beDs.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/arch': 'amd64' });
    // Never where the LB DaemonSet runs: the balancer holds the NIC's one XDP slot.
    const lbLabel = Object.entries(lbDs.spec.template.spec.nodeSelector).find(([k]) => k.startsWith('peak-xdp.io/'))!; // prettier-ignore
    expect(pod.affinity).toEqual({
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [
            { matchExpressions: [{ key: lbLabel[0], operator: 'NotIn', values: [lbLabel[1]] }] },
          ],
        },
      },
    });
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.containers).toHaveLength(1);
    const c = pod.containers[0];
    expect(c.image).toBe(IMAGE);
    expect(c.args.slice(0, 3)).toEqual(['decap', 'run', '--interface=auto']);
    // A rollout leaves the program attached; the next pod adopts it (no window without decap).
    expect(c.args).toContain('--keep-on-exit');
    // --interface=auto prefers the interface with the Node's IP (where the LB nodes encapsulate to).
    expect(c.env).toContainEqual({
      name: 'NODE_IP',
      valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } },
    });
    expect(c.args).not.toContainEqual(expect.stringMatching(/^--vip/));
    expect(c.securityContext.privileged).toBe(false);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    // PERFMON until bpf/decap.bpf.c verifies without it (the DaemonSet says why).
    expect(c.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN', 'PERFMON']);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    const listen = c.args.find((a: string) => a.startsWith('--metrics-listen='));
    expect(listen).toBe('--metrics-listen=0.0.0.0:9472');
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9472, protocol: 'TCP' }]);
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe'])
      expect(c[p].httpGet.port).toBe('metrics');
    expect(c.resources.limits.memory).toBeDefined();
    const bpffs = pod.volumes.find((v: Doc) => v.hostPath?.path === '/sys/fs/bpf');
    expect(c.volumeMounts).toContainEqual({ name: bpffs.name, mountPath: '/sys/fs/bpf' });
    const locks = pod.volumes.find((v: Doc) => v.hostPath?.path === dirname(DEFAULT_LOCK_DIR));
    expect(c.volumeMounts).toContainEqual({ name: locks.name, mountPath: dirname(DEFAULT_LOCK_DIR) });
  });

  it('ships a ConfigMap whose config the model and the kubernetes settings accept', () => {
    const text = one(all, 'ConfigMap').data['config.yaml'];
    const { kubernetes, ...rest } = YAML.parse(text);
    const base = validateConfig(rest);
    expect(base.ok ? [] : base.errors).toEqual([]);
    // Per-node entries select on this project's label (set at install), not a cloud-managed one.
    const keys = rest.nodes.flatMap((n: Doc) => Object.keys(n.nodeSelector.matchLabels));
    expect(new Set(keys)).toEqual(new Set(['peak-xdp.io/rack']));
    // The commented IPIP-CNI alternative: the encapSource prefix and the backend's PEAK_XDP_DECAP_FROM agree,
    // and the config is valid with it.
    const encap = /^# encapSource: \[(.+)\]$/m.exec(text)![1]!;
    const decapFrom = readFileSync(join(deployDir, 'base', 'daemonset-backend.yaml'), 'utf8');
    expect(decapFrom).toMatch(new RegExp(`^ +# value: "${encap.replace(/[./]/g, '\\$&')}"$`, 'm'));
    const withPrefix = validateConfig({ ...rest, encapSource: [encap] });
    expect(withPrefix.ok ? [] : withPrefix.errors).toEqual([]);
    const k = parseKubernetesSettings(kubernetes);
    expect(k.ok ? [] : k.issues).toEqual([]);
    expect(k.ok && k.settings.loadBalancerClass).toBe(DEFAULT_LOAD_BALANCER_CLASS);
  });

  it('monitoring: the PodMonitor and the ServiceMonitor reach both roles by their `metrics` port; the PrometheusRule is the rule file', () => {
    const pods = [lbDs, beDs].map((ds) => ({
      labels: ds.spec.template.metadata.labels as Record<string, string>,
      ports: ds.spec.template.spec.containers.flatMap((c: Doc) => (c.ports ?? []).map((p: Doc) => p.name)),
    }));
    const selects = (sel: Record<string, string>, labels: Record<string, string>) =>
      Object.entries(sel).every(([k, v]) => labels[k] === v);
    const pm = one(rendered.monitoring, 'PodMonitor');
    for (const p of pods) {
      expect(selects(pm.spec.selector.matchLabels, p.labels)).toBe(true);
      expect(p.ports).toContain(pm.spec.podMetricsEndpoints[0].port);
    }
    const sm = one(rendered.serviceMonitor, 'ServiceMonitor');
    const services = ofKind(rendered.serviceMonitor, 'Service');
    expect(services).toHaveLength(2);
    for (const p of pods) {
      const svc = services.filter((s) => selects(s.spec.selector, p.labels));
      expect(svc).toHaveLength(1);
      expect(svc[0].spec.clusterIP).toBe('None');
      expect(selects(sm.spec.selector.matchLabels, svc[0].metadata.labels)).toBe(true);
      expect(svc[0].spec.ports.map((x: Doc) => x.name)).toContain(sm.spec.endpoints[0].port);
      expect(p.ports).toContain(svc[0].spec.ports[0].targetPort);
    }
    const file = YAML.parse(
      readFileSync(join(deployDir, 'monitoring', 'rules', 'prometheus-alerts.yaml'), 'utf8'),
    );
    for (const docs of [rendered.monitoring, rendered.serviceMonitor])
      expect(one(docs, 'PrometheusRule').spec.groups).toEqual(file.groups);
  });

  it.each(['all', 'lb', 'backend'] as const)(
    'the scrape-annotation component renders with overlays/%s and annotates its roles with their metrics ports',
    (overlay) => {
      const dir = mkdtempSync(join(tmpdir(), 'pkg-kustomize-'));
      try {
        writeFileSync(
          join(dir, 'kustomization.yaml'),
          YAML.stringify({
            resources: [relative(dir, DIRS[overlay])],
            components: [relative(dir, join(deployDir, 'monitoring', 'scrape-annotations'))],
          }),
        );
        const docs = render(dir);
        expect(kinds(ofKind(docs, 'DaemonSet'))).toEqual(kinds(ofKind(rendered[overlay], 'DaemonSet')));
        for (const ds of ofKind(docs, 'DaemonSet')) {
          const a = ds.spec.template.metadata.annotations;
          const port = ds.spec.template.spec.containers.find((c: Doc) => c.ports)!.ports[0].containerPort;
          expect([ds.metadata.name, a]).toEqual([
            ds.metadata.name,
            {
              'prometheus.io/scrape': 'true',
              'prometheus.io/port': String(port),
              'prometheus.io/path': '/metrics',
            },
          ]);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('examples: node mode needs nothing in the Pods (targetPort may differ); pod mode runs the decap init container', () => {
    const node = examples['service-node-mode.yaml']!;
    const svc = one(node, 'Service');
    expect(svc.spec.loadBalancerClass).toBe(DEFAULT_LOAD_BALANCER_CLASS);
    expect(svc.metadata.annotations['peak-xdp.io/backend-mode']).toBeUndefined();
    expect(svc.spec.externalTrafficPolicy).toBe('Local');
    expect(svc.spec.ports[0].targetPort).not.toBe(svc.spec.ports[0].port);
    const dep = one(node, 'Deployment');
    expect(dep.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    expect(dep.spec.template.spec.initContainers).toBeUndefined();
    expect(JSON.stringify(dep.spec.template.spec)).not.toMatch(
      /"(securityContext|capabilities|privileged|hostNetwork)"/,
    );

    const pod = examples['service-pod-mode.yaml']!;
    const psvc = one(pod, 'Service');
    expect(psvc.metadata.annotations['peak-xdp.io/backend-mode']).toBe('pod');
    for (const p of psvc.spec.ports) expect(p.targetPort ?? p.port).toBe(p.port);
    const init = one(pod, 'Deployment').spec.template.spec.initContainers.find(
      (c: Doc) => c.args?.[0] === 'decap',
    );
    expect(init.args.slice(0, 2)).toEqual(['decap', 'attach']);
    expect(init.args).toContain(`--vip=${psvc.metadata.annotations['peak-xdp.io/vip']}`);
    // /proc/sys is read-only in an unprivileged container: the VIP only, no DSR sysctls.
    expect(init.args).toContain('--no-sysctls');
    expect(init.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN', 'PERFMON']);
    expect(init.securityContext.seccompProfile).toEqual({ type: 'Unconfined' });
    // Applying both examples creates both: no name, selector or VIP in common.
    for (const kind of ['Service', 'Deployment'])
      expect(one(pod, kind).metadata.name).not.toBe(one(node, kind).metadata.name);
    expect(psvc.spec.selector).not.toEqual(svc.spec.selector);
    expect(psvc.metadata.annotations['peak-xdp.io/vip']).not.toBe(
      svc.metadata.annotations['peak-xdp.io/vip'],
    );
  });

  it('ships a systemd unit for the BFD process that starts before the daemon and is not restarted with it', () => {
    const unit = readFileSync(join(deployDir, 'systemd', 'peak-xdp-bfd.service'), 'utf8');
    const line = (k: string) => unit.split('\n').filter((l) => l.startsWith(`${k}=`));
    expect(line('ExecStart')).toEqual([expect.stringMatching(/peak-xdp bfd-daemon/)]);
    expect(line('Before')).toEqual(['Before=peak-xdp.service']);
    expect(line('PartOf')).toEqual([]);
    expect(line('BindsTo')).toEqual([]);
  });

  it("the Containerfile: from scratch, no RUN, entrypoint peak-xdp, CMD reading the ConfigMap's mount", () => {
    const text = readFileSync(join(deployDir, 'Containerfile'), 'utf8');
    const instr = text
      .split('\n')
      .filter((l) => /^[A-Z]+ /.test(l))
      .map((l) => l.split(' ')[0]);
    expect(instr[0]).toBe('FROM');
    expect(text).toMatch(/^FROM scratch$/m);
    expect(instr).not.toContain('RUN');
    expect(text).toMatch(/^ENTRYPOINT \["peak-xdp"\]$/m);
    const cmd = JSON.parse(/^CMD (.+)$/m.exec(text)![1]!) as string[];
    expect(cmd).toEqual(['daemon', '--config', '/etc/peak-xdp/config.yaml']);
    const cfgVol = lbDs.spec.template.spec.volumes.find((v: Doc) => v.configMap);
    const mount = container(lbDs, 'peak-xdp').volumeMounts.find((m: Doc) => m.name === cfgVol.name);
    expect(join(mount.mountPath, 'config.yaml')).toBe(cmd[2]);
    expect(Object.keys(one(all, 'ConfigMap').data)).toEqual(['config.yaml']);
    for (const l of ['title', 'version', 'revision', 'created', 'licenses'])
      expect(text).toContain(`org.opencontainers.image.${l}=`);
  });
});
