// Upgrading over a balancer whose Maglev inner maps have another template (4-byte slots: builds before issue 15's
// packed tables; before issue 17 they were not mmap-able either): its outer maps accept only inner maps of the
// older template, so adopting it would fail every table write. The daemon must see it at start and take the replace
// path. The "older build" is made from the running balancer's pins: maglev_tables and maglev_prev_tables re-pinned
// as outer maps with the previous build's template (BPF_F_INNER_MAP | BPF_F_MMAPABLE, 4-byte values) holding
// copies of the live tables (the old program keeps its own maps and forwards). Both older templates are decided on
// in test/unit/bpf-mmap.test.ts.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, MapFlags, MapType, unpin } from '../../src/datapath/bpf';
import {
  BALANCER_PROGRAM,
  installedInnerTemplate,
  parseTablePinName,
  readPin,
  TABLE_PIN_DIR,
} from '../../src/datapath/kernel';
import { DaemonLab, DaemonProcess, sleep, type WrkResult } from '../helpers/daemon-lab';
import { describePrivileged } from '../helpers/privileged';

const FLAGS = MapFlags.INNER_MAP | MapFlags.MMAPABLE;
/** The previous build's template (4-byte slots), and this build's (16 slots per 64-byte value). */
const OLD = { flags: FLAGS, valueSize: 4 };
const NEW = { flags: FLAGS, valueSize: 64 };

/** Re-pins an outer Maglev map as an older build's: same size, older template, a copy of every inner map. */
function makeOuterOlder(pinDir: string, name: 'maglev_tables' | 'maglev_prev_tables'): number {
  const cur = BpfMap.fromPin(join(pinDir, name));
  const template = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize: OLD.valueSize, maxEntries: 8, flags: OLD.flags }); // prettier-ignore
  const old = BpfMap.create({
    type: MapType.ARRAY_OF_MAPS,
    keySize: 4,
    valueSize: 4,
    maxEntries: cur.maxEntries,
    name: name.slice(0, 15),
    inner: template,
  });
  let copied = 0;
  try {
    for (let i = 0; i < cur.maxEntries; i++) {
      const id = cur.innerId(i);
      if (id === null) continue;
      const live = BpfMap.fromId(id);
      const copy = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize: OLD.valueSize, maxEntries: live.u32Words, flags: OLD.flags }); // prettier-ignore
      try {
        expect([live.mmapable, live.info.valueSize]).toEqual([true, NEW.valueSize]); // this build wrote it
        copy.writeU32s(0, live.readU32s(0, live.u32Words)); // the same words, one per 4-byte value
        old.setInner(i, copy);
        copied++;
      } finally {
        live.close();
        copy.close();
      }
    }
    expect(unpin(join(pinDir, name))).toBe(true);
    old.pin(join(pinDir, name));
  } finally {
    cur.close();
    template.close();
    old.close();
  }
  return copied;
}

const summary = (name: string, r: WrkResult): string =>
  `${name}: ${r.requests} requests, errors ${JSON.stringify(r.errors)}, per backend ${JSON.stringify(r.perBackend)}`;

