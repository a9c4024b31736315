// Test helpers for BGP interop: netns topology (router + LB namespaces), real BGP daemons (BIRD, FRR,
// GoBGP) started with private config/socket/pid files, and BgpSpeaker announcer processes.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = join(__dirname, '..', '..');

export function sh(
  cmd: string,
  args: string[],
  opts: { allowFail?: boolean; timeoutMs?: number } = {},
): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      timeout: opts.timeoutMs ?? 15000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

/** Run a command inside a namespace. */
export function nsExec(
  ns: string,
  args: string[],
  opts: { allowFail?: boolean; timeoutMs?: number } = {},
): string {
  return sh('ip', ['netns', 'exec', ns, ...args], opts);
}

export { sleep };

/** Poll until `pred` holds; resolves with the elapsed ms, rejects naming `what` after `ms`. */
export async function waitFor(what: string, pred: () => boolean, ms: number, everyMs = 25): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (pred()) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface LbNode {
  ns: string;
  /** LB address on its link (IPv4, IPv6) and the router's address on that link. */
  v4: string;
  v6: string;
  routerV4: string;
  routerV6: string;
}

export interface Topology {
  id: string;
  router: string;
  lbs: LbNode[];
  dir: string;
  destroy(): void;
}

/** router ns + n LB namespaces, each joined by a veth pair with 10.0.i.0/24 and fd00:0:i::/64. */
export function createTopology(o: { tag: string; lbs: number }): Topology {
  const id = `${o.tag}${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}`;
  const router = `bgpr-${id}`;
  const dir = mkdtempSync(join(tmpdir(), `peak-bgp-${id}-`));
  chmodSync(dir, 0o755);
  const lbs: LbNode[] = [];
  const created: string[] = [];
  const destroy = (): void => {
    for (const ns of created.reverse()) sh('ip', ['netns', 'del', ns], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    sh('ip', ['netns', 'add', router]);
    created.push(router);
    nsExec(router, ['ip', 'link', 'set', 'lo', 'up']);
    nsExec(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    nsExec(router, ['sysctl', '-qw', 'net.ipv4.fib_multipath_hash_policy=1']);
    for (let i = 1; i <= o.lbs; i++) {
      const ns = `bgpl${i}-${id}`;
      sh('ip', ['netns', 'add', ns]);
      created.push(ns);
      const rIf = `br${i}${id}`.slice(0, 15);
      const lIf = `bl${i}${id}`.slice(0, 15);
      sh('ip', ['link', 'add', rIf, 'netns', router, 'type', 'veth', 'peer', 'name', lIf, 'netns', ns]);
      nsExec(ns, ['ip', 'link', 'set', lIf, 'name', 'eth0']);
      const n: LbNode = {
        ns,
        v4: `10.0.${i}.2`,
        v6: `fd00:0:${i}::2`,
        routerV4: `10.0.${i}.1`,
        routerV6: `fd00:0:${i}::1`,
      };
      nsExec(router, ['ip', 'addr', 'add', `${n.routerV4}/24`, 'dev', rIf]);
      nsExec(router, ['ip', '-6', 'addr', 'add', `${n.routerV6}/64`, 'dev', rIf, 'nodad']);
      nsExec(router, ['ip', 'link', 'set', rIf, 'up']);
      nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
      nsExec(ns, ['ip', 'addr', 'add', `${n.v4}/24`, 'dev', 'eth0']);
      nsExec(ns, ['ip', '-6', 'addr', 'add', `${n.v6}/64`, 'dev', 'eth0', 'nodad']);
      nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
      lbs.push(n);
    }
  } catch (e) {
    destroy();
    throw e;
  }
  return { id, router, lbs, dir, destroy };
}

// -----------------------------------------------------------------------------------------------------
// Routers

export interface RouterPeer {
  address: string;
  asn: number;
  family: 'ipv4' | 'ipv6';
  password?: string;
}

export interface RouterDaemon {
  kind: 'bird' | 'frr' | 'gobgp';
  /** Stop the daemon (SIGTERM, then SIGKILL), and clean what it left in the kernel. */
  stop(): Promise<void>;
  /** Next hops the daemon's RIB holds for a prefix (all paths, not only the best). */
  ribNextHops(prefix: string): string[];
  /** The router's BGP session with this neighbour is Established. */
  established(address: string): boolean;
}

export const ROUTER_ASN = 65000;

function spawnDaemon(ns: string, args: string[], logFile: string): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: string[] = [];
  child.stdout?.on('data', (d: Buffer) => chunks.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => chunks.push(d.toString()));
  child.on('exit', () => {
    try {
      writeFileSync(logFile, chunks.join(''), { flag: 'a' });
    } catch {
      // The temp dir may already be gone at teardown.
    }
  });
  return child;
}

async function stopChild(child: ChildProcess, ms = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), ms);
  await done;
  clearTimeout(t);
}

