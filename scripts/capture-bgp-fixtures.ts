// Captures the BGP messages BIRD 2, FRR (bgpd) and GoBGP send, for the codec's decode tests
// (test/fixtures/bgp/*.hex, read by test/unit/bgp-codec-captured.test.ts).
//
// Usage (root; after npm run build:ts):
//   node dist/scripts/capture-bgp-fixtures.js [--out DIR] [--only bird,frr,gobgp] [--bad type9|keepalive20|withdrawnOverrun]
//
// Per daemon: two fresh network namespaces joined by a veth pair (router 10.0.0.1 / fd00::1, capture side
// 10.0.0.2 / fd00::2), the daemon in the router namespace as AS 65000 announcing 198.51.100.0/24 and
// 203.0.113.0/25 (IPv4) and 2001:db8:100::/48 (IPv6) with community 65000:100, large community 65000:1:2 and
// MED 50, passive. A raw client (this script with --client, in the capture namespace) connects once per
// family as AS 65001, sends OPEN and KEEPALIVE, records every message the daemon sends until its End-of-RIB
// (or 3 s of silence), then sends a message of unknown type 9 and records the NOTIFICATION it gets back.
// Everything stays inside the two namespaces, which are deleted at the end, even on failure.
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AFI_IPV4,
  AFI_IPV6,
  decodeMessage,
  encodeKeepalive,
  encodeOpen,
  endOfRibFamily,
  HEADER_LEN,
  MsgType,
  SAFI_UNICAST,
  splitFrames,
} from '../src/bgp/codec';
import { packageRoot } from '../src/paths';

type Kind = 'bird' | 'frr' | 'gobgp';
type Fam = 'ipv4' | 'ipv6';

const ROUTER = { v4: '10.0.0.1', v6: 'fd00::1', asn: 65000 };
const CAPTURE = { v4: '10.0.0.2', v6: 'fd00::2', asn: 65001 };
/** Raw message: marker, length, type, body. */
function rawMessage(type: number, body: number[]): Buffer {
  const b = Buffer.alloc(HEADER_LEN + body.length, 0xff);
  b.writeUInt16BE(HEADER_LEN + body.length, 16);
  b[18] = type;
  Buffer.from(body).copy(b, HEADER_LEN);
  return b;
}

/**
 * Bad messages we send to draw a NOTIFICATION, chosen per daemon (what each answers is itself a finding):
 * an unknown type 9 (Message Header Error / Bad Message Type) for BIRD and FRR; GoBGP 3.10 panics on it (nil
 * dereference in fsmHandler.handlingError) and ignores a 20-octet KEEPALIVE (so does BIRD 2.0.12), so it gets
 * an UPDATE whose withdrawn-routes length overruns the message (UPDATE Message Error / Malformed Attribute List).
 */
const BAD_MESSAGES = {
  type9: { about: 'a message of unknown type 9', bytes: rawMessage(9, []) },
  keepalive20: { about: 'a KEEPALIVE of 20 octets', bytes: rawMessage(MsgType.KEEPALIVE, [0]) },
  withdrawnOverrun: {
    about: 'an UPDATE whose withdrawn routes length (255) overruns it',
    bytes: rawMessage(MsgType.UPDATE, [0, 255, 0, 0]),
  },
} as const;
type BadName = keyof typeof BAD_MESSAGES;

/** Hold time both sides propose (s): long enough that no KEEPALIVE timing matters during a capture. */
const HOLD = 9;

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 15000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

/** First line a `--version` prints, on stdout or stderr (bird uses stderr). */
function versionOf(cmd: string): string {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 5000 });
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim().split('\n')[0]?.trim() || `${cmd} (version unknown)`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

// -----------------------------------------------------------------------------------------------------
// The client side (runs inside the capture namespace)

interface Captured {
  family: Fam;
  /** Messages the daemon sent, in order, as hex. */
  messages: string[];
  notes: string[];
}

