// Pure translation: Services + EndpointSlices -> VIP definitions (the file config's vips[] shape) + problems.
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { isPrime, MAGLEV_MAX_SIZE } from '../../maglev/maglev';
import type { BackendConfig, Protocol, VipConfig } from '../../model/config';
import { DEFAULTS } from '../../model/defaults';
import { showValue } from '../../model/errors';
import { canonicalIp, IpFamily, parseIp } from '../../model/ip';
import { MIN_SLOTS_PER_BACKEND, tableFit } from '../../model/vip';
import {
  backendModeOf,
  NodeEndpoint,
  nodeBackends,
  nodeHealthCheck,
  NodeInfo,
  nodeInfo,
  NodeSkipReason,
  sameNodeInfo,
  trafficPolicyOf,
} from './node-backends';
import {
  ANNOTATIONS,
  EndpointSlice,
  isOurService,
  Node,
  ObjectMeta,
  objectKey,
  Service,
  SERVICE_NAME_LABEL,
  ServicePort,
} from './objects';
import { AddressClaim, ClaimLoss, describePool, Pool, poolContains, resolveClaims } from './pool';
import { encapAnnotations } from './encap-annotations';

/** Why (part of) a Service is not programmed as asked: becomes a Kubernetes Event and a log line. */
export type ProblemReason =
  | 'TargetPortMismatch'
  | 'UnsupportedProtocol'
  | 'InvalidAnnotation'
  | 'InvalidLoadBalancerIP'
  | 'AddressNotAllowed'
  | 'NoAddress'
  | 'TooManyBackends'
  | 'UnevenBalance'
  | 'AddressConflict'
  | 'AllocationFailed'
  | NodeSkipReason;

export interface Problem {
  namespace: string;
  name: string;
  uid: string;
  reason: ProblemReason;
  /** Human text naming the field and value. */
  message: string;
  /** true: something is not programmed; false: programmed with a default instead. */
  blocking: boolean;
}

export type AddressSource = 'annotation' | 'loadBalancerIP' | 'pool';

export interface ServiceAddresses {
  source: AddressSource;
  /** Canonical addresses, at most one per family; empty while a pool Service awaits allocation. */
  addresses: string[];
}

export interface TranslateOptions {
  loadBalancerClass: string;
  /** Allocation pool (null: no pool; Services then need an annotation or spec.loadBalancerIP). */
  pool: Pool | null;
  /** Addresses a Service may request besides the pool's (kubernetes.allowedAddresses); absent: none. */
  allowed?: Pool | null;
  services: readonly Service[];
  slices: readonly EndpointSlice[];
  /** The cluster's Nodes (node-mode backends); absent: none known, so node-mode VIPs have no backends. */
  nodes?: readonly Node[];
  /** Maglev table size of a Service without the table-size annotation (kubernetes.tableSize); absent: the
   * Kubernetes default (DEFAULTS.kubernetes.tableSize). A prime. */
  tableSize?: number;
}

export interface TranslateResult {
  vips: VipConfig[];
  problems: Problem[];
}

const VIP_NAME_MAX = 63;

/** VIP name: k8s.<namespace>.<service>.<port>-<proto>[.v6]; long ones are cut and made unique by a hash. */
export function vipName(opts: {
  namespace: string;
  name: string;
  port: number;
  protocol: Protocol;
  family: IpFamily;
}): string {
  const tail = `.${opts.port}-${opts.protocol}${opts.family === 6 ? '.v6' : ''}`;
  const full = `k8s.${opts.namespace}.${opts.name}${tail}`;
  if (full.length <= VIP_NAME_MAX) return full;
  const hash = createHash('sha256').update(`${opts.namespace}/${opts.name}`).digest('hex').slice(0, 8);
  const head = full.slice(0, full.length - tail.length);
  return `${head.slice(0, VIP_NAME_MAX - tail.length - hash.length - 1)}-${hash}${tail}`;
}

const annotation = (svc: Service, name: string): string | undefined =>
  svc.metadata.annotations?.[name] ?? undefined;

const annField = (name: string): string => `metadata.annotations["${name}"]`;

const sourceField = (source: AddressSource): string =>
  source === 'annotation'
    ? annField(ANNOTATIONS.vip)
    : source === 'loadBalancerIP'
      ? 'spec.loadBalancerIP'
      : 'status.loadBalancer.ingress';

