// attach / detach of the balancer, and decap attach / detach for real servers (backends) without ipip.
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import {
  attachXdp,
  BpfMap,
  BpfObject,
  BpfProgram,
  detachXdp,
  queryXdp,
  unpin,
  XdpMode,
} from '../../datapath/bpf';
import {
  BALANCER_MAPS,
  BALANCER_PROGRAM,
  balancerMapSizes,
  BalancerLimits,
  inspectBalancerPins,
  KernelDatapath,
  unpinBalancer,
  type AttachedProgram,
  type PinDecision,
} from '../../datapath/kernel';
import { encodeAddrKey } from '../../datapath/layout';
import { BOUNDS, DEFAULTS } from '../../model/defaults';
import { bpfObjectPath } from '../../paths';
import { bpffsRoot, checkBpffs, currentNetnsName, pinDir, securePinPath } from '../../daemon/pins';
import { interfaceAddresses } from '../../daemon/host';
import { describeFailure, removeVipRoutes, type RouteFailure } from '../../daemon/vip-routes';
import {
  adminUrl,
  fetchAdmin,
  statePath,
  GlobalArgs,
  holdPins,
  once,
  requireCapabilities,
  requireInterface,
  withAdmin,
  withJson,
  withPins,
} from '../context';
import { CliError, emit, hostPort, numberArg } from '../output';
import { DECAP_CAPABILITIES } from '../capabilities';
import {
  DEFAULT_GUE_PORT,
  decapSettings,
  sourceText,
  type DecapSettingFlags,
  type DecapSettings,
} from '../../decap/config';
import { DecapUsageError, DEFAULT_METRICS_LISTEN } from '../../decap/core';
import { decapLayoutOf, decapMapNames, writeDecapSettings } from '../../decap/kernel';
import { addVipToLo, removeVipFromLo } from '../../decap/host';
import { createDecapRun, runDecapUntilSignal } from '../../decap/run';
import { createLogger, LOG_LEVELS } from '../../log';

const MODES = ['native', 'generic', 'auto'] as const;

function needInterface(a: GlobalArgs, command: string): string {
  if (!a.interface) throw new CliError(`${command}: give the interface (--interface/-i NAME)`, 2);
  return a.interface;
}

function out(a: GlobalArgs, kind: string, json: object, text: string): void {
  emit(a.json, kind, json, () => text);
}

const IFACE = 'the interface (required)';

/** Pins of the decap program of an interface: <bpffs>/peak-xdp/<netns>/<if>/decap/. */
const decapPins = (a: GlobalArgs, ifname: string): string =>
  join(pinDir({ bpffs: bpffsRoot(a.bpffs), netns: currentNetnsName(), ifname }), 'decap');

/** The pin directory of the balancer on an interface, after checking the bpffs is mounted. */
function balancerPins(a: GlobalArgs, ifname: string): string {
  const root = bpffsRoot(a.bpffs);
  try {
    checkBpffs(root);
  } catch (e) {
    throw new CliError((e as Error).message, 3);
  }
  return pinDir({ bpffs: root, netns: currentNetnsName(), ifname });
}

/**
 * Removes the pins under `dir` that hold this balancer's own program and maps (after a failed fresh attach;
 * a pin of anything else stays), then `dir` itself if that leaves it empty.
 */
function unpinOurs(dp: KernelDatapath, dir: string): void {
  const holds = (name: string, id: number, open: (path: string) => { id: number; close(): void }): void => {
    let h: { id: number; close(): void };
    try {
      h = open(join(dir, name));
    } catch {
      return; // not pinned (yet)
    }
    const ours = h.id === id;
    h.close();
    if (ours) unpin(join(dir, name));
  };
  holds(BALANCER_PROGRAM, dp.program.id, (p) => BpfProgram.fromPin(p));
  for (const m of BALANCER_MAPS)
    holds(m, dp.maps[m].info.id, (p) => {
      const map = BpfMap.fromPin(p);
      return { id: map.info.id, close: () => map.close() };
    });
  try {
    rmdirSync(dir);
  } catch {
    // not empty (other pins, e.g. decap/) or already gone
  }
}