/** BIRD 2: kernel protocols merge ECMP paths into the FIB; one passive BGP protocol per peer. */
export async function startBird(o: {
  topo: Topology;
  peers: RouterPeer[];
  instance?: string;
}): Promise<RouterDaemon & { sock: string; importUpdates(address: string): number }> {
  const dir = join(o.topo.dir, o.instance ?? 'bird');
  mkdirSync(dir, { recursive: true });
  const sock = join(dir, 'bird.ctl');
  const conf = join(dir, 'bird.conf');
  const protos = o.peers
    .map(
      (p, i) => `protocol bgp p${i} {
  local as ${ROUTER_ASN}; neighbor ${p.address} as ${p.asn};
  passive on; hold time 3; keepalive time 1;
  connect delay time 1; connect retry time 2; error wait time 1, 5;
  ${p.password ? `password "${p.password}";` : ''}
  ${p.family} { import all; export none; };
}`,
    )
    .join('\n');
  writeFileSync(
    conf,
    `router id ${o.topo.lbs[0]?.routerV4};
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { export all; import none; }; merge paths yes limit 8; }
protocol kernel k6 { ipv6 { export all; import none; }; merge paths yes limit 8; }
${protos}
`,
  );
  const child = spawnDaemon(
    o.topo.router,
    ['bird', '-f', '-c', conf, '-s', sock, '-P', join(dir, 'bird.pid')],
    join(dir, 'bird.log'),
  );
  await waitFor(
    'bird control socket',
    () => sh('birdc', ['-s', sock, 'show', 'status'], { allowFail: true }).includes('Daemon is up'),
    5000,
    50,
  );
  return {
    kind: 'bird',
    sock,
    stop: () => stopChild(child),
    ribNextHops: (prefix) => {
      const txt = sh('birdc', ['-s', sock, 'show', 'route', 'for', prefix], { allowFail: true });
      return [...txt.matchAll(/via (\S+) on/g)].map((m) => m[1] as string).sort();
    },
    established: (address) => {
      const i = o.peers.findIndex((p) => p.address === address);
      return /BGP state:\s+Established/.test(
        sh('birdc', ['-s', sock, 'show', 'protocols', 'all', `p${i}`], { allowFail: true }),
      );
    },
    importUpdates: (address) => {
      const i = o.peers.findIndex((p) => p.address === address);
      const txt = sh('birdc', ['-s', sock, 'show', 'protocols', 'all', `p${i}`]);
      const m = /Import updates:\s+(\d+)/.exec(txt);
      if (!m) throw new Error(`BIRD printed no "Import updates" for p${i} (${address}):\n${txt}`);
      return Number(m[1]);
    },
  };
}

/**
 * BIRD's `show route` text without its `[protocol time]` stamps. BIRD prints a stamp as its clock now minus the
 * entry's age, with "now" read at two moments of its event loop, so the same untouched entry can print a few
 * milliseconds apart from one call to the next.
 */
export function withoutBirdTimes(txt: string): string {
  return txt.replace(/\[(\S+) [0-9:.]+\]/g, '[$1]');
}

