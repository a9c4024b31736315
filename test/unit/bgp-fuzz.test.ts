// fast-check fuzzing of the decoder (10^5 cases in total): no throw, no catch-all, only RFC error codes,
// and encode -> decode round trips of random valid UPDATEs.
import fc from 'fast-check';
import {
  decodeMessage,
  DecodeResult,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  splitFrames,
  UpdateMessage,
} from '../../src/bgp/codec';
import { canonicalPrefix } from '../../src/bgp/ip';

/** Subcodes RFC 4271 §6 (and RFC 7606) define per error code. */
const VALID: Record<number, number[]> = {
  1: [1, 2, 3],
  2: [0, 1, 2, 3, 4, 6, 7],
  3: [1, 2, 3, 4, 5, 6, 8, 9, 10, 11],
};

let decoded = 0;
let rejected = 0;

/** The property every decode must satisfy; returns false to make fast-check report the input. */
function wellBehaved(buf: Buffer, fourOctetAs: boolean): boolean {
  let r: DecodeResult;
  try {
    r = decodeMessage(buf, { fourOctetAs, ibgp: buf.length % 2 === 0 });
  } catch {
    return false;
  }
  decoded++;
  if (r.ok) {
    if (r.msg.type !== 2) return true;
    const u = r.msg as UpdateMessage;
    return u.errors.every(
      (e) => e.code === 3 && VALID[3]!.includes(e.subcode) && e.action !== 'session-reset',
    );
  }
  rejected++;
  // The catch-all inside decodeMessage must never be what answered.
  if (r.error.reason.startsWith('undecodable')) return false;
  return r.error.action === 'session-reset' && (VALID[r.error.code] ?? []).includes(r.error.subcode);
}

function header(type: number, body: Uint8Array, len?: number): Buffer {
  const h = Buffer.alloc(19, 0xff);
  h.writeUInt16BE(len ?? 19 + body.length, 16);
  h[18] = type;
  return Buffer.concat([h, Buffer.from(body)]);
}

const v4prefix = fc
  .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }))
  .map(([a, l]) => canonicalPrefix(`${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${l}`));
const v6prefix = fc
  .tuple(
    fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }),
    fc.integer({ min: 0, max: 128 }),
  )
  .map(([g, l]) => canonicalPrefix(`${g.map((x) => x.toString(16)).join(':')}/${l}`));
const community = fc
  .tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }))
  .map(([a, b]) => `${a}:${b}`);
const large = fc.tuple(fc.nat(), fc.nat(), fc.nat()).map(([a, b, c]) => `${a}:${b}:${c}`);

/** A valid message of any type (seeds for mutation). */
const validMessage = fc.oneof(
  fc.constant(encodeKeepalive()),
  fc.constant(encodeRouteRefresh({ afi: 2, safi: 1 })),
  fc.constant(encodeNotification({ code: 6, subcode: 2 })),
  fc.constant(
    encodeOpen({
      asn: 65001,
      holdTime: 3,
      routerId: '10.0.0.1',
      families: [
        { afi: 1, safi: 1 },
        { afi: 2, safi: 1 },
      ],
      gracefulRestart: { restartTime: 120 },
    }),
  ),
  fc
    .tuple(
      fc.array(v4prefix, { maxLength: 5 }),
      fc.array(community, { maxLength: 4 }),
      fc.array(large, { maxLength: 2 }),
    )
    .map(([nlri, c, l]) =>
      encodeUpdate(
        {
          nlri,
          attrs: {
            origin: 0,
            asPath: [{ type: 2, asns: [65001] }],
            nextHop: '10.0.0.2',
            communities: c,
            largeCommunities: l,
            med: 5,
          },
        },
        { fourOctetAs: true },
      ),
    ),
  fc
    .array(v6prefix, { minLength: 1, maxLength: 5 })
    .map((nlri) =>
      encodeUpdate(
        { attrs: { origin: 0, asPath: [], mpReach: { afi: 2, safi: 1, nextHops: ['2001:db8::1'], nlri } } },
        { fourOctetAs: true },
      ),
    ),
);

/** Mutations: flip bytes, truncate (fixing the length field or not), insert bytes. */
const mutated = fc
  .tuple(
    validMessage,
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
    fc.nat(),
    fc.boolean(),
  )
  .map(([m, flips, cut, fixLen]) => {
    const b = Buffer.from(m);
    // Keep the marker intact most of the time so the body decoders are exercised.
    for (const [at, v] of flips) b[16 + (at % Math.max(1, b.length - 16))] = v;
    const end = 19 + (cut % Math.max(1, b.length - 18));
    const out = b.subarray(0, end);
    if (fixLen) out.writeUInt16BE(out.length, 16);
    return Buffer.from(out);
  });

describe('decoder fuzzing (fast-check)', () => {
  afterAll(() =>
    console.log(`[fuzz] decoded ${decoded} inputs, ${rejected} rejected with a NOTIFICATION code`),
  );

  it('random bodies under a valid header: 40k cases', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 7 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.boolean(),
        (t, body, as4) => wellBehaved(header(t, body), as4),
      ),
      { numRuns: 40_000 },
    );
  });

  it('mutated valid messages: 40k cases', () => {
    fc.assert(
      fc.property(mutated, fc.boolean(), (m, as4) => wellBehaved(m, as4)),
      { numRuns: 40_000 },
    );
  });

  it('random valid UPDATEs round-trip exactly: 10k cases', () => {
    fc.assert(
      fc.property(
        fc.array(v4prefix, { maxLength: 8 }),
        fc.array(v4prefix, { maxLength: 8 }),
        fc.array(v6prefix, { maxLength: 4 }),
        fc.uniqueArray(community, { maxLength: 10 }),
        fc.uniqueArray(large, { maxLength: 5 }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.array(fc.integer({ min: 1, max: 0xffffffff }), { maxLength: 6 }),
        (nlri, withdrawn, nlri6, communities, largeCommunities, med, asns) => {
          const attrs = {
            origin: 0,
            asPath: asns.length ? [{ type: 2, asns }] : [],
            nextHop: '10.0.0.2',
            ...(med !== undefined ? { med } : {}),
            ...(communities.length ? { communities } : {}),
            ...(largeCommunities.length ? { largeCommunities } : {}),
            ...(nlri6.length ? { mpReach: { afi: 2, safi: 1, nextHops: ['2001:db8::2'], nlri: nlri6 } } : {}),
          };
          const r = decodeMessage(encodeUpdate({ nlri, withdrawn, attrs }, { fourOctetAs: true }), {
            fourOctetAs: true,
          });
          if (!r.ok) return false;
          const u = r.msg as UpdateMessage;
          expect(u.nlri).toEqual(nlri);
          expect(u.withdrawn).toEqual(withdrawn);
          expect(u.attrs).toEqual(attrs);
          expect(u.errors).toEqual([]);
          return true;
        },
      ),
      { numRuns: 10_000 },
    );
  });

  it('stream framing of random byte chunks: 10k cases', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            validMessage,
            fc.uint8Array({ maxLength: 40 }).map((x) => Buffer.from(x)),
          ),
          { maxLength: 6 },
        ),
        (parts) => {
          const s = Buffer.concat(parts);
          const r = splitFrames(s);
          const consumed = r.frames.reduce((n, f) => n + f.length, 0);
          if (r.error) return r.error.code === 1 && [1, 2].includes(r.error.subcode);
          // Without an error every byte is either in a whole frame or in the kept tail.
          return (
            consumed + r.rest.length === s.length && r.frames.every((f) => f.readUInt16BE(16) === f.length)
          );
        },
      ),
      { numRuns: 10_000 },
    );
  });
});
