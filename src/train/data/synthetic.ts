// Seeded synthetic token documents: a fixed random Markov chain, so that a model can learn something and the loss
// falls (from ≈ ln V towards the chain's entropy), without any file.
//
// The chain ("the language") depends only on the seed: every token t has K = 4 preferred successors
// succ(t, k) = hash(seed, t, k) mod V. A step moves to one of them (uniformly) with probability 0.85, and to a
// uniform random token otherwise. The entropy rate is ≈ 0.85·ln(4/0.85) + 0.15·ln(V/0.15) nats (≈ 2.75 for
// V = 2048), far below the ln V ≈ 7.6 of uniform noise, and a bigram model already reaches it.
//
// Document i of data-parallel rank r is a chain of exactly `docTokens` tokens drawn from a generator seeded by
// (seed, r, i): deterministic, independent per rank, and random-access — so the data state needs only the
// document index. The loader uses docTokens = seq_len + 1, so each document is exactly one training sample.

import type { DocumentSource } from './documents.ts';

const SUCCESSORS = 4;
const P_FOLLOW = 0.85;

/** 32-bit avalanche hash (the murmur3 finalizer) of a combination of words. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hash3(a: number, b: number, c: number): number {
  return mix(Math.imul(mix(Math.imul(mix(a ^ 0x9e3779b9), 31) ^ b), 31) ^ c);
}

/** mulberry32: small, fast, good enough for data (not for cryptography). */
class Rng {
  constructor(private s: number) {}
  next(): number {
    this.s = (this.s + 0x6d2b79f5) | 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export interface SyntheticOptions {
  seed: number;
  /** Data-parallel rank: ranks draw different documents from the same chain. */
  rank: number;
  vocabSize: number;
  docTokens: number;
}

export class SyntheticSource implements DocumentSource {
  readonly numDocs = Infinity;
  readonly description: string;
  readonly fingerprint: string;

  constructor(readonly opts: SyntheticOptions) {
    const { vocabSize, docTokens, seed, rank } = opts;
    if (!(Number.isInteger(vocabSize) && vocabSize >= 2))
      throw new RangeError(`synthetic data: vocabSize must be an integer ≥ 2 (got ${vocabSize})`);
    if (!(Number.isInteger(docTokens) && docTokens >= 1))
      throw new RangeError(`synthetic data: docTokens must be a positive integer (got ${docTokens})`);
    if (!Number.isInteger(seed) || !Number.isInteger(rank))
      throw new RangeError('synthetic data: seed and rank must be integers');
    this.fingerprint = `synthetic:seed ${seed}:vocab ${vocabSize}:${docTokens} tokens per document`;
    this.description = `synthetic Markov chain (seed ${seed}, vocab ${vocabSize}, ${docTokens} tokens per document)`;
  }

  /** The k-th preferred successor of token t (exposed for tests and for computing the chain's entropy). */
  successor(t: number, k: number): number {
    return hash3(this.opts.seed, t, k) % this.opts.vocabSize;
  }

  doc(i: number): Int32Array {
    if (!(Number.isInteger(i) && i >= 0))
      throw new RangeError(`synthetic document index must be an integer ≥ 0 (got ${i})`);
    const { vocabSize: V, docTokens: n, seed, rank } = this.opts;
    // i can exceed 2^32 only after 4 billion documents; fold the high bits in so indices stay distinct anyway.
    const rng = new Rng(hash3(seed ^ 0x5eed, rank, (i >>> 0) ^ Math.floor(i / 4294967296)));
    const out = new Int32Array(n);
    let t = Math.floor(rng.next() * V);
    out[0] = t;
    for (let j = 1; j < n; j++) {
      const u = rng.next();
      if (u < P_FOLLOW) t = this.successor(t, Math.floor((u / P_FOLLOW) * SUCCESSORS));
      else t = Math.floor(rng.next() * V);
      out[j] = t;
    }
    return out;
  }
}

/** Entropy rate (nats/token) of the chain, assuming distinct successors: the loss a perfect model reaches. */
export function syntheticEntropy(vocabSize: number): number {
  const pSucc = P_FOLLOW / SUCCESSORS + (1 - P_FOLLOW) / vocabSize;
  const pOther = (1 - P_FOLLOW) / vocabSize;
  return -(SUCCESSORS * pSucc * Math.log(pSucc) + (vocabSize - SUCCESSORS) * pOther * Math.log(pOther));
}
