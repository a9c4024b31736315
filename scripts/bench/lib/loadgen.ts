// HTTP load generator: open-loop constant rate (new connection per request) or N persistent connections.
// Bounded by request count and time; reports latency (from the scheduled send time), per-backend counts,
// errors, a timeline, (persistent mode) connections broken mid-run, and optionally one record per failure.
import { existsSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { summarize, cdf, LatencySummary, quantile } from './stats';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Target {
  host: string;
  port: number;
}

export interface LoadOptions {
  /** One target, or several picked at random per connection (client-side DNS round-robin). */
  targets: Target[];
  mode: 'open' | 'persistent';
  /** open: requests per second. */
  rate?: number;
  /** persistent: number of connections, and the pause between a response and the next request (0 = closed loop). */
  connections?: number;
  thinkMs?: number;
  /**
   * persistent: a connection is closed after this many responses and a new one opened (connection turnover; not
   * counted as broken). Default: kept until it breaks or the run ends.
   */
  requestsPerConnection?: number;
  durationMs: number;
  maxRequests: number;
  timeoutMs: number;
  /** open: requests not started because this many are in flight count as 'overload' errors. */
  maxInFlight?: number;
  bucketMs?: number;
  progressMs?: number;
  /** loadgen-cli: print one `FAILURE {...}` line (a FailureRecord) on stderr per failure as it happens. */
  reportFailures?: boolean;
  /** persistent: the run ends early once this file exists (a scenario of unknown length; durationMs bounds it). */
  stopFile?: string;
}

/** One failed request or broken connection, with what the client knew about it. Times are epoch ms. */
export interface FailureRecord {
  /** When the failure was seen. */
  at: number;
  mode: 'open' | 'persistent';
  /** As counted in LoadResult.errors (timeout, econnreset, closed, connect_econnrefused, ...). */
  kind: string;
  target: string;
  /** Client source port (null when the socket never got one). */
  localPort: number | null;
  openedAt: number;
  /** When the failing request was sent (null: none was in flight, the connection closed while idle). */
  requestSentAt: number | null;
  /** Last response on this connection (null: none). */
  lastOkAt: number | null;
  /** The backend that answered last on this connection (the last line of its body; null: none answered). */
  backend: string | null;
  /** Responses this connection carried. */
  responses: number;
  /** A request failed (counted in errors). */
  requestFailed: boolean;
  /** A persistent connection broke after carrying a request (counted in brokenConnections). */
  broken: boolean;
}

export interface LoadResult {
  mode: 'open' | 'persistent';
  sent: number;
  ok: number;
  errors: Record<string, number>;
  perBackend: Record<string, number>;
  latencyUs: LatencySummary;
  cdfUs: { value: number; fraction: number }[];
  timeline: { bucketMs: number; ok: number[]; err: number[] };
  elapsedMs: number;
  achievedRps: number;
  /** persistent: connections that closed or failed while in use. */
  brokenConnections: number;
  connectionsOpened: number;
}

export interface Progress {
  tMs: number;
  ok: number;
  err: number;
  perBackend: Record<string, number>;
  p99us: number;
}

/** Validates options; throws naming the field and value. */
export function checkLoadOptions(o: LoadOptions): void {
  const bad = (f: string, v: unknown, why: string): never => {
    throw new Error(`load option ${f}=${JSON.stringify(v)}: ${why}`);
  };
  if (!Array.isArray(o.targets) || o.targets.length === 0) bad('targets', o.targets, 'need at least one');
  for (const t of o.targets) if (!(t.port > 0 && t.port < 65536)) bad('targets.port', t.port, 'not a port');
  if (o.mode !== 'open' && o.mode !== 'persistent') bad('mode', o.mode, 'open or persistent');
  if (o.mode === 'open' && !(o.rate !== undefined && o.rate > 0 && o.rate <= 100_000))
    bad('rate', o.rate, '1..100000');
  if (
    o.mode === 'persistent' &&
    !(o.connections !== undefined && o.connections >= 1 && o.connections <= 10_000)
  )
    bad('connections', o.connections, '1..10000');
  if (!(o.durationMs > 0 && o.durationMs <= 86_400_000)) bad('durationMs', o.durationMs, '1..86400000');
  if (!(o.maxRequests > 0 && o.maxRequests <= 10_000_000)) bad('maxRequests', o.maxRequests, '1..10000000');
  if (!(o.timeoutMs > 0)) bad('timeoutMs', o.timeoutMs, '> 0');
  if (
    o.requestsPerConnection !== undefined &&
    !(Number.isSafeInteger(o.requestsPerConnection) && o.requestsPerConnection >= 1)
  )
    bad('requestsPerConnection', o.requestsPerConnection, 'a positive integer');
}

const REQUEST = (host: string, close: boolean): string =>
  `GET / HTTP/1.1\r\nHost: ${host.includes(':') ? `[${host}]` : host}\r\nUser-Agent: peak-bench\r\n` +
  `Connection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`;

/** Parses one HTTP response from the start of buf: null if incomplete. */
export function parseResponse(buf: string): { status: number; body: string; length: number } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.slice(0, end);
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? NaN);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (!cl) return null;
  const len = Number(cl[1]);
  if (buf.length < end + 4 + len) return null;
  return { status, body: buf.slice(end + 4, end + 4 + len), length: end + 4 + len };
}

