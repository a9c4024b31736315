// peak-xdp bfd: BFD sessions from the BFD process's control socket; peak-xdp bfd-daemon: run that process.
import type { Argv } from 'yargs';
import { BfdClient } from '../../bfd/client';
import { DEFAULT_CONTROL_PATH } from '../../bfd/config';
import { runBfdDaemon } from '../../bfd/main';
import type { BfdStatus } from '../../bfd/protocol';
import { GlobalArgs, withJson } from '../context';
import { CliError, emit, renderTable } from '../output';

/** The control socket: --control, env PEAK_XDP_BFD_CONTROL, or the default. */
function controlPath(a: { control?: string }): string {
  return a.control ?? process.env.PEAK_XDP_BFD_CONTROL ?? DEFAULT_CONTROL_PATH;
}

function ago(at: number, now: number): string {
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/** The text view: one line per session, then the process's totals. */
export function formatBfdStatus(st: BfdStatus, now = Date.now()): string {
  const rows = st.sessions;
  const table = renderTable(rows, [
    { header: 'PEER', value: (r) => r.peer + (r.interface ? `%${r.interface}` : '') },
    { header: 'HOP', value: (r) => (r.multihop ? 'multi' : 'single') },
    { header: 'STATE', value: (r) => r.state + (r.heldBy ? ` (${r.heldBy})` : '') },
    { header: 'REMOTE', value: (r) => r.remoteState },
    { header: 'SINCE', value: (r) => ago(r.lastChangeAt, now), align: 'right' },
    { header: 'TX ms', value: (r) => r.txIntervalMs },
    { header: 'DETECT ms', value: (r) => r.detectionTimeMs },
    {
      header: 'MIN TX/RX x MULT',
      value: (r) => `${r.configured.minTx}/${r.configured.minRx} x ${r.configured.multiplier}`,
    },
    { header: 'DIAG', value: (r) => r.diag },
    { header: 'REMOTE DIAG', value: (r) => r.remoteDiag },
    { header: 'IN', value: (r) => r.packetsIn },
    { header: 'OUT', value: (r) => r.packetsOut },
    { header: 'DROPS', value: (r) => Object.values(r.drops).reduce((a, b) => a + (b ?? 0), 0) },
  ]);
  const drops = Object.entries(st.drops).filter(([, n]) => (n ?? 0) > 0);
  const l = st.timerLateness;
  const lines = [
    rows.length ? table : 'no BFD sessions',
    '',
    `process ${st.pid}: ${st.packetsIn} datagrams in, ${st.packetsOut} packets out; timer lateness mean ${l.meanMs} ms, p99 ${l.p99Ms} ms, max ${l.maxMs} ms (${l.count} timers)`,
  ];
  if (st.forwarding)
    lines.push(
      `forwarding plane (${st.forwarding.interface}${st.forwarding.pin ? `, pin ${st.forwarding.pin}` : ''}): ${st.forwarding.ok ? 'ok' : `DOWN: ${st.forwarding.reason}`}`,
    );
  if (drops.length) lines.push(`drops: ${drops.map(([r, n]) => `${r} ${n}`).join(', ')}`);
  return lines.join('\n');
}

export function registerBfd(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command(
      'bfd',
      'BFD sessions: state, negotiated intervals, last diag (asks the BFD process: --control)',
      (b) =>
        withJson(b).option('control', {
          type: 'string',
          describe: `BFD control socket (default: env PEAK_XDP_BFD_CONTROL or ${DEFAULT_CONTROL_PATH})`,
        }),
      async (a) => {
        const path = controlPath(a);
        let c: BfdClient;
        try {
          c = await BfdClient.connect({ path, timeoutMs: 3000 });
        } catch (e) {
          throw new CliError(`${(e as Error).message} (is peak-xdp-bfd running? --control PATH)`, 3);
        }
        try {
          const st = await c.status();
          emit(a.json, 'Bfd', st, () => formatBfdStatus(st));
        } finally {
          c.close();
        }
      },
    )
    .command(
      'bfd-daemon',
      'run the BFD process (its own container; sessions outlive the daemon)',
      (b) =>
        b
          .option('config', { type: 'string', describe: 'JSON or YAML config file' })
          .option('control', { type: 'string', describe: `control socket (default ${DEFAULT_CONTROL_PATH})` })
          .option('metrics', { type: 'string', describe: 'HOST:PORT for GET /metrics' })
          .option('forwarding-interface', {
            type: 'string',
            describe: 'go Down while the balancer is not attached here',
          })
          .option('forwarding-pin', {
            type: 'string',
            describe: 'pinned balancer program that must be the attached one',
          })
          .option('peer', {
            type: 'string',
            array: true,
            describe: 'single-hop session with defaults (repeatable)',
          })
          .option('log-level', { type: 'string' }),
      async (a) => {
        const argv: string[] = [];
        for (const k of [
          'config',
          'control',
          'metrics',
          'forwarding-interface',
          'forwarding-pin',
          'log-level',
        ] as const) {
          const v = a[k];
          if (typeof v === 'string') argv.push(`--${k}`, v);
        }
        for (const p of (a.peer as string[] | undefined) ?? []) argv.push('--peer', p);
        try {
          await runBfdDaemon(argv);
        } catch (e) {
          throw new CliError((e as Error).message, e instanceof TypeError ? 2 : 1);
        }
      },
    ) as unknown as Argv<GlobalArgs>;
}
