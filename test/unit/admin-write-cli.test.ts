// The CLI side of the write path, pure parts: weight argument, lookup (VIP match, conntrack entry, else the
// Maglev pick of the one selection model), trace's reason from the counters a run moved.
import { buildTable } from '../../src/maglev/maglev';
import { flowHash, selectBackend } from '../../src/datapath/flowhash';
import { decodeFlowKey } from '../../src/datapath/layout';
import type { BackendSpec, VipSpec } from '../../src/datapath/types';
import { lookupFlow, matchVip } from '../../src/cli/commands/lookup';
import { COUNTER_MEANINGS, movedCounters, reasonFromCounters } from '../../src/cli/commands/trace';
import { weightArg } from '../../src/cli/commands/weight';
import { CliError } from '../../src/cli/output';
import { sharedContract } from '../../src/datapath/contract';

describe('weightArg', () => {
  it.each([
    ['0', 0],
    ['65535', 65535],
    [7, 7],
  ])('%p -> %p', (x, w) => expect(weightArg(x)).toBe(w));
  it.each(['abc', '-1', '65536', '1.5', '1e3', ''])('rejects %p, echoing it', (x) => {
    expect(() => weightArg(x)).toThrow(new CliError(`weight: "${x}" is not an integer from 0 to 65535`, 2));
  });
});

const vip = (id: number, address: string, port: number, protocol: 'tcp' | 'udp', flags = {}): VipSpec => ({
  id,
  key: { address, port, protocol },
  flags: { sourceHash: false, noConntrack: false, ...flags },
  tableSize: 13,
});

describe('matchVip', () => {
  const vips = [
    vip(1, '10.0.0.1', 80, 'tcp'),
    vip(2, '10.0.0.1', 0, 'tcp'),
    vip(3, '2001:db8::1', 53, 'udp'),
  ];
  it('exact port first, then an every-port VIP, by protocol', () => {
    expect(matchVip(vips, { address: '10.0.0.1', port: 80 }, 'tcp')?.id).toBe(1);
    expect(matchVip(vips, { address: '10.0.0.1', port: 443 }, 'tcp')?.id).toBe(2);
    expect(matchVip(vips, { address: '10.0.0.1', port: 80 }, 'udp')).toBeNull();
    expect(matchVip(vips, { address: '2001:db8::1', port: 53 }, 'udp')?.id).toBe(3);
    expect(matchVip(vips, { address: '10.0.0.2', port: 80 }, 'tcp')).toBeNull();
  });
});

