// Rank program for the threads failure tests: a loop of small collectives in which one rank misbehaves at a
// chosen iteration. Modes: 'exit' (process.exit(3) before a collective), 'exit0' (process.exit(0): under MPI this
// must not pass for success), 'throw', 'hang' (stops calling
// collectives but stays responsive), 'busy' (spins in JavaScript, unresponsive to its control port),
// 'mismatch' (calls all_reduce where the others call all_gather), 'none' (everyone behaves; with `pauseMs` the
// loop is slow enough for a test to terminate a worker mid-run).

import type { RankContext } from '../../../src/comm/launch.ts';

export interface FaultArgs {
  mode: 'none' | 'exit' | 'exit0' | 'throw' | 'hang' | 'busy' | 'mismatch';
  victim: number;
  atIter: number;
  iters: number;
  pauseMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function rankMain(ctx: RankContext<FaultArgs>): Promise<{ iters: number }> {
  const { mode, victim, atIter, iters, pauseMs = 0 } = ctx.args;
  const w = ctx.world;
  const send = new Float32Array(4).fill(ctx.rank);
  const recv = new Float32Array(4 * ctx.size);
  for (let i = 0; i < iters; i++) {
    if (ctx.rank === victim && i === atIter) {
      switch (mode) {
        case 'exit':
          process.exit(3);
          break;
        case 'exit0':
          process.exit(0);
          break;
        case 'throw':
          throw new Error(`injected failure on rank ${ctx.rank} at iteration ${i}`);
        case 'hang':
          await sleep(600_000);
          break;
        case 'busy':
          for (;;) {
            // Spins without yielding: the control port cannot answer.
          }
        case 'mismatch':
          await w.allReduce(new Float32Array(4), { op: 'sum' });
          continue;
      }
    }
    await w.allGather(send, recv, { tag: `iter ${i}` });
    for (let r = 0; r < ctx.size; r++)
      if (recv[4 * r] !== r) throw new Error(`iteration ${i}: wrong data from rank ${r}`);
    if (pauseMs) await sleep(pauseMs);
  }
  await w.barrier();
  return { iters };
}
