// Bounded parsing of a config document (YAML or JSON text -> plain value): nesting depth, YAML anchors and
// aliases, expanded size. A wrong or hostile file is refused with a message naming the bound it broke.
import type * as Yaml from 'yaml';

/** The yaml package, loaded when a YAML document is first parsed (72 modules, ~28 ms: a JSON config never needs it). */
let yamlModule: typeof Yaml | null = null;
function yaml(): typeof Yaml {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for YAML documents
  return (yamlModule ??= require('yaml') as typeof Yaml);
}
import { ConfigIssue, formatPath } from './errors';

const MiB = 1 << 20;

/**
 * Bounds on a config document. Measured on a 1,024 VIPs x 100 backends config (health checks, weights):
 * 5.3 MB as YAML (3 s, ~460 MB peak RSS to parse), 8.7 MB as indented JSON (0.3 s, ~120 MB), ~320,000 values.
 */
export const DOCUMENT_BOUNDS = {
  /**
   * File size in bytes, by format. YAML costs ~10-20x JSON per byte (~0.6 s and ~80 MB of heap per MB), so its
   * bound is lower; each leaves >= 1.5x room over the 1,024 x 100 config in that format.
   */
  maxBytes: { yaml: 8 * MiB, json: 16 * MiB },
  /** Lists and maps nested in each other (a config nests ~5 deep; recursive parsers overflow near 1,000). */
  maxDepth: 64,
  /**
   * Values (lists, maps, scalars) in the document, each use of a YAML alias counted again. YAML is also counted
   * as it is read (scalars, list items, explicit keys, flow collections): ~536,000 for 1,024 x 100; refusing
   * an 8 MiB YAML file of tiny items at this bound takes ~4 s and ~550 MB (unbounded: 42 s and 4 GB).
   */
  maxValues: 1 * MiB,
  /** YAML anchors plus aliases: resolving each alias scans every anchor and alias before it (quadratic). */
  maxYamlRefs: 4096,
} as const;

export type DocumentFormat = 'yaml' | 'json';

export type DocumentResult = { ok: true; value: unknown } | { ok: false; errors: ConfigIssue[] };

const fail = (message: string): DocumentResult => ({ ok: false, errors: [{ path: '', message }] });

const count = (n: number): string => n.toLocaleString('en-US');

/** Lexemes that start a YAML value (besides scalars): list item, explicit key, flow list, flow map. */
const ITEM_LEXEMES = new Set(['-', '?', '[', '{']);

const tooDeep = `lists and maps nest deeper than ${DOCUMENT_BOUNDS.maxDepth} levels (the bound)`;

/**
 * Null when `value` nests lists and maps at most maxDepth deep and holds at most maxValues values (a value
 * reached twice, e.g. through a YAML alias, counts twice); else what is wrong. Iterative: no recursion on input.
 */
function measure(value: unknown): string | null {
  return measureCounting(value).error;
}

