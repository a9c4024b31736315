// Runtime overrides (drain, weight) an operator set through the admin API: applied on top of the config
// before desired state is computed, checked against the config's VIPs and backends, pruned when a reload
// removes their target, serialised to a versioned JSON document. Pure: no I/O.
import { BOUNDS } from '../model/defaults';
import { canonicalIp } from '../model/ip';
import type { BackendConfig, Config, VipConfig } from '../model/types';

/**
 * One backend's overrides: drain forces draining, weight replaces the config's. Each has its own time (`drainAt`,
 * `weightAt`: when that one was set); `at` is the latest of them (the shape /state had before, kept).
 */
export interface BackendOverride {
  drain?: true;
  drainAt?: string;
  weight?: number;
  weightAt?: string;
  at: string;
}

/** Overrides by VIP name, then by canonical backend address. */
export type OverrideSet = Readonly<Record<string, Readonly<Record<string, BackendOverride>>>>;

/** The JSON document the overrides are stored as (version bumps on an incompatible change). */
export interface OverrideDocument {
  version: 1;
  overrides: OverrideSet;
}

export const OVERRIDE_DOCUMENT_VERSION = 1;

/** A change an operator asks for. */
export type OverrideChange =
  | { kind: 'drain'; vip: string; backend: string }
  | { kind: 'undrain'; vip: string; backend: string }
  | { kind: 'weight'; vip: string; backend: string; weight: number }
  | { kind: 'clear-weight'; vip: string; backend: string };

/** Why a change or a target was refused: not-found names the missing VIP or backend; invalid names the field. */
export class OverrideError extends Error {
  constructor(
    readonly kind: 'not-found' | 'invalid',
    message: string,
  ) {
    super(message);
  }
}

/** A VIP of `vips` by name; throws OverrideError (invalid name, or none such, naming it). */
export function resolveVip(vips: readonly VipConfig[], vipName: unknown): VipConfig {
  if (typeof vipName !== 'string' || vipName === '')
    throw new OverrideError('invalid', `vip: ${JSON.stringify(vipName)} is not a VIP name`);
  const vip = vips.find((v) => v.name === vipName);
  if (vip === undefined)
    throw new OverrideError(
      'not-found',
      `no VIP named "${vipName}" (VIPs: ${vips.map((v) => v.name).join(', ') || 'none'})`,
    );
  return vip;
}

/** A backend address in canonical form; throws OverrideError naming the value. */
export function canonicalBackend(backend: unknown): string {
  const address = typeof backend === 'string' ? canonicalIp(backend) : null;
  if (address === null)
    throw new OverrideError('invalid', `backend: ${JSON.stringify(backend)} is not an IP address`);
  return address;
}

/** The target of a change in `vips` (VIP by name, backend by address in any IP spelling); throws OverrideError. */
export function resolveTarget(
  vips: readonly VipConfig[],
  vipName: unknown,
  backend: unknown,
): { vip: VipConfig; backend: BackendConfig } {
  const address = canonicalBackend(backend);
  const vip = resolveVip(vips, vipName);
  const b = vip.backends.find((x) => x.address === address);
  if (b === undefined)
    throw new OverrideError(
      'not-found',
      `VIP "${vip.name}" has no backend ${address} (its backends: ${vip.backends.map((x) => x.address).join(', ') || 'none'})`,
    );
  return { vip, backend: b };
}

/** Checks a weight as the config does (an integer 0..BOUNDS.weight.max); throws OverrideError. */
export function checkWeight(w: unknown): number {
  if (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > BOUNDS.weight.max)
    throw new OverrideError(
      'invalid',
      `weight: ${JSON.stringify(w)} is not an integer from 0 to ${BOUNDS.weight.max}`,
    );
  return w;
}

/**
 * The overrides after `change`, checked against `vips` (throws OverrideError for an unknown VIP or backend or a
 * bad weight). A backend left with no override is removed, and a VIP left with none.
 */
