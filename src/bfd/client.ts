// Typed client of the BFD process's control socket (the daemon and `peak-xdp bfd` use it).
import { EventEmitter } from 'node:events';
import { createConnection, Socket } from 'node:net';
import type { DiagName } from './codec';
import type { SessionSpec } from './config';
import type { BfdStatus, Request, SetSessionsResult, StateChangeEvent } from './protocol';

export class BfdControlError extends Error {}

type Pending = {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
};
type Body = Request extends infer R ? (R extends { id?: number } ? Omit<R, 'id'> : never) : never;

/**
 * One connection. Emits 'stateChange' (StateChangeEvent) after subscribe(), and 'close' when the process goes
 * away (the sessions do not: reconnect and carry on).
 */
export class BfdClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buf = '';
  private closed = false;

  private constructor(
    private readonly sock: Socket,
    private readonly timeoutMs: number,
  ) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('close', () => this.onClose(new BfdControlError('BFD control socket closed')));
    sock.on('error', (e) => this.onClose(new BfdControlError(`BFD control socket: ${e.message}`)));
  }

  /** Connects to `path` (default /run/peak-xdp/bfd.sock); rejects with a message naming the path. */
  static connect(o: { path: string; timeoutMs?: number }): Promise<BfdClient> {
    const timeoutMs = o.timeoutMs ?? 3000;
    return new Promise((resolve, reject) => {
      const s = createConnection(o.path);
      const t = setTimeout(() => {
        s.destroy();
        reject(new BfdControlError(`no answer from the BFD process at ${o.path} within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        s.removeAllListeners('error');
        resolve(new BfdClient(s, timeoutMs));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(new BfdControlError(`cannot reach the BFD process at ${o.path}: ${e.message}`));
      });
    });
  }

  async hello(): Promise<{ version: number; pid: number }> {
    const { version, pid } = await this.request({ cmd: 'hello' });
    return { version: version as number, pid: pid as number };
  }

  async status(): Promise<BfdStatus> {
    return (await this.request({ cmd: 'get' })).status as BfdStatus;
  }

  /** Replaces the process's sessions; `errors`: per key, why a kept session cannot send yet (retried). */
  async setSessions(sessions: SessionSpec[]): Promise<SetSessionsResult> {
    const { added, removed, changed, errors } = await this.request({ cmd: 'setSessions', sessions });
    return {
      added: added as string[],
      removed: removed as string[],
      changed: changed as string[],
      errors: (errors as Record<string, string> | undefined) ?? {},
    };
  }

  async subscribe(listener?: (e: StateChangeEvent) => void): Promise<void> {
    if (listener) this.on('stateChange', listener);
    await this.request({ cmd: 'subscribe' });
  }

  async adminDown(o: { sessions?: string[]; diag?: DiagName } = {}): Promise<string[]> {
    return (await this.request({ cmd: 'adminDown', ...o })).sessions as string[];
  }

  async holdDown(o: { sessions?: string[]; diag?: DiagName } = {}): Promise<string[]> {
    return (await this.request({ cmd: 'holdDown', ...o })).sessions as string[];
  }

  async up(o: { sessions?: string[] } = {}): Promise<string[]> {
    return (await this.request({ cmd: 'up', ...o })).sessions as string[];
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  /** Sends one request; resolves with the response fields, rejects with its error. */
  request(body: Body): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new BfdControlError('BFD control socket closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new BfdControlError(`BFD process did not answer ${body.cmd} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.sock.write(JSON.stringify({ ...body, id }) + '\n');
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (msg.event === 'stateChange') {
        this.emit('stateChange', msg as unknown as StateChangeEvent);
        continue;
      }
      const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
      if (!p) continue;
      this.pending.delete(msg.id as number);
      clearTimeout(p.timer);
      if (msg.ok === true) p.resolve(msg);
      else p.reject(new BfdControlError(String(msg.error)));
    }
  }

  private onClose(e: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
    this.emit('close');
  }
}
