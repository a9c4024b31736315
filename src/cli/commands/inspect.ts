// Read-only commands over the pinned maps: status, vips, backends, stats, conntrack, ring.
import type { Argv } from 'yargs';
import type { KernelDatapath } from '../../datapath/kernel';
import type { BackendSpec, VipSpec } from '../../datapath/types';
import { queryXdp } from '../../datapath/bpf';
import { daemonNames, GlobalArgs, openPinned } from '../context';
import { CliError, formatBytes, formatRate, renderTable, toJson } from '../output';
import { setTimeout as sleep } from 'node:timers/promises';

const vipText = (v: VipSpec): string =>
  `${v.key.address.includes(':') ? `[${v.key.address}]` : v.key.address}:${v.key.port === 0 ? '*' : v.key.port}/${v.key.protocol}`;

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

function print(a: GlobalArgs, json: unknown, text: () => string): void {
  process.stdout.write((a.json ? toJson(json) : text()) + '\n');
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
  const m = /^\[?([0-9a-fA-F:.]+?)\]?(?::(\d+|\*))?(?:\/(tcp|udp))?$/.exec(sel);
  if (m) {
    const hits = vips.filter(
      (v) =>
        v.key.address === m[1] &&
        (m[2] === undefined || String(v.key.port) === m[2] || (m[2] === '*' && v.key.port === 0)) &&
        (m[3] === undefined || v.key.protocol === m[3]),
    );
    if (hits.length === 1) return hits[0]!;
    if (hits.length > 1)
      throw new CliError(
        `"${sel}" matches ${hits.length} VIPs (${hits.map(vipText).join(', ')}): add :port/proto`,
        2,
      );
  }
  throw new CliError(`no VIP "${sel}" (give an id, a name, or address[:port[/proto]]; see peak-xdp vips)`, 2);
}

