// The rank program of `moe-actors ep-ops`: the communication of each EP dispatch strategy (ep-ops-strategies.ts)
// on the world as the EP group, with the experts reduced to a known linear map (expert e: y = (e+1)·x), so that
// every rank can check its own results against a local reference: the routed output Σ_k g·(e_k+1)·x and the input
// gradient Σ_k g·(e_k+1)·dOut of each of its tokens. Forward = exchangeCounts, dispatch, combine; backward =
// combineGrad, dispatchGrad — the collectives, sizes and layouts of the strategies in src/actors/ep/, on plain
// arrays (no model, no pool). A strategy the capabilities cannot run is reported with the planner's reason.

import type { RankContext } from '../comm/launch.ts';
import { DISPATCH_STRATEGIES, strategyBlocker, type DispatchStrategy } from '../protocols/strategies.ts';
import { RUNS, type Local } from './ep-ops-strategies.ts';

export interface EpOpsArgs {
  /** Tokens per rank, hidden size, experts (a multiple of the ranks), experts per token. */
  tokens: number;
  dim: number;
  experts: number;
  topk: number;
  reps: number;
  seed: number;
  strategies?: DispatchStrategy[];
}

export interface EpOpsStrategyResult {
  strategy: DispatchStrategy;
  /** Why the capabilities cannot run it (nothing was issued), or null. */
  blocker: string | null;
  /** Largest |got − reference| over the output and the input gradient of this rank's tokens, all reps. */
  maxErr: number;
  /** Forward + backward wall ms per rep. */
  ms: number[];
  /** Bytes this rank sent + received per rep. */
  bytes: number;
  calls: number;
}

export interface EpOpsRankResult {
  rank: number;
  size: number;
  backend: string;
  results: EpOpsStrategyResult[];
}

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}

function makeLocal(ctx: RankContext<EpOpsArgs>, rep: number): Local {
  const { tokens: N, dim: D, experts: E, topk: K, seed } = ctx.args;
  const P = ctx.world.size;
  const me = ctx.world.rank;
  const r = lcg(seed * 7919 + me * 104729 + rep * 13);
  const x = Float32Array.from({ length: N * D }, () => r() * 2 - 1);
  const dOut = Float32Array.from({ length: N * D }, () => r() * 2 - 1);
  const idx = new Int32Array(N * K);
  const gates = new Float32Array(N * K);
  for (let t = 0; t < N; t++) {
    // K distinct experts, skewed towards low ids so that counts are uneven across ranks.
    const chosen = new Set<number>();
    while (chosen.size < K) chosen.add(Math.min(E - 1, Math.floor(E * r() * r() * 1.5)));
    [...chosen].forEach((e, k) => {
      idx[t * K + k] = e;
      gates[t * K + k] = 0.25 + r();
    });
  }
  return { N, D, K, E, L: E / P, P, me, x, dOut, idx, gates };
}


function maxErr(l: Local, got: { out: Float32Array; dx: Float32Array }): number {
  let worst = 0;
  for (let t = 0; t < l.N; t++) {
    let w = 0;
    for (let k = 0; k < l.K; k++) w += l.gates[t * l.K + k]! * (l.idx[t * l.K + k]! + 1);
    for (let d = 0; d < l.D; d++) {
      const i = t * l.D + d;
      worst = Math.max(worst, Math.abs(got.out[i]! - w * l.x[i]!), Math.abs(got.dx[i]! - w * l.dOut[i]!));
    }
  }
  return Number.isNaN(worst) ? Infinity : worst;
}

export async function rankMain(ctx: RankContext<EpOpsArgs>): Promise<EpOpsRankResult> {
  const ep = ctx.world;
  if (ctx.args.experts % ep.size !== 0) throw new Error(`--experts ${ctx.args.experts} must be a multiple of the ${ep.size} ranks (each rank holds experts/ranks of them)`);
  const results: EpOpsStrategyResult[] = [];
  for (const strategy of ctx.args.strategies ?? DISPATCH_STRATEGIES) {
    const blocker = strategyBlocker(strategy, ep.capabilities);
    const r: EpOpsStrategyResult = { strategy, blocker, maxErr: 0, ms: [], bytes: 0, calls: 0 };
    results.push(r);
    if (blocker) continue;
    // Rep −1 warms up (first calls, JIT) and is checked but not timed.
    for (let rep = -1; rep < ctx.args.reps; rep++) {
      const l = makeLocal(ctx, rep + 1);
      const b0 = { ...ep.bytes };
      await ep.barrier();
      const t0 = performance.now();
      const got = await RUNS[strategy](ep, l);
      if (rep >= 0) r.ms.push(performance.now() - t0);
      // Less the barrier that lines the ranks up (one call, no bytes).
      r.bytes = ep.bytes.sent + ep.bytes.received - b0.sent - b0.received;
      r.calls = ep.bytes.calls - b0.calls - 1;
      r.maxErr = Math.max(r.maxErr, maxErr(l, got));
    }
  }
  return { rank: ctx.rank, size: ep.size, backend: ep.backend, results };
}
