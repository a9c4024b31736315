// Public entry of the configuration model: types, parseConfig/validateConfig, defaults, address helpers.
export * from './config';
export * from './defaults';
export * from './errors';
export * from './ip';
