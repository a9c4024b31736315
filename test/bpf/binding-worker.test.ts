// The addon in a worker thread (the BGP speaker's worker loads it for TCP MD5): it loads, works, and its end
// closes only the worker's own fds and objects, never the main thread's maps and loaded programs.
import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { BpfMap, BpfObject, MapType } from '../../src/datapath/bpf';
import { addonPath, bpfObjectDir } from '../../src/paths';
import { describePrivileged } from '../helpers/privileged';

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** What /proc says an fd of this process is (null: not open). */
const fdTarget = (fd: number): string | null => {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
};

/** Runs `code` (CommonJS, `addon` bound) in a worker until it ends; returns what it posted. */
function inWorker(code: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let got: unknown;
    const w = new Worker(
      `const addon = require(${JSON.stringify(addonPath)}); const { parentPort } = require('node:worker_threads');\n${code}`,
      { eval: true },
    );
    w.on('message', (m) => (got = m));
    w.on('error', reject);
    w.on('exit', () => resolve(got));
  });
}

describePrivileged('native addon in a worker thread', () => {
  it("a worker's end leaves the main thread's map and object fds open, and closes its own", async () => {
    const map = BpfMap.create({ type: MapType.ARRAY, keySize: 4, valueSize: 4, maxEntries: 1, name: 'wk_main' });
    const obj = await BpfObject.load(join(bpfObjectDir, 'fixtures', 'probe.bpf.o'));
    try {
      map.update(u32(0), u32(7));
      // The worker makes a map (tracked in its env) and a TCP MD5 socket (what the BGP worker does), then ends.
      const r = (await inWorker(`
        const mapFd = addon.mapCreate({ type: ${MapType.ARRAY}, keySize: 4, valueSize: 4, maxEntries: 1, name: 'wk_own' });
        const sock = addon.socketCreate(4);
        addon.tcpMd5Set(sock, '127.0.0.1', 'peak-key');
        addon.closeFd(sock);
        parentPort.postMessage({ mapFd });
      `)) as { mapFd: number };
      expect(r.mapFd).toBeGreaterThan(2);
      // Before the fix the worker's cleanup hook closed every tracked fd of the process: EBADF here.
      expect(map.lookup(u32(0))).toEqual(u32(7));
      map.update(u32(0), u32(8));
      expect(map.lookup(u32(0))).toEqual(u32(8));
      expect(obj.programs().length).toBeGreaterThan(0);
      expect(fdTarget(obj.program(obj.programs()[0]!.name).fd)).toMatch(/bpf-prog/);
      // The worker's own map was closed with it (its fd number is free or reused by something else).
      expect(fdTarget(r.mapFd) ?? '').not.toMatch(/bpf-map/);
    } finally {
      obj.close();
      map.close();
    }
  });
});
