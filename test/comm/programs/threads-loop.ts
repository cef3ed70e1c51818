// Does a rank's event loop keep turning while it waits in a collective? Rank 1 arrives `lateMs` late at an
// all_gather; every rank counts the ticks of a 10 ms interval during its wait. A blocking wait (Atomics.wait, or a
// busy MPI_Wait) would give rank 0 no ticks.

import type { RankContext } from '../../../src/comm/launch.ts';

export async function rankMain(ctx: RankContext<{ lateMs: number }>): Promise<{ ticks: number; waitedMs: number }> {
  // Align first: ranks start at different times (worker or process start-up), which would eat the delay.
  await ctx.world.barrier();
  if (ctx.rank === 1) await new Promise((r) => setTimeout(r, ctx.args.lateMs));
  let ticks = 0;
  const iv = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  const recv = new Float64Array(2 * ctx.size);
  await ctx.world.allGather(new Float64Array([ctx.rank, 1]), recv);
  const waitedMs = performance.now() - t0;
  clearInterval(iv);
  for (let r = 0; r < ctx.size; r++) if (recv[2 * r] !== r) throw new Error(`wrong all_gather result from rank ${r}`);
  return { ticks, waitedMs };
}
