// Test packets: the builder/parser lives in src/datapath/packet.ts (peak-xdp trace uses it too).
export * from '../../src/datapath/packet';
