// Text written piece by piece into Buffers as it is made: no string of the whole text, and none that outlives its
// piece (a big text kept as pieces until the end, then joined, was old-generation garbage for V8's next full
// collection: the admin API's /state and per-backend /metrics).

/** Bytes of each Buffer a ChunkWriter fills: at least glibc's mmap threshold as the daemon fixes it
 * (MALLOC_MMAP_THRESHOLD), so a chunk's memory goes back to the kernel when it is freed. */
export const CHUNK_BYTES = 256 << 10;

/** Writes strings as UTF-8 into Buffers of CHUNK_BYTES, one after another; a string bigger than that is a Buffer of
 * its own. */
export class ChunkWriter {
  readonly #chunks: Buffer[] = [];
  #cur: Buffer | null = null;
  #at = 0;

  write(s: string): void {
    const bytes = Buffer.byteLength(s);
    if (this.#cur !== null && this.#at + bytes > this.#cur.length) this.#flush();
    if (bytes > CHUNK_BYTES) {
      this.#chunks.push(Buffer.from(s));
      return;
    }
    this.#cur ??= Buffer.allocUnsafe(CHUNK_BYTES);
    this.#at += this.#cur.write(s, this.#at);
  }

  /** The Buffers written, in order (the last cut to what it holds); the writer starts empty again. */
  finish(): Buffer[] {
    this.#flush();
    return this.#chunks.splice(0);
  }

  #flush(): void {
    if (this.#cur !== null && this.#at > 0) this.#chunks.push(this.#cur.subarray(0, this.#at));
    this.#cur = null;
    this.#at = 0;
  }
}
