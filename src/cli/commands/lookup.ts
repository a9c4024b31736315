// peak-xdp lookup: where a flow goes (its connection-table entry, else the Maglev pick) and the previous-owner
// hint it carries, from the pinned maps through the one selection model (flowhash.ts selectBackend). Reads
// only: no packet runs, nothing is written.
import { isIP } from 'node:net';
import type { Argv } from 'yargs';
import type { KernelDatapath } from '../../datapath/kernel';
import { flowHash, selectBackend, sourceHash, type SelectResult } from '../../datapath/flowhash';
import { decodeCtValue, encodeFlowKey, PROTO_NUMBER } from '../../datapath/layout';
import type { BackendSpec, Protocol, VipSpec } from '../../datapath/types';
import { canonicalIp } from '../../model/ip';
import { daemonNames, GlobalArgs, openPinned, withAdmin, withJson, withPins } from '../context';
import { CliError, emit, hostPort, numberArg } from '../output';
import { parseEndpoint } from './trace';

export interface Endpoint {
  address: string;
  port: number;
}

/** The VIP a packet to `dst` matches: the exact port first, then an every-port (0) VIP; null when none. */
export function matchVip(vips: readonly VipSpec[], dst: Endpoint, protocol: Protocol): VipSpec | null {
  const same = vips.filter((v) => canonicalIp(v.key.address) === dst.address && v.key.protocol === protocol);
  return same.find((v) => v.key.port === dst.port) ?? same.find((v) => v.key.port === 0) ?? null;
}

export interface LookupResult {
  vip: { id: number; name: string | null; address: string; port: number; protocol: Protocol } | null;
  /** The flow's connection-table entry (null: none, or the VIP does not use the table). closedSeq: the sequence
   * number of the FIN or RST that ended its connection (it serves only that connection's tail), else null. */
  conntrack: { backendId: number; vipId: number; backend: string | null; closedSeq: number | null } | null;
  backend: { id: number; address: string | null; state: string | null } | null;
  /** conntrack: the entry keeps the flow; maglev: a new pick; none: not balanced or dropped. */
  from: 'conntrack' | 'maglev' | 'none';
  reason: string;
  /** The datapath counters this packet would move (selection only). */
  counters: string[];
  /** The VIP keeps no connection table (PEAK_VIP_F_STATELESS): moved flows rely on the backends' second chance. */
  stateless: boolean;
  /** How the packet reaches the chosen backend (null: none chosen). */
  encap: 'ipip' | 'gue' | null;
  /** The owner of the flow's slot in the VIP's previous table, when it differs from the current owner. */
  previousOwner: { id: number; address: string | null } | null;
  /** The previous-owner hint the GUE packet carries (TCP, not a SYN), and why; null: none. */
  hint: { id: number; address: string | null; kind: 'previous-owner' | 'skipped-owner' } | null;
}

/** Explains a selection; pure. */
export function lookupReason(r: SelectResult, vipText: string, closed = false): string {
  if (r.drop === 'no-table') return `${vipText} has no Maglev table installed: dropped`;
  if (r.drop === 'no-backend') return `${vipText}: no usable backend within the probe limit: dropped`;
  // The entry's idle time is not judged here (it needs the kernel's jiffies): one idle past its timeout is
  // re-selected at the flow's next packet.
  if (r.counters.includes('ct_closed_other'))
    return "connection-table entry of a closed connection, and this sequence number is not in its tail (a new connection on the same 5-tuple): Maglev picks again"; // prettier-ignore
  if (r.from === 'conntrack' && closed)
    return 'connection-table entry of a closed connection (its FIN or RST went through): its backend keeps the connection’s tail (give --seq to judge a packet; unless idle past its timeout)'; // prettier-ignore
  if (r.from === 'conntrack')
    return 'connection-table entry: its backend keeps the flow (unless idle past its timeout)';
  if (r.reselected)
    return "connection-table entry not followed (its backend takes no flows, or it is another VIP's): Maglev picks again";
  return 'no connection-table entry: Maglev pick (recorded at the flow’s next packet)';
}

