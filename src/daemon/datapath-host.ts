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

/** An open balancer: its maps (the Datapath) and the kernel objects around them. */
export interface OpenedDatapath {
  readonly datapath: Datapath;
  /** Pinned state was adopted (a restart), not loaded fresh. */
  readonly adopted: boolean;
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
}
