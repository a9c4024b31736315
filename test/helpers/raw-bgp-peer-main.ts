// RawBgpPeer in its own process (e.g. inside a lab namespace), so its clocks never wait on the process under
// test. argv[2]: RawPeerOptions as JSON. stdout: one RawEvent per line, then {"ev":"listening"} first.
// stdin lines: {"refresh":{"count":N}} | {"drop":true} | {"exit":true}.
import { createInterface } from 'node:readline';
import { RawBgpPeer, RawPeerOptions } from './raw-bgp-peer';

const out = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

async function main(): Promise<void> {
  const peer = new RawBgpPeer(JSON.parse(process.argv[2] ?? '') as RawPeerOptions);
  peer.on('event', out);
  await peer.listen();
  out({ ev: 'listening', t: Date.now() });
  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = JSON.parse(line) as { refresh?: { count: number }; drop?: boolean; exit?: boolean };
    if (cmd.refresh) peer.refresh(cmd.refresh.count);
    if (cmd.drop) peer.drop();
    if (cmd.exit) void peer.close().then(() => process.exit(0));
  });
  // The test runner going away ends this peer too.
  process.stdin.on('end', () => void peer.close().then(() => process.exit(0)));
}

main().catch((e: Error) => {
  out({ ev: 'error', error: e.message });
  process.exit(1);
});
