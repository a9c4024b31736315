// Jest test environment: the node environment, plus a report of what keeps a jest worker process alive when jest
// has to terminate it ("A worker process has failed to exit gracefully": its event loop had not emptied 500 ms after
// the run ended, so jest sent SIGTERM). On that SIGTERM the worker prints to stderr the test files it ran (last
// first), the resources still active on its event loop (timers, sockets, child processes) and the worker threads
// still running with where they were started; neither process.getActiveResourcesInfo() nor _getActiveHandles() lists
// a worker thread, so Worker is wrapped to keep that list. Nothing is printed when a worker exits by itself.
/* eslint-disable @typescript-eslint/no-require-imports -- jest loads a test environment as CommonJS */
'use strict';
const { TestEnvironment } = require('jest-environment-node');
const workerThreads = require('worker_threads');

const state = (() => {
  const key = Symbol.for('peak-xdp.exit-environment');
  if (process[key]) return process[key];
  const files = [];
  const threads = new Set();
  const Original = workerThreads.Worker;
  class TrackedWorker extends Original {
    constructor(file, options) {
      super(file, options);
      const record = {
        file: String(file).slice(0, 160),
        test: files[files.length - 1],
        at: (new Error().stack || '')
          .split('\n')
          .slice(2, 6)
          .map((s) => s.trim())
          .join(' < '),
      };
      threads.add(record);
      this.once('exit', () => threads.delete(record));
    }
  }
  workerThreads.Worker = TrackedWorker;
  process.once('SIGTERM', () => {
    const lines = [
      `[exit-environment] jest worker ${process.pid} did not exit by itself; files it ran, last first:`,
      ...files
        .slice(-8)
        .reverse()
        .map((f) => `  ${f}`),
      `  active resources: ${process.getActiveResourcesInfo().join(', ') || 'none'}`,
      `  active handles: ${
        process
          ._getActiveHandles()
          .map((h) => (h && h.constructor ? h.constructor.name : typeof h))
          .join(', ') || 'none'
      }`,
      ...[...threads].map((t) => `  worker thread ${t.file} started by ${t.test} at ${t.at}`),
    ];
    try {
      require('fs').writeSync(2, `${lines.join('\n')}\n`);
    } finally {
      process.exit(143);
    }
  });
  process[key] = { files };
  return process[key];
})();

class ExitEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    state.files.push(context.testPath);
  }
}

module.exports = ExitEnvironment;
