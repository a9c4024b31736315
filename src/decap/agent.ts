// The backend role (`peak-xdp decap run`): keeps the decap program attached to the node's interface for the
// node's own addresses (tunnels only from --from's prefixes when given), writes the GUE port and second-chance
// switches, says at start whether the second chance can work here, follows address changes, serves /metrics
// and /healthz, and cleans up on stop. A thin
// shell: the kernel, the host's links, the clock and the HTTP server are collaborators (unit tests fake them).
import type { Logger } from '../log';
import { renderRegistry } from '../metrics';
import {
  addressChanges,
  checkAction,
  checkAddressCount,
  DecapUsageError,
  desiredAddresses,
  type StartAction,
} from './core';
import { sourceText, type DecapSettings } from './config';
import { forwardingSysctl, secondChanceReadiness, type SecondChanceFacts } from './diagnostics';
import { createDecapMetrics, type DecapMetrics } from './metrics';

/** The decap program the agent holds (loaded, adopted or swapped in at open). */
export interface DecapProgramHandle {
  readonly progId: number;
  /** Counter names by index (enum peak_decap_counter). */
  readonly counterNames: readonly string[];
  /** Entries the address map holds at most. */
  readonly addressCapacity: number;
  /** Where it is pinned (null: no bpffs, not pinned). */
  readonly pins: string | null;
  /** The program attached to the interface now (0: none); throws when the interface is gone. */
  attachedProgId(): number;
  /** Attaches this program to the interface (nothing attached there). */
  attach(): Promise<{ progId: number; mode: string }>;
  /** Detaches this program if it is the one attached. */
  detach(): Promise<boolean>;
  /** The addresses in the address map. */
  addresses(): string[];
  setAddresses(changes: { add: readonly string[]; remove: readonly string[] }): void;
  /** Writes decap_config and decap_sources (no moment refuses a source both the old and the new set accept). */
  writeSettings(s: DecapSettings): void;
  /** Second-chance forwards by previous owner (decap_sc_targets), unordered. */
  secondChanceTargets(): { owner: string; packets: bigint }[];
  /** Flows in decap_moved (moved flows remembered); 0 where the map is not there. */
  movedFlows(): number;
  /** Counter totals by index, summed over CPUs. */
  counters(): bigint[];
  unpin(): void;
  close(): void;
}

export interface DecapKernel {
  /** Loads the program, then attaches, adopts or swaps in as startAction decides; throws on `refuse`. */
  open(o: { ifname: string }): Promise<{
    handle: DecapProgramHandle;
    action: StartAction;
    mode: string;
  }>;
}

export interface DecapHost {
  /** False when no such interface exists in this network namespace. */
  interfaceExists(ifname: string): boolean;
  /** The default route's interface (IPv4, else IPv6), null when there is none. */
  defaultRouteInterface(): Promise<string | null>;
  /** The interface (not lo) that holds this address, null when none does. */
  interfaceWithAddress(ip: string): Promise<string | null>;
  /** Global addresses of the interface. */
  addresses(ifname: string): Promise<string[]>;
  /**
   * Host mode: holds a VIP on lo and, when `sysctls`, sets the ARP and reverse-path settings DSR needs; returns
   * the settings skipped (`key=value`, empty when `sysctls`).
   */
  addVip(vip: string, ifname: string, sysctls: boolean): Promise<string[]>;
  removeVip(vip: string): Promise<void>;
  /** FUNC bpf_xdp_ct_lookup in the kernel's BTF; null when there is no BTF to read. */
  conntrackKfunc(): Promise<boolean | null>;
  /** net.ipv4/6.conf.<if>.forwarding; null for a family the interface lacks. */
  forwarding(ifname: string): Promise<{ 4: boolean | null; 6: boolean | null }>;
}

export interface Scheduler {
  /** Runs `fn` every `ms` (the next run waits for the previous one to finish) until stop(). */
  every(ms: number, fn: () => Promise<void>): { stop(): void };
}

export interface MetricsServer {
  readonly address: { host: string; port: number };
  stop(): Promise<void>;
}

export interface MetricsServerFactory {
  start(o: {
    host: string;
    port: number;
    render: () => Promise<string>;
    contentType: string;
    ready: () => { ready: boolean; reasons: string[] };
    state: () => unknown;
  }): Promise<MetricsServer>;
}