export function applyChange(o: {
  overrides: OverrideSet;
  vips: readonly VipConfig[];
  change: OverrideChange;
  at: string;
}): OverrideSet {
  const { change: c } = o;
  const { vip, backend } = resolveTarget(o.vips, c.vip, c.backend);
  const prev = o.overrides[vip.name]?.[backend.address];
  const weight = c.kind === 'weight' ? checkWeight(c.weight) : undefined;
  // A change that changes nothing (a drain of a drained backend, the same weight again, clearing what is not
  // set) keeps the set as it is, its times included.
  if (!changes(prev ?? null, c.kind, weight)) return o.overrides;
  let drain = prev?.drain ? { drain: true as const, drainAt: prev.drainAt ?? prev.at } : null;
  let w = prev?.weight !== undefined ? { weight: prev.weight, weightAt: prev.weightAt ?? prev.at } : null;
  if (c.kind === 'drain') drain = { drain: true, drainAt: o.at };
  else if (c.kind === 'undrain') drain = null;
  else if (c.kind === 'weight') w = { weight: weight!, weightAt: o.at };
  else w = null;
  const forVip = { ...(o.overrides[vip.name] ?? {}) };
  if (drain === null && w === null) delete forVip[backend.address];
  else forVip[backend.address] = { ...drain, ...w, at: o.at };
  const out = { ...o.overrides };
  if (Object.keys(forVip).length === 0) delete out[vip.name];
  else out[vip.name] = forVip;
  return out;
}

/** Whether a change of `kind` (with `weight` for a weight change) alters `prev`, a backend's override. */
export function changes(
  prev: BackendOverride | null,
  kind: OverrideChange['kind'],
  weight?: number,
): boolean {
  switch (kind) {
    case 'drain':
      return prev?.drain !== true;
    case 'undrain':
      return prev?.drain === true;
    case 'weight':
      return prev?.weight !== weight;
    case 'clear-weight':
      return prev?.weight !== undefined;
  }
}

/** An override whose VIP or backend the config no longer has. */
export interface DroppedOverride {
  vip: string;
  backend: string;
  override: BackendOverride;
}

/** Keeps the overrides whose VIP and backend `vips` still has; lists the others. */
export function pruneOverrides(
  overrides: OverrideSet,
  vips: readonly VipConfig[],
): { kept: OverrideSet; dropped: DroppedOverride[] } {
  const byName = new Map(vips.map((v) => [v.name, v]));
  const kept: Record<string, Record<string, BackendOverride>> = {};
  const dropped: DroppedOverride[] = [];
  for (const [vipName, forVip] of Object.entries(overrides)) {
    const vip = byName.get(vipName);
    const addresses = new Set(vip?.backends.map((b) => b.address) ?? []);
    for (const [address, override] of Object.entries(forVip)) {
      if (addresses.has(address)) (kept[vipName] ??= {})[address] = override;
      else dropped.push({ vip: vipName, backend: address, override });
    }
  }
  return { kept: dropped.length === 0 ? overrides : kept, dropped };
}

/** A backend with its override applied. */
function overridden(b: BackendConfig, ov: BackendOverride): BackendConfig {
  return Object.freeze({
    ...b,
    ...(ov.drain ? { drain: true } : {}),
    ...(ov.weight !== undefined ? { weight: ov.weight } : {}),
  });
}

/**
 * Applies overrides to VIP configs. A VIP without overrides is returned as it is; one with overrides gets a new
 * frozen object, the same one for as long as its config object and its overrides stay the same (reconcile
 * memoises on VIP object identity, so an unchanged override set costs no table rebuild).
 */
export class OverrideApplier {
  readonly #memo = new WeakMap<VipConfig, { key: string; vip: VipConfig }>();

  vip(v: VipConfig, forVip: Readonly<Record<string, BackendOverride>> | undefined): VipConfig {
    if (forVip === undefined || Object.keys(forVip).length === 0) return v;
    const key = JSON.stringify(
      Object.entries(forVip)
        .map(([a, x]) => [a, x.drain === true, x.weight ?? null])
        .sort(),
    );
    const hit = this.#memo.get(v);
    if (hit?.key === key) return hit.vip;
    const out = Object.freeze({
      ...v,
      backends: Object.freeze(
        v.backends.map((b) => (forVip[b.address] ? overridden(b, forVip[b.address]!) : b)),
      ) as BackendConfig[],
    });
    this.#memo.set(v, { key, vip: out });
    return out;
  }

