// Jest test environment: the node environment, plus a report of what keeps a jest worker process alive when jest
// has to terminate it ("A worker process has failed to exit gracefully": its event loop had not emptied 500 ms after
// the run ended, so jest sent SIGTERM). On that SIGTERM the worker prints to stderr the test files it ran (last
// first), the resources still active on its event loop (timers, sockets, child processes) and the worker threads
// still running with where they were started; neither process.getActiveResourcesInfo() nor _getActiveHandles() lists
// a worker thread, so Worker is wrapped to keep that list. The same report comes 300 ms after jest's end message if
// the process still runs then (the warning comes at 500 ms). Nothing is printed when a worker exits by itself.
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
  const report = (why) => {
    const lines = [
      `[exit-environment] jest worker ${process.pid} ${why}; files it ran, last first:`,
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
    require('fs').writeSync(2, `${lines.join('\n')}\n`);
  };
  // jest's end message (jest-worker's CHILD_MESSAGE_END): its own listener goes, and so does this one (a 'message'
  // listener keeps the IPC channel, and so the process, alive). 300 ms on (a timer that holds nothing), a process
  // still running has something keeping its event loop alive: reported here, where JS still runs. A process whose
  // loop was empty is tearing down by then (or its thread is blocked): no report, and SIGTERM's may not run either.
  const onMessage = (m) => {
    if (!Array.isArray(m) || m[0] !== 2) return;
    process.removeListener('message', onMessage);
    require('timers')
      .setTimeout(() => report('is still running 300 ms after jest ended it'), 300)
      .unref();
  };
  process.on('message', onMessage);
  process.once('SIGTERM', () => {
    try {
      report('did not exit by itself (SIGTERM)');
    } finally {
      process.exit(143);
    }
  });
  process[key] = { files };
  return process[key];
})();

/** PEAK_TEST_MEMORY_LOG=<file>: each test file's worker memory after it ran, one line per file (pid, RSS, RSS high-water
 * mark, heap used, file), to find the file that grows a worker (seen at 1.2-1.4 GB RSS in CI, for no known file). */
const memoryLog = process.env.PEAK_TEST_MEMORY_LOG;
const logMemory = (file) => {
  const m = process.memoryUsage();
  let hwm = '?';
  try {
    hwm = /VmHWM:\s+(\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '?';
  } catch {
    // not Linux: left as ?
  }
  const mb = (b) => (b / 2 ** 20).toFixed(0);
  require('fs').appendFileSync(
    memoryLog,
    `${process.pid} rss ${mb(m.rss)} hwm ${hwm === '?' ? hwm : mb(Number(hwm) * 1024)} heap ${mb(m.heapUsed)} ${file}\n`,
  );
};

/**
 * A full collection of this worker's heap, made available without --expose-gc (jest starts its workers itself). A
 * worker's heap grew file by file to 0.6-1.2 GB of garbage (each file's module registry and test data, which V8 had no
 * reason to collect yet), and a process with such a heap took 0.25-0.32 s to exit by itself here when idle (0.06-0.12
 * s at 100 MB): at the run's end, under load, past the 500 ms jest waits before "A worker process has failed to exit
 * gracefully" (a CI run saw it with no resource left on the worker's event loop, its last heap 650 MB).
 */
const collect = (() => {
  const v8 = require('v8');
  try {
    v8.setFlagsFromString('--expose-gc');
    return require('vm').runInNewContext('gc');
  } catch {
    return null;
  } finally {
    // Only this function: the test files' contexts (made later) keep no `gc`, as under jest before (the daemon's code
    // collects only where node was given --expose-gc, and tests check both ways).
    v8.setFlagsFromString('--no-expose-gc');
  }
})();

class ExitEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    this.testPath = context.testPath;
    state.files.push(context.testPath);
  }

  async teardown() {
    await super.teardown();
    // The file's garbage goes now, while the worker is between files: its heap stays the size of what is live.
    collect?.();
    if (memoryLog) logMemory(this.testPath);
  }
}

module.exports = ExitEnvironment;