/** FRR: zebra + bgpd as user frr, private zserv/vty sockets and pid files. */
export async function startFrr(o: {
  topo: Topology;
  peers: RouterPeer[];
}): Promise<RouterDaemon & { vtysh(cmd: string): string }> {
  const dir = join(o.topo.dir, 'frr');
  mkdirSync(dir, { recursive: true });
  const uid = Number(sh('id', ['-u', 'frr']).trim());
  const gid = Number(sh('id', ['-g', 'frr']).trim());
  chownSync(dir, uid, gid);
  const zsock = join(dir, 'zserv.api');
  const nbr = o.peers
    .map(
      (p) =>
        ` neighbor ${p.address} remote-as ${p.asn}\n neighbor ${p.address} passive\n neighbor ${p.address} timers 1 3\n neighbor ${p.address} timers connect 1\n` +
        (p.password ? ` neighbor ${p.address} password ${p.password}\n` : ''),
    )
    .join('');
  const af = (fam: 'ipv4' | 'ipv6'): string =>
    ` address-family ${fam} unicast\n  maximum-paths 8\n` +
    o.peers
      .map((p) =>
        p.family === fam
          ? `  neighbor ${p.address} activate\n  neighbor ${p.address} route-map DENY out\n`
          : `  no neighbor ${p.address} activate\n`,
      )
      .join('') +
    ' exit-address-family\n';
  const bgpConf = join(dir, 'bgpd.conf');
  writeFileSync(
    bgpConf,
    `hostname r\nlog stdout informational\nroute-map DENY deny 10\n!\nrouter bgp ${ROUTER_ASN}\n bgp router-id ${o.topo.lbs[0]?.routerV4}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n${nbr}${af('ipv4')}${af('ipv6')}!\n`,
  );
  const zConf = join(dir, 'zebra.conf');
  writeFileSync(zConf, 'hostname r\n');
  for (const f of [bgpConf, zConf]) chownSync(f, uid, gid);
  const common = ['-u', 'frr', '-g', 'frr', '--vty_socket', dir, '-z', zsock];
  const zebra = spawnDaemon(
    o.topo.router,
    ['/usr/lib/frr/zebra', ...common, '-f', zConf, '-i', join(dir, 'zebra.pid'), '-P', '0'],
    join(dir, 'zebra.log'),
  );
  try {
    await waitFor(
      'zebra socket',
      () => sh('test', ['-S', zsock], { allowFail: true }) !== '' || existsSock(zsock),
      5000,
      50,
    );
  } catch (e) {
    await stopChild(zebra);
    throw e;
  }
  const bgpd = spawnDaemon(
    o.topo.router,
    ['/usr/lib/frr/bgpd', ...common, '-f', bgpConf, '-i', join(dir, 'bgpd.pid'), '-P', '0'],
    join(dir, 'bgpd.log'),
  );
  const vtysh = (cmd: string): string =>
    nsExec(o.topo.router, ['vtysh', '--vty_socket', dir, '-c', cmd], { allowFail: true });
  await waitFor(
    'bgpd vty',
    () =>
      vtysh('show bgp summary').includes('BGP router identifier') ||
      vtysh('show bgp summary').includes('% No BGP'),
    8000,
    100,
  );
  return {
    kind: 'frr',
    vtysh,
    stop: async () => {
      await stopChild(bgpd);
      await stopChild(zebra);
      // Stale nexthop objects zebra may leave (TESTBED.md).
      nsExec(o.topo.router, ['ip', 'nexthop', 'flush'], { allowFail: true });
    },
    ribNextHops: (prefix) => {
      const fam = prefix.includes(':') ? 'ipv6' : 'ipv4';
      const out = vtysh(`show bgp ${fam} unicast ${prefix} json`);
      try {
        const j = JSON.parse(out) as { paths?: { nexthops?: { ip: string; scope?: string }[] }[] };
        return (j.paths ?? [])
          .map((p) => p.nexthops?.find((n) => n.scope !== 'link-local')?.ip ?? '?')
          .sort();
      } catch {
        return [];
      }
    },
    established: (address) => {
      try {
        const j = JSON.parse(vtysh(`show bgp neighbors ${address} json`)) as Record<
          string,
          { bgpState?: string }
        >;
        return j[address]?.bgpState === 'Established';
      } catch {
        return false;
      }
    },
  };
}

function existsSock(p: string): boolean {
  try {
    execFileSync('test', ['-S', p]);
    return true;
  } catch {
    return false;
  }
}

/** GoBGP: RIB-level peer (installs nothing in the kernel), gRPC API on the router namespace's loopback. */
export async function startGobgp(o: {
  topo: Topology;
  peers: RouterPeer[];
}): Promise<RouterDaemon & { ribJson(family: 'ipv4' | 'ipv6'): GobgpRib }> {
  const dir = join(o.topo.dir, 'gobgp');
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'gobgp.toml');
  const nbrs = o.peers
    .map(
      (p) => `[[neighbors]]
  [neighbors.config]
    neighbor-address = "${p.address}"
    peer-as = ${p.asn}
${p.password ? `    auth-password = "${p.password}"\n` : ''}  [neighbors.timers.config]
    hold-time = 3
    keepalive-interval = 1
    connect-retry = 1
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "${p.family}-unicast"
`,
    )
    .join('');
  writeFileSync(
    conf,
    `[global.config]
  as = ${ROUTER_ASN}
  router-id = "${o.topo.lbs[0]?.routerV4}"
[global.use-multiple-paths.config]
  enabled = true
${nbrs}`,
  );
  const child = spawnDaemon(
    o.topo.router,
    ['gobgpd', '-f', conf, '--api-hosts', '127.0.0.1:50051', '--pprof-disable', '-p', '-l', 'info'],
    join(dir, 'gobgpd.log'),
  );
  const cli = (args: string[]): string =>
    nsExec(o.topo.router, ['gobgp', '-u', '127.0.0.1', '-p', '50051', ...args], { allowFail: true });
  await waitFor('gobgpd API', () => cli(['global']).includes('AS'), 8000, 100);
  const ribJson = (family: 'ipv4' | 'ipv6'): GobgpRib => {
    const out = cli(['global', 'rib', '-a', family, '-j']);
    try {
      return JSON.parse(out || '{}') as GobgpRib;
    } catch {
      return {};
    }
  };
  return {
    kind: 'gobgp',
    ribJson,
    stop: () => stopChild(child),
    established: (address) => {
      try {
        const j = JSON.parse(cli(['neighbor', address, '-j'])) as {
          state?: { session_state?: number | string };
        };
        const st = j.state?.session_state;
        return st === 6 || st === 'established' || st === 'ESTABLISHED';
      } catch {
        return false;
      }
    },
    ribNextHops: (prefix) => {
      const rib = ribJson(prefix.includes(':') ? 'ipv6' : 'ipv4');
      return (rib[prefix] ?? [])
        .map((p) => p.attrs.find((a) => a.type === 3 || a.type === 14)?.nexthop ?? '?')
        .sort();
    },
  };
}

