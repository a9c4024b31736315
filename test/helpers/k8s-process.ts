// Runs the Kubernetes source runner in a child process: transpiles it and its relative imports into dist/, spawns
// node, collects its JSON lines and waits for the ones a test expects.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import type { RunnerConfig } from './k8s-runner';

const root = resolve(__dirname, '..', '..');
const outRoot = join(root, 'dist');

function resolveTs(from: string, spec: string): string {
  const base = resolve(dirname(from), spec);
  for (const c of [`${base}.ts`, join(base, 'index.ts')]) if (existsSync(c)) return c;
  throw new Error(`cannot resolve ${spec} from ${from}`);
}

/** Transpiles `entry` and every file it reaches through relative imports into dist/ (same layout); returns the .js path. */
export function compileForChild(entry: string): string {
  const opts: ts.CompilerOptions = {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    resolveJsonModule: true,
  };
  const seen = new Set<string>();
  const queue = [resolve(entry)];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g))
      queue.push(resolveTs(file, m[1]!));
    const js = ts.transpileModule(src, { compilerOptions: opts, fileName: file }).outputText;
    const target = join(outRoot, relative(root, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(target), { recursive: true });
    // Write-then-rename: parallel test files may compile the same modules at once.
    const tmp = `${target}.${process.pid}.tmp`;
    writeFileSync(tmp, js);
    renameSync(tmp, target);
  }
  return join(outRoot, relative(root, resolve(entry))).replace(/\.ts$/, '.js');
}

export interface RunnerLine {
  ev: string;
  atMs: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  [k: string]: any;
}

export class Runner {
  readonly lines: RunnerLine[] = [];
  readonly stderr: string[] = [];
  private readonly waiters: { pred: (l: RunnerLine) => boolean; resolve: (l: RunnerLine) => void }[] = [];
  private exited: Promise<number | null>;
  private code: number | null | undefined;

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let line: RunnerLine;
        try {
          line = JSON.parse(text) as RunnerLine;
        } catch {
          this.stderr.push(`(stdout) ${text}`);
          continue;
        }
        this.lines.push(line);
        for (const w of [...this.waiters])
          if (w.pred(line)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(line);
          }
      }
    });
    child.stderr.on('data', (d: Buffer) => this.stderr.push(d.toString('utf8')));
    this.exited = new Promise((r) =>
      child.on('exit', (c) => {
        this.code = c;
        r(c);
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The first line (already seen from index `from`, or future) matching pred. */
  waitFor(
    pred: (l: RunnerLine) => boolean,
    opts: { timeoutMs?: number; from?: number; what?: string } = {},
  ): Promise<RunnerLine> {
    const hit = this.lines.slice(opts.from ?? 0).find(pred);
    if (hit) return Promise.resolve(hit);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolvePromise, reject) => {
      const w = {
        pred,
        resolve: (l: RunnerLine) => {
          clearTimeout(t);
          resolvePromise(l);
        },
      };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        const tail = this.lines.slice(-8).map((l) => JSON.stringify(l).slice(0, 300));
        reject(
          new Error(
            `runner ${this.pid}: no ${opts.what ?? 'matching line'} within ${timeoutMs} ms (exit ${this.code});\n` +
              `last lines:\n${tail.join('\n')}\nstderr: ${this.stderr.join('').slice(-1500)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** The VIP sets the runner published, in order. */
  vipSets(): RunnerLine[] {
    return this.lines.filter((l) => l.ev === 'vips');
  }

  send(cmd: 'status' | 'metrics' | 'stop'): void {
    this.child.stdin.write(`${cmd}\n`);
  }

  async status(): Promise<RunnerLine> {
    const from = this.lines.length;
    this.send('status');
    return this.waitFor((l) => l.ev === 'status', { from, what: 'status' });
  }

  async metrics(): Promise<string> {
    const from = this.lines.length;
    this.send('metrics');
    return (await this.waitFor((l) => l.ev === 'metrics', { from, what: 'metrics' })).text as string;
  }

  /** Graceful stop (releases the Lease); resolves with the exit code. */
  async stop(timeoutMs = 10_000): Promise<number | null> {
    if (this.code !== undefined) return this.code;
    this.send('stop');
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const c = await this.exited;
    clearTimeout(t);
    return c;
  }

  /** Crash (SIGKILL): no Lease release, nothing cleaned. */
  async kill(): Promise<void> {
    if (this.code !== undefined) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

let compiled: string | null = null;

/** Starts a runner with this config. */
export function startRunner(cfg: RunnerConfig): Runner {
  compiled ??= compileForChild(join(__dirname, 'k8s-runner.ts'));
  const child = spawn(process.execPath, [compiled, JSON.stringify(cfg)], {
    cwd: root,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NODE_NO_WARNINGS: '1' },
  });
  return new Runner(child);
}
