// peak-xdp trace: run one packet through the attached balancer (BPF_PROG_TEST_RUN) and say what it does.
import { isIP } from 'node:net';
import type { Argv } from 'yargs';
import { frame, parseFrame, parseGue, ParsedFrame, TCP_FLAGS } from '../../datapath/packet';
import { canonicalIp } from '../../model/ip';
import { DEFAULTS } from '../../model/defaults';
import { daemonNames, GlobalArgs, openPinned, withAdmin, withJson, withPins } from '../context';
import { CliError, emit, numberArg } from '../output';
import { hintLines, lookupPinned, LookupResult, seqArg } from './lookup';

/** "10.0.0.1:1234" or "[2001:db8::1]:1234" to address and port. */
export function parseEndpoint(flag: string, text: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || isIP(m[1]!) === 0 || !(port >= 0 && port <= 65535))
    throw new CliError(`${flag}: "${text}" is not IP:PORT (use [v6]:PORT for IPv6)`, 2);
  return { address: m[1]!, port };
}

/** What each datapath counter (enum peak_counter, lower-case) says about the packet that moved it. */
export const COUNTER_MEANINGS: Readonly<Record<string, string>> = {
  rx_packets: 'a packet the balancer saw (every packet)',
  xdp_pass: 'verdict PASS: handed to the kernel stack',
  xdp_drop: 'verdict DROP: dropped',
  xdp_tx: 'verdict TX: sent back out of the interface it came in on',
  xdp_redirect: 'verdict REDIRECT: sent out of another interface (FIB)',
  pass_not_ip: 'not IPv4 or IPv6: passed to the kernel',
  pass_malformed: 'malformed or truncated headers: passed to the kernel',
  pass_not_vip: 'not for a VIP (no VIP matches its address, port and protocol): passed to the kernel',
  pass_not_ready: 'the balancer has no datapath config yet: passed to the kernel',
  pass_vip_other_proto:
    'a VIP address, but an IP protocol the balancer does not balance: passed to the kernel',
  pass_icmp_other: 'ICMP the balancer does not handle: passed to the kernel',
  drop_fragment: 'an IP fragment for a VIP: dropped (fragments cannot be balanced)',
  drop_v6_exthdr: 'IPv6 extension headers on a VIP packet: dropped',
  drop_no_table: 'the VIP has no Maglev table: dropped',
  drop_no_backend: 'no usable backend within the probe limit (down, draining or weight 0): dropped',
  drop_family: "the backend's address family cannot carry this flow: dropped",
  drop_no_source: 'no encapsulation source address for the backend family (encapSource): dropped',
  drop_adjust: 'the packet could not be grown for encapsulation: dropped',
  drop_too_big: 'too big for the MTU after encapsulation (ICMP too-big to the client): dropped',
  drop_l2_broadcast: 'a VIP packet in a broadcast or multicast Ethernet frame: dropped',
  drop_bad_source: 'a VIP packet from an address no client has, or from the VIP: dropped',
  drop_too_big_no_df: 'an IPv4 packet too big after encapsulation with DF clear (no fragmenting): dropped',
  ct_hit: 'connection-table hit: the flow keeps its backend',
  ct_miss: 'no connection-table entry: Maglev picked',
  ct_insert: 'the pick was recorded in the connection table',
  ct_reselect: "a connection-table entry was not followed (its backend takes no flows, or another VIP's)",
  ct_expired: 'the connection-table entry was idle past its timeout: re-selected',
  ct_closed:
    "the client's FIN or RST: the connection-table entry is marked closed (it serves only the connection's tail)",
  ct_closed_other:
    'the entry of a closed connection, and this packet is not in its tail (a new connection on the 5-tuple): re-selected',
  encap_v4: 'encapsulated in IPv4 (IPIP)',
  encap_v6: 'encapsulated in IPv6',
  encap_gue: 'encapsulated in GUE (UDP, encap.guePort)',
  hint_sent:
    'the GUE packet carries a previous-owner hint (the backend gives the flow a second chance there)',
  hint_skipped_owner:
    'the hint names an owner this node skipped (not up here, or a connection-table hit on a down backend)',
  stateless_forward: 'a stateless VIP: forwarded without the connection table',
  icmp_echo_reply: 'an echo request to a VIP: answered by the balancer',
  icmp_error_forwarded: 'an ICMP error about a flow: forwarded to its backend',
  icmp_too_big_sent: 'ICMP too-big / frag-needed sent to the client',
  fib_redirect: 'next hop from the FIB: redirected',
  fib_fallback: 'FIB lookup gave nothing: sent to the configured next-hop MAC',
};

