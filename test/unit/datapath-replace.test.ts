// The start's decision over a balancer's pins (pinDecision): adopt the same layout, replace an older build's
// (with the reason the replacements counter is labelled by), load fresh over nothing or leftovers, refuse a pin
// directory held by something that is not our balancer. Pins, object and interface are plain data here.
import {
  BALANCER_MAPS,
  BALANCER_PROGRAM,
  BPF_PROG_TYPE_XDP,
  MAP_LIMITS,
  pinDecision,
  type AttachedProgram,
  type BalancerMap,
  type BalancerSpec,
  type PinDecision,
  type PinnedObject,
  type PinSnapshot,
} from '../../src/datapath/kernel';

const DIR = '/sys/fs/bpf/peak-xdp/root/eth0';
const HASH = 1;
const ARRAY = 2;

/** A spec like the build's: every map a 4/8-byte hash, `config` an array of 52-byte values. */
function spec(): BalancerSpec {
  const maps = {} as BalancerSpec['maps'];
  for (const m of BALANCER_MAPS)
    maps[m] =
      m === 'config'
        ? { type: ARRAY, typeName: 'array', keySize: 4, valueSize: 52, flags: 0 }
        : { type: HASH, typeName: 'hash', keySize: 4, valueSize: 8, flags: 0 };
  return { programType: BPF_PROG_TYPE_XDP, programName: BALANCER_PROGRAM, maps };
}

const NEEDED: Partial<Record<BalancerMap, number>> = Object.fromEntries(
  Object.keys(MAP_LIMITS).map((m) => [m, 1024]),
);

/** Pins exactly as `spec()` defines them, `entries` big; `change` edits the snapshot. */
function pins(change: (p: PinSnapshot) => void = () => {}, entries = 1024): PinSnapshot {
  const s = spec();
  const maps = {} as Record<BalancerMap, PinnedObject>;
  for (const m of BALANCER_MAPS) {
    const { type, keySize, valueSize, flags } = s.maps[m];
    maps[m] = { kind: 'map', type, keySize, valueSize, flags, maxEntries: entries };
  }
  const p: PinSnapshot = {
    program: { kind: 'program', type: BPF_PROG_TYPE_XDP, typeName: 'xdp', name: BALANCER_PROGRAM, id: 41 },
    maps,
  };
  change(p);
  return p;
}

const NONE: AttachedProgram = { progId: 0, name: null };
const PINNED_ATTACHED: AttachedProgram = { progId: 41, name: BALANCER_PROGRAM };

function decide(p: PinSnapshot, attached: AttachedProgram = PINNED_ATTACHED): PinDecision {
  return pinDecision({ pins: p, spec: spec(), needed: NEEDED, attached, dir: DIR });
}

const missing: PinnedObject = { kind: 'missing' };

describe('pinDecision: adopt', () => {
  it('the same layout with big enough maps is adopted, attached or not', () => {
    expect(decide(pins())).toEqual({ kind: 'adopt' });
    expect(decide(pins(), NONE)).toEqual({ kind: 'adopt' });
    // Bigger maps than the limits need are fine (limits lowered since).
    expect(decide(pins(() => {}, 65536))).toEqual({ kind: 'adopt' });
  });

  it('a shorter stats value (counters appended since) is adopted; a longer or ragged one is not', () => {
    const stats = (valueSize: number) =>
      decide(pins((p) => (p.maps.stats = { ...(p.maps.stats as object), valueSize } as PinnedObject)));
    const s = spec();
    s.maps.stats = { ...s.maps.stats, valueSize: 304 };
    const withStats = (valueSize: number) =>
      pinDecision({
        pins: pins((p) => {
          p.maps.stats = { ...(p.maps.stats as object), valueSize } as PinnedObject;
        }),
        spec: s,
        needed: NEEDED,
        attached: NONE,
        dir: DIR,
      });
    expect(withStats(272)).toEqual({ kind: 'adopt' });
    expect(withStats(304)).toEqual({ kind: 'adopt' });
    expect(withStats(312)).toMatchObject({ kind: 'replace', reason: 'map_layout' });
    expect(withStats(270)).toMatchObject({ kind: 'replace', reason: 'map_layout' });
    // Only stats: a shorter value elsewhere is another struct.
    expect(stats(8)).toEqual({ kind: 'adopt' }); // spec() stats is 8 bytes: the same
    expect(
      decide(
        pins((p) => (p.maps.vip_stats = { ...(p.maps.vip_stats as object), valueSize: 4 } as PinnedObject)),
      ),
    ).toMatchObject({ kind: 'replace', reason: 'map_layout' });
  });

  it('another program attached does not change an adoptable pin directory', () => {
    expect(decide(pins(), { progId: 99, name: 'xdp_pass' })).toEqual({ kind: 'adopt' });
  });
});

