// Keeps the balancer in place over a datapath host: opens (adopts or loads) and attaches it at start, then
// notices a detached program or removed pins under the running daemon and puts them back.
import { Counter, type Registry } from '../metrics/prom';
import type { XdpMode } from '../datapath/bpf';
import type { DatapathConfig } from '../datapath/types';
import type { Logger } from '../log';
import type { Config } from '../model/config';
import { sameConfig } from '../reconcile/plan';
import { AttachCheckTimer } from './attach-check';
import type { DatapathClaim, OpenedDatapath } from './datapath-host';
import type { PinTrouble } from './state-view';

/** How often the pins are checked (the attachment is checked every 250 ms: attach-check.ts). */
export const PIN_CHECK_MS = 2000;

export interface DatapathKeeperOptions {
  claim: DatapathClaim;
  log: Logger;
  /** The attachment changed as BGP should see it: announce again. */
  onAttachedChange: () => void;
  /** A re-attachment was tried (metrics). */
  onReattach?: (result: 'ok' | 'error') => void;
  /** Where peak_xdp_datapath_replacements_total is registered (none: not counted). */
  registry?: Registry;
}

/** The replace's log message (tests and alerts match it). */
export const REPLACED_MESSAGE = 'balancer replaced: pinned by an older build';

export class DatapathKeeper {
  private readonly o: DatapathKeeperOptions;
  private readonly log: Logger;
  /** null before open(), and after a failed start removed what it loaded. */
  opened: OpenedDatapath | null = null;
  attached = false;
  /** Why the balancer is detached and was not re-attached (null while attached). */
  attachError: string | null = null;
  reattachCount = 0;
  /** Pins found gone (or replaced) under the running daemon, and whether they were pinned again. */
  pinTrouble: PinTrouble | null = null;
  private ifname = '';
  private xdpMode: XdpMode = 'auto';
  private reattaching: Promise<void> | null = null;
  private pinTimer: NodeJS.Timeout | null = null;
  private attachChecks: AttachCheckTimer | null = null;
  private stopped = false;
  /** This start replaced (or is about to replace) a balancer an older build pinned. */
  private replaced = false;
  private readonly replacements: Counter<'reason'> | null;

  constructor(o: DatapathKeeperOptions) {
    this.o = o;
    this.log = o.log;
    this.replacements = o.registry
      ? new Counter({
          name: 'peak_xdp_datapath_replacements_total',
          help: 'Balancers pinned by an older build that a start replaced (their connection table is lost), by why they could not be adopted',
          labelNames: ['reason'],
          registers: [o.registry],
        })
      : null;
  }

  get pins(): string {
    return this.o.claim.pins;
  }

  get adopted(): boolean {
    return this.opened?.adopted ?? false;
  }

  /**
   * Forwarding ran before this start and must outlive a failed one: an adopted balancer, or one replacing
   * (or having replaced) an older build's. BGP graceful restart says so too.
   */
  get inherited(): boolean {
    return this.adopted || this.replaced;
  }

  /**
   * Adopts pinned state if present (restart), else loads and pins a fresh balancer; configures; attaches. A
   * balancer replacing an older build's is configured only: commit() swaps it in after the first sync.
   */
  async open(config: Config, datapathConfig: DatapathConfig): Promise<OpenedDatapath> {
    const ifname = config.interface;
    this.ifname = ifname;
    this.xdpMode = config.xdpMode;
    const opened = await this.o.claim.open({ limits: config.limits, ifname });
    this.opened = opened;
    const replacing = opened.replacing ?? null;
    this.replaced = replacing !== null;
    if (replacing)
      this.log.warn(
        { pins: this.pins, reason: replacing.reason, detail: replacing.detail },
        "the pinned balancer was pinned by an older build and cannot be adopted: loaded this build's aside; it replaces the old one once programmed",
      );
    else
      this.log.info(
        { pins: this.pins },
        opened.adopted ? 'adopted pinned balancer' : 'loaded and pinned a new balancer',
      );
    // Configure before attaching, so the first packet sees a ready config. An adopted balancer that holds
    // this config already is left alone (a restart over unchanged maps writes nothing).
    const held = opened.adopted ? await opened.datapath.readConfig() : null;
    const fib = (c: DatapathConfig | null): boolean =>
      (c as { fibRedirect?: boolean } | null)?.fibRedirect ?? false;
    if (!(sameConfig(held, datapathConfig) && fib(held) === fib(datapathConfig)))
      await opened.datapath.configure(datapathConfig);
    if (replacing) return opened; // the old program keeps forwarding until commit()
    if (opened.attachment(ifname).kind !== 'ours') {
      const st = await opened.attach({ ifname, mode: config.xdpMode });
      this.log.info({ interface: ifname, mode: st.mode, progId: st.progId }, 'balancer attached');
    }
    this.attached = true;
    return opened;
  }

