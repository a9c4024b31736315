// Read-only commands over the pinned maps: status, vips, backends, stats, conntrack, ring.
import type { Argv, CommandModule } from 'yargs';
import type { KernelDatapath } from '../../datapath/kernel';
import type { BackendSpec, VipSpec } from '../../datapath/types';
import { queryXdp } from '../../datapath/bpf';
import { canonicalIp } from '../../model/ip';
import { daemonNames, DaemonState, GlobalArgs, openPinned, withAdmin, withJson, withPins } from '../context';
import {
  CliError,
  emit,
  formatBytes,
  hostPort,
  formatRate,
  ndjsonLine,
  numberArg,
  renderTable,
} from '../output';
import { setTimeout as sleep } from 'node:timers/promises';
import { conntrackFlushCommand } from './conntrack';

/** The options every command here reads: which balancer, the daemon (for names), JSON. */
const common = <T>(y: Argv<T>): Argv<T> => withJson(withAdmin(withPins(y)));

/** A VIP as every --json document names it: always all of id, name (null without a daemon) and the key. */
export interface VipRef {
  id: number;
  name: string | null;
  address: string;
  port: number;
  protocol: string;
}

const vipRef = (v: VipSpec, names: ReadonlyMap<number, string>): VipRef => ({
  id: v.id,
  name: names.get(v.id) ?? null,
  address: v.key.address,
  port: v.key.port,
  protocol: v.key.protocol,
});

/** What an address selector asks for; port 0 is "*" (every port); null fields match anything. */
export interface VipSelector {
  address: string;
  port: number | null;
  protocol: 'tcp' | 'udp' | null;
}

/**
 * An address selector: `ADDR`, `ADDR:PORT`, `ADDR/PROTO`, `ADDR:PORT/PROTO`, with IPv6 bracketed when a port
 * follows (`[2001:db8::53]:53/udp`) and optionally otherwise (`2001:db8::53/udp`); PORT may be `*`. The address
 * comes back canonical (as the maps hold it). Null when `text` is not of this form (a name or an id).
 */
export function parseVipSelector(text: string): VipSelector | null {
  const slash = /^(.*)\/(tcp|udp)$/i.exec(text);
  const rest = slash ? slash[1]! : text;
  const protocol = slash ? (slash[2]!.toLowerCase() as 'tcp' | 'udp') : null;
  const portOf = (p: string | undefined): number | null | undefined => {
    if (p === undefined) return null;
    if (p === '*') return 0;
    const n = /^\d{1,5}$/.test(p) ? Number(p) : NaN;
    return n <= 65535 ? n : undefined;
  };
  let addr: string;
  let port: number | null | undefined = null;
  const br = /^\[([^\]]+)\](?::(\d+|\*))?$/.exec(rest);
  if (br) [addr, port] = [br[1]!, portOf(br[2])];
  else if (canonicalIp(rest) !== null)
    addr = rest; // a bare IPv6 address has colons but no port
  else {
    const v4 = /^([^:]+):(\d+|\*)$/.exec(rest);
    if (!v4) return null;
    [addr, port] = [v4[1]!, portOf(v4[2])];
  }
  const address = canonicalIp(addr);
  if (address === null || port === undefined) return null;
  return { address, port, protocol };
}

const vipText = (v: VipSpec): string =>
  `${hostPort(v.key.address, v.key.port === 0 ? '*' : v.key.port)}/${v.key.protocol}`;

/** Each VIP with the backend ids its Maglev table references and each id's share of slots. */
async function vipTables(dp: KernelDatapath): Promise<Map<number, Map<number, number>>> {
  const out = new Map<number, Map<number, number>>();
  for (const v of await dp.listVips()) {
    const t = await dp.readTable(v.id);
    const counts = new Map<number, number>();
    if (t) for (let i = 0; i < t.length; i++) counts.set(t[i]!, (counts.get(t[i]!) ?? 0) + 1);
    out.set(v.id, counts);
  }
  return out;
}

