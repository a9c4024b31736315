// BgpSpeaker against FRR (bgpd + zebra as user frr) in network namespaces: ECMP in RIB and FIB.
import { describePrivileged } from '../helpers/privileged';
import { startFrr } from '../helpers/bgp-peers';
import { runRouterScenario } from './bgp-scenario';

jest.setTimeout(60000);

describePrivileged('BGP speaker vs FRR', () => {
  runRouterScenario({ tag: 'frr', startRouter: (o) => startFrr(o), checksFib: true });
});
