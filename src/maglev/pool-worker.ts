// Entry of a Maglev table worker thread (started by WorkerTableBuilder): a table (and its redirected copy) per request, transferred.
import { parentPort } from 'node:worker_threads';
import { currentThreadId, lowerThread } from '../util/threads';
import { runTableJob, WORKER_NICE, type TableJob, type TableJobResult } from './pool';

if (!parentPort) throw new Error('pool-worker runs as a worker thread (WorkerTableBuilder starts it)');
const port = parentPort;
// Builds are batch work: this thread runs at a lower priority (Linux: a thread id's nice value is its own), so the
// daemon's event loop (health checks, /healthz, BGP) and the node's other processes go first on a busy CPU.
try {
  lowerThread(currentThreadId(), WORKER_NICE);
} catch {
  // not Linux, or not allowed: builds run at the daemon's priority
}

port.on('message', (job: TableJob) => {
  let built: ReturnType<typeof runTableJob>;
  try {
    built = runTableJob(job);
  } catch (e) {
    const err = e as Error;
    const failed: TableJobResult = {
      id: job.id,
      error: { name: err?.name ?? 'Error', message: err?.message ?? String(e) },
    };
    port.postMessage(failed);
    return;
  }
  const { table, redirected } = built;
  const reply: TableJobResult =
    redirected === undefined ? { id: job.id, table } : { id: job.id, table, redirected };
  port.postMessage(reply, redirected === undefined ? [table.buffer] : [table.buffer, redirected.buffer]);
});
