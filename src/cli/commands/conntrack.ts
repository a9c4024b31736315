// peak-xdp conntrack flush [--vip V] [--backend B] [--all]: deletes connection-table entries through the daemon.
import type { CommandModule } from 'yargs';
import { GlobalArgs, withAdmin, withJson } from '../context';
import { CliError } from '../output';
import { adminWrite, backendArg, daemonVip, printReply, replyVipRef, WriteArgs } from './drain';

interface FlushArgs extends WriteArgs {
  vip?: string;
  backend?: string;
  all?: boolean;
}

/** The `flush` subcommand of `peak-xdp conntrack` (registered in inspect.ts's conntrack builder). */
export const conntrackFlushCommand: CommandModule<GlobalArgs, FlushArgs> = {
  command: 'flush',
  describe:
    "Delete connection-table entries (a VIP's, a backend's, or --all): their flows are re-selected by Maglev at their next packet",
  builder: (y) =>
    withJson(withAdmin(y))
      .option('vip', { type: 'string', describe: 'VIP name, id or address[:port[/proto]]' })
      .option('backend', { type: 'string', describe: 'backend address (with --vip: in that VIP only)' })
      .option('all', { type: 'boolean', describe: 'every entry' })
      .option('token-file', {
        type: 'string',
        describe: 'file holding the admin token (default: env PEAK_XDP_ADMIN_TOKEN_FILE)',
      }),
  handler: async (a) => {
    if (a.vip === undefined && a.backend === undefined && a.all !== true)
      throw new CliError('give --vip and/or --backend, or --all to flush every entry', 2);
    if (a.all === true && (a.vip !== undefined || a.backend !== undefined))
      throw new CliError('--all flushes every entry: leave --vip and --backend out', 2);
    const vip = a.vip !== undefined ? await daemonVip(a, a.vip) : null;
    const body = {
      ...(vip !== null ? { vip: vip.name } : {}),
      ...(a.backend !== undefined ? { backend: backendArg(a.backend) } : {}),
      ...(a.all ? { all: true } : {}),
    };
    const r = await adminWrite<{ deleted: number; vip: string | null; backend: string | null }>(
      a,
      'POST',
      '/v1/conntrack/flush',
      body,
    );
    // The VIP as every document names it (null: every VIP, for --all or a backend in all of them).
    const ref = vip === null || r.vip === null ? null : await replyVipRef(a, r.vip, vip.ref);
    const what = [
      ...(ref ? [`VIP ${ref.name}`] : []),
      ...(r.backend !== null ? [`backend ${r.backend}`] : []),
    ];
    printReply(
      a,
      'ConntrackFlush',
      { ...r, vip: ref },
      `${r.deleted} connection-table entries deleted${what.length ? ` (${what.join(', ')})` : ' (all)'}`,
    );
  },
};
