// Broken connections, explained: for each one the client's source port, the backend it last reached, when it
// broke, and the LB nodes that held state for it at that moment.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { KernelDatapath } from '../../../src/datapath/kernel';
import { lbPinRoot, type Host, type Plan } from '../../testbed/plan';
import { runIn } from '../../testbed/sh';
import type { FailureRecord } from './loadgen';

export interface BrokenConnection {
  /** When the client saw it break (ms after the load started). */
  atMs: number;
  kind: string;
  target: string;
  sourcePort: number | null;
  /** The backend that answered last on it (null: none answered). */
  backend: string | null;
  /** LB nodes holding state for it (connection-table entry, NAT entry or socket) when it broke. */
  lbsWithState: string[];
  /** The LB count in force when it broke (the phase of the join/leave sequence). */
  lbCount: number | null;
  responses: number;
}

/**
 * Whether `/proc/net/nf_conntrack` text has an entry whose original direction is from this client address and
 * port (IPv4; the kernel prints IPv6 there in full form).
 */
export function nfConntrackHas(text: string, o: { client: string; sourcePort: number }): boolean {
  return text.split('\n').some((l) => {
    // The first src= and sport= of a line are the original direction's.
    const m = /\bsrc=(\S+) .*?\bsport=(\d+)\b/.exec(l);
    return m !== null && m[1] === o.client && Number(m[2]) === o.sourcePort;
  });
}

/** Whether `ss -Htan` text has a socket whose peer is this client address and port. */
export function ssHasPeer(text: string, o: { client: string; sourcePort: number }): boolean {
  const want = [
    `${o.client}:${o.sourcePort}`,
    `[${o.client}]:${o.sourcePort}`,
    `[::ffff:${o.client}]:${o.sourcePort}`,
  ];
  return text.split('\n').some((l) => {
    const peer = l.trim().split(/\s+/)[4];
    return peer !== undefined && want.includes(peer);
  });
}

/** LB count at `atMs` of a join/leave sequence: the first phase, then each change from its time on. */
export function lbCountAt(o: {
  first: number;
  changes: { atMs: number; lbs: number }[];
  atMs: number;
}): number {
  let n = o.first;
  for (const c of o.changes) if (c.atMs <= o.atMs) n = c.lbs;
  return n;
}

/** A failure record of a broken connection (or failed request) as the bench keeps it. */
export function brokenFrom(
  f: FailureRecord,
  o: { t0EpochMs: number; lbsWithState: string[]; lbCount: number | null },
): BrokenConnection {
  return {
    atMs: f.at - o.t0EpochMs,
    kind: f.kind,
    target: f.target,
    sourcePort: f.localPort,
    backend: f.backend,
    lbsWithState: o.lbsWithState,
    lbCount: o.lbCount,
    responses: f.responses,
  };
}

/**
 * LB nodes that hold state for a client connection now: a peak-xdp connection-table entry (pinned maps), a
 * kernel conntrack entry (NAT) or a socket (proxies). The router's ECMP choice cannot be recomputed from
 * outside on veth (the router hashes with the sender socket's own flow hash), so the nodes are asked instead.
 */
export async function lbsHoldingFlow(o: {
  plan: Plan;
  lbs: Host[];
  client: string;
  sourcePort: number;
  peak: boolean;
}): Promise<string[]> {
  const out: string[] = [];
  for (const lb of o.lbs) {
    let has = false;
    if (o.peak) {
      const root = join(lbPinRoot(o.plan, lb), 'peak-xdp');
      for (const ns of existsSync(root) ? readdirSync(root) : []) {
        const dir = join(root, ns, lb.link!.hostIf);
        if (!existsSync(dir)) continue;
        const dp = KernelDatapath.adopt({ pinDir: dir });
        try {
          has ||= (await dp.conntrack()).some((e) => e.source === o.client && e.sourcePort === o.sourcePort);
        } finally {
          dp.close();
        }
      }
    } else {
      const ct = runIn(lb.netns, 'cat', ['/proc/net/nf_conntrack'], { allowFail: true });
      const ss = runIn(lb.netns, 'ss', ['-Htan'], { allowFail: true });
      has = nfConntrackHas(ct, o) || ssHasPeer(ss, o);
    }
    if (has) out.push(lb.name);
  }
  return out;
}
