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