  /** `config` with every VIP's overrides applied (the same object when none applies). */
  config(config: Config, overrides: OverrideSet): Config {
    let changed = false;
    const vips = config.vips.map((v) => {
      const out = this.vip(v, overrides[v.name]);
      if (out !== v) changed = true;
      return out;
    });
    return changed ? { ...config, vips } : config;
  }
}

/** The override of one backend, as /state shows it (null: none). */
export function overrideOf(overrides: OverrideSet, vip: string, address: string): BackendOverride | null {
  return overrides[vip]?.[address] ?? null;
}

/** A /state document's shape as far as overrides go: desired VIPs and their backends. */
interface StateWithBackends {
  desired: { vips: { name: string; backends: { address: string }[] }[] } | null;
}

/**
 * The /state document with `override` (or null) on each desired backend, and where the overrides are stored.
 * The backend's weight and drain there are already the overridden ones: `override` says why.
 */
export function withOverrideView<T extends StateWithBackends>(
  doc: T,
  overrides: OverrideSet,
  location: string | null,
): T & { overrides: { location: string | null; count: number } } {
  const desired = doc.desired && {
    ...doc.desired,
    vips: doc.desired.vips.map((v) => ({
      ...v,
      backends: v.backends.map((b) => ({ ...b, override: overrideOf(overrides, v.name, b.address) })),
    })),
  };
  const count = Object.values(overrides).reduce((n, x) => n + Object.keys(x).length, 0);
  return { ...doc, desired, overrides: { location, count } };
}

/** The document stored for `overrides`. */
export function serialiseOverrides(overrides: OverrideSet): string {
  const doc: OverrideDocument = { version: OVERRIDE_DOCUMENT_VERSION, overrides };
  return JSON.stringify(doc, null, 2) + '\n';
}

/** Parses a stored document; throws an Error naming the bad field. */
export function parseOverrides(text: string): OverrideSet {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${(e as Error).message}`);
  }
  const isMap = (x: unknown): x is Record<string, unknown> =>
    x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!isMap(doc)) throw new Error('not a JSON object');
  if (doc.version !== OVERRIDE_DOCUMENT_VERSION)
    throw new Error(`version: ${JSON.stringify(doc.version)} is not ${OVERRIDE_DOCUMENT_VERSION}`);
  if (!isMap(doc.overrides)) throw new Error('overrides: not an object');
  const out: Record<string, Record<string, BackendOverride>> = {};
  for (const [vip, forVip] of Object.entries(doc.overrides)) {
    if (!isMap(forVip)) throw new Error(`overrides.${vip}: not an object`);
    for (const [address, x] of Object.entries(forVip)) {
      const path = `overrides.${vip}.${address}`;
      if (canonicalIp(address) !== address) throw new Error(`${path}: not a canonical IP address`);
      if (!isMap(x)) throw new Error(`${path}: not an object`);
      if (x.drain !== undefined && x.drain !== true) throw new Error(`${path}.drain: not true`);
      if (x.weight !== undefined) {
        try {
          checkWeight(x.weight);
        } catch (e) {
          throw new Error(`${path}.${(e as Error).message}`);
        }
      }
      for (const k of ['at', 'drainAt', 'weightAt'] as const)
        if (
          (k === 'at' || x[k] !== undefined) &&
          (typeof x[k] !== 'string' || Number.isNaN(Date.parse(x[k])))
        )
          throw new Error(`${path}.${k}: not a timestamp`);
      if (x.drain === undefined && x.weight === undefined) continue;
      const at = x.at as string;
      // A file from before per-override times: each takes the shared `at`.
      (out[vip] ??= {})[address] = {
        ...(x.drain === true
          ? { drain: true as const, drainAt: (x.drainAt as string | undefined) ?? at }
          : {}),
        ...(x.weight !== undefined
          ? { weight: x.weight as number, weightAt: (x.weightAt as string | undefined) ?? at }
          : {}),
        at,
      };
    }
  }
  return out;
}
