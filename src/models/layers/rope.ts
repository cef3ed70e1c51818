// RoPE tables (torchtitan-semantics.md §1.6 Llama4 scaling, §2.5 DeepSeek-V3 YaRN), computed as torch does in float32: Math.fround
// after every operation torch performs on a float32 tensor, so the tables match torch's to the last ulp except where
// torch's own cos/sin/pow differ from correctly rounded ones (≈1e-7 relative, torchtitan-semantics.md §8.14).
// Application (adjacent pairs, rotation by ±φ) is the `rope` kernel; the layers call it on their q/k slices.

import type { RopeSpec } from '../spec.ts';

const f = Math.fround;

export interface RopeTable {
  /** Rotary dim (pairs = dim/2). */
  dim: number;
  /** Positions covered (= max_seq_len); a batch with S ≤ seqLen uses the first S rows. */
  seqLen: number;
  /** (seqLen, dim/2) row-major. */
  cos: Float32Array;
  sin: Float32Array;
  /** The frequencies after scaling, for tests. */
  freqs: Float32Array;
}

/** f_i = 1 / θ^((2i)/dim) in float32. */
export function baseFreqs(dim: number, theta: number): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(half);
  const th = f(theta);
  for (let i = 0; i < half; i++) {
    const ex = f((2 * i) / dim);
    out[i] = f(1 / f(Math.pow(th, ex)));
  }
  return out;
}

/** Llama4's apply_scaling, with torch.where select semantics (the medium band may divide by zero: it is masked). */
export function llama4ScaledFreqs(
  freqs: Float32Array,
  s: {
    scaling_factor: number;
    low_freq_factor: number;
    high_freq_factor: number;
    original_max_position_embeddings: number;
  },
): Float32Array {
  const out = new Float32Array(freqs.length);
  const sf = f(s.scaling_factor);
  const lowF = f(s.low_freq_factor);
  const orig = s.original_max_position_embeddings;
  const lowWavelen = f(orig / s.low_freq_factor);
  const highWavelen = f(orig / s.high_freq_factor);
  const twoPi = f(2 * Math.PI);
  const denom = f(s.high_freq_factor - s.low_freq_factor);
  for (let i = 0; i < freqs.length; i++) {
    const f0 = freqs[i]!;
    const wavelen = f(twoPi / f0);
    const f1 = wavelen > lowWavelen ? f(f0 / sf) : f0;
    const smooth = f(f(f(orig) / wavelen) - lowF) / denom;
    const smoothF = f(smooth);
    const smoothed = f(f(f(f(1 - smoothF) * f1) / sf) + f(smoothF * f1));
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    out[i] = medium ? smoothed : f1;
  }
  return out;
}

/** DeepSeek-V3's YaRN correction, applied when seqLen > originalSeqLen. */
export function yarnFreqs(
  freqs: Float32Array,
  dim: number,
  theta: number,
  originalSeqLen: number,
  factor: number,
  betaFast: number,
  betaSlow: number,
): Float32Array {
  const corr = (rot: number): number => (dim * Math.log(originalSeqLen / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  const low = Math.max(Math.floor(corr(betaFast)), 0);
  let high = Math.min(Math.ceil(corr(betaSlow)), dim - 1);
  if (low === high) high += 0.001;
  const span = f(high - low);
  const fac = f(factor);
  const out = new Float32Array(freqs.length);
  for (let i = 0; i < freqs.length; i++) {
    const lin = f(f(i - low) / span);
    const ramp = Math.min(Math.max(lin, 0), 1);
    const smooth = f(1 - ramp);
    out[i] = f(f(f(freqs[i]! / fac) * f(1 - smooth)) + f(freqs[i]! * smooth));
  }
  return out;
}

export function ropeFreqs(spec: RopeSpec): Float32Array {
  const base = baseFreqs(spec.dim, spec.theta);
  if (spec.kind === 'llama4') return spec.scaling ? llama4ScaledFreqs(base, spec.scaling) : base;
  if (spec.seqLen > spec.originalSeqLen) {
    return yarnFreqs(base, spec.dim, spec.theta, spec.originalSeqLen, spec.factor, spec.betaFast, spec.betaSlow);
  }
  return base;
}

/** cos/sin of φ[p,i] = fp32(p · f_i) for p < seqLen. */
export function buildRopeTable(spec: RopeSpec): RopeTable {
  const freqs = ropeFreqs(spec);
  const half = spec.dim / 2;
  const S = spec.seqLen;
  const cos = new Float32Array(S * half);
  const sin = new Float32Array(S * half);
  for (let p = 0; p < S; p++) {
    const fp = f(p);
    for (let i = 0; i < half; i++) {
      const phi = f(fp * freqs[i]!);
      cos[p * half + i] = Math.cos(phi);
      sin[p * half + i] = Math.sin(phi);
    }
  }
  return { dim: spec.dim, seqLen: S, cos, sin, freqs };
}

/** Throws when a batch of sequence length S is longer than the table: the rope kernel would read rows that do not exist. */
export function checkRopeLength(rope: RopeTable, S: number): void {
  if (S > rope.seqLen) {
    throw new Error(
      `sequence length ${S} exceeds the RoPE table (max_seq_len = ${rope.seqLen}); raise training.seq_len`,
    );
  }
}
