// The pieces around a balancer detached by hand that need no kernel: the attachment check's interval (bounded
// by its own cost), the metric and table that mark one interface's VIP blackhole routes, and the config key.
import {
  ATTACH_CHECK_MAX_MS,
  ATTACH_CHECK_MIN_MS,
  AttachCheckTimer,
  attachCheckInterval,
} from '../../src/daemon/attach-check';
import {
  VIP_ROUTE_PROTO,
  VIP_RULE_PRIORITY,
  vipRouteMetric,
  vipRouteTable,
} from '../../src/daemon/vip-routes';
import { DEFAULTS, formatIssue, parseConfig } from '../../src/model';

describe('attachment check interval', () => {
  it('is 250 ms while a check is cheap, grows with its cost (1% of the thread), and stops at 2 s', () => {
    expect(attachCheckInterval(0)).toBe(ATTACH_CHECK_MIN_MS);
    expect(attachCheckInterval(0.05)).toBe(250); // 3 interfaces: ~50 us
    expect(attachCheckInterval(2.5)).toBe(250);
    expect(attachCheckInterval(3.8)).toBe(380); // ~500 interfaces
    expect(attachCheckInterval(24)).toBe(ATTACH_CHECK_MAX_MS); // ~2,000 interfaces
    expect(attachCheckInterval(1000)).toBe(2000);
  });

  it('runs the check again and again, each time after the interval, until stopped', () => {
    jest.useFakeTimers();
    try {
      let n = 0;
      const t = new AttachCheckTimer(() => n++);
      jest.advanceTimersByTime(249);
      expect(n).toBe(0);
      jest.advanceTimersByTime(1);
      expect(n).toBe(1);
      jest.advanceTimersByTime(1000);
      expect(n).toBe(5);
      expect(t.intervalMs).toBe(250);
      t.stop();
      jest.advanceTimersByTime(5000);
      expect(n).toBe(5);
    } finally {
      jest.useRealTimers();
    }
  });

  it('keeps running when a check throws', () => {
    jest.useFakeTimers();
    try {
      let n = 0;
      const t = new AttachCheckTimer(() => {
        n++;
        throw new Error('boom');
      });
      for (let i = 0; i < 3; i++) expect(() => jest.advanceTimersByTime(250)).toThrow('boom');
      expect(n).toBe(3);
      t.stop();
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('VIP blackhole route marks', () => {
  it('proto 252 and a metric per interface name: stable, distinct, far above usual metrics', () => {
    expect(VIP_ROUTE_PROTO).toBe(252);
    expect(vipRouteMetric('eth0')).toBe(vipRouteMetric('eth0'));
    const names = ['eth0', 'eth1', 'ens5', 'bond0', 'enp1s0f0', 'enp1s0f1', 'lo', 'x'];
    const metrics = names.map(vipRouteMetric);
    expect(new Set(metrics).size).toBe(names.length);
    for (const m of metrics) {
      expect(m).toBeGreaterThanOrEqual(0x7f000000);
      expect(m).toBeLessThan(0x80000000);
    }
  });

  it('a routing table per interface name, clear of the reserved and small ids; the rule between local and main', () => {
    const names = ['eth0', 'eth1', 'ens5', 'bond0', 'enp1s0f0', 'enp1s0f1', 'lo', 'x'];
    const tables = names.map(vipRouteTable);
    expect(vipRouteTable('eth0')).toBe(vipRouteTable('eth0'));
    expect(new Set(tables).size).toBe(names.length);
    for (const t of tables) {
      expect(t).toBeGreaterThanOrEqual(0x70000000);
      expect(t).toBeLessThan(0x71000000);
    }
    // The same hash as the metric: one mark per interface.
    expect(vipRouteTable('eth0') - 0x70000000).toBe(vipRouteMetric('eth0') - 0x7f000000);
    expect(VIP_RULE_PRIORITY).toBeGreaterThan(100);
    expect(VIP_RULE_PRIORITY).toBeLessThan(32766);
  });
});

describe('config: vipBlackholeRoutes', () => {
  const doc = (extra: Record<string, unknown>) =>
    parseConfig(
      JSON.stringify({
        interface: 'eth0',
        vips: [{ name: 'web', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }] }],
        ...extra,
      }),
      { format: 'json' },
    );

  it('defaults to true; false is kept', () => {
    expect(DEFAULTS.vipBlackholeRoutes).toBe(true);
    const on = doc({});
    const off = doc({ vipBlackholeRoutes: false });
    expect(on.ok && on.config.vipBlackholeRoutes).toBe(true);
    expect(off.ok && off.config.vipBlackholeRoutes === false).toBe(true);
  });

  it('refuses a value that is not a boolean, naming the key and value', () => {
    const r = doc({ vipBlackholeRoutes: 'yes' });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map(formatIssue).join('\n')).toMatch(/^vipBlackholeRoutes: .*"yes"/m);
  });
});
