// lookup / trace of issue 15, pure parts: the predicted mode, previous owner and hint (lookupFlow through the
// one selection model), and what an encapsulated output frame says (describeEncap: IPIP, GUE with and
// without a hint).
import { hintLines, lookupFlow } from '../../src/cli/commands/lookup';
import { describeEncap } from '../../src/cli/commands/trace';
import { flowHash } from '../../src/datapath/flowhash';
import { PROTO_NUMBER } from '../../src/datapath/layout';
import { encapFrame, frame, gueFrame, parseFrame, TCP_FLAGS } from '../../src/datapath/packet';
import type { BackendSpec, VipSpec } from '../../src/datapath/types';

const M = 13;
const vip = (stateless: boolean): VipSpec => ({
  key: { address: '10.0.0.1', port: 80, protocol: 'tcp' },
  id: 4,
  flags: { sourceHash: false, noConntrack: false, ...(stateless ? { stateless: true } : {}) },
  tableSize: M,
});
const gue = (id: number): BackendSpec => ({ id, address: `10.1.0.${id}`, state: 'up', encap: 'gue' });
const src = { address: '198.51.100.7', port: 40000 };
const dst = { address: '10.0.0.1', port: 80 };
const slot =
  flowHash({
    source: src.address,
    destination: dst.address,
    sourcePort: src.port,
    destinationPort: dst.port,
    proto: PROTO_NUMBER.tcp,
  }) % M;

/** Current table: every slot owned by 1; previous table: the flow's slot owned by 2, the rest by 1. */
const current = new Uint32Array(M).fill(1);
const previous = new Uint32Array(M).fill(1);
previous[slot] = 2;

const base = {
  names: new Map([[4, 'web']]),
  table: () => current,
  previousTable: () => previous,
  conntrack: () => null,
  src,
  dst,
  protocol: 'tcp' as const,
};

describe('lookupFlow: previous owner and hint', () => {
  test('stateless VIP, GUE backends: a mid-connection packet carries the previous owner', () => {
    const r = lookupFlow({ ...base, vips: [vip(true)], backends: [gue(1), gue(2)] });
    expect(r).toMatchObject({
      stateless: true,
      encap: 'gue',
      backend: { id: 1 },
      previousOwner: { id: 2, address: '10.1.0.2' },
      hint: { id: 2, address: '10.1.0.2', kind: 'previous-owner' },
    });
    expect(r.counters).toContain('hint_sent');
    expect(r.counters).not.toContain('ct_miss');
    expect(hintLines(r)).toEqual([
      'mode       stateless (no connection table)',
      'encap      gue',
      'previous   10.1.0.2 (#2)',
      "hint       10.1.0.2 (#2), the slot's previous owner",
    ]);
  });

  test('a SYN carries nothing; an IPIP backend is never hinted', () => {
    const syn = lookupFlow({ ...base, vips: [vip(true)], backends: [gue(1), gue(2)], syn: true });
    expect(syn.hint).toBe(null);
    expect(syn.previousOwner).toEqual({ id: 2, address: '10.1.0.2' });
    const ipip = lookupFlow({
      ...base,
      vips: [vip(false)],
      backends: [gue(1), { id: 2, address: '10.1.0.2', state: 'up' }],
    });
    expect(ipip).toMatchObject({ stateless: false, encap: 'gue', hint: null });
  });

  test('no previous table: no previous owner, no hint', () => {
    const r = lookupFlow({
      ...base,
      previousTable: () => null,
      vips: [vip(true)],
      backends: [gue(1), gue(2)],
    });
    expect(r).toMatchObject({ previousOwner: null, hint: null });
    expect(hintLines(r)[2]).toBe('previous   -');
  });

  test('a connection-table hit keeps the flow with no hint (connection-table mode)', () => {
    const r = lookupFlow({
      ...base,
      vips: [vip(false)],
      backends: [gue(1), gue(2)],
      conntrack: () => ({ backendId: 2, vipId: 4 }),
    });
    expect(r).toMatchObject({ from: 'conntrack', backend: { id: 2 }, hint: null });
  });
});

describe('describeEncap: what trace says about its output frame', () => {
  const inner = parseFrame(
    frame({
      ip: { src: src.address, dst: dst.address },
      l4: { type: 'tcp', sport: src.port, dport: 80, flags: TCP_FLAGS.ACK },
    }),
  ).ip!.raw;
  const outer = { src: '10.9.0.1', dst: '10.1.0.1' };

  test('GUE with a hint, GUE without, IPIP', () => {
    const hinted = describeEncap(
      parseFrame(gueFrame({ outer, sport: 40001, inner, hint: '10.1.0.2' })),
      6080,
    )!;
    expect(hinted).toMatchObject({ kind: 'gue', backend: '10.1.0.1', hint: '10.1.0.2', udpPort: 6080 });
    expect(hinted.text).toContain('hint: previous owner 10.1.0.2');
    expect(describeEncap(parseFrame(gueFrame({ outer, sport: 40001, inner })), 6080)).toMatchObject({
      kind: 'gue',
      hint: null,
    });
    const v6 = describeEncap(
      parseFrame(
        gueFrame({
          outer: { src: '2001:db8::9', dst: '2001:db8::1' },
          sport: 40001,
          inner,
          hint: '2001:db8::2',
        }),
      ),
      6080,
    )!;
    expect(v6).toMatchObject({ kind: 'gue', backend: '2001:db8::1', hint: '2001:db8::2' });
    expect(describeEncap(parseFrame(encapFrame({ outer, inner })), 6080)).toMatchObject({
      kind: 'ipip',
      backend: '10.1.0.1',
      hint: null,
    });
  });

  test('UDP to another port is not taken for GUE', () => {
    expect(describeEncap(parseFrame(gueFrame({ outer, sport: 40001, dport: 7000, inner })), 6080)).toBe(null);
    expect(
      describeEncap(parseFrame(gueFrame({ outer, sport: 40001, dport: 7000, inner })), 7000),
    ).toMatchObject({
      kind: 'gue',
      udpPort: 7000,
    });
  });
});
