// Reading a config file: format from the extension (.json: JSON; otherwise YAML, a superset of JSON), a
// bounded read of a regular file only, then the bounded parse of the model.
import { BigIntStats, constants } from 'node:fs';
import { FileHandle, open } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { ConfigFormat, parseConfig, ParseResult } from '../../model/config';
import { DOCUMENT_BOUNDS } from '../../model/document';

export function formatOf(path: string): ConfigFormat {
  return extname(path).toLowerCase() === '.json' ? 'json' : 'yaml';
}

export interface LoadOptions {
  /** Largest file accepted, in bytes; default DOCUMENT_BOUNDS.maxBytes of the file's format. */
  maxBytes?: number;
}

/** A rejected file: why, as config issues. */
export type ReadFailure = Extract<ParseResult, { ok: false }>;

const fail = (message: string): ReadFailure => ({ ok: false, errors: [{ path: '', message }] });

const bytes = (n: number): string => `${n} bytes (${(n / (1 << 20)).toFixed(1)} MiB)`;

function kindOf(st: BigIntStats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** A config file's text and the fstat of what was read (the file a symlink resolves to). */
export interface FileText {
  text: string;
  stat: BigIntStats;
}

/**
 * The file's text, or why it is refused: not a regular file (a FIFO or /dev/zero would block or never end),
 * or more than maxBytes. Reads at most maxBytes + 1 bytes whatever the file claims or does meanwhile.
 */
async function readBounded(
  path: string,
  format: ConfigFormat,
  maxBytes: number,
): Promise<FileText | ReadFailure> {
  const name = JSON.stringify(path);
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (holding a libuv thread).
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    return fail(`cannot read ${name}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) return fail(`cannot read ${name}: ${kindOf(st)}, not a regular file`);
    const tooBig = (size: string): ReadFailure =>
      fail(
        `${name} is ${size}: more than the ${bytes(maxBytes)} a ${format.toUpperCase()} ` +
          `config file may have (the bound keeps parsing within memory)`,
      );
    if (st.size > BigInt(maxBytes)) return tooBig(bytes(Number(st.size)));
    // The size can change between fstat and read: grow the buffer as needed, never past maxBytes + 1.
    let buf = Buffer.allocUnsafe(Number(st.size) + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        if (n > maxBytes) return tooBig(`more than ${maxBytes} bytes`);
        const bigger = Buffer.allocUnsafe(Math.min(2 * buf.length, maxBytes + 1));
        buf.copy(bigger, 0, 0, n);
        buf = bigger;
      }
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return { text: buf.toString('utf8', 0, n), stat: st };
  } catch (e) {
    return fail(`cannot read ${name}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Texts readConfigFileAhead read, by path and bound, until the next readConfigFile of them takes one. */
const ahead = new Map<string, FileText>();

/** A read ahead's key: the bound and the absolute path (the file source resolves its path; the CLI passes it as
 * given). */
const aheadKey = (path: string, maxBytes: number): string => `${maxBytes}:${resolve(path)}`;

/** The bound of a read (LoadOptions.maxBytes, else the format's), checked. */
function boundOf(path: string, opts: LoadOptions): number {
  const maxBytes = opts.maxBytes ?? DOCUMENT_BOUNDS.maxBytes[formatOf(path)];
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1)
    throw new RangeError(`maxBytes: ${opts.maxBytes} is not a positive integer`);
  return maxBytes;
}

/** Reads a config file within the bounds; an unreadable, oversized or irregular file is an error result. The text
 * readConfigFileAhead read for the same path and bound, if any, is taken instead (once). */
export async function readConfigFile(path: string, opts: LoadOptions = {}): Promise<FileText | ReadFailure> {
  const maxBytes = boundOf(path, opts);
  const key = aheadKey(path, maxBytes);
  const read = ahead.get(key);
  if (read !== undefined) {
    ahead.delete(key);
    return read;
  }
  return readBounded(path, formatOf(path), maxBytes);
}

/**
 * readConfigFile, ahead of the first load that will read the file: its text is kept for that read (the next
 * readConfigFile of the path and bound), which takes it instead of reading the file a second time. The daemon
 * command reads the file's limits before the daemon's modules load (preloadConfigFile); without this the file was
 * held twice until a collection (at 512 x 100 RSS at ready +5 MB; the text is 35 MB at 512 x 1000). A read ahead is
 * as if the first load had come that much earlier: a change after it is the source's next reload.
 */
export async function readConfigFileAhead(
  path: string,
  opts: LoadOptions = {},
): Promise<FileText | ReadFailure> {
  const maxBytes = boundOf(path, opts);
  const read = await readBounded(path, formatOf(path), maxBytes);
  if ('text' in read) ahead.set(aheadKey(path, maxBytes), read);
  return read;
}

/** Validates the text read from `path` (its extension names the format); a bug in parsing is an error result. */
export function parseConfigText(
  path: string,
  text: string,
  onDocument?: (doc: unknown) => void,
): ParseResult {
  try {
    return parseConfig(text, { format: formatOf(path), onDocument });
  } catch (e) {
    // parseConfig bounds its input; a throw here is a bug, reported as a rejection rather than a crash.
    return fail(`cannot parse ${JSON.stringify(path)}: ${(e as Error).message}`);
  }
}

/** Reads and validates a config file; an unreadable, oversized or malformed file is an error result, not a throw. */
export async function loadConfigFile(path: string, opts: LoadOptions = {}): Promise<ParseResult> {
  const read = await readConfigFile(path, opts);
  return 'text' in read ? parseConfigText(path, read.text) : read;
}
