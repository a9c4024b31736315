// decap run (src/decap/): the pure decisions, and the agent over fake collaborators (no root, no kernel).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import {
  DecapAgent,
  type DecapHost,
  type DecapKernel,
  type DecapProgramHandle,
  type MetricsServerFactory,
} from '../../src/decap/agent';
import {
  addressChanges,
  checkAction,
  checkAddressCount,
  decapCounterNames,
  DecapUsageError,
  defaultRouteInterface,
  desiredAddresses,
  dsrSysctls,
  interfaceSetting,
  interfaceWithAddress,
  nodeIpSetting,
  parseMetricsListen,
  startAction,
  vipSetting,
  type StartAction,
} from '../../src/decap/core';
import { decapCounters } from '../../src/decap/kernel';
import type { DecapSettings } from '../../src/decap/config';
import { createDecapRun, timerScheduler } from '../../src/decap/run';
import { bpfObjectPath, packageRoot } from '../../src/paths';

describe('decap core: flags and settings', () => {
  it('parses --metrics-listen and names the flag and value when it is bad', () => {
    expect(parseMetricsListen('0.0.0.0:9472', '--metrics-listen')).toEqual({ host: '0.0.0.0', port: 9472 });
    expect(parseMetricsListen('[::]:9472', '--metrics-listen')).toEqual({ host: '::', port: 9472 });
    expect(parseMetricsListen('127.0.0.1:0', 'PEAK_XDP_METRICS_LISTEN')).toEqual({
      host: '127.0.0.1',
      port: 0,
    });
    for (const bad of ['9472', 'localhost:9472', '0.0.0.0:70000', '0.0.0.0:', ':::9472', ''])
      expect(() => parseMetricsListen(bad, '--metrics-listen')).toThrow(
        new DecapUsageError(
          `--metrics-listen: "${bad}" is not HOST:PORT (an IP address and a port 0-65535, e.g. 0.0.0.0:9472 or [::]:9472)`,
        ),
      );
    expect(() => parseMetricsListen('x', 'PEAK_XDP_METRICS_LISTEN')).toThrow(/^PEAK_XDP_METRICS_LISTEN: "x"/);
  });

  it('takes --interface, else PEAK_XDP_INTERFACE, and says how to give one', () => {
    expect(interfaceSetting('eth0', 'eth1')).toBe('eth0');
    expect(interfaceSetting(undefined, 'eth1')).toBe('eth1');
    expect(interfaceSetting(undefined, ' auto ')).toBe('auto');
    expect(() => interfaceSetting(undefined, undefined)).toThrow(
      /--interface NAME, --interface auto, or env PEAK_XDP_INTERFACE/,
    );
    expect(() => interfaceSetting('', undefined)).toThrow(DecapUsageError);
  });

  it('checks --vip values (host mode) and drops repeats', () => {
    expect(vipSetting([])).toEqual([]);
    expect(vipSetting(['198.51.100.10', '2001:DB8::10', '198.51.100.10'])).toEqual([
      '198.51.100.10',
      '2001:db8::10',
    ]);
    expect(() => vipSetting(['198.51.100.300'])).toThrow('--vip: "198.51.100.300" is not an IP address');
  });

  it('picks the default route interface: IPv4 first (lowest metric), else IPv6, else none', () => {
    expect(defaultRouteInterface([{ dev: 'eth1', metric: 200 }, { dev: 'eth0', metric: 100 }], [{ dev: 'eth9' }])).toBe('eth0'); // prettier-ignore
    expect(defaultRouteInterface([{ dev: 'eth1' }], [])).toBe('eth1');
    expect(defaultRouteInterface([], [{ dev: 'eth6', metric: 1024 }])).toBe('eth6');
    // A blackhole/unreachable default has no device.
    expect(defaultRouteInterface([{}], [])).toBeNull();
    expect(defaultRouteInterface([], [])).toBeNull();
  });

  it('the node IP for --interface auto: PEAK_XDP_NODE_IP over NODE_IP, canonical; a bad one names its variable', () => {
    expect(nodeIpSetting({})).toBeNull();
    expect(nodeIpSetting({ NODE_IP: ' ' })).toBeNull();
    expect(nodeIpSetting({ NODE_IP: '10.0.0.5' })).toBe('10.0.0.5');
    expect(nodeIpSetting({ NODE_IP: '2001:DB8::5' })).toBe('2001:db8::5');
    expect(nodeIpSetting({ PEAK_XDP_NODE_IP: '10.0.0.6', NODE_IP: '10.0.0.5' })).toBe('10.0.0.6');
    expect(nodeIpSetting({ PEAK_XDP_NODE_IP: '', NODE_IP: '10.0.0.5' })).toBe('10.0.0.5');
    expect(() => nodeIpSetting({ NODE_IP: 'node-1' })).toThrow(new DecapUsageError('NODE_IP: "node-1" is not an IP address')); // prettier-ignore
    expect(() => nodeIpSetting({ PEAK_XDP_NODE_IP: '10.0.0.300' })).toThrow(
      /^PEAK_XDP_NODE_IP: "10.0.0.300"/,
    );
  });

  it('finds the interface holding an address in `ip -j addr show` output, never lo', () => {
    const links = [
      { ifname: 'lo', addr_info: [{ local: '127.0.0.1' }, { local: '10.50.0.7' }] },
      { ifname: 'eth0', addr_info: [{ local: '10.20.3.2' }, { local: 'fe80::1' }] },
      { ifname: 'eth1', addr_info: [{ local: '10.50.0.7' }, { local: '2001:db8:5::7' }] },
      { ifname: 'eth2' },
      { addr_info: [{ local: '10.60.0.1' }] },
    ];
    expect(interfaceWithAddress(links, '10.50.0.7')).toBe('eth1');
    expect(interfaceWithAddress(links, '2001:DB8:5:0::7')).toBe('eth1');
    expect(interfaceWithAddress(links, '10.20.3.2')).toBe('eth0');
    expect(interfaceWithAddress(links, '127.0.0.1')).toBeNull();
    expect(interfaceWithAddress(links, '10.60.0.1')).toBeNull();
    expect(interfaceWithAddress([], '10.50.0.7')).toBeNull();
  });

  it('the DSR sysctls of a VIP on lo: IPv4 only, rp_filter of the interface too', () => {
    expect(dsrSysctls('198.51.100.10', 'ens5')).toEqual([
      ['net.ipv4.conf.all.arp_ignore', '1'],
      ['net.ipv4.conf.all.arp_announce', '2'],
      ['net.ipv4.conf.all.rp_filter', '2'],
      ['net.ipv4.conf.ens5.rp_filter', '2'],
    ]);
    expect(dsrSysctls('2001:db8::10', 'ens5')).toEqual([]);
  });
});

