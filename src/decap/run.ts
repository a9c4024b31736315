// Wiring of `peak-xdp decap run`: the real collaborators of the agent (kernel, host, timers, the read-only
// metrics server), its settings from flags and environment, and its life until SIGTERM/SIGINT.
import { join } from 'node:path';
import type { XdpMode } from '../datapath/bpf';
import { startAdmin } from '../daemon/admin';
import { acquirePinLock, describeHolder, PinDirBusy, type PinLock } from '../daemon/lock';
import { bpffsRoot, checkBpffs, currentNetnsName, pinDir } from '../daemon/pins';
import type { Logger } from '../log';
import { bpfObjectPath } from '../paths';
import { buildInfo } from '../version';
import {
  DecapAgent,
  type DecapStarted,
  type DecapStopped,
  type MetricsServerFactory,
  type Scheduler,
} from './agent';
import {
  DECAP_CHECK_MS,
  DEFAULT_METRICS_LISTEN,
  interfaceSetting,
  nodeIpSetting,
  parseMetricsListen,
  vipSetting,
} from './core';
import { decapSettings, type DecapSettingFlags } from './config';
import { systemDecapHost } from './host';
import { createDecapKernel } from './kernel';

/** setTimeout after each run: a slow check never overlaps the next; unref'd (the server keeps us alive). */
export const timerScheduler: Scheduler = {
  every(ms, fn) {
    let timer: NodeJS.Timeout | null = null;
    let stopped = false;
    const next = (): void => {
      if (stopped) return;
      timer = setTimeout(() => void fn().finally(next), ms);
      timer.unref();
    };
    next();
    return {
      stop() {
        stopped = true;
        if (timer) clearTimeout(timer);
      },
    };
  },
};

/** The admin server with only GET /metrics, /healthz, /readyz, /state: nothing on it changes state. */
export function adminMetricsServer(log: Logger): MetricsServerFactory {
  return {
    async start(o) {
      const { Registry } = await import('prom-client');
      // The server's own connection metrics would land in this throwaway registry; the agent's is rendered.
      const s = await startAdmin({
        host: o.host,
        port: o.port,
        registry: new Registry(),
        renderMetrics: o.render,
        readiness: o.ready,
        state: async () => o.state(),
        logger: log,
      });
      return s;
    },
  };
}

export interface DecapRunArgs extends DecapSettingFlags {
  interface?: string;
  address: string[];
  vip: string[];
  mode: XdpMode;
  metricsListen?: string;
  keepOnExit: boolean;
  /** false (--no-sysctls): VIPs go on lo without the DSR sysctls. */
  sysctls: boolean;
  bpffs?: string;
}

/**
 * The agent for these flags (and PEAK_XDP_INTERFACE / PEAK_XDP_NODE_IP or NODE_IP / PEAK_XDP_METRICS_LISTEN /
 * PEAK_XDP_GUE_PORT / PEAK_XDP_DECAP_FROM / PEAK_XDP_DECAP_GUE_FROM); throws DecapUsageError.
 * release() drops the per-interface lock its start took (after stop; process exit drops it too).
 */
export function createDecapRun(
  a: DecapRunArgs,
  log: Logger,
  env = process.env,
): { agent: DecapAgent; release: () => void } {
  const ifSetting = interfaceSetting(a.interface, env.PEAK_XDP_INTERFACE);
  const listenText = a.metricsListen ?? env.PEAK_XDP_METRICS_LISTEN ?? DEFAULT_METRICS_LISTEN;
  const listenSource =
    a.metricsListen !== undefined ? '--metrics-listen' : env.PEAK_XDP_METRICS_LISTEN !== undefined ? 'PEAK_XDP_METRICS_LISTEN' : 'default'; // prettier-ignore
  const metricsListen = parseMetricsListen(listenText, listenSource);
  const vips = vipSetting(a.vip);
  const nodeIp = nodeIpSetting(env);
  const settings = decapSettings(a, env);
  const root = bpffsRoot(a.bpffs);
  let bpffs: string | null = root;
  try {
    checkBpffs(root);
  } catch (e) {
    // Pins are what lets a restart keep the program with no reload; without a bpffs it is swapped instead.
    log.warn({ bpffs: root, err: (e as Error).message }, 'no bpffs: the decap program is not pinned');
    bpffs = null;
  }
  let lock: PinLock | null = null;
  const agent = new DecapAgent({
    interface: ifSetting,
    nodeIp,
    sysctls: a.sysctls,
    addresses: a.address,
    vips,
    keepOnExit: a.keepOnExit,
    settings,
    metricsListen,
    checkMs: DECAP_CHECK_MS,
    kernel: {
      // The pin directory depends on the interface, which `auto` resolves only at start.
      open: (o) => {
        if (bpffs !== null) lock = holdDecapLock(bpffs, o.ifname);
        return createDecapKernel({
          objectPath: bpfObjectPath('decap'),
          pinDir: bpffs === null ? null : decapPinDir(bpffs, o.ifname),
          bpffs,
          mode: a.mode,
          log,
        }).open(o);
      },
    },
    host: systemDecapHost,
    scheduler: timerScheduler,
    server: adminMetricsServer(log),
    log,
  });
  return { agent, release: () => lock?.release() };
}

/**
 * One agent per interface: a second one (a manual run next to the DaemonSet's) would fight over the
 * attachment. Its own lock, not the balancer's of the interface. Held until the process exits.
 */
function holdDecapLock(bpffs: string, ifname: string): PinLock {
  try {
    return acquirePinLock({
      bpffs,
      netns: currentNetnsName(),
      ifname: `${ifname}.decap`,
      pinDir: decapPinDir(bpffs, ifname),
      command: 'decap run',
    });
  } catch (e) {
    if (!(e instanceof PinDirBusy)) throw e;
    throw new Error(
      `${describeHolder(e.holder)} already runs decap on ${ifname} (lock ${e.lockPath}): one decap agent per interface`,
    );
  }
}

/** Pins of the decap program of an interface: <bpffs>/peak-xdp/<netns>/<if>/decap/ (as `decap attach`). */
export function decapPinDir(bpffs: string, ifname: string): string {
  return join(pinDir({ bpffs, netns: currentNetnsName(), ifname }), 'decap');
}

/**
 * Starts the agent and runs until SIGTERM/SIGINT, then stops it; `started` and `stopped` report to stdout. A
 * signal during start is acted on once start has finished. Resolves 0 after a clean stop.
 */
export async function runDecapUntilSignal(o: {
  agent: DecapAgent;
  log: Logger;
  started: (s: DecapStarted) => void;
  stopped: (s: DecapStopped) => void;
}): Promise<number> {
  let signal: string | null = null;
  let wake: (() => void) | null = null;
  const on = (s: string) => () => {
    if (signal !== null) return;
    signal = s;
    wake?.();
  };
  const onTerm = on('SIGTERM');
  const onInt = on('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  try {
    o.log.info({ version: buildInfo.version, commit: buildInfo.commit }, 'decap run starting');
    o.started(await o.agent.start());
    if (signal === null) await new Promise<void>((resolve) => (wake = resolve));
    o.log.info({ signal }, 'stopping');
    o.stopped(await o.agent.stop());
    return 0;
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
  }
}
