// bfloat16 bit conversions in plain TypeScript, for code that handles a few values or must not depend on the
// native addon (the transports' reductions, the conformance reference). Same rounding as the kernels' toBf16:
// round to nearest, ties to even; NaN stays a quiet NaN.
const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);

export function bf16ToF32(h: number): number {
  u[0] = h << 16;
  return f[0]!;
}

/** x (a float32 value) → bf16 bits. */
export function f32ToBf16(x: number): number {
  f[0] = x;
  const b = u[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * out[i] ← bf16(Σ_r srcs[r][offsets[r] + i]), the sum taken in float32 in rank order and rounded to bf16 once
 * (mixed_precision_reduce = "bfloat16": bf16 on the wire, f32 accumulation). `out` may alias srcs[0].
 */
export function sumBf16Into(
  out: Uint16Array,
  srcs: readonly Uint16Array[],
  offsets: readonly number[],
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    let acc = bf16ToF32(srcs[0]![offsets[0]! + i]!);
    for (let r = 1; r < srcs.length; r++) acc = Math.fround(acc + bf16ToF32(srcs[r]![offsets[r]! + i]!));
    out[i] = f32ToBf16(acc);
  }
}
