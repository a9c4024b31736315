// The admin API's versioned JSON endpoints (/v1/...): runtime overrides (drain, weight) and connection-table
// flushes. Mutating requests are served on a loopback listener, or with the configured bearer token.
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KernelDatapath } from '../datapath/kernel';
import { decodeCtValue } from '../datapath/layout';
import type { Datapath } from '../datapath/types';
import { parseIp } from '../model/ip';
import type { VipConfig } from '../model/types';
import type { DesiredState } from '../reconcile/desired';
import {
  canonicalBackend,
  changes,
  OverrideChange,
  OverrideError,
  OverrideSet,
  resolveTarget,
  resolveVip,
} from './overrides';

/** Bodies larger than this are refused (a change is a few hundred bytes). */
export const MAX_BODY_BYTES = 64 * 1024;

/** Deletes the connection-table entries a predicate selects; resolves to how many. */
export interface ConntrackFlusher {
  flush(match: (e: { vipId: number; backendId: number }) => boolean): Promise<number>;
}

/** The kernel datapath's flusher (one batch read, one batch delete); null for others (tests' in-memory one). */
export function conntrackFlusherOf(dp: Datapath): ConntrackFlusher | null {
  if (!(dp instanceof KernelDatapath)) return null;
  const map = dp.maps.conntrack;
  return {
    flush: async (match) => {
      const { keys, values } = map.lookupBatch();
      const doomed = keys.filter((_k, i) => match(decodeCtValue(values[i]!)));
      return doomed.length === 0 ? 0 : map.deleteBatch(doomed);
    },
  };
}

/** What the endpoints need of the daemon. */
export interface WriteTarget {
  /** False until the daemon has started (the API answers from before). */
  started(): boolean;
  /** The VIPs as configured (file and Kubernetes), without overrides. */
  vips(): readonly VipConfig[];
  overrides(): OverrideSet;
  /** Where the overrides are stored (null: memory only). */
  overridesLocation(): string | null;
  /** Applies a change (stored, then synced): resolves once the datapath has it; throws OverrideError. */
  change(c: OverrideChange): Promise<OverrideSet>;
  /** Datapath ids of the desired state: VIP id by name, backend ids by VIP name and address. */
  ids(): { vips: ReadonlyMap<string, number>; backends: ReadonlyMap<string, ReadonlyMap<string, number>> };
  conntrack(): ConntrackFlusher | null;
}

/** The ids WriteTarget.ids() gives, from a desired state (empty before the first sync). */
export function desiredIds(desired: DesiredState | null): ReturnType<WriteTarget['ids']> {
  const vips = new Map<string, number>();
  const backends = new Map<string, Map<string, number>>();
  for (const v of desired?.vips ?? []) {
    vips.set(v.name, v.spec.id);
    backends.set(v.name, new Map(v.backends.map((b) => [b.address, b.id])));
  }
  return { vips, backends };
}

/** Who may change things. */
export interface WriteAccess {
  /** The admin listener, as configured ("host:port"), for messages. */
  listen: string;
  /** The listener is on a loopback address (or a Unix socket): only local processes reach it. */
  local: boolean;
  /** Required as "Authorization: Bearer <token>" on mutating requests when set. */
  token: string | null;
}

/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
export function isLoopback(host: string): boolean {
  const ip = parseIp(host);
  if (ip === null) return false;
  const b = ip.bytes;
  if (ip.family === 4) return b[0] === 127;
  if (b.slice(0, 15).every((x) => x === 0) && b[15] === 1) return true;
  return b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff && b[12] === 127;
}

/** A request as the endpoints see it. */
export interface WriteRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface WriteResponse {
  status: number;
  body: unknown;
}

const err = (status: number, message: string): WriteResponse => ({ status, body: { error: message } });