describe('pinDecision: replace, with the reason', () => {
  it('a map this build added is missing (maglev_prev_tables: the older build had none)', () => {
    const d = decide(pins((p) => (p.maps.maglev_prev_tables = missing)));
    expect(d).toEqual({
      kind: 'replace',
      reason: 'missing_map',
      detail: 'no map maglev_prev_tables',
      leftovers: [],
    });
  });

  it('a value size that differs (struct peak_config 48 -> 52 bytes) is a layout change', () => {
    const d = decide(
      pins((p) => (p.maps.config = { ...(p.maps.config as object), valueSize: 48 } as PinnedObject)),
    );
    expect(d.kind).toBe('replace');
    expect(d).toMatchObject({ reason: 'map_layout' });
    expect((d as { detail: string }).detail).toBe(
      "map config has key/value 4/48 bytes, flags 0 (this build's 4/52, flags 0)",
    );
  });

  it('a key size or flags that differ are layout changes too', () => {
    expect(decide(pins((p) => (p.maps.vips = { ...(p.maps.vips as object), keySize: 20 } as PinnedObject)))).toMatchObject({ kind: 'replace', reason: 'map_layout' }); // prettier-ignore
    expect(decide(pins((p) => (p.maps.conntrack = { ...(p.maps.conntrack as object), flags: 1 } as PinnedObject)))).toMatchObject({ kind: 'replace', reason: 'map_layout' }); // prettier-ignore
  });

  it('a map of another type, or a pin under a map name that holds a program, is map_type', () => {
    const d = decide(
      pins((p) => (p.maps.backends = { ...(p.maps.backends as object), type: ARRAY } as PinnedObject)),
    );
    expect(d).toMatchObject({ kind: 'replace', reason: 'map_type' });
    expect((d as { detail: string }).detail).toBe("map backends is of type 2, this build's hash (1)");
    const q = decide(
      pins((p) => (p.maps.stats = { kind: 'program', type: 6, typeName: 'xdp', name: 'x', id: 7 })),
    );
    expect(q).toMatchObject({ kind: 'replace', reason: 'map_type' });
    expect((q as { detail: string }).detail).toMatch(
      /^pin stats holds a xdp program named "x" \(id 7\), not a map$/,
    );
  });

  it('maps smaller than the limits need are replaced (map_size), naming the limit', () => {
    const d = decide(
      pins((p) => (p.maps.conntrack = { ...(p.maps.conntrack as object), maxEntries: 512 } as PinnedObject)),
    );
    expect(d).toEqual({
      kind: 'replace',
      reason: 'map_size',
      detail: 'map conntrack has 512 entries, limits.conntrackEntries needs 1024',
      leftovers: [],
    });
  });

  it('several findings: every one in the detail, the label the most telling (missing > type > layout > size)', () => {
    const d = decide(
      pins((p) => {
        p.maps.conntrack = { ...(p.maps.conntrack as object), maxEntries: 1 } as PinnedObject;
        p.maps.config = { ...(p.maps.config as object), valueSize: 48 } as PinnedObject;
        p.maps.maglev_prev_tables = missing;
      }),
    );
    expect(d).toMatchObject({ kind: 'replace', reason: 'missing_map' });
    const detail = (d as { detail: string }).detail;
    expect(detail.split('; ')).toHaveLength(3);
    expect(detail).toMatch(/no map maglev_prev_tables/);
    expect(detail).toMatch(/map config has key\/value 4\/48/);
    expect(detail).toMatch(/map conntrack has 1 entries/);
    const e = decide(
      pins((p) => {
        p.maps.conntrack = { ...(p.maps.conntrack as object), maxEntries: 1 } as PinnedObject;
        p.maps.vips = { ...(p.maps.vips as object), type: ARRAY } as PinnedObject;
      }),
    );
    expect(e).toMatchObject({ reason: 'map_type' });
  });

  it('no program pin but a balancer attached (a replace killed after its swap): replace, leftovers named', () => {
    const d = decide(
      pins((p) => {
        p.program = missing;
        p.maps.vips = missing;
      }),
      { progId: 77, name: BALANCER_PROGRAM },
    );
    expect(d.kind).toBe('replace');
    expect(d).toMatchObject({ reason: 'unpinned_program' });
    expect((d as { detail: string }).detail).toMatch(
      /XDP program 77 named balancer is attached but not pinned/,
    );
    expect((d as { leftovers: string[] }).leftovers).toEqual(BALANCER_MAPS.filter((m) => m !== 'vips'));
  });
});

