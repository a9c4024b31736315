// peak-xdp trace: run one packet through the attached balancer (BPF_PROG_TEST_RUN) and say what it does.
import { isIP } from 'node:net';
import type { Argv } from 'yargs';
import { frame, parseFrame, TCP_FLAGS } from '../../datapath/packet';
import { GlobalArgs, openPinned } from '../context';
import { CliError, toJson } from '../output';

/** "10.0.0.1:1234" or "[2001:db8::1]:1234" to address and port. */
export function parseEndpoint(flag: string, text: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || isIP(m[1]!) === 0 || !(port >= 0 && port <= 65535))
    throw new CliError(`${flag}: "${text}" is not IP:PORT (use [v6]:PORT for IPv6)`, 2);
  return { address: m[1]!, port };
}

export interface TraceResult {
  verdict: string;
  backend: { id: number | null; address: string } | null;
  reason: string;
  packetHex: string;
  inputHex: string;
  durationNs: number;
}

export function registerTrace(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'trace',
    'Run one flow (or a raw frame) through the attached balancer: verdict, backend, output packet. The packet really runs: counters and the connection table see it.',
    (y2) =>
      y2
        .option('src', { type: 'string', describe: 'client IP:PORT' })
        .option('dst', { type: 'string', describe: 'VIP:PORT' })
        .option('proto', { choices: ['tcp', 'udp'] as const, default: 'tcp' as const })
        .option('syn', {
          type: 'boolean',
          default: false,
          describe: 'a TCP SYN (a new flow) instead of an ACK',
        })
        .option('packet-hex', {
          type: 'string',
          describe: 'a whole Ethernet frame as hex instead of --src/--dst',
        }),
    async (a) => {
      const { dp } = openPinned(a);
      try {
        let input: Buffer;
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
          const cfg = await dp.readConfig();
          input = frame({
            eth: { dst: cfg?.ownMac ?? '02:00:00:00:00:02', src: cfg?.nextHopMac ?? '02:00:00:00:00:01' },
            ip: { src: s.address, dst: d.address },
            l4:
              a.proto === 'udp'
                ? { type: 'udp', sport: s.port, dport: d.port, payload: Buffer.from('peak-xdp trace') }
                : { type: 'tcp', sport: s.port, dport: d.port, flags: a.syn ? TCP_FLAGS.SYN : TCP_FLAGS.ACK },
          });
        }
        const r = dp.program.testRun({ data: input, dataSizeOut: input.length + 256 });
        const out = r.data ?? Buffer.alloc(0);
        let backend: TraceResult['backend'] = null;
        let reason = '';
        if (r.verdictName === 'TX' || r.verdictName === 'REDIRECT') {
          try {
            const p = parseFrame(out);
            if (p.ip?.inner) {
              const addr = p.ip.dst;
              const b = (await dp.listBackends()).find((x) => x.address === addr);
              backend = { id: b?.id ?? null, address: addr };
              reason = `encapsulated ${p.ip.version === 4 ? 'IPv4' : 'IPv6'} ${p.ip.src} -> ${addr}`;
            } else if (p.ip) {
              reason = `reply from the LB (${p.ip.l4?.kind ?? 'ip'} to ${p.ip.dst})`;
            }
          } catch (e) {
            reason = `output did not parse: ${(e as Error).message}`;
          }
        } else if (r.verdictName === 'PASS') {
          reason = out.equals(input)
            ? 'not for a VIP (or not balanced): passed to the kernel unchanged'
            : 'passed';
        } else if (r.verdictName === 'DROP') {
          reason = 'dropped (see peak-xdp stats for the drop counters)';
        }
        const res: TraceResult = {
          verdict: r.verdictName,
          backend,
          reason,
          packetHex: out.toString('hex'),
          inputHex: input.toString('hex'),
          durationNs: r.durationNs,
        };
        if (a.json) process.stdout.write(toJson(res) + '\n');
        else
          process.stdout.write(
            [
              `verdict  ${res.verdict}`,
              `backend  ${backend ? `${backend.address}${backend.id !== null ? ` (#${backend.id})` : ''}` : '-'}`,
              `why      ${reason}`,
              `input    ${res.inputHex}`,
              `output   ${res.packetHex}`,
            ].join('\n') + '\n',
          );
      } finally {
        dp.close();
      }
    },
  ) as unknown as Argv<GlobalArgs>;
}
