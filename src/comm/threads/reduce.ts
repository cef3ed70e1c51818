// Elementwise reductions used by the threads transport. Every rank reduces contributions in group-rank order
// (0, 1, …, P-1), so results are deterministic and identical on all ranks. On a Float32Array each `a + b` is
// computed in double and rounded once on store, which equals IEEE float32 addition (double has enough bits that
// the double rounding is exact), so this matches a C float sum in the same order — and the kernels' native `add`
// (a plain float add per element) gives the very same bits, so large float32 sums go through it: a reduce_scatter
// of 3.5 MB per rank on 2 worker threads took 4.0 ms with the JS loop, 1.3 ms with the native add.

import type { CommArray, ReduceOp } from '../communicator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import { getKernels } from '../../tensor/kernels.ts';
import { sumBf16Into } from '../../tensor/bf16.ts';

/** Below this many elements the call into the addon costs more than the JS loop. */
const NATIVE_MIN = 2048;
/**
 * Native adds go in pieces below the kernels' OpenMP threshold (kParallelMinElems = 2^16, which splits a call
 * over threads only from twice that), so each stays on this rank's own core: every rank of the group reduces at
 * the same moment, and an OpenMP team per rank would oversubscribe the cores (all_reduce of 1 MiB on 2 worker
 * threads spread 0.24-1.6 ms with 2 OpenMP threads per rank).
 */
const NATIVE_PIECE = 1 << 16;
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
      addPieces(k, acc, src, acc);
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

function addPieces(k: Kernels, a: Float32Array, b: Float32Array, out: Float32Array): void {
  const n = out.length;
  if (n <= NATIVE_PIECE) {
    k.add(a, b, out, n);
    return;
  }
  for (let lo = 0; lo < n; lo += NATIVE_PIECE) {
    const hi = Math.min(n, lo + NATIVE_PIECE);
    k.add(a.subarray(lo, hi), b.subarray(lo, hi), out.subarray(lo, hi), hi - lo);
  }
}

const sameView = (a: CommArray, b: CommArray) => a.buffer === b.buffer && a.byteOffset === b.byteOffset;

/**
 * out ← srcs[0] ⊕ srcs[1] ⊕ … ⊕ srcs[P−1], in that order, rounding to the dtype after every step (as accumulate).
 * `out` may be srcs[0] or srcs[1] itself (the first step reads both inputs of an element before writing it), but
 * must not overlap any later source.
 */
export function reduceInto(out: CommArray, srcs: readonly CommArray[], op: ReduceOp['op']): void {
  const n = out.length;
  const s0 = srcs[0]!;
  if (out instanceof Uint16Array)
    return sumBf16Into(out, srcs as readonly Uint16Array[], new Array<number>(srcs.length).fill(0), n);
  if (srcs.length === 1) {
    if (!sameView(out, s0)) out.set(s0);
    return;
  }
  const s1 = srcs[1]!;
  const k = op !== 'max' && n >= NATIVE_MIN ? native() : null;
  if (k && out instanceof Float32Array && s0 instanceof Float32Array && s1 instanceof Float32Array) {
    addPieces(k, s0, s1, out);
  } else if (op === 'max') {
    for (let i = 0; i < n; i++) {
      const a = s0[i]!;
      const v = s1[i]!;
      out[i] = v > a || Number.isNaN(v) ? v : a;
    }
  } else {
    for (let i = 0; i < n; i++) out[i] = s0[i]! + s1[i]!;
  }
  for (let q = 2; q < srcs.length; q++) accumulate(out, srcs[q]!, op);
}

export function reduceCode(r: ReduceOp | undefined): number {
  if (!r) return 0;
  return ['sum', 'avg', 'max', 'premul_sum'].indexOf(r.op);
}
