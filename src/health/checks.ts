// Active checks: TCP connect and HTTP GET (2xx/3xx healthy), each bounded by a timeout; errors of this host
// (out of fds, buffers, ports) are told apart from the backend's.
import { request } from 'node:http';
import { connect } from 'node:net';

export interface CheckResult {
  ok: boolean;
  durationMs: number;
  /** "connected", "HTTP 200", "ECONNREFUSED", "timeout after 500 ms", "EMFILE", ... */
  detail: string;
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

/** The detail of a check aborted by its signal (the monitor stopped, or the target went away). */
export const ABORTED = 'aborted';

const aborted = (): CheckResult => ({ ok: false, durationMs: 0, detail: ABORTED, local: true });

const errDetail = (e: unknown): string =>
  (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);

/** Healthy when a TCP connection is established within the timeout (then closed at once). */
export function checkTcp(o: TcpCheckOptions): Promise<CheckResult> {
  checkArgs(o);
  const started = performance.now();
  if (o.signal?.aborted) return Promise.resolve(aborted());
  return new Promise((resolve) => {
    const sock = connect({ host: o.host, port: o.port });
    const finish = (ok: boolean, detail: string, local = false): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', abort);
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      resolve({ ok, detail, durationMs: performance.now() - started, ...(local ? { local } : {}) });
    };
    const timer = setTimeout(() => finish(false, `timeout after ${o.timeoutMs} ms`), o.timeoutMs);
    const abort = (): void => finish(false, ABORTED, true);
    sock.once('connect', () => finish(true, 'connected'));
    sock.once('error', (e) => finish(false, errDetail(e), isLocalError(e)));
    o.signal?.addEventListener('abort', abort, { once: true });
  });
}

/** Healthy when GET path answers 2xx or 3xx within the timeout (redirects are not followed). */
export function checkHttp(o: HttpCheckOptions): Promise<CheckResult> {
  checkArgs(o);
  if (typeof o.path !== 'string' || !o.path.startsWith('/'))
    throw new TypeError(`path: ${JSON.stringify(o.path)} is not an absolute path`);
  const started = performance.now();
  if (o.signal?.aborted) return Promise.resolve(aborted());
  const hostHeader = o.host.includes(':') ? `[${o.host}]:${o.port}` : `${o.host}:${o.port}`;
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean, detail: string, local = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', abort);
      req.destroy();
      resolve({ ok, detail, durationMs: performance.now() - started, ...(local ? { local } : {}) });
    };
    const req = request({
      host: o.host,
      port: o.port,
      path: o.path,
      method: 'GET',
      agent: false,
      headers: { host: hostHeader, 'user-agent': 'peak-xdp-health', connection: 'close' },
    });
    const timer = setTimeout(() => finish(false, `timeout after ${o.timeoutMs} ms`), o.timeoutMs);
    req.on('response', (res) => {
      const code = res.statusCode ?? 0;
      res.resume();
      finish(code >= 200 && code < 400, `HTTP ${code}`);
    });
    req.on('error', (e) => finish(false, errDetail(e), isLocalError(e)));
    const abort = (): void => finish(false, ABORTED, true);
    o.signal?.addEventListener('abort', abort, { once: true });
    req.end();
  });
}
