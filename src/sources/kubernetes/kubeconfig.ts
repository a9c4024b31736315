// Where the API server is and how to authenticate, without @kubernetes/client-node for the common cases:
// the in-cluster service account, and a kubeconfig whose current user has a token, a client certificate or
// a user name and password. Loading that client costs ~84 MB of RSS and ~1 s of CPU at start, for a
// KubeConfig object; it is loaded only for what this file does not read (exec plugins, auth providers,
// proxies, impersonation), and does the same job then.
import { readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { RequestAuth, TlsMaterial } from './http';

/** Service account files, as client-go reads them in a Pod. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The in-cluster token file is re-read this often (bound tokens rotate; client-go and the client do the same). */
export const TOKEN_FILE_REREAD_MS = 60_000;

/** How to reach the cluster, from what the kubeconfig (or the Pod) says. */
export interface ClusterSpec {
  server: string;
  /** CA: a file read at every request (it may be replaced), or the decoded data. */
  ca: { file: string } | { data: Buffer } | null;
  skipTlsVerify: boolean;
  tlsServerName: string | null;
  user: {
    token: string | null;
    /** Re-read every TOKEN_FILE_REREAD_MS (the in-cluster service account token). */
    tokenFile: string | null;
    cert: { file: string } | { data: Buffer } | null;
    key: { file: string } | { data: Buffer } | null;
    basic: { username: string; password: string } | null;
  };
}

/** A plan: the lite loader handles it, or why the full client is needed. */
export type AccessPlan = { ok: true; spec: ClusterSpec } | { ok: false; needsClient: string };

const CLUSTER_FIELDS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'extensions',
]);
const USER_FIELDS = new Set([
  'token',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'username',
  'password',
  'extensions',
]);

const isObject = (x: unknown): x is Record<string, unknown> =>
  x !== null && typeof x === 'object' && !Array.isArray(x);

/** The named entry of a kubeconfig list (clusters, users, contexts), its inner object. */
function entry(
  doc: Record<string, unknown>,
  list: string,
  inner: string,
  name: string,
): Record<string, unknown> | null {
  const items = doc[list];
  if (!Array.isArray(items)) return null;
  for (const it of items as unknown[])
    if (isObject(it) && it.name === name) return isObject(it[inner]) ? it[inner] : {};
  return null;
}

/**
 * Reads a parsed kubeconfig document (pure). Errors name the field and value; a field this loader does not
 * read (an exec plugin, an auth provider, a proxy, impersonation...) gives needsClient naming it.
 */
export function planFromKubeconfig(doc: unknown, where: { path: string }): AccessPlan {
  const file = where.path;
  if (!isObject(doc)) throw new Error(`kubeconfig ${file}: not a YAML mapping`);
  const current = doc['current-context'];
  if (typeof current !== 'string' || current === '')
    throw new Error(`kubeconfig ${file}: current-context ${JSON.stringify(current ?? null)} is not set`);
  const ctx = entry(doc, 'contexts', 'context', current);
  if (ctx === null)
    throw new Error(`kubeconfig ${file}: contexts[] has no context ${JSON.stringify(current)}`);
  const clusterName = ctx.cluster;
  const cluster = typeof clusterName === 'string' ? entry(doc, 'clusters', 'cluster', clusterName) : null;
  if (cluster === null)
    throw new Error(
      `kubeconfig ${file}: context ${JSON.stringify(current)}: cluster ${JSON.stringify(clusterName ?? null)} is not in clusters[]`,
    );
  const userName = ctx.user;
  const user = typeof userName === 'string' ? (entry(doc, 'users', 'user', userName) ?? {}) : {};
  for (const k of Object.keys(cluster))
    if (!CLUSTER_FIELDS.has(k))
      return { ok: false, needsClient: `clusters[${JSON.stringify(clusterName)}].${k}` };
  for (const k of Object.keys(user))
    if (!USER_FIELDS.has(k)) return { ok: false, needsClient: `users[${JSON.stringify(userName)}].${k}` };
  const base = dirname(file);
  const str = (o: Record<string, unknown>, k: string, what: string): string | null => {
    const v = o[k];
    if (v === undefined || v === null || v === '') return null;
    if (typeof v !== 'string')
      throw new Error(`kubeconfig ${file}: ${what}.${k} ${JSON.stringify(v)} is not a string`);
    return v;
  };
  const clusterWhat = `clusters[${JSON.stringify(clusterName)}]`;
  const userWhat = `users[${JSON.stringify(userName)}]`;
  const material = (
    o: Record<string, unknown>,
    what: string,
    fileKey: string,
    dataKey: string,
  ): { file: string } | { data: Buffer } | null => {
    const f = str(o, fileKey, what);
    if (f !== null) return { file: isAbsolute(f) ? f : join(base, f) };
    const d = str(o, dataKey, what);
    return d === null ? null : { data: Buffer.from(d, 'base64') };
  };
  const server = str(cluster, 'server', clusterWhat);
  if (server === null) throw new Error(`kubeconfig ${file}: ${clusterWhat}.server is missing`);
  const skip = cluster['insecure-skip-tls-verify'];
  const username = str(user, 'username', userWhat);
  return {
    ok: true,
    spec: {
      server: server.replace(/\/$/, ''),
      ca: material(cluster, clusterWhat, 'certificate-authority', 'certificate-authority-data'),
      skipTlsVerify: skip === true,
      tlsServerName: str(cluster, 'tls-server-name', clusterWhat),
      user: {
        token: str(user, 'token', userWhat),
        tokenFile: null,
        cert: material(user, userWhat, 'client-certificate', 'client-certificate-data'),
        key: material(user, userWhat, 'client-key', 'client-key-data'),
        basic: username === null ? null : { username, password: str(user, 'password', userWhat) ?? '' },
      },
    },
  };
}

