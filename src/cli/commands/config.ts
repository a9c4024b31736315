// peak-xdp config validate: every error of a config file at once, as the daemon would report them (no root).
import type { Argv } from 'yargs';
import { formatIssue } from '../../model/errors';
import type { ConfigIssue } from '../../model/errors';
import { loadConfigFile } from '../../sources/file/load';
import { GlobalArgs, withJson } from '../context';
import { CliError, emit, ExitStatus } from '../output';

export interface ValidationReport {
  file: string;
  valid: boolean;
  errors: ConfigIssue[];
  warnings: ConfigIssue[];
  /** Counts of what a valid file configures. */
  summary: { vips: number; backends: number; bgp: boolean; kubernetes: boolean } | null;
}

/** Reads and checks `file` exactly as the daemon's file source does (same bounds, same model). */
export async function validateConfigFile(file: string): Promise<ValidationReport> {
  const r = await loadConfigFile(file);
  if (!r.ok) return { file, valid: false, errors: r.errors, warnings: [], summary: null };
  return {
    file,
    valid: true,
    errors: [],
    warnings: r.warnings,
    summary: {
      vips: r.config.vips.length,
      backends: r.config.vips.reduce((n, v) => n + v.backends.length, 0),
      bgp: r.config.bgp !== undefined,
      kubernetes: r.config.kubernetes !== undefined,
    },
  };
}

/** The text report: one line per error or warning ("path: message"), then a verdict line. */
export function formatValidation(r: ValidationReport): string {
  const lines = [
    ...r.errors.map((e) => `error    ${formatIssue(e)}`),
    ...r.warnings.map((w) => `warning  ${formatIssue(w)}`),
  ];
  if (r.valid)
    lines.push(
      `${r.file}: valid (${r.summary!.vips} VIPs, ${r.summary!.backends} backends` +
        `${r.summary!.bgp ? ', BGP' : ''}${r.summary!.kubernetes ? ', Kubernetes' : ''})`,
    );
  else lines.push(`${r.file}: invalid, ${r.errors.length} error${r.errors.length === 1 ? '' : 's'}`);
  return lines.join('\n');
}

export function registerConfig(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command(
    'config <action> [file]',
    'validate FILE: check a config file as the daemon would, every error at once (exit 0 valid, 1 invalid)',
    (y2) =>
      withJson(
        y2
          .positional('action', { choices: ['validate'] as const, describe: 'what to do' })
          .positional('file', { type: 'string', describe: 'YAML or JSON config file (.json: JSON)' }),
      ),
    async (a) => {
      if (!a.file) throw new CliError('config validate: give the config FILE to check', 2);
      const r = await validateConfigFile(a.file);
      emit(a.json, 'ConfigValidation', r, () => formatValidation(r));
      // The report is the output; exit 1 says "invalid" without a second error line.
      if (!r.valid) throw new ExitStatus(1);
    },
  ) as unknown as Argv<GlobalArgs>;
}
