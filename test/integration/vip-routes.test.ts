// VIP blackhole routes on the real kernel, without XDP (what a node does while the balancer is detached):
// client --- router --- lb (ip_forward=1, default route back to the router). Without a route, a packet for a VIP loops
// between the two until its TTL runs out (ICMP time-exceeded); with ours it is dropped silently. Our routes are
// found and removed by proto + per-interface metric only; a foreign route for the same /32 wins and stays;
// a VIP that is also a local address is still delivered locally; routes removed by hand come back.
import { execFileSync } from 'node:child_process';
import pino from 'pino';
import { Writable } from 'node:stream';
import { listVipRoutes, VIP_ROUTE_PROTO, VipRouteKeeper, vipRouteMetric } from '../../src/daemon/vip-routes';
import { waitUntil } from '../helpers/daemon-lab';
import { run, uniqueSuffix } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const VIP = '10.0.0.10';
const FOREIGN = '10.0.0.11';
const LOCAL = '10.0.0.12';
const VIP6 = '2001:db8:100::10';

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
  /** Every proto-252 route in the LB namespace as "dst metric". */
  const ours = (): string[] =>
    ['-4', '-6'].flatMap((f) =>
      (
        JSON.parse(run('ip', ['-n', lb, '-j', f, 'route', 'show', 'proto', String(VIP_ROUTE_PROTO)])) as {
          dst: string;
          metric: number;
        }[]
      ).map((r) => `${r.dst} ${r.metric}`),
    );
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
    for (const [n, d] of [
      [lb, 'eth0'],
      [router, 'rl'],
      [client, 'eth0'],
      [router, 'rc'],
    ] as const)
      run('ip', ['-n', n, 'link', 'set', 'dev', d, 'up']);
    run('ip', ['-n', lb, 'route', 'add', 'default', 'via', '10.9.0.1']);
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
      ]);
    // Someone else's route for FOREIGN's /32 (say, a static one): it must win and stay.
    run('ip', ['-n', lb, 'route', 'add', `${FOREIGN}/32`, 'via', '10.9.0.1']);
    run('ip', ['-n', lb, 'addr', 'add', `${LOCAL}/32`, 'dev', 'lo']);
  });

  afterAll(async () => {
    for (const k of keepers) await k.stop();
    for (const n of made) run('ip', ['netns', 'del', n], { allowFail: true });
  });

  it('without a route a VIP packet loops until its TTL runs out; with ours it is dropped silently', async () => {
    expect(ping(VIP)).toBe('ttl-exceeded');
    const k = keeper('eth0');
    k.set([VIP, FOREIGN, LOCAL, VIP6], true);
    await k.idle();
    const m = vipRouteMetric('eth0');
    expect(ours().sort()).toEqual([`${FOREIGN} ${m}`, `${LOCAL} ${m}`, `${VIP} ${m}`, `${VIP6} ${m}`].sort());
    expect((await listVipRoutes('eth0', lb)).sort()).toEqual([FOREIGN, LOCAL, VIP, VIP6].sort());
    expect(k.status()).toMatchObject({ enabled: true, proto: 252, metric: m, error: null });
    const before = ns(lb, ['nstat', '-asz', 'IpForwDatagrams', 'IcmpOutTimeExcds']);
    expect(ping(VIP)).toBe('nothing');
    const after = ns(lb, ['nstat', '-asz', 'IpForwDatagrams', 'IcmpOutTimeExcds']);
    const n = (t: string, k2: string) => Number(new RegExp(`${k2}\\s+(\\d+)`).exec(t)?.[1] ?? 0);
    expect(n(after, 'IpForwDatagrams')).toBe(n(before, 'IpForwDatagrams'));
    expect(n(after, 'IcmpOutTimeExcds')).toBe(n(before, 'IcmpOutTimeExcds'));
    // A VIP that is also an address of the node: the local table wins, it is delivered locally.
    expect(ping(LOCAL)).toBe('reply');
    expect(run('ip', ['-n', lb, 'route', 'get', LOCAL])).toMatch(/^local /);
    // Someone else's /32 for the same address wins (its metric is lower) and was not replaced.
    expect(run('ip', ['-n', lb, 'route', 'get', FOREIGN])).toMatch(/via 10\.9\.0\.1/);
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
  });

  it('each interface keeps its own routes; a route removed by hand comes back; disabled removes ours only', async () => {
    const k0 = keepers[0]!;
    const k1 = keeper('eth1', 200);
    k1.set([VIP, '10.0.0.20'], true);
    await k1.idle();
    const m0 = vipRouteMetric('eth0');
    const m1 = vipRouteMetric('eth1');
    expect(ours()).toEqual(expect.arrayContaining([`${VIP} ${m0}`, `${VIP} ${m1}`, `10.0.0.20 ${m1}`]));
    // eth0's set shrinks: eth1's routes for the same address stay.
    k0.set([VIP], true);
    await k0.idle();
    expect(ours().sort()).toEqual([`${VIP} ${m0}`, `${VIP} ${m1}`, `10.0.0.20 ${m1}`].sort());

    run('ip', ['-n', lb, 'route', 'del', 'blackhole', '10.0.0.20/32', 'proto', '252', 'metric', String(m1)]);
    expect(ours()).not.toContain(`10.0.0.20 ${m1}`);
    const back = await waitUntil(() => ours().includes(`10.0.0.20 ${m1}`), {
      timeoutMs: 5000,
      intervalMs: 50,
    });
    expect(back).not.toBeNull();
    expect(logs.join('')).toContain('VIP blackhole routes were gone (removed by someone else); added again');

    k1.set([VIP, '10.0.0.20'], false);
    await k1.idle();
    expect(ours()).toEqual([`${VIP} ${m0}`]);
    expect(k1.status()).toMatchObject({ enabled: false, routes: [] });
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
  });

  it('removeAll removes every route of its interface and nothing else', async () => {
    const k1 = keepers[1]!;
    const again = keeper('eth1');
    again.set(['10.0.0.21'], true);
    await again.idle();
    await k1.stop();
    await again.removeAll();
    expect(ours()).toEqual([`${VIP} ${vipRouteMetric('eth0')}`]);
    await keepers[0]!.removeAll();
    expect(ours()).toEqual([]);
    expect(run('ip', ['-n', lb, 'route', 'show', `${FOREIGN}/32`])).toMatch(/via 10\.9\.0\.1/);
    expect(ping(VIP)).toBe('ttl-exceeded');
  });
});
