// Prometheus metrics of `peak-xdp decap run`: the decap program's counters (by their enum names, read at
// scrape time), whether it is attached, the addresses and sources it decapsulates for, re-attachments, whether
// the second chance can work here, second-chance forwards by previous owner (top N), build and process.
import { Counter, Gauge, Registry } from '../metrics/prom';
import { registerProcessMetrics } from '../metrics';
import { buildInfo } from '../version';
import type { DecapDiagnostics } from './agent';
import type { DecapSource } from './config';
import { RX_COUNTER } from './core';
import { CONNTRACK_KFUNC } from './diagnostics';

/** Previous owners exported by name in peak_xdp_decap_second_chance_forwards_total; the rest sum to "other". */
export const SC_TARGETS_TOP = 20;

/**
 * The `top` previous owners by forwards (ties: by address, so a scrape is stable) and the sum of the rest as
 * owner "other" (present only when there is a rest): a fleet of thousands of backends stays N + 1 series.
 */
export function topOwners(
  entries: readonly { owner: string; packets: bigint }[],
  top: number,
): { owner: string; packets: bigint }[] {
  const sorted = [...entries].sort((a, b) =>
    a.packets !== b.packets
      ? a.packets > b.packets
        ? -1
        : 1
      : a.owner < b.owner
        ? -1
        : a.owner > b.owner
          ? 1
          : 0,
  );
  const out = sorted.slice(0, top);
  const rest = sorted.slice(top);
  if (rest.length > 0) out.push({ owner: 'other', packets: rest.reduce((s, e) => s + e.packets, 0n) });
  return out;
}

export interface DecapMetricsSources {
  /** Counter totals by name (enum peak_decap_counter, lower-case), summed over CPUs; null while none is open. */
  counters: () => ReadonlyMap<string, bigint> | null;
  attached: () => boolean;
  addresses: () => readonly string[];
  interfaceName: () => string;
  secondChance: () => DecapDiagnostics;
  sources: () => readonly DecapSource[];
  /** decap_moved's entries (null: no program). */
  movedFlows: () => number | null;
  /** decap_sc_targets: forwards by previous owner. */
  secondChanceTargets: () => readonly { owner: string; packets: bigint }[];
}

export interface DecapMetrics {
  registry: Registry;
  reattaches: Counter<'result'>;
  addressChanges: Counter;
}

