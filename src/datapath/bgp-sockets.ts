// BGP socket factory with TCP MD5 (RFC 2385) through the native binding; satisfies bgp/sockets' BgpSocketFactory.
// It names no bgp/ type (dependencies point bgp -> datapath): the shape is checked where it is injected.
import { connect as netConnect, isIPv6, Server, Socket } from 'node:net';
import { sockets } from './bpf';

/** The kernel fd of a bound net.Server: Node keeps it private, so this is the one place that reads it. */
function listenerFd(server: Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('cannot reach the listening socket fd to set TCP MD5');
  return fd;
}

export const md5BgpSockets = {
  md5: true,
  /** Plain net.connect without a key; with one, a native socket with TCP_MD5SIG set before connect(). */
  connect(o: { host: string; port: number; localAddress?: string; password?: string }): Socket {
    const { host, port, localAddress, password } = o;
    if (!password) return netConnect({ host, port, localAddress });
    const fd = sockets.create(isIPv6(host) ? 6 : 4);
    sockets.setMd5(fd, host, password);
    const s = new Socket({ fd, readable: true, writable: true });
    s.connect({ host, port, localAddress });
    return s;
  },
  /** TCP MD5 keys of passive peers live on the listening socket, one per peer address. */
  setListenerKeys(server: Server, keys: { address: string; password: string }[]): void {
    if (!keys.length) return;
    const fd = listenerFd(server);
    for (const k of keys) sockets.setMd5(fd, k.address, k.password);
  },
};