/** The `daemon` lines of status: ready or not and why, and a rejected reload, each problem on its own line. */
export function daemonLines(st: DaemonState | null): string[] {
  if (st === null) return ['daemon      not reachable (admin API: --admin)'];
  const r = st.readiness;
  const problems = [...(r?.reasons ?? [])];
  // readiness names a rejected reload already; an older daemon may only say it in reloadError.
  if (st.reloadError && !problems.some((x) => x.includes(st.reloadError!)))
    problems.push(`config reload rejected, previous config in force: ${st.reloadError}`);
  // Ready, yet serving blind: every backend of these VIPs fails its checks and all get traffic anyway.
  for (const v of st.desired?.failOpenVips ?? [])
    problems.push(`VIP ${v} fails open: every backend fails its checks, new flows go to all of them`);
  return [
    `daemon      ${r === undefined ? 'reachable' : r.ready ? (problems.length ? `ready, degraded (${problems.length})` : 'ready') : 'NOT READY'}`,
    ...problems.map((x) => `  problem   ${x}`),
  ];
}

type DaemonBackend = NonNullable<DaemonState['desired']>['vips'][number]['backends'][number];

/** The daemon's view of a backend id: its VIP's name and the backend entry. */
function daemonBackend(st: DaemonState | null, id: number): { vip: string; backend: DaemonBackend } | null {
  for (const v of st?.desired?.vips ?? [])
    for (const b of v.backends) if (b.id === id) return { vip: v.name, backend: b };
  return null;
}

export interface LastCheck {
  ok: boolean;
  detail: string;
  durationMs: number;
  /** ISO time of the check. */
  at: string;
}

function lastCheck(st: DaemonState | null, vip: string, address: string): LastCheck | null {
  const t = (st?.health ?? []).find((h) => h.vip === vip && h.address === address);
  if (!t?.last) return null;
  return {
    ok: t.last.ok,
    detail: t.last.detail,
    durationMs: t.last.durationMs,
    at: new Date(t.last.at).toISOString(),
  };
}

/** "ok HTTP 200, 3s ago" / "FAIL timeout after 500 ms, 1s ago" / "-" (no check, or no daemon). */
export function formatCheck(c: LastCheck | null, now: number): string | null {
  if (c === null) return null;
  const s = Math.max(0, Math.round((now - Date.parse(c.at)) / 1000));
  return `${c.ok ? 'ok' : 'FAIL'} ${c.detail}, ${s < 120 ? `${s}s` : `${Math.round(s / 60)}m`} ago`;
}

/** "drain", "weight 5", "drain, weight 0" (with when it was set), or null. */
export function formatOverride(o: DaemonBackend['override']): string | null {
  if (!o) return null;
  const parts = [
    ...(o.drain !== undefined ? [o.drain ? 'drain' : 'undrain'] : []),
    ...(o.weight !== undefined ? [`weight ${o.weight}`] : []),
  ];
  return `${parts.join(', ') || 'set'} (${o.at})`;
}

export interface RingRow {
  id: number;
  address: string;
  state: string | null;
  slots: number;
  share: number;
}

/**
 * The `ring` rows: every backend id in the table with its slot count (0: empty slots), plus each of the VIP's
 * members (from the daemon; null without one) that holds no slot, with 0. By id.
 */
export function ringRows(
  table: ArrayLike<number>,
  backends: ReadonlyMap<number, { address: string; state: string }>,
  members: readonly { id: number; address: string; state: string }[] | null,
): RingRow[] {
  const counts = new Map<number, number>();
  for (let i = 0; i < table.length; i++) counts.set(table[i]!, (counts.get(table[i]!) ?? 0) + 1);
  for (const m of members ?? []) if (!counts.has(m.id)) counts.set(m.id, 0);
  const member = new Map((members ?? []).map((m) => [m.id, m]));
  return [...counts.entries()]
    .sort((x, y) => x[0] - y[0])
    .map(([id, n]) => ({
      id,
      address: id === 0 ? '(empty)' : (backends.get(id)?.address ?? member.get(id)?.address ?? '?'),
      state: backends.get(id)?.state ?? member.get(id)?.state ?? null,
      slots: n,
      share: table.length === 0 ? 0 : n / table.length,
    }));
}

/** Finds a VIP by id, name (from the daemon) or address[:port[/proto]]. */
export async function findVip(dp: KernelDatapath, a: GlobalArgs, sel: string): Promise<VipSpec> {
  const vips = await dp.listVips();
  const names = (await daemonNames(a)).vips;
  const byName = vips.filter((v) => names.get(v.id) === sel);
  if (byName.length === 1) return byName[0]!;
  if (/^\d+$/.test(sel)) {
    const v = vips.find((x) => x.id === Number(sel));
    if (v) return v;
  }
  const m = parseVipSelector(sel);
  if (m) {
    const hits = vips.filter(
      (v) =>
        v.key.address === m.address &&
        (m.port === null || v.key.port === m.port) &&
        (m.protocol === null || v.key.protocol === m.protocol),
    );
    if (hits.length === 1) return hits[0]!;
    if (hits.length > 1)
      throw new CliError(
        `"${sel}" matches ${hits.length} VIPs (${hits.map(vipText).join(', ')}): add :port/proto`,
        2,
      );
  }
  throw new CliError(
    `no VIP "${sel}" (give an id, a name, or address[:port][/proto], IPv6 as [addr]:port; see peak-xdp vips)`,
    3,
  );
}

