// Who may touch a pin directory: capabilities (not the uid), one lock holder per pin directory, trusted pin
// paths only, and the start checks that fail before the datapath is touched.
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bgpConfigSchema } from '../../src/bgp/config';
import {
  BPF_CAPS,
  DECAP_CAPABILITIES,
  CAP,
  missingCapabilities,
  parseCapEff,
  privilegeProblem,
} from '../../src/cli/capabilities';
import {
  acquirePinLock,
  devMajorMinor,
  flockHolderPid,
  parseHolderNote,
  PinDirBusy,
  pinLockPath,
} from '../../src/daemon/lock';
import { securePinPath, untrustedDirReason, UntrustedPinPath } from '../../src/daemon/pins';
import { bgpListenAddress, listenHint, trialListen } from '../../src/daemon/preflight';

const bits = (...caps: (keyof typeof CAP)[]): bigint => caps.reduce((m, c) => m | (1n << BigInt(CAP[c])), 0n);

describe('capabilities decide, not the uid', () => {
  it('parses CapEff from /proc/<pid>/status', () => {
    const status =
      'Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\nCapBnd:\t000001ffffffffff\n';
    expect(parseCapEff(status)).toBe(0xc000001000n);
    expect(parseCapEff('Name:\tnode\n')).toBeNull();
    // What setpriv --ambient-caps=+bpf,+net_admin,+perfmon gives uid nobody (checked on this kernel).
    expect(missingCapabilities(0xc000001000n)).toEqual([]);
  });

  it.each([
    ['root (every capability)', 0x1fffeffffffn, []],
    ['a user with BPF, NET_ADMIN and PERFMON', bits('BPF', 'NET_ADMIN', 'PERFMON'), []],
    ['SYS_ADMIN stands in for BPF and PERFMON (kernels before 5.8)', bits('SYS_ADMIN', 'NET_ADMIN'), []],
    ['nothing (uid nobody, or root in a container with every capability dropped)', 0n, BPF_CAPS],
    ['BPF and NET_ADMIN without PERFMON', bits('BPF', 'NET_ADMIN'), ['PERFMON']],
    ['SYS_ADMIN does not stand in for NET_ADMIN', bits('SYS_ADMIN'), ['NET_ADMIN']],
  ] as const)('%s', (_what, eff, missing) => {
    expect(missingCapabilities(eff)).toEqual(missing);
  });

  it('decap needs BPF, NET_ADMIN and PERFMON (the verifier refuses its program without PERFMON)', () => {
    expect(missingCapabilities(bits('BPF', 'NET_ADMIN'), DECAP_CAPABILITIES)).toEqual(['PERFMON']);
    expect(missingCapabilities(bits('BPF', 'NET_ADMIN', 'PERFMON'), DECAP_CAPABILITIES)).toEqual([]);
  });

  it('says what is missing and how to get it; nothing when all is there', () => {
    const why = privilegeProblem('attach', { eff: bits('NET_ADMIN') });
    expect(why).toMatch(
      /^attach needs root, or the capabilities CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON \(this process lacks CAP_BPF, CAP_PERFMON\): run it with sudo, or grant them/,
    );
    expect(privilegeProblem('attach', { eff: bits('BPF', 'NET_ADMIN', 'PERFMON') })).toBeNull();
    // This test process (root here) is let through by its capabilities, whatever they are.
    expect(privilegeProblem('x', { eff: 0x1fffeffffffn })).toBeNull();
  });
});

