// Public entry of the configuration model: types, parseConfig/validateConfig, sections, defaults, document bounds, address helpers.
export * from './bgp';
export * from './config';
export * from './defaults';
export * from './document';
export * from './errors';
export * from './ip';
export * from './kubernetes';
