// Data-plane benchmark: ns/packet via BPF_PROG_TEST_RUN (net of a trivial program timed in the same run) and
// Mpps through a veth with our own live-frames generator (minimal encap program vs the full balancer, run in
// alternation; the ratio is the median of the per-round ratios, which load from other processes skews least).
// The whole process (every thread, and the generator it starts) is pinned to one CPU; every timed row checks
// that it measured the path it names (VIP index lookup, conntrack hits or misses) and the bench fails if not.
// Stateless GUE VIPs (issue 15) are timed beside the connection-table mode: SYN and established rows, live
// frames with 1k and 1M flows, and a SYN flood of --flood new flows against established ones (evictions).
// A new flow's cost is mostly its Maglev slot's cache line (cold: a random line of a 256 KB table, 16 slots per
// 64-byte line), so a SYN and an ACK of a new flow are timed side by side, and a stateless VIP with a 16 KB table
// (M = 4093) shows what the line costs; live frames also run the older layout (one 4-byte slot per element, which an
// ARRAY map stores at an 8-byte stride: 512 KB) beside today's.
// With --katran-object PATH (a Katran balancer object built elsewhere: scripts/bench/lib/katran.ts), Katran's
// established and new-flow (SYN) paths are timed in the same runs, and the stateless targets are judged against them.
// Usage: node dist/scripts/bench/datapath.js [--json] [--runs 5] [--calls 20000] [--frames 4000000]
//        [--live-rounds 9] [--flood 1000000] [--cpu N] [--katran-object PATH]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import {
  attachXdp,
  BpfMap,
  BpfObject,
  BpfProgram,
  ifNameToIndex,
  possibleCpus,
  splitPerCpu,
} from '../../src/datapath/bpf';
import { KernelDatapath } from '../../src/datapath/kernel';
import { ENUMS, LAYOUT, encodeVipKey } from '../../src/datapath/layout';
import { bpfObjectDir, bpfObjectPath } from '../../src/paths';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  conntrackEntriesFor,
  CtExpectation,
  ctProblem,
  ctSample,
  hitPct,
  parseCpuList,
} from './lib/datapath-checks';
import { katranRowProblem, loadKatran, type Katran } from './lib/katran';

interface Args {
  json: boolean;
  runs: number;
  calls: number;
  frames: number;
  liveRounds: number;
  /** New flows (SYNs) of the SYN-flood part, per mode. */
  flood: number;
  /** The CPU the whole bench runs on. */
  cpu: number;
  /** A Katran balancer object to time beside ours (test-run rows). */
  katranObject?: string;
  childGen?: {
    ifname: string;
    frames: number;
    template: string;
    sportOff: number;
    flows: number;
    saddrOff?: number;
  };
}

function parseArgs(argv: string[]): Args {
  // The last CPU by default: CPU 0 usually takes more of the machine's interrupts.
  const a: Args = {
    json: false,
    runs: 5,
    calls: 20000,
    frames: 4_000_000,
    liveRounds: 9,
    flood: 1_000_000,
    cpu: cpus().length - 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const num = (name: string, min: number, max: number): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < min || v > max)
        throw new RangeError(`${name}: ${argv[i]} is not an integer in ${min}..${max}`);
      return v;
    };
    if (k === '--json') a.json = true;
    else if (k === '--runs') a.runs = num('--runs', 5, 100);
    else if (k === '--calls') a.calls = num('--calls', 100, 1_000_000);
    else if (k === '--frames') a.frames = num('--frames', 1000, 50_000_000);
    else if (k === '--live-rounds') a.liveRounds = num('--live-rounds', 3, 100);
    else if (k === '--flood') a.flood = num('--flood', 1000, 10_000_000);
    else if (k === '--cpu') a.cpu = num('--cpu', 0, cpus().length - 1);
    else if (k === '--child-gen') a.childGen = JSON.parse(argv[++i]!) as Args['childGen'];
    else if (k === '--katran-object') {
      const path = argv[++i];
      if (path === undefined || !existsSync(path))
        throw new TypeError(`--katran-object: ${JSON.stringify(path)} is not a file`);
      a.katranObject = path;
    } else
      throw new TypeError(
        `argument: ${JSON.stringify(k)} is not one of --json --runs --calls --frames --live-rounds --flood --cpu --katran-object`,
      );
  }
  return a;
}

// ---- frames ----------------------------------------------------------------------------------------

function csum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const MAC_LB = Buffer.from('020000000101', 'hex');
const MAC_PEER = Buffer.from('0200000001fe', 'hex');

/** Ethernet + IPv4 + UDP (or TCP ACK) frame of `size` bytes. */
function v4Frame(o: {
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  tcp?: boolean;
  /** TCP SYN instead of ACK. */
  syn?: boolean;
  size?: number;
}): Buffer {
  const size = o.size ?? 64;
  const b = Buffer.alloc(size);
  MAC_LB.copy(b, 0);
  MAC_PEER.copy(b, 6);
  b.writeUInt16BE(0x0800, 12);
  const ipLen = size - 14;
  b[14] = 0x45;
  b.writeUInt16BE(ipLen, 16);
  b[22] = 64;
  b[23] = o.tcp ? 6 : 17;
  b.set(o.src, 26);
  b.set(o.dst, 30);
  b.writeUInt16BE(csum(b.subarray(14, 34)), 24);
  b.writeUInt16BE(o.sport, 34);
  b.writeUInt16BE(o.dport, 36);
  if (o.tcp) {
    b[46] = 5 << 4;
    b[47] = o.syn ? 0x02 : 0x10; // SYN or ACK
  } else b.writeUInt16BE(ipLen - 20, 38);
  return b;
}

function v6Frame(o: { sport: number; dport: number; tcp?: boolean; size?: number }): Buffer {
  const size = o.size ?? 78;
  const b = Buffer.alloc(size);
  MAC_LB.copy(b, 0);
  MAC_PEER.copy(b, 6);
  b.writeUInt16BE(0x86dd, 12);
  b.writeUInt32BE(0x60000000, 14);
  b.writeUInt16BE(size - 54, 18);
  b[20] = o.tcp ? 6 : 17;
  b[21] = 64;
  Buffer.from('20010db8000c00000000000000000007', 'hex').copy(b, 22);
  Buffer.from('20010db8000000000000000000000010', 'hex').copy(b, 38);
  b.writeUInt16BE(o.sport, 54);
  b.writeUInt16BE(o.dport, 56);
  if (o.tcp) {
    b[66] = 5 << 4;
    b[67] = 0x10;
  } else b.writeUInt16BE(size - 54, 58);
  return b;
}