async function client(family: Fam, bad: BadName): Promise<Captured> {
  const remote = family === 'ipv4' ? ROUTER.v4 : ROUTER.v6;
  const local = family === 'ipv4' ? CAPTURE.v4 : CAPTURE.v6;
  const afi = family === 'ipv4' ? AFI_IPV4 : AFI_IPV6;
  const out: Captured = { family, messages: [], notes: [] };
  const sock: Socket = connect({ host: remote, port: 179, localAddress: local });
  let rx = Buffer.alloc(0);
  let lastAt = Date.now();
  let eor = false;
  let notified = false;
  let closed = false;
  let sentBad = false;
  sock.on('error', (e) => out.notes.push(`socket error: ${e.message}`));
  sock.on('close', () => (closed = true));
  sock.on('connect', () =>
    sock.write(
      encodeOpen({
        asn: CAPTURE.asn,
        holdTime: HOLD,
        routerId: CAPTURE.v4,
        families: [{ afi, safi: SAFI_UNICAST }],
        routeRefresh: true,
        gracefulRestart: { restartTime: 120 },
      }),
    ),
  );
  sock.on('data', (d: Buffer) => {
    rx = Buffer.concat([rx, d]);
    const { frames, rest, error } = splitFrames(rx);
    rx = Buffer.from(rest);
    if (error) out.notes.push(`framing error: ${error.reason}`);
    for (const f of frames) {
      lastAt = Date.now();
      out.messages.push(f.toString('hex'));
      const t = f[18] as number;
      if (t === MsgType.OPEN) sock.write(encodeKeepalive());
      if (t === MsgType.NOTIFICATION) notified = true;
      if (t === MsgType.UPDATE) {
        const m = decodeMessage(f, { fourOctetAs: true });
        if (m.ok && m.msg.type === MsgType.UPDATE && endOfRibFamily(m.msg)?.afi === afi) eor = true;
      }
    }
  });
  const t0 = Date.now();
  // Until End-of-RIB, or 3 s without a message after the first UPDATE, bounded at 15 s in all.
  while (!closed && !eor && Date.now() - t0 < 15000) {
    const sawUpdate = out.messages.some((h) => parseInt(h.slice(36, 38), 16) === MsgType.UPDATE);
    if (sawUpdate && Date.now() - lastAt > 3000) break;
    await sleep(50);
  }
  if (!eor) out.notes.push('no End-of-RIB for the family within the wait');
  if (!closed) {
    sock.write(BAD_MESSAGES[bad].bytes);
    sentBad = true;
    const t1 = Date.now();
    while (!notified && !closed && Date.now() - t1 < 5000) await sleep(50);
  }
  if (sentBad && !notified) out.notes.push('no NOTIFICATION after the bad message');
  sock.destroy();
  return out;
}

// -----------------------------------------------------------------------------------------------------
// The orchestrator (root namespace)

interface Lab {
  router: string;
  capture: string;
  dir: string;
  destroy(): void;
}

function makeLab(kind: Kind): Lab {
  const id = `${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}`;
  const router = `h4cap-r${kind[0]}-${id}`;
  const capture = `h4cap-c${kind[0]}-${id}`;
  const dir = mkdtempSync(join(tmpdir(), `h4cap-${kind}-`));
  sh('chmod', ['755', dir]);
  const made: string[] = [];
  const destroy = (): void => {
    for (const ns of made.reverse()) sh('ip', ['netns', 'del', ns], true);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const ns of [router, capture]) {
      sh('ip', ['netns', 'add', ns]);
      made.push(ns);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const rIf = `h4r${id}`.slice(0, 15);
    const cIf = `h4c${id}`.slice(0, 15);
    sh('ip', ['link', 'add', rIf, 'netns', router, 'type', 'veth', 'peer', 'name', cIf, 'netns', capture]);
    for (const [ns, ifn, a] of [
      [router, rIf, ROUTER],
      [capture, cIf, CAPTURE],
    ] as const) {
      sh('ip', ['-n', ns, 'addr', 'add', `${a.v4}/24`, 'dev', ifn]);
      sh('ip', ['-n', ns, '-6', 'addr', 'add', `${a.v6}/64`, 'dev', ifn, 'nodad']);
      sh('ip', ['-n', ns, 'link', 'set', ifn, 'up']);
    }
  } catch (e) {
    destroy();
    throw e;
  }
  return { router, capture, dir, destroy };
}

