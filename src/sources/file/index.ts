// Public entry of the file source: loadConfigFile and the reloading FileConfigSource.
export * from './load';
export * from './watcher';
export type { WatchFn, WatchHandle } from './follow';