/**
 * Where a Service's VIP addresses come from, in order: annotation, spec.loadBalancerIP, pool (via status).
 * A requested address must lie in the pool or in `allowed`: anything else (a ClusterIP, another tenant's
 * range) would be announced over BGP by every LB node.
 */
export function serviceAddresses(
  svc: Service,
  pool: Pool | null,
  allowed: Pool | null = null,
): { ok: true; value: ServiceAddresses } | { ok: false; reason: ProblemReason; message: string } {
  const r = requestedAddresses(svc, pool);
  if (!r.ok || r.value.source === 'pool') return r;
  const outside = r.value.addresses.filter(
    (a) => !(pool !== null && poolContains(pool, a)) && !(allowed !== null && poolContains(allowed, a)),
  );
  if (outside.length === 0) return r;
  return {
    ok: false,
    reason: 'AddressNotAllowed',
    message:
      `${sourceField(r.value.source)}: ${outside.map((a) => showValue(a)).join(', ')} ${outside.length > 1 ? 'are' : 'is'} outside the addresses ` +
      `this load balancer may announce (kubernetes.pool: ${describePool(pool)}; kubernetes.allowedAddresses: ${describePool(allowed)}); not programmed`,
  };
}

function requestedAddresses(
  svc: Service,
  pool: Pool | null,
): { ok: true; value: ServiceAddresses } | { ok: false; reason: ProblemReason; message: string } {
  const ann = annotation(svc, ANNOTATIONS.vip);
  if (ann !== undefined) {
    const parts = ann.split(',').map((s) => s.trim());
    const out: string[] = [];
    const families = new Set<IpFamily>();
    for (const p of parts) {
      const ip = parseIp(p);
      if (ip === null)
        return {
          ok: false,
          reason: 'InvalidAnnotation',
          message: `${annField(ANNOTATIONS.vip)}: ${showValue(p)} is not an IP address`,
        };
      if (families.has(ip.family))
        return {
          ok: false,
          reason: 'InvalidAnnotation',
          message: `${annField(ANNOTATIONS.vip)}: ${showValue(ann)} has more than one IPv${ip.family} address`,
        };
      families.add(ip.family);
      out.push(canonicalIp(p)!);
    }
    return { ok: true, value: { source: 'annotation', addresses: out } };
  }
  const lbIp = svc.spec?.loadBalancerIP;
  if (lbIp) {
    const c = canonicalIp(lbIp);
    if (c === null)
      return {
        ok: false,
        reason: 'InvalidLoadBalancerIP',
        message: `spec.loadBalancerIP: ${showValue(lbIp)} is not an IP address`,
      };
    return { ok: true, value: { source: 'loadBalancerIP', addresses: [c] } };
  }
  if (pool === null)
    return {
      ok: false,
      reason: 'NoAddress',
      message: `no VIP address: set ${annField(ANNOTATIONS.vip)} or spec.loadBalancerIP, or configure an address pool`,
    };
  // Pool addresses are allocated by the leader and recorded in status; every node reads them from there.
  const addresses: string[] = [];
  const families = new Set<IpFamily>();
  for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
    const c = ing.ip ? canonicalIp(ing.ip) : null;
    if (c === null || !poolContains(pool, c)) continue;
    const fam = parseIp(c)!.family;
    if (families.has(fam)) continue;
    families.add(fam);
    addresses.push(c);
  }
  return { ok: true, value: { source: 'pool', addresses } };
}

/** What a Service may program: its addresses (a pool Service's may be none yet), or why it may not. */
export type Grant =
  | {
      ok: true;
      source: AddressSource;
      addresses: string[];
      /** A pool Service whose status address another Service keeps: nothing programmed until the leader re-allocates. */
      problem: { reason: ProblemReason; message: string } | null;
    }
  | {
      ok: false;
      reason: ProblemReason;
      message: string;
      /** The claim was refused (not allowed, or held by another): status must not show an address for it. */
      refused: boolean;
    };

const portsOf = (svc: Service): string[] =>
  (svc.spec?.ports ?? []).map((p) => `${(p.protocol ?? 'TCP').toLowerCase()}/${p.port}`);

function lossText(l: ClaimLoss): string {
  return l.why.kind === 'namespace'
    ? `${l.address} is held by Service ${l.holder} (another namespace: only Services of one namespace share an address)`
    : `${l.address} is held by Service ${l.holder}, which also uses ${l.why.port}`;
}

