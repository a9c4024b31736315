// glibc's mmap threshold, fixed for the daemon's process (its start's large blocks go back to the kernel when freed).
import { native } from '../datapath/native';

/**
 * Blocks of this size and more are mapped on their own and unmapped when freed (glibc's initial threshold, kept
 * fixed). glibc raises its threshold to the size of the first large mapped block freed (seen with gdb in the
 * daemon at 512 x 100: 11.9 MB within 0.3 s of its start, the config's text), and from then on 256 KiB Maglev table
 * buffers came out of the table workers' malloc arenas and stayed resident there: at 512 x 100, RSS 175 MB at ready (health checks
 * on) against 130 MB with this and the start's collection (Daemon: trimMemory({ collect: true })).
 */
export const MALLOC_MMAP_THRESHOLD = 128 << 10;

/**
 * Fixes glibc's mmap threshold at MALLOC_MMAP_THRESHOLD (mallopt M_MMAP_THRESHOLD). First thing in a daemon process,
 * before any large block is freed: the daemon command calls it before it reads the config file (the read's buffer is
 * such a block), and the daemon's start again (Collaborators.fixMallocThreshold). Called only by the start, after the early read,
 * RSS at ready at 512 x 100 was 102-107 MB against 97-100 MB (nine A B pairs); called first, 97-99 MB.
 */
export function fixMallocThreshold(): void {
  native().mallocMmapThreshold(MALLOC_MMAP_THRESHOLD);
}
