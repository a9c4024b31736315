// A two-LB BGP lab: router (BIRD or FRR) + two LB namespaces running `peak-xdp daemon` + two nginx backends.
import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { createTopology, LbNode, nsExec, RouterPeer, ROUTER_ASN, sh, Topology } from './bgp-peers';
import { CLI_JS, CmdResult, killAll, removePinLocks, runAsync, waitUntil } from './daemon-lab';
import { signalPid } from '../../scripts/lib/pids';

export const LB_ASN = 65001;
export const VIP4 = '198.51.100.10';
export const VIP6 = '2001:db8:100::10';
/** A second IPv4 VIP whose backends a reload changes (the "unrelated" VIP). */
export const VIP4B = '198.51.100.20';
export const prefixOf = (vip: string): string => (vip.includes(':') ? `${vip}/128` : `${vip}/32`);

export interface LabBackend {
  index: number;
  netns: string;
  v4: string;
  v6: string;
}

export interface LabDaemon {
  pid: number;
  child: ChildProcess;
  exited: Promise<number | string>;
  log: string;
}

/** Per-LB knobs of the daemon config. */
export interface LbSettings {
  /** TCP MD5 key on both sessions of this LB. */
  password?: string;
  /** 0 disables the graceful restart capability. */
  gracefulRestartTime?: number;
  /** Backends (1-based) of the "unrelated" VIP VIP4B. */
  otherBackends?: number[];
  /** Extra fields merged into every VIP (e.g. communities once the model accepts them). */
  vipExtra?: Record<string, Record<string, unknown>>;
}

/**
 * router --- lb1, lb2 (daemon, XDP native, BGP over v4 and v6 sessions); router --- be1, be2 (nginx on v4+v6).
 * Names carry a unique suffix; cleanup() removes exactly what start() made.
 */
export class DaemonBgpLab {
  topo!: Topology;
  readonly backends: LabBackend[] = [];
  readonly bpffs: string;
  private readonly extraNs: string[] = [];
  private readonly daemons: LabDaemon[] = [];
  private mounted = false;
  private count = 0;
  private readonly tag: string;

  constructor(o: { tag: string }) {
    this.tag = o.tag;
    this.bpffs = `/run/peak-xdp-test-bgp${o.tag}${process.pid}`;
  }

  get lbs(): LbNode[] {
    return this.topo.lbs;
  }

  /** The router's peers: each LB over IPv4 (ipv4 family) and IPv6 (ipv6 family). */
  routerPeers(passwords: (string | undefined)[] = []): RouterPeer[] {
    return this.lbs.flatMap((lb, i) => [
      { address: lb.v4, asn: LB_ASN, family: 'ipv4' as const, password: passwords[i] },
      { address: lb.v6, asn: LB_ASN, family: 'ipv6' as const, password: passwords[i] },
    ]);
  }