/** What grantAddresses reads of one Service object, memoised by object for a given pool and allowed list. */
export type ClaimMemo = WeakMap<Service, ServiceClaim>;

interface ServiceClaim {
  addresses: ReturnType<typeof serviceAddresses>;
  claim: AddressClaim | null;
  /** Its Grant when no other Service contests it (the common case; built once). */
  uncontested: Grant;
}

function claimOf(svc: Service, pool: Pool | null, allowed: Pool | null): ServiceClaim {
  const a = serviceAddresses(svc, pool, allowed);
  const uncontested: Grant = a.ok
    ? { ok: true, ...a.value, problem: null }
    : { ok: false, reason: a.reason, message: a.message, refused: a.reason === 'AddressNotAllowed' };
  if (!a.ok || a.value.addresses.length === 0) return { addresses: a, claim: null, uncontested };
  const status = new Set(
    (svc.status?.loadBalancer?.ingress ?? []).map((i) => (i.ip ? canonicalIp(i.ip) : null)),
  );
  return {
    addresses: a,
    uncontested,
    claim: {
      key: objectKey(svc.metadata),
      namespace: svc.metadata.namespace ?? '',
      created: svc.metadata.creationTimestamp ?? null,
      addresses: a.value.addresses,
      held: new Set(a.value.addresses.filter((x) => status.has(x))),
      ports: portsOf(svc),
    },
  };
}

/**
 * Every Service's Grant, decided across all of them (resolveClaims: a Service that holds or claimed an address
 * first keeps it; a newcomer is refused, never the holder renumbered). `claimed`: every address any Service
 * requests or holds, which pool allocation must not hand out. `services`: ours only.
 */
export function grantAddresses(opts: {
  services: readonly Service[];
  pool: Pool | null;
  allowed?: Pool | null;
  /** Per-Service parse results for this pool and allowed list (Service objects are values: never mutated). */
  memo?: ClaimMemo;
}): { grants: Map<string, Grant>; claimed: Set<string> } {
  const found = new Map<string, ServiceClaim>();
  const claims: AddressClaim[] = [];
  for (const svc of opts.services) {
    let m = opts.memo?.get(svc);
    if (m === undefined) {
      m = claimOf(svc, opts.pool, opts.allowed ?? null);
      opts.memo?.set(svc, m);
    }
    found.set(objectKey(svc.metadata), m);
    if (m.claim !== null) claims.push(m.claim);
  }
  const { losses, claimed } = resolveClaims(claims);
  const grants = new Map<string, Grant>();
  for (const [key, m] of found) {
    const a = m.addresses;
    const lost = losses.get(key);
    if (!a.ok || lost === undefined) grants.set(key, m.uncontested);
    else if (a.value.source === 'pool')
      grants.set(key, {
        ok: true,
        source: 'pool',
        addresses: [],
        problem: {
          reason: 'AddressConflict',
          message: `${sourceField('pool')}: ${lost.map(lossText).join('; ')}; not programmed until the leader allocates another pool address`,
        },
      });
    else
      grants.set(key, {
        ok: false,
        reason: 'AddressConflict',
        message: `${sourceField(a.value.source)}: ${lost.map(lossText).join('; ')}; not programmed`,
        refused: true,
      });
  }
  return { grants, claimed };
}

/** The family a pool allocation is made in: the Service's first ipFamilies entry, IPv4 by default. */
export function preferredFamily(svc: Service): IpFamily {
  return svc.spec?.ipFamilies?.[0] === 'IPv6' ? 6 : 4;
}

/** Parses "key=weight, key=weight" (key: endpoint address or Pod name). */
export function parseWeights(
  text: string,
): { ok: true; weights: Map<string, number> } | { ok: false; message: string } {
  const weights = new Map<string, number>();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const m = /^([^=\s]+)\s*=\s*(\d{1,5})$/.exec(item);
    const w = m ? Number(m[2]) : NaN;
    if (!m || w > DEFAULTS_WEIGHT_MAX)
      return {
        ok: false,
        message: `${annField(ANNOTATIONS.weights)}: ${showValue(item)} is not key=weight with a weight 0-${DEFAULTS_WEIGHT_MAX}`,
      };
    weights.set(canonicalIp(m[1]!) ?? m[1]!, w);
  }
  return { ok: true, weights };
}

