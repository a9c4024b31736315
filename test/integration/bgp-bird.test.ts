// BgpSpeaker against BIRD 2 in network namespaces: ECMP in RIB and FIB, withdraws, restarts, MD5.
import { describePrivileged } from '../helpers/privileged';
import { startBird } from '../helpers/bgp-peers';
import { runRouterScenario } from './bgp-scenario';

jest.setTimeout(60000);

describePrivileged('BGP speaker vs BIRD 2', () => {
  runRouterScenario({ tag: 'bird', startRouter: (o) => startBird(o), checksFib: true });
});