describePrivileged(
  "daemon: upgrade over Maglev outer maps of an older build's template (4-byte slots; replace path)",
  () => {
    const lab = new DaemonLab({ tag: 'upm', backends: 3 });
    let daemon: DaemonProcess;

    beforeAll(async () => {
      await lab.start();
      lab.writeConfig(lab.config({ backends: [1, 2, 3] }));
      daemon = await lab.startDaemon();
      expect(await lab.signalDaemon(daemon, 'SIGTERM')).toBe(0);
    }, 90000);

    afterAll(async () => {
      await lab.cleanup();
    }, 30000);

    it('the daemon replaces the older-layout balancer under load: zero failed requests, map_layout named', async () => {
      const tables = makeOuterOlder(lab.pinDir, 'maglev_tables');
      makeOuterOlder(lab.pinDir, 'maglev_prev_tables');
      expect(tables).toBeGreaterThan(0);
      const progBefore = lab.lbXdpProgId();
      expect(progBefore).toBeGreaterThan(0);
      const fresh = lab.wrk({ seconds: 8, connections: 4 });
      const kept = lab.wrk({ seconds: 8, connections: 4, keepAlive: true });
      await sleep(1500);
      daemon = await lab.startDaemon();
      const [rf, rk] = await Promise.all([fresh, kept]);
      console.log(summary('wrk (new connections) across the replace', rf));
      console.log(summary('wrk (keep-alive) across the replace', rk));
      const progAfter = lab.lbXdpProgId();
      const line = readFileSync(daemon.log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('balancer replaced: pinned by an older build ('))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      console.log(`program ${progBefore} -> ${progAfter}; replace log: ${JSON.stringify(line)}`);
      const counter = (await lab.admin('/metrics')).body
        .split('\n')
        .filter((l) => l.startsWith('peak_xdp_datapath_replacements_total'));

      expect(rf.requests).toBeGreaterThan(100);
      expect(rk.requests).toBeGreaterThan(100);
      expect(rf.errorTotal).toBe(0);
      expect(rk.errorTotal).toBe(0);
      for (const b of ['be1', 'be2', 'be3']) expect(rf.perBackend[b]).toBeGreaterThan(0);
      expect(progAfter).not.toBe(progBefore);
      expect(line).toHaveLength(1);
      expect(line[0]).toMatchObject({ reason: 'map_layout', oldProgId: progBefore, progId: progAfter });
      expect(String(line[0]!.msg)).toContain(
        `map maglev_tables holds inner maps with flags ${FLAGS}, 4-byte values (this build's flags ${FLAGS}, 64-byte values)`, // prettier-ignore
      );
      expect(counter).toEqual(['peak_xdp_datapath_replacements_total{reason="map_layout"} 1']);
      // The pinned outer maps are this build's now: their tables are mmap-able 64-byte lines.
      const outer = BpfMap.fromPin(join(lab.pinDir, 'maglev_tables'));
      try {
        expect(installedInnerTemplate(outer)).toEqual(NEW);
        // The replace programmed its balancer before pinning it: the tables it installed were pinned with it
        // (the old balancer's table pins went with its pins).
        const names = readdirSync(join(lab.pinDir, TABLE_PIN_DIR));
        console.log(`table pins after the replace: ${names.join(', ')}`);
        const current = names.filter((n) => parseTablePinName(n)?.kind === 'current');
        expect(current.length).toBe(1);
        const pinned = BpfMap.fromPin(join(lab.pinDir, TABLE_PIN_DIR, current[0]!));
        try {
          expect(outer.innerId(parseTablePinName(current[0]!)!.index)).toBe(pinned.info.id);
        } finally {
          pinned.close();
        }
      } finally {
        outer.close();
      }
      expect(readPin(join(lab.pinDir, BALANCER_PROGRAM), 'program')).toMatchObject({ id: progAfter });
      expect((await lab.state()).adopted).toBe(false);
    }, 60000);

    it('the next restart adopts the replaced balancer with zero writes', async () => {
      const prog = lab.lbXdpProgId();
      expect(await lab.signalDaemon(daemon, 'SIGKILL')).toBe('SIGKILL');
      daemon = await lab.startDaemon();
      const last = JSON.parse((await lab.admin('/state')).body).lastReconcile as Record<string, unknown>;
      expect((await lab.state()).adopted).toBe(true);
      expect(lab.lbXdpProgId()).toBe(prog);
      expect(last).toMatchObject({ operations: 0, vipsUnchanged: 1 });
      expect(readFileSync(daemon.log, 'utf8')).not.toMatch(/balancer replaced/);
      const seen = await lab.curlUntilSeen(['be1', 'be2', 'be3']);
      expect([...seen.keys()].sort()).toEqual(['be1', 'be2', 'be3']);
    }, 40000);
  },
);
