// How the speaker gets its TCP sockets: the contract, and the plain implementation (no TCP MD5).
import { connect as netConnect, Server, Socket } from 'node:net';

/** What an active connect needs. */
export interface BgpConnectOptions {
  host: string;
  port: number;
  localAddress?: string;
  /** TCP MD5 key (RFC 2385) set on the socket before connect(); absent = no signature. */
  password?: string;
}

/** One TCP MD5 key of a listening socket: connections from `address` must be signed with `password`. */
export interface BgpListenerKey {
  address: string;
  password: string;
}

/**
 * Socket factory the session and speaker use. The implementation with TCP MD5 lives with the native
 * binding (src/datapath/bgp-sockets.ts) and is injected by a composition root (speaker-worker,
 * announcer-main); tests inject fakes.
 */
export interface BgpSocketFactory {
  /** A socket connecting to host:port (its 'connect' event says when it is up). */
  connect(o: BgpConnectOptions): Socket;
  /** Whether this factory can sign with TCP MD5 (connect with a password, setListenerKeys). */
  readonly md5: boolean;
  /** Sets TCP MD5 keys on a listening server (bound already), one per peer address. */
  setListenerKeys(server: Server, keys: BgpListenerKey[]): void;
}

const noMd5 = (what: string): Error =>
  new Error(`${what}: TCP MD5 needs a socket factory with MD5 support (the native one), not the plain one`);

/** Plain Node sockets: no TCP MD5 (a password is an error, never silently unsigned). */
export const plainBgpSockets: BgpSocketFactory = {
  md5: false,
  connect({ host, port, localAddress, password }) {
    if (password) throw noMd5(`connect to ${host}`);
    return netConnect({ host, port, localAddress });
  },
  setListenerKeys(_server, keys) {
    if (keys.length) throw noMd5(`listener keys for ${keys.map((k) => k.address).join(', ')}`);
  },
};
