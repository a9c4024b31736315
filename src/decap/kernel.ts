// The kernel side of the decap agent: loads bpf/decap.bpf.c (reusing the pinned maps, so counters survive a
// restart), adopts or atomically swaps what is attached, pins under <bpffs>/peak-xdp/<netns>/<if>/decap/,
// reads the counters by the names of enum peak_decap_counter in the object's BTF, and writes decap_config and
// decap_sources as src/decap/config.ts lays them out from that BTF.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  attachXdp,
  BpfMap,
  BpfObject,
  BpfProgram,
  btfLayout,
  detachXdp,
  queryXdp,
  type XdpMode,
} from '../datapath/bpf';
import { decodeAddr, encodeAddrKey, LAYOUT } from '../datapath/layout';
import { securePinPath } from '../daemon/pins';
import type { Logger } from '../log';
import type { DecapKernel, DecapProgramHandle } from './agent';
import {
  decapConfigLayout,
  encodeDecapConfig,
  encodeSourceKey,
  encodeSourceValue,
  type DecapConfigLayout,
  type DecapSettings,
} from './config';
import { DECAP_PROGRAM, decapCounterNames, startAction, type Attachment, type StartAction } from './core';

/** The object's own maps (decap_*; not libbpf's .rodata/.bss): pinned and reused, whatever the build adds. */
export function decapMapNames(objectPath: string): string[] {
  return BpfObject.inspect(objectPath)
    .maps.map((m) => m.name)
    .filter((n) => n.startsWith('decap_') && !n.includes('.'));
}

/** Counter names by index from the decap object's BTF (enum peak_decap_counter). */
export function decapCounters(objectPath: string): string[] {
  const e = btfLayout(objectPath).enums.find((x) => x.name === 'peak_decap_counter');
  if (!e) throw new Error(`enum peak_decap_counter not found in the BTF of ${objectPath}`);
  return decapCounterNames(e.values, objectPath);
}

/** The decap_config / decap_sources layout from the decap object's BTF. */
export function decapLayoutOf(objectPath: string): DecapConfigLayout {
  return decapConfigLayout(btfLayout(objectPath), objectPath);
}

/**
 * Writes decap_config and decap_sources: new and changed prefixes first, then the config (its sources bit set
 * exactly when there are prefixes), then the prefixes no longer wanted, so no moment refuses a source that both
 * the old and the new set accept. Shared by `decap run` and `decap attach`.
 */
export function writeDecapSettings(
  maps: { decap_config: BpfMap; decap_sources: BpfMap },
  layout: DecapConfigLayout,
  s: DecapSettings,
): void {
  const want = new Map(
    s.sources.map((x) => [encodeSourceKey(layout, x).toString('hex'), encodeSourceValue(layout, x)]),
  );
  const have = [...maps.decap_sources.keys()].map((k) => k.toString('hex'));
  for (const [k, v] of want) maps.decap_sources.update(Buffer.from(k, 'hex'), v);
  maps.decap_config.update(Buffer.alloc(4), encodeDecapConfig(layout, s));
  for (const k of have) if (!want.has(k)) maps.decap_sources.delete(Buffer.from(k, 'hex'));
}

/** decap_sc_targets: second-chance forwards by previous owner. */
export function readSecondChanceTargets(m: BpfMap): { owner: string; packets: bigint }[] {
  const f = LAYOUT.peak_addr_key.fields;
  const { keys, values } = m.lookupBatch();
  return keys.map((k, i) => ({
    owner: decodeAddr(k.subarray(f.addr, f.addr + 16), k[f.family]!),
    packets: values[i]!.readBigUInt64LE(0),
  }));
}

/** Entries of a hash map, counted in batch reads of 8,192 (decap_moved at 65,536 flows: 8 syscalls). */
export function countEntries(m: BpfMap): number {
  let n = 0;
  let token: Buffer | null = null;
  for (;;) {
    const r = m.lookupBatchChunk(token, 8192);
    n += r.count;
    if (r.done) return n;
    token = r.next;
  }
}