/** The map-size limits of a fresh balancer: the daemon's config keys, with the same defaults and bounds. */
function limitsOf(a: { maxVips: number; maxBackends: number; conntrackEntries: number }): BalancerLimits {
  const check = (flag: string, v: number, b: { min: number; max: number }): number => {
    if (!Number.isInteger(v) || v < b.min || v > b.max)
      throw new CliError(`--${flag}: ${v} is not an integer in ${b.min}..${b.max}`, 2);
    return v;
  };
  return {
    maxVips: check('max-vips', a.maxVips, BOUNDS.maxVips),
    maxBackends: check('max-backends', a.maxBackends, BOUNDS.maxBackends),
    conntrackEntries: check('conntrack-entries', a.conntrackEntries, BOUNDS.conntrackEntries),
  };
}

/** `decap run`: the backend role (src/decap/), until SIGTERM/SIGINT. */
async function decapRun(
  a: GlobalArgs &
    DecapSettingFlags & {
      address: string[];
      mode: XdpMode;
      metricsListen?: string;
      keepOnExit: boolean;
      sysctls: boolean;
      logLevel: string;
    },
  vips: string[],
): Promise<void> {
  requireCapabilities('decap run', DECAP_CAPABILITIES);
  const log = createLogger({ level: a.logLevel });
  let run;
  try {
    run = createDecapRun({ ...a, vip: vips }, log);
  } catch (e) {
    if (e instanceof DecapUsageError) throw new CliError(e.message, 2);
    throw e;
  }
  let code: number;
  try {
    code = await runDecapUntilSignal({
      agent: run.agent,
      log,
      started: (s) =>
        out(
          a,
          'DecapRun',
          s,
          `decap ${s.action === 'attach' ? 'attached to' : s.action === 'adopt' ? 'adopted on' : 'replaced on'} ${s.interface} (${s.mode}, program ${s.progId}) for ${s.addresses.join(', ')}${s.addressSource === 'interface' ? ' (the interface addresses, followed)' : ''}${s.vips.length ? `; VIPs on lo: ${s.vips.join(', ')}` : '; nothing on lo (node mode)'}${s.sysctlsSkipped.length ? `; sysctls not set (--no-sysctls): ${s.sysctlsSkipped.join(', ')}` : ''}${s.sources.length ? `; tunnels only from ${[...s.sources, ...s.gueSources.map((x) => `${x} (GUE)`)].join(', ')}` : ''}; GUE port ${s.guePort}; second chance ${!s.secondChance ? 'off' : s.diagnostics.secondChanceReady ? 'ready' : `not ready (${s.diagnostics.reasons.join('; ')})`}; metrics on ${hostPort(s.metrics.host, s.metrics.port)}${s.pins ? `; pinned at ${s.pins}` : '; not pinned (no bpffs)'}`,
        ),
      stopped: (s) =>
        out(
          a,
          'DecapStop',
          s,
          s.kept
            ? `decap left attached to ${s.interface} (--keep-on-exit)`
            : `decap ${s.detached ? 'detached from' : 'was not attached to'} ${s.interface}${s.vipsRemoved.length ? `; VIPs removed from lo: ${s.vipsRemoved.join(', ')}` : ''}`,
        ),
    });
  } catch (e) {
    const m = (e as Error).message;
    // A flag problem found at start (interface, address) is a usage error; the kernel saying no is not.
    throw new CliError(
      m,
      e instanceof DecapUsageError ? 2 : /^--interface: .* runs another XDP program/.test(m) ? 3 : 1,
    );
  } finally {
    run.release();
  }
  // Pino writes asynchronously: let it flush before the exit.
  await new Promise((resolve) => setImmediate(resolve));
  process.exitCode = code;
}

