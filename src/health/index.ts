// Public entry of health checking: checks, the rise/fall state machine, the monitor, targets from desired state.
export * from './checks';
export * from './monitor';
export * from './state';
export * from './targets';