export function createDecapMetrics(src: DecapMetricsSources): DecapMetrics {
  const registry = new Registry();
  registerProcessMetrics(registry);
  const registers = [registry];
  new Counter({
    name: 'peak_xdp_decap_rx_packets_total',
    help: 'Packets the decap program saw on its interface (enum peak_decap_counter PEAK_DECAP_RX_PACKETS)',
    labelNames: ['interface'],
    registers,
    collect() {
      this.reset();
      const v = src.counters()?.get(RX_COUNTER);
      if (v !== undefined) this.inc({ interface: src.interfaceName() }, Number(v));
    },
  });
  new Counter({
    name: 'peak_xdp_decap_packets_total',
    help:
      'Packets by what the decap program did with them, one series per enum peak_decap_counter name other ' +
      'than rx_packets (bpf/shared.h): e.g. ipip/ip6ip6/ip4in6 decapsulated, pass (not a tunnel packet for ' +
      'this node), error (could not strip)',
    labelNames: ['interface', 'result'],
    registers,
    collect() {
      this.reset();
      const c = src.counters();
      if (c === null) return;
      const ifname = src.interfaceName();
      for (const [name, v] of c)
        if (name !== RX_COUNTER) this.inc({ interface: ifname, result: name }, Number(v));
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_attached',
    help: '1 while this agent’s decap program is attached to its interface',
    labelNames: ['interface'],
    registers,
    collect() {
      this.reset();
      this.set({ interface: src.interfaceName() }, src.attached() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_addresses',
    help: 'Addresses the decap program decapsulates for (outer destinations), by family',
    labelNames: ['family'],
    registers,
    collect() {
      const a = src.addresses();
      const v6 = a.filter((x) => x.includes(':')).length;
      this.set({ family: 'ipv4' }, a.length - v6);
      this.set({ family: 'ipv6' }, v6);
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_sources',
    help: 'Outer source prefixes tunnels are accepted from (--from: every kind; --gue-from: GUE only), by family; 0: from anywhere',
    labelNames: ['family', 'kinds'],
    registers,
    collect() {
      this.reset();
      for (const s of src.sources()) this.inc({ family: `ipv${s.family}`, kinds: s.ipip ? 'all' : 'gue' }, 1);
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_second_chance_ready',
    help:
      '1 when the second chance can forward here: switched on, forwarding on for each family decapsulated ' +
      '(bpf_fib_lookup), and bpf_xdp_ct_lookup in the kernel unless --no-conntrack-lookup (/state says why not)',
    labelNames: ['interface'],
    registers,
    collect() {
      this.reset();
      this.set({ interface: src.interfaceName() }, src.secondChance().secondChanceReady ? 1 : 0);
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_conntrack_kfunc',
    help: '1 when the kernel BTF has the kfunc (bpf_xdp_ct_lookup: the second chance finds kube-proxy-DNATed flows), 0 when not; absent when the BTF could not be read',
    labelNames: ['kfunc'],
    registers,
    collect() {
      this.reset();
      const k = src.secondChance().conntrackKfunc;
      if (k !== null) this.set({ kfunc: CONNTRACK_KFUNC }, k ? 1 : 0);
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_forwarding',
    help: 'net.ipv4/6.conf.<interface>.forwarding (1 on, 0 off; bpf_fib_lookup needs it for second-chance forwards), re-read every 5 s',
    labelNames: ['interface', 'family'],
    registers,
    collect() {
      this.reset();
      const f = src.secondChance().forwarding;
      for (const [family, v] of [
        ['ipv4', f.ipv4],
        ['ipv6', f.ipv6],
      ] as const)
        if (v !== null) this.set({ interface: src.interfaceName(), family }, v ? 1 : 0);
    },
  });
  new Counter({
    name: 'peak_xdp_decap_second_chance_forwards_total',
    help:
      `Second-chance forwards by previous owner (decap_sc_targets, an LRU of 1024): the ${SC_TARGETS_TOP} owners ` +
      'with the most, the rest summed as owner="other"; an owner evicted from the LRU restarts from 0',
    labelNames: ['interface', 'owner'],
    registers,
    collect() {
      this.reset();
      const ifname = src.interfaceName();
      for (const e of topOwners(src.secondChanceTargets(), SC_TARGETS_TOP))
        this.inc({ interface: ifname, owner: e.owner }, Number(e.packets));
    },
  });
  new Gauge({
    name: 'peak_xdp_decap_moved_flows',
    help:
      'Moved flows this backend remembers (decap_moved, an LRU of 65,536): forwarded on an LB hint once, they go ' +
      'on to the same previous owner when they come without one, while this host has no state for them',
    labelNames: ['interface'],
    registers,
    collect() {
      this.reset();
      const n = src.movedFlows();
      if (n !== null) this.set({ interface: src.interfaceName() }, n);
    },
  });
  const reattaches = new Counter({
    name: 'peak_xdp_decap_reattach_total',
    help: 'Re-attachments of the decap program after it was found detached (checked every 5 s), by result',
    labelNames: ['result'],
    registers,
  });
  // Both series from the start: an alert on increase() needs a zero to compare with.
  for (const result of ['ok', 'error']) reattaches.inc({ result }, 0);
  const addressChanges = new Counter({
    name: 'peak_xdp_decap_address_changes_total',
    help: 'Times the interface’s addresses changed and the decap address map was rewritten',
    registers,
  });
  new Gauge({
    name: 'peak_xdp_build_info',
    help: 'Always 1; labels: the version (git tag at build time) and commit of this agent, and Node.js',
    labelNames: ['version', 'commit', 'nodejs'],
    registers,
  }).set({ version: buildInfo.version, commit: buildInfo.commit, nodejs: process.version }, 1);
  return { registry, reattaches, addressChanges };
}
