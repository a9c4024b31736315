// A one-LB lab for daemon and CLI integration tests: client, router, LB (peak-xdp daemon), nginx backends.
import { ChildProcess, execFile, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { attachXdp, BpfObject } from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { lockDir } from '../../src/daemon/lock';
import { bpfObjectPath, packageRoot } from '../../src/paths';
import { run, uniqueSuffix } from './netns';
import { setTimeout as sleep } from 'node:timers/promises';
import { readPidFile, signalPid } from '../../scripts/lib/pids';

/** The compiled CLI the daemon and every command run from (build: npx tsc -p tsconfig.build.json). */
export const CLI_JS = join(packageRoot, 'dist', 'src', 'cli', 'main.js');
export const VIP = '10.0.0.10';
export const VIP_PORT = 80;
/** The LB's address on its link (the encapsulation source). */
export const LB_ADDRESS = '10.10.2.2';

export { sleep };

export interface Backend {
  /** 1-based; the nginx answers "be<index>". */
  index: number;
  name: string;
  netns: string;
  address: string;
  routerAddress: string;
}

export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously (no shell) with a hard timeout; never rejects on a non-zero exit. */
export function runAsync(
  cmd: string,
  args: string[],
  o: { timeoutMs: number; interruptWhen?: Promise<unknown> },
): Promise<CmdResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'utf8', timeout: o.timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 124) : 0;
        resolve({ code, stdout, stderr: stderr || (err && typeof err.code !== 'number' ? err.message : '') });
      },
    );
    // SIGINT ends the run early the way the command's own Ctrl-C does (wrk stops and still prints its summary).
    void o.interruptWhen?.finally(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    });
  });
}