/** `peak-xdp conntrack [list]`: the default subcommand of conntrack (flush is the other, conntrack.ts). */
const conntrackListCommand: CommandModule<GlobalArgs, GlobalArgs & { vip?: string; limit?: unknown }> = {
  command: ['list', '$0'],
  describe: 'List connection-table entries (the default)',
  builder: (y) =>
    common(y)
      .option('vip', {
        type: 'string',
        describe: 'only flows to this VIP (id, name or address[:port][/proto])',
      })
      .option('limit', {
        type: 'string',
        default: '1000',
        describe: 'at most this many entries (positive integer)',
        coerce: numberArg('limit'),
      }) as unknown as Argv<GlobalArgs & { vip?: string; limit?: unknown }>,
  handler: async (a) => {
    const limit = a.limit as number;
    if (!Number.isInteger(limit) || limit < 1)
      throw new CliError(`--limit: ${limit} is not a positive integer`, 2);
    const { dp } = openPinned(a);
    try {
      const only = a.vip ? await findVip(dp, a, a.vip) : null;
      const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
      const entries = (await dp.conntrack(only ? undefined : limit))
        .filter(
          (e) =>
            only === null ||
            (e.destination === only.key.address &&
              e.protocol === only.key.protocol &&
              (only.key.port === 0 || e.destinationPort === only.key.port)),
        )
        .slice(0, limit)
        .map((e) => ({ ...e, backend: backends.get(e.backendId)?.address ?? null }));
      emit(
        a.json,
        'ConntrackList',
        { items: entries, limitReached: entries.length === limit },
        () =>
          renderTable(entries, [
            { header: 'PROTO', value: (e) => e.protocol },
            { header: 'SOURCE', value: (e) => hostPort(e.source, e.sourcePort) },
            { header: 'DESTINATION', value: (e) => hostPort(e.destination, e.destinationPort) },
            { header: 'BACKEND', value: (e) => `${e.backend ?? '?'} (#${e.backendId})` },
            { header: 'STATE', value: (e) => (e.closed ? 'closed' : 'open') },
          ]) + `\n${entries.length} entries${entries.length === limit ? ' (limit reached: --limit)' : ''}`,
      );
    } finally {
      dp.close();
    }
  },
};

