// The daemon's /metrics against promtool: a real scrape passes `promtool check metrics`, the alert rules pass
// `check rules` and their unit tests, and every metric the Grafana dashboard and the alerts name is in the
// scrape. Also: gzip on request, and the reload metrics and log line following good and bad reloads.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import YAML from 'yaml';
import { DaemonLab, DaemonProcess, runAsync, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { signalPid } from '../../scripts/lib/pids';

const ROOT = join(__dirname, '..', '..');
const DASHBOARD = join(ROOT, 'deploy', 'monitoring', 'grafana-dashboard.json');
const ALERTS = join(ROOT, 'deploy', 'monitoring', 'rules', 'prometheus-alerts.yaml');
const ALERT_TESTS = join(ROOT, 'deploy', 'monitoring', 'rules', 'prometheus-alerts.test.yaml');

function promtool(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 60000 });
  if (r.error)
    throw new Error(`promtool ${args.join(' ')}: ${r.error.message} (scripts/setup.sh installs it)`);
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Metric names a scrape offers: sample names, and the series names of every TYPE line (a histogram's too). */
export function scrapeNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, name, kind] = type;
      names.add(name!);
      if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${name}${s}`);
      if (kind === 'summary') for (const s of ['_sum', '_count']) names.add(`${name}${s}`);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (sample) names.add(sample[1]!);
  }
  return names;
}

/** Our metric names in PromQL text, read loosely: identifiers starting peak_xdp_, process_ or nodejs_. */
export function promqlNames(expr: string): string[] {
  return [...expr.matchAll(/(?<![a-zA-Z0-9_:])((?:peak_xdp|process|nodejs)_[a-zA-Z0-9_:]*)/g)].map(
    (m) => m[1]!,
  );
}

function dashboardExprs(): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (v === null || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (k === 'expr' && typeof x === 'string') out.push(x);
      else walk(x);
    }
  };
  walk(JSON.parse(readFileSync(DASHBOARD, 'utf8')));
  return out;
}

function alertExprs(): string[] {
  const doc = YAML.parse(readFileSync(ALERTS, 'utf8')) as { groups: { rules: { expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => r.expr));
}

const value = (text: string, name: string): number | null => {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? null : Number(line.slice(name.length + 1));
};

describePrivileged('metrics: promtool on a real scrape, dashboard and alert rules', () => {
  const lab = new DaemonLab({ tag: 'h7', backends: 1 });
  let daemon: DaemonProcess;
  let scrape = '';

  beforeAll(async () => {
    await lab.start();
    const cfg = lab.config({ backends: [1] });
    // A peer nobody answers: the session metrics exist (session_up 0) without a BGP daemon in the lab.
    cfg.bgp = { asn: 65101, routerId: '10.10.2.2', peers: [{ address: '10.10.2.1', asn: 65000 }] };
    lab.writeConfig(cfg);
    daemon = await lab.startDaemon();
    // Wait for a health check to be recorded so the duration histogram has series.
    const waited = await waitUntil(
      async () => /^peak_xdp_health_check_duration_seconds_count\{/m.test((await lab.admin('/metrics')).body),
      { timeoutMs: 15000, intervalMs: 200 },
    );
    expect(waited).not.toBeNull();
    const r = await lab.admin('/metrics');
    expect(r.status).toBe(200);
    scrape = r.body;
  }, 120000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('promtool check metrics passes on the scrape', () => {
    expect(scrape.length).toBeGreaterThan(10_000);
    const r = promtool(['check', 'metrics'], scrape);
    console.log(`promtool check metrics (${scrape.length} bytes, ${scrapeNames(scrape).size} names): exit ${r.code} ${r.out || '(no findings)'}`); // prettier-ignore
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
  });

  it('the scrape has the operator metrics, and the standard process metrics unprefixed', () => {
    const names = scrapeNames(scrape);
    for (const n of [
      'peak_xdp_build_info',
      'peak_xdp_bgp_session_up',
      'peak_xdp_dropped_packets_total',
      'peak_xdp_verdicts_total',
      'peak_xdp_forwarded_packets_total',
      'peak_xdp_conntrack_fill_ratio',
      'peak_xdp_config_last_reload_success',
      'peak_xdp_config_last_reload_timestamp_seconds',
      'peak_xdp_health_check_duration_seconds_bucket',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ])
      expect([n, names.has(n)]).toEqual([n, true]);
    expect([...names].filter((n) => /^peak_xdp_(process|nodejs)_/.test(n))).toEqual([]);
    expect(scrape).toMatch(/^peak_xdp_bgp_session_up\{peer="10\.10\.2\.1",peer_asn="65000"\} 0$/m);
    expect(scrape).toMatch(/^peak_xdp_build_info\{version="[^"]+",commit="[^"]+",nodejs="v\d+[^"]*"\} 1$/m);
    expect(value(scrape, 'peak_xdp_config_last_reload_success')).toBe(1);
    const loadedAt = value(scrape, 'peak_xdp_config_last_reload_timestamp_seconds')!;
    expect(Math.abs(loadedAt - Date.now() / 1000)).toBeLessThan(600);
    expect(value(scrape, 'peak_xdp_conntrack_max_entries')).toBe(65536);
  });

  it('every metric the dashboard and the alert rules query is in the scrape', () => {
    const names = scrapeNames(scrape);
    for (const [what, exprs] of [
      ['dashboard', dashboardExprs()],
      ['alerts', alertExprs()],
    ] as const) {
      const used = [...new Set(exprs.flatMap(promqlNames))].sort();
      console.log(`${what}: ${exprs.length} queries name ${used.length} metrics: ${used.join(', ')}`);
      expect(exprs.length).toBeGreaterThan(4);
      expect(used.length).toBeGreaterThan(4);
      // peak_xdp_decap_* come from the backend role (`decap run`), not this daemon's scrape: checked in
      // src/decap/metrics.ts's registry instead.
      const daemonNames = used.filter((n) => !n.startsWith('peak_xdp_decap_'));
      expect(daemonNames.filter((n) => !names.has(n))).toEqual([]);
    }
  });

  it('promtool check rules and promtool test rules pass on the alert rules', () => {
    const check = promtool(['check', 'rules', ALERTS]);
    console.log(`promtool check rules: ${check.out}`);
    expect(check.code).toBe(0);
    expect(check.out).toMatch(/SUCCESS: 7 rules found/);
    const test = promtool(['test', 'rules', ALERT_TESTS]);
    console.log(`promtool test rules: ${test.out}`);
    expect(test.code).toBe(0);
    // Every alert has at least one test that expects it to fire.
    const tests = YAML.parse(readFileSync(ALERT_TESTS, 'utf8')) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const fired = new Set(
      tests.tests.flatMap((t) =>
        t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
      ),
    );
    const rules = YAML.parse(readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert: string }[] }[] };
    expect(rules.groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a) => !fired.has(a))).toEqual([]);
  });

  it('/metrics is gzip-compressed when the client asks for it', async () => {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', lab.lb, 'curl', '-sS', '-m', '5', '-D', join(lab.dir, 'metrics.headers'), '-H', 'Accept-Encoding: gzip', '-o', join(lab.dir, 'metrics.gz'), 'http://127.0.0.1:9470/metrics'], // prettier-ignore
      { timeoutMs: 10000 },
    );
    expect(r.code).toBe(0);
    expect(readFileSync(join(lab.dir, 'metrics.headers'), 'utf8')).toMatch(/^content-encoding: gzip\r?$/im);
    const gz = readFileSync(join(lab.dir, 'metrics.gz'));
    const text = gunzipSync(gz).toString();
    console.log(`/metrics gzip: ${gz.length} bytes for ${text.length}`);
    expect(text).toMatch(/^# TYPE peak_xdp_build_info gauge$/m);
    expect(gz.length).toBeLessThan(text.length / 3);
  });

  it('a reload logs what changed; a rejected one sets config_last_reload_success to 0', async () => {
    const cfg = lab.config({ backends: [1], healthCheck: null });
    cfg.bgp = { asn: 65101, routerId: '10.10.2.2', peers: [{ address: '10.10.2.1', asn: 65000 }] };
    const vips = cfg.vips as { backends: { address: string }[] }[];
    vips[0]!.backends.push({ address: '10.10.99.2' });
    lab.writeConfig(cfg);
    signalPid(daemon.pid, 'SIGHUP');
    let line: { changes?: unknown; level?: unknown; time?: unknown } | null = null;
    const logged = await waitUntil(
      () => {
        const found = readFileSync(daemon.log, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"config reloaded"'))
          .pop();
        if (found) line = JSON.parse(found) as typeof line;
        return line !== null;
      },
      { timeoutMs: 10000, intervalMs: 100 },
    );
    expect(logged).not.toBeNull();
    console.log(`config reloaded: ${JSON.stringify(line)}`);
    expect(line!.changes).toEqual({
      vips: { added: 0, removed: 0, changed: 1 },
      backends: { added: 1, removed: 0, changed: 0 },
    });
    expect(line!.level).toBe('info');
    expect(String(line!.time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    lab.writeConfig('vips: [oops\n');
    signalPid(daemon.pid, 'SIGHUP');
    const rejected = await waitUntil(
      async () => value((await lab.admin('/metrics')).body, 'peak_xdp_config_last_reload_success') === 0,
      { timeoutMs: 10000, intervalMs: 200 },
    );
    expect(rejected).not.toBeNull();
  }, 30000);
});
