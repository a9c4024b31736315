// Bench profiles (quick for CI smoke, full) and command-line parsing for `npm run bench:e2e`.
import { ALL_SYSTEMS, SystemName } from './lib/systems';

export interface Profile {
  name: 'quick' | 'full';
  /** Every system runs once per round, rounds one after another (A B C A B C); results: median, min–max. */
  rounds: number;
  lbs: number;
  backends: number;
  backendCounts: number[];
  lbCounts: number[];
  wrkConnections: number[];
  wrkSeconds: number;
  /** A discarded wrk run before each ramp (caches, ARP, the first connections). */
  warmupSeconds: number;
  /** Each ramp step runs this many times; the step is their median. */
  stepRepeats: number;
  /** Idle window (system set up, no load) measured before the fixed rates: the CPU baseline of the round. */
  idleSeconds: number;
  /** Ramp stops when p99 exceeds this (µs) or errors exceed 1%. */
  sloP99Us: number;
  latencyRates: number[];
  latencySeconds: number;
  faultRate: number;
  faultSeconds: number;
  timelinePhaseSeconds: number;
  timelineConnections: number;
  innerRate: number;
  innerSeconds: number;
  ecmpChanges: number;
}

export const PROFILES: Record<'quick' | 'full', Profile> = {
  // Smoke run, every system, two rounds.
  quick: {
    name: 'quick',
    rounds: 2,
    lbs: 2,
    backends: 3,
    backendCounts: [1, 3],
    lbCounts: [1, 2],
    wrkConnections: [32],
    wrkSeconds: 2,
    warmupSeconds: 1,
    stepRepeats: 2,
    idleSeconds: 2,
    sloP99Us: 50_000,
    latencyRates: [300],
    latencySeconds: 2,
    faultRate: 200,
    faultSeconds: 3,
    timelinePhaseSeconds: 3,
    timelineConnections: 24,
    innerRate: 100,
    innerSeconds: 1,
    ecmpChanges: 6,
  },
  // Three rounds of every system.
  full: {
    name: 'full',
    rounds: 3,
    lbs: 4,
    backends: 8,
    backendCounts: [1, 2, 4, 8],
    lbCounts: [1, 2, 3, 4],
    wrkConnections: [8, 32, 128],
    wrkSeconds: 4,
    warmupSeconds: 2,
    stepRepeats: 3,
    idleSeconds: 4,
    sloP99Us: 50_000,
    latencyRates: [250, 1000, 2000],
    latencySeconds: 6,
    faultRate: 300,
    faultSeconds: 9,
    timelinePhaseSeconds: 4,
    timelineConnections: 64,
    innerRate: 300,
    innerSeconds: 3,
    ecmpChanges: 40,
  },
};

/** What a system takes part in, for the step count of the progress bar. */
export interface SystemShape {
  name: string;
  usesLbs: boolean;
  /** Has a daemon that can be killed (peak-xdp). */
  hasDaemon: boolean;
}

/** Backend counts a system is ramped over ('direct' has one backend by definition). */
export function backendCountsFor(name: string, prof: Profile): number[] {
  return name === 'direct' ? [1] : prof.backendCounts;
}

/** Progress steps one system takes (every progress() call of e2e.ts runSystem, skipped ones included). */
export function plannedSteps(sys: SystemShape, prof: Profile): number {
  const ramp = backendCountsFor(sys.name, prof).length * prof.wrkConnections.length;
  const lbScaling = sys.usesLbs ? prof.lbCounts.length : 0;
  const faults = 1 + (sys.hasDaemon ? 1 : 0);
  const timeline = sys.usesLbs && prof.lbs > 1 ? 1 : 0;
  return ramp + lbScaling + prof.latencyRates.length + 1 + faults + timeline;
}

export interface BenchArgs {
  profile: Profile;
  systems: SystemName[];
  family: 4 | 6;
  out: string | null;
  prefix: string | null;
}

/** Parses argv; throws naming the flag and the value on bad input. */
export function parseBenchArgs(argv: string[]): BenchArgs {
  let profile = PROFILES.full;
  let systems: SystemName[] = [...ALL_SYSTEMS];
  let family: 4 | 6 = 4;
  let out: string | null = null;
  let prefix: string | null = null;
  let rounds: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') profile = PROFILES.quick;
    else if (a === '--full') profile = PROFILES.full;
    else if (a === '--rounds') {
      const v = val();
      rounds = Number(v);
      if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20)
        throw new Error(`--rounds must be an integer in 1..20, got "${v}"`);
    } else if (a === '--systems') {
      const v = val();
      systems = v.split(',').map((s) => {
        if (!ALL_SYSTEMS.includes(s as SystemName))
          throw new Error(`--systems: unknown system "${s}" (choices: ${ALL_SYSTEMS.join(', ')})`);
        return s as SystemName;
      });
    } else if (a === '--family') {
      const v = val();
      if (v !== '4' && v !== '6') throw new Error(`--family must be 4 or 6, got "${v}"`);
      family = Number(v) as 4 | 6;
    } else if (a === '--out') out = val();
    else if (a === '--prefix') prefix = val();
    else
      throw new Error(
        `unknown argument "${a}" (use --quick|--full, --rounds N, --systems a,b, --family 4|6, --out DIR, --prefix P)`,
      );
  }
  // The profile objects stay shared unless --rounds changes one.
  if (rounds !== null && rounds !== profile.rounds) profile = { ...profile, rounds };
  return { profile, systems, family, out, prefix };
}
