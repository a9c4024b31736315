// Where a node's programs and maps are pinned: <bpffs>/peak-xdp/<network namespace>/<interface>/.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_BPFFS = '/sys/fs/bpf';

/** The bpffs root: --bpffs flag, then PEAK_XDP_BPFFS, then /sys/fs/bpf. */
export function bpffsRoot(flag?: string): string {
  return flag ?? process.env.PEAK_XDP_BPFFS ?? DEFAULT_BPFFS;
}

/** A name for the current network namespace: its `ip netns` name, "root" for PID 1's, else "ns-<inode>". */
export function currentNetnsName(): string {
  const self = statSync('/proc/self/ns/net');
  try {
    const init = statSync('/proc/1/ns/net');
    if (init.ino === self.ino && init.dev === self.dev) return 'root';
  } catch {
    // /proc/1 not visible (containers with their own PID namespace): fall through to names and inode.
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
  return `ns-${self.ino}`;
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