// ---- test-run timing -------------------------------------------------------------------------------

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Mean kernel-measured ns of one run, over `frames` (cycled), one repetition per call; verdict checked. */
function timeCalls(prog: BpfProgram, frames: Buffer[], calls: number, verdict: string): number {
  let total = 0;
  for (let i = 0; i < calls; i++) {
    const r = prog.testRun({ data: frames[i % frames.length]!, repeat: 1 });
    if (r.verdictName !== verdict) throw new Error(`expected ${verdict}, got ${r.verdictName} on call ${i}`);
    total += r.durationNs;
  }
  return total / calls;
}

interface Row {
  path: string;
  nsPerPacket: number;
  netNs: number;
  method: string;
  /** Lowest conntrack hits / lookups of the row over the runs (shows which path a row really measured). */
  ctHitPct?: number;
}

/** What the test-run part found besides the rows: how the VIP lookup ran, and the connection table's size. */
interface TestRunInfo {
  vipLookup: VipLookupMode;
  vipIndexKeys: number;
  conntrackEntries: number;
}

type VipLookupMode = 'index' | 'hash';

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** The installed VIP index's head (read back from the inner map), or null when none is installed. */
function vipIndexHead(dp: KernelDatapath): { useHash: boolean; keys: number } | null {
  const id = dp.maps.vip_index.innerId(0);
  if (!id) return null;
  const inner = BpfMap.fromId(id);
  try {
    const b = inner.lookup(u32(0));
    if (!b) return null;
    const f = LAYOUT.peak_vip_index_head.fields;
    const useHashBit = ENUMS.peak_vip_index_flag.PEAK_VIP_INDEX_F_USE_HASH;
    return { useHash: (b.readUInt32LE(f.flags) & useHashBit) !== 0, keys: b.readUInt32LE(f.keys) };
  } finally {
    inner.close();
  }
}

/**
 * Which lookup the program really runs: the probe VIP is taken out of `vips` behind the datapath's back for one
 * packet. The index (a snapshot of `vips`) still forwards it; the hash fallback reads `vips` and passes it.
 */
function probeVipLookup(dp: KernelDatapath, probe: { key: Buffer; frame: Buffer }): VipLookupMode {
  const value = dp.maps.vips.lookup(probe.key);
  if (!value) throw new Error('probe VIP: not in vips');
  dp.maps.vips.delete(probe.key);
  try {
    const v = dp.program.testRun({ data: probe.frame }).verdictName;
    if (v === 'TX') return 'index';
    if (v === 'PASS') return 'hash';
    throw new Error(`probe VIP: verdict ${v}, expected TX (index) or PASS (hash fallback)`);
  } finally {
    dp.maps.vips.update(probe.key, value);
  }
}

/** Throws unless the VIP index is installed, holds every VIP and is what the program reads. */
function assertVipIndex(
  dp: KernelDatapath,
  probe: { key: Buffer; frame: Buffer },
  vips: number,
  when: string,
) {
  const head = vipIndexHead(dp);
  if (!head || head.useHash || head.keys !== vips)
    throw new Error(
      `${when}: the VIP index is not in use (head ${JSON.stringify(head)}, want ${vips} keys): ` +
        'the rows would time the hash fallback',
    );
  const mode = probeVipLookup(dp, probe);
  if (mode !== 'index') throw new Error(`${when}: the program looked the probe VIP up in the ${mode}`);
  return head;
}

