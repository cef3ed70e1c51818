// When and how a rank saves a checkpoint, torchtitan's `[checkpoint] async_mode`:
//
//   disabled  every rank writes its files on the training path, a barrier, rank 0 commits (manifest last), a
//             barrier: the step waits for the disk.
//   async     every rank copies its state into staging buffers (StagingArena) and hands them to the side pool,
//             which serializes, hashes and writes the rank's files while the rank trains on; rank 0 commits once
//             every rank's done marker is there (the same manifest-last protocol). The next checkpoint and the
//             end of the run wait for the previous one to be committed (so a kill at any moment leaves the
//             previous checkpoint complete); a failed write fails the run at the next step, naming the file.
//
// keep_latest_k prunes right after a commit, so it only ever removes committed checkpoints (and partial ones
// older than the newest committed): the write in flight is always newer.

import { appendFileSync, rmSync } from 'node:fs';
import type { Communicator } from '../comm/communicator.ts';
import type { RankCheckpointState, StageCopy } from './rank-checkpoint.ts';
import {
  listCheckpoints,
  StagingArena,
  stepDir,
  waitForCommit,
  waitForRankFiles,
  writeRankShard,
} from './checkpoint/index.ts';
import type { SidePool } from './pool/pool.ts';

export type AsyncMode = 'disabled' | 'async';

export interface SaverOptions {
  mode: AsyncMode;
  folder: string;
  rank: number;
  worldSize: number;
  world: Communicator;
  /** The process's side pool (async mode). */
  pool: SidePool | null;
  /** Bound on the checkpoint barriers and on rank 0's wait for the other ranks' files. */
  ioTimeoutMs: number;
  /** Rank 0: write the manifest (and prune); called once every rank's files are in `dir`. */
  commit: (dir: string, step: number) => void;
  /**
   * Appends one JSON line per finished checkpoint of this rank (report.html's checkpoint chart): unlike the
   * metrics record of the next step, it also holds the run's last checkpoint.
   */
  timesFile?: string;
}

/** How long the last checkpoint took, for the metrics: on the training path and in all. */
export interface SaveTimes {
  step: number;
  /** The rank waited this long (staging and waiting for the previous write, or the whole sync write). */
  blockedMs: number;
  /** From the start of the write to its commit (async: measured in the background). */
  writeMs: number;
}

export class CheckpointSaver {
  private pending: Promise<void> | null = null;
  private failure: Error | null = null;
  private readonly arena = new StagingArena();
  private times: SaveTimes[] = [];
  private readonly stopper = new AbortController();

  constructor(private readonly o: SaverOptions) {
    if (o.mode === 'async' && !o.pool) throw new Error('CheckpointSaver: async_mode = "async" needs the side pool');
    // The pool thread's start-up (loading the TypeScript writer) overlaps the first steps instead of the first write.
    if (o.mode === 'async') o.pool!.run({ kind: 'warm' }).catch(() => {});
  }

  /**
   * Before the first write of a resumed async run: rank 0 removes partial step folders newer than the resume point.
   * Their done markers come from a killed run and would let the commit of a rewritten step list files that are
   * about to be replaced. No other rank writes before rank 0 has taken part in the next step, so this is ordered
   * before any new marker.
   */
  clearStalePartials(resumeStep: number, log: (m: string) => void): void {
    if (this.o.mode !== 'async' || this.o.rank !== 0) return;
    for (const p of listCheckpoints(this.o.folder, { verify: 'size' }).partial) {
      if (p.step <= resumeStep) continue;
      rmSync(p.dir, { recursive: true, force: true });
      log(`checkpoint: removed the partial ${p.dir} (${p.reason}) before writing again`);
    }
  }

  /** Throws the error of a background write that failed (called every step). */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Timings of checkpoints finished since the last call. */
  takeTimes(): SaveTimes[] {
    const t = this.times;
    this.times = [];
    return t;
  }

  async save(step: number, capture: (copy?: StageCopy) => RankCheckpointState): Promise<void> {
    const t0 = performance.now();
    const dir = stepDir(this.o.folder, step);
    if (this.o.mode === 'disabled') {
      const state = capture();
      writeRankShard(dir, this.o.rank, { tensors: state.tensors, slices: state.slices, extras: state.extras });
      await this.o.world.barrier({ tag: `checkpoint ${step}`, timeoutMs: this.o.ioTimeoutMs });
      if (this.o.rank === 0) this.o.commit(dir, step);
      await this.o.world.barrier({ tag: `checkpoint ${step} committed`, timeoutMs: this.o.ioTimeoutMs });
      const ms = performance.now() - t0;
      this.record({ step, blockedMs: ms, writeMs: ms });
      return;
    }
    await this.waitPrevious();
    this.arena.begin();
    let state: RankCheckpointState;
    try {
      state = capture(this.arena.copy);
    } catch (e) {
      this.arena.end();
      throw e;
    }
    const blockedMs = performance.now() - t0;
    const { rank, worldSize, pool } = this.o;
    const write = async () => {
      try {
        await pool!.run({
          kind: 'write-shard',
          dir,
          rank,
          tensors: [...state.tensors],
          slices: state.slices,
          extras: state.extras,
        });
      } catch (e) {
        throw new Error(`checkpoint step ${step}: rank ${rank}'s async write failed: ${(e as Error).message}`);
      } finally {
        this.arena.end();
      }
      if (rank === 0) {
        await waitForRankFiles(dir, worldSize, { timeoutMs: this.o.ioTimeoutMs, signal: this.stopper.signal });
        this.o.commit(dir, step);
      } else {
        await waitForCommit(dir, { timeoutMs: this.o.ioTimeoutMs, signal: this.stopper.signal });
      }
      this.record({ step, blockedMs, writeMs: performance.now() - t0 });
    };
    const p = write();
    p.catch((e: Error) => {
      this.failure ??= e;
    });
    this.pending = p;
  }

  private record(t: SaveTimes): void {
    this.times.push(t);
    if (this.o.timesFile) {
      appendFileSync(
        this.o.timesFile,
        JSON.stringify({
          step: t.step,
          rank: this.o.rank,
          mode: this.o.mode,
          blocked_ms: t.blockedMs,
          write_ms: t.writeMs,
        }) + '\n',
      );
    }
  }

  private async waitPrevious(): Promise<void> {
    const p = this.pending;
    this.pending = null;
    if (p) await p;
    this.check();
  }

  /** The rank failed: stop waiting for other ranks' files or the commit (a running pool write still finishes). */
  abandon(): void {
    this.stopper.abort(new Error('the rank stopped before this checkpoint was committed'));
  }

  /**
   * End of the run: this rank's last write is on disk, and (after the barrier) every rank's, and rank 0 has
   * committed the last checkpoint.
   */
  async finish(): Promise<void> {
    if (this.o.mode === 'disabled') return;
    await this.waitPrevious();
    await this.o.world.barrier({ tag: 'last async checkpoint committed', timeoutMs: this.o.ioTimeoutMs });
  }
}
