// The silent-failure scenario of issue 14, with and without BFD, interleaved (with, without, with, without ...)
// in one run on the BFD lab (test/helpers/bfd-lab.ts: router BIRD or FRR, two LB nodes running the daemon and
// our BFD process, two backends, a client). One LB node goes silent (nftables drops everything between it and
// the router, link up) under bounded HTTP load through the VIP; measured: when the router's FIB drops that
// next hop, when the last request that failed was started (traffic shifted after that), how many failed.
// "Without BFD" turns BFD off for that node's BGP sessions at the router (live), so only the hold timer is left.
//
//   node dist/scripts/bench/bfd-failover.js [--router bird|frr] [--pairs N] [--out FILE.json]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BfdLab, HOLD_S, OUR_BFD, RouterKind, VIP4 } from '../../test/helpers/bfd-lab';

export interface FailoverSample {
  round: number;
  bfd: boolean;
  /** ms from the fault until the router's FIB no longer had the node for the v4 VIP (null: not within 20 s). */
  fibMs: number | null;
  /** ms from the fault until the start of the last request that failed (0 when none failed). */
  shiftedMs: number;
  ok: number;
  failed: number;
  /** ms from lifting the fault until BFD, BGP and both next hops were back. */
  recoveredMs: number;
}

async function healthy(lab: BfdLab, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const st = await Promise.all([0, 1].map((i) => lab.bfdStatus(i).catch(() => null)));
    const ours = st.every((s, i) => s !== null && lab.ourSessions(s, i).every((x) => x.state === 'up'));
    const router = lab.router.bfdSessions();
    if (ours && router.length === 4 && router.every((x) => x.state === 'up') && lab.fullyRouted())
      return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`lab not whole again within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** One silent failure of LB 1 under load; BFD on or off for its sessions at the router. */
export async function silentFailure(
  lab: BfdLab,
  o: { bfd: boolean; round: number },
): Promise<FailoverSample> {
  const lb1 = lab.lbs[0]!;
  if (!o.bfd) {
    lab.router.setBfd([lb1.v4, lb1.v6], false);
    await sleep(1000);
  }
  // Long enough to outlast the hold timer when BFD is off.
  const load = lab.load({ seconds: o.bfd ? 6 : HOLD_S + 5, concurrency: 8, timeoutMs: 1000 });
  await sleep(1500);
  const wall0 = Date.now();
  const t0 = performance.now();
  lab.silence(0, true);
  // The load ends by itself (bounded); the fault stays until then so every failure is counted.
  const fibMs = await lab.timeUntilFibDrops(0, t0, 20000);
  const r = await load;
  lab.silence(0, false);
  if (!o.bfd) lab.router.setBfd([lb1.v4, lb1.v6], true);
  const recoveredMs = await healthy(lab, 40000);
  const last = r.failedAt.length ? Math.max(...r.failedAt) - wall0 : 0;
  return { round: o.round, bfd: o.bfd, fibMs, shiftedMs: Math.max(0, last), ok: r.ok, failed: r.failed, recoveredMs }; // prettier-ignore
}

const med = (xs: number[]): number | null => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
};

export function failoverTable(samples: FailoverSample[]): string {
  const f = (n: number | null) => (n === null ? 'never' : n.toFixed(0));
  const rows = samples.map(
    (s) => `| ${s.round} | ${s.bfd ? 'BFD 300 ms x 3' : `hold timer ${HOLD_S} s`} | ${f(s.fibMs)} | ${f(s.shiftedMs)} | ${s.failed} | ${s.ok} | ${f(s.recoveredMs)} |`, // prettier-ignore
  );
  const sum = [true, false].map((b) => {
    const xs = samples.filter((s) => s.bfd === b);
    return `| median (${xs.length}) | ${b ? 'BFD' : 'hold timer'} | ${f(med(xs.flatMap((s) => (s.fibMs === null ? [] : [s.fibMs]))))} | ${f(med(xs.map((s) => s.shiftedMs)))} | ${f(med(xs.map((s) => s.failed)))} | ${f(med(xs.map((s) => s.ok)))} | ${f(med(xs.map((s) => s.recoveredMs)))} |`; // prettier-ignore
  });
  return [
    '| round | detection | FIB drops node (ms) | last failed request started (ms) | failed | ok | whole again after repair (ms) |', // prettier-ignore
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    ...sum,
  ].join('\n');
}

/**
 * The whole scenario: a BfdLab with this router, `pairs` x (with BFD, without BFD) interleaved, cleaned up
 * even on failure. Returns the samples and the Markdown table with its heading line.
 */
export async function runBfdFailover(o: {
  router: RouterKind;
  pairs: number;
  log?: (line: string) => void;
}): Promise<{ router: RouterKind; samples: FailoverSample[]; markdown: string }> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const lab = new BfdLab(o.router);
  const samples: FailoverSample[] = [];
  const t0 = Date.now();
  try {
    log(`[bfd-failover] ${o.router}: lab up ...`);
    await lab.start();
    await healthy(lab, 60000);
    for (let i = 0; i < o.pairs * 2; i++) {
      const bfd = i % 2 === 0;
      log(`[bfd-failover] round ${i + 1}/${o.pairs * 2}: silent failure of lb1, ${bfd ? 'with' : 'without'} BFD`); // prettier-ignore
      const s = await silentFailure(lab, { bfd, round: i + 1 });
      log(`  FIB ${s.fibMs?.toFixed(0) ?? 'never'} ms, shifted ${s.shiftedMs.toFixed(0)} ms, failed ${s.failed}/${s.ok + s.failed}`); // prettier-ignore
      samples.push(s);
    }
  } finally {
    await lab.cleanup();
  }
  const markdown =
    `Silent failure of one of 2 LB nodes (${o.router}, BFD ${OUR_BFD.minTx} ms x ${OUR_BFD.multiplier}, BGP hold ${HOLD_S} s), ` +
    `8 HTTP loops through ${VIP4}, new connection per request, 1 s timeout; ${samples.length} rounds interleaved, ${((Date.now() - t0) / 1000).toFixed(0)} s:\n\n${failoverTable(samples)}\n`; // prettier-ignore
  return { router: o.router, samples, markdown };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { router: { type: 'string', default: 'bird' }, pairs: { type: 'string', default: '2' }, out: { type: 'string' } }, // prettier-ignore
  });
  const router = values.router as RouterKind;
  if (router !== 'bird' && router !== 'frr')
    throw new Error(`--router must be bird or frr, got ${values.router}`);
  const pairs = Number(values.pairs);
  if (!Number.isInteger(pairs) || pairs < 1 || pairs > 10)
    throw new Error(`--pairs must be 1..10, got ${values.pairs}`);
  const r = await runBfdFailover({ router, pairs });
  process.stdout.write(`\n${r.markdown}`);
  if (values.out) writeFileSync(values.out, JSON.stringify({ router, hold: HOLD_S, bfd: OUR_BFD, samples: r.samples }, null, 2)); // prettier-ignore
  return 0;
}

if (require.main === module)
  main().then(
    (c) => process.exit(c),
    (e: unknown) => {
      process.stderr.write(`[bfd-failover] ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
