// The kernel's datapath host: pins under bpffs (one lock per pin directory), KernelDatapath adopted from its pins
// or loaded and pinned, attached with XDP.
import { existsSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfProgram, queryXdp, type XdpMode } from '../datapath/bpf';
import {
  BALANCER_PROGRAM,
  balancerMapSizes,
  inspectBalancerPins,
  KernelDatapath,
  unpinBalancer,
} from '../datapath/kernel';
import type { Config } from '../model/config';
import { limitsOfText } from '../model/schema';
import { formatOf, readConfigFileAhead } from '../sources/file/load';
import type {
  DatapathClaim,
  DatapathHost,
  OpenedDatapath,
  PendingReplace,
  TakeOver,
  XdpAttachment,
} from './datapath-host';
import { acquirePinLock } from './lock';
import { checkBpffs, currentNetnsName, pinDir, securePinPath } from './pins';

/** Map sizes as one comparable string (a preload is used only for the sizes it was loaded with). */
const sizesKey = (limits: Config['limits']): string => JSON.stringify(balancerMapSizes(limits));

/** Whether any interface's pin directory under `netnsDir` (<bpffs>/peak-xdp/<netns>) holds a balancer program. */
function anyBalancerPinned(netnsDir: string): boolean {
  let names: string[];
  try {
    names = readdirSync(netnsDir);
  } catch {
    return false;
  }
  return names.some((n) => existsSync(join(netnsDir, n, BALANCER_PROGRAM)));
}

/** A fresh balancer loading (or loaded) for `sizes`; its promise is null inside when the load failed. */
interface Preload {
  sizes: string;
  dp: Promise<KernelDatapath | null>;
}

/**
 * A fresh balancer for `limits` starts loading (on another thread: the kernel's map creation and verification) unless
 * a balancer is pinned in this network namespace under `bpffs`: a restart adopts its pins (a load would make a second
 * set of maps, ~260 MB of kernel memory at the defaults, for nothing), and which interface the config names is not
 * known yet. Null: none started.
 */
function startPreload(bpffs: string, limits: Config['limits']): Preload | null {
  try {
    if (anyBalancerPinned(join(bpffs, 'peak-xdp', currentNetnsName()))) return null;
    return {
      sizes: sizesKey(limits),
      dp: KernelDatapath.load({ maxEntries: balancerMapSizes(limits) }).catch(() => null),
    };
  } catch {
    return null;
  }
}

/** The load preloadConfigFile started, by bpffs root, until a KernelDatapathHost of that root takes it. */
const early = new Map<string, Preload>();

/**
 * Starts loading a fresh balancer for the limits the config file's text asks for (limitsOfText), before the daemon's
 * own modules have loaded: the daemon command calls it first. The text is kept for the config source's first load
 * (readConfigFileAhead): the file is read once. The daemon's KernelDatapathHost for `bpffs` takes it
 * over at its own preload (used only if the checked config's limits give the same map sizes). Any failure (a file
 * that cannot be read, limits the text does not tell) starts nothing: the daemon reads the file itself and reports.
 * At 512 x 100 the load (~0.35 s of the kernel's CPU, the 1,048,576-entry connection table ~0.2 s of it) began ~0.3 s
 * after the process, once the modules had loaded and the file was read, and the start then waited for it.
 */
export async function preloadConfigFile(path: string, bpffs: string): Promise<void> {
  if (early.has(bpffs)) return;
  const read = await readConfigFileAhead(path).catch(() => null);
  if (read === null || !('text' in read)) return;
  const limits = limitsOfText(read.text, formatOf(path));
  if (limits === null) return;
  const p = startPreload(bpffs, limits);
  if (p !== null) early.set(bpffs, p);
}

export class KernelDatapathHost implements DatapathHost {
  /** bpffs root (pins go to <bpffs>/peak-xdp/<netns>/<interface>/). */
  private readonly bpffs: string;
  /** A fresh balancer loading (or loaded) ahead of the claim's open; null inside: the load failed. */
  private preloaded: Preload | null = null;

