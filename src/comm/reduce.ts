// The numerical contract of reductions, shared by every transport that reduces in JavaScript (inproc, threads)
// and stated here so that the conformance program and the MPI transport know what "correct" means:
//
//   sum         acc = x₀; acc = round(acc + x_r) for r = 1…size−1            (rank order, rounded to the dtype)
//   avg         round(sum / size)                                            (float dtypes only)
//   max         acc = max(acc, x_r)                                          (NaN propagates)
//   premul_sum  acc = round(f·x₀); acc = round(acc + round(f·x_r))           (float dtypes only)
//   bf16 sum    float32 acc over the widened bf16 inputs in rank order, rounded to bf16 once (the only bf16 op;
//               reduce_scatter only — mixed_precision_reduce = "bfloat16")
//
// "round" is the dtype's rounding: Math.fround for float32, none for float64, ToInt32 (wrap-around) for int32.
// Reducing in rank order is what makes float32 results bitwise reproducible across seeds and interleavings; a
// transport whose library reduces in another order (MPI's tree algorithms) matches only up to reassociation.
// JavaScript computes a+b and a·b of two float32 values in float64 and rounds once; double rounding is harmless
// because 53 ≥ 2·24+2, so these loops give the correctly rounded float32 results.

import type { CommArray, ReduceOp } from './communicator.ts';
import { sumBf16Into } from '../tensor/bf16.ts';

/** Whether `op` is defined on `a`'s dtype (avg and premul_sum need a float dtype). */
export function reduceDefinedOn(op: ReduceOp, a: CommArray): boolean {
  if (a instanceof Uint16Array) return op.op === 'sum'; // bf16: f32-accumulated sum, rounded once
  return !(a instanceof Int32Array) || op.op === 'sum' || op.op === 'max';
}

/**
 * out[i] ← op over r of inputs[r][offsets[r] + i], for i < n, in rank order. `out` may alias inputs[0] at the same
 * offset (in-place all_reduce); it must not alias any other input.
 */
export function reduceInto(
  out: CommArray,
  inputs: readonly CommArray[],
  offsets: readonly number[],
  n: number,
  op: ReduceOp,
): void {
  const size = inputs.length;
  if (size === 0) throw new Error('reduceInto: no inputs');
  if (!reduceDefinedOn(op, out)) {
    throw new Error(`reduceInto: ReduceOp ${op.op} is defined on float32/float64 only, got ${out.constructor.name}`);
  }
  if (out instanceof Uint16Array) return sumBf16Into(out, inputs as readonly Uint16Array[], offsets, n);
  const f32 = out instanceof Float32Array;
  const x0 = inputs[0]!;
  const o0 = offsets[0]!;
  if (op.op === 'premul_sum') {
    const f = op.factor;
    for (let i = 0; i < n; i++) out[i] = f32 ? Math.fround(f * x0[o0 + i]!) : f * x0[o0 + i]!;
    for (let r = 1; r < size; r++) {
      const x = inputs[r]!;
      const o = offsets[r]!;
      if (f32) for (let i = 0; i < n; i++) out[i] = out[i]! + Math.fround(f * x[o + i]!);
      else for (let i = 0; i < n; i++) out[i] = out[i]! + f * x[o + i]!;
    }
    return;
  }
  if (out !== x0 || o0 !== 0) out.set(x0.subarray(o0, o0 + n));
  if (op.op === 'max') {
    for (let r = 1; r < size; r++) {
      const x = inputs[r]!;
      const o = offsets[r]!;
      for (let i = 0; i < n; i++) {
        const v = x[o + i]!;
        const a = out[i]!;
        // Math.max would do, but this keeps NaN propagation explicit and avoids a call per element.
        // biome-ignore lint/suspicious/noSelfCompare: v !== v is the NaN test (max propagates NaN as torch does), kept branch-cheap in the hot loop
        if (v > a || v !== v) out[i] = v;
      }
    }
    return;
  }
  // sum and avg: storing into the typed array rounds (float32) or wraps (int32) after every addition.
  for (let r = 1; r < size; r++) {
    const x = inputs[r]!;
    const o = offsets[r]!;
    for (let i = 0; i < n; i++) out[i] = out[i]! + x[o + i]!;
  }
  if (op.op === 'avg') divideInPlace(out, size, n);
}

/** dst ← src · factor (premul_sum: each rank scales its own contribution before the sum). */
export function scaleInto(dst: CommArray, src: CommArray, factor: number): void {
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = src[i]! * factor;
}

/** avg = SUM, then divide by the group size (integer arrays truncate toward zero, as a C cast would). */
export function divideInPlace(a: CommArray, by: number, n = a.length): void {
  for (let i = 0; i < n; i++) a[i] = a[i]! / by;
}
