// Active checks: TCP connect and HTTP GET (2xx/3xx healthy), each bounded by a timeout; errors of this host
// (out of fds, buffers, ports) are told apart from the backend's.
import { connect, isIPv4, isIPv6 } from 'node:net';
import { getSystemErrorName } from 'node:util';
import { isInt32Array } from 'node:util/types';
import { native, type Native, type NativeTcpProber } from '../datapath/native';
import { isHttpPath } from '../model/types';

export interface CheckResult {
  ok: boolean;
  durationMs: number;
  /** "connected", "HTTP 200", "ECONNREFUSED", "timeout after 500 ms", "EMFILE", ... */
  detail: string;
  /** True when the check ran out its timeout (it held its socket for all of it). */
  timedOut?: boolean;
  /**
   * True when the probe could not be made from this host (a LOCAL_ERROR_CODES error, or the checker threw):
   * no verdict on the backend, whose status stays as it was.
   */
  local?: boolean;
}

/**
 * Errors of this host, not of the backend: out of file descriptors (EMFILE, ENFILE), socket buffers or
 * memory (ENOBUFS, ENOMEM), or local ports (EADDRNOTAVAIL). Marking backends down for these would take every
 * backend out exactly when the balancer host is under pressure.
 */
export const LOCAL_ERROR_CODES: ReadonlySet<string> = new Set([
  'EMFILE',
  'ENFILE',
  'ENOBUFS',
  'ENOMEM',
  'EADDRNOTAVAIL',
]);

/** Whether a socket error is the checker's own (see LOCAL_ERROR_CODES). */
export const isLocalError = (e: unknown): boolean =>
  LOCAL_ERROR_CODES.has((e as NodeJS.ErrnoException)?.code ?? '');

export interface TcpCheckOptions {
  host: string;
  port: number;
  timeoutMs: number;
  /** Aborts the check: its socket is destroyed and it resolves as a local error "aborted" (no verdict). */
  signal?: AbortSignal;
}

export interface HttpCheckOptions extends TcpCheckOptions {
  path: string;
}

function checkArgs(o: TcpCheckOptions): void {
  if (typeof o.host !== 'string' || o.host === '')
    throw new TypeError(`host: ${JSON.stringify(o.host)} is not a host`);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)
    throw new TypeError(`port: ${o.port} is not a port (1-65535)`);
  if (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0)
    throw new TypeError(`timeoutMs: ${o.timeoutMs} is not positive`);
}

function checkHttpArgs(o: HttpCheckOptions): void {
  checkArgs(o);
  if (typeof o.path !== 'string' || !isHttpPath(o.path))
    throw new TypeError(
      `path: ${JSON.stringify(o.path)} is not an absolute path (no spaces or control characters)`,
    );
}

/** Timeout details made so far, by timeout (a handful: one per configured timeout). */
const timeoutDetails = new Map<number, string>();

/**
 * "timeout after N ms", one string per timeout: the monitor keeps each membership's last detail, and a string per
 * result was ~40 B per timing-out membership (20 MB at 512,000).
 */
export function timeoutDetail(timeoutMs: number): string {
  let d = timeoutDetails.get(timeoutMs);
  if (d === undefined) {
    d = `timeout after ${timeoutMs} ms`;
    if (timeoutDetails.size < 256) timeoutDetails.set(timeoutMs, d);
  }
  return d;
}

/** The detail of a check aborted by its signal (the monitor stopped, or the target went away). */
export const ABORTED = 'aborted';

const aborted = (): CheckResult => ({ ok: false, durationMs: 0, detail: ABORTED, local: true });

/** A check's result; `local` and `timedOut` only when true (set, not spread: a probe's hot path). */
function result(
  ok: boolean,
  detail: string,
  started: number,
  local: boolean,
  timedOut: boolean,
): CheckResult {
  const r: CheckResult = { ok, detail, durationMs: performance.now() - started };
  if (local) r.local = true;
  if (timedOut) r.timedOut = true;
  return r;
}

const errDetail = (e: unknown): string =>
  (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);

/**
 * Ends a probe before its verdict (the monitor stopped or the target went away): its socket is closed at once
 * and `done` gets a local "aborted" (no verdict) before cancel returns; a no-op once the probe is done.
 */
