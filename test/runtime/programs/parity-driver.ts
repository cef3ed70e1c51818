// A rank program for parity runs over MPI (test/runtime/parity-transports.test.ts): started by
// `mpiexec.mpich -n N node src/comm/mpi/run.mjs --module <this file> --args <json>` (spawnMpi → launchMpi), it runs
// several parity cases one after another in the same MPI job — each through the distributed-run program
// (src/actors/programs/distributed-run.ts: a RankHost on a fresh mesh, `steps` optimizer steps on the global
// batch, full parameters gathered to rank 0) — and rank 0 writes every case's losses, grad norms, learning rates
// and full parameters as JSON to `out`. Arguments come as JSON (arrays instead of typed arrays); float32 values
// survive the JSON round trip exactly (every float32 is a double with a short exact decimal form).

import { writeFileSync } from 'node:fs';
import type { RankContext } from '../../../src/comm/launch.ts';
import type { RankJob } from '../../../src/actors/rank-host.ts';
import { rankMain as distributedRun } from '../../../src/actors/programs/distributed-run.ts';

export interface ParityCaseJson {
  name: string;
  job: RankJob;
  tokens: number[];
  labels: number[];
  B: number;
  S: number;
  microbatches: number;
  steps: number;
}

export interface ParityDriverArgs {
  cases: ParityCaseJson[];
  /** JSON file rank 0 writes: ParityCaseResult[]. */
  out: string;
}

export interface ParityCaseResult {
  name: string;
  worldSize: number;
  losses: number[];
  gradNorms: number[];
  lrs: number[];
  params: Record<string, number[]>;
  ms: number;
}

export async function rankMain(ctx: RankContext<ParityDriverArgs>): Promise<{ rank: number; cases: number }> {
  const out: ParityCaseResult[] = [];
  for (const c of ctx.args.cases) {
    const t0 = performance.now();
    const r = await distributedRun({
      ...ctx,
      args: {
        job: c.job,
        tokens: Int32Array.from(c.tokens),
        labels: Int32Array.from(c.labels),
        B: c.B,
        S: c.S,
        microbatches: c.microbatches,
        mode: 'train',
        steps: c.steps,
      },
    });
    if (ctx.rank === 0) {
      const params = Object.fromEntries(Object.entries(r.tensors!).map(([k, v]) => [k, Array.from(v.data)]));
      out.push({
        name: c.name,
        worldSize: ctx.size,
        losses: r.losses,
        gradNorms: r.gradNorms,
        lrs: r.lrs,
        params,
        ms: performance.now() - t0,
      });
    }
  }
  if (ctx.rank === 0) writeFileSync(ctx.args.out, JSON.stringify(out));
  return { rank: ctx.rank, cases: ctx.args.cases.length };
}
