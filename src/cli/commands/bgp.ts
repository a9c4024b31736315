// peak-xdp bgp: sessions and what is announced to whom, from the running daemon's admin API.
import type { Argv } from 'yargs';
import { formatBgpStatus } from '../../bgp/format';
import type { SpeakerStatus } from '../../bgp/speaker';
import { adminUrl, fetchAdmin, GlobalArgs, statePath, withAdmin, withJson } from '../context';
import { CliError, emit } from '../output';

export function registerBgp(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'bgp',
    'BGP sessions and announced prefixes (asks the daemon: --admin)',
    (y2) => withJson(withAdmin(y2)),
    async (a) => {
      const st = await fetchAdmin<{ bgp: SpeakerStatus | null }>(a, statePath(['bgp']), 3000);
      if (st === null)
        throw new CliError(`no daemon answered at ${adminUrl(a)} (--admin HOST:PORT or PEAK_XDP_ADMIN)`, 3);
      if (st.bgp === null)
        throw new CliError('the daemon runs without BGP (no bgp section in its config)', 3);
      const bgp = st.bgp;
      emit(a.json, 'Bgp', bgp as object, () => formatBgpStatus(bgp));
    },
  ) as unknown as Argv<GlobalArgs>;
}
