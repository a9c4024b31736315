// Address pool for Services without an explicit VIP (the model's, src/model/pool.ts), and who of several
// Services claiming one address gets it.
export * from '../../model/pool';

/** One Service's claim to its addresses: the ones it requests, or (pool Services) the one its status holds. */
export interface AddressClaim {
  /** "namespace/name". */
  key: string;
  namespace: string;
  /** metadata.creationTimestamp (RFC 3339); missing or unreadable ranks after every timestamp. */
  created: string | null;
  /** Canonical addresses, at most one per family. */
  addresses: readonly string[];
  /** Those of `addresses` the Service's status.loadBalancer.ingress lists (written by a leader: it has them). */
  held: ReadonlySet<string>;
  /** "tcp/80", "udp/53": what a Service sharing the address must not also use. */
  ports: readonly string[];
}

/** Why a claim to one address lost, and to whom. */
export interface ClaimLoss {
  address: string;
  /** The Service that keeps the address ("namespace/name"). */
  holder: string;
  /** namespace: sharing across namespaces is refused; port: the two use one protocol/port. */
  why: { kind: 'namespace' } | { kind: 'port'; port: string };
}

const createdMs = (c: AddressClaim): number => {
  const t = c.created ? Date.parse(c.created) : NaN;
  return Number.isNaN(t) ? Infinity : t;
};

/**
 * Who gets each claimed address, the same on every node and after every restart (a function of the objects
 * only). Per address, claimants rank: those whose status already holds it, then older creationTimestamp, then
 * namespace/name. The first keeps it; a later one may share it only from the same namespace and with no
 * protocol/port in common with any Service already on it. `losses`: the claims that lost an address, by key
 * (absent: it got every address it claims); `claimed`: every address anyone claims, which pool allocation must
 * not hand out.
 */
export function resolveClaims(claims: readonly AddressClaim[]): {
  losses: Map<string, ClaimLoss[]>;
  claimed: Set<string>;
} {
  const byAddress = new Map<string, AddressClaim[]>();
  for (const c of claims)
    for (const a of c.addresses) {
      const list = byAddress.get(a);
      if (list === undefined) byAddress.set(a, [c]);
      else list.push(c);
    }
  const losses = new Map<string, ClaimLoss[]>();
  for (const [address, list] of byAddress) {
    if (list.length === 1) continue; // the common case: nobody else wants it
    list.sort((x, y) => {
      const hx = x.held.has(address) ? 0 : 1;
      const hy = y.held.has(address) ? 0 : 1;
      if (hx !== hy) return hx - hy;
      const tx = createdMs(x);
      const ty = createdMs(y);
      if (tx !== ty) return tx < ty ? -1 : 1;
      return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
    });
    const first = list[0]!;
    const on: AddressClaim[] = [first];
    for (const c of list.slice(1)) {
      let loss: ClaimLoss | null = null;
      if (c.namespace !== first.namespace) loss = { address, holder: first.key, why: { kind: 'namespace' } };
      else
        for (const o of on) {
          const port = c.ports.find((p) => o.ports.includes(p));
          if (port !== undefined) {
            loss = { address, holder: o.key, why: { kind: 'port', port } };
            break;
          }
        }
      if (loss === null) on.push(c);
      else {
        const l = losses.get(c.key);
        if (l === undefined) losses.set(c.key, [loss]);
        else l.push(loss);
      }
    }
  }
  return { losses, claimed: new Set(byAddress.keys()) };
}
