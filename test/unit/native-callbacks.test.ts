// A JavaScript callback the addon calls from a libuv callback (the BFD socket's datagrams, the TCP prober's verdicts)
// may throw: the error must reach 'uncaughtException' as any callback's would, and the process live on. Before, the
// C++ exception it became unwound into libuv: std::terminate, the daemon aborted. Each case runs in a child process
// (jest turns an uncaught error into a failed test).
import { spawnSync } from 'node:child_process';
import { addonPath } from '../../src/paths';

const run = (script: string): { code: number | null; out: string; err: string } => {
  const r = spawnSync(process.execPath, ['-e', script, addonPath], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

const PRELUDE = `
const addon = require(process.argv[1]);
const seen = [];
process.on('uncaughtException', (e) => seen.push('caught ' + e.message));
setTimeout(() => { console.log('timed out ' + JSON.stringify(seen)); process.exit(3); }, 10000).unref();
`;

describe('addon callbacks that throw', () => {
  it('the BFD socket: the error is an uncaughtException, the next datagram still comes', () => {
    const r = run(`${PRELUDE}
const dgram = require('node:dgram');
const probe = dgram.createSocket('udp4');
probe.bind(0, '127.0.0.1', () => {
  const port = probe.address().port;
  probe.close(() => {
    let n = 0;
    const s = new addon.BfdSocket({ family: 4, port, address: '127.0.0.1' }, (data) => {
      n++;
      if (n === 1) throw new Error('boom ' + data.toString());
      console.log(JSON.stringify(seen) + ' then ' + data.toString());
      s.close();
      process.exit(0);
    });
    const out = dgram.createSocket('udp4');
    out.send('one', port, '127.0.0.1', () => setTimeout(() => out.send('two', port, '127.0.0.1', () => out.close()), 100));
  });
});`);
    expect(r).toMatchObject({ code: 0, out: '["caught boom one"] then two\n' });
  });

  it('the TCP prober: the error is an uncaughtException, the next verdict still comes', () => {
    const r = run(`${PRELUDE}
const net = require('node:net');
const srv = net.createServer((c) => c.destroy()).listen(0, '127.0.0.1', () => {
  const port = srv.address().port;
  let n = 0;
  const p = new addon.TcpProber((ids, codes) => {
    n++;
    if (n === 1) {
      setTimeout(() => p.start(2, '127.0.0.1', false, port, 5000), 50);
      throw new Error('boom ' + ids[0] + ' ' + codes[0]);
    }
    console.log(JSON.stringify(seen) + ' then ' + ids[0] + ' ' + codes[0]);
    p.close();
    srv.close();
    process.exit(0);
  });
  p.ref();
  p.start(1, '127.0.0.1', false, port, 5000);
});`);
    expect(r).toMatchObject({ code: 0, out: '["caught boom 1 0"] then 2 0\n' });
  });
});