/** The in-cluster service account (pure over the environment), as client-go and the client build it. */
export function inClusterSpec(env: NodeJS.ProcessEnv, dir = SERVICE_ACCOUNT_DIR): ClusterSpec {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port)
    throw new Error(
      'in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a Pod? pass --kubeconfig)',
    );
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  return {
    server: `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    ca: { file: join(dir, 'ca.crt') },
    skipTlsVerify: false,
    tlsServerName: null,
    user: { token: null, tokenFile: join(dir, 'token'), cert: null, key: null, basic: null },
  };
}

export interface FileReader {
  read(path: string): Buffer;
  now(): number;
}

const realFiles: FileReader = { read: (p) => readFileSync(p), now: () => Date.now() };

/**
 * The per-request auth of a spec: files are read when asked for (a replaced CA or certificate is picked up;
 * the token file at most every TOKEN_FILE_REREAD_MS).
 */
export function authOf(spec: ClusterSpec, files: FileReader = realFiles): () => Promise<RequestAuth> {
  if (spec.server.startsWith('http:') && !spec.skipTlsVerify)
    // The client refuses the same: plain HTTP only when TLS checking was explicitly given up.
    throw new Error(
      `kubeconfig: server ${spec.server} is plain HTTP but insecure-skip-tls-verify is not set`,
    );
  let token: { text: string; atMs: number } | null = null;
  const bytes = (m: { file: string } | { data: Buffer } | null): Buffer | undefined =>
    m === null ? undefined : 'file' in m ? files.read(m.file) : m.data;
  return async () => {
    const headers: Record<string, string> = {};
    const u = spec.user;
    if (u.basic !== null)
      headers.Authorization = `Basic ${Buffer.from(`${u.basic.username}:${u.basic.password}`).toString('base64')}`;
    if (u.tokenFile !== null) {
      const now = files.now();
      if (token === null || now - token.atMs > TOKEN_FILE_REREAD_MS)
        token = { text: files.read(u.tokenFile).toString('utf8').trim(), atMs: now };
      if (token.text !== '') headers.Authorization = `Bearer ${token.text}`;
    }
    if (u.token !== null) headers.Authorization = `Bearer ${u.token}`;
    const tls: TlsMaterial = {};
    if (spec.server.startsWith('https:')) {
      const ca = bytes(spec.ca);
      const cert = bytes(u.cert);
      const key = bytes(u.key);
      if (ca !== undefined) tls.ca = ca;
      if (cert !== undefined) tls.cert = cert;
      if (key !== undefined) tls.key = key;
      if (spec.skipTlsVerify) tls.rejectUnauthorized = false;
      if (spec.tlsServerName !== null) tls.servername = spec.tlsServerName;
    }
    return { headers, tls };
  };
}

/** The plan for --kubeconfig (a file) or, without one, the in-cluster service account. */
export function accessPlan(o: { kubeconfig?: string; env?: NodeJS.ProcessEnv }): AccessPlan {
  if (o.kubeconfig === undefined) return { ok: true, spec: inClusterSpec(o.env ?? process.env) };
  let text: string;
  try {
    text = readFileSync(o.kubeconfig, 'utf8');
  } catch (e) {
    throw new Error(`kubeconfig ${o.kubeconfig}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new Error(`kubeconfig ${o.kubeconfig}: not YAML: ${(e as Error).message}`);
  }
  return planFromKubeconfig(doc, { path: o.kubeconfig });
}
