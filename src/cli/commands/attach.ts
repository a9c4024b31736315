// attach / detach of the balancer, and decap attach / detach for real servers (backends) without ipip.
import { execFile } from 'node:child_process';
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
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
  KernelDatapath,
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
  GlobalArgs,
  holdPins,
  requireCapabilities,
  requireInterface,
  withAdmin,
  withJson,
  withPins,
} from '../context';
import { CliError, emit, numberArg } from '../output';

const exec = promisify(execFile);
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

async function sysctl(key: string, value: string): Promise<void> {
  await exec('sysctl', ['-qw', `${key}=${value}`]);
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
        if (existsSync(join(dir, BALANCER_PROGRAM))) dp = KernelDatapath.adopt({ pinDir: dir });
        else {
          dp = await KernelDatapath.load({ maxEntries: balancerMapSizes(limits) });
          fresh = true;
        }
        try {
          if (fresh) {
            securePinPath({ bpffs: bpffsRoot(a.bpffs), dir, create: true });
            dp.pin(dir);
          }
          const st = await dp.attach({ ifname, mode: a.mode });
          out(
            a,
            'Attach',
            { interface: ifname, pins: dir, fresh, ...(fresh ? { limits } : {}), ...st },
            `attached program ${st.progId} to ${ifname} (${st.mode})${fresh ? `; new empty balancer pinned at ${dir}: VIP traffic passes until the daemon configures it` : ''}`,
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
        const daemon = await fetchAdmin<{ pins?: string }>(a, '/state');
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
      'Backend side: decapsulate IPIP/IP6IP6 in XDP and hold the VIPs on lo',
      (y2) =>
        withJson(withPins(y2, IFACE))
          .positional('action', { choices: ['attach', 'detach'] as const, describe: 'attach or detach' })
          .option('vip', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe: 'VIP to add to (detach: remove from) lo',
          })
          .option('address', {
            type: 'string',
            array: true,
            default: [] as string[],
            describe: 'outer destination to decapsulate for (default: the interface addresses)',
          })
          .option('mode', { choices: MODES, default: 'auto' as XdpMode }),
      async (a) => {
        if (!a.action) throw new CliError('decap: give the action (attach or detach)', 2);
        // No PERFMON: the decap init container runs with BPF and NET_ADMIN only (deploy/example-service.yaml).
        requireCapabilities(`decap ${a.action}`, ['NET_ADMIN', 'BPF']);
        const ifname = needInterface(a, `decap ${a.action}`);
        requireInterface(ifname);
        for (const [flag, list] of [
          ['--vip', a.vip],
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
          for (const v of a.vip)
            await exec('ip', ['addr', 'del', `${v}/${isIP(v) === 4 ? 32 : 128}`, 'dev', 'lo']).catch(
              () => undefined,
            );
          out(
            a,
            'DecapDetach',
            { interface: ifname, ...st, vipsRemoved: a.vip },
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
        const obj = await BpfObject.load(bpfObjectPath('decap'));
        const prog = obj.program('decap');
        const addrs = obj.map('decap_addrs');
        const stats = obj.map('decap_stats');
        obj.close();
        try {
          for (const ad of addresses) addrs.update(encodeAddrKey('address', ad), Buffer.alloc(4));
          if (dir) {
            rmSync(dir, { recursive: true, force: true });
            securePinPath({ bpffs: bpffsRoot(a.bpffs), dir, create: true });
            prog.pin(join(dir, 'decap'));
            addrs.pin(join(dir, 'decap_addrs'));
            stats.pin(join(dir, 'decap_stats'));
          }
          const st = await attachXdp({ ifname, program: prog, mode: a.mode });
          // The VIPs live on lo; answer ARP/ND only for the interface's own addresses (DSR on shared L2).
          for (const v of a.vip) {
            // replace, not add: a second `decap attach` (or a VIP already on lo) is not an error.
            const r = await exec('ip', [
              'addr',
              'replace',
              `${v}/${isIP(v) === 4 ? 32 : 128}`,
              'dev',
              'lo',
            ]).catch((e: { stderr?: string }) => ({ stdout: '', stderr: e.stderr ?? '' }));
            if (r.stderr && !/File exists/.test(r.stderr))
              throw new CliError(`add VIP ${v} to lo: ${r.stderr.trim()}`, 3);
          }
          if (a.vip.some((v) => isIP(v) === 4)) {
            await sysctl('net.ipv4.conf.all.arp_ignore', '1');
            await sysctl('net.ipv4.conf.all.arp_announce', '2');
            // Decapsulated packets come from clients anywhere: loose reverse-path filtering.
            await sysctl('net.ipv4.conf.all.rp_filter', '2');
            await sysctl(`net.ipv4.conf.${ifname}.rp_filter`, '2');
          }
          out(
            a,
            'DecapAttach',
            { interface: ifname, ...st, addresses, vips: a.vip, pins: dir },
            `decap attached to ${ifname} (${st.mode}, program ${st.progId}) for ${addresses.join(', ')}${a.vip.length ? `; VIPs on lo: ${a.vip.join(', ')}` : ''}${dir ? `; pinned at ${dir}` : '; not pinned (no bpffs mounted)'}`,
          );
        } finally {
          for (const x of [prog, addrs, stats] as (BpfProgram | BpfMap)[]) x.close();
        }
      },
    ) as unknown as Argv<GlobalArgs>;
}
