// Entry of a Maglev table worker thread (started by WorkerTableBuilder): buildTable per request, result transferred.
import { parentPort } from 'node:worker_threads';
import { buildTable, mapTable } from './maglev';
import type { TableJob, TableJobResult } from './pool';

if (!parentPort) throw new Error('pool-worker runs as a worker thread (WorkerTableBuilder starts it)');
const port = parentPort;
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
