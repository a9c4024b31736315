// Entry of a Maglev table worker thread (started by WorkerTableBuilder): buildTable per request, result transferred.
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { buildTable, mapTable } from './maglev';
import { WORKER_NICE, type TableJob, type TableJobResult } from './pool';

if (!parentPort) throw new Error('pool-worker runs as a worker thread (WorkerTableBuilder starts it)');
const port = parentPort;
// Builds are batch work: this thread runs at a lower priority (Linux: a thread id's nice value is its own), so the
// daemon's event loop (health checks, /healthz, BGP) and the node's other processes go first on a busy CPU.
try {
  const tid = threadId();
  setPriority(tid, Math.min(19, getPriority(tid) + WORKER_NICE));
} catch {
  // not Linux, or not allowed: builds run at the daemon's priority
}

port.on('message', (job: TableJob) => {
  let reply: TableJobResult;
  try {
    const backends = job.names.map((name, i) => ({ name, weight: job.weights[i]! }));
    const built = buildTable({ backends, size: job.size });
    const table = job.as === undefined ? built : mapTable(built, job.as);
    port.postMessage({ id: job.id, table } satisfies TableJobResult, [table.buffer]);
    return;
  } catch (e) {
    const err = e as Error;
    reply = { id: job.id, error: { name: err?.name ?? 'Error', message: err?.message ?? String(e) } };
  }
  port.postMessage(reply);
});

/** The kernel's id of this thread (/proc/thread-self is /proc/<pid>/task/<tid>). */
function threadId(): number {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (!Number.isSafeInteger(tid) || tid <= 0) throw new Error('no thread id');
  return tid;
}