/** What is attached to `ifname`, told apart by the pinned program (its id) and the program's name. */
function classify(ifname: string, pinned: BpfProgram | null): Attachment & { program?: BpfProgram } {
  const st = queryXdp({ ifname });
  if (st.progId === 0) return { kind: 'none' };
  if (pinned !== null && pinned.id === st.progId)
    return { kind: 'decap', progId: st.progId, mode: st.mode, tag: pinned.info().tag, pinned: true };
  let p: BpfProgram;
  try {
    p = BpfProgram.fromId(st.progId);
  } catch {
    // Getting a program by id needs CAP_SYS_ADMIN: a program we cannot name is not ours to replace.
    return { kind: 'other', progId: st.progId, name: null };
  }
  const info = p.info();
  if (info.name !== DECAP_PROGRAM) {
    p.close();
    return { kind: 'other', progId: st.progId, name: info.name };
  }
  return { kind: 'decap', progId: st.progId, mode: st.mode, tag: info.tag, pinned: false, program: p };
}

/** Opens the pinned maps there are (an older build may have pinned fewer). */
function pinnedMaps(dir: string, names: readonly string[]): Record<string, BpfMap> {
  const out: Record<string, BpfMap> = {};
  for (const m of names)
    if (existsSync(join(dir, m))) {
      try {
        out[m] = BpfMap.fromPin(join(dir, m));
      } catch {
        // not a map pin (someone else's file): a fresh map instead
      }
    }
  return out;
}

const attachMode = (m: string): XdpMode => (m === 'native' || m === 'generic' ? m : 'auto');

export function createDecapKernel(o: {
  objectPath: string;
  /** null: no bpffs, nothing pinned (a restart then swaps rather than adopts). */
  pinDir: string | null;
  /** The bpffs root pinDir is under (checked with securePinPath before pinning). */
  bpffs: string | null;
  mode: XdpMode;
  log: Logger;
}): DecapKernel {
  return {
    async open({ ifname }) {
      const counterNames = decapCounters(o.objectPath);
      const layout = decapLayoutOf(o.objectPath);
      const mapNames = decapMapNames(o.objectPath);
      const dir = o.pinDir;
      const pinnedProg = dir !== null && existsSync(join(dir, DECAP_PROGRAM)) ? BpfProgram.fromPin(join(dir, DECAP_PROGRAM)) : null; // prettier-ignore
      const found = pinnedProg && dir !== null ? pinnedMaps(dir, mapNames) : {};
      const reuse = Object.keys(found).length > 0 ? found : null;
      let obj: BpfObject;
      // The pinned program can be kept only with every one of its maps reopened from the pins.
      let mapsReused = reuse !== null && Object.keys(found).length === mapNames.length;
      try {
        obj = await BpfObject.load(o.objectPath, { reuseMaps: reuse ?? {} });
      } catch (e) {
        if (reuse === null) throw e;
        // Pinned maps of another shape (an upgrade that added counters): fresh maps, counters start at 0.
        o.log.warn({ err: e, pins: dir }, 'pinned decap maps do not fit this program: loading fresh maps');
        obj = await BpfObject.load(o.objectPath);
        mapsReused = false;
      }
      const fresh = obj.program(DECAP_PROGRAM);
      const maps: Record<string, BpfMap> = Object.fromEntries(mapNames.map((m) => [m, obj.map(m)]));
      obj.close();
      for (const m of Object.values(reuse ?? {})) m.close();
      let attached: Attachment & { program?: BpfProgram };
      try {
        attached = classify(ifname, mapsReused ? pinnedProg : null);
      } catch (e) {
        fresh.close();
        throw e;
      }
      const action: StartAction = startAction({ attached, freshTag: fresh.info().tag, ifname });
      let prog = fresh;
      let mode = 'none';
      try {
        switch (action.kind) {
          case 'refuse':
            throw new Error(action.reason);
          case 'adopt':
            // Same code, same (pinned) maps: keep the attached program; the fresh load is dropped.
            prog = pinnedProg!;
            fresh.close();
            mode = (attached as { mode: string }).mode;
            break;
          case 'attach':
            mode = (await attachXdp({ ifname, program: fresh, mode: o.mode })).mode;
            break;
          case 'replace': {
            const old = attached.program ?? pinnedProg!;
            mode = (await attachXdp({ ifname, program: fresh, mode: attachMode(action.mode), expected: old }))
              .mode;
            break;
          }
        }
      } catch (e) {
        fresh.close();
        for (const m of Object.values(maps)) m.close();
        throw e;
      } finally {
        attached.program?.close();
        if (prog !== pinnedProg) pinnedProg?.close();
      }
      if (dir !== null && action.kind !== 'adopt') {
        // The pins now name what runs (the old program, if any, is gone with its last reference).
        rmSync(dir, { recursive: true, force: true });
        securePinPath({ bpffs: o.bpffs!, dir, create: true });
        prog.pin(join(dir, DECAP_PROGRAM));
        for (const [name, m] of Object.entries(maps)) m.pin(join(dir, name));
      }
      return {
        handle: decapHandle({ ifname, prog, maps, dir, counterNames, layout, mode: o.mode }),
        action,
        mode,
      };
    },
  };
}

