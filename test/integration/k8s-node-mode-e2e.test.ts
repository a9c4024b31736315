// Kubernetes node mode end to end (issue 12): the fake API server holds Nodes, a LoadBalancer Service of our class
// (port 80 -> targetPort 8080, externalTrafficPolicy Local) and EndpointSlices with nodeName; two worker nodes run
// the backend role (`peak-xdp decap run`) and kube-proxy's nftables DNAT, each with unprivileged nginx pods behind a
// bridge; two LB nodes run `peak-xdp daemon --kubernetes`; BIRD spreads the VIP over both with ECMP.
import type { KernelDatapath } from '../../src/datapath/kernel';
import { K8sNodeLab, KeepAliveResult, LabDaemonProc, VIP } from '../helpers/k8s-node-lab';
import { runAsync, sleep, waitUntil } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

jest.setTimeout(120000);

const ALL_READY = { 'web-1-1': 'ready', 'web-1-2': 'ready', 'web-2-1': 'ready', 'web-2-2': 'ready' } as const;

/** The VIP's Maglev table on one LB: the node address of every slot ("(state)" appended unless up). */
async function slots(dp: KernelDatapath): Promise<string[]> {
  const vip = (await dp.listVips()).find((v) => v.key.address === VIP && v.key.port === 80);
  if (!vip) return [];
  const byId = new Map((await dp.listBackends()).map((b) => [b.id, b.state === 'up' ? b.address : `${b.address}(${b.state})`])); // prettier-ignore
  return [...((await dp.readTable(vip.id)) ?? [])].map((id) => byId.get(id) ?? `missing-${id}`);
}

/** Slots per owner. */
function share(table: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of table) out[s] = (out[s] ?? 0) + 1;
  return out;
}

/** Connection-table entries of client flows to the VIP on one LB: client port -> backend (node) address, and
 * whether the entry is closed (the client ended that connection). */
async function entries(
  dp: KernelDatapath,
  client: string,
): Promise<Map<number, { node: string; closed: boolean }>> {
  const byId = new Map((await dp.listBackends()).map((b) => [b.id, b.address]));
  const out = new Map<number, { node: string; closed: boolean }>();
  for (const e of await dp.conntrack())
    if (e.source === client && e.destination === VIP) out.set(e.sourcePort, { node: byId.get(e.backendId) ?? `missing-${e.backendId}`, closed: e.closed }); // prettier-ignore
  return out;
}

/** entries(), the node only. */
async function flows(dp: KernelDatapath, client: string): Promise<Map<number, string>> {
  return new Map([...(await entries(dp, client))].map(([p, e]) => [p, e.node]));
}

/**
 * Client ports (outside the client's ephemeral range) used twice: by new connections while node 2 is drained (so
 * every one goes to node 1, and the LB it went through keeps a closed entry naming node 1), and again by keep-alive
 * connections once node 2 is back. Where the second connection's SYN went through the other LB and Maglev gave it
 * node 2, the LB that leaves moves it onto a closed entry naming node 1: it must be chosen afresh, not sent there.
 */
const REUSED_PORTS = Array.from({ length: 80 }, (_, i) => 61000 + 2 * i);

/** A node's `decap run` counters from its /state (uncached; /metrics is rendered at most once a second). */
async function decapCounters(lab: K8sNodeLab, node: number): Promise<Record<string, number>> {
  const m = await lab.decapAdmin(node, '/state');
  if (m.status !== 200) throw new Error(`decap /state on node ${node}: HTTP ${m.status}`);
  const c = (JSON.parse(m.body) as { counters: Record<string, string> }).counters;
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)]));
}

/** b - a for every counter that moved. */
function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.keys(b)
      .filter((k) => b[k] !== a[k])
      .map((k) => [k, b[k]! - (a[k] ?? 0)]),
  );
}

/** Every keep-alive connection kept one pod for its whole life and never failed. */
function summarise(r: KeepAliveResult): {
  pods: Record<string, number>;
  switched: number;
  failed: string[];
  /** Answers slower than 190 ms (a TCP retransmission at least), over all connections, and the slowest. */
  slow: number;
  maxMs: number;
} {
  const pods: Record<string, number> = {};
  let switched = 0;
  for (const c of r.conns) {
    const names = Object.keys(c.pods);
    if (names.length !== 1) switched++;
    for (const n of names) pods[n] = (pods[n] ?? 0) + 1;
  }
  return {
    pods,
    switched,
    failed: r.conns
      .filter((c) => c.error !== null)
      .map((c) => `${c.localPort}: ${c.error} at ${c.errorAtMs} ms`),
    slow: r.conns.reduce((a, c) => a + c.slow, 0),
    maxMs: Math.max(0, ...r.conns.map((c) => c.maxMs)),
  };
}

