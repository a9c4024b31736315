#!/usr/bin/env node
// Records what git says about this checkout (describe, commit) in dist/version.json at build time;
// src/version.ts turns it into the version. Outside a git checkout an existing file is kept.
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS, runs before tsc */
const { execFileSync } = require('node:child_process');
const { existsSync, mkdirSync, readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const out = join(root, 'dist', 'version.json');

const git = (args) => {
  try {
    return execFileSync('git', args, {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
};

const commit = git(['rev-parse', 'HEAD']);
if (commit === null) {
  if (!existsSync(out))
    process.stderr.write("gen-version: not a git checkout; the version is package.json's\n");
  process.exit(0);
}
const facts = {
  describe: git(['describe', '--tags', '--always', '--dirty', '--match', 'v[0-9]*']),
  commit,
};
const text = `${JSON.stringify(facts, null, 2)}\n`;
if (existsSync(out) && readFileSync(out, 'utf8') === text) process.exit(0);
mkdirSync(join(root, 'dist'), { recursive: true });
writeFileSync(out, text);