describe('decap core: addresses', () => {
  it('uses the given addresses, else the interface ones; canonical, IPv4 then IPv6, each sorted', () => {
    expect(desiredAddresses({ explicit: [], onInterface: ['2001:db8::2', '10.0.0.9', '10.0.0.1'] })).toEqual([
      '10.0.0.1',
      '10.0.0.9',
      '2001:db8::2',
    ]);
    expect(
      desiredAddresses({ explicit: ['2001:DB8:0::5', '2001:db8::5'], onInterface: ['10.0.0.1'] }),
    ).toEqual(['2001:db8::5']);
    expect(desiredAddresses({ explicit: [], onInterface: [] })).toEqual([]);
    expect(() => desiredAddresses({ explicit: ['nope'], onInterface: [] })).toThrow(
      '--address: "nope" is not an IP address',
    );
  });

  it('diffs the map against the desired set', () => {
    expect(addressChanges(['10.0.0.1', '10.0.0.2'], ['10.0.0.2', '10.0.0.3'])).toEqual({
      add: ['10.0.0.3'],
      remove: ['10.0.0.1'],
    });
    expect(addressChanges(['10.0.0.1'], ['10.0.0.1'])).toEqual({ add: [], remove: [] });
    expect(addressChanges([], ['::1'])).toEqual({ add: ['::1'], remove: [] });
  });

  it('refuses no address and more than the map holds', () => {
    expect(() => checkAddressCount([], 64, 'eth0')).toThrow(
      '--interface: eth0 has no global address to decapsulate for (give --address A)',
    );
    expect(() => checkAddressCount(['10.0.0.1', '10.0.0.2'], 1, 'eth0')).toThrow(
      '--address: 2 addresses (10.0.0.1, 10.0.0.2) but the decap program holds at most 1',
    );
    expect(() => checkAddressCount(['10.0.0.1'], 1, 'eth0')).not.toThrow();
  });
});

describe('decap core: what is attached', () => {
  const start = (attached: Parameters<typeof startAction>[0]['attached']): StartAction =>
    startAction({ attached, freshTag: 'aaaa', ifname: 'eth0' });

  it('attaches on a free interface', () => {
    expect(start({ kind: 'none' })).toEqual({ kind: 'attach' });
  });

  it('adopts the pinned program of the same code (restart: no gap, no reload)', () => {
    expect(start({ kind: 'decap', progId: 7, mode: 'native', tag: 'aaaa', pinned: true })).toEqual({
      kind: 'adopt',
      progId: 7,
    });
  });

  it('swaps atomically in the same mode: other code (upgrade), or a decap whose maps it cannot reopen', () => {
    expect(start({ kind: 'decap', progId: 7, mode: 'native', tag: 'bbbb', pinned: true })).toEqual({
      kind: 'replace',
      progId: 7,
      mode: 'native',
    });
    expect(start({ kind: 'decap', progId: 8, mode: 'generic', tag: 'aaaa', pinned: false })).toEqual({
      kind: 'replace',
      progId: 8,
      mode: 'generic',
    });
  });

  it('refuses to replace someone else’s program, naming it', () => {
    expect(start({ kind: 'other', progId: 9, name: 'balancer' })).toEqual({
      kind: 'refuse',
      reason:
        '--interface: eth0 runs another XDP program (id 9, "balancer"); not replacing it (one XDP program per interface: detach it, or decapsulate on another interface)',
    });
    expect(start({ kind: 'other', progId: 9, name: null })).toMatchObject({
      reason: expect.stringMatching(/^--interface: eth0 runs another XDP program \(id 9\);/),
    });
  });

  it('at a check: ours is fine, none is re-attached, another is left alone', () => {
    expect(checkAction(5, 5)).toBe('ok');
    expect(checkAction(0, 5)).toBe('reattach');
    expect(checkAction(6, 5)).toBe('foreign');
  });
});

