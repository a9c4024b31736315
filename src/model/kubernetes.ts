// The `kubernetes:` config section (zod) and its defaults, turned into KubernetesSource options.
import { z } from 'zod';
import { ConfigIssue, formatPath } from './errors';
import { parseTolerant } from './unknown-keys';
import { parsePool } from './pool';
import { DEFAULTS } from './defaults';
import { tableSizeSchema } from './schema';

/** Default `spec.loadBalancerClass` handled by peak-xdp. */
export const DEFAULT_LOAD_BALANCER_CLASS = 'peak-xdp.io/lb';

export interface LeaderElectionOptions {
  namespace: string;
  /** Lease name. */
  name: string;
  leaseDurationSeconds: number;
  /** A leader that could not renew for this long steps down (< leaseDurationSeconds). */
  renewDeadlineSeconds: number;
  retryPeriodSeconds: number;
}

export const DEFAULT_LEADER_ELECTION: LeaderElectionOptions = {
  namespace: 'peak-xdp-system',
  name: 'peak-xdp-leader',
  leaseDurationSeconds: 15,
  renewDeadlineSeconds: 10,
  retryPeriodSeconds: 2,
};

export interface KubernetesSettings {
  loadBalancerClass: string;
  pool: string[];
  /** Addresses a Service may request (annotation, spec.loadBalancerIP) besides the pool; never auto-assigned. */
  allowedAddresses: string[];
  leaderElection: LeaderElectionOptions | false;
  /** Maglev table size of a Service without the peak-xdp.io/table-size annotation. */
  tableSize: number;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const kubernetesSectionSchema = z
  .object({
    loadBalancerClass: z
      .string()
      .refine(
        (s) => /^[A-Za-z0-9.-]+\/[A-Za-z0-9._-]+$/.test(s),
        (s) => ({
          message: `${JSON.stringify(s)} is not a domain-prefixed class (e.g. peak-xdp.io/lb)`,
        }),
      )
      .default(DEFAULT_LOAD_BALANCER_CLASS),
    pool: z.array(z.string()).default([]),
    allowedAddresses: z.array(z.string()).default([]),
    tableSize: tableSizeSchema(DEFAULTS.kubernetes.tableSize),
    leaderElection: z
      .union([
        z.literal(false),
        z
          .object({
            namespace: z
              .string()
              .refine(
                (s) => dnsLabel.test(s),
                (s) => ({ message: `${JSON.stringify(s)} is not a namespace name (DNS label)` }),
              )
              .default(DEFAULT_LEADER_ELECTION.namespace),
            name: z
              .string()
              .refine(
                (s) => /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(s),
                (s) => ({
                  message: `${JSON.stringify(s)} is not a Lease name (DNS subdomain)`,
                }),
              )
              .default(DEFAULT_LEADER_ELECTION.name),
            leaseDurationSeconds: z
              .number()
              .int()
              .min(2)
              .max(300)
              .default(DEFAULT_LEADER_ELECTION.leaseDurationSeconds),
            renewDeadlineSeconds: z
              .number()
              .int()
              .min(1)
              .max(299)
              .default(DEFAULT_LEADER_ELECTION.renewDeadlineSeconds),
            retryPeriodSeconds: z
              .number()
              .int()
              .min(1)
              .max(60)
              .default(DEFAULT_LEADER_ELECTION.retryPeriodSeconds),
          })
          .strict(),
      ])
      .default({}),
  })
  .strict();

/** Validates the section (path-named issues relative to `kubernetes`). */
export function parseKubernetesSettings(
  input: unknown,
): { ok: true; settings: KubernetesSettings } | { ok: false; issues: ConfigIssue[] } {
  const t = parseTolerant(kubernetesSectionSchema, input ?? {});
  // Unknown keys alone leave the data: the checks below still run and report in the same pass.
  if (t.data === null) return { ok: false, issues: t.issues };
  const r = { data: t.data };
  const issues: ConfigIssue[] = [...t.issues];
  const pool = parsePool(r.data.pool, 'pool');
  if (!pool.ok)
    for (const e of pool.errors) {
      const [path, ...rest] = e.split(': ');
      issues.push({ path: path!, message: rest.join(': ') });
    }
  const allowed = parsePool(r.data.allowedAddresses, 'allowedAddresses', { whole: true });
  if (!allowed.ok)
    for (const e of allowed.errors) {
      const [path, ...rest] = e.split(': ');
      issues.push({ path: path!, message: rest.join(': ') });
    }
  const le = r.data.leaderElection;
  if (le !== false && le.renewDeadlineSeconds >= le.leaseDurationSeconds)
    issues.push({
      path: formatPath(['leaderElection', 'renewDeadlineSeconds']),
      message: `${le.renewDeadlineSeconds} must be below leaseDurationSeconds ${le.leaseDurationSeconds}`,
    });
  if (le !== false && le.retryPeriodSeconds >= le.renewDeadlineSeconds)
    issues.push({
      path: formatPath(['leaderElection', 'retryPeriodSeconds']),
      message: `${le.retryPeriodSeconds} must be below renewDeadlineSeconds ${le.renewDeadlineSeconds}`,
    });
  if (issues.length > 0) return { ok: false, issues };
  return {
    ok: true,
    settings: {
      loadBalancerClass: r.data.loadBalancerClass,
      pool: r.data.pool,
      allowedAddresses: r.data.allowedAddresses,
      leaderElection: le,
      tableSize: r.data.tableSize,
    },
  };
}