export type CancelProbe = () => void;

/**
 * The probe behind checkTcp, by callback: `done` is called exactly once (later, or from cancel). The monitor
 * runs tens of thousands a second when backends time out, so a probe makes no promise and no AbortSignal:
 * their listeners, microtasks and garbage were a large share of a timing-out probe's CPU (profiled).
 */
export function probeTcp(o: TcpCheckOptions, done: (r: CheckResult) => void): CancelProbe {
  checkArgs(o);
  // Each address test is a regular expression: at most two per probe, and none again below.
  const v4 = isIPv4(o.host);
  const v6 = !v4 && isIPv6(o.host);
  if (v4 || v6) {
    const t = probeThread();
    if (t !== null) return t.start(o, v6, done);
    if (RAW_TCP !== null) return rawProbeTcp(RAW_TCP, o, v6, done);
  }
  return netProbeTcp(o, done);
}

/** Where TCP probes to IP addresses run: the addon's prober thread, raw TCP handles on the event loop, or net.Socket. */
export type TcpProbePath = 'thread' | 'loop' | 'net';

/** The path the next TCP probe to an IP address takes (made ready if it is the thread): for logs and benches. */
export function tcpProbePath(): TcpProbePath {
  return probeThread() !== null ? 'thread' : RAW_TCP !== null ? 'loop' : 'net';
}

let probeThreadWanted = true;
/** The prober thread's probes; undefined: not made yet, null: the addon has none (not built, or too old). */
let threadProbes: ThreadProbes | null | undefined;

/**
 * Whether TCP probes to IP addresses run on the addon's prober thread (the default, where the addon loads) or on the
 * event loop (the daemon's --no-tcp-probe-thread, and A/B benches). Probes in flight end where they started.
 */
export function setTcpProbeThread(on: boolean): void {
  probeThreadWanted = on;
}

function probeThread(): ThreadProbes | null {
  if (!probeThreadWanted) return null;
  if (threadProbes === undefined) {
    try {
      threadProbes = new ThreadProbes(native().TcpProber);
    } catch {
      threadProbes = null;
    }
  }
  return threadProbes;
}

/** The native prober's code for "the timeout passed" (else 0: connected, or an errno). */
const TIMED_OUT = -1;

/** Slots of ThreadProbes (probes in flight at once, at most) and generations of a slot: a probe's id is
 * generation * THREAD_SLOTS + slot, below 2^31 (a small integer to V8: no number box per probe). */
const THREAD_SLOTS = 2 ** 20;
const THREAD_GENERATIONS = 2 ** 11;

/** What ThreadProbes.begin() calls with a probe's verdict, and with the owner it was given. */
export type ThreadVerdictSink<T> = (r: CheckResult, owner: T) => void;

/** start()'s sink: the owner is the probe's done. */
const callDone: ThreadVerdictSink<(r: CheckResult) => void> = (r, done) => done(r);

/**
 * TCP probes on the addon's prober thread (native/tcp_prober.cc): the kernel's socket, connect and close (~30 us a
 * probe here) leave the event loop, which only starts probes and takes their verdicts, in batches of at most 256 a
 * turn. One per JavaScript thread, made at its first probe; its thread waits in epoll while nothing is in flight, and
 * it keeps the event loop alive only while something is.
 *
 * Probes in flight live in slots (typed arrays, and two arrays for their sinks and owners), not in an object and a
 * Map entry each: at ~8,500 probes a second every probe's objects outlived a young-generation collection or two, and
 * V8 kept them to its full collections (~270 MB of the old space's garbage over a mass flip at 512 x 1000, with the
 * Map's rehashes). A slot freed by a verdict or a cancel is taken again with its generation advanced, so a verdict
 * the thread had made before a cancel (delivered after it) names an id no longer in flight and is dropped: it would
 * be taken for another probe only if the slot were taken and freed 2,047 times between the cancel and that delivery
 * (the next batch or two).
 */
