// The daemon's pure decisions: which reloads are applied (config-gate.ts), and /readyz's verdict (state-view.ts).
import { reloadDecision } from '../../src/daemon/config-gate';
import { NO_KEEPER, readinessOf, ReadinessFacts } from '../../src/daemon/state-view';
import { Config, validateConfig } from '../../src/model';
import type { ReloadEvent } from '../../src/sources/types';

function config(extra: Record<string, unknown> = {}): Config {
  const r = validateConfig({
    interface: 'eth0',
    vips: [{ name: 'a', address: '10.0.0.10', port: 80, backends: [{ address: '10.1.0.1' }] }],
    ...extra,
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r.config;
}
const ok = (c: Config, changed = true): ReloadEvent => ({
  ok: true,
  trigger: 'file',
  config: c,
  warnings: [],
  changed,
});

describe('reloadDecision', () => {
  const applied = config();

  it('passes a rejected file on with its errors', () => {
    const errors = [{ path: 'vips.0.port', message: 'is not a port' }];
    const d = reloadDecision({
      event: { ok: false, trigger: 'signal', errors, kept: applied } as unknown as ReloadEvent,
      applied,
      reloadError: null,
    });
    expect(d).toEqual({ kind: 'rejected', errors });
  });

  it.each([
    ['interface', { interface: 'eth1' }, ['interface']],
    ['xdpMode', { xdpMode: 'generic' }, ['xdpMode']],
    ['limits', { limits: { maxVips: 64 } }, ['limits']],
    [
      'admin and interface',
      { interface: 'eth1', admin: { listen: '127.0.0.1:9999' } },
      ['interface', 'admin'],
    ],
  ])('refuses a change of %s as needing a restart', (_what, extra, fields) => {
    expect(reloadDecision({ event: ok(config(extra)), applied, reloadError: null })).toEqual({
      kind: 'needs-restart',
      fields,
    });
  });

  it('skips the config in force, and an unchanged file while no reload error stands', () => {
    expect(reloadDecision({ event: ok(applied), applied, reloadError: 'x' }).kind).toBe('unchanged');
    expect(reloadDecision({ event: ok(config(), false), applied, reloadError: null }).kind).toBe('unchanged');
  });

  it('applies an unchanged file again after a failed apply, and any changed one', () => {
    const same = config();
    expect(reloadDecision({ event: ok(same, false), applied, reloadError: 'host settings' })).toEqual({
      kind: 'apply',
      config: same,
    });
    const other = config({
      vips: [{ name: 'b', address: '10.0.0.11', port: 80, backends: [{ address: '10.1.0.2' }] }],
    });
    expect(reloadDecision({ event: ok(other), applied, reloadError: null })).toEqual({
      kind: 'apply',
      config: other,
    });
  });
});

describe('readinessOf', () => {
  const failure = { op: 'installTable' as const, target: '10.0.0.10:80/tcp', vips: ['a'], error: 'ENOMEM' };
  const base = (): ReadinessFacts => ({
    started: true,
    ifname: 'eth0',
    keeper: { ...NO_KEEPER, pins: '/p', attached: true },
    programmer: {
      desired: { vips: [{ name: 'a' }, { name: 'b' }] } as never,
      lastReconcile: { at: 'now' } as never,
      reconcileError: null,
      failedVips: new Map(),
      cleanupFailures: [],
    },
    kubernetesReady: null,
    reloadError: null,
    componentErrors: [],
    now: 1_000_000,
  });

  it('is ready with nothing to say', () => {
    expect(readinessOf(base())).toEqual({ ready: true, reasons: [] });
  });

  it('is not ready while starting, detached, unreconciled or with the Kubernetes source down', () => {
    const f = base();
    f.started = false;
    f.keeper = { ...f.keeper, attached: false, attachError: 'another XDP program' };
    f.programmer = { ...f.programmer, lastReconcile: null };
    f.kubernetesReady = false;
    const r = readinessOf(f);
    expect(r.ready).toBe(false);
    expect(r.reasons).toEqual([
      'starting',
      'balancer not attached to eth0: another XDP program',
      'datapath not reconciled yet',
      'kubernetes: not synced or API unreachable (serving last known state)',
    ]);
  });

  it('stays ready with one of two VIPs failed (degraded), not with every VIP failed', () => {
    const f = base();
    f.programmer = { ...f.programmer, failedVips: new Map([['a', failure]]) };
    expect(readinessOf(f).ready).toBe(true);
    expect(readinessOf(f).reasons).toEqual([
      'VIP a not programmed, withdrawn (installTable 10.0.0.10:80/tcp: ENOMEM); retrying',
    ]);
    f.programmer = {
      ...f.programmer,
      failedVips: new Map([
        ['a', failure],
        ['b', { ...failure, vips: ['b'] }],
      ]),
    };
    expect(readinessOf(f).ready).toBe(false);
  });

  it('names component errors for 5 minutes, then no more', () => {
    const f = base();
    f.componentErrors = [['bgp', { count: 2, last: 'worker died', at: 'then', atMs: f.now - 299_999 }]];
    expect(readinessOf(f)).toEqual({
      ready: true,
      reasons: ['bgp error (2 so far, last at then), still running: worker died'],
    });
    f.now += 2;
    expect(readinessOf(f)).toEqual({ ready: true, reasons: [] });
  });
});