  constructor(o: { bpffs: string }) {
    this.bpffs = o.bpffs;
  }

  /**
   * Loads a fresh balancer for `limits` ahead of the open (startPreload), or keeps the one loading for the same sizes
   * (this host's, or the one preloadConfigFile began for its bpffs). A failed preload is forgotten: the open loads
   * again and reports its error.
   */
  preload(limits: Config['limits']): void {
    if (this.preloaded === null) {
      this.preloaded = early.get(this.bpffs) ?? null;
      early.delete(this.bpffs);
    }
    if (this.preloaded !== null) {
      if (this.preloaded.sizes === sizesKey(limits)) return;
      this.dispose();
    }
    this.preloaded = startPreload(this.bpffs, limits);
  }

  dispose(): void {
    void this.takePreloaded(null);
  }

  /** The preloaded balancer if it loaded with these limits' sizes (else it is closed): null when there is none. */
  private async takePreloaded(limits: Config['limits'] | null): Promise<KernelDatapath | null> {
    const p = this.preloaded;
    this.preloaded = null;
    if (p === null) return null;
    const dp = await p.dp;
    if (dp === null) return null;
    if (limits !== null && p.sizes === sizesKey(limits)) return dp;
    dp.close();
    return null;
  }

  /** A fresh balancer for these limits: the preloaded one when it fits, else loaded now. */
  private async loadFresh(limits: Config['limits']): Promise<KernelDatapath> {
    return (
      (await this.takePreloaded(limits)) ??
      (await KernelDatapath.load({ maxEntries: balancerMapSizes(limits) }))
    );
  }

  claim(ifname: string): DatapathClaim {
    const bpffs = this.bpffs;
    checkBpffs(bpffs);
    const netns = currentNetnsName();
    const pins = pinDir({ bpffs, netns, ifname });
    // Taken before any map is read or written: a second daemon stops here.
    const lock = acquirePinLock({ bpffs, netns, ifname, pinDir: pins, command: 'daemon' });
    securePinPath({ bpffs, dir: pins, create: false });
    return {
      pins,
      release: () => lock.release(),
      open: async ({ limits, ifname: forIf }) => {
        // Reads only: the pins, the interface's program, this build's object.
        const { decision } = inspectBalancerPins({ dir: pins, ifname: forIf, limits });
        if (decision.kind === 'refuse' || decision.kind === 'adopt') this.dispose();
        switch (decision.kind) {
          case 'refuse':
            throw new Error(decision.reason);
          case 'adopt': {
            const dp = KernelDatapath.adopt({ pinDir: pins });
            // Table pins a crash left stale or half-made (we hold the pin lock: no other writer).
            dp.pruneTablePins();
            return new KernelOpened(dp, { adopted: true, pins, bpffs });
          }
          case 'replace': {
            // Loaded aside: not attached, not pinned, until the daemon has programmed it (takeOver).
            const dp = await this.loadFresh(limits);
            return new KernelOpened(dp, {
              adopted: false,
              pins,
              bpffs,
              replacing: { reason: decision.reason, detail: decision.detail, leftovers: decision.leftovers },
            });
          }
          case 'fresh': {
            const dp = await this.loadFresh(limits);
            try {
              securePinPath({ bpffs, dir: pins, create: true });
              // Map pins without a program pin: an interrupted pin or unpin left them, no balancer uses them.
              unpinBalancer(pins, decision.leftovers);
              dp.pin(pins);
            } catch (e) {
              dp.close();
              throw new Error(
                `pin the balancer under ${pins}: ${(e as Error).message} (is bpffs mounted there?)`,
              );
            }
            return new KernelOpened(dp, { adopted: false, pins, bpffs, cleared: decision.leftovers });
          }
        }
      },
    };
  }
}

class KernelOpened implements OpenedDatapath {
  readonly adopted: boolean;
  /** Set while this balancer waits to replace an older build's (loaded, not attached, not pinned). */
  replacing: PendingReplace | null;
  /** Leftover map pins a fresh load removed first. */
  readonly cleared: readonly string[];
  private readonly pins: string;
  private readonly bpffs: string;

