// Testbed shell: up (idempotent), down (by name, also after a crash), status, and router queries.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { allHosts, backendVips, Host, ownedNamespacePattern, Plan } from './plan';
import { renderBackendNginx, renderBird, renderFrrBgpd, renderFrrZebra } from './render';
import { run, runIn, sleep } from './sh';
import { packageRoot } from '../../src/paths';
import { signalPid, pidAlive } from '../lib/pids';

const XDP_PASS_SRC = join(packageRoot, 'scripts', 'testbed', 'xdp_pass.bpf.c');

export type Log = (msg: string) => void;
const quiet: Log = () => undefined;

/** Names of the network namespaces that exist now. */
export function listNamespaces(): string[] {
  return run('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.length > 0);
}

function nsExists(name: string): boolean {
  return existsSync(`/var/run/netns/${name}`);
}

function ipBatch(netns: string, lines: string[]): void {
  if (lines.length) run('ip', ['-n', netns, '-batch', '-'], { input: lines.join('\n') + '\n' });
}

function sysctl(netns: string, kv: Record<string, string | number>): void {
  runIn(netns, 'sysctl', ['-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
}

/** Is the pid alive and inside this network namespace? */
function pidInNs(pidFile: string, netns: string): boolean {
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return nsPids(netns).includes(pid);
}

/** Processes whose network namespace is this one. */
export function nsPids(netns: string): number[] {
  if (!nsExists(netns)) return [];
  return run('ip', ['netns', 'pids', netns], { allowFail: true })
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

function procName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Mounts the shared bpffs once in the root mount namespace (TESTBED.md: pins survive `ip netns exec`). */
export function ensureSharedBpffs(mountPoint: string): void {
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => {
      const f = l.split(' ');
      return f[4] === mountPoint && l.includes(' - bpf ');
    });
  if (mounted) return;
  mkdirSync(mountPoint, { recursive: true });
  run('mount', ['-t', 'bpf', 'bpf', mountPoint]);
}

function checkTools(p: Plan): void {
  const tools = [
    'ip',
    'ethtool',
    'sysctl',
    'clang',
    'nginx',
    ...(p.routerDaemon === 'bird' ? ['bird', 'birdc'] : []),
  ];
  const missing = tools.filter(
    (t) => run('sh', ['-c', `command -v ${t}`], { allowFail: true }).trim() === '',
  );
  if (p.routerDaemon === 'frr' && !existsSync('/usr/lib/frr/bgpd'))
    missing.push('/usr/lib/frr/bgpd (Debian frr)');
  if (missing.length)
    throw new Error(`testbed ${p.prefix}: missing tools: ${missing.join(', ')} (run scripts/setup.sh)`);
  if (process.getuid?.() !== 0) throw new Error('testbed needs root (network namespaces, XDP, bpffs)');
}

function xdpPassObject(p: Plan): string {
  const obj = join(p.stateDir, 'xdp_pass.bpf.o');
  if (existsSync(obj)) return obj;
  const src = XDP_PASS_SRC;
  if (!existsSync(src)) throw new Error(`xdp_pass.bpf.c not found at ${src}`);
  const arch = run('uname', ['-m']).trim();
  run('clang', ['-O2', '-g', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`, '-c', src, '-o', obj]);
  return obj;
}

function ensureNamespace(h: Host): void {
  if (!nsExists(h.netns)) run('ip', ['netns', 'add', h.netns]);
  ipBatch(h.netns, ['link set lo up']);
}

function ensureLink(p: Plan, h: Host): void {
  const l = h.link!;
  const have = run('ip', ['-n', h.netns, '-o', 'link', 'show', l.hostIf], { allowFail: true });
  if (!have) {
    // Both ends are created inside their namespaces: nothing ever appears in the root namespace.
    run('ip', [
      'link', 'add', 'name', l.hostIf, 'netns', h.netns, 'address', l.hostMac, 'mtu', String(l.mtu),
      'type', 'veth', 'peer', 'name', l.routerIf, 'netns', p.router.netns, 'address', l.routerMac, 'mtu', String(l.mtu),
    ]); // prettier-ignore
  }
  ipBatch(h.netns, [
    `link set ${l.hostIf} up`,
    `addr replace ${l.hostV4.address}/${l.hostV4.prefixLength} dev ${l.hostIf}`,
    `addr replace ${l.hostV6.address}/${l.hostV6.prefixLength} dev ${l.hostIf} nodad`,
    `route replace default via ${l.routerV4.address} dev ${l.hostIf}`,
    `route replace default via ${l.routerV6.address} dev ${l.hostIf}`,
  ]);
  ipBatch(p.router.netns, [
    `link set ${l.routerIf} up`,
    `addr replace ${l.routerV4.address}/${l.routerV4.prefixLength} dev ${l.routerIf}`,
    `addr replace ${l.routerV6.address}/${l.routerV6.prefixLength} dev ${l.routerIf} nodad`,
  ]);
  // Static neighbour entries: fixed MACs, no ARP/ND wait on the first packet.
  ipBatch(h.netns, [
    `neigh replace ${l.routerV4.address} lladdr ${l.routerMac} dev ${l.hostIf} nud permanent`,
    `neigh replace ${l.routerV6.address} lladdr ${l.routerMac} dev ${l.hostIf} nud permanent`,
  ]);
  ipBatch(p.router.netns, [
    `neigh replace ${l.hostV4.address} lladdr ${l.hostMac} dev ${l.routerIf} nud permanent`,
    `neigh replace ${l.hostV6.address} lladdr ${l.hostMac} dev ${l.routerIf} nud permanent`,
  ]);
}

const LOOSE_RP = { 'net.ipv4.conf.all.rp_filter': 2, 'net.ipv4.conf.default.rp_filter': 2 };

/** Options of `up` that are not part of the plan. */
export interface UpOptions {
  /** The router's BIRD can restart gracefully (renderBird's gracefulRestart); default false. */
  routerGracefulRestart?: boolean;
}

function setupRouter(p: Plan, log: Log, o: UpOptions): void {
  const ns = p.router.netns;
  sysctl(ns, {
    'net.ipv4.ip_forward': 1,
    'net.ipv6.conf.all.forwarding': 1,
    'net.ipv4.fib_multipath_hash_policy': 1,
    'net.ipv6.fib_multipath_hash_policy': 1,
    ...LOOSE_RP,
  });
  // Per-interface rp_filter is max(all, iface): set loose on each link as well.
  const ifs = [...p.clients, ...p.lbs, ...p.backends].map((h) => h.link!.routerIf);
  sysctl(ns, Object.fromEntries(ifs.map((i) => [`net.ipv4.conf.${i}.rp_filter`, 2])));
  const obj = xdpPassObject(p);
  for (const lb of p.lbs) {
    const attached = run('ip', ['-n', ns, '-d', 'link', 'show', lb.link!.routerIf]).includes('prog/xdp');
    if (!attached)
      run('ip', ['-n', ns, 'link', 'set', 'dev', lb.link!.routerIf, 'xdpdrv', 'obj', obj, 'sec', 'xdp']);
  }
  startRouterDaemon(p, log, { gracefulRestart: o.routerGracefulRestart });
}

/**
 * Starts the router's BGP daemon unless it runs. recovery (BIRD): start in graceful restart recovery (`-R`),
 * after stopRouterDaemon({ mode: 'graceful' }) with a gracefulRestart config.
 */
export function startRouterDaemon(
  p: Plan,
  log: Log = quiet,
  o: { gracefulRestart?: boolean; recovery?: boolean } = {},
): void {
  const ns = p.router.netns;
  if (p.routerDaemon === 'bird') {
    const pid = join(p.stateDir, 'bird.pid');
    if (pidInNs(pid, ns)) return;
    const conf = join(p.stateDir, 'bird.conf');
    writeFileSync(
      conf,
      renderBird(p, { logFile: join(p.stateDir, 'bird.log'), gracefulRestart: o.gracefulRestart }),
    );
    run('bird', ['-p', '-c', conf]);
    runIn(ns, 'bird', [
      ...(o.recovery ? ['-R'] : []),
      '-c',
      conf,
      '-s',
      join(p.stateDir, 'bird.ctl'),
      '-P',
      pid,
    ]);
    log(`router: BIRD started${o.recovery ? ' in graceful restart recovery' : ''} (${conf})`);
    return;
  }
  const dir = join(p.stateDir, 'frr');
  if (pidInNs(join(dir, 'bgpd.pid'), ns)) return;
  mkdirSync(dir, { recursive: true });
  const frrIds = run('id', ['-u', 'frr'], { allowFail: true }).trim();
  const frrGid = run('id', ['-g', 'frr'], { allowFail: true }).trim();
  writeFileSync(join(dir, 'zebra.conf'), renderFrrZebra(p));
  writeFileSync(join(dir, 'bgpd.conf'), renderFrrBgpd(p, { logFile: join(dir, 'bgpd.log') }));
  if (frrIds)
    for (const f of ['', 'zebra.conf', 'bgpd.conf']) chownSync(join(dir, f), Number(frrIds), Number(frrGid));
  const common = ['-d', '-z', join(dir, 'zserv.api'), '--vty_socket', dir, '-u', 'frr', '-g', 'frr'];
  runIn(ns, '/usr/lib/frr/zebra', [...common, '-f', join(dir, 'zebra.conf'), '-i', join(dir, 'zebra.pid')]);
  runIn(ns, '/usr/lib/frr/bgpd', [...common, '-f', join(dir, 'bgpd.conf'), '-i', join(dir, 'bgpd.pid')]);
  log(`router: FRR zebra + bgpd started (${dir})`);
}

/**
 * Stops the router's BIRD (fault scenarios), waiting until it is gone: 'graceful' (`birdc graceful restart`:
 * the kernel keeps its routes, the sessions close), 'term' (SIGTERM: BIRD withdraws its routes from the FIB),
 * 'kill' (SIGKILL: routes stay, sessions reset by the kernel).
 */
export async function stopRouterDaemon(p: Plan, o: { mode: 'graceful' | 'term' | 'kill' }): Promise<void> {
  if (p.routerDaemon !== 'bird')
    throw new Error(`stopRouterDaemon: only BIRD is supported (router is ${p.routerDaemon})`);
  const pids = nsPids(p.router.netns).filter((pid) => procName(pid) === 'bird');
  if (o.mode === 'graceful')
    run('birdc', ['-s', join(p.stateDir, 'bird.ctl'), 'graceful', 'restart'], { timeoutMs: 10_000 });
  else for (const pid of pids) signal(pid, o.mode === 'term' ? 'SIGTERM' : 'SIGKILL');
  for (let i = 0; i < 100 && pids.some(alive); i++) await sleep(50);
  const left = pids.filter(alive);
  if (left.length)
    throw new Error(`router BIRD (pids ${left.join(', ')}) still runs 5 s after ${o.mode} stop`);
}

function setupClient(h: Host): void {
  runIn(h.netns, 'ethtool', ['-K', 'eth0', 'tx', 'off'], { allowFail: false });
  sysctl(h.netns, {
    'net.core.txrehash': 0,
    'net.ipv4.ip_local_port_range': '1024 65000',
    'net.ipv4.tcp_tw_reuse': 1,
    ...LOOSE_RP,
  });
}

function setupLb(h: Host): void {
  sysctl(h.netns, {
    'net.ipv4.ip_forward': 1,
    'net.ipv6.conf.all.forwarding': 1,
    'net.ipv4.ip_nonlocal_bind': 1,
    'net.ipv6.ip_nonlocal_bind': 1,
    'net.ipv4.ip_local_port_range': '1024 65000',
    'net.ipv4.tcp_tw_reuse': 1,
    ...LOOSE_RP,
  });
}

function setupBackend(p: Plan, h: Host, log: Log): void {
  // A backend calling a VIP is a client too: full checksums, or native XDP on the LB loses them (TESTBED.md).
  runIn(h.netns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  sysctl(h.netns, {
    'net.ipv4.conf.all.arp_ignore': 1,
    'net.ipv4.conf.all.arp_announce': 2,
    'net.core.somaxconn': 4096,
    'net.ipv4.ip_local_port_range': '1024 65000',
    'net.ipv4.tcp_tw_reuse': 1,
    ...LOOSE_RP,
  });
  ipBatch(
    h.netns,
    backendVips(p, h).map(
      (v) => `addr replace ${v.address}/${v.family === 4 ? 32 : 128} dev lo${v.family === 6 ? ' nodad' : ''}`,
    ),
  );
  startBackendNginx(p, h, log);
}

/** Starts the backend's nginx unless it already runs (also used by fault scenarios to restart it). */
export function startBackendNginx(p: Plan, h: Host, log: Log = quiet): void {
  const dir = join(p.stateDir, h.name);
  if (pidInNs(join(dir, 'nginx.pid'), h.netns)) return;
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, renderBackendNginx({ name: h.name, port: p.backendPort, dir }));
  runIn(h.netns, 'nginx', ['-c', conf, '-p', dir, '-e', join(dir, 'nginx-error.log')]);
  log(`${h.name}: nginx started`);
}

/** Stops the backend's nginx (fault scenarios): SIGKILL to master and worker. */
export function killBackendNginx(h: Host): void {
  for (const pid of nsPids(h.netns)) if (procName(pid) === 'nginx') signalPid(pid, 'SIGKILL');
}

/** Brings the testbed up; every step checks what exists first, so a second `up` is a no-op. */
export function up(p: Plan, log: Log = quiet, o: UpOptions = {}): void {
  checkTools(p);
  mkdirSync(p.stateDir, { recursive: true });
  writeFileSync(join(p.stateDir, 'plan.json'), JSON.stringify(p, null, 2));
  ensureSharedBpffs(p.bpffsMount);
  mkdirSync(p.bpffsDir, { recursive: true });
  for (const h of allHosts(p)) ensureNamespace(h);
  for (const h of [...p.clients, ...p.lbs, ...p.backends]) ensureLink(p, h);
  log(`namespaces and links: ${allHosts(p).length} hosts`);
  for (const h of p.clients) setupClient(h);
  for (const h of p.lbs) setupLb(h);
  for (const h of p.backends) setupBackend(p, h, log);
  setupRouter(p, log, o);
  log(`testbed ${p.prefix} is up`);
}

/** Namespaces `down` removes: the plan's, the saved plan's, and any leftover with this prefix's host names. */
export function ownedNamespaces(p: Plan): string[] {
  const names = new Set(allHosts(p).map((h) => h.netns));
  const saved = join(p.stateDir, 'plan.json');
  if (existsSync(saved)) {
    try {
      for (const h of allHosts(JSON.parse(readFileSync(saved, 'utf8')) as Plan)) names.add(h.netns);
    } catch {
      // A torn plan.json (crash while writing): the pattern sweep below still finds the namespaces.
    }
  }
  const pat = ownedNamespacePattern(p.prefix);
  for (const n of listNamespaces()) if (pat.test(n)) names.add(n);
  return [...names].filter((n) => nsExists(n));
}

/** Removes everything this testbed instance created, by name: processes in its namespaces, namespaces, state, pins. */
export async function down(p: Plan, log: Log = quiet): Promise<{ removed: string[]; leftovers: string[] }> {
  const namespaces = ownedNamespaces(p);
  const pids = namespaces.flatMap((n) => nsPids(n));
  for (const pid of pids) signal(pid, 'SIGTERM');
  for (let i = 0; i < 30 && pids.some(alive); i++) await sleep(100);
  for (const pid of pids.filter(alive)) signal(pid, 'SIGKILL');
  for (let i = 0; i < 20 && pids.some(alive); i++) await sleep(50);
  for (const n of namespaces) run('ip', ['netns', 'del', n], { allowFail: true });
  rmSync(p.stateDir, { recursive: true, force: true });
  rmSync(p.bpffsDir, { recursive: true, force: true });
  const leftovers = ownedNamespaces(p);
  log(`testbed ${p.prefix}: removed ${namespaces.length} namespaces, ${pids.length} processes`);
  return { removed: namespaces, leftovers };
}

function alive(pid: number): boolean {
  return pidAlive(pid);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  signalPid(pid, sig); // false: already gone
}

export interface BgpSession {
  peer: string;
  state: string;
}

/** BGP sessions as the router sees them. */
export function bgpSessions(p: Plan): BgpSession[] {
  if (p.routerDaemon === 'bird') {
    const out = run('birdc', ['-s', join(p.stateDir, 'bird.ctl'), 'show', 'protocols'], { allowFail: true });
    return out
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1] === 'BGP')
      .map((f) => ({ peer: f[0]!, state: f.slice(5).join(' ') || f[3]! }));
  }
  const dir = join(p.stateDir, 'frr');
  const out = run('vtysh', ['--vty_socket', dir, '-c', 'show bgp neighbors json'], { allowFail: true });
  if (!out) return [];
  const j = JSON.parse(out) as Record<string, { bgpState?: string }>;
  return Object.entries(j).map(([peer, v]) => ({ peer, state: v.bgpState ?? '?' }));
}

/** Next hops of the router's FIB route for an address (ECMP: several). */
export function fibNextHops(p: Plan, address: string): string[] {
  const fam = address.includes(':') ? '-6' : '-4';
  const out = run('ip', ['-n', p.router.netns, fam, '-j', 'route', 'show', 'exact', address], {
    allowFail: true,
  });
  if (!out.trim()) return [];
  const routes = JSON.parse(out) as { gateway?: string; nexthops?: { gateway?: string }[] }[];
  return routes.flatMap((r) =>
    r.nexthops ? r.nexthops.map((n) => n.gateway ?? '?') : r.gateway ? [r.gateway] : [],
  );
}

/** Human-readable status; also returns whether every namespace exists. */
export function status(p: Plan): { text: string; complete: boolean } {
  const lines: string[] = [`testbed ${p.prefix} (router: ${p.routerDaemon}, state ${p.stateDir})`];
  let complete = true;
  for (const h of allHosts(p)) {
    if (!nsExists(h.netns)) {
      complete = false;
      lines.push(`  ${h.name.padEnd(8)} ${h.netns.padEnd(16)} MISSING`);
      continue;
    }
    const procs = [...new Set(nsPids(h.netns).map(procName))].join(',') || '-';
    const addr = h.link ? `${h.link.hostV4.address} ${h.link.hostV6.address}` : '';
    lines.push(`  ${h.name.padEnd(8)} ${h.netns.padEnd(16)} ${addr.padEnd(28)} procs: ${procs}`);
  }
  if (nsExists(p.router.netns)) {
    lines.push('  BGP sessions (router):');
    for (const s of bgpSessions(p)) lines.push(`    ${s.peer.padEnd(12)} ${s.state}`);
    for (const v of p.vips)
      lines.push(`  route ${v.address}: ${fibNextHops(p, v.address).join(' ') || '(none)'}`);
  }
  return { text: lines.join('\n'), complete };
}