describePrivileged(
  'Kubernetes node mode end to end (fake API server, 2 LB nodes, 2 worker nodes, BIRD)',
  () => {
    const lab = new K8sNodeLab();
    const dps: KernelDatapath[] = [];
    const daemons: LabDaemonProc[] = [];
    const nodeIp = (i: number): string => lab.node(i).ip;
    /** Waits until both LBs' tables satisfy `pred`; the ms it took (throws with the tables on timeout). */
    const untilTables = async (
      what: string,
      pred: (t: string[]) => boolean,
      timeoutMs = 15000,
    ): Promise<number> => {
      let last: string[][] = [];
      const ms = await waitUntil(
        async () => {
          last = await Promise.all(dps.map(slots));
          return last.every(pred);
        },
        { timeoutMs, intervalMs: 20 },
      );
      if (ms === null) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last.map(share))}`);
      return Math.round(ms);
    };

    beforeAll(async () => {
      await lab.start();
      await lab.publish();
      await lab.setEndpoints(ALL_READY);
      // One config file for both LB nodes: per-node settings (BGP peer, router id, next hop) by node selector.
      lab.writeConfig(lab.config());
      for (const i of [1, 2]) daemons.push(await lab.startLb(i));
      for (const i of [1, 2]) dps.push(lab.adopt(i));
      const ms = await waitUntil(async () => (await lab.fib()).length === 2, { timeoutMs: 20000 });
      if (ms === null) throw new Error(`router FIB for ${VIP}: ${JSON.stringify(await lab.fib())}`);
    }, 180000);

    afterAll(async () => {
      for (const dp of dps) dp.close();
      await lab.cleanup();
    }, 60000);

    it('pods run unprivileged with no decap and no VIP; nodes run decap with no VIP on lo; kube-proxy rules', async () => {
      const pods = lab.nodes.flatMap((n) => n.pods);
      expect(pods).toHaveLength(4);
      for (const p of pods) {
        const procs = lab.podProcesses(p);
        expect(procs.length).toBeGreaterThan(0);
        // nginx master and worker: uid nobody, no effective capability.
        expect(procs.map((x) => [x.uid, x.capEff])).toEqual(procs.map(() => [65534, '0000000000000000']));
        expect(lab.xdpProgId(p.netns)).toBe(0);
        expect(lab.loExtraAddresses(p.netns)).toEqual([]);
      }
      for (const n of lab.nodes) {
        expect(lab.xdpProgId(n.netns)).toBeGreaterThan(0);
        expect(lab.loExtraAddresses(n.netns)).toEqual([]);
        const rules = lab.nodeRules(n.index);
        expect(rules).toContain(`${VIP} . tcp . 80 : goto external-`);
        for (const p of n.pods) expect(rules).toContain(`dnat to ${p.ip}:8080`);
        expect((await lab.decapAdmin(n.index, '/healthz')).status).toBe(200);
        const metrics = await lab.decapAdmin(n.index, '/metrics');
        expect(metrics.body).toMatch(/^peak_xdp_decap_attached(\{[^}]*\})? 1$/m);
      }
      console.log(
        `[k8s-node] pods: ${pods.map((p) => `${p.name} ${p.ip} (${lab.podProcesses(p).length} procs uid 65534 CapEff 0)`).join(', ')}; ` + // prettier-ignore
          `nodes: decap program ${lab.nodes.map((n) => lab.xdpProgId(n.netns)).join(', ')}, nothing on lo`,
      );
    });

    it('both LB nodes program the two nodes as the VIP backends (weight = ready endpoints) and announce it', async () => {
      const ms = await untilTables('both nodes up', (t) => {
        const s = share(t);
        return Object.keys(s).sort().join() === [nodeIp(1), nodeIp(2)].join();
      });
      const t = await Promise.all(dps.map(slots));
      // The leader published the VIP in the Service's status (kube-proxy DNATs status.loadBalancer.ingress IPs).
      const svc = (await lab.api.list('services')).find((o) => o.metadata.name === 'web');
      const ingress = (svc?.status as { loadBalancer?: { ingress?: { ip?: string; ipMode?: string }[] } } | undefined)?.loadBalancer?.ingress; // prettier-ignore
      expect(ingress?.map((x) => x.ip)).toEqual([VIP]);
      // Same backend set -> same table on every LB node (what lets ECMP move a flow between them).
      expect(t[0]).toEqual(t[1]);
      expect(await lab.fib()).toEqual(lab.lbs.map((l) => l.ip).sort());
      console.log(`[k8s-node] tables after ${ms} ms: ${JSON.stringify(share(t[0]!))} (both LBs equal); FIB next hops ${(await lab.fib()).join(', ')}; Service status ingress ${JSON.stringify(ingress)}`); // prettier-ignore
    });

    it('real HTTP through the VIP reaches all four pods', async () => {
      const before = await Promise.all(dps.map((dp) => dp.counters()));
      const decapBefore = await Promise.all([1, 2].map((i) => decapCounters(lab, i)));
      const r = await lab.fresh({ n: 80, parallel: 4 });
      const after = await Promise.all(dps.map((dp) => dp.counters()));
      const decapAfter = await Promise.all([1, 2].map((i) => decapCounters(lab, i)));
      const packets = (c: Awaited<ReturnType<KernelDatapath['counters']>>) => [...c.vips.values()].reduce((s, v) => s + v.packets, 0n); // prettier-ignore
      const vipPackets = after.map((c, i) => packets(c) - packets(before[i]!));
      const decapped = decapAfter.map((v, i) => delta(decapBefore[i]!, v));
      console.log(
        `[k8s-node] 80 new connections: ${JSON.stringify(r.pods)}, failed ${r.failed}; VIP packets per LB ${vipPackets.join(' / ')}; ` + // prettier-ignore
          `decap run counters per node (/state deltas) ${decapped.map((d) => JSON.stringify(d)).join(' / ')}`,
      );
      expect(r.failed).toBe(0);
      expect(Object.keys(r.pods).sort()).toEqual(['web-1-1', 'web-1-2', 'web-2-1', 'web-2-2']);
      // ECMP used both LB nodes; both nodes decapsulated.
      expect(vipPackets.every((p) => p > 0n)).toBe(true);
      expect(decapped.every((d) => (d.ipip ?? 0) > 0)).toBe(true);
    });

    it('replies bypass the LB nodes (router interface counters: reply bytes never go to an LB)', async () => {
      const before = lab.routerCounters();
      const n = 30;
      const r = await lab.fresh({ n, parallel: 2, path: '/big' });
      const after = lab.routerCounters();
      const d = (ifname: string, k: 'rxBytes' | 'txBytes') => after[ifname]![k] - before[ifname]![k];
      const fromNodes = d('n1', 'rxBytes') + d('n2', 'rxBytes');
      const toLbs = d('l1', 'txBytes') + d('l2', 'txBytes');
      const fromLbs = d('l1', 'rxBytes') + d('l2', 'rxBytes');
      const toClient = d('c', 'txBytes');
      const fromClient = d('c', 'rxBytes');
      console.log(
        `[k8s-node] ${n} x 64 KiB responses (${r.ok} ok): client->router ${fromClient} B, router->LBs ${toLbs} B, ` +
          `LBs->router ${fromLbs} B (IPIP to the nodes), nodes->router ${fromNodes} B, router->client ${toClient} B`,
      );
      expect(r.failed).toBe(0);
      expect(fromNodes).toBeGreaterThan(n * 64 * 1024);
      expect(toClient).toBeGreaterThan(n * 64 * 1024);
      // Through the LBs: requests (and their ACKs) only, a small fraction of the reply bytes.
      expect(toLbs).toBeLessThan(fromNodes / 10);
    });

    it('scaling the Deployment (pod added on node 1, then one removed): established connections continue', async () => {
      // In node mode the Maglev backends are the nodes, not the pods: a pod added to or removed from a node that
      // keeps >= 1 ready endpoint changes no backend set, only that node's weight (its number of ready endpoints), so
      // only the share of new flows moves between the nodes (printed: slots that changed owner). Established flows
      // keep their node (the LB's connection table; the same table on every LB node for a flow ECMP moves) and their
      // pod (the node's conntrack DNAT entry): the connections to the untouched node 2 and to node 1 all continue.
      // Only a node joining or leaving the set (next test) changes which nodes a flow can go to.
      const before = await slots(dps[0]!);
      const t0 = share(before);
      const ka = lab.keepAlive({ conns: 24, seconds: 14 });
      await ka.ready;
      lab.addPod(1, 3);
      await lab.setEndpoints({ ...ALL_READY, 'web-1-3': 'ready' });
      const upMs = await untilTables(
        'node 1 weight 3',
        (t) => (share(t)[nodeIp(1)] ?? 0) > (t0[nodeIp(1)] ?? 0),
      );
      const scaled = await slots(dps[0]!);
      const t1 = share(scaled);
      const moved: Record<string, number> = {};
      scaled.forEach((o, i) => {
        if (o !== before[i]) moved[`${before[i]}->${o}`] = (moved[`${before[i]}->${o}`] ?? 0) + 1;
      });
      const added = await lab.fresh({ n: 60 });
      // Scale down: the Deployment's pod web-1-1 leaves the endpoints (its nginx keeps serving its open connections,
      // as a terminating pod does during its grace period).
      await lab.setEndpoints({
        'web-1-2': 'ready',
        'web-1-3': 'ready',
        'web-2-1': 'ready',
        'web-2-2': 'ready',
      });
      const downMs = await untilTables('node 1 weight 2', (t) => share(t)[nodeIp(1)] === t0[nodeIp(1)]);
      const removed = await lab.fresh({ n: 60 });
      const res = await ka.result;
      const s = summarise(res);
      console.log(
        `[k8s-node] scale up: table ${JSON.stringify(t0)} -> ${JSON.stringify(t1)} after ${upMs} ms (slots that changed owner: ${JSON.stringify(moved)} of ${scaled.length}), new connections ${JSON.stringify(added.pods)}; ` + // prettier-ignore
        `scale down: back after ${downMs} ms, new connections ${JSON.stringify(removed.pods)}; ` +
        `24 keep-alive connections: ${res.ok} requests, ${res.errors} failed, ${s.switched} switched pod, ${s.slow} answers over 190 ms (slowest ${s.maxMs} ms), per pod ${JSON.stringify(s.pods)}`, // prettier-ignore
      );
      expect(added.failed + removed.failed).toBe(0);
      expect(added.pods['web-1-3']).toBeGreaterThan(0);
      expect(removed.pods['web-1-1']).toBeUndefined();
      expect(s.failed).toEqual([]);
      expect(s.switched).toBe(0);
      expect(res.conns.every((c) => c.ok > 10)).toBe(true);
    });

    it('removing the last ready endpoint on a node drains it: its connections continue, new ones go elsewhere', async () => {
      const state = {
        'web-1-2': 'ready',
        'web-1-3': 'ready',
        'web-2-1': 'ready',
        'web-2-2': 'ready',
      } as const;
      // Longer than the LBs' health check takes to fail (kube-proxy's health check answers 503 during the drain).
      const ka = lab.keepAlive({ conns: 24, seconds: 12 });
      await ka.ready;
      // node 2's state on lb-1 over time (ms since the drain began), for the log.
      const states: string[] = [];
      let polling = true;
      const t0 = performance.now();
      const poll = (async () => {
        let last = '';
        while (polling) {
          const b = (await dps[0]!.listBackends()).find((x) => x.address === nodeIp(2));
          const st = b?.state ?? 'absent';
          if (st !== last) states.push(`${st}@${(performance.now() - t0).toFixed(0)}ms`);
          last = st;
          await sleep(50);
        }
      })();
      let drainMs = 0;
      let fresh: Awaited<ReturnType<K8sNodeLab['fresh']>>;
      let res: KeepAliveResult;
      try {
        // The Deployment scaled node 2's pods away: both terminating but still serving (their grace period).
        // kube-proxy keeps DNATing to serving-terminating endpoints when a node has no ready one (KEP-1669) and
        // its health check answers 503 (no ready local endpoint); the LBs drain the node (no new flows,
        // established ones stay).
        await lab.setEndpoints({ ...state, 'web-2-1': 'terminating', 'web-2-2': 'terminating' });
        drainMs = await untilTables(
          'node 2 out of the table',
          (t) => !t.some((x) => x.startsWith(nodeIp(2))),
        );
        fresh = await lab.fresh({ n: REUSED_PORTS.length, ports: REUSED_PORTS });
        res = await ka.result;
      } finally {
        polling = false;
        await poll;
      }
      const s = summarise(res);
      const onNode2 = res.conns.filter((c) => Object.keys(c.pods).some((p) => p.startsWith('web-2-')));
      console.log(
        `[k8s-node] node 2 drained (its slots gone) after ${drainMs} ms; its state on lb-1: ${states.join(' -> ')}; ` +
          `${REUSED_PORTS.length} new connections: ${JSON.stringify(fresh.pods)}; 24 keep-alive: ${res.ok} requests, ${res.errors} failed ` +
          `(${s.failed.join(', ') || 'none'}), ${s.slow} answers over 190 ms (slowest ${s.maxMs} ms); ${onNode2.length} on node 2 pods (${onNode2.reduce((a, c) => a + c.ok, 0)} requests)`, // prettier-ignore
      );
      // The pods are gone: their endpoints leave the slices and the node leaves the backend set.
      await lab.setEndpoints({ 'web-1-2': 'ready', 'web-1-3': 'ready' });
      const goneMs = await waitUntil(async () => (await Promise.all(dps.map((dp) => dp.listBackends()))).every((bs) => bs.every((b) => b.address !== nodeIp(2))), { timeoutMs: 15000, intervalMs: 20 }); // prettier-ignore
      console.log(
        `[k8s-node] node 2's endpoints deleted -> not a backend on either LB after ${goneMs?.toFixed(0)} ms`,
      );
      // Back to ready for the next test.
      await lab.setEndpoints(state);
      await untilTables('node 2 back', (t) => t.some((x) => x === nodeIp(2)), 30000);
      expect(fresh.failed).toBe(0);
      expect(fresh.ports).toEqual(REUSED_PORTS);
      expect(Object.keys(fresh.pods).filter((p) => p.startsWith('web-2-'))).toEqual([]);
      expect(onNode2.length).toBeGreaterThan(0);
      expect(s.failed).toEqual([]);
      expect(s.switched).toBe(0);
      expect(goneMs).not.toBeNull();
    });

    it('keep-alive connections (own client and wrk) survive an LB node leaving (SIGTERM: BGP withdraw, ECMP moves them)', async () => {
      const kaStart = performance.now();
      // 32 connections from ephemeral ports, and one from each port the drain test's new connections used.
      const ka = lab.keepAlive({ conns: 32 + REUSED_PORTS.length, seconds: 12, ports: REUSED_PORTS });
      await ka.ready;
      const wrk = runAsync('ip', ['netns', 'exec', lab.client, 'wrk', '-t1', '-c4', '-d10s', '--timeout', '3s', `http://${VIP}/`], { timeoutMs: 30000 }); // prettier-ignore
      await sleep(1500);
      const ctrBefore = await Promise.all(dps.map((dp) => dp.counters()));
      const on1 = await flows(dps[0]!, lab.clientIp);
      const on2entries = await entries(dps[1]!, lab.clientIp);
      const on2before = new Map([...on2entries].map(([p, e]) => [p, e.node]));
      // Reused tuples this move tests: the new connection's entry on lb-1, the earlier one's closed entry on lb-2.
      const reused = REUSED_PORTS.filter((p) => on1.has(p) && on2entries.get(p)?.closed === true);
      const reusedOther = reused.filter((p) => on2before.get(p) !== on1.get(p));
      const t0 = performance.now();
      expect(await lab.signal(daemons[0]!, 'SIGTERM')).toBe(0);
      const withdrawn = await waitUntil(async () => (await lab.fib()).join() === lab.lbs[1]!.ip, { timeoutMs: 10000, intervalMs: 5 }); // prettier-ignore
      expect(withdrawn).not.toBeNull();
      const exitMs = performance.now() - t0;
      await sleep(2000);
      const on2after = await flows(dps[1]!, lab.clientIp);
      const res = await ka.result;
      const w = await wrk;
      // Datapath drops and errors on either LB during the move (lb-1's program stays attached after its exit).
      const ctrAfter = await Promise.all(dps.map((dp) => dp.counters()));
      const drops = ctrAfter.map((c, i) => Object.entries(c.global).filter(([k, v]) => /drop|error/.test(k) && v !== ctrBefore[i]!.global[k]).map(([k, v]) => `${k} +${v - (ctrBefore[i]!.global[k] ?? 0n)}`).join(', ') || 'none'); // prettier-ignore
      const s = summarise(res);
      const kaPorts = new Set(res.conns.map((c) => c.localPort));
      // Connections lb-1 carried that lb-2 had no entry for: they reached lb-2 only after the withdraw.
      const moved = [...on1.keys()].filter((p) => kaPorts.has(p) && !on2before.has(p));
      const reusedSameNode = reused.filter((p) => on2after.get(p) === on1.get(p));
      const sameNode = moved.filter((p) => on2after.get(p) === on1.get(p));
      // Where each failed connection was: its pod, its node on lb-1 / lb-2 before / lb-2 after.
      // Each failed connection with what places it: when (the SIGTERM came at `sigterm` ms of the client's run), its
      // pod, its node on lb-1 / lb-2 before / lb-2 after, its slowest answer, and the datapaths' drops.
      const sigterm = (t0 - kaStart).toFixed(0);
      // Earlier connections from the same client port (this file's fresh and keep-alive clients): an LB that carried
      // one keeps its entry for that 5-tuple.
      const current = `keepAlive(${32 + REUSED_PORTS.length})`;
      const earlier = (port: number): string => (lab.portHistory.get(port) ?? []).filter((u) => !u.startsWith(current)).join(', ') || 'none'; // prettier-ignore
      // Keep-alive connections both LBs had an entry for before the SIGTERM: the reused ports' (their earlier
      // connection's closed entry on lb-2, or on lb-1 the other way round), and any other (lb-1's node / lb-2's).
      const onBoth = [...on1.keys()].filter((p) => kaPorts.has(p) && on2before.has(p));
      const inverse = onBoth.filter((p) => REUSED_PORTS.includes(p) && !reused.includes(p) && on2entries.get(p)?.closed === false); // prettier-ignore
      const otherBoth = onBoth.filter((p) => !reused.includes(p) && !inverse.includes(p)).map((p) => `${p} ${on1.get(p)}/${on2before.get(p)} earlier: ${earlier(p)}`); // prettier-ignore
      const failedInfo = res.conns
        .filter((c) => c.error !== null)
        .map((c) => `${c.localPort} ${c.error} at ${c.errorAtMs} ms (SIGTERM at ${sigterm} ms) ${Object.keys(c.pods).join('+')} lb-1:${on1.get(c.localPort) ?? '-'} lb-2:${on2before.get(c.localPort) ?? '-'}/${on2after.get(c.localPort) ?? '-'} slowest ${c.maxMs} ms; drops lb-1: ${drops[0]}, lb-2: ${drops[1]}; earlier uses of the port: ${earlier(c.localPort)}`); // prettier-ignore
      const wrkErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(w.stdout);
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(w.stdout)?.[1] ?? 0);
      const wrkReqs = Number(/(\d+) requests in/.exec(w.stdout)?.[1] ?? 0);
      console.log(
        `[k8s-node] lb-1 SIGTERM: exited and withdrawn from the FIB in ${withdrawn!.toFixed(0)} ms (${exitMs.toFixed(0)} ms incl. exit); ` + // prettier-ignore
          `${moved.length} keep-alive connections moved lb-1 -> lb-2 (lb-2 had no entry for them), ${sameNode.length} to the same node by Maglev; ` + // prettier-ignore
          `on both LBs before: ${onBoth.length}: ${reused.length} reused client ports whose earlier connection left a closed entry on lb-2 (${reusedOther.length} of them naming the other node; ${reusedSameNode.length} kept their node on lb-2), ${inverse.length} the other way round, other: ${otherBoth.join('; ') || 'none'}; ` + // prettier-ignore
          `own client: ${res.ok} requests, ${res.errors} failed${failedInfo.length ? ` (${failedInfo.join('; ')})` : ''}, ${s.switched} switched pod, ${s.slow} answers over 190 ms (slowest ${s.maxMs} ms), SIGTERM at ${sigterm} ms; wrk: ${wrkReqs} requests, ` + // prettier-ignore
          `socket errors ${wrkErr ? wrkErr.slice(1).join('/') : 'none'}, non-2xx ${non2xx}; datapath drops/errors lb-1: ${drops[0]}, lb-2: ${drops[1]}`, // prettier-ignore
      );
      expect(w.code).toBe(0);
      expect(wrkReqs).toBeGreaterThan(0);
      expect(wrkErr === null || wrkErr.slice(1).every((x) => x === '0')).toBe(true);
      expect(non2xx).toBe(0);
      expect(moved.length).toBeGreaterThan(0);
      expect(sameNode).toEqual(moved);
      // The tuples reused from the drain test: some met a closed entry of the other node on lb-2 (80 ports, each
      // such with odds ~1/8), and each kept its node there: lb-2 chose it afresh instead of following the entry.
      expect(reusedOther.length).toBeGreaterThan(0);
      expect(reusedSameNode).toEqual(reused);
      expect(failedInfo).toEqual([]);
      expect(s.switched).toBe(0);
    });
  },
);
