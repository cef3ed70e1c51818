// Putting every rank's events on rank 0's clock. Threads (and inproc) share one clock; MPI ranks on different
// hosts do not, and a 1 ms skew already turns a timeline of 1 ms collectives into nonsense.
//
// Method (bounds from causality, using only collectives the communicator has): in each round every rank reads
// its clock (a), enters a barrier, and reads it again when the barrier returns (b). No rank leaves a barrier before
// every rank entered it, so in real time a_i < b_j for every pair i, j. With δ_i = clock_i − clock_0:
//     a_i − δ_i < b_0   and   a_0 < b_i − δ_i      ⇒      a_i − b_0 < δ_i < b_i − a_0.
// The tightest bounds over all rounds give an interval; its midpoint is the estimate and its half-width an honest
// uncertainty (typically a few µs on one host, tens of µs across a network). Drift over a run is not modelled:
// re-estimate at the end and compare if a run is long.

import type { Communicator } from '../comm/communicator.ts';
import { nowMs } from '../comm/flight-recorder.ts';
import type { TraceRecorder } from './recorder.ts';

export interface ClockOffset {
  /** Rank within the communicator. */
  rank: number;
  /** This rank's clock minus rank 0's, ms: aligned t = t − offsetMs. */
  offsetMs: number;
  /** Half-width of the interval the offset is known to lie in, ms. */
  uncertaintyMs: number;
  rounds: number;
}

export interface ClockOptions {
  /** Timed rounds after `warmup` untimed ones (default 16, 2). */
  rounds?: number;
  warmup?: number;
  /** The clock to align (default the one events use). Injectable for tests. */
  now?: () => number;
}

/** One synchronisation point: barrier if the backend has one, else a 1-element all_gather. */
async function sync(comm: Communicator): Promise<void> {
  if (comm.capabilities.barrier) return comm.barrier({ tag: 'trace clock sync' });
  const one = new Float64Array(1);
  return comm.allGather(one, new Float64Array(comm.size), { tag: 'trace clock sync' });
}

/**
 * Collective over `comm`: every rank gets its own offset to rank 0 (and could read everyone's). Call it once
 * before training on the world communicator, then `recorder.setClockOffset(offsetMs, uncertaintyMs)`.
 */
export async function estimateClockOffset(comm: Communicator, opts: ClockOptions = {}): Promise<ClockOffset> {
  const all = await estimateClockOffsets(comm, opts);
  return all[comm.rank]!;
}

/** Like estimateClockOffset, but returns every rank's offset (indexed by group rank), identical on all ranks. */
export async function estimateClockOffsets(comm: Communicator, opts: ClockOptions = {}): Promise<ClockOffset[]> {
  const rounds = opts.rounds ?? 16;
  const warmup = opts.warmup ?? 2;
  const now = opts.now ?? nowMs;
  if (rounds < 1) throw new Error(`estimateClockOffsets: rounds must be ≥ 1 (got ${rounds})`);
  for (let i = 0; i < warmup; i++) await sync(comm);
  const mine = new Float64Array(2 * rounds);
  for (let k = 0; k < rounds; k++) {
    mine[2 * k] = now();
    await sync(comm);
    mine[2 * k + 1] = now();
  }
  const all = new Float64Array(2 * rounds * comm.size);
  await comm.allGather(mine, all, { tag: 'trace clock exchange' });
  return offsetsFromSamples(all, comm.size, rounds);
}

/** The interval arithmetic of the header, on the gathered (a, b) samples: [rank][round][a, b]. */
export function offsetsFromSamples(samples: Float64Array, size: number, rounds: number): ClockOffset[] {
  const a = (r: number, k: number) => samples[(r * rounds + k) * 2]!;
  const b = (r: number, k: number) => samples[(r * rounds + k) * 2 + 1]!;
  const out: ClockOffset[] = [];
  for (let i = 0; i < size; i++) {
    let lo = -Infinity;
    let hi = Infinity;
    for (let k = 0; k < rounds; k++) {
      lo = Math.max(lo, a(i, k) - b(0, k));
      hi = Math.min(hi, b(i, k) - a(0, k));
    }
    if (!(lo <= hi)) {
      throw new Error(
        `clock alignment: empty interval for rank ${i} (lo ${lo}, hi ${hi}); the clock is not monotonic or the sync did not synchronise`,
      );
    }
    out.push({ rank: i, offsetMs: i === 0 ? 0 : (lo + hi) / 2, uncertaintyMs: i === 0 ? 0 : (hi - lo) / 2, rounds });
  }
  return out;
}

/**
 * Collective: estimates this rank's offset and writes it into the recorder's file, where loadRun applies it to
 * every event of the rank. Call once on the world communicator after the recorder is created (mpi; harmless,
 * and ≈ 0, on inproc and threads, whose ranks share a clock).
 */
export async function alignRecorderClock(
  comm: Communicator,
  recorder: TraceRecorder,
  opts: ClockOptions = {},
): Promise<ClockOffset> {
  const o = await estimateClockOffset(comm, opts);
  recorder.setClockOffset(o.offsetMs, o.uncertaintyMs);
  return o;
}
