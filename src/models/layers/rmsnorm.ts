// nn.RMSNorm(D, eps): y = x / sqrt(mean(x²) + eps) · w.
import type { Runtime } from '../runtime.ts';

export interface RmsNormCtx {
  /** Input, not owned (the producer keeps it alive until backward). */
  x: Float32Array;
  /** (N) owned. */
  rstd: Float32Array;
  N: number;
  D: number;
}

// x (N,D), w (D) → out (N,D) (caller owns), ctx. With `residual`: x ← x + residual first, in place (one pass
// for a block's residual add and the norm after it; the same float adds).
export function rmsnormForward(
  rt: Runtime,
  x: Float32Array,
  w: Float32Array,
  N: number,
  D: number,
  eps: number,
  residual: Float32Array | null = null,
): { out: Float32Array; ctx: RmsNormCtx } {
  return normInto(rt, rt.pool.get(N * D), x, w, N, D, eps, residual);
}

// As rmsnormForward with out in bf16 (pooled u16, caller owns): under bf16 compute, for a norm whose output only
// products read (they would round it anyway), one bf16 write instead of an f32 write and a rounding pass.
export function rmsnormForwardBf16(
  rt: Runtime,
  x: Float32Array,
  w: Float32Array,
  N: number,
  D: number,
  eps: number,
  residual: Float32Array | null = null,
): { out: Uint16Array; ctx: RmsNormCtx } {
  return normInto(rt, rt.pool.u16(N * D), x, w, N, D, eps, residual);
}

function normInto<T extends Float32Array | Uint16Array>(
  rt: Runtime,
  out: T,
  x: Float32Array,
  w: Float32Array,
  N: number,
  D: number,
  eps: number,
  residual: Float32Array | null,
): { out: T; ctx: RmsNormCtx } {
  const rstd = rt.pool.get(N);
  rt.k.rmsnormFwd(x, w, out, rstd, N, D, eps, residual);
  return { out, ctx: { x, rstd, N, D } };
}

// dout (N,D) → dx (N,D) (caller owns), dw (D) += ; releases ctx.rstd. With `extra`: dx + extra (the residual
// branch's gradient added as dx is written; the same float adds as a separate add).
export function rmsnormBackward(
  rt: Runtime,
  ctx: RmsNormCtx,
  w: Float32Array,
  dw: Float32Array,
  dout: Float32Array,
  extra: Float32Array | null = null,
): Float32Array {
  const dx = rt.pool.get(ctx.N * ctx.D);
  rt.k.rmsnormBwd(dout, ctx.x, w, ctx.rstd, dx, dw, ctx.N, ctx.D, extra);
  rt.pool.release(ctx.rstd);
  return dx;
}

/** Drops a ctx whose backward will not run (activation checkpointing discards it after forward). */
export function rmsnormRelease(rt: Runtime, ctx: RmsNormCtx): void {
  rt.pool.release(ctx.rstd);
}
