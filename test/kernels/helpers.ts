// Test helpers for the kernels: seeded data and error measures.
import { expect } from 'vitest';

/** mulberry32: small, fast, seeded; fast-check chooses the seed so failures replay. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform in [−amp, amp). */
export function randF32(n: number, r: () => number, amp = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * amp;
  return a;
}

export function randF64(n: number, r: () => number, amp = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * amp;
  return a;
}

export function randInts(n: number, limit: number, r: () => number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(r() * limit);
  return a;
}

/**
 * max|got − want| / max(max|want|, floor): the "max-abs over max-abs" measure of the numerics contract. It judges
 * an error against the tensor's scale, so entries that cancel to ≈0 do not make a correct float32 result fail.
 */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-30): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} vs ${want.length}`);
  let num = 0;
  let den = floor;
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (Number.isNaN(g) !== Number.isNaN(w)) return Infinity;
    num = Math.max(num, Math.abs(g - w));
    den = Math.max(den, Math.abs(w));
  }
  return num / den;
}

export function expectClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  what: string,
  floor = 1e-30,
): void {
  const e = relErr(got, want, floor);
  if (!(e <= tol)) expect.fail(`${what}: relative error ${e.toExponential(3)} > ${tol}`);
}

export function expectExact(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (g !== w && !(Number.isNaN(g) && Number.isNaN(w))) expect.fail(`${what}[${i}]: ${got[i]} !== ${want[i]}`);
  }
  expect(got.length).toBe(want.length);
}
