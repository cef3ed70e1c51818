// Elementwise reductions used by the threads transport. Every rank reduces contributions in group-rank order
// (0, 1, …, P-1), so results are deterministic and identical on all ranks. On a Float32Array each `a + b` is
// computed in double and rounded once on store, which equals IEEE float32 addition (double has enough bits that
// the double rounding is exact), so this matches a C float sum in the same order — and the kernels' native `add`
// (a plain float add per element) gives the very same bits, so large float32 sums go through it: a reduce_scatter
// of 3.5 MB per rank on 2 worker threads took 4.0 ms with the JS loop, 1.3 ms with the native add.

import type { CommArray, ReduceOp } from '../communicator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import { getKernels } from '../../tensor/kernels.ts';

/** Below this many elements the call into the addon costs more than the JS loop. */
const NATIVE_MIN = 2048;
let nativeKernels: Kernels | null | undefined;

/** This thread's native kernels, or null (TS reference selected, or the addon not built: the JS loop serves). */
function native(): Kernels | null {
  if (nativeKernels === undefined) {
    try {
      const k = getKernels();
      nativeKernels = k.impl === 'native' ? k : null;
    } catch {
      nativeKernels = null;
    }
  }
  return nativeKernels;
}

export function accumulate(acc: CommArray, src: CommArray, op: ReduceOp['op']): void {
  const n = acc.length;
  if (op !== 'max' && n >= NATIVE_MIN && acc instanceof Float32Array && src instanceof Float32Array) {
    const k = native();
    if (k) {
      k.add(acc, src, acc, n);
      return;
    }
  }
  if (op === 'max') {
    for (let i = 0; i < n; i++) {
      const v = src[i]!;
      if (v > acc[i]! || Number.isNaN(v)) acc[i] = v;
    }
  } else {
    for (let i = 0; i < n; i++) acc[i] = acc[i]! + src[i]!;
  }
}

/** dst ← src · factor (premul_sum: each rank scales its own contribution before the sum). */
export function scaleInto(dst: CommArray, src: CommArray, factor: number): void {
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = src[i]! * factor;
}

/** avg = SUM, then divide by the group size (integer arrays truncate toward zero, as a C cast would). */
export function divideInPlace(a: CommArray, by: number): void {
  const n = a.length;
  for (let i = 0; i < n; i++) a[i] = a[i]! / by;
}

export function reduceCode(r: ReduceOp | undefined): number {
  if (!r) return 0;
  return ['sum', 'avg', 'max', 'premul_sum'].indexOf(r.op);
}
