// Gradient-norm clipping as torch's clip_grad_norm_ (torchtitan-semantics.md §5.4). The norm is split into partial sums of squares so
// the distributed layer can all-reduce them per group (EP params over the EP×EFSDP mesh, the rest over FSDP) and
// combine total = sqrt(n_ep² + n_nonep²); on one rank it is simply every grad.

import type { Kernels } from '../../tensor/kernels-api.ts';
import type { FlatParams } from '../params/unit.ts';

const f = Math.fround;

/** Σ g² over flat grad buffers (padding between parameters is zero and adds nothing). */
export function gradNormSquared(k: Kernels, params: Iterable<FlatParams>): number {
  let s = 0;
  for (const u of params) s += k.sumSquares(u.grad, u.numel);
  return s;
}

/** torchtitan's two clipping groups with EP: routed experts ("ep") and everything else. */
export function splitForClipping<T extends FlatParams>(params: Iterable<T>): { ep: T[]; nonEp: T[] } {
  const ep: T[] = [];
  const nonEp: T[] = [];
  for (const p of params) (p.isExperts ? ep : nonEp).push(p);
  return { ep, nonEp };
}

/** torch's coefficient in float32: min(max_norm / (total + 1e-6), 1). */
export function clipCoefficient(maxNorm: number, totalNorm: number): number {
  const t = f(totalNorm);
  return Math.min(f(maxNorm / f(t + 1e-6)), 1);
}

/** Multiplies every grad by the coefficient, even when it is 1 (torch does; it is a no-op then). */
export function scaleGrads(k: Kernels, params: Iterable<FlatParams>, coef: number): void {
  for (const u of params) k.scale(u.grad, coef, u.numel);
}

/** Single-rank clip: returns the pre-clip total norm (the logged grad_norm). */
export function clipGradNorm(k: Kernels, params: readonly FlatParams[], maxNorm: number): number {
  const { total, coef } = clipGradScale(k, params, maxNorm);
  scaleGrads(k, params, coef);
  return total;
}

/**
 * Single-rank clip without touching the gradients: the pre-clip total norm and the coefficient, for an optimizer
 * that multiplies it in as it reads each gradient (AdamW.step's gradScale).
 */
export function clipGradScale(
  k: Kernels,
  params: readonly FlatParams[],
  maxNorm: number,
): { total: number; coef: number } {
  const total = Math.sqrt(gradNormSquared(k, params));
  return { total, coef: clipCoefficient(maxNorm, total) };
}
