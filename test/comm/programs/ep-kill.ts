// A rank dies in the middle of an EP dispatch: every rank loops over a2a-style dispatches (all_to_all_v of uneven
// rows) on an "ep" group split from the world; at iteration `atIter` the victim issues its all_to_all_v and then,
// with the collective in flight, throws ('throw') or is killed by SIGKILL ('sigkill'). Used on the ccl transport.
import type { RankContext } from '../../../src/comm/launch.ts';

export interface EpKillArgs {
  mode: 'throw' | 'sigkill';
  victim: number;
  atIter: number;
  iters: number;
}

export async function rankMain(ctx: RankContext<EpKillArgs>): Promise<number> {
  const ep = await ctx.world.split(0, ctx.rank, 'ep');
  const P = ep.size;
  const D = 64;
  for (let it = 0; it < ctx.args.iters; it++) {
    const sendCounts = Array.from({ length: P }, (_, j) => D * (1 + ((ep.rank + j + it) % 3)));
    const recvCounts = Array.from({ length: P }, (_, i) => D * (1 + ((i + ep.rank + it) % 3)));
    const send = new Float32Array(sendCounts.reduce((a, b) => a + b, 0)).fill(ep.rank);
    const recv = new Float32Array(recvCounts.reduce((a, b) => a + b, 0));
    const p = ep.allToAllV(send, sendCounts, recv, recvCounts, { tag: `dispatch ${it}` });
    if (ctx.rank === ctx.args.victim && it === ctx.args.atIter) {
      if (ctx.args.mode === 'sigkill') process.kill(process.pid, 'SIGKILL');
      p.catch(() => {});
      throw new Error(`injected failure on rank ${ctx.rank} in dispatch ${it}`);
    }
    await p;
  }
  return ctx.args.iters;
}
