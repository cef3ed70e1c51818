// Rank program for the clock tests on real transports: each rank records the instant it leaves a barrier (`exits`
// barriers, one event each, `step` = the barrier's index) on its own (optionally skewed) clock into
// <dir>/events/rank-<r>.jsonl, aligns the recorder, and returns its offset.
import type { Communicator } from '../../src/comm/communicator.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { alignRecorderClock, type ClockOffset } from '../../src/trace/clock.ts';
import { TraceRecorder } from '../../src/trace/recorder.ts';
import { runPaths } from '../../src/trace/run-dir.ts';

/** Leaves a barrier and reads the clock at once. */
async function barrierNow(comm: Communicator, now: () => number): Promise<number> {
  await comm.barrier();
  return now();
}

export interface ClockArgs {
  dir: string;
  /** Per-rank skew added to the clock, ms. */
  skew: number[];
  /** Barriers to leave and record (default 1). */
  exits?: number;
}

export async function rankMain(ctx: RankContext<ClockArgs>): Promise<ClockOffset> {
  // The base is CLOCK_MONOTONIC (process.hrtime), which every process on a host reads identically, so the true
  // offset is exactly the injected skew. The recorder's own clock, performance.timeOrigin + now(), maps each
  // process's monotonic clock to wall time once at its start, and two processes' mappings differ by up to ~1 ms:
  // a CI run measured 0.60 ms beyond a 0.056 ms uncertainty against that base — a difference of bases that the
  // estimate saw correctly, not an estimation error.
  const now = () => Number(process.hrtime.bigint()) / 1e6 + ctx.args.skew[ctx.rank]!;
  const rec = new TraceRecorder({
    rank: ctx.rank,
    file: runPaths(ctx.args.dir).rankEvents(ctx.rank),
    flushIntervalMs: 0,
  });
  const off = await alignRecorderClock(ctx.world, rec, { now, rounds: 10 });
  // All ranks leave each barrier "together": each records that instant on its own clock.
  for (let i = 0; i < (ctx.args.exits ?? 1); i++) {
    const t = await barrierNow(ctx.world, now);
    rec.record({
      kind: 'state',
      rank: ctx.rank,
      actor: 'step',
      machine: 'clock',
      state: 'afterBarrier',
      category: 'other',
      phase: 'enter',
      t,
      step: i,
      layer: null,
      microbatch: null,
    });
  }
  rec.close();
  return off;
}
