// peak-xdp version: this build's version (git tag at build time, else package.json) and commit.
import type { Argv } from 'yargs';
import { buildInfo } from '../../version';
import { GlobalArgs, withJson } from '../context';
import { emit } from '../output';

/** The text `peak-xdp version` prints: one line, version first (scripts may take the first word). */
export function formatVersion(info: { version: string; commit: string }, node: string): string {
  return `${info.version} (commit ${info.commit}, node ${node})`;
}

export function registerVersion(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'version',
    'This build: version (from the git tag at build time), commit, Node.js',
    (y2) => withJson(y2),
    (a) => {
      emit(
        a.json,
        'Version',
        { version: buildInfo.version, commit: buildInfo.commit, node: process.version },
        () => formatVersion(buildInfo, process.version),
      );
    },
  ) as unknown as Argv<GlobalArgs>;
}