export function registerInspect(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command(
      'status',
      'Is the balancer attached, how is it configured, what does it hold',
      () => undefined,
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
              ? { reachable: true, readiness: daemon.state.readiness }
              : { reachable: false },
          };
          print(a, st, () => {
            const lines = [
              `interface   ${ifname} (${st.attached ? `attached, ${xdp.mode}` : xdp.progId ? `another program (id ${xdp.progId}) is attached` : 'NOT attached'})`,
              `program     id ${dp.program.id}, pinned at ${dir}`,
              `config      ${cfg ? `own ${cfg.ownMac} -> next hop ${cfg.nextHopMac}, mtu ${cfg.mtu}, encap v4 ${cfg.encapSourceV4 ? `${cfg.encapSourceV4.prefix}/${cfg.encapSourceV4.prefixLength}` : '-'}, v6 ${cfg.encapSourceV6 ? `${cfg.encapSourceV6.prefix}/${cfg.encapSourceV6.prefixLength}` : '-'}` : 'not configured (VIP traffic passes)'}`,
              `vips        ${vips.length}`,
              `backends    ${st.backends.total} (${st.backends.up} up, ${st.backends.draining} draining, ${st.backends.down} down)`,
              `daemon      ${daemon.state ? (daemon.state.readiness?.ready ? 'ready' : `not ready: ${daemon.state.readiness?.reasons.join('; ')}`) : 'not reachable (admin API)'}`,
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
      () => undefined,
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
              id: v.id,
              name: names.get(v.id) ?? null,
              address: v.key.address,
              port: v.key.port,
              protocol: v.key.protocol,
              tableSize: v.tableSize,
              persistence: v.flags.sourceHash ? 'source-ip' : 'none',
              conntrack: !v.flags.noConntrack,
              backends: [...(tables.get(v.id)?.keys() ?? [])].filter((id) => id !== 0).length,
              packets: c.vips.get(v.id)?.packets ?? 0n,
              bytes: c.vips.get(v.id)?.bytes ?? 0n,
            }));
          print(a, rows, () =>
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
      'Backends in the datapath: state, VIP, traffic',
      (y2) =>
        y2.option('vip', { type: 'string', describe: 'only this VIP (id, name or address[:port[/proto]])' }),
      async (a) => {
        const { dp } = openPinned(a);
        try {
          const backends = await dp.listBackends();
          const tables = await vipTables(dp);
          const vips = await dp.listVips();
          const c = await dp.counters();
          const names = await daemonNames(a);
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
              return {
                id: b.id,
                address: b.address,
                state: b.state,
                vipId: v?.id ?? null,
                vip: v ? (names.vips.get(v.id) ?? vipText(v)) : null,
                slots,
                share: v ? slots / v.tableSize : 0,
                packets: c.backends.get(b.id)?.packets ?? 0n,
                bytes: c.backends.get(b.id)?.bytes ?? 0n,
              };
            })
            .filter((r) => only === null || r.vipId === only.id);
          print(a, rows, () =>
            renderTable(rows, [
              { header: 'ID', value: (r) => r.id },
              { header: 'ADDRESS', value: (r) => r.address },
              { header: 'STATE', value: (r) => r.state },
              { header: 'VIP', value: (r) => r.vip },
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
        y2
          .option('interval', { type: 'number', default: 1, describe: 'seconds between samples' })
          .option('watch', { type: 'boolean', default: false, describe: 'keep printing until interrupted' })
          .option('count', { type: 'number', describe: 'with --watch: stop after this many samples' }),
      async (a) => {
        if (!(a.interval > 0 && a.interval <= 3600))
          throw new CliError(`--interval: ${a.interval} is not in (0, 3600]`, 2);
        const { dp } = openPinned(a);
        try {
          const names = await daemonNames(a);
          const vips = await dp.listVips();
          const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
          let prev = await dp.counters();
          let prevAt = performance.now();
          const samples = a.watch ? (a.count ?? Infinity) : 1;
          for (let i = 0; i < samples; i++) {
            await sleep(a.interval * 1000);
            const cur = await dp.counters();
            const now = performance.now();
            const dt = (now - prevAt) / 1000;
            const rate = (x: bigint, y: bigint | undefined) => Number(x - (y ?? 0n)) / dt;
            const vipRows = vips.map((v) => ({
              id: v.id,
              vip: names.vips.get(v.id) ?? vipText(v),
              pps: rate(cur.vips.get(v.id)?.packets ?? 0n, prev.vips.get(v.id)?.packets),
              bps: rate(cur.vips.get(v.id)?.bytes ?? 0n, prev.vips.get(v.id)?.bytes) * 8,
            }));
            const backendRows = [...cur.backends.keys()]
              .filter((id) => backends.has(id))
              .map((id) => ({
                id,
                backend: backends.get(id)!.address,
                vip: names.backendVip.get(id) ?? null,
                pps: rate(cur.backends.get(id)!.packets, prev.backends.get(id)?.packets),
                bps: rate(cur.backends.get(id)!.bytes, prev.backends.get(id)?.bytes) * 8,
              }));
            const counterRows = Object.entries(cur.global).map(([k, v]) => ({
              counter: k,
              total: v,
              perSecond: rate(v, prev.global[k]),
            }));
            print(
              a,
              { intervalSeconds: dt, vips: vipRows, backends: backendRows, counters: counterRows },
              () =>
                [
                  renderTable(vipRows, [
                    { header: 'VIP', value: (r) => r.vip },
                    { header: 'PKT/S', value: (r) => formatRate(r.pps), align: 'right' },
                    { header: 'BIT/S', value: (r) => formatRate(r.bps), align: 'right' },
                  ]),
                  '',
                  renderTable(backendRows, [
                    { header: 'BACKEND', value: (r) => `${r.backend} (#${r.id})` },
                    { header: 'VIP', value: (r) => r.vip },
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
      'Connection-table entries (flow -> backend)',
      (y2) =>
        y2
          .option('vip', {
            type: 'string',
            describe: 'only flows to this VIP (id, name or address[:port[/proto]])',
          })
          .option('limit', { type: 'number', default: 1000, describe: 'at most this many entries' }),
      async (a) => {
        if (!Number.isInteger(a.limit) || a.limit < 1)
          throw new CliError(`--limit: ${a.limit} is not a positive integer`, 2);
        const { dp } = openPinned(a);
        try {
          const only = a.vip ? await findVip(dp, a, a.vip) : null;
          const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
          const entries = (await dp.conntrack(only ? undefined : a.limit))
            .filter(
              (e) =>
                only === null ||
                (e.destination === only.key.address &&
                  e.protocol === only.key.protocol &&
                  (only.key.port === 0 || e.destinationPort === only.key.port)),
            )
            .slice(0, a.limit)
            .map((e) => ({ ...e, backend: backends.get(e.backendId)?.address ?? null }));
          print(
            a,
            entries,
            () =>
              renderTable(entries, [
                { header: 'PROTO', value: (e) => e.protocol },
                { header: 'SOURCE', value: (e) => `${e.source}:${e.sourcePort}` },
                { header: 'DESTINATION', value: (e) => `${e.destination}:${e.destinationPort}` },
                { header: 'BACKEND', value: (e) => `${e.backend ?? '?'} (#${e.backendId})` },
              ]) +
              `\n${entries.length} entries${entries.length === a.limit ? ' (limit reached: --limit)' : ''}`,
          );
        } finally {
          dp.close();
        }
      },
    )
    .command(
      'ring <vip>',
      "A VIP's Maglev table: share of slots per backend (--slots dumps every slot)",
      (y2) =>
        y2
          .positional('vip', {
            type: 'string',
            demandOption: true,
            describe: 'id, name or address[:port[/proto]]',
          })
          .option('slots', {
            type: 'boolean',
            default: false,
            describe: 'print the backend id of every slot',
          }),
      async (a) => {
        const { dp } = openPinned(a);
        try {
          const vip = await findVip(dp, a, a.vip);
          const table = await dp.readTable(vip.id);
          if (!table) throw new CliError(`VIP ${vipText(vip)} has no table installed`, 3);
          const backends = new Map((await dp.listBackends()).map((b) => [b.id, b]));
          const counts = new Map<number, number>();
          for (let i = 0; i < table.length; i++) counts.set(table[i]!, (counts.get(table[i]!) ?? 0) + 1);
          const rows = [...counts.entries()]
            .sort((x, y) => x[0] - y[0])
            .map(([id, n]) => ({
              id,
              address: id === 0 ? '(empty)' : (backends.get(id)?.address ?? '?'),
              state: backends.get(id)?.state ?? null,
              slots: n,
              share: n / table.length,
            }));
          const mean = table.length / Math.max(1, rows.filter((r) => r.id !== 0).length);
          const maxOverMean = Math.max(...rows.filter((r) => r.id !== 0).map((r) => r.slots)) / mean;
          const out = {
            vip: vipText(vip),
            size: table.length,
            backends: rows,
            maxOverMean,
            ...(a.slots ? { slots: [...table] } : {}),
          };
          print(a, out, () =>
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
