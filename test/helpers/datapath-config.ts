// A resolved datapath configuration for tests that build desired states (MACs, an IPv4 encapsulation source).
import type { DatapathConfig } from '../../src/datapath/types';

export const TEST_DATAPATH_CONFIG: DatapathConfig = Object.freeze({
  ownMac: '02:00:00:00:00:01',
  nextHopMac: '02:00:00:00:00:02',
  encapSourceV4: Object.freeze({ prefix: '10.9.0.1', prefixLength: 32 }),
  encapSourceV6: null,
  mtu: 1500,
});
