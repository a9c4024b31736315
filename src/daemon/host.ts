// Facts about this host the daemon needs: an interface's MAC and addresses, the default route's neighbour;
// the datapath config they give a config.
import { readFile } from 'node:fs/promises';
import type { DatapathConfig } from '../datapath/types';
import { hostIssues, type Config } from '../model/config';
import { ConfigRejectedError } from '../model/errors';
import { resolveDatapathConfig } from '../reconcile/desired';
import type { HostNetwork } from './collaborators';
import { runChecked, runCommand } from '../util/command';

/** `ip -j ARGS`, parsed (an empty output: []). */
export async function ipJson<T>(args: string[]): Promise<T> {
  const stdout = await runChecked('ip', ['-j', ...args], { timeoutMs: 5000 });
  return (stdout.trim() ? JSON.parse(stdout) : []) as T;
}

/** The MAC address of an interface (lower-case, colon separated). */
export async function interfaceMac(ifname: string): Promise<string> {
  try {
    return (await readFile(`/sys/class/net/${ifname}/address`, 'utf8')).trim().toLowerCase();
  } catch (e) {
    throw new Error(`interface: "${ifname}" not found in this network namespace (${(e as Error).message})`);
  }
}

/** Global (non link-local) addresses of an interface, IPv4 first. */
export async function interfaceAddresses(ifname: string): Promise<string[]> {
  const links = await ipJson<{ addr_info?: { family: string; local: string; scope: string }[] }[]>([
    'addr',
    'show',
    'dev',
    ifname,
  ]);
  const addrs = (links[0]?.addr_info ?? []).filter((a) => a.scope === 'global');
  return [...addrs.filter((a) => a.family === 'inet'), ...addrs.filter((a) => a.family === 'inet6')].map(
    (a) => a.local,
  );
}

/**
 * The MAC of the default route's gateway on `ifname` (IPv4 first, then IPv6), from the neighbour table;
 * one ping warms the table when the entry is missing. Undefined when there is no such route or neighbour.
 */
export async function defaultGatewayMac(ifname: string): Promise<string | undefined> {
  for (const fam of ['-4', '-6']) {
    const routes = await ipJson<{ gateway?: string; dev?: string }[]>([fam, 'route', 'show', 'default']);
    const gw = routes.find((r) => r.gateway && (r.dev === undefined || r.dev === ifname))?.gateway;
    if (!gw) continue;
    for (let attempt = 0; attempt < 2; attempt++) {
      const neigh = await ipJson<{ dst: string; lladdr?: string; state?: string[] }[]>([
        fam,
        'neigh',
        'show',
        gw,
        'dev',
        ifname,
      ]);
      const mac = neigh.find((n) => n.lladdr && !(n.state ?? []).includes('FAILED'))?.lladdr;
      if (mac) return mac.toLowerCase();
      // Bounded: one echo request to the gateway itself to resolve its MAC.
      await runCommand('ping', [fam, '-c', '1', '-W', '1', '-I', ifname, gw], { timeoutMs: 3000 });
    }
  }
  return undefined;
}

/**
 * The datapath config for `config` on this host (its MAC, addresses, gateway). The config checks that need the
 * host (a VIP or backend that is the node's own address) throw ConfigRejectedError, like any config error.
 */
export async function hostDatapathConfig(o: {
  config: Config;
  configPath: string;
  facts: HostNetwork;
}): Promise<DatapathConfig> {
  const { config, facts } = o;
  const ownMac = await facts.interfaceMac(config.interface);
  const addresses = await facts.interfaceAddresses(config.interface);
  const issues = hostIssues(config, { interface: config.interface, addresses });
  if (issues.length > 0) throw new ConfigRejectedError(o.configPath, issues);
  const autoNextHopMac =
    config.nextHopMac === 'auto' ? await facts.defaultGatewayMac(config.interface) : undefined;
  const autoEncapAddresses = config.encapSource === 'auto' ? addresses : undefined;
  return resolveDatapathConfig({ config, ownMac, autoNextHopMac, autoEncapAddresses });
}
