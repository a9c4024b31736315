// A BFD lab for the BIRD and FRR interop tests: the two-LB BGP lab (daemon-bgp-lab.ts) plus a client
// namespace, a data path through the VIP (decap on the backends, XDP_PASS on the router's LB-facing peers), our
// BFD process (peak-xdp bfd-daemon, its own config file) next to the daemon in each LB namespace, and the
// router (BIRD 2 or FRR bgpd+bfdd+zebra) with BFD on its BGP sessions and a hold time BGP alone cannot beat.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BfdClient } from '../../src/bfd/client';
import { encodeControl, State, type ControlPacket } from '../../src/bfd/codec';
import type { BfdStatus, SessionStatus } from '../../src/bfd/protocol';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { encodeAddrKey } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { fibNextHops, LbNode, nsExec, ROUTER_ASN, sh } from './bgp-peers';
import { DaemonBgpLab, LB_ASN, LabDaemon, prefixOf, VIP4, VIP6 } from './daemon-bgp-lab';
import { CLI_JS, runAsync, sleep } from './daemon-lab';
import { signalPid } from '../../scripts/lib/pids';

export { VIP4, VIP6, prefixOf, encodeControl, State };
export type { ControlPacket };

/** Our side: 300 ms x 3 (the default). */
export const OUR_BFD = { minTx: 300, minRx: 300, multiplier: 3 };
/** The router's side: it would send at 200 ms, but our 300 ms required RX wins (negotiation is visible). */
export const ROUTER_BFD = { minTx: 200, minRx: 300, multiplier: 3 };
/** BGP hold / keepalive on both ends: long enough that a failure found in < 3 s was found by BFD. */
export const HOLD_S = 9;
export const KEEPALIVE_S = 3;

export type RouterKind = 'bird' | 'frr';

/** One BFD session as the router reports it. */
export interface RouterBfdSession {
  peer: string;
  state: 'up' | 'down' | 'init' | 'admin-down';
  /** Negotiated TX interval / detection time (BIRD), or null where the router does not show it. */
  txMs: number | null;
  detectMs: number | null;
  /** What the router received from us (FRR), or null. */
  remote: { minTx: number; minRx: number; multiplier: number } | null;
  /** A value that changes whenever the session leaves Up (BIRD: "Since"; FRR: its up/down event counters). */
  upSince: string;
}

export interface Router {
  kind: RouterKind;
  stop(): Promise<void>;
  bfdSessions(): RouterBfdSession[];
  established(address: string): boolean;
  /** The router's own BFD status text (printed by the tests). */
  bfdText(): string;
  /** Turns BFD on or off for these BGP neighbours, live (no BGP session reset). */
  setBfd(addresses: string[], on: boolean): void;
}

export interface BfdProc {
  child: ChildProcess;
  pid: number;
  control: string;
  log: string;
}

export interface LoadSummary {
  ok: number;
  failed: number;
  /** Failures by error code ("timeout", "ECONNRESET", "status 502", ...). */
  errors: Record<string, number>;
  /** Wall-clock ms (Date.now()) at which each failed request had been started (at most 10000 kept). */
  failedAt: number[];
  /** Date.now() when the generator was started (its first request is a few ten ms later). */
  startedAt: number;
}

export class BfdLab {
  readonly bgp: DaemonBgpLab;
  client = '';
  router!: Router;
  readonly daemons: LabDaemon[] = [];
  readonly bfd: BfdProc[] = [];
  private readonly clientAddr = '10.0.30.2';
  private readonly routerChildren: ChildProcess[] = [];

  constructor(readonly kind: RouterKind) {
    this.bgp = new DaemonBgpLab({ tag: kind === 'bird' ? 'h8bb' : 'h8bf' });
  }

  get lbs(): LbNode[] {
    return this.bgp.lbs;
  }

  get dir(): string {
    return this.bgp.topo.dir;
  }

