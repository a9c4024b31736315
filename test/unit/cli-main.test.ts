// The CLI's argument handling in-process (no kernel needed): help per command, usage errors named, numbers echoed,
// JSON documents and JSON errors, completion.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli/main';
import { JSON_API_VERSION } from '../../src/cli/output';

/** Runs the CLI with `argv`, capturing what it writes. */
async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    stdout += String(c);
    return true;
  });
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
    stderr += String(c);
    return true;
  });
  // yargs prints help and completion with console.log (which jest reroutes in its workers).
  const log = jest.spyOn(console, 'log').mockImplementation((...xs: unknown[]) => {
    stdout += `${xs.join(' ')}\n`;
  });
  const logErr = jest.spyOn(console, 'error').mockImplementation((...xs: unknown[]) => {
    stderr += `${xs.join(' ')}\n`;
  });
  // yargs --help / completion end the process after printing; keep the test process alive.
  const exit = jest.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
  try {
    const code = await main(argv);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    exit.mockRestore();
    log.mockRestore();
    logErr.mockRestore();
  }
}

/** The option names a command's --help lists. */
function optionsOf(help: string): string[] {
  return [...help.matchAll(/^\s+(?:-\w, )?--([a-z-]+)/gm)].map((m) => m[1]!).sort();
}

describe('peak-xdp help', () => {
  it('-h works like --help', async () => {
    const h = await run(['-h']);
    expect(h.stdout).toMatch(/peak-xdp <command> \[options\]/);
    expect(h.stdout).toMatch(/config <action> \[file\]/);
    expect((await run(['status', '-h'])).stdout).toMatch(/--interface/);
  });

  // Each command lists the shared options it reads, and no other.
  it.each([
    [
      'daemon',
      [
        'bpffs',
        'config',
        'detach-on-exit',
        'help',
        'helper-nice',
        'kubeconfig',
        'kubernetes',
        'log-level',
        'metrics-listen',
        'node-labels',
        'node-name',
        'tcp-probe-thread',
      ],
    ],
    ['maglev', ['backends', 'help', 'json', 'remove', 'size']],
    ['bgp', ['admin', 'help', 'json']],
    ['status', ['admin', 'bpffs', 'help', 'interface', 'json']],
    ['config', ['help', 'json']],
    [
      'attach',
      ['bpffs', 'conntrack-entries', 'help', 'interface', 'json', 'max-backends', 'max-vips', 'mode'],
    ],
  ])('%s --help lists only the options it uses', async (cmd, expected) => {
    const h = await run([cmd, '--help']);
    expect(optionsOf(h.stdout)).toEqual(expected);
  });

  it('an option a command does not use is refused (daemon --admin)', async () => {
    const r = await run(['daemon', '--config', '/nonexistent.yaml', '--admin', '127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown argument: admin/);
  });

  it('prints a completion script', async () => {
    const r = await run(['completion']);
    expect(r.stdout).toMatch(/peak-xdp/);
    expect(r.stdout).toMatch(/complete|compdef/);
  });
});

describe('peak-xdp usage errors', () => {
  it.each([
    [['ring'], /ring: give the VIP/],
    [['decap'], /decap: give the action/],
    [['config', 'validate'], /config validate: give the config FILE/],
    [['maglev'], /maglev: give --backends N/],
    [['attach'], /attach: give the interface \(--interface\/-i NAME\)|needs root/],
  ])('a missing argument is named: %j', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it.each([
    [['conntrack', '--limit', 'abc'], '--limit: "abc" is not a number'],
    [['stats', '--interval', 'soon'], '--interval: "soon" is not a number'],
    [['maglev', '--backends', 'ten'], '--backends: "ten" is not a number'],
    [['attach', '-i', 'lo', '--max-vips', '1e'], '--max-vips: "1e" is not a number'],
  ])('a bad number echoes the input: %j', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`peak-xdp: ${message}\n`);
  });

  it.each([
    ['20', '"20"'],
    ['-1', '"-1"'],
    ['1.5', '"1.5"'],
    ['ten', '"ten"'],
  ])('daemon --helper-nice %s is refused (exit 2) before anything is done', async (v, echoed) => {
    const r = await run(['daemon', '--config', '/nonexistent.yaml', `--helper-nice=${v}`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`peak-xdp: --helper-nice: ${echoed} is not an integer in 0..19\n`);
  });

  it.each([
    [['stats', '--watch', '--count', '-1'], '--count: -1 is not a positive integer'],
    [['stats', '--watch', '--count', '0'], '--count: 0 is not a positive integer'],
    [['stats', '--watch', '--count', '1.5'], '--count: 1.5 is not a positive integer'],
    [['stats', '--count', '2'], '--count: only with --watch'],
    [['stats', '--interval', '0'], '--interval: 0 is not in (0, 3600]'],
  ])('stats refuses %j', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`peak-xdp: ${message}\n`);
    expect(r.stdout).toBe('');
  });

  it('with --json an error is a JSON document on stdout, with the same exit code', async () => {
    const r = await run(['conntrack', '--limit', 'abc', '--json']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      apiVersion: JSON_API_VERSION,
      kind: 'Error',
      error: { message: '--limit: "abc" is not a number', exitCode: 2 },
    });
    const unknown = await run(['nope', '--json']);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout).error.message).toMatch(/^unknown command "nope"/);
  });
});

