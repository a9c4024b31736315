// The shared.h contract without root: the TS encoders of src/datapath/layout.ts, the constants and counter names of
// contract.ts and the map list of kernel.ts against the compiled balancer (its BTF and its ELF map section).
// Needs the built object (npm test runs scripts/setup.sh first), not privileges.
import { BpfObject, btfLayout } from '../../src/datapath/bpf';
import { sharedContract } from '../../src/datapath/contract';
import { BALANCER_MAPS, BALANCER_PROGRAM, counterNames, MAP_LIMITS } from '../../src/datapath/kernel';
import {
  decodeBackend,
  DEFAULT_CT_TIMEOUTS,
  encodeBackend,
  encodeBackendInto,
  encodeConfig,
  ENUMS,
  LAYOUT,
  type BackendFields,
} from '../../src/datapath/layout';
import type { BackendState } from '../../src/datapath/types';
import { bpfObjectPath } from '../../src/paths';

const objectPath = bpfObjectPath('balancer');

describe('shared.h layout (BTF) vs TS encoders', () => {
  const btf = btfLayout(objectPath);
  const structNames = Object.keys(LAYOUT) as (keyof typeof LAYOUT)[];
  const btfEnum = (name: string) => btf.enums.find((x) => x.name === name);

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
    const e = btfEnum(name);
    expect(e).toBeDefined();
    expect(e!.values).toEqual(ENUMS[name]);
  });

  it('the constants userspace uses are enum peak_const, read from BTF (hash seed as a u32)', () => {
    const c = btfEnum('peak_const')!.values;
    const k = sharedContract(objectPath);
    expect(k.hashSeed).toBe(0x5ea4c0de);
    expect(k.hashSeed).toBe(c.PEAK_CONST_HASH_SEED! >>> 0);
    expect(k.maxProbes).toBe(c.PEAK_CONST_MAX_PROBES);
    expect(k.maxProbes).toBeGreaterThan(0);
    expect(k.vipIndexSlots).toBe(c.PEAK_CONST_VIP_INDEX_SLOTS);
    expect(k.vipIndexSlots & (k.vipIndexSlots - 1)).toBe(0);
    expect(k.vipIndexProbes).toBe(c.PEAK_CONST_VIP_INDEX_PROBES);
    expect(k.ctMaxTimeout).toBe(c.PEAK_CONST_CT_MAX_TIMEOUT);
    expect(sharedContract(objectPath)).toBe(k); // read once per object
  });

  it('the stats block holds one u64 per counter; an index slot is as big as its header', () => {
    const e = btfEnum('peak_counter')!;
    const st = btf.structs.find((x) => x.name === 'peak_stats');
    expect(st?.size).toBe(8 * e.values.PEAK_CNT_MAX!);
    expect(st?.members.map((m) => [m.name, m.offset])).toEqual([['counters', 0]]);
    expect(LAYOUT.peak_vip_slot.size).toBe(LAYOUT.peak_vip_index_head.size);
  });

  it('counter names come from the enum, dense and ending before PEAK_CNT_MAX', () => {
    const names = counterNames(objectPath);
    const e = btfEnum('peak_counter')!;
    expect(names.length).toBe(e.values.PEAK_CNT_MAX);
    expect(names.every((n) => typeof n === 'string' && /^[a-z0-9_]+$/.test(n))).toBe(true);
    expect(names).toContain('xdp_tx');
    expect(names).toContain('drop_fragment');
    for (const [name, v] of Object.entries(e.values))
      if (name !== 'PEAK_CNT_MAX') expect(names[v]).toBe(name.replace(/^PEAK_CNT_/, '').toLowerCase());
    expect(sharedContract(objectPath).counters).toEqual(names);
  });

  it('backend states encode as enum peak_backend_state, and decode back', () => {
    const be = btfEnum('peak_backend_state')!.values;
    const at = LAYOUT.peak_backend.fields.state;
    const states: [BackendState, string][] = [
      ['up', 'PEAK_BE_UP'],
      ['draining', 'PEAK_BE_DRAINING'],
      ['down', 'PEAK_BE_DOWN'],
    ];
    for (const [state, name] of states) {
      const b = encodeBackend({ address: '10.1.0.1', state });
      expect(b[at]).toBe(be[name]);
      expect(decodeBackend(b)).toEqual({ address: '10.1.0.1', state });
    }
    // Every value of the enum but NONE (an unset slot) is one of the three states.
    expect(Object.keys(be).sort()).toEqual(['PEAK_BE_NONE', ...states.map(([, n]) => n)].sort());
    const unknown = encodeBackend({ address: '10.1.0.1', state: 'up' });
    unknown[at] = Math.max(...Object.values(be)) + 1;
    expect(() => decodeBackend(unknown)).toThrow(/backend state: \d+ is not up, draining or down/);
  });

  it('encodeBackendInto writes encodeBackend bytes at an offset of a used buffer, and nothing on bad input', () => {
    const size = LAYOUT.peak_backend.size;
    const specs: BackendFields[] = [
      { address: '10.1.0.1', state: 'up' },
      { address: '2001:db8::7', state: 'draining', encap: 'gue' },
      { address: '192.168.255.254', state: 'down', encap: 'ipip' },
    ];
    const out = Buffer.alloc(size * 4, 0xee);
    specs.forEach((s, i) => encodeBackendInto(s, out, size * (i + 1)));
    expect(out.subarray(0, size).every((b) => b === 0xee)).toBe(true);
    specs.forEach((s, i) => expect(out.subarray(size * (i + 1), size * (i + 2))).toEqual(encodeBackend(s)));
    const before = Buffer.from(out);
    for (const bad of [
      { address: '10.1.0.300', state: 'up' },
      { address: '10.1.0.1', state: 'sideways' },
      { address: '10.1.0.1', state: 'up', encap: 'vxlan' },
    ])
      expect(() => encodeBackendInto(bad as BackendFields, out, size)).toThrow(/address|state|encap/);
    expect(out).toEqual(before);
  });

  it('config timeouts are bounded by PEAK_CT_MAX_TIMEOUT as BTF states it', () => {
    const max = sharedContract(objectPath).ctMaxTimeout;
    const cfg = {
      ownMac: '02:00:00:00:00:01',
      nextHopMac: '02:00:00:00:00:02',
      encapSourceV4: null,
      encapSourceV6: null,
      mtu: 1500,
      fibRedirect: false,
    };
    const b = encodeConfig({ ...cfg, conntrackTimeouts: { tcp: max, udp: DEFAULT_CT_TIMEOUTS.udp } });
    expect(b.readUInt32LE(LAYOUT.peak_config.fields.ct_timeout_tcp)).toBe(max);
    expect(() => encodeConfig({ ...cfg, conntrackTimeouts: { tcp: max + 1, udp: 0 } })).toThrow(
      `conntrackTimeouts.tcp: ${max + 1} is not an integer in 0..${max}`,
    );
  });
});

describe('map and program names: the TS list is the object list', () => {
  const inspected = BpfObject.inspect(objectPath);
  // libbpf adds internal maps for global data (".bss", ".kconfig"): not ours to pin or size.
  const own = inspected.maps.map((m) => m.name).filter((n) => !n.includes('.'));

  it('the object declares exactly the maps of BALANCER_MAPS', () => {
    expect(own.length).toBeGreaterThanOrEqual(10);
    expect([...own].sort()).toEqual([...BALANCER_MAPS].sort());
  });

  it('its one program is BALANCER_PROGRAM, and every limit-sized map is one of its maps', () => {
    expect(inspected.programs.map((p) => p.name)).toEqual([BALANCER_PROGRAM]);
    const limited = Object.keys(MAP_LIMITS);
    expect(limited.length).toBeGreaterThan(0);
    for (const m of limited) expect(own).toContain(m);
  });
});
