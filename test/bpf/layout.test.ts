// The TS encoders of src/datapath/layout.ts and flowhash.ts against bpf/shared.h as the compiled object's BTF says.
import { btfLayout } from '../../src/datapath/bpf';
import { HASH_SEED, MAX_PROBES, VIP_INDEX_PROBES, VIP_INDEX_SLOTS } from '../../src/datapath/flowhash';
import { counterNames } from '../../src/datapath/kernel';
import { CT_MAX_TIMEOUT, ENUMS, LAYOUT } from '../../src/datapath/layout';
import { bpfObjectPath } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';

describePrivileged('shared.h layout (BTF) vs TS encoders', () => {
  const btf = btfLayout(bpfObjectPath('balancer'));
  const structNames = Object.keys(LAYOUT) as (keyof typeof LAYOUT)[];

  it('covers a non-empty set of structs', () => {
    expect(structNames.length).toBeGreaterThanOrEqual(8);
  });

  it.each(structNames)('%s: size and every field offset match', (name) => {
    const s = btf.structs.find((x) => x.name === name);
    expect(s).toBeDefined();
    expect(s!.size).toBe(LAYOUT[name].size);
    const fromBtf = Object.fromEntries(s!.members.map((m) => [m.name, m.offset]));
    expect(fromBtf).toEqual(LAYOUT[name].fields);
  });

  it.each(Object.keys(ENUMS) as (keyof typeof ENUMS)[])('enum %s matches', (name) => {
    const e = btf.enums.find((x) => x.name === name);
    expect(e).toBeDefined();
    expect(e!.values).toEqual(ENUMS[name]);
  });

  it('constants the TS twin relies on match (hash seed, probe bounds, index size, timeout bound)', () => {
    const c = btf.enums.find((x) => x.name === 'peak_const');
    expect(c?.values.PEAK_CONST_HASH_SEED).toBe(HASH_SEED);
    expect(c?.values.PEAK_CONST_MAX_PROBES).toBe(MAX_PROBES);
    expect(c?.values.PEAK_CONST_VIP_INDEX_SLOTS).toBe(VIP_INDEX_SLOTS);
    expect(c?.values.PEAK_CONST_VIP_INDEX_PROBES).toBe(VIP_INDEX_PROBES);
    expect(c?.values.PEAK_CONST_CT_MAX_TIMEOUT).toBe(CT_MAX_TIMEOUT);
  });

  it('the stats block holds one u64 per counter; an index slot is as big as its header', () => {
    const e = btf.enums.find((x) => x.name === 'peak_counter')!;
    const st = btf.structs.find((x) => x.name === 'peak_stats');
    expect(st?.size).toBe(8 * e.values.PEAK_CNT_MAX!);
    expect(st?.members.map((m) => [m.name, m.offset])).toEqual([['counters', 0]]);
    expect(LAYOUT.peak_vip_slot.size).toBe(LAYOUT.peak_vip_index_head.size);
  });

  it('counter names come from the enum, dense and ending before PEAK_CNT_MAX', () => {
    const names = counterNames(bpfObjectPath('balancer'));
    const e = btf.enums.find((x) => x.name === 'peak_counter')!;
    expect(names.length).toBe(e.values.PEAK_CNT_MAX);
    expect(names.every((n) => typeof n === 'string' && /^[a-z0-9_]+$/.test(n))).toBe(true);
    expect(names).toContain('xdp_tx');
    expect(names).toContain('drop_fragment');
  });
});