describe('decap counters from enum peak_decap_counter', () => {
  it('names counters by index, dense below PEAK_DECAP_MAX, whatever the enum adds', () => {
    expect(
      decapCounterNames(
        { PEAK_DECAP_RX_PACKETS: 0, PEAK_DECAP_IPIP: 1, PEAK_DECAP_NEW_THING: 2, PEAK_DECAP_MAX: 3 },
        'x.o',
      ),
    ).toEqual(['rx_packets', 'ipip', 'new_thing']);
  });

  it('rejects a malformed enum', () => {
    expect(() => decapCounterNames({ PEAK_DECAP_RX_PACKETS: 0 }, 'x.o')).toThrow(
      'PEAK_DECAP_MAX not found in enum peak_decap_counter of x.o',
    );
    expect(() => decapCounterNames({ PEAK_DECAP_A: 0, PEAK_DECAP_MAX: 2 }, 'x.o')).toThrow(
      'no counter at index 1',
    );
    expect(() => decapCounterNames({ PEAK_DECAP_A: 0, PEAK_DECAP_B: 0, PEAK_DECAP_MAX: 2 }, 'x.o')).toThrow(
      'PEAK_DECAP_B = 0 is not a free index',
    );
  });

  it('reads the built decap object’s BTF: the same names, in the same order, as bpf/shared.h', () => {
    const fromBtf = decapCounters(bpfObjectPath('decap'));
    const src = readFileSync(join(packageRoot, 'bpf', 'shared.h'), 'utf8');
    const body = /enum peak_decap_counter \{([\s\S]*?)\};/.exec(src)![1]!;
    const fromHeader = body
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .split(',')
      .map((x) => x.trim().replace(/\s*=.*$/, ''))
      .filter((x) => x !== '' && x !== 'PEAK_DECAP_MAX')
      .map((x) => x.replace(/^PEAK_DECAP_/, '').toLowerCase());
    expect(fromHeader.length).toBeGreaterThanOrEqual(6);
    expect(fromBtf).toEqual(fromHeader);
    expect(fromBtf.slice(0, 6)).toEqual(['rx_packets', 'ipip', 'ip6ip6', 'ip4in6', 'pass', 'error']);
  });
});

// ---- the agent over fakes ----

interface Logged {
  level: string;
  msg: string;
  [k: string]: unknown;
}

function capturingLogger(): { log: pino.Logger; lines: Logged[] } {
  const lines: Logged[] = [];
  const log = pino(
    { level: 'debug', formatters: { level: (label) => ({ level: label }) } },
    { write: (s: string) => void lines.push(JSON.parse(s) as Logged) },
  );
  return { log, lines };
}

class FakeProgram implements DecapProgramHandle {
  readonly counterNames = ['rx_packets', 'ipip', 'pass', 'gue_new'];
  addressCapacity = 64;
  pins: string | null = '/sys/fs/bpf/peak-xdp/root/eth0/decap';
  map = new Set<string>();
  values = [0n, 0n, 0n, 0n];
  attachedId: number;
  attachError: Error | null = null;
  attachCalls = 0;
  unpinned = false;
  closed = false;
  queryError: Error | null = null;
  written: DecapSettings[] = [];
  targets: { owner: string; packets: bigint }[] = [];
  constructor(readonly progId: number) {
    this.attachedId = progId;
  }
  attachedProgId(): number {
    if (this.queryError) throw this.queryError;
    return this.attachedId;
  }
  async attach() {
    this.attachCalls++;
    if (this.attachError) throw this.attachError;
    this.attachedId = this.progId;
    return { progId: this.progId, mode: 'native' };
  }
  async detach() {
    if (this.attachedId !== this.progId) return false;
    this.attachedId = 0;
    return true;
  }
  addresses() {
    return [...this.map];
  }
  setAddresses(c: { add: readonly string[]; remove: readonly string[] }) {
    for (const a of c.add) this.map.add(a);
    for (const a of c.remove) this.map.delete(a);
  }
  counters() {
    return [...this.values];
  }
  writeSettings(s: DecapSettings) {
    // the order the agent relies on: settings before any address is in the map (fresh attach)
    if (this.map.size > 0 && this.written.length === 0 && !this.adopted)
      throw new Error('settings after addresses');
    this.written.push(s);
  }
  adopted = false;
  secondChanceTargets() {
    return this.targets;
  }
  moved = 0;
  movedFlows() {
    return this.moved;
  }
  unpin() {
    this.unpinned = true;
  }
  close() {
    this.closed = true;
  }
}

function setup(o: {
  interface?: string;
  addresses?: string[];
  vips?: string[];
  keepOnExit?: boolean;
  ifAddrs?: string[];
  action?: StartAction;
  stale?: string[];
  serverFails?: boolean;
  settings?: Partial<DecapSettings>;
  kfunc?: boolean | null;
  fwd?: { 4: boolean | null; 6: boolean | null };
  nodeIp?: string | null;
  sysctls?: boolean;
  /** Interfaces besides eth0 and their addresses (multi-NIC nodes). */
  moreIfs?: Record<string, string[]>;
}) {
  const prog = new FakeProgram(41);
  prog.adopted = o.action?.kind === 'adopt';
  for (const a of o.stale ?? []) prog.map.add(a);
  const fwd = { value: o.fwd ?? { 4: true, 6: true } };
  const ifAddrs = { eth0: o.ifAddrs ?? ['10.20.3.2', '2001:db8:3::2'], ...o.moreIfs } as Record<string, string[]>; // prettier-ignore
  const lo = new Set<string>();
  // The sysctls the host was asked to set (key=value), in order.
  const sysctlsSet: string[] = [];
  const host: DecapHost = {
    interfaceExists: (n) => n in ifAddrs,
    defaultRouteInterface: async () => 'eth0',
    interfaceWithAddress: async (ip) =>
      interfaceWithAddress(Object.entries(ifAddrs).map(([ifname, a]) => ({ ifname, addr_info: a.map((local) => ({ local })) })), ip), // prettier-ignore
    addresses: async (n) => [...(ifAddrs[n] ?? [])],
    addVip: async (v, ifname, sysctls) => {
      lo.add(v);
      const want = dsrSysctls(v, ifname).map(([k, x]) => `${k}=${x}`);
      if (!sysctls) return want;
      sysctlsSet.push(...want);
      return [];
    },
    removeVip: async (v) => void lo.delete(v),
    conntrackKfunc: async () => (o.kfunc === undefined ? true : o.kfunc),
    forwarding: async () => ({ ...fwd.value }),
  };
  const opened: string[] = [];
  const kernel: DecapKernel = {
    async open({ ifname }) {
      opened.push(ifname);
      return { handle: prog, action: o.action ?? { kind: 'attach' }, mode: 'native' };
    },
  };
  let tick: (() => Promise<void>) | null = null;
  let tickMs = 0;
  let timerStopped = false;
  const served: { render?: () => Promise<string>; ready?: () => { ready: boolean; reasons: string[] } } = {};
  let serverStopped = false;
  const server: MetricsServerFactory = {
    async start(s) {
      if (o.serverFails) throw new Error('listen EADDRINUSE: address already in use 0.0.0.0:9472');
      served.render = s.render;
      served.ready = s.ready;
      return { address: { host: s.host, port: s.port }, stop: async () => void (serverStopped = true) };
    },
  };
  const { log, lines } = capturingLogger();
  const agent = new DecapAgent({
    interface: o.interface ?? 'eth0',
    nodeIp: o.nodeIp ?? null,
    sysctls: o.sysctls ?? true,
    addresses: o.addresses ?? [],
    vips: o.vips ?? [],
    keepOnExit: o.keepOnExit ?? false,
    // One --from prefix (the LB nodes' encapsulation sources): without it hints are never honoured.
    settings: {
      guePort: 6080,
      secondChance: true,
      conntrackLookup: true,
      rememberMoved: true,
      sources: [{ family: 4 as const, prefix: '10.30.200.0', prefixLength: 24, ipip: true, gue: true }],
      ...o.settings,
    },
    metricsListen: { host: '0.0.0.0', port: 9472 },
    checkMs: 5000,
    kernel,
    host,
    scheduler: {
      every(ms, fn) {
        tickMs = ms;
        tick = fn;
        return { stop: () => void (timerStopped = true) };
      },
    },
    server,
    log,
  });
  return {
    agent,
    prog,
    ifAddrs,
    lo,
    sysctlsSet,
    opened,
    lines,
    served,
    fwd,
    tick: () => tick!(),
    get tickMs() {
      return tickMs;
    },
    get timerStopped() {
      return timerStopped;
    },
    get serverStopped() {
      return serverStopped;
    },
  };
}

