// A metric family with up to millions of series (one per backend membership) written straight to Prometheus
// text, a chunk at a time with a turn of the event loop between chunks, without a label object per series.
// It also sits in a prom-client Registry (registry.metrics() reads it through get(), the slow way).
import type { Registry } from './prom';

/** Writes one series: label values in the family's labelNames order, and the value. */
export type EmitSeries = (labelValues: readonly string[], value: number) => void;

export interface TextFamilyOptions<T> {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labelNames: readonly string[];
  /** Reads what the series come from, once per render (e.g. one datapath counters read). */
  read(): Promise<T> | T;
  /**
   * Emits every series of `data` through emit, yielding now and then (e.g. after each membership): at a
   * yield, text() may flush a chunk and give the event loop a turn.
   */
  series(data: T, emit: EmitSeries): Iterable<unknown>;
  registers: Registry[];
}

/** Series per chunk of text: a few ms of formatting, then the event loop gets a turn. */
export const SERIES_PER_CHUNK = 8192;
/** Series per string given to `write` (~40 KB of text): small enough to die young in V8 (a chunk's ~1.2 MB string was
 * an old-generation object until a full collection) when the caller encodes each as it comes (ChunkWriter). */
export const SERIES_PER_WRITE = 256;

const escapeHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const NEEDS_ESCAPE = /[\\\n"]/;
/** Most values (names, addresses) need no escaping: test once instead of three replaces. */
const escapeLabel = (s: string): string => (NEEDS_ESCAPE.test(s) ? escapeHelp(s).replace(/"/g, '\\"') : s);

/** A number as prom-client writes it. */
export function sampleValue(v: number): string {
  if (Number.isNaN(v)) return 'Nan';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return `${v}`;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class TextFamily<T = unknown> {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly labelNames: readonly string[];
  /** prom-client's aggregation of cluster workers (unused here, required of a registered metric). */
  readonly aggregator = 'sum';
  private readonly read: () => Promise<T> | T;
  private readonly series: (data: T, emit: EmitSeries) => Iterable<unknown>;
  private readonly prefixes: string[];

  constructor(o: TextFamilyOptions<T>) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(o.name)) throw new TypeError(`name: ${JSON.stringify(o.name)} is not a metric name`); // prettier-ignore
    for (const l of o.labelNames)
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l)) throw new TypeError(`labelNames: ${JSON.stringify(l)} is not a label name`); // prettier-ignore
    this.name = o.name;
    this.help = o.help;
    this.type = o.type;
    this.labelNames = o.labelNames;
    this.read = o.read;
    this.series = o.series;
    // `name{a="`, `",b="`, ...: the fixed parts of every line, built once.
    this.prefixes = o.labelNames.map((l, i) => `${i === 0 ? `${o.name}{` : '",'}${l}="`);
    for (const r of o.registers) r.registerMetric(this as never);
  }

  /**
   * The family as Prometheus text (HELP, TYPE, one line per series, no trailing newline), the same text
   * prom-client writes for it; `write` gets it in chunks (the caller joins or streams them).
   */
  async text(write: (chunk: string) => void): Promise<void> {
    const data = await this.read();
    write(`# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}`);
    const prefixes = this.prefixes;
    const plain = `\n${this.name} `;
    let chunk = '';
    let n = 0;
    let unwritten = 0;
    const emit: EmitSeries = (values, value) => {
      let line = plain;
      if (prefixes.length > 0) {
        line = '\n';
        for (let i = 0; i < prefixes.length; i++) line += prefixes[i]! + escapeLabel(values[i] ?? '');
        line += '"} ';
      }
      chunk += line + sampleValue(value);
      n++;
      if (++unwritten >= SERIES_PER_WRITE) {
        write(chunk);
        chunk = '';
        unwritten = 0;
      }
    };
    for (const _ of this.series(data, emit))
      if (n >= SERIES_PER_CHUNK) {
        n = 0;
        await nextTurn();
      }
    if (chunk !== '') write(chunk);
  }

  /** What prom-client's Registry reads (registry.metrics(), getMetricsAsJSON): one object per series. */
  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string>; value: number }[];
  }> {
    const values: { labels: Record<string, string>; value: number }[] = [];
    const emit: EmitSeries = (lv, value) => {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((l, i) => (labels[l] = lv[i] ?? ''));
      values.push({ labels, value });
    };
    for (const _ of this.series(await this.read(), emit));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** prom-client's Registry.resetMetrics: the family holds nothing between renders. */
  reset(): void {}
}

export const isTextFamily = (m: unknown): m is TextFamily => m instanceof TextFamily;
