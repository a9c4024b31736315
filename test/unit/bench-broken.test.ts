// Broken-connection records (scripts/bench/lib/broken.ts), kept logs (lib/logs.ts) and --rounds (e2e-profile.ts).
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brokenFrom, lbCountAt, nfConntrackHas, ssHasPeer } from '../../scripts/bench/lib/broken';
import { keepLogs } from '../../scripts/bench/lib/logs';
import { parseBenchArgs, PROFILES } from '../../scripts/bench/e2e-profile';

describe('broken connections', () => {
  const o = { client: '10.77.1.2', sourcePort: 40123 };
  it('finds the client flow in /proc/net/nf_conntrack by its original direction only', () => {
    const ct = [
      'ipv4     2 tcp      6 118 ESTABLISHED src=10.77.1.2 dst=10.201.0.2 sport=40124 dport=80 src=10.77.21.2 dst=10.77.11.2 sport=80 dport=40124 [ASSURED] mark=0 zone=0 use=2',
      'ipv4     2 tcp      6 118 ESTABLISHED src=10.77.1.2 dst=10.201.0.2 sport=40123 dport=80 src=10.77.21.2 dst=10.77.11.2 sport=80 dport=40123 [ASSURED] mark=0 zone=0 use=2',
    ];
    expect(nfConntrackHas(ct.join('\n'), o)).toBe(true);
    expect(nfConntrackHas(ct[0]!, o)).toBe(false);
    // The reply direction's ports do not count: here only the reply tuple has 40123.
    expect(
      nfConntrackHas(
        'ipv4 2 tcp 6 1 ESTABLISHED src=10.77.1.2 dst=x sport=1 dport=80 src=y dst=z sport=80 dport=40123',
        {
          client: '10.77.1.2',
          sourcePort: 40123,
        },
      ),
    ).toBe(false);
    expect(nfConntrackHas('', o)).toBe(false);
  });
  it('finds a proxy socket whose peer is the client flow in `ss -Htan`', () => {
    const ss = [
      'LISTEN 0      4096    10.201.0.3:80        0.0.0.0:*',
      'ESTAB  0      0       10.201.0.3:80     10.77.1.2:40123',
      'ESTAB  0      0       10.201.0.3:80     10.77.1.2:401234',
    ].join('\n');
    expect(ssHasPeer(ss, o)).toBe(true);
    expect(ssHasPeer(ss, { ...o, sourcePort: 40124 })).toBe(false);
    expect(ssHasPeer('ESTAB 0 0 [::ffff:10.201.0.3]:80 [::ffff:10.77.1.2]:40123', o)).toBe(true);
    expect(ssHasPeer('', o)).toBe(false);
  });
  it('the LB count in force at a time of the join/leave sequence', () => {
    const changes = [
      { atMs: 3000, lbs: 2 },
      { atMs: 6000, lbs: 1 },
    ];
    expect(lbCountAt({ first: 1, changes, atMs: 10 })).toBe(1);
    expect(lbCountAt({ first: 1, changes, atMs: 3000 })).toBe(2);
    expect(lbCountAt({ first: 1, changes, atMs: 7000 })).toBe(1);
  });
  it('a record keeps source port, backend, time since the start, and the LB node', () => {
    const r = brokenFrom(
      {
        at: 11_500, mode: 'persistent', kind: 'econnreset', target: '10.200.0.1:80', localPort: 40123,
        openedAt: 10_000, requestSentAt: 11_400, lastOkAt: 11_300, backend: 'be2', responses: 14,
        requestFailed: true, broken: true,
      }, // prettier-ignore
      { t0EpochMs: 10_000, lbsWithState: ['lb1', 'lb2'], lbCount: 2 },
    );
    expect(r).toEqual({
      atMs: 1500, kind: 'econnreset', target: '10.200.0.1:80', sourcePort: 40123, backend: 'be2',
      lbsWithState: ['lb1', 'lb2'], lbCount: 2, responses: 14,
    }); // prettier-ignore
  });
});

describe('keepLogs', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'h14-logs-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  it('copies every .log under the state dir (same paths), empties the originals, leaves other files', () => {
    const state = join(dir, 'state');
    mkdirSync(join(state, 'lb1'), { recursive: true });
    writeFileSync(join(state, 'lb1', 'daemon.log'), 'line 1\n');
    writeFileSync(join(state, 'lb1', 'peak-xdp.yaml'), 'x: 1\n');
    writeFileSync(join(state, 'top.log'), 'top\n');
    const kept = keepLogs(state, join(dir, 'out', 'round1', 'peak-xdp'));
    expect(kept.sort()).toEqual(['lb1/daemon.log', 'top.log']);
    expect(readFileSync(join(dir, 'out', 'round1', 'peak-xdp', 'lb1', 'daemon.log'), 'utf8')).toBe(
      'line 1\n',
    );
    expect(statSync(join(state, 'lb1', 'daemon.log')).size).toBe(0);
    expect(readFileSync(join(state, 'lb1', 'peak-xdp.yaml'), 'utf8')).toBe('x: 1\n');
    expect(keepLogs(join(dir, 'missing'), join(dir, 'o2'))).toEqual([]);
  });
});

describe('--rounds', () => {
  it('overrides the profile round count in any argument order, and keeps the profile otherwise', () => {
    expect(parseBenchArgs(['--quick']).profile).toBe(PROFILES.quick);
    expect(parseBenchArgs(['--rounds', '3', '--quick']).profile).toEqual({ ...PROFILES.quick, rounds: 3 });
    expect(parseBenchArgs(['--quick', '--rounds', '1']).profile.rounds).toBe(1);
    expect(PROFILES.quick.rounds).toBe(2);
    expect(() => parseBenchArgs(['--rounds', '0'])).toThrow('--rounds must be an integer in 1..20, got "0"');
  });
});
