// FakeApiServer in a child process inside a network namespace (so a daemon there reaches it on loopback).
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Obj, RecordedRequest, Resource } from './fake-apiserver';
import { compileForChild } from './k8s-process';

export interface Mutation {
  resource: string;
  type: string;
  name: string | undefined;
  atMs: number;
}

let compiled: string | null = null;

export class RemoteApiServer {
  port = 0;
  private next = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly stderr: string[] = [];
  private readonly exited: Promise<number | null>;
  private code: number | null | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.exited = new Promise((r) =>
      child.on('exit', (c) => {
        this.code = c;
        for (const p of this.pending.values()) p.reject(new Error(`fake API server exited ${c}`));
        this.pending.clear();
        r(c);
      }),
    );
    child.stderr.on('data', (d: Buffer) => this.stderr.push(d.toString()));
  }

  /** Spawns the server in `netns`; resolves once it listens on 127.0.0.1 there. */
  static async start(o: { netns: string }): Promise<RemoteApiServer> {
    compiled ??= compileForChild(join(__dirname, 'fake-apiserver-main.ts'));
    const child = spawn('ip', ['netns', 'exec', o.netns, process.execPath, compiled], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const s = new RemoteApiServer(child);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`fake API server did not start: ${s.stderr.join('')}`)),
        15000,
      );
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as {
          id?: number;
          ev?: string;
          port?: number;
          result?: unknown;
          error?: string;
        };
        if (m.ev === 'listening') {
          s.port = m.port!;
          clearTimeout(t);
          resolve();
        } else if (m.ev === 'fatal') reject(new Error(`fake API server: ${m.error}`));
        else if (m.id !== undefined) {
          const p = s.pending.get(m.id);
          s.pending.delete(m.id);
          if (m.error !== undefined) p?.reject(new Error(m.error));
          else p?.resolve(m.result);
        }
      });
      void s.exited.then((c) => reject(new Error(`fake API server exited ${c}: ${s.stderr.join('')}`)));
    });
    return s;
  }

  private call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.code !== undefined) return Promise.reject(new Error(`fake API server exited ${this.code}`));
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject });
      this.child.stdin.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  /** A kubeconfig for this server (plain http needs insecure-skip-tls-verify). */
  writeKubeconfig(path: string): void {
    writeFileSync(
      path,
      `apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {server: "http://127.0.0.1:${this.port}", insecure-skip-tls-verify: true}
users:
- name: fake
  user: {token: fake-token}
contexts:
- name: fake
  context: {cluster: fake, user: fake}
current-context: fake
`,
    );
  }

  upsert(resource: Resource, obj: Obj): Promise<Obj> {
    return this.call('upsert', { resource, obj });
  }

  remove(resource: Resource, namespace: string, name: string): Promise<boolean> {
    return this.call('remove', { resource, namespace, name });
  }

  list(resource: Resource): Promise<Obj[]> {
    return this.call('list', { resource });
  }

  /** 410 Gone to every open watch (and history compacted, so resuming also gets 410). */
  expireWatches(): Promise<void> {
    return this.call('expireWatches');
  }

  /** Kills every watch connection mid-stream. */
  dropWatches(): Promise<void> {
    return this.call('dropWatches');
  }

  setUnavailable(down: boolean): Promise<void> {
    return this.call('setUnavailable', { down });
  }

  activeWatches(resource?: Resource): Promise<number> {
    return this.call('activeWatches', { resource });
  }

  requests(since = 0): Promise<RecordedRequest[]> {
    return this.call('requests', { since });
  }

  mutations(since = 0): Promise<Mutation[]> {
    return this.call('mutations', { since });
  }

  /** Stops the server process (SIGKILL after 5 s). */
  async stop(): Promise<void> {
    if (this.code !== undefined) return;
    this.child.stdin.write(`${JSON.stringify({ id: 0, op: 'stop' })}\n`);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}
