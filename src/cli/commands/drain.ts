// peak-xdp drain|undrain <vip> <backend>: a runtime override through the daemon's admin API (/v1), and the
// client the write commands share (VIP selector resolved against the daemon's VIPs, bearer token).
import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import type { KernelDatapath } from '../../datapath/kernel';
import type { VipSpec } from '../../datapath/types';
import { canonicalIp } from '../../model/ip';
import { adminUrl, DaemonState, fetchAdmin, GlobalArgs, withAdmin, withJson } from '../context';
import { CliError, emit } from '../output';
import { findVip } from './inspect';

export interface WriteArgs extends GlobalArgs {
  tokenFile?: string;
}

/** The options of the write commands: --admin, --json, --token-file. */
export function withToken<T>(y: Argv<T>): Argv<T & { tokenFile?: string }> {
  return withJson(withAdmin(y)).option('token-file', {
    type: 'string',
    describe:
      'file holding the admin token (default: env PEAK_XDP_ADMIN_TOKEN_FILE; needed unless the admin API is on loopback without admin.tokenFile)',
  });
}

/** The <vip> <backend> positionals every write command takes, plus the admin options (withToken). */
export function withTarget<T>(y: Argv<T>) {
  return withToken(
    y
      .positional('vip', { type: 'string', describe: 'VIP name, id or address[:port[/proto]]' })
      .positional('backend', { type: 'string', describe: 'backend address' }),
  );
}

/** The <vip> and <backend> of a write command, or a usage error naming the first one missing. */
export function targetArgs(a: { vip?: string; backend?: string }): { vip: string; backend: string } {
  // Optional in yargs so the error names the argument (yargs says only "got 0, need at least 2").
  if (a.vip === undefined) throw new CliError('missing argument <vip> (and <backend>)', 2);
  if (a.backend === undefined) throw new CliError('missing argument <backend>', 2);
  return { vip: a.vip, backend: a.backend };
}

function token(a: WriteArgs): string | null {
  const file = a.tokenFile ?? process.env.PEAK_XDP_ADMIN_TOKEN_FILE;
  if (!file) return null;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new CliError(`--token-file ${file}: ${(e as Error).message}`, 2);
  }
}

/** Sends a /v1 request; the response body, or a CliError (exit 1) carrying the daemon's error message. */
export async function adminWrite<T>(
  a: WriteArgs,
  method: 'POST' | 'DELETE',
  path: string,
  body: unknown,
): Promise<T> {
  const url = `${adminUrl(a)}${path}`;
  const t = token(a);
  let r: Response;
  try {
    r = await fetch(url, {
      method,
      headers: { 'content-type': 'application/json', ...(t ? { authorization: `Bearer ${t}` } : {}) },
      body: JSON.stringify(body),
      // A change waits for the daemon's sync (table rebuilds at large configs take a while).
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    throw new CliError(
      `no daemon answers at ${url} (${(e as Error).message}): is it running? --admin / PEAK_XDP_ADMIN set its address`,
      1,
    );
  }
  const text = await r.text();
  let doc: unknown = null;
  try {
    doc = JSON.parse(text);
  } catch {
    // not JSON: an older daemon without /v1, or something else listening
  }
  if (!r.ok) {
    const msg = (doc as { error?: string } | null)?.error ?? `HTTP ${r.status}: ${text.trim().slice(0, 200)}`;
    // Exit codes as everywhere: 3 not found (unknown VIP or backend), 2 refused input, 1 anything else.
    throw new CliError(msg, r.status === 404 ? 3 : r.status === 400 ? 2 : 1);
  }
  return doc as T;
}

/**
 * The daemon's name of the VIP a selector means (id, name or address[:port[/proto]], as `peak-xdp vips` and
 * `ring` take), resolved against the daemon's desired state; a selector matching nothing is passed on as a
 * name (the daemon then names it in its error).
 */
export async function vipName(a: WriteArgs, sel: string): Promise<string> {
  const st = await fetchAdmin<DaemonState>(a, '/state');
  if (st === null)
    throw new CliError(
      `no daemon answers at ${adminUrl(a)}: is it running? --admin / PEAK_XDP_ADMIN set its address`,
      1,
    );
  const vips = st.desired?.vips ?? [];
  if (vips.some((v) => v.name === sel)) return sel;
  const specs: VipSpec[] = vips.map((v) => ({
    id: v.id,
    key: { address: v.address, port: v.port, protocol: v.protocol as VipSpec['key']['protocol'] },
    flags: { sourceHash: false, noConntrack: false },
    tableSize: 0,
  }));
  // findVip reads only listVips() of the datapath: the daemon's list stands in for the pinned maps.
  const view = { listVips: async () => specs } as unknown as KernelDatapath;
  try {
    const spec = await findVip(view, a, sel);
    return vips.find((v) => v.id === spec.id)!.name;
  } catch (e) {
    if (e instanceof CliError && /matches \d+ VIPs/.test(e.message)) throw e;
    return sel;
  }
}

/** A backend argument: an IP address (canonical form). */
export function backendArg(text: string): string {
  const c = canonicalIp(text);
  if (c === null) throw new CliError(`backend: "${text}" is not an IP address`, 2);
  return c;
}

export interface OverrideReply {
  vip: string;
  backend: string;
  override: { drain?: boolean; weight?: number; at: string } | null;
}

/** Prints a daemon reply as a `kind` document with --json, else the text. */
export function printReply(a: GlobalArgs, kind: string, r: object, text: string): void {
  emit(a.json, kind, r, () => text);
}

export function registerDrain(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  for (const undo of [false, true])
    y = y.command(
      `${undo ? 'undrain' : 'drain'} [vip] [backend]`,
      undo
        ? 'Clear a drain override set by peak-xdp drain (a drain the config sets stays)'
        : 'Drain a backend (no new flows, established ones stay) through the daemon, until undrain; survives reloads and daemon restarts',
      (y2) => withTarget(y2),
      async (a) => {
        const t = targetArgs(a);
        const vip = await vipName(a, t.vip);
        const backend = backendArg(t.backend);
        const r = await adminWrite<OverrideReply>(a, undo ? 'DELETE' : 'POST', '/v1/backends/drain', {
          vip,
          backend,
        });
        printReply(
          a,
          'BackendOverride',
          r,
          undo
            ? `${r.backend} in VIP ${r.vip}: drain override cleared${r.override ? ` (still overridden: ${JSON.stringify(r.override)})` : ''}`
            : `${r.backend} in VIP ${r.vip}: drained (override since ${r.override?.at}); peak-xdp undrain clears it`,
        );
      },
    ) as unknown as Argv<GlobalArgs>;
  return y;
}