/** measure(), with the number of keys of the document's objects (JSON.parse keeps one of each key of an object). */
function measureCounting(value: unknown): { error: string | null; keys: number } {
  const { maxDepth, maxValues } = DOCUMENT_BOUNDS;
  // Containers only, each beside its depth (scalars need no visit; no tuple per value: 512,000 backends at scale).
  const stack: object[] = [];
  const depths: number[] = [];
  if (value !== null && typeof value === 'object') {
    stack.push(value);
    depths.push(0);
  }
  let values = 1;
  let keys = 0;
  while (stack.length > 0) {
    const v = stack.pop()!;
    const depth = depths.pop()!;
    // A cycle (a YAML alias inside its own anchor) nests without end: the depth bound stops it.
    if (depth + 1 > maxDepth) return { error: tooDeep, keys };
    const children = Array.isArray(v) ? (v as unknown[]) : Object.values(v);
    if (children !== v) keys += children.length;
    for (const child of children) {
      if (++values > maxValues)
        return {
          error:
            `the document holds more than ${count(maxValues)} values (the bound; lists, maps and scalars, ` +
            `each use of a YAML alias counted again)`,
          keys,
        };
      if (child !== null && typeof child === 'object') {
        stack.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return { error: null, keys };
}

/** "line 3, column 7" of a character offset (1-based, as editors count). */
function lineColumn(text: string, offset: number): string {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return `line ${line}, column ${offset - start + 1}`;
}

/** V8's "... in JSON at position 7" (newer Node adds " (line 1 column 8)"). */
const JSON_POSITION = / in JSON at position (\d+)(?: \(line \d+ column \d+\))?$/;

/**
 * Where the first syntax error of `text` is, for messages V8 gives without a position ("Unexpected token 'x',
 * "<the text around it>" is not valid JSON"): the shortest prefix that fails before its end, by bisection.
 */
function firstBadOffset(text: string): number {
  const failsInside = (k: number): boolean => {
    try {
      JSON.parse(text.slice(0, k));
      return false;
    } catch (e) {
      const msg = (e as Error).message;
      if (msg.startsWith('Unexpected end of JSON input')) return false;
      const m = JSON_POSITION.exec(msg);
      return m === null || Number(m[1]) < k;
    }
  };
  let good = 0;
  let bad = text.length;
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    if (failsInside(mid)) bad = mid;
    else good = mid;
  }
  return bad - 1;
}

/**
 * A JSON syntax error by line and column, never quoting the text: V8's message can carry a snippet of the file
 * (an unquoted password, say).
 */
function jsonSyntaxError(text: string, message: string): string {
  const m = JSON_POSITION.exec(message);
  if (m !== null)
    return `JSON syntax error at ${lineColumn(text, Number(m[1]))}: ${message.slice(0, m.index)}`;
  if (message.startsWith('Unexpected end of JSON input'))
    return `JSON syntax error at ${lineColumn(text, text.length)}: unexpected end of the text`;
  return `JSON syntax error at ${lineColumn(text, firstBadOffset(text))}: unexpected character`;
}

/** An object's keys are kept in a list up to this many, then in a Set (jsonDuplicateKeys). */
const SHORT_KEYS = 16;

/** Keys a JSON object may not repeat: JSON.parse keeps the last silently. At most this many are listed. */
const MAX_DUPLICATE_REPORTS = 20;

interface JsonFrame {
  /** This container's segment in its parent (key or index); undefined for the root. */
  seg: string | number | undefined;
  /** Objects: keys seen (a list while short: most objects have a few keys, and a Set each is ~50,000 Sets in a large
   * config), and whether a key (not a value) comes next. */
  keys: string[] | Set<string> | null;
  expectKey: boolean;
  key: string;
  /** Arrays: index of the current element. */
  index: number;
}

/**
 * The offset of the quote that ends the JSON string starting at `start` (a quote) of a text JSON.parse accepted.
 */
function jsonStringEnd(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  for (;;) {
    let slashes = 0;
    while (text.charCodeAt(end - 1 - slashes) === 0x5c /* \ */) slashes++;
    if (slashes % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
}

/**
 * How many keys the objects of a JSON text that JSON.parse accepted have, each occurrence counted (a repeated key
 * too): one pass, nothing allocated per key or value. Equal to the parsed document's count (measureCounting) when no
 * object repeats a key: jsonDuplicateKeys, which makes a string per key, runs only when they differ.
 */
export function jsonKeyCount(text: string): number {
  // per open container: 1 an object, 0 a list; and whether a key (not a value) comes next in the innermost one
  const objects: number[] = [];
  let expectKey = false;
  let keys = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      if (expectKey) {
        keys++;
        expectKey = false;
      }
      i = jsonStringEnd(text, i);
    } else if (c === 0x7b /* { */) {
      objects.push(1);
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      objects.push(0);
      expectKey = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      objects.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) expectKey = objects[objects.length - 1] === 1;
  }
  return keys;
}

/**
 * Duplicate keys of a JSON text that JSON.parse accepted, with their paths and offsets: one pass over the text
 * with a stack of open containers (iterative; keys are decoded only when they hold escapes).
 */
function jsonDuplicateKeys(text: string): {
  found: { path: (string | number)[]; offset: number }[];
  total: number;
} {
  const found: { path: (string | number)[]; offset: number }[] = [];
  let total = 0;
  const stack: JsonFrame[] = [];
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const end = jsonStringEnd(text, i);
      const top = stack[stack.length - 1];
      if (top !== undefined && top.keys !== null && top.expectKey) {
        const raw = text.slice(i + 1, end);
        const key = raw.includes('\\') ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
        const keys = top.keys;
        const seen = Array.isArray(keys) ? keys.includes(key) : keys.has(key);
        if (seen && ++total <= MAX_DUPLICATE_REPORTS)
          found.push({ path: [...stack.slice(1).map((f) => f.seg!), key], offset: i });
        if (!Array.isArray(keys)) keys.add(key);
        else if (keys.length < SHORT_KEYS) keys.push(key);
        else top.keys = new Set([...keys, key]);
        top.key = key;
        top.expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const parent = stack[stack.length - 1];
      stack.push({
        seg: parent === undefined ? undefined : parent.keys !== null ? parent.key : parent.index,
        keys: c === 0x7b ? [] : null,
        expectKey: true,
        key: '',
        index: 0,
      });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1]!;
      if (top.keys !== null) top.expectKey = true;
      else top.index++;
    }
  }
  return { found, total };
}

