// Pure renderers of the router's BGP daemon configs (BIRD 2, FRR) and the backends' nginx config.
import type { Host, Plan } from './plan';

function lbPeers(p: Plan): { lb: Host; v4: string; v6: string; asn: number }[] {
  return p.lbs.map((lb) => ({ lb, v4: lb.link!.hostV4.address, v6: lb.link!.hostV6.address, asn: lb.asn! }));
}

/**
 * BIRD 2: passive eBGP to every LB (v4 and v6 sessions), ECMP into the kernel FIB (TESTBED.md timers).
 * gracefulRestart: BIRD itself can restart gracefully (`birdc graceful restart`, then `bird -R`): the kernel
 * keeps the routes until the sessions are back. Without it BIRD is only a helper ("aware", its default): a
 * peer's kill -9 keeps that peer's routes either way.
 */
export function renderBird(p: Plan, o: { logFile: string; gracefulRestart?: boolean }): string {
  const gr = o.gracefulRestart ? ' graceful restart on;' : '';
  const lines = [
    `# Testbed router ${p.prefix}: generated, do not edit.`,
    `log "${o.logFile}" all;`,
    `router id ${p.routerId};`,
    'protocol device { scan time 10; }',
    // learn off + only our own routes: BIRD never touches the static routes the bench adds.
    `protocol kernel kernel4 { ipv4 { import none; export all; }; merge paths yes limit 8;${gr} }`,
    `protocol kernel kernel6 { ipv6 { import none; export all; }; merge paths yes limit 8;${gr} }`,
    'template bgp lbpeer {',
    `  local as ${p.routerAsn};`,
    `  passive on;${gr}`,
    '  hold time 3; keepalive time 1;',
    // Without these, recovery after a hold-timer expiry takes 60 s or more.
    '  connect delay time 1; connect retry time 2; error wait time 1, 5;',
    '}',
  ];
  for (const x of lbPeers(p)) {
    lines.push(
      `protocol bgp ${x.lb.name}_v4 from lbpeer { neighbor ${x.v4} as ${x.asn}; ipv4 { import all; export none; }; }`,
      `protocol bgp ${x.lb.name}_v6 from lbpeer { neighbor ${x.v6} as ${x.asn}; ipv6 { import all; export none; }; }`,
    );
  }
  return lines.join('\n') + '\n';
}

/** FRR 8: zebra needs nothing but a hostname; bgpd peers passively with every LB, multipath across ASNs. */
export function renderFrrZebra(p: Plan): string {
  return `hostname ${p.prefix}-router\n`;
}

export function renderFrrBgpd(p: Plan, o: { logFile: string }): string {
  const lines = [
    `hostname ${p.prefix}-router`,
    `log file ${o.logFile}`,
    `router bgp ${p.routerAsn}`,
    ` bgp router-id ${p.routerId}`,
    ' no bgp ebgp-requires-policy',
    ' bgp bestpath as-path multipath-relax',
    ' timers bgp 1 3',
  ];
  for (const x of lbPeers(p)) {
    for (const a of [x.v4, x.v6]) {
      lines.push(
        ` neighbor ${a} remote-as ${x.asn}`,
        ` neighbor ${a} passive`,
        ` neighbor ${a} timers connect 1`,
      );
    }
  }
  for (const fam of ['ipv4', 'ipv6'] as const) {
    lines.push(` address-family ${fam} unicast`, '  maximum-paths 8');
    for (const x of lbPeers(p)) {
      const a = fam === 'ipv4' ? x.v4 : x.v6;
      if (fam === 'ipv6') lines.push(`  neighbor ${a} activate`);
      lines.push(`  neighbor ${a} route-map DENY_ALL out`);
    }
    // IPv4 neighbours are active in ipv4 unicast by default; keep IPv6 neighbours out of it.
    if (fam === 'ipv4') for (const x of lbPeers(p)) lines.push(`  no neighbor ${x.v6} activate`);
    lines.push(' exit-address-family');
  }
  lines.push('route-map DENY_ALL deny 10');
  return lines.join('\n') + '\n';
}

/** nginx on a backend: one worker, a fixed small response naming the backend, on every address (incl. VIPs on lo). */
export function renderBackendNginx(o: { name: string; port: number; dir: string }): string {
  return [
    `# Backend ${o.name}: generated, do not edit.`,
    'worker_processes 1;',
    'daemon on;',
    `pid ${o.dir}/nginx.pid;`,
    `error_log ${o.dir}/nginx-error.log warn;`,
    'events { worker_connections 8192; }',
    'http {',
    '  access_log off;',
    '  keepalive_requests 1000000;',
    `  client_body_temp_path ${o.dir}/tmp;`,
    `  proxy_temp_path ${o.dir}/tmp;`,
    `  fastcgi_temp_path ${o.dir}/tmp;`,
    `  uwsgi_temp_path ${o.dir}/tmp;`,
    `  scgi_temp_path ${o.dir}/tmp;`,
    '  server {',
    `    listen ${o.port} reuseport backlog=4096;`,
    `    listen [::]:${o.port} reuseport backlog=4096;`,
    '    default_type text/plain;',
    `    location / { return 200 "${o.name}\\n"; }`,
    '  }',
    '}',
    '',
  ].join('\n');
}
