// Public entry of reconcile: desired state, stable ids, tables, planning (pure) and applying to a Datapath.
export * from './backend-states';
export * from './desired';
export * from './ids';
export * from './plan';
export * from './previous';
export * from './second-chance';
export * from './reconciler';
export * from './table';
