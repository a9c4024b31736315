// Prometheus metrics of the BFD process (its own small registry, served on an optional listen address).
import { createServer, Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from '../metrics/prom';
import { DROP_REASONS, DropReason } from './codec';
import type { BfdMetricsSink } from './process';
import type { StateChangeEvent } from './protocol';

/**
 * Every BFD metric name, for the BFD process's registry and the daemon's (which mirrors session state and
 * packet totals from the control socket, src/daemon/bfd-link.ts, with the same labels).
 */
export const BFD_METRIC_NAMES = {
  sessionUp: 'peak_xdp_bfd_session_up',
  stateChanges: 'peak_xdp_bfd_state_changes_total',
  controlPackets: 'peak_xdp_bfd_control_packets_total',
  droppedPackets: 'peak_xdp_bfd_dropped_packets_total',
  timerLateness: 'peak_xdp_bfd_timer_lateness_seconds',
  /** Daemon only: a BGP session held down because its BFD session is Down. */
  bgpHeld: 'peak_xdp_bfd_bgp_session_held',
} as const;

export interface BfdMetrics extends BfdMetricsSink {
  registry: Registry;
}

export function createBfdMetrics(registry = new Registry()): BfdMetrics {
  const up = new Gauge({
    name: BFD_METRIC_NAMES.sessionUp,
    help: 'BFD session state: 1 Up, 0 any other state',
    labelNames: ['peer', 'session'],
    registers: [registry],
  });
  const changes = new Counter({
    name: BFD_METRIC_NAMES.stateChanges,
    help: 'BFD session state changes, by new state',
    labelNames: ['peer', 'to'],
    registers: [registry],
  });
  const packets = new Counter({
    name: BFD_METRIC_NAMES.controlPackets,
    help: 'BFD control packets: received datagrams (in, valid or not) and sent packets (out)',
    labelNames: ['direction'],
    registers: [registry],
  });
  const drops = new Counter({
    name: BFD_METRIC_NAMES.droppedPackets,
    help: 'Received BFD datagrams dropped, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const lateness = new Histogram({
    name: BFD_METRIC_NAMES.timerLateness,
    help: 'How much later than planned a BFD session timer ran',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
    registers: [registry],
  });
  // Every reason shows from the start (0), so a rate() works before the first drop.
  for (const r of DROP_REASONS) drops.inc({ reason: r }, 0);
  packets.inc({ direction: 'in' }, 0);
  packets.inc({ direction: 'out' }, 0);
  return {
    registry,
    packet: (direction) => packets.inc({ direction }),
    drop: (reason: DropReason) => drops.inc({ reason }),
    stateChange: (e: StateChangeEvent) => changes.inc({ peer: e.peer, to: e.to }),
    sessionUp: (key, peer, v) => {
      if (v === null) up.remove({ peer, session: key });
      else up.set({ peer, session: key }, v ? 1 : 0);
    },
    timerLateness: (ms) => lateness.observe(ms / 1000),
  };
}

/** Serves GET /metrics; resolves once listening. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<Server> {
  const srv = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (e: Error) => res.writeHead(500).end(e.message),
    );
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => {
      srv.off('error', reject);
      resolve();
    });
  });
  return srv;
}
