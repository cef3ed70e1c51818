// MoE stage "compute" and its dual "computeGrad" (torchtitan-semantics.md §3.3 step 14, for-loop path): rows grouped by local expert,
// counts[l] rows for local expert l (zero is fine), each group through its own SwiGLU:
//   Y_l = (silu(R_l·W1[l]ᵀ) ⊙ (R_l·W3[l]ᵀ))·W2[l]ᵀ        w1, w3 (L,H,D), w2 (L,D,H)
// The buffers are plain row buffers, so the rows may come from this rank (EP = 1) or from a dispatch collective.

import type { Runtime } from '../runtime.ts';
import { type Operand, releaseRounded, roundOnce } from '../layers/linear.ts';
import {
  releaseSwigluActs,
  sliceSwigluActs,
  type SwigluActs,
  swigluActs,
  swigluFfnBackward,
  swigluFfnForward,
  type SwigluWeights,
} from '../layers/ffn.ts';

export interface ExpertsCtx {
  /** Input rows (R,D), not owned. */
  rows: Float32Array;
  /** Copy of the per-local-expert row counts (L). */
  counts: Int32Array;
  R: number;
  /** The rows as the w1/w3 products read them: rounded to bf16 once for every expert under bf16 compute (and kept
   *  for the weight gradients), `rows` itself under fp32. */
  rowsm: Operand;
  /** Every expert's w1/w3 outputs and gate, expert after expert (bf16 under bf16 compute). */
  acts: SwigluActs;
}

function slice(w: SwigluWeights, l: number, D: number, H: number): SwigluWeights {
  const m = H * D;
  return {
    w1: w.w1.subarray(l * m, (l + 1) * m),
    w2: w.w2.subarray(l * m, (l + 1) * m),
    w3: w.w3.subarray(l * m, (l + 1) * m),
  };
}

// rows (R,D), counts (L) with Σ counts = R → out (R,D) (caller owns)
export function expertsForward(
  rt: Runtime,
  w: SwigluWeights,
  rows: Float32Array,
  counts: Int32Array,
  D: number,
  H: number,
): { out: Float32Array; ctx: ExpertsCtx } {
  const L = counts.length;
  if (w.w1.length !== L * H * D) {
    throw new Error(
      `experts compute: ${counts.length} per-expert counts for weights holding ${w.w1.length / (H * D)} experts`,
    );
  }
  let R = 0;
  for (let l = 0; l < L; l++) R += counts[l]!;
  if (rows.length < R * D)
    throw new Error(`experts compute: counts sum to ${R} rows, the row buffer holds ${rows.length / D}`);
  const acts = swigluActs(rt, R * H);
  const out = rt.pool.get(R * D);
  // One rounding call for all experts' rows instead of one per expert, forward and again in backward.
  const rowsm = roundOnce(rt.k, rt.pool, rows, R * D);
  let off = 0;
  for (let l = 0; l < L; l++) {
    const n = counts[l]!;
    swigluFfnForward(
      rt.k,
      slice(w, l, D, H),
      rowsm.subarray(off * D),
      n,
      D,
      H,
      sliceSwigluActs(acts, off * H),
      out.subarray(off * D),
      rt.pool,
    );
    off += n;
  }
  return { out, ctx: { rows, counts: Int32Array.from(counts), R, rowsm, acts } };
}

// dOut (R,D) → dRows (R,D) (caller owns); expert weight grads +=; releases ctx
export function expertsBackward(
  rt: Runtime,
  w: SwigluWeights,
  g: SwigluWeights,
  ctx: ExpertsCtx,
  dOut: Float32Array,
  D: number,
  H: number,
): Float32Array {
  const { R, counts } = ctx;
  const dRows = rt.pool.get(R * D);
  const dh = rt.pool.get(R * H);
  const dOutm = roundOnce(rt.k, rt.pool, dOut, R * D);
  let off = 0;
  for (let l = 0; l < counts.length; l++) {
    const n = counts[l]!;
    swigluFfnBackward(
      rt.k,
      slice(w, l, D, H),
      slice(g, l, D, H),
      ctx.rowsm.subarray(off * D),
      n,
      D,
      H,
      sliceSwigluActs(ctx.acts, off * H),
      dOutm.subarray(off * D),
      dh.subarray(off * H),
      dRows.subarray(off * D),
      rt.pool,
    );
    off += n;
  }
  rt.pool.release(dh);
  releaseRounded(rt.pool, dOutm);
  releaseExpertsCtx(rt, ctx);
  return dRows;
}

export function releaseExpertsCtx(rt: Runtime, ctx: ExpertsCtx): void {
  releaseSwigluActs(rt, ctx.acts);
  releaseRounded(rt.pool, ctx.rowsm);
}
