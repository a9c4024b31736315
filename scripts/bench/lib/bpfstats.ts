// XDP program run time on the LB nodes: BPF run-time stats held on by an fd (BPF_ENABLE_STATS), read with bpftool.
import { spawn, ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import type { Host } from '../../testbed/plan';
import { run } from '../../testbed/sh';

/** bpf(2) syscall numbers by Node's os.arch(); stats stay off (null results) elsewhere. */
const BPF_SYSCALL: Record<string, number> = { x64: 321, arm64: 280 };
const BPF_ENABLE_STATS = 32;

/** Holds BPF run-time stats on while the helper lives: the kernel turns them off when its fd closes. */
export interface StatsHandle {
  /** Closes the fd (stats off again unless someone else holds them on). */
  stop(): Promise<void>;
}

/**
 * Turns BPF run-time stats on through a short python3 helper that keeps the fd until its stdin closes
 * (no global sysctl is left on if the bench dies). Resolves null when that is not possible here.
 */
export async function enableBpfStats(): Promise<StatsHandle | null> {
  const nr = BPF_SYSCALL[arch()];
  if (nr === undefined) return null;
  const py = [
    'import ctypes,sys',
    'libc=ctypes.CDLL(None,use_errno=True)',
    'attr=(ctypes.c_uint8*128)()',
    `fd=libc.syscall(${nr},${BPF_ENABLE_STATS},ctypes.byref(attr),128)`,
    'print("fd" if fd>=0 else "errno %d"%ctypes.get_errno(),flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  let child: ChildProcess;
  try {
    // Debian's interpreter first: a version-manager shim on PATH can be slow or absent under npm.
    const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
    child = spawn(python, ['-c', py], { stdio: ['pipe', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
  const ok = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    child.on('error', () => resolve(false));
    child.stdout!.setEncoding('utf8').once('data', (d: string) => {
      clearTimeout(timer);
      resolve(d.startsWith('fd'));
    });
  });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.stdin!.end();
    });
  if (!ok) {
    await stop();
    return null;
  }
  return { stop };
}

/** Cumulative run time and run count of the XDP programs attached to the given hosts' eth0. */
export interface XdpRunStats {
  runTimeNs: number;
  runCount: number;
  programs: number;
}

/**
 * Parses `bpftool prog show id N -j` output: {run_time_ns, run_cnt}. bpftool leaves both out while they are 0
 * (stats off, or no run yet), so a missing field is 0, not "unknown". null only for output that is not a program.
 */
export function parseProgStats(json: string): { runTimeNs: number; runCount: number } | null {
  const j = JSON.parse(json) as { id?: unknown; run_time_ns?: unknown; run_cnt?: unknown };
  if (typeof j !== 'object' || j === null || typeof j.id !== 'number') return null;
  const n = (v: unknown): number => (typeof v === 'number' ? v : 0);
  return { runTimeNs: n(j.run_time_ns), runCount: n(j.run_cnt) };
}

/** The XDP program id on a host's eth0, or null. */
export function xdpProgId(h: Host): number | null {
  const out = run('ip', ['-n', h.netns, '-j', '-d', 'link', 'show', h.link!.hostIf], { allowFail: true });
  if (!out.trim()) return null;
  const j = JSON.parse(out) as { xdp?: { prog?: { id?: number } } }[];
  return j[0]?.xdp?.prog?.id ?? null;
}

/** Sums the run stats of the XDP programs on these hosts; null when nothing is attached. */
export function xdpRunStats(hosts: Host[]): XdpRunStats | null {
  let runTimeNs = 0;
  let runCount = 0;
  let programs = 0;
  for (const h of hosts) {
    const id = xdpProgId(h);
    if (id === null) continue;
    const s = parseProgStats(run('bpftool', ['prog', 'show', 'id', String(id), '-j']));
    if (!s) continue;
    runTimeNs += s.runTimeNs;
    runCount += s.runCount;
    programs++;
  }
  return programs ? { runTimeNs, runCount, programs } : null;
}
