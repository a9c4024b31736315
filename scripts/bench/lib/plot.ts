// Renders vega-lite specs to PNG: vega-lite -> vega -> headless View.toSVG() -> @resvg/resvg-js.
import { writeFileSync } from 'node:fs';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';

/** Renders one vega-lite spec (data inline) to a PNG file; also writes the SVG beside it. */
export async function renderPng(spec: vl.TopLevelSpec, path: string): Promise<void> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG(2);
  view.finalize();
  writeFileSync(path.replace(/\.png$/, '.svg'), svg);
  const png = new Resvg(svg, { background: 'white', font: { loadSystemFonts: true } }).render().asPng();
  writeFileSync(path, png);
}

type Row = Record<string, string | number>;

export function lineSpec(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  color: string;
  xTitle: string;
  yTitle: string;
  xLog?: boolean;
}): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: o.title,
    width: 520,
    height: 300,
    data: { values: o.rows },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: o.x, type: 'quantitative', title: o.xTitle, scale: o.xLog ? { type: 'log' } : {} },
      y: { field: o.y, type: 'quantitative', title: o.yTitle },
      color: { field: o.color, type: 'nominal' },
    },
  };
}

export function barSpec(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  xTitle: string;
  yTitle: string;
  color?: string;
}): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: o.title,
    width: 520,
    height: 300,
    data: { values: o.rows },
    mark: 'bar',
    encoding: {
      x: { field: o.x, type: 'ordinal', title: o.xTitle },
      y: { field: o.y, type: 'quantitative', title: o.yTitle },
      ...(o.color ? { color: { field: o.color, type: 'nominal' }, xOffset: { field: o.color } } : {}),
    },
  };
}

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/**
 * A line per series over a discrete x (backend counts 1, 2, 5, 10 are categories, evenly spaced: a
 * quantitative axis crowds the small counts). Rows with `lo`/`hi` draw a min–max band (noise over repeats).
 */
export function discreteLineSpec(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  color: string;
  xTitle: string;
  yTitle: string;
}): vl.TopLevelSpec {
  const hasBand = o.rows.some((r) => r.lo !== undefined && r.hi !== undefined);
  const x = { field: o.x, type: 'ordinal' as const, title: o.xTitle, sort: 'ascending' as const };
  return {
    $schema: SCHEMA,
    title: o.title,
    width: 520,
    height: 300,
    data: { values: o.rows },
    layer: [
      ...(hasBand
        ? [
            {
              mark: { type: 'errorband' as const, opacity: 0.25 },
              encoding: {
                x,
                y: { field: 'lo', type: 'quantitative' as const, title: o.yTitle },
                y2: { field: 'hi' },
                color: { field: o.color, type: 'nominal' as const },
              },
            },
          ]
        : []),
      {
        mark: { type: 'line', point: true },
        encoding: {
          x,
          y: { field: o.y, type: 'quantitative', title: o.yTitle },
          color: { field: o.color, type: 'nominal' },
        },
      },
    ],
  };
}

/**
 * Latency as a CCDF: fraction of requests slower than x, both axes log, so the tail (p99, p99.9) takes as
 * much room as the body. Rows: {series, ms, fraction (the CDF)}; the last point (CCDF 0) cannot go on a log axis.
 */
export function ccdfSpec(o: {
  title: string;
  rows: { series: string; ms: number; fraction: number }[];
}): vl.TopLevelSpec {
  const rows = o.rows
    .map((r) => ({ series: r.series, ms: r.ms, slower: 1 - r.fraction }))
    .filter((r) => r.slower > 0 && r.ms > 0);
  return {
    $schema: SCHEMA,
    title: o.title,
    width: 520,
    height: 300,
    data: { values: rows },
    layer: [
      {
        mark: { type: 'line', interpolate: 'step-after' },
        encoding: {
          x: { field: 'ms', type: 'quantitative', title: 'latency (ms, log)', scale: { type: 'log' } },
          y: {
            field: 'slower',
            type: 'quantitative',
            title: 'fraction slower (log)',
            scale: { type: 'log' },
          },
          color: { field: 'series', type: 'nominal' },
        },
      },
      {
        data: {
          values: [
            { p: 'p50', y: 0.5 },
            { p: 'p99', y: 0.01 },
            { p: 'p99.9', y: 0.001 },
          ],
        },
        mark: { type: 'rule', strokeDash: [2, 3], color: '#999' },
        encoding: { y: { field: 'y', type: 'quantitative' } },
      },
    ],
  };
}