  /**
   * After the first sync: a balancer replacing an older build's takes over now that it is programmed (one
   * atomic swap on the interface, then the pins move: kernel-host.ts takeOver). `unprogrammed`: VIPs the
   * sync could not write; then nothing is swapped (the old balancer keeps forwarding them) and the start
   * fails. A no-op for an adopted or fresh balancer.
   */
  async commit(unprogrammed: readonly string[] = []): Promise<void> {
    const opened = this.opened;
    const replacing = opened?.replacing ?? null;
    if (!opened || !replacing) return;
    if (unprogrammed.length > 0)
      throw new Error(
        `not replacing the balancer pinned by an older build (${replacing.detail}): the first sync could not ` +
          `program VIPs ${unprogrammed.join(', ')}; the old balancer keeps forwarding`,
      );
    if (!opened.takeOver) throw new Error('this datapath host cannot replace a pinned balancer');
    const t0 = performance.now();
    const st = await opened.takeOver({ ifname: this.ifname, mode: this.xdpMode });
    this.attached = true;
    this.replacements?.inc({ reason: replacing.reason });
    this.log.warn(
      {
        interface: this.ifname,
        pins: this.pins,
        reason: replacing.reason,
        detail: replacing.detail,
        oldProgId: st.oldProgId,
        progId: st.progId,
        mode: st.mode,
        swapMs: Math.round(performance.now() - t0),
        // The old program's connection table is not carried over (its layout is the old build's): each
        // established flow is placed again by Maglev, on the same backend while the backend set is unchanged.
        connectionTableLost: true,
      },
      `${REPLACED_MESSAGE} (${replacing.detail})`,
    );
    if (st.pinError !== null)
      this.log.error(
        { pins: this.pins, error: st.pinError },
        'replaced balancer not (fully) pinned; the pin check pins it again',
      );
  }

  /** Starts checking the pins and the attachment. */
  watch(): void {
    this.pinTimer = setInterval(() => this.checkPins(), PIN_CHECK_MS);
    this.pinTimer.unref();
    this.attachChecks = new AttachCheckTimer(() => this.checkAttached());
  }

  stopWatching(): void {
    this.stopped = true;
    if (this.pinTimer) clearInterval(this.pinTimer);
    this.attachChecks?.stop();
  }

  /** Resolves when no re-attachment runs. */
  async idle(): Promise<void> {
    await this.reattaching;
  }

  /**
   * After a failed start: detaches and unpins a balancer this start loaded (nothing forwarded before it), so
   * forwarding never runs on a config the daemon refused. An adopted balancer is left as it was found.
   */
  async undoFresh(): Promise<void> {
    const opened = this.opened;
    if (!opened || opened.adopted) return;
    if (this.replaced) {
      // Before the swap: ours was never attached or pinned, the old balancer forwards as it was found. After
      // it: ours forwards, programmed, and is left running like an adopted one.
      if (opened.replacing)
        this.log.warn({ pins: this.pins }, 'start failed: the pinned balancer was not replaced and keeps forwarding'); // prettier-ignore
      if (opened.replacing) {
        opened.close();
        this.opened = null;
      }
      return;
    }
    const ifname = this.ifname;
    try {
      if (opened.attachment(ifname).kind === 'ours') await opened.detach(ifname);
      this.attached = false;
      opened.unpin();
      this.log.warn(
        { interface: ifname, pins: this.pins },
        'start failed: removed the balancer it had loaded',
      );
    } catch (e) {
      this.log.error(
        { err: e, pins: this.pins },
        'start failed, and removing the balancer it loaded failed too',
      );
    }
    opened.close();
    this.opened = null;
  }

  /** --detach-on-exit: forwarding stops on purpose. */
  async detachAndUnpin(): Promise<void> {
    const opened = this.opened!;
    await opened.detach(this.ifname).catch((e: Error) => this.log.warn({ err: e }, 'detach failed'));
    opened.removePinDir();
  }

  /** Closes the datapath and gives the pin directory up. */
  close(): void {
    this.opened?.close();
    this.o.claim.release();
  }

