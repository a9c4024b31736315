// Runs raw-bgp-peer-main.ts in a child process (optionally inside a network namespace) and collects its events:
// its KEEPALIVE arrival times are taken on its own event loop, whatever the process under test does.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { compileForChild } from './k8s-process';
import { announcedIn, establishedIn, RawEvent, RawPeerOptions } from './raw-bgp-peer';

let compiled: string | null = null;

export class RawPeerProcess {
  readonly events: RawEvent[] = [];
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Starts the peer; resolves once it listens (rejects with its stderr if it does not within 15 s). */
  static async start(o: RawPeerOptions & { netns?: string }): Promise<RawPeerProcess> {
    compiled ??= compileForChild(join(__dirname, 'raw-bgp-peer-main.ts'));
    const { netns, ...opts } = o;
    const argv = [compiled, JSON.stringify(opts)];
    const child = (
      netns
        ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...argv], { stdio: 'pipe' })
        : spawn(process.execPath, argv, { stdio: 'pipe' })
    ) as ChildProcessWithoutNullStreams;
    const p = new RawPeerProcess(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`raw peer did not listen: ${stderr}`)), 15000);
      void p.exited.then(() => {
        clearTimeout(t);
        reject(new Error(`raw peer exited: ${stderr}`));
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        const e = JSON.parse(line) as RawEvent | { ev: 'listening' } | { ev: 'error'; error: string };
        if (e.ev === 'listening') {
          clearTimeout(t);
          resolve();
        } else if (e.ev === 'error') {
          clearTimeout(t);
          reject(new Error(`raw peer: ${e.error}`));
        } else p.events.push(e);
      });
    });
    return p;
  }

  get established(): boolean {
    return establishedIn(this.events);
  }

  get announced(): number {
    return announcedIn(this.events);
  }

  /** Sends `count` ROUTE-REFRESH (IPv4 unicast) to the speaker. */
  refresh(count: number): void {
    this.child.stdin.write(`${JSON.stringify({ refresh: { count } })}\n`);
  }

  /** Ends the peer (bounded: SIGKILL after 3 s). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin.end(`${JSON.stringify({ exit: true })}\n`);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}