export interface DecapAgentOptions {
  /** An interface name, or `auto` (the one holding nodeIp, else the default route's). */
  interface: string;
  /** The node's address (NODE_IP / PEAK_XDP_NODE_IP): `auto` prefers the interface that holds it. */
  nodeIp: string | null;
  /** Host mode: false skips the DSR sysctls next to the VIPs on lo (--no-sysctls: read-only /proc/sys). */
  sysctls: boolean;
  /** Fixed outer addresses to decapsulate for; empty: the interface's, re-read at every check. */
  addresses: readonly string[];
  /** Host mode: VIPs to hold on lo (empty in node mode: kube-proxy's DNAT takes the packet). */
  vips: readonly string[];
  /** Leave the program attached and pinned (and VIPs on lo) at stop: a restart adopts it with no gap. */
  keepOnExit: boolean;
  /** GUE port, second-chance switches, accepted outer sources (written at start, also to an adopted program). */
  settings: DecapSettings;
  metricsListen: { host: string; port: number };
  checkMs: number;
  kernel: DecapKernel;
  host: DecapHost;
  scheduler: Scheduler;
  server: MetricsServerFactory;
  log: Logger;
}

export interface DecapStarted {
  interface: string;
  progId: number;
  mode: string;
  /** attach (nothing was there), adopt (kept the attached program), replace (swapped, no gap). */
  action: 'attach' | 'adopt' | 'replace';
  addresses: string[];
  addressSource: 'flag' | 'interface';
  vips: string[];
  /** DSR sysctls not set (--no-sysctls), `key=value`. */
  sysctlsSkipped: string[];
  pins: string | null;
  metrics: { host: string; port: number };
  keepOnExit: boolean;
  guePort: number;
  secondChance: boolean;
  conntrackLookup: boolean;
  /** Moved flows forwarded on a hint keep going to that owner after the hint stops (--no-remember-moved: false). */
  rememberMoved: boolean;
  /** Outer source prefixes tunnels are accepted from (CIDR); empty: from anywhere. */
  sources: string[];
  /** Only GUE from these (second-chance hops of peer backends). */
  gueSources: string[];
  diagnostics: DecapDiagnostics;
}

/** What the agent found at start (forwarding re-read at every check). */
export interface DecapDiagnostics {
  conntrackKfunc: boolean | null;
  forwarding: { ipv4: boolean | null; ipv6: boolean | null };
  secondChanceReady: boolean;
  reasons: string[];
}

export interface DecapStopped {
  interface: string;
  detached: boolean;
  kept: boolean;
  vipsRemoved: string[];
  reattaches: number;
}

export class DecapAgent {
  private readonly o: DecapAgentOptions;
  private readonly log: Logger;
  private readonly metrics: DecapMetrics;
  private ifname = '';
  private handle: DecapProgramHandle | null = null;
  private server: MetricsServer | null = null;
  private timer: { stop(): void } | null = null;
  private current: string[] = [];
  private attached = false;
  /** Why the program is not attached (logged once per reason). */
  private problem: string | null = null;
  private reattachCount = 0;
  private vipsAdded: string[] = [];
  private stopped = false;
  private facts: Omit<SecondChanceFacts, 'families'>;

  constructor(o: DecapAgentOptions) {
    this.o = o;
    this.log = o.log;
    this.facts = {
      enabled: o.settings.secondChance,
      lbSources: o.settings.sources.some((x) => x.ipip),
      conntrackLookup: o.settings.conntrackLookup,
      conntrackKfunc: null,
      forwarding: { 4: null, 6: null },
    };
    this.metrics = createDecapMetrics({
      counters: () => this.counterTotals(),
      attached: () => this.attached,
      addresses: () => this.current,
      interfaceName: () => this.ifname,
      secondChance: () => this.diagnostics(),
      sources: () => this.o.settings.sources,
      secondChanceTargets: () => this.handle?.secondChanceTargets() ?? [],
      movedFlows: () => this.handle?.movedFlows() ?? null,
    });
  }

  get registry() {
    return this.metrics.registry;
  }

