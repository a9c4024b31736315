// cliNodeFlags: the benches start the daemon with the Node flags of the CLI's shebang (where the product keeps
// them), so what they measure is what the image, setup.sh's wrapper and the npm bin run.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cliNodeFlags } from '../../scripts/bench/lib/proc';

describe('cliNodeFlags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peak-node-flags-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (first: string): string => {
    const f = join(dir, `m${Math.random().toString(36).slice(2)}.js`);
    writeFileSync(f, `${first}\n'use strict';\n`);
    return f;
  };

  it("reads the CLI's own shebang: env -S node with a young generation of 2 x 4 MB, gc(), no pretenuring and a bounded inlining for the daemon", () => {
    expect(cliNodeFlags(resolve(__dirname, '../../src/cli/main.ts'))).toEqual([
      '--max-semi-space-size=4',
      '--expose-gc',
      '--no-allocation-site-pretenuring',
      '--max-inlined-bytecode-size=60',
    ]);
  });

  it('reads flags, or none, and refuses a first line that is not a node shebang', () => {
    expect(cliNodeFlags(file('#!/usr/bin/env node'))).toEqual([]);
    expect(cliNodeFlags(file('#!/usr/bin/env -S node --a=1 --b'))).toEqual(['--a=1', '--b']);
    expect(() => cliNodeFlags(file('#!/bin/sh'))).toThrow('is not a node shebang');
    expect(() => cliNodeFlags(file("'use strict';"))).toThrow('is not a node shebang');
  });
});