const DEFAULTS_WEIGHT_MAX = 65535;

function protocolOf(p: string | null | undefined): Protocol | null {
  const v = p ?? 'TCP';
  return v === 'TCP' ? 'tcp' : v === 'UDP' ? 'udp' : null;
}

/** targetPort as a number when it is one (JSON number or all-digit string), else the port name, else null (= port). */
function targetPortOf(sp: ServicePort): number | string | null {
  const t = sp.targetPort;
  if (t === undefined || t === null || t === '') return null;
  if (typeof t === 'number') return t;
  return /^\d+$/.test(t) ? Number(t) : t;
}

interface BackendAcc {
  address: string;
  drain: boolean;
  podName: string | null;
  nodeName: string | null;
}

/** Endpoint state: ready -> new flows; serving+terminating -> drain (keep established flows); else none. */
export function endpointState(
  c: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null } | null | undefined,
): 'up' | 'drain' | 'none' {
  // The API says a nil ready/serving is to be read as true, a nil terminating as false.
  const ready = c?.ready ?? true;
  const terminating = c?.terminating ?? false;
  const serving = c?.serving ?? ready;
  if (ready && !terminating) return 'up';
  if (serving && terminating) return 'drain';
  return 'none';
}

/**
 * canonicalIp and family of an endpoint address. A dotted quad that node's strict isIP accepts (no leading
 * zeros) is already canonical, so the common case skips ipaddr.js: at 20k endpoints parsing was most of a
 * publish.
 */
function endpointAddress(text: string): { address: string; family: IpFamily } | null {
  if (isIP(text) === 4) return { address: text, family: 4 };
  const c = canonicalIp(text);
  return c === null ? null : { address: c, family: parseIp(c)!.family };
}

/** Nodes a Service's translation read: none (pod mode, not programmed), those its endpoints name, or all. */
type NodeDeps = null | Set<string> | 'all';

