// The systems compared on the testbed: peak-xdp, nftables DNAT, nginx and HAProxy proxies, direct, DNS round-robin.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Host, Plan } from '../../testbed/plan';
import { run, runIn, sleep, waitFor } from '../../testbed/sh';
import { fibNextHops, nsPids } from '../../testbed/topology';
import { innerVip, lbPinRoot, serviceVip, vipBackends } from '../../testbed/plan';
import {
  attachDecap,
  daemonLogTail,
  daemonPids,
  detachXdpIn,
  peakUnavailable,
  startDaemon,
  stopDaemon,
} from '../../testbed/peak';
import type { Target } from './loadgen';
import { signalPid } from '../../lib/pids';

export type SystemName = 'peak-xdp' | 'nft-dnat' | 'nginx' | 'haproxy' | 'direct' | 'dns-rr';
export const ALL_SYSTEMS: readonly SystemName[] = [
  'peak-xdp',
  'nft-dnat',
  'nginx',
  'haproxy',
  'direct',
  'dns-rr',
];

/** What a system runs on: the active LB nodes and backends, and the address family of the VIP. */
export interface Deployment {
  plan: Plan;
  lbs: Host[];
  backends: Host[];
  family: 4 | 6;
}

export interface BenchSystem {
  name: SystemName;
  /** Uses LB nodes (so LB-count scaling and LB faults apply). */
  usesLbs: boolean;
  /** null when it can run here, else why not. */
  unavailable(): string | null;
  setup(d: Deployment): Promise<void>;
  teardown(d: Deployment): Promise<void>;
  targets(d: Deployment): Target[];
  /** Where an inner-service call from `caller` (a backend) goes; default: targets(d). */
  innerTargets?(d: Deployment, caller: Host): Target[];
  /** Takes one LB node out of (or back into) service the way this system would. */
  setLbMembership?(d: Deployment, active: Host[]): Promise<void>;
}

const addrOf = (h: Host, f: 4 | 6): string => (f === 4 ? h.link!.hostV4.address : h.link!.hostV6.address);
const hostPart = (a: string): string => (a.includes(':') ? `[${a}]` : a);

/** Static ECMP route at the router for a comparison VIP over the given LB nodes (replaced atomically). */
export function setStaticVipRoute(p: Plan, vip: string, lbs: Host[]): void {
  const f: 4 | 6 = vip.includes(':') ? 6 : 4;
  const len = f === 4 ? 32 : 128;
  if (lbs.length === 0) {
    run('ip', ['-n', p.router.netns, `-${f}`, 'route', 'del', `${vip}/${len}`], { allowFail: true });
    return;
  }
  const hops = lbs.flatMap((lb) => ['nexthop', 'via', addrOf(lb, f), 'dev', lb.link!.routerIf]);
  run('ip', ['-n', p.router.netns, `-${f}`, 'route', 'replace', `${vip}/${len}`, 'proto', 'static', ...hops]);
}

