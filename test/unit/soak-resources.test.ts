// The soak's leak verdict: growth beyond the bound that still shows in the second half (a leak), not a V8
// warm-up that reaches its plateau (seen in CI: 89 -> 117 MiB, flat from the middle on).
import { analyseResources, GROWTH_BOUNDS } from '../../scripts/soak/report';
import type { ResourceSample } from '../../scripts/soak/observe';

const MIB = 1024;
/** One sample a second for `seconds`, RSS from `rssMiB(t)` plus a 20 MiB GC sawtooth above the floor. */
function series(seconds: number, rssMiB: (t: number) => number): ResourceSample[] {
  return Array.from({ length: seconds }, (_, t) => ({
    t: t * 1000,
    lb: 'lb1',
    pid: 42,
    rssKiB: Math.round((rssMiB(t) + (t % 7) * 3) * MIB),
    fds: 40,
  }));
}
const opts = { warmupS: 10, minSpanS: 60 };

describe('soak resource verdict', () => {
  it('a warm-up that plateaus by the middle passes', () => {
    // 89 MiB rising to 117 MiB over the first 70 s, then flat for 100 s.
    const [v] = analyseResources(
      series(180, (t) => 89 + 28 * Math.min(1, t / 70)),
      opts,
    );
    expect(v).toMatchObject({ judged: true, ok: true });
    expect(v!.rssEndKiB - v!.rssStartKiB).toBeGreaterThan(GROWTH_BOUNDS.rssMiB * MIB);
  });

  it('a steady leak fails', () => {
    // 0.25 MiB/s for 170 s: +42 MiB, half of it in the second half.
    const [v] = analyseResources(
      series(180, (t) => 90 + 0.25 * t),
      opts,
    );
    expect(v).toMatchObject({ judged: true, ok: false, note: 'RSS grew beyond the bound' });
    expect(v!.rssEndKiB - v!.rssMidKiB).toBeGreaterThan((GROWTH_BOUNDS.rssMiB * MIB) / 2);
  });

  it('a GC sawtooth whose last high phase outlasts the tail window passes (an LB daemon in CI)', () => {
    // RSS (MiB) of lb2 in a CI quick soak, one sample a second: the head swings 88-131 MiB, and after a health
    // fail-open storm at +130 s the last 40 s stay above 111 MiB. Not a leak: the floor never rises past the band.
    const rss = [
      101, 107, 107, 107, 115, 115, 117, 123, 121, 111, 124, 94, 94, 105, 105, 105, 110, 110, 111, 94, 95, 95,
      95, 95, 105, 109, 109, 114, 114, 114, 102, 109, 91, 105, 91, 90, 97, 106, 88, 101, 102, 103, 104, 104,
      104, 113, 110, 109, 116, 119, 119, 91, 91, 93, 112, 112, 112, 110, 110, 110, 94, 94, 94, 108, 108, 109,
      99, 100, 100, 116, 108, 108, 112, 112, 113, 92, 108, 108, 117, 117, 117, 126, 126, 127, 131, 131, 131,
      94, 94, 109, 95, 95, 95, 108, 94, 94, 90, 90, 90, 105, 105, 112, 109, 110, 110, 114, 114, 114, 98, 108,
      108, 112, 112, 112, 112, 112, 112, 94, 95, 95, 106, 106, 106, 112, 112, 112, 115, 96, 96, 96, 96, 96,
      96, 96, 111, 113, 119, 113, 114, 114, 114, 116, 126, 126, 116, 116, 119, 116, 116, 118, 111, 112, 112,
      114, 115, 115, 114, 114, 114, 115, 115, 116, 119, 120, 121, 123, 123, 129, 125, 125,
    ];
    const samples = rss.map((m, t) => ({ t: t * 1000, lb: 'lb2', pid: 43, rssKiB: m * MIB, fds: 41 }));
    const [v] = analyseResources(samples, { warmupS: 60, minSpanS: 60 });
    expect(v).toMatchObject({ judged: true, ok: true });
    expect(v!.rssEndKiB - v!.rssStartKiB).toBeGreaterThan(GROWTH_BOUNDS.rssMiB * MIB);
  });

  it('a flat series passes, and a late jump that stays fails', () => {
    expect(
      analyseResources(
        series(180, () => 100),
        opts,
      )[0],
    ).toMatchObject({ judged: true, ok: true });
    const [v] = analyseResources(
      series(180, (t) => (t < 120 ? 100 : 140)),
      opts,
    );
    expect(v).toMatchObject({ judged: true, ok: false });
  });
});
