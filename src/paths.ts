// Where the build puts its artefacts, resolved from the package root (works from src/ via ts and dist/src/).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

function findRoot(start: string): string {
  let dir = start;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'CMakeLists.txt'))) return dir;
    dir = resolve(dir, '..');
  }
  throw new Error(`peak-xdp package root not found above ${start}`);
}

/** The repository / package root. */
export const packageRoot = findRoot(__dirname);
/** Compiled BPF objects (`build/bpf/<name>.bpf.o`). */
export const bpfObjectDir = process.env.PEAK_XDP_BPF_DIR ?? join(packageRoot, 'build', 'bpf');
/** The native addon. */
export const addonPath = join(packageRoot, 'build', 'Release', 'peak_xdp.node');

export function bpfObjectPath(name: string): string {
  return join(bpfObjectDir, `${name}.bpf.o`);
}