async function testRunBench(a: Args): Promise<{ rows: Row[]; info: TestRunInfo }> {
  const passObj = await BpfObject.load(bpfObjectPath('pass'));
  const floorProg = passObj.program('xdp_pass');
  passObj.close();
  const minObj = await BpfObject.load(bpfObjectPath('bench_encap'), {
    consts: { backend_v4: Buffer.from([10, 1, 0, 1]), source_v4: Buffer.from([10, 255, 0, 1]) },
  });
  const minProg = minObj.program('bench_encap');
  minObj.close();
  const MANY = 100_000;
  // Every flow this bench inserts, from one CPU: established sets, the 100k set, new flows, probes.
  const conntrackEntries = conntrackEntriesFor({
    inserts: 128 + MANY + 2 * a.runs * a.calls + 16,
    possibleCpus: possibleCpus(),
  });
  const dp = await KernelDatapath.load({ maxEntries: { conntrack: conntrackEntries } });
  try {
    await dp.configure({
      ownMac: '02:00:00:00:01:01',
      nextHopMac: '02:00:00:00:01:fe',
      encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
      encapSourceV6: { prefix: 'fd00:ff::', prefixLength: 64 },
      mtu: 1600,
    });
    const members = [1, 2, 3, 4, 5, 6, 7, 8];
    for (const id of members) await dp.upsertBackend({ id, address: `10.1.0.${id}`, state: 'up' });
    for (const id of members) await dp.upsertBackend({ id: 100 + id, address: `fd00:1::${id}`, state: 'up' });
    const flags = { sourceHash: false, noConntrack: false };
    await dp.upsertVip({
      key: { address: '10.0.0.10', port: 80, protocol: 'tcp' },
      id: 1,
      flags,
      tableSize: 65537,
    });
    await dp.upsertVip({
      key: { address: '2001:db8::10', port: 443, protocol: 'tcp' },
      id: 2,
      flags,
      tableSize: 65537,
    });
    // Only for probeVipLookup: never in a timed row.
    const probeKey = { address: '10.0.0.11', port: 80, protocol: 'tcp' } as const;
    await dp.upsertVip({ key: probeKey, id: 3, flags, tableSize: 65537 });
    const table = (base: number) =>
      Uint32Array.from({ length: 65537 }, (_, s) => base + members[s % members.length]!);
    await dp.installTable(1, table(0));
    await dp.installTable(2, table(100));
    await dp.installTable(3, table(0));
    // Stateless GUE VIPs: 4 with no previous table, 5 whose previous table moved every slot (each non-SYN
    // packet carries a hint: the worst case right after a change; in steady state no slot differs).
    for (const id of members)
      await dp.upsertBackend({ id: 200 + id, address: `10.2.0.${id}`, state: 'up', encap: 'gue' });
    const stateless = { sourceHash: false, noConntrack: false, stateless: true };
    await dp.upsertVip({ key: { address: '10.0.0.12', port: 80, protocol: 'tcp' }, id: 4, flags: stateless, tableSize: 65537 }); // prettier-ignore
    await dp.upsertVip({ key: { address: '10.0.0.13', port: 80, protocol: 'tcp' }, id: 5, flags: stateless, tableSize: 65537 }); // prettier-ignore
    // 6: a stateless VIP with a small table (M = 4093, 32 KB): new flows' slots stay cached between calls, so
    // the row beside the 65537-slot one shows what a new flow's cold table line costs (nothing else differs).
    await dp.upsertVip({ key: { address: '10.0.0.14', port: 80, protocol: 'tcp' }, id: 6, flags: stateless, tableSize: 4093 }); // prettier-ignore
    await dp.installTable(4, table(200));
    await dp.installTable(5, table(200));
    await dp.installTable(
      6,
      Uint32Array.from({ length: 4093 }, (_, s) => 200 + members[s % members.length]!),
    );
    await dp.installPreviousTable(
      5,
      Uint32Array.from({ length: 65537 }, (_, s) => 200 + members[(s + 1) % members.length]!),
    );
    // The index is rebuilt on the next event-loop turn after VIP changes; until then the program reads the
    // `vips` hash. Build it now, and check that it is what the program uses (before and after the timing).
    dp.flushVipIndex();
    const probe = {
      key: encodeVipKey(probeKey),
      frame: v4Frame({ src: [192, 0, 2, 9], dst: [10, 0, 0, 11], sport: 9, dport: 80, tcp: true }),
    };
    const VIP_COUNT = 6;
    const head = assertVipIndex(dp, probe, VIP_COUNT, 'before timing');

    const nonVip = [v4Frame({ src: [192, 0, 2, 1], dst: [10, 9, 9, 9], sport: 1, dport: 80, tcp: true })];
    const est4 = Array.from({ length: 64 }, (_, i) =>
      v4Frame({ src: [192, 0, 2, 1], dst: [10, 0, 0, 10], sport: 10000 + i, dport: 80, tcp: true }),
    );
    const est6 = Array.from({ length: 64 }, (_, i) => v6Frame({ sport: 10000 + i, dport: 443, tcp: true }));
    const prog = dp.program;
    // Establish the flows of the "established" rows (first packet inserts).
    for (const f of [...est4, ...est6]) prog.testRun({ data: f });
    let fresh = 0;
    const newFlows = (): Buffer[] =>
      Array.from({ length: a.calls }, () => {
        fresh++;
        const src = [172, 16 + ((fresh >>> 16) & 0x0f), (fresh >>> 8) & 0xff, fresh & 0xff];
        return v4Frame({ src, dst: [10, 0, 0, 10], sport: 20000 + (fresh % 40000), dport: 80, tcp: true });
      });
    const newSyns =
      (dst: number[], syn = true) =>
      (): Buffer[] =>
        Array.from({ length: a.calls }, () => {
          fresh++;
          const src = [172, 16 + ((fresh >>> 16) & 0x0f), (fresh >>> 8) & 0xff, fresh & 0xff];
          return v4Frame({ src, dst, sport: 20000 + (fresh % 40000), dport: 80, tcp: true, syn });
        });
    const estTo = (dst: number[]) =>
      Array.from({ length: 64 }, (_, i) =>
        v4Frame({ src: [192, 0, 2, 1], dst, sport: 10000 + i, dport: 80, tcp: true }),
      );
    const estStateless = estTo([10, 0, 0, 12]);
    const synStateless = estStateless.map((f) => {
      const b = Buffer.from(f);
      b[47] = 0x02; // the same 64 flows' SYNs: in stateless mode a SYN takes the established path
      return b;
    });
    const estHinted = estTo([10, 0, 0, 13]);
    const synHinted = estHinted.map((f) => {
      const b = Buffer.from(f);
      b[47] = 0x02; // SYNs of flows whose every slot moved: a SYN carries no hint, reads no previous table
      return b;
    });
    const many = Array.from({ length: MANY }, (_, i) =>
      v4Frame({
        src: [198, 18, (i >>> 8) & 0xff, i & 0xff],
        dst: [10, 0, 0, 10],
        sport: 30000 + (i % 7),
        dport: 80,
        tcp: true,
      }),
    );
    for (const f of many) prog.testRun({ data: f });
    // Katran beside ours (--katran-object): the same VIP, reals, ring and frames; its established flows warmed.
    const katran: Katran | null =
      a.katranObject === undefined
        ? null
        : await loadKatran(a.katranObject, {
            vip: [10, 0, 0, 10],
            port: 80,
            reals: members.map((id) => [10, 1, 0, id]),
            nextHopMac: MAC_PEER,
            lruEntries: conntrackEntries,
          });
    if (katran) for (const f of est4) katran.program.testRun({ data: f });
    const katranRows: { path: string; kind: 'established' | 'syn'; frames: () => Buffer[] }[] = katran
      ? [
          { path: 'Katran v4 established (LRU hit)', kind: 'established', frames: () => est4 },
          { path: 'Katran v4 SYN (LRU insert)', kind: 'syn', frames: newSyns([10, 0, 0, 10]) },
        ]
      : [];
    const katranResults = katranRows.map(() => [] as number[]);
    const manyStateless = many.map((f) => {
      const b = Buffer.from(f);
      b[33] = 12; // 10.0.0.12: the stateless VIP (its IPv4 checksum is not checked)
      return b;
    });

    const rows: {
      path: string;
      frames: () => Buffer[];
      verdict: string;
      calls: number;
      ct: CtExpectation;
      /** Counters that must move by exactly the call count (the row took the path it names). */
      exact?: string[];
      /** Counters that must not move (a path the row must not take). */
      still?: string[];
    }[] = [
      { path: 'non-VIP pass', frames: () => nonVip, verdict: 'PASS', calls: a.calls, ct: 'none' },
      {
        path: 'v4 established (conntrack hit)',
        frames: () => est4,
        verdict: 'TX',
        calls: a.calls,
        ct: 'hit',
      },
      { path: 'v4 new flow (miss + insert)', frames: newFlows, verdict: 'TX', calls: a.calls, ct: 'miss' },
      {
        path: 'v6 established (conntrack hit)',
        frames: () => est6,
        verdict: 'TX',
        calls: a.calls,
        ct: 'hit',
      },
      { path: '100k flows cycled', frames: () => many, verdict: 'TX', calls: MANY, ct: 'hit' },
      {
        path: 'v4 conntrack SYN (insert)',
        frames: newSyns([10, 0, 0, 10]),
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['ct_insert'],
      },
      {
        path: 'v4 stateless SYN (GUE)',
        frames: newSyns([10, 0, 0, 12]),
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
        still: ['hint_sent'],
      },
      {
        // the established path with the new-flow row's cache state (a new slot each call): compare with the SYN
        path: 'v4 stateless ACK, new flow',
        frames: newSyns([10, 0, 0, 12], false),
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
        still: ['hint_sent'],
      },
      {
        path: 'v4 stateless SYN, new, M=4093',
        frames: newSyns([10, 0, 0, 14]),
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
        still: ['hint_sent'],
      },
      {
        path: 'v4 stateless SYN, 64 flows',
        frames: () => synStateless,
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
        still: ['hint_sent'],
      },
      {
        path: 'v4 stateless SYN, all moved',
        frames: () => synHinted,
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
        still: ['hint_sent'],
      },
      {
        path: 'v4 stateless established (GUE)',
        frames: () => estStateless,
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'encap_gue'],
      },
      {
        path: 'v4 stateless est., hint each',
        frames: () => estHinted,
        verdict: 'TX',
        calls: a.calls,
        ct: 'none',
        exact: ['stateless_forward', 'hint_sent'],
      },
      {
        path: '100k flows cycled, stateless',
        frames: () => manyStateless,
        verdict: 'TX',
        calls: MANY,
        ct: 'none',
        exact: ['stateless_forward'],
      },
    ];
    const floors: number[] = [];
    const minimal: number[] = [];
    const results = rows.map(() => [] as number[]);
    const hitPcts = rows.map(() => undefined as number | undefined);
    const problems: string[] = [];
    for (let run = 0; run < a.runs; run++) {
      floors.push(timeCalls(floorProg, nonVip, a.calls, 'PASS'));
      minimal.push(timeCalls(minProg, est4, a.calls, 'TX'));
      for (const [i, r] of rows.entries()) {
        const c0 = (await dp.counters()).global;
        results[i]!.push(timeCalls(prog, r.frames(), r.calls, r.verdict));
        const c1 = (await dp.counters()).global;
        const s = ctSample(c0, c1);
        const p = ctProblem(`${r.path} (run ${run + 1})`, r.ct, s);
        if (p) problems.push(p);
        for (const [name, want] of [
          ...(r.exact ?? []).map((n) => [n, r.calls] as const),
          ...(r.still ?? []).map((n) => [n, 0] as const),
        ]) {
          if (c0[name] === undefined || c1[name] === undefined)
            problems.push(`${r.path}: the program has no counter ${name}`);
          const moved = Number((c1[name] ?? 0n) - (c0[name] ?? 0n));
          if (moved !== want)
            problems.push(`${r.path} (run ${run + 1}): ${name} moved ${moved}, expected ${want}`);
        }
        if (r.exact?.includes('stateless_forward') && c1.ct_insert !== c0.ct_insert)
          problems.push(`${r.path} (run ${run + 1}): a stateless row inserted into the connection table`);
        // The lowest rate over the runs (later runs may find entries evicted by the LRU).
        const pct = hitPct(s);
        if (pct !== null) hitPcts[i] = Math.min(hitPcts[i] ?? 100, pct);
      }
      for (const [i, r] of katranRows.entries()) {
        // A row stays under Katran's flood guard (MAX_CONN_RATE new flows a second), so every SYN inserts.
        if (r.kind === 'syn') katran!.resetFloodGuard();
        const before = katran!.counters();
        katranResults[i]!.push(timeCalls(katran!.program, r.frames(), a.calls, 'TX'));
        const p = katranRowProblem(r.kind, a.calls, before, katran!.counters());
        if (p) problems.push(`${r.path} (run ${run + 1}): ${p}`);
      }
    }
    assertVipIndex(dp, probe, VIP_COUNT, 'after timing');
    if (problems.length) throw new Error(`rows did not measure what they name:\n  ${problems.join('\n  ')}`);
    const floor = median(floors);
    // The non-VIP path does not modify the frame, so it can also use the kernel's repeat loop.
    const rep = (p: BpfProgram) =>
      median(
        Array.from({ length: a.runs }, () => p.testRun({ data: nonVip[0]!, repeat: 1_000_000 }).durationNs),
      );
    const floorRep = rep(floorProg);
    const passRep = rep(prog);
    assertVipIndex(dp, probe, VIP_COUNT, 'after the repeat=1e6 rows');
    // For comparison, the same non-VIP row in the hash fallback: a VIP change makes the datapath read `vips`
    // until the index is rebuilt on the next event-loop turn, which this synchronous timing never reaches.
    await dp.upsertVip({ key: probeKey, id: 3, flags, tableSize: 65537 });
    if (vipIndexHead(dp)?.useHash !== true || probeVipLookup(dp, probe) !== 'hash')
      throw new Error('could not put the datapath in its hash fallback for the comparison row');
    const passHashRep = rep(prog);
    const passHashCalls = timeCalls(prog, nonVip, a.calls, 'PASS');
    dp.flushVipIndex();
    assertVipIndex(dp, probe, VIP_COUNT, 'after the hash-fallback row');
    const out: Row[] = [
      { path: 'trivial XDP_PASS (floor)', nsPerPacket: floor, netNs: 0, method: 'repeat=1 calls' },
      {
        path: 'minimal encap (reference)',
        nsPerPacket: median(minimal),
        netNs: median(minimal) - floor,
        method: 'repeat=1 calls',
      },
    ];
    /** A timed row: the median of its runs, and that net of the floor. */
    const callsRow = (path: string, ns: number[], ctHitPct?: number): Row => ({
      path,
      nsPerPacket: median(ns),
      netNs: median(ns) - floor,
      method: 'repeat=1 calls',
      ...(ctHitPct === undefined ? {} : { ctHitPct }),
    });
    rows.forEach((r, i) => out.push(callsRow(r.path, results[i]!, hitPcts[i])));
    katranRows.forEach((r, i) => out.push(callsRow(r.path, katranResults[i]!)));
    katran?.close();
    out.push({ path: 'trivial XDP_PASS (floor)', nsPerPacket: floorRep, netNs: 0, method: 'repeat=1e6' });
    out.push({ path: 'non-VIP pass', nsPerPacket: passRep, netNs: passRep - floorRep, method: 'repeat=1e6' });
    out.push({
      path: 'non-VIP pass, hash fallback',
      nsPerPacket: passHashRep,
      netNs: passHashRep - floorRep,
      method: 'repeat=1e6',
    });
    out.push({
      path: 'non-VIP pass, hash fallback',
      nsPerPacket: passHashCalls,
      netNs: passHashCalls - floor,
      method: 'repeat=1 calls (1 run)',
    });
    floorProg.close();
    minProg.close();
    return { rows: out, info: { vipLookup: 'index', vipIndexKeys: head.keys, conntrackEntries } };
  } finally {
    dp.close();
  }
}

