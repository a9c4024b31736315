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
