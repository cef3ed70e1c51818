// Before any rank starts: will this host hold the run? The planner's memory per rank times the ranks this host
// runs, against the memory the host has available (MemAvailable), and a ceiling on inproc/threads ranks per host.
// A run that cannot fit otherwise starts, allocates for minutes and dies in the OOM killer or swaps the machine to
// a halt; 1000 inproc ranks run for minutes before failing inside megabytes of output. Both are refusable with
// --skip-resource-check (a host with swap, a planner estimate known to be pessimistic).

import { readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import type { Plan } from '../protocols/planner.ts';
import type { TransportName } from '../comm/launch.ts';
import { ConfigError } from './job-config.ts';

export const SKIP_RESOURCE_CHECK_FLAG = '--skip-resource-check';

/**
 * Ranks one host runs in one process. inproc: every rank on one event loop, one after another (N ranks make each
 * step N times slower and share one V8 heap); threads: a worker with its own V8 isolate (tens of MB before any
 * tensor) per rank. Past 64 either is a simulation no laptop finishes; MPI ranks are processes, placed by mpiexec.
 */
export const MAX_RANKS_PER_HOST: Readonly<Record<'inproc' | 'threads', number>> = { inproc: 64, threads: 64 };

/** What a rank costs beyond the planned tensors: a worker's V8 isolate and runtime, an MPI rank's whole process. */
const RANK_OVERHEAD_BYTES: Readonly<Record<string, number>> = { inproc: 8 << 20, threads: 48 << 20, mpi: 96 << 20 };
/** A transport not listed above runs each rank as its own process, as mpi does. */
const overheadOf = (t: TransportName) => RANK_OVERHEAD_BYTES[t] ?? RANK_OVERHEAD_BYTES.mpi!;

/** Memory the host can give without swapping: /proc/meminfo MemAvailable (Linux), else os.freemem(). */
export function availableMemoryBytes(): number {
  try {
    const m = /^MemAvailable:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // Not Linux.
  }
  return freemem();
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/** Throws a ConfigError naming the limit, the numbers and the fixes; returns quietly when the run fits. */
export function checkResources(o: {
  plan: Plan;
  transport: TransportName;
  ranksOnHost: number;
  availableBytes?: number;
}): void {
  const { plan, transport, ranksOnHost } = o;
  if (transport === 'inproc' || transport === 'threads') {
    const max = MAX_RANKS_PER_HOST[transport];
    if (ranksOnHost > max) {
      const why =
        transport === 'inproc'
          ? 'inproc runs every rank on one event loop, one after another'
          : 'threads gives every rank a worker thread with its own V8 heap';
      throw new ConfigError(
        `${ranksOnHost} ${transport} ranks on one host is more than the ${max} allowed: ${why}, so a step takes ~${ranksOnHost}× a rank's time. ` +
          `Use fewer ranks (--ranks), the mpi transport across hosts, or ${SKIP_RESOURCE_CHECK_FLAG} to start anyway`,
      );
    }
  }
  const avail = o.availableBytes ?? availableMemoryBytes();
  const perRank = plan.memory.total + overheadOf(transport);
  const need = perRank * ranksOnHost;
  if (need > avail) {
    throw new ConfigError(
      `the plan needs ${gib(plan.memory.total)} per rank (+ ${gib(overheadOf(transport))} runtime) × ${ranksOnHost} rank${ranksOnHost === 1 ? '' : 's'} on this host = ${gib(need)}, ` +
        `but the host has ${gib(avail)} available: lower [training] seq_len or local_batch_size, use more activation checkpointing or fewer ranks per host, ` +
        `or pass ${SKIP_RESOURCE_CHECK_FLAG} to start anyway (see \`moe-actors plan\` for the breakdown)`,
    );
  }
}