/** A timeline (line per series) with a vertical marker and label at each event (e.g. "LB nodes: 2"). */
export function timelineSpec(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  color: string;
  xTitle: string;
  yTitle: string;
  events: { t: number; label: string }[];
}): vl.TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: o.title,
    width: 520,
    height: 300,
    layer: [
      {
        data: { values: o.rows },
        mark: { type: 'line' },
        encoding: {
          x: { field: o.x, type: 'quantitative', title: o.xTitle },
          y: { field: o.y, type: 'quantitative', title: o.yTitle },
          color: { field: o.color, type: 'nominal' },
        },
      },
      {
        data: { values: o.events },
        mark: { type: 'rule', strokeDash: [4, 3], color: '#555' },
        encoding: { x: { field: 't', type: 'quantitative' } },
      },
      {
        data: { values: o.events },
        mark: { type: 'text', align: 'left', baseline: 'top', dx: 3, dy: 3, fontSize: 10, color: '#333' },
        encoding: { x: { field: 't', type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } },
      },
    ],
  };
}

/**
 * Bin edges in a 1-2-5 sequence from below the smallest to above the largest value: fine where values are
 * small (a 12 ms median lands in 10–20 ms, not in a 0–100 ms bin with everything else) and coarse in the tail.
 */
export function logBinEdges(values: readonly number[]): number[] {
  const pos = values.filter((v) => Number.isFinite(v) && v > 0);
  if (pos.length === 0) return [];
  const lo = Math.min(...pos);
  const hi = Math.max(...pos);
  const edges: number[] = [];
  for (let decade = 10 ** Math.floor(Math.log10(lo)); ; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const e = m * decade;
      if (e > hi) {
        edges.push(e);
        return edges.filter((x, i) => i === edges.length - 1 || edges[i + 1]! > lo);
      }
      edges.push(e);
    }
  }
}

/** Counts per 1-2-5 bin (see logBinEdges), labelled "10–20"; values <= 0 go to the first bin. */
export function logHistogram(values: readonly number[]): { bin: string; from: number; count: number }[] {
  const edges = logBinEdges(values);
  if (edges.length === 0) return values.length ? [{ bin: `≤0`, from: 0, count: values.length }] : [];
  const bins = edges.slice(0, -1).map((from, i) => ({ bin: `${from}–${edges[i + 1]}`, from, count: 0 }));
  for (const v of values) {
    let i = bins.findIndex((b, j) => v < edges[j + 1]!);
    if (i < 0) i = bins.length - 1;
    bins[Math.max(0, i)]!.count++;
  }
  return bins;
}

/** A histogram over labelled bins kept in order (ordinal x), bars side by side per series. */
export function binnedBarSpec(o: {
  title: string;
  rows: { bin: string; from: number; count: number; series: string }[];
  xTitle: string;
  yTitle: string;
}): vl.TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: o.title,
    width: 520,
    height: 300,
    data: { values: o.rows },
    mark: 'bar',
    encoding: {
      x: { field: 'bin', type: 'ordinal', title: o.xTitle, sort: { field: 'from', order: 'ascending' } },
      y: { field: 'count', type: 'quantitative', title: o.yTitle },
      color: { field: 'series', type: 'nominal' },
      xOffset: { field: 'series' },
    },
  };
}