describe('pinDecision: fresh', () => {
  it('nothing pinned and nothing (or something else) attached: fresh, no leftovers', () => {
    const empty = pins((p) => {
      p.program = missing;
      for (const m of BALANCER_MAPS) p.maps[m] = missing;
    });
    expect(decide(empty, NONE)).toEqual({ kind: 'fresh', leftovers: [] });
    expect(decide(empty, { progId: 5, name: 'xdp_pass' })).toEqual({ kind: 'fresh', leftovers: [] });
    // A program we could not name (no CAP_SYS_ADMIN) is not taken for ours.
    expect(decide(empty, { progId: 5, name: null })).toEqual({ kind: 'fresh', leftovers: [] });
  });

  it('map pins without a program pin (an interrupted pin or unpin) are leftovers to remove first', () => {
    const d = decide(
      pins((p) => {
        p.program = missing;
        p.maps.config = missing;
      }),
      NONE,
    );
    expect(d).toEqual({ kind: 'fresh', leftovers: BALANCER_MAPS.filter((m) => m !== 'config') });
  });
});

describe('pinDecision: refuse (a pin directory held by something else)', () => {
  it('a program of another type under the program pin', () => {
    const d = decide(
      pins(
        (p) =>
          (p.program = { kind: 'program', type: 3, typeName: 'sched_cls', name: BALANCER_PROGRAM, id: 9 }),
      ),
    );
    expect(d.kind).toBe('refuse');
    expect((d as { reason: string }).reason).toBe(
      `the pin ${DIR}/balancer holds a sched_cls program named "balancer" (id 9), not a balancer (an XDP program named balancer): nothing was changed. Remove what is pinned under ${DIR} if it is not in use.`,
    );
  });

  it('an XDP program of another name, a map, or something unreadable under the program pin', () => {
    const other = decide(pins((p) => (p.program = { kind: 'program', type: 6, typeName: 'xdp', name: 'xdp_pass', id: 9 }))); // prettier-ignore
    expect(other).toMatchObject({ kind: 'refuse' });
    expect((other as { reason: string }).reason).toMatch(/holds a xdp program named "xdp_pass" \(id 9\)/);
    const map = decide(pins((p) => (p.program = { kind: 'map', type: 1, keySize: 4, valueSize: 4, maxEntries: 1, flags: 0 }))); // prettier-ignore
    expect((map as { reason: string }).reason).toMatch(/holds a map \(type 1\), not a balancer/);
    const odd = decide(pins((p) => (p.program = { kind: 'unreadable', error: 'EPERM' })));
    expect((odd as { reason: string }).reason).toMatch(
      /neither a BPF map nor a program we can open \(EPERM\)/,
    );
  });

  it('refuses even when the maps would fit (the program decides whose directory it is)', () => {
    const d = decide(pins((p) => (p.program = { kind: 'program', type: 6, typeName: 'xdp', name: 'katran', id: 3 })), NONE); // prettier-ignore
    expect(d.kind).toBe('refuse');
  });
});

