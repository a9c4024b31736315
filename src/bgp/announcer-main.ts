// Stand-alone BgpSpeaker process for tests and demos: config JSON file in, JSON-lines commands on stdin.
// Usage: node dist/src/bgp/announcer-main.js <config.json>
//   config: SpeakerOptions plus optional `routes` (RouteSpec[]) announced at start.
//   stdin lines: {"routes":[...]} | {"status":true} | {"stop":{"gracefulShutdownMs":N}}
//   stdout lines: {"event":"up"|"down"|"sync"|"status"|"stopped", ...}
// SIGTERM: graceful stop (config gracefulShutdownMs), then exit 0.
// A composition root: the speaker gets the socket factory with TCP MD5 (the native binding).
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { md5BgpSockets } from '../datapath/bgp-sockets';
import { RouteSpec } from './policy';
import { BgpSpeaker, SpeakerOptions } from './speaker';

function out(o: object): void {
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) throw new Error('usage: announcer-main <config.json>');
  const { routes, ...opts } = JSON.parse(readFileSync(path, 'utf8')) as SpeakerOptions & {
    routes?: RouteSpec[];
  };
  const logger = {
    info: (o: object, m?: string) => out({ event: 'log', level: 'info', msg: m, ...o }),
    warn: (o: object, m?: string) => out({ event: 'log', level: 'warn', msg: m, ...o }),
    debug: () => {},
  };
  const sp = new BgpSpeaker({ ...opts, logger, sockets: md5BgpSockets });
  sp.on('peerUp', (peer: string) => out({ event: 'up', peer }));
  sp.on('peerDown', (peer: string, reason: string) => out({ event: 'down', peer, reason }));
  sp.on('sync', (peer: string, n: object) => out({ event: 'sync', peer, ...n }));
  sp.on('error', (e: Error) => out({ event: 'error', error: e.message }));
  let stopping = false;
  const stop = async (gracefulShutdownMs?: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await sp.stop({ gracefulShutdownMs });
    out({ event: 'stopped' });
    process.exit(0);
  };
  const stopOrDie = (gracefulShutdownMs?: number): void => {
    stop(gracefulShutdownMs).catch((e: Error) => {
      out({ event: 'error', error: e.message });
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stopOrDie());
  await sp.start();
  if (routes) sp.setRoutes(routes);
  out({ event: 'started' });
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    try {
      const cmd = JSON.parse(line) as {
        routes?: RouteSpec[];
        status?: boolean;
        stop?: { gracefulShutdownMs?: number };
      };
      if (cmd.routes) sp.setRoutes(cmd.routes);
      if (cmd.status) out({ event: 'status', status: sp.status() });
      if (cmd.stop) stopOrDie(cmd.stop.gracefulShutdownMs);
    } catch (e) {
      out({ event: 'error', error: (e as Error).message, line });
    }
  });
}

main().catch((e: Error) => {
  out({ event: 'error', error: e.message });
  process.exit(1);
});