// ---- live frames through a veth -----------------------------------------------------------------------

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    throw new Error(`${cmd} ${args.join(' ')}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
}

/** Sum over CPUs of the u64 at `offset` in entry 0 of a per-CPU map. */
function sumCounter(m: BpfMap, offset: number): bigint {
  return splitPerCpu(m.lookup(Buffer.alloc(4))!, m.valueSize).reduce(
    (s, b) => s + b.readBigUInt64LE(offset),
    0n,
  );
}

/** Child mode, run inside the generator namespace: live-frames generator, prints {elapsedNs, frames}. */
async function childGen(o: NonNullable<Args['childGen']>): Promise<void> {
  const tmpl = Buffer.from(o.template, 'hex');
  const t = Buffer.alloc(128);
  tmpl.copy(t);
  const obj = await BpfObject.load(bpfObjectPath('bench_gen'), {
    consts: {
      tmpl: t,
      tmpl_len: u32(tmpl.length),
      sport_off: u32(o.sportOff),
      flows: u32(o.flows),
      saddr_off: u32(o.saddrOff ?? 0),
    },
  });
  const gen = obj.program('bench_gen');
  obj.close();
  const ifindex = ifNameToIndex(o.ifname);
  const start = process.hrtime.bigint();
  const r = await gen.testRunAsync({
    data: tmpl,
    repeat: o.frames,
    liveFrames: true,
    batchSize: 64,
    ingressIfindex: ifindex,
  });
  const elapsedNs = Number(process.hrtime.bigint() - start);
  process.stdout.write(JSON.stringify({ elapsedNs, frames: o.frames, verdict: r.verdictName }) + '\n');
}

interface LiveRow {
  program: string;
  flows: number;
  genMpps: number;
  processedMpps: number;
  returnedMpps: number;
  /** Median over rounds of returned Mpps / the minimal program's in the same round (null for the minimal). */
  ratio: number | null;
  ratios: number[];
}

interface LiveResult {
  rows: LiveRow[];
  /** Conntrack balancer, 1k flows / minimal: the ratio reported before issue 15 (kept for comparison). */
  ratios: number[];
  ratio: number;
}

const FLOWS_1K = 1024;
const FLOWS_1M = 1 << 20;

async function liveBench(a: Args): Promise<LiveResult> {
  const sfx = `${(process.pid % 1000).toString(36)}${randomBytes(2).toString('hex')}`;
  const nsG = `pkbg${sfx}`;
  const nsL = `pkbl${sfx}`;
  const out: LiveRow[] = [];
  const closers: { close(): void }[] = [];
  try {
    sh('ip', ['netns', 'add', nsG]);
    sh('ip', ['netns', 'add', nsL]);
    sh('ip', ['link', 'add', 'pkg0', 'netns', nsG, 'type', 'veth', 'peer', 'name', 'pkl0', 'netns', nsL]);
    sh('ip', ['-n', nsG, 'link', 'set', 'pkg0', 'address', '02:00:00:00:01:fe', 'up']);
    sh('ip', ['-n', nsL, 'link', 'set', 'pkl0', 'address', '02:00:00:00:01:01', 'up']);
    // Sink on the generator side: XDP_TX from the LB side needs a program here; it drops and counts.
    const sinkObj = await BpfObject.load(bpfObjectPath('pass'), {
      consts: { verdict: Buffer.from([1, 0, 0, 0]) },
    });
    const sink = sinkObj.program('xdp_pass');
    const sinkStats = sinkObj.map('pass_stats');
    sinkObj.close();
    closers.push(sink);
    await attachXdp({ ifname: 'pkg0', netns: `/var/run/netns/${nsG}`, program: sink, mode: 'native' });

    // TCP ACKs (non-SYN: the stateless balancer also reads the previous table, as established packets do).
    const tmpl = v4Frame({
      src: [192, 0, 2, 1],
      dst: [10, 0, 0, 10],
      sport: 1024,
      dport: 80,
      size: 60,
      tcp: true,
    });
    // SYNs of the same flows (a stateless VIP keeps no state, so each is a new flow to it: the live twin of the
    // new-flow test-run rows, where the table line is cold between calls)
    const synTmpl = Buffer.from(tmpl);
    synTmpl[47] = 0x02;
    const be = Buffer.from([10, 1, 0, 1]);
    const minObj = await BpfObject.load(bpfObjectPath('bench_encap'), {
      consts: { backend_v4: be, source_v4: Buffer.from([10, 255, 0, 1]) },
    });
    const minimal = minObj.program('bench_encap');
    minObj.close();
    closers.push(minimal);
    const cfg = {
      ownMac: '02:00:00:00:01:01',
      nextHopMac: '02:00:00:00:01:fe',
      encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
      encapSourceV6: null,
      mtu: 1600,
    };
    const table = (base: number, m = 65537) => Uint32Array.from({ length: m }, (_, s) => base + 1 + (s % 8));
    // Conntrack mode, sized so that 1M flows from one CPU fit its per-CPU LRU share (warm, not evicting).
    const ctDp = await KernelDatapath.load({
      maxEntries: {
        conntrack: conntrackEntriesFor({ inserts: FLOWS_1M + FLOWS_1K, possibleCpus: possibleCpus() }),
      },
    });
    closers.push(ctDp);
    // Stateless mode: GUE backends, a previous table identical to the current one (steady state: no slot is
    // marked moved, so it is never read and no hint is sent).
    const slDp = await KernelDatapath.load();
    closers.push(slDp);
    // Stateless without a previous table: the steady state once the control plane dropped it (retention over).
    const sl0Dp = await KernelDatapath.load();
    closers.push(sl0Dp);
    // Stateless with a small table (M = 4093, 16 KB instead of 256 KB): what the table's cache footprint costs
    // at 1M flows (each packet reads a random slot), beside the same program with M = 65537.
    const slSmallDp = await KernelDatapath.load();
    closers.push(slSmallDp);
    // Stateless on the older table layout (the test fixture balancer_word_inner: one 4-byte slot per element, stored
    // at an 8-byte stride, 512 KB per table): what packing 16 slots per line gained at 1M flows.
    const slWordsDp = await KernelDatapath.load({ objectPath: join(bpfObjectDir, 'fixtures', 'balancer_word_inner.bpf.o') }); // prettier-ignore
    closers.push(slWordsDp);
    for (const [dp, gue, prev, m] of [
      [ctDp, false, false, 65537],
      [slDp, true, true, 65537],
      [sl0Dp, true, false, 65537],
      [slSmallDp, true, false, 4093],
      [slWordsDp, true, false, 65537],
    ] as const) {
      await dp.configure(cfg);
      for (let id = 1; id <= 8; id++)
        await dp.upsertBackend({
          id,
          address: `10.1.0.${id}`,
          state: 'up',
          ...(gue ? { encap: 'gue' as const } : {}),
        });
      await dp.upsertVip({
        key: { address: '10.0.0.10', port: 80, protocol: 'tcp' },
        id: 1,
        flags: { sourceHash: false, noConntrack: false, ...(gue ? { stateless: true } : {}) },
        tableSize: m,
      });
      await dp.installTable(1, table(0, m));
      if (prev) await dp.installPreviousTable(1, table(0, m));
      dp.flushVipIndex();
    }

    interface Variant {
      name: string;
      prog: BpfProgram;
      flows: number;
      processed: () => bigint;
      dp?: KernelDatapath;
      mode?: 'conntrack' | 'stateless';
      /** Frames of the round (default: the TCP ACK template). */
      tmpl?: Buffer;
    }
    const rx = (dp: KernelDatapath) => () => sumCounter(dp.maps.stats, 0);
    const variants: Variant[] = [
      { name: 'minimal encap + XDP_TX', prog: minimal, flows: FLOWS_1K, processed: () => sumCounter(sinkStats, 0) },
      { name: 'full, conntrack', prog: ctDp.program, flows: FLOWS_1K, processed: rx(ctDp), dp: ctDp, mode: 'conntrack' },
      { name: 'full, stateless + prev', prog: slDp.program, flows: FLOWS_1K, processed: rx(slDp), dp: slDp, mode: 'stateless' },
      { name: 'full, stateless, no prev', prog: sl0Dp.program, flows: FLOWS_1K, processed: rx(sl0Dp), dp: sl0Dp, mode: 'stateless' },
      { name: 'full, conntrack', prog: ctDp.program, flows: FLOWS_1M, processed: rx(ctDp), dp: ctDp, mode: 'conntrack' },
      { name: 'full, stateless + prev', prog: slDp.program, flows: FLOWS_1M, processed: rx(slDp), dp: slDp, mode: 'stateless' },
      { name: 'full, stateless, no prev', prog: sl0Dp.program, flows: FLOWS_1M, processed: rx(sl0Dp), dp: sl0Dp, mode: 'stateless' },
      { name: 'full, stateless + prev, SYNs', prog: slDp.program, flows: FLOWS_1M, processed: rx(slDp), dp: slDp, mode: 'stateless', tmpl: synTmpl },
      { name: 'full, stateless, M=4093', prog: slSmallDp.program, flows: FLOWS_1M, processed: rx(slSmallDp), dp: slSmallDp, mode: 'stateless' },
      { name: 'full, stateless, 4-byte slots', prog: slWordsDp.program, flows: FLOWS_1M, processed: rx(slWordsDp), dp: slWordsDp, mode: 'stateless' },
    ]; // prettier-ignore
    const generate = (
      flows: number,
      frames: number,
      template = tmpl,
    ): { elapsedNs: number; frames: number } =>
      JSON.parse(
        sh('ip', [
          'netns',
          'exec',
          nsG,
          process.execPath,
          __filename,
          '--child-gen',
          JSON.stringify({
            ifname: 'pkg0',
            frames,
            template: template.toString('hex'),
            sportOff: 34,
            flows,
            saddrOff: flows > 32768 ? 28 : 0,
          }),
        ]),
      ) as { elapsedNs: number; frames: number };
    // Warm the connection table with every flow of both sets (their first packets are misses and inserts).
    await attachXdp({
      ifname: 'pkl0',
      netns: `/var/run/netns/${nsL}`,
      program: ctDp.program,
      mode: 'native',
    });
    generate(FLOWS_1M, FLOWS_1M + FLOWS_1M / 4);
    generate(FLOWS_1K, 4 * FLOWS_1K);
    await sleep(100);
    const key = (v: Variant) => `${v.name}|${v.flows}`;
    const results = new Map<string, LiveRow[]>();
    const problems: string[] = [];
    for (let run = 0; run < a.liveRounds; run++) {
      // Each round starts one variant later: over the rounds every variant runs at every position, so what runs
      // just before (a conntrack row's 1M flows, a re-attach) biases no row.
      for (const v of variants.map((_, i) => variants[(i + run) % variants.length]!)) {
        await attachXdp({ ifname: 'pkl0', netns: `/var/run/netns/${nsL}`, program: v.prog, mode: 'native' });
        const c0 = v.dp ? (await v.dp.counters()).global : null;
        const p0 = v.processed();
        const r0 = sumCounter(sinkStats, 0);
        const child = generate(v.flows, a.frames, v.tmpl);
        await sleep(100);
        const secs = child.elapsedNs / 1e9;
        const processed = v.processed() - p0;
        if (v.dp && c0) {
          // The row measured its path: conntrack hits (warm), or no connection-table access at all.
          const c1 = (await v.dp.counters()).global;
          const what = `live ${v.name}, ${v.flows} flows (round ${run + 1})`;
          const p = ctProblem(what, v.mode === 'conntrack' ? 'hit' : 'none', ctSample(c0, c1));
          if (p) problems.push(p);
          if (
            v.mode === 'stateless' &&
            c1.stateless_forward! - c0.stateless_forward! !== c1.xdp_tx! - c0.xdp_tx!
          )
            problems.push(`${what}: transmitted packets that were not stateless forwards`);
          if (v.tmpl === synTmpl && c1.hint_sent !== c0.hint_sent)
            problems.push(`${what}: a SYN carried a hint`);
          if (c1.xdp_tx! - c0.xdp_tx! < (processed * 99n) / 100n)
            problems.push(`${what}: fewer than 99% transmitted`);
        }
        const row = {
          genMpps: child.frames / secs / 1e6,
          processedMpps: Number(processed) / secs / 1e6,
          returnedMpps: Number(sumCounter(sinkStats, 0) - r0) / secs / 1e6,
        };
        results.set(key(v), [
          ...(results.get(key(v)) ?? []),
          { program: v.name, flows: v.flows, ...row, ratio: null, ratios: [] },
        ]);
      }
    }
    if (problems.length)
      throw new Error(`live rows did not measure what they name:\n  ${problems.join('\n  ')}`);
    const minRounds = results.get(key(variants[0]!))!;
    for (const v of variants) {
      const rs = results.get(key(v))!;
      const ratios = v === variants[0] ? [] : rs.map((r, i) => r.returnedMpps / minRounds[i]!.returnedMpps);
      out.push({
        program: v.name,
        flows: v.flows,
        genMpps: median(rs.map((r) => r.genMpps)),
        processedMpps: median(rs.map((r) => r.processedMpps)),
        returnedMpps: median(rs.map((r) => r.returnedMpps)),
        ratio: ratios.length ? median(ratios) : null,
        ratios,
      });
    }
  } finally {
    for (const c of closers) c.close();
    sh('ip', ['netns', 'del', nsG], true);
    sh('ip', ['netns', 'del', nsL], true);
  }
  const ct1k = out[1]!;
  return { rows: out, ratios: ct1k.ratios, ratio: ct1k.ratio! };
}

// ---- SYN flood against established flows ------------------------------------------------------------

interface FloodRow {
  mode: 'conntrack' | 'stateless';
  established: number;
  flood: number;
  /** Established flows whose next packet went elsewhere than before the flood (their pinning was lost). */
  moved: number;
  /** Established flows whose entry was evicted (conntrack misses on their next packets). */
  evicted: number;
  /** Mean ns per SYN of the flood (kernel-measured, repeat=1 calls). */
  synNs: number;
}

/**
 * 10^6 new flows (SYNs) from one CPU against E established flows, per mode, with the default connection-table
 * size (DEFAULTS.limits): conntrack mode evicts established entries once its per-CPU LRU share is full;
 * stateless mode keeps no entries, so its established flows go where they went before. In conntrack mode the
 * established flows are pinned to a backend Maglev would no longer pick (the table changed after they
 * started), so a lost entry is visible as a moved flow.
 */
async function synFloodBench(a: Args): Promise<FloodRow[]> {
  const E = 10_000;
  const out: FloodRow[] = [];
  for (const mode of ['conntrack', 'stateless'] as const) {
    const dp = await KernelDatapath.load();
    try {
      const gue = mode === 'stateless';
      await dp.configure({
        ownMac: '02:00:00:00:01:01',
        nextHopMac: '02:00:00:00:01:fe',
        encapSourceV4: { prefix: '10.255.0.0', prefixLength: 16 },
        encapSourceV6: null,
        mtu: 1600,
      });
      for (let id = 1; id <= 9; id++)
        await dp.upsertBackend({
          id,
          address: `10.1.0.${id}`,
          state: 'up',
          ...(gue ? { encap: 'gue' as const } : {}),
        });
      await dp.upsertVip({
        key: { address: '10.0.0.10', port: 80, protocol: 'tcp' },
        id: 1,
        flags: { sourceHash: false, noConntrack: false, ...(gue ? { stateless: true } : {}) },
        tableSize: 65537,
      });
      const t8 = Uint32Array.from({ length: 65537 }, (_, s) => 1 + (s % 8));
      const t9 = Uint32Array.from({ length: 65537 }, (_, s) => 1 + (s % 9));
      await dp.installTable(1, t8);
      dp.flushVipIndex();
      const est = Array.from({ length: E }, (_, i) =>
        v4Frame({ src: [192, 0, 2 + (i >> 12), i & 0xff], dst: [10, 0, 0, 10], sport: 10000 + (i & 0xfff), dport: 80, tcp: true, syn: true }),
      ); // prettier-ignore
      const ack = (f: Buffer) => {
        const b = Buffer.from(f);
        b[47] = 0x10;
        return b;
      };
      const dst = (r: { data?: Buffer }) => r.data!.readUInt32BE(30);
      for (const f of est) dp.program.testRun({ data: f }); // SYNs: conntrack mode records the choice
      if (!gue) {
        // A backend joins: the table changes; established flows stay on their entries' backends.
        await dp.installTable(1, t9);
      } else {
        // Stateless: the previous table carries the old owners (hints) for the flows whose slot moved.
        await dp.installPreviousTable(1, t8);
        await dp.installTable(1, t9);
      }
      const before = est.map((f) => {
        const r = dp.program.testRun({ data: ack(f) });
        if (r.verdictName !== 'TX') throw new Error(`established flow: verdict ${r.verdictName}`);
        return dst(r);
      });
      const c0 = (await dp.counters()).global;
      let synNs = 0;
      for (let i = 0; i < a.flood; i++) {
        const f = v4Frame({ src: [100, 64 + ((i >>> 16) & 0x3f), (i >>> 8) & 0xff, i & 0xff], dst: [10, 0, 0, 10], sport: 1024 + (i % 60000), dport: 80, tcp: true, syn: true }); // prettier-ignore
        const r = dp.program.testRun({ data: f, repeat: 1 });
        if (r.verdictName !== 'TX') throw new Error(`flood SYN ${i}: verdict ${r.verdictName}`);
        synNs += r.durationNs;
      }
      const c1 = (await dp.counters()).global;
      // The flood took the path its mode names: inserts in conntrack mode, none (and stateless forwards) else.
      const inserts = Number(c1.ct_insert! - c0.ct_insert!);
      if (
        gue
          ? inserts !== 0 || Number(c1.stateless_forward! - c0.stateless_forward!) !== a.flood
          : inserts !== a.flood
      )
        throw new Error(`${mode} flood: ${inserts} conntrack inserts for ${a.flood} SYNs`);
      let moved = 0;
      est.forEach((f, i) => {
        if (dst(dp.program.testRun({ data: ack(f) })) !== before[i]) moved++;
      });
      const c2 = (await dp.counters()).global;
      const evicted = gue ? 0 : Number(c2.ct_miss! - c1.ct_miss!);
      if (gue && c2.ct_miss !== c1.ct_miss) throw new Error('stateless: the connection table was read');
      out.push({ mode, established: E, flood: a.flood, moved, evicted, synNs: synNs / a.flood });
    } finally {
      dp.close();
    }
  }
  return out;
}

/** The CPUs this process may run on (its main thread's affinity; threads and children inherit it). */
function allowedCpus(): number[] {
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('/proc/self/status has no Cpus_allowed_list');
  return parseCpuList(m[1]!);
}

/** Pins every thread of this process to `cpu` (children started later inherit it); throws if it did not hold. */
function pinToCpu(cpu: number): void {
  sh('taskset', ['--all-tasks', '--cpu-list', '--pid', String(cpu), String(process.pid)]);
  const now = allowedCpus();
  if (now.length !== 1 || now[0] !== cpu)
    throw new Error(`could not pin the bench to CPU ${cpu}: allowed CPUs are ${now.join(',')}`);
}

/** Katran's ns per packet from issue 15 (BPF_PROG_TEST_RUN, same VIPs and table size; not re-measured here). */
const KATRAN_NS = { established: 214, newFlow: 807 } as const;

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (a.childGen) return childGen(a.childGen);
  const started = Date.now();
  pinToCpu(a.cpu);
  const { rows, info } = await testRunBench(a);
  const { rows: live, ratios, ratio } = await liveBench(a);
  const flood = await synFloodBench(a);
  if (a.json) {
    process.stdout.write(
      JSON.stringify(
        {
          cpu: a.cpu,
          ...info,
          testRun: rows,
          live,
          fullOverMinimal: ratio,
          ratios,
          synFlood: flood,
          seconds: (Date.now() - started) / 1000,
        },
        null,
        2,
      ) + '\n',
    );
    return;
  }
  const pad = (s: string, n: number) => s.padEnd(n);
  console.log(
    `pinned to CPU ${a.cpu}; VIP lookup: ${info.vipLookup} (${info.vipIndexKeys} keys, checked before and after ` +
      `timing); conntrack max_entries ${info.conntrackEntries} (${possibleCpus()} per-CPU LRU shares)`,
  );
  console.log('BPF_PROG_TEST_RUN, 64/78-byte frames, median of runs (ns per packet; net = minus the floor)');
  console.log(`${pad('path', 34)}${pad('method', 24)}${pad('ns/pkt', 10)}${pad('net ns', 10)}ct hits`);
  for (const r of rows)
    console.log(
      `${pad(r.path, 34)}${pad(r.method, 24)}${pad(r.nsPerPacket.toFixed(1), 10)}${pad(r.netNs.toFixed(1), 10)}` +
        (r.ctHitPct === undefined ? '' : `${r.ctHitPct.toFixed(0)}%`),
    );
  const net = (path: string) => rows.find((r) => r.path === path && r.method === 'repeat=1 calls')?.netNs;
  const ratioTo = (path: string, ref: number) => {
    const n = net(path);
    return n === undefined ? 'n/a' : `${(n / ref).toFixed(2)}x`;
  };
  const katranEst = net('Katran v4 established (LRU hit)');
  const katranSyn = net('Katran v4 SYN (LRU insert)');
  const measured = katranEst !== undefined && katranSyn !== undefined;
  const ref = measured ? { established: katranEst, newFlow: katranSyn } : KATRAN_NS;
  console.log(
    (measured
      ? `Katran measured in these runs (--katran-object): established ${ref.established.toFixed(1)} ns, new flow (SYN) ` +
        `${ref.newFlow.toFixed(1)} ns net. Connection-table established ` +
        `${ratioTo('v4 established (conntrack hit)', ref.established)}, new flow ${ratioTo('v4 conntrack SYN (insert)', ref.newFlow)}. `
      : `Katran's figures from issue 15 (measured once on another host, not re-measured here; --katran-object PATH ` +
        `times a Katran build beside ours): established ${ref.established} ns, new flow ${ref.newFlow} ns. `) +
      `Stateless established ${ratioTo('v4 stateless established (GUE)', ref.established)} (target <= 0.5x), new-flow SYN ` +
      `${ratioTo('v4 stateless SYN (GUE)', ref.newFlow)} (target <= 0.25x; its cached-slot twin ` +
      `${ratioTo('v4 stateless SYN, 64 flows', ref.newFlow)})`,
  );
  console.log('\nLive frames through a veth (60-byte TCP ACKs, native XDP, Mpps, median; ratio = returned / minimal, median of per-round ratios)'); // prettier-ignore
  console.log(
    `${pad('program', 30)}${pad('flows', 10)}${pad('generated', 12)}${pad('processed', 12)}${pad('returned', 10)}ratio`,
  );
  for (const r of live)
    console.log(
      `${pad(r.program, 30)}${pad(String(r.flows), 10)}${pad(r.genMpps.toFixed(2), 12)}${pad(r.processedMpps.toFixed(2), 12)}` +
        `${pad(r.returnedMpps.toFixed(2), 10)}${r.ratio === null ? '' : `${r.ratio.toFixed(2)}  [${r.ratios.map((x) => x.toFixed(2)).join(' ')}]`}`,
    );
  console.log(
    `\nconntrack balancer, 1k flows / minimal: ${ratio.toFixed(2)} [${ratios.map((x) => x.toFixed(2)).join(' ')}]`,
  );
  console.log('\nSYN flood: new flows (SYNs, one CPU) against established flows, default conntrack size');
  console.log(
    `${pad('mode', 12)}${pad('established', 13)}${pad('flood SYNs', 12)}${pad('ns/SYN', 10)}${pad('evicted', 10)}moved`,
  );
  for (const f of flood)
    console.log(
      `${pad(f.mode, 12)}${pad(String(f.established), 13)}${pad(String(f.flood), 12)}${pad(f.synNs.toFixed(1), 10)}${pad(String(f.evicted), 10)}${f.moved}`,
    );
  console.log(`\n(${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench:datapath: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