describe('lookupFlow', () => {
  const v = vip(4, '10.0.0.1', 80, 'tcp');
  const backends: BackendSpec[] = [
    { id: 1, address: '10.1.0.1', state: 'up' },
    { id: 2, address: '10.1.0.2', state: 'up' },
    { id: 3, address: '10.1.0.3', state: 'draining' },
  ];
  // Slots as the datapath holds them: backend ids.
  const idx = buildTable({ size: 13, backends: backends.map((b) => ({ name: b.address, weight: 1 })) });
  const table = Uint32Array.from(idx, (i) => backends[i]!.id);
  const src = { address: '198.51.100.7', port: 40000 };
  const dst = { address: '10.0.0.1', port: 80 };
  const base = {
    vips: [v],
    backends,
    names: new Map([[4, 'web']]),
    table: () => table,
    src,
    dst,
    protocol: 'tcp' as const,
  };

  it('no entry: the Maglev pick, the same as the selection model gives', () => {
    const keys: Buffer[] = [];
    const r = lookupFlow({ ...base, conntrack: (k) => (keys.push(k), null) });
    const want = selectBackend({
      vipId: 4,
      table,
      hash: flowHash({
        source: src.address,
        destination: dst.address,
        sourcePort: src.port,
        destinationPort: dst.port,
        proto: 6,
      }),
      usable: (id) => id === 1 || id === 2,
      keepsFlows: (id) => id >= 1 && id <= 3,
      readConntrack: true,
      recordConntrack: true,
      conntrack: null,
    });
    expect(want.backendId).not.toBeNull();
    expect(r.backend?.id).toBe(want.backendId);
    expect(r.from).toBe('maglev');
    expect(r.vip).toEqual({ id: 4, name: 'web', address: '10.0.0.1', port: 80, protocol: 'tcp' });
    expect(r.counters).toEqual(['ct_miss', 'ct_insert']);
    // The connection table was asked for exactly this flow.
    expect(keys.map(decodeFlowKey)).toEqual([
      {
        source: src.address,
        destination: dst.address,
        sourcePort: src.port,
        destinationPort: dst.port,
        proto: 6,
      },
    ]);
  });

  it('an entry whose backend keeps flows (draining too) wins', () => {
    const r = lookupFlow({ ...base, conntrack: () => ({ backendId: 3, vipId: 4 }) });
    expect(r.from).toBe('conntrack');
    expect(r.backend).toEqual({ id: 3, address: '10.1.0.3', state: 'draining' });
    expect(r.conntrack).toEqual({ backendId: 3, vipId: 4, backend: '10.1.0.3', closedSeq: null });
    expect(r.counters).toEqual(['ct_hit']);
  });

  it("a closed connection's entry: its tail keeps the entry's backend, another sequence number is chosen afresh", () => {
    const closed = () => ({ backendId: 3, vipId: 4, closedSeq: 1000 });
    const tail = lookupFlow({ ...base, conntrack: closed, seq: 1001 });
    expect(tail).toMatchObject({ from: 'conntrack', backend: { id: 3 }, counters: ['ct_hit'] });
    expect(tail.conntrack).toEqual({ backendId: 3, vipId: 4, backend: '10.1.0.3', closedSeq: 1000 });
    expect(tail.reason).toMatch(/closed connection.*keeps the connection’s tail/);
    const unknown = lookupFlow({ ...base, conntrack: closed });
    expect(unknown).toMatchObject({ from: 'conntrack', backend: { id: 3 } });
    expect(unknown.reason).toMatch(/give --seq/);
    const other = lookupFlow({ ...base, conntrack: closed, seq: 1000 + 2 ** 31 });
    expect(other.from).toBe('maglev');
    expect([1, 2]).toContain(other.backend?.id);
    expect(other.counters).toEqual(['ct_closed_other', 'ct_insert']);
    expect(other.reason).toMatch(/not in its tail \(a new connection on the same 5-tuple\)/);
    // A SYN reads no entry at all.
    expect(lookupFlow({ ...base, conntrack: closed, syn: true, seq: 1001 }).counters).toEqual(['ct_insert']);
  });

  it('an entry of another VIP or of a backend that keeps no flows is re-selected', () => {
    const r = lookupFlow({ ...base, conntrack: () => ({ backendId: 1, vipId: 9 }) });
    expect(r.from).toBe('maglev');
    expect(r.counters[0]).toBe('ct_reselect');
    expect(r.reason).toMatch(/not followed/);
  });

  it('a no-conntrack VIP does not read the table', () => {
    let asked = 0;
    const r = lookupFlow({
      ...base,
      vips: [{ ...v, flags: { sourceHash: false, noConntrack: true } }],
      conntrack: () => (asked++, null),
    });
    expect(asked).toBe(0);
    expect(r.conntrack).toBeNull();
    expect(r.counters).toEqual([]);
  });

  it('no VIP: passed; no table or no usable backend: dropped, with the reason', () => {
    expect(
      lookupFlow({ ...base, dst: { address: '10.0.0.9', port: 80 }, conntrack: () => null }),
    ).toMatchObject({
      vip: null,
      from: 'none',
      reason: expect.stringMatching(/10\.0\.0\.9 port 80 tcp is not a VIP/),
    });
    expect(lookupFlow({ ...base, table: () => null, conntrack: () => null }).reason).toMatch(
      /no Maglev table/,
    );
    const down = backends.map((b) => ({ ...b, state: 'down' as const }));
    const r = lookupFlow({ ...base, backends: down, conntrack: () => null });
    expect(r.backend).toBeNull();
    expect(r.reason).toMatch(/no usable backend/);
  });
});

describe('trace: reason from the counters a run moved', () => {
  it('movedCounters: only counters that grew, with the delta', () => {
    expect(
      movedCounters(
        { rx_packets: 5n, xdp_pass: 2n, pass_not_vip: 2n, ct_hit: 9n },
        { rx_packets: 6n, xdp_pass: 3n, pass_not_vip: 3n, ct_hit: 9n, drop_no_table: 0n },
      ),
    ).toEqual([
      { counter: 'rx_packets', delta: 1n },
      { counter: 'xdp_pass', delta: 1n },
      { counter: 'pass_not_vip', delta: 1n },
    ]);
  });
  it('names the drop or pass reason first, totals left out', () => {
    expect(reasonFromCounters(['rx_packets', 'xdp_pass', 'pass_not_vip'], 'PASS')).toBe(
      COUNTER_MEANINGS.pass_not_vip,
    );
    expect(reasonFromCounters(['rx_packets', 'ct_miss', 'xdp_drop', 'drop_no_backend'], 'DROP')).toBe(
      `${COUNTER_MEANINGS.drop_no_backend}; ${COUNTER_MEANINGS.ct_miss}`,
    );
    expect(reasonFromCounters(['rx_packets', 'xdp_tx', 'ct_hit', 'encap_v4'], 'TX')).toBe(
      `${COUNTER_MEANINGS.ct_hit}; ${COUNTER_MEANINGS.encap_v4}`,
    );
    expect(reasonFromCounters(['new_counter'], 'PASS')).toBe('counter new_counter moved');
    expect(reasonFromCounters([], 'PASS')).toMatch(/no reason counter moved/);
  });
  it('every counter of the compiled object has a meaning (totals and verdicts too: trace --json prints them)', () => {
    const names = [...sharedContract().counters];
    expect(names.length).toBeGreaterThan(30);
    expect(names).toEqual(expect.arrayContaining(['rx_packets', 'xdp_tx', 'drop_no_backend']));
    expect(names.filter((c) => COUNTER_MEANINGS[c] === undefined)).toEqual([]);
  });
});