export class ThreadProbes {
  private readonly prober: NativeTcpProber;
  // By slot:
  /** The id in flight; 0: a free slot. */
  private ids = new Float64Array(64);
  private generations = new Uint16Array(64);
  private timeouts = new Float64Array(64);
  private started = new Float64Array(64);
  private sinks: (ThreadVerdictSink<unknown> | undefined)[] = [];
  private owners: unknown[] = [];
  /** Slots taken at least once: those below are in flight or free. */
  private top = 0;
  /** Free slots below top (a stack). */
  private free = new Int32Array(64);
  private nFree = 0;
  private n = 0;

  /** `P`: the addon's TcpProber (a stand-in in tests). */
  constructor(P: Native['TcpProber']) {
    this.prober = new P((ids, codes, ms) => this.verdicts(ids, codes, ms));
  }

  /** Probes waiting for their verdict. */
  get inFlight(): number {
    return this.n;
  }

  /** A probe whose verdict goes to `done` (once; "aborted" from the returned cancel). */
  start(o: TcpCheckOptions, v6: boolean, done: (r: CheckResult) => void): CancelProbe {
    const id = this.begin(o.host, v6, o.port, o.timeoutMs, callDone, done);
    return () => void this.cancel(id);
  }

  /**
   * Starts a probe of `host` (an address of the family `v6` says: a TypeError if it is not one) without an object
   * of its own: `sink(result, owner)` gets its verdict once, or a local "aborted" from cancel(id) before that
   * returns. Returns the probe's id.
   */
  begin<T>(
    host: string,
    v6: boolean,
    port: number,
    timeoutMs: number,
    sink: ThreadVerdictSink<T>,
    owner: T,
  ): number {
    if (!(Number.isInteger(port) && port >= 1 && port <= 65535))
      throw new TypeError(`port: ${port} is not 1..65535`);
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0))
      throw new TypeError(`timeoutMs: ${timeoutMs} is not a positive number`);
    const slot = this.nFree > 0 ? this.free[this.nFree - 1]! : this.top;
    if (slot >= THREAD_SLOTS)
      throw new RangeError(`TCP prober thread: ${THREAD_SLOTS} probes in flight already`);
    if (slot === this.ids.length) this.grow();
    const generation = (this.generations[slot]! % (THREAD_GENERATIONS - 1)) + 1;
    const id = generation * THREAD_SLOTS + slot;
    const startedAt = performance.now();
    this.prober.start(id, host, v6, port, timeoutMs);
    if (slot === this.top) this.top++;
    else this.nFree--;
    this.generations[slot] = generation;
    this.ids[slot] = id;
    this.timeouts[slot] = timeoutMs;
    this.started[slot] = startedAt;
    this.sinks[slot] = sink as ThreadVerdictSink<unknown>;
    this.owners[slot] = owner;
    if (this.n++ === 0) this.prober.ref();
    return id;
  }

  /** Cancels probe `id` if it is in flight: its socket is closed and its sink gets "aborted" now; false if not. */
  cancel(id: number): boolean {
    const slot = id % THREAD_SLOTS;
    if (!(id > 0) || this.ids[slot] !== id) return false;
    const sink = this.sinks[slot]!;
    const owner = this.owners[slot];
    const started = this.started[slot]!;
    this.release(slot);
    this.prober.cancel(id);
    sink(result(false, ABORTED, started, true, false), owner);
    return true;
  }

  /**
   * Gives every probe in flight whose sink is `sink` the owner `map` makes of its own: an owner that names something by
   * a number its holder renumbered (the health monitor's probes). O(probes started at once at most).
   */
  remapOwners<T>(sink: ThreadVerdictSink<T>, map: (owner: T) => T): void {
    for (let slot = 0; slot < this.top; slot++)
      if (this.ids[slot] !== 0 && this.sinks[slot] === sink) this.owners[slot] = map(this.owners[slot] as T);
  }

  /** Frees a slot (its sink and owner let go of). */
  private release(slot: number): void {
    this.ids[slot] = 0;
    this.sinks[slot] = undefined;
    this.owners[slot] = undefined;
    this.free[this.nFree++] = slot;
    if (--this.n === 0) this.prober.unref();
  }

  /** Doubles the slot arrays (never shrunk: the in-flight cap bounds them, ~40 bytes a slot). */
  private grow(): void {
    const size = 2 * this.ids.length;
    const grown = <A extends Float64Array | Uint16Array | Int32Array>(a: A): A => {
      const b = new (a.constructor as new (n: number) => A)(size);
      b.set(a);
      return b;
    };
    this.ids = grown(this.ids);
    this.generations = grown(this.generations);
    this.timeouts = grown(this.timeouts);
    this.started = grown(this.started);
    this.free = grown(this.free);
  }

  private verdicts(ids: Float64Array, codes: Int32Array, ms: Float64Array): void {
    let failed = false;
    let error: unknown;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const slot = id % THREAD_SLOTS;
      if (!(id > 0) || this.ids[slot] !== id) continue; // cancelled
      const sink = this.sinks[slot]!;
      const owner = this.owners[slot];
      const timeoutMs = this.timeouts[slot]!;
      this.release(slot);
      const code = codes[i]!;
      let r: CheckResult;
      if (code === 0) r = { ok: true, detail: 'connected', durationMs: ms[i]! };
      else if (code === TIMED_OUT)
        r = { ok: false, detail: timeoutDetail(timeoutMs), durationMs: ms[i]!, timedOut: true };
      else {
        const name = getSystemErrorName(-code);
        r = { ok: false, detail: name, durationMs: ms[i]! };
        if (LOCAL_ERROR_CODES.has(name)) r.local = true;
      }
      // every verdict of the batch is handed out, whatever one sink throws; the first error is thrown after
      try {
        sink(r, owner);
      } catch (e) {
        if (!failed) {
          failed = true;
          error = e;
        }
      }
    }
    if (failed) throw error;
  }
}

