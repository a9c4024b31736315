// The datapath host: what the daemon needs of a data plane beyond the Datapath contract (its pin directory,
// adopting or loading it, the XDP attachment, its pins). The kernel's is kernel-host.ts.
import type { XdpMode } from '../datapath/bpf';
import type { Datapath } from '../datapath/types';
import type { Config } from '../model/config';

/** What is attached to an interface, as far as the balancer is concerned. */
export type XdpAttachment = { kind: 'ours' } | { kind: 'none' } | { kind: 'other'; progId: number };

/** Pins that are gone (`missing`) or hold another object than ours (`foreign`), by name. */
export interface PinCheck {
  missing: string[];
  foreign: string[];
}

/** A balancer loaded to replace one an older build pinned (kernel-host.ts, pinDecision). */
export interface PendingReplace {
  /** The replacements counter's label (ReplaceReason). */
  reason: string;
  /** Every finding, for the log. */
  detail: string;
  /** Map pins without a program pin, removed with the old pins. */
  leftovers: readonly string[];
}

/** What a replace's swap did. */
export interface TakeOver {
  mode: string;
  progId: number;
  /** The program it replaced (0: nothing was attached). */
  oldProgId: number;
  /** Moving the pins failed after the swap (the pin check pins again): why. */
  pinError: string | null;
}

/** An open balancer: its maps (the Datapath) and the kernel objects around them. */
export interface OpenedDatapath {
  readonly datapath: Datapath;
  /** Pinned state was adopted (a restart), not loaded fresh. */
  readonly adopted: boolean;
  /**
   * Set (kernel host) while this balancer waits to replace one pinned by an older build: it is neither
   * attached nor pinned until takeOver, which the daemon calls once its first sync has programmed it.
   */
  readonly replacing?: PendingReplace | null;
  takeOver?(o: { ifname: string; mode: XdpMode }): Promise<TakeOver>;
  attachment(ifname: string): XdpAttachment;
  attach(o: { ifname: string; mode: XdpMode }): Promise<{ mode: string; progId: number }>;
  detach(ifname: string): Promise<void>;
  /** Reads the pins only. */
  pinCheck(): PinCheck;
  /** Pins the named objects again (the pin directory is made, safely, first). */
  repin(names: readonly string[]): void;
  /** Removes this balancer's pins, and the pin directory when nothing else is left in it. */
  unpin(): void;
  /** Removes the whole pin directory. */
  removePinDir(): void;
  /** Closes our handles (pins and the attachment keep the objects alive). */
  close(): void;
}

/** One daemon's hold on an interface's pin directory, from start to exit. */
export interface DatapathClaim {
  /** The pin directory (shown in logs, /state and /readyz). */
  readonly pins: string;
  /** Adopts the pinned balancer if there is one (refusing maps smaller than `limits`), else loads and pins one. */
  open(o: { limits: Config['limits']; ifname: string }): Promise<OpenedDatapath>;
  release(): void;
}

export interface DatapathHost {
  /** Takes the interface's pin directory (one owner per directory: a second daemon fails here). */
  claim(ifname: string): DatapathClaim;
  /**
   * Starts loading a fresh balancer for these limits (the config document's, before the rest of it is checked:
   * the kernel's verifier and map creation take ~0.25 s, on another core); a claim's open takes it when its
   * decision is a fresh or replacing load with the same map sizes. Asked again for other sizes, it closes the first
   * and loads for those. Never throws; a no-op where nothing would use it.
   */
  preload?(limits: Config['limits']): void;
  /** Closes a preloaded balancer no open took (a failed start, a stop). */
  dispose?(): void;
}