class Recorder {
  latUs: number[] = [];
  errors: Record<string, number> = {};
  perBackend: Record<string, number> = {};
  ok = 0;
  sent = 0;
  okB: number[] = [];
  errB: number[] = [];
  recent: number[] = [];
  constructor(
    private readonly t0: number,
    private readonly bucketMs: number,
  ) {}
  private bucket(atMs: number): number {
    return Math.max(0, Math.floor((atMs - this.t0) / this.bucketMs));
  }
  success(o: { scheduled: number; done: number; body: string }): void {
    const us = (o.done - o.scheduled) * 1000;
    this.ok++;
    this.latUs.push(us);
    this.recent.push(us);
    const name = backendName(o.body);
    this.perBackend[name] = (this.perBackend[name] ?? 0) + 1;
    const b = this.bucket(o.scheduled);
    this.okB[b] = (this.okB[b] ?? 0) + 1;
  }
  failure(o: { scheduled: number; kind: string }): void {
    this.errors[o.kind] = (this.errors[o.kind] ?? 0) + 1;
    const b = this.bucket(o.scheduled);
    this.errB[b] = (this.errB[b] ?? 0) + 1;
  }
}

/** The backend a response names: the last line of its body. */
function backendName(body: string): string {
  return body.trim().split('\n').pop() || '?';
}

function errorKind(e: unknown): string {
  const code = (e as { code?: string }).code;
  return code ? code.toLowerCase() : 'socket';
}

/** One request on a fresh connection (Connection: close); `conn` learns its source port. */
function oneShot(
  t: Target,
  timeoutMs: number,
  conn: { localPort: number | null } = { localPort: null },
): Promise<{ ok: true; body: string } | { ok: false; kind: string }> {
  return new Promise((resolve) => {
    let buf = '';
    let settled = false;
    const s = connect({ host: t.host, port: t.port });
    watchLocalPort(s, (port) => (conn.localPort ??= port));
    const finish = (r: { ok: true; body: string } | { ok: false; kind: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, kind: 'timeout' }), timeoutMs);
    s.setNoDelay(true);
    s.setEncoding('latin1');
    s.on('connect', () => s.write(REQUEST(t.host, true)));
    s.on('data', (d: string) => {
      buf += d;
      const r = parseResponse(buf);
      if (r) finish(r.status === 200 ? { ok: true, body: r.body } : { ok: false, kind: `http_${r.status}` });
    });
    s.on('error', (e) => finish({ ok: false, kind: errorKind(e) }));
    // Without Content-Length the body runs to the end of the connection (Connection: close).
    s.on('end', () => {
      const head = buf.indexOf('\r\n\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf)?.[1] ?? NaN);
      if (head < 0) finish({ ok: false, kind: 'closed' });
      else
        finish(
          status === 200 ? { ok: true, body: buf.slice(head + 4) } : { ok: false, kind: `http_${status}` },
        );
    });
    s.on('close', () => finish({ ok: false, kind: 'closed' }));
  });
}

