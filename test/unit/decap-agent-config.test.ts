// decap run / decap attach settings (src/decap/config.ts) and diagnostics (src/decap/diagnostics.ts): flag
// parsing, the exact bytes of decap_config and decap_sources as the built object's BTF lays them out, the raw
// BTF reader that looks for bpf_xdp_ct_lookup, and the second-chance readiness rules. No root, no kernel calls.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decapSettings,
  encodeDecapConfig,
  encodeSourceKey,
  encodeSourceValue,
  guePortSetting,
  parseSourcePrefix,
  sourcesSetting,
  type DecapSource,
} from '../../src/decap/config';
import { DecapUsageError } from '../../src/decap/core';
import {
  btfHasFunc,
  forwardingSysctl,
  secondChanceReadiness,
  type SecondChanceFacts,
} from '../../src/decap/diagnostics';
import { decapLayoutOf } from '../../src/decap/kernel';
import { topOwners } from '../../src/decap/metrics';
import { bpfObjectPath, packageRoot } from '../../src/paths';

describe('decap settings: flags and environment', () => {
  it('--gue-port, else PEAK_XDP_GUE_PORT, else 6080; an integer 1-65535, errors name the source and value', () => {
    expect(guePortSetting(undefined, undefined)).toBe(6080);
    expect(guePortSetting('7000', '8000')).toBe(7000);
    expect(guePortSetting(undefined, ' 8000 ')).toBe(8000);
    expect(guePortSetting('65535', undefined)).toBe(65535);
    expect(guePortSetting('1', undefined)).toBe(1);
    for (const bad of ['0', '65536', '-1', '6080.5', 'gue', '', '0x17c0', '1e3'])
      expect(() => guePortSetting(bad, undefined)).toThrow(
        new DecapUsageError(`--gue-port: "${bad}" is not a UDP port (an integer 1-65535)`),
      );
    expect(() => guePortSetting(undefined, 'x')).toThrow(
      new DecapUsageError('PEAK_XDP_GUE_PORT: "x" is not a UDP port (an integer 1-65535)'),
    );
  });

  it('parses a source prefix: CIDR or one address, canonical; refuses host bits, bad lengths, non-addresses', () => {
    expect(parseSourcePrefix('10.30.200.0/24', '--from')).toEqual({
      family: 4,
      prefix: '10.30.200.0',
      prefixLength: 24,
    });
    expect(parseSourcePrefix('10.30.200.7', '--from')).toEqual({
      family: 4,
      prefix: '10.30.200.7',
      prefixLength: 32,
    });
    expect(parseSourcePrefix('2001:DB8:0::/48', '--from')).toEqual({
      family: 6,
      prefix: '2001:db8::',
      prefixLength: 48,
    });
    expect(parseSourcePrefix('0.0.0.0/0', '--from')).toEqual({
      family: 4,
      prefix: '0.0.0.0',
      prefixLength: 0,
    });
    expect(() => parseSourcePrefix('10.30.200.7/24', '--from')).toThrow(
      new DecapUsageError('--from: "10.30.200.7/24" has host bits set (the prefix is 10.30.200.0/24)'),
    );
    expect(() => parseSourcePrefix('10.0.0.0/33', 'PEAK_XDP_DECAP_FROM')).toThrow(
      new DecapUsageError('PEAK_XDP_DECAP_FROM: "10.0.0.0/33" has a prefix length that is not 0-32'),
    );
    expect(() => parseSourcePrefix('fd00::/129', '--from')).toThrow('has a prefix length that is not 0-128');
    expect(() => parseSourcePrefix('lb1.example', '--gue-from')).toThrow(
      new DecapUsageError(
        '--gue-from: "lb1.example" is not an IP prefix (e.g. 10.0.0.0/24, 2001:db8::/64, or one address)',
      ),
    );
  });

  it('--from (every kind) and --gue-from (GUE only), else the comma-separated variables; merged and sorted', () => {
    const env = {};
    expect(sourcesSetting({ from: [], gueFrom: [], env })).toEqual([]);
    const s = sourcesSetting({
      from: ['fd00:200::/64', '10.30.200.0/24', '10.30.200.0/24'],
      gueFrom: ['10.30.0.0/16', '10.30.200.0/24'],
      env: { PEAK_XDP_DECAP_FROM: '192.0.2.0/24' },
    });
    const want: DecapSource[] = [
      { family: 4, prefix: '10.30.0.0', prefixLength: 16, ipip: false, gue: true },
      // named by both: every kind
      { family: 4, prefix: '10.30.200.0', prefixLength: 24, ipip: true, gue: true },
      { family: 6, prefix: 'fd00:200::', prefixLength: 64, ipip: true, gue: true },
    ];
    expect(s).toEqual(want);
    expect(
      sourcesSetting({ from: [], gueFrom: [], env: { PEAK_XDP_DECAP_FROM: ' 10.30.200.0/24,,fd00:200::/64, ', PEAK_XDP_DECAP_GUE_FROM: '10.30.0.0/16' } }), // prettier-ignore
    ).toEqual(want);
    expect(() => sourcesSetting({ from: [], gueFrom: ['10.30.0.0/16'], env })).toThrow(
      /^--gue-from: needs --from \(or PEAK_XDP_DECAP_FROM\) too/,
    );
    expect(() =>
      sourcesSetting({ from: [], gueFrom: [], env: { PEAK_XDP_DECAP_GUE_FROM: '10.30.0.0/16' } }),
    ).toThrow(/^PEAK_XDP_DECAP_GUE_FROM: needs --from/);
    expect(() => sourcesSetting({ from: ['x'], gueFrom: [], env })).toThrow(
      /^--from: "x" is not an IP prefix/,
    );
  });

  it('decapSettings puts them together', () => {
    expect(
      decapSettings(
        {
          from: ['10.30.200.0/24'],
          gueFrom: [],
          secondChance: false,
          conntrackLookup: true,
          rememberMoved: false,
        },
        { PEAK_XDP_GUE_PORT: '6081' },
      ),
    ).toEqual({
      guePort: 6081,
      secondChance: false,
      conntrackLookup: true,
      rememberMoved: false,
      sources: [{ family: 4, prefix: '10.30.200.0', prefixLength: 24, ipip: true, gue: true }],
    });
  });
});

