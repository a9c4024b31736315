// The daemon with exactly the LB DaemonSet's capabilities (BPF, NET_ADMIN, PERFMON, NET_BIND_SERVICE; no
// SYS_ADMIN, so no map can be opened by id): a restart over pins holding Maglev tables reads them through
// their table pins and adopts with zero operations; the CLI (ring, lookup) reads them the same way, and names
// the VIP when a table's pin is gone; --detach-on-exit removes the table pins with the others. Unique names:
// netns/links a2cap<pid>, bpffs /run/a2cap<pid>-bpffs, all removed in afterAll.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'; // prettier-ignore
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpfMap, unpin } from '../../src/datapath/bpf';
import { parseTablePinName, pinTable, TABLE_PIN_DIR } from '../../src/datapath/kernel';
import { CLI_JS, runAsync, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';
import { signalPid } from '../../scripts/lib/pids';
import { WORKER_NICE } from '../../src/maglev/pool';
import { defaultHelperNice, type LoweredThreads } from '../../src/util/threads';

/** deploy/base/daemonset-lb.yaml's capabilities, as setpriv names them (everything else dropped). */
const CAPS = '-all,+bpf,+net_admin,+perfmon,+net_bind_service';
const TAG = `a2cap${process.pid % 10000}`;
const NS = TAG;
const BPFFS = `/run/${TAG}-bpffs`;
const IF = `${TAG}a`;
const ADMIN = '127.0.0.1:9470';

interface Daemon {
  pid: number;
  exited: Promise<number | string>;
  log: string;
}

const run = (cmd: string, args: string[]) => runAsync(cmd, args, { timeoutMs: 20000 });
async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

describePrivileged(
  "daemon with the DaemonSet's capabilities (no CAP_SYS_ADMIN): restart over Maglev tables",
  () => {
    const dir = join(tmpdir(), `peak-${TAG}`);
    const configPath = join(dir, 'config.json');
    const pinDir = join(BPFFS, 'peak-xdp', NS, IF);
    const tableDir = join(pinDir, TABLE_PIN_DIR);
    const daemons: Daemon[] = [];
    let mounted = false;

    const config = (backends: string[]) => ({
      interface: IF,
      xdpMode: 'generic',
      nextHopMac: '02:00:00:00:00:02',
      encapSource: '10.250.0.1',
      admin: { listen: ADMIN },
      vips: ['10.200.0.1', '10.200.0.2'].map((address, i) => ({
        name: `v${i}`,
        address,
        port: 80,
        healthCheck: { type: 'tcp', intervalMs: 60000 },
        backends: backends.map((b) => ({ address: b })),
      })),
    });

    const admin = async (path: string): Promise<{ status: number; body: string }> => {
      const r = await run('ip', ['netns', 'exec', NS, 'curl', '-s', '-m', '3', '-w', '\n%{http_code}', `http://${ADMIN}${path}`]); // prettier-ignore
      const i = r.stdout.lastIndexOf('\n');
      return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(0, i)) };
    };

    /** `peak-xdp` in the namespace with the DaemonSet's capabilities only. */
    const capped = (args: string[]): string[] => [
    'netns', 'exec', NS, 'env', `PEAK_XDP_BPFFS=${BPFFS}`,
    'setpriv', `--inh-caps=${CAPS}`, `--ambient-caps=${CAPS}`, `--bounding-set=${CAPS}`,
    process.execPath, CLI_JS, ...args,
  ]; // prettier-ignore

    async function startDaemon(n: number, extra: string[] = []): Promise<Daemon> {
      const log = join(dir, `daemon-${n}.log`);
      const fd = openSync(log, 'a');
      const child = spawn(
        'ip',
        capped(['daemon', '--config', configPath, '--bpffs', BPFFS, '--log-level', 'debug', ...extra]),
        {
          stdio: ['ignore', fd, fd],
        },
      );
      closeSync(fd);
      const exited = new Promise<number | string>((resolve) =>
        child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
      );
      const d = { pid: child.pid!, exited, log };
      daemons.push(d);
      let gone: number | string | null = null;
      void exited.then((c) => (gone = c));
      const ms = await waitUntil(async () => gone !== null || (await admin('/readyz')).status === 200, {
        timeoutMs: 30000,
        intervalMs: 100,
      });
      if (gone !== null || ms === null)
        throw new Error(`daemon ${n} not ready (${gone ?? 'timeout'}):\n${tail(d)}`);
      console.log(`daemon ${n} ready after ${ms.toFixed(0)} ms`);
      return d;
    }

    const tail = (d: Daemon): string =>
      existsSync(d.log) ? readFileSync(d.log, 'utf8').split('\n').slice(-25).join('\n') : '(no log)';

    async function stop(d: Daemon): Promise<number | string> {
      signalPid(d.pid, 'SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        d.exited,
        new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), 15000))),
      ]).finally(() => clearTimeout(timer));
      if (r === 'timeout') throw new Error(`daemon ${d.pid} did not exit on SIGTERM:\n${tail(d)}`);
      return r;
    }

    /** Each table pin: its name, and whether the slot it names holds the pinned map (read as root). */
    function tablePins(): { name: string; matches: boolean }[] {
      const out: { name: string; matches: boolean }[] = [];
      for (const name of readdirSync(tableDir).sort()) {
        const p = parseTablePinName(name);
        const outer = BpfMap.fromPin(
          join(pinDir, p?.kind === 'previous' ? 'maglev_prev_tables' : 'maglev_tables'),
        );
        const m = BpfMap.fromPin(join(tableDir, name));
        try {
          out.push({ name, matches: p !== null && outer.innerId(p.index) === m.info.id });
        } finally {
          m.close();
          outer.close();
        }
      }
      return out;
    }

    /** The summaries of the daemon's reconciles, in order (its debug log's "reconciled" lines). */
    const reconciles = (d: Daemon): Record<string, unknown>[] =>
      readFileSync(d.log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"reconciled"'))
        .map((l) => (JSON.parse(l) as { summary: Record<string, unknown> }).summary);

    /** The daemon's debug line on its helper threads' priority. */
    const helperNiceLine = (d: Daemon): LoweredThreads => {
      const l = readFileSync(d.log, 'utf8')
        .split('\n')
        .find((x) => x.includes("V8's helper threads"));
      if (l === undefined) throw new Error(`no helper-thread line in the log:\n${tail(d)}`);
      return (JSON.parse(l) as { helperNice: LoweredThreads }).helperNice;
    };

    /** Each thread's nice value (field 19 of /proc/PID/task/TID/stat), by thread id. */
    const threadNices = (pid: number): Record<number, number> => {
      const out: Record<number, number> = {};
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
        out[Number(t)] = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      }
      return out;
    };

    /**
     * Node's platform threads (V8's helpers, 4-6 threads made at the process's start) lowered by `by`, the event loop
     * and libuv's pool (started after them) as they were. A table worker may still be alive after the start: it
     * lowers itself by WORKER_NICE.
     */
    const checkHelperNice = (d: Daemon, by: number): void => {
      const line = helperNiceLine(d);
      const nices = threadNices(d.pid);
      console.log(`helper threads ${JSON.stringify(line)}; nice by thread ${JSON.stringify(nices)}`);
      expect(line.by).toBe(by);
      expect(line.failed).toEqual([]);
      if (by === 0) expect(line.lowered).toEqual([]);
      else expect([line.lowered.length >= 4, line.lowered.length <= 6]).toEqual([true, true]);
      expect(nices[d.pid]).toBe(0);
      for (const t of line.lowered) expect([t, nices[t]]).toEqual([t, by]);
      const others = Object.entries(nices)
        .map(([t, n]) => [Number(t), n] as const)
        .filter(([t]) => t !== d.pid && !line.lowered.includes(t));
      for (const [t, n] of others) expect([t, n === 0 || n === WORKER_NICE]).toEqual([t, true]);
      expect(others.filter(([, n]) => n === 0).length).toBeGreaterThanOrEqual(1); // libuv's pool
    };

    const state = async (): Promise<{ adopted: boolean; lastReconcile: Record<string, unknown> | null }> =>
      JSON.parse((await admin('/state')).body);

    beforeAll(async () => {
      mkdirSync(dir, { recursive: true });
      await must('ip', ['netns', 'add', NS]);
      await must('ip', [
        'link',
        'add',
        IF,
        'netns',
        NS,
        'type',
        'veth',
        'peer',
        'name',
        `${TAG}b`,
        'netns',
        NS,
      ]);
      for (const l of ['lo', IF, `${TAG}b`]) await must('ip', ['-n', NS, 'link', 'set', l, 'up']);
      await must('ip', ['-n', NS, 'addr', 'add', '10.250.0.1/24', 'dev', IF]);
      mkdirSync(BPFFS, { recursive: true });
      await must('mount', ['-t', 'bpf', 'bpf', BPFFS]);
      mounted = true;
    }, 30000);

    afterAll(async () => {
      for (const d of daemons) {
        signalPid(d.pid, 'SIGKILL'); // false: exited already
      }
      await waitUntil(() => daemons.every((d) => !existsSync(`/proc/${d.pid}`)), { timeoutMs: 5000 });
      await run('ip', ['netns', 'del', NS]);
      if (mounted) await run('umount', [BPFFS]);
      rmSync(BPFFS, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }, 30000);

    it('pins every installed table; a second daemon adopts, reads them and has nothing to do', async () => {
      writeFileSync(configPath, JSON.stringify(config(['10.100.0.1', '10.100.0.2', '10.100.0.3'])));
      const d1 = await startDaemon(1, ['--helper-nice', '10']);
      // Without CAP_SYS_NICE: Node's platform threads (V8's helpers) lowered by --helper-nice, every other thread
      // (the event loop, libuv's pool, the worker threads started after them) as it was.
      checkHelperNice(d1, 10);
      const s1 = await state();
      console.log(`daemon 1: adopted ${s1.adopted}, last reconcile ${JSON.stringify(s1.lastReconcile)}`);
      expect(s1.adopted).toBe(false);
      expect(reconciles(d1)[0]).toMatchObject({ tablesInstalled: 2, failures: [] });
      expect(await stop(d1)).toBe(0);
      const pins1 = tablePins();
      console.log(`table pins after daemon 1: ${JSON.stringify(pins1)}`);
      expect(pins1.filter((p) => p.name.startsWith('cur-'))).toEqual([
        { name: 'cur-0', matches: true },
        { name: 'cur-1', matches: true },
      ]);
      expect(pins1.every((p) => p.matches)).toBe(true);

      const d2 = await startDaemon(2);
      // Without the flag: this Node's default (10 on Node 20, 0 later), and only those threads lowered.
      checkHelperNice(d2, defaultHelperNice());
      const s2 = await state();
      console.log(`daemon 2: adopted ${s2.adopted}, last reconcile ${JSON.stringify(s2.lastReconcile)}`);
      expect(s2.adopted).toBe(true);
      // the adopting reconcile read both tables back and found them as desired
      expect(reconciles(d2)[0]).toMatchObject({ operations: 0, vipsUnchanged: 2, failures: [] });
      expect(readFileSync(d2.log, 'utf8')).not.toMatch(/EPERM|ETABLEUNREADABLE/);
      expect(await stop(d2)).toBe(0);
    }, 90000);

    it('a new backend rewrites the tables under the same capabilities (pins replaced); the next start adopts them', async () => {
      writeFileSync(
        configPath,
        JSON.stringify(config(['10.100.0.1', '10.100.0.2', '10.100.0.3', '10.100.0.4'])),
      );
      const d3 = await startDaemon(3);
      const s3 = await state();
      console.log(`daemon 3: last reconcile ${JSON.stringify(s3.lastReconcile)}`);
      expect(s3.adopted).toBe(true);
      console.log(`daemon 3: first reconcile ${JSON.stringify(reconciles(d3)[0])}`);
      expect(reconciles(d3)[0]).toMatchObject({ tablesInstalled: 2, failures: [] });
      expect(await stop(d3)).toBe(0);
      const pins = tablePins();
      console.log(`table pins after daemon 3: ${JSON.stringify(pins)}`);
      expect(pins.filter((p) => p.name.startsWith('cur-')).map((p) => p.name)).toEqual(['cur-0', 'cur-1']);
      expect(pins.every((p) => p.matches)).toBe(true);

      const d4 = await startDaemon(4);
      const s4 = await state();
      console.log(`daemon 4: last reconcile ${JSON.stringify(s4.lastReconcile)}`);
      console.log(`daemon 4: first reconcile ${JSON.stringify(reconciles(d4)[0])}`);
      expect(reconciles(d4)[0]).toMatchObject({ operations: 0, vipsUnchanged: 2, failures: [] });
      expect(readFileSync(d4.log, 'utf8')).not.toMatch(/EPERM|ETABLEUNREADABLE/);
      expect(await stop(d4)).toBe(0);
    }, 90000);

    it('the CLI reads tables through the pins with the same capabilities, and names the VIP when a pin is gone', async () => {
      const ring = await run('ip', capped(['ring', '10.200.0.1:80', '--json']));
      console.log(`ring: exit ${ring.code} ${ring.stdout.slice(0, 300)} ${ring.stderr.slice(0, 300)}`);
      expect(ring.code).toBe(0);
      const look = await run(
        'ip',
        capped(['lookup', '--src', '10.9.9.9:4321', '--dst', '10.200.0.1:80', '--json']),
      );
      console.log(`lookup: exit ${look.code} ${look.stdout.slice(0, 300)} ${look.stderr.slice(0, 300)}`);
      expect(look.code).toBe(0);
      expect(look.stdout).toMatch(/10\.100\.0\.[12]/);

      expect(unpin(join(tableDir, 'cur-0'))).toBe(true);
      const gone = await run('ip', capped(['ring', '10.200.0.1:80']));
      console.log(`ring without the pin: exit ${gone.code}: ${gone.stderr.trim()}`);
      expect(gone.code).not.toBe(0);
      expect(gone.stderr).toMatch(/VIP 0: its current Maglev table \(inner map id \d+\) cannot be read: nothing is pinned at .*cur-0/); // prettier-ignore
      // as root (CAP_SYS_ADMIN) the id still opens it
      const asRoot = await run('ip', ['netns', 'exec', NS, 'env', `PEAK_XDP_BPFFS=${BPFFS}`, process.execPath, CLI_JS, 'ring', '10.200.0.1:80']); // prettier-ignore
      expect(asRoot.code).toBe(0);
      // root (CAP_SYS_ADMIN) can open the table by id and pin it again
      const outer = BpfMap.fromPin(join(pinDir, 'maglev_tables'));
      const inner = BpfMap.fromId(outer.innerId(0)!);
      try {
        pinTable(tableDir, 'cur-0', inner);
      } finally {
        inner.close();
        outer.close();
      }
      expect(await run('ip', capped(['ring', '10.200.0.1:80']))).toMatchObject({ code: 0 });
    }, 60000);

    it('--detach-on-exit under the same capabilities removes the pins, table pins included', async () => {
      const d = await startDaemon(5, ['--detach-on-exit']);
      expect(reconciles(d)[0]).toMatchObject({ operations: 0, failures: [] });
      expect(tablePins().map((p) => p.name)).toEqual(['cur-0', 'cur-1']);
      expect(await stop(d)).toBe(0);
      expect(existsSync(pinDir)).toBe(false);
      expect(existsSync(join(BPFFS, 'peak-xdp', NS))).toBe(true); // only this balancer's directory went
    }, 60000);
  },
);
