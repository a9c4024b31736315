// Plain JSON requests to the API server over one keep-alive agent. The generated client of
// @kubernetes/client-node makes a new agent, so a new TCP (and TLS) connection, for every call, and runs each
// response through its model classes: 1,000 first status writes cost seconds of CPU and one connect each,
// and a list of 1,000 EndpointSlices was mostly deserialization. Auth (tokens, exec plugins, client
// certificates) still comes from the kubeconfig, asked for every request as the generated client does.
import http from 'node:http';
import https from 'node:https';
import { LinePump } from './lines';

/** TLS material of a request (https only); a change (e.g. a rotated client certificate) makes a new agent. */
export interface TlsMaterial {
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  pfx?: Buffer | string;
  passphrase?: string;
  rejectUnauthorized?: boolean;
  servername?: string;
}

/** What one request carries besides its own method, path and body. */
export interface RequestAuth {
  headers: Record<string, string>;
  tls: TlsMaterial;
  /** An agent to use instead of the keep-alive one (a proxy's, which the kubeconfig layer builds). */
  agent?: http.Agent;
}

/** A non-2xx answer: `code` is the HTTP status, as the reflector and the client's callers test it. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface JsonRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path below the server URL, e.g. /api/v1/services (a server URL with a path prefix keeps it). */
  path: string;
  /** Query parameters; undefined ones are left out. */
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Content-Type of the body; default application/json. */
  contentType?: string;
}

export interface LineStream {
  /** Ends the stream; onDone is called (with null) unless it already was. */
  stop(): void;
}

export interface ApiRequester {
  /** The parsed JSON answer of a 2xx response (undefined for an empty body); ApiError otherwise. */
  json<T>(r: JsonRequest): Promise<T>;
  /**
   * A GET whose 200 body is JSON lines (a watch): onLine for each parsed line, then onDone once (null: the
   * server ended it or stop() was called; else the error, an ApiError for a non-200 answer). No request
   * timeout: the caller judges silence (the reflector's idle timeout).
   */
  lines(
    r: Omit<JsonRequest, 'method' | 'body' | 'contentType'>,
    onLine: (value: unknown) => void,
    onDone: (err: Error | null) => void,
  ): Promise<LineStream>;
  /** Connections the requester opened so far (a keep-alive agent opens few). */
  readonly connections: number;
  /** Closes idle connections. */
  close(): void;
}

export interface RequesterOptions {
  /** The cluster's server URL (http: or https:). */
  server: string;
  /** Headers and TLS material for the next request. */
  auth: () => Promise<RequestAuth>;
  /** A request with no answer for this long fails (the reflector re-lists, the leader retries). */
  timeoutMs?: number;
  /** Connections kept per host. */
  maxSockets?: number;
}

/** Requests without any answer fail after this long. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** Enough for the leader's 8 writes in flight, three lists and a Lease renewal at once. */
const DEFAULT_MAX_SOCKETS = 16;

/** Equal for equal TLS material: the agent is kept while it is. */
function tlsKey(t: TlsMaterial): string {
  const text = (b: Buffer | string | undefined): string | null =>
    b === undefined ? null : Buffer.isBuffer(b) ? b.toString('base64') : b;
  return JSON.stringify([
    text(t.ca),
    text(t.cert),
    text(t.key),
    text(t.pfx),
    t.passphrase ?? null,
    t.rejectUnauthorized ?? null,
    t.servername ?? null,
  ]);
}