describe('pinDecision: Maglev inner-map templates (an older build had no BPF_F_MMAPABLE)', () => {
  const ARRAY_OF_MAPS = 12;
  const INNER_MAP = 1 << 12;
  const MMAPABLE = 1 << 10;
  const OUTERS = ['maglev_tables', 'maglev_prev_tables'] as const;

  const TABLE = { flags: INNER_MAP | MMAPABLE, valueSize: 64 };

  /** spec() with the two Maglev outer maps as arrays of maps whose template is this build's. */
  function outerSpec(): BalancerSpec {
    const s = spec();
    for (const m of OUTERS)
      s.maps[m] = {
        type: ARRAY_OF_MAPS,
        typeName: 'array_of_maps',
        keySize: 4,
        valueSize: 4,
        flags: 0,
        inner: TABLE,
      };
    return s;
  }

  /** Pins of outerSpec() whose outer maps accept inner maps of template `inner` (per map). */
  function outerPins(
    inner: Partial<Record<(typeof OUTERS)[number], { flags: number; valueSize: number } | null>>,
  ): PinSnapshot {
    return pins((p) => {
      for (const m of OUTERS)
        p.maps[m] = {
          kind: 'map',
          type: ARRAY_OF_MAPS,
          keySize: 4,
          valueSize: 4,
          flags: 0,
          maxEntries: 2048,
          inner: m in inner ? inner[m] : TABLE,
        };
    });
  }

  const decideOuter = (p: PinSnapshot): PinDecision =>
    pinDecision({ pins: p, spec: outerSpec(), needed: NEEDED, attached: PINNED_ATTACHED, dir: DIR });

  it("outer maps whose inner maps have this build's template are adopted", () => {
    expect(decideOuter(outerPins({}))).toEqual({ kind: 'adopt' });
  });

  it('an outer map whose inner maps lack BPF_F_MMAPABLE or have 4-byte slots is replaced (map_layout), naming both templates', () => {
    // prettier-ignore
    const d = decideOuter(outerPins({ maglev_tables: { flags: INNER_MAP, valueSize: 64 } }));
    expect(d).toEqual({
      kind: 'replace',
      reason: 'map_layout',
      detail: `map maglev_tables holds inner maps with flags ${INNER_MAP}, 64-byte values (this build's flags ${INNER_MAP | MMAPABLE}, 64-byte values)`, // prettier-ignore
      leftovers: [],
    });
    // the previous build's template: same flags, 4-byte values
    expect(decideOuter(outerPins({ maglev_tables: { flags: INNER_MAP | MMAPABLE, valueSize: 4 } }))).toEqual({
      kind: 'replace',
      reason: 'map_layout',
      detail: `map maglev_tables holds inner maps with flags ${INNER_MAP | MMAPABLE}, 4-byte values (this build's flags ${INNER_MAP | MMAPABLE}, 64-byte values)`, // prettier-ignore
      leftovers: [],
    });
    // either outer map alone is enough (both share the template in a real build)
    expect(decideOuter(outerPins({ maglev_prev_tables: { flags: INNER_MAP, valueSize: 4 } }))).toMatchObject({
      kind: 'replace',
      reason: 'map_layout',
      detail: expect.stringMatching(
        /^map maglev_prev_tables holds inner maps with flags 4096, 4-byte values/,
      ),
    });
  });

  it('an unknown inner template (no inner map installed and no template in the BTF) is not adopted', () => {
    for (const unknown of [null, undefined]) {
      const p = outerPins({});
      (p.maps.maglev_tables as { inner?: unknown }).inner = unknown;
      const d = decideOuter(p);
      expect(d).toMatchObject({ kind: 'replace', reason: 'map_layout' });
      expect((d as { detail: string }).detail).toBe(
        `map maglev_tables: the template of its inner maps is unknown (none installed, no template in the program's BTF; this build's flags ${INNER_MAP | MMAPABLE}, 64-byte values)`, // prettier-ignore
      );
    }
  });

  it("a spec without inner templates (maps that are not maps of maps) ignores the pins' inner templates", () => {
    expect(decide(outerPins({ maglev_tables: { flags: INNER_MAP, valueSize: 4 } }))).toMatchObject({
      kind: 'replace',
      reason: 'map_type',
    });
    const p = pins((q) => ((q.maps.vips as { inner?: unknown }).inner = { flags: 1, valueSize: 4 }));
    expect(decide(p)).toEqual({ kind: 'adopt' });
  });
});