describe('decap_config and decap_sources bytes (layout from the built decap object’s BTF)', () => {
  const layout = decapLayoutOf(bpfObjectPath('decap'));
  const v4: DecapSource = { family: 4, prefix: '10.30.200.0', prefixLength: 24, ipip: true, gue: true };

  it('the BTF says what bpf/decap_maps.h says', () => {
    const h = readFileSync(join(packageRoot, 'bpf', 'decap_maps.h'), 'utf8');
    expect(layout.config.size).toBe(24);
    expect(layout.config.members.map((m) => [m.name, m.offset, m.size])).toEqual([
      ['gue_port', 0, 2],
      ['flags', 2, 2],
      ['src_v4', 4, 4],
      ['src_v6', 8, 16],
    ]);
    expect(layout.sourceKey.members.map((m) => [m.name, m.offset])).toEqual([['prefixlen', 0], ['family', 4], ['pad', 5], ['addr', 8]]); // prettier-ignore
    for (const [name, v] of Object.entries({ ...layout.flags, ...layout.kinds }))
      expect(h).toMatch(new RegExp(`${name} = 1 << ${Math.log2(v)},`));
    expect(Object.keys(layout.flags).sort()).toEqual(['PEAK_DECAP_CFG_F_NO_CONNTRACK', 'PEAK_DECAP_CFG_F_NO_REMEMBER', 'PEAK_DECAP_CFG_F_NO_SECOND_CHANCE', 'PEAK_DECAP_CFG_F_SOURCES']); // prettier-ignore
  });

  it('config: port in network order, flag bits (sources bit exactly when there are sources), sources zero', () => {
    const hex = (s: Parameters<typeof encodeDecapConfig>[1]) => encodeDecapConfig(layout, s).toString('hex');
    const zeros = '00'.repeat(20);
    expect(
      hex({ guePort: 6080, secondChance: true, conntrackLookup: true, rememberMoved: true, sources: [] }),
    ).toBe(`17c0` + `0000` + zeros);
    expect(
      hex({ guePort: 7000, secondChance: false, conntrackLookup: true, rememberMoved: true, sources: [] }),
    ).toBe(`1b58` + `0100` + zeros);
    expect(
      hex({ guePort: 6080, secondChance: true, conntrackLookup: false, rememberMoved: true, sources: [] }),
    ).toBe(`17c0` + `0200` + zeros);
    expect(
      hex({ guePort: 6080, secondChance: true, conntrackLookup: true, rememberMoved: true, sources: [v4] }),
    ).toBe(`17c0` + `0400` + zeros);
    expect(
      hex({
        guePort: 65535,
        secondChance: false,
        conntrackLookup: false,
        rememberMoved: true,
        sources: [v4],
      }),
    ).toBe(`ffff` + `0700` + zeros);
    expect(
      hex({ guePort: 6080, secondChance: true, conntrackLookup: true, rememberMoved: false, sources: [] }),
    ).toBe(`17c0` + `0800` + zeros);
    expect(
      hex({
        guePort: 65535,
        secondChance: false,
        conntrackLookup: false,
        rememberMoved: false,
        sources: [v4],
      }),
    ).toBe(`ffff` + `0f00` + zeros);
  });

  it('source key: prefixlen = 32 + length (little-endian), family, 3 zero bytes, address; value: the kind bits', () => {
    expect(encodeSourceKey(layout, v4).toString('hex')).toBe(
      '38000000' + '04000000' + '0a1ec800' + '00'.repeat(12),
    );
    expect(
      encodeSourceKey(layout, { family: 6, prefix: 'fd00:200::', prefixLength: 64 }).toString('hex'),
    ).toBe('60000000' + '06000000' + 'fd000200' + '00'.repeat(12));
    expect(encodeSourceKey(layout, { family: 4, prefix: '0.0.0.0', prefixLength: 0 }).readUInt32LE(0)).toBe(
      32,
    );
    expect(encodeSourceValue(layout, v4).toString('hex')).toBe('03000000');
    expect(encodeSourceValue(layout, { ...v4, ipip: false }).toString('hex')).toBe('02000000');
  });
});