  /** Topology, data path, router, both daemons and both BFD processes; resolves when all is Up. */
  async start(): Promise<void> {
    this.bgp.start();
    const topo = this.bgp.topo;
    const r = topo.router;
    // The client: one more namespace behind the router.
    this.client = `bfdc-${topo.id}`;
    sh('ip', ['netns', 'add', this.client]);
    this.extraNs.push(this.client);
    const cIf = `bc${topo.id}`.slice(0, 15);
    sh('ip', ['link', 'add', cIf, 'netns', r, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.client]);
    nsExec(r, ['ip', 'addr', 'add', '10.0.30.1/24', 'dev', cIf]);
    nsExec(r, ['ip', 'link', 'set', cIf, 'up']);
    nsExec(this.client, ['ip', 'link', 'set', 'lo', 'up']);
    nsExec(this.client, ['ip', 'addr', 'add', `${this.clientAddr}/24`, 'dev', 'eth0']);
    nsExec(this.client, ['ip', 'link', 'set', 'eth0', 'up']);
    nsExec(this.client, ['ip', 'route', 'add', 'default', 'via', '10.0.30.1']);
    // veth: partial checksums do not survive native XDP; stable ECMP placement (TESTBED.md).
    nsExec(this.client, ['ethtool', '-K', 'eth0', 'tx', 'off']);
    nsExec(this.client, ['sysctl', '-qw', 'net.core.txrehash=0', 'net.ipv4.tcp_tw_reuse=1']);
    // IPIP needs room: MTU 1600 on the LB and backend links, both ends.
    const linkMtu = (routerIf: string, ns: string) => {
      nsExec(r, ['ip', 'link', 'set', routerIf, 'mtu', '1600']);
      nsExec(ns, ['ip', 'link', 'set', 'eth0', 'mtu', '1600']);
    };
    this.lbs.forEach((lb, i) => linkMtu(this.lbRouterIf(i), lb.ns));
    this.bgp.backends.forEach((b) => linkMtu(`bb${b.index}${topo.id}`.slice(0, 15), b.netns));
    // XDP_TX on an LB's veth needs an XDP program on the router's peer.
    const pass = await BpfObject.load(bpfObjectPath('pass'));
    try {
      for (let i = 0; i < this.lbs.length; i++)
        await attachXdp({ ifname: this.lbRouterIf(i), netns: `/var/run/netns/${r}`, program: pass.program('xdp_pass'), mode: 'native' }); // prettier-ignore
    } finally {
      pass.close();
    }
    // Backends: decapsulate in XDP (what `peak-xdp decap attach` does, done here so the lab does not depend
    // on the CLI's flags), the VIP on lo.
    for (const b of this.bgp.backends) {
      const obj = await BpfObject.load(bpfObjectPath('decap'));
      const prog = obj.program('decap');
      const addrs = obj.map('decap_addrs');
      obj.close();
      try {
        for (const a of [b.v4, b.v6]) addrs.update(encodeAddrKey('address', a), Buffer.alloc(4));
        await attachXdp({
          ifname: 'eth0',
          netns: `/var/run/netns/${b.netns}`,
          program: prog,
          mode: 'native',
        });
      } finally {
        prog.close();
        addrs.close();
      }
      nsExec(b.netns, ['ip', 'addr', 'replace', `${VIP4}/32`, 'dev', 'lo']);
      nsExec(b.netns, ['sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=2', 'net.ipv4.conf.eth0.rp_filter=2']);
    }
    this.router = this.kind === 'bird' ? await this.startBird() : await this.startFrr();
    for (let i = 0; i < this.lbs.length; i++) {
      const cfg = this.bgp.config(i) as { bgp: { peers: { holdTime: number }[] } };
      for (const p of cfg.bgp.peers) p.holdTime = HOLD_S;
      this.bgp.writeConfig(i, cfg as unknown as Record<string, unknown>);
      this.daemons[i] = await this.startDaemon(i);
      this.bfd[i] = this.startBfd(i);
    }
  }

  private readonly extraNs: string[] = [];
  private daemonCount = 0;

