// The matmul part of bench:kernels: OpenBLAS sgemm against oneDNN f32 and oneDNN bf16 (bf16 inputs, f32
// accumulation) per shape class of the models, in one process, libraries alternating within every round so a load
// change hits all of them. The classes are the shapes a debugmodel train step actually runs (logged from one step:
// 153 distinct shapes, 77 GFLOP; fwd = x·Wᵀ "NT", bwd input = dy·W "NN", bwd weight = dyᵀ·x "TN"):
//   attention  the projections of 2048 tokens at dim 256 (wq/wk/wv/wo, router): 2048×256×256 — 25 % of the FLOPs
//   wide       2048 tokens into wider weights (dense and shared-expert FFN 512/768, the output head 2048): ~50 %
//   expert     routed experts' GEMMs, ~250–320 rows each (tokens per expert vary every step): skinny, ~15 %
//   square     1024³, the MFU peak's shape
// GFLOP/s per class = the class's FLOPs / the summed median time of its shapes. bf16 times exclude the f32 → bf16
// conversion of the inputs (the model converts once per tensor, not per product).
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { median } from './common.ts';

type Shape = [ta: boolean, tb: boolean, M: number, N: number, K: number];

const fwdBwd = (rows: number, out: number, inF: number): Shape[] => [
  [false, true, rows, out, inF],
  [false, false, rows, inF, out],
  [true, false, out, inF, rows],
];

export const MATMUL_CLASSES: Record<string, Shape[]> = {
  attention: fwdBwd(2048, 256, 256),
  wide: [...fwdBwd(2048, 768, 256), ...fwdBwd(2048, 256, 768), ...fwdBwd(2048, 2048, 256)],
  expert: [...fwdBwd(256, 512, 256), ...fwdBwd(256, 256, 512), ...fwdBwd(317, 512, 256)],
  square: [[false, false, 1024, 1024, 1024]],
};

export type MatmulLib = 'openblas' | 'onednn_f32' | 'onednn_bf16';
export const MATMUL_LIBS: MatmulLib[] = ['openblas', 'onednn_f32', 'onednn_bf16'];

function filled(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}

interface Operands {
  shape: Shape;
  A: Float32Array;
  B: Float32Array;
  C: Float32Array;
  A16: Uint16Array;
  B16: Uint16Array;
}

function operands(k: Kernels, shape: Shape, seed: number): Operands {
  const [, , M, N, K] = shape;
  const A = filled(M * K, seed);
  const B = filled(K * N, seed + 1);
  const A16 = new Uint16Array(A.length);
  const B16 = new Uint16Array(B.length);
  k.toBf16(A, A16, A.length);
  k.toBf16(B, B16, B.length);
  return { shape, A, B, C: new Float32Array(M * N), A16, B16 };
}

function runOnce(k: Kernels, lib: MatmulLib, o: Operands): void {
  const [ta, tb, M, N, K] = o.shape;
  const lda = ta ? M : K;
  const ldb = tb ? K : N;
  if (lib === 'onednn_bf16') k.gemmBf16(ta, tb, M, N, K, 1, o.A16, lda, o.B16, ldb, 0, o.C, N);
  else k.sgemm(ta, tb, M, N, K, 1, o.A, lda, o.B, ldb, 0, o.C, N);
}

const LIB_MODE = { openblas: 'blas', onednn_f32: 'onednn', onednn_bf16: 'auto' } as const;

export interface ClassRates {
  /** GFLOP/s per class and library. */
  gflops: Record<string, Record<MatmulLib, number>>;
  /** Per class, the per-round times in ms (for the notes). */
  rounds: number;
}

/**
 * Measures every class with every library: `rounds` rounds, each timing every library once (order rotating) as
 * the median of `reps` passes over the class's shapes after one warm-up pass. Leaves the matmul mode at 'auto'.
 */
export function measureMatmulClasses(k: Kernels, rounds = 5, reps = 5): ClassRates {
  const gflops: ClassRates['gflops'] = {};
  for (const [name, shapes] of Object.entries(MATMUL_CLASSES)) {
    const ops = shapes.map((s, i) => operands(k, s, 100 + 7 * i));
    const flops = shapes.reduce((f, [, , M, N, K]) => f + 2 * M * N * K, 0);
    const times: Record<MatmulLib, number[]> = { openblas: [], onednn_f32: [], onednn_bf16: [] };
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < MATMUL_LIBS.length; j++) {
        const lib = MATMUL_LIBS[(r + j) % MATMUL_LIBS.length]!;
        k.setMatmulLibrary(LIB_MODE[lib]);
        for (const o of ops) runOnce(k, lib, o); // warm-up: primitive creation, pages
        const t: number[] = [];
        for (let p = 0; p < reps; p++) {
          const t0 = performance.now();
          for (const o of ops) runOnce(k, lib, o);
          t.push(performance.now() - t0);
        }
        times[lib].push(median(t));
      }
    }
    k.setMatmulLibrary('auto');
    gflops[name] = Object.fromEntries(MATMUL_LIBS.map((l) => [l, flops / (median(times[l]) * 1e6)])) as Record<
      MatmulLib,
      number
    >;
  }
  return { gflops, rounds };
}
