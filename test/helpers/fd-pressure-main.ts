// Child process of the fd-pressure test (run under `prlimit --nofile=N:N`): the admin API with its default
// limits and a health monitor probing a TCP and an HTTP backend on 127.0.0.1 (run by the parent). Reads commands on stdin
// (status, hog, release, stop), writes JSON lines on stdout.
import { closeSync, openSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Registry } from 'prom-client';
import { startAdmin } from '../../src/daemon/admin';
import { readFdLimit } from '../../src/daemon/fdlimit';
import { HealthMonitor, LocalCheckError } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';
import type { HealthCheckConfig } from '../../src/model/config';
import { DEFAULTS } from '../../src/model/defaults';

const t0 = performance.now();
const out = (ev: string, o: Record<string, unknown> = {}): void => {
  process.stdout.write(JSON.stringify({ ev, atMs: Math.round(performance.now() - t0), ...o }) + '\n');
};
/** Open fds now; null when even that cannot be counted (no fd left to read /proc/self/fd with). */
const openFds = (): number | null => {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
};

/** A port the parent gives in the environment (the backends live there, outside this process's fd limit). */
function envPort(name: string): number {
  const port = Number(process.env[name]);
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new Error(`${name}: ${JSON.stringify(process.env[name])} is not a port`);
  return port;
}

async function main(): Promise<void> {
  // The backends run in the parent: a backend is another host, whose accept() does not share the daemon's
  // fd limit (in this process, a starved accept resets the connection and looks like a dead backend).
  const port = envPort('FD_PRESSURE_TCP_PORT');
  const webPort = envPort('FD_PRESSURE_HTTP_PORT');

  // Default limits but a long idle timeout: the idle connections keep their pressure for the whole test.
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    registry: new Registry(),
    readiness: () => ({ ready: true, reasons: [] }),
    state: () => Promise.resolve({}),
    logger: silentLogger,
    limits: { idleTimeoutMs: 120_000 },
  });

  const check: HealthCheckConfig = {
    ...DEFAULTS.healthCheck,
    type: 'tcp',
    port,
    intervalMs: 100,
    timeoutMs: 500,
    rise: 1,
    fall: 2,
  };
  const monitor = new HealthMonitor({ jitter: 0 });
  monitor.setTargets([
    { key: 'tcp', vip: 'web', address: '127.0.0.1', check },
    {
      key: 'http',
      vip: 'web',
      address: '127.0.0.1',
      check: { ...check, type: 'http', port: webPort, path: '/' },
    },
  ]);
  const changes: string[] = [];
  monitor.on('change', (c: { to: string; result: { detail: string } }) => {
    changes.push(`${c.to} (${c.result.detail})`);
    out('change', { to: c.to, detail: c.result.detail });
  });
  let lastLocal = '';
  monitor.on('localError', (e: LocalCheckError) => (lastLocal = e.result.detail));
  monitor.start();

  const hog: number[] = [];
  let regrab: NodeJS.Timeout | undefined;
  /** Opens fds until the limit (bounded); returns the error code that stopped it, or null. */
  const grab = (): string | null => {
    for (let i = 0; i < 100_000; i++) {
      try {
        hog.push(openSync('/dev/null', 'r'));
      } catch (e) {
        return (e as NodeJS.ErrnoException).code ?? 'unknown';
      }
    }
    return null;
  };
  const status = (): Record<string, unknown> => {
    const ts = monitor.snapshot();
    const sum = (f: (t: (typeof ts)[number]) => number): number => ts.reduce((a, t) => a + f(t), 0);
    return {
      // "up" when every target is up, else the statuses by key.
      status: ts.every((t) => t.status === 'up')
        ? 'up'
        : Object.fromEntries(ts.map((t) => [t.key, t.status])),
      checks: sum((t) => t.checks),
      minChecks: Math.min(...ts.map((t) => t.checks)),
      failedChecks: sum((t) => t.failedChecks),
      localErrors: sum((t) => t.localErrors),
      minLocalErrors: Math.min(...ts.map((t) => t.localErrors)),
      byReason: Object.fromEntries(monitor.localErrors()),
      lastLocal,
      changes,
      adminConnections: admin.connections(),
      hogged: hog.length,
    };
  };

  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'status') out('status', { ...status(), fds: openFds() });
    else if (cmd === 'hog') {
      // Every fd left, bounded: what a leak or a flood elsewhere in the daemon would do.
      const code = grab();
      out('hogged', { n: hog.length, code });
      // And keep leaking: a check in flight at this moment frees its socket's fd when it ends, and without this
      // the next checks would keep reusing that one fd and pass (seen on a loaded machine: 2 EMFILE in 1 s).
      if (code === 'EMFILE') regrab = setInterval(grab, 2);
    } else if (cmd === 'release') {
      if (regrab) clearInterval(regrab);
      regrab = undefined;
      for (const fd of hog.splice(0)) closeSync(fd);
      out('released', { fds: openFds() });
    } else if (cmd === 'stop') {
      if (regrab) clearInterval(regrab);
      monitor.stop();
      void admin.stop().then(() => process.exit(0));
    }
  });
  process.stdin.on('end', () => process.exit(0));
  out('ready', {
    adminPort: admin.address.port,
    backendPort: port,
    fdLimit: readFdLimit()?.soft ?? null,
    maxConnections: admin.limits.maxConnections,
    fds: openFds(),
  });
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