/** The lookup over read datapath state; pure apart from the selection model's compiled constants. */
export function lookupFlow(o: {
  vips: readonly VipSpec[];
  backends: readonly BackendSpec[];
  names: ReadonlyMap<number, string>;
  table: (vipId: number) => Uint32Array | null;
  conntrack: (key: Buffer) => { backendId: number; vipId: number; closedSeq?: number | null } | null;
  src: Endpoint;
  dst: Endpoint;
  protocol: Protocol;
  /** The VIP's previous table (maglev_prev_tables); absent: none. */
  previousTable?: (vipId: number) => Uint32Array | null;
  /** A TCP SYN: no connection-table read, and no hint (default: a mid-connection packet). */
  syn?: boolean;
  /** The TCP segment's sequence number: a closed entry serves only its connection's tail (absent: taken as
   * the tail). */
  seq?: number;
}): LookupResult {
  const vip = matchVip(o.vips, o.dst, o.protocol);
  if (vip === null)
    return {
      vip: null,
      conntrack: null,
      backend: null,
      from: 'none',
      reason: `${o.dst.address} port ${o.dst.port} ${o.protocol} is not a VIP: the balancer passes it to the kernel`,
      counters: [],
      stateless: false,
      encap: null,
      previousOwner: null,
      hint: null,
    };
  const byId = new Map(o.backends.map((b) => [b.id, b]));
  const proto = PROTO_NUMBER[o.protocol];
  const flow = {
    source: o.src.address,
    destination: o.dst.address,
    sourcePort: o.src.port,
    destinationPort: o.dst.port,
    proto,
  };
  const stateless = vip.flags.stateless === true;
  const useCt = !vip.flags.noConntrack && !stateless;
  const syn = o.syn === true && o.protocol === 'tcp';
  const ct = useCt && !syn ? o.conntrack(encodeFlowKey(flow)) : null;
  const table = o.table(vip.id);
  const prevTable = o.previousTable?.(vip.id) ?? null;
  const hash = vip.flags.sourceHash ? sourceHash(o.src.address) : flowHash(flow);
  const r = selectBackend({
    vipId: vip.id,
    table,
    hash,
    usable: (id) => byId.get(id)?.state === 'up',
    keepsFlows: (id) => byId.get(id)?.state === 'up' || byId.get(id)?.state === 'draining',
    readConntrack: useCt && !syn,
    recordConntrack: useCt,
    conntrack: ct,
    segment: o.protocol === 'tcp' && !syn && o.seq !== undefined ? { seq: o.seq, end: false } : null,
    // The kernel hints a mid-connection TCP packet of the flow (and an ICMP error about one; a lookup is a packet).
    wantHint: o.protocol === 'tcp' && !syn,
    gue: (id) => byId.get(id)?.encap === 'gue',
    previousTable: prevTable,
  });
  const owner = table === null || table.length === 0 ? null : table[hash % table.length]!;
  const prevId = prevTable === null || prevTable.length === 0 ? 0 : prevTable[hash % prevTable.length]!;
  const b = r.backendId === null ? undefined : byId.get(r.backendId);
  const text = `${hostPort(vip.key.address, vip.key.port)}/${vip.key.protocol}`;
  return {
    vip: { id: vip.id, name: o.names.get(vip.id) ?? null, ...vip.key },
    conntrack: ct && {
      backendId: ct.backendId,
      vipId: ct.vipId,
      backend: byId.get(ct.backendId)?.address ?? null,
      closedSeq: ct.closedSeq ?? null,
    },
    backend:
      r.backendId === null ? null : { id: r.backendId, address: b?.address ?? null, state: b?.state ?? null },
    from: r.backendId === null ? 'none' : r.from,
    reason: lookupReason(r, text, ct !== null && ct.closedSeq !== undefined && ct.closedSeq !== null),
    counters: r.counters,
    stateless,
    encap: b === undefined ? null : (b.encap ?? 'ipip'),
    previousOwner:
      prevId !== 0 && prevId !== owner ? { id: prevId, address: byId.get(prevId)?.address ?? null } : null,
    hint:
      r.hint === null
        ? null
        : {
            id: r.hint.backendId,
            address: byId.get(r.hint.backendId)?.address ?? null,
            kind: r.hint.skipped ? 'skipped-owner' : 'previous-owner',
          },
  };
}

/** The lines `lookup` and `trace` print about encapsulation, the previous owner and the hint. */
export function hintLines(r: LookupResult): string[] {
  const who = (x: { id: number; address: string | null }): string => `${x.address ?? '?'} (#${x.id})`;
  return [
    `mode       ${r.vip === null ? '-' : r.stateless ? 'stateless (no connection table)' : 'connection table'}`,
    `encap      ${r.encap ?? '-'}`,
    `previous   ${r.previousOwner ? who(r.previousOwner) : '-'}`,
    `hint       ${r.hint ? `${who(r.hint)}, ${r.hint.kind === 'skipped-owner' ? 'the owner this node skipped' : "the slot's previous owner"}` : '-'}`,
  ];
}

