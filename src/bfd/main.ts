#!/usr/bin/env node
// peak-xdp-bfd: the standalone BFD process (own container in the Pod). Also `peak-xdp bfd-daemon`.
// Sessions come from --config / --peer at start and from the control socket later; they outlive clients.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { createLogger } from '../log';
import { parseDiag } from './codec';
import { parseListen, parseProcessConfig, parseSessionSpec, ProcessConfig } from './config';
import { ControlServer } from './control';
import { xdpForwardingCheck } from './forwarding';
import { createBfdMetrics, serveMetrics } from './metrics';
import { BfdProcess } from './process';
import { UdpTransport } from './socket';

export const BFD_DAEMON_USAGE = `usage: peak-xdp-bfd [--config FILE] [--control PATH] [--metrics HOST:PORT]
       [--forwarding-interface IF [--forwarding-pin PATH]] [--peer ADDR]... [--log-level LEVEL]
  --config FILE              JSON or YAML: {control, metricsListen, forwarding: {interface, pin}, sessions: [...]}
  --control PATH             control socket (default /run/peak-xdp/bfd.sock, mode 0600)
  --metrics HOST:PORT        serve Prometheus metrics on GET /metrics
  --forwarding-interface IF  go Down (forwarding-plane-reset) while the balancer is not attached to IF
  --forwarding-pin PATH      ... and the attached program is not the one pinned at PATH
  --peer ADDR                a single-hop session with defaults (300 ms x 3); repeatable
  --single-hop-port N / --multihop-port N   other ports than 3784 / 4784 (tests only)`;

/** Flags -> config (flags override the file). Throws with a message naming the flag. */
export function bfdDaemonConfig(argv: string[]): {
  config: ProcessConfig;
  logLevel: string;
  ports: { single?: number; multi?: number };
} {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      control: { type: 'string' },
      metrics: { type: 'string' },
      'forwarding-interface': { type: 'string' },
      'forwarding-pin': { type: 'string' },
      peer: { type: 'string', multiple: true },
      'log-level': { type: 'string' },
      'single-hop-port': { type: 'string' },
      'multihop-port': { type: 'string' },
    },
    strict: true,
  });
  let doc: Record<string, unknown> = {};
  if (values.config) {
    const text = readFileSync(values.config, 'utf8');
    doc = (values.config.endsWith('.json') ? JSON.parse(text) : parseYaml(text)) ?? {};
  }
  if (values.control) doc.control = values.control;
  if (values.metrics) {
    parseListen(values.metrics, '--metrics');
    doc.metricsListen = values.metrics;
  }
  if (values['forwarding-pin'] && !values['forwarding-interface'])
    throw new TypeError('--forwarding-pin needs --forwarding-interface');
  if (values['forwarding-interface'])
    doc.forwarding = { interface: values['forwarding-interface'], pin: values['forwarding-pin'] };
  const config = parseProcessConfig(doc);
  (values.peer ?? []).forEach((p, i) => config.sessions.push(parseSessionSpec({ peer: p }, `--peer[${i}]`)));
  const port = (v: string | undefined, flag: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new TypeError(`${flag} must be a port, got ${v}`);
    return n;
  };
  return {
    config,
    logLevel: values['log-level'] ?? process.env.PEAK_XDP_LOG_LEVEL ?? 'info',
    ports: {
      single: port(values['single-hop-port'], '--single-hop-port'),
      multi: port(values['multihop-port'], '--multihop-port'),
    },
  };
}

/** Runs until SIGTERM/SIGINT: then every session says AdminDown (a planned stop is no failure), and exits. */
export async function runBfdDaemon(argv: string[]): Promise<void> {
  const { config, logLevel, ports } = bfdDaemonConfig(argv);
  const log = createLogger({ level: logLevel, name: 'bfd' });
  const metrics = createBfdMetrics();
  const proc = new BfdProcess({
    transport: new UdpTransport({
      warn: (m) => log.warn(m),
      singleHopPort: ports.single,
      multihopPort: ports.multi,
    }),
    forwarding: config.forwarding ? xdpForwardingCheck(config.forwarding) : null,
    metrics,
    logger: log,
  });
  await proc.start();
  await proc.setSessions(config.sessions);
  const control = new ControlServer({ path: config.control, process: proc });
  await control.start();
  const srv = config.metricsListen
    ? await serveMetrics(
        metrics.registry,
        ...(Object.values(parseListen(config.metricsListen, 'metricsListen')) as [string, number]),
      )
    : null;
  log.info(
    {
      control: config.control,
      metrics: config.metricsListen,
      forwarding: config.forwarding,
      sessions: config.sessions.length,
      pid: process.pid,
    },
    'BFD process started',
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  proc.adminDown(undefined, parseDiag('administratively-down'));
  // One AdminDown packet per session goes out on the next loop turn (state changes send at once).
  await new Promise((r) => setTimeout(r, 50));
  proc.stop();
  await control.stop();
  srv?.close();
  log.info({}, 'BFD process stopped');
}

if (require.main === module) {
  runBfdDaemon(process.argv.slice(2)).then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(
        `peak-xdp-bfd: ${e.message}\n${e instanceof TypeError ? BFD_DAEMON_USAGE + '\n' : ''}`,
      );
      process.exit(e instanceof TypeError ? 2 : 1);
    },
  );
}