/** `gobgp global rib -j`: prefix -> paths with decoded attributes. */
export type GobgpRib = Record<
  string,
  {
    nlri: { prefix: string };
    attrs: { type: number; [k: string]: unknown; nexthop?: string }[];
    'source-id'?: string;
    neighbor?: string;
  }[]
>;

/** Kernel FIB next hops for a prefix in the router namespace (ECMP shows several). */
export function fibNextHops(topo: Topology, prefix: string): string[] {
  const fam = prefix.includes(':') ? '-6' : '-4';
  const out = nsExec(topo.router, ['ip', fam, 'route', 'show', prefix], { allowFail: true });
  return [...out.matchAll(/via (?:inet6 )?([0-9a-f.:]+)/g)].map((m) => m[1] as string).sort();
}

// -----------------------------------------------------------------------------------------------------
// Announcer processes (our BgpSpeaker in an LB namespace)

/** Compile the announcer once per test file into a private dist directory; returns the script path. */
export function buildAnnouncer(): { script: string; cleanup(): void } {
  const out = join(ROOT, 'dist', `.bgp-test-${process.pid}`);
  sh(
    join(ROOT, 'node_modules', '.bin', 'tsc'),
    [
      '--outDir',
      out,
      '--rootDir',
      ROOT,
      '--module',
      'commonjs',
      '--target',
      'ES2022',
      '--moduleResolution',
      'node',
      '--esModuleInterop',
      '--skipLibCheck',
      '--strict',
      '--types',
      'node',
      join(ROOT, 'src', 'bgp', 'announcer-main.ts'),
      join(ROOT, 'src', 'datapath', 'bpf.ts'),
    ],
    { timeoutMs: 120000 },
  );
  return {
    script: join(out, 'src', 'bgp', 'announcer-main.js'),
    cleanup: () => rmSync(out, { recursive: true, force: true }),
  };
}

export interface AnnouncerEvent {
  t: number;
  event: string;
  [k: string]: unknown;
}

export class Announcer {
  readonly events: AnnouncerEvent[] = [];
  private constructor(
    readonly ns: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        this.events.push(JSON.parse(l) as AnnouncerEvent);
      } catch {
        this.events.push({ t: Date.now(), event: 'raw', line: l });
      }
    });
    child.stderr?.on('data', (d: Buffer) =>
      this.events.push({ t: Date.now(), event: 'stderr', text: d.toString() }),
    );
  }

  static async start(o: {
    script: string;
    ns: string;
    dir: string;
    name: string;
    config: object;
  }): Promise<Announcer> {
    const cfgPath = join(o.dir, `${o.name}.json`);
    writeFileSync(cfgPath, JSON.stringify(o.config));
    const child = spawn('ip', ['netns', 'exec', o.ns, process.execPath, o.script, cfgPath], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const a = new Announcer(o.ns, child);
    await waitFor(
      `announcer ${o.name} start`,
      () => a.has('started') || a.has('error') || child.exitCode !== null,
      10000,
    );
    if (!a.has('started')) throw new Error(`announcer ${o.name} failed: ${JSON.stringify(a.events)}`);
    return a;
  }

  has(event: string): boolean {
    return this.events.some((e) => e.event === event);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  setRoutes(routes: object[]): void {
    this.child.stdin?.write(`${JSON.stringify({ routes })}\n`);
  }

  /** The speaker's status() as printed by the process. */
  async status(): Promise<{
    peers: { peer: string; state: string; announced: string[]; lastError: string | null }[];
  }> {
    const n = this.events.length;
    this.child.stdin?.write('{"status":true}\n');
    await waitFor('status line', () => this.events.slice(n).some((e) => e.event === 'status'), 3000, 10);
    const e = this.events.slice(n).find((x) => x.event === 'status') as AnnouncerEvent;
    return e.status as Awaited<ReturnType<Announcer['status']>>;
  }

  /** Send a signal to the node process itself (ip netns exec execs it, so the pid is the node's). */
  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  async waitExit(ms = 5000): Promise<void> {
    await waitFor('announcer exit', () => this.exited, ms, 10);
  }

  async kill(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    await this.waitExit();
  }
}
