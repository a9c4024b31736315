// The control socket: a Unix socket (mode 0600) speaking newline-delimited JSON (protocol.ts). Clients come
// and go; the sessions stay with the process.
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, Server, Socket } from 'node:net';
import { dirname } from 'node:path';
import { parseDiag } from './codec';
import { parseSessionSpecs } from './config';
import type { BfdProcess } from './process';
import type { Request, Response, StateChangeEvent } from './protocol';
import { CONTROL_PROTOCOL_VERSION } from './protocol';

/** A request line longer than this closes the connection (a client that never sends a newline). */
const MAX_LINE = 1 << 20;
/** Output a client has not read yet beyond this drops the client (a subscriber that stopped reading). */
export const MAX_BUFFERED_OUT = 4 << 20;

export class ControlServer {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  constructor(private readonly o: { path: string; process: BfdProcess; maxBufferedOut?: number }) {}

  async start(): Promise<void> {
    const { path } = this.o;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    if (await answers(path)) throw new Error(`another BFD process answers on ${path}`);
    rmSync(path, { force: true });
    const srv = createServer((c) => this.onClient(c));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      // Owner only from the start: the umask keeps others out between listen() and chmod().
      const old = process.umask(0o177);
      try {
        srv.listen(path, () => {
          srv.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
    chmodSync(path, 0o600);
    this.server = srv;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.destroy();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
    rmSync(this.o.path, { force: true });
  }

  private onClient(c: Socket): void {
    this.clients.add(c);
    let buf = '';
    let sub: ((e: StateChangeEvent) => void) | null = null;
    const cap = this.o.maxBufferedOut ?? MAX_BUFFERED_OUT;
    const write = (o: object) => {
      if (c.destroyed) return;
      if (c.writableLength > cap) {
        c.destroy();
        return;
      }
      c.write(JSON.stringify(o) + '\n');
    };
    c.setEncoding('utf8');
    c.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        this.handle(line).then(
          (r) => {
            write(r.response);
            if (r.subscribe && !sub) {
              sub = write;
              this.o.process.on('stateChange', sub);
            }
          },
          (e: Error) => write({ ok: false, error: e.message }),
        );
      }
      if (buf.length > MAX_LINE) {
        write({ ok: false, error: `request longer than ${MAX_LINE} bytes without a newline` });
        c.destroy();
      }
    });
    const done = () => {
      this.clients.delete(c);
      if (sub) this.o.process.off('stateChange', sub);
      sub = null;
    };
    c.on('close', done);
    c.on('error', done);
  }

  private async handle(line: string): Promise<{ response: Response; subscribe?: boolean }> {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch (e) {
      return { response: { ok: false, error: `not JSON: ${(e as Error).message}` } };
    }
    const id = typeof req === 'object' && req !== null ? req.id : undefined;
    try {
      const p = this.o.process;
      const keys = (v: unknown): string[] | undefined => {
        if (v === undefined) return undefined;
        if (!Array.isArray(v) || v.some((k) => typeof k !== 'string'))
          throw new TypeError(
            `sessions must be an array of session keys or peer addresses, got ${JSON.stringify(v)}`,
          );
        return v as string[];
      };
      switch (req?.cmd) {
        case 'hello':
          return { response: { id, ok: true, version: CONTROL_PROTOCOL_VERSION, pid: process.pid } };
        case 'get':
          return { response: { id, ok: true, status: p.status() } };
        case 'setSessions': {
          const r = await p.setSessions(parseSessionSpecs(req.sessions, 'sessions'));
          return { response: { id, ok: true, ...r } };
        }
        case 'subscribe':
          return { response: { id, ok: true }, subscribe: true };
        case 'adminDown': {
          const diag = req.diag === undefined ? undefined : parseDiag(req.diag);
          return { response: { id, ok: true, sessions: p.adminDown(keys(req.sessions), diag) } };
        }
        case 'holdDown': {
          const diag = req.diag === undefined ? undefined : parseDiag(req.diag);
          return { response: { id, ok: true, sessions: p.holdDown(keys(req.sessions), diag) } };
        }
        case 'up':
          return { response: { id, ok: true, sessions: p.up(keys(req.sessions)) } };
        default:
          throw new TypeError(
            `cmd: unknown ${JSON.stringify((req as { cmd?: unknown })?.cmd)} (hello, get, setSessions, subscribe, adminDown, holdDown, up)`,
          );
      }
    } catch (e) {
      return { response: { id, ok: false, error: (e as Error).message } };
    }
  }
}

/** True when something accepts connections on the socket path (a live process, not a stale file). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