/** --seq: a TCP sequence number, or undefined when not given. */
export function seqArg(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new CliError(`--seq: ${String(v)} is not a TCP sequence number (0-4294967295)`, 2);
  return v;
}

function endpoint(flag: string, text: string | undefined): Endpoint {
  if (text === undefined) throw new CliError(`give ${flag} IP:PORT`, 2);
  const e = parseEndpoint(flag, text);
  return { address: canonicalIp(e.address)!, port: e.port };
}

/** Each VIP's table and previous table (maglev_tables, maglev_prev_tables). */
export async function readTables(
  dp: Pick<KernelDatapath, 'readTable' | 'readPreviousTable'>,
  vips: readonly VipSpec[],
): Promise<{ current: Map<number, Uint32Array | null>; previous: Map<number, Uint32Array | null> }> {
  const current = new Map<number, Uint32Array | null>();
  const previous = new Map<number, Uint32Array | null>();
  for (const v of vips) {
    current.set(v.id, await dp.readTable(v.id));
    previous.set(v.id, await dp.readPreviousTable(v.id));
  }
  return { current, previous };
}

/** lookupFlow over a pinned datapath's maps (lookup, and trace before it runs its packet). */
export async function lookupPinned(
  dp: KernelDatapath,
  o: {
    src: Endpoint;
    dst: Endpoint;
    protocol: Protocol;
    syn: boolean;
    seq?: number;
    names: ReadonlyMap<number, string>;
  },
): Promise<LookupResult> {
  const vips = await dp.listVips();
  const tables = await readTables(dp, vips);
  return lookupFlow({
    vips,
    backends: await dp.listBackends(),
    names: o.names,
    table: (id) => tables.current.get(id) ?? null,
    previousTable: (id) => tables.previous.get(id) ?? null,
    conntrack: (key) => {
      const v = dp.maps.conntrack.lookup(key);
      return v && decodeCtValue(v);
    },
    src: o.src,
    dst: o.dst,
    protocol: o.protocol,
    syn: o.syn,
    seq: o.seq,
  });
}

export function registerLookup(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'lookup',
    'Which backend a flow goes to: its connection-table entry, else the Maglev pick (reads the pinned maps; sends and writes nothing)',
    (y2) =>
      withJson(withAdmin(withPins(y2)))
        .option('src', { type: 'string', demandOption: true, describe: 'client IP:PORT' })
        .option('dst', { type: 'string', demandOption: true, describe: 'VIP:PORT' })
        .option('proto', { choices: ['tcp', 'udp'] as const, default: 'tcp' as const })
        .option('syn', {
          type: 'boolean',
          default: false,
          describe: 'a TCP SYN (a new flow): no connection-table read, no hint',
        })
        .option('seq', {
          type: 'string',
          describe:
            "the TCP segment's sequence number (0-4294967295): an entry of a closed connection serves only its tail",
          coerce: numberArg('seq'),
        }),
    async (a) => {
      const src = endpoint('--src', a.src);
      const dst = endpoint('--dst', a.dst);
      if (isIP(src.address) !== isIP(dst.address))
        throw new CliError(`--src ${a.src} and --dst ${a.dst} are of different IP families`, 2);
      const { dp } = openPinned(a);
      try {
        const r = await lookupPinned(dp, {
          src,
          dst,
          protocol: a.proto,
          syn: a.syn,
          seq: seqArg(a.seq),
          names: (await daemonNames(a)).vips,
        });
        emit(a.json, 'Lookup', r, () =>
          [
            `vip        ${r.vip ? `${r.vip.name ?? `#${r.vip.id}`} (${hostPort(r.vip.address, r.vip.port)}/${r.vip.protocol})` : '-'}`,
            `conntrack  ${r.conntrack ? `entry -> ${r.conntrack.backend ?? '?'} (#${r.conntrack.backendId})${r.conntrack.closedSeq === null ? '' : `, closed at seq ${r.conntrack.closedSeq}`}` : 'no entry'}`,
            `backend    ${r.backend ? `${r.backend.address ?? '?'} (#${r.backend.id}, ${r.backend.state ?? '?'})` : '-'}`,
            `why        ${r.reason}`,
            ...hintLines(r),
          ].join('\n'),
        );
      } finally {
        dp.close();
      }
    },
  ) as unknown as Argv<GlobalArgs>;
}
