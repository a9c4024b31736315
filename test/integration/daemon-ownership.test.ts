// Who owns a pin directory, on the real kernel: a user with capabilities (not uid 0) may run the CLI; a pin
// root owned by another user is refused; a start that cannot bind its admin or BGP listener changes nothing;
// a second daemon on the same pin directory refuses while the first keeps serving, and starts once the first
// is killed -9; pins removed under a running daemon are noticed and pinned again; the CLI says when pins
// are missing while a program is attached.
import { ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { BpfProgram } from '../../src/datapath/bpf';
import type { KernelDatapath } from '../../src/datapath/kernel';
import { lockDir } from '../../src/daemon/lock';
import {
  CLI_JS,
  CmdResult,
  DaemonLab,
  DaemonProcess,
  LB_ADDRESS,
  runAsync,
  StateDoc,
  waitUntil,
} from '../helpers/daemon-lab';
import { run } from '../helpers/netns';
import { describePrivileged } from '../helpers/privileged';

const NOBODY = 65534;
const CAPS = ['bpf', 'net_admin', 'perfmon'];
/** TEST-NET-3: never an address of this host. */
const NOT_HERE = '203.0.113.7';
/** A second daemon's VIP. */
const VIP_B = '10.0.0.9';

/** Everything the datapath holds that a refused start must not change. */
async function held(dp: KernelDatapath): Promise<string> {
  const vips = (await dp.listVips()).sort((a, b) => a.id - b.id);
  const tables = await Promise.all(vips.map(async (v) => [...((await dp.readTable(v.id)) ?? [])]));
  return JSON.stringify({
    config: await dp.readConfig(),
    vips,
    backends: (await dp.listBackends()).sort((a, b) => a.id - b.id),
    tables,
  });
}

describePrivileged(
  'daemon and CLI: pin directory ownership, failed starts, missing pins (real kernel)',
  () => {
    const lab = new DaemonLab({ tag: 'o', backends: 2 });
    /** A directory uid nobody may write (its lock directory and config files): /tmp is sticky. */
    const nobodyDir = mkdtempSync('/tmp/peak-own-');
    const nobodyLocks = join(nobodyDir, 'locks');
    let daemon: DaemonProcess | null = null;
    let occupant: ChildProcess | null = null;

    const base = () => lab.config({ backends: [1, 2] });
    const withVip = (address: string) => {
      const c = base();
      (c.vips as Record<string, unknown>[])[0]!.address = address;
      return c;
    };
    const pinned = async (): Promise<string> => {
      const dp = lab.adopt();
      try {
        return await held(dp);
      } finally {
        dp.close();
      }
    };
    const pinnedProgramId = (): number => {
      const p = BpfProgram.fromPin(join(lab.pinDir, 'balancer'));
      try {
        return p.id;
      } finally {
        p.close();
      }
    };
    /** Runs `peak-xdp daemon` on `cfg` expecting it to refuse to start; its exit code and output. */
    const refusedStart = (
      cfg: Record<string, unknown>,
      o: { file: string; as?: 'nobody' } = { file: 'refused.yaml' },
    ): Promise<CmdResult> => {
      const path = join(o.as ? nobodyDir : lab.dir, o.file);
      writeFileSync(path, YAML.stringify(cfg));
      chmodSync(path, 0o644);
      const args = ['daemon', '--config', path, '--bpffs', lab.bpffs];
      if (o.as)
      return lab.cliAs({ uid: NOBODY, caps: CAPS, env: { PEAK_XDP_LOCK_DIR: nobodyLocks } }, ['daemon', '--config', path], 20000); // prettier-ignore
      return runAsync('ip', ['netns', 'exec', lab.lb, process.execPath, CLI_JS, ...args], {
        timeoutMs: 20000,
      });
    };
    const nothingProgrammed = () => {
      expect(lab.lbXdpProgId()).toBe(0);
      expect(existsSync(join(lab.bpffs, 'peak-xdp', lab.lb, 'eth0'))).toBe(false);
    };

    beforeAll(async () => {
      chownSync(nobodyDir, NOBODY, NOBODY);
      chmodSync(nobodyDir, 0o755);
      await lab.start();
    }, 90000);

    afterAll(async () => {
      occupant?.kill('SIGKILL');
      await lab.cleanup();
      rmSync(nobodyDir, { recursive: true, force: true });
    }, 30000);

    it('a user with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (not root) attaches, reads and detaches; without them: 77', async () => {
    // The backends' decap pins made a root-owned 0700 pin root: a different user gets a fresh one (the
    // decap programs stay attached without their pins).
    rmSync(join(lab.bpffs, 'peak-xdp'), { recursive: true });
    const as = (args: string[]) =>
      lab.cliAs({ uid: NOBODY, caps: CAPS, env: { PEAK_XDP_LOCK_DIR: nobodyLocks } }, args);
    const a = await as(['attach', '--interface', 'eth0', '--mode', 'native', '--json']);
    expect({ code: a.code, stderr: a.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(a.stdout)).toMatchObject({ interface: 'eth0', pins: lab.pinDir, fresh: true });
    // Its pin directories: its own, 0700.
    for (const d of ['peak-xdp', `peak-xdp/${lab.lb}`, `peak-xdp/${lab.lb}/eth0`]) {
      const st = statSync(join(lab.bpffs, d));
      expect({ d, uid: st.uid, mode: (st.mode & 0o7777).toString(8) }).toEqual({ d, uid: NOBODY, mode: '700' });
    }
    const s = await as(['status', '--json']);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({ interface: 'eth0', attached: true });
    const d = await as(['detach', '--interface', 'eth0', '--purge']);
    expect({ code: d.code, stderr: d.stderr }).toEqual({ code: 0, stderr: '' });
    expect(lab.lbXdpProgId()).toBe(0);
    const none = await lab.cliAs({ uid: NOBODY }, ['status']);
    expect(none.code).toBe(77);
    expect(none.stderr).toMatch(/needs root, or the capabilities .* \(this process lacks CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON\)/);
  }, 60000); // prettier-ignore

    it('a pin root owned by another user is refused by the daemon and by attach; nothing is loaded', async () => {
      // An unprivileged user pre-creates the pin root (the bpffs root is 1777, as /sys/fs/bpf is).
      const root = join(lab.bpffs, 'peak-xdp');
      rmSync(root, { recursive: true, force: true });
      run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'mkdir', root]);
      expect(statSync(root).uid).toBe(NOBODY);
      const r = await refusedStart(base());
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`refusing the pin path: ${root} is owned by uid ${NOBODY}, not by root`);
      nothingProgrammed();
      const a = await lab.cli(['attach', '--interface', 'eth0']);
      expect(a.code).toBe(3);
      expect(a.stderr).toContain(`${root} is owned by uid ${NOBODY}`);
      nothingProgrammed();
      rmSync(root, { recursive: true });
    }, 60000);

    it('a start whose admin or BGP listener cannot bind exits non-zero and leaves no pins and no XDP program', async () => {
      const notHere = await refusedStart({ ...base(), admin: { listen: `${NOT_HERE}:9470` } });
      expect(notHere.code).toBe(1);
      expect(notHere.stderr).toContain(`admin.listen ${NOT_HERE}:9470: listen EADDRNOTAVAIL`);
      nothingProgrammed();

      // Port taken (by something else in the LB's namespace).
      occupant = spawn('ip', ['netns', 'exec', lab.lb, process.execPath, '-e', "require('net').createServer().listen(9470, '127.0.0.1', () => console.log('up'))"], { stdio: ['ignore', 'pipe', 'ignore'] }); // prettier-ignore
      await new Promise((r) => occupant!.stdout!.once('data', r));
      try {
        const busy = await refusedStart(base());
        expect(busy.code).toBe(1);
        expect(busy.stderr).toContain('admin.listen 127.0.0.1:9470: listen EADDRINUSE');
        nothingProgrammed();
      } finally {
        occupant.kill('SIGKILL');
        occupant = null;
      }

      // A passive BGP peer on port 179, run by a user with the BPF capabilities but not NET_BIND_SERVICE.
      const bgp = {
        ...base(),
        bgp: {
          asn: 65001,
          routerId: LB_ADDRESS,
          peers: [{ address: '10.10.2.1', asn: 65000, passive: true }],
        },
      };
      const r = await refusedStart(bgp, { file: 'bgp179.yaml', as: 'nobody' });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/cannot listen on :::179: listen EACCES.*CAP_NET_BIND_SERVICE/);
      nothingProgrammed();
    }, 90000);

    it('a second daemon on the same pin directory refuses, naming it and the holder; the first is unchanged and serves; after kill -9 the second starts', async () => {
      lab.writeConfig(base());
      const a = await lab.startDaemon();
      daemon = a;
      const before = await pinned();
      const readyBefore = await lab.admin('/readyz');
      expect(readyBefore.status).toBe(200);
      const prog = lab.lbXdpProgId();

      const b = await refusedStart(withVip(VIP_B), { file: 'second.yaml' });
      expect(b.code).toBe(1);
      expect(b.stderr).toContain(`pin directory ${lab.pinDir} is held by peak-xdp daemon (pid ${a.pid}`);
      // The CLI commands that write the datapath refuse too.
      for (const cmd of [['attach', '--interface', 'eth0'], ['detach', '--interface', 'eth0']]) {
      const r = await lab.cli(cmd);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 1 });
      expect(r.stderr).toMatch(new RegExp(`peak-xdp daemon \\(pid ${a.pid}.* holds ${lab.pinDir}.*stop the daemon first`));
    } // prettier-ignore

      expect(await pinned()).toBe(before);
      expect(lab.lbXdpProgId()).toBe(prog);
      const readyAfter = await lab.admin('/readyz');
      expect(readyAfter).toEqual(readyBefore);
      const seen = await lab.curlUntilSeen(['be1', 'be2']);
      expect([...seen.keys()].sort()).toEqual(['be1', 'be2']);

      // The lock's fd is close-on-exec: a child the daemon spawns cannot keep it after the daemon dies.
      const fd = readdirSync(`/proc/${a.pid}/fd`).find((f) => {
        try {
          return readlinkSync(`/proc/${a.pid}/fd/${f}`).startsWith(`${lockDir()}/${lab.lb}+eth0+`);
        } catch {
          return false;
        }
      });
      expect(fd).toBeDefined();
      const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${a.pid}/fdinfo/${fd}`, 'utf8'))![1]!;
      expect(parseInt(flags, 8) & 0o2000000).toBe(0o2000000);

      expect(await lab.signalDaemon(a, 'SIGKILL')).toBe('SIGKILL');
      lab.writeConfig(withVip(VIP_B));
      daemon = await lab.startDaemon();
      const st = await lab.state();
      expect(st.adopted).toBe(true);
      expect(st.actual!.vips.map((v) => v.key.address)).toEqual([VIP_B]);
      expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
      daemon = null;
    }, 90000);

    it('a refused start leaves an already pinned datapath as it was', async () => {
      const before = await pinned();
      const prog = lab.lbXdpProgId();
      expect(prog).toBeGreaterThan(0);
      const r = await refusedStart({ ...base(), admin: { listen: `${NOT_HERE}:9470` } });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('admin.listen');
      expect(await pinned()).toBe(before);
      expect(lab.lbXdpProgId()).toBe(prog);
      expect(pinnedProgramId()).toBe(prog);
    }, 60000);

    it('pins moved away under a running daemon: noticed (/readyz), pinned again, adopted by the next start', async () => {
      lab.writeConfig(base());
      daemon = await lab.startDaemon();
      const prog = lab.lbXdpProgId();
      // Not ".moved": bpffs refuses names with dots.
      const moved = `${lab.pinDir}-moved`;
      renameSync(lab.pinDir, moved);
      const noticed = await waitUntil(
        async () => {
          const r = await lab.admin('/readyz');
          return r.body.includes(`pin directory ${lab.pinDir} went missing`);
        },
        { timeoutMs: 10000, intervalMs: 200 },
      );
      expect(noticed).not.toBeNull();
      const r = await lab.admin('/readyz');
      // Forwarding never stopped: ready, with the reason listed.
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body).reasons.join('\n')).toMatch(
        /went missing \(balancer, vips, .*\) and was pinned again/,
      );
      expect(pinnedProgramId()).toBe(prog);
      const st = (await lab.state()) as StateDoc & { pinTrouble: { restored: boolean; count: number } };
      expect(st.pinTrouble).toMatchObject({ restored: true, count: 1 });
      const seen = await lab.curlUntilSeen(['be1', 'be2']);
      expect([...seen.keys()].sort()).toEqual(['be1', 'be2']);
      rmSync(moved, { recursive: true });

      expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
      daemon = await lab.startDaemon();
      expect((await lab.state()).adopted).toBe(true);
      expect(lab.lbXdpProgId()).toBe(prog);
      expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
      daemon = null;
    }, 90000);

    it('the CLI says "pin directory missing" (not "nothing attached") when a balancer is attached but unpinned', async () => {
      const prog = lab.lbXdpProgId();
      expect(prog).toBeGreaterThan(0);
      rmSync(lab.pinDir, { recursive: true });
      for (const args of [['status'], ['status', '--interface', 'eth0'], ['vips']]) {
        const r = await lab.cli(args);
        expect({ args, code: r.code }).toEqual({ args, code: 3 });
        expect(r.stderr).toContain(
          `pin directory missing: XDP program ${prog} is attached to eth0 but nothing is pinned at ${lab.pinDir}`,
        );
      }
      const d = await lab.cli(['detach', '--interface', 'eth0']);
      expect(d.code).toBe(0);
      expect(lab.lbXdpProgId()).toBe(0);
      const none = await lab.cli(['status']);
      expect(none.stderr).toMatch(/nothing attached: no pinned balancer/);
    }, 60000);
  },
);