/** SIGKILLs `pids` (those still alive) and waits, bounded, until they are gone. */
export async function killAll(pids: readonly number[]): Promise<void> {
  for (const p of pids) {
    try {
      signalPid(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await waitUntil(() => pids.every((p) => !existsSync(`/proc/${p}`)), { timeoutMs: 3000 });
}

/** Polls `fn` every `intervalMs` until it returns true; returns the elapsed ms, or null on timeout. */
export async function waitUntil(
  fn: () => boolean | Promise<boolean>,
  o: { timeoutMs: number; intervalMs?: number },
): Promise<number | null> {
  const t0 = performance.now();
  for (;;) {
    if (await fn()) return performance.now() - t0;
    if (performance.now() - t0 > o.timeoutMs) return null;
    await sleep(o.intervalMs ?? 50);
  }
}

export interface WrkResult {
  requests: number;
  /** connect + read + write + timeout socket errors, and non-2xx/3xx responses. */
  errors: { connect: number; read: number; write: number; timeout: number; status: number };
  errorTotal: number;
  /** Responses per body ("be1", ...). */
  perBackend: Record<string, number>;
  raw: string;
}

const WRK_SCRIPT = `-- Counts response bodies (the backend names) and prints them with the error counts.
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local k = string.gsub(body or "", "%s+$", "")
  counts[k] = (counts[k] or 0) + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("peak-errors %d %d %d %d %d\\n", e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("peak-requests %d\\n", summary.requests))
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do io.write(string.format("peak-backend %s %d\\n", k, v)) end
  end
end
`;

export interface DaemonProcess {
  pid: number;
  child: ChildProcess;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  log: string;
}

/** Options of the lab config a test writes (the rest is fixed by the topology). */
export interface LabConfigOptions {
  /** Backend indices (1-based) in the VIP, in order. */
  backends: number[];
  drain?: number[];
  healthCheck?: { intervalMs: number; timeoutMs: number; rise: number; fall: number } | null;
  /** Raw overrides merged into the VIP (e.g. a bad value to test rejection). */
  vipExtra?: Record<string, unknown>;
}

/**
 * client --- router --- lb (daemon, native XDP) ; router --- be1..beN (bpf/decap, nginx).
 * Every namespace name carries a unique suffix; cleanup() removes exactly what start() made, also after a
 * failure halfway through start().
 */
export class DaemonLab {
  readonly id = uniqueSuffix();
  readonly prefix: string;
  readonly client: string;
  readonly router: string;
  readonly lb: string;
  readonly backends: Backend[];
  /** A bpffs mounted for this lab only (the root mount namespace; shared by every ip netns exec). */
  readonly bpffs: string;
  readonly dir: string;
  readonly configPath: string;
  private readonly namespaces: string[] = [];
  /** Every namespace this lab names (kept after cleanup() empties `namespaces`). */
  private readonly allNamespaces: string[] = [];
  private mounted = false;
  private readonly daemons: DaemonProcess[] = [];
  private daemonCount = 0;

  constructor(o: { tag: string; backends: number }) {
    this.prefix = `pk${o.tag}${this.id}`;
    this.client = `${this.prefix}c`;
    this.router = `${this.prefix}r`;
    this.lb = `${this.prefix}l`;
    this.backends = Array.from({ length: o.backends }, (_, i) => ({
      index: i + 1,
      name: `be${i + 1}`,
      netns: `${this.prefix}b${i + 1}`,
      address: `10.10.${11 + i}.2`,
      routerAddress: `10.10.${11 + i}.1`,
    }));
    this.bpffs = `/run/peak-xdp-test-${this.prefix}`;
    this.dir = mkdtempSync(join(tmpdir(), `peak-${this.prefix}-`));
    this.configPath = join(this.dir, 'peak-xdp.yaml');
  }

  /** The LB's pin directory (what the daemon and the CLI use). */
  get pinDir(): string {
    return join(this.bpffs, 'peak-xdp', this.lb, 'eth0');
  }

  ns(netns: string, cmd: string, args: string[], o: { allowFail?: boolean } = {}): string {
    return run('ip', ['netns', 'exec', netns, cmd, ...args], o);
  }

  private sysctl(netns: string, kv: Record<string, string | number>): void {
    this.ns(netns, 'sysctl', ['-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
  }

  private addNs(name: string): void {
    this.namespaces.push(name);
    this.allNamespaces.push(name);
    run('ip', ['netns', 'add', name]);
    run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    // IPv4 only: IPv6 link-local chatter would reach the LB as non-VIP packets and blur the counters.
    this.sysctl(name, { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
  }

  /** A veth pair created inside the two namespaces (nothing appears in the root namespace). */
  private link(o: {
    host: string;
    routerIf: string;
    net: number;
    hostAddr: string;
    routerAddr: string;
    mtu: number;
  }): void {
    const mac = (side: number) => `02:00:00:00:${o.net.toString(16).padStart(2, '0')}:0${side}`;
    run('ip', [
      'link', 'add', 'name', 'eth0', 'netns', o.host, 'address', mac(1), 'mtu', String(o.mtu),
      'type', 'veth', 'peer', 'name', o.routerIf, 'netns', this.router, 'address', mac(2), 'mtu', String(o.mtu),
    ]); // prettier-ignore
    run('ip', ['-n', o.host, 'addr', 'add', `${o.hostAddr}/24`, 'dev', 'eth0']);
    run('ip', ['-n', o.host, 'link', 'set', 'dev', 'eth0', 'up']);
    run('ip', ['-n', this.router, 'addr', 'add', `${o.routerAddr}/24`, 'dev', o.routerIf]);
    run('ip', ['-n', this.router, 'link', 'set', 'dev', o.routerIf, 'up']);
    run('ip', ['-n', o.host, 'route', 'add', 'default', 'via', o.routerAddr]);
    // Fixed MACs, permanent neighbours: no ARP wait on the first packet.
    run('ip', [
      '-n',
      o.host,
      'neigh',
      'replace',
      o.routerAddr,
      'lladdr',
      mac(2),
      'dev',
      'eth0',
      'nud',
      'permanent',
    ]);
    run('ip', ['-n', this.router, 'neigh', 'replace', o.hostAddr, 'lladdr', mac(1), 'dev', o.routerIf, 'nud', 'permanent']); // prettier-ignore
    this.sysctl(this.router, { [`net.ipv4.conf.${o.routerIf}.rp_filter`]: 0 });
  }

  /** The router's MAC on the LB link (the daemon's next hop). */
  get routerMacToLb(): string {
    return '02:00:00:00:02:02';
  }

  /** Builds the topology, mounts the bpffs, starts nginx and attaches decap (through the CLI) on each backend. */
  async start(): Promise<void> {
    if (!existsSync(CLI_JS))
      throw new Error(`${CLI_JS} is missing: build with npx tsc -p tsconfig.build.json`);
    for (const n of [this.client, this.router, this.lb, ...this.backends.map((b) => b.netns)]) this.addNs(n);
    mkdirSync(this.bpffs, { recursive: true });
    run('mount', ['-t', 'bpf', 'bpf', this.bpffs]);
    this.mounted = true;
    // DSR replies come from the backends with the VIP as source: no reverse-path filtering on the router.
    this.sysctl(this.router, {
      'net.ipv4.ip_forward': 1,
      'net.ipv4.conf.all.rp_filter': 0,
      'net.ipv4.conf.default.rp_filter': 0,
    });
    this.link({
      host: this.client,
      routerIf: 'c',
      net: 1,
      hostAddr: '10.10.1.2',
      routerAddr: '10.10.1.1',
      mtu: 1500,
    });
    this.link({
      host: this.lb,
      routerIf: 'l',
      net: 2,
      hostAddr: LB_ADDRESS,
      routerAddr: '10.10.2.1',
      mtu: 1600,
    });
    for (const b of this.backends)
      this.link({ host: b.netns, routerIf: `b${b.index}`, net: 10 + b.index, hostAddr: b.address, routerAddr: b.routerAddress, mtu: 1600 }); // prettier-ignore
    run('ip', ['-n', this.router, 'route', 'add', `${VIP}/32`, 'via', LB_ADDRESS]);
    // veth: a client's partial checksums do not survive native XDP (TESTBED.md); stable ECMP/ports.
    this.ns(this.client, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
    this.sysctl(this.client, {
      'net.core.txrehash': 0,
      'net.ipv4.ip_local_port_range': '1024 65000',
      'net.ipv4.tcp_tw_reuse': 1,
    });
    // XDP_TX on the LB's veth needs an XDP program on the router's peer.
    const pass = await BpfObject.load(bpfObjectPath('pass'));
    try {
      await attachXdp({ ifname: 'l', netns: `/var/run/netns/${this.router}`, program: pass.program('xdp_pass'), mode: 'native' }); // prettier-ignore
    } finally {
      pass.close();
    }
    for (const b of this.backends) {
      this.startNginx(b.index);
      const r = await this.cliIn(b.netns, ['decap', 'attach', '--interface', 'eth0', '--vip', VIP]);
      if (r.code !== 0) throw new Error(`decap attach on ${b.name}: ${r.stderr}`);
    }
  }

  backend(index: number): Backend {
    const b = this.backends[index - 1];
    if (!b) throw new Error(`backend index ${index} is not in 1..${this.backends.length}`);
    return b;
  }

  private nginxPidFile(index: number): string {
    return join(this.dir, `be${index}`, 'nginx.pid');
  }

  /** Starts the nginx of a backend: a fixed body naming it, on every address (VIP and its own, for checks). */
  startNginx(index: number): void {
    const b = this.backend(index);
    const d = join(this.dir, b.name);
    mkdirSync(d, { recursive: true });
    const conf = join(d, 'nginx.conf');
    writeFileSync(
      conf,
      `worker_processes 1; daemon on; pid ${this.nginxPidFile(index)}; error_log ${d}/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${d}; proxy_temp_path ${d}; fastcgi_temp_path ${d};
  uwsgi_temp_path ${d}; scgi_temp_path ${d};
  server { listen 80 backlog=1024; default_type text/plain; location / { return 200 "${b.name}\\n"; } } }
`,
    );
    this.ns(b.netns, 'nginx', ['-c', conf, '-p', d]);
  }

  /** Stops a backend's nginx (SIGTERM to its master) and waits until nothing listens there any more. */
  async stopNginx(index: number): Promise<void> {
    const f = this.nginxPidFile(index);
    const pid = await readPidFile(f);
    signalPid(pid, 'SIGTERM');
    const gone = await waitUntil(() => this.nsPids(this.backend(index).netns).length === 0, {
      timeoutMs: 5000,
    });
    if (gone === null) throw new Error(`nginx of be${index} did not stop`);
  }

  /** Pids of processes in a namespace. */
  nsPids(netns: string): number[] {
    return run('ip', ['netns', 'pids', netns], { allowFail: true })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  }

  /** The daemon config for this topology. */
  config(o: LabConfigOptions): Record<string, unknown> {
    const hc =
      o.healthCheck === undefined ? { intervalMs: 300, timeoutMs: 300, rise: 2, fall: 2 } : o.healthCheck;
    return {
      interface: 'eth0',
      xdpMode: 'native',
      nextHopMac: this.routerMacToLb,
      encapSource: [`${LB_ADDRESS}/32`],
      mtu: 1600,
      // Per-backend series (off by default since issue 17): a few backends here, and the tests read them.
      admin: { listen: '127.0.0.1:9470', perBackendMetrics: true },
      limits: { maxVips: 16, maxBackends: 256, conntrackEntries: 65536 },
      vips: [
        {
          name: 'web',
          address: VIP,
          port: VIP_PORT,
          protocol: 'tcp',
          tableSize: 251,
          ...(hc ? { healthCheck: { type: 'http', path: '/', ...hc } } : {}),
          backends: o.backends.map((i) => ({
            address: this.backend(i).address,
            ...(o.drain?.includes(i) ? { drain: true } : {}),
          })),
          ...o.vipExtra,
        },
      ],
    };
  }

  /** Writes the config file (whole, then renamed into place: the daemon never reads half a file). */
  writeConfig(cfg: Record<string, unknown> | string): void {
    const tmp = `${this.configPath}.tmp`;
    writeFileSync(tmp, typeof cfg === 'string' ? cfg : YAML.stringify(cfg));
    run('mv', ['-f', tmp, this.configPath]);
  }

  /** Starts `peak-xdp daemon` in the LB namespace; resolves when /readyz answers 200. */
  async startDaemon(
    o: { args?: string[]; readyTimeoutMs?: number } = {},
  ): Promise<DaemonProcess & { readyMs: number }> {
    const log = join(this.dir, `daemon-${++this.daemonCount}.log`);
    const fd = openSync(log, 'a');
    const t0 = performance.now();
    const child = spawn(
      'ip',
      ['netns', 'exec', this.lb, process.execPath, CLI_JS, 'daemon', '--config', this.configPath, '--bpffs', this.bpffs, '--log-level', 'debug', ...(o.args ?? [])], // prettier-ignore
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    const exited = new Promise<number | string>((resolve) =>
      child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
    );
    const d: DaemonProcess = { pid: child.pid!, child, exited, log };
    this.daemons.push(d);
    let gone: number | string | null = null;
    void exited.then((c) => (gone = c));
    const readyMs = await waitUntil(
      async () => gone !== null || (await this.admin('/readyz')).status === 200,
      { timeoutMs: o.readyTimeoutMs ?? 30000, intervalMs: 50 },
    );
    if (gone !== null || readyMs === null)
      throw new Error(
        `daemon not ready (${gone !== null ? `exited ${gone}` : 'timeout'}):\n${this.logTail(d)}`,
      );
    return { ...d, readyMs: performance.now() - t0 };
  }

  logTail(d: DaemonProcess, lines = 30): string {
    return existsSync(d.log) ? readFileSync(d.log, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Sends a signal to a daemon and waits for it to exit; returns the exit code or signal. */
  async signalDaemon(d: DaemonProcess, signal: NodeJS.Signals, timeoutMs = 10000): Promise<number | string> {
    signalPid(d.pid, signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'timeout'>(
      (resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)),
    );
    const r = await Promise.race([d.exited, late]).finally(() => clearTimeout(timer));
    if (r === 'timeout') throw new Error(`daemon ${d.pid} did not exit after ${signal}:\n${this.logTail(d)}`);
    return r;
  }

  /** GET from the daemon's admin API (curl inside the LB namespace). */
  async admin(path: string): Promise<{ status: number; body: string }> {
    const r = await runAsync(
      'ip',
      [
        'netns',
        'exec',
        this.lb,
        'curl',
        '-s',
        '-m',
        '3',
        '-w',
        '\n%{http_code}',
        `http://127.0.0.1:9470${path}`,
      ],
      { timeoutMs: 5000 },
    );
    const i = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(0, i)) };
  }

  async state(): Promise<StateDoc> {
    const r = await this.admin('/state');
    if (r.status !== 200) throw new Error(`/state: HTTP ${r.status}: ${r.body}`);
    return JSON.parse(r.body) as StateDoc;
  }

  /** Runs the CLI in a namespace with this lab's bpffs (by env: --bpffs is an option of the commands that use it). */
  cliIn(netns: string, args: string[], timeoutMs = 30000): Promise<CmdResult> {
    return runAsync(
      'ip',
      ['netns', 'exec', netns, 'env', `PEAK_XDP_BPFFS=${this.bpffs}`, process.execPath, CLI_JS, ...args],
      {
        timeoutMs,
      },
    );
  }

  /**
   * Runs the CLI in the LB namespace as another user (setpriv drops root), optionally keeping capabilities
   * (setpriv names: "bpf", "net_admin", ...) as ambient ones, with extra environment variables.
   */
  cliAs(
    o: { uid: number; caps?: string[]; env?: Record<string, string> },
    args: string[],
    timeoutMs = 30000,
  ): Promise<CmdResult> {
    const caps = (o.caps ?? []).map((c) => `+${c}`).join(',');
    const keep = caps ? [`--inh-caps=${caps}`, `--ambient-caps=${caps}`] : [];
    const env = Object.entries({ PEAK_XDP_BPFFS: this.bpffs, ...o.env }).map(([k, v]) => `${k}=${v}`);
    return runAsync(
      'ip',
      ['netns', 'exec', this.lb, 'env', ...env, 'setpriv', `--reuid=${o.uid}`, `--regid=${o.uid}`, '--clear-groups', ...keep, process.execPath, CLI_JS, ...args], // prettier-ignore
      { timeoutMs },
    );
  }

  /** Runs the CLI in the LB namespace. */
  cli(args: string[], timeoutMs = 30000): Promise<CmdResult> {
    return this.cliIn(this.lb, args, timeoutMs);
  }

  /** Runs a CLI command with --json in the LB namespace and parses its output; throws on a non-zero exit. */
  async cliJson<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json']);
    if (r.code !== 0) throw new Error(`peak-xdp ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    // A list command's document holds its rows in `items` (README: JSON output).
    const doc = JSON.parse(r.stdout) as { items?: unknown };
    return (Array.isArray(doc.items) ? doc.items : doc) as T;
  }

  /** One HTTP request from the client to the VIP: the body (the backend name) or null on failure. */
  async curl(o: { localPort?: number } = {}): Promise<string | null> {
    const r = await runAsync(
      'ip',
      ['netns', 'exec', this.client, 'curl', '-s', '-m', '3', ...(o.localPort ? ['--local-port', String(o.localPort)] : []), `http://${VIP}:${VIP_PORT}/`], // prettier-ignore
      { timeoutMs: 6000 },
    );
    return r.code === 0 ? r.stdout.trim() : null;
  }

  /** `n` sequential requests: count per body (null: failed). */
  /**
   * Curls until every backend in `want` answered, at most `max` times: a fixed sample misses a backend by chance
   * (15 requests over 3 backends miss one 0.7% of the time; 60 about once in 10^10), so tests that need all of
   * them ask until they have. Returns every answer seen (null: a failed request).
   */
  async curlUntilSeen(want: readonly string[], max = 60): Promise<Map<string | null, number>> {
    const seen = new Map<string | null, number>();
    for (let i = 0; i < max && want.some((b) => !seen.has(b)); i++) {
      const b = await this.curl();
      seen.set(b, (seen.get(b) ?? 0) + 1);
    }
    return seen;
  }

  async curlMany(n: number): Promise<Map<string | null, number>> {
    const seen = new Map<string | null, number>();
    for (let i = 0; i < n; i++) {
      const b = await this.curl();
      seen.set(b, (seen.get(b) ?? 0) + 1);
    }
    return seen;
  }

  /** Bounded wrk from the client (new connection per request, so drain can finish flows). */
  /** wrk from the client; `until` ends it early (SIGINT: wrk stops and still reports), `seconds` bounds it. */
  async wrk(o: {
    seconds: number;
    connections?: number;
    keepAlive?: boolean;
    until?: Promise<unknown>;
  }): Promise<WrkResult> {
    const script = join(this.dir, 'count.lua');
    if (!existsSync(script)) writeFileSync(script, WRK_SCRIPT);
    const c = o.connections ?? 4;
    const r = await runAsync(
      'ip',
      ['netns', 'exec', this.client, 'wrk', '-t1', `-c${c}`, `-d${o.seconds}s`, '--timeout', '2s', '-s', script, ...(o.keepAlive ? [] : ['-H', 'Connection: close']), `http://${VIP}:${VIP_PORT}/`], // prettier-ignore
      { timeoutMs: (o.seconds + 15) * 1000, interruptWhen: o.until },
    );
    const m = /peak-errors (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(r.stdout);
    const q = /peak-requests (\d+)/.exec(r.stdout);
    if (r.code !== 0 || !m || !q) throw new Error(`wrk failed (${r.code}): ${r.stdout}\n${r.stderr}`);
    const perBackend: Record<string, number> = {};
    for (const x of r.stdout.matchAll(/peak-backend (\S+) (\d+)/g)) perBackend[x[1]!] = Number(x[2]);
    const errors = { connect: +m[1]!, read: +m[2]!, write: +m[3]!, timeout: +m[4]!, status: +m[5]! };
    return {
      requests: Number(q[1]),
      errors,
      errorTotal: Object.values(errors).reduce((a, b) => a + b, 0),
      perBackend,
      raw: r.stdout,
    };
  }

  /** Opens the LB's pinned maps from the test process (fast polling; the caller closes it). */
  adopt(): KernelDatapath {
    return KernelDatapath.adopt({ pinDir: this.pinDir });
  }

  /** XDP program id on the LB's eth0 (0: none). */
  lbXdpProgId(): number {
    const j = JSON.parse(run('ip', ['-n', this.lb, '-j', '-d', 'link', 'show', 'eth0'])) as { xdp?: { prog?: { id: number } } }[]; // prettier-ignore
    return j[0]?.xdp?.prog?.id ?? 0;
  }

  /** Removes everything start() created, by name; safe to call twice and after a failed start(). */
  async cleanup(): Promise<void> {
    for (const d of this.daemons)
      if (d.child.exitCode === null && d.child.signalCode === null) {
        try {
          signalPid(d.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    // Whatever still runs inside our namespaces (nginx, wrk, curl) was started by this lab.
    const pids = this.namespaces
      .filter((n) => existsSync(`/var/run/netns/${n}`))
      .flatMap((n) => this.nsPids(n));
    await killAll(pids);
    for (const n of this.namespaces.splice(0)) run('ip', ['netns', 'del', n], { allowFail: true });
    if (this.mounted) {
      run('umount', [this.bpffs], { allowFail: true });
      if (run('findmnt', ['-n', this.bpffs], { allowFail: true }).trim()) run('umount', ['-l', this.bpffs], { allowFail: true }); // prettier-ignore
      this.mounted = false;
    }
    rmSync(this.bpffs, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
    removePinLocks(this.allNamespaces);
  }
}

/** Removes the pin-directory lock files a killed daemon left for these namespaces (named <netns>+...). */
export function removePinLocks(namespaces: readonly string[]): void {
  const dir = lockDir();
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return; // no lock directory
  }
  for (const n of names)
    if (namespaces.some((ns) => n.startsWith(`${ns}+`))) rmSync(join(dir, n), { force: true });
}

/** The parts of the daemon's /state the tests read. */
export interface StateDoc {
  adopted: boolean;
  attached: boolean;
  pins: string;
  readiness: { ready: boolean; reasons: string[] };
  reloadError: string | null;
  desired: {
    vips: {
      name: string;
      id: number;
      address: string;
      port: number;
      backends: { id: number; address: string; state: string; health: string; drain: boolean }[];
    }[];
  } | null;
  actual: {
    vips: { id: number; key: { address: string; port: number; protocol: string } }[];
    backends: { id: number; address: string; state: string }[];
  } | null;
  health: { address: string; status: string; checks: number }[];
}
