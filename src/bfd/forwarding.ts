// Forwarding-plane fate: is the balancer program still attached to the interface? Uses the datapath's
// queryXdp / pinned-program lookups (the daemon's attach check asks the same question).
import { BpfProgram, queryXdp } from '../datapath/bpf';
import { BALANCER_PROGRAM } from '../datapath/kernel';

export interface ForwardingVerdict {
  ok: boolean;
  /** Why not, in words; null when ok. */
  reason: string | null;
}

/** What BfdProcess asks; synchronous, its wall time counts as its cost. */
export interface ForwardingCheck {
  readonly interface: string;
  readonly pin: string | null;
  check(): ForwardingVerdict;
}

/**
 * The balancer is attached to `interface`: with `pin`, the attached program is the pinned one (same id);
 * without, an XDP program named like ours is attached (or one whose name we may not read).
 */
export function xdpForwardingCheck(o: { interface: string; pin: string | null }): ForwardingCheck {
  return {
    interface: o.interface,
    pin: o.pin,
    check(): ForwardingVerdict {
      let progId: number;
      try {
        progId = queryXdp({ ifname: o.interface }).progId;
      } catch (e) {
        return { ok: false, reason: `cannot query XDP on ${o.interface}: ${(e as Error).message}` };
      }
      if (progId === 0) return { ok: false, reason: `no XDP program attached to ${o.interface}` };
      if (o.pin) {
        let pinned: BpfProgram;
        try {
          pinned = BpfProgram.fromPin(o.pin);
        } catch (e) {
          return { ok: false, reason: `pinned program ${o.pin} unreadable: ${(e as Error).message}` };
        }
        try {
          const id = pinned.id;
          return id === progId
            ? { ok: true, reason: null }
            : { ok: false, reason: `${o.interface} runs program ${progId}, not the pinned balancer ${id}` };
        } finally {
          pinned.close();
        }
      }
      try {
        const p = BpfProgram.fromId(progId);
        try {
          const name = p.info().name;
          return name === BALANCER_PROGRAM
            ? { ok: true, reason: null }
            : { ok: false, reason: `${o.interface} runs XDP program ${progId} "${name}", not the balancer` };
        } finally {
          p.close();
        }
      } catch {
        // Without CAP_SYS_ADMIN a program cannot be opened by id: an attached program is taken as ours.
        return { ok: true, reason: null };
      }
    },
  };
}
