// Checks a daemon start runs before it touches the datapath, so a start that is going to fail changes nothing.
import { createServer } from 'node:net';
import { BGP_DEFAULTS, type BgpConfig } from '../bgp/config';
import { interfaceAddresses } from './host';

/** Where the BGP speaker listens (for passive peers, or an explicit bgp.listen); null when it does not. */
export function bgpListenAddress(bgp: BgpConfig): { address: string; port: number } | null {
  if (!bgp.listen && !bgp.peers.some((p) => p.passive)) return null;
  return { address: bgp.listen?.address ?? '::', port: bgp.listen?.port ?? BGP_DEFAULTS.port };
}

/** How a failed listen reads in an error: what to do about it. */
export function listenHint(code: string | undefined, port: number): string {
  if (code === 'EACCES' && port < 1024)
    return ' (ports below 1024 need CAP_NET_BIND_SERVICE: grant it, or use a port from 1024 up)';
  if (code === 'EADDRINUSE') return ' (another process listens there: another daemon?)';
  if (code === 'EADDRNOTAVAIL') return ' (no such address on this host, in this network namespace)';
  return '';
}

/**
 * Binds host:port and closes it again: a listener that cannot be had (EACCES, EADDRINUSE, EADDRNOTAVAIL)
 * fails here. Whatever binds it for real later may still lose a race for it; this catches the configured
 * impossibilities, which are what fail starts.
 */
export async function trialListen(o: { host: string; port: number; what: string }): Promise<void> {
  const srv = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: o.host, port: o.port, exclusive: true }, () => resolve());
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(
      `${o.what}: cannot listen on ${o.host}:${o.port}: ${err.message}${listenHint(err.code, o.port)}`,
    );
  } finally {
    await new Promise<void>((resolve) => (srv.listening ? srv.close(() => resolve()) : resolve()));
  }
}

/** BGP settings that can only fail at run time: routerId "auto" on an interface without IPv4, the listener. */
export async function bgpPreflight(o: { bgp: BgpConfig; ifname: string }): Promise<void> {
  if (o.bgp.routerId === 'auto') {
    const v4 = (await interfaceAddresses(o.ifname)).find((a) => !a.includes(':'));
    if (!v4) throw new Error(`bgp.routerId: "auto" but ${o.ifname} has no IPv4 address: set it`);
  }
  const l = bgpListenAddress(o.bgp);
  if (l) await trialListen({ host: l.address, port: l.port, what: 'bgp (listener for passive peers)' });
}
