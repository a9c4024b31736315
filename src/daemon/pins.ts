// Where a node's programs and maps are pinned: <bpffs>/peak-xdp/<network namespace>/<interface>/.
import { readdirSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_BPFFS = '/sys/fs/bpf';

/** The bpffs root: --bpffs flag, then PEAK_XDP_BPFFS, then /sys/fs/bpf. */
export function bpffsRoot(flag?: string): string {
  return flag ?? process.env.PEAK_XDP_BPFFS ?? DEFAULT_BPFFS;
}

/**
 * A name for the current network namespace: its `ip netns` name (/run/netns), else "root" (the host's, as a
 * hostNetwork DaemonSet sees it; also any unnamed namespace, where /proc/1 cannot tell us more).
 */
export function currentNetnsName(): string {
  const self = statSync('/proc/self/ns/net');
  try {
    const init = statSync('/proc/1/ns/net');
    if (init.ino === self.ino && init.dev === self.dev) return 'root';
  } catch {
    // /proc/1 not readable (sandboxes, containers with their own PID namespace): try the names.
  }
  for (const dir of ['/run/netns', '/var/run/netns']) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        const st = statSync(join(dir, n));
        if (st.ino === self.ino && st.dev === self.dev) return n;
      } catch {
        // A stale entry: skip.
      }
    }
  }
  return 'root';
}

const BPF_FS_MAGIC = 0xcafe4a11;

/** Throws a clear error unless `root` is a mounted bpffs (pins elsewhere fail, or vanish). */
export function checkBpffs(root: string): void {
  let type: number;
  try {
    type = statfsSync(root).type;
  } catch (e) {
    throw new Error(`bpffs root ${root}: ${(e as Error).message} (mount one: mount -t bpf bpf ${root})`);
  }
  if (type !== BPF_FS_MAGIC)
    throw new Error(
      `bpffs root ${root} is not a bpffs mount` +
        (root.startsWith('/sys')
          ? ' (inside `ip netns exec`, /sys/fs/bpf is not mounted: mount a bpffs outside /sys, e.g. /run/peak-xdp/bpffs, and pass --bpffs or PEAK_XDP_BPFFS)'
          : ` (mount -t bpf bpf ${root})`),
    );
}

const SAFE = /^[A-Za-z0-9_.@-]+$/;

/** The pin directory of one balancer instance. */
export function pinDir(o: { bpffs: string; netns: string; ifname: string }): string {
  for (const [k, v] of [
    ['netns', o.netns],
    ['interface', o.ifname],
  ] as const) {
    if (!SAFE.test(v) || v === '.' || v === '..')
      throw new TypeError(`${k} "${v}" cannot be used in a pin path`);
  }
  return join(o.bpffs, 'peak-xdp', o.netns, o.ifname);
}