/** Counters that are totals, not reasons (every packet moves rx_packets and one verdict). */
const TOTALS = new Set(['rx_packets', 'xdp_pass', 'xdp_drop', 'xdp_tx', 'xdp_redirect']);

/** Counters whose value grew from `before` to `after`, with how much, in the datapath's enum order. */
export function movedCounters(
  before: Record<string, bigint>,
  after: Record<string, bigint>,
): { counter: string; delta: bigint }[] {
  return Object.keys(after)
    .map((counter) => ({ counter, delta: after[counter]! - (before[counter] ?? 0n) }))
    .filter((x) => x.delta > 0n);
}

/**
 * The reason a packet got its verdict, from the counters it moved: the drop or pass reasons first, then what
 * happened on the way. The counters are global: other traffic in the same instant moves them too.
 */
export function reasonFromCounters(moved: readonly string[], verdict: string): string {
  const meaningful = moved.filter((c) => !TOTALS.has(c));
  const decisive = meaningful.filter((c) => c.startsWith('drop_') || c.startsWith('pass_'));
  const ordered = [...decisive, ...meaningful.filter((c) => !decisive.includes(c))];
  if (ordered.length === 0)
    return `verdict ${verdict}; no reason counter moved (nothing moved, or a counter this CLI does not know)`;
  return ordered.map((c) => COUNTER_MEANINGS[c] ?? `counter ${c} moved`).join('; ');
}

export interface TraceResult {
  verdict: string;
  backend: { id: number | null; address: string } | null;
  reason: string;
  /** Datapath counters the run moved, with what each means (other traffic at the same moment moves them too). */
  counters: { counter: string; delta: number; meaning: string }[];
  packetHex: string;
  inputHex: string;
  durationNs: number;
  /** How the output reached the backend, and the hint it carried (from the output frame); null: not forwarded. */
  encap: { kind: 'ipip' | 'gue'; udpPort?: number; hint: string | null } | null;
  /** The decision as the pinned maps predict it before the packet ran (mode, previous owner, hint); null
   * for --packet-hex. */
  decision: LookupResult | null;
}

/** What an encapsulated output frame says: the backend (outer destination), the kind, and a GUE hint. */
export function describeEncap(
  p: ParsedFrame,
  guePort: number,
): { backend: string; kind: 'ipip' | 'gue'; udpPort?: number; hint: string | null; text: string } | null {
  const ip = p.ip;
  if (!ip) return null;
  const fam = (v: number): string => (v === 4 ? 'IPv4' : 'IPv6');
  if (ip.inner)
    return {
      backend: ip.dst,
      kind: 'ipip',
      hint: null,
      text: `encapsulated ${fam(ip.version)} ${ip.src} -> ${ip.dst}`,
    };
  if (ip.l4?.kind === 'udp' && ip.l4.dport === guePort) {
    const g = parseGue(ip.l4.body);
    const hint = g.hint?.address ?? null;
    return {
      backend: ip.dst,
      kind: 'gue',
      udpPort: guePort,
      hint,
      text:
        `encapsulated GUE (UDP ${ip.l4.sport} -> ${guePort}) over ${fam(ip.version)} ${ip.src} -> ${ip.dst}` +
        (hint === null ? ', no hint' : `, hint: previous owner ${hint}`),
    };
  }
  return null;
}