/** The prober thread's probes, as probeTcp uses them (made at the first call); null where TCP probes to IP
 * addresses do not run there (setTcpProbeThread(false), or no addon). The health monitor starts its own with
 * begin(), without a target object, a callback and a cancel function per probe. */
export function tcpProbeThread(): ThreadProbes | null {
  return probeThread();
}

/** probeTcp through net.Socket: any host (names resolved), and wherever the raw handle is not available. */
export function netProbeTcp(o: TcpCheckOptions, done: (r: CheckResult) => void): CancelProbe {
  checkArgs(o);
  const started = performance.now();
  const sock = connect({ host: o.host, port: o.port });
  let open = true;
  const finish = (ok: boolean, detail: string, local: boolean, timedOut = false): void => {
    if (!open) return;
    open = false;
    clearTimeout(timer);
    sock.removeAllListeners();
    sock.on('error', () => undefined);
    sock.destroy();
    done(result(ok, detail, started, local, timedOut));
  };
  const timer = setTimeout(() => finish(false, timeoutDetail(o.timeoutMs), false, true), o.timeoutMs);
  sock.once('connect', () => finish(true, 'connected', false));
  sock.once('error', (e) => finish(false, errDetail(e), isLocalError(e)));
  return () => finish(false, ABORTED, true);
}

/** Node's TCP handle binding (what net.Socket wraps): a TCP probe needs only connect and close; an HTTP probe
 * also reads and writes (the stream methods every TCP handle has; see StreamBinding). */
interface TcpBinding {
  TCP: new (type: number) => TcpHandle;
  TCPConnectWrap: new () => { oncomplete: (status: number) => void };
  constants: { SOCKET: number };
}

interface TcpHandle {
  connect(req: object, address: string, port: number): number;
  connect6(req: object, address: string, port: number): number;
  close(): void;
  readStart(): number;
  /** Called with `this` the handle after each read: bytes read (or a negative error, UV_EOF at the end) and the
   * chunk's offset are in StreamBinding.streamBaseState. */
  onread: (buffer: ArrayBuffer | undefined) => void;
  writeLatin1String(req: object, data: string): number;
}

/** Node's stream binding: the write request and the shared state a read reports through. */
interface StreamBinding {
  WriteWrap: new () => { handle: unknown; oncomplete: (status: number) => void; async: boolean };
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
}