function spawnIn(ns: string, args: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[${args[0]}] ${d.toString()}`));
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await done;
  clearTimeout(t);
}

const listening = (ns: string): boolean =>
  /:179\b/.test(sh('ip', ['netns', 'exec', ns, 'ss', '-Htln', 'sport', '= :179'], true));

interface Daemon {
  version: string;
  children: ChildProcess[];
}

async function startBird(lab: Lab): Promise<Daemon> {
  const conf = join(lab.dir, 'bird.conf');
  writeFileSync(
    conf,
    `router id ${ROUTER.v4};
protocol device { scan time 1; }
protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; route 203.0.113.0/25 blackhole; }
protocol static s6 { ipv6; route 2001:db8:100::/48 blackhole; }
filter tag_routes { bgp_community.add((65000,100)); bgp_large_community.add((65000,1,2)); bgp_med = 50; accept; }
protocol bgp v4 {
  local as ${ROUTER.asn}; neighbor ${CAPTURE.v4} as ${CAPTURE.asn}; passive on; hold time ${HOLD};
  graceful restart on; ipv4 { import none; export filter tag_routes; };
}
protocol bgp v6 {
  local as ${ROUTER.asn}; neighbor ${CAPTURE.v6} as ${CAPTURE.asn}; passive on; hold time ${HOLD};
  graceful restart on; ipv6 { import none; export filter tag_routes; };
}
`,
  );
  const sock = join(lab.dir, 'bird.ctl');
  const child = spawnIn(lab.router, ['bird', '-f', '-c', conf, '-s', sock, '-P', join(lab.dir, 'bird.pid')]);
  await waitFor('bird listening on 179', () => listening(lab.router), 8000);
  return { version: versionOf('bird'), children: [child] };
}

async function startFrr(lab: Lab): Promise<Daemon> {
  const uid = Number(sh('id', ['-u', 'frr']).trim());
  const gid = Number(sh('id', ['-g', 'frr']).trim());
  chownSync(lab.dir, uid, gid);
  const zsock = join(lab.dir, 'zserv.api');
  const bgpConf = join(lab.dir, 'bgpd.conf');
  const zConf = join(lab.dir, 'zebra.conf');
  writeFileSync(
    bgpConf,
    `hostname r
log stdout informational
route-map TAG permit 10
 set community 65000:100
 set large-community 65000:1:2
 set metric 50
!
router bgp ${ROUTER.asn}
 bgp router-id ${ROUTER.v4}
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 bgp graceful-restart
 neighbor ${CAPTURE.v4} remote-as ${CAPTURE.asn}
 neighbor ${CAPTURE.v4} passive
 neighbor ${CAPTURE.v4} timers ${Math.floor(HOLD / 3)} ${HOLD}
 neighbor ${CAPTURE.v6} remote-as ${CAPTURE.asn}
 neighbor ${CAPTURE.v6} passive
 neighbor ${CAPTURE.v6} timers ${Math.floor(HOLD / 3)} ${HOLD}
 address-family ipv4 unicast
  network 198.51.100.0/24 route-map TAG
  network 203.0.113.0/25 route-map TAG
  neighbor ${CAPTURE.v4} activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:100::/48 route-map TAG
  neighbor ${CAPTURE.v6} activate
 exit-address-family
!
`,
  );
  writeFileSync(zConf, 'hostname r\n');
  for (const f of [bgpConf, zConf]) chownSync(f, uid, gid);
  const common = ['-u', 'frr', '-g', 'frr', '--vty_socket', lab.dir, '-z', zsock];
  const zebra = spawnIn(lab.router, ['/usr/lib/frr/zebra', ...common, '-f', zConf, '-i', join(lab.dir, 'zebra.pid'), '-P', '0']); // prettier-ignore
  await waitFor('zebra socket', () => sh('test', ['-S', zsock], true) !== '' || socketExists(zsock), 8000);
  const bgpd = spawnIn(lab.router, ['/usr/lib/frr/bgpd', ...common, '-f', bgpConf, '-i', join(lab.dir, 'bgpd.pid'), '-P', '0']); // prettier-ignore
  await waitFor('bgpd listening on 179', () => listening(lab.router), 10000);
  return {
    version: versionOf('/usr/lib/frr/bgpd'),
    children: [bgpd, zebra],
  };
}

function socketExists(p: string): boolean {
  try {
    execFileSync('test', ['-S', p]);
    return true;
  } catch {
    return false;
  }
}

async function startGobgp(lab: Lab): Promise<Daemon> {
  const conf = join(lab.dir, 'gobgp.toml');
  const nbr = (address: string, fam: Fam): string => `[[neighbors]]
  [neighbors.config]
    neighbor-address = "${address}"
    peer-as = ${CAPTURE.asn}
  [neighbors.timers.config]
    hold-time = ${HOLD}
    keepalive-interval = ${Math.floor(HOLD / 3)}
  [neighbors.transport.config]
    passive-mode = true
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "${fam}-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
`;
  writeFileSync(
    conf,
    `[global.config]
  as = ${ROUTER.asn}
  router-id = "${ROUTER.v4}"
