// BgpSpeaker against GoBGP (RIB level: multipath RIB, no kernel FIB) in network namespaces.
import { describePrivileged } from '../helpers/privileged';
import { startGobgp } from '../helpers/bgp-peers';
import { runRouterScenario } from './bgp-scenario';

jest.setTimeout(60000);

describePrivileged('BGP speaker vs GoBGP', () => {
  runRouterScenario({ tag: 'gobgp', startRouter: (o) => startGobgp(o), checksFib: false });
});