  /** Resolves the interface, opens the program for the addresses, adds host-mode VIPs, starts the server and checks. */
  async start(): Promise<DecapStarted> {
    const ifname = await this.resolveInterface();
    this.ifname = ifname;
    const onInterface = this.o.addresses.length > 0 ? [] : await this.o.host.addresses(ifname);
    const desired = desiredAddresses({ explicit: this.o.addresses, onInterface });
    const { handle, action, mode } = await this.o.kernel.open({ ifname });
    this.handle = handle;
    const sysctlsSkipped: string[] = [];
    try {
      checkAddressCount(desired, handle.addressCapacity, ifname);
      // Sources before addresses: a fresh program decapsulates nothing until it has an address, so a CNI's
      // tunnels are never taken in between. An adopted program gets this run's settings too.
      handle.writeSettings(this.o.settings);
      // Addresses before the first packet is judged (an adopted map may hold stale ones from before).
      handle.setAddresses(addressChanges(handle.addresses(), desired));
      this.current = desired;
      this.attached = true;
      for (const v of this.o.vips) {
        for (const k of await this.o.host.addVip(v, ifname, this.o.sysctls))
          if (!sysctlsSkipped.includes(k)) sysctlsSkipped.push(k);
        this.vipsAdded.push(v);
      }
      this.server = await this.o.server.start({
        ...this.o.metricsListen,
        render: () => renderRegistry(this.metrics.registry),
        contentType: this.metrics.registry.contentType,
        ready: () => this.readiness(),
        state: () => this.snapshot(),
      });
    } catch (e) {
      // Nothing half-done stays behind a failed start (unless the program was adopted: it was there before).
      await this.undo(action.kind !== 'adopt');
      throw e;
    }
    await this.diagnose();
    this.timer = this.o.scheduler.every(this.o.checkMs, () => this.check());
    const st = this.o.settings;
    const started: DecapStarted = {
      interface: ifname,
      progId: handle.progId,
      mode,
      action: action.kind as DecapStarted['action'],
      addresses: desired,
      addressSource: this.o.addresses.length > 0 ? 'flag' : 'interface',
      vips: [...this.vipsAdded],
      sysctlsSkipped,
      pins: handle.pins,
      metrics: this.server.address,
      keepOnExit: this.o.keepOnExit,
      guePort: st.guePort,
      secondChance: st.secondChance,
      conntrackLookup: st.conntrackLookup,
      rememberMoved: st.rememberMoved,
      sources: st.sources.filter((x) => x.ipip).map(sourceText),
      gueSources: st.sources.filter((x) => !x.ipip).map(sourceText),
      diagnostics: this.diagnostics(),
    };
    this.log.info(
      started,
      `decap ${started.action === 'attach' ? 'attached' : started.action === 'adopt' ? 'adopted' : 'replaced'}`,
    );
    return started;
  }

  /** One check: re-attaches a detached program, follows the interface's addresses. Never rejects. */
  async check(): Promise<void> {
    const h = this.handle;
    if (h === null || this.stopped) return;
    await this.checkAttachment(h);
    if (this.o.addresses.length === 0) await this.checkAddresses(h);
    await this.checkForwarding();
  }

  /** The kernel's conntrack kfunc and the interface's forwarding, logged once at start and exposed as gauges. */
  private async diagnose(): Promise<void> {
    let kfunc: boolean | null = null;
    try {
      kfunc = await this.o.host.conntrackKfunc();
    } catch (e) {
      this.log.warn({ err: e }, 'could not read the kernel BTF');
    }
    this.facts = { ...this.facts, conntrackKfunc: kfunc };
    await this.checkForwarding(true);
    const d = this.diagnostics();
    this.log.info(
      {
        interface: this.ifname,
        conntrackKfunc: kfunc,
        forwarding: d.forwarding,
        guePort: this.o.settings.guePort,
      },
      kfunc === true
        ? 'kernel BTF has bpf_xdp_ct_lookup: the second chance finds connections kube-proxy DNATed (node mode)'
        : kfunc === false
          ? 'kernel BTF has no bpf_xdp_ct_lookup: the second chance can only find sockets on this host'
          : 'kernel BTF not readable: cannot tell whether bpf_xdp_ct_lookup exists',
    );
    if (d.secondChanceReady) this.log.info({ interface: this.ifname }, 'second chance ready');
    else this.log.warn({ interface: this.ifname, reasons: d.reasons }, 'second chance not ready');
  }

