// The pid helpers refuse anything that is not one process: process.kill(0) would signal jest's own process group.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidAlive, pidFromFile, readPidFile, signalPid } from '../../scripts/lib/pids';

describe('scripts/lib/pids', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peak-pids-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([0, -1, -process.pid, 1.5, NaN])('signalPid refuses pid %p and signals nothing', (pid) => {
    expect(() => signalPid(pid, 0)).toThrow(/refusing pid/);
  });

  it('signalPid reaches a live process and reports a gone one as false', () => {
    expect(signalPid(process.pid, 0)).toBe(true);
    expect(signalPid(2 ** 22 + 1, 0)).toBe(false); // above pid_max's ceiling: never a live process
  });

  it('pidAlive: self yes, 0 and negatives no', () => {
    expect(pidAlive(process.pid)).toBe(true);
    expect(pidAlive(0)).toBe(false);
    expect(pidAlive(-1)).toBe(false);
  });

  it('pidFromFile: missing, empty and partial files give null; a live pid is returned', () => {
    const f = join(dir, 'a.pid');
    expect(pidFromFile(f)).toBeNull();
    writeFileSync(f, '');
    expect(pidFromFile(f)).toBeNull();
    writeFileSync(f, '12x');
    expect(pidFromFile(f)).toBeNull();
    writeFileSync(f, `${process.pid}\n`);
    expect(pidFromFile(f)).toBe(process.pid);
  });

  it('readPidFile waits for a pid written late (the forking-daemon race) and times out naming the file', async () => {
    const f = join(dir, 'late.pid');
    writeFileSync(f, '');
    setTimeout(() => writeFileSync(f, `${process.pid}\n`), 100);
    await expect(readPidFile(f, { timeoutMs: 3000 })).resolves.toBe(process.pid);
    const g = join(dir, 'never.pid');
    writeFileSync(g, '');
    await expect(readPidFile(g, { timeoutMs: 100 })).rejects.toThrow(/never\.pid.*no live pid/);
  });
});