/** A raw BTF blob: a header, the given types, a string section (offset 0 = ""). */
function btfBlob(
  types: { name: string; kind: number; vlen?: number; extra?: number }[],
  strBase = 0,
): Buffer {
  const strs: Buffer[] = [Buffer.from([0])];
  let off = 1;
  const recs: Buffer[] = [];
  for (const t of types) {
    const r = Buffer.alloc(12 + (t.extra ?? 0));
    r.writeUInt32LE(t.name === '' ? 0 : strBase + off, 0);
    r.writeUInt32LE(((t.kind & 0x1f) << 24) | (t.vlen ?? 0), 4);
    recs.push(r);
    if (t.name !== '') {
      strs.push(Buffer.from(`${t.name}\0`));
      off += t.name.length + 1;
    }
  }
  const typeSec = Buffer.concat(recs);
  const strSec = Buffer.concat(strs);
  const h = Buffer.alloc(24);
  h.writeUInt16LE(0xeb9f, 0);
  h[2] = 1;
  h.writeUInt32LE(24, 4);
  h.writeUInt32LE(0, 8);
  h.writeUInt32LE(typeSec.length, 12);
  h.writeUInt32LE(typeSec.length, 16);
  h.writeUInt32LE(strSec.length, 20);
  return Buffer.concat([h, typeSec, strSec]);
}

