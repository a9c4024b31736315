// Pure cores of the testbed and the bench (no root, no namespaces): config, plan, renderers, stats, loadgen.
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import YAML from 'yaml';
import { parseTestbedConfig, loadTestbedConfig, defaultConfigPath } from '../../scripts/testbed/config';
import { buildPlan, findHost, linkMac, ownedNamespacePattern, allHosts } from '../../scripts/testbed/plan';
import { renderBird, renderFrrBgpd, renderBackendNginx } from '../../scripts/testbed/render';
import { daemonConfig } from '../../scripts/testbed/peak';
import {
  cdf,
  histogram,
  jain,
  maxOverMean,
  parseWrk,
  quantile,
  recoveryMs,
  summarize,
} from '../../scripts/bench/lib/stats';
import { parseResponse, runLoad, checkLoadOptions, LoadOptions } from '../../scripts/bench/lib/loadgen';
import { renderHaproxy, renderNft, renderNginxProxy } from '../../scripts/bench/lib/systems';
import { parseBenchArgs, PROFILES } from '../../scripts/bench/e2e-profile';
import { reportMarkdown, BenchResults } from '../../scripts/bench/e2e-report';
import { parseConfig } from '../../src/model/config';
import { packageRoot } from '../../src/paths';

const base = {
  prefix: 'ptb',
  router: { daemon: 'bird', asn: 65000 },
  clients: 1,
  lbs: { count: 2, asnBase: 65100, mtu: 1600 },
  backends: { count: 3, port: 80, mtu: 1600 },
  addressing: { ipv4Base: '10.77', ipv6Base: 'fd77' },
  vips: [
    { name: 'web4', address: '10.200.0.1', port: 80 },
    { name: 'web6', address: 'fd00:200::1', port: 80 },
  ],
  comparisonVips: { ipv4Base: '10.201.0', ipv6Base: 'fd00:201::' },
  bpffs: '/run/peak-xdp/bpffs',
  stateDir: '/run/peak-xdp/testbed',
};

describe('testbed config', () => {
  it('accepts the shipped file and applies overrides (flag beats env beats file)', () => {
    const c = loadTestbedConfig({
      path: defaultConfigPath(packageRoot),
      env: { PEAK_TB_PREFIX: 'envp' },
      overrides: { lbs: 4 },
    });
    expect(c.prefix).toBe('envp');
    expect(c.lbs.count).toBe(4);
    const d = loadTestbedConfig({
      path: defaultConfigPath(packageRoot),
      env: { PEAK_TB_PREFIX: 'envp' },
      overrides: { prefix: 'flagp' },
    });
    expect(d.prefix).toBe('flagp');
  });
  it.each([
    ['prefix', { ...base, prefix: 'Bad-Prefix' }, 'prefix = "Bad-Prefix"'],
    ['lbs.count', { ...base, lbs: { count: 0 } }, 'lbs.count = 0'],
    [
      'vips address',
      { ...base, vips: [{ name: 'x', address: '10.1', port: 80 }] },
      'vips.0.address = "10.1"',
    ],
    ['router daemon', { ...base, router: { daemon: 'gobgp' } }, 'router.daemon = "gobgp"'],
    ['unknown key', { ...base, extra: 1 }, '(root)'],
  ])('rejects a bad %s naming field and value', (_n, raw, msg) => {
    expect(() => parseTestbedConfig(raw)).toThrow(msg);
  });
});