export function createRequester(o: RequesterOptions): ApiRequester {
  let base: URL;
  try {
    base = new URL(o.server);
  } catch {
    throw new Error(`kubeconfig: server ${JSON.stringify(o.server)} is not a URL`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:')
    throw new Error(`kubeconfig: server ${JSON.stringify(o.server)} is not http: or https:`);
  const secure = base.protocol === 'https:';
  const prefix = base.pathname.replace(/\/+$/, '');
  const timeoutMs = o.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const maxSockets = o.maxSockets ?? DEFAULT_MAX_SOCKETS;
  let agent: { key: string; agent: http.Agent } | null = null;
  let connections = 0;

  const agentFor = (tls: TlsMaterial): http.Agent => {
    const key = secure ? tlsKey(tls) : '';
    if (agent !== null && agent.key === key) return agent.agent;
    // New TLS material: later requests use a new pool; the old one's idle sockets go.
    agent?.agent.destroy();
    const a = secure
      ? new https.Agent({ keepAlive: true, maxSockets, ...tls })
      : new http.Agent({ keepAlive: true, maxSockets });
    agent = { key, agent: a };
    return a;
  };

  const urlOf = (r: { path: string; query?: JsonRequest['query'] }): URL => {
    const url = new URL(base.href);
    url.pathname = `${prefix}${r.path}`;
    for (const [k, v] of Object.entries(r.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    return url;
  };
  const countSocket = (s: unknown): void => {
    // A reused socket is already connected; a fresh one counts once.
    const x = s as { peakCounted?: boolean };
    if (!x.peakCounted) {
      x.peakCounted = true;
      connections++;
    }
  };

  const json = async <T>(r: JsonRequest): Promise<T> => {
    const auth = await o.auth();
    const url = urlOf(r);
    const body = r.body === undefined ? undefined : Buffer.from(JSON.stringify(r.body));
    const headers: Record<string, string | number> = { Accept: 'application/json', ...auth.headers };
    if (body !== undefined) {
      headers['Content-Type'] = r.contentType ?? 'application/json';
      headers['Content-Length'] = body.length;
    }
    const lib = secure ? https : http;
    const what = `${r.method} ${url.pathname}`;
    return new Promise<T>((resolve, reject) => {
      const req = lib.request(
        url,
        { method: r.method, headers, agent: auth.agent ?? agentFor(auth.tls) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text === '' ? undefined : JSON.parse(text);
            } catch {
              parsed = text;
            }
            const code = res.statusCode ?? 0;
            if (code >= 200 && code < 300) return resolve(parsed as T);
            const message =
              (parsed as { message?: unknown } | undefined)?.message ?? http.STATUS_CODES[code] ?? '';
            reject(new ApiError(code, `${what}: HTTP ${code}: ${String(message)}`, parsed));
          });
        },
      );
      req.on('socket', countSocket);
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${what}: no answer in ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  };

  const lines: ApiRequester['lines'] = async (r, onLine, onDone) => {
    const auth = await o.auth();
    const url = urlOf(r);
    const what = `GET ${url.pathname}`;
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      onDone(err);
    };
    const req = (secure ? https : http).request(url, {
      method: 'GET',
      headers: { Accept: 'application/json', ...auth.headers },
      agent: auth.agent ?? agentFor(auth.tls),
    });
    req.on('socket', (s) => {
      countSocket(s);
      // A watch is quiet for long stretches: TCP keepalive finds a dead peer (as the client's Watch does).
      s.setKeepAlive(true, 30_000);
    });
    req.on('error', (e) => finish(e));
    req.on('response', (res) => {
      const code = res.statusCode ?? 0;
      if (code !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => finish(e));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          const message = (parsed as { message?: unknown } | null)?.message ?? http.STATUS_CODES[code] ?? '';
          finish(new ApiError(code, `${what}: HTTP ${code}: ${String(message)}`, parsed));
        });
        return;
      }
      res.setEncoding('utf8');
      // Lines a slice at a time (LinePump): a burst of events is parsed and applied between other work.
      const pump = new LinePump({
        onLine: (line) => {
          if (done) return false;
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            finish(new Error(`${what}: a line of the stream is not JSON: ${line.slice(0, 120)}`));
            req.destroy();
            return false;
          }
          onLine(value);
          return !done;
        },
        pause: () => res.pause(),
        resume: () => res.resume(),
      });
      res.on('data', (chunk: string) => pump.push(chunk));
      res.on('error', (e) => {
        pump.stop();
        finish(e);
      });
      // Done once every line that came before is handed over.
      res.on('end', () => pump.end(() => finish(null)));
      res.on('close', () =>
        pump.end(() => finish(res.complete ? null : new Error(`${what}: the stream was cut`))),
      );
    });
    req.end();
    return {
      stop: () => {
        finish(null);
        req.destroy();
      },
    };
  };

  return {
    json,
    lines,
    get connections() {
      return connections;
    },
    close: () => agent?.agent.destroy(),
  };
}
