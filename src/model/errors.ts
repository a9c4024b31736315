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

/** A value as it appears in messages: strings quoted, long values cut. */
export function showValue(v: unknown): string {
  let s: string;
  if (v === undefined) s = 'undefined';
  else if (typeof v === 'bigint') s = `${v}n`;
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function valueAt(root: unknown, path: readonly (string | number)[]): unknown {
  let v: unknown = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

const article = (t: string): string => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

/** Turns zod issues into path-named messages that quote the value found in `input`. */
export function fromZodIssues(issues: readonly ZodIssue[], input: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) {
    const value = valueAt(input, issue.path);
    const path = formatPath(issue.path);
    switch (issue.code) {
      case 'invalid_type':
        out.push({
          path,
          message:
            value === undefined ? 'is required' : `${showValue(value)} is not ${article(issue.expected)}`,
        });
        break;
      case 'unrecognized_keys':
        for (const key of issue.keys)
          out.push({ path: formatPath([...issue.path, key]), message: 'is not a known key' });
        break;
      case 'invalid_enum_value':
      case 'invalid_literal':
        out.push({
          path,
          message: `${showValue(value)} is not one of ${
            'options' in issue ? issue.options.map((o) => String(o)).join(', ') : showValue(issue.expected)
          }`,
        });
        break;
      case 'too_small':
        out.push({
          path,
          message:
            issue.type === 'array'
              ? `needs at least ${issue.minimum} entries, got ${Array.isArray(value) ? value.length : 0}`
              : issue.type === 'string'
                ? `${showValue(value)} is shorter than ${issue.minimum} characters`
                : `${showValue(value)} is below the minimum ${issue.minimum}`,
        });
        break;
      case 'too_big':
        out.push({
          path,
          message:
            issue.type === 'array'
              ? `has more than ${issue.maximum} entries`
              : issue.type === 'string'
                ? `${showValue(value)} is longer than ${issue.maximum} characters`
                : `${showValue(value)} is above the maximum ${issue.maximum}`,
        });
        break;
      case 'not_multiple_of':
        out.push({ path, message: `${showValue(value)} is not a multiple of ${issue.multipleOf}` });
        break;
      case 'invalid_union':
        out.push({ path, message: `${showValue(value)} is not valid here` });
        break;
      default:
        // custom refinements already quote the value.
        out.push({ path, message: issue.message });
    }
  }
  return out;
}
