// Child-process entry serving FakeApiServer inside a network namespace: JSON commands on stdin, JSON replies out.
import { createInterface } from 'node:readline';
import { FakeApiServer, Obj, Resource } from './fake-apiserver';

/** One command from the controlling test: `op` names a FakeApiServer control method. */
interface Command {
  id: number;
  op: string;
  resource?: Resource;
  obj?: Obj;
  namespace?: string;
  name?: string;
  down?: boolean;
  since?: number;
}

const out = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

async function main(): Promise<void> {
  const api = new FakeApiServer();
  /** Every mutation with the time it was served (for event -> datapath latency). */
  const mutations: { resource: string; type: string; name: string | undefined; atMs: number }[] = [];
  api.onMutation = (e) => mutations.push({ resource: e.resource, type: e.type, name: e.object.metadata.name, atMs: e.atMs }); // prettier-ignore
  await api.start();
  const handle = (c: Command): unknown => {
    switch (c.op) {
      case 'upsert':
        return api.upsert(c.resource!, c.obj!);
      case 'remove':
        return api.remove(c.resource!, c.namespace ?? 'default', c.name!);
      case 'list':
        return api.list(c.resource!);
      case 'expireWatches':
        return api.expireWatches();
      case 'dropWatches':
        return api.dropWatches();
      case 'setUnavailable':
        return api.setUnavailable(c.down === true);
      case 'activeWatches':
        return api.activeWatches(c.resource);
      case 'requests':
        return api.requests.slice(c.since ?? 0);
      case 'mutations':
        return mutations.slice(c.since ?? 0);
      case 'stop':
        void api.stop().then(() => process.exit(0));
        return null;
      default:
        throw new Error(`unknown op ${JSON.stringify(c.op)}`);
    }
  };
  createInterface({ input: process.stdin }).on('line', (line) => {
    let c: Command;
    try {
      c = JSON.parse(line) as Command;
    } catch {
      return out({ id: -1, error: `not JSON: ${line.slice(0, 100)}` });
    }
    try {
      out({ id: c.id, result: handle(c) ?? null });
    } catch (e) {
      out({ id: c.id, error: (e as Error).message });
    }
  });
  out({ ev: 'listening', port: api.port });
}

main().catch((e: unknown) => {
  out({ ev: 'fatal', error: (e as Error).stack ?? String(e) });
  process.exit(1);
});
