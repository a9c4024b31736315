// A watch stream's lines handed over a slice at a time. A burst of watch events arrives in one go (1,000
// EndpointSlices: ~2 MB that libuv reads from the socket in one callback), and parsing and applying every line of it
// at once held the daemon's event loop 60-95 ms (bench:k8s, an event-loop stall per burst), /healthz included.

/** How long one slice of lines may run before the stream is paused for an event-loop turn. */
export const LINE_SLICE_MS = 5;

export interface LinePumpOptions {
  /** One line (without its newline; blank lines are skipped). false: stop (no line after it is handed over). */
  onLine(line: string): boolean;
  /** Stop and restart the stream's 'data' events (Readable.pause/resume). */
  pause(): void;
  resume(): void;
  sliceMs?: number;
  now?: () => number;
  /** Runs `f` after an event-loop turn (default setImmediate). */
  defer?: (f: () => void) => void;
}

/**
 * Splits text into lines and hands them to onLine in order, a slice at a time: past `sliceMs` it pauses the stream,
 * and goes on after an event-loop turn (resuming the stream once every line it was given is handed over).
 */
export class LinePump {
  readonly #o: LinePumpOptions;
  readonly #sliceMs: number;
  readonly #now: () => number;
  readonly #defer: (f: () => void) => void;
  /** Text not handed over yet: whole lines, then a partial one. */
  #text = '';
  /** Where the lines not handed over yet begin in #text. */
  #from = 0;
  #chunks: string[] = [];
  #paused = false;
  #scheduled = false;
  #stopped = false;
  #onEnd: (() => void) | null = null;
  #ended = false;

  constructor(o: LinePumpOptions) {
    this.#o = o;
    this.#sliceMs = o.sliceMs ?? LINE_SLICE_MS;
    this.#now = o.now ?? performance.now.bind(performance);
    this.#defer = o.defer ?? ((f) => void setImmediate(f));
  }

  /** Text from the stream. */
  push(chunk: string): void {
    if (this.#stopped) return;
    this.#chunks.push(chunk);
    if (!this.#scheduled) this.#drain();
  }

  /** The stream ended: `then` runs once every line before it was handed over (at once if none waits; the first
   * call's `then` only). A partial last line without its newline is dropped. */
  end(then: () => void): void {
    if (this.#onEnd !== null || this.#ended) return;
    this.#onEnd = then;
    if (!this.#scheduled) this.#finishIfIdle();
  }

  /** Lines are handed over no more (the stream was stopped or failed). */
  stop(): void {
    this.#stopped = true;
    this.#chunks = [];
    this.#text = '';
    this.#from = 0;
  }

  #drain(): void {
    this.#scheduled = false;
    const started = this.#now();
    while (!this.#stopped) {
      const nl = this.#text.indexOf('\n', this.#from);
      if (nl === -1) {
        const next = this.#chunks.shift();
        if (next === undefined) break;
        this.#text = this.#text.slice(this.#from) + next;
        this.#from = 0;
        continue;
      }
      const line = this.#text.slice(this.#from, nl).trim();
      this.#from = nl + 1;
      if (line !== '' && !this.#o.onLine(line)) {
        this.stop();
        break;
      }
      if (this.#now() - started >= this.#sliceMs) {
        if (!this.#paused) {
          this.#paused = true;
          this.#o.pause();
        }
        this.#scheduled = true;
        this.#defer(() => this.#drain());
        return;
      }
    }
    if (this.#paused && !this.#stopped) {
      this.#paused = false;
      this.#o.resume();
    }
    this.#finishIfIdle();
  }

  #finishIfIdle(): void {
    const then = this.#onEnd;
    if (then === null || this.#ended) return;
    this.#ended = true;
    then();
  }
}