  constructor(
    readonly datapath: KernelDatapath,
    o: {
      adopted: boolean;
      pins: string;
      bpffs: string;
      replacing?: PendingReplace;
      cleared?: readonly string[];
    },
  ) {
    this.adopted = o.adopted;
    this.pins = o.pins;
    this.bpffs = o.bpffs;
    this.replacing = o.replacing ?? null;
    this.cleared = o.cleared ?? [];
  }

  /**
   * The replace, once this balancer is programmed: (1) swap it for whatever XDP program runs on the interface
   * in one netlink request (XDP_FLAGS_REPLACE with the old program, so it fails rather than replace something
   * that changed since); (2) remove the old pins, program pin first; (3) pin ours, program pin last. A kill -9
   * after (1) leaves the old pins with our unpinned program attached, during (2) or (3) map pins without a
   * program pin: a later start replaces again (its own fresh balancer over the running one, programmed
   * first), never leaving the interface without a programmed balancer.
   */
  async takeOver(o: { ifname: string; mode: XdpMode }): Promise<TakeOver> {
    if (this.replacing === null) throw new Error('takeOver: this balancer replaces nothing');
    const now = queryXdp({ ifname: o.ifname });
    const expected = now.progId === 0 ? undefined : oldProgram(this.pins, now.progId);
    // Same mode as the program it replaces (XDP_FLAGS_REPLACE works within one mode).
    const mode: XdpMode = now.mode === 'native' || now.mode === 'generic' ? now.mode : o.mode;
    let st;
    try {
      st = await this.datapath.attach({ ifname: o.ifname, mode, expected });
    } finally {
      expected?.close();
    }
    this.replacing = null;
    let pinError: string | null = null;
    try {
      securePinPath({ bpffs: this.bpffs, dir: this.pins, create: true });
      unpinBalancer(this.pins);
      this.datapath.pin(this.pins);
    } catch (e) {
      // Forwarding runs on ours already; the keeper's pin check pins what is missing again.
      pinError = (e as Error).message;
    }
    return { mode: st.mode, progId: st.progId, oldProgId: now.progId, pinError };
  }

  attachment(ifname: string): XdpAttachment {
    const progId = queryXdp({ ifname }).progId;
    if (progId === 0) return { kind: 'none' };
    return progId === this.datapath.program.id ? { kind: 'ours' } : { kind: 'other', progId };
  }

  async attach(o: { ifname: string; mode: 'native' | 'generic' | 'auto' }) {
    const st = await this.datapath.attach(o);
    return { mode: st.mode, progId: st.progId };
  }

  async detach(ifname: string): Promise<void> {
    await this.datapath.detach({ ifname });
  }

  pinCheck() {
    return this.datapath.pinCheck(this.pins);
  }

  repin(names: readonly string[]): void {
    securePinPath({ bpffs: this.bpffs, dir: this.pins, create: true });
    this.datapath.repin(this.pins, names);
  }

  unpin(): void {
    unpinBalancer(this.pins);
    try {
      rmdirSync(this.pins);
    } catch {
      // not empty (someone else's pins there, e.g. decap/): leave it
    }
  }

  removePinDir(): void {
    rmSync(this.pins, { recursive: true, force: true });
  }

  close(): void {
    this.datapath.close();
  }
}

/**
 * The attached program to name in XDP_FLAGS_REPLACE: the pinned one when it is that program (opening a pin
 * needs no CAP_SYS_ADMIN), else by id. Undefined when neither opens: the attach then replaces unconditionally,
 * still one swap for packets.
 */
function oldProgram(pins: string, progId: number): BpfProgram | undefined {
  try {
    const p = BpfProgram.fromPin(join(pins, BALANCER_PROGRAM));
    if (p.id === progId) return p;
    p.close();
  } catch {
    // not pinned (an interrupted replace) or not a program
  }
  try {
    return BpfProgram.fromId(progId);
  } catch {
    return undefined;
  }
}
