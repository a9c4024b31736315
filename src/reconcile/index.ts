// Public entry of reconcile: desired state, stable ids, planning (pure) and applying to a Datapath.
export * from './desired';
export * from './ids';
export * from './plan';
export * from './reconciler';
