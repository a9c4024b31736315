// Pure cores of the testbed and the bench (no root, no namespaces): config, plan, renderers, stats, loadgen.
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import YAML from 'yaml';
import { parseTestbedConfig, loadTestbedConfig, defaultConfigPath } from '../../scripts/testbed/config';
import {
  buildPlan,
  findHost,
  linkMac,
  ownedNamespacePattern,
  allHosts,
  backendVips,
  innerVip,
  serviceVip,
  vipBackends,
} from '../../scripts/testbed/plan';
import { renderBird, renderFrrBgpd, renderBackendNginx } from '../../scripts/testbed/render';
import { daemonConfig, startMilestones } from '../../scripts/testbed/peak';
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
import {
  parseResponse,
  runLoad,
  checkLoadOptions,
  FailureRecord,
  LoadOptions,
} from '../../scripts/bench/lib/loadgen';
import { renderHaproxy, renderNft, renderNginxProxy } from '../../scripts/bench/lib/systems';
import { parseBenchArgs, plannedSteps, PROFILES } from '../../scripts/bench/e2e-profile';
import {
  addedP50Us,
  milestoneMedians,
  PLOTS,
  reportMarkdown,
  BenchResults,
  SystemResult,
} from '../../scripts/bench/e2e-report';
import { parseProgStats } from '../../scripts/bench/lib/bpfstats';
import { keepInstructions } from '../../scripts/demo';
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
    expect(t).not.toContain('graceful restart on');
  });
  it('BIRD with gracefulRestart: kernel protocols and the BGP template restart gracefully', () => {
    const t = renderBird(p, { logFile: '/x/bird.log', gracefulRestart: true });
    expect(t.match(/graceful restart on;/g)!.length).toBe(3);
    expect(t).toMatch(/protocol kernel kernel4 \{[^\n]*graceful restart on; \}/);
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
    expect(md).toContain('2 random start/stop changes, 1 timed out');
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
  it('reports every refused connection as a failure record with its source port', async () => {
    const s2 = createServer();
    await new Promise<void>((r) => s2.listen(0, '127.0.0.1', r));
    const closedPort = (s2.address() as AddressInfo).port;
    await new Promise((r) => s2.close(r));
    const records: FailureRecord[] = [];
    const r = await runLoad(
      { targets: [{ host: '127.0.0.1', port: closedPort }], mode: 'open', rate: 100, durationMs: 100, maxRequests: 100, timeoutMs: 500 },
      undefined,
      (f) => records.push(f),
    ); // prettier-ignore
    expect(r.sent).toBe(10);
    expect(records).toHaveLength(10);
    for (const f of records) {
      expect(f).toMatchObject({
        mode: 'open',
        kind: 'econnrefused',
        target: '127.0.0.1',
        requestFailed: true,
        broken: false,
      });
      expect(f.localPort).toBeGreaterThan(0);
      expect(f.at).toBeGreaterThanOrEqual(f.openedAt);
    }
  });
  it('reports a keep-alive connection the server closes as broken, naming the backend that answered', async () => {
    let n = 0;
    const s3 = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '4' }).end('be7\n');
      // The third response closes the connection under the client: it breaks while idle.
      if (++n % 3 === 0) res.on('finish', () => req.socket.destroy());
    });
    await new Promise<void>((r) => s3.listen(0, '127.0.0.1', r));
    const p3 = (s3.address() as AddressInfo).port;
    const records: FailureRecord[] = [];
    try {
      const r = await runLoad(
        { targets: [{ host: '127.0.0.1', port: p3 }], mode: 'persistent', connections: 1, thinkMs: 20, durationMs: 400, maxRequests: 1000, timeoutMs: 500 },
        undefined,
        (f) => records.push(f),
      ); // prettier-ignore
      expect(r.brokenConnections).toBeGreaterThan(0);
      expect(records.filter((f) => f.broken)).toHaveLength(r.brokenConnections);
      // Every request sent has an outcome: the pause after a response (thinkMs) on a connection that broke
      // meanwhile sends nothing (it used to count a request written to the closed socket, and leave its timer).
      expect(r.ok + Object.values(r.errors).reduce((a, b) => a + b, 0)).toBe(r.sent);
      const f = records[0]!;
      expect(f).toMatchObject({ mode: 'persistent', backend: 'be7', responses: 3, broken: true });
      expect(f.localPort).toBeGreaterThan(0);
      expect(f.lastOkAt).not.toBeNull();
    } finally {
      await new Promise((r) => s3.close(r));
    }
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

