// nn.Linear without bias, weight W (out, in): y = x·Wᵀ. The transposes live in sgemm's flags, never in memory.
//
// Under bf16 compute every product rounds its operands to bf16. An activation or gradient that feeds several
// products (a block's normed input feeds q, k and v and their weight gradients; a gradient feeds both backward
// products) is rounded once with `roundOnce` and passed as bf16 bits (Uint16Array): the same values reach the
// matmul, without re-reading and re-rounding the f32 source per product (~20–30 % of a bf16 matmul's time at the
// debugmodel's shapes, docs/benchmarks.md). Under fp32 `roundOnce` returns the f32 array itself.
import type { Kernels } from '../../tensor/kernels-api.ts';
import { exactKernels, paramDtypeOf } from '../../tensor/precision.ts';
import type { ActivationPool } from '../pool.ts';

/** A matmul operand: f32, or its bf16 rounding (only under bf16 compute, made by roundOnce). */
export type Operand = Float32Array | Uint16Array;

/** x (n, dense) rounded to bf16 once for several products when `k` computes in bf16 (pooled; `releaseRounded`). */
export function roundOnce(k: Kernels, pool: ActivationPool, x: Float32Array, n: number): Operand {
  if (paramDtypeOf(k) !== 'bfloat16') return x;
  const h = pool.u16(n);
  k.toBf16(x, h, n);
  return h;
}

/** Gives back a pooled operand of either kind: a bf16 rounding, or a pooled f32 buffer kept in its place. */
export function releaseOperand(pool: ActivationPool, op: Operand | null | undefined): void {
  if (op instanceof Uint16Array) pool.releaseU16(op);
  else pool.release(op);
}

/** Gives back what roundOnce took from the pool (nothing for an f32 operand). */
export function releaseRounded(pool: ActivationPool, op: Operand | null | undefined): void {
  if (op instanceof Uint16Array) pool.releaseU16(op);
}

// A bf16 operand goes to sgemmBf16 directly (the bf16 view's sgemm is sgemmBf16 too: same products); so does a
// bf16 C (beta 0), which receives the product rounded once.
function gemm(
  k: Kernels,
  ta: boolean,
  tb: boolean,
  M: number,
  N: number,
  K: number,
  A: Operand,
  lda: number,
  B: Operand,
  ldb: number,
  beta: number,
  C: Operand,
  ldc: number,
): void {
  if (A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array)
    k.sgemm(ta, tb, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
  else k.sgemmBf16(ta, tb, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
}

// x (N,in), W (out,in) → y (N,out)   (beta 0 writes y, 1 accumulates into it; a bf16 y takes beta 0)
export function linearFwd(
  k: Kernels,
  x: Operand,
  W: Float32Array,
  y: Operand,
  N: number,
  inF: number,
  outF: number,
  beta = 0,
  ldx = inF,
  ldy = outF,
): void {
  gemm(k, false, true, N, outF, inF, x, ldx, W, inF, beta, y, ldy);
}

// dy (N,out), W (out,in) → dx (N,in)   (beta 0 writes dx, 1 accumulates; a bf16 dx takes beta 0)
export function linearBwdInput(
  k: Kernels,
  dy: Operand,
  W: Float32Array,
  dx: Operand,
  N: number,
  inF: number,
  outF: number,
  beta = 0,
  ldy = outF,
  ldx = inF,
): void {
  gemm(k, false, false, N, inF, outF, dy, ldy, W, inF, beta, dx, ldx);
}

// dy (N,out), x (N,in) → dW (out,in) += dyᵀ·x
export function linearBwdWeight(
  k: Kernels,
  dy: Operand,
  x: Operand,
  dW: Float32Array,
  N: number,
  inF: number,
  outF: number,
  ldy = outF,
  ldx = inF,
): void {
  gemm(k, true, false, outF, inF, N, dy, ldy, x, ldx, 1, dW, inF);
}

const identities = new Map<number, Float32Array>();

function identity(n: number): Float32Array {
  let I = identities.get(n);
  if (!I) {
    I = new Float32Array(n * n);
    for (let i = 0; i < n; i++) I[i * n + i] = 1;
    identities.set(n, I);
  }
  return I;
}

/**
 * Strided block copy / accumulate: dst[r, 0:cols] (row stride ldDst) = (beta=1: +=) src[r, 0:cols] (row stride
 * ldSrc), as sgemm against the identity. Exact for finite values (every product is x·1 or x·0), and it keeps
 * column-slice copies (MLA's shared rope key broadcast to every head, and its sum back) in a kernel.
 */
export function copyCols(
  k: Kernels,
  src: Float32Array,
  ldSrc: number,
  dst: Float32Array,
  ldDst: number,
  rows: number,
  cols: number,
  beta: 0 | 1,
): void {
  // f32 even under bf16 compute: a copy must not round.
  exactKernels(k).sgemm(false, false, rows, cols, cols, 1, src, ldSrc, identity(cols), cols, beta, dst, ldDst);
}
