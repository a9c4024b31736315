// The churn lab (issue 15): the namespace testbed (scripts/testbed: client, BIRD router with an L4-hash ECMP,
// LB nodes running `peak-xdp daemon`, nginx backends) under a unique `chn` prefix, with `peak-xdp decap run` on
// every backend; the scenario itself is scripts/bench/lib/churn.ts (shared with bench:e2e).
import { randomBytes } from 'node:crypto';
import { packageRoot } from '../../src/paths';
import { defaultConfigPath, loadTestbedConfig } from '../../scripts/testbed/config';
import { buildPlan, Plan } from '../../scripts/testbed/plan';
import { down, up } from '../../scripts/testbed/topology';
import { ChurnRig } from '../../scripts/bench/lib/churn';

export class ChurnLab {
  readonly plan: Plan;
  readonly rig: ChurnRig;

  constructor(o: { lbs: number; backends: number }) {
    // chn + 4 hex: namespaces `chnXXXX-router`, `chnXXXX-be5` (<= 15 chars), router links `lb1`, `be1`.
    const prefix = `chn${randomBytes(2).toString('hex')}`;
    const cfg = loadTestbedConfig({
      path: defaultConfigPath(packageRoot),
      overrides: { prefix, lbs: o.lbs, backends: o.backends },
    });
    this.plan = buildPlan(cfg);
    this.rig = new ChurnRig(this.plan);
  }

  async start(log: (l: string) => void): Promise<void> {
    up(this.plan, log);
    await this.rig.prepareBackends();
  }

  /** Removes everything by name (processes in the lab's namespaces, namespaces, state dir, pins), even after a
   * failure half-way; returns the namespaces still there (none expected). */
  async cleanup(): Promise<string[]> {
    await this.rig.stopDecaps().catch(() => undefined);
    await this.rig.resetLbs().catch(() => undefined);
    const r = await down(this.plan);
    return r.leftovers;
  }
}
