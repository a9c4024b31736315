// VIP blackhole routes on the real kernel, without XDP (what a node does while the balancer is detached):
// client --- router --- lb (ip_forward=1, default route back to the router). Without a route, a packet for a VIP loops
// between the two until its TTL runs out (ICMP time-exceeded); with ours (in the interface's own table, looked up
// by the rule `iif IF lookup TABLE priority 32000`) it is dropped silently, while a process on the LB connecting
// to the VIP still goes out through main (the old main-table routes made its connect() fail with EINVAL, also
// behind an OUTPUT DNAT as kube-proxy does). Ours are found and removed by table, rule priority, proto and
// per-interface metric only; a VIP that is also a local address is still delivered locally; routes and rules
// removed by hand come back; routes of the old scheme (main table) are removed at start.
import { execFileSync } from 'node:child_process';
import pino from 'pino';
import { Writable } from 'node:stream';
import {
  listOldVipRoutes,
  listVipRoutes,
  listVipRules,
  listVipState,
  removeVipRoutes,
  VIP_ROUTE_PROTO,
  VIP_RULE_PRIORITY,
  VipRouteKeeper,
  vipRouteMetric,
  vipRouteTable,
} from '../../src/daemon/vip-routes';
import { waitUntil } from '../helpers/daemon-lab';
import { run, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const VIP = '10.0.0.10';
const FOREIGN = '10.0.0.11';
const LOCAL = '10.0.0.12';
const VIP6 = '2001:db8:100::10';
/** Where the LB's OUTPUT DNAT sends its connections to VIP:DNAT_PORT (the client: nothing listens, RST). */
const DNAT_PORT = 9;

describePrivileged('VIP blackhole routes (real kernel, no XDP)', () => {
  const id = uniqueSuffix();
  const client = `pkvr${id}c`;
  const router = `pkvr${id}r`;
  const lb = `pkvr${id}l`;
  const made: string[] = [];
  const logs: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString());
        cb();
      },
    }),
  );
  const keepers: VipRouteKeeper[] = [];
  const keeper = (ifname: string, recheckMs?: number): VipRouteKeeper => {
    const k = new VipRouteKeeper({ ifname, netns: lb, log, recheckMs });
    keepers.push(k);
    return k;
  };
  const ns = (n: string, args: string[], allowFail = false) =>
    run('ip', ['netns', 'exec', n, ...args], { allowFail });
  const t0 = vipRouteTable('eth0');
  const t1 = vipRouteTable('eth1');
  const m0 = vipRouteMetric('eth0');
  const m1 = vipRouteMetric('eth1');
  /** Every proto-252 route in the LB namespace, any table, as "dst table metric". */
  const ours = (): string[] =>
    ['-4', '-6'].flatMap((f) =>
      (
        JSON.parse(
          run('ip', [
            '-n',
            lb,
            '-N',
            '-j',
            f,
            'route',
            'show',
            'table',
            'all',
            'proto',
            String(VIP_ROUTE_PROTO),
          ]),
        ) as { dst: string; table?: string; metric: number }[]
      ).map((r) => `${r.dst} ${r.table ?? 'main'} ${r.metric}`),
    );
  /** Every rule at our priority in the LB namespace as "family iif table". */
  const rules = (): string[] =>
    ['-4', '-6'].flatMap((f) =>
      (
        JSON.parse(
          run('ip', ['-n', lb, '-N', '-j', f, 'rule', 'show', 'priority', String(VIP_RULE_PRIORITY)]),
        ) as { iif: string; table: string }[]
      ).map((r) => `${f} ${r.iif} ${r.table}`),
    );
  const bothRules = (ifname: string, table: number) => [`-4 ${ifname} ${table}`, `-6 ${ifname} ${table}`];
  /** One ping from the client to `addr`: the reply, or what came back instead. */
  const ping = (addr: string): string => {
    let out: string;
    try {
      out = execFileSync('ip', ['netns', 'exec', client, 'ping', '-c', '1', '-W', '1', addr], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? ''); // ping exits 1 without a reply
    }
    if (/1 received/.test(out)) return 'reply';
    if (/Time to live exceeded/i.test(out)) return 'ttl-exceeded';
    return 'nothing';
  };
  /** A TCP connect() from a process on the LB: 'connected', the error code (EINVAL, ECONNREFUSED), 'timeout'. */
  const connectFromLb = (host: string, port: number): string =>
    ns(lb, [
      process.execPath,
      '-e',
      `const s = require('node:net').connect({ host: ${JSON.stringify(host)}, port: ${port} });
       s.on('connect', () => { console.log('connected'); process.exit(0); });
       s.on('error', (e) => { console.log(e.code); process.exit(0); });
       setTimeout(() => { console.log('timeout'); process.exit(0); }, 1500);`,
    ]).trim();
  /** `ip route get` in the LB namespace: the route, or the kernel's refusal (a blackhole answers EINVAL). */
  const routeGet = (args: string[]): string => {
    try {
      return run('ip', ['-n', lb, ...args]).trim();
    } catch (e) {
      return /Invalid argument/.test((e as Error).message) ? 'EINVAL' : (e as Error).message;
    }
  };
  /** How a VIP packet arriving from the router on eth0 is routed, IPv4 and IPv6. */
  const arriving = (): string[] => [
    routeGet(['route', 'get', VIP, 'iif', 'eth0', 'from', '10.9.0.1']),
    routeGet(['-6', 'route', 'get', VIP6, 'iif', 'eth0', 'from', '2001:db8:9::1']),
  ];
  const forwardCounters = () => {
    const t = ns(lb, ['nstat', '-asz', 'IpForwDatagrams', 'IcmpOutTimeExcds']);
    const n = (k: string) => Number(new RegExp(`${k}\\s+(\\d+)`).exec(t)?.[1] ?? 0);
    return { forwarded: n('IpForwDatagrams'), timeExceeded: n('IcmpOutTimeExcds') };
  };

  beforeAll(() => {
    for (const n of [client, router, lb]) {
      run('ip', ['netns', 'add', n]);
      made.push(n);
      run('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    run('ip', ['link', 'add', 'eth0', 'netns', lb, 'type', 'veth', 'peer', 'name', 'rl', 'netns', router]);
    run('ip', ['-n', lb, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p']);
    run('ip', [
      'link',
      'add',
      'eth0',
      'netns',
      client,
      'type',
      'veth',
      'peer',
      'name',
      'rc',
      'netns',
      router,
    ]);
    run('ip', ['-n', client, 'addr', 'add', '10.8.0.2/24', 'dev', 'eth0']);
    run('ip', ['-n', router, 'addr', 'add', '10.8.0.1/24', 'dev', 'rc']);
    run('ip', ['-n', lb, 'addr', 'add', '10.9.0.2/24', 'dev', 'eth0']);
    run('ip', ['-n', router, 'addr', 'add', '10.9.0.1/24', 'dev', 'rl']);
    run('ip', ['-n', lb, 'addr', 'add', '2001:db8:9::2/64', 'dev', 'eth0', 'nodad']);
    run('ip', ['-n', router, 'addr', 'add', '2001:db8:9::1/64', 'dev', 'rl', 'nodad']);
    for (const [n, d] of [
      [lb, 'eth0'],
      [router, 'rl'],
      [client, 'eth0'],
      [router, 'rc'],
    ] as const)
      run('ip', ['-n', n, 'link', 'set', 'dev', d, 'up']);
    run('ip', ['-n', lb, 'route', 'add', 'default', 'via', '10.9.0.1']);
    run('ip', ['-n', lb, '-6', 'route', 'add', 'default', 'via', '2001:db8:9::1']);
    run('ip', ['-n', client, 'route', 'add', 'default', 'via', '10.8.0.1']);
    for (const a of [VIP, FOREIGN, LOCAL])
      run('ip', ['-n', router, 'route', 'add', `${a}/32`, 'via', '10.9.0.2']);
    // An LB node forwards (Kubernetes nodes always do); the router too.
    for (const n of [router, lb])
      ns(n, [
        'sysctl',
        '-qw',
        'net.ipv4.ip_forward=1',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv6.conf.all.forwarding=1',
      ]);
    // Someone else's route for FOREIGN's /32 (say, a static one): it is left alone.
    run('ip', ['-n', lb, 'route', 'add', `${FOREIGN}/32`, 'via', '10.9.0.1']);
    run('ip', ['-n', lb, 'addr', 'add', `${LOCAL}/32`, 'dev', 'lo']);
    // What kube-proxy does for a LoadBalancer IP, for processes of the node: DNAT in OUTPUT (after the route
    // lookup). Here to the client, where nothing listens: a connect() that got out is refused (RST).
    ns(lb, ['nft', 'add', 'table', 'ip', 'pkvrdnat']);
    ns(lb, ['nft', 'add', 'chain', 'ip', 'pkvrdnat', 'out', '{ type nat hook output priority -100 ; }']);
    ns(lb, ['nft', 'add', 'rule', 'ip', 'pkvrdnat', 'out', 'ip', 'daddr', VIP, 'tcp', 'dport', String(DNAT_PORT), 'dnat', 'to', '10.8.0.2']); // prettier-ignore
  });

  afterAll(async () => {
    for (const k of keepers) await k.stop();
    for (const n of made) run('ip', ['netns', 'del', n], { allowFail: true });
  });

  it('contrast: without a route a VIP packet loops until its TTL runs out; an old main-table route fails a local connect() with EINVAL', () => {
    expect(ping(VIP)).toBe('ttl-exceeded');
    expect(connectFromLb(VIP, DNAT_PORT)).toBe('ECONNREFUSED');
    expect(arriving()).toEqual([
      expect.stringMatching(/^10\.0\.0\.10 from 10\.9\.0\.1 via 10\.9\.0\.1 dev eth0/),
      expect.stringMatching(/^2001:db8:100::10 from 2001:db8:9::1 via 2001:db8:9::1 dev eth0/),
    ]);
    // Routes of the previous scheme (main table, proto 252, the interface's metric), as an upgraded node has
    // them: eth0's, and one of eth1's (another daemon's, left to it).
    for (const a of [VIP, VIP6])
      run('ip', ['-n', lb, 'route', 'add', 'blackhole', a, 'proto', '252', 'metric', String(m0)]);
    run('ip', ['-n', lb, 'route', 'add', 'blackhole', '10.0.0.30', 'proto', '252', 'metric', String(m1)]);
    expect(ping(VIP)).toBe('nothing');
    // The route lookup of a locally originated packet comes before the DNAT: it hits the blackhole.
    expect(connectFromLb(VIP, DNAT_PORT)).toBe('EINVAL');
    expect(ours().sort()).toEqual([`${VIP} main ${m0}`, `10.0.0.30 main ${m1}`, `${VIP6} main ${m0}`].sort());
  });

  it('routes in the interface table plus one rule: a VIP packet from the interface is dropped silently, a local connect() goes out', async () => {
    const k = keeper('eth0');
    k.set([VIP, FOREIGN, LOCAL, VIP6], true);
    await k.idle();
    // The old-scheme routes of eth0 are gone (eth1's stays: not ours); ours are in table t0.
    expect(ours().sort()).toEqual(
      [
        `10.0.0.30 main ${m1}`,
        `${FOREIGN} ${t0} ${m0}`,
        `${LOCAL} ${t0} ${m0}`,
        `${VIP} ${t0} ${m0}`,
        `${VIP6} ${t0} ${m0}`,
      ].sort(),
    );
    expect(logs.join('')).toContain('VIP blackhole routes of the previous scheme (main table) removed');
    expect(rules().sort()).toEqual(bothRules('eth0', t0));
    expect((await listVipRoutes('eth0', lb)).sort()).toEqual([FOREIGN, LOCAL, VIP, VIP6].sort());
    expect(k.status()).toMatchObject({
      enabled: true,
      proto: 252,
      metric: m0,
      table: t0,
      rule: { priority: VIP_RULE_PRIORITY, iif: 'eth0', families: ['ipv4', 'ipv6'] },
      routes: [FOREIGN, LOCAL, VIP, VIP6].sort(),
      error: null,
    });
    expect(t0).toBeGreaterThanOrEqual(0x70000000);

    // (1) A VIP packet that came in on the interface: dropped, neither forwarded nor answered.
    const before = forwardCounters();
    expect(ping(VIP)).toBe('nothing');
    expect(forwardCounters()).toEqual(before);
    // The lookup for it ends at our blackhole (the kernel answers `ip route get` for one with EINVAL; without
    // our routes the same lookups go via the router, see the first and last tests).
    expect(arriving()).toEqual(['EINVAL', 'EINVAL']);

    // (2) A process on the LB: main, unicast via the router; connect() works, also behind the OUTPUT DNAT.
    expect(run('ip', ['-n', lb, 'route', 'get', VIP])).toMatch(/^10\.0\.0\.10 via 10\.9\.0\.1 dev eth0/);
    expect(run('ip', ['-n', lb, '-6', 'route', 'get', VIP6])).toMatch(
      /^2001:db8:100::10 from :: via 2001:db8:9::1 dev eth0/,
    );
    expect(connectFromLb(VIP, DNAT_PORT)).toBe('ECONNREFUSED');
    // Without the DNAT the SYN goes out; the router sends it back in on eth0, where it is dropped: a timeout.
    expect(connectFromLb(VIP, DNAT_PORT + 1)).toBe('timeout');
    // Other destinations arriving on the interface: the table has no route, the lookup goes on to main.
    expect(run('ip', ['-n', lb, 'route', 'get', '10.8.0.2', 'iif', 'eth0', 'from', '10.9.0.1'])).toMatch(
      /^10\.8\.0\.2 from 10\.9\.0\.1 via 10\.9\.0\.1 dev eth0/,
    );

    // (3) A VIP that is also an address of the node: the local rule comes first, it is delivered locally.
    expect(ping(LOCAL)).toBe('reply');
    expect(run('ip', ['-n', lb, 'route', 'get', LOCAL])).toMatch(/^local /);
    // Someone else's /32 for an address of ours: left alone, and still what the node's own traffic takes.
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
    expect(run('ip', ['-n', lb, 'route', 'get', FOREIGN])).toMatch(/via 10\.9\.0\.1/);
  });

  it('each interface keeps its own table and rule; a route or rule removed by hand comes back; disabled removes ours only', async () => {
    const k0 = keepers[0]!;
    const k1 = keeper('eth1', 200);
    k1.set([VIP, '10.0.0.20'], true);
    await k1.idle();
    // eth1's keeper removed eth1's old-scheme route; eth0's routes and rule are untouched.
    expect(ours()).toEqual(
      expect.arrayContaining([`${VIP} ${t0} ${m0}`, `${VIP} ${t1} ${m1}`, `10.0.0.20 ${t1} ${m1}`]),
    );
    expect(ours().filter((r) => r.includes(' main '))).toEqual([]);
    expect(rules().sort()).toEqual([...bothRules('eth0', t0), ...bothRules('eth1', t1)].sort());
    // eth0's set shrinks: eth1's routes for the same address stay.
    k0.set([VIP], true);
    await k0.idle();
    expect(ours().sort()).toEqual(
      [`${VIP} ${t0} ${m0}`, `${VIP} ${t1} ${m1}`, `10.0.0.20 ${t1} ${m1}`].sort(),
    );

    run('ip', ['-n', lb, 'route', 'del', 'blackhole', '10.0.0.20/32', 'table', String(t1)]);
    run('ip', ['-n', lb, '-6', 'rule', 'del', 'priority', String(VIP_RULE_PRIORITY), 'iif', 'eth1']);
    expect(ours()).not.toContain(`10.0.0.20 ${t1} ${m1}`);
    expect(rules()).not.toContain(`-6 eth1 ${t1}`);
    const back = await waitUntil(
      () => ours().includes(`10.0.0.20 ${t1} ${m1}`) && rules().includes(`-6 eth1 ${t1}`),
      { timeoutMs: 5000, intervalMs: 50 },
    );
    expect(back).not.toBeNull();
    await k1.idle(); // the pass that put them back logs after its last `ip`
    expect(logs.join('')).toContain('VIP blackhole routes were gone (removed by someone else); added again');

    k1.set([VIP, '10.0.0.20'], false);
    await k1.idle();
    expect(ours()).toEqual([`${VIP} ${t0} ${m0}`]);
    expect(rules().sort()).toEqual(bothRules('eth0', t0));
    expect(k1.status()).toMatchObject({ enabled: false, routes: [], rule: { families: [] } });
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
  });

  it("a keeper's pass reads routes, old-scheme routes and rules in one `ip -batch` per family, as the separate lists read them", async () => {
    // An old-scheme route of eth0 in main beside the keepers' routes and rules of the tests before.
    run('ip', ['-n', lb, 'route', 'add', 'blackhole', '10.0.0.30', 'proto', '252', 'metric', String(m0)]);
    try {
      for (const ifname of ['eth0', 'eth1']) {
        const separate = {
          routes: await listVipRoutes(ifname, lb),
          old: await listOldVipRoutes(ifname, lb),
          rules: await listVipRules(ifname, lb),
        };
        expect(await listVipState(ifname, lb, true)).toEqual({ ...separate, batched: true });
        expect(await listVipState(ifname, lb, false)).toEqual({ ...separate, old: [], batched: true });
      }
      expect((await listVipState('eth0', lb, true)).old).toEqual(['10.0.0.30']);
      expect((await listVipState('eth0', lb, true)).routes.length).toBeGreaterThan(0);
      // An interface with nothing of ours: empty lists, both families supported, still one batch each.
      expect(await listVipState('eth9', lb, true)).toEqual({
        routes: [],
        old: [],
        rules: { present: [], supported: ['ipv4', 'ipv6'] },
        batched: true,
      });
    } finally {
      run('ip', ['-n', lb, 'route', 'del', 'blackhole', '10.0.0.30', 'proto', '252', 'metric', String(m0)]);
    }
    // A batch that fails (no such namespace) is read again by the separate lists, whose error names the command.
    await expect(listVipState('eth0', `${lb}-missing`, true)).rejects.toThrow(
      /ip -4 route show table main proto 252/,
    );
  });

  it('removeAll and removeVipRoutes remove the rule and every route of their interface (old scheme included) and nothing else', async () => {
    await keepers[1]!.stop();
    const again = keeper('eth1');
    again.set(['10.0.0.21'], true);
    await again.idle();
    expect(ours()).toContain(`10.0.0.21 ${t1} ${m1}`);
    await again.removeAll();
    expect(ours()).toEqual([`${VIP} ${t0} ${m0}`]);
    expect(again.status()).toMatchObject({ routes: [], rule: { families: [] } });
    expect(rules().sort()).toEqual(bothRules('eth0', t0));

    // What `peak-xdp detach` runs: a leftover of the old scheme goes too.
    await keepers[0]!.stop();
    run('ip', ['-n', lb, 'route', 'add', 'blackhole', LOCAL, 'proto', '252', 'metric', String(m0)]);
    const r = await removeVipRoutes('eth0', lb);
    expect(r).toEqual({ removed: [VIP, LOCAL], rulesRemoved: ['ipv4', 'ipv6'], failures: [] });
    expect(ours()).toEqual([]);
    expect(rules()).toEqual([]);
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
    expect(ping(VIP)).toBe('ttl-exceeded');
    expect(arriving()).toEqual([
      expect.stringMatching(/ via 10\.9\.0\.1 /),
      expect.stringMatching(/ via 2001:db8:9::1 /),
    ]);
    // Nothing of ours left: a second removal finds nothing.
    expect(await removeVipRoutes('eth0', lb)).toEqual({ removed: [], rulesRemoved: [], failures: [] });
  });
});
