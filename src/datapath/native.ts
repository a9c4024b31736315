// The raw addon surface, typed. Only src/datapath/bpf.ts calls it; everything else uses the wrapper.
import { addonPath } from '../paths';

export interface NativeMapInfo {
  id: number;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export interface NativeProgInfo {
  id: number;
  type: number;
  typeName: string;
  name: string;
  tag: string;
  runTimeNs: number;
  runCount: number;
  /** The BTF the program was loaded with (0: none). */
  btfId: number;
}

export interface NativeXdpQuery {
  ifindex: number;
  progId: number;
  drvProgId: number;
  skbProgId: number;
  hwProgId: number;
  mode: 'native' | 'generic' | 'offload' | 'multi' | 'none';
}

export interface NativeTestRunOptions {
  data: Buffer;
  repeat?: number;
  flags?: number;
  batchSize?: number;
  dataSizeOut?: number;
  ctx?: Buffer;
  ingressIfindex?: number;
  rxQueue?: number;
}

export interface NativeTestRunResult {
  retval: number;
  duration: number;
  data?: Buffer;
}

export interface NativeBatchResult {
  count: number;
  keys: Buffer;
  values: Buffer;
  next: Buffer;
  done: boolean;
}

export interface NativeBtfMember {
  name: string;
  offset: number;
  bitOffset: number;
  size: number;
}
export interface NativeBtfStruct {
  name: string;
  kind: 'struct' | 'union';
  size: number;
  members: NativeBtfMember[];
}
export interface NativeBtfEnum {
  name: string;
  size: number;
  values: Record<string, number>;
}

/** One map definition of a BTF's .maps section: its `__uint` fields (type, max_entries, map_flags, ...) and,
 * for a map-in-map, its inner template's. */
export interface NativeBtfMapDef {
  name: string;
  fields: Record<string, number>;
  inner?: Record<string, number>;
}

export interface NativeBpfObject {
  setConst(name: string, value: Buffer): void;
  listConsts(): { name: string; offset: number; size: number }[];
  load(): Promise<void>;
  programs(): { name: string; section: string; type: number; typeName: string }[];
  maps(): Omit<NativeMapInfo, 'id'>[];
  programFd(name: string): number;
  mapFd(name: string): number;
  setMapMaxEntries(name: string, n: number): void;
  reuseMapFd(name: string, fd: number): void;
  close(): void;
}

/** What a new map is made of (the wrapper's BpfMap.create takes the same, with an inner BpfMap). */
export interface NativeMapCreate {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  name?: string;
  flags?: number;
}

/** An array map of u32 values to create and fill: element first + i of each write = values[i]. */
export interface NativeFilledU32Map {
  name?: string;
  maxEntries: number;
  flags: number;
  /** Bytes per value: 4 (the default), or a multiple of 8 (several words per entry, end to end). */
  valueSize?: number;
  writes: { first: number; values: Uint32Array; distinct?: boolean }[];
}

export interface XdpTarget {
  ifname?: string;
  ifindex?: number;
  netns?: string;
}

export interface Native {
  BpfObject: new (path: string) => NativeBpfObject;
  closeFd(fd: number): void;
  numPossibleCpus(): number;
  /** glibc malloc_trim(0): free memory of every malloc arena back to the kernel; false where there is none. */
  mallocTrim(): boolean;
  /** V8's MemoryPressureNotification(kModerate) for this thread's isolate: incremental marking with the reduce-memory
   * flag starts now (short pauses), instead of when the heap next reaches V8's limit. */
  memoryPressure(): void;
  /** Detaches a plain ArrayBuffer: its memory is freed now (V8 drops the backing store), not at a later collection;
   * its views read as empty after. Returns the bytes it held (0 if already detached); TypeError for anything else. */
  freeArrayBuffer(buffer: ArrayBuffer): number;
  /** glibc mallopt(M_MMAP_THRESHOLD, bytes): blocks of `bytes` and more mapped on their own (unmapped when freed),
   * and glibc's dynamic raising of that threshold ended; false where the C library is not glibc. RangeError
   * outside 0..32 MiB. */
  mallocMmapThreshold(bytes: number): boolean;
  mapCreate(o: NativeMapCreate & { innerMapFd?: number }): number;
  mapInfo(fd: number): NativeMapInfo;
  progInfo(fd: number): NativeProgInfo;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  fdById(kind: 'map' | 'prog', id: number): number;
  mapLookup(fd: number, key: Buffer, valueSize: number, flags?: number): Buffer | null;
  mapLookupAndDelete(fd: number, key: Buffer, valueSize: number): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  /** mapDelete on a thread of the pool (the same result and error); `fd` stays open, `key` unchanged, until
   * the promise settles. */
  mapDeleteAsync(fd: number, key: Buffer): Promise<boolean>;
  mapNextKey(fd: number, key: Buffer | null, keySize: number): Buffer | null;
  mapLookupBatch(
    fd: number,
    inBatch: Buffer | null,
    count: number,
    keySize: number,
    valueSize: number,
    del: boolean,
  ): NativeBatchResult;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags: number): number;
  /** mapUpdateBatch on a thread of the pool (the same result and error); `fd` and any fds in `values` must stay
   * open, the buffers unchanged, until the promise settles. */
  mapUpdateBatchAsync(
    fd: number,
    keys: Buffer,
    values: Buffer,
    count: number,
    flags: number,
  ): Promise<number>;
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;
  /** Word first + i = values[i], written through mmap (a BPF_F_MMAPABLE array of u32 words: BpfMap.u32Words). */
  mapWriteU32s(fd: number, first: number, values: Uint32Array): void;
  /** out[i] = word first + i, read through mmap (a BPF_F_MMAPABLE array of u32 words). */
  mapReadU32s(fd: number, first: number, out: Uint32Array): void;
  /** Compares word first + i with values[i] through mmap; when at most `maxChanged` differ, writes those (one
   * aligned 32-bit store each: a reader sees each word old or new). Returns how many differed (nothing written
   * when more than `maxChanged`). */
  mapPatchU32s(fd: number, first: number, values: Uint32Array, maxChanged: number): number;
  /** Whether rcuGraceAsync can wait here (membarrier's MEMBARRIER_CMD_GLOBAL; not with nohz_full CPUs). */
  rcuGraceSupported(): boolean;
  /** Resolves after an RCU grace period (membarrier(MEMBARRIER_CMD_GLOBAL) on a thread of the pool): every BPF
   * program run that began before the call has ended. */
  rcuGraceAsync(): Promise<void>;
  /** New BPF_F_MMAPABLE arrays of u32 words, created and filled on a thread of the pool (all or nothing);
   * `values` must stay unchanged until the promise settles. `distinct` per write: its distinct non-zero values,
   * ascending, where the write asked for them (else null). */
  mapsCreateU32s(maps: NativeFilledU32Map[]): Promise<{ fd: number; distinct: (Uint32Array | null)[] }[]>;
  /** The .maps definitions of an object file's BTF or of a BTF loaded in the kernel. */
  btfMapDefs(source: string | { btfId: number }): NativeBtfMapDef[];
  xdpAttach(o: XdpTarget & { progFd: number; mode?: string; oldProgFd?: number }): Promise<NativeXdpQuery>;
  xdpDetach(o: XdpTarget & { mode?: string }): Promise<NativeXdpQuery>;
  xdpQuery(o: XdpTarget): NativeXdpQuery;
  ifNameToIndex(name: string, netns?: string): number;
  progTestRun(fd: number, o: NativeTestRunOptions): NativeTestRunResult;
  progTestRunAsync(fd: number, o: NativeTestRunOptions): Promise<NativeTestRunResult>;
  BPF_F_TEST_XDP_LIVE_FRAMES: number;
  socketCreate(family: 4 | 6): number;
  tcpMd5Set(fd: number, peerAddress: string, key: string): void;
  btfDump(path: string): { structs: NativeBtfStruct[]; enums: NativeBtfEnum[] };
  /** flock(2) without waiting: false when another open file holds the lock. */
  flock(fd: number, operation: 'exclusive' | 'unlock'): boolean;
  /** Runs `file` (looked up in PATH) with posix_spawn, no fork of this process; `input` to its stdin; killed
   * (SIGKILL) past `timeoutMs` or when its output passes `maxBytes`. Never rejects: `error` says why it did not
   * run or was killed; `code` is its exit status, `signal` the signal number that ended it (else null). */
  spawnCapture(
    file: string,
    args: string[],
    input: string,
    timeoutMs: number,
    maxBytes: number,
  ): Promise<NativeSpawnResult>;
  /** TCP connect probes on a thread of the addon's own (see NativeTcpProber); `onVerdicts` gets them in batches. */
  TcpProber: new (
    onVerdicts: (ids: Float64Array, codes: Int32Array, ms: Float64Array) => void,
  ) => NativeTcpProber;
}

/**
 * TCP connect probes run on a thread of their own: connect, wait (epoll), close. A verdict's code is 0 (connected),
 * an errno (ECONNREFUSED, EMFILE, ...), or -1 (the timeout passed); `ms` is the time from start() to the verdict.
 */
export interface NativeTcpProber {
  /** Queues a probe of `address` (of the family `v6` says; a TypeError if it is not one); `id`: a safe integer. */
  start(id: number, address: string, v6: boolean, port: number, timeoutMs: number): void;
  /** Closes the probe's socket if it is still open (a verdict made before may still be delivered). */
  cancel(id: number): void;
  /** Keep the event loop alive (while probes are in flight) / not. */
  ref(): void;
  unref(): void;
  /** Stops the thread and closes every probe's socket; no verdict comes after it. */
  close(): void;
}

export interface NativeSpawnResult {
  code: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
  error: string | null;
}

let cached: Native | undefined;

/** Loads the addon once; a clear error says how to build it when it is missing. */
export function native(): Native {
  if (!cached) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = require(addonPath) as Native;
    } catch (e) {
      throw new Error(
        `cannot load the peak-xdp addon at ${addonPath} (run \`npm run build\`): ${(e as Error).message}`,
      );
    }
  }
  return cached;
}
