// Drives daemon-harness-main.ts (a Daemon in a child process inside a lab namespace) over JSON lines.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { compileForChild } from './k8s-process';

let compiled: string | null = null;

export type HarnessComponent = 'config-source' | 'health-monitor' | 'bgp' | 'bgp-session';

export class DaemonHarness {
  private next = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  /** Resolves with the exit code or signal when the child ends. */
  readonly exited: Promise<number | string>;
  private code: number | string | null = null;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly log: string,
  ) {
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.code = code ?? signal ?? -1;
        for (const p of this.pending.values()) p.reject(new Error(`harness exited ${this.code}`));
        this.pending.clear();
        resolve(this.code);
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** True while the child process runs. */
  get alive(): boolean {
    return this.code === null;
  }

  /** Starts a daemon in `netns` on `configPath`; resolves once it has started (or rejects with its log). */
  static async start(o: {
    netns: string;
    configPath: string;
    bpffs: string;
    dir: string;
  }): Promise<DaemonHarness> {
    compiled ??= compileForChild(join(__dirname, 'daemon-harness-main.ts'));
    const log = join(o.dir, `harness-${Date.now()}.log`);
    const fd = openSync(log, 'a');
    const child = spawn('ip', ['netns', 'exec', o.netns, process.execPath, compiled, o.configPath, o.bpffs], {
      stdio: ['pipe', 'pipe', fd],
    }) as unknown as ChildProcessWithoutNullStreams;
    closeSync(fd);
    const h = new DaemonHarness(child, log);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`harness did not start:\n${h.logTail()}`)), 30000);
      void h.exited.then((c) => {
        clearTimeout(t);
        reject(new Error(`harness exited ${c}:\n${h.logTail()}`));
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as {
          id?: number;
          ev?: string;
          ok?: boolean;
          result?: unknown;
          error?: string;
        };
        if (m.ev === 'started') {
          clearTimeout(t);
          resolve();
        } else if (m.ev === 'failed') {
          clearTimeout(t);
          reject(new Error(`daemon start failed: ${m.error}`));
        } else if (m.id !== undefined) {
          const p = h.pending.get(m.id);
          h.pending.delete(m.id);
          if (m.ok) p?.resolve(m.result);
          else p?.reject(new Error(m.error));
        }
      });
    });
    return h;
  }

  /** Sends a command; resolves with its result. */
  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (!this.alive) return Promise.reject(new Error(`harness exited ${this.code}`));
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.log, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Stops the daemon gracefully; SIGKILL if it does not exit within 10 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    await this.call('stop').catch(() => undefined);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10000);
    await this.exited;
    clearTimeout(t);
  }
}
