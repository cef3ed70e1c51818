// The rank program of `moe-actors probe` (run on every rank by launch()): probe every collective once on the world
// communicator and return the report with what the printer needs to know about the group.
import type { RankContext } from '../comm/launch.ts';
import { probe, type ProbeReport } from '../comm/probe.ts';

export interface ProbeRankArgs {
  timeoutMs: number;
}

export interface ProbeRankResult {
  rank: number;
  backend: string;
  /** Whether the world spans several nodes (decides a 'single-node' PREMUL_SUM). */
  multiNode: boolean;
  report: ProbeReport;
}

export async function rankMain(ctx: RankContext<ProbeRankArgs>): Promise<ProbeRankResult> {
  const report = await probe(ctx.world, { timeoutMs: ctx.args.timeoutMs });
  return { rank: ctx.rank, backend: ctx.world.backend, multiNode: !!ctx.world.multiNode, report };
}