/**
 * The TCP handle binding, or null where this Node has none (then net.Socket does). A TCP probe needs a
 * connect and a close; net.Socket adds a stream pair, event emitters and their garbage around them: 66 us of
 * CPU per timing-out probe against 27 us raw (measured here, 14,000 probes), and 51,200 dead backends at a
 * 2 s interval and 1 s timeout need ~18,000 probes a second: 1.2 cores through net.Socket, half a core raw.
 */
function tcpBinding(): TcpBinding | null {
  try {
    const b = (process as unknown as { binding(name: string): Partial<TcpBinding> }).binding('tcp_wrap');
    if (
      typeof b.TCP !== 'function' ||
      typeof b.TCPConnectWrap !== 'function' ||
      typeof b.constants?.SOCKET !== 'number'
    )
      return null;
    return b as TcpBinding;
  } catch {
    return null;
  }
}

const RAW_TCP = tcpBinding();

/**
 * The stream binding where this Node has the pieces an HTTP probe uses on a raw TCP handle (else null: HTTP probes
 * use net.Socket). Read and write go through the calls net.Socket itself makes on its handle; net.Socket's
 * streams, emitters and their garbage cost ~150 us of CPU per HTTP probe here (see probeHttp).
 */
function streamBinding(tcp: TcpBinding | null): StreamBinding | null {
  if (tcp === null) return null;
  try {
    const s = (process as unknown as { binding(name: string): Partial<StreamBinding> }).binding(
      'stream_wrap',
    );
    const proto = tcp.TCP.prototype as Partial<TcpHandle>;
    if (
      typeof s.WriteWrap !== 'function' ||
      !isInt32Array(s.streamBaseState) ||
      typeof s.kReadBytesOrError !== 'number' ||
      typeof s.kArrayBufferOffset !== 'number' ||
      typeof proto.readStart !== 'function' ||
      typeof proto.writeLatin1String !== 'function'
    )
      return null;
    return s as StreamBinding;
  } catch {
    return null;
  }
}

const RAW_STREAM = streamBinding(RAW_TCP);

/** Whether HTTP probes to IP addresses use the raw TCP handle (else net.Socket). */
export const RAW_HTTP_PROBES = RAW_STREAM !== null;

/** Whether TCP probes to IP addresses use the raw TCP handle (else net.Socket). */
export const RAW_TCP_PROBES = RAW_TCP !== null;

const ignore = (): void => undefined;

/** Ends a raw probe with its verdict (once; later calls do nothing). */
type RawFinish = (ok: boolean, detail: string, local: boolean, timedOut?: boolean) => void;

/** What a raw probe's `connected` gets: the handle, its verdict, a failure by errno, and read(onread), which starts
 * reading (TcpHandle.onread) and returns readStart's status. */
interface RawConnected {
  handle: TcpHandle;
  finish: RawFinish;
  failed: (status: number) => void;
  read: (onread: TcpHandle['onread']) => number;
}

/**
 * A probe on a raw TCP handle (an IP address, of the family `v6` says): connects within the timeout, then calls
 * `connected`, which gives the verdict through `finish` (at once, or after reading). The handle is closed with the
 * verdict, a timeout or a cancel, and `done` called once. The one core of rawProbeTcp and rawProbeHttp.
 */
function rawProbe(
  b: TcpBinding,
  o: TcpCheckOptions,
  v6: boolean,
  done: (r: CheckResult) => void,
  connected: (c: RawConnected) => void,
): CancelProbe {
  const started = performance.now();
  const handle = new b.TCP(b.constants.SOCKET);
  const req = new b.TCPConnectWrap();
  let open = true;
  let reading = false;
  const finish: RawFinish = (ok, detail, local, timedOut = false) => {
    if (!open) return;
    open = false;
    clearTimeout(timer);
    req.oncomplete = ignore; // closing a connecting handle completes its request with ECANCELED
    if (reading) handle.onread = ignore; // a function only: Node aborts the process on anything else
    handle.close(); // the socket's fd is closed here, synchronously
    done(result(ok, detail, started, local, timedOut));
  };
  const failed = (status: number): void => {
    const code = getSystemErrorName(status);
    finish(false, code, LOCAL_ERROR_CODES.has(code));
  };
  req.oncomplete = (status: number) => {
    if (status !== 0) return failed(status);
    // `read` is made here, once connected: a probe of a dead backend never is, and allocates no more than it needs
    connected({
      handle,
      finish,
      failed,
      read: (onread) => {
        reading = true;
        handle.onread = onread;
        return handle.readStart();
      },
    });
  };
  const timer = setTimeout(() => finish(false, timeoutDetail(o.timeoutMs), false, true), o.timeoutMs);
  const err = v6 ? handle.connect6(req, o.host, o.port) : handle.connect(req, o.host, o.port);
  // The socket could not even be made (EMFILE, ...): reported on a later turn, as callbacks are.
  if (err !== 0) queueMicrotask(() => failed(err));
  return () => finish(false, ABORTED, true);
}