${nbr(CAPTURE.v4, 'ipv4')}${nbr(CAPTURE.v6, 'ipv6')}`,
  );
  const child = spawnIn(lab.router, ['gobgpd', '-f', conf, '--api-hosts', '127.0.0.1:50051', '--pprof-disable', '-l', 'warn']); // prettier-ignore
  const cli = (args: string[], allowFail = true): string =>
    sh('ip', ['netns', 'exec', lab.router, 'gobgp', '-u', '127.0.0.1', '-p', '50051', ...args], allowFail);
  await waitFor('gobgpd API', () => cli(['global']).includes('AS'), 8000);
  await waitFor('gobgpd listening on 179', () => listening(lab.router), 8000);
  const attrs = ['community', '65000:100', 'large-community', '65000:1:2', 'med', '50'];
  for (const p of ['198.51.100.0/24', '203.0.113.0/25'])
    cli(['global', 'rib', '-a', 'ipv4', 'add', p, ...attrs], false);
  cli(['global', 'rib', '-a', 'ipv6', 'add', '2001:db8:100::/48', ...attrs], false);
  return { version: versionOf('gobgpd'), children: [child] };
}

const starters: Record<Kind, (lab: Lab) => Promise<Daemon>> = {
  bird: startBird,
  frr: startFrr,
  gobgp: startGobgp,
};

/** The bad message each daemon answers with a NOTIFICATION (see BAD_MESSAGES). */
const BAD_FOR: Record<Kind, BadName> = { bird: 'type9', frr: 'type9', gobgp: 'withdrawnOverrun' };

/** Runs the client (this script, --client) in the capture namespace and parses what it printed. */
function runClient(lab: Lab, family: Fam, bad: BadName): Captured {
  const txt = sh('ip', ['netns', 'exec', lab.capture, process.execPath, __filename, '--client', family, bad]);
  return JSON.parse(txt) as Captured;
}

async function captureOne(kind: Kind, outDir: string, bad: BadName = BAD_FOR[kind]): Promise<void> {
  const lab = makeLab(kind);
  let daemon: Daemon | null = null;
  try {
    daemon = await starters[kind](lab);
    // Let the daemon originate its routes before the first session comes up.
    await sleep(1500);
    const sessions = [runClient(lab, 'ipv4', bad), runClient(lab, 'ipv6', bad)];
    const lines = [
      `# ${daemon.version} (${kind}), AS ${ROUTER.asn} at ${ROUTER.v4} / ${ROUTER.v6}, as received by AS ${CAPTURE.asn} at ${CAPTURE.v4} / ${CAPTURE.v6}`,
      `# captured by scripts/capture-bgp-fixtures.ts on ${new Date().toISOString().slice(0, 10)}; one message per line: <session family> <type> <hex>`,
      `# the daemon's messages in order: OPEN, KEEPALIVE, UPDATEs, End-of-RIB, then its NOTIFICATION for ${BAD_MESSAGES[bad].about}`,
    ];
    for (const s of sessions) {
      for (const n of s.notes) lines.push(`# ${s.family}: ${n}`);
      for (const hex of s.messages) {
        const type = parseInt(hex.slice(36, 38), 16);
        lines.push(`${s.family} ${MsgType[type] ?? `TYPE_${type}`} ${hex}`);
      }
    }
    const file = join(outDir, `${kind}.hex`);
    writeFileSync(file, `${lines.join('\n')}\n`);
    const count = sessions.reduce((n, s) => n + s.messages.length, 0);
    console.log(`${kind}: ${daemon.version}: ${count} messages -> ${file}`);
    for (const s of sessions) for (const n of s.notes) console.log(`  ${s.family}: ${n}`);
  } finally {
    for (const c of daemon?.children ?? []) await stopChild(c);
    lab.destroy();
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--client') {
    const fam = args[1];
    if (fam !== 'ipv4' && fam !== 'ipv6') throw new Error(`--client needs ipv4 or ipv6, got ${fam}`);
    const bad = args[2] ?? '';
    if (!(bad in BAD_MESSAGES))
      throw new Error(`--client: bad message "${bad}" is not one of ${Object.keys(BAD_MESSAGES).join(', ')}`);
    process.stdout.write(JSON.stringify(await client(fam, bad as BadName)));
    return;
  }
  const at = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const outDir = at('--out') ?? join(packageRoot, 'test', 'fixtures', 'bgp');
  const only = (at('--only') ?? 'bird,frr,gobgp').split(',');
  for (const k of only)
    if (!(k in starters)) throw new Error(`--only: "${k}" is not one of ${Object.keys(starters).join(', ')}`);
  mkdirSync(outDir, { recursive: true });
  const bad = at('--bad');
  if (bad !== undefined && !(bad in BAD_MESSAGES))
    throw new Error(`--bad: "${bad}" is not one of ${Object.keys(BAD_MESSAGES).join(', ')}`);
  for (const k of only) await captureOne(k as Kind, outDir, bad as BadName | undefined);
}

main().catch((e: Error) => {
  console.error(e.message);
  process.exit(1);
});
