// An IPv4 VIP with IPv6 backends (4in6), end to end through the control plane: the config is accepted, the
// reconciler programs it, and the program sends the untouched IPv4 packet inside IPv6 to the IPv6 backend.
import { KernelDatapath } from '../../src/datapath/kernel';
import { parseConfig } from '../../src/model';
import { desiredState, reconcile } from '../../src/reconcile';
import { describePrivileged } from '../helpers/privileged';
import { frame, l3Offset, parseFrame, PROTO, TCP_FLAGS } from '../helpers/packet';

const LB_MAC = '02:00:00:00:01:01';
const ROUTER_MAC = '02:00:00:00:01:fe';

describePrivileged('4in6: an IPv4 VIP with IPv6 backends, config to packet', () => {
  let dp: KernelDatapath | undefined;
  afterAll(() => dp?.close());

  it('is accepted, programmed, and forwarded as IPv4-in-IPv6', async () => {
    const r = parseConfig(
      `
interface: eth0
nextHopMac: "${ROUTER_MAC}"
encapSource: [10.255.0.0/16, "fd00:ff::/64"]
limits: { maxVips: 8, maxBackends: 16, conntrackEntries: 4096 }
vips:
  - name: web4in6
    address: 10.0.0.30
    port: 80
    tableSize: 13
    backends: [{ address: "fd00:9::1" }, { address: "fd00:9::2" }]
`,
      { format: 'yaml' },
    );
    if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    expect(r.config.vips[0]!.backends.map((b) => b.family)).toEqual([6, 6]);
    dp = await KernelDatapath.load({ maxEntries: { conntrack: 4096 } });
    const desired = desiredState({
      config: r.config,
      datapathConfig: {
        ownMac: LB_MAC,
        nextHopMac: ROUTER_MAC,
        encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
        encapSourceV6: { prefix: 'fd00:ff::', prefixLength: 64 },
        mtu: 1500,
      },
    });
    const summary = await reconcile(dp, desired);
    expect(summary.failures ?? []).toEqual([]);
    const seen = new Set<string>();
    for (let sport = 40000; sport < 40040; sport++) {
      const input = frame({
        eth: { src: ROUTER_MAC, dst: LB_MAC },
        ip: { src: '192.0.2.7', dst: '10.0.0.30' },
        l4: { type: 'tcp', sport, dport: 80, flags: TCP_FLAGS.SYN },
      });
      const out = dp.program.testRun({ data: input });
      expect(out.verdictName).toBe('TX');
      const f = parseFrame(out.data!);
      expect(f.ip!).toMatchObject({ version: 6, proto: PROTO.IPIP });
      expect(f.ip!.raw.subarray(f.ip!.headerLength).equals(input.subarray(l3Offset(input)))).toBe(true);
      seen.add(f.ip!.dst);
    }
    expect([...seen].sort()).toEqual(['fd00:9::1', 'fd00:9::2']);
  });
});