/**
 * probeTcp on a raw TCP handle (an IP address, checked by probeTcp with its family): connect, then close at
 * once; no stream, no reads.
 */
function rawProbeTcp(
  b: TcpBinding,
  o: TcpCheckOptions,
  v6: boolean,
  done: (r: CheckResult) => void,
): CancelProbe {
  return rawProbe(b, o, v6, done, connectedTcp);
}

const connectedTcp = (c: RawConnected): void => c.finish(true, 'connected', false);

/** The longest response head read for a status line (a healthy server's first line is far shorter). */
export const MAX_STATUS_HEAD = 4096;

/** "HTTP 200", one string per status code (see timeoutDetail). */
const httpDetails = new Map<number, string>();
const httpDetail = (code: number): string => {
  let d = httpDetails.get(code);
  if (d === undefined) httpDetails.set(code, (d = `HTTP ${code}`));
  return d;
};

/** The detail of a response that is not HTTP/1.x, or of one closed before its status line. */
export const BAD_RESPONSE = 'bad HTTP response';
export const NO_RESPONSE = 'closed before a response';

/**
 * The final status code in a response head read so far (RFC 9112 status-line: `HTTP/d.d SP 3DIGIT [SP reason]`),
 * skipping interim 1xx responses (their head ends at an empty line); null while more bytes are needed, -1 when
 * the head is not HTTP.
 */
export function statusOf(head: string): number | null {
  let at = 0;
  for (;;) {
    const eol = head.indexOf('\n', at);
    if (eol < 0) return head.length - at > MAX_STATUS_HEAD ? -1 : null;
    const m = /^HTTP\/\d\.\d (\d{3})(?:[ \r]|$)/.exec(head.slice(at, eol));
    if (m === null) return -1;
    const code = Number(m[1]);
    if (code >= 200 || code < 100) return code;
    // An interim response (100 Continue, 103 Early Hints): the final one follows its empty line.
    const blank = /\r?\n\r?\n/g;
    blank.lastIndex = eol - 1;
    const b = blank.exec(head);
    if (b === null) return head.length - at > MAX_STATUS_HEAD ? -1 : null;
    at = b.index + b[0].length;
  }
}

/**
 * The probe behind checkHttp, by callback (see probeTcp): GET path over a plain socket, the verdict from the
 * status line (2xx/3xx healthy), the connection closed as soon as it is read. The request is written by hand:
 * http.request cost ~200 us of CPU per probe against ~110 us (measured here), and a check needs no headers or
 * body of the answer.
 */
export function probeHttp(o: HttpCheckOptions, done: (r: CheckResult) => void): CancelProbe {
  checkHttpArgs(o);
  const v4 = isIPv4(o.host);
  const v6 = !v4 && isIPv6(o.host);
  if (RAW_TCP !== null && RAW_STREAM !== null && (v4 || v6))
    return rawProbeHttp(RAW_TCP, RAW_STREAM, o, v6, done);
  return netProbeHttp(o, done);
}

/** The request an HTTP probe writes. */
const httpRequest = (o: HttpCheckOptions): string =>
  `GET ${o.path} HTTP/1.1\r\nHost: ${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}\r\n` +
  'User-Agent: peak-xdp-health\r\nConnection: close\r\n\r\n';

