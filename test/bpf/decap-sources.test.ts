// decap_sources through BPF_PROG_TEST_RUN: with prefixes written (by the agent's own writer), only tunnels from
// them are decapsulated (a CNI's IPIP overlay between nodes passes untouched, counted not_from_lb); GUE-only
// prefixes admit GUE and not IPIP; an empty map keeps decapsulating from anywhere. IPIP and GUE, both families.
// A previous-owner hint is honoured only from a --from (LB) prefix: never with no sources, never from --gue-from.
import { BpfMap, BpfObject, BpfProgram, btfLayout } from '../../src/datapath/bpf';
import { encodeAddrKey } from '../../src/datapath/layout';
import { sourcesSetting, type DecapSettings } from '../../src/decap/config';
import { decapLayoutOf, writeDecapSettings } from '../../src/decap/kernel';
import { bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { encapFrame, ethHeader, EthSpec, gueFrame, ipPacket } from '../helpers/packet';

const OBJECT = bpfObjectPath('decap');
const eth: EthSpec = { src: '02:00:00:00:00:01', dst: '02:00:00:00:00:02' };
const ME4 = '10.1.0.1';
const ME6 = 'fd00:1::1';
const LB4 = '10.255.0.7'; // in --from 10.255.0.0/24
const LB6 = 'fd00:ff::7'; // in --from fd00:ff::/64
const NODE4 = '10.9.1.1'; // in --gue-from 10.9.0.0/16 only (a peer backend: second-chance hops)
const NODE4_LB = '10.9.5.1'; // in --from 10.9.5.0/24, inside the GUE-only /16: the longer prefix decides
const CNI4 = '192.0.2.9'; // a node's CNI tunnel end: listed nowhere
const CNI6 = '2001:db8:9::9';
const inner4 = ipPacket({ src: '192.0.2.1', dst: '10.0.0.10' }, { type: 'tcp', sport: 1, dport: 80, payload: Buffer.from('x') });
const inner6 = ipPacket({ src: '2001:db8::1', dst: '2001:db8::10' }, { type: 'udp', sport: 1, dport: 53 });
// what a CNI overlay carries: pod to pod
const podInner = ipPacket({ src: '10.244.1.5', dst: '10.244.2.7' }, { type: 'tcp', sport: 3333, dport: 8080 });

const ipip = (src: string, inner = inner4, dst = src.includes(':') ? ME6 : ME4) =>
  encapFrame({ eth, outer: { src, dst }, inner });
const gue = (src: string, inner = inner4, dst = src.includes(':') ? ME6 : ME4, hint: string | null = null) =>
  gueFrame({ eth, outer: { src, dst }, sport: 0x8123, inner, hint });
// a hinted SYN: a trusted hint reaches the SYN check (sc_syn_ignored), an untrusted one stops before it; both are
// passed up stripped, so the outcome counter alone tells them apart (no route or socket lookup involved)
const syn4 = ipPacket({ src: '192.0.2.1', dst: '10.0.0.10' }, { type: 'tcp', sport: 1, dport: 80, flags: 0x02 });
const syn6 = ipPacket({ src: '2001:db8::1', dst: '2001:db8::10' }, { type: 'tcp', sport: 1, dport: 80, flags: 0x02 });
const hinted = (src: string, hint: string) =>
  src.includes(':') ? gue(src, syn6, ME6, hint) : gue(src, syn4, ME4, hint);
const stripped = (inner: Buffer) => Buffer.concat([ethHeader(eth, inner[0]! >> 4 === 4 ? 0x0800 : 0x86dd), inner]);

describePrivileged('decap: outer source filter (decap_sources)', () => {
  let prog: BpfProgram;
  const maps: Record<string, BpfMap> = {};
  const names: string[] = [];
  const layout = decapLayoutOf(OBJECT);

  beforeAll(async () => {
    const e = btfLayout(OBJECT).enums.find((x) => x.name === 'peak_decap_counter')!;
    for (const [n, v] of Object.entries(e.values))
      if (n !== 'PEAK_DECAP_MAX') names[v] = n.replace(/^PEAK_DECAP_/, '').toLowerCase();
    const obj = await BpfObject.load(OBJECT);
    prog = obj.program('decap');
    for (const m of ['decap_addrs', 'decap_stats', 'decap_config', 'decap_sources']) maps[m] = obj.map(m);
    obj.close();
    for (const a of [ME4, ME6]) maps.decap_addrs!.update(encodeAddrKey('address', a), Buffer.alloc(4));
  });
  afterAll(() => [prog, ...Object.values(maps)].forEach((x) => x?.close()));

  const write = (from: string[], gueFrom: string[] = []) => {
    const s: DecapSettings = {
      guePort: 6080,
      secondChance: true,
      conntrackLookup: true,
      rememberMoved: true,
      sources: sourcesSetting({ from, gueFrom, env: {} }),
    };
    writeDecapSettings({ decap_config: maps.decap_config!, decap_sources: maps.decap_sources! }, layout, s);
  };
  const counters = (): Record<string, bigint> => {
    const out: Record<string, bigint> = {};
    names.forEach((n, i) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      out[n] = maps.decap_stats!.lookupPerCpu(k)!.reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
    });
    return out;
  };
  /** Runs the frame; the verdict, whether it came out stripped (to `inner`) or untouched, and the counter deltas. */
  const run = (f: Buffer, inner: Buffer) => {
    const before = counters();
    const r = prog.testRun({ data: f });
    const after = counters();
    const d: Record<string, bigint> = {};
    for (const n of names) if (after[n] !== before[n]) d[n] = after[n]! - before[n]!;
    const out = r.data!;
    const what = out.equals(f) ? 'untouched' : out.equals(stripped(inner)) ? 'stripped' : `other ${out.toString('hex')}`;
    return { verdict: r.verdictName, what, d };
  };
  const configFlags = () => maps.decap_config!.lookup(Buffer.alloc(4))!.readUInt16LE(2);
  const sourceKeys = () => [...maps.decap_sources!.keys()].length;

  it('empty map: tunnels from anywhere are decapsulated (the behaviour before --from), no sources bit', () => {
    write([]);
    expect(configFlags()).toBe(0);
    expect(sourceKeys()).toBe(0);
    expect(run(ipip(CNI4, podInner), podInner)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, ipip: 1n } }); // prettier-ignore
    expect(run(ipip(CNI6, inner6), inner6)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, ip6ip6: 1n } }); // prettier-ignore
    expect(run(gue(CNI4), inner4)).toMatchObject({ verdict: 'PASS', what: 'stripped', d: { gue: 1n, sc_no_hint: 1n } });
    expect(run(gue(CNI6, inner6), inner6)).toMatchObject({ verdict: 'PASS', what: 'stripped', d: { gue: 1n } });
    // no sender is known to be an LB: a hint is never honoured (else anyone reaching the port has a relay)
    expect(run(hinted(CNI4, '10.1.0.9'), syn4)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, gue: 1n, sc_hint_untrusted: 1n } }); // prettier-ignore
    expect(run(hinted(CNI6, 'fd00:1::9'), syn6)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, gue: 1n, sc_hint_untrusted: 1n } }); // prettier-ignore
  });

  describe('with --from 10.255.0.0/24 fd00:ff::/64 10.9.5.0/24 --gue-from 10.9.0.0/16', () => {
    beforeAll(() => write(['10.255.0.0/24', 'fd00:ff::/64', '10.9.5.0/24'], ['10.9.0.0/16']));

    it('the writer set the sources bit and four prefixes', () => {
      expect(configFlags()).toBe(layout.flags.PEAK_DECAP_CFG_F_SOURCES);
      expect(sourceKeys()).toBe(4);
    });

    const cases: [string, () => Buffer, Buffer, 'stripped' | 'untouched', Record<string, bigint>][] = [
      ['IPIP from an LB (IPv4)', () => ipip(LB4), inner4, 'stripped', { rx_packets: 1n, ipip: 1n }],
      ['IPIP from a CNI node: the kernel’s (tunl0)', () => ipip(CNI4, podInner), podInner, 'untouched', { rx_packets: 1n, not_from_lb: 1n }], // prettier-ignore
      ['IPIP from a GUE-only prefix: refused', () => ipip(NODE4, podInner), podInner, 'untouched', { rx_packets: 1n, not_from_lb: 1n }], // prettier-ignore
      ['IPIP from a --from /24 inside the GUE-only /16: the longer prefix admits it', () => ipip(NODE4_LB), inner4, 'stripped', { rx_packets: 1n, ipip: 1n }], // prettier-ignore
      ['IP6IP6 from an LB', () => ipip(LB6, inner6), inner6, 'stripped', { rx_packets: 1n, ip6ip6: 1n }],
      ['4in6 from an LB', () => ipip(LB6, inner4), inner4, 'stripped', { rx_packets: 1n, ip4in6: 1n }],
      ['IP6IP6 from elsewhere', () => ipip(CNI6, inner6), inner6, 'untouched', { rx_packets: 1n, not_from_lb: 1n }],
      ['IP6IP6 from a neighbour of the LB prefix', () => ipip('fd00:fe::7', inner6), inner6, 'untouched', { rx_packets: 1n, not_from_lb: 1n }], // prettier-ignore
      ['GUE from an LB (IPv4 outer)', () => gue(LB4), inner4, 'stripped', { rx_packets: 1n, gue: 1n, sc_no_hint: 1n }],
      ['GUE from an LB (IPv6 outer, IPv4 inner)', () => gue(LB6, inner4), inner4, 'stripped', { rx_packets: 1n, gue: 1n, sc_no_hint: 1n }], // prettier-ignore
      ['GUE from a peer backend (GUE-only prefix): a second-chance hop', () => gue(NODE4), inner4, 'stripped', { rx_packets: 1n, gue: 1n, sc_no_hint: 1n }], // prettier-ignore
      ['GUE from elsewhere (IPv4)', () => gue(CNI4), inner4, 'untouched', { rx_packets: 1n, not_from_lb: 1n }],
      ['GUE from elsewhere (IPv6)', () => gue(CNI6, inner6), inner6, 'untouched', { rx_packets: 1n, not_from_lb: 1n }],
      // order of the checks: what is not for this host is `pass` whoever sent it; a malformed GUE packet from
      // elsewhere is not ours to judge (untouched, not dropped)
      ['IPIP from elsewhere to another host: pass', () => ipip(CNI4, inner4, '10.1.0.2'), inner4, 'untouched', { rx_packets: 1n, pass: 1n }], // prettier-ignore
      ['malformed GUE (C bit) from elsewhere: untouched, not dropped', () => { const f = gue(CNI4); f[14 + 20 + 8] = 0x20; return f; }, inner4, 'untouched', { rx_packets: 1n, not_from_lb: 1n }], // prettier-ignore
    ];
    it.each(cases)('%s', (_n, mk, inner, what, d) => {
      expect(run(mk(), inner)).toEqual({ verdict: 'PASS', what, d });
    });

    const hints: [string, () => Buffer, Buffer, string][] = [
      ['from an LB (IPv4): trusted', () => hinted(LB4, '10.1.0.9'), syn4, 'sc_syn_ignored'],
      ['from an LB (IPv6): trusted', () => hinted(LB6, 'fd00:1::9'), syn6, 'sc_syn_ignored'],
      ['from a --from /24 inside the GUE-only /16: trusted', () => hinted(NODE4_LB, '10.1.0.9'), syn4, 'sc_syn_ignored'],
      ['from a peer backend (--gue-from only): not trusted', () => hinted(NODE4, '10.1.0.9'), syn4, 'sc_hint_untrusted'],
      ...(
        [
          '0.0.0.0', '0.1.2.3', '127.0.0.1', '169.254.1.1', '224.0.0.1', '239.1.1.1', '255.255.255.255',
        ].map((h) => [`from an LB, hint ${h}: not unicast`, () => hinted(LB4, h), syn4, 'sc_hint_untrusted'])
      ) as [string, () => Buffer, Buffer, string][], // prettier-ignore
      ...(
        ['::', '::1', 'fe80::1', 'ff02::1', '::ffff:10.1.0.9'].map((h) => [`from an LB, hint ${h}: not unicast`, () => hinted(LB6, h), syn6, 'sc_hint_untrusted'])
      ) as [string, () => Buffer, Buffer, string][], // prettier-ignore
    ];
    it.each(hints)('hint %s', (_n, mk, inner, outcome) => {
      expect(run(mk(), inner)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, gue: 1n, [outcome]: 1n } });
    });
  });

  it('families stay apart: 0.0.0.0/0 admits every IPv4 source and no IPv6 one', () => {
    write(['0.0.0.0/0']);
    expect(run(ipip(CNI4), inner4).what).toBe('stripped');
    expect(run(gue(CNI4), inner4).what).toBe('stripped');
    expect(run(ipip(CNI6, inner6), inner6)).toEqual({ verdict: 'PASS', what: 'untouched', d: { rx_packets: 1n, not_from_lb: 1n } }); // prettier-ignore
    expect(run(gue(LB6, inner6), inner6).what).toBe('untouched');
  });

  it('a rewrite drops the prefixes no longer named; back to none: from anywhere again', () => {
    write(['fd00:ff::/64']);
    expect(sourceKeys()).toBe(1);
    expect(run(ipip(LB4), inner4).what).toBe('untouched');
    expect(run(ipip(LB6, inner6), inner6).what).toBe('stripped');
    write([]);
    expect(configFlags()).toBe(0);
    expect(sourceKeys()).toBe(0);
    expect(run(ipip(CNI4, podInner), podInner)).toEqual({ verdict: 'PASS', what: 'stripped', d: { rx_packets: 1n, ipip: 1n } }); // prettier-ignore
  });
});
