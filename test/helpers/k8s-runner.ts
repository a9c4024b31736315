// Child-process runner for the Kubernetes source (the ESM client cannot load inside jest): JSON config in argv[2],
// JSON lines out on stdout (ready, vips, leader, status, metrics), commands in on stdin (status, metrics, stop).
import { createInterface } from 'node:readline';
import { Registry } from 'prom-client';
import { KernelDatapath } from '../../src/datapath/kernel';
import type { VipConfig } from '../../src/model/config';
import { validateConfig } from '../../src/model/config';
import { desiredState, IdState, Reconciler } from '../../src/reconcile';
import { KubernetesSource, KubernetesSourceOptions } from '../../src/sources/kubernetes';

export interface RunnerConfig {
  kubeconfig: string;
  nodeName: string;
  pool?: string[];
  allowedAddresses?: string[];
  loadBalancerClass?: string;
  leaderElection?: KubernetesSourceOptions['leaderElection'];
  backoff?: { initialMs: number; maxMs: number };
  watchTimeoutSeconds?: number;
  watchIdleTimeoutMs?: number;
  /** Program a real KernelDatapath, pinned under pinDir, attached to ifname in netns (generic mode). */
  datapath?: { pinDir: string; ifname: string; netns: string; nextHopMac: string; encapSource: string };
}

const out = (o: object): void => {
  process.stdout.write(`${JSON.stringify({ ...o, atMs: Date.now() })}\n`);
};

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as RunnerConfig;
  const registry = new Registry();
  let apply: (vips: VipConfig[]) => Promise<void> = async () => undefined;
  let dp: KernelDatapath | null = null;
  if (cfg.datapath) {
    const d = cfg.datapath;
    const base = validateConfig({
      interface: d.ifname,
      nextHopMac: d.nextHopMac,
      encapSource: d.encapSource,
      xdpMode: 'generic',
    });
    if (!base.ok) throw new Error(`datapath config: ${JSON.stringify(base.errors)}`);
    dp = await KernelDatapath.load();
    dp.pin(d.pinDir);
    await dp.attach({ ifname: d.ifname, netns: d.netns, mode: 'generic' });
    const reconciler = new Reconciler(dp);
    let ids: IdState | undefined;
    const datapathConfig = {
      ownMac: '02:00:00:00:00:01',
      nextHopMac: d.nextHopMac,
      encapSourceV4: { prefix: d.encapSource, prefixLength: 32 },
      encapSourceV6: null,
      mtu: 1500,
    };
    apply = async (vips) => {
      const desired = desiredState({ config: { ...base.config, vips }, ids, datapathConfig });
      ids = desired.ids;
      await reconciler.reconcile(desired);
    };
  }
  const source = new KubernetesSource({
    kubeconfig: cfg.kubeconfig,
    nodeName: cfg.nodeName,
    pool: cfg.pool,
    allowedAddresses: cfg.allowedAddresses,
    loadBalancerClass: cfg.loadBalancerClass,
    leaderElection: cfg.leaderElection,
    backoff: cfg.backoff,
    watchTimeoutSeconds: cfg.watchTimeoutSeconds,
    watchIdleTimeoutMs: cfg.watchIdleTimeoutMs,
    registry,
    logger: {
      debug: () => undefined,
      info: (o, m) => out({ ev: 'log', level: 'info', msg: m, ...o }),
      warn: (o, m) => out({ ev: 'log', level: 'warn', msg: m, ...o }),
      error: (o, m) => out({ ev: 'log', level: 'error', msg: m, ...o }),
    },
    onLeaderChange: (leader) => out({ ev: 'leader', leader }),
    onChange: async (vips) => {
      const started = Date.now();
      await apply(vips);
      out({ ev: 'vips', vips, applyMs: Date.now() - started });
    },
  });
  const stop = async (): Promise<void> => {
    await source.stop();
    dp?.close();
    out({ ev: 'stopped' });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'status') out({ ev: 'status', status: source.status(), ready: source.ready() });
    else if (cmd === 'metrics') void registry.metrics().then((text) => out({ ev: 'metrics', text }));
    else if (cmd === 'stop') void stop();
  });
  await source.start();
  out({ ev: 'ready', status: source.status() });
}

main().catch((e: unknown) => {
  out({ ev: 'fatal', error: (e as Error).stack ?? String(e) });
  process.exit(1);
});