/** One Service on its own (cached): the VIPs it asks for, before grantAddresses weighs it against the others. */
function translateService(
  svc: Service,
  slices: readonly EndpointSlice[],
  space: {
    pool: Pool | null;
    allowed: Pool | null;
    /** serviceAddresses(svc, pool, allowed) when already known (grantAddresses' memo). */
    addresses?: ReturnType<typeof serviceAddresses>;
    /** TranslateOptions.tableSize */
    tableSize?: number;
  },
  problems: Problem[],
  nodes: ReadonlyMap<string, NodeInfo>,
): { vips: VipConfig[]; nodeDeps: NodeDeps } {
  const namespace = svc.metadata.namespace ?? '';
  const name = svc.metadata.name ?? '';
  const problem = (reason: ProblemReason, message: string, blocking: boolean): void => {
    problems.push({ namespace, name, uid: svc.metadata.uid ?? '', reason, message, blocking });
  };
  const mode = backendModeOf(svc);
  if (!mode.ok) {
    problem('InvalidAnnotation', mode.message, true);
    return { vips: [], nodeDeps: null };
  }
  const addrs = space.addresses ?? serviceAddresses(svc, space.pool, space.allowed);
  if (!addrs.ok) {
    problem(addrs.reason, addrs.message, true);
    return { vips: [], nodeDeps: null };
  }
  const nodeMode = mode.mode === 'node';
  const policy = trafficPolicyOf(svc);
  let nodeDeps: NodeDeps = null;
  if (nodeMode)
    nodeDeps =
      policy === 'Cluster'
        ? 'all'
        : new Set(
            slices.flatMap((sl) => (sl.endpoints ?? []).flatMap((e) => (e.nodeName ? [e.nodeName] : []))),
          );
  const skipSeen = new Set<string>();

  let weights = new Map<string, number>();
  const wText = annotation(svc, ANNOTATIONS.weights);
  if (wText !== undefined) {
    const w = parseWeights(wText);
    if (w.ok) weights = w.weights;
    else
      problem(
        'InvalidAnnotation',
        `${w.message}; using ${nodeMode ? "each node's ready-endpoint count" : 'weight 1 for every backend'}`,
        false,
      );
  }
  let tableSize: number = space.tableSize ?? DEFAULTS.kubernetes.tableSize;
  const tText = annotation(svc, ANNOTATIONS.tableSize);
  if (tText !== undefined) {
    const n = /^\d+$/.test(tText.trim()) ? Number(tText.trim()) : NaN;
    if (n >= 3 && n <= MAGLEV_MAX_SIZE && isPrime(n)) tableSize = n;
    else
      problem(
        'InvalidAnnotation',
        `${annField(ANNOTATIONS.tableSize)}: ${showValue(tText)} is not a prime between 3 and ${MAGLEV_MAX_SIZE}; using ${tableSize}`,
        false,
      );
  }
  let conntrack: boolean = DEFAULTS.vip.conntrack;
  const cText = annotation(svc, ANNOTATIONS.conntrack);
  if (cText !== undefined) {
    if (cText === 'true' || cText === 'false') conntrack = cText === 'true';
    else
      problem(
        'InvalidAnnotation',
        `${annField(ANNOTATIONS.conntrack)}: ${showValue(cText)} is not "true" or "false"`,
        false,
      );
  }
  const persistence = svc.spec?.sessionAffinity === 'ClientIP' ? 'source-ip' : 'none';
  // Issue 15: peak-xdp.io/encap and peak-xdp.io/stateless (encap-annotations.ts).
  const encap = encapAnnotations(svc.metadata.annotations);
  for (const m of encap.problems) problem('InvalidAnnotation', m, false);

  const vips: VipConfig[] = [];
  (svc.spec?.ports ?? []).forEach((sp, i) => {
    const field = `spec.ports[${i}]`;
    const protocol = protocolOf(sp.protocol);
    if (protocol === null) {
      problem(
        'UnsupportedProtocol',
        `${field}.protocol: ${showValue(sp.protocol)} is not TCP or UDP; port ${sp.port} not programmed`,
        true,
      );
      return;
    }
    // Pod mode: direct server return keeps the destination port, so the Pod must listen on the Service port.
    // Node mode: the node's kube-proxy DNATs VIP:port to pod:targetPort, so any targetPort works.
    const target = targetPortOf(sp);
    const mismatches = new Set<number>();
    if (!nodeMode && typeof target === 'number' && target !== sp.port) mismatches.add(target);
    const portName = sp.name ?? '';
    const serving: EndpointSlice[] = [];
    for (const slice of slices) {
      const entries = (slice.ports ?? []).filter(
        (p) => (p.name ?? '') === portName && protocolOf(p.protocol) === protocol,
      );
      if (entries.length === 0) continue;
      if (!nodeMode)
        for (const e of entries)
          if (e.port !== null && e.port !== undefined && e.port !== sp.port) mismatches.add(e.port);
      serving.push(slice);
    }
    if (mismatches.size > 0) {
      problem(
        'TargetPortMismatch',
        `${field}: port ${sp.port} has targetPort ${showValue(sp.targetPort ?? sp.port)} resolving to ${[...mismatches].sort((a, b) => a - b).join(', ')}; ` +
          `direct server return keeps the destination port, so targetPort must equal port; ${protocol} port ${sp.port} not programmed`,
        true,
      );
      return;
    }
    for (const address of addrs.value.addresses) {
      const family = parseIp(address)!.family;
      const acc = new Map<string, BackendAcc>();
      for (const slice of serving) {
        if (slice.addressType !== (family === 4 ? 'IPv4' : 'IPv6')) continue;
        for (const ep of slice.endpoints ?? []) {
          const state = endpointState(ep.conditions);
          if (state === 'none') continue;
          const a = ep.addresses?.[0] ? endpointAddress(ep.addresses[0]) : null;
          if (a === null || a.family !== family) continue;
          const prev = acc.get(a.address);
          // The same address in two slices (during a rollout): up wins over drain.
          if (prev === undefined || (prev.drain && state === 'up'))
            acc.set(a.address, {
              address: a.address,
              drain: state === 'drain',
              podName: ep.targetRef?.name ?? null,
              nodeName: ep.nodeName ?? null,
            });
        }
      }
      const sorted = [...acc.values()].sort((x, y) =>
        x.address < y.address ? -1 : x.address > y.address ? 1 : 0,
      );
      let backends: BackendConfig[];
      if (nodeMode) {
        const r = nodeBackends({
          family,
          policy,
          endpoints: sorted.map((b): NodeEndpoint => ({
            address: b.address,
            state: b.drain ? 'drain' : 'up',
            nodeName: b.nodeName,
          })),
          nodes,
          weights,
        });
        backends = r.backends;
        for (const k of r.skipped)
          if (!skipSeen.has(k.message)) {
            skipSeen.add(k.message);
            problem(k.reason, k.message, false);
          }
      } else
        backends = sorted.map((b) => ({
          address: b.address,
          family,
          weight:
            weights.get(b.address) ??
            (b.podName !== null ? weights.get(b.podName) : undefined) ??
            DEFAULTS.backend.weight,
          drain: b.drain,
        }));
      const fit = tableFit(backends.length, tableSize);
      if (fit === 'too-small') {
        problem(
          'TooManyBackends',
          `${field}: ${backends.length} backends do not fit a table of ${tableSize}; not programmed`,
          true,
        );
        continue;
      }
      if (fit === 'uneven')
        problem(
          'UnevenBalance',
          `${field}: ${backends.length} backends in a table of ${tableSize} get under ${MIN_SLOTS_PER_BACKEND} slots each: ` +
            `flows spread unevenly; set ${ANNOTATIONS.tableSize} to a larger prime (e.g. 65537)`,
          false,
        );
      vips.push({
        name: vipName({ namespace, name, port: sp.port, protocol, family }),
        address,
        family,
        port: sp.port,
        protocol,
        tableSize,
        persistence,
        conntrack,
        // Pod mode: readiness comes from the EndpointSlices. Node mode: one probe per node (deduplicated).
        healthCheck: nodeMode ? nodeHealthCheck(svc, sp) : null,
        backends,
        communities: [],
        largeCommunities: [],
        minHealthyBackends: null,
        failOpen: DEFAULTS.vip.failOpen,
        ...encap.fields,
      });
    }
  });
  return { vips, nodeDeps };
}

