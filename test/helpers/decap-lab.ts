// Shared pieces of the second-chance end-to-end tests (IPv4 and IPv6): the decap program on a backend, its counters,
// and helper node processes in namespaces that speak JSON lines.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { attachXdp, BpfMap, BpfObject, btfLayout } from '../../src/datapath/bpf';
import { encodeAddrKey } from '../../src/datapath/layout';
import { sourcesSetting } from '../../src/decap/config';
import { decapLayoutOf, writeDecapSettings } from '../../src/decap/kernel';
import { bpfObjectPath } from '../../src/paths';

/** The decap's counter names by index (peak_decap_counter, from its BTF), lower case without the prefix. */
export function decapCounterNames(): string[] {
  const e = btfLayout(bpfObjectPath('decap')).enums.find((x) => x.name === 'peak_decap_counter')!;
  const names: string[] = [];
  for (const [n, v] of Object.entries(e.values))
    if (n !== 'PEAK_DECAP_MAX') names[v] = n.replace(/^PEAK_DECAP_/, '').toLowerCase();
  return [...names];
}

/** The decap's maps a test reads and writes, kept open after the object is closed. */
export interface DecapMaps {
  stats: BpfMap;
  config: BpfMap;
  sources: BpfMap;
  /** decap_moved: the moved flows remembered */
  moved: BpfMap;
}

/** Every counter of a decap's stats map, summed over the CPUs. */
export function readDecapCounters(maps: DecapMaps, names: readonly string[]): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  names.forEach((n, i) => {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(i);
    out[n] = maps.stats.lookupPerCpu(k)!.reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
  });
  return out;
}

/** The counters that moved between two readings, by how much. */
export function counterDiff(
  names: readonly string[],
  before: Record<string, bigint>,
  after: Record<string, bigint>,
): Record<string, number> {
  return Object.fromEntries(
    names.filter((n) => after[n] !== before[n]).map((n) => [n, Number(after[n]! - before[n]!)]),
  );
}

/**
 * The real decap on a backend's interface (native XDP) with the second chance on: `address` is the backend's own
 * (decap_addrs), hints are honoured only from `from` (--from) and second-chance hops from `gueFrom` (--gue-from).
 */
export async function attachDecap(o: {
  netns: string;
  ifname: string;
  address: string;
  from: string[];
  gueFrom: string[];
}): Promise<DecapMaps> {
  const obj = await BpfObject.load(bpfObjectPath('decap'));
  try {
    obj.map('decap_addrs').update(encodeAddrKey('address', o.address), Buffer.alloc(4));
    const maps = {
      stats: obj.map('decap_stats'),
      config: obj.map('decap_config'),
      sources: obj.map('decap_sources'),
      moved: obj.map('decap_moved'),
    };
    writeDecapSettings(
      { decap_config: maps.config, decap_sources: maps.sources },
      decapLayoutOf(bpfObjectPath('decap')),
      {
        guePort: 6080,
        secondChance: true,
        conntrackLookup: true,
        rememberMoved: true,
        sources: sourcesSetting({ from: o.from, gueFrom: o.gueFrom, env: {} }),
      },
    );
    await attachXdp({ ifname: o.ifname, netns: o.netns, program: obj.program('decap'), mode: 'native' });
    return maps;
  } finally {
    obj.close();
  }
}

/** Turns the decap's second chance off (PEAK_DECAP_CFG_F_NO_SECOND_CHANCE) and returns the config it had. */
export function disableSecondChance(maps: DecapMaps): Buffer {
  return setConfigFlag(maps, 'PEAK_DECAP_CFG_F_NO_SECOND_CHANCE');
}

/** Sets one enum peak_decap_config_flag bit in decap_config (e.g. what --no-remember-moved writes); returns the
 * value before, to restore. */
export function setConfigFlag(maps: DecapMaps, flag: string): Buffer {
  const bit = decapLayoutOf(bpfObjectPath('decap')).flags[flag];
  if (bit === undefined) throw new Error(`no ${flag} in enum peak_decap_config_flag`);
  const saved = maps.config.lookup(Buffer.alloc(4))!;
  const cfg = Buffer.from(saved);
  cfg.writeUInt16LE(saved.readUInt16LE(2) | bit, 2);
  maps.config.update(Buffer.alloc(4), cfg);
  return saved;
}

/** Node processes in namespaces, each running a script written to `dir`, stopped together. */
export class ScriptProcesses {
  private readonly procs: ChildProcessWithoutNullStreams[] = [];

  constructor(private readonly dir: string) {}

  spawn(netns: string, script: string): ChildProcessWithoutNullStreams {
    const file = join(this.dir, `${netns}-${this.procs.length}.js`);
    writeFileSync(file, script);
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, file], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.procs.push(p);
    return p;
  }

  /** Ends every process (stdin closed, SIGTERM) and waits for each to exit. */
  async stop(): Promise<void> {
    for (const p of this.procs) {
      p.stdin.end();
      p.kill('SIGTERM');
    }
    await Promise.all(
      this.procs.map((p) =>
        p.exitCode !== null || p.signalCode !== null ? null : new Promise((r) => p.once('exit', r)),
      ),
    );
  }
}

/** Calls to a process that answers JSON lines: each call writes {...m, id} and resolves with the `r` of {id, r}. */
export function jsonLineCaller<R>(
  p: ChildProcessWithoutNullStreams,
): (m: Record<string, unknown>) => Promise<R> {
  const pending = new Map<number, (v: R) => void>();
  let nextId = 1;
  createInterface({ input: p.stdout }).on('line', (l) => {
    const m = JSON.parse(l) as { id: number; r: R };
    pending.get(m.id)?.(m.r);
    pending.delete(m.id);
  });
  return (m) =>
    new Promise<R>((res) => {
      const id = nextId++;
      pending.set(id, res);
      p.stdin.write(JSON.stringify({ ...m, id }) + '\n');
    });
}