describe('pin directory lock: one holder, named, gone with its holder', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'peak-lock-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const opts = (command: string) => ({
    bpffs: dir,
    netns: 'ns1',
    ifname: 'eth0',
    pinDir: join(dir, 'peak-xdp', 'ns1', 'eth0'),
    command,
    dir: join(dir, 'run', 'locks'),
  });

  it('a second taker is refused with the pin directory, the holder pid and the lock path; release frees it', () => {
    const a = acquirePinLock(opts('daemon'));
    let err: unknown;
    try {
      acquirePinLock(opts('attach'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PinDirBusy);
    const busy = err as PinDirBusy;
    expect(busy.holder).toMatchObject({ pid: process.pid, command: 'daemon' });
    expect(busy.lockPath).toBe(a.path);
    expect(busy.message).toContain(
      `pin directory ${opts('x').pinDir} is held by peak-xdp daemon (pid ${process.pid}`,
    );
    a.release();
    // The file goes with the release; the next taker makes a new one.
    expect(existsSync(a.path)).toBe(false);
    const b = acquirePinLock(opts('attach'));
    b.release();
    a.release(); // idempotent
  });

  it('names the lock after the bpffs instance, the namespace and the interface', () => {
    const p = pinLockPath(opts('x'));
    const st = statSync(dir, { bigint: true });
    expect(p).toBe(join(dir, 'run', 'locks', `ns1+eth0+bpffs-${st.dev}-${st.ino}.lock`));
    expect(pinLockPath({ ...opts('x'), ifname: 'eth1' })).not.toBe(p);
  });

  it('a child the holder spawns does not inherit the lock (O_CLOEXEC)', async () => {
    const lock = acquirePinLock(opts('daemon'));
    const child = spawn('sleep', ['5'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const fds = readdirSync(`/proc/${child.pid}/fd`).map((f) => {
        try {
          return readlinkSync(`/proc/${child.pid}/fd/${f}`);
        } catch {
          return '';
        }
      });
      expect(fds.length).toBeGreaterThan(0);
      expect(fds).not.toContain(lock.path);
      // Our own process does hold it.
      const ours = readdirSync('/proc/self/fd').map((f) => {
        try {
          return readlinkSync(`/proc/self/fd/${f}`);
        } catch {
          return '';
        }
      });
      expect(ours).toContain(lock.path);
    } finally {
      child.kill('SIGKILL');
      lock.release();
    }
  });

  it('refuses a lock directory others can write to', () => {
    const locks = join(dir, 'run', 'locks');
    mkdirSync(locks, { recursive: true });
    chmodSync(locks, 0o777);
    expect(() => acquirePinLock(opts('daemon'))).toThrow(
      /refusing the lock directory: .* writable by group or others/,
    );
  });

  it('reads the holder pid from /proc/locks (and skips waiters and other files)', () => {
    const text = [
      '1: POSIX  ADVISORY  WRITE 99 00:19:1234 0 EOF',
      '2: FLOCK  ADVISORY  WRITE 4321 00:19:777 0 EOF',
      '2: -> FLOCK  ADVISORY  WRITE 5555 00:19:777 0 EOF',
      '3: FLOCK  ADVISORY  WRITE 1111 103:03:777 0 EOF',
      '',
    ].join('\n');
    expect(flockHolderPid(text, { major: 0, minor: 0x19, ino: 777n })).toBe(4321);
    expect(flockHolderPid(text, { major: 0x103, minor: 3, ino: 777n })).toBe(1111);
    expect(flockHolderPid(text, { major: 0, minor: 0x19, ino: 1234n })).toBeNull();
    expect(
      flockHolderPid('1: FLOCK  ADVISORY  WRITE 0 00:19:777 0 EOF', { major: 0, minor: 0x19, ino: 777n }),
    ).toBeNull();
    // glibc dev_t encoding: makedev(259, 3) and makedev(0, 25).
    expect(devMajorMinor(66307n)).toEqual({ major: 259, minor: 3 });
    expect(devMajorMinor(25n)).toEqual({ major: 0, minor: 25 });
    expect(parseHolderNote('{"pid":7,"command":"daemon","since":"t"}')).toEqual({
      pid: 7,
      command: 'daemon',
      since: 't',
    });
    expect(parseHolderNote('')).toEqual({ pid: null, command: null, since: null });
  });
});

describe('pin paths: created 0700, refused when others could tamper with them', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'peak-pins-'));
    chmodSync(root, 0o1777); // like a bpffs root
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));
  const dir = () => join(root, 'peak-xdp', 'ns1', 'eth0');

  it('creates every level 0700; a missing path is fine without create', () => {
    securePinPath({ bpffs: root, dir: dir(), create: false });
    expect(existsSync(join(root, 'peak-xdp'))).toBe(false);
    securePinPath({ bpffs: root, dir: dir(), create: true });
    for (const p of ['peak-xdp', 'peak-xdp/ns1', 'peak-xdp/ns1/eth0'])
      expect((statSync(join(root, p)).mode & 0o7777).toString(8)).toBe('700');
    securePinPath({ bpffs: root, dir: dir(), create: false });
  });

  it.each([
    ['a group/world-writable level', (r: string) => chmodSync(join(r, 'peak-xdp', 'ns1'), 0o777), /peak-xdp\/ns1 is writable by group or others \(mode 0777\)/],
    ['a symlink in the path', (r: string) => { rmSync(join(r, 'peak-xdp'), { recursive: true }); mkdirSync(join(r, 'elsewhere')); symlinkSync(join(r, 'elsewhere'), join(r, 'peak-xdp')); }, /peak-xdp is not a directory/],
    ['a bpffs root writable by others without the sticky bit', (r: string) => chmodSync(r, 0o777), /without the sticky bit/],
  ])('refuses %s', (_what, spoil, message) => {
    securePinPath({ bpffs: root, dir: dir(), create: true });
    spoil(root);
    let err: unknown;
    try {
      securePinPath({ bpffs: root, dir: dir(), create: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UntrustedPinPath);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/^refusing the pin path: /);
  }); // prettier-ignore

  it('trusts root and this user only, and no group/world write bit', () => {
    const d = { uid: 0, mode: 0o40700, isDirectory: true };
    expect(untrustedDirReason('/p', d, 0)).toBeNull();
    expect(untrustedDirReason('/p', { ...d, uid: 1000 }, 1000)).toBeNull();
    expect(untrustedDirReason('/p', { ...d, mode: 0o40755 }, 0)).toBeNull();
    expect(untrustedDirReason('/p', { ...d, uid: 65534 }, 0)).toBe(
      "/p is owned by uid 65534, not by root or this process's user (uid 0)",
    );
    expect(untrustedDirReason('/p', { ...d, mode: 0o40775 }, 0)).toMatch(
      /writable by group or others \(mode 0775\)/,
    );
    expect(untrustedDirReason('/p', { ...d, mode: 0o41777 }, 0)).toMatch(/writable by group or others/);
    expect(untrustedDirReason('/p', { ...d, isDirectory: false }, 0)).toMatch(/not a directory/);
  });
});

