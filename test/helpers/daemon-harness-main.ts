// A Daemon in this process, for tests that need its insides: run in a lab namespace by daemon-harness.ts and
// driven by JSON lines on stdin ({id, cmd, ...}); answers {id, ok, result | error} on stdout.
// Commands: emitError {component} (on the next turn, uncaught, as a real emitter would), failTable {address}
// (the kernel datapath's installTable rejects for the VIP at that address; null: stop), killBgpWorker (ends the
// BGP speaker's worker thread as a crash would), readiness, state, routes, stop.
import { createInterface } from 'node:readline';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { createDaemon } from '../../src/daemon/wiring';
import { createLogger } from '../../src/log';

const [configPath, bpffs] = process.argv.slice(2);
if (!configPath || !bpffs) throw new Error('usage: daemon-harness-main <config> <bpffs>');

const daemon = createDaemon({
  configPath,
  bpffs,
  detachOnExit: false,
  logger: createLogger({ level: 'debug', pretty: false }),
});
/** The daemon's private parts a test reaches into (no test hooks in production code). */
const insides = daemon as unknown as {
  source: NodeJS.EventEmitter;
  monitor: NodeJS.EventEmitter;
  // The BGP speaker runs in a worker thread (BgpSpeakerThread): its sessions live there.
  speaker: {
    config: { peers: { address: string }[] };
    worker: (NodeJS.EventEmitter & { terminate(): Promise<number> }) | null;
    restarts: number;
    status(): { desired: { prefix: string }[] };
  } & NodeJS.EventEmitter;
  dp: KernelDatapath;
};

let failing: string | null = null;
/** Makes the kernel datapath's installTable reject for the VIP at `address` (null: stop). */
function failTable(address: string | null): void {
  failing = address;
  const dp = insides.dp;
  if (Object.prototype.hasOwnProperty.call(dp, 'installTable')) return;
  const real = dp.installTable.bind(dp);
  dp.installTable = async (vipId: number, table: Uint32Array): Promise<void> => {
    // upsertVip ran before in the same plan: the VIP's key is in the map already.
    const vip = (await dp.listVips()).find((v) => v.id === vipId);
    if (failing !== null && vip?.key.address === failing) throw new Error(`injected failure: ENOMEM`);
    return real(vipId, table);
  };
  // The reconciler installs tables in batches: fail the same VIP's entry there, install the others.
  const realBatch = dp.installTables.bind(dp);
  dp.installTables = async (batch) => {
    const vips = await dp.listVips();
    const fails = batch.map(
      (b) => failing !== null && vips.find((v) => v.id === b.vipId)?.key.address === failing,
    );
    const rest = await realBatch(batch.filter((_, i) => !fails[i]));
    return fails.map((f) => (f ? new Error(`injected failure: ENOMEM`) : rest.shift()!));
  };
}

const emitters = (component: string): NodeJS.EventEmitter => {
  switch (component) {
    case 'config-source':
      return insides.source;
    case 'health-monitor':
      return insides.monitor;
    case 'bgp':
      return insides.speaker;
    default:
      throw new Error(`unknown component ${component}`);
  }
};

const json = (v: unknown): string =>
  JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? x.toString() : x instanceof Map ? Object.fromEntries(x) : x,
  );
const reply = (o: object): void => void process.stdout.write(`${json(o)}\n`);

async function handle(m: { id: number; cmd: string; component?: string; address?: string | null }) {
  switch (m.cmd) {
    case 'emitError': {
      if (m.component === 'bgp-session') {
        // A session's 'error' in the worker reaches the daemon thread as this message (speaker-host.ts, which
        // test/unit/bgp-speaker-thread.test.ts checks in the worker): deliver it as the worker would.
        const w = insides.speaker.worker!;
        const peer = insides.speaker.config.peers[0]!.address;
        setImmediate(() =>
          w.emit('message', { t: 'error', error: `bgp peer ${peer}: injected bgp-session error` }),
        );
        return null;
      }
      const target = emitters(m.component!);
      // Outside any try: an 'error' nobody listens to throws and ends the process, as it would in the daemon.
      setImmediate(() => target.emit('error', new Error(`injected ${m.component} error`)));
      return null;
    }
    case 'failTable':
      failTable(m.address ?? null);
      return null;
    case 'killBgpWorker': {
      const before = insides.speaker.restarts;
      await insides.speaker.worker?.terminate();
      return { restartsBefore: before };
    }
    case 'readiness':
      return daemon.readiness();
    case 'state':
      return daemon.state();
    case 'routes':
      return insides.speaker.status().desired.map((r) => r.prefix);
    case 'stop':
      await daemon.stop();
      setImmediate(() => process.exit(0));
      return null;
    default:
      throw new Error(`unknown command ${m.cmd}`);
  }
}

daemon.start().then(
  () => {
    reply({ ev: 'started' });
    createInterface({ input: process.stdin }).on('line', (line) => {
      const m = JSON.parse(line) as { id: number; cmd: string };
      handle(m).then(
        (result) => reply({ id: m.id, ok: true, result }),
        (e: Error) => reply({ id: m.id, ok: false, error: e.message }),
      );
    });
  },
  (e: Error) => {
    reply({ ev: 'failed', error: e.message });
    process.exit(1);
  },
);
