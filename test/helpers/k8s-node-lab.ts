// A Kubernetes node-mode lab: client -- router (BIRD, ECMP) -- two LB nodes (`peak-xdp daemon --kubernetes`)
// and two worker nodes (backend role `peak-xdp decap run`, kube-proxy-shaped nftables DNAT, pods behind a bridge
// running unprivileged nginx on 8080), with the fake API server holding Nodes, the Service and EndpointSlices.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'; // prettier-ignore
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import YAML from 'yaml';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { bpfObjectPath } from '../../src/paths';
import { signalPid } from '../../scripts/lib/pids';
import { RouterDaemon, startBird, Topology } from './bgp-peers';
import { CLI_JS, killAll, removePinLocks, runAsync, waitUntil } from './daemon-lab';
import type { Obj } from './fake-apiserver';
import { RemoteApiServer } from './fake-apiserver-process';
import { LB_CLASS } from './k8s-objects';
import { run, uniqueSuffix } from './netns';

export const VIP = '198.51.100.80';
export const CLUSTER_IP = '10.96.0.80';
export const SVC = {
  namespace: 'default',
  name: 'web',
  port: 80,
  targetPort: 8080,
  healthCheckNodePort: 32001,
};
export const LB_ASN = 65001;
export const ROUTER_ASN = 65000;
/** Every pod of every node lives in here (kube-proxy's "cluster CIDR": pod traffic short-circuits). */
const CLUSTER_CIDR = '10.244.0.0/16';
const API_PORT = 6443;
/** Unprivileged uid/gid the pods' nginx runs as (nobody). */
const POD_UID = 65534;

export interface Pod {
  /** Pod name: the body nginx answers with. */
  name: string;
  node: number;
  netns: string;
  ip: string;
  /** The node-side veth (on the bridge). */
  hostIf: string;
}

export interface WorkerNode {
  index: number;
  /** The Node object's name. */
  name: string;
  netns: string;
  ip: string;
  routerIp: string;
  pods: Pod[];
}

export interface LbNodeInfo {
  index: number;
  name: string;
  netns: string;
  ip: string;
  routerIp: string;
  /** The router's interface (inside the router namespace) facing this LB. */
  routerIf: string;
  routerMac: string;
}

export type EndpointState = 'ready' | 'terminating';

export interface LabDaemonProc {
  pid: number;
  child: ChildProcess;
  exited: Promise<number | string>;
  log: string;
}

/** Per-connection result of the keep-alive client. */
export interface KeepAliveConn {
  localPort: number;
  /** Responses per pod name. */
  pods: Record<string, number>;
  ok: number;
  /** First error (null: none). */
  error: string | null;
  /** The slowest answer (ms), and how many took over 190 ms (a TCP retransmission's minimum RTO is 200 ms). */
  maxMs: number;
  slow: number;
  /** When the first error came (ms since the client started; null: none). */
  errorAtMs: number | null;
}

export interface KeepAliveResult {
  conns: KeepAliveConn[];
  ok: number;
  errors: number;
}

export interface FreshResult {
  pods: Record<string, number>;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  /** The client's local port of each connection made. */
  ports: number[];
}

