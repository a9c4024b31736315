// `stateless: auto` resolves to stateless only for TCP VIPs whose backends are all GUE: UDP packets carry no
// previous-owner hint and get no second chance, so a stateless UDP VIP moves ~1/N of its live flows on every
// change. `stateless: true` on a UDP VIP stays allowed, with a warning. statelessOf, validateConfig, desiredState.
import type { DatapathConfig } from '../../src/datapath/types';
import { validateConfig } from '../../src/model';
import { desiredState } from '../../src/reconcile';
import { statelessOf } from '../../src/reconcile/desired';

const DP_CONFIG: DatapathConfig = {
  ownMac: '02:00:00:00:00:01',
  nextHopMac: '02:00:00:00:00:02',
  encapSourceV4: { prefix: '10.9.0.1', prefixLength: 32 },
  encapSourceV6: null,
  mtu: 1500,
};

const GUE = { encap: 'gue' as const };
const IPIP = { encap: 'ipip' as const };

describe('statelessOf', () => {
  test.each([
    ['auto, tcp, all gue', 'auto', 'tcp', [GUE, GUE], true],
    ['auto, tcp, one ipip', 'auto', 'tcp', [GUE, IPIP], false],
    ['auto, tcp, no backend', 'auto', 'tcp', [], false],
    ['auto, udp, all gue: keeps the table (no hint for UDP)', 'auto', 'udp', [GUE, GUE], false],
    ['auto, udp, no backend', 'auto', 'udp', [], false],
    ['true, udp, all gue: forced', true, 'udp', [GUE], true],
    ['true, tcp, ipip: forced', true, 'tcp', [IPIP], true],
    ['false, tcp, all gue: forced off', false, 'tcp', [GUE], false],
  ] as const)('%s', (_n, mode, protocol, backends, want) => {
    expect(statelessOf(mode, protocol, backends)).toBe(want);
  });
});

function vip(o: { protocol: 'tcp' | 'udp'; stateless?: 'auto' | boolean; encap?: 'gue' | 'ipip' }) {
  return {
    name: `v-${o.protocol}`,
    address: o.protocol === 'tcp' ? '10.0.0.10' : '10.0.0.11',
    port: 53,
    protocol: o.protocol,
    tableSize: 101,
    encap: o.encap ?? 'gue',
    ...(o.stateless !== undefined ? { stateless: o.stateless } : {}),
    backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2' }],
    ...(o.protocol === 'udp' ? { healthCheck: { type: 'tcp', port: 53 } } : {}),
  };
}

function validate(vips: ReturnType<typeof vip>[]) {
  const r = validateConfig({ interface: 'eth0', vips });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r;
}

describe('stateless for UDP VIPs in the config and the desired state', () => {
  test('auto: the TCP VIP of GUE backends is stateless, the UDP one of the same backends is not', () => {
    const r = validate([vip({ protocol: 'tcp' }), vip({ protocol: 'udp' })]);
    expect(r.warnings).toEqual([]);
    const d = desiredState({ config: r.config, datapathConfig: DP_CONFIG });
    const flags = Object.fromEntries(
      d.vips.map((v) => [v.spec.key.protocol, v.spec.flags.stateless ?? false]),
    );
    expect(flags).toEqual({ tcp: true, udp: false });
  });

  test('true on a UDP VIP: accepted, stateless, with a warning naming the field and why', () => {
    const r = validate([vip({ protocol: 'udp', stateless: true })]);
    expect(r.warnings).toEqual([
      expect.objectContaining({
        path: 'vips[0].stateless',
        message: expect.stringContaining('true on a udp VIP: UDP packets carry no previous-owner hint'),
      }),
    ]);
    const d = desiredState({ config: r.config, datapathConfig: DP_CONFIG });
    expect(d.vips[0]!.spec.flags.stateless).toBe(true);
  });

  test('true on a UDP VIP of IPIP backends: both warnings', () => {
    const r = validate([vip({ protocol: 'udp', stateless: true, encap: 'ipip' })]);
    expect(r.warnings.map((w) => w.message)).toEqual([
      expect.stringContaining('2 backend(s) use ipip'),
      expect.stringContaining('true on a udp VIP'),
    ]);
  });

  test('true or auto on a TCP VIP of GUE backends, false on a UDP one: no warning', () => {
    expect(validate([vip({ protocol: 'tcp', stateless: true })]).warnings).toEqual([]);
    expect(validate([vip({ protocol: 'tcp', stateless: 'auto' })]).warnings).toEqual([]);
    expect(validate([vip({ protocol: 'udp', stateless: false })]).warnings).toEqual([]);
  });
});
