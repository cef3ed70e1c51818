// A rank program whose step waits on a stage that never settles (as a dropped protocol event would make it):
// the RankHost watchdog must fail the step with the states the machines are in.
import type { RankContext } from '../../../src/comm/launch.ts';
import { RankHost, type RankJob } from '../../../src/actors/rank-host.ts';

export async function rankMain(
  ctx: RankContext<{ job: RankJob; tokens: Int32Array; labels: Int32Array; B: number; S: number }>,
): Promise<string> {
  const a = ctx.args;
  const host = await RankHost.create(ctx.world, a.job);
  try {
    if (ctx.rank === 0) {
      // Rank 0 loses the UNSHARD of block 0's forward: its unshard never settles.
      host.shards.get('layers.0')!.unshard = () => new Promise<void>(() => {});
    }
    await host.step([{ tokens: a.tokens, labels: a.labels, B: a.B, S: a.S }]);
    return 'finished';
  } finally {
    await host.close().catch(() => {});
  }
}
