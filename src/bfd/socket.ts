// The BFD process's network: receive sockets on UDP 3784/4784 (v4, v6) that report the TTL of each datagram
// (native addon: recvmsg + IP_RECVTTL / IPV6_RECVHOPLIMIT), and one sending dgram socket per session from a
// port in 49152-65535 with TTL / hop limit 255 (RFC 5881 §4, RFC 5883 §2).
import { createSocket, Socket } from 'node:dgram';
import { native } from '../datapath/native';
import { isLinkLocal } from '../model/ip';
import { MULTIHOP_PORT, SINGLE_HOP_PORT } from './config';

export interface Datagram {
  data: Buffer;
  src: string;
  srcPort: number;
  /** Destination address of the datagram (IP_PKTINFO), '' when unknown. */
  dst: string;
  ifindex: number;
  /** TTL / hop limit of the IP header; -1 when the kernel did not say. */
  ttl: number;
  multihop: boolean;
}

/** A session's way out. */
export interface Sender {
  readonly localPort: number;
  send(data: Buffer): void;
  close(): void;
}

/** What BfdProcess needs from the network; tests can give it another. */
export interface Transport {
  start(onDatagram: (d: Datagram) => void): Promise<void>;
  openSender(o: {
    peer: string;
    family: 4 | 6;
    local: string | null;
    interface: string | null;
    multihop: boolean;
  }): Promise<Sender>;
  stop(): void;
}

interface NativeBfdSocket {
  readonly fd: number;
  close(): void;
}
type NativeBfdSocketCtor = new (
  o: { family: 4 | 6; port: number; address?: string; ifname?: string },
  onDatagram: (data: Buffer, src: string, srcPort: number, dst: string, ifindex: number, ttl: number) => void,
) => NativeBfdSocket;

/** Source ports (RFC 5881 §4). */
export const SOURCE_PORT_MIN = 49152;
export const SOURCE_PORT_MAX = 65535;

export interface UdpTransportOptions {
  /** Which receive sockets to open; default all four. A family the host lacks is skipped with a warning. */
  families?: (4 | 6)[];
  warn?: (msg: string) => void;
  /** Ports, for tests that run two processes on one host; defaults 3784 / 4784. */
  singleHopPort?: number;
  multihopPort?: number;
}

export class UdpTransport implements Transport {
  private readonly rx: NativeBfdSocket[] = [];
  private readonly o: UdpTransportOptions;
  constructor(o: UdpTransportOptions = {}) {
    this.o = o;
  }

  async start(onDatagram: (d: Datagram) => void): Promise<void> {
    const Ctor = (native() as unknown as { BfdSocket: NativeBfdSocketCtor }).BfdSocket;
    const ports = [
      { port: this.o.singleHopPort ?? SINGLE_HOP_PORT, multihop: false },
      { port: this.o.multihopPort ?? MULTIHOP_PORT, multihop: true },
    ];
    for (const family of this.o.families ?? [4, 6]) {
      for (const { port, multihop } of ports) {
        try {
          this.rx.push(
            new Ctor({ family: family as 4 | 6, port }, (data, src, srcPort, dst, ifindex, ttl) =>
              onDatagram({ data, src, srcPort, dst, ifindex, ttl, multihop }),
            ),
          );
        } catch (e) {
          if (family === 6 && (e as { code?: string }).code === 'EAFNOSUPPORT') {
            this.o.warn?.(`IPv6 unavailable, no IPv6 BFD: ${(e as Error).message}`);
            break;
          }
          this.stop();
          throw e;
        }
      }
    }
  }

  async openSender(o: {
    peer: string;
    family: 4 | 6;
    local: string | null;
    interface: string | null;
    multihop: boolean;
  }): Promise<Sender> {
    const dstPort = o.multihop
      ? (this.o.multihopPort ?? MULTIHOP_PORT)
      : (this.o.singleHopPort ?? SINGLE_HOP_PORT);
    // A link-local peer is reached through its interface (scope id).
    const dst = o.family === 6 && o.interface && isLinkLocal(o.peer) ? `${o.peer}%${o.interface}` : o.peer;
    let lastErr: Error | null = null;
    // Random ports first (a restart does not reuse the last one), a bounded number of tries.
    for (let i = 0; i < 64; i++) {
      const port = SOURCE_PORT_MIN + Math.floor(Math.random() * (SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1));
      const sock = createSocket({ type: o.family === 4 ? 'udp4' : 'udp6', reuseAddr: false });
      try {
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject);
          sock.bind({ port, address: o.local ?? undefined, exclusive: true }, () => {
            sock.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        lastErr = e as Error;
        sock.close();
        if ((e as { code?: string }).code === 'EADDRINUSE') continue;
        throw e;
      }
      // GTSM: every packet leaves with 255 so the peer can tell it came from one hop away (RFC 5881 §5).
      sock.setTTL(255);
      sock.on('error', () => {
        // An ICMP unreachable turns into an error on the next send: nothing to do, the peer's timer decides.
      });
      return senderOf(sock, dst, dstPort, port);
    }
    throw new Error(
      `no free source port in ${SOURCE_PORT_MIN}-${SOURCE_PORT_MAX} for ${o.peer}: ${lastErr?.message}`,
    );
  }

  stop(): void {
    for (const s of this.rx.splice(0)) s.close();
  }
}

function senderOf(sock: Socket, dst: string, dstPort: number, localPort: number): Sender {
  return {
    localPort,
    send(data: Buffer) {
      sock.send(data, dstPort, dst);
    },
    close() {
      sock.close();
    },
  };
}
