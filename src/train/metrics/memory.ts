// Memory per rank. torchtitan reports the CUDA caching allocator's peaks; our equivalent of max_active is the
// tracked peak of the rank's Allocator (params, grads, optimizer, activations, comm, other — every long-lived
// buffer is allocated through it), reset after each log as torchtitan resets its peaks. Process RSS is reported
// too: it includes V8's heap and, under the threads transport, every rank of the process. Percentages are of the
// machine's total memory (os.totalmem()), the counterpart of torchtitan's device memory.

import { totalmem } from 'node:os';
import type { Category, MemoryStats } from '../../tensor/allocator.ts';

export const GIB = 2 ** 30;

export interface MemorySnapshot {
  /** Tracked peak bytes of the rank since the last reset (all categories together). */
  peakBytes: number;
  peakByCategory: Record<Category, number> | null;
  liveBytes: number;
  /** Current resident set of the process. */
  rssBytes: number;
  /** Peak resident set of the process since it started (getrusage). */
  maxRssBytes: number;
  totalBytes: number;
  /** V8 heap in use by this rank's isolate (a worker thread has its own), and ArrayBuffer bytes outside it. */
  heapUsedBytes: number;
  arrayBuffersBytes: number;
}

export function memorySnapshot(stats?: MemoryStats, totalBytes: number = totalmem()): MemorySnapshot {
  const rss = process.memoryUsage.rss();
  const mu = process.memoryUsage();
  const maxRss = process.resourceUsage().maxRSS * 1024; // kilobytes on Linux
  return {
    peakBytes: stats ? stats.peakTotal : rss,
    peakByCategory: stats ? { ...stats.peak } : null,
    liveBytes: stats ? stats.liveTotal : rss,
    rssBytes: rss,
    maxRssBytes: maxRss,
    totalBytes,
    heapUsedBytes: mu.heapUsed,
    arrayBuffersBytes: mu.arrayBuffers,
  };
}

export function gib(bytes: number): number {
  return bytes / GIB;
}

export function pctOf(bytes: number, total: number): number {
  return total > 0 ? (100 * bytes) / total : 0;
}