/** nftables DNAT + masquerade on an LB (kube-proxy style: random backend, replies come back through the LB). */
export function renderNft(o: { vip: string; port: number; backends: string[] }): string {
  const f = o.vip.includes(':') ? 'ip6' : 'ip';
  const map = o.backends.map((b, i) => `${i} : ${b}`).join(', ');
  return [
    'table inet peakbench {',
    '  chain pre {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    ${f} daddr ${o.vip} tcp dport ${o.port} dnat ${f} to numgen random mod ${o.backends.length} map { ${map} } : ${o.port}`,
    '  }',
    '  chain post {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    '    ct status dnat masquerade',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** nginx as an L7 proxy on an LB: one worker, keep-alive upstream pool. */
export function renderNginxProxy(o: { vip: string; port: number; backends: string[]; dir: string }): string {
  return [
    'worker_processes 1;',
    'daemon on;',
    `pid ${o.dir}/nginx-proxy.pid;`,
    `error_log ${o.dir}/nginx-proxy-error.log warn;`,
    'events { worker_connections 16384; }',
    'http {',
    '  access_log off;',
    '  keepalive_requests 1000000;',
    `  proxy_temp_path ${o.dir}/tmp; client_body_temp_path ${o.dir}/tmp;`,
    `  fastcgi_temp_path ${o.dir}/tmp; uwsgi_temp_path ${o.dir}/tmp; scgi_temp_path ${o.dir}/tmp;`,
    `  upstream backends { ${o.backends.map((b) => `server ${hostPart(b)}:${o.port} max_fails=1 fail_timeout=2s;`).join(' ')} keepalive 64; }`,
    '  server {',
    `    listen ${hostPart(o.vip)}:${o.port} backlog=4096;`,
    '    location / {',
    '      proxy_pass http://backends;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      proxy_connect_timeout 1s;',
    '      proxy_next_upstream error timeout;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** HAProxy as an L7 proxy on an LB: one thread, round robin, active health checks. */
export function renderHaproxy(o: { vip: string; port: number; backends: string[]; dir: string }): string {
  return [
    'global',
    '  nbthread 1',
    '  maxconn 8000',
    `  pidfile ${o.dir}/haproxy.pid`,
    'defaults',
    '  mode http',
    '  timeout connect 1s',
    '  timeout client 30s',
    '  timeout server 30s',
    '  option http-keep-alive',
    '  retries 1',
    '  option redispatch',
    'frontend fe',
    `  bind ${hostPart(o.vip)}:${o.port}`,
    '  default_backend be',
    'backend be',
    '  balance roundrobin',
    ...o.backends.map((b, i) => `  server b${i} ${hostPart(b)}:${o.port} check inter 500 fall 2 rise 2`),
    '',
  ].join('\n');
}

function vipAddrOnLo(lb: Host, vip: string, add: boolean): void {
  const len = vip.includes(':') ? 128 : 32;
  runIn(lb.netns, 'ip', ['addr', add ? 'replace' : 'del', `${vip}/${len}`, 'dev', 'lo'], { allowFail: !add });
}

function killByName(h: Host, comm: string): void {
  for (const pid of nsPids(h.netns)) {
    let name = '';
    try {
      name = run('cat', [`/proc/${pid}/comm`]).trim();
    } catch {
      continue;
    }
    if (name === comm) {
      try {
        signalPid(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  }
}

/** A VIP held by an LB-based comparison system; routed by a static ECMP route at the router. */
function lbSystem(o: {
  name: SystemName;
  key: 'nft' | 'nginx' | 'haproxy';
  startOn(d: Deployment, lb: Host, vip: string, backends: string[]): void;
  stopOn(d: Deployment, lb: Host, vip: string): void;
  tool: string;
}): BenchSystem {
  const vipFor = (d: Deployment): string => d.plan.comparisonVips[o.key][d.family === 4 ? 'v4' : 'v6'];
  return {
    name: o.name,
    usesLbs: true,
    unavailable: () =>
      run('sh', ['-c', `command -v ${o.tool}`], { allowFail: true }).trim()
        ? null
        : `${o.tool} is not installed`,
    async setup(d) {
      const vip = vipFor(d);
      const bes = d.backends.map((b) => addrOf(b, d.family));
      for (const lb of d.lbs) o.startOn(d, lb, vip, bes);
      setStaticVipRoute(d.plan, vip, d.lbs);
      await sleep(300);
    },
    async teardown(d) {
      const vip = vipFor(d);
      setStaticVipRoute(d.plan, vip, []);
      for (const lb of d.plan.lbs) o.stopOn(d, lb, vip);
    },
    targets: (d) => [{ host: vipFor(d), port: d.plan.backendPort }],
    async setLbMembership(d, active) {
      setStaticVipRoute(d.plan, vipFor(d), active);
    },
  };
}

const nftSystem = lbSystem({
  name: 'nft-dnat',
  key: 'nft',
  tool: 'nft',
  startOn(d, lb, vip, backends) {
    runIn(lb.netns, 'nft', ['delete', 'table', 'inet', 'peakbench'], { allowFail: true });
    runIn(lb.netns, 'nft', ['-f', '-'], { input: renderNft({ vip, port: d.plan.backendPort, backends }) });
  },
  stopOn(_d, lb) {
    runIn(lb.netns, 'nft', ['delete', 'table', 'inet', 'peakbench'], { allowFail: true });
  },
});

const nginxSystem = lbSystem({
  name: 'nginx',
  key: 'nginx',
  tool: 'nginx',
  startOn(d, lb, vip, backends) {
    const dir = join(d.plan.stateDir, lb.name);
    mkdirSync(join(dir, 'tmp'), { recursive: true });
    const conf = join(dir, 'nginx-proxy.conf');
    writeFileSync(conf, renderNginxProxy({ vip, port: d.plan.backendPort, backends, dir }));
    vipAddrOnLo(lb, vip, true);
    killByName(lb, 'nginx');
    runIn(lb.netns, 'nginx', ['-c', conf, '-p', dir, '-e', join(dir, 'nginx-proxy-error.log')]);
  },
  stopOn(_d, lb, vip) {
    killByName(lb, 'nginx');
    vipAddrOnLo(lb, vip, false);
  },
});

const haproxySystem = lbSystem({
  name: 'haproxy',
  key: 'haproxy',
  tool: 'haproxy',
  startOn(d, lb, vip, backends) {
    const dir = join(d.plan.stateDir, lb.name);
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'haproxy.cfg');
    writeFileSync(conf, renderHaproxy({ vip, port: d.plan.backendPort, backends, dir }));
    vipAddrOnLo(lb, vip, true);
    killByName(lb, 'haproxy');
    runIn(lb.netns, 'haproxy', ['-D', '-f', conf]);
  },
  stopOn(_d, lb, vip) {
    killByName(lb, 'haproxy');
    vipAddrOnLo(lb, vip, false);
  },
});

const directSystem: BenchSystem = {
  name: 'direct',
  usesLbs: false,
  unavailable: () => null,
  async setup() {},
  async teardown() {},
  targets: (d) => [{ host: addrOf(d.backends[0]!, d.family), port: d.plan.backendPort }],
};

/** DNS round-robin, simulated in the client: each new connection picks one of the backends' records at random. */
const dnsRrSystem: BenchSystem = {
  name: 'dns-rr',
  usesLbs: false,
  unavailable: () => null,
  async setup() {},
  async teardown() {},
  targets: (d) => d.backends.map((b) => ({ host: addrOf(b, d.family), port: d.plan.backendPort })),
  // A caller resolving the service name gets the other backends' records.
  innerTargets: (d, caller) =>
    d.backends
      .filter((b) => b !== caller)
      .map((b) => ({ host: addrOf(b, d.family), port: d.plan.backendPort })),
};

/** peak-xdp: a daemon per LB node (XDP native, BGP to the router), decap on every backend. */
const peakSystem: BenchSystem = {
  name: 'peak-xdp',
  usesLbs: true,
  unavailable: peakUnavailable,
  async setup(d) {
    const why = peakUnavailable();
    if (why) throw new Error(why);
    for (const be of d.plan.backends) attachDecap(d.plan, be);
    for (const lb of d.lbs) startDaemon(d.plan, lb, { backends: d.backends });
    await waitPeakRoutes(d, d.lbs);
  },
  async teardown(d) {
    for (const lb of d.plan.lbs) stopDaemon(d.plan, lb, { signal: 'SIGTERM' });
    await sleep(500);
    for (const lb of d.plan.lbs) stopDaemon(d.plan, lb, { signal: 'SIGKILL' });
    for (const h of [...d.plan.lbs, ...d.plan.backends]) detachXdpIn(h);
    // The next set-up starts clean: pins left here would be adopted, connection table and all.
    for (const lb of d.plan.lbs) rmSync(lbPinRoot(d.plan, lb), { recursive: true, force: true });
  },
  targets: (d) => [{ host: serviceVip(d.plan, d.family).address, port: d.plan.backendPort }],
  innerTargets(d) {
    const inner = innerVip(d.plan, d.family);
    if (!inner) throw new Error(`testbed config has no IPv${d.family} VIP with servedBy "all-but-last"`);
    return [{ host: inner.vip.address, port: inner.vip.port }];
  },
  async setLbMembership(d, active) {
    for (const lb of d.plan.lbs) {
      const on = active.includes(lb);
      if (!on) stopDaemon(d.plan, lb, { signal: 'SIGTERM' });
      else if (daemonPids(lb).length === 0) startDaemon(d.plan, lb, { backends: d.backends });
    }
    // A stopped daemon withdraws then exits; wait for the exit so a later start is not skipped.
    const leaving = d.plan.lbs.filter((lb) => !active.includes(lb));
    await waitFor(() => leaving.every((lb) => daemonPids(lb).length === 0), { timeoutMs: 5000 });
    // The change is made when the router's ECMP set is the active nodes (a start takes ~1-2 s here).
    await waitPeakRoutes(d, active);
  },
};

/** Waits until the router routes every VIP of the family that has a backend here over exactly these LB nodes. */
async function waitPeakRoutes(d: Deployment, lbs: Host[]): Promise<void> {
  const want = lbs.map((lb) => addrOf(lb, d.family)).sort();
  const vips = d.plan.vips
    .filter((v) => v.family === d.family && vipBackends(v, d.backends).length > 0)
    .map((v) => v.address);
  const ok = await waitFor(() => vips.every((v) => sameSet(fibNextHops(d.plan, v), want)), {
    timeoutMs: 20_000,
    intervalMs: 50,
  });
  if (!ok)
    throw new Error(
      `peak-xdp: router routes ${vips.map((v) => `${v} via [${fibNextHops(d.plan, v).join(', ')}]`).join(', ')}, wanted ` +
        `[${want.join(', ')}] after 20 s\n${lbs.map((lb) => `--- ${lb.name} daemon.log\n${daemonLogTail(d.plan, lb)}`).join('\n')}`,
    );
}

function sameSet(a: string[], sortedB: string[]): boolean {
  const s = [...a].sort();
  return s.length === sortedB.length && s.every((x, i) => x === sortedB[i]);
}

const SYSTEMS: Record<SystemName, BenchSystem> = {
  'peak-xdp': peakSystem,
  'nft-dnat': nftSystem,
  nginx: nginxSystem,
  haproxy: haproxySystem,
  direct: directSystem,
  'dns-rr': dnsRrSystem,
};

/** Looks a system up by name; throws naming the value and the choices. */
export function getSystem(name: string): BenchSystem {
  const s = SYSTEMS[name as SystemName];
  if (!s) throw new Error(`unknown system "${name}" (systems: ${ALL_SYSTEMS.join(', ')})`);
  return s;
}