function parseJson(text: string): DocumentResult {
  let value: unknown;
  try {
    // V8's JSON.parse is iterative: deep nesting is measured below, not a stack overflow here.
    value = JSON.parse(text);
  } catch (e) {
    return fail(jsonSyntaxError(text, (e as Error).message));
  }
  const { error, keys } = measureCounting(value);
  if (error !== null) return fail(error);
  // As many keys in the text as in the document: no object repeats one.
  if (jsonKeyCount(text) === keys) return { ok: true, value };
  const dups = jsonDuplicateKeys(text);
  if (dups.total === 0) return { ok: true, value };
  const errors: ConfigIssue[] = dups.found.map((d) => ({
    path: formatPath(d.path),
    message:
      `JSON error at ${lineColumn(text, d.offset)}: the key appears twice in its object ` +
      '(keys must be unique; JSON.parse would keep the last silently)',
  }));
  if (dups.total > errors.length)
    errors.push({ path: '', message: `and ${dups.total - errors.length} more duplicate keys` });
  return { ok: false, errors };
}

function parseYaml(text: string): DocumentResult {
  const { CST, Composer, isScalar, Lexer, LineCounter, Parser, visit } = yaml();
  const { maxDepth, maxValues, maxYamlRefs } = DOCUMENT_BOUNDS;
  const lines = new LineCounter();
  const at = (offset: number): string => {
    const p = lines.linePos(offset);
    return `line ${p.line}, column ${p.col}`;
  };
  // Lex and parse by hand (what YAML.parseDocument does) to stop early: the composer and toJS recurse per
  // nesting level, and a stream of documents or aliases costs memory or quadratic time before any check.
  const parser = new Parser(lines.addNewLine);
  lines.addNewLine(0);
  const tokens: Yaml.CST.Token[] = [];
  let documents = 0;
  let refs = 0;
  let items = 0;
  let atScalar = false;
  const take = (t: Yaml.CST.Token): string | null => {
    tokens.push(t);
    if (t.type === 'document' && ++documents > 1)
      return `YAML error at ${at(t.offset)}: a second document (after ---); a config file holds one`;
    return null;
  };
  for (const lexeme of new Lexer().lex(text)) {
    // After the SCALAR marker comes a scalar's text, which may start with * or & without being an alias.
    if (atScalar) atScalar = false;
    else if (lexeme === CST.SCALAR || ITEM_LEXEMES.has(lexeme) || lexeme[0] === '"' || lexeme[0] === "'") {
      atScalar = lexeme === CST.SCALAR;
      // Parsing costs ~10 us and ~1 KB per item: count them before the composer builds a node for each.
      if (++items > maxValues)
        return fail(`YAML error at ${at(parser.offset)}: more than ${count(maxValues)} values (the bound)`);
    } else if ((lexeme[0] === '*' || lexeme[0] === '&') && ++refs > maxYamlRefs)
      return fail(
        `YAML error at ${at(parser.offset)}: more than ${count(maxYamlRefs)} anchors and aliases (the ` +
          `bound: resolving aliases takes time quadratic in their number); write the values out`,
      );
    for (const t of parser.next(lexeme)) {
      const bad = take(t);
      if (bad !== null) return fail(bad);
    }
    // The parse stack holds the document, one entry per open list or map, and the token being read.
    if (parser.stack.length > maxDepth + 2) return fail(`YAML error at ${at(parser.offset)}: ${tooDeep}`);
  }
  for (const t of parser.end()) {
    const bad = take(t);
    if (bad !== null) return fail(bad);
  }
  let doc: Yaml.Document.Parsed | undefined;
  // uniqueKeys off: yaml compares each key with every earlier one of its map (quadratic); a set per map below.
  for (const d of new Composer({ uniqueKeys: false }).compose(tokens, true, text.length)) doc ??= d;
  if (doc === undefined) return { ok: true, value: null };
  const errors = doc.errors.map((e) => ({
    path: '',
    message: `YAML syntax error at ${at(e.pos[0])}: ${e.message.split('\n')[0]!}`,
  }));
  // Recursive, but over at most maxDepth levels (checked while parsing).
  visit(doc, {
    Map(_key, map) {
      const seen = new Set<unknown>();
      for (const { key } of map.items) {
        if (!isScalar(key)) continue;
        if (seen.has(key.value))
          errors.push({
            path: '',
            message: `YAML syntax error at ${at(key.range?.[0] ?? 0)}: Map keys must be unique`,
          });
        seen.add(key.value);
      }
    },
  });
  if (errors.length > 0) return { ok: false, errors };
  let value: unknown;
  try {
    // No alias-count heuristic (it refuses 1,001 VIPs sharing one anchor): aliases resolve to shared
    // objects here, and measure() bounds the expanded size exactly.
    value = doc.toJS({ maxAliasCount: -1 });
  } catch (e) {
    return fail(`YAML error: ${(e as Error).message}`);
  }
  const bad = measure(value);
  return bad === null ? { ok: true, value } : fail(bad);
}

/** Parses YAML or JSON text into a plain value within DOCUMENT_BOUNDS (size is the reader's bound). */
export function parseDocumentText(text: string, format: DocumentFormat): DocumentResult {
  return format === 'json' ? parseJson(text) : parseYaml(text);
}