  /**
   * Notices pins removed (or moved away) under the running daemon: a restart would not find this balancer,
   * load a fresh one and lose the connection table. Pins the live program and maps again at the same path
   * (pins that now hold other objects are left alone and reported).
   */
  checkPins(): void {
    const opened = this.opened;
    if (!opened || this.stopped) return;
    let found: { missing: string[]; foreign: string[] };
    try {
      found = opened.pinCheck();
    } catch (e) {
      this.log.warn({ err: e, pins: this.pins }, 'could not check the pins');
      return;
    }
    const { missing, foreign } = found;
    if (missing.length === 0 && foreign.length === 0) {
      if (this.pinTrouble && !this.pinTrouble.restored) {
        this.pinTrouble = { ...this.pinTrouble, restored: true, error: null };
        this.log.info({ pins: this.pins }, 'pins are back in place');
      }
      return;
    }
    const known = this.pinTrouble;
    // Foreign pins stay until someone removes them: say so once, not every check.
    if (missing.length === 0 && known && !known.restored && known.foreign.join() === foreign.join()) return;
    const at = new Date();
    this.log.error(
      { pins: this.pins, missing, foreign },
      'pins gone under the running daemon: a restart would not find this balancer; pinning it again',
    );
    let error: string | null = null;
    try {
      opened.repin(missing);
      if (foreign.length > 0)
        error = `pins ${foreign.join(', ')} hold other objects than the running balancer's`;
    } catch (e) {
      error = `pinning again failed: ${(e as Error).message}`;
    }
    if (error) this.log.error({ pins: this.pins, error }, 'balancer not (fully) pinned');
    else this.log.warn({ pins: this.pins, repinned: missing }, 'balancer pinned again');
    this.pinTrouble = {
      count: (known?.count ?? 0) + 1,
      at: at.toISOString(),
      atMs: at.getTime(),
      missing,
      foreign,
      restored: error === null,
      error,
    };
  }

  /**
   * Notices a detached (or replaced) program and puts ours back at once when the interface is free. The VIPs
   * stay announced when that works (the node forwards again within this check, and withdrawing would move
   * flows between LB nodes for nothing); they are withdrawn only when it cannot be put back (another program
   * in its place, an attach error), and announced again once it is.
   */
  checkAttached(): void {
    const opened = this.opened;
    if (!opened || this.stopped || this.reattaching) return;
    let now = false;
    try {
      now = opened.attachment(this.ifname).kind === 'ours';
    } catch (e) {
      this.log.warn({ err: e }, 'could not query the XDP attachment');
    }
    if (now && !this.attached) {
      // Back without us (someone attached the pinned program again): announce again.
      this.attached = true;
      this.attachError = null;
      this.log.warn({ interface: this.ifname, attached: true }, 'balancer attachment changed');
      this.o.onAttachedChange();
    }
    if (!now) this.reattaching = this.reattach(opened).finally(() => (this.reattaching = null));
  }

  /**
   * Re-attaches the pinned program (the daemon owns the interface). Another XDP program in its place is left
   * alone: someone put it there on purpose; then, or when the attach fails, the VIPs are withdrawn. Never rejects.
   */
  private async reattach(opened: OpenedDatapath): Promise<void> {
    const ifname = this.ifname;
    // Still attached as far as BGP knows: the detach is undone within the check that saw it, nothing withdrawn.
    const quiet = this.attached;
    const t0 = performance.now();
    let why: string;
    try {
      const current = opened.attachment(ifname);
      if (current.kind === 'other')
        why = `another XDP program (id ${current.progId}) is attached there; not replacing it (detach it and the balancer is re-attached)`;
      else {
        const st = await opened.attach({ ifname, mode: this.xdpMode });
        this.attached = true;
        this.attachError = null;
        this.reattachCount++;
        this.o.onReattach?.('ok');
        this.log.warn(
          {
            interface: ifname,
            mode: st.mode,
            progId: st.progId,
            withdrawn: !quiet,
            attachMs: Math.round(performance.now() - t0),
            checkEveryMs: this.attachChecks?.intervalMs,
          },
          'balancer re-attached',
        );
        if (!quiet) this.o.onAttachedChange();
        return;
      }
    } catch (e) {
      why = `re-attach failed: ${(e as Error).message}`;
      this.o.onReattach?.('error');
    }
    if (this.attached) {
      this.attached = false;
      this.log.warn({ interface: ifname, attached: false }, 'balancer attachment changed');
      this.o.onAttachedChange();
    }
    if (why !== this.attachError)
      this.log.error({ interface: ifname, reason: why }, 'balancer detached; VIPs stay withdrawn');
    this.attachError = why;
  }
}
