// Config errors: each names its path (vips[2].backends[0].address) and the offending value.
import type { ZodIssue } from 'zod';

export interface ConfigIssue {
  /** Dotted path with [index] segments, e.g. "vips[2].backends[0].address"; "" for the whole file. */
  path: string;
  message: string;
}

/** "vips[2].backends[0].address" from ["vips", 2, "backends", 0, "address"]. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

/** One line per issue: "path: message" ("(file): message" for the whole file). */
export function formatIssue(issue: ConfigIssue): string {
  return `${issue.path === '' ? '(file)' : issue.path}: ${issue.message}`;
}

/** YAML's spelling of the numbers JSON has none for (JSON.stringify would print null). */
const NON_FINITE = new Map<number, string>([
  [NaN, '.nan'],
  [Infinity, '.inf'],
  [-Infinity, '-.inf'],
]);
const MARK = '\u0000';

/**
 * Config keys whose values are secrets (bgp.peers[].password): no message, log line, /readyz or /state text
 * ever quotes them, whatever their type (an unquoted YAML password is a number).
 */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['password', 'secret', 'token']);

const article = (t: string): string => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

/** Wording shared by fromZodIssues and the hand-written checks that stand in for a zod schema (backends.ts). */
export const MESSAGES = {
  required: 'is required',
  unknownKey: 'is not a known key',
  /** `expected`: a type name as zod gives it ("string", "integer", "object"). */
  notA: (shown: string, expected: string): string => `${shown} is not ${article(expected)}`,
  notOneOf: (shown: string, options: readonly string[]): string =>
    `${shown} is not one of ${options.join(', ')}`,
  belowMinimum: (shown: string, min: number | bigint): string => `${shown} is below the minimum ${min}`,
  aboveMaximum: (shown: string, max: number | bigint): string => `${shown} is above the maximum ${max}`,
} as const;

/** A config refused as a whole (thrown where a result cannot be returned): one line per issue. */
export class ConfigRejectedError extends Error {
  constructor(
    readonly file: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    super(`config ${file} rejected:\n  ${issues.map(formatIssue).join('\n  ')}`);
    this.name = 'ConfigRejectedError';
  }
}

/**
 * A value as it appears in messages: strings quoted, .nan / .inf / -.inf as YAML writes them, secret keys inside
 * lists and maps masked (a peer written as a map instead of a list is quoted whole), long values cut.
 */
export function showValue(v: unknown): string {
  let s: string;
  if (v === undefined) s = 'undefined';
  else if (typeof v === 'bigint') s = `${v}n`;
  else if (typeof v === 'number' && !Number.isFinite(v)) s = NON_FINITE.get(v)!;
  else {
    try {
      // Secrets and non-finite numbers inside lists and maps: marked, then unquoted.
      const json = JSON.stringify(v, (k: string, x: unknown) =>
        SECRET_KEYS.has(k)
          ? `${MARK}(secret)`
          : typeof x === 'number' && !Number.isFinite(x)
            ? `${MARK}${NON_FINITE.get(x)!}`
            : x,
      );
      s = json === undefined ? String(v) : json.replace(/"\\u0000([^"]*)"/g, '$1');
    } catch {
      s = String(v);
    }
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Whether a path (relative to any section) leads to or into a secret key. */
export function isSecretPath(path: readonly (string | number)[]): boolean {
  return path.some((seg) => typeof seg === 'string' && SECRET_KEYS.has(seg));
}

/** A secret value as messages show it: its kind only, e.g. "the secret value (a number)". */
export function hiddenValue(v: unknown): string {
  const kind =
    v === null
      ? 'null'
      : Array.isArray(v)
        ? 'a list'
        : typeof v === 'object'
          ? 'a mapping'
          : article(typeof v);
  return `the secret value (${kind})`;
}

function valueAt(root: unknown, path: readonly (string | number)[]): unknown {
  let v: unknown = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** Whether a message quotes a value (as text or as showValue prints it). */
function mentions(message: string, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  const text = typeof value === 'string' ? value : String(value);
  return (text !== '' && message.includes(text)) || message.includes(showValue(value));
}

/** The options of an enum as zod names them in an invalid_type issue's `expected` ("'ipip' | 'gue'"); null for any
 * other expected type. */
function enumOptions(expected: string): string[] | null {
  return /^'[^']*'(?: \| '[^']*')*$/.test(expected) ? expected.split(' | ').map((o) => o.slice(1, -1)) : null;
}

/** Turns zod issues into path-named messages that quote the value found in `input`. */
export function fromZodIssues(issues: readonly ZodIssue[], input: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) {
    const value = valueAt(input, issue.path);
    const path = formatPath(issue.path);
    const secret = isSecretPath(issue.path);
    const shown = secret ? hiddenValue(value) : showValue(value);
    // An unquoted YAML password of digits is a number: say how to write it, since the value is not shown.
    const quoteHint =
      secret && issue.code === 'invalid_type' && issue.expected === 'string' && typeof value === 'number';
    switch (issue.code) {
      case 'invalid_type': {
        // an enum given a value of another type names its options as for a string that is none of them
        const options = value === undefined ? null : enumOptions(issue.expected);
        out.push({
          path,
          message:
            value === undefined
              ? MESSAGES.required
              : options !== null
                ? MESSAGES.notOneOf(shown, options)
                : `${MESSAGES.notA(shown, issue.expected)}${quoteHint ? ' (write it in quotes)' : ''}`,
        });
        break;
      }
      case 'unrecognized_keys':
        for (const key of issue.keys)
          out.push({ path: formatPath([...issue.path, key]), message: MESSAGES.unknownKey });
        break;
      case 'invalid_enum_value':
      case 'invalid_literal':
        out.push({
          path,
          message: MESSAGES.notOneOf(
            shown,
            'options' in issue ? issue.options.map((o) => String(o)) : [showValue(issue.expected)],
          ),
        });
        break;
      case 'too_small':
        out.push({
          path,
          message:
            issue.type === 'array'
              ? `needs at least ${issue.minimum} entries, got ${Array.isArray(value) ? value.length : 0}`
              : issue.type === 'string'
                ? `${shown} is shorter than ${issue.minimum} characters`
                : MESSAGES.belowMinimum(shown, issue.minimum),
        });
        break;
      case 'too_big':
        out.push({
          path,
          message:
            issue.type === 'array'
              ? `has more than ${issue.maximum} entries`
              : issue.type === 'string'
                ? `${shown} is longer than ${issue.maximum} characters`
                : MESSAGES.aboveMaximum(shown, issue.maximum),
        });
        break;
      case 'not_multiple_of':
        out.push({ path, message: `${shown} is not a multiple of ${issue.multipleOf}` });
        break;
      case 'invalid_union':
        out.push({ path, message: `${shown} is not valid here` });
        break;
      default:
        // Custom refinements already quote the value: a secret's message must not (else a generic one).
        out.push({
          path,
          message: secret && mentions(issue.message, value) ? `${shown} is not valid` : issue.message,
        });
    }
  }
  return out;
}