  /**
   * `peak-xdp daemon` in LB i (pins under the lab's bpffs, given by env PEAK_XDP_BPFFS so the command line is
   * only `daemon --config`); resolves when /readyz answers 200.
   */
  async startDaemon(i: number): Promise<LabDaemon> {
    const log = join(this.dir, `daemon-lb${i + 1}-${++this.daemonCount}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', this.lbs[i]!.ns, process.execPath, CLI_JS, 'daemon', '--config', this.bgp.configPath(i), '--log-level', 'debug'], // prettier-ignore
      { stdio: ['ignore', fd, fd], env: { ...process.env, PEAK_XDP_BPFFS: this.bgp.bpffs } },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1))); // prettier-ignore
    const d: LabDaemon = { pid: child.pid!, child, exited, log };
    this.allDaemons.push(d);
    const t0 = performance.now();
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`daemon lb${i + 1} exited:\n${this.logTail(log)}`);
      if ((await this.bgp.admin(i, '/readyz')).status === 200) return d;
      if (performance.now() - t0 > 30000)
        throw new Error(`daemon lb${i + 1} not ready:\n${this.logTail(log)}`);
      await sleep(50);
    }
  }

  private readonly allDaemons: LabDaemon[] = [];

  lbRouterIf(i: number): string {
    return `br${i + 1}${this.bgp.topo.id}`.slice(0, 15);
  }

  /** Our BFD process in LB i's namespace: its own config file; Down while the daemon's program is off eth0. */
  startBfd(i: number): BfdProc {
    const lb = this.lbs[i]!;
    const control = join(this.dir, `bfd-lb${i + 1}.sock`);
    const cfgPath = join(this.dir, `bfd-lb${i + 1}.json`);
    writeFileSync(
      cfgPath,
      JSON.stringify({
        control,
        forwarding: { interface: 'eth0', pin: join(this.bgp.pinDir(i), 'balancer') },
        sessions: [lb.routerV4, lb.routerV6].map((peer) => ({ peer, ...OUR_BFD })),
      }),
    );
    const log = join(this.dir, `bfd-lb${i + 1}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(
      'ip',
      ['netns', 'exec', lb.ns, process.execPath, CLI_JS, 'bfd-daemon', '--config', cfgPath, '--log-level', 'info'], // prettier-ignore
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    return { child, pid: child.pid!, control, log };
  }

  /** `peak-xdp bfd --json` in LB i's namespace (what an operator reads). */
  async bfdStatusCli(i: number): Promise<BfdStatus> {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', this.lbs[i]!.ns, process.execPath, CLI_JS, 'bfd', '--control', this.bfd[i]!.control, '--json'], // prettier-ignore
      { timeoutMs: 10000 },
    );
    if (r.code !== 0)
      throw new Error(`peak-xdp bfd --json (lb${i + 1}) exited ${r.code}: ${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout) as BfdStatus;
  }

  /** The same object straight from the control socket (fast enough to poll). */
  async bfdStatus(i: number): Promise<BfdStatus> {
    const c = await BfdClient.connect({ path: this.bfd[i]!.control });
    try {
      return await c.status();
    } finally {
      c.close();
    }
  }

  async bfdStatusOrNull(i: number): Promise<BfdStatus | null> {
    try {
      return await this.bfdStatus(i);
    } catch {
      return null;
    }
  }

  /** LB i's sessions to the router (v4, v6). */
  ourSessions(st: BfdStatus, i: number): SessionStatus[] {
    const lb = this.lbs[i]!;
    return [lb.routerV4, lb.routerV6].map((p) => {
      const s = st.sessions.find((x) => x.peer === p);
      if (!s) throw new Error(`lb${i + 1}: no BFD session to ${p}`);
      return s;
    });
  }

  /** Next hops of a VIP in the router's kernel FIB. */
  fib(vip: string): string[] {
    return fibNextHops(this.bgp.topo, prefixOf(vip));
  }

  /** The same, without blocking the event loop (for fast polling beside other children). */
  async fibAsync(vip: string): Promise<string[]> {
    const fam = vip.includes(':') ? '-6' : '-4';
    const r = await runAsync('ip', ['-n', this.bgp.topo.router, fam, 'route', 'show', prefixOf(vip)], {
      timeoutMs: 5000,
    });
    return [...r.stdout.matchAll(/via (?:inet6 )?([0-9a-f.:]+)/g)].map((m) => m[1]!).sort();
  }

  /** Both LBs are next hops of both VIPs in the router's FIB. */
  fullyRouted(): boolean {
    return [VIP4, VIP6].every((v) => {
      const want = this.lbs.map((l) => (v.includes(':') ? l.v6 : l.v4)).sort();
      return JSON.stringify(this.fib(v)) === JSON.stringify(want);
    });
  }

  /**
   * Silent failure of LB i, link up: nftables inside the LB namespace drops every packet to and from the
   * router (BFD, BGP, health checks). XDP runs before netfilter, so VIP packets the balancer answers with
   * XDP_TX would still get through: a netdev ingress rule on the router's side of the link drops what comes
   * from the LB too, so the data path is as dead as the control plane.
   */
  silence(i: number, on: boolean): void {
    const ns = this.lbs[i]!.ns;
    const rIf = this.lbRouterIf(i);
    nsExec(ns, ['nft', 'delete', 'table', 'inet', 'bfdsilent'], { allowFail: true });
    nsExec(this.bgp.topo.router, ['nft', 'delete', 'table', 'netdev', 'bfdsilent'], { allowFail: true });
    if (!on) return;
    nft(
      ns,
      `table inet bfdsilent {
  chain in { type filter hook input priority -300; iifname "eth0" drop; }
  chain out { type filter hook output priority -300; oifname "eth0" drop; }
}
`,
    );
    nft(
      this.bgp.topo.router,
      `table netdev bfdsilent {
  chain in { type filter hook ingress device "${rIf}" priority -500; drop; }
}
`,
    );
  }

  /**
   * Bounded HTTP load through the VIP from the client: `concurrency` loops, a new connection per request (ECMP
   * places each flow), each request failed after `timeoutMs` without a full 200 answer. wrk was not used: it
   * does not count a connection whose SYN is blackholed (its timeout starts with the request), so it reports
   * 0 errors through a dead next hop.
   */
  async load(o: { seconds: number; concurrency?: number; timeoutMs?: number }): Promise<LoadSummary> {
    const args = [VIP4, String(o.seconds), String(o.concurrency ?? 8), String(o.timeoutMs ?? 1000)];
    const t0 = Date.now();
    const r = await runAsync('ip', ['netns', 'exec', this.client, process.execPath, '-e', LOAD_JS, ...args], {
      timeoutMs: (o.seconds + 10) * 1000,
    });
    if (r.code !== 0) throw new Error(`load generator failed (${r.code}): ${r.stderr}`);
    const j = JSON.parse(r.stdout) as Omit<LoadSummary, 'startedAt'>;
    return { ...j, startedAt: t0 };
  }

  /** Polls the router's FIB every ~few ms until LB i is gone from VIP4's next hops; ms, or null. */
  async timeUntilFibDrops(i: number, t0: number, timeoutMs: number): Promise<number | null> {
    const nh = this.lbs[i]!.v4;
    for (;;) {
      if (!(await this.fibAsync(VIP4)).includes(nh)) return performance.now() - t0;
      if (performance.now() - t0 > timeoutMs) return null;
      await sleep(2);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Routers

  private spawnRouter(args: string[], logName: string): ChildProcess {
    const fd = openSync(join(this.dir, logName), 'a');
    const child = spawn('ip', ['netns', 'exec', this.bgp.topo.router, ...args], {
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    this.routerChildren.push(child);
    return child;
  }

  private async waitRouter(what: string, f: () => boolean): Promise<void> {
    const t0 = Date.now();
    while (!f()) {
      if (Date.now() - t0 > 10000) throw new Error(`router: timed out waiting for ${what}`);
      await sleep(50);
    }
  }

  private async startBird(): Promise<Router> {
    const dir = join(this.dir, 'bird');
    mkdirSync(dir, { recursive: true });
    const sock = join(dir, 'bird.ctl');
    const peers = this.bgp.routerPeers();
    const conf = join(dir, 'bird.conf');
    const writeConf = (noBfd: string[]) => {
      const protos = peers
        .map(
          (p, i) => `protocol bgp p${i} {
  local as ${ROUTER_ASN}; neighbor ${p.address} as ${p.asn};
  passive on; hold time ${HOLD_S}; keepalive time ${KEEPALIVE_S};
  connect delay time 1; connect retry time 2; error wait time 1, 5;
  graceful restart on; bfd ${noBfd.includes(p.address) ? 'off' : 'on'};
  ${p.family} { import all; export none; };
}`,
        )
        .join('\n');
      writeFileSync(
        conf,
        `router id ${this.lbs[0]!.routerV4};
log "${join(dir, 'bird.log')}" all;
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { export all; import none; }; merge paths yes limit 8; }
protocol kernel k6 { ipv6 { export all; import none; }; merge paths yes limit 8; }
protocol bfd {
  interface "*" { min rx interval ${ROUTER_BFD.minRx} ms; min tx interval ${ROUTER_BFD.minTx} ms; idle tx interval 1000 ms; multiplier ${ROUTER_BFD.multiplier}; };
}
${protos}
`,
      );
    };
    writeConf([]);
    let noBfd: string[] = [];
    this.spawnRouter(['bird', '-f', '-c', conf, '-s', sock, '-P', join(dir, 'bird.pid')], 'bird.out'); // prettier-ignore
    const birdc = (...a: string[]) => sh('birdc', ['-s', sock, ...a], { allowFail: true });
    await this.waitRouter('bird socket', () => birdc('show', 'status').includes('Daemon is up'));
    return {
      kind: 'bird',
      stop: () => this.stopRouter(),
      bfdText: () => birdc('show', 'bfd', 'sessions'),
      setBfd: (addresses, on) => {
        noBfd = on ? noBfd.filter((a) => !addresses.includes(a)) : [...noBfd, ...addresses];
        writeConf(noBfd);
        const out = birdc('configure');
        if (!/Reconfigured/.test(out)) throw new Error(`birdc configure: ${out}`);
      },
      bfdSessions: () => parseBirdBfd(birdc('show', 'bfd', 'sessions')),
      established: (address) => {
        const i = peers.findIndex((p) => p.address === address);
        return /BGP state:\s+Established/.test(birdc('show', 'protocols', 'all', `p${i}`));
      },
    };
  }

  private async startFrr(): Promise<Router> {
    const dir = join(this.dir, 'frr');
    mkdirSync(dir, { recursive: true });
    const uid = Number(sh('id', ['-u', 'frr']).trim());
    const gid = Number(sh('id', ['-g', 'frr']).trim());
    chownSync(dir, uid, gid);
    const zsock = join(dir, 'zserv.api');
    const peers = this.bgp.routerPeers();
    const nbr = peers
      .map(
        (p) =>
          ` neighbor ${p.address} remote-as ${p.asn}\n neighbor ${p.address} passive\n` +
          ` neighbor ${p.address} timers ${KEEPALIVE_S} ${HOLD_S}\n neighbor ${p.address} timers connect 1\n` +
          ` neighbor ${p.address} bfd\n neighbor ${p.address} bfd profile lb\n`,
      )
      .join('');
    const af = (fam: 'ipv4' | 'ipv6'): string =>
      ` address-family ${fam} unicast\n  maximum-paths 8\n` +
      peers
        .map((p) =>
          p.family === fam
            ? `  neighbor ${p.address} activate\n  neighbor ${p.address} route-map DENY out\n`
            : `  no neighbor ${p.address} activate\n`,
        )
        .join('') +
      ' exit-address-family\n';
    const files = {
      'zebra.conf': 'hostname r\n',
      'bfdd.conf': `hostname r\nlog stdout informational\nbfd\n profile lb\n  transmit-interval ${ROUTER_BFD.minTx}\n  receive-interval ${ROUTER_BFD.minRx}\n  detect-multiplier ${ROUTER_BFD.multiplier}\n !\n!\n`,
      'bgpd.conf': `hostname r\nlog stdout informational\nroute-map DENY deny 10\n!\nrouter bgp ${ROUTER_ASN}\n bgp router-id ${this.lbs[0]!.routerV4}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n${nbr}${af('ipv4')}${af('ipv6')}!\n`,
    };
    for (const [f, text] of Object.entries(files)) {
      writeFileSync(join(dir, f), text);
      chownSync(join(dir, f), uid, gid);
    }
    const common = ['-u', 'frr', '-g', 'frr', '--vty_socket', dir, '-z', zsock];
    const d = (name: string, extra: string[] = []) =>
      this.spawnRouter([`/usr/lib/frr/${name}`, ...common, '-f', join(dir, `${name}.conf`), '-i', join(dir, `${name}.pid`), ...extra], `${name}.out`); // prettier-ignore
    d('zebra', ['-P', '0']);
    await this.waitRouter('zebra socket', () => existsSock(zsock));
    d('bfdd', ['-P', '0', '--bfdctl', join(dir, 'bfdd.sock')]);
    d('bgpd', ['-P', '0']);
    const vtysh = (cmd: string) =>
      nsExec(this.bgp.topo.router, ['vtysh', '--vty_socket', dir, '-c', cmd], { allowFail: true });
    await this.waitRouter('bgpd + bfdd vty', () => vtysh('show bgp summary').includes('BGP router identifier') && vtysh('show bfd peers').includes('BFD Peers')); // prettier-ignore
    return {
      kind: 'frr',
      stop: async () => {
        await this.stopRouter();
        nsExec(this.bgp.topo.router, ['ip', 'nexthop', 'flush'], { allowFail: true });
      },
      bfdText: () => vtysh('show bfd peers'),
      setBfd: (addresses, on) => {
        const cmds = addresses.flatMap((a) => ['-c', `${on ? '' : 'no '}neighbor ${a} bfd`]);
        nsExec(this.bgp.topo.router, ['vtysh', '--vty_socket', dir, '-c', 'configure terminal', '-c', `router bgp ${ROUTER_ASN}`, ...cmds]); // prettier-ignore
        if (on) for (const a of addresses) nsExec(this.bgp.topo.router, ['vtysh', '--vty_socket', dir, '-c', 'configure terminal', '-c', `router bgp ${ROUTER_ASN}`, '-c', `neighbor ${a} bfd profile lb`]); // prettier-ignore
      },
      bfdSessions: () => parseFrrBfd(vtysh('show bfd peers json'), vtysh('show bfd peers counters json')),
      established: (address) => {
        try {
          const j = JSON.parse(vtysh(`show bgp neighbors ${address} json`)) as Record<string, { bgpState?: string }>; // prettier-ignore
          return j[address]?.bgpState === 'Established';
        } catch {
          return false;
        }
      },
    };
  }

  private async stopRouter(): Promise<void> {
    for (const c of this.routerChildren.reverse()) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const done = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    }
  }

  // ---------------------------------------------------------------------------------------------------

  /**
   * Sends datagrams from the router's namespace (so the source is the router's address on the link) with a
   * given TTL / hop limit, and `random` random datagrams (half shaped like BFD), bounded to 30 s.
   */
  inject(o: { dst: string; items?: { hex: string; ttl: number }[]; random?: number }): {
    sent: number;
    ms: number;
  } {
    const file = join(this.dir, `inject-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ port: 3784, ...o }));
    const out = nsExec(this.bgp.topo.router, [process.execPath, '-e', INJECT_JS, file], { timeoutMs: 60000 });
    return JSON.parse(out) as { sent: number; ms: number };
  }

  /** Kills everything by pid, removes the nft tables, namespaces, bpffs and temp dir (safe after a failed start). */
  async cleanup(): Promise<void> {
    for (const p of this.bfd)
      if (p && p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    for (const d of this.allDaemons)
      if (d.child.exitCode === null && d.child.signalCode === null) {
        try {
          signalPid(d.pid, 'SIGKILL');
          signalPid(d.pid, 'SIGCONT');
        } catch {
          // already gone
        }
      }
    for (const c of this.routerChildren) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await sleep(100);
    if (this.bgp.topo) {
      nsExec(this.bgp.topo.router, ['ip', 'nexthop', 'flush'], { allowFail: true });
      for (const n of this.extraNs.splice(0)) {
        const pids = sh('ip', ['netns', 'pids', n], { allowFail: true }).split('\n').map(Number).filter((p) => p > 0); // prettier-ignore
        for (const p of pids) {
          try {
            signalPid(p, 'SIGKILL');
          } catch {
            // gone
          }
        }
        sh('ip', ['netns', 'del', n], { allowFail: true });
      }
    }
    await this.bgp.cleanup();
  }

  logTail(path: string, lines = 20): string {
    try {
      return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

function nft(ns: string, script: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script, timeout: 10000, stdio: ['pipe', 'pipe', 'pipe'] }); // prettier-ignore
}

function existsSock(p: string): boolean {
  return sh('sh', ['-c', `test -S '${p}' && echo y`], { allowFail: true }).trim() === 'y';
}

/** `birdc show bfd sessions`: "IP address  Interface  State  Since  Interval  Timeout" rows. */
export function parseBirdBfd(text: string): RouterBfdSession[] {
  const out: RouterBfdSession[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f.:]+)\s+(\S+)\s+(Up|Down|Init|AdminDown)\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s*$/.exec(line.trim()); // prettier-ignore
    if (!m) continue;
    const state = m[3] === 'AdminDown' ? 'admin-down' : (m[3]!.toLowerCase() as RouterBfdSession['state']);
    out.push({ peer: m[1]!, state, upSince: m[4]!, txMs: Math.round(Number(m[5]) * 1000), detectMs: Math.round(Number(m[6]) * 1000), remote: null }); // prettier-ignore
  }
  return out;
}