/**
 * Reports a connecting socket's source port: connect() binds it right after 'connectionAttempt' (a microtask
 * later it is readable), and a failed connect releases it, so reading it at the error is too late.
 */
function watchLocalPort(s: Socket, found: (port: number) => void): void {
  const read = (): void => {
    if (s.localPort) found(s.localPort);
  };
  s.once('connectionAttempt', () => queueMicrotask(read));
  s.once('connect', read);
}

function pick(targets: Target[]): Target {
  return targets[Math.floor(Math.random() * targets.length)]!;
}

/** Runs the load; resolves when the duration or the request budget is used up and every request settled. */
export async function runLoad(
  o: LoadOptions,
  onProgress?: (p: Progress) => void,
  onFailure?: (f: FailureRecord) => void,
): Promise<LoadResult> {
  checkLoadOptions(o);
  const bucketMs = o.bucketMs ?? 100;
  const t0 = performance.now();
  const rec = new Recorder(t0, bucketMs);
  const deadline = t0 + o.durationMs;
  const stopped = (): boolean => o.stopFile !== undefined && existsSync(o.stopFile);
  let broken = 0;
  let opened = 0;
  const progressTimer = onProgress
    ? setInterval(() => {
        const r = rec.recent.sort((a, b) => a - b);
        const p99us = quantile(r, 0.99);
        rec.recent = [];
        const err = Object.values(rec.errors).reduce((a, b) => a + b, 0);
        onProgress({
          tMs: performance.now() - t0,
          ok: rec.ok,
          err,
          perBackend: { ...rec.perBackend },
          p99us,
        });
      }, o.progressMs ?? 1000)
    : null;

  if (o.mode === 'open') {
    const rate = o.rate!;
    const maxInFlight = o.maxInFlight ?? 4096;
    let inFlight = 0;
    const pending: Promise<void>[] = [];
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        // Elapsed is capped by durationMs itself: (t0 + d) - t0 can round below d and lose the last request.
        const elapsed = Math.min(now - t0, o.durationMs);
        const due = Math.min(o.maxRequests, Math.floor((elapsed / 1000) * rate + 1e-9));
        while (rec.sent < due) {
          const scheduled = t0 + (rec.sent / rate) * 1000;
          rec.sent++;
          if (inFlight >= maxInFlight) {
            rec.failure({ scheduled, kind: 'overload' });
            continue;
          }
          inFlight++;
          opened++;
          const target = pick(o.targets);
          const conn = { localPort: null as number | null };
          const openedAt = Date.now();
          pending.push(
            oneShot(target, o.timeoutMs, conn).then((r) => {
              inFlight--;
              if (r.ok) rec.success({ scheduled, done: performance.now(), body: r.body });
              else {
                rec.failure({ scheduled, kind: r.kind });
                onFailure?.({
                  at: Date.now(), mode: 'open', kind: r.kind, target: target.host, localPort: conn.localPort,
                  openedAt, requestSentAt: openedAt, lastOkAt: null, backend: null, responses: 0,
                  requestFailed: true, broken: false,
                }); // prettier-ignore
              }
            }),
          );
        }
        if (now >= deadline || rec.sent >= o.maxRequests) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    await Promise.all(pending);
  } else {
    const workers = Array.from({ length: o.connections! }, () => persistentWorker());
    await Promise.all(workers);
  }
  if (progressTimer) clearInterval(progressTimer);
  const elapsedMs = performance.now() - t0;
  const nb = Math.ceil(Math.max(elapsedMs, o.durationMs) / bucketMs);
  const fill = (a: number[]): number[] => Array.from({ length: nb }, (_, i) => a[i] ?? 0);
  return {
    mode: o.mode,
    sent: rec.sent,
    ok: rec.ok,
    errors: rec.errors,
    perBackend: rec.perBackend,
    latencyUs: summarize(rec.latUs),
    cdfUs: cdf(rec.latUs),
    timeline: { bucketMs, ok: fill(rec.okB), err: fill(rec.errB) },
    elapsedMs,
    achievedRps: rec.ok / (Math.min(elapsedMs, o.durationMs) / 1000),
    brokenConnections: broken,
    connectionsOpened: opened,
  };

  /** Persistent mode: one keep-alive connection reused until it breaks, then a new one (counted as broken). */
  async function persistentWorker(): Promise<void> {
    while (performance.now() < deadline && rec.sent < o.maxRequests && !stopped()) {
      opened++;
      const outcome = await useConnection(pick(o.targets));
      if (outcome === 'broken') broken++;
      // Back off briefly before reconnecting after a break or a failed connect.
      if (outcome !== 'done') await sleep(50);
    }
  }

  /** 'broken': failed after it carried a request; 'failed': could not connect. */
  function useConnection(t: Target): Promise<'done' | 'broken' | 'failed'> {
    return new Promise((resolve) => {
      const s: Socket = connect({ host: t.host, port: t.port });
      let buf = '';
      let scheduled = 0;
      let waiting = false;
      let timer: NodeJS.Timeout | null = null;
      // the pause before the next request (thinkMs), cleared when the connection ends meanwhile
      let thinking: NodeJS.Timeout | null = null;
      let settled = false;
      let used = false;
      // What a FailureRecord tells about this connection.
      const openedAt = Date.now();
      let localPort: number | null = null;
      let sentAt = 0;
      let lastOkAt: number | null = null;
      let backend: string | null = null;
      let responses = 0;
      watchLocalPort(s, (port) => (localPort ??= port));
      const end = (how: 'done' | 'broken', kind?: string): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        if (thinking) clearTimeout(thinking);
        if (kind && waiting) rec.failure({ scheduled, kind });
        if (kind && !used) rec.failure({ scheduled: performance.now(), kind: `connect_${kind}` });
        if (kind)
          onFailure?.({
            at: Date.now(), mode: 'persistent', kind: used ? kind : `connect_${kind}`, target: t.host, localPort,
            openedAt, requestSentAt: waiting ? sentAt : null, lastOkAt, backend, responses,
            requestFailed: waiting || !used, broken: how === 'broken' && used,
          }); // prettier-ignore
        s.destroy();
        resolve(how === 'broken' && !used ? 'failed' : how);
      };
      const send = (): void => {
        thinking = null;
        if (settled) return;
        if (performance.now() >= deadline || rec.sent >= o.maxRequests || stopped()) return end('done');
        if (o.requestsPerConnection !== undefined && responses >= o.requestsPerConnection) return end('done');
        scheduled = performance.now();
        sentAt = Date.now();
        rec.sent++;
        used = true;
        waiting = true;
        timer = setTimeout(() => end('broken', 'timeout'), o.timeoutMs);
        s.write(REQUEST(t.host, false));
      };
      s.setNoDelay(true);
      s.setEncoding('latin1');
      s.on('connect', send);
      s.on('data', (d: string) => {
        buf += d;
        const r = parseResponse(buf);
        if (!r) return;
        buf = buf.slice(r.length);
        waiting = false;
        if (timer) clearTimeout(timer);
        if (r.status === 200) {
          rec.success({ scheduled, done: performance.now(), body: r.body });
          lastOkAt = Date.now();
          backend = backendName(r.body);
          responses++;
        } else {
          rec.failure({ scheduled, kind: `http_${r.status}` });
          onFailure?.({
            at: Date.now(), mode: 'persistent', kind: `http_${r.status}`, target: t.host, localPort, openedAt,
            requestSentAt: sentAt, lastOkAt, backend, responses, requestFailed: true, broken: false,
          }); // prettier-ignore
        }
        const think = o.thinkMs ?? 0;
        if (think > 0) thinking = setTimeout(send, think);
        else send();
      });
      s.on('error', (e) => end('broken', errorKind(e)));
      s.on('close', () => end('broken', 'closed'));
    });
  }
}
