// Start-up diagnostics of the decap agent as plain functions: does the kernel's BTF have the conntrack kfunc
// the second chance asks in node mode (a raw BTF reader: /sys/kernel/btf/*), and is the second chance ready
// (switched on, forwarding on for the families the node decapsulates, the conntrack kfunc when asked to use it).

/** The kfunc the decap program declares __weak (bpf/decap_second.h): libbpf leaves it unresolved if missing. */
export const CONNTRACK_KFUNC = 'bpf_xdp_ct_lookup';

const BTF_MAGIC = 0xeb9f;
const KIND_FUNC = 12;

/** Bytes that follow `struct btf_type` (12 bytes) for each kind, by vlen (linux/btf.h). */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case 1: // INT
    case 14: // VAR
    case 17: // DECL_TAG
      return 4;
    case 3: // ARRAY
      return 12;
    case 4: // STRUCT
    case 5: // UNION
    case 15: // DATASEC
    case 19: // ENUM64
      return vlen * 12;
    case 6: // ENUM
    case 13: // FUNC_PROTO
      return vlen * 8;
    case 2: // PTR
    case 7: // FWD
    case 8: // TYPEDEF
    case 9: // VOLATILE
    case 10: // CONST
    case 11: // RESTRICT
    case 12: // FUNC
    case 16: // FLOAT
    case 18: // TYPE_TAG
      return 0;
    default:
      throw new Error(`BTF: unknown type kind ${kind}`);
  }
}

interface RawBtf {
  le: boolean;
  types: Buffer;
  strings: Buffer;
}

function readRaw(blob: Buffer, what: string): RawBtf {
  if (blob.length < 24) throw new Error(`${what}: too short for a BTF header (${blob.length} bytes)`);
  const le = blob.readUInt16LE(0) === BTF_MAGIC;
  if (!le && blob.readUInt16BE(0) !== BTF_MAGIC)
    throw new Error(`${what}: not BTF (magic ${blob.readUInt16LE(0).toString(16)})`);
  const u32 = (o: number) => (le ? blob.readUInt32LE(o) : blob.readUInt32BE(o));
  const hdrLen = u32(4);
  const [typeOff, typeLen, strOff, strLen] = [u32(8), u32(12), u32(16), u32(20)];
  const end = (off: number, len: number) => hdrLen + off + len;
  if (end(typeOff, typeLen) > blob.length || end(strOff, strLen) > blob.length)
    throw new Error(`${what}: sections run past the end (${blob.length} bytes)`);
  return {
    le,
    types: blob.subarray(hdrLen + typeOff, end(typeOff, typeLen)),
    strings: blob.subarray(hdrLen + strOff, end(strOff, strLen)),
  };
}

/**
 * Does this raw BTF (vmlinux, or a module's split BTF with `base` = vmlinux's) have a FUNC named `name`? A split
 * BTF's own string offsets continue after its base's strings.
 */
export function btfHasFunc(blob: Buffer, name: string, base?: Buffer): boolean {
  const raw = readRaw(blob, 'BTF');
  const baseStrLen = base ? readRaw(base, 'base BTF').strings.length : 0;
  const want = Buffer.from(`${name}\0`);
  const t = raw.types;
  const u32 = (o: number) => (raw.le ? t.readUInt32LE(o) : t.readUInt32BE(o));
  for (let o = 0; o + 12 <= t.length;) {
    const nameOff = u32(o);
    const info = u32(o + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    if (kind === KIND_FUNC && nameOff >= baseStrLen) {
      const s = nameOff - baseStrLen;
      if (raw.strings.subarray(s, s + want.length).equals(want)) return true;
    }
    o += 12 + extraBytes(kind, vlen);
  }
  return false;
}

/** What the agent found about the kernel and the interface; null = could not tell. */
export interface SecondChanceFacts {
  /** --no-second-chance given: hints are ignored, never forwarded. */
  enabled: boolean;
  /**
   * --from prefixes (LB tunnels) are configured: the program honours a previous-owner hint only from those (an
   * open relay otherwise: anyone reaching the GUE port could make this host resend bytes anywhere).
   */
  lbSources: boolean;
  conntrackLookup: boolean;
  /** FUNC bpf_xdp_ct_lookup in the kernel's BTF. */
  conntrackKfunc: boolean | null;
  /** Families the interface decapsulates for. */
  families: readonly (4 | 6)[];
  /** net.ipv4.conf.<if>.forwarding / net.ipv6.conf.<if>.forwarding: null when the family is off there. */
  forwarding: { 4: boolean | null; 6: boolean | null };
}

/**
 * The sysctl the second chance needs for `family` on `ifname` (bpf_fib_lookup answers only where it is 1); a dot
 * in the name (a VLAN device, eth0.100) is written as a slash, as sysctl(8) wants it.
 */
export const forwardingSysctl = (family: 4 | 6, ifname: string): string =>
  `net.ipv${family}.conf.${ifname.replace(/\./g, '/')}.forwarding`;

/** Is the second chance ready, and if not, why (each reason names what to change)? */
export function secondChanceReadiness(
  f: SecondChanceFacts,
  ifname: string,
): { ready: boolean; reasons: string[] } {
  const reasons: string[] = [];
  if (!f.enabled) reasons.push('second chance switched off (--no-second-chance)');
  else if (!f.lbSources)
    reasons.push(
      "no --from prefixes: hints are honoured only from the LB nodes' encapsulation sources, so none is (moved flows reset as without GUE)",
    );
  for (const fam of f.families)
    if (f.forwarding[fam] !== true)
      reasons.push(
        `IPv${fam} forwarding is off on ${ifname}: bpf_fib_lookup cannot route second-chance packets (set ${forwardingSysctl(fam, ifname)}=1)`,
      );
  // Asked for but missing: in node mode a flow kube-proxy DNATed here would look unknown and be forwarded away.
  // A host-mode backend (sockets answer) on such a kernel says --no-conntrack-lookup and is ready.
  if (f.conntrackLookup && f.conntrackKfunc !== true)
    reasons.push(
      f.conntrackKfunc === null
        ? `could not read the kernel's BTF to find ${CONNTRACK_KFUNC} (the conntrack lookup node mode needs)`
        : `the kernel's BTF has no ${CONNTRACK_KFUNC} (nf_conntrack missing, or a kernel before 6.0): node mode would forward flows kube-proxy DNATed here (host mode: --no-conntrack-lookup)`,
    );
  return { ready: reasons.length === 0, reasons };
}
