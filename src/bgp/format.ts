// Text rendering of BgpSpeaker.status() for `peak-xdp bgp` (the --json form prints the object itself).
import { SpeakerStatus } from './speaker';

function ago(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/** Sessions table, then what is announced to whom, then errors. */
export function formatBgpStatus(st: SpeakerStatus, now: number = Date.now()): string {
  const rows = [['PEER', 'ASN', 'STATE', 'FOR', 'HOLD', 'SENT', 'RCVD', 'UPDATES OUT/IN']];
  for (const p of st.peers)
    rows.push([
      p.peer,
      String(p.peerAsn),
      p.state,
      ago(p.stateSince, now),
      p.negotiatedHoldTime === null ? '-' : `${p.negotiatedHoldTime}s`,
      String(p.announced.length),
      String(p.receivedPrefixes),
      `${p.messagesOut.update}/${p.messagesIn.update}`,
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
  const lines = [
    `BGP AS ${st.asn}, router id ${st.routerId}${st.draining ? ' (draining: GRACEFUL_SHUTDOWN)' : ''}`,
    ...table,
    '',
  ];
  for (const p of st.peers) {
    lines.push(`${p.peer}: ${p.announced.length ? p.announced.join(', ') : '(nothing announced)'}`);
    for (const s of p.skipped) lines.push(`  not sent ${s.prefix}: ${s.reason}`);
    if (p.lastError) lines.push(`  last error: ${p.lastError}`);
  }
  return lines.join('\n');
}
