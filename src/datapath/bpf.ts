// Typed wrapper over the libbpf addon: objects, programs, maps, XDP attach, test runs. Validates every
// argument (TypeError) before the native call; fds are closed on close(), on GC, and at process exit.
import { rmSync } from 'node:fs';
import { isUint32Array } from 'node:util/types';
import {
  native,
  NativeBtfMapDef,
  NativeFilledU32Map,
  NativeMapCreate,
  NativeMapInfo,
  NativeProgInfo,
  NativeXdpQuery,
  NativeTestRunResult,
  XdpTarget,
} from './native';

export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  CPUMAP: 16,
  PERCPU_CGROUP_STORAGE: 21,
} as const;

/** Map flags (BPF_F_*) used by callers of createMap. */
export const MapFlags = {
  NO_PREALLOC: 1,
  NO_COMMON_LRU: 2,
  RDONLY_PROG: 1 << 7,
  MMAPABLE: 1 << 10,
  INNER_MAP: 1 << 12,
} as const;

/** Update flags: any = create or replace, noexist = create only, exist = replace only. */
export type UpdateFlag = 'any' | 'noexist' | 'exist';
const updateFlagValue: Record<UpdateFlag, number> = { any: 0, noexist: 1, exist: 2 };

export const XDP = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
export type XdpVerdictName = keyof typeof XDP;
export function verdictName(v: number): XdpVerdictName | `UNKNOWN(${number})` {
  const n = (Object.keys(XDP) as XdpVerdictName[]).find((k) => XDP[k] === v);
  return n ?? `UNKNOWN(${v})`;
}

export type XdpMode = 'native' | 'generic' | 'auto';

const PERCPU_TYPES = new Set<number>([
  MapType.PERCPU_HASH,
  MapType.PERCPU_ARRAY,
  MapType.LRU_PERCPU_HASH,
  MapType.PERCPU_CGROUP_STORAGE,
]);

let cpus: number | undefined;
/** Number of possible CPUs: the stride of per-CPU map values. */
export function possibleCpus(): number {
  cpus ??= native().numPossibleCpus();
  return cpus;
}

function checkBuffer(what: string, b: unknown, size?: number): asserts b is Buffer {
  if (!Buffer.isBuffer(b)) throw new TypeError(`${what} must be a Buffer, got ${typeof b}`);
  if (size !== undefined && b.length !== size)
    throw new TypeError(`${what} must be ${size} bytes, got ${b.length}`);
}

function checkPath(what: string, p: unknown): asserts p is string {
  if (typeof p !== 'string' || p.length === 0) throw new TypeError(`${what} must be a non-empty string`);
}

const registry = new FinalizationRegistry<number>((fd) => {
  try {
    native().closeFd(fd);
  } catch {
    // Already closed by the process-exit cleanup hook.
  }
});

