// Causal SDPA as the attention layers call it, in the compute dtype: f32 under f32 compute; under bf16 compute q,
// k, v (after RoPE) are rounded to bf16 once, the kernel takes bf16 operands (products summed in f32, P and dS
// rounded to bf16 where they multiply) and writes o in bf16 — what torch's SDPA does with the bf16 projections'
// outputs FSDP2 mixed precision gives it. What backward keeps (q, k, v, o) is then bf16 too: half the bytes.
//   q (N, Hq·dk), k (N, Hkv·dk), v (N, Hkv·dv) → o (N, Hq·dv), lse (B, Hq, S);  N = B·S
// Odd head dims (no model has them; the kernel reads bf16 pairs) keep the f32 kernel under either dtype.
//
// On a CPU without bf16 dot products (blasInfo().bf16Dot === false) the storage stays bf16 but the attention runs
// the f32 kernel on the widened (exact) values, as precision.ts does for the matmuls: there the bf16 kernel's pair
// products are emulated with f32 FMAs plus the unpacking, 1.25–1.35× slower than the f32 kernel (AVX2 build,
// debugmodel head), and P and dS then stay f32 — the more exact of the two.
import { hasBf16Dot, paramDtypeOf } from '../../tensor/precision.ts';
import type { Runtime } from '../runtime.ts';
import { type Operand, releaseOperand } from './linear.ts';

export interface SdpaShape {
  B: number;
  S: number;
  Hq: number;
  Hkv: number;
  dk: number;
  dv: number;
  scale: number;
}

/** What backward reads: bf16 (Uint16Array) or f32 q, k, v, o, all pooled, and the f32 log-sum-exp. */
export interface SdpaSaved {
  q: Operand;
  k: Operand;
  v: Operand;
  o: Operand;
  lse: Float32Array;
}

export function sdpaInBf16(rt: Runtime, s: SdpaShape): boolean {
  return paramDtypeOf(rt.k) === 'bfloat16' && s.dk % 2 === 0 && s.dv % 2 === 0;
}

// q, k, v (pooled; taken over) → saved.o (N, Hq·dv) and lse
export function sdpaForward(rt: Runtime, s: SdpaShape, q: Float32Array, k: Float32Array, v: Float32Array): SdpaSaved {
  const { B, S, Hq, Hkv, dk, dv, scale } = s;
  const N = B * S;
  const lse = rt.pool.get(B * Hq * S);
  if (!sdpaInBf16(rt, s)) {
    const o = rt.pool.get(N * Hq * dv);
    rt.k.attentionFwd(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale);
    return { q, k, v, o, lse };
  }
  // What is stored: q, k, v rounded to bf16 once (each f32 source given back at once).
  const n = [N * Hq * dk, N * Hkv * dk, N * Hkv * dv];
  const [q16, k16, v16] = [q, k, v].map((x, i) => {
    const h = rt.pool.u16(n[i]!);
    rt.k.toBf16(x, h, n[i]!);
    rt.pool.release(x);
    return h;
  }) as [Uint16Array, Uint16Array, Uint16Array];
  return sdpaForwardBf16(rt, s, q16, k16, v16, lse);
}

/**
 * The bf16 forward on q, k, v already rounded to bf16 (pooled; taken over), e.g. slices of a fused projection's
 * output rounded straight into their own arrays. `lse` pooled, or taken from the pool here.
 */
export function sdpaForwardBf16(
  rt: Runtime,
  s: SdpaShape,
  q16: Uint16Array,
  k16: Uint16Array,
  v16: Uint16Array,
  lse: Float32Array = rt.pool.get(s.B * s.Hq * s.S),
): SdpaSaved {
  const { B, S, Hq, Hkv, dk, dv, scale } = s;
  const N = B * S;
  const o16 = rt.pool.u16(N * Hq * dv);
  if (hasBf16Dot(rt.k)) {
    rt.k.attentionFwdBf16(q16, k16, v16, o16, lse, B, S, Hq, Hkv, dk, dv, scale);
  } else {
    // The f32 kernel on the stored values, widened (exactly).
    const wide = [q16, k16, v16].map((h) => widened(rt, h)) as [Float32Array, Float32Array, Float32Array];
    const o = rt.pool.get(N * Hq * dv);
    rt.k.attentionFwd(...wide, o, lse, B, S, Hq, Hkv, dk, dv, scale);
    rt.k.toBf16(o, o16, N * Hq * dv);
    for (const x of [...wide, o]) rt.pool.release(x);
  }
  return { q: q16, k: k16, v: v16, o: o16, lse };
}

/** A pooled f32 copy of bf16 bits (exact). */
function widened(rt: Runtime, h: Uint16Array): Float32Array {
  const f = rt.pool.get(h.length);
  rt.k.fromBf16(h, f, h.length);
  return f;
}

// dO (N, Hq·dv) f32 (may be overwritten), or under bf16 already rounded to bf16 (its product wrote it so) → dq,
// dk, dv f32 (pooled, caller releases); releases `saved`
export function sdpaBackward(
  rt: Runtime,
  s: SdpaShape,
  saved: SdpaSaved,
  dO: Float32Array | Uint16Array,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { B, S, Hq, Hkv, dk: dkh, dv: dvh, scale } = s;
  const N = B * S;
  const dq = rt.pool.get(N * Hq * dkh);
  const dk = rt.pool.get(N * Hkv * dkh);
  const dv = rt.pool.get(N * Hkv * dvh);
  const { q, k, v, o, lse } = saved;
  if (q instanceof Uint16Array && k instanceof Uint16Array && v instanceof Uint16Array && o instanceof Uint16Array) {
    let dO16 = dO instanceof Uint16Array ? dO : null;
    if (!dO16) {
      dO16 = rt.pool.u16(N * Hq * dvh);
      rt.k.toBf16(dO as Float32Array, dO16, N * Hq * dvh);
    }
    if (hasBf16Dot(rt.k)) {
      rt.k.attentionBwdBf16(dO16, q, k, v, o, lse, dq, dk, dv, B, S, Hq, Hkv, dkh, dvh, scale);
    } else {
      // The f32 kernel on the stored bf16 values and on dO as the bf16 kernel reads it.
      const wide = [dO16, q, k, v, o].map((a) => widened(rt, a)) as [
        Float32Array,
        Float32Array,
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      rt.k.attentionBwd(...wide, lse, dq, dk, dv, B, S, Hq, Hkv, dkh, dvh, scale);
      for (const a of wide) rt.pool.release(a);
    }
    if (dO16 !== dO) rt.pool.releaseU16(dO16);
  } else if (
    q instanceof Float32Array &&
    k instanceof Float32Array &&
    v instanceof Float32Array &&
    o instanceof Float32Array &&
    dO instanceof Float32Array
  ) {
    rt.k.attentionBwd(dO, q, k, v, o, lse, dq, dk, dv, B, S, Hq, Hkv, dkh, dvh, scale);
  } else throw new Error('sdpaBackward: saved q, k, v, o (and dO) mix f32 and bf16 (f32 attention takes an f32 dO)');
  sdpaRelease(rt, saved);
  return { dq, dk, dv };
}

export function sdpaRelease(rt: Runtime, saved: SdpaSaved): void {
  for (const a of [saved.q, saved.k, saved.v, saved.o]) releaseOperand(rt.pool, a);
  rt.pool.release(saved.lse);
}
