// The shipped example config parses; parseConfig's own bgp section schema rejects a bad bgp section whole.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatIssue, parseConfig } from '../../src/model';
import { packageRoot } from '../../src/paths';

describe('example config', () => {
  it('examples/config.yaml is valid and keeps its VIPs and BGP section', () => {
    const r = parseConfig(readFileSync(join(packageRoot, 'examples', 'config.yaml'), 'utf8'), {
      format: 'yaml',
    });
    if (!r.ok) throw new Error(r.errors.map(formatIssue).join('\n'));
    expect(r.config.vips.map((v) => v.name)).toEqual(['web', 'dns']);
    expect(r.config.vips[1]).toMatchObject({ conntrack: false, persistence: 'source-ip', protocol: 'udp' });
    expect(r.config.bgp).toMatchObject({ asn: 65101, minHealthyBackends: 1 });
  });
});

describe('bgp section validation through the model', () => {
  const base = { interface: 'eth0', vips: [] };
  it('rejects the whole file, naming the bgp path and value', () => {
    const r = parseConfig(
      JSON.stringify({
        ...base,
        bgp: { asn: 65001, routerId: '10.0.0.1', peers: [{ address: '10.0.0.300', asn: 1 }] },
      }),
      { format: 'json' },
    );
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map(formatIssue)).toEqual([
      expect.stringMatching(/^bgp\.peers\[0\]\.address: .*10\.0\.0\.300/),
    ]);
  });

  it('fills BGP defaults', () => {
    const r = parseConfig(
      JSON.stringify({
        ...base,
        bgp: { asn: 65001, routerId: '10.0.0.1', peers: [{ address: '10.0.0.2', asn: 65000 }] },
      }),
      { format: 'json' },
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.bgp).toMatchObject({
      minHealthyBackends: 1,
      peers: [{ holdTime: 90, port: 179, passive: false }],
    });
    // Without routerId the daemon uses the interface's IPv4 address ("auto").
    const auto = parseConfig(
      JSON.stringify({ ...base, bgp: { asn: 65001, peers: [{ address: '10.0.0.2', asn: 65000 }] } }),
      { format: 'json' },
    );
    expect(auto.ok && auto.config.bgp).toMatchObject({ routerId: 'auto' });
  });

  it('rejects a bad kubernetes section whole, naming its path', () => {
    for (const [kubernetes, path] of [
      [{ loadBalancerClass: 'nope' }, 'kubernetes.loadBalancerClass'],
      [{ pool: ['10.0.0.0/33'] }, 'kubernetes.pool[0]'],
    ] as const) {
      const r = parseConfig(JSON.stringify({ ...base, kubernetes }), { format: 'json' });
      expect(r.ok).toBe(false);
      if (r.ok) continue;
      expect(r.errors.map((e) => e.path)).toEqual([path]);
    }
  });
});
