// Public entry of health checking: checks, the rise/fall state machine, shared probes, the monitor, targets.
export * from './checks';
export * from './monitor';
export * from './state';
export * from './targets';
export * from './probes';