/** TranslationCache.translateAsync's default: the longest stretch it keeps the event loop. */
export const DEFAULT_TRANSLATE_SLICE_MS = 5;

/** Every VIP of every Service of ours, sorted by name; problems sorted by Service then reason. */
export function translate(opts: TranslateOptions): TranslateResult {
  return new TranslationCache().translate(opts);
}

/** One Service's translation and the object versions it was made from. */
interface CachedService {
  svc: Service;
  /** Its slices, sorted by name. */
  slices: EndpointSlice[];
  /** Deep-frozen; the same objects as long as the translation is equal. */
  vips: readonly VipConfig[];
  problems: readonly Problem[];
  nodeDeps: NodeDeps;
}

/** The same version of one object: the same object, or (as served by an API server) the same resourceVersion. */
function sameVersion(a: { metadata: ObjectMeta }, b: { metadata: ObjectMeta }): boolean {
  if (a === b) return true;
  const rv = a.metadata.resourceVersion;
  return (
    rv !== undefined &&
    rv !== '' &&
    rv === b.metadata.resourceVersion &&
    a.metadata.name === b.metadata.name &&
    a.metadata.namespace === b.metadata.namespace &&
    a.metadata.uid === b.metadata.uid
  );
}

/** Whether the Service reads its addresses from status (the pool), as requestedAddresses decides. */
const addressesFromStatus = (svc: Service): boolean =>
  annotation(svc, ANNOTATIONS.vip) === undefined && !svc.spec?.loadBalancerIP;

/**
 * JSON text with object keys sorted and undefined members left out: a listed object (built by the client's
 * model classes, their key order) and a watched one (the server's JSON) with equal content give equal text.
 */