function decapHandle(o: {
  ifname: string;
  prog: BpfProgram;
  maps: Record<string, BpfMap>;
  dir: string | null;
  counterNames: string[];
  layout: DecapConfigLayout;
  mode: XdpMode;
}): DecapProgramHandle {
  const addrs = o.maps.decap_addrs!;
  const stats = o.maps.decap_stats!;
  const progId = o.prog.id;
  const f = LAYOUT.peak_addr_key.fields;
  return {
    progId,
    counterNames: o.counterNames,
    addressCapacity: addrs.maxEntries,
    pins: o.dir,
    attachedProgId: () => queryXdp({ ifname: o.ifname }).progId,
    async attach() {
      const st = await attachXdp({ ifname: o.ifname, program: o.prog, mode: o.mode });
      return { progId: st.progId, mode: st.mode };
    },
    async detach() {
      if (queryXdp({ ifname: o.ifname }).progId !== progId) return false;
      await detachXdp({ ifname: o.ifname });
      return true;
    },
    addresses() {
      return addrs.lookupBatch().keys.map((k) => decodeAddr(k.subarray(f.addr, f.addr + 16), k[f.family]!));
    },
    setAddresses({ add, remove }) {
      for (const a of add) addrs.update(encodeAddrKey('address', a), Buffer.alloc(4));
      for (const a of remove) addrs.delete(encodeAddrKey('address', a));
    },
    writeSettings(s) {
      writeDecapSettings(
        { decap_config: o.maps.decap_config!, decap_sources: o.maps.decap_sources! },
        o.layout,
        s,
      );
    },
    secondChanceTargets: () => readSecondChanceTargets(o.maps.decap_sc_targets!),
    movedFlows: () => (o.maps.decap_moved === undefined ? 0 : countEntries(o.maps.decap_moved)),
    counters() {
      // The map may be older and shorter than the enum (adopted across an upgrade): missing ones read 0.
      const n = Math.min(stats.maxEntries, o.counterNames.length);
      const out: bigint[] = [];
      for (let i = 0; i < o.counterNames.length; i++) {
        if (i >= n) {
          out.push(0n);
          continue;
        }
        const key = Buffer.alloc(4);
        key.writeUInt32LE(i);
        let sum = 0n;
        for (const v of stats.lookupPerCpu(key) ?? []) sum += v.readBigUInt64LE(0);
        out.push(sum);
      }
      return out;
    },
    unpin() {
      if (o.dir !== null) rmSync(o.dir, { recursive: true, force: true });
    },
    close() {
      o.prog.close();
      for (const m of Object.values(o.maps)) m.close();
    },
  };
}
