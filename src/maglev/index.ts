// Public entry of the Maglev module: table builder, algorithm constants, analysis helpers, builder pool.
export * from './maglev';
export * from './pool';
export { murmur3x86_32, murmur3String } from './hash';
