// deploy/ manifests: kinds, RBAC verbs equal to the API calls the code makes, capabilities, mounts, examples.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
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

const deployDir = join(__dirname, '..', '..', 'deploy');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;

// Kubernetes manifests; prometheus-alerts*.yaml are Prometheus rule files (test/integration/metrics-promtool.test.ts).
const files = readdirSync(deployDir).filter((f) => f.endsWith('.yaml') && !f.startsWith('prometheus-'));
const docs: { file: string; doc: Doc }[] = files.flatMap((file) =>
  YAML.parseAllDocuments(readFileSync(join(deployDir, file), 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    return { file, doc: d.toJS() as Doc };
  }),
);
const ofKind = (kind: string): Doc[] => docs.filter((d) => d.doc?.kind === kind).map((d) => d.doc);
const one = (kind: string): Doc => {
  const all = ofKind(kind);
  if (all.length !== 1) throw new Error(`expected one ${kind}, found ${all.length}`);
  return all[0];
};
const flatten = (rules: Doc[]): string[] =>
  rules
    .flatMap((r: Doc) =>
      r.apiGroups.flatMap((g: string) =>
        r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${g}|${res}|${v}`)),
      ),
    )
    .sort();

describe('deploy/', () => {
  it('has the manifests, each document with apiVersion, kind and name', () => {
    expect(files.sort()).toEqual(['configmap.yaml', 'daemonset.yaml', 'example-service.yaml', 'rbac.yaml']);
    expect(docs.length).toBeGreaterThanOrEqual(10);
    for (const { file, doc } of docs) {
      expect([file, typeof doc.apiVersion, typeof doc.kind, typeof doc.metadata?.name]).toEqual([
        file,
        'string',
        'string',
        'string',
      ]);
    }
    expect(docs.map((d) => d.doc.kind).sort()).toEqual(
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'ConfigMap',
        'DaemonSet',
        'Deployment',
        'Namespace',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
      ].sort(),
    );
  });

  it('grants exactly the verbs the code calls: cluster-wide in the ClusterRole, the Lease in a Role', () => {
    const want = requiredRules();
    const cluster = want
      .filter((r) => r.scope === 'cluster')
      .flatMap((r) => r.verbs.map((v) => `${r.group}|${r.resource}|${v}`))
      .sort();
    const ns = want
      .filter((r) => r.scope === 'namespace')
      .flatMap((r) => r.verbs.map((v) => `${r.group}|${r.resource}|${v}`))
      .sort();
    expect(cluster.length).toBeGreaterThan(0);
    expect(ns.length).toBeGreaterThan(0);
    expect(flatten(one('ClusterRole').rules)).toEqual(cluster);
    const role = one('Role');
    expect(flatten(role.rules)).toEqual(ns);
    expect(role.metadata.namespace).toBe(DEFAULT_LEADER_ELECTION.namespace);
    // No wildcards anywhere.
    for (const r of [...one('ClusterRole').rules, ...role.rules])
      for (const k of ['apiGroups', 'resources', 'verbs']) expect(r[k]).not.toContain('*');
  });

  it('binds the roles to the DaemonSet service account', () => {
    const sa = one('ServiceAccount');
    const ds = one('DaemonSet');
    expect(ds.spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    for (const [binding, role] of [
      [one('ClusterRoleBinding'), one('ClusterRole')],
      [one('RoleBinding'), one('Role')],
    ]) {
      expect(binding.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: role.kind,
        name: role.metadata.name,
      });
      expect(binding.subjects).toEqual([
        { kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace },
      ]);
    }
  });

  it('runs the DaemonSet on LB nodes with host networking, bpffs, the host lock dir and only BPF, NET_ADMIN, PERFMON, NET_BIND_SERVICE', () => {
    const ds = one('DaemonSet');
    const pod = ds.spec.template.spec;
    expect(ds.spec.selector.matchLabels).toEqual(ds.spec.template.metadata.labels);
    expect(pod.hostNetwork).toBe(true);
    expect(Object.keys(pod.nodeSelector ?? {})).toHaveLength(1);
    expect(pod.containers.map((x: Doc) => x.name)).toEqual(['peak-xdp', 'bfd']);
    const c = pod.containers[0];
    expect(c.securityContext.privileged).toBe(false);
    // NET_BIND_SERVICE: a passive BGP peer's listener on port 179.
    expect(c.securityContext.capabilities.add.sort()).toEqual([
      'BPF',
      'NET_ADMIN',
      'NET_BIND_SERVICE',
      'PERFMON',
    ]);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    expect(c.args).toContain('--kubernetes');
    const bpffs = pod.volumes.find((v: Doc) => v.hostPath?.path === '/sys/fs/bpf');
    expect(bpffs).toBeDefined();
    expect(c.volumeMounts).toContainEqual({ name: bpffs.name, mountPath: '/sys/fs/bpf' });
    // The pin directory's lock (src/daemon/lock.ts) under a read-only root filesystem: the host's /run/peak-xdp.
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    const locks = pod.volumes.find((v: Doc) => v.hostPath?.path === dirname(DEFAULT_LOCK_DIR));
    expect(locks).toBeDefined();
    expect(c.volumeMounts).toContainEqual({ name: locks.name, mountPath: dirname(DEFAULT_LOCK_DIR) });
    const cfgVol = pod.volumes.find((v: Doc) => v.configMap);
    expect(cfgVol.configMap.name).toBe(one('ConfigMap').metadata.name);
    expect(c.env).toContainEqual({
      name: 'NODE_NAME',
      valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } },
    });
    for (const doc of docs
      .map((d) => d.doc)
      .filter((d) => d.metadata.namespace !== undefined && d.kind !== 'Service' && d.kind !== 'Deployment'))
      expect(doc.metadata.namespace).toBe(one('Namespace').metadata.name);
  });

  it('runs BFD in its own container: bfd-daemon, the shared host /run/peak-xdp, read-only bpffs, only BPF and NET_ADMIN', () => {
    const pod = one('DaemonSet').spec.template.spec;
    const daemon = pod.containers.find((x: Doc) => x.name === 'peak-xdp');
    const bfd = pod.containers.find((x: Doc) => x.name === 'bfd');
    expect(bfd).toBeDefined();
    expect(bfd.image).toBe(daemon.image);
    expect(bfd.args[0]).toBe('bfd-daemon');
    expect(bfd.securityContext.privileged).toBe(false);
    expect(bfd.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(bfd.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN']);
    expect(bfd.securityContext.capabilities.drop).toEqual(['ALL']);
    // The control socket's directory is the daemon's and the host's (DEFAULT_CONTROL_PATH lives in it).
    const run = pod.volumes.find((v: Doc) => v.hostPath?.path === dirname(BFD_DEFAULTS.controlSocket));
    expect(run).toBeDefined();
    expect(bfd.volumeMounts).toContainEqual({
      name: run.name,
      mountPath: dirname(BFD_DEFAULTS.controlSocket),
    });
    expect(daemon.volumeMounts).toContainEqual({
      name: run.name,
      mountPath: dirname(BFD_DEFAULTS.controlSocket),
    });
    // The forwarding-plane check reads the pinned balancer, never writes bpffs.
    const bpffs = pod.volumes.find((v: Doc) => v.hostPath?.path === '/sys/fs/bpf');
    expect(bfd.volumeMounts).toContainEqual({ name: bpffs.name, mountPath: '/sys/fs/bpf', readOnly: true });
    const pinArg = bfd.args.find((a: string) => a.startsWith('--forwarding-pin='));
    expect(pinArg).toBe('--forwarding-pin=/sys/fs/bpf/peak-xdp/root/$(PEAK_XDP_INTERFACE)/balancer');
    expect(bfd.args).toContain('--forwarding-interface=$(PEAK_XDP_INTERFACE)');
    expect(bfd.env.map((e: Doc) => e.name)).toContain('PEAK_XDP_INTERFACE');
  });

  it('ships a systemd unit for the BFD process that starts before the daemon and is not restarted with it', () => {
    const unit = readFileSync(join(deployDir, 'systemd', 'peak-xdp-bfd.service'), 'utf8');
    const line = (k: string) => unit.split('\n').filter((l) => l.startsWith(`${k}=`));
    expect(line('ExecStart')).toEqual([expect.stringMatching(/peak-xdp bfd-daemon/)]);
    expect(line('Before')).toEqual(['Before=peak-xdp.service']);
    expect(line('PartOf')).toEqual([]);
    expect(line('BindsTo')).toEqual([]);
  });

  it('ships a ConfigMap whose config the model and the kubernetes settings accept', () => {
    const text = one('ConfigMap').data['config.yaml'];
    const { kubernetes, ...rest } = YAML.parse(text);
    const base = validateConfig(rest);
    expect(base.ok ? [] : base.errors).toEqual([]);
    const k = parseKubernetesSettings(kubernetes);
    expect(k.ok ? [] : k.issues).toEqual([]);
    expect(k.ok && k.settings.loadBalancerClass).toBe(DEFAULT_LOAD_BALANCER_CLASS);
  });

  it('has an example Service of our class whose backends run the decap init container with its VIP', () => {
    const svc = one('Service');
    expect(svc.spec.type).toBe('LoadBalancer');
    expect(svc.spec.loadBalancerClass).toBe(DEFAULT_LOAD_BALANCER_CLASS);
    for (const p of svc.spec.ports) expect(p.targetPort ?? p.port).toBe(p.port);
    const dep = one('Deployment');
    expect(dep.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    const init = dep.spec.template.spec.initContainers.find((c: Doc) => c.args?.[0] === 'decap');
    expect(init.args.slice(0, 2)).toEqual(['decap', 'attach']);
    expect(init.args).toContain(`--vip=${svc.metadata.annotations['peak-xdp.io/vip']}`);
    expect(init.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN']);
  });

  it('has a multi-stage Dockerfile (build, then a slim runtime)', () => {
    const text = readFileSync(join(deployDir, 'Dockerfile'), 'utf8');
    const froms = text.split('\n').filter((l) => /^FROM /.test(l));
    expect(froms).toHaveLength(2);
    expect(froms[1]).toMatch(/slim/);
    expect(text).toMatch(/COPY --from=build/);
    expect(text).toMatch(/cmake-js build/);
  });
});
