// Decap program through BPF_PROG_TEST_RUN: strips IPIP / IP6IP6 / 4in6 for this host, leaves the rest alone.
import { BpfMap, BpfObject, BpfProgram } from '../../src/datapath/bpf';
import { encodeAddrKey } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';
import { encapFrame, ethHeader, frame, ipPacket, EthSpec } from '../helpers/packet';

const eth: EthSpec = { src: '02:00:00:00:00:01', dst: '02:00:00:00:00:02' };
const inner4 = ipPacket({ src: '192.0.2.1', dst: '10.0.0.10' }, { type: 'tcp', sport: 1, dport: 80, payload: Buffer.from('x') });
const inner6 = ipPacket({ src: '2001:db8::1', dst: '2001:db8::10' }, { type: 'udp', sport: 1, dport: 53 });

describePrivileged('decap program', () => {
  let prog: BpfProgram;
  let stats: BpfMap;
  let addrs: BpfMap;
  beforeAll(async () => {
    const obj = await BpfObject.load(bpfObjectPath('decap'));
    prog = obj.program('decap');
    stats = obj.map('decap_stats');
    addrs = obj.map('decap_addrs');
    obj.close();
    for (const a of ['10.1.0.1', 'fd00:1::1']) addrs.update(encodeAddrKey('address', a), Buffer.alloc(4));
  });
  afterAll(() => [prog, stats, addrs].forEach((x) => x?.close()));

  const cases: { description: string; input: Buffer; output: Buffer | 'same' }[] = [
    {
      description: 'IPIP to this host -> inner IPv4',
      input: encapFrame({ eth, outer: { src: '10.255.0.7', dst: '10.1.0.1' }, inner: inner4 }),
      output: Buffer.concat([ethHeader(eth, 0x0800), inner4]),
    },
    {
      description: 'IPIP with outer options -> inner IPv4',
      input: encapFrame({ eth, outer: { src: '10.255.0.7', dst: '10.1.0.1', options: Buffer.alloc(8, 1) }, inner: inner4 }),
      output: Buffer.concat([ethHeader(eth, 0x0800), inner4]),
    },
    {
      description: 'IP6IP6 to this host -> inner IPv6',
      input: encapFrame({ eth, outer: { src: 'fd00:ff::7', dst: 'fd00:1::1' }, inner: inner6 }),
      output: Buffer.concat([ethHeader(eth, 0x86dd), inner6]),
    },
    {
      description: 'IPv4-in-IPv6 -> inner IPv4, VLAN tag kept',
      input: encapFrame({ eth: { ...eth, vlans: [{ tci: 9 }] }, outer: { src: 'fd00:ff::7', dst: 'fd00:1::1' }, inner: inner4 }),
      output: Buffer.concat([ethHeader({ ...eth, vlans: [{ tci: 9 }] }, 0x0800), inner4]),
    },
    { description: 'IPIP to another host: untouched', input: encapFrame({ eth, outer: { src: '10.255.0.7', dst: '10.1.0.2' }, inner: inner4 }), output: 'same' },
    { description: 'plain TCP: untouched', input: frame({ eth, ip: { src: '192.0.2.1', dst: '10.1.0.1' }, l4: { type: 'tcp', sport: 1, dport: 2 } }), output: 'same' },
    {
      description: 'IPIP whose inner is cut short: untouched',
      input: encapFrame({ eth, outer: { src: '10.255.0.7', dst: '10.1.0.1' }, inner: inner4.subarray(0, 12) }),
      output: 'same',
    },
    {
      description: 'proto 4 carrying IPv6: untouched',
      input: frame({ eth, ip: { src: '10.255.0.7', dst: '10.1.0.1' }, l4: { type: 'raw', proto: 4, payload: inner6 } }),
      output: 'same',
    },
  ];

  it.each(cases.map((c) => [c.description, c] as const))('%s', (_d, c) => {
    const r = prog.testRun({ data: c.input });
    expect(r.verdictName).toBe('PASS');
    const want = c.output === 'same' ? c.input : c.output;
    expect(r.data!.toString('hex')).toBe(want.toString('hex'));
  });

  it('counts by kind', () => {
    const sum = (i: number) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      return stats.lookupPerCpu(k)!.reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
    };
    // enum peak_decap_counter: RX, IPIP, IP6IP6, IP4IN6, PASS, ERROR
    expect(sum(0)).toBeGreaterThanOrEqual(8n);
    expect(sum(1)).toBeGreaterThanOrEqual(2n);
    expect(sum(2)).toBeGreaterThanOrEqual(1n);
    expect(sum(3)).toBeGreaterThanOrEqual(1n);
    expect(sum(4)).toBeGreaterThanOrEqual(2n);
    expect(sum(5)).toBeGreaterThanOrEqual(2n);
  });
});
