// Public entry of the Maglev module: table builder, algorithm constants, analysis helpers.
export * from './maglev';
export { murmur3x86_32, murmur3String } from './hash';