describe('topology plan', () => {
  const p = buildPlan(parseTestbedConfig(base));
  it('names namespaces by prefix and host, one link per host, router first', () => {
    expect(allHosts(p).map((h) => h.netns)).toEqual([
      'ptb-router', 'ptb-client1', 'ptb-lb1', 'ptb-lb2', 'ptb-be1', 'ptb-be2', 'ptb-be3',
    ]); // prettier-ignore
    expect(p.lbs.map((h) => h.asn)).toEqual([65101, 65102]);
    expect(p.lbs[0]!.link).toMatchObject({
      hostIf: 'eth0',
      routerIf: 'lb1',
      hostV4: { address: '10.77.11.2', prefixLength: 24 },
      routerV6: { address: 'fd77:11::1', prefixLength: 64 },
      mtu: 1600,
    });
    expect(p.clients[0]!.link!.mtu).toBe(1500);
    expect(p.backends[2]!.link!.hostV4.address).toBe('10.77.53.2');
  });
  it('gives every link end a distinct locally administered MAC, different per prefix', () => {
    const macs = allHosts(p).flatMap((h) => (h.link ? [h.link.hostMac, h.link.routerMac] : []));
    expect(new Set(macs).size).toBe(macs.length);
    for (const m of macs) expect(m).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(linkMac({ prefix: 'ptb', role: 'lb', index: 1, side: 1 })).not.toBe(
      linkMac({ prefix: 'other', role: 'lb', index: 1, side: 1 }),
    );
  });
  it('is deterministic, and interface names fit in 15 characters', () => {
    expect(buildPlan(parseTestbedConfig(base))).toEqual(p);
    for (const h of allHosts(p)) if (h.link) expect(h.link.routerIf.length).toBeLessThanOrEqual(15);
  });
  it('sweeps only its own namespace names', () => {
    const re = ownedNamespacePattern('ptb');
    expect(['ptb-router', 'ptb-lb12', 'ptb-be3', 'ptb-client1'].every((n) => re.test(n))).toBe(true);
    expect(['ptb1-router', 'ptb-foo', 'xptb-lb1', 'ptb-lb'].some((n) => re.test(n))).toBe(false);
  });
  it('finds hosts by name and names the choices otherwise', () => {
    expect(findHost(p, 'be2').netns).toBe('ptb-be2');
    expect(() => findHost(p, 'lb9')).toThrow(
      'host "lb9" is not in testbed ptb (hosts: router, client1, lb1, lb2, be1, be2, be3)',
    );
  });
  it('gives each comparison system its own VIPs', () => {
    expect(p.comparisonVips).toEqual({
      nft: { v4: '10.201.0.2', v6: 'fd00:201::2' },
      nginx: { v4: '10.201.0.3', v6: 'fd00:201::3' },
      haproxy: { v4: '10.201.0.4', v6: 'fd00:201::4' },
    });
  });
});