/** `show bfd peers json` and `show bfd peers counters json` (FRR bfdd). */
export function parseFrrBfd(peersJson: string, countersJson: string): RouterBfdSession[] {
  let j: Record<string, unknown>[];
  let c: Record<string, unknown>[];
  try {
    j = JSON.parse(peersJson) as Record<string, unknown>[];
    c = JSON.parse(countersJson) as Record<string, unknown>[];
  } catch {
    return [];
  }
  return j.map((p) => {
    const status = String(p.status);
    const state = status === 'up' ? 'up' : status === 'init' ? 'init' : status === 'shutdown' ? 'admin-down' : 'down'; // prettier-ignore
    const n = c.find((x) => x.peer === p.peer && x.local === p.local);
    // Peers and counters come from two vtysh calls: a peer bfdd re-creates in between (it does while BGP
    // re-establishes the neighbor, before the local address is known) is in one and not the other. Such a
    // snapshot says nothing about the session: report it not Up, so waits poll again and comparisons differ.
    if (!n || typeof n['session-up'] !== 'number')
      return { peer: String(p.peer), state: 'down' as const, upSince: 'not in the counters snapshot', txMs: null, detectMs: null, remote: null }; // prettier-ignore
    return {
      peer: String(p.peer),
      state,
      // How often the session came up and went down: changes whenever it leaves Up.
      upSince: `up ${String(n['session-up'])} down ${String(n['session-down'])}`,
      txMs: null,
      detectMs: null,
      remote: {
        minTx: Number(p['remote-transmit-interval']),
        minRx: Number(p['remote-receive-interval']),
        multiplier: Number(p['remote-detect-multiplier']),
      },
    };
  });
}

