// `npm run demo`: 2 LB nodes + 3 backends running peak-xdp, BGP/ECMP shown, ~20 s of traffic with a live table.
import { join } from 'node:path';
import { packageRoot } from '../src/paths';
import { defaultConfigPath, loadTestbedConfig } from './testbed/config';
import { buildPlan, Plan, serviceVip } from './testbed/plan';
import { bgpSessions, down, fibNextHops, status, up } from './testbed/topology';
import { sleep } from './testbed/sh';
import { CLI_JS, peakUnavailable } from './testbed/peak';
import { getSystem } from './bench/lib/systems';
import { loadIn, routerTxPackets } from './bench/lib/measure';
import type { LoadResult, Progress } from './bench/lib/loadgen';

const DURATION_S = 20;
const RATE = 150;

function table(o: {
  p: Plan;
  progress: Record<string, Progress>;
  lb0: Record<string, number>;
  t: number;
}): string {
  const per: Record<string, number> = {};
  let ok = 0;
  let err = 0;
  let p99 = 0;
  for (const pr of Object.values(o.progress)) {
    ok += pr.ok;
    err += pr.err;
    p99 = Math.max(p99, Number.isFinite(pr.p99us) ? pr.p99us : 0);
    for (const [k, v] of Object.entries(pr.perBackend)) per[k] = (per[k] ?? 0) + v;
  }
  const lbNow = routerTxPackets(o.p);
  const rows = [
    `t=${o.t.toFixed(0).padStart(2)}s  ok=${ok}  errors=${err}  p99(last s)=${(p99 / 1000).toFixed(1)} ms`,
    '  per backend: ' + o.p.backends.map((b) => `${b.name}=${per[b.name] ?? 0}`).join('  '),
    '  per LB node (packets from router): ' +
      o.p.lbs.map((l) => `${l.name}=${lbNow[l.name]! - o.lb0[l.name]!}`).join('  '),
  ];
  return rows.join('\n');
}

/** What to try on a testbed left up by --keep, and how to remove it (absolute paths: any working directory). */
export function keepInstructions(p: Plan): string {
  const tb = `node ${join(packageRoot, 'dist', 'scripts', 'testbed', 'cli.js')} --prefix ${p.prefix}`;
  const cli = `node ${CLI_JS}`;
  const v4 = serviceVip(p, 4).address;
  const v6 = serviceVip(p, 6).address;
  return [
    '',
    `Left running (--keep). Every command below runs from any directory; exec into lbN sets PEAK_XDP_BPFFS.`,
    `  ${tb} status`,
    `  ${tb} exec client1 curl -s http://${v4}/          # answered by one of the backends`,
    `  ${tb} exec client1 curl -s -g http://[${v6}]/`,
    `  ${tb} exec lb1 ${cli} status                      # attached program, VIPs, backends`,
    `  ${tb} exec lb1 ${cli} stats                       # packet rates per VIP and backend`,
    `  ${tb} exec lb1 ${cli} ring ${v4}                  # Maglev slot shares`,
    `  ${tb} exec lb1 ${cli} bgp                         # BGP sessions (daemon admin API)`,
    `  ${tb} exec lb1 curl -s http://127.0.0.1:9470/metrics`,
    `Tear down (daemons, nginx, BIRD, namespaces, pins, state): ${tb} down`,
  ].join('\n');
}

async function main(): Promise<number> {
  const keep = process.argv.includes('--keep');
  const why = peakUnavailable();
  if (why) {
    console.error(`demo: cannot run peak-xdp: ${why}`);
    console.error(
      'demo: the testbed itself works without it: node dist/scripts/testbed/cli.js up|status|down',
    );
    return 1;
  }
  const cfg = loadTestbedConfig({ path: defaultConfigPath(packageRoot), overrides: { lbs: 2, backends: 3 } });
  const p = buildPlan(cfg);
  const sys = getSystem('peak-xdp');
  const deps = ([4, 6] as const).map((family) => ({ plan: p, lbs: p.lbs, backends: p.backends, family }));
  let failed = false;
  const stop = (): void => {
    down(p).then(
      () => process.exit(130),
      () => process.exit(130),
    );
  };
  process.once('SIGINT', stop);
  try {
    console.log(`== testbed ${p.prefix}: 1 client, router (${p.routerDaemon}), 2 LB nodes, 3 backends`);
    up(p, (m) => console.log(`   ${m}`));
    console.log('== starting peak-xdp (decap on backends, a daemon per LB node)');
    await sys.setup(deps[0]!);
    const vips = [serviceVip(p, 4), serviceVip(p, 6)];
    for (const v of p.vips) {
      const want = p.lbs.length;
      for (let i = 0; i < 100 && fibNextHops(p, v.address).length < want; i++) await sleep(100);
    }
    console.log('== BGP sessions at the router');
    for (const s of bgpSessions(p)) console.log(`   ${s.peer.padEnd(10)} ${s.state}`);
    console.log("== router's ECMP routes");
    for (const v of p.vips)
      console.log(`   ${v.address} via ${fibNextHops(p, v.address).join(', ') || '(none)'}`);
    console.log(
      `== traffic: ${RATE} req/s per VIP (IPv4 + IPv6), ${DURATION_S} s, a new connection per request`,
    );
    const progress: Record<string, Progress> = {};
    const lb0 = routerTxPackets(p);
    const t0 = Date.now();
    const ticker = setInterval(
      () => console.log(table({ p, progress, lb0, t: (Date.now() - t0) / 1000 })),
      2000,
    );
    let results: LoadResult[];
    try {
      results = await Promise.all(
        vips.map((v) =>
          loadIn(
            p.clients[0]!.netns,
            { targets: [{ host: v.address, port: v.port }], mode: 'open', rate: RATE, durationMs: DURATION_S * 1000, maxRequests: RATE * DURATION_S, timeoutMs: 2000 },
            (pr) => (progress[v.name] = pr),
          ),
        ),
      ); // prettier-ignore
    } finally {
      clearInterval(ticker);
    }
    const lbNow = routerTxPackets(p);
    console.log('== summary');
    for (const [i, r] of results.entries()) {
      const v = vips[i]!;
      const errors =
        Object.entries(r.errors)
          .map(([k, n]) => `${k}:${n}`)
          .join(' ') || 'none';
      console.log(
        `   ${v.name} ${v.address}: ${r.ok}/${r.sent} ok, errors ${errors}, p50 ${(r.latencyUs.p50 / 1000).toFixed(2)} ms, p99 ${(r.latencyUs.p99 / 1000).toFixed(2)} ms`,
      );
      console.log(
        `     per backend: ${p.backends.map((b) => `${b.name}=${r.perBackend[b.name] ?? 0}`).join(' ')}`,
      );
      if (r.ok !== r.sent || p.backends.some((b) => !r.perBackend[b.name])) failed = true;
    }
    console.log(
      `   per LB node (packets): ${p.lbs.map((l) => `${l.name}=${lbNow[l.name]! - lb0[l.name]!}`).join(' ')}`,
    );
    if (p.lbs.some((l) => lbNow[l.name]! - lb0[l.name]! === 0)) failed = true;
    console.log(failed ? '== FAILED: errors, or a backend / LB node got no traffic' : '== OK');
  } catch (e) {
    failed = true;
    console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (keep) {
      console.log(status(p).text);
      console.log(keepInstructions(p));
    } else {
      await sys.teardown(deps[0]!).catch(() => undefined);
      const r = await down(p);
      if (r.leftovers.length) {
        failed = true;
        console.error(`left behind: ${r.leftovers.join(', ')}`);
      }
    }
  }
  return failed ? 1 : 0;
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(`demo: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