export function registerInspect(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command(
      'status',
      'Is the balancer attached, how is it configured, what does it hold, is the daemon ready',
      (y2) => common(y2),
      async (a) => {
        const { dp, dir, ifname } = openPinned(a);
        try {
          const xdp = queryXdp({ ifname });
          const cfg = await dp.readConfig();
          const vips = await dp.listVips();
          const backends = await dp.listBackends();
          const c = await dp.counters();
          const daemon = await daemonNames(a);
          const st = {
            interface: ifname,
            pins: dir,
            attached: xdp.progId === dp.program.id,
            attachedProgramId: xdp.progId,
            pinnedProgramId: dp.program.id,
            mode: xdp.mode,
            config: cfg,
            vips: vips.length,
            backends: {
              total: backends.length,
              up: backends.filter((b) => b.state === 'up').length,
              draining: backends.filter((b) => b.state === 'draining').length,
              down: backends.filter((b) => b.state === 'down').length,
            },
            counters: c.global,
            daemon: daemon.state
              ? {
                  reachable: true,
                  readiness: daemon.state.readiness ?? null,
                  reloadError: daemon.state.reloadError ?? null,
                  failOpenVips: daemon.state.desired?.failOpenVips ?? [],
                }
              : { reachable: false, readiness: null, reloadError: null, failOpenVips: null },
          };
          emit(a.json, 'Status', st, () => {
            const lines = [
              `interface   ${ifname} (${st.attached ? `attached, ${xdp.mode}` : xdp.progId ? `another program (id ${xdp.progId}) is attached` : 'NOT attached'})`,
              `program     id ${dp.program.id}, pinned at ${dir}`,
              `config      ${cfg ? `own ${cfg.ownMac} -> next hop ${cfg.nextHopMac}, mtu ${cfg.mtu}, encap v4 ${cfg.encapSourceV4 ? `${cfg.encapSourceV4.prefix}/${cfg.encapSourceV4.prefixLength}` : '-'}, v6 ${cfg.encapSourceV6 ? `${cfg.encapSourceV6.prefix}/${cfg.encapSourceV6.prefixLength}` : '-'}` : 'not configured (VIP traffic passes)'}`,
              `vips        ${vips.length}`,
              `backends    ${st.backends.total} (${st.backends.up} up, ${st.backends.draining} draining, ${st.backends.down} down)`,
              ...daemonLines(daemon.state),
              '',
              renderTable(
                Object.entries(c.global).filter(([, v]) => v > 0n),
                [
                  { header: 'COUNTER', value: ([k]) => k },
                  { header: 'VALUE', value: ([, v]) => v },
                ],
              ),
            ];
            return lines.join('\n');
          });
        } finally {
          dp.close();
        }
      },
    )
    .command(
      'vips',
      'VIPs in the datapath with traffic counters',
      (y2) => common(y2),
      async (a) => {
        const { dp } = openPinned(a);
        try {
          const vips = await dp.listVips();
          const tables = await vipTables(dp);
          const c = await dp.counters();
          const names = (await daemonNames(a)).vips;
          const rows = vips
            .sort((x, y) => x.id - y.id)
            .map((v) => ({
              ...vipRef(v, names),
              tableSize: v.tableSize,
              persistence: v.flags.sourceHash ? 'source-ip' : 'none',
              conntrack: !v.flags.noConntrack,
              backends: [...(tables.get(v.id)?.keys() ?? [])].filter((id) => id !== 0).length,
              packets: c.vips.get(v.id)?.packets ?? 0n,
              bytes: c.vips.get(v.id)?.bytes ?? 0n,
            }));
          emit(a.json, 'VipList', { items: rows }, () =>
            renderTable(rows, [
              { header: 'ID', value: (r) => r.id },
              { header: 'NAME', value: (r) => r.name },
              { header: 'VIP', value: (r) => vipText(vips.find((v) => v.id === r.id)!) },
              { header: 'TABLE', value: (r) => r.tableSize },
              { header: 'PERSIST', value: (r) => r.persistence },
              { header: 'CT', value: (r) => (r.conntrack ? 'yes' : 'no') },
              { header: 'BACKENDS', value: (r) => r.backends },
              { header: 'PACKETS', value: (r) => r.packets },
              { header: 'BYTES', value: (r) => formatBytes(r.bytes), align: 'right' },
            ]),
          );
        } finally {
          dp.close();
        }
      },
    )
    .command(
      'backends',
      'Backends in the datapath: state, weight, last health check (from the daemon), VIP, traffic',
      (y2) =>
        common(y2).option('vip', {
          type: 'string',
          describe: 'only this VIP (id, name or address[:port][/proto])',
        }),
      async (a) => {
        const { dp } = openPinned(a);
        try {
          const backends = await dp.listBackends();
          const tables = await vipTables(dp);
          const vips = await dp.listVips();
          const c = await dp.counters();
          const names = await daemonNames(a, { health: true });
          const only = a.vip ? await findVip(dp, a, a.vip) : null;
          const vipOf = (b: BackendSpec): VipSpec | undefined => {
            const byDaemon = names.backendVip.get(b.id);
            if (byDaemon) return vips.find((v) => names.vips.get(v.id) === byDaemon);
            return vips.find((v) => tables.get(v.id)?.has(b.id));
          };
          const rows = backends
            .sort((x, y) => x.id - y.id)
            .map((b) => {
              const v = vipOf(b);
              const slots = v ? (tables.get(v.id)?.get(b.id) ?? 0) : 0;
              const d = daemonBackend(names.state, b.id);
              const check = d ? lastCheck(names.state, d.vip, b.address) : null;
              return {
                id: b.id,
                address: b.address,
                state: b.state,
                vip: v ? vipRef(v, names.vips) : null,
                // Desired weight and overrides come from the daemon (null without one).
                weight: d?.backend.weight ?? null,
                override: d?.backend.override ?? null,
                health: d?.backend.health ?? null,
                lastCheck: check,
                slots,
                share: v ? slots / v.tableSize : 0,
                packets: c.backends.get(b.id)?.packets ?? 0n,
                bytes: c.backends.get(b.id)?.bytes ?? 0n,
              };
            })
            .filter((r) => only === null || r.vip?.id === only.id);
          const anyOverride = rows.some((r) => r.override);
          const now = Date.now();
          emit(a.json, 'BackendList', { items: rows }, () =>
            renderTable(rows, [
              { header: 'ID', value: (r) => r.id },
              { header: 'ADDRESS', value: (r) => r.address },
              { header: 'STATE', value: (r) => r.state },
              { header: 'WEIGHT', value: (r) => r.weight, align: 'right' },
              ...(anyOverride
                ? [{ header: 'OVERRIDE', value: (r: (typeof rows)[number]) => formatOverride(r.override) }]
                : []),
              {
                header: 'VIP',
                value: (r) => (r.vip ? (r.vip.name ?? vipText(vips.find((v) => v.id === r.vip!.id)!)) : null),
              },
              { header: 'LAST CHECK', value: (r) => formatCheck(r.lastCheck, now) },
              { header: 'SHARE', value: (r) => `${(r.share * 100).toFixed(2)}%`, align: 'right' },
              { header: 'PACKETS', value: (r) => r.packets },
              { header: 'BYTES', value: (r) => formatBytes(r.bytes), align: 'right' },
            ]),
          );
        } finally {
          dp.close();
        }
      },
    )
    .command(
      'stats',
      'Packet and byte rates per VIP and backend, and the datapath counters (sampled over --interval)',
      (y2) =>
        common(y2)
          .option('interval', {
            type: 'string',
            default: '1',
            describe: 'seconds between samples (number)',
            coerce: numberArg('interval'),
          })
          .option('watch', {
            type: 'boolean',
            default: false,
            describe: 'keep printing until interrupted (--json: one JSON line per sample)',
          })
          .option('count', {
            type: 'string',
            describe: 'with --watch: stop after this many samples (positive integer)',
            coerce: numberArg('count'),
          }),
      async (a) => {
        const interval = a.interval as number;
        if (!(interval > 0 && interval <= 3600))
          throw new CliError(`--interval: ${interval} is not in (0, 3600]`, 2);
        if (a.count !== undefined && !a.watch) throw new CliError('--count: only with --watch', 2);
        if (a.count !== undefined && !(Number.isInteger(a.count) && a.count >= 1))
          throw new CliError(`--count: ${a.count} is not a positive integer`, 2);
        const { dp } = openPinned(a);
        try {
          const names = await daemonNames(a);
          const vips = await dp.listVips();
          const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
          // A backend's VIP: the daemon's, else the VIP whose table references it.
          const tables = await vipTables(dp);
          const vipOfBackend = new Map<number, VipRef>();
          for (const v of vips)
            for (const id of tables.get(v.id)?.keys() ?? [])
              if (id !== 0) vipOfBackend.set(id, vipRef(v, names.vips));
          for (const [id, name] of names.backendVip) {
            const v = vips.find((x) => names.vips.get(x.id) === name);
            if (v) vipOfBackend.set(id, vipRef(v, names.vips));
          }
          let prev = await dp.counters();
          let prevAt = performance.now();
          const samples = a.watch ? (a.count ?? Infinity) : 1;
          for (let i = 0; i < samples; i++) {
            await sleep(interval * 1000);
            const cur = await dp.counters();
            const now = performance.now();
            const dt = (now - prevAt) / 1000;
            const rate = (x: bigint, y: bigint | undefined) => Number(x - (y ?? 0n)) / dt;
            const vipRows = vips.map((v) => ({
              vip: vipRef(v, names.vips),
              pps: rate(cur.vips.get(v.id)?.packets ?? 0n, prev.vips.get(v.id)?.packets),
              bps: rate(cur.vips.get(v.id)?.bytes ?? 0n, prev.vips.get(v.id)?.bytes) * 8,
            }));
            const backendRows = [...cur.backends.keys()]
              .filter((id) => backends.has(id))
              .map((id) => ({
                id,
                address: backends.get(id)!.address,
                vip: vipOfBackend.get(id) ?? null,
                pps: rate(cur.backends.get(id)!.packets, prev.backends.get(id)?.packets),
                bps: rate(cur.backends.get(id)!.bytes, prev.backends.get(id)?.bytes) * 8,
              }));
            const counterRows = Object.entries(cur.global).map(([k, v]) => ({
              counter: k,
              total: v,
              perSecond: rate(v, prev.global[k]),
            }));
            const body = { intervalSeconds: dt, vips: vipRows, backends: backendRows, counters: counterRows };
            // --watch --json: NDJSON, one compact document per sample with its time.
            if (a.watch && a.json) process.stdout.write(ndjsonLine('Stats', body, new Date()) + '\n');
            else
              emit(a.json, 'Stats', body, () =>
                [
                  renderTable(vipRows, [
                    {
                      header: 'VIP',
                      value: (r) => r.vip.name ?? vipText(vips.find((v) => v.id === r.vip.id)!),
                    },
                    { header: 'PKT/S', value: (r) => formatRate(r.pps), align: 'right' },
                    { header: 'BIT/S', value: (r) => formatRate(r.bps), align: 'right' },
                  ]),
                  '',
                  renderTable(backendRows, [
                    { header: 'BACKEND', value: (r) => `${r.address} (#${r.id})` },
                    {
                      header: 'VIP',
                      value: (r) =>
                        r.vip ? (r.vip.name ?? vipText(vips.find((v) => v.id === r.vip!.id)!)) : null,
                    },
                    { header: 'PKT/S', value: (r) => formatRate(r.pps), align: 'right' },
                    { header: 'BIT/S', value: (r) => formatRate(r.bps), align: 'right' },
                  ]),
                  '',
                  renderTable(
                    counterRows.filter((r) => r.total > 0n),
                    [
                      { header: 'COUNTER', value: (r) => r.counter },
                      { header: 'TOTAL', value: (r) => r.total },
                      { header: 'PER SEC', value: (r) => formatRate(r.perSecond), align: 'right' },
                    ],
                  ),
                  '',
                ].join('\n'),
              );
            prev = cur;
            prevAt = now;
          }
        } finally {
          dp.close();
        }
      },
    )
    .command(
      'conntrack',
      'Connection-table entries (flow -> backend); conntrack flush deletes some',
      // `conntrack` alone lists (the default subcommand); each subcommand has only its own options.
      (y2) => y2.command(conntrackListCommand).command(conntrackFlushCommand),
    )
    .command(
      'ring [vip]',
      "A VIP's Maglev table: share of slots per backend (--slots dumps every slot)",
      (y2) =>
        common(y2)
          .positional('vip', {
            type: 'string',
            describe: 'id, name or address[:port][/proto] (IPv6 with a port: [addr]:port)',
          })
          .option('slots', {
            type: 'boolean',
            default: false,
            describe: 'print the backend id of every slot',
          }),
      async (a) => {
        if (!a.vip) throw new CliError('ring: give the VIP (id, name or address[:port][/proto])', 2);
        const { dp } = openPinned(a);
        try {
          const vip = await findVip(dp, a, a.vip);
          const table = await dp.readTable(vip.id);
          if (!table) throw new CliError(`VIP ${vipText(vip)} has no table installed`, 3);
          const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
          const daemon = await daemonNames(a);
          const members = daemon.state?.desired?.vips.find((v) => v.id === vip.id)?.backends ?? null;
          const rows = ringRows(table, backends, members);
          // Over the backends that hold slots: a drained or weight-0 member is meant to have none.
          const holders = rows.filter((r) => r.id !== 0 && r.slots > 0);
          const mean = table.length / Math.max(1, holders.length);
          const maxOverMean = Math.max(...holders.map((r) => r.slots)) / mean;
          const names = daemon.vips;
          const out = {
            vip: vipRef(vip, names),
            size: table.length,
            backends: rows,
            maxOverMean,
            ...(a.slots ? { slots: [...table] } : {}),
          };
          emit(a.json, 'Ring', out, () =>
            [
              `${vipText(vip)}: ${table.length} slots, max/mean ${Number.isFinite(maxOverMean) ? maxOverMean.toFixed(4) : '-'}`,
              renderTable(rows, [
                { header: 'ID', value: (r) => r.id },
                { header: 'BACKEND', value: (r) => r.address },
                { header: 'STATE', value: (r) => r.state },
                { header: 'SLOTS', value: (r) => r.slots },
                { header: 'SHARE', value: (r) => `${(r.share * 100).toFixed(3)}%`, align: 'right' },
              ]),
              ...(a.slots ? ['', Array.from(table).join(' ')] : []),
            ].join('\n'),
          );
        } finally {
          dp.close();
        }
      },
    ) as unknown as Argv<GlobalArgs>;
}