  /** Re-reads the forwarding sysctls; a change (or the first read) with forwarding off is a warning. */
  private async checkForwarding(first = false): Promise<void> {
    let fwd: { 4: boolean | null; 6: boolean | null };
    try {
      fwd = await this.o.host.forwarding(this.ifname);
    } catch (e) {
      this.log.warn({ interface: this.ifname, err: e }, 'could not read the forwarding sysctls');
      return;
    }
    const before = this.facts.forwarding;
    this.facts = { ...this.facts, forwarding: fwd };
    if (!this.o.settings.secondChance) return;
    for (const fam of this.families())
      if ((first || before[fam] !== fwd[fam]) && fwd[fam] !== true)
        this.log.warn(
          { interface: this.ifname, family: `ipv${fam}`, sysctl: forwardingSysctl(fam, this.ifname) },
          `IPv${fam} forwarding is off on ${this.ifname}: second-chance packets cannot be routed (bpf_fib_lookup); set ${forwardingSysctl(fam, this.ifname)}=1`,
        );
      else if (!first && before[fam] !== fwd[fam])
        this.log.info({ interface: this.ifname, family: `ipv${fam}` }, `IPv${fam} forwarding is on again`);
  }

  /** Families the program decapsulates for now (the second chance forwards within them). */
  private families(): (4 | 6)[] {
    return [...new Set(this.current.map((a) => (a.includes(':') ? 6 : 4) as 4 | 6))];
  }

  diagnostics(): DecapDiagnostics {
    const r = secondChanceReadiness({ ...this.facts, families: this.families() }, this.ifname);
    return {
      conntrackKfunc: this.facts.conntrackKfunc,
      forwarding: { ipv4: this.facts.forwarding[4], ipv6: this.facts.forwarding[6] },
      secondChanceReady: r.ready,
      reasons: r.reasons,
    };
  }

  private async checkAttachment(h: DecapProgramHandle): Promise<void> {
    let progId: number;
    try {
      progId = h.attachedProgId();
    } catch (e) {
      this.setProblem(`cannot query ${this.ifname}: ${(e as Error).message}`);
      return;
    }
    const what = checkAction(progId, h.progId);
    if (what === 'ok') {
      if (!this.attached) this.log.warn({ interface: this.ifname, progId }, 'decap attached again');
      this.attached = true;
      this.problem = null;
      return;
    }
    if (what === 'foreign') {
      this.setProblem(
        `another XDP program (id ${progId}) is attached to ${this.ifname}; not replacing it (detach it and decap is re-attached)`,
      );
      return;
    }
    const t0 = performance.now();
    try {
      const st = await h.attach();
      this.reattachCount++;
      this.metrics.reattaches.inc({ result: 'ok' });
      this.attached = true;
      this.problem = null;
      this.log.warn(
        {
          interface: this.ifname,
          progId: st.progId,
          mode: st.mode,
          attachMs: Math.round(performance.now() - t0),
        },
        'decap was detached: re-attached',
      );
    } catch (e) {
      this.metrics.reattaches.inc({ result: 'error' });
      this.setProblem(`re-attach to ${this.ifname} failed: ${(e as Error).message}`);
    }
  }

  private async checkAddresses(h: DecapProgramHandle): Promise<void> {
    let desired: string[];
    try {
      desired = desiredAddresses({ explicit: [], onInterface: await this.o.host.addresses(this.ifname) });
    } catch (e) {
      this.log.warn({ interface: this.ifname, err: e }, 'could not read the interface addresses');
      return;
    }
    if (desired.join() === this.current.join()) return;
    // An interface between addresses (DHCP renewal, re-plumbing) keeps the last ones: harmless, and no gap.
    if (desired.length === 0) {
      this.log.warn(
        { interface: this.ifname, kept: this.current },
        'interface has no global address: keeping the last ones',
      );
      return;
    }
    const kept = desired.slice(0, h.addressCapacity);
    if (kept.length < desired.length)
      this.log.error(
        { interface: this.ifname, addresses: desired, capacity: h.addressCapacity },
        'more addresses than the decap map holds: decapsulating for the first ones only',
      );
    const changes = addressChanges(this.current, kept);
    try {
      h.setAddresses(changes);
    } catch (e) {
      this.log.error({ interface: this.ifname, err: e, ...changes }, 'writing the decap addresses failed');
      return;
    }
    this.current = kept;
    this.metrics.addressChanges.inc();
    this.log.info(
      { interface: this.ifname, ...changes, addresses: kept },
      'interface addresses changed: decap follows',
    );
  }