describe('raw BTF: is bpf_xdp_ct_lookup there?', () => {
  it('finds a FUNC by name, skipping every kind by its size; a STRUCT of that name is not a FUNC', () => {
    const blob = btfBlob([
      { name: 'int', kind: 1, extra: 4 },
      { name: 'bpf_xdp_ct_lookup', kind: 4, vlen: 2, extra: 24 }, // a STRUCT with that name: not it
      { name: 'x', kind: 13, vlen: 3, extra: 24 }, // FUNC_PROTO, 3 params
      { name: '', kind: 15, vlen: 1, extra: 12 }, // DATASEC
      { name: 'e', kind: 19, vlen: 2, extra: 24 }, // ENUM64
      { name: 'tcp_v4_rcv', kind: 12 },
    ]);
    expect(btfHasFunc(blob, 'tcp_v4_rcv')).toBe(true);
    expect(btfHasFunc(blob, 'bpf_xdp_ct_lookup')).toBe(false);
    expect(btfHasFunc(blob, 'tcp_v4')).toBe(false); // a prefix of a name is not the name
    expect(() => btfHasFunc(blob.subarray(0, blob.length - 1), 'x')).toThrow(/sections run past the end/);
  });

  it('a module’s split BTF: its names continue after the base’s strings', () => {
    const base = btfBlob([
      { name: 'int', kind: 1, extra: 4 },
      { name: 'bpf_ct_release', kind: 12 },
    ]);
    const baseStrLen = base.readUInt32LE(20);
    const mod = btfBlob([{ name: 'bpf_xdp_ct_lookup', kind: 12 }], baseStrLen);
    expect(btfHasFunc(mod, 'bpf_xdp_ct_lookup', base)).toBe(true);
    expect(btfHasFunc(mod, 'bpf_ct_release', base)).toBe(false); // the base's own FUNC is the base's to report
  });

  it('refuses what is not BTF, and an unknown kind', () => {
    expect(() => btfHasFunc(Buffer.alloc(30), 'x')).toThrow(/not BTF/);
    expect(() => btfHasFunc(Buffer.alloc(4), 'x')).toThrow(/too short/);
    expect(() => btfHasFunc(btfBlob([{ name: 'q', kind: 25 }]), 'x')).toThrow('BTF: unknown type kind 25');
  });

  it('this kernel’s /sys/kernel/btf/vmlinux (nf_conntrack built in, TESTBED.md)', () => {
    const t0 = performance.now();
    const vmlinux = readFileSync('/sys/kernel/btf/vmlinux');
    const has = btfHasFunc(vmlinux, 'bpf_xdp_ct_lookup');
    console.log(
      `vmlinux BTF ${vmlinux.length} bytes: bpf_xdp_ct_lookup ${has}, read + scan ${Math.round(performance.now() - t0)} ms`,
    );
    expect(has).toBe(true);
    expect(btfHasFunc(vmlinux, 'tcp_v4_rcv')).toBe(true);
    expect(btfHasFunc(vmlinux, 'peak_test_missing_ct_lookup')).toBe(false);
  });
});

describe('second chance readiness', () => {
  const ok: SecondChanceFacts = {
    enabled: true,
    lbSources: true,
    conntrackLookup: true,
    conntrackKfunc: true,
    families: [4, 6],
    forwarding: { 4: true, 6: true },
  };
  it.each<[string, Partial<SecondChanceFacts>, string[]]>([
    ['all there', {}, []],
    ['switched off', { enabled: false }, ['second chance switched off (--no-second-chance)']],
    ['no --from (hints untrusted)', { lbSources: false }, [expect.stringMatching(/^no --from prefixes: hints are honoured only from/) as unknown as string]], // prettier-ignore
    ['IPv6 forwarding off', { forwarding: { 4: true, 6: false } }, ['IPv6 forwarding is off on eth0: bpf_fib_lookup cannot route second-chance packets (set net.ipv6.conf.eth0.forwarding=1)']], // prettier-ignore
    ['IPv6 off, only IPv4 decapsulated', { families: [4], forwarding: { 4: true, 6: null } }, []],
    ['IPv6 absent but decapsulated', { families: [6], forwarding: { 4: true, 6: null } }, ['IPv6 forwarding is off on eth0: bpf_fib_lookup cannot route second-chance packets (set net.ipv6.conf.eth0.forwarding=1)']], // prettier-ignore
    ['no kfunc, lookup off', { conntrackKfunc: false, conntrackLookup: false }, []],
  ])('%s', (_n, f, reasons) => {
    expect(secondChanceReadiness({ ...ok, ...f }, 'eth0')).toEqual({ ready: reasons.length === 0, reasons });
  });
});

it('names the sysctl of a VLAN device as sysctl(8) wants it', () => {
  expect(forwardingSysctl(4, 'eth0.100')).toBe('net.ipv4.conf.eth0/100.forwarding');
  expect(forwardingSysctl(6, 'ens5')).toBe('net.ipv6.conf.ens5.forwarding');
});

describe('second-chance forwards: top owners', () => {
  it('orders by count (ties by address), keeps N, sums the rest as other', () => {
    const e = [
      { owner: '10.0.0.3', packets: 5n },
      { owner: '10.0.0.1', packets: 5n },
      { owner: '10.0.0.2', packets: 9n },
      { owner: '10.0.0.4', packets: 1n },
    ];
    expect(topOwners(e, 2)).toEqual([
      { owner: '10.0.0.2', packets: 9n },
      { owner: '10.0.0.1', packets: 5n },
      { owner: 'other', packets: 6n },
    ]);
    expect(topOwners(e, 4).map((x) => x.owner)).toEqual(['10.0.0.2', '10.0.0.1', '10.0.0.3', '10.0.0.4']);
    expect(topOwners([], 20)).toEqual([]);
  });
});
