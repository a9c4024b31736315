// The kernel's datapath host: pins under bpffs (one lock per pin directory), KernelDatapath adopted from its pins
// or loaded and pinned, attached with XDP.
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { queryXdp, unpin } from '../datapath/bpf';
import {
  BALANCER_MAPS,
  BALANCER_PROGRAM,
  balancerMapSizes,
  KernelDatapath,
  SizeShortfall,
  sizeShortfalls,
} from '../datapath/kernel';
import type { DatapathClaim, DatapathHost, OpenedDatapath, XdpAttachment } from './datapath-host';
import { acquirePinLock } from './lock';
import { checkBpffs, currentNetnsName, pinDir, securePinPath } from './pins';

export class KernelDatapathHost implements DatapathHost {
  /** bpffs root (pins go to <bpffs>/peak-xdp/<netns>/<interface>/). */
  private readonly bpffs: string;

  constructor(o: { bpffs: string }) {
    this.bpffs = o.bpffs;
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
        if (existsSync(join(pins, BALANCER_PROGRAM))) {
          const dp = KernelDatapath.adopt({ pinDir: pins });
          // Before anything is written: a map smaller than the limits would fail later, id by id.
          const short = sizeShortfalls(dp, limits);
          if (short.length > 0) {
            dp.close();
            throw new Error(shortfallMessage({ short, pins, bpffs, ifname: forIf }));
          }
          return new KernelOpened(dp, { adopted: true, pins, bpffs });
        }
        const dp = await KernelDatapath.load({ maxEntries: balancerMapSizes(limits) });
        try {
          securePinPath({ bpffs, dir: pins, create: true });
          dp.pin(pins);
        } catch (e) {
          dp.close();
          throw new Error(
            `pin the balancer under ${pins}: ${(e as Error).message} (is bpffs mounted there?)`,
          );
        }
        return new KernelOpened(dp, { adopted: false, pins, bpffs });
      },
    };
  }
}

class KernelOpened implements OpenedDatapath {
  readonly adopted: boolean;
  private readonly pins: string;
  private readonly bpffs: string;

  constructor(
    readonly datapath: KernelDatapath,
    o: { adopted: boolean; pins: string; bpffs: string },
  ) {
    this.adopted = o.adopted;
    this.pins = o.pins;
    this.bpffs = o.bpffs;
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
    for (const name of [BALANCER_PROGRAM, ...BALANCER_MAPS]) unpin(join(this.pins, name));
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

/** Why a pinned balancer cannot be adopted, and the two ways out. */
function shortfallMessage(o: {
  short: SizeShortfall[];
  pins: string;
  bpffs: string;
  ifname: string;
}): string {
  const { short } = o;
  const maps = short
    .map((s) => `map ${s.map} has ${s.maxEntries} entries but limits.${s.limit} is ${s.needed}`)
    .join('; ');
  const keys = [...new Set(short.map((s) => s.limit))]
    .map(
      (k) =>
        `limits.${k} to at most ${Math.min(...short.filter((s) => s.limit === k).map((s) => s.maxEntries))}`,
    )
    .join(', ');
  return (
    `the pinned balancer at ${o.pins} is smaller than the config needs: ${maps}. Nothing was changed. ` +
    `Either run \`peak-xdp detach --interface ${o.ifname} --purge --bpffs ${o.bpffs}\` (forwarding stops ` +
    `until the daemon is back) and start the daemon again to load maps of the configured sizes, or set ${keys}.`
  );
}