const metric = (text: string, line: string): number | null => {
  const m = new RegExp(`^${line.replace(/[{}.*+?^$()|[\]\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
};

describe('DecapAgent', () => {
  it('node mode: attaches for every global address of the interface, nothing on lo, checks every 5 s', async () => {
    const t = setup({});
    const s = await t.agent.start();
    expect(s).toEqual({
      interface: 'eth0',
      progId: 41,
      mode: 'native',
      action: 'attach',
      addresses: ['10.20.3.2', '2001:db8:3::2'],
      addressSource: 'interface',
      vips: [],
      sysctlsSkipped: [],
      pins: '/sys/fs/bpf/peak-xdp/root/eth0/decap',
      metrics: { host: '0.0.0.0', port: 9472 },
      keepOnExit: false,
      guePort: 6080,
      secondChance: true,
      conntrackLookup: true,
      rememberMoved: true,
      sources: ['10.30.200.0/24'],
      gueSources: [],
      diagnostics: {
        conntrackKfunc: true,
        forwarding: { ipv4: true, ipv6: true },
        secondChanceReady: true,
        reasons: [],
      },
    });
    expect([...t.prog.map].sort()).toEqual(['10.20.3.2', '2001:db8:3::2']);
    expect(t.prog.written).toEqual([
      {
        guePort: 6080,
        secondChance: true,
        conntrackLookup: true,
        rememberMoved: true,
        sources: [{ family: 4, prefix: '10.30.200.0', prefixLength: 24, ipip: true, gue: true }],
      },
    ]);
    expect(t.lo.size).toBe(0);
    expect(t.tickMs).toBe(5000);
    expect(t.served.ready!()).toEqual({ ready: true, reasons: [] });
  });

  it('an adopted map loses addresses that are no longer the node’s before the first check', async () => {
    const t = setup({ action: { kind: 'adopt', progId: 41 }, stale: ['10.99.0.1', '10.20.3.2'] });
    const s = await t.agent.start();
    expect(s.action).toBe('adopt');
    expect([...t.prog.map].sort()).toEqual(['10.20.3.2', '2001:db8:3::2']);
  });

  it('--interface auto takes the default route’s interface; an unknown one is a usage error naming it', async () => {
    const t = setup({ interface: 'auto' });
    expect((await t.agent.start()).interface).toBe('eth0');
    expect(t.opened).toEqual(['eth0']);
    const u = setup({ interface: 'eth7' });
    await expect(u.agent.start()).rejects.toThrow(new DecapUsageError('--interface: no interface "eth7" in this network namespace')); // prettier-ignore
    expect(u.opened).toEqual([]);
  });

  it('--interface auto with a node IP: the interface holding it (multi-NIC), else the default route’s, said in the log', async () => {
    // The Node's InternalIP sits on eth1, the default route on eth0: the LB nodes encapsulate to eth1's address.
    const moreIfs = { eth1: ['10.50.0.7', 'fd50::7'] };
    const t = setup({ interface: 'auto', nodeIp: '10.50.0.7', moreIfs });
    const s = await t.agent.start();
    expect([s.interface, s.addresses, t.opened]).toEqual(['eth1', ['10.50.0.7', 'fd50::7'], ['eth1']]);
    expect(t.lines.find((l) => /holding the node IP/.test(l.msg))).toMatchObject({ interface: 'eth1', nodeIp: '10.50.0.7' }); // prettier-ignore
    // An IPv6 node IP finds its interface too.
    const v6 = setup({ interface: 'auto', nodeIp: 'fd50::7', moreIfs });
    expect((await v6.agent.start()).interface).toBe('eth1');
    // On the default route's interface: that one.
    const same = setup({ interface: 'auto', nodeIp: '10.20.3.2', moreIfs });
    expect((await same.agent.start()).interface).toBe('eth0');
    // Nowhere (a NATed address, say): the default route's, with a warning.
    const none = setup({ interface: 'auto', nodeIp: '10.99.9.9', moreIfs });
    expect((await none.agent.start()).interface).toBe('eth0');
    expect(none.lines.find((l) => /no interface holds the node IP/.test(l.msg))).toMatchObject({ level: 'warn', nodeIp: '10.99.9.9' }); // prettier-ignore
    // A named interface is taken as named, whatever the node IP.
    const named = setup({ interface: 'eth0', nodeIp: '10.50.0.7', moreIfs });
    expect((await named.agent.start()).interface).toBe('eth0');
  });

  it('an interface without a global address (and no --address) is refused, and nothing stays attached', async () => {
    const t = setup({ ifAddrs: [] });
    await expect(t.agent.start()).rejects.toThrow('--interface: eth0 has no global address');
    expect(t.prog.attachedId).toBe(0);
    expect(t.prog.unpinned).toBe(true);
  });

  it('a metrics server that cannot listen undoes the start (a fresh attach is removed, VIPs too)', async () => {
    const t = setup({ serverFails: true, vips: ['198.51.100.10'] });
    await expect(t.agent.start()).rejects.toThrow(/EADDRINUSE/);
    expect(t.prog.attachedId).toBe(0);
    expect(t.lo.size).toBe(0);
    // An adopted program was running before this start: it stays.
    const a = setup({ serverFails: true, action: { kind: 'adopt', progId: 41 } });
    await expect(a.agent.start()).rejects.toThrow(/EADDRINUSE/);
    expect(a.prog.attachedId).toBe(41);
    expect(a.prog.unpinned).toBe(false);
  });

  it('/metrics: every enum counter (new ones too) as packets_total{result}, rx separately, attached gauge', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.values = [100n, 60n, 38n, 2n];
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_rx_packets_total{interface="eth0"}')).toBe(100);
    expect(metric(text, 'peak_xdp_decap_packets_total{interface="eth0",result="ipip"}')).toBe(60);
    expect(metric(text, 'peak_xdp_decap_packets_total{interface="eth0",result="pass"}')).toBe(38);
    expect(metric(text, 'peak_xdp_decap_packets_total{interface="eth0",result="gue_new"}')).toBe(2);
    expect(metric(text, 'peak_xdp_decap_packets_total{interface="eth0",result="rx_packets"}')).toBeNull();
    expect(metric(text, 'peak_xdp_decap_attached{interface="eth0"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_addresses{family="ipv4"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_addresses{family="ipv6"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_reattach_total{result="ok"}')).toBe(0);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  });

  it('re-attaches a detached program at the next check and counts it', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.attachedId = 0;
    await t.tick();
    expect(t.prog.attachedId).toBe(41);
    expect(t.prog.attachCalls).toBe(1);
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_reattach_total{result="ok"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_attached{interface="eth0"}')).toBe(1);
    expect(t.lines.filter((l) => l.msg === 'decap was detached: re-attached')).toHaveLength(1);
    await t.tick();
    expect(t.prog.attachCalls).toBe(1);
  });

  it('a failed re-attach is counted, makes it unready, is logged once, and is retried at each check', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.attachedId = 0;
    t.prog.attachError = new Error('attach xdp: Device or resource busy');
    await t.tick();
    await t.tick();
    expect(t.prog.attachCalls).toBe(2);
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_reattach_total{result="error"}')).toBe(2);
    expect(metric(text, 'peak_xdp_decap_attached{interface="eth0"}')).toBe(0);
    expect(t.served.ready!()).toEqual({
      ready: false,
      reasons: ['re-attach to eth0 failed: attach xdp: Device or resource busy'],
    });
    expect(t.lines.filter((l) => l.msg === 'decap not attached')).toHaveLength(1);
    t.prog.attachError = null;
    await t.tick();
    expect(t.served.ready!().ready).toBe(true);
  });

  it('leaves another program in its place alone (not ready, logged once) and takes over when it goes', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.attachedId = 77;
    await t.tick();
    await t.tick();
    expect(t.prog.attachCalls).toBe(0);
    expect(t.prog.attachedId).toBe(77);
    expect(t.served.ready!().reasons[0]).toMatch(
      /another XDP program \(id 77\) is attached to eth0; not replacing it/,
    );
    expect(t.lines.filter((l) => l.msg === 'decap not attached')).toHaveLength(1);
    t.prog.attachedId = 0;
    await t.tick();
    expect(t.prog.attachedId).toBe(41);
  });

  it('an interface that cannot be queried (gone) makes it unready, not crash', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.queryError = Object.assign(new Error('resolve interface: No such device'), { code: 'ENODEV' });
    await expect(t.tick()).resolves.toBeUndefined();
    expect(t.served.ready!().ready).toBe(false);
  });

  it('follows the interface’s addresses: adds and removes, counts the change', async () => {
    const t = setup({});
    await t.agent.start();
    t.ifAddrs.eth0 = ['10.20.3.2', '10.20.3.7'];
    await t.tick();
    expect([...t.prog.map].sort()).toEqual(['10.20.3.2', '10.20.3.7']);
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_address_changes_total')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_addresses{family="ipv6"}')).toBe(0);
    const l = t.lines.find((x) => x.msg === 'interface addresses changed: decap follows')!;
    expect(l).toMatchObject({ add: ['10.20.3.7'], remove: ['2001:db8:3::2'] });
    await t.tick();
    expect(metric(await t.served.render!(), 'peak_xdp_decap_address_changes_total')).toBe(1);
  });

  it('keeps the last addresses while the interface has none (no gap during a renumbering)', async () => {
    const t = setup({});
    await t.agent.start();
    t.ifAddrs.eth0 = [];
    await t.tick();
    expect([...t.prog.map].sort()).toEqual(['10.20.3.2', '2001:db8:3::2']);
    expect(t.served.ready!().ready).toBe(true);
  });

  it('with --address the set is fixed: interface changes are not followed', async () => {
    const t = setup({ addresses: ['192.0.2.5'] });
    const s = await t.agent.start();
    expect(s.addressSource).toBe('flag');
    t.ifAddrs.eth0 = ['10.20.3.9'];
    await t.tick();
    expect([...t.prog.map]).toEqual(['192.0.2.5']);
  });

  it('stop: detaches, unpins, removes the VIPs it added (host mode), stops the server and checks', async () => {
    const t = setup({ vips: ['198.51.100.10'] });
    await t.agent.start();
    expect([...t.lo]).toEqual(['198.51.100.10']);
    const s = await t.agent.stop();
    expect(s).toEqual({
      interface: 'eth0',
      detached: true,
      kept: false,
      vipsRemoved: ['198.51.100.10'],
      reattaches: 0,
    });
    expect(t.prog.attachedId).toBe(0);
    expect(t.prog.unpinned).toBe(true);
    expect(t.lo.size).toBe(0);
    expect(t.timerStopped).toBe(true);
    expect(t.serverStopped).toBe(true);
    expect(t.prog.closed).toBe(true);
  });

  it('host mode sets the DSR sysctls with the VIPs; --no-sysctls puts the VIPs on lo only and reports what it skipped', async () => {
    const t = setup({ vips: ['198.51.100.10', '198.51.100.11', '2001:db8:9::10'] });
    const s = await t.agent.start();
    expect(s.sysctlsSkipped).toEqual([]);
    expect(new Set(t.sysctlsSet)).toEqual(
      new Set(['net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2', 'net.ipv4.conf.all.rp_filter=2', 'net.ipv4.conf.eth0.rp_filter=2']), // prettier-ignore
    );
    const n = setup({ vips: ['198.51.100.10', '198.51.100.11', '2001:db8:9::10'], sysctls: false });
    const ns = await n.agent.start();
    expect([...n.lo]).toEqual(['198.51.100.10', '198.51.100.11', '2001:db8:9::10']);
    expect(n.sysctlsSet).toEqual([]);
    // Each skipped once, however many VIPs needed it.
    expect(ns.sysctlsSkipped).toEqual([
      'net.ipv4.conf.all.arp_ignore=1',
      'net.ipv4.conf.all.arp_announce=2',
      'net.ipv4.conf.all.rp_filter=2',
      'net.ipv4.conf.eth0.rp_filter=2',
    ]);
    // Node mode has no VIPs: nothing set, nothing skipped.
    const node = setup({ sysctls: false });
    expect((await node.agent.start()).sysctlsSkipped).toEqual([]);
  });

  it('stop with --keep-on-exit: the program, pins and VIPs stay for the next start to adopt', async () => {
    const t = setup({ vips: ['198.51.100.10'], keepOnExit: true });
    await t.agent.start();
    const s = await t.agent.stop();
    expect(s).toEqual({ interface: 'eth0', detached: false, kept: true, vipsRemoved: [], reattaches: 0 });
    expect(t.prog.attachedId).toBe(41);
    expect(t.prog.unpinned).toBe(false);
    expect([...t.lo]).toEqual(['198.51.100.10']);
    expect(t.serverStopped).toBe(true);
  });

  it('a check after stop does nothing', async () => {
    const t = setup({});
    await t.agent.start();
    await t.agent.stop();
    t.prog.attachedId = 0;
    await t.tick();
    expect(t.prog.attachCalls).toBe(0);
  });
});

describe('DecapAgent: settings, sources, second-chance diagnostics', () => {
  const src = (prefix: string, prefixLength: number, ipip = true) => ({
    family: (prefix.includes(':') ? 6 : 4) as 4 | 6,
    prefix,
    prefixLength,
    ipip,
    gue: true,
  });

  it('writes the settings before the addresses and reports them; sources split by kind', async () => {
    const settings = {
      guePort: 7000,
      secondChance: true,
      conntrackLookup: false,
      rememberMoved: false,
      sources: [src('10.30.200.0', 24), src('10.30.0.0', 16, false), src('fd00:200::', 64)],
    };
    const t = setup({ settings });
    const s = await t.agent.start();
    expect(t.prog.written).toEqual([settings]);
    expect(s).toMatchObject({
      guePort: 7000,
      conntrackLookup: false,
      rememberMoved: false,
      sources: ['10.30.200.0/24', 'fd00:200::/64'],
      gueSources: ['10.30.0.0/16'],
    });
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_sources{family="ipv4",kinds="all"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_sources{family="ipv4",kinds="gue"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_sources{family="ipv6",kinds="all"}')).toBe(1);
    expect((t.agent.snapshot().sources as unknown[]).length).toBe(3);
  });

  it('an adopted program gets this run’s settings too', async () => {
    const t = setup({
      action: { kind: 'adopt', progId: 41 },
      stale: ['10.20.3.2'],
      settings: { guePort: 6081 },
    });
    await t.agent.start();
    expect(t.prog.written.map((w) => w.guePort)).toEqual([6081]);
  });

  it('second chance ready: gauges 1, one info line; kfunc and forwarding exposed', async () => {
    const t = setup({});
    await t.agent.start();
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_second_chance_ready{interface="eth0"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_conntrack_kfunc{kfunc="bpf_xdp_ct_lookup"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_forwarding{interface="eth0",family="ipv4"}')).toBe(1);
    expect(metric(text, 'peak_xdp_decap_forwarding{interface="eth0",family="ipv6"}')).toBe(1);
    expect(t.lines.filter((l) => l.msg === 'second chance ready')).toHaveLength(1);
    expect(t.lines.some((l) => /kernel BTF has bpf_xdp_ct_lookup/.test(l.msg))).toBe(true);
  });

  it('forwarding off: warns naming the sysctl, not ready (gauge 0), and follows the sysctl at each check', async () => {
    const t = setup({ fwd: { 4: false, 6: true } });
    const s = await t.agent.start();
    expect(s.diagnostics).toEqual({
      conntrackKfunc: true,
      forwarding: { ipv4: false, ipv6: true },
      secondChanceReady: false,
      reasons: [
        'IPv4 forwarding is off on eth0: bpf_fib_lookup cannot route second-chance packets (set net.ipv4.conf.eth0.forwarding=1)',
      ],
    });
    const warn = t.lines.filter((l) => l.level === 'warn' && /forwarding is off/.test(l.msg));
    expect(warn).toHaveLength(1);
    expect(warn[0]!.sysctl).toBe('net.ipv4.conf.eth0.forwarding');
    expect(t.lines.some((l) => l.msg === 'second chance not ready')).toBe(true);
    let text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_second_chance_ready{interface="eth0"}')).toBe(0);
    expect(metric(text, 'peak_xdp_decap_forwarding{interface="eth0",family="ipv4"}')).toBe(0);
    // unchanged at a check: no second warning; switched on: ready, said once
    await t.tick();
    expect(t.lines.filter((l) => l.level === 'warn' && /forwarding is off/.test(l.msg))).toHaveLength(1);
    t.fwd.value = { 4: true, 6: true };
    await t.tick();
    await t.tick();
    expect(t.lines.filter((l) => /IPv4 forwarding is on again/.test(l.msg))).toHaveLength(1);
    text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_second_chance_ready{interface="eth0"}')).toBe(1);
    // the readiness of decap itself does not depend on it
    expect(t.served.ready!()).toEqual({ ready: true, reasons: [] });
  });

  it('forwarding matters only for the families decapsulated; IPv6 absent on the interface is not a reason then', async () => {
    const t = setup({ ifAddrs: ['10.20.3.2'], fwd: { 4: true, 6: null } });
    expect((await t.agent.start()).diagnostics).toMatchObject({
      secondChanceReady: true,
      forwarding: { ipv4: true, ipv6: null },
    });
    const text = await t.served.render!();
    expect(metric(text, 'peak_xdp_decap_forwarding{interface="eth0",family="ipv6"}')).toBeNull();
  });

  it('no bpf_xdp_ct_lookup in the kernel: not ready unless --no-conntrack-lookup; unreadable BTF: no kfunc gauge', async () => {
    const t = setup({ kfunc: false });
    const s = await t.agent.start();
    expect(s.diagnostics.secondChanceReady).toBe(false);
    expect(s.diagnostics.reasons).toEqual([
      "the kernel's BTF has no bpf_xdp_ct_lookup (nf_conntrack missing, or a kernel before 6.0): node mode would forward flows kube-proxy DNATed here (host mode: --no-conntrack-lookup)",
    ]);
    expect(t.lines.some((l) => /kernel BTF has no bpf_xdp_ct_lookup/.test(l.msg))).toBe(true);
    expect(
      metric(await t.served.render!(), 'peak_xdp_decap_conntrack_kfunc{kfunc="bpf_xdp_ct_lookup"}'),
    ).toBe(0);
    const u = setup({ kfunc: false, settings: { conntrackLookup: false } });
    expect((await u.agent.start()).diagnostics.secondChanceReady).toBe(true);
    const v = setup({ kfunc: null });
    expect((await v.agent.start()).diagnostics.reasons).toEqual([
      "could not read the kernel's BTF to find bpf_xdp_ct_lookup (the conntrack lookup node mode needs)",
    ]);
    expect(
      metric(await v.served.render!(), 'peak_xdp_decap_conntrack_kfunc{kfunc="bpf_xdp_ct_lookup"}'),
    ).toBeNull();
  });

  it('--no-second-chance: not ready (switched off), and no forwarding warning', async () => {
    const t = setup({ settings: { secondChance: false }, fwd: { 4: false, 6: false } });
    const s = await t.agent.start();
    expect(s.diagnostics.reasons[0]).toBe('second chance switched off (--no-second-chance)');
    expect(t.lines.filter((l) => l.level === 'warn' && /forwarding is off/.test(l.msg))).toHaveLength(0);
  });

  it('moved flows remembered: a gauge and /state, read from the program each time', async () => {
    const t = setup({});
    await t.agent.start();
    expect(metric(await t.served.render!(), 'peak_xdp_decap_moved_flows{interface="eth0"}')).toBe(0);
    t.prog.moved = 1234;
    expect(metric(await t.served.render!(), 'peak_xdp_decap_moved_flows{interface="eth0"}')).toBe(1234);
    expect(t.agent.snapshot().movedFlows).toBe(1234);
  });

  it('second-chance forwards by previous owner: the top 20 by count, the rest summed as owner="other"', async () => {
    const t = setup({});
    await t.agent.start();
    t.prog.targets = Array.from({ length: 25 }, (_, i) => ({
      owner: `10.9.0.${i + 1}`,
      packets: BigInt(100 - i),
    }));
    let text = await t.served.render!();
    const series = text
      .split('\n')
      .filter((l) => l.startsWith('peak_xdp_decap_second_chance_forwards_total{'));
    expect(series).toHaveLength(21);
    expect(
      metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="10.9.0.1"}'),
    ).toBe(100);
    expect(
      metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="10.9.0.20"}'),
    ).toBe(81);
    expect(
      metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="10.9.0.21"}'),
    ).toBeNull();
    expect(metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="other"}')).toBe(
      80 + 79 + 78 + 77 + 76,
    );
    t.prog.targets = [{ owner: '2001:db8::3', packets: 4n }];
    text = await t.served.render!();
    expect(
      metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="2001:db8::3"}'),
    ).toBe(4);
    expect(
      metric(text, 'peak_xdp_decap_second_chance_forwards_total{interface="eth0",owner="other"}'),
    ).toBeNull();
  });
});

describe('decap run wiring', () => {
  const args = {
    address: [],
    vip: [],
    mode: 'auto' as const,
    keepOnExit: false,
    bpffs: '/nonexistent-bpffs',
    from: [] as string[],
    gueFrom: [] as string[],
    secondChance: true,
    conntrackLookup: true,
    rememberMoved: true,
    sysctls: true,
  };
  const log = pino({ level: 'silent' });

  it('takes --metrics-listen over PEAK_XDP_METRICS_LISTEN, and names whichever is bad', () => {
    expect(() =>
      createDecapRun({ ...args, interface: 'eth0' }, log, { PEAK_XDP_METRICS_LISTEN: 'nope' }),
    ).toThrow(/^PEAK_XDP_METRICS_LISTEN: "nope" is not HOST:PORT/);
    expect(() =>
      createDecapRun({ ...args, interface: 'eth0', metricsListen: 'x:1' }, log, {
        PEAK_XDP_METRICS_LISTEN: '0.0.0.0:1',
      }),
    ).toThrow(/^--metrics-listen: "x:1" is not HOST:PORT/);
    expect(
      createDecapRun({ ...args, interface: 'eth0', metricsListen: '127.0.0.1:1' }, log, {
        PEAK_XDP_METRICS_LISTEN: 'bad',
      }).agent,
    ).toBeInstanceOf(DecapAgent);
  });

  it('needs an interface from the flag or PEAK_XDP_INTERFACE, and checks --vip', () => {
    expect(() => createDecapRun(args, log, {})).toThrow(/give the interface/);
    expect(createDecapRun(args, log, { PEAK_XDP_INTERFACE: 'auto' }).agent).toBeInstanceOf(DecapAgent);
    expect(() => createDecapRun({ ...args, interface: 'eth0', vip: ['v'] }, log, {})).toThrow(
      '--vip: "v" is not an IP address',
    );
    // The node IP --interface auto looks for is checked at start-up, naming the variable.
    expect(() => createDecapRun(args, log, { PEAK_XDP_INTERFACE: 'auto', NODE_IP: 'x' })).toThrow(
      'NODE_IP: "x" is not an IP address',
    );
  });

  it('--gue-port, --from and --gue-from (and their variables) reach the agent; bad ones name flag and value', () => {
    const mk = (a: Partial<typeof args & { guePort: string }>, env: Record<string, string> = {}) =>
      createDecapRun({ ...args, interface: 'eth0', ...a }, log, env).agent.snapshot();
    expect(mk({})).toMatchObject({ guePort: 6080, secondChance: true, conntrackLookup: true, sources: [] });
    expect(mk({ guePort: '7000' }, { PEAK_XDP_GUE_PORT: '8000' }).guePort).toBe(7000);
    expect(mk({}, { PEAK_XDP_GUE_PORT: '8000' }).guePort).toBe(8000);
    expect(mk({ secondChance: false, conntrackLookup: false })).toMatchObject({ secondChance: false, conntrackLookup: false }); // prettier-ignore
    expect(
      mk({}, { PEAK_XDP_DECAP_FROM: '10.30.200.0/24, fd00::/64', PEAK_XDP_DECAP_GUE_FROM: '10.30.0.0/16' })
        .sources,
    ).toEqual([
      { prefix: '10.30.0.0/16', ipip: false, gue: true },
      { prefix: '10.30.200.0/24', ipip: true, gue: true },
      { prefix: 'fd00::/64', ipip: true, gue: true },
    ]);
    // the flag wins over the variable
    expect(mk({ from: ['192.0.2.0/24'] }, { PEAK_XDP_DECAP_FROM: '10.30.200.0/24' }).sources).toEqual([
      { prefix: '192.0.2.0/24', ipip: true, gue: true },
    ]);
    expect(() => mk({ guePort: '0' })).toThrow(
      new DecapUsageError('--gue-port: "0" is not a UDP port (an integer 1-65535)'),
    );
    expect(() => mk({}, { PEAK_XDP_GUE_PORT: 'x' })).toThrow('PEAK_XDP_GUE_PORT: "x" is not a UDP port');
    expect(() => mk({ from: ['10.30.200.1/24'] })).toThrow(
      '--from: "10.30.200.1/24" has host bits set (the prefix is 10.30.200.0/24)',
    );
    expect(() => mk({}, { PEAK_XDP_DECAP_FROM: 'lb-nodes' })).toThrow(
      /^PEAK_XDP_DECAP_FROM: "lb-nodes" is not an IP prefix/,
    );
    expect(() => mk({ gueFrom: ['10.30.0.0/16'] })).toThrow(/^--gue-from: needs --from/);
  });

  it('the check timer waits for each check to finish before the next interval', async () => {
    jest.useFakeTimers();
    try {
      const starts: number[] = [];
      let release: (() => void) | null = null;
      const t = timerScheduler.every(5000, async () => {
        starts.push(Date.now());
        await new Promise<void>((r) => (release = r));
      });
      const t0 = Date.now();
      await jest.advanceTimersByTimeAsync(4999);
      expect(starts).toEqual([]);
      await jest.advanceTimersByTimeAsync(1);
      expect(starts).toEqual([t0 + 5000]);
      // A slow check: no second one while it runs.
      await jest.advanceTimersByTimeAsync(12000);
      expect(starts).toHaveLength(1);
      release!();
      await jest.advanceTimersByTimeAsync(5000);
      expect(starts).toEqual([t0 + 5000, t0 + 22000]);
      t.stop();
      release!();
      await jest.advanceTimersByTimeAsync(20000);
      expect(starts).toHaveLength(2);
    } finally {
      jest.useRealTimers();
    }
  });
});
