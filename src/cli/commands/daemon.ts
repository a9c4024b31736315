// peak-xdp daemon: runs the control plane until SIGTERM/SIGINT; exit leaves forwarding running.
import type { Argv } from 'yargs';
import { preloadConfigFile } from '../../daemon/kernel-host';
import { fixMallocThreshold } from '../../daemon/malloc';
import { bpffsRoot } from '../../daemon/pins';
import { parseListen } from '../../model/schema';
import { createLogger, LOG_LEVELS } from '../../log';
import { defaultHelperNice, lowerHelperThreads, NICE_MAX } from '../../util/threads';
import { GlobalArgs, requireCapabilities, withBpffs } from '../context';
import { CliError } from '../output';

export function registerDaemon(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'daemon',
    'Run the load balancer: config -> XDP maps, health checks, BGP, admin API (/metrics /healthz /readyz /state)',
    (y2) =>
      withBpffs(y2)
        .option('config', { type: 'string', demandOption: true, describe: 'YAML or JSON config file' })
        .option('kubernetes', {
          type: 'boolean',
          default: false,
          describe: 'also program Services of type LoadBalancer',
        })
        .option('kubeconfig', { type: 'string', describe: 'kubeconfig file (default: in-cluster config)' })
        .option('node-name', {
          type: 'string',
          describe: 'this node (default: env NODE_NAME, else the host name)',
        })
        .option('node-labels', {
          type: 'string',
          describe:
            "this node's labels for the config's nodes section, k=v,k2=v2 (bare hosts; with --kubernetes: " +
            "default the Node object's)",
        })
        .option('metrics-listen', {
          type: 'string',
          default: process.env.PEAK_XDP_METRICS_LISTEN,
          describe:
            'a read-only listener for GET /metrics, /healthz, /readyz, e.g. 0.0.0.0:9471 (replaces ' +
            'admin.metricsListen; env PEAK_XDP_METRICS_LISTEN)',
        })
        .option('detach-on-exit', {
          type: 'boolean',
          default: false,
          describe: 'detach the program and remove its pins on exit (default: forwarding stays)',
        })
        .option('log-level', {
          choices: LOG_LEVELS,
          default: (process.env.PEAK_XDP_LOG_LEVEL ?? 'info') as 'info',
        })
        .option('helper-nice', {
          type: 'string',
          default: process.env.PEAK_XDP_HELPER_NICE ?? String(defaultHelperNice()),
          describe:
            `added to the nice value of Node's V8 helper threads (0-${NICE_MAX}; garbage collection, compilation), so the ` +
            'event loop (health checks, /healthz, BGP) gets a core first; 0 leaves them as they are (default 10 on ' +
            'Node 20, 0 on later versions; env PEAK_XDP_HELPER_NICE)',
        })
        .option('tcp-probe-thread', {
          type: 'boolean',
          default: process.env.PEAK_XDP_TCP_PROBE_THREAD !== '0',
          describe:
            "TCP health checks connect, wait and close on a thread of the addon's own, off the event loop (negated: " +
            'on the event loop; env PEAK_XDP_TCP_PROBE_THREAD=0)',
        }),
    async (a) => {
      const nice = /^\d+$/.test(a.helperNice) ? Number(a.helperNice) : NaN;
      if (!(nice <= NICE_MAX))
        throw new CliError(
          `--helper-nice: ${JSON.stringify(a.helperNice)} is not an integer in 0..${NICE_MAX}`,
          2,
        );
      requireCapabilities('the daemon');
      // First, while Node's platform threads are the only ones besides this one (the preload below starts libuv's pool).
      const helpers = lowerHelperThreads(nice);
      fixMallocThreshold();
      // The balancer starts loading on another thread now, and the daemon's modules load meanwhile (~0.15 s at
      // 512 x 100, when they were loaded first and the load then waited for).
      await preloadConfigFile(a.config, bpffsRoot(a.bpffs));
      const { createDaemon, nodeIdentity } = await import('../../daemon/wiring');
      const { setTcpProbeThread, tcpProbePath } = await import('../../health/checks');
      const logger = createLogger({ level: a.logLevel });
      setTcpProbeThread(a.tcpProbeThread);
      const tcpProbes = tcpProbePath();
      if (a.tcpProbeThread && tcpProbes !== 'thread')
        logger.warn(
          { tcpProbes },
          "TCP health probes run on the event loop: the addon's prober thread is not available",
        );
      else logger.info({ tcpProbes }, 'TCP health probes');
      if (helpers.failed.length > 0)
        logger.warn({ helperNice: helpers }, "some of V8's helper threads kept their priority");
      else logger.debug({ helperNice: helpers }, "V8's helper threads lowered");
      const metricsListen = a.metricsListen === undefined ? undefined : parseListen(a.metricsListen);
      if (metricsListen === null)
        throw new CliError(
          `--metrics-listen: ${JSON.stringify(a.metricsListen)} is not an address:port (e.g. 0.0.0.0:9471 or [::]:9471)`,
          2,
        );
      let node;
      try {
        node = nodeIdentity({
          name: a.nodeName,
          labels: a.nodeLabels,
          kubernetes: a.kubernetes ? { kubeconfig: a.kubeconfig } : undefined,
        });
      } catch (e) {
        throw new CliError((e as Error).message, 2);
      }
      const daemon = createDaemon({
        configPath: a.config,
        bpffs: bpffsRoot(a.bpffs),
        detachOnExit: a.detachOnExit,
        logger,
        kubernetes: a.kubernetes ? { kubeconfig: a.kubeconfig, nodeName: a.nodeName } : undefined,
        node,
        ...(metricsListen === undefined ? {} : { metricsListen }),
      });
      let stopping: Promise<void> | null = null;
      const stop = (signal: string) => {
        if (stopping) return;
        logger.info({ signal }, 'stopping');
        stopping = daemon
          .stop()
          .then(() => process.exit(0))
          .catch((e: Error) => {
            logger.error({ err: e }, 'stop failed');
            process.exit(1);
          });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      try {
        await daemon.start();
      } catch (e) {
        // A signal during the start (e.g. while it waits for valid node settings): the stop above exits 0.
        if (stopping) return await new Promise<never>(() => undefined);
        await daemon.stop().catch(() => undefined);
        throw new CliError((e as Error).message, 1);
      }
      // Runs until a signal: the admin server and timers keep the event loop alive.
      await new Promise<never>(() => undefined);
    },
  ) as unknown as Argv<GlobalArgs>;
}