export function registerAttach(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command(
      'attach',
      'Attach the balancer to --interface (the pinned one if there is one, else a fresh one, pinned)',
      (y2) =>
        withJson(withPins(y2, IFACE))
          .option('mode', { choices: MODES, default: 'auto' as XdpMode, describe: 'XDP mode' })
          // A fresh balancer is sized like the daemon's (limits.* in the config); a pinned one keeps its size.
          .option('max-vips', {
            type: 'string',
            default: String(DEFAULTS.limits.maxVips),
            coerce: numberArg('max-vips'),
            describe: 'fresh balancer: size of the per-VIP maps (config limits.maxVips)',
          })
          .option('max-backends', {
            type: 'string',
            default: String(DEFAULTS.limits.maxBackends),
            coerce: numberArg('max-backends'),
            describe: 'fresh balancer: size of the backends map (config limits.maxBackends)',
          })
          .option('conntrack-entries', {
            type: 'string',
            default: String(DEFAULTS.limits.conntrackEntries),
            coerce: numberArg('conntrack-entries'),
            describe: 'fresh balancer: connection-table entries (config limits.conntrackEntries)',
          }),
      async (a) => {
        requireCapabilities('attach');
        const ifname = needInterface(a, 'attach');
        // Before anything is loaded or pinned: a mistyped name must leave nothing behind.
        requireInterface(ifname);
        const limits = limitsOf({
          maxVips: a.maxVips as number,
          maxBackends: a.maxBackends as number,
          conntrackEntries: a.conntrackEntries as number,
        });
        const dir = balancerPins(a, ifname);
        const lock = holdPins(a, { ifname, dir, command: 'attach' });
        let dp: KernelDatapath;
        let fresh = false;
        // The daemon's decision (pinDecision): adopt, load fresh, replace an older build's pins, or refuse.
        let decision: PinDecision;
        let running: AttachedProgram;
        let pinnedId = 0;
        try {
          // The limits size a fresh balancer only: a pinned one keeps its size (as before).
          const seen = inspectBalancerPins({ dir, ifname, limits: null });
          ({ decision, attached: running } = seen);
          if (seen.pins.program.kind === 'program') pinnedId = seen.pins.program.id;
        } catch (e) {
          lock.release();
          throw e;
        }
        if (decision.kind === 'refuse') {
          lock.release();
          throw new CliError(decision.reason, 3);
        }
        // The old balancer runs: named so, or the pinned program (naming by id needs CAP_SYS_ADMIN).
        const oldRuns =
          running.progId !== 0 && (running.name === BALANCER_PROGRAM || running.progId === pinnedId);
        if (decision.kind === 'replace' && oldRuns) {
          // An older build's balancer forwards: replacing it here would swap in an empty one (VIP traffic would
          // pass to the kernel). The daemon replaces it once it has programmed this build's.
          lock.release();
          out(
            a,
            'Attach',
            { interface: ifname, pins: dir, fresh: false, progId: running.progId, replaceDeferred: { reason: decision.reason, detail: decision.detail } }, // prettier-ignore
            `program ${running.progId} stays attached to ${ifname}: the balancer pinned at ${dir} is an older build's (${decision.detail}); \`peak-xdp daemon\` replaces it once it has programmed this build's`,
          );
          return;
        }
        let replaced: string | null = null;
        if (decision.kind === 'adopt') dp = KernelDatapath.adopt({ pinDir: dir });
        else {
          dp = await KernelDatapath.load({ maxEntries: balancerMapSizes(limits) });
          fresh = true;
          if (decision.kind === 'replace') replaced = decision.detail;
        }
        try {
          if (fresh) {
            securePinPath({ bpffs: bpffsRoot(a.bpffs), dir, create: true });
            // An older build's pins (nothing runs them) or map pins without a program pin: ours replace them,
            // program pin first out, last in (KernelDatapath.pin).
            unpinBalancer(dir, decision.kind === 'fresh' ? decision.leftovers : BALANCER_MAPS);
            dp.pin(dir);
          }
          const st = await dp.attach({ ifname, mode: a.mode });
          out(
            a,
            'Attach',
            { interface: ifname, pins: dir, fresh, ...(fresh ? { limits } : {}), ...(replaced ? { replaced } : {}), ...st }, // prettier-ignore
            `attached program ${st.progId} to ${ifname} (${st.mode})${replaced ? `; replaced the pins of an older build (${replaced})` : ''}${fresh ? `; new empty balancer pinned at ${dir}: VIP traffic passes until the daemon configures it` : ''}`,
          );
        } catch (e) {
          // A fresh balancer that is not attached must not stay pinned: it holds its maps' memory, and every
          // later command without --interface would have to ask which balancer it is about.
          if (!fresh) throw e;
          unpinOurs(dp, dir);
          throw new CliError(`attach to ${ifname}: ${(e as Error).message} (nothing left pinned)`, 1);
        } finally {
          dp.close();
          lock.release();
        }
      },
    )
    .command(
      'detach',
      'Detach the balancer from --interface: forwarding stops (--purge also removes its pinned maps)',
      (y2) =>
        withJson(withAdmin(withPins(y2, IFACE))).option('purge', {
          type: 'boolean',
          default: false,
          describe: 'remove the pins (state) too',
        }),
      async (a) => {
        requireCapabilities('detach');
        const ifname = needInterface(a, 'detach');
        const dir = balancerPins(a, ifname);
        const before = queryXdp({ ifname });
        let ours: number | null = null;
        if (existsSync(join(dir, BALANCER_PROGRAM))) {
          const p = BpfProgram.fromPin(join(dir, BALANCER_PROGRAM));
          ours = p.id;
          p.close();
        }
        if (before.progId !== 0 && ours !== null && before.progId !== ours)
          throw new CliError(
            `${ifname} runs program ${before.progId}, not the pinned balancer (${ours}): not detaching someone else's program`,
            3,
          );
        if (before.progId === 0 && ours === null)
          throw new CliError(`nothing attached to ${ifname} and nothing pinned`, 3);
        const lock = holdPins(a, { ifname, dir, command: 'detach' });
        // A running daemon owns the attachment: it would put the program back at its next check.
        const daemon = await fetchAdmin<{ pins?: string }>(a, statePath(['pins']));
        if (daemon?.pins === dir)
          throw new CliError(
            `the daemon answering at ${adminUrl(a)} runs this balancer and re-attaches it within seconds: stop the daemon first (with --detach-on-exit it detaches on exit), then detach`,
            1,
          );
        const st = before.progId !== 0 ? await detachXdp({ ifname }) : before;
        if (a.purge) rmSync(dir, { recursive: true, force: true });
        // Forwarding stops on purpose: the daemon's VIP blackhole routes and rule for this interface go too.
        const routes = await removeVipRoutes(ifname).catch((e: Error) => ({
          removed: [] as string[],
          rulesRemoved: [] as string[],
          failures: [] as RouteFailure[],
          error: e.message,
        }));
        lock.release();
        if ('error' in routes)
          process.stderr.write(`warning: VIP blackhole routes and rule not removed: ${routes.error}\n`);
        for (const f of routes.failures)
          process.stderr.write(`warning: VIP blackhole ${describeFailure(ifname, f)} failed: ${f.error}\n`);
        out(
          a,
          'Detach',
          {
            interface: ifname,
            detached: before.progId !== 0,
            purged: a.purge,
            vipRoutesRemoved: routes.removed,
            vipRuleRemoved: routes.rulesRemoved,
            ...st,
          },
          `${before.progId !== 0 ? `detached program ${before.progId} from ${ifname}` : `nothing was attached to ${ifname}`}${a.purge ? `; removed ${dir}` : `; pins kept at ${dir} (peak-xdp attach resumes, --purge removes)`}${routes.removed.length > 0 ? `; removed ${routes.removed.length} VIP blackhole route(s)` : ''}${routes.rulesRemoved.length > 0 ? `; removed the VIP blackhole rule (${routes.rulesRemoved.join(', ')})` : ''}`,
        );
      },
    )
    .command(
      'decap [action]',
      'Backend side: decapsulate IPIP/IP6IP6 in XDP (attach/detach: once; run: keep it attached, serve /metrics)',
      (y2) =>
        withJson(
          withPins(y2, 'the interface (run: also env PEAK_XDP_INTERFACE, or auto: the default route’s)'),
        )
          .positional('action', {
            choices: ['attach', 'detach', 'run'] as const,
            describe: 'attach or detach once, or run (the backend role: until SIGTERM/SIGINT)',
          })
          .option('vip', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe:
              'VIP to add to (detach: remove from) lo; run: host mode only (node mode adds nothing to lo)',
          })
          .option('address', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe:
              'outer destination to decapsulate for (default: the interface addresses; run: re-read as they change)',
          })
          .option('mode', { choices: MODES, default: 'auto' as XdpMode })
          .option('metrics-listen', {
            type: 'string',
            coerce: once('metrics-listen'),
            describe: `run: HOST:PORT of /metrics, /healthz, /readyz, /state, all read-only (default: env PEAK_XDP_METRICS_LISTEN or ${DEFAULT_METRICS_LISTEN})`,
          })
          .option('sysctls', {
            type: 'boolean',
            default: true,
            describe:
              'attach, run: with --vip, also set the DSR sysctls (arp_ignore=1, arp_announce=2, rp_filter=2); --no-sysctls: only the VIP on lo (an unprivileged container: /proc/sys is read-only), the skipped ones printed',
          })
          .option('keep-on-exit', {
            type: 'boolean',
            default: false,
            describe:
              'run: leave decap attached and pinned on exit, so a restart adopts it with no gap (default: detach)',
          })
          .option('log-level', {
            choices: LOG_LEVELS,
            default: (process.env.PEAK_XDP_LOG_LEVEL ?? 'info') as 'info',
            describe: 'run: log level (JSON lines on stderr)',
          })
          .option('from', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe:
              'attach, run: decapsulate only tunnels whose outer source is in this prefix (the LB nodes’ encap source; repeatable; default: env PEAK_XDP_DECAP_FROM, comma-separated, else from anywhere). Needed next to an IPIP CNI (Calico IPIP, Flannel ipip): other IPIP then reaches tunl0',
          })
          .option('gue-from', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe:
              'attach, run: with --from, also accept GUE (only) from this prefix: the nodes, for second-chance hops between backends (default: env PEAK_XDP_DECAP_GUE_FROM)',
          })
          .option('gue-port', {
            type: 'string',
            coerce: once('gue-port'),
            describe: `attach, run: UDP port of GUE (default: env PEAK_XDP_GUE_PORT or ${DEFAULT_GUE_PORT}; the LBs' encap.guePort)`,
          })
          .option('second-chance', {
            type: 'boolean',
            default: true,
            describe:
              'attach, run: forward mid-connection packets this host has no state for to the previous owner the LB names (--no-second-chance: ignore hints)',
          })
          .option('conntrack-lookup', {
            type: 'boolean',
            default: true,
            describe:
              'attach, run: the second chance also asks netfilter conntrack (node mode: kube-proxy DNAT); --no-conntrack-lookup: sockets only',
          })
          .option('remember-moved', {
            type: 'boolean',
            default: true,
            describe:
              'attach, run: a flow forwarded to the previous owner a hint named keeps going there after the LB stops hinting it (its previous table expired), while this host has no state for it (up to 65,536 flows, least recently used dropped first); --no-remember-moved: on hints only',
          }),
      async (a) => {
        if (!a.action) throw new CliError('decap: give the action (attach, detach or run)', 2);
        // --no-vip (node mode, the default of run) reads as vip=false, or a false among the values.
        const vips = (Array.isArray(a.vip) ? (a.vip as unknown[]) : []).filter(
          (v): v is string => typeof v === 'string',
        );
        const flags: DecapSettingFlags = {
          from: a.from,
          gueFrom: a.gueFrom,
          guePort: a.guePort as string | undefined,
          secondChance: a.secondChance,
          conntrackLookup: a.conntrackLookup,
          rememberMoved: a.rememberMoved,
        };
        if (a.action === 'run')
          return decapRun(
            { ...a, ...flags, guePort: flags.guePort, metricsListen: a.metricsListen as string | undefined },
            vips,
          );
        requireCapabilities(`decap ${a.action}`, DECAP_CAPABILITIES);
        const ifname = needInterface(a, `decap ${a.action}`);
        requireInterface(ifname);
        for (const [flag, list] of [
          ['--vip', vips],
          ['--address', a.address],
        ] as const)
          for (const v of list)
            if (isIP(v) === 0) throw new CliError(`${flag}: "${v}" is not an IP address`, 2);
        // Pins are optional here (the attachment keeps the program alive): an init container may have no bpffs.
        let dir: string | null = decapPins(a, ifname);
        try {
          checkBpffs(bpffsRoot(a.bpffs));
        } catch {
          dir = null;
        }
        if (a.action === 'detach') {
          const st = await detachXdp({ ifname }).catch((e: Error) => {
            throw new CliError(`detach from ${ifname}: ${e.message}`, 3);
          });
          if (dir) rmSync(dir, { recursive: true, force: true });
          for (const v of vips) await removeVipFromLo(v).catch(() => undefined);
          out(
            a,
            'DecapDetach',
            { interface: ifname, ...st, vipsRemoved: vips },
            `decap detached from ${ifname}`,
          );
          return;
        }
        const addresses =
          a.address.length > 0
            ? a.address
            : await interfaceAddresses(ifname).catch((e: Error) => {
                throw new CliError(`addresses of ${ifname}: ${e.message.split('\n')[0]}`, 3);
              });
        if (addresses.length === 0)
          throw new CliError(`${ifname} has no global address to decapsulate for: give --address`, 2);
        let settings: DecapSettings;
        try {
          settings = decapSettings(flags, process.env);
        } catch (e) {
          if (e instanceof DecapUsageError) throw new CliError(e.message, 2);
          throw e;
        }
        const objectPath = bpfObjectPath('decap');
        const obj = await BpfObject.load(objectPath);
        const prog = obj.program('decap');
        // every map, as `decap run` pins them (so a later run adopts this program rather than swapping it)
        const maps = Object.fromEntries(decapMapNames(objectPath).map((m) => [m, obj.map(m)]));
        obj.close();
        const addrs = maps.decap_addrs!;
        try {
          // sources and config before the addresses: nothing is decapsulated before the filter is in place
          writeDecapSettings({ decap_config: maps.decap_config!, decap_sources: maps.decap_sources! }, decapLayoutOf(objectPath), settings); // prettier-ignore
          for (const ad of addresses) addrs.update(encodeAddrKey('address', ad), Buffer.alloc(4));
          if (dir) {
            rmSync(dir, { recursive: true, force: true });
            securePinPath({ bpffs: bpffsRoot(a.bpffs), dir, create: true });
            prog.pin(join(dir, 'decap'));
            for (const [name, m] of Object.entries(maps)) m.pin(join(dir, name));
          }
          const st = await attachXdp({ ifname, program: prog, mode: a.mode });
          // The VIPs live on lo; answer ARP/ND only for the interface's own addresses (DSR on shared L2).
          const sysctlsSkipped: string[] = [];
          for (const v of vips) {
            const skipped = await addVipToLo(v, ifname, a.sysctls).catch(
              (e: { stderr?: string; message: string }) => {
                throw new CliError(`add VIP ${v} to lo: ${(e.stderr || e.message).trim()}${/sysctl|read-only/i.test(e.stderr || e.message) ? ' (in a container without a writable /proc/sys: --no-sysctls)' : ''}`, 3); // prettier-ignore
              },
            );
            for (const k of skipped) if (!sysctlsSkipped.includes(k)) sysctlsSkipped.push(k);
          }
          out(
            a,
            'DecapAttach',
            {
              interface: ifname,
              ...st,
              addresses,
              vips,
              sysctlsSkipped,
              pins: dir,
              guePort: settings.guePort,
              secondChance: settings.secondChance,
              conntrackLookup: settings.conntrackLookup,
              rememberMoved: settings.rememberMoved,
              sources: settings.sources.filter((x) => x.ipip).map(sourceText),
              gueSources: settings.sources.filter((x) => !x.ipip).map(sourceText),
            },
            `decap attached to ${ifname} (${st.mode}, program ${st.progId}) for ${addresses.join(', ')}${settings.sources.length ? `; tunnels only from ${settings.sources.map((x) => sourceText(x) + (x.ipip ? '' : ' (GUE)')).join(', ')}` : ''}${vips.length ? `; VIPs on lo: ${vips.join(', ')}` : ''}${sysctlsSkipped.length ? `; sysctls not set (--no-sysctls): ${sysctlsSkipped.join(', ')}` : ''}${dir ? `; pinned at ${dir}` : '; not pinned (no bpffs mounted)'}`,
          );
        } finally {
          for (const x of [prog, ...Object.values(maps)] as (BpfProgram | BpfMap)[]) x.close();
        }
      },
    ) as unknown as Argv<GlobalArgs>;
}