describe('renderers', () => {
  const p = buildPlan(parseTestbedConfig(base));
  it('BIRD: passive v4 and v6 sessions per LB with its ASN, ECMP merge into the kernel', () => {
    const t = renderBird(p, { logFile: '/x/bird.log' });
    expect(t).toContain('merge paths yes limit 8');
    expect(t).toContain('passive on;');
    expect(t).toContain('error wait time 1, 5;');
    expect(t).toContain('protocol bgp lb2_v4 from lbpeer { neighbor 10.77.12.2 as 65102;');
    expect(t).toContain('protocol bgp lb1_v6 from lbpeer { neighbor fd77:11::2 as 65101;');
    expect(t.match(/protocol bgp/g)!.length).toBe(4);
  });
  it('FRR: multipath-relax, maximum-paths, passive neighbours, outbound deny', () => {
    const t = renderFrrBgpd(p, { logFile: '/x/bgpd.log' });
    for (const s of [
      'bgp bestpath as-path multipath-relax',
      'maximum-paths 8',
      'neighbor 10.77.11.2 passive',
      'neighbor fd77:12::2 activate',
      'route-map DENY_ALL deny 10',
    ])
      expect(t).toContain(s);
  });
  it('backend nginx names the backend in a fixed response, one worker, v4 and v6', () => {
    const t = renderBackendNginx({ name: 'be2', port: 8080, dir: '/d' });
    expect(t).toContain('return 200 "be2\\n"');
    expect(t).toContain('worker_processes 1;');
    expect(t).toContain('listen [::]:8080');
  });
  it('nft DNAT picks among every backend and masquerades; proxies list every backend', () => {
    const n = renderNft({ vip: 'fd00::2', port: 80, backends: ['fd77:51::2', 'fd77:52::2'] });
    expect(n).toContain(
      'ip6 daddr fd00::2 tcp dport 80 dnat ip6 to numgen random mod 2 map { 0 : fd77:51::2, 1 : fd77:52::2 } : 80',
    );
    expect(n).toContain('ct status dnat masquerade');
    expect(
      renderNginxProxy({ vip: '10.0.0.1', port: 80, backends: ['a', 'b'], dir: '/d' }).match(
        /server b?[ab]:80/g,
      )!.length,
    ).toBe(2);
    const h = renderHaproxy({ vip: 'fd00::4', port: 80, backends: ['fd77:51::2'], dir: '/d' });
    expect(h).toContain('bind [fd00::4]:80');
    expect(h).toContain('server b0 [fd77:51::2]:80 check');
  });
  it('peak-xdp daemon config per LB passes the daemon config parser (src/model)', () => {
    const cfg = daemonConfig(p, p.lbs[1]!, { backends: p.backends });
    const r = parseConfig(YAML.stringify(cfg), { format: 'yaml' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.config.interface).toBe('eth0');
    expect(r.config.nextHopMac).toBe(p.lbs[1]!.link!.routerMac);
    expect(r.config.vips.map((v) => v.backends.map((b) => b.address))).toEqual([
      ['10.77.51.2', '10.77.52.2', '10.77.53.2'],
      ['fd77:51::2', 'fd77:52::2', 'fd77:53::2'],
    ]);
    expect(cfg.bgp).toMatchObject({
      asn: 65102,
      peers: [{ address: '10.77.12.1', asn: 65000 }, { address: 'fd77:12::1' }],
    });
  });
});

describe('stats', () => {
  it('quantile uses nearest rank and rejects q outside [0,1]', () => {
    const s = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(quantile(s, 0.5)).toBe(5);
    expect(quantile(s, 0.99)).toBe(10);
    expect(quantile(s, 0)).toBe(1);
    expect(quantile([], 0.5)).toBeNaN();
    expect(() => quantile(s, 1.5)).toThrow('q must be within [0, 1], got 1.5');
  });
  it('summarize and cdf sort their input', () => {
    const m = summarize([30, 10, 20]);
    expect(m).toMatchObject({ count: 3, p50: 20, max: 30, mean: 20 });
    const c = cdf([3, 1, 2], [0.5, 1]);
    expect(c).toEqual([
      { value: 2, fraction: 0.5 },
      { value: 3, fraction: 1 },
    ]);
  });
  it("Jain's index: 1 when even, 1/n when one takes all; max/mean", () => {
    expect(jain([5, 5, 5, 5])).toBeCloseTo(1);
    expect(jain([10, 0, 0, 0])).toBeCloseTo(0.25);
    expect(jain([1, 3])).toBeCloseTo(16 / 20);
    expect(maxOverMean([1, 3])).toBeCloseTo(1.5);
    expect(() => jain([])).toThrow('at least one');
    expect(() => jain([1, -1])).toThrow('[1,-1]');
  });
  it('parses wrk --latency output, and refuses other text', () => {
    const out = `Running 2s test @ http://10.201.0.2:80/
  1 threads and 8 connections
  Latency Distribution
     50%  612.00us
     75%  800.00us
     90%    1.02ms
     99%    3.50ms
  10234 requests in 2.00s, 1.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   5116.80
Transfer/sec:    767.00KB`;
    const w = parseWrk(out);
    expect(w).toMatchObject({
      requests: 10234,
      durationS: 2,
      rps: 5116.8,
      p50us: 612,
      p90us: 1020,
      p99us: 3500,
      non2xx: 5,
      socketErrors: 3,
    });
    expect(w.errorRate).toBeCloseTo(8 / 10234);
    expect(() => parseWrk('connection refused')).toThrow('not wrk output');
  });
  it('recovery time: 0 without errors after the fault, null when errors last to the end', () => {
    expect(recoveryMs({ bucketMs: 100, errors: [0, 0, 3, 2, 0, 0], faultMs: 200 })).toBe(200);
    expect(recoveryMs({ bucketMs: 100, errors: [1, 0, 0, 0], faultMs: 150 })).toBe(0);
    expect(recoveryMs({ bucketMs: 100, errors: [0, 0, 1, 1], faultMs: 200 })).toBeNull();
  });
  it('histogram bins from 0 with empty bins kept', () => {
    expect(histogram([5, 120, 130], 50)).toEqual([
      { from: 0, to: 50, count: 1 },
      { from: 50, to: 100, count: 0 },
      { from: 100, to: 150, count: 2 },
    ]);
    expect(() => histogram([1], 0)).toThrow('binWidth must be > 0, got 0');
  });
});

describe('bench arguments and report', () => {
  it('parses profiles, systems and family; names bad values', () => {
    const a = parseBenchArgs(['--quick', '--systems', 'nginx,direct', '--family', '6']);
    expect(a.profile).toBe(PROFILES.quick);
    expect(a.systems).toEqual(['nginx', 'direct']);
    expect(a.family).toBe(6);
    expect(() => parseBenchArgs(['--systems', 'ipvs'])).toThrow('unknown system "ipvs"');
    expect(() => parseBenchArgs(['--family', '5'])).toThrow('--family must be 4 or 6, got "5"');
    expect(() => parseBenchArgs(['--fast'])).toThrow('unknown argument "--fast"');
  });
  it('the report lists systems not measured with their reason, and the measured numbers', () => {
    const r: BenchResults = {
      profile: PROFILES.quick, family: 4, prefix: 'x', startedAt: 'now', durationS: 1,
      machine: { cpus: 2, cpuModel: 'cpu', kernel: 'k', node: 'v20' },
      systems: [{ system: 'nginx', throughput: [{ backends: 2, maxRps: 1234.4, atConnections: 8, steps: [] }], lbScaling: [], latency: [], balance: { perBackend: { be1: 1, be2: 3 }, jain: 0.8, maxOverMean: 1.5 }, inner: null, faults: [{ scenario: 'kill backend be2', sent: 10, failed: 2, errors: { econnrefused: 2 }, recoveryMs: null, faultAtMs: 1 }], timeline: null }],
      notRun: [{ system: 'peak-xdp', reason: 'CLI missing' }],
      ecmp: { announcer: 'exabgp', pollIntervalMs: 5, samples: [{ action: 'start', lb: 'lb1', ms: 12 }, { action: 'stop', lb: 'lb1', ms: null }] },
    }; // prettier-ignore
    const md = reportMarkdown(r);
    expect(md).toContain('* **peak-xdp**: CLI missing');
    expect(md).toContain('| nginx | 2 | 1234 | 8 |');
    expect(md).toContain('| nginx | be1:1 be2:3 | 1.500 | 0.8000 |');
    expect(md).toContain('| nginx | kill backend be2 | 2/10 | econnrefused:2 | not within the run |');
    expect(md).toContain('2 changes, 1 timed out');
  });
});

describe('load generator (loopback server)', () => {
  let server: Server;
  let port = 0;
  let served = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      served++;
      res
        .writeHead(served % 10 === 0 ? 503 : 200, { 'content-type': 'text/plain', 'content-length': '4' })
        .end('be9\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('open loop: sends rate x duration requests, counts backends and HTTP errors', async () => {
    served = 0;
    const r = await runLoad({
      targets: [{ host: '127.0.0.1', port }],
      mode: 'open',
      rate: 200,
      durationMs: 500,
      maxRequests: 1000,
      timeoutMs: 2000,
    });
    expect(r.sent).toBe(100);
    expect(r.ok + (r.errors.http_503 ?? 0)).toBe(100);
    expect(r.errors.http_503).toBe(10);
    expect(r.perBackend).toEqual({ be9: 90 });
    expect(r.latencyUs.count).toBe(90);
    expect(r.timeline.ok.reduce((a, b) => a + b, 0)).toBe(90);
  });
  it('persistent: reuses connections, stops at the request budget', async () => {
    served = 0;
    const r = await runLoad({
      targets: [{ host: '127.0.0.1', port }],
      mode: 'persistent',
      connections: 2,
      thinkMs: 0,
      durationMs: 2000,
      maxRequests: 50,
      timeoutMs: 2000,
    });
    expect(r.sent).toBeGreaterThanOrEqual(50);
    expect(r.sent).toBeLessThanOrEqual(52);
    expect(r.connectionsOpened).toBe(2);
    expect(r.brokenConnections).toBe(0);
  });
  it('counts refused connections as errors, not successes', async () => {
    const s2 = createServer();
    await new Promise<void>((r) => s2.listen(0, '127.0.0.1', r));
    const closedPort = (s2.address() as AddressInfo).port;
    await new Promise((r) => s2.close(r));
    const r = await runLoad({
      targets: [{ host: '127.0.0.1', port: closedPort }],
      mode: 'open',
      rate: 100,
      durationMs: 200,
      maxRequests: 100,
      timeoutMs: 500,
    });
    expect(r.ok).toBe(0);
    expect(r.errors.econnrefused).toBe(r.sent);
    expect(r.sent).toBe(20);
  });
  it('validates options naming the field and value', () => {
    const o: LoadOptions = {
      targets: [{ host: 'h', port: 80 }],
      mode: 'open',
      rate: 0,
      durationMs: 1,
      maxRequests: 1,
      timeoutMs: 1,
    };
    expect(() => checkLoadOptions(o)).toThrow('load option rate=0');
    expect(() => checkLoadOptions({ ...o, rate: 1, targets: [] })).toThrow('load option targets=[]');
    expect(() => checkLoadOptions({ ...o, rate: 1, mode: 'persistent' })).toThrow(
      'load option connections=undefined',
    );
  });
  it('parses responses only when complete', () => {
    expect(parseResponse('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbe')).toBeNull();
    expect(parseResponse('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbe1\nHTTP')).toEqual({
      status: 200,
      body: 'be1\n',
      length: 42,
    });
  });
});
