// MoE stage "combine" (its local half: unsort + weighting + K-sum, torchtitan-semantics.md §3.3 steps 16–17) and its dual
// "combineGrad".
//
// Forward: out_r[srcToken[r]] += Y[r] · (score_before_experts ? 1 : gate[r])  — the K outputs of a token summed,
//   weighted by the gates in fp32 when the score is applied after the experts (DSV3). The unsort is the scatter.
// Backward: dY[r] = dOut[srcToken[r]] · (sbe ? 1 : gate[r]);  without sbe also dGate[r] = dOut[srcToken[r]]·Y[r].
// (Y is saved for that last product only when sbe is false.)

import type { Runtime } from '../runtime.ts';
import { scatterGateGrads, type Permutation } from './permute.ts';

export interface CombineCtx {
  /** Expert outputs (R,D), saved (and owned) only when the gates weight them (sbe false). */
  y: Float32Array | null;
}

// y (R,D) sorted by expert → out (N,D) (caller owns). Takes ownership of y (kept in ctx or released).
export function combineForward(
  rt: Runtime,
  perm: Permutation,
  y: Float32Array,
  N: number,
  D: number,
  scoreBeforeExperts: boolean,
): { out: Float32Array; ctx: CombineCtx } {
  const out = rt.pool.zeros(N * D);
  rt.k.scatterAddRows(y, perm.srcToken, out, perm.R, D, scoreBeforeExperts ? null : perm.gatesSorted);
  if (scoreBeforeExperts) {
    rt.pool.release(y);
    return { out, ctx: { y: null } };
  }
  return { out, ctx: { y } };
}

// dOut (N,D) → dY (R,D) (caller owns); without sbe dGates (N·K) += ; releases ctx
export function combineBackward(
  rt: Runtime,
  perm: Permutation,
  ctx: CombineCtx,
  dOut: Float32Array,
  D: number,
  scoreBeforeExperts: boolean,
  dGates: Float32Array,
): Float32Array {
  const dY = rt.pool.get(perm.R * D);
  rt.k.gatherRows(dOut, perm.srcToken, dY, perm.R, D, scoreBeforeExperts ? null : perm.gatesSorted);
  if (!scoreBeforeExperts) {
    const dots = rt.pool.get(perm.R);
    rt.k.gatherRowDot(dOut, perm.srcToken, ctx.y!, dots, perm.R, D);
    scatterGateGrads(perm, dots, dGates);
    rt.pool.release(dots);
  }
  releaseCombineCtx(rt, ctx);
  return dY;
}

export function releaseCombineCtx(rt: Runtime, ctx: CombineCtx): void {
  if (ctx.y) rt.pool.release(ctx.y);
  ctx.y = null;
}