/** An owned file descriptor of a BPF map or program. */
export class FdHandle {
  #fd: number;
  protected constructor(fd: number) {
    this.#fd = fd;
    registry.register(this, fd, this);
  }
  get fd(): number {
    if (this.#fd < 0) throw new Error('use of a closed BPF handle');
    return this.#fd;
  }
  get closed(): boolean {
    return this.#fd < 0;
  }
  close(): void {
    if (this.#fd < 0) return;
    registry.unregister(this);
    const fd = this.#fd;
    this.#fd = -1;
    native().closeFd(fd);
  }
  /** Pins this object at `path` on a bpffs. */
  pin(path: string): void {
    checkPath('path', path);
    native().objPin(this.fd, path);
  }
}

/**
 * The u32 words a value of `valueSize` bytes holds for BpfMap's word view (readU32s, writeU32s): 1 for 4-byte
 * values, valueSize / 4 for a multiple of 8 (the kernel stores array values at an 8-byte stride, so these lie end to
 * end), 0 otherwise (not words).
 */
export function wordsPerValue(valueSize: number): number {
  if (valueSize === 4) return 1;
  return Number.isInteger(valueSize) && valueSize > 0 && valueSize % 8 === 0 ? valueSize / 4 : 0;
}

/** Entries of `valueSize`-byte values an array needs to hold `words` u32 words (wordsPerValue). */
export function entriesForWords(words: number, valueSize: number): number {
  const per = wordsPerValue(valueSize);
  if (per === 0)
    throw new TypeError(`valueSize: ${valueSize} bytes are not u32 words (4, or a multiple of 8)`);
  return Math.ceil(words / per);
}

export interface BatchEntries {
  keys: Buffer[];
  values: Buffer[];
}

export class BpfMap extends FdHandle {
  readonly info: NativeMapInfo;
  /** Bytes of one value as the syscall sees it (per-CPU maps: stride × CPUs). */
  readonly valueBytes: number;
  readonly perCpu: boolean;

  private constructor(fd: number) {
    super(fd);
    try {
      this.info = native().mapInfo(fd);
    } catch (e) {
      this.close();
      throw e;
    }
    this.perCpu = PERCPU_TYPES.has(this.info.type);
    this.valueBytes = this.perCpu
      ? Math.ceil(this.info.valueSize / 8) * 8 * possibleCpus()
      : this.info.valueSize;
  }

  /** Takes ownership of an fd the addon returned. */
  static fromFd(fd: number): BpfMap {
    return new BpfMap(fd);
  }
  static fromPin(path: string): BpfMap {
    checkPath('path', path);
    return new BpfMap(native().objGet(path));
  }
  static fromId(id: number): BpfMap {
    if (!Number.isInteger(id) || id <= 0) throw new TypeError(`map id must be a positive integer, got ${id}`);
    return new BpfMap(native().fdById('map', id));
  }
  static create(o: NativeMapCreate & { inner?: BpfMap }): BpfMap {
    for (const k of ['type', 'keySize', 'valueSize', 'maxEntries'] as const) {
      if (!Number.isInteger(o[k]) || o[k] < 0)
        throw new TypeError(`${k} must be a non-negative integer, got ${o[k]}`);
    }
    if (o.name !== undefined && (typeof o.name !== 'string' || o.name.length > 15))
      throw new TypeError(`name must be a string of at most 15 characters, got ${JSON.stringify(o.name)}`);
    return new BpfMap(
      native().mapCreate({
        type: o.type,
        keySize: o.keySize,
        valueSize: o.valueSize,
        maxEntries: o.maxEntries,
        name: o.name,
        flags: o.flags ?? 0,
        innerMapFd: o.inner?.fd,
      }),
    );
  }

  /**
   * New BPF_F_MMAPABLE arrays of u32 words, each created and filled through mmap on a thread of the pool (one
   * call for all: a 65537-slot Maglev table is a 264 KiB kernel allocation and 65 page faults, kept off the
   * event loop). All or nothing. The `values` arrays must not change until the promise settles. `distinct` per
   * write: the distinct non-zero values it wrote, ascending, where it asked for them (else null).
   */
  static async createFilledU32s(
    specs: readonly NativeFilledU32Map[],
  ): Promise<{ map: BpfMap; distinct: (Uint32Array | null)[] }[]> {
    specs.forEach((s, i) => {
      const at = `maps[${i}]`;
      for (const k of ['maxEntries', 'flags'] as const)
        if (!Number.isInteger(s[k]) || s[k] < 0 || s[k] > 0xffffffff)
          throw new TypeError(`${at}.${k} must be a u32, got ${s[k]}`);
      const per = wordsPerValue(s.valueSize ?? 4);
      if (per === 0)
        throw new TypeError(
          `${at}.valueSize: ${s.valueSize} bytes are not u32 words (4, or a multiple of 8)`,
        );
      if ((s.flags & MapFlags.MMAPABLE) === 0)
        throw new TypeError(`${at}.flags: ${s.flags} lacks BPF_F_MMAPABLE (${MapFlags.MMAPABLE})`);
      if (s.name !== undefined && (typeof s.name !== 'string' || s.name.length > 15))
        throw new TypeError(
          `${at}.name must be a string of at most 15 characters, got ${JSON.stringify(s.name)}`,
        );
      s.writes.forEach((w, j) => {
        if (!isUint32Array(w.values)) throw new TypeError(`${at}.writes[${j}].values must be a Uint32Array`);
        if (!Number.isInteger(w.first) || w.first < 0 || w.first + w.values.length > s.maxEntries * per)
          throw new RangeError(
            `${at}.writes[${j}]: ${w.values.length} words from ${w.first} run past the ${s.maxEntries * per} words of maxEntries ${s.maxEntries}`, // prettier-ignore
          );
      });
    });
    const made = await native().mapsCreateU32s(specs.map((s) => ({ ...s, writes: [...s.writes] })));
    const out: { map: BpfMap; distinct: (Uint32Array | null)[] }[] = [];
    try {
      for (const { fd, distinct } of made) out.push({ map: new BpfMap(fd), distinct });
    } catch (e) {
      out.forEach((m) => m.map.close());
      for (const { fd } of made.slice(out.length + 1)) native().closeFd(fd); // the constructor closed its own
      throw e;
    }
    return out;
  }

  get keySize(): number {
    return this.info.keySize;
  }
  get valueSize(): number {
    return this.info.valueSize;
  }
  get maxEntries(): number {
    return this.info.maxEntries;
  }

  private checkKey(key: unknown): asserts key is Buffer {
    checkBuffer(`key of map ${this.info.name}`, key, this.info.keySize);
  }

  /** The raw value (per-CPU maps: every CPU's slot back to back), or null when absent. */
  lookup(key: Buffer): Buffer | null {
    this.checkKey(key);
    return native().mapLookup(this.fd, key, this.valueBytes);
  }

  /** Per-CPU maps: one Buffer per possible CPU. */
  lookupPerCpu(key: Buffer): Buffer[] | null {
    if (!this.perCpu) throw new TypeError(`map ${this.info.name} is not a per-CPU map`);
    const raw = this.lookup(key);
    return raw ? splitPerCpu(raw, this.info.valueSize) : null;
  }

  lookupAndDelete(key: Buffer): Buffer | null {
    this.checkKey(key);
    return native().mapLookupAndDelete(this.fd, key, this.valueBytes);
  }

  update(key: Buffer, value: Buffer, flag: UpdateFlag = 'any'): void {
    this.checkKey(key);
    checkBuffer(`value of map ${this.info.name}`, value, this.valueBytes);
    if (!(flag in updateFlagValue)) throw new TypeError(`flag must be any, noexist or exist, got ${flag}`);
    native().mapUpdate(this.fd, key, value, updateFlagValue[flag]);
  }

  /** Map-in-map: points slot `index` of this outer map at `inner` (one atomic update). */
  setInner(index: number, inner: BpfMap): void {
    if (this.info.type !== MapType.ARRAY_OF_MAPS && this.info.type !== MapType.HASH_OF_MAPS)
      throw new TypeError(`map ${this.info.name} is not a map-of-maps`);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const value = Buffer.alloc(4);
    value.writeUInt32LE(inner.fd);
    native().mapUpdate(this.fd, key, value, 0);
  }

  /** Map-in-map: the id of the inner map in slot `index`, or null. */
  innerId(index: number): number | null {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = native().mapLookup(this.fd, key, 4);
    return v ? v.readUInt32LE(0) : null;
  }

  /** Deletes `key`; false when it was absent. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    return native().mapDelete(this.fd, key);
  }

  /**
   * delete() on a thread of the pool: emptying a slot of a map-in-map waits for an RCU grace period (10-200 ms)
   * before the syscall returns. The same checks (a rejection), result and error.
   */
  async deleteAsync(key: Buffer): Promise<boolean> {
    this.checkKey(key);
    // awaited here so this map (closed by the GC once unreachable) stays reachable while the call runs
    const found = await native().mapDeleteAsync(this.fd, key);
    return found;
  }

  /** Iterates keys with get_next_key (a concurrent delete may restart the walk, as in the kernel). */
  *keys(): Generator<Buffer> {
    let k: Buffer | null = null;
    for (;;) {
      k = native().mapNextKey(this.fd, k, this.info.keySize);
      if (!k) return;
      yield k;
    }
  }

  /** Every entry via the batch API; `chunk` entries per syscall (default 4096); `andDelete`: empties the map
   * as it reads (BPF_MAP_LOOKUP_AND_DELETE_BATCH). */
  lookupBatch(o: { chunk?: number; andDelete?: boolean } = {}): BatchEntries {
    const chunk = o.chunk ?? 4096;
    const andDelete = o.andDelete ?? false;
    if (!Number.isInteger(chunk) || chunk <= 0)
      throw new TypeError(`chunk must be a positive integer, got ${chunk}`);
    if (typeof andDelete !== 'boolean')
      throw new TypeError(`andDelete must be a boolean, got ${JSON.stringify(andDelete)}`);
    const out: BatchEntries = { keys: [], values: [] };
    let token: Buffer | null = null;
    for (;;) {
      const r = native().mapLookupBatch(this.fd, token, chunk, this.info.keySize, this.valueBytes, andDelete);
      for (let i = 0; i < r.count; i++) {
        out.keys.push(r.keys.subarray(i * this.info.keySize, (i + 1) * this.info.keySize));
        out.values.push(r.values.subarray(i * this.valueBytes, (i + 1) * this.valueBytes));
      }
      if (r.done) return out;
      token = r.next;
    }
  }

  /** Every entry via the batch API, packed: keys back to back and values back to back (no per-entry Buffer). */
  lookupBatchPacked(chunk = 65536): { keys: Buffer; values: Buffer; count: number } {
    if (!Number.isInteger(chunk) || chunk <= 0)
      throw new TypeError(`chunk must be a positive integer, got ${chunk}`);
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    let count = 0;
    let token: Buffer | null = null;
    for (;;) {
      const r = this.lookupBatchChunk(token, chunk);
      keys.push(r.keys);
      values.push(r.values);
      count += r.count;
      if (r.done) return { keys: Buffer.concat(keys), values: Buffer.concat(values), count };
      token = r.next;
    }
  }

  /** One syscall of lookupBatchPacked: up to `chunk` entries after `token` (null: from the first), packed, and
   * the token to go on with (`done`: none left). For a caller that yields between chunks of a big map. */
  lookupBatchChunk(
    token: Buffer | null,
    chunk: number,
  ): { keys: Buffer; values: Buffer; count: number; next: Buffer; done: boolean } {
    if (!Number.isInteger(chunk) || chunk <= 0)
      throw new TypeError(`chunk must be a positive integer, got ${chunk}`);
    return native().mapLookupBatch(this.fd, token, chunk, this.info.keySize, this.valueBytes, false);
  }

  /** Writes many entries with one syscall per `chunk`; returns how many were written. */
  updateBatch(keys: Buffer[], values: Buffer[], flag: UpdateFlag = 'any', chunk = 65536): number {
    if (keys.length !== values.length)
      throw new TypeError(`keys and values must have the same length (${keys.length} != ${values.length})`);
    keys.forEach((k) => this.checkKey(k));
    values.forEach((v, i) => checkBuffer(`values[${i}] of map ${this.info.name}`, v, this.valueBytes));
    let done = 0;
    for (let i = 0; i < keys.length; i += chunk) {
      const ks = keys.slice(i, i + chunk);
      done += native().mapUpdateBatch(
        this.fd,
        Buffer.concat(ks),
        Buffer.concat(values.slice(i, i + chunk)),
        ks.length,
        updateFlagValue[flag],
      );
    }
    return done;
  }

  /**
   * Writes `count` entries from packed buffers (keys back to back, values back to back): the fast path for
   * big arrays (no per-entry Buffer). Returns how many were written.
   */
  updateBatchPacked(keys: Buffer, values: Buffer, count: number, flag: UpdateFlag = 'any'): number {
    if (!Number.isInteger(count) || count < 0)
      throw new TypeError(`count must be a non-negative integer, got ${count}`);
    checkBuffer(`keys of map ${this.info.name}`, keys, count * this.info.keySize);
    checkBuffer(`values of map ${this.info.name}`, values, count * this.valueBytes);
    if (!(flag in updateFlagValue)) throw new TypeError(`flag must be any, noexist or exist, got ${flag}`);
    return count === 0 ? 0 : native().mapUpdateBatch(this.fd, keys, values, count, updateFlagValue[flag]);
  }

  /**
   * updateBatchPacked off the event loop, on a thread of the pool: an update of a map-in-map waits for an RCU
   * grace period (~10 ms, up to 200 ms on a loaded host) before the syscall returns. The same checks (a rejection
   * before anything is queued), result and error (the batch stops at the entry that failed). This map, the maps
   * whose fds `values` holds, and both buffers must stay open and unchanged until the promise settles.
   */
  async updateBatchPackedAsync(
    keys: Buffer,
    values: Buffer,
    count: number,
    flag: UpdateFlag = 'any',
  ): Promise<number> {
    if (!Number.isInteger(count) || count < 0)
      throw new TypeError(`count must be a non-negative integer, got ${count}`);
    checkBuffer(`keys of map ${this.info.name}`, keys, count * this.info.keySize);
    checkBuffer(`values of map ${this.info.name}`, values, count * this.valueBytes);
    if (!(flag in updateFlagValue)) throw new TypeError(`flag must be any, noexist or exist, got ${flag}`);
    if (count === 0) return 0;
    // awaited here so this map (closed by the GC once unreachable) stays reachable while the call runs
    const done = await native().mapUpdateBatchAsync(this.fd, keys, values, count, updateFlagValue[flag]);
    return done;
  }

  /** An array map whose values userspace can reach through mmap (BPF_F_MMAPABLE). */
  get mmapable(): boolean {
    return this.info.type === MapType.ARRAY && (this.info.flags & MapFlags.MMAPABLE) !== 0;
  }

  /**
   * The u32 words an array map's values hold, end to end (word w is word w % (valueSize / 4) of entry
   * w / (valueSize / 4)); 0 for a map whose values are not words (wordsPerValue). Words are what readU32s and
   * writeU32s address.
   */
  get u32Words(): number {
    const per = this.info.type === MapType.ARRAY ? wordsPerValue(this.info.valueSize) : 0;
    return per * this.info.maxEntries;
  }

  /** Checks that words [first, first + count) of this array exist (u32Words). Values of more than one word are
   * reached through mmap only (a map of an older build that cannot be mapped has 4-byte values). */
  private checkU32Range(first: number, count: number, countField: string): void {
    const max = this.u32Words;
    if (max === 0 || (this.info.valueSize !== 4 && !this.mmapable))
      throw new TypeError(
        `map ${this.info.name} is not an array of u32 words (4-byte values, or mmap-able ones of a multiple of 8 bytes)`,
      );
    if (!Number.isInteger(first) || first < 0 || first > max)
      throw new RangeError(`first: ${first} is outside 0..${max} (map ${this.info.name})`);
    if (!Number.isInteger(count) || count < 0 || first + count > max)
      throw new RangeError(
        `${countField}: ${count} words from ${first} run past map ${this.info.name}'s ${max} words`,
      );
  }

  /**
   * Array of u32 words (u32Words): word first + i = values[i]. Through mmap when the map is BPF_F_MMAPABLE (a plain
   * memory copy, ~100x cheaper than the batch syscall for a 65537-slot Maglev table); otherwise one packed
   * batch update, because maps created by older builds (adopted by the CLI, or pinned before the Maglev
   * template became mmap-able) cannot be mapped. Plain stores, not atomic for a program reading the map at the
   * same time: write maps no program reads yet (Maglev tables are filled aside, then swapped in).
   */
  writeU32s(first: number, values: Uint32Array): void {
    // isUint32Array, not instanceof: a table made in a worker thread (or a jest sandbox) has another realm's class
    if (!isUint32Array(values)) throw new TypeError('values must be a Uint32Array');
    this.checkU32Range(first, values.length, 'values.length');
    if (values.length === 0) return;
    if (this.mmapable) {
      native().mapWriteU32s(this.fd, first, values);
      return;
    }
    const keys = new Uint32Array(values.length);
    for (let i = 0; i < keys.length; i++) keys[i] = first + i;
    native().mapUpdateBatch(
      this.fd,
      Buffer.from(keys.buffer, keys.byteOffset, keys.byteLength),
      Buffer.from(values.buffer, values.byteOffset, values.byteLength),
      values.length,
      updateFlagValue.any,
    );
  }

  /**
   * Words first + i become values[i] in place, through mmap (a BPF_F_MMAPABLE array of u32 words), when at most
   * `maxChanged` of them differ: only those are written, each by one aligned 32-bit store, so a program reading
   * the map meanwhile sees every word old or new. Returns how many differed (more than `maxChanged`: nothing was
   * written). For a map programs read while it changes (a Maglev table patched in place).
   */
  patchU32s(first: number, values: Uint32Array, maxChanged: number): number {
    if (!isUint32Array(values)) throw new TypeError('values must be a Uint32Array');
    if (!this.mmapable)
      throw new TypeError(`map ${this.info.name} is not mmap-able: patchU32s needs BPF_F_MMAPABLE`);
    this.checkU32Range(first, values.length, 'values.length');
    if (!Number.isInteger(maxChanged) || maxChanged < 0)
      throw new RangeError(`maxChanged: ${maxChanged} is not a non-negative integer`);
    if (values.length === 0) return 0;
    return native().mapPatchU32s(this.fd, first, values, Math.min(maxChanged, 0xffffffff));
  }

  /**
   * Array of u32 words (u32Words): words first .. first + count - 1. Through mmap when the map is BPF_F_MMAPABLE;
   * otherwise batch lookups (a map of an older build, see writeU32s). Into `into` when it is a Uint32Array of
   * `count` entries (memory reused), else a new array.
   */
  readU32s(first: number, count: number, into?: Uint32Array): Uint32Array {
    this.checkU32Range(first, count, 'count');
    const out =
      into !== undefined && isUint32Array(into) && into.length === count ? into : new Uint32Array(count);
    if (count === 0) return out;
    if (this.mmapable) {
      native().mapReadU32s(this.fd, first, out);
      return out;
    }
    let got = 0;
    // An array's batch token is the last key read: the walk resumes after it.
    let token: Buffer | null = null;
    if (first > 0) {
      token = Buffer.alloc(4);
      token.writeUInt32LE(first - 1);
    }
    while (got < count) {
      const r = native().mapLookupBatch(this.fd, token, count - got, 4, 4, false);
      for (let i = 0; i < r.count; i++) out[got + i] = r.values.readUInt32LE(4 * i);
      got += r.count;
      if (r.done || r.count === 0) break;
      token = r.next;
    }
    if (got < count) throw new Error(`map ${this.info.name}: read ${got} of ${count} entries from ${first}`);
    return out;
  }

  /** Deletes many keys; returns how many were deleted (ENOENT on a missing key stops the batch). */
  deleteBatch(keys: Buffer[], chunk = 65536): number {
    keys.forEach((k) => this.checkKey(k));
    let done = 0;
    for (let i = 0; i < keys.length; i += chunk) {
      const ks = keys.slice(i, i + chunk);
      done += native().mapDeleteBatch(this.fd, Buffer.concat(ks), ks.length);
    }
    return done;
  }
}

/** Splits a raw per-CPU value into one Buffer per CPU. */
export function splitPerCpu(raw: Buffer, valueSize: number): Buffer[] {
  const stride = Math.ceil(valueSize / 8) * 8;
  const out: Buffer[] = [];
  for (let off = 0; off + stride <= raw.length; off += stride) out.push(raw.subarray(off, off + valueSize));
  return out;
}

export interface TestRunOptions {
  data: Buffer;
  repeat?: number;
  /** Transmit frames for real (BPF_F_TEST_XDP_LIVE_FRAMES); needs ingressIfindex for XDP_TX/REDIRECT. */
  liveFrames?: boolean;
  batchSize?: number;
  ingressIfindex?: number;
  /** Room for the output packet (default input + 512 bytes). */
  dataSizeOut?: number;
}

export interface TestRunResult {
  verdict: number;
  verdictName: string;
  /** Average ns per repetition as the kernel measured it. */
  durationNs: number;
  /** The packet as the program left it (absent in live-frames mode). */
  data?: Buffer;
}

function testRunArgs(o: TestRunOptions) {
  checkBuffer('data', o.data);
  if (o.repeat !== undefined && (!Number.isInteger(o.repeat) || o.repeat < 0))
    throw new TypeError(`repeat must be a non-negative integer, got ${o.repeat}`);
  return {
    data: o.data,
    repeat: o.repeat,
    flags: o.liveFrames ? native().BPF_F_TEST_XDP_LIVE_FRAMES : 0,
    batchSize: o.batchSize,
    ingressIfindex: o.ingressIfindex,
    dataSizeOut: o.dataSizeOut,
  };
}

function toResult(r: NativeTestRunResult): TestRunResult {
  return { verdict: r.retval, verdictName: verdictName(r.retval), durationNs: r.duration, data: r.data };
}

export class BpfProgram extends FdHandle {
  private cachedInfo?: NativeProgInfo;
  private constructor(fd: number) {
    super(fd);
  }
  static fromFd(fd: number): BpfProgram {
    return new BpfProgram(fd);
  }
  static fromPin(path: string): BpfProgram {
    checkPath('path', path);
    return new BpfProgram(native().objGet(path));
  }
  static fromId(id: number): BpfProgram {
    if (!Number.isInteger(id) || id <= 0)
      throw new TypeError(`program id must be a positive integer, got ${id}`);
    return new BpfProgram(native().fdById('prog', id));
  }
  /** Program info; `fresh` re-reads run counters. */
  info(fresh = false): NativeProgInfo {
    if (fresh || !this.cachedInfo) this.cachedInfo = native().progInfo(this.fd);
    return this.cachedInfo;
  }
  get id(): number {
    return this.info().id;
  }
  /** BPF_PROG_TEST_RUN, synchronously (fast path for fuzzing and packet tests). */
  testRun(o: TestRunOptions): TestRunResult {
    return toResult(native().progTestRun(this.fd, testRunArgs(o)));
  }
  /** BPF_PROG_TEST_RUN on the thread pool (long repeats, live frames). */
  async testRunAsync(o: TestRunOptions): Promise<TestRunResult> {
    return toResult(await native().progTestRunAsync(this.fd, testRunArgs(o)));
  }
}

export interface OpenOptions {
  /** const volatile globals to set before load, by name. */
  consts?: Record<string, Buffer>;
  /** Override max_entries of maps before load, by name. */
  maxEntries?: Record<string, number>;
  /** Use these existing maps (e.g. pinned ones) instead of creating new ones, by name. */
  reuseMaps?: Record<string, BpfMap>;
}

/** A BPF ELF object: opened, optionally tuned, then loaded into the kernel. */
export class BpfObject {
  private readonly obj;
  readonly path: string;
  private constructor(path: string) {
    this.path = path;
    this.obj = new (native().BpfObject)(path);
  }

  /** Opens and loads `path`, applying consts, map sizes and reused maps first. */
  static async load(path: string, o: OpenOptions = {}): Promise<BpfObject> {
    checkPath('path', path);
    const self = new BpfObject(path);
    try {
      for (const [name, value] of Object.entries(o.consts ?? {})) {
        checkBuffer(`consts.${name}`, value);
        self.obj.setConst(name, value);
      }
      for (const [name, n] of Object.entries(o.maxEntries ?? {})) {
        if (!Number.isInteger(n) || n <= 0)
          throw new TypeError(`maxEntries.${name} must be a positive integer, got ${n}`);
        self.obj.setMapMaxEntries(name, n);
      }
      for (const [name, m] of Object.entries(o.reuseMaps ?? {})) self.obj.reuseMapFd(name, m.fd);
      await self.obj.load();
    } catch (e) {
      self.close();
      throw e;
    }
    return self;
  }

  /** Opens without loading: to inspect programs, maps and const globals. */
  static inspect(path: string): {
    programs: ReturnType<BpfObject['programs']>;
    maps: ReturnType<BpfObject['maps']>;
    consts: { name: string; offset: number; size: number }[];
  } {
    checkPath('path', path);
    const self = new BpfObject(path);
    try {
      return { programs: self.programs(), maps: self.maps(), consts: self.obj.listConsts() };
    } finally {
      self.close();
    }
  }

  programs() {
    return this.obj.programs();
  }
  maps() {
    return this.obj.maps();
  }
  program(name: string): BpfProgram {
    checkPath('program name', name);
    return BpfProgram.fromFd(this.obj.programFd(name));
  }
  map(name: string): BpfMap {
    checkPath('map name', name);
    return BpfMap.fromFd(this.obj.mapFd(name));
  }
  /** Releases libbpf's object; programs and maps handed out stay valid (they hold their own fds). */
  close(): void {
    this.obj.close();
  }
}

export interface XdpStatus {
  ifindex: number;
  /** The id of the attached program, 0 when none. */
  progId: number;
  drvProgId: number;
  skbProgId: number;
  mode: NativeXdpQuery['mode'];
}

function checkTarget(t: XdpTarget): XdpTarget {
  if (t.ifname === undefined && t.ifindex === undefined) throw new TypeError('ifname or ifindex is required');
  if (
    t.ifname !== undefined &&
    (typeof t.ifname !== 'string' || t.ifname.length === 0 || t.ifname.length > 15)
  )
    throw new TypeError(`ifname must be an interface name, got ${JSON.stringify(t.ifname)}`);
  if (t.ifindex !== undefined && (!Number.isInteger(t.ifindex) || t.ifindex <= 0))
    throw new TypeError(`ifindex must be a positive integer, got ${t.ifindex}`);
  if (t.netns !== undefined) checkPath('netns', t.netns);
  return { ifname: t.ifname, ifindex: t.ifindex, netns: t.netns };
}

function checkMode(mode: unknown): XdpMode {
  if (mode === undefined) return 'auto';
  if (mode !== 'native' && mode !== 'generic' && mode !== 'auto')
    throw new TypeError(`mode must be native, generic or auto, got ${JSON.stringify(mode)}`);
  return mode;
}

function toStatus(q: NativeXdpQuery): XdpStatus {
  return {
    ifindex: q.ifindex,
    progId: q.progId,
    drvProgId: q.drvProgId,
    skbProgId: q.skbProgId,
    mode: q.mode,
  };
}

/**
 * Attaches `program` to an interface, replacing whatever is attached in that mode; `expected` makes the
 * replace atomic and conditional (XDP_FLAGS_REPLACE). Resolves with what is attached afterwards.
 */
export async function attachXdp(
  o: XdpTarget & { program: BpfProgram; mode?: XdpMode; expected?: BpfProgram },
): Promise<XdpStatus> {
  const t = checkTarget(o);
  return toStatus(
    await native().xdpAttach({
      ...t,
      progFd: o.program.fd,
      mode: checkMode(o.mode),
      oldProgFd: o.expected?.fd,
    }),
  );
}

/** Detaches XDP from an interface (in `mode`, or whatever mode is attached). */
export async function detachXdp(o: XdpTarget & { mode?: XdpMode }): Promise<XdpStatus> {
  const t = checkTarget(o);
  return toStatus(await native().xdpDetach({ ...t, mode: checkMode(o.mode) }));
}

/** What XDP program, if any, is attached to an interface, and in which mode. */
export function queryXdp(o: XdpTarget): XdpStatus {
  return toStatus(native().xdpQuery(checkTarget(o)));
}

export function ifNameToIndex(name: string, netns?: string): number {
  checkTarget({ ifname: name, netns });
  return native().ifNameToIndex(name, netns);
}

/** Removes a pin (a file on bpffs); true if something was removed. */
export function unpin(path: string): boolean {
  checkPath('path', path);
  try {
    rmSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** BTF layout of the structs and enums in an object file (for checking encoders against shared.h). */
export function btfLayout(path: string) {
  checkPath('path', path);
  return native().btfDump(path);
}

/**
 * The map definitions (`__uint` fields, and a map-in-map's inner template) of an object file (`path`) or of the
 * BTF a loaded program carries (`btfId`, BpfProgram.info().btfId): what a pinned balancer was built with.
 */
export function btfMapDefs(source: string | { btfId: number }): NativeBtfMapDef[] {
  if (typeof source === 'string') checkPath('path', source);
  else if (!Number.isInteger(source?.btfId) || source.btfId <= 0)
    throw new TypeError(`btfId must be a positive integer, got ${source?.btfId}`);
  return native().btfMapDefs(source);
}

/** Sockets: TCP MD5 for BGP (RFC 2385). */
export const sockets = {
  create(family: 4 | 6): number {
    if (family !== 4 && family !== 6) throw new TypeError(`family must be 4 or 6, got ${family}`);
    return native().socketCreate(family);
  },
  setMd5(fd: number, peerAddress: string, key: string): void {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
    if (typeof key !== 'string' || Buffer.byteLength(key) > 80)
      throw new TypeError('key must be a string of at most 80 bytes');
    native().tcpMd5Set(fd, peerAddress, key);
  },
};

/** flock(2) on a file descriptor Node opened (Node opens every file O_CLOEXEC: children never inherit it). */
export const fileLocks = {
  /** Takes an exclusive lock without waiting: false when another open file description holds it. */
  tryExclusive(fd: number): boolean {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
    return native().flock(fd, 'exclusive');
  },
  unlock(fd: number): void {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${fd}`);
    native().flock(fd, 'unlock');
  },
};
