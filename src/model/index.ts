// Public entry of the configuration model: types, parseConfig/validateConfig, defaults, document bounds, address helpers.
export * from './config';
export * from './defaults';
export * from './document';
export * from './errors';
export * from './ip';