export function registerTrace(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'trace',
    'Run one flow (or a raw frame) through the attached balancer: verdict, backend, output packet. The packet really runs: counters and the connection table see it.',
    (y2) =>
      withJson(withAdmin(withPins(y2)))
        .option('src', { type: 'string', describe: 'client IP:PORT' })
        .option('dst', { type: 'string', describe: 'VIP:PORT' })
        .option('proto', { choices: ['tcp', 'udp'] as const, default: 'tcp' as const })
        .option('syn', {
          type: 'boolean',
          default: false,
          describe: 'a TCP SYN (a new flow) instead of an ACK',
        })
        .option('fin', {
          type: 'boolean',
          default: false,
          describe:
            'a TCP FIN+ACK (the client ends the connection: its entry is marked closed) instead of an ACK',
        })
        .option('seq', {
          type: 'string',
          describe: "the TCP segment's sequence number (0-4294967295, default 1)",
          coerce: numberArg('seq'),
        })
        .option('packet-hex', {
          type: 'string',
          describe: 'a whole Ethernet frame as hex instead of --src/--dst',
        }),
    async (a) => {
      const { dp } = openPinned(a);
      try {
        let input: Buffer;
        let decision: LookupResult | null = null;
        const cfg = await dp.readConfig();
        if (a.packetHex !== undefined) {
          const hex = a.packetHex.replace(/\s+/g, '');
          if (!/^([0-9a-fA-F]{2})+$/.test(hex) || hex.length < 28)
            throw new CliError('--packet-hex: not an even-length hex string of at least 14 bytes', 2);
          input = Buffer.from(hex, 'hex');
        } else {
          if (!a.src || !a.dst)
            throw new CliError('give --src IP:PORT and --dst VIP:PORT, or --packet-hex', 2);
          const s = parseEndpoint('--src', a.src);
          const d = parseEndpoint('--dst', a.dst);
          if (isIP(s.address) !== isIP(d.address))
            throw new CliError(`--src ${a.src} and --dst ${a.dst} are of different IP families`, 2);
          if (a.syn && a.fin) throw new CliError('give --syn or --fin, not both', 2);
          const seq = seqArg(a.seq) ?? 1;
          // Predicted before the packet runs (it may write the connection table).
          decision = await lookupPinned(dp, {
            src: { address: canonicalIp(s.address)!, port: s.port },
            dst: { address: canonicalIp(d.address)!, port: d.port },
            protocol: a.proto,
            syn: a.syn,
            seq,
            names: (await daemonNames(a)).vips,
          });
          input = frame({
            eth: { dst: cfg?.ownMac ?? '02:00:00:00:00:02', src: cfg?.nextHopMac ?? '02:00:00:00:00:01' },
            ip: { src: s.address, dst: d.address },
            l4:
              a.proto === 'udp'
                ? { type: 'udp', sport: s.port, dport: d.port, payload: Buffer.from('peak-xdp trace') }
                : { type: 'tcp', sport: s.port, dport: d.port, seq, flags: a.syn ? TCP_FLAGS.SYN : a.fin ? TCP_FLAGS.FIN | TCP_FLAGS.ACK : TCP_FLAGS.ACK }, // prettier-ignore
          });
        }
        const before = (await dp.counters()).global;
        const r = dp.program.testRun({ data: input, dataSizeOut: input.length + 256 });
        const moved = movedCounters(before, (await dp.counters()).global);
        const out = r.data ?? Buffer.alloc(0);
        let backend: TraceResult['backend'] = null;
        let encap: TraceResult['encap'] = null;
        let reason = reasonFromCounters(
          moved.map((m) => m.counter),
          r.verdictName,
        );
        if (r.verdictName === 'TX' || r.verdictName === 'REDIRECT') {
          try {
            const p = parseFrame(out);
            const e = describeEncap(p, cfg?.guePort ?? DEFAULTS.encap.guePort);
            if (e !== null) {
              const b = (await dp.listBackends()).find((x) => x.address === e.backend);
              backend = { id: b?.id ?? null, address: e.backend };
              encap = { kind: e.kind, ...(e.udpPort ? { udpPort: e.udpPort } : {}), hint: e.hint };
              reason = e.text;
            } else if (p.ip) {
              reason = `reply from the LB (${p.ip.l4?.kind ?? 'ip'} to ${p.ip.dst})`;
            }
          } catch (e) {
            reason = `output did not parse: ${(e as Error).message}; ${reason}`;
          }
        }
        const res: TraceResult = {
          verdict: r.verdictName,
          backend,
          reason,
          counters: moved.map((m) => ({
            counter: m.counter,
            delta: Number(m.delta),
            meaning: COUNTER_MEANINGS[m.counter] ?? `counter ${m.counter} moved`,
          })),
          packetHex: out.toString('hex'),
          inputHex: input.toString('hex'),
          durationNs: r.durationNs,
          encap,
          decision,
        };
        emit(a.json, 'Trace', res, () =>
          [
            `verdict  ${res.verdict}`,
            `backend  ${backend ? `${backend.address}${backend.id !== null ? ` (#${backend.id})` : ''}` : '-'}`,
            `why      ${reason}`,
            `counters ${res.counters.map((c) => `${c.counter}+${c.delta}`).join(' ') || '-'}`,
            ...(decision === null ? [] : ['predicted:', ...hintLines(decision).map((l) => `  ${l}`)]),
            `input    ${res.inputHex}`,
            `output   ${res.packetHex}`,
          ].join('\n'),
        );
      } finally {
        dp.close();
      }
    },
  ) as unknown as Argv<GlobalArgs>;
}
