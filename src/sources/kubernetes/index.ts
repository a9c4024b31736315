// Public entry of the Kubernetes source: KubernetesSource, its settings schema, the pure translation and RBAC list.
export * from './api-calls';
export * from './client';
export * from './election';
export * from './metrics';
export * from './node-backends';
export * from './objects';
export * from './pool';
export * from './reflector';
export * from './settings';
export * from './source';
export * from './status';
export * from './translate';
