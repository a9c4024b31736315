// peak-xdp drain|undrain <vip> <backend>: a runtime override through the daemon's admin API (/v1), and the
// client the write commands share (VIP selector resolved against the daemon's VIPs, bearer token).
import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import type { KernelDatapath } from '../../datapath/kernel';
import type { VipSpec } from '../../datapath/types';
import { canonicalIp } from '../../model/ip';
import { adminUrl, DaemonState, fetchAdmin, GlobalArgs, statePath, withAdmin, withJson } from '../context';
import { CliError, emit } from '../output';
import { findVip, VipRef } from './inspect';

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

type DaemonVip = NonNullable<DaemonState['desired']>['vips'][number];

/** A VIP of the daemon's /state as every --json document names it. */
export const daemonVipRef = (v: DaemonVip): VipRef => ({
  id: v.id,
  name: v.name,
  address: v.address,
  port: v.port,
  protocol: v.protocol,
});

/** The daemon's /state, or a CliError (exit 1): the write commands need the daemon anyway. */
async function daemonState(a: WriteArgs): Promise<DaemonState> {
  const st = await fetchAdmin<DaemonState>(a, statePath(['desired']));
  if (st === null)
    throw new CliError(
      `no daemon answers at ${adminUrl(a)}: is it running? --admin / PEAK_XDP_ADMIN set its address`,
      1,
    );
  return st;
}

/**
 * The daemon's VIP a selector means (id, name or address[:port[/proto]], as `peak-xdp vips` and `ring` take),
 * resolved against the daemon's desired state: its name (what the admin API takes) and its VipRef. A selector
 * matching nothing is passed on as a name with a null ref (the daemon then names it in its error).
 */
export async function daemonVip(a: WriteArgs, sel: string): Promise<{ name: string; ref: VipRef | null }> {
  const vips = (await daemonState(a)).desired?.vips ?? [];
  const found = (v: DaemonVip | undefined) =>
    v ? { name: v.name, ref: daemonVipRef(v) } : { name: sel, ref: null };
  const named = vips.find((v) => v.name === sel);
  if (named) return found(named);
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
    return found(vips.find((v) => v.id === spec.id));
  } catch (e) {
    if (e instanceof CliError && /matches \d+ VIPs/.test(e.message)) throw e;
    return found(undefined);
  }
}

/**
 * The VipRef of the VIP the daemon's reply names: `known` when it is that one, else looked up again in /state
 * (the daemon resolved a selector we passed on as a name); null only for a VIP the daemon no longer has.
 */
export async function replyVipRef(a: WriteArgs, name: string, known: VipRef | null): Promise<VipRef | null> {
  if (known?.name === name) return known;
  const v = (await daemonState(a)).desired?.vips.find((x) => x.name === name);
  return v ? daemonVipRef(v) : null;
}

/** A backend argument: an IP address (canonical form). */
export function backendArg(text: string): string {
  const c = canonicalIp(text);
  if (c === null) throw new CliError(`backend: "${text}" is not an IP address`, 2);
  return c;
}

/** An override as the daemon reports it. */
export interface OverrideView {
  drain?: boolean;
  drainAt?: string;
  weight?: number;
  weightAt?: string;
  at: string;
}

/** The admin API's reply to a drain or weight change (`changed`: absent from daemons before it was added). */
export interface OverrideReply {
  vip: string;
  backend: string;
  override: OverrideView | null;
  changed?: boolean;
}

/** "drain since T" / "weight 3 since T" / both, comma-separated: an override in words. */
export function overrideWords(o: OverrideView): string {
  return [
    ...(o.drain ? [`drain since ${o.drainAt ?? o.at}`] : []),
    ...(o.weight !== undefined ? [`weight ${o.weight} since ${o.weightAt ?? o.at}`] : []),
  ].join(', ');
}

/** The text of a drain/undrain reply. */
export function drainText(undo: boolean, r: OverrideReply): string {
  const head = `${r.backend} in VIP ${r.vip}`;
  const rest = r.override ? `; still overridden: ${overrideWords(r.override)}` : '';
  if (undo)
    return r.changed === false
      ? `${head}: was not drained (no drain override to clear)${rest}`
      : `${head}: drain override cleared${rest}`;
  const since = r.override?.drainAt ?? r.override?.at;
  return r.changed === false
    ? `${head}: drained (already, since ${since}); peak-xdp undrain clears it`
    : `${head}: drained (since ${since}); peak-xdp undrain clears it`;
}

/** The --json body of a drain/weight reply: the daemon's fields, the VIP as a VipRef. */
export async function overrideBody(
  a: WriteArgs,
  r: OverrideReply,
  known: VipRef | null,
): Promise<Omit<OverrideReply, 'vip'> & { vip: VipRef | null }> {
  return { ...r, vip: await replyVipRef(a, r.vip, known) };
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
        : 'Drain a backend (no new flows, established ones stay) through the daemon, until undrain; survives reloads and daemon restarts. While its VIP fails open (every backend failing its checks), a drained backend is taken out as down: its established flows move too',
      (y2) => withTarget(y2),
      async (a) => {
        const t = targetArgs(a);
        const vip = await daemonVip(a, t.vip);
        const backend = backendArg(t.backend);
        const r = await adminWrite<OverrideReply>(a, undo ? 'DELETE' : 'POST', '/v1/backends/drain', {
          vip: vip.name,
          backend,
        });
        printReply(a, 'BackendOverride', await overrideBody(a, r, vip.ref), drainText(undo, r));
      },
    ) as unknown as Argv<GlobalArgs>;
  return y;
}