  private setProblem(why: string): void {
    this.attached = false;
    if (why !== this.problem) this.log.error({ interface: this.ifname, reason: why }, 'decap not attached');
    this.problem = why;
  }

  /** Stops the checks and the server; detaches, unpins and removes the VIPs unless keepOnExit. */
  async stop(): Promise<DecapStopped> {
    this.stopped = true;
    this.timer?.stop();
    this.timer = null;
    const keep = this.o.keepOnExit;
    const out: DecapStopped = {
      interface: this.ifname,
      detached: false,
      kept: keep && this.handle !== null,
      vipsRemoved: [],
      reattaches: this.reattachCount,
    };
    if (keep)
      this.log.info(
        { interface: this.ifname, pins: this.handle?.pins },
        'decap left attached (--keep-on-exit)',
      );
    else {
      out.vipsRemoved = [...this.vipsAdded];
      out.detached = await this.undo(true);
    }
    await this.server?.stop().catch((e: Error) => this.log.warn({ err: e }, 'metrics server stop failed'));
    this.server = null;
    this.handle?.close();
    this.handle = null;
    return out;
  }

  /** Removes what this agent put in place: VIPs on lo and, with `program`, the attachment and pins. */
  private async undo(program: boolean): Promise<boolean> {
    for (const v of this.vipsAdded.splice(0))
      await this.o.host
        .removeVip(v)
        .catch((e: Error) => this.log.warn({ vip: v, err: e }, 'removing a VIP from lo failed'));
    const h = this.handle;
    if (!program || h === null) return false;
    let detached = false;
    try {
      detached = await h.detach();
      h.unpin();
    } catch (e) {
      this.log.warn({ interface: this.ifname, err: e }, 'decap detach failed');
    }
    this.attached = false;
    if (detached) this.log.info({ interface: this.ifname }, 'decap detached');
    return detached;
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.attached) reasons.push(this.problem ?? 'decap not attached');
    if (this.current.length === 0) reasons.push('no address to decapsulate for');
    return { ready: reasons.length === 0, reasons };
  }

  /** What /state shows: the interface, program, addresses, counters, health. */
  snapshot(): Record<string, unknown> {
    return {
      interface: this.ifname,
      progId: this.handle?.progId ?? null,
      pins: this.handle?.pins ?? null,
      attached: this.attached,
      problem: this.problem,
      addresses: this.current,
      vips: this.vipsAdded,
      reattaches: this.reattachCount,
      guePort: this.o.settings.guePort,
      secondChance: this.o.settings.secondChance,
      conntrackLookup: this.o.settings.conntrackLookup,
      rememberMoved: this.o.settings.rememberMoved,
      sources: this.o.settings.sources.map((x) => ({ prefix: sourceText(x), ipip: x.ipip, gue: x.gue })),
      diagnostics: this.diagnostics(),
      movedFlows: this.handle?.movedFlows() ?? null,
      counters: Object.fromEntries(this.counterTotals() ?? []),
    };
  }

  private counterTotals(): Map<string, bigint> | null {
    const h = this.handle;
    if (h === null) return null;
    const values = h.counters();
    return new Map(h.counterNames.map((n, i) => [n, values[i] ?? 0n]));
  }

  private async resolveInterface(): Promise<string> {
    const want = this.o.interface;
    if (want === 'auto') {
      // The LB nodes encapsulate to the Node's address: on a node with several NICs that may not be the one of
      // the default route.
      if (this.o.nodeIp !== null) {
        const holder = await this.o.host.interfaceWithAddress(this.o.nodeIp);
        if (holder !== null) {
          this.log.info(
            { interface: holder, nodeIp: this.o.nodeIp },
            '--interface auto: the interface holding the node IP',
          );
          return holder;
        }
        this.log.warn(
          { nodeIp: this.o.nodeIp },
          '--interface auto: no interface holds the node IP; taking the default route’s',
        );
      }
      const dev = await this.o.host.defaultRouteInterface();
      if (dev === null)
        throw new DecapUsageError(
          '--interface auto: no default route (IPv4 or IPv6) to take the interface from',
        );
      this.log.info({ interface: dev }, '--interface auto: the default route’s interface');
      return dev;
    }
    if (!this.o.host.interfaceExists(want))
      throw new DecapUsageError(`--interface: no interface "${want}" in this network namespace`);
    return want;
  }
}