describe('review of issue 13: usage', () => {
  it('conntrack flush takes only its own options; conntrack (list) keeps its own', async () => {
    const r = await run(['conntrack', 'flush', '--limit', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown argument: limit/);
    for (const bad of [
      ['-i', 'eth0'],
      ['--bpffs', '/x'],
    ]) {
      const b = await run(['conntrack', 'flush', '--all', ...bad]);
      expect(b.code).toBe(2);
      expect(b.stderr).toMatch(/Unknown argument/);
    }
    expect(optionsOf((await run(['conntrack', 'flush', '--help'])).stdout)).toEqual([
      'admin',
      'all',
      'backend',
      'help',
      'json',
      'token-file',
      'vip',
    ]);
    expect(optionsOf((await run(['conntrack', '--help'])).stdout)).toEqual(
      expect.arrayContaining(['limit', 'interface', 'bpffs', 'vip']),
    );
  });

  it.each([
    [['drain'], 'missing argument <vip> (and <backend>)'],
    [['undrain', 'web'], 'missing argument <backend>'],
    [['weight', 'web'], 'missing argument <backend>'],
  ])('a missing positional of %j is named, also with --json', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`peak-xdp: ${message}\n`);
    const j = await run([...argv, '--json']);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout).error.message).toBe(message);
  });

  it('a bad choice is one line naming argument, value and choices', async () => {
    const r = await run(['config', 'frob', 'x.yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('peak-xdp: action: "frob" is not one of "validate"\n');
  });

  it('completion --help / -h print help, not the script', async () => {
    for (const h of ['--help', '-h']) {
      const r = await run(['completion', h]);
      expect(r.stdout).not.toMatch(/compdef|complete -o/);
      expect(r.stdout).toMatch(/completion/);
    }
  });

  it('subcommands do not list --version; peak-xdp --version still prints it', async () => {
    expect(optionsOf((await run(['status', '--help'])).stdout)).not.toContain('version');
    const v = await run(['--version']);
    expect(v.stdout).toMatch(/\d+\.\d+\.\d+/);
  });
});

describe('peak-xdp maglev and config validate (no kernel)', () => {
  it('maglev --json is a versioned MaglevAnalysis document', async () => {
    const r = await run(['maglev', '--backends', '10', '--size', '251', '--remove', '1', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      apiVersion: JSON_API_VERSION,
      kind: 'MaglevAnalysis',
      size: 251,
      backends: 10,
      removed: 1,
    });
    expect((await run(['maglev', '--backends', '10', '--size', '250'])).stderr).toBe(
      'peak-xdp: --size: 250 is not a prime\n',
    );
  });

  const dir = mkdtempSync(join(tmpdir(), 'peak-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('config validate: exit 0 and a summary for a valid file', async () => {
    const p = file(
      'good.yaml',
      'interface: eth0\nvips:\n  - {name: web, address: 192.0.2.10, port: 80, backends: [{address: 10.0.0.1}]}\n',
    );
    const r = await run(['config', 'validate', p]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${p}: valid (1 VIPs, 1 backends)\n`);
  });

  it('config validate: exit 1 with every error, an unknown key hiding none; --json lists them', async () => {
    const p = file(
      'bad.yaml',
      [
        'interfce: eth0',
        'mtu: 99999',
        'vips:',
        '  - {name: web, address: 127.0.0.1, port: 80, protocl: tcp, backends: [{address: 10.0.0.1, wieght: 2}]}',
        'bgp: {asn: 0, peers: []}',
      ].join('\n'),
    );
    const r = await run(['config', 'validate', p]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual(
      expect.arrayContaining([
        'error    interfce: is not a known key (did you mean "interface"?)',
        'error    interface: is required',
        'error    mtu: 99999 is above the maximum 9216',
        'error    vips[0].backends[0].wieght: is not a known key (did you mean "weight"?)',
        'error    vips[0].protocl: is not a known key (did you mean "protocol"?)',
        'error    vips[0].address: "127.0.0.1" is a loopback address, not a VIP address',
        'error    bgp.asn: 0 is below the minimum 1',
        'error    bgp.peers: needs at least 1 entries, got 0',
        `${p}: invalid, 8 errors`,
      ]),
    );
    const j = await run(['config', 'validate', p, '--json']);
    expect(j.code).toBe(1);
    const doc = JSON.parse(j.stdout);
    expect(doc).toMatchObject({
      apiVersion: JSON_API_VERSION,
      kind: 'ConfigValidation',
      file: p,
      valid: false,
    });
    expect(doc.errors).toHaveLength(8);
    expect(doc.errors).toContainEqual({
      path: 'interfce',
      message: 'is not a known key (did you mean "interface"?)',
    });
  });

  it('config validate: an unreadable file is one error line, exit 1; a bad action exits 2', async () => {
    const r = await run(['config', 'validate', join(dir, 'missing.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^error {4}\(file\): cannot read ".*missing\.yaml": ENOENT$/m);
    expect((await run(['config', 'check', join(dir, 'missing.yaml')])).code).toBe(2);
  });
});
