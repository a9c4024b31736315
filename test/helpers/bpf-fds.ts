// Open BPF map fds of this process, to show a call leaves none behind (a leaked inner map keeps its memory).
import { readdirSync, readlinkSync } from 'node:fs';

export function openBpfMapFds(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:bpf-map';
    } catch {
      return false; // closed since the listing
    }
  }).length;
}
