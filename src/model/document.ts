// Bounded parsing of a config document (YAML or JSON text -> plain value): nesting depth, YAML anchors and
// aliases, expanded size. A wrong or hostile file is refused with a message naming the bound it broke.
import { CST, Composer, Document, isScalar, Lexer, LineCounter, Parser, visit } from 'yaml';
import type { ConfigIssue } from './errors';

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
  const { maxDepth, maxValues } = DOCUMENT_BOUNDS;
  const stack: [unknown, number][] = [[value, 0]];
  let values = 1;
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    // A cycle (a YAML alias inside its own anchor) nests without end: the depth bound stops it.
    if (depth + 1 > maxDepth) return tooDeep;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (++values > maxValues)
        return (
          `the document holds more than ${count(maxValues)} values (the bound; lists, maps and scalars, ` +
          `each use of a YAML alias counted again)`
        );
      stack.push([child, depth + 1]);
    }
  }
  return null;
}

function parseJson(text: string): DocumentResult {
  let value: unknown;
  try {
    // V8's JSON.parse is iterative: deep nesting is measured below, not a stack overflow here.
    value = JSON.parse(text);
  } catch (e) {
    return fail(`JSON syntax error: ${(e as Error).message}`);
  }
  const bad = measure(value);
  return bad === null ? { ok: true, value } : fail(bad);
}

function parseYaml(text: string): DocumentResult {
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
  const tokens: CST.Token[] = [];
  let documents = 0;
  let refs = 0;
  let items = 0;
  let atScalar = false;
  const take = (t: CST.Token): string | null => {
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
  let doc: Document.Parsed | undefined;
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
