// Running one program on N ranks, whatever the transport. The code above (trainer, `grad`, tests) writes a rank
// program once — a module exporting `rankMain` — and chooses where ranks live:
//   inproc  — N async tasks on this event loop (deterministic, seeded; fault injection);
//   threads — N worker threads of this process (SharedArrayBuffer collectives);
//   mpi     — this process is one rank of an `mpiexec.mpich -n N` job;
//   ccl     — the same, with oneCCL carrying the collectives (MPI bootstraps it).

import type { ProfileName } from './capabilities.ts';
import type { Communicator } from './communicator.ts';
import type { FlightDump, FlightRecorder } from './flight-recorder.ts';

export type TransportName = 'inproc' | 'threads' | 'mpi' | 'ccl';
export const TRANSPORTS: readonly TransportName[] = ['inproc', 'threads', 'mpi', 'ccl'];

/** Transports whose ranks are the processes of an MPI job (mpiexec decides the world size). */
export function isMpiJobTransport(t: string): t is 'mpi' | 'ccl' {
  return t === 'mpi' || t === 'ccl';
}

/** Faults the inproc transport can inject (protocol and hang tests). Ranks are world ranks. */
export type Fault =
  /** Rank `rank` arrives `ms` later at every collective (or only at #`atSeq` of `group`). */
  | { kind: 'delay'; rank: number; ms: number; group?: string; atSeq?: number }
  /** Rank `rank` dies when it issues collective #`atSeq` on `group` (default "world"): it never arrives. */
  | { kind: 'kill'; rank: number; atSeq: number; group?: string }
  /** Rank `rank` issues a different op at #`atSeq` on `group`. */
  | { kind: 'mismatch-op'; rank: number; atSeq: number; group?: string }
  /** Rank `rank` contributes `delta` more elements at #`atSeq` on `group` (no effect on a barrier, which has no size). */
  | { kind: 'mismatch-size'; rank: number; atSeq: number; delta: number; group?: string };

export interface WorldOptions {
  transport: TransportName;
  /** Number of ranks (ignored under mpi and ccl, where mpiexec decides). */
  size: number;
  profile?: ProfileName;
  /** Default per-collective timeout. */
  timeoutMs?: number;
  /** inproc: seed of the arrival scheduler. */
  seed?: number;
  /** inproc: injected faults. */
  faults?: Fault[];
  /**
   * inproc and threads: aborting it stops the run — every rank's pending and later collectives fail, naming the
   * reason — so an interrupted run still reports where each rank was (mpi ranks handle SIGINT themselves).
   */
  signal?: AbortSignal;
  /** Ranks per node, for 'single-node' capabilities (default: all ranks on one node; mpi asks MPI). */
  ranksPerNode?: number;
  /** Flight recorder ring size per rank. */
  flightEntries?: number;
  /** Directory where each rank writes its flight dump on a collective failure (none if unset). */
  dumpDir?: string;
}

/** What a rank program receives. */
export interface RankContext<A> {
  rank: number;
  size: number;
  world: Communicator;
  recorder: FlightRecorder;
  transport: TransportName;
  args: A;
}

/** A rank program: the module at `RankEntry.module` exports `rankMain` of this type. */
export type RankMain<A, R> = (ctx: RankContext<A>) => Promise<R>;

export interface RankEntry {
  /** Absolute file path or file: URL of a .ts/.js module exporting `rankMain`. */
  module: string;
  /** Export name, default "rankMain". */
  exportName?: string;
}

/** Per-rank outcome: results of ranks that finished, errors (with flight dumps) of those that failed. */
export type RankOutcome<R> =
  | { rank: number; ok: true; value: R }
  | { rank: number; ok: false; error: string; dump?: FlightDump };

export interface LaunchResult<R> {
  outcomes: RankOutcome<R>[];
  /** When some rank failed: the cross-rank diagnosis ("rank 2 is in all_gather #57 on group ep, …"). */
  diagnosis?: string;
  /** About the run itself, failed or not (inproc: injected faults that never took effect, and why). */
  remarks?: string[];
}

/**
 * "<what> failed on ranks 1, 3: <first line of the cause>", then the diagnosis; null when every rank finished.
 * One wording for every command that launches ranks, so failures read the same in each. The cause is the first
 * rank that failed on its own — outside any collective, e.g. a missing file or a bad value — when there is one:
 * the others' errors ("all_reduce #1 on group batch failed: rank 1 freed group batch") are its consequences.
 * Otherwise (a timeout, a dead peer, a mismatch) the first failed rank's error.
 */
export function launchFailure(what: string, result: LaunchResult<unknown>): string | null {
  const failed = result.outcomes.filter((o): o is Extract<RankOutcome<unknown>, { ok: false }> => !o.ok);
  if (!failed.length) return null;
  const own = (o: (typeof failed)[number]) => o.dump !== undefined && !o.dump.entries.some((e) => e.state === 'failed');
  const first = failed.find(own) ?? failed[0]!;
  return `${what} failed on rank${failed.length > 1 ? 's' : ''} ${failed.map((f) => f.rank).join(', ')}: ${first.error.split('\n')[0]}${result.diagnosis ? `\n${result.diagnosis}` : ''}`;
}

/**
 * The MPI job this process belongs to (Hydra's PMI variables, or Open MPI's), or null when it was not started by
 * mpiexec. Read from the environment, so a launcher can tell its rank and world size before loading MPI.
 */
export function mpiJob(): { rank: number; size: number } | null {
  const size = Number(process.env.PMI_SIZE ?? process.env.OMPI_COMM_WORLD_SIZE ?? NaN);
  if (!Number.isInteger(size) || size < 1) return null;
  const rank = Number(process.env.PMI_RANK ?? process.env.OMPI_COMM_WORLD_RANK ?? 0);
  return { rank, size };
}

/**
 * Runs `entry` on every rank of a new world and waits for all of them. Under mpi, runs only this process's rank
 * and returns its single outcome. Never hangs: a rank that dies or stalls makes the others fail within their
 * timeouts, and the result says who waited for whom.
 */
export async function launch<A, R>(opts: WorldOptions, entry: RankEntry, args: A): Promise<LaunchResult<R>> {
  switch (opts.transport) {
    case 'inproc': {
      const m = await import('./inproc/launch.ts');
      return m.launchInproc<A, R>(opts, entry, args);
    }
    case 'threads': {
      const m = await import('./threads/launch.ts');
      return m.launchThreads<A, R>(opts, entry, args);
    }
    case 'mpi': {
      const m = await import('./mpi/launch.ts');
      return m.launchMpi<A, R>(opts, entry, args);
    }
    case 'ccl': {
      const m = await import('./ccl/launch.ts');
      return m.launchCcl<A, R>(opts, entry, args);
    }
    default:
      throw new Error(`unknown transport "${(opts as WorldOptions).transport}"; use one of ${TRANSPORTS.join(', ')}`);
  }
}