function stableJson(x: unknown): string {
  if (x === null || typeof x !== 'object') return JSON.stringify(x) ?? 'null';
  if (x instanceof Date) return JSON.stringify(x);
  if (Array.isArray(x)) return `[${x.map(stableJson).join(',')}]`;
  const o = x as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(',')}}`;
}

/**
 * Two versions of a Service that translateService reads alike: identity, annotations, spec, and status only
 * where the addresses come from it.
 */
function sameTranslationInput(a: Service, b: Service): boolean {
  const am = a.metadata;
  const bm = b.metadata;
  if (am.name !== bm.name || am.namespace !== bm.namespace || am.uid !== bm.uid) return false;
  if (stableJson(am.annotations ?? null) !== stableJson(bm.annotations ?? null)) return false;
  if (stableJson(a.spec ?? null) !== stableJson(b.spec ?? null)) return false;
  return (
    !addressesFromStatus(b) ||
    stableJson(a.status?.loadBalancer?.ingress ?? null) ===
      stableJson(b.status?.loadBalancer?.ingress ?? null)
  );
}

function sameSlices(a: readonly EndpointSlice[], b: readonly EndpointSlice[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!sameVersion(a[i]!, b[i]!)) return false;
  return true;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * translate() that remembers each Service's translation with the versions of the Service and its slices it
 * came from: a call re-translates only Services whose object or slices changed (a burst of slice updates
 * costs what it touches, not every endpoint of the cluster). Results equal translate()'s for the same
 * input; VIP objects are deep-frozen and kept (the same object) while their content is unchanged, so a
 * consumer can tell changed VIPs by identity. Inputs are read as values: never mutate an object in place.
 */
export class TranslationCache {
  private byService = new Map<string, CachedService>();
  private pool: Pool | null = null;
  private allowed: Pool | null = null;
  /** grantAddresses' per-Service work, kept while the Service object (and pool, allowed list) is the same. */
  private claimMemo: ClaimMemo = new WeakMap();
  private lbClass: string | null = null;
  private tableSize: number | null = null;
  /** What the last call read of each Node (by name): a Node update that changes none of it costs nothing. */
  private nodes = new Map<string, NodeInfo>();
  private readonly infoOf = new WeakMap<Node, NodeInfo>();
  /** Time the last call held the event loop (translateAsync: its slices added up, not the wall time). */
  lastBusyMs = 0;
  /** Services re-translated by the last call (for tests and metrics). */
  lastTranslated = 0;

  private busy = false;

  translate(opts: TranslateOptions): TranslateResult {
    const t0 = performance.now();
    const steps = this.steps(opts);
    let r = steps.next();
    while (!r.done) r = steps.next();
    this.lastBusyMs = performance.now() - t0;
    return r.value;
  }

  /**
   * translate(), giving the event loop back whenever it has run for sliceMs: a burst that changes every
   * Service must not hold /healthz, watches and timers for the whole re-translation. Inputs are values, so
   * what changes meanwhile is simply the next call's. One call at a time.
   */
  async translateAsync(
    opts: TranslateOptions,
    sliceMs = DEFAULT_TRANSLATE_SLICE_MS,
  ): Promise<TranslateResult> {
    const steps = this.steps(opts);
    let since = performance.now();
    let busy = 0;
    let r = steps.next();
    while (!r.done) {
      const now = performance.now();
      if (now - since >= sliceMs) {
        busy += now - since;
        await new Promise<void>((resolve) => setImmediate(resolve));
        since = performance.now();
      }
      r = steps.next();
    }
    this.lastBusyMs = busy + performance.now() - since;
    return r.value;
  }

  /** The translation, pausing (yield) after each Service it re-translates. */
  private *steps(opts: TranslateOptions): Generator<void, TranslateResult, void> {
    if (this.busy) throw new Error('TranslationCache: a translation is already running');
    this.busy = true;
    try {
      return yield* this.run(opts);
    } finally {
      this.busy = false;
    }
  }

  private *run(opts: TranslateOptions): Generator<void, TranslateResult, void> {
    if (
      opts.pool !== this.pool ||
      (opts.allowed ?? null) !== this.allowed ||
      opts.loadBalancerClass !== this.lbClass ||
      (opts.tableSize ?? null) !== this.tableSize
    ) {
      this.byService.clear();
      this.claimMemo = new WeakMap();
    }
    this.pool = opts.pool;
    this.allowed = opts.allowed ?? null;
    this.lbClass = opts.loadBalancerClass;
    this.tableSize = opts.tableSize ?? null;
    // Every cached entry is valid for the previous call's nodes: only Nodes changed since then matter.
    const nodes = new Map<string, NodeInfo>();
    for (const n of opts.nodes ?? []) {
      let info = this.infoOf.get(n);
      if (info === undefined) {
        info = nodeInfo(n);
        this.infoOf.set(n, info);
      }
      if (info.name !== '') nodes.set(info.name, info);
    }
    const changedNodes = new Set<string>();
    for (const [name, info] of nodes) {
      const old = this.nodes.get(name);
      if (old === undefined || !sameNodeInfo(old, info)) changedNodes.add(name);
    }
    for (const name of this.nodes.keys()) if (!nodes.has(name)) changedNodes.add(name);
    this.nodes = nodes;
    const nodesStale = (deps: NodeDeps): boolean => {
      if (deps === null || changedNodes.size === 0) return false;
      if (deps === 'all') return true;
      for (const n of changedNodes) if (deps.has(n)) return true;
      return false;
    };
    const byService = new Map<string, EndpointSlice[]>();
    for (const s of opts.slices) {
      const svcName = s.metadata.labels?.[SERVICE_NAME_LABEL];
      if (!svcName) continue;
      const key = `${s.metadata.namespace ?? ''}/${svcName}`;
      const list = byService.get(key);
      if (list === undefined) byService.set(key, [s]);
      else list.push(s);
    }
    const vips: VipConfig[] = [];
    const problems: Problem[] = [];
    const services = opts.services
      .filter((s) => isOurService(s, opts.loadBalancerClass))
      .map((s) => ({ key: objectKey(s.metadata), svc: s }))
      .sort((a, b) => (a.key < b.key ? -1 : 1));
    // Who may use which address is decided across Services, once, before any is translated.
    const { grants } = grantAddresses({
      services: services.map((s) => s.svc),
      pool: opts.pool,
      allowed: this.allowed,
      memo: this.claimMemo,
    });
    const next = new Map<string, CachedService>();
    this.lastTranslated = 0;
    for (const { key, svc } of services) {
      // Slices are sorted by name so the result does not depend on cache order.
      const slices = (byService.get(key) ?? []).sort((a, b) =>
        (a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1,
      );
      let entry = this.byService.get(key);
      if (
        entry !== undefined &&
        !sameVersion(entry.svc, svc) &&
        sameTranslationInput(entry.svc, svc) &&
        sameSlices(entry.slices, slices) &&
        !nodesStale(entry.nodeDeps)
      )
        // E.g. the echo of our own status write: a new version, the same translation.
        entry = { ...entry, svc };
      if (
        entry === undefined ||
        !sameVersion(entry.svc, svc) ||
        !sameSlices(entry.slices, slices) ||
        nodesStale(entry.nodeDeps)
      ) {
        const own: Problem[] = [];
        const fresh = translateService(
          svc,
          slices,
          {
            pool: opts.pool,
            allowed: this.allowed,
            addresses: this.claimMemo.get(svc)?.addresses,
            ...(opts.tableSize === undefined ? {} : { tableSize: opts.tableSize }),
          },
          own,
          nodes,
        );
        entry = {
          svc,
          slices,
          vips: reuseEqual(entry?.vips ?? [], fresh.vips),
          problems: own,
          nodeDeps: fresh.nodeDeps,
        };
        this.lastTranslated++;
        yield;
      }
      next.set(key, entry);
      // Another Service can take this one's address without this one changing: applied here, not cached.
      const grant = grants.get(key)!;
      const lost = !grant.ok ? (grant.reason === 'AddressConflict' ? grant : null) : grant.problem;
      if (lost !== null) {
        problems.push({
          namespace: svc.metadata.namespace ?? '',
          name: svc.metadata.name ?? '',
          uid: svc.metadata.uid ?? '',
          reason: lost.reason,
          message: lost.message,
          blocking: true,
        });
        continue;
      }
      problems.push(...entry.problems);
      // grantAddresses leaves no two Services one address:protocol:port, so every VIP name and key is unique.
      vips.push(...entry.vips);
    }
    // Services gone (or no longer ours) are forgotten.
    this.byService = next;
    vips.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { vips, problems };
  }
}

/**
 * Equal as JSON data (plain objects, arrays, primitives; an undefined member counts as absent), without
 * building the text: comparing 1,000 re-translated VIPs as JSON strings was the biggest part of a publish.
 */
function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (x[k] === undefined) continue;
    n++;
    if (!Object.prototype.hasOwnProperty.call(y, k) || !sameData(x[k], y[k])) return false;
  }
  for (const k in y) if (y[k] !== undefined) n--;
  return n === 0;
}

/** `fresh` deep-frozen, with each VIP equal to one of `old` (by name and content) replaced by the old object. */
function reuseEqual(old: readonly VipConfig[], fresh: VipConfig[]): readonly VipConfig[] {
  const byName = new Map(old.map((v) => [v.name, v]));
  return Object.freeze(
    fresh.map((v) => {
      const o = byName.get(v.name);
      return o !== undefined && sameData(o, v) ? o : deepFreeze(v);
    }),
  );
}
