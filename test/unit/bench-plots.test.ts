// Bench plot specs: 1-2-5 bins that show a 12 ms median, a CCDF that keeps the tail, discrete backend
// counts, event markers; each spec renders through vega to a PNG.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  binnedBarSpec,
  ccdfSpec,
  discreteLineSpec,
  logBinEdges,
  logHistogram,
  renderPng,
  timelineSpec,
} from '../../scripts/bench/lib/plot';

describe('bench plots', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peak-plots-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('1-2-5 bins: a 12 ms median gets its own bin, a 3 s outlier does not squash it', () => {
    const ecmp = [8, 11, 12, 12, 13, 14, 19, 85, 3100];
    expect(logBinEdges(ecmp)).toEqual([5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]);
    const h = logHistogram(ecmp);
    expect(h.find((b) => b.bin === '10–20')!.count).toBe(6);
    expect(h.find((b) => b.bin === '5–10')!.count).toBe(1);
    expect(h.reduce((n, b) => n + b.count, 0)).toBe(ecmp.length);
    expect(logHistogram([])).toEqual([]);
    expect(logBinEdges([100])).toEqual([100, 200]);
  });

  it('CCDF rows: fraction slower, the CCDF-0 point dropped (no log of 0)', () => {
    const spec = ccdfSpec({
      title: 't',
      rows: [
        { series: 'a', ms: 1, fraction: 0.5 },
        { series: 'a', ms: 10, fraction: 0.99 },
        { series: 'a', ms: 50, fraction: 1 },
      ],
    }) as { data: { values: { slower: number }[] } };
    expect(spec.data.values.map((r) => r.slower)).toEqual([0.5, 1 - 0.99]);
  });

  it('every spec renders to a PNG', async () => {
    const specs = {
      discrete: discreteLineSpec({ title: 'tp', rows: [1, 2, 5, 10].flatMap((b) => [{ system: 'x', backends: b, rps: 1000 * b, lo: 900 * b, hi: 1100 * b }]), x: 'backends', y: 'rps', color: 'system', xTitle: 'backends', yTitle: 'req/s' }), // prettier-ignore
      ccdf: ccdfSpec({ title: 'lat', rows: Array.from({ length: 100 }, (_, i) => ({ series: 's', ms: 1 + i, fraction: (i + 1) / 100 })) }), // prettier-ignore
      timeline: timelineSpec({ title: 'tl', rows: Array.from({ length: 50 }, (_, i) => ({ s: 'x', t: i, v: 100 })), x: 't', y: 'v', color: 's', xTitle: 's', yTitle: 'req/s', events: [{ t: 10, label: 'LB nodes: 2' }] }), // prettier-ignore
      bins: binnedBarSpec({ title: 'ecmp', rows: logHistogram([8, 12, 12, 85]).map((b) => ({ ...b, series: 'start' })), xTitle: 'ms', yTitle: 'n' }), // prettier-ignore
    };
    for (const [name, spec] of Object.entries(specs)) {
      const file = join(dir, `${name}.png`);
      await renderPng(spec, file);
      expect([name, statSync(file).size > 5000]).toEqual([name, true]);
    }
  }, 60000);
});
