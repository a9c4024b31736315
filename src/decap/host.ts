// The host side of the decap agent: interfaces, their addresses, the default route, and (host mode only)
// VIPs on lo with the ARP and reverse-path settings direct server return needs; what the diagnostics read
// (the kernel's BTF, forwarding sysctls).
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ifNameToIndex } from '../datapath/bpf';
import { interfaceAddresses, ipJson } from '../daemon/host';
import { commandFailure, runChecked, runCommand } from '../util/command';
import type { DecapHost } from './agent';
import { defaultRouteInterface, dsrSysctls, interfaceWithAddress } from './core';
import { btfHasFunc, CONNTRACK_KFUNC } from './diagnostics';

async function sysctl(key: string, value: string): Promise<void> {
  await runChecked('sysctl', ['-qw', `${key}=${value}`], { timeoutMs: 5000 });
}

const hostPrefix = (v: string): string => `${v}/${isIP(v) === 4 ? 32 : 128}`;

/**
 * Adds `vip` to lo (replace: already there is fine) and, unless `sysctls` is false, sets what DSR with the VIP on
 * lo needs (dsrSysctls). Returns the settings skipped (`key=value`), for the caller to print.
 */
export async function addVipToLo(vip: string, ifname: string, sysctls = true): Promise<string[]> {
  await runChecked('ip', ['addr', 'replace', hostPrefix(vip), 'dev', 'lo'], { timeoutMs: 5000 });
  const wanted = dsrSysctls(vip, ifname);
  if (!sysctls) return wanted.map(([k, v]) => `${k}=${v}`);
  for (const [k, v] of wanted) await sysctl(k, v);
  return [];
}

export async function removeVipFromLo(vip: string): Promise<void> {
  const args = ['addr', 'del', hostPrefix(vip), 'dev', 'lo'];
  const r = await runCommand('ip', args, { timeoutMs: 5000 });
  // Already gone is what we want.
  if (r.code !== 0 && !/Cannot assign|not found|No such/i.test(r.stderr))
    throw new Error(`ip ${args.join(' ')}: ${commandFailure(r)}`);
}

export const systemDecapHost: DecapHost = {
  interfaceExists(ifname) {
    try {
      ifNameToIndex(ifname);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENODEV') return false;
      // A name the kernel could never have (too long, bad characters) does not exist either.
      if (e instanceof TypeError) return false;
      throw e;
    }
  },
  async defaultRouteInterface() {
    const v4 = await ipJson<{ dev?: string; metric?: number }[]>(['-4', 'route', 'show', 'default']);
    const v6 = await ipJson<{ dev?: string; metric?: number }[]>(['-6', 'route', 'show', 'default']);
    return defaultRouteInterface(v4, v6);
  },
  async interfaceWithAddress(ip) {
    const links = await ipJson<{ ifname?: string; addr_info?: { local?: string }[] }[]>(['addr', 'show']);
    return interfaceWithAddress(links, ip);
  },
  addresses: (ifname) => interfaceAddresses(ifname),
  addVip: addVipToLo,
  removeVip: removeVipFromLo,
  conntrackKfunc: () => kernelHasConntrackKfunc(),
  forwarding: interfaceForwarding,
};

/** FUNC bpf_xdp_ct_lookup in the kernel's BTF (vmlinux, or the nf_conntrack module's); null: no BTF to read. */
export async function kernelHasConntrackKfunc(dir = '/sys/kernel/btf'): Promise<boolean | null> {
  let vmlinux: Buffer;
  try {
    vmlinux = await readFile(join(dir, 'vmlinux'));
  } catch {
    return null;
  }
  if (btfHasFunc(vmlinux, CONNTRACK_KFUNC)) return true;
  try {
    return btfHasFunc(await readFile(join(dir, 'nf_conntrack')), CONNTRACK_KFUNC, vmlinux);
  } catch {
    return false; // no module BTF: nf_conntrack is neither built in (vmlinux said no) nor loaded
  }
}

/** The interface's forwarding sysctls; null for a family the interface does not have (IPv6 disabled). */
export async function interfaceForwarding(ifname: string): Promise<{ 4: boolean | null; 6: boolean | null }> {
  const read = async (fam: 4 | 6): Promise<boolean | null> => {
    try {
      return (await readFile(`/proc/sys/net/ipv${fam}/conf/${ifname}/forwarding`, 'utf8')).trim() !== '0';
    } catch {
      return null;
    }
  };
  return { 4: await read(4), 6: await read(6) };
}