const LOAD_JS = `
const http = require('node:http');
const [host, seconds, conc, timeoutMs] = process.argv.slice(1).map((x, i) => (i === 0 ? x : Number(x)));
const end = Date.now() + seconds * 1000;
let ok = 0, failed = 0; const errors = {}; const failedAt = [];
const fail = (why, t) => { failed++; errors[why] = (errors[why] || 0) + 1; if (failedAt.length < 10000) failedAt.push(t); };
const one = () => new Promise((resolve) => {
  const t = Date.now(); let done = false;
  const finish = (err) => { if (done) return; done = true; clearTimeout(timer); if (err) fail(err, t); else ok++; resolve(); };
  const req = http.get({ host, port: 80, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
    res.resume();
    res.on('end', () => finish(res.statusCode === 200 ? null : 'status ' + res.statusCode));
    res.on('error', (e) => finish(e.code || 'response error'));
  });
  const timer = setTimeout(() => { finish('timeout'); req.destroy(); }, timeoutMs);
  req.on('error', (e) => finish(e.code || e.message));
});
const loop = async () => { while (Date.now() < end) await one(); };
Promise.all(Array.from({ length: conc }, loop)).then(() => process.stdout.write(JSON.stringify({ ok, failed, errors, failedAt })));`;

/** Sends BFD datagrams from a namespace: the crafted `items` (hex, TTL), then `random` ones (bounded to 30 s). */
export const INJECT_JS = `
const dgram = require('node:dgram'); const crypto = require('node:crypto');
const o = JSON.parse(require('node:fs').readFileSync(process.argv[1], 'utf8'));
const s = dgram.createSocket(o.dst.includes(':') ? 'udp6' : 'udp4');
const send = (b, ttl) => new Promise((res, rej) => { s.setTTL(ttl); s.send(b, o.port, o.dst, (e) => e ? rej(e) : res()); });
(async () => {
  await new Promise((r) => s.bind(0, r));
  const t0 = Date.now(); let sent = 0;
  for (const it of o.items || []) { await send(Buffer.from(it.hex, 'hex'), it.ttl); sent++; }
  for (let i = 0; i < (o.random || 0) && Date.now() - t0 < 30000; i++) {
    const b = crypto.randomBytes(Math.floor(Math.random() * 80));
    if (i % 2 && b.length >= 24) { b[0] = 0x20 | (b[0] & 0x1f); b[3] = (b[1] & 4) ? Math.min(b.length, 24 + b[3] % 32) : 24; }
    await send(b, 255); sent++;
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5));
  }
  process.stdout.write(JSON.stringify({ sent, ms: Date.now() - t0 }));
  s.close();
})().catch((e) => { process.stderr.write(String(e)); process.exit(1); });`;

export { LB_ASN };
