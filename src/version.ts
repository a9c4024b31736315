// The one version of this build (CLI `version`, the daemon's start line, peak_xdp_build_info): git describe
// recorded at build time in dist/version.json by scripts/gen-version.js, else package.json's version.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './paths';

export interface BuildInfo {
  /** SemVer: the tag (without its "v"), or package.json's version, with build metadata past a tag. */
  version: string;
  /** Full commit hash, or "unknown" when the build was not made from a git checkout. */
  commit: string;
}

/** What scripts/gen-version.js records. */
export interface GitFacts {
  /** `git describe --tags --always --dirty --match 'v[0-9]*'`: "v1.2.3", "v1.2.3-4-gabc1234-dirty", "abc1234". */
  describe: string | null;
  commit: string | null;
}

const TAG = /^v(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$/;
const AHEAD = /-(\d+)-g([0-9a-f]{4,40})$/;
const HASH = /^[0-9a-f]{4,40}$/;
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * The version from git facts: a tag is the version ("v1.2.3" -> "1.2.3"); commits past it or local changes
 * go into SemVer build metadata ("1.2.3+4.gabc1234.dirty"); with no tag, package.json's version carries them
 * ("0.1.0+gabc1234"). Anything else git printed is ignored (package.json's version, never a made-up one).
 */
export function resolveVersion(o: GitFacts & { packageVersion: string }): BuildInfo {
  const commit = o.commit !== null && COMMIT.test(o.commit) ? o.commit : 'unknown';
  const d = o.describe?.trim() ?? '';
  const meta = (parts: (string | false | null | undefined)[]): string => {
    const p = parts.filter((x): x is string => typeof x === 'string' && x !== '');
    return p.length > 0 ? `+${p.join('.')}` : '';
  };
  // Suffixes first (git appends them in this order): "-dirty", then "-<n>-g<hash>"; what is left is the tag.
  const dirty = d.endsWith('-dirty');
  const rest = dirty ? d.slice(0, -'-dirty'.length) : d;
  const ahead = AHEAD.exec(rest);
  const tag = TAG.exec(ahead ? rest.slice(0, ahead.index) : rest);
  if (tag)
    return { version: `${tag[1]}${meta([ahead?.[1], ahead && `g${ahead[2]}`, dirty && 'dirty'])}`, commit };
  if (HASH.test(rest))
    return { version: `${o.packageVersion}${meta([`g${rest}`, dirty && 'dirty'])}`, commit };
  return { version: o.packageVersion, commit };
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch {
    return null;
  }
}

function load(): BuildInfo {
  const pkg = readJson(join(packageRoot, 'package.json')) as { version?: unknown } | null;
  const packageVersion = typeof pkg?.version === 'string' ? pkg.version : '0.0.0';
  const facts = readJson(join(packageRoot, 'dist', 'version.json')) as Partial<GitFacts> | null;
  const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
  return resolveVersion({ describe: str(facts?.describe), commit: str(facts?.commit), packageVersion });
}

/** This build's version and commit, read once. */
export const buildInfo: Readonly<BuildInfo> = Object.freeze(load());