/** The verdict of a response head read so far (statusOf); null while more bytes are needed. */
function httpVerdict(head: string): [ok: boolean, detail: string] | null {
  const code = statusOf(head);
  if (code === null) return null;
  if (code < 0) return [false, BAD_RESPONSE];
  return [code >= 200 && code < 400, httpDetail(code)];
}

/** probeHttp through net.Socket: any host (names resolved), and wherever the raw handle is not available. */
export function netProbeHttp(o: HttpCheckOptions, done: (r: CheckResult) => void): CancelProbe {
  checkHttpArgs(o);
  const started = performance.now();
  const sock = connect({ host: o.host, port: o.port });
  let open = true;
  let head = '';
  const finish = (ok: boolean, detail: string, local: boolean, timedOut = false): void => {
    if (!open) return;
    open = false;
    clearTimeout(timer);
    sock.removeAllListeners();
    sock.on('error', () => undefined);
    sock.destroy();
    done(result(ok, detail, started, local, timedOut));
  };
  const timer = setTimeout(() => finish(false, timeoutDetail(o.timeoutMs), false, true), o.timeoutMs);
  sock.setEncoding('latin1');
  sock.on('data', (chunk: string) => {
    head += chunk;
    const v = httpVerdict(head);
    if (v !== null) finish(v[0], v[1], false);
  });
  sock.once('end', () => finish(false, head === '' ? NO_RESPONSE : BAD_RESPONSE, false));
  sock.once('error', (e) => finish(false, errDetail(e), isLocalError(e)));
  sock.write(httpRequest(o), 'latin1');
  return () => finish(false, ABORTED, true);
}

/**
 * probeHttp on a raw TCP handle (an IP address, checked by probeHttp with its family): connect, start reading,
 * write the request, read until the status line; the same verdicts and details as netProbeHttp.
 */
function rawProbeHttp(
  b: TcpBinding,
  s: StreamBinding,
  o: HttpCheckOptions,
  v6: boolean,
  done: (r: CheckResult) => void,
): CancelProbe {
  return rawProbe(b, o, v6, done, ({ handle, finish, failed, read }) => {
    let head = '';
    let err = read((buffer: ArrayBuffer | undefined): void => {
      const n = s.streamBaseState[s.kReadBytesOrError]!;
      if (n === 0) return;
      if (n < 0) {
        if (getSystemErrorName(n) === 'EOF') finish(false, head === '' ? NO_RESPONSE : BAD_RESPONSE, false);
        else failed(n);
        return;
      }
      if (buffer === undefined) return;
      head += Buffer.from(buffer, s.streamBaseState[s.kArrayBufferOffset]!, n).toString('latin1');
      const v = httpVerdict(head);
      if (v !== null) finish(v[0], v[1], false);
    });
    if (err === 0) {
      // A request of a few hundred bytes on a fresh connection is written at once; should the kernel take it
      // later, its completion needs nothing (a failure shows up as a read error or the timeout).
      const w = new s.WriteWrap();
      w.handle = handle;
      w.oncomplete = ignore;
      w.async = false;
      err = handle.writeLatin1String(w, httpRequest(o));
    }
    if (err !== 0) failed(err);
  });
}

/** A callback probe as a promise; the signal aborts it (it then resolves as a local "aborted": no verdict). */
function withSignal<O extends TcpCheckOptions>(
  probe: (o: O, done: (r: CheckResult) => void) => CancelProbe,
  validate: (o: O) => void,
  o: O,
): Promise<CheckResult> {
  validate(o);
  if (o.signal?.aborted) return Promise.resolve(aborted());
  return new Promise((resolve) => {
    const cancel = probe(o, (r) => {
      o.signal?.removeEventListener('abort', cancel);
      resolve(r);
    });
    o.signal?.addEventListener('abort', cancel, { once: true });
  });
}

/** Healthy when a TCP connection is established within the timeout (then closed at once). */
export const checkTcp = (o: TcpCheckOptions): Promise<CheckResult> => withSignal(probeTcp, checkArgs, o);

/** Healthy when GET path answers 2xx or 3xx within the timeout (redirects are not followed). */
export const checkHttp = (o: HttpCheckOptions): Promise<CheckResult> =>
  withSignal(probeHttp, checkHttpArgs, o);