  start(): void {
    if (!existsSync(CLI_JS))
      throw new Error(`${CLI_JS} is missing: build with npx tsc -p tsconfig.build.json`);
    this.topo = createTopology({ tag: this.tag, lbs: 2 });
    const r = this.topo.router;
    nsExec(r, ['sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
    for (const lb of this.lbs) {
      nsExec(lb.ns, ['ip', 'route', 'add', 'default', 'via', lb.routerV4]);
      nsExec(lb.ns, ['ip', '-6', 'route', 'add', 'default', 'via', lb.routerV6]);
    }
    for (const i of [1, 2]) {
      const ns = `bgpb${i}-${this.topo.id}`;
      sh('ip', ['netns', 'add', ns]);
      this.extraNs.push(ns);
      const net = 20 + i;
      const b: LabBackend = { index: i, netns: ns, v4: `10.0.${net}.2`, v6: `fd00:0:${net}::2` };
      const rIf = `bb${i}${this.topo.id}`.slice(0, 15);
      sh('ip', ['link', 'add', rIf, 'netns', r, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      nsExec(r, ['ip', 'addr', 'add', `10.0.${net}.1/24`, 'dev', rIf]);
      nsExec(r, ['ip', '-6', 'addr', 'add', `fd00:0:${net}::1/64`, 'dev', rIf, 'nodad']);
      nsExec(r, ['ip', 'link', 'set', rIf, 'up']);
      nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
      nsExec(ns, ['ip', 'addr', 'add', `${b.v4}/24`, 'dev', 'eth0']);
      nsExec(ns, ['ip', '-6', 'addr', 'add', `${b.v6}/64`, 'dev', 'eth0', 'nodad']);
      nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
      nsExec(ns, ['ip', 'route', 'add', 'default', 'via', `10.0.${net}.1`]);
      nsExec(ns, ['ip', '-6', 'route', 'add', 'default', 'via', `fd00:0:${net}::1`]);
      this.backends.push(b);
      this.startNginx(b);
    }
    mkdirSync(this.bpffs, { recursive: true });
    sh('mount', ['-t', 'bpf', 'bpf', this.bpffs]);
    this.mounted = true;
    this.waitForIpv6();
  }

  /**
   * Waits (bounded) until no namespace has a tentative IPv6 address: during duplicate address detection
   * IPv6 does not work yet, so the daemons' first v6 health checks would time out and flap the v6 VIP.
   */
  private waitForIpv6(): void {
    const all = [this.topo.router, ...this.lbs.map((l) => l.ns), ...this.backends.map((b) => b.netns)];
    const deadline = Date.now() + 10000;
    for (;;) {
      const pending = all.filter((n) => nsExec(n, ['ip', '-6', 'addr', 'show', 'tentative']).trim() !== '');
      if (pending.length === 0) return;
      if (Date.now() > deadline) throw new Error(`IPv6 addresses still tentative in ${pending.join(', ')}`);
      sh('sleep', ['0.1']);
    }
  }

  private startNginx(b: LabBackend): void {
    const d = join(this.topo.dir, `be${b.index}`);
    mkdirSync(d, { recursive: true });
    const conf = join(d, 'nginx.conf');
    writeFileSync(
      conf,
      `worker_processes 1; daemon on; pid ${d}/nginx.pid; error_log ${d}/error.log warn;
events { worker_connections 64; }
http { access_log off; client_body_temp_path ${d}; proxy_temp_path ${d}; fastcgi_temp_path ${d};
  uwsgi_temp_path ${d}; scgi_temp_path ${d};
  server { listen 80; listen [::]:80; default_type text/plain; location / { return 200 "be${b.index}\\n"; } } }
`,
    );
    nsExec(b.netns, ['nginx', '-c', conf, '-p', d]);
  }

  /** Makes a backend fail (or pass) its HTTP checks over one address family: nftables rejects port 80. */
  failBackend(index: number, family: 'ipv4' | 'ipv6', fail: boolean): void {
    const ns = this.backends[index - 1]!.netns;
    const table = `peakfail${family === 'ipv4' ? 4 : 6}`;
    nsExec(ns, ['nft', 'delete', 'table', 'inet', table], { allowFail: true });
    if (!fail) return;
    nsExec(ns, ['nft', 'add', 'table', 'inet', table]);
    nsExec(ns, ['nft', 'add', 'chain', 'inet', table, 'in', '{ type filter hook input priority 0 ; }']);
    nsExec(ns, ['nft', 'add', 'rule', 'inet', table, 'in', 'meta', 'nfproto', family, 'tcp', 'dport', '80', 'reject', 'with', 'tcp', 'reset']); // prettier-ignore
  }

  /** The router's MAC on an LB's link (the daemon's next hop). */
  routerMac(lb: LbNode): string {
    const j = JSON.parse(nsExec(this.topo.router, ['ip', '-j', 'addr', 'show'])) as {
      address: string;
      addr_info: { local: string }[];
    }[];
    const l = j.find((x) => x.addr_info.some((a) => a.local === lb.routerV4));
    if (!l) throw new Error(`no router interface holds ${lb.routerV4}`);
    return l.address;
  }

  configPath(i: number): string {
    return join(this.topo.dir, `lb${i + 1}.yaml`);
  }

  /** The daemon config of LB i (0-based): VIP4 and VIP6 on both backends, VIP4B on `otherBackends`. */
  config(i: number, s: LbSettings = {}): Record<string, unknown> {
    const lb = this.lbs[i]!;
    // A timeout as long as the interval: on 2 busy cores a healthy check can take 100+ ms; failures here are refusals.
    const hc = { type: 'http', path: '/', intervalMs: 300, timeoutMs: 300, rise: 2, fall: 2 };
    const vip = (name: string, address: string, backends: string[]) => ({
      name,
      address,
      port: 80,
      protocol: 'tcp',
      tableSize: 251,
      healthCheck: hc,
      backends: backends.map((a) => ({ address: a })),
      // failBackend really kills a backend (VIP traffic is reset too): a VIP whose backends all die is
      // withdrawn, not failed open (the default; test/integration/daemon-fail-open.test.ts).
      failOpen: false,
      ...(s.vipExtra?.[name] ?? {}),
    });
    const peer = (address: string, family: 'ipv4' | 'ipv6') => ({
      address,
      asn: ROUTER_ASN,
      holdTime: 3,
      families: [family],
      ...(s.password ? { password: s.password } : {}),
    });
    return {
      interface: 'eth0',
      xdpMode: 'native',
      nextHopMac: this.routerMac(lb),
      encapSource: [`${lb.v4}/32`, `${lb.v6}/128`],
      admin: { listen: '127.0.0.1:9470' },
      limits: { maxVips: 16, maxBackends: 64, conntrackEntries: 4096 },
      bgp: {
        asn: LB_ASN,
        routerId: lb.v4,
        ...(s.gracefulRestartTime !== undefined ? { gracefulRestartTime: s.gracefulRestartTime } : {}),
        peers: [peer(lb.routerV4, 'ipv4'), peer(lb.routerV6, 'ipv6')],
      },
      vips: [
        vip(
          'web4',
          VIP4,
          this.backends.map((b) => b.v4),
        ),
        vip(
          'web6',
          VIP6,
          this.backends.map((b) => b.v6),
        ),
        vip(
          'other4',
          VIP4B,
          (s.otherBackends ?? [1]).map((n) => this.backends[n - 1]!.v4),
        ),
      ],
    };
  }

  writeConfig(i: number, cfg: Record<string, unknown>): void {
    const p = this.configPath(i);
    writeFileSync(`${p}.tmp`, YAML.stringify(cfg));
    sh('mv', ['-f', `${p}.tmp`, p]);
  }

  /** Starts `peak-xdp daemon` in LB i; resolves when its /readyz answers 200. */
  async startDaemon(i: number, o: { readyTimeoutMs?: number } = {}): Promise<LabDaemon> {
    const log = join(this.topo.dir, `daemon-lb${i + 1}-${++this.count}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', this.lbs[i]!.ns, process.execPath, CLI_JS, 'daemon', '--config', this.configPath(i), '--bpffs', this.bpffs, '--log-level', 'debug'], // prettier-ignore
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((resolve) =>
      child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
    );
    const d: LabDaemon = { pid: child.pid!, child, exited, log };
    this.daemons.push(d);
    let gone: number | string | null = null;
    void exited.then((c) => (gone = c));
    const ms = await waitUntil(async () => gone !== null || (await this.admin(i, '/readyz')).status === 200, {
      timeoutMs: o.readyTimeoutMs ?? 30000,
    });
    if (gone !== null || ms === null)
      throw new Error(`daemon lb${i + 1} not ready (${gone ?? 'timeout'}):\n${this.logTail(d)}`);
    return d;
  }

  logTail(d: LabDaemon, lines = 30): string {
    return existsSync(d.log) ? readFileSync(d.log, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Sends a signal and waits for the exit; returns the exit code or signal name. */
  async signal(d: LabDaemon, sig: NodeJS.Signals, timeoutMs = 10000): Promise<number | string> {
    signalPid(d.pid, sig);
    let t: NodeJS.Timeout | undefined;
    const late = new Promise<'timeout'>((r) => (t = setTimeout(() => r('timeout'), timeoutMs)));
    const r = await Promise.race([d.exited, late]).finally(() => clearTimeout(t));
    if (r === 'timeout') throw new Error(`daemon ${d.pid} did not exit after ${sig}:\n${this.logTail(d)}`);
    return r;
  }

  async admin(i: number, path: string): Promise<{ status: number; body: string }> {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', this.lbs[i]!.ns, 'curl', '-s', '-m', '3', '-w', '\n%{http_code}', `http://127.0.0.1:9470${path}`], // prettier-ignore
      { timeoutMs: 5000 },
    );
    const k = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(k + 1)) || 0, body: r.stdout.slice(0, Math.max(0, k)) };
  }

  async state(i: number): Promise<BgpStateDoc> {
    const r = await this.admin(i, '/state');
    if (r.status !== 200) throw new Error(`/state of lb${i + 1}: HTTP ${r.status}: ${r.body}`);
    return JSON.parse(r.body) as BgpStateDoc;
  }

  cli(i: number, args: string[]): Promise<CmdResult> {
    return runAsync(
      'ip',
      ['netns', 'exec', this.lbs[i]!.ns, 'env', `PEAK_XDP_BPFFS=${this.bpffs}`, process.execPath, CLI_JS, ...args], // prettier-ignore
      {
        timeoutMs: 30000,
      },
    );
  }

  /** XDP program id on LB i's eth0 (0: none). */
  xdpProgId(i: number): number {
    const j = JSON.parse(nsExec(this.lbs[i]!.ns, ['ip', '-j', '-d', 'link', 'show', 'eth0'])) as {
      xdp?: { prog?: { id: number } };
    }[];
    return j[0]?.xdp?.prog?.id ?? 0;
  }

  pinDir(i: number): string {
    return join(this.bpffs, 'peak-xdp', this.lbs[i]!.ns, 'eth0');
  }

  /** Kills our daemons and nginx, removes namespaces, the bpffs mount and the temp dir. */
  async cleanup(): Promise<void> {
    for (const d of this.daemons)
      if (d.child.exitCode === null && d.child.signalCode === null) {
        try {
          signalPid(d.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    const pids = this.extraNs.flatMap((n) =>
      sh('ip', ['netns', 'pids', n], { allowFail: true })
        .split('\n')
        .map(Number)
        .filter((p) => p > 0),
    );
    await killAll(pids);
    for (const n of this.extraNs.splice(0)) sh('ip', ['netns', 'del', n], { allowFail: true });
    if (this.mounted) {
      sh('umount', [this.bpffs], { allowFail: true });
      if (sh('findmnt', ['-n', this.bpffs], { allowFail: true }).trim())
        sh('umount', ['-l', this.bpffs], { allowFail: true });
      this.mounted = false;
    }
    rmSync(this.bpffs, { recursive: true, force: true });
    removePinLocks((this.topo?.lbs ?? []).map((l) => l.ns));
    this.topo?.destroy();
  }
}

/** The BGP part of /state. */
export interface BgpStateDoc {
  attached: boolean;
  desired: { vips: { name: string; usableBackends: number; backends: { address: string }[] }[] } | null;
  lastReconcile: { at: string } | null;
  bgp: {
    asn: number;
    desired: { prefix: string; communities?: string[]; largeCommunities?: string[] }[];
    peers: {
      peer: string;
      state: string;
      announced: string[];
      updatesSent: number;
      lastError: string | null;
    }[];
  } | null;
}