/** Refusal of a mutating request, or null when it may go on. */
export function authorise(req: WriteRequest, access: WriteAccess): WriteResponse | null {
  if (access.token !== null) {
    const h = req.headers.authorization;
    const given = typeof h === 'string' && /^Bearer\s+/i.test(h) ? h.replace(/^Bearer\s+/i, '').trim() : '';
    const a = Buffer.from(given);
    const b = Buffer.from(access.token);
    if (given === '')
      return err(
        401,
        'no token: mutating admin requests need "Authorization: Bearer <token>" (admin.tokenFile; peak-xdp --token-file)',
      );
    if (a.length !== b.length || !timingSafeEqual(a, b))
      return err(401, "wrong token: the bearer token does not match the daemon's admin.tokenFile");
  } else if (!access.local)
    return err(
      403,
      `mutating admin requests are refused: admin.listen ${access.listen} is not a loopback address and no admin.tokenFile is configured`,
    );
  // A browser page cannot send this type to another origin without a preflight the API never answers.
  const type = String(req.headers['content-type'] ?? '')
    .split(';')[0]!
    .trim()
    .toLowerCase();
  if (type !== 'application/json') return err(415, 'mutating requests need content-type: application/json');
  return null;
}

type Body = Record<string, unknown>;

function parseBody(text: string): { body: Body } | { refused: WriteResponse } {
  if (text.trim() === '') return { body: {} };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { refused: err(400, `body is not JSON: ${(e as Error).message}`) };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    return { refused: err(400, 'body is not a JSON object') };
  return { body: v as Body };
}

function checkKeys(body: Body, allowed: readonly string[]): WriteResponse | null {
  const extra = Object.keys(body).filter((k) => !allowed.includes(k));
  return extra.length === 0
    ? null
    : err(400, `unknown field(s) ${extra.join(', ')} (this endpoint takes ${allowed.join(', ')})`);
}

/** The endpoints: method and path -> what they do. */
export const WRITE_ROUTES = {
  'GET /v1/overrides': 'the runtime overrides in force',
  'POST /v1/backends/drain': '{vip, backend}: drain the backend (no new flows; established ones stay)',
  'DELETE /v1/backends/drain': '{vip, backend}: clear the drain override',
  'POST /v1/backends/weight': '{vip, backend, weight}: set the backend weight (0..65535)',
  'DELETE /v1/backends/weight': '{vip, backend}: clear the weight override',
  'POST /v1/conntrack/flush': '{vip?, backend?, all?}: delete matching connection-table entries',
} as const;

const CHANGES: Record<string, (b: Body) => OverrideChange> = {
  'POST /v1/backends/drain': (b) => ({ kind: 'drain', vip: b.vip as string, backend: b.backend as string }),
  'DELETE /v1/backends/drain': (b) => ({
    kind: 'undrain',
    vip: b.vip as string,
    backend: b.backend as string,
  }),
  'POST /v1/backends/weight': (b) => ({
    kind: 'weight',
    vip: b.vip as string,
    backend: b.backend as string,
    weight: b.weight as number,
  }),
  'DELETE /v1/backends/weight': (b) => ({
    kind: 'clear-weight',
    vip: b.vip as string,
    backend: b.backend as string,
  }),
};

/** OverrideError as 404/400; anything else (the store could not be written) as 500, still a JSON body. */
const fromError = (e: unknown): WriteResponse =>
  e instanceof OverrideError
    ? err(e.kind === 'not-found' ? 404 : 400, e.message)
    : err(500, `not applied: ${(e as Error).message}`);

