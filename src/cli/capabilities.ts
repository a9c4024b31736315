// Effective capabilities (/proc/self/status CapEff) and what loading BPF and attaching XDP needs of them.
import { readFileSync } from 'node:fs';

/** Capability numbers (linux/capability.h). */
export const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;
export type CapName = keyof typeof CAP;

/**
 * What the decap commands (`decap run|attach|detach`) need. PERFMON too: without it the verifier refuses the
 * decap program on Linux 6.18 ("pointer arithmetic with it prohibited for !root", seen with
 * setpriv --bounding-set=-all,+bpf,+net_admin); the backend DaemonSet and the pod-mode example add it.
 */
export const DECAP_CAPABILITIES: readonly CapName[] = ['NET_ADMIN', 'BPF', 'PERFMON'];

/** The CapEff bit mask of a /proc/<pid>/status text, or null when it has none. */
export function parseCapEff(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : null;
}

export function hasCap(eff: bigint, cap: CapName): boolean {
  return ((eff >> BigInt(CAP[cap])) & 1n) === 1n;
}

/** What loading BPF and attaching XDP takes: NET_ADMIN (attach, netlink), BPF (programs, maps) and PERFMON
 * (the verifier then treats the loader as it treats root, so the program loaded is the one tested). */
export const BPF_CAPS: readonly CapName[] = ['NET_ADMIN', 'BPF', 'PERFMON'];

/**
 * Which of `needs` `eff` lacks. SYS_ADMIN stands in for BPF and PERFMON, as the kernel allows (and as
 * kernels before 5.8, which have neither, require).
 */
export function missingCapabilities(eff: bigint, needs: readonly CapName[] = BPF_CAPS): CapName[] {
  const admin = hasCap(eff, 'SYS_ADMIN');
  return needs.filter((c) => !hasCap(eff, c) && !(admin && (c === 'BPF' || c === 'PERFMON')));
}

/** This process's effective capabilities, or null when /proc does not say (not Linux, no procfs). */
export function effectiveCapabilities(): bigint | null {
  try {
    return parseCapEff(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Why this process cannot do `what`, or null when it can: capabilities decide, not the uid (root without
 * them, in a container, is refused; a user granted them is not). Without /proc: root or not.
 */
export function privilegeProblem(
  what: string,
  o: { needs?: readonly CapName[]; eff?: bigint | null } = {},
): string | null {
  const needs = o.needs ?? BPF_CAPS;
  const eff = o.eff === undefined ? effectiveCapabilities() : o.eff;
  const names = needs.map((c) => `CAP_${c}`);
  const list = `${names.slice(0, -1).join(', ')}${names.length > 1 ? ' and ' : ''}${names[names.length - 1]}`;
  if (eff === null) {
    if (typeof process.getuid === 'function' && process.getuid() !== 0)
      return `${what} needs root (${list}): run it with sudo`;
    return null;
  }
  const missing = missingCapabilities(eff, needs);
  if (missing.length === 0) return null;
  return (
    `${what} needs root, or the capabilities ${list} ` +
    `(this process lacks ${missing.map((c) => `CAP_${c}`).join(', ')}): run it with sudo, or grant them ` +
    `(e.g. systemd AmbientCapabilities=, setpriv --ambient-caps, a container's capabilities.add)`
  );
}
