// runCommand: programs run through the addon's posix_spawn (no fork of the daemon), their output, exit, errors.
import { commandFailure, runChecked, runCommand } from '../../src/util/command';

describe('runCommand', () => {
  it('returns stdout, stderr and the exit status, and feeds the input to stdin', async () => {
    const r = await runCommand('sh', ['-c', 'cat; echo "to err" >&2; exit 3'], {
      input: 'hello\n',
      timeoutMs: 5000,
    });
    expect(r).toEqual({ code: 3, signal: null, stdout: 'hello\n', stderr: 'to err\n', error: null });
    expect(commandFailure(r)).toBe('exit 3: to err');
  });

  it('passes arguments as they are (no shell)', async () => {
    const r = await runCommand('printf', ['%s|', 'a b', "c'd", '$HOME', ''], { timeoutMs: 5000 });
    expect(r.stdout).toBe("a b|c'd|$HOME||");
    expect(r.code).toBe(0);
  });

  it('reads an output larger than a pipe holds, and a program that does not read its input ends', async () => {
    const big = await runCommand('head', ['-c', String(3 << 20), '/dev/zero'], { timeoutMs: 10_000 });
    expect(big.code).toBe(0);
    expect(big.stdout.length).toBe(3 << 20);
    const unread = await runCommand('true', [], { input: 'x'.repeat(1 << 20), timeoutMs: 10_000 });
    expect(unread).toMatchObject({ code: 0, error: null });
  });

  it('says why a program did not run', async () => {
    const r = await runCommand('peak-xdp-no-such-program', [], { timeoutMs: 5000 });
    expect(r.code).toBeNull();
    expect(r.error).toMatch(/^spawn peak-xdp-no-such-program: ENOENT/);
    await expect(runChecked('peak-xdp-no-such-program', ['a'], { timeoutMs: 5000 })).rejects.toThrow(
      /^peak-xdp-no-such-program a: spawn peak-xdp-no-such-program: ENOENT/,
    );
  });

  it('kills a program past its time, and one whose output passes the cap', async () => {
    const slow = await runCommand('sleep', ['30'], { timeoutMs: 200 });
    expect(slow).toMatchObject({ code: null, signal: null, error: 'timed out after 200 ms' });
    const chatty = await runCommand('yes', [], { timeoutMs: 10_000, maxBytes: 4096 });
    expect(chatty.error).toBe('output over 4096 bytes');
    expect(chatty.code).toBeNull();
  });

  it('names the signal that ended a program, and the child starts with default signal handling', async () => {
    const r = await runCommand('sh', ['-c', 'kill -TERM $$'], { timeoutMs: 5000 });
    expect(r).toMatchObject({ code: null, signal: 'SIGTERM', error: null });
    expect(commandFailure(r)).toBe('killed by SIGTERM');
    // Node ignores SIGPIPE; the child must not inherit that (it would see EPIPE instead of dying quietly). Signals
    // 1-31 only: glibc's posix_spawn leaves its own two internal real-time signals (32, 33) ignored.
    const status = await runCommand('sh', ['-c', 'grep SigIgn /proc/self/status'], { timeoutMs: 5000 });
    const ignored = BigInt(`0x${/^SigIgn:\s+([0-9a-f]+)$/m.exec(status.stdout)![1]}`);
    expect(ignored & 0x7fffffffn).toBe(0n);
  });

  it('runChecked returns stdout on exit 0 and throws with the command and its stderr otherwise', async () => {
    await expect(runChecked('echo', ['ok'], { timeoutMs: 5000 })).resolves.toBe('ok\n');
    await expect(runChecked('sh', ['-c', 'echo bad >&2; exit 2'], { timeoutMs: 5000 })).rejects.toThrow(
      'sh -c echo bad >&2; exit 2: exit 2: bad',
    );
  });
});