/** kube-proxy's chain-name hash: base32(sha256(s)) cut to 8 characters. */
function kpHash(s: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const b = createHash('sha256').update(s).digest();
  let bits = 0;
  let val = 0;
  let out = '';
  for (const byte of b) {
    val = (val << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 8) {
      out += alphabet[(val >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 8) break;
  }
  return out;
}

/**
 * The table kube-proxy's nftables mode (pkg/proxy/nftables) writes for a LoadBalancer Service with
 * externalTrafficPolicy Local: the service-ips verdict map sends VIP . tcp . 80 to the external- chain, which
 * short-circuits pod and host traffic to the cluster-wide service- chain and sends the rest (external clients)
 * to the local- chain: numgen random over this node's endpoints only, each endpoint- chain DNATs to pod:8080.
 * `local` lists the endpoints kube-proxy uses on this node: the ready ones, else the serving-terminating ones
 * (KEP-1669); none: kube-proxy drops external traffic (no local endpoints).
 */
export function kubeProxyRuleset(o: { cluster: string[]; local: string[] }): string {
  const base = `${SVC.namespace}/${SVC.name}/tcp/http`;
  const svcChain = `service-${kpHash(base)}-${base}`;
  const extChain = `external-${kpHash(base)}-${base}`;
  const localChain = `local-${kpHash(base)}-${base}`;
  const ep = (ip: string) => {
    const id = `${base}__${ip}/${SVC.targetPort}`;
    return `endpoint-${kpHash(id)}-${id}`;
  };
  const all = [...new Set([...o.cluster, ...o.local])];
  const vmap = (ips: string[]) => `numgen random mod ${ips.length} vmap { ${ips.map((ip, i) => `${i} : goto ${ep(ip)}`).join(', ')} }`; // prettier-ignore
  // The transaction as knftables writes it (nft -f input), table "ip kube-proxy".
  const t = 'ip kube-proxy';
  // Chains first (a rule may only jump to a chain that exists), then rules, then map elements.
  return [
    `add table ${t} { comment "rules for kube-proxy" ; }`,
    `add chain ${t} mark-for-masquerade`,
    `add chain ${t} masquerading { type nat hook postrouting priority srcnat ; }`,
    `add chain ${t} services`,
    `add chain ${t} nat-prerouting { type nat hook prerouting priority dstnat ; }`,
    `add chain ${t} nat-output { type nat hook output priority -100 ; }`,
    `add map ${t} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`, // prettier-ignore
    `add chain ${t} ${svcChain}`,
    `add chain ${t} ${extChain}`,
    `add chain ${t} ${localChain}`,
    ...all.map((ip) => `add chain ${t} ${ep(ip)}`),
    `add rule ${t} mark-for-masquerade mark set mark or 0x4000`,
    `add rule ${t} masquerading mark and 0x4000 == 0 return`,
    `add rule ${t} masquerading mark set mark xor 0x4000`,
    `add rule ${t} masquerading masquerade fully-random`,
    `add rule ${t} nat-prerouting jump services`,
    `add rule ${t} nat-output jump services`,
    `add rule ${t} services ip daddr . meta l4proto . th dport vmap @service-ips`,
    `add rule ${t} ${svcChain} ip daddr ${CLUSTER_IP} tcp dport ${SVC.port} ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`,
    `add rule ${t} ${svcChain} ${o.cluster.length ? vmap(o.cluster) : 'reject'}`,
    `add rule ${t} ${extChain} ip saddr ${CLUSTER_CIDR} goto ${svcChain} comment "short-circuit pod traffic"`,
    `add rule ${t} ${extChain} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`,
    `add rule ${t} ${extChain} fib saddr type local goto ${svcChain} comment "short-circuit local traffic"`,
    `add rule ${t} ${extChain} goto ${localChain}`,
    `add rule ${t} ${localChain} ${o.local.length ? vmap(o.local) : 'drop'}`,
    ...all.flatMap((ip) => [
      `add rule ${t} ${ep(ip)} ip saddr ${ip} jump mark-for-masquerade`,
      `add rule ${t} ${ep(ip)} meta l4proto tcp dnat to ${ip}:${SVC.targetPort}`,
    ]),
    `add element ${t} service-ips { ${CLUSTER_IP} . tcp . ${SVC.port} : goto ${svcChain} }`,
    `add element ${t} service-ips { ${VIP} . tcp . ${SVC.port} : goto ${extChain} }`,
    '',
  ].join('\n');
}

function nft(netns: string, script: string): void {
  execFileSync('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { input: script, timeout: 10000, stdio: ['pipe', 'pipe', 'pipe'] }); // prettier-ignore
}

/**
 * client --- router --- lb1, lb2 (daemon --kubernetes, XDP native) ; router --- node1, node2 (decap, nftables
 * DNAT, bridge cbr0 --- pods). Names start with k8e<id>; cleanup() removes exactly what start() made.
 */
export class K8sNodeLab {
  readonly id = uniqueSuffix();
  readonly prefix = `k8e${this.id}`;
  readonly router = `${this.prefix}r`;
  readonly client = `${this.prefix}c`;
  readonly clientIp = '10.30.0.2';
  readonly dir: string;
  readonly bpffs: string;
  readonly lbs: LbNodeInfo[];
  readonly nodes: WorkerNode[];
  api!: RemoteApiServer;
  bird!: RouterDaemon;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private readonly t0 = performance.now();
  /** Every client connection's local port: what made it, and when (ms since the lab was made). */
  readonly portHistory = new Map<number, string[]>();
  private notePorts(what: string, ports: readonly number[]): void {
    const at = (performance.now() - this.t0).toFixed(0);
    for (const p of ports) this.portHistory.set(p, [...(this.portHistory.get(p) ?? []), `${what} ~${at} ms`]);
  }
  private readonly daemons: LabDaemonProc[] = [];
  private readonly decaps = new Map<number, LabDaemonProc>();
  private mounted = false;
  private count = 0;
  /** Endpoint state per pod name (what setEndpoints last wrote), for the slices and the node rules. */
  private readonly endpoints = new Map<string, EndpointState>();

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), `peak-${this.prefix}-`));
    // The pods' nginx runs as nobody and reads its config under here.
    chmodSync(this.dir, 0o755);
    this.bpffs = `/run/peak-xdp-test-${this.prefix}`;
    this.lbs = [1, 2].map((i) => ({
      index: i,
      name: `lb-${i}`,
      netns: `${this.prefix}l${i}`,
      ip: `10.31.${i}.2`,
      routerIp: `10.31.${i}.1`,
      routerIf: `l${i}`,
      routerMac: `02:00:00:31:0${i}:01`,
    }));
    this.nodes = [1, 2].map((i) => ({
      index: i,
      name: `node-${i}`,
      netns: `${this.prefix}n${i}`,
      ip: `10.32.${i}.2`,
      routerIp: `10.32.${i}.1`,
      pods: [],
    }));
  }

  private ns(netns: string, args: string[], o: { allowFail?: boolean } = {}): string {
    return run('ip', ['netns', 'exec', netns, ...args], o);
  }

  private addNs(name: string): void {
    run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    // IPv4 only: no IPv6 chatter through the LBs' counters.
    this.ns(name, [
      'sysctl',
      '-qw',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ]);
  }

  /** A veth pair from the router to `host` (its end named eth0), fixed MACs, /24, default route via the router. */
  private routerLink(o: {
    host: string;
    routerIf: string;
    hostIp: string;
    routerIp: string;
    mac: string;
    mtu: number;
  }): void {
    const hostMac = o.mac.replace(/:01$/, ':02');
    run('ip', ['link', 'add', 'name', 'eth0', 'netns', o.host, 'address', hostMac, 'mtu', String(o.mtu), 'type', 'veth', 'peer', 'name', o.routerIf, 'netns', this.router, 'address', o.mac, 'mtu', String(o.mtu)]); // prettier-ignore
    run('ip', ['-n', o.host, 'addr', 'add', `${o.hostIp}/24`, 'dev', 'eth0']);
    run('ip', ['-n', o.host, 'link', 'set', 'eth0', 'up']);
    run('ip', ['-n', this.router, 'addr', 'add', `${o.routerIp}/24`, 'dev', o.routerIf]);
    run('ip', ['-n', this.router, 'link', 'set', o.routerIf, 'up']);
    run('ip', ['-n', o.host, 'route', 'add', 'default', 'via', o.routerIp]);
    run('ip', ['-n', o.host, 'neigh', 'replace', o.routerIp, 'lladdr', o.mac, 'dev', 'eth0', 'nud', 'permanent']); // prettier-ignore
    run('ip', ['-n', this.router, 'neigh', 'replace', o.hostIp, 'lladdr', hostMac, 'dev', o.routerIf, 'nud', 'permanent']); // prettier-ignore
  }

  /** Builds everything but the LB daemons: topology, nodes (decap run serving), pods, API server, BIRD. */
  async start(): Promise<void> {
    if (!existsSync(CLI_JS)) throw new Error(`${CLI_JS} is missing: npm run build:ts`);
    this.addNs(this.router);
    this.addNs(this.client);
    for (const l of this.lbs) this.addNs(l.netns);
    for (const n of this.nodes) this.addNs(n.netns);
    mkdirSync(this.bpffs, { recursive: true });
    run('mount', ['-t', 'bpf', 'bpf', this.bpffs]);
    this.mounted = true;
    // DSR: replies reach the router from the nodes with the VIP as source (no reverse-path filter); L4 ECMP.
    this.ns(this.router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.fib_multipath_hash_policy=1']); // prettier-ignore
    this.routerLink({ host: this.client, routerIf: 'c', hostIp: this.clientIp, routerIp: '10.30.0.1', mac: '02:00:00:30:00:01', mtu: 1500 }); // prettier-ignore
    // veth: a client's partial checksums do not survive native XDP; stable ECMP placement (TESTBED.md).
    this.ns(this.client, ['ethtool', '-K', 'eth0', 'tx', 'off']);
    this.ns(this.client, ['sysctl', '-qw', 'net.core.txrehash=0', 'net.ipv4.ip_local_port_range=20000 60000', 'net.ipv4.tcp_tw_reuse=1']); // prettier-ignore
    // IPIP needs 20 more bytes than the client's 1500: 1600 on the LB and node links.
    for (const l of this.lbs)
      this.routerLink({ host: l.netns, routerIf: l.routerIf, hostIp: l.ip, routerIp: l.routerIp, mac: l.routerMac, mtu: 1600 }); // prettier-ignore
    for (const n of this.nodes)
      this.routerLink({ host: n.netns, routerIf: `n${n.index}`, hostIp: n.ip, routerIp: n.routerIp, mac: `02:00:00:32:0${n.index}:01`, mtu: 1600 }); // prettier-ignore
    for (const c of ['c', ...this.lbs.map((l) => l.routerIf), ...this.nodes.map((n) => `n${n.index}`)])
      this.ns(this.router, ['sysctl', '-qw', `net.ipv4.conf.${c}.rp_filter=0`]);
    // XDP_TX on an LB's veth needs an XDP program on the router's peer.
    const pass = await BpfObject.load(bpfObjectPath('pass'));
    try {
      for (const l of this.lbs)
        await attachXdp({ ifname: l.routerIf, netns: `/var/run/netns/${this.router}`, program: pass.program('xdp_pass'), mode: 'native' }); // prettier-ignore
    } finally {
      pass.close();
    }
    for (const n of this.nodes) {
      this.setupNode(n);
      for (const j of [1, 2]) this.addPod(n.index, j);
      await this.startDecap(n);
    }
    await this.startApiServer();
    this.bird = await startBird({
      topo: this.birdTopology(),
      peers: this.lbs.map((l) => ({ address: l.ip, asn: LB_ASN, family: 'ipv4' as const })),
    });
  }

  /** startBird's view of the topology (it only reads these fields). */
  private birdTopology(): Topology {
    return {
      id: this.id,
      router: this.router,
      dir: this.dir,
      lbs: this.lbs.map((l) => ({ ns: l.netns, v4: l.ip, v6: '', routerV4: l.routerIp, routerV6: '' })),
      destroy: () => undefined,
    };
  }

  /** A worker node: forwarding, the pod bridge, kube-proxy's (empty) table and its health check server. */
  private setupNode(n: WorkerNode): void {
    this.ns(n.netns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    run('ip', ['-n', n.netns, 'link', 'add', 'cbr0', 'type', 'bridge']);
    run('ip', ['-n', n.netns, 'addr', 'add', `10.244.${n.index}.1/24`, 'dev', 'cbr0']);
    run('ip', ['-n', n.netns, 'link', 'set', 'cbr0', 'up']);
    this.writeNodeRules(n);
    this.startHealthServer(n);
  }

  /** A pod: its own namespace on the node's bridge, nginx on 8080 as nobody with no capabilities. */
  addPod(node: number, j: number): Pod {
    const n = this.node(node);
    const p: Pod = {
      name: `web-${node}-${j}`,
      node,
      netns: `${this.prefix}p${node}${j}`,
      ip: `10.244.${node}.${10 + j}`,
      hostIf: `vp${j}`,
    };
    this.addNs(p.netns);
    run('ip', ['link', 'add', 'name', p.hostIf, 'netns', n.netns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns]); // prettier-ignore
    run('ip', ['-n', n.netns, 'link', 'set', p.hostIf, 'master', 'cbr0']);
    run('ip', ['-n', n.netns, 'link', 'set', p.hostIf, 'up']);
    run('ip', ['-n', p.netns, 'addr', 'add', `${p.ip}/24`, 'dev', 'eth0']);
    run('ip', ['-n', p.netns, 'link', 'set', 'eth0', 'up']);
    run('ip', ['-n', p.netns, 'route', 'add', 'default', 'via', `10.244.${node}.1`]);
    this.startNginx(p);
    n.pods.push(p);
    return p;
  }

  private startNginx(p: Pod): void {
    const d = join(this.dir, p.name);
    mkdirSync(d, { recursive: true });
    // A large body for the reply-path byte count; every response starts with the pod's name.
    writeFileSync(join(d, 'big'), `${p.name}\n${'x'.repeat(64 * 1024)}\n`);
    writeFileSync(
      join(d, 'nginx.conf'),
      `worker_processes 1; daemon on; pid ${d}/nginx.pid; error_log ${d}/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${d}; proxy_temp_path ${d}; fastcgi_temp_path ${d};
  uwsgi_temp_path ${d}; scgi_temp_path ${d};
  keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 8080 backlog=1024; default_type text/plain;
    location / { return 200 "${p.name}\\n"; }
    location = /big { alias ${d}/big; } } }
`,
    );
    chownSync(d, POD_UID, POD_UID);
    for (const f of ['big', 'nginx.conf']) chownSync(join(d, f), POD_UID, POD_UID);
    // No root, no capabilities, no new privileges: what a restricted Pod runs with.
    this.ns(p.netns, ['setpriv', `--reuid=${POD_UID}`, `--regid=${POD_UID}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', 'nginx', '-c', join(d, 'nginx.conf'), '-p', d, '-e', join(d, 'error.log')]); // prettier-ignore
  }

  /** Pids of the processes in a pod's namespace and their effective uid and capabilities (for the report). */
  podProcesses(p: Pod): { pid: number; uid: number; capEff: string }[] {
    return run('ip', ['netns', 'pids', p.netns], { allowFail: true })
      .split('\n')
      .map(Number)
      .filter((x) => x > 0)
      .map((pid) => {
        const st = readFileSync(`/proc/${pid}/status`, 'utf8');
        return {
          pid,
          uid: Number(/^Uid:\s+\d+\s+(\d+)/m.exec(st)?.[1] ?? -1),
          capEff: /^CapEff:\s+(\S+)/m.exec(st)?.[1] ?? '?',
        };
      });
  }

  /**
   * kube-proxy's health check server of the Service (its healthCheckNodePort) on a node: 200 while the node has a
   * ready local endpoint, else 503. Terminating endpoints do not count, on purpose: "the health check signal should
   * fail if there are only terminating endpoints on a node" (kubernetes pkg/proxy/endpointsmap.go), so that load
   * balancers stop sending new connections while kube-proxy still serves the established ones.
   */
  private startHealthServer(n: WorkerNode): void {
    const file = join(this.dir, `${n.name}-local-endpoints`);
    writeFileSync(file, '0');
    const js = `const fs = require('node:fs');
require('node:http').createServer((q, s) => {
  const n = Number(fs.readFileSync(${JSON.stringify(file)}, 'utf8'));
  s.writeHead(n > 0 ? 200 : 503, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
  s.end(JSON.stringify({ service: { namespace: '${SVC.namespace}', name: '${SVC.name}' }, localEndpoints: n, serviceProxyHealthy: true }));
}).listen(${SVC.healthCheckNodePort}, '0.0.0.0');`;
    this.spawnIn(n.netns, [process.execPath, '-e', js], `${n.name}-healthz.log`);
  }

  private spawnIn(netns: string, args: string[], logName: string): ChildProcess {
    const fd = openSync(join(this.dir, logName), 'a');
    const child = spawn('ip', ['netns', 'exec', netns, ...args], { stdio: ['ignore', fd, fd] }); // prettier-ignore
    closeSync(fd);
    this.children.push(child);
    return child;
  }

  /** The backend role on a node: `peak-xdp decap run` (node mode: nothing on lo), until cleanup. */
  private async startDecap(n: WorkerNode): Promise<void> {
    const log = join(this.dir, `${n.name}-decap.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', n.netns, process.execPath, CLI_JS, 'decap', 'run', '--interface', 'eth0', '--mode', 'native', '--metrics-listen', `127.0.0.1:9472`], // prettier-ignore
      { stdio: ['ignore', fd, fd], env: { ...process.env, PEAK_XDP_BPFFS: this.bpffs } },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((r) => child.on('exit', (c, s) => r(c ?? s ?? -1)));
    const d: LabDaemonProc = { pid: child.pid!, child, exited, log };
    this.decaps.set(n.index, d);
    let gone: number | string | null = null;
    void exited.then((c) => (gone = c));
    const ms = await waitUntil(async () => gone !== null || (await this.decapAdmin(n.index, '/healthz')).status === 200, { timeoutMs: 20000, intervalMs: 100 }); // prettier-ignore
    if (gone !== null || ms === null)
      throw new Error(`decap run on ${n.name} not serving (${gone ?? 'timeout'}):\n${tail(log)}`);
  }

  /** GET from the read-only listener of a node's `decap run` (/metrics, /healthz, /readyz, /state). */
  async decapAdmin(node: number, path: string): Promise<{ status: number; body: string }> {
    return this.curlIn(this.node(node).netns, `http://127.0.0.1:9472${path}`);
  }

  /** XDP program id on a node's eth0 (0: none). */
  xdpProgId(netns: string): number {
    const j = JSON.parse(run('ip', ['-n', netns, '-j', '-d', 'link', 'show', 'eth0'])) as { xdp?: { prog?: { id: number } } }[]; // prettier-ignore
    return j[0]?.xdp?.prog?.id ?? 0;
  }

  /** Addresses on a namespace's lo other than loopback ones (must be none on nodes and pods). */
  loExtraAddresses(netns: string): string[] {
    const j = JSON.parse(run('ip', ['-n', netns, '-j', 'addr', 'show', 'dev', 'lo'])) as { addr_info: { local: string }[] }[]; // prettier-ignore
    return (j[0]?.addr_info ?? []).map((a) => a.local).filter((a) => a !== '127.0.0.1' && a !== '::1');
  }

  /** The fake API server (router namespace, loopback) and a TCP forwarder to it on the router's addresses. */
  private async startApiServer(): Promise<void> {
    this.api = await RemoteApiServer.start({ netns: this.router });
    const js = `const net = require('node:net');
net.createServer((c) => { const u = net.connect(${this.api.port}, '127.0.0.1'); c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); c.on('close', () => u.destroy()); u.on('close', () => c.destroy());
}).listen(${API_PORT}, '0.0.0.0');`;
    this.spawnIn(this.router, [process.execPath, '-e', js], 'api-forwarder.log');
    // Every LB reaches the API server at its router address (as a node reaches a control plane on its network).
    const ok = await waitUntil(async () => (await this.curlIn(this.lbs[0]!.netns, `http://${this.lbs[0]!.routerIp}:${API_PORT}/api/v1/services`)).status === 200, { timeoutMs: 10000, intervalMs: 100 }); // prettier-ignore
    if (ok === null) throw new Error('API server forwarder not reachable from lb-1');
    for (const l of this.lbs) writeFileSync(this.kubeconfigOf(l), YAML.stringify(kubeconfig(`http://${l.routerIp}:${API_PORT}`))); // prettier-ignore
  }

  /** Publishes the cluster's Nodes and the Service to the API server. */
  async publish(): Promise<void> {
    for (const o of this.nodeObjects()) await this.api.upsert('nodes', o);
    await this.api.upsert('services', this.serviceObject());
  }

  kubeconfigOf(l: LbNodeInfo): string {
    return join(this.dir, `kubeconfig-${l.name}`);
  }

  nodeObjects(): Obj[] {
    const node = (name: string, ip: string, labels: Record<string, string>): Obj => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', ...labels } },
      spec: {},
      status: {
        addresses: [
          { type: 'InternalIP', address: ip },
          { type: 'Hostname', address: name },
        ],
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
      },
    });
    return [
      ...this.lbs.map((l) => node(l.name, l.ip, { 'peak-xdp.io/lb-node': 'true' })),
      ...this.nodes.map((n) => node(n.name, n.ip, {})),
    ];
  }

  serviceObject(): Obj {
    return {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: SVC.name, namespace: SVC.namespace, annotations: { 'peak-xdp.io/vip': VIP } },
      spec: {
        type: 'LoadBalancer',
        loadBalancerClass: LB_CLASS,
        selector: { app: SVC.name },
        clusterIP: CLUSTER_IP,
        clusterIPs: [CLUSTER_IP],
        ipFamilies: ['IPv4'],
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: SVC.healthCheckNodePort,
        ports: [
          { name: 'http', protocol: 'TCP', port: SVC.port, targetPort: SVC.targetPort, nodePort: 30080 },
        ],
      },
      status: { loadBalancer: {} },
    };
  }

  /** One EndpointSlice per node (as the EndpointSlice controller may split them), each endpoint with nodeName. */
  private sliceObject(n: WorkerNode): Obj {
    const eps = n.pods.filter((p) => this.endpoints.has(p.name));
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: `${SVC.name}-${n.name}`,
        namespace: SVC.namespace,
        labels: { 'kubernetes.io/service-name': SVC.name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' }, // prettier-ignore
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: SVC.targetPort }],
      endpoints: eps.map((p) => {
        const term = this.endpoints.get(p.name) === 'terminating';
        return {
          addresses: [p.ip],
          conditions: { ready: !term, serving: true, terminating: term },
          nodeName: n.name,
          targetRef: { kind: 'Pod', namespace: SVC.namespace, name: p.name },
        };
      }),
    };
  }

  /**
   * The Deployment's endpoints as the control plane would publish them: `states` maps pod names to their state
   * (absent: not an endpoint). Writes, for each node whose endpoints changed, its EndpointSlice to the API server
   * and what kube-proxy on that node would write: the nftables rules and its health check's endpoint count.
   */
  async setEndpoints(states: Record<string, EndpointState>): Promise<void> {
    const before = new Map(this.endpoints);
    this.endpoints.clear();
    for (const [k, v] of Object.entries(states)) {
      if (!this.pod(k)) throw new Error(`setEndpoints: no pod ${k}`);
      this.endpoints.set(k, v);
    }
    for (const n of this.nodes) {
      const changed = n.pods.some((p) => before.get(p.name) !== this.endpoints.get(p.name));
      if (!changed) continue;
      this.writeNodeRules(n);
      const ready = n.pods.filter((p) => this.endpoints.get(p.name) === 'ready').length;
      writeFileSync(join(this.dir, `${n.name}-local-endpoints`), String(ready));
      await this.api.upsert('endpointslices', this.sliceObject(n));
    }
  }

  /** kube-proxy's sync on node n: every ready endpoint of the cluster, local ones for external traffic. */
  private writeNodeRules(n: WorkerNode): void {
    const all = this.nodes.flatMap((x) => x.pods).filter((p) => this.endpoints.get(p.name) === 'ready');
    const mine = n.pods.filter((p) => this.endpoints.has(p.name));
    const ready = mine.filter((p) => this.endpoints.get(p.name) === 'ready');
    const local = (ready.length ? ready : mine).map((p) => p.ip);
    // Replaced in one transaction (as kube-proxy does): conntrack keeps established flows' DNAT either way.
    nft(n.netns, `add table ip kube-proxy\ndelete table ip kube-proxy\n${kubeProxyRuleset({ cluster: all.map((p) => p.ip), local })}`); // prettier-ignore
  }

  nodeRules(node: number): string {
    return this.ns(this.node(node).netns, ['nft', 'list', 'table', 'ip', 'kube-proxy']);
  }

  node(i: number): WorkerNode {
    const n = this.nodes[i - 1];
    if (!n) throw new Error(`node ${i} is not in 1..${this.nodes.length}`);
    return n;
  }

  pod(name: string): Pod | undefined {
    return this.nodes.flatMap((n) => n.pods).find((p) => p.name === name);
  }

  /** Pod name -> node index. */
  podNode(name: string): number {
    const p = this.pod(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p.node;
  }

  // ---- LB nodes ----

  /**
   * The LB daemon config: one document for both LB nodes (one ConfigMap in a cluster). What differs per LB node (its
   * BGP peer, router id, the router's MAC) comes from `nodes` entries selected by the Node's labels; the outer source
   * is "auto" (the interface's address).
   */
  config(): Record<string, unknown> {
    return {
      interface: 'eth0',
      xdpMode: 'native',
      mtu: 1600,
      admin: { listen: '127.0.0.1:9470', perBackendMetrics: true },
      limits: { maxVips: 16, maxBackends: 64, conntrackEntries: 65536 },
      kubernetes: { loadBalancerClass: LB_CLASS, allowedAddresses: [`${VIP}/32`] },
      bgp: { asn: LB_ASN, gracefulRestartTime: 0, peers: [] },
      nodes: this.lbs.map((l) => ({
        nodeSelector: { matchLabels: { 'kubernetes.io/hostname': l.name, 'peak-xdp.io/lb-node': 'true' } },
        routerId: l.ip,
        nextHopMac: l.routerMac,
        peers: [{ address: l.routerIp, asn: ROUTER_ASN, holdTime: 3, families: ['ipv4'] }],
      })),
      vips: [],
    };
  }

  /** The one config file every LB daemon reads (the ConfigMap's config.yaml). */
  get configPath(): string {
    return join(this.dir, 'config.yaml');
  }

  writeConfig(cfg: Record<string, unknown>): void {
    writeFileSync(`${this.configPath}.tmp`, YAML.stringify(cfg));
    run('mv', ['-f', `${this.configPath}.tmp`, this.configPath]);
  }

  /** `peak-xdp daemon --kubernetes` on LB node i (1-based); resolves when its /readyz answers 200. */
  async startLb(
    i: number,
    o: { readyTimeoutMs?: number; kubernetes?: boolean } = {},
  ): Promise<LabDaemonProc> {
    const l = this.lbs[i - 1]!;
    const log = join(this.dir, `daemon-${l.name}-${++this.count}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', l.netns, process.execPath, CLI_JS, 'daemon', '--config', this.configPath, '--bpffs', this.bpffs, '--log-level', 'debug', '--kubernetes', '--kubeconfig', this.kubeconfigOf(l), '--node-name', l.name], // prettier-ignore
      { stdio: ['ignore', fd, fd], env: { ...process.env, NODE_NAME: l.name } },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((r) => child.on('exit', (c, s) => r(c ?? s ?? -1)));
    const d: LabDaemonProc = { pid: child.pid!, child, exited, log };
    this.daemons.push(d);
    let gone: number | string | null = null;
    void exited.then((c) => (gone = c));
    const ms = await waitUntil(async () => gone !== null || (await this.admin(i, '/readyz')).status === 200, { timeoutMs: o.readyTimeoutMs ?? 30000, intervalMs: 100 }); // prettier-ignore
    if (gone !== null || ms === null)
      throw new Error(`daemon ${l.name} not ready (${gone ?? 'timeout'}):\n${tail(log)}\n/readyz: ${(await this.admin(i, '/readyz')).body}`); // prettier-ignore
    return d;
  }

  /** Signals a daemon and waits (bounded) for its exit; returns the exit code or signal. */
  async signal(d: LabDaemonProc, sig: NodeJS.Signals, timeoutMs = 10000): Promise<number | string> {
    signalPid(d.pid, sig);
    let t: NodeJS.Timeout | undefined;
    const late = new Promise<'timeout'>((r) => (t = setTimeout(() => r('timeout'), timeoutMs)));
    const r = await Promise.race([d.exited, late]).finally(() => clearTimeout(t));
    if (r === 'timeout') throw new Error(`process ${d.pid} did not exit after ${sig}:\n${tail(d.log)}`);
    return r;
  }

  async admin(i: number, path: string): Promise<{ status: number; body: string }> {
    return this.curlIn(this.lbs[i - 1]!.netns, `http://127.0.0.1:9470${path}`);
  }

  private async curlIn(netns: string, url: string): Promise<{ status: number; body: string }> {
    const r = await runAsync('ip', ['netns', 'exec', netns, 'curl', '-s', '-m', '3', '-w', '\n%{http_code}', url], { timeoutMs: 5000 }); // prettier-ignore
    const k = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(k + 1)) || 0, body: r.stdout.slice(0, Math.max(0, k)) };
  }

  /** LB i's pinned maps, opened from the test process (the caller closes it). */
  adopt(i: number): KernelDatapath {
    return KernelDatapath.adopt({ pinDir: join(this.bpffs, 'peak-xdp', this.lbs[i - 1]!.netns, 'eth0') });
  }

  /** Next hops of the VIP in the router's kernel FIB. */
  async fib(): Promise<string[]> {
    const r = await runAsync('ip', ['-n', this.router, '-4', 'route', 'show', `${VIP}/32`], {
      timeoutMs: 5000,
    });
    return [...r.stdout.matchAll(/via ([0-9.]+)/g)].map((m) => m[1]!).sort();
  }

  /** rx/tx bytes and packets of the router's interfaces (by name: c, l1, l2, n1, n2). */
  routerCounters(): Record<
    string,
    { rxBytes: number; txBytes: number; rxPackets: number; txPackets: number }
  > {
    const j = JSON.parse(run('ip', ['-n', this.router, '-j', '-s', 'link', 'show'])) as {
      ifname: string;
      stats64: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
    }[];
    return Object.fromEntries(
      j.map((l) => [l.ifname, { rxBytes: l.stats64.rx.bytes, txBytes: l.stats64.tx.bytes, rxPackets: l.stats64.rx.packets, txPackets: l.stats64.tx.packets }]), // prettier-ignore
    );
  }

  // ---- client traffic ----

  /** `n` new connections (Connection: close, `parallel` at a time) from the client to the VIP; bodies counted. */
  /** `ports`: the client port of each connection, in order (outside the ephemeral range; default: ephemeral). */
  async fresh(o: {
    n: number;
    parallel?: number;
    path?: string;
    timeoutMs?: number;
    ports?: readonly number[];
  }): Promise<FreshResult> {
    // prettier-ignore
    const args = [VIP, String(o.n), String(o.parallel ?? 4), o.path ?? '/', String(o.timeoutMs ?? 3000), (o.ports ?? []).join(',') || '-']; // prettier-ignore
    const r = await runAsync('ip', ['netns', 'exec', this.client, process.execPath, '-e', FRESH_JS, ...args], { timeoutMs: 120000 }); // prettier-ignore
    if (r.code !== 0) throw new Error(`fresh client failed (${r.code}): ${r.stderr}`);
    const out = JSON.parse(r.stdout) as FreshResult;
    this.notePorts(`fresh(${o.n})`, out.ports);
    return out;
  }

  /**
   * Starts `conns` keep-alive connections from the client, each sending a request every `intervalMs` for
   * `seconds` (bounded); resolves `ready` once each has had its first answer. `result` is the per-connection
   * outcome: a connection that fails once is counted failed and not reopened. `ports`: the client ports of the
   * first connections (the rest ephemeral).
   */
  keepAlive(o: {
    conns: number;
    seconds: number;
    intervalMs?: number;
    timeoutMs?: number;
    ports?: readonly number[];
  }): {
    // prettier-ignore
    ready: Promise<void>;
    result: Promise<KeepAliveResult>;
  } {
    const args = [
      VIP,
      String(o.conns),
      String(o.seconds),
      String(o.intervalMs ?? 20),
      String(o.timeoutMs ?? 3000),
      (o.ports ?? []).join(',') || '-',
    ];
    const child = spawn('ip', ['netns', 'exec', this.client, process.execPath, '-e', KEEPALIVE_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }); // prettier-ignore
    this.children.push(child);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let onReady: () => void = () => undefined;
    let onFail: (e: Error) => void = () => undefined;
    const ready = new Promise<void>((res, rej) => {
      onReady = res;
      onFail = rej;
    });
    let last = '';
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'ready') onReady();
      else last = line;
    });
    const result = new Promise<KeepAliveResult>((res, rej) => {
      // 'close', not 'exit': at 'exit' the stdout pipe may not have given its last line (the result) yet.
      child.on('close', (code) => {
        onFail(new Error(`keep-alive client exited (${code}) before ready: ${err}`));
        try {
          if (code !== 0) throw new Error(`exit ${code}`);
          const out = JSON.parse(last) as KeepAliveResult;
          this.notePorts(
            `keepAlive(${o.conns})`,
            out.conns.map((c) => c.localPort).filter((p) => p > 0),
          );
          res(out);
        } catch (e) {
          rej(new Error(`keep-alive client: ${(e as Error).message}: ${err} ${last}`));
        }
      });
    });
    const guard = setTimeout(() => child.kill('SIGKILL'), (o.seconds + 30) * 1000);
    void result.finally(() => clearTimeout(guard)).catch(() => undefined);
    return { ready, result };
  }

  /** Kills every process started here, removes the namespaces, the bpffs mount and the temp dir (by name). */
  async cleanup(): Promise<void> {
    for (const d of [...this.daemons, ...this.decaps.values()])
      if (d.child.exitCode === null && d.child.signalCode === null) {
        try {
          signalPid(d.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await this.api?.stop().catch(() => undefined);
    await this.bird?.stop().catch(() => undefined);
    const pids = this.namespaces
      .filter((n) => existsSync(`/var/run/netns/${n}`))
      .flatMap((n) => run('ip', ['netns', 'pids', n], { allowFail: true }).split('\n').map(Number).filter((p) => p > 0)); // prettier-ignore
    await killAll(pids);
    for (const n of [...this.namespaces].reverse()) run('ip', ['netns', 'del', n], { allowFail: true });
    const all = [...this.namespaces];
    this.namespaces.splice(0);
    if (this.mounted) {
      run('umount', [this.bpffs], { allowFail: true });
      if (run('findmnt', ['-n', this.bpffs], { allowFail: true }).trim()) run('umount', ['-l', this.bpffs], { allowFail: true }); // prettier-ignore
      this.mounted = false;
    }
    rmSync(this.bpffs, { recursive: true, force: true });
    removePinLocks(all);
    // PEAK_KEEP_LAB_DIR=1 keeps the logs (daemons, decap, BIRD, nginx) for a look after a failure.
    if (process.env.PEAK_KEEP_LAB_DIR === '1') console.log(`[k8s-node] lab directory kept: ${this.dir}`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

function kubeconfig(server: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'fake', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'fake', user: { token: 'fake-token' } }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
    'current-context': 'fake',
  };
}

export function tail(path: string, lines = 40): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** New connections, `parallel` loops, until `n` requests were made; each body's first line is the pod's name. */
const FRESH_JS = `
const http = require('node:http');
const [host, n, parallel, path, timeoutMs, fixed] = process.argv.slice(1).map((x, i) => (i === 0 || i === 3 || i === 5 ? x : Number(x)));
const localPorts = fixed === '-' ? [] : fixed.split(',').map(Number);
let started = 0, ok = 0, failed = 0; const pods = {}; const errors = {}; const ports = [];
const one = (i) => new Promise((resolve) => {
  let done = false;
  const finish = (err, pod) => { if (done) return; done = true; clearTimeout(t);
    if (err) { failed++; errors[err] = (errors[err] || 0) + 1; } else { ok++; pods[pod] = (pods[pod] || 0) + 1; } resolve(); };
  const req = http.get({ host, port: 80, path, agent: false, headers: { connection: 'close' }, ...(localPorts[i] ? { localPort: localPorts[i] } : {}) }, (res) => {
    let body = ''; res.setEncoding('utf8'); res.on('data', (d) => { if (body.length < 64) body += d; });
    res.on('end', () => finish(res.statusCode === 200 ? null : 'status ' + res.statusCode, body.split('\\n')[0]));
    res.on('error', (e) => finish(e.code || 'response error'));
  });
  const t = setTimeout(() => { finish('timeout'); req.destroy(); }, timeoutMs);
  req.on('error', (e) => finish(e.code || e.message));
  req.on('socket', (s) => s.on('connect', () => ports.push(s.localPort)));
});
const loop = async () => { while (started < n) { await one(started++); } };
Promise.all(Array.from({ length: parallel }, loop)).then(() => process.stdout.write(JSON.stringify({ pods, ok, failed, errors, ports })));`;

/**
 * Keep-alive connections over raw sockets (one TCP connection each, never reopened): HTTP/1.1 GET / every
 * intervalMs, responses parsed by Content-Length. Prints "ready" once every connection had an answer, then the
 * JSON result after \`seconds\`.
 */
const KEEPALIVE_JS = `
const net = require('node:net');
const [host, conns, seconds, intervalMs, timeoutMs, fixed] = process.argv.slice(1).map((x, i) => (i === 0 || i === 5 ? x : Number(x)));
const localPorts = fixed === '-' ? [] : fixed.split(',').map(Number);
const start = Date.now(); const end = start + seconds * 1000;
const out = []; let firstAnswers = 0;
const runConn = (c, i) => new Promise((resolve) => {
  const s = net.connect({ host, port: 80, ...(localPorts[i] ? { localPort: localPorts[i] } : {}) });
  let buf = Buffer.alloc(0); let waiting = null; let timer = null; let closed = false;
  let sent = 0;
  const fail = (why) => { if (c.error === null) { c.error = why; c.errorAtMs = Date.now() - start; } closed = true; clearTimeout(timer); s.destroy(); if (waiting) { const w = waiting; waiting = null; w(null); } };
  s.on('error', (e) => fail(e.code || e.message));
  s.on('close', () => fail('closed by peer'));
  s.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
  const parse = () => {
    const h = buf.indexOf('\\r\\n\\r\\n'); if (h < 0 || !waiting) return;
    const head = buf.subarray(0, h).toString();
    const len = Number((/content-length: *(\\d+)/i.exec(head) || [])[1] || 0);
    if (buf.length < h + 4 + len) return;
    const body = buf.subarray(h + 4, h + 4 + len).toString(); buf = buf.subarray(h + 4 + len);
    const status = Number(head.split(' ')[1]);
    clearTimeout(timer); const w = waiting; waiting = null;
    const ms = Date.now() - sent; if (ms > c.maxMs) c.maxMs = ms; if (ms > 190) c.slow++;
    w(status === 200 ? body.split('\\n')[0] : 'status ' + status);
  };
  const request = () => new Promise((res) => {
    waiting = res; sent = Date.now(); timer = setTimeout(() => fail('timeout'), timeoutMs);
    s.write('GET / HTTP/1.1\\r\\nHost: ' + host + '\\r\\n\\r\\n');
  });
  s.on('connect', async () => {
    c.localPort = s.localPort;
    let first = true;
    while (!closed && Date.now() < end) {
      const r = await request();
      if (r === null) break;
      if (r.startsWith('status ')) { fail(r); break; }
      c.pods[r] = (c.pods[r] || 0) + 1; c.ok++;
      if (first) { first = false; if (++firstAnswers === conns) process.stdout.write('ready\\n'); }
      await new Promise((r2) => setTimeout(r2, intervalMs));
    }
    closed = true; s.removeAllListeners('close'); s.destroy(); resolve();
  });
  setTimeout(() => { if (c.localPort === 0) { fail('connect timeout'); resolve(); } }, timeoutMs);
});
(async () => {
  const all = [];
  for (let i = 0; i < conns; i++) { const c = { localPort: 0, pods: {}, ok: 0, error: null, maxMs: 0, slow: 0, errorAtMs: null }; out.push(c); all.push(runConn(c, i)); await new Promise((r) => setTimeout(r, 5)); }
  await Promise.all(all);
  const ok = out.reduce((a, c) => a + c.ok, 0); const errors = out.filter((c) => c.error !== null).length;
  process.stdout.write(JSON.stringify({ conns: out, ok, errors }) + '\\n');
})();`;
