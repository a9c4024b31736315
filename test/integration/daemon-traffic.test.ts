// Daemon on the real kernel: a config brings traffic to every backend with DSR replies; the admin API
// (/metrics, /healthz, /readyz, /state) reports the VIP, backends, datapath events, health and reconciles.
import { DaemonLab, DaemonProcess, VIP, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

/** Value of one sample of a Prometheus text exposition (labels given as a subset); undefined if absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

describePrivileged('daemon: config -> traffic, admin API', () => {
  const lab = new DaemonLab({ tag: 't', backends: 3 });
  let daemon: DaemonProcess | undefined;

  beforeAll(async () => {
    await lab.start();
    lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
    daemon = await lab.startDaemon();
  }, 90000);

  afterAll(async () => {
    await lab.cleanup();
  }, 30000);

  it('HTTP to the VIP reaches all three backends; replies bypass the LB', async () => {
    // Counts VIP-sourced packets (replies) that reach the LB's kernel: with DSR there must be none.
    lab.ns(lab.lb, 'nft', ['add table ip dsr; add chain ip dsr pre { type filter hook prerouting priority 0; }; add rule ip dsr pre ip saddr ' + VIP + ' counter']); // prettier-ignore
    const repliesAtLb = () => {
      const m = /packets (\d+)/.exec(lab.ns(lab.lb, 'nft', ['list', 'table', 'ip', 'dsr']));
      if (!m) throw new Error('nft counter not found');
      return Number(m[1]);
    };
    const routerToClient = () =>
      (
        JSON.parse(lab.ns(lab.router, 'ip', ['-s', '-j', 'link', 'show', 'dev', 'c'])) as {
          stats64: { tx: { packets: number } };
        }[]
      )[0]!.stats64.tx.packets;
    const dp = lab.adopt();
    try {
      const before = (await dp.counters()).global;
      const toClient0 = routerToClient();
      const seen = await lab.curlMany(30);
      const after = (await dp.counters()).global;
      const toClient = routerToClient() - toClient0;
      expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
      expect([...seen.values()].reduce((a, b) => a + b, 0)).toBe(30);
      // Every request went through the LB encapsulated: SYN, ACK, request, FIN at least.
      const encap = after.encap_v4! - before.encap_v4!;
      expect(encap).toBeGreaterThanOrEqual(30n * 3n);
      expect(after.xdp_drop).toBe(before.xdp_drop);
      // Replies reached the client through the router (SYN-ACK, data, FIN per request) but never the LB.
      expect(toClient).toBeGreaterThanOrEqual(30 * 3);
      expect(repliesAtLb()).toBe(0);
      console.log(
        `DSR: ${encap} packets encapsulated by the LB, ${toClient} reply packets to the client, 0 at the LB`,
      );
    } finally {
      dp.close();
    }
  });

  it('/healthz, /readyz and /state describe the running daemon', async () => {
    const h = await lab.admin('/healthz');
    expect(h).toEqual({ status: 200, body: 'ok\n' });
    const r = await lab.admin('/readyz');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ ready: true, reasons: [] });
    // Checks report within rise x interval (2 x 200 ms): then every backend is up by health too.
    const healthyMs = await waitUntil(
      async () => (await lab.state()).desired!.vips[0]!.backends.every((b) => b.health === 'up'),
      { timeoutMs: 5000 },
    );
    expect(healthyMs).not.toBeNull();
    const s = await lab.state();
    expect(s.attached).toBe(true);
    expect(s.adopted).toBe(false);
    expect(s.pins).toBe(lab.pinDir);
    expect(s.reloadError).toBeNull();
    expect(s.desired!.vips).toHaveLength(1);
    const v = s.desired!.vips[0]!;
    expect(v).toMatchObject({ name: 'web', address: VIP, port: 80 });
    expect(v.backends.map((b) => b.address).sort()).toEqual(lab.backends.map((b) => b.address).sort());
    expect(v.backends.every((b) => b.state === 'up' && b.health === 'up')).toBe(true);
    expect(s.actual!.vips.map((x) => x.id)).toEqual([v.id]);
    expect(s.actual!.backends.map((b) => b.id).sort()).toEqual(v.backends.map((b) => b.id).sort());
    expect((await lab.admin('/nope')).status).toBe(404);
  });

  it('/metrics has per-VIP and per-backend counters, datapath events, health, reconcile and process metrics', async () => {
    await lab.curlMany(6);
    const m = await lab.admin('/metrics');
    expect(m.status).toBe(200);
    const t = m.body;
    const vipLabels = { vip: 'web', address: VIP, port: '80', protocol: 'tcp' };
    expect(sample(t, 'peak_xdp_vip_packets_total', vipLabels)).toBeGreaterThan(0);
    expect(sample(t, 'peak_xdp_vip_bytes_total', vipLabels)).toBeGreaterThan(0);
    for (const b of lab.backends) {
      expect(sample(t, 'peak_xdp_backend_packets_total', { vip: 'web', backend: b.address })).toBeGreaterThan(
        0,
      );
      expect(sample(t, 'peak_xdp_backend_state', { vip: 'web', backend: b.address, state: 'up' })).toBe(1);
      expect(sample(t, 'peak_xdp_health_status', { vip: 'web', backend: b.address, type: 'http' })).toBe(1);
      expect(
        sample(t, 'peak_xdp_health_checks_total', { vip: 'web', backend: b.address, result: 'success' }),
      ).toBeGreaterThan(0);
    }
    expect(sample(t, 'peak_xdp_vip_usable_backends', { vip: 'web' })).toBe(3);
    expect(sample(t, 'peak_xdp_attached')).toBe(1);
    // Datapath events: every counter of the enum is exported, drop reasons included.
    expect(sample(t, 'peak_xdp_datapath_events_total', { counter: 'encap_v4' })).toBeGreaterThan(0);
    const events = [...t.matchAll(/^peak_xdp_datapath_events_total\{counter="(\w+)"\}/gm)].map((x) => x[1]);
    expect(events.some((e) => /drop/.test(e!))).toBe(true);
    expect(sample(t, 'peak_xdp_reconcile_duration_seconds_count', { result: 'ok' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(sample(t, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(sample(t, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(sample(t, 'peak_xdp_config_reloads_total', { result: 'ok', trigger: 'start' })).toBe(1);
  });

  it('counters in /metrics agree with the pinned maps', async () => {
    const dp = lab.adopt();
    try {
      const s = await lab.state();
      const id = s.desired!.vips[0]!.id;
      const m = (await lab.admin('/metrics')).body;
      const c = await dp.counters();
      const fromMaps = Number(c.vips.get(id)!.packets);
      const fromMetrics = sample(m, 'peak_xdp_vip_packets_total', { vip: 'web' })!;
      // Health checks do not touch the VIP; no client traffic runs now: both reads see the same total.
      expect(fromMetrics).toBe(fromMaps);
    } finally {
      dp.close();
    }
    expect(daemon!.child.exitCode).toBeNull();
  });
});
