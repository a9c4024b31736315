// Test hosts: uniquely named network namespaces and veth pairs, removed by name in afterAll.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** Runs a command (no shell) and returns stdout; throws with stderr on failure. */
export function run(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
  }
}

/** A short unique suffix: interface names are limited to 15 characters. */
export function uniqueSuffix(): string {
  return `${(process.pid % 1000).toString(36)}${randomBytes(2).toString('hex')}`;
}

/** Creates namespaces and veth pairs and remembers them so cleanup() removes exactly those. */
export class Lab {
  readonly namespaces: string[] = [];
  readonly rootLinks: string[] = [];

  addNamespace(prefix: string): string {
    const name = `${prefix}${uniqueSuffix()}`;
    run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    this.ns(name, 'ip', ['link', 'set', 'lo', 'up']);
    return name;
  }

  /** A veth pair; each end goes to a namespace (or stays in the root namespace when null). */
  addVeth(a: { name: string; ns: string | null }, b: { name: string; ns: string | null }): void {
    run('ip', ['link', 'add', a.name, 'type', 'veth', 'peer', 'name', b.name]);
    for (const end of [a, b]) {
      if (end.ns) run('ip', ['link', 'set', end.name, 'netns', end.ns]);
      else this.rootLinks.push(end.name);
    }
  }

  /** Runs a command inside a namespace. */
  ns(name: string, cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
    return run('ip', ['netns', 'exec', name, cmd, ...args], opts);
  }

  netnsPath(name: string): string {
    return `/var/run/netns/${name}`;
  }

  cleanup(): void {
    for (const l of this.rootLinks.splice(0)) run('ip', ['link', 'del', l], { allowFail: true });
    for (const n of this.namespaces.splice(0)) run('ip', ['netns', 'del', n], { allowFail: true });
  }
}