/** Answers a /v1 request. */
export async function handleWrite(
  req: WriteRequest,
  o: { target: WriteTarget; access: WriteAccess },
): Promise<WriteResponse> {
  const route = `${req.method} ${req.path}`;
  const t = o.target;
  if (!(route in WRITE_ROUTES)) {
    const paths = Object.keys(WRITE_ROUTES).filter((r) => r.endsWith(` ${req.path}`));
    if (paths.length > 0) return err(405, `${req.method} ${req.path}: use ${paths.join(' or ')}`);
    return err(404, `no endpoint ${req.path}: ${Object.keys(WRITE_ROUTES).join(', ')}`);
  }
  if (route === 'GET /v1/overrides')
    return { status: 200, body: { version: 1, location: t.overridesLocation(), overrides: t.overrides() } };
  const refused = authorise(req, o.access);
  if (refused) return refused;
  if (!t.started()) return err(503, 'the daemon is starting: try again in a moment');
  const parsed = parseBody(req.body);
  if ('refused' in parsed) return parsed.refused;
  const b = parsed.body;
  if (route === 'POST /v1/conntrack/flush') return flush(b, t);
  const bad = checkKeys(
    b,
    route === 'POST /v1/backends/weight' ? ['vip', 'backend', 'weight'] : ['vip', 'backend'],
  );
  if (bad) return bad;
  const change = CHANGES[route]!(b);
  try {
    const { vip, backend } = resolveTarget(t.vips(), change.vip, change.backend);
    // Judged against the override in force now; a concurrent change to the same backend may land in between
    // (changes run one at a time), which makes `changed` describe this request's view, not a lock.
    const before = t.overrides()[vip.name]?.[backend.address] ?? null;
    const changed = changes(before, change.kind, change.kind === 'weight' ? change.weight : undefined);
    const set = await t.change(change);
    return {
      status: 200,
      body: {
        vip: vip.name,
        backend: backend.address,
        override: set[vip.name]?.[backend.address] ?? null,
        changed,
      },
    };
  } catch (e) {
    return fromError(e);
  }
}

/**
 * Which connection-table entries a flush deletes: a VIP's (by its id in the entry), a backend's in one VIP, or a
 * backend address's in every VIP that has it. Throws OverrideError for an unknown VIP or backend.
 */
export function flushMatch(o: {
  vips: readonly VipConfig[];
  ids: ReturnType<WriteTarget['ids']>;
  vip: unknown;
  backend: unknown;
}): (e: { vipId: number; backendId: number }) => boolean {
  if (o.vip === undefined && o.backend === undefined) return () => true;
  if (o.backend === undefined) {
    const id = o.ids.vips.get(resolveVip(o.vips, o.vip).name);
    return (e) => e.vipId === id;
  }
  if (o.vip !== undefined) {
    const r = resolveTarget(o.vips, o.vip, o.backend);
    const id = o.ids.backends.get(r.vip.name)?.get(r.backend.address);
    return (e) => e.backendId === id;
  }
  const address = canonicalBackend(o.backend);
  const owners = o.vips.filter((v) => v.backends.some((b) => b.address === address));
  if (owners.length === 0) throw new OverrideError('not-found', `no VIP has a backend ${address}`);
  const wanted = new Set(owners.map((v) => o.ids.backends.get(v.name)?.get(address)));
  return (e) => wanted.has(e.backendId);
}

async function flush(b: Body, t: WriteTarget): Promise<WriteResponse> {
  const bad = checkKeys(b, ['vip', 'backend', 'all']);
  if (bad) return bad;
  if (b.all !== undefined && typeof b.all !== 'boolean')
    return err(400, `all: ${JSON.stringify(b.all)} is not a boolean`);
  const vip = b.vip;
  const backend = b.backend;
  if (vip === undefined && backend === undefined && b.all !== true)
    return err(400, 'give vip and/or backend, or all: true to flush the whole connection table');
  if (b.all === true && (vip !== undefined || backend !== undefined))
    return err(400, 'all: true flushes everything: leave vip and backend out');
  const flusher = t.conntrack();
  if (flusher === null) return err(501, 'this datapath has no connection table to flush');
  let match: (e: { vipId: number; backendId: number }) => boolean;
  try {
    match = flushMatch({ vips: t.vips(), ids: t.ids(), vip, backend });
  } catch (e) {
    return fromError(e);
  }
  const deleted = await flusher.flush(match);
  return { status: 200, body: { deleted, vip: vip ?? null, backend: backend ?? null } };
}

/** Reads a request body up to MAX_BODY_BYTES; null when larger. */
function readBody(req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY_BYTES) {
        resolve(null);
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The admin server hook: serves /v1/... and returns true; false for other paths. */
export function adminWriteApi(o: { target: WriteTarget; access: WriteAccess }) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (!path.startsWith('/v1/')) return false;
    const body = await readBody(req);
    const r =
      body === null
        ? err(413, `body larger than ${MAX_BODY_BYTES} bytes`)
        : await handleWrite({ method: req.method ?? 'GET', path, headers: req.headers, body }, o);
    res.writeHead(r.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(r.body, null, 2) + '\n');
    return true;
  };
}
