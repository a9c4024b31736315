// BFD interop with BIRD 2 as the router (protocol bfd, `bfd on` in its BGP protocols): our BFD process
// (peak-xdp bfd-daemon) beside the daemon on two LB nodes; Up with negotiated intervals, silent failure,
// daemon kill -9 under graceful restart, hand detach, bad packets. Times are printed; bounds are generous.
import { bfdInteropScenario } from './bfd-scenario';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('BFD vs BIRD 2 (two LB nodes, daemon + BFD process, traffic through the VIP)', () => {
  bfdInteropScenario('bird');
});
