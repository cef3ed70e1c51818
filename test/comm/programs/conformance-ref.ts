// Plain, transport-free pieces of the conformance program: a seeded generator every rank can run for every other
// rank (so each rank can recompute any collective's expected result locally), reference reductions written
// directly from the contract in src/comm/reduce.ts (deliberately not calling it, so a bug there is caught), and
// guarded buffers that catch a transport writing outside the view it was given.

import { bf16ToF32, f32ToBf16 } from '../../../src/tensor/bf16.ts';
import type { CommArray, ReduceOp } from '../../../src/comm/communicator.ts';

// bfloat16: raw 16-bit patterns in a Uint16Array (mixed precision's 2-byte elements); moved, never reduced.
export type DType = 'float32' | 'float64' | 'int32' | 'bfloat16';
export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'bfloat16'];

/** 32-bit hash of integers (murmur3 finalizer per step); stable across platforms. */
export function hashInts(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    h = Math.imul(h ^ (x | 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

export function hashStr(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** mulberry32: tiny, fast, good enough to draw test data. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  float(): number {
    return this.u32() / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + (this.u32() % (hi - lo + 1));
  }
}

/**
 * Values with full mantissas (not small dyadic numbers), so that a reduction in another order than rank order
 * gives a different float32 result and the 'exact' check notices it.
 */
export function genValues(dtype: DType, n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    if (dtype === 'int32') out[i] = rng.int(-1000, 1000);
    // Finite bf16 values of both signs and many magnitudes (the reductions sum them; movement copies bits).
    else if (dtype === 'bfloat16') out[i] = f32ToBf16((rng.float() - 0.5) * 2 ** rng.int(-8, 8));
    else if (dtype === 'float32') out[i] = Math.fround((rng.float() - 0.5) * 8);
    else out[i] = (rng.float() - 0.5) * 8 + rng.float() * 2 ** -30;
  }
  return out;
}

const round = (dtype: DType, x: number): number =>
  dtype === 'float32' ? Math.fround(x) : dtype === 'int32' ? x | 0 : x;

/** Expected op over ranks of xs[r][i], and Σ|x| per element (the scale for tolerance checks). */
export function refReduce(
  dtype: DType,
  xs: readonly (readonly number[])[],
  op: ReduceOp,
): { value: number[]; scale: number[] } {
  if (dtype === 'bfloat16') return refSumBf16(xs);
  const n = xs[0]?.length ?? 0;
  const value = new Array<number>(n);
  const scale = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let acc = op.op === 'premul_sum' ? round(dtype, op.factor * xs[0]![i]!) : xs[0]![i]!;
    let abs = Math.abs(acc);
    for (let r = 1; r < xs.length; r++) {
      const x = xs[r]![i]!;
      if (op.op === 'max') acc = x > acc || Number.isNaN(x) ? x : acc;
      else if (op.op === 'premul_sum') {
        const p = round(dtype, op.factor * x);
        acc = round(dtype, acc + p);
        abs += Math.abs(p);
      } else {
        acc = round(dtype, acc + x);
        abs += Math.abs(x);
      }
    }
    if (op.op === 'avg') acc = round(dtype, acc / xs.length);
    value[i] = acc;
    scale[i] = op.op === 'avg' ? abs / xs.length : abs;
  }
  return { value, scale };
}

/** bf16 sum (the only bf16 reduction): float32 accumulation in rank order over the widened values, one rounding. */
function refSumBf16(xs: readonly (readonly number[])[]): { value: number[]; scale: number[] } {
  const n = xs[0]?.length ?? 0;
  const value = new Array<number>(n);
  const scale = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let acc = bf16ToF32(xs[0]![i]!);
    let abs = Math.abs(acc);
    for (let r = 1; r < xs.length; r++) {
      const x = bf16ToF32(xs[r]![i]!);
      acc = Math.fround(acc + x);
      abs += Math.abs(x);
    }
    value[i] = f32ToBf16(acc);
    scale[i] = abs;
  }
  return { value, scale };
}

const GUARD = 3;
const SENTINEL: Record<DType, number> = { float32: -7777.5, float64: -8888.25, int32: -999_999, bfloat16: 0xbeef };
const CTORS = { float32: Float32Array, float64: Float64Array, int32: Int32Array, bfloat16: Uint16Array } as const;

export function dtypeName(a: CommArray): DType {
  return a instanceof Float32Array
    ? 'float32'
    : a instanceof Float64Array
      ? 'float64'
      : a instanceof Uint16Array
        ? 'bfloat16'
        : 'int32';
}

/**
 * A length-n view into a larger buffer whose GUARD elements on either side hold a sentinel; the nonzero byte
 * offset also checks that a transport honours `byteOffset`.
 */
export function alloc(dtype: DType, n: number, shared: boolean, fill?: readonly number[]): CommArray {
  const Ctor = CTORS[dtype];
  const total = n + 2 * GUARD;
  const buf = shared
    ? new SharedArrayBuffer(total * Ctor.BYTES_PER_ELEMENT)
    : new ArrayBuffer(total * Ctor.BYTES_PER_ELEMENT);
  const base = new Ctor(buf as ArrayBuffer);
  base.fill(SENTINEL[dtype]);
  const view = base.subarray(GUARD, GUARD + n);
  if (fill) view.set(fill);
  else view.fill(0);
  return view;
}

/** Returns a description of the first clobbered guard element, or null. */
export function guardViolation(view: CommArray): string | null {
  const dtype = dtypeName(view);
  const Ctor = CTORS[dtype];
  const base = new Ctor(
    view.buffer as ArrayBuffer,
    view.byteOffset - GUARD * Ctor.BYTES_PER_ELEMENT,
    view.length + 2 * GUARD,
  );
  for (let i = 0; i < GUARD; i++) {
    if (base[i] !== SENTINEL[dtype]) return `element ${i - GUARD} (before the view) was overwritten with ${base[i]}`;
    const j = GUARD + view.length + i;
    if (base[j] !== SENTINEL[dtype])
      return `element ${view.length + i} (after the view) was overwritten with ${base[j]}`;
  }
  return null;
}

/** Null if `got` matches `want`, else a description of the first difference. tolerance: 'exact' or relative. */
export function compare(
  got: ArrayLike<number>,
  want: readonly number[],
  tolerance: 'exact' | number,
  scale?: readonly number[],
): string | null {
  if (got.length !== want.length) return `length ${got.length}, expected ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    const a = got[i]!;
    const b = want[i]!;
    if (a === b || (Number.isNaN(a) && Number.isNaN(b))) continue;
    if (tolerance !== 'exact') {
      const s = Math.max(scale?.[i] ?? Math.abs(b), Number.MIN_VALUE);
      if (Math.abs(a - b) <= tolerance * s) continue;
    }
    return `element ${i} is ${a}, expected ${b} (|diff| ${Math.abs(a - b).toExponential(2)}, tolerance ${tolerance})`;
  }
  return null;
}
