// nn.Linear without bias, weight W (out, in): y = x·Wᵀ. The transposes live in sgemm's flags, never in memory.
import type { Kernels } from '../../tensor/kernels-api.ts';
import { exactKernels } from '../../tensor/precision.ts';

// x (N,in), W (out,in) → y (N,out)   (beta 0 writes y, 1 accumulates into it)
export function linearFwd(
  k: Kernels,
  x: Float32Array,
  W: Float32Array,
  y: Float32Array,
  N: number,
  inF: number,
  outF: number,
  beta = 0,
  ldx = inF,
  ldy = outF,
): void {
  k.sgemm(false, true, N, outF, inF, 1, x, ldx, W, inF, beta, y, ldy);
}

// dy (N,out), W (out,in) → dx (N,in)   (beta 0 writes dx, 1 accumulates)
export function linearBwdInput(
  k: Kernels,
  dy: Float32Array,
  W: Float32Array,
  dx: Float32Array,
  N: number,
  inF: number,
  outF: number,
  beta = 0,
  ldy = outF,
  ldx = inF,
): void {
  k.sgemm(false, false, N, inF, outF, 1, dy, ldy, W, inF, beta, dx, ldx);
}

// dy (N,out), x (N,in) → dW (out,in) += dyᵀ·x
export function linearBwdWeight(
  k: Kernels,
  dy: Float32Array,
  x: Float32Array,
  dW: Float32Array,
  N: number,
  inF: number,
  outF: number,
  ldy = outF,
  ldx = inF,
): void {
  k.sgemm(true, false, outF, inF, N, 1, dy, ldy, x, ldx, 1, dW, inF);
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