describe('inner-service VIPs (servedBy)', () => {
  const withSvc = {
    ...base,
    vips: [...base.vips, { name: 'svc4', address: '10.200.0.2', port: 80, servedBy: 'all-but-last' }],
  };
  const p = buildPlan(parseTestbedConfig(withSvc));
  it('resolves servedBy to backend names; the last backend holds only the VIPs it serves', () => {
    expect(p.vips.map((v) => [v.name, v.servedBy])).toEqual([
      ['web4', ['be1', 'be2', 'be3']],
      ['web6', ['be1', 'be2', 'be3']],
      ['svc4', ['be1', 'be2']],
    ]);
    expect(backendVips(p, p.backends[2]!).map((v) => v.name)).toEqual(['web4', 'web6']);
    expect(backendVips(p, p.backends[0]!).map((v) => v.name)).toEqual(['web4', 'web6', 'svc4']);
  });
  it('finds the service VIP and the inner VIP with its caller, per family', () => {
    expect(serviceVip(p, 4).name).toBe('web4');
    expect(serviceVip(p, 6).name).toBe('web6');
    const inner = innerVip(p, 4)!;
    expect([inner.vip.name, inner.caller.name]).toEqual(['svc4', 'be3']);
    expect(innerVip(p, 6)).toBeNull();
    expect(vipBackends(inner.vip, p.backends.slice(1)).map((b) => b.name)).toEqual(['be2']);
  });
  it('names the VIP and the count when servedBy leaves no backend', () => {
    expect(() => buildPlan(parseTestbedConfig({ ...withSvc, backends: { count: 1 } }))).toThrow(
      'vip svc4: servedBy "all-but-last" leaves no backend with backends.count = 1',
    );
    expect(() =>
      parseTestbedConfig({ ...base, vips: [{ name: 'x', address: '10.0.0.1', port: 80, servedBy: 'some' }] }),
    ).toThrow('vips.0.servedBy = "some"');
  });
  it('daemon config: the inner VIP lists only its backends, and is left out when none is deployed', () => {
    const all = daemonConfig(p, p.lbs[0]!, { backends: p.backends }) as {
      vips: { name: string; backends: { address: string }[] }[];
    };
    expect(all.vips.map((v) => [v.name, v.backends.map((b) => b.address)])).toEqual([
      ['web4', ['10.77.51.2', '10.77.52.2', '10.77.53.2']],
      ['web6', ['fd77:51::2', 'fd77:52::2', 'fd77:53::2']],
      ['svc4', ['10.77.51.2', '10.77.52.2']],
    ]);
    const r = parseConfig(YAML.stringify(all), { format: 'yaml' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.config.vips).toHaveLength(3);
    const onlyLast = daemonConfig(p, p.lbs[0]!, { backends: [p.backends[2]!] }) as {
      vips: { name: string }[];
    };
    expect(onlyLast.vips.map((v) => v.name)).toEqual(['web4', 'web6']);
  });
  it('the shipped testbed file has a v4 and a v6 inner VIP', () => {
    const q = buildPlan(loadTestbedConfig({ path: defaultConfigPath(packageRoot), env: {} }));
    expect(innerVip(q, 4)?.vip.address).toBe('10.200.0.2');
    expect(innerVip(q, 6)?.vip.address).toBe('fd00:200::2');
  });
});

describe('bench progress, daemon milestones, XDP stats, report', () => {
  it('plans one step per progress() call: ramp, LB scaling, rates, inner, faults, timeline', () => {
    const q = PROFILES.quick;
    const ramp = q.backendCounts.length * q.wrkConnections.length;
    const rates = q.latencyRates.length;
    expect(plannedSteps({ name: 'peak-xdp', usesLbs: true, hasDaemon: true }, q)).toBe(
      ramp + q.lbCounts.length + rates + 1 + 2 + 1,
    );
    expect(plannedSteps({ name: 'nginx', usesLbs: true, hasDaemon: false }, q)).toBe(
      ramp + q.lbCounts.length + rates + 1 + 1 + 1,
    );
    expect(plannedSteps({ name: 'direct', usesLbs: false, hasDaemon: false }, q)).toBe(
      q.wrkConnections.length + rates + 1 + 1,
    );
  });
  it('reads daemon start milestones after a time, for one peer, ignoring torn lines', () => {
    const log = [
      '{"time":900,"msg":"daemon started"}',
      '{"time":1100,"msg":"daemon started"}',
      '{"time":1300,"msg":"bgp: established","peer":"fd77:11::1"}',
      '{"time":1350,"msg":"bgp: established","peer":"10.77.11.1"}',
      '{"time":1360,"msg":"bgp: sent update","peer":"10.77.11.1","announced":0}',
      '{"time":1400,"msg":"bgp: sent update","peer":"10.77.11.1","announced":2}',
      '{"time":1500,"msg":"bgp: sent',
    ].join('\n');
    expect(startMilestones({ log, sinceEpochMs: 1000, peer: '10.77.11.1' })).toEqual({
      started: 100,
      established: 350,
      announced: 400,
    });
    expect(startMilestones({ log: '', sinceEpochMs: 0, peer: 'x' })).toEqual({
      started: null,
      established: null,
      announced: null,
    });
  });
  it('reads bpftool run stats: a field bpftool leaves out (zero) is 0, output that is no program null', () => {
    expect(parseProgStats('{"id":7,"type":"xdp","run_time_ns":5000,"run_cnt":10}')).toEqual({
      runTimeNs: 5000,
      runCount: 10,
    });
    expect(parseProgStats('{"id":7,"type":"xdp"}')).toEqual({ runTimeNs: 0, runCount: 0 });
    expect(parseProgStats('{"error":"no such program"}')).toBeNull();
  });
  const lat = (system: string, p50: number): SystemResult => ({
    system, throughput: [], lbScaling: [], balance: null, inner: null, faults: [], timeline: null,
    latency: [{ rate: 300, ok: 10, sent: 10, errors: {}, cdfUs: [], cpuUsPerReq: 1, softirqUsPerReq: 20, lbProcessUsPerReq: 3,
      latencyUs: { count: 10, p50, p90: p50, p99: p50, p999: p50, max: p50, mean: p50 },
      xdp: system === 'peak-xdp' ? { nsPerPacket: 500, nsPerRequest: 3000, packetsPerRequest: 6 } : null }],
  }); // prettier-ignore
  const r: BenchResults = {
    profile: PROFILES.quick, family: 4, prefix: 'x', startedAt: 'now', durationS: 1,
    machine: { cpus: 2, cpuModel: 'cpu', kernel: 'k', node: 'v20' },
    systems: [lat('direct', 1000), { ...lat('peak-xdp', 1250), inner: { from: 'be3', to: '10.200.0.2', ok: 5, sent: 5, errors: {}, perBackend: { be1: 2, be2: 3 }, p50us: 900, p99us: 2000 } }],
    notRun: [],
    ecmp: { announcer: 'peak-xdp daemon', pollIntervalMs: 5, samples: [
      { action: 'start', lb: 'lb1', ms: 700, milestones: { started: 600, established: 650, announced: 660 } },
      { action: 'start', lb: 'lb2', ms: 900, milestones: { started: 800, established: 850, announced: 860 } },
      { action: 'start', lb: 'lb2', ms: null, milestones: { started: null, established: null, announced: null } },
      { action: 'stop', lb: 'lb1', ms: 10 },
    ] },
  }; // prettier-ignore
  it('latency added over direct at the same rate; none for direct itself or a missing rate', () => {
    expect(addedP50Us(r, 'peak-xdp', 300)).toBe(250);
    expect(addedP50Us(r, 'direct', 300)).toBeNull();
    expect(addedP50Us(r, 'peak-xdp', 1000)).toBeNull();
  });
  it('milestone medians use only complete start samples', () => {
    expect(milestoneMedians(r.ecmp!.samples)).toEqual({
      started: 800,
      established: 850,
      announced: 860,
      fib: 900,
      count: 2,
    });
    expect(milestoneMedians([{ action: 'stop', lb: 'lb1', ms: 5 }])).toBeNull();
  });
  it('the report shows XDP cost, added latency, the inner target, and plot links under a directory', () => {
    const md = reportMarkdown(r, { plotDir: 'docs/bench/' });
    expect(md).toContain(
      '| peak-xdp | 300 | 10/10 | 0 | 1.25 | 0.25 | 1.25 | 1.25 | 20 | 3 | 3.00 (6.0 pkt, 500 ns/pkt) |',
    );
    expect(md).toContain('| peak-xdp | be3 | 10.200.0.2 | 5/5 | 0 | be1:2 be2:3 | 0.90 | 2.00 |');
    expect(md).toContain('| start | 2 | 700 | 900 | 900 |');
    expect(md).toContain('daemon started 800, BGP established 850, announcing update sent 860');
    for (const pl of PLOTS) expect(md).toContain(`(docs/bench/${pl.file})`);
  });
});

describe('demo --keep instructions', () => {
  const p = buildPlan(parseTestbedConfig({ ...base, prefix: 'dk' }));
  const text = keepInstructions(p);
  it('name this testbed, absolute paths, the VIPs, and the down command', () => {
    const tb = `node ${packageRoot}/dist/scripts/testbed/cli.js --prefix dk`;
    expect(text).toContain(`${tb} exec client1 curl -s http://10.200.0.1/`);
    expect(text).toContain(`${tb} exec client1 curl -s -g http://[fd00:200::1]/`);
    expect(text).toContain(`${tb} exec lb1 node ${packageRoot}/dist/src/cli/main.js status`);
    expect(text).toContain(`: ${tb} down`);
  });
});
