// The `bgp` config section: its schema, defaults and parsed types are the model's (src/model/bgp.ts).
export * from '../model/bgp';
