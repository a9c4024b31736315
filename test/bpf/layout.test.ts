// The TS encoders of src/datapath/layout.ts and flowhash.ts against bpf/shared.h as the compiled object's BTF says.
import { btfLayout } from '../../src/datapath/bpf';
import { HASH_SEED, MAX_PROBES } from '../../src/datapath/flowhash';
import { counterNames } from '../../src/datapath/kernel';
import { ENUMS, LAYOUT } from '../../src/datapath/layout';
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

  it('constants the TS twin relies on match (hash seed, probe bound)', () => {
    const c = btf.enums.find((x) => x.name === 'peak_const');
    expect(c?.values.PEAK_CONST_HASH_SEED).toBe(HASH_SEED);
    expect(c?.values.PEAK_CONST_MAX_PROBES).toBe(MAX_PROBES);
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
