// Gate for tests that need root (BPF, netns): in CI they must run, so a missing privilege fails loudly;
// elsewhere they are skipped with a printed reason.
import { existsSync } from 'node:fs';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const inCI = process.env.CI === 'true' || process.env.CI === '1';

function reason(): string | null {
  if (!isRoot) return 'needs root (BPF, network namespaces)';
  if (!existsSync('/sys/fs/bpf')) return 'needs bpffs at /sys/fs/bpf';
  return null;
}

/** describe() for privileged suites. */
export function describePrivileged(name: string, fn: () => void): void {
  const why = reason();
  if (why === null) {
    describe(name, fn);
    return;
  }
  if (inCI) {
    describe(name, () => {
      it('has the privileges CI must provide', () => {
        throw new Error(`CI=true but ${name} cannot run: ${why}`);
      });
    });
    return;
  }
  console.warn(`SKIPPED ${name}: ${why}`);
  const skipDescribe = describe.skip;
  skipDescribe(name, fn);
}