describe('start checks that fail before the datapath is touched', () => {
  const bgp = (extra: Record<string, unknown>) =>
    bgpConfigSchema.parse({
      asn: 65001,
      routerId: '10.0.0.1',
      peers: [{ address: '10.0.0.2', asn: 65000, ...extra }],
    });

  it('knows when BGP listens, and where', () => {
    expect(bgpListenAddress(bgp({}))).toBeNull();
    expect(bgpListenAddress(bgp({ passive: true }))).toEqual({ address: '::', port: 179 });
    expect(bgpListenAddress({ ...bgp({}), listen: { address: '127.0.0.1', port: 1179 } })).toEqual({
      address: '127.0.0.1',
      port: 1179,
    });
  });

  it('a trial listen fails with the address, the error and what to do; a free port passes and is free again', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const port = (holder.address() as { port: number }).port;
    try {
      await expect(trialListen({ host: '127.0.0.1', port, what: 'admin.listen' })).rejects.toThrow(
        new RegExp(
          `^admin.listen: cannot listen on 127.0.0.1:${port}: listen EADDRINUSE.*another process listens there`,
        ),
      );
    } finally {
      await new Promise((r) => holder.close(r));
    }
    await trialListen({ host: '127.0.0.1', port, what: 'x' });
    await trialListen({ host: '127.0.0.1', port, what: 'x' }); // closed again after the first
    // TEST-NET-3: never an address of this host.
    await expect(trialListen({ host: '203.0.113.7', port: 9470, what: 'admin.listen' })).rejects.toThrow(
      /EADDRNOTAVAIL.*no such address on this host/,
    );
    expect(listenHint('EACCES', 179)).toMatch(/CAP_NET_BIND_SERVICE/);
    expect(listenHint('EACCES', 8179)).toBe('');
  });
});
