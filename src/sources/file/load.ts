// Reading a config file: format from the extension (.json: JSON; otherwise YAML, a superset of JSON).
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { ConfigFormat, parseConfig, ParseResult } from '../../model/config';

export function formatOf(path: string): ConfigFormat {
  return extname(path).toLowerCase() === '.json' ? 'json' : 'yaml';
}

/** Reads and validates a config file; an unreadable file is an error result, not a throw. */
export async function loadConfigFile(path: string): Promise<ParseResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    return { ok: false, errors: [{ path: '', message: `cannot read ${JSON.stringify(path)}: ${code}` }] };
  }
  return parseConfig(text, { format: formatOf(path) });
}
