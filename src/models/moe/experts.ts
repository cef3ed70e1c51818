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
  const ctx: ExpertsCtx = { rows, counts: Int32Array.from(counts), R, rowsm, acts };
  if (rowsm instanceof Uint16Array && acts.h1 instanceof Uint16Array && groupable(L, R, D, H)) {
    groupedForward(rt, w, ctx, D, H, out);
    return { out, ctx };
  }
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
  return { out, ctx };
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
  if (dOutm instanceof Uint16Array && ctx.rowsm instanceof Uint16Array && groupable(counts.length, R, D, H)) {
    groupedBackward(rt, w, g, ctx, dOutm, D, H, dh, dRows);
    rt.pool.release(dh);
    releaseRounded(rt.pool, dOutm);
    releaseExpertsCtx(rt, ctx);
    return dRows;
  }
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

// ---- bf16: every expert's product of one kind in one call (Kernels.sgemmBf16Groups), the experts side by side ----
// The same products as swigluFfnForward/Backward per expert (linear.ts's transposes and betas), in the same order
// of kinds; the element-wise kernels run once over all rows. An expert without rows has no group, as it has no call.

/** Whether every element offset of the grouped calls fits sgemmBf16Groups' Int32Array (else: one call per expert). */
const groupable = (L: number, R: number, D: number, H: number) =>
  Math.max(L * D * H, R * Math.max(D, H)) <= 2 ** 31 - 1;

/** dims (M, N, K) and offs (A, B, C elements) per expert with rows; `of(n, off, l)` gives them for expert l. */
function groupsOf(
  counts: Int32Array,
  of: (n: number, off: number, l: number) => [number, number, number, number, number, number],
): { dims: Int32Array; offs: Int32Array } {
  const dims: number[] = [];
  const offs: number[] = [];
  let off = 0;
  for (let l = 0; l < counts.length; l++) {
    const n = counts[l]!;
    if (n > 0) {
      const [M, N, K, a, b, c] = of(n, off, l);
      dims.push(M, N, K);
      offs.push(a, b, c);
    }
    off += n;
  }
  return { dims: Int32Array.from(dims), offs: Int32Array.from(offs) };
}

// rows (R,D) bf16 → acts.h1, h3 = rows·W1[l]ᵀ, rows·W3[l]ᵀ (bf16), act = silu(h1)·h3, out = act·W2[l]ᵀ (R,D)
function groupedForward(rt: Runtime, w: SwigluWeights, ctx: ExpertsCtx, D: number, H: number, out: Float32Array): void {
  const { k } = rt;
  const { rowsm, acts, counts, R } = ctx;
  const h1 = acts.h1 as Uint16Array;
  const h3 = acts.h3 as Uint16Array;
  const act = acts.act as Uint16Array;
  const up = groupsOf(counts, (n, off, l) => [n, H, D, off * D, l * H * D, off * H]);
  k.sgemmBf16Groups(false, true, up.dims, up.offs, 1, rowsm, D, w.w1, D, 0, h1, H);
  k.sgemmBf16Groups(false, true, up.dims, up.offs, 1, rowsm, D, w.w3, D, 0, h3, H);
  k.swigluFwdBf16(h1, h3, act, R * H);
  const down = groupsOf(counts, (n, off, l) => [n, D, H, off * H, l * D * H, off * D]);
  k.sgemmBf16Groups(false, true, down.dims, down.offs, 1, act, H, w.w2, H, 0, out, D);
}

// dOut (R,D) bf16 → dRows (R,D) write; dW1, dW2, dW3 += per expert. dh (R,H) is scratch.
function groupedBackward(
  rt: Runtime,
  w: SwigluWeights,
  g: SwigluWeights,
  ctx: ExpertsCtx,
  dOut: Uint16Array,
  D: number,
  H: number,
  dh: Float32Array,
  dRows: Float32Array,
): void {
  const { k } = rt;
  const { rowsm, acts, counts, R } = ctx;
  // dW2[l] += dOutᵀ·act, d(act) = dOut·W2[l]
  const dW2 = groupsOf(counts, (n, off, l) => [D, H, n, off * D, off * H, l * D * H]);
  k.sgemmBf16Groups(true, false, dW2.dims, dW2.offs, 1, dOut, D, acts.act, H, 1, g.w2, H);
  const dAct = groupsOf(counts, (n, off, l) => [n, H, D, off * D, l * D * H, off * H]);
  k.sgemmBf16Groups(false, false, dAct.dims, dAct.offs, 1, dOut, D, w.w2, H, 0, dh, H);
  const dh1 = rt.pool.u16(R * H);
  const dh3 = rt.pool.u16(R * H);
  k.swigluBwdBf16(dh, acts.h1 as Uint16Array, acts.h3 as Uint16Array, dh1, dh3, R * H);
  // dW1[l] += d(h1)ᵀ·rows, dW3[l] += d(h3)ᵀ·rows; dRows = d(h1)·W1[l] + d(h3)·W3[l]
  const dW = groupsOf(counts, (n, off, l) => [H, D, n, off * H, off * D, l * H * D]);
  k.sgemmBf16Groups(true, false, dW.dims, dW.offs, 1, dh1, H, rowsm, D, 1, g.w1, D);
  k.sgemmBf16Groups(true, false, dW.dims, dW.offs, 1, dh3, H, rowsm, D, 1, g.w3, D);
  const dx = groupsOf(counts, (n, off, l) => [n, D, H, off * H, l * H * D, off * D]);
  k.sgemmBf16Groups(false, false, dx.dims, dx.offs, 1, dh1, H, w.w1, D, 0, dRows, D);
  k.sgemmBf16Groups(false, false, dx.dims, dx.offs, 1, dh3, H, w.w3, D, 1, dRows, D);
  rt.pool.releaseU16(dh1);
  rt.pool.releaseU16(dh3);
}
