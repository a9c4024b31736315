// The BPF objects build on a fresh Debian 12: their includes stay within the kernel's uapi headers and libbpf's,
// never glibc's (under -target bpf glibc's <gnu/stubs.h> wants stubs-32.h, which only libc6-dev-i386 has).
// Runs the build's own clang commands (from ninja) in dependency mode, so a new include is checked as built.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const root = join(__dirname, '..', '..');
const build = join(root, 'build');

/** Each BPF compile command of the build graph, rewritten to list the headers it reads. */
function dependencyCommands(): { source: string; command: string }[] {
  const all = execFileSync('ninja', ['-C', build, '-t', 'commands', 'bpf_objects'], { encoding: 'utf8' });
  return all
    .split('\n')
    .filter((l) => / -target bpf /.test(l))
    .map((l) => {
      const source = / -c (\S+\.bpf\.c) /.exec(l)?.[1];
      if (!source) throw new Error(`no source in BPF command: ${l}`);
      return { source, command: l.replace(/ -c (\S+) -o \S+$/, ' -M $1') };
    });
}

describe('BPF objects include no glibc header', () => {
  it('the build graph exists (npm test runs scripts/setup.sh first)', () => {
    expect(existsSync(join(build, 'build.ninja'))).toBe(true);
  });

  it('every BPF source, as the build compiles it, reads only uapi, asm and libbpf headers', () => {
    const cmds = dependencyCommands();
    // balancer, decap, pass, the bench programs and the test fixture: a regex that matched nothing proves nothing.
    expect(cmds.length).toBeGreaterThanOrEqual(5);
    expect(cmds.map((c) => c.source).some((s) => s.endsWith('/balancer.bpf.c'))).toBe(true);
    for (const { source, command } of cmds) {
      const deps = execFileSync('sh', ['-c', command], { encoding: 'utf8' })
        .replace(/\\\n/g, ' ')
        .split(/\s+/)
        .filter((d) => d.endsWith('.h'));
      expect(deps.length).toBeGreaterThan(0);
      const glibc = deps.filter((d) => /\/(sys|gnu|bits)\/|\/features\.h$|\/stdc-predef\.h$/.test(d));
      expect({ source, glibc }).toEqual({ source, glibc: [] });
    }
  });
});
