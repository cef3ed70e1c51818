// The tokens, routing and weights of `moe-actors ep-ops`, and the single-rank computation they are checked against.
// Every rank generates every rank's data from (seed, rank, rep), so each can run the whole layer on all P·N tokens
// alone — the models layer's MoE stages called in order (route given, permute, SwiGLU experts, combine, shared
// expert, and their backward duals), on the plain-TypeScript kernels — and compare its own slice of the result with
// what the distributed strategy produced on the native kernels.
//
// Routing is built to hit the corners: top-k distinct experts per token, skewed towards low expert ids (uneven
// counts per expert and per rank), and — when k leaves room — no token routed to the last rank's experts at all.

import { Allocator } from '../tensor/allocator.ts';
import { refKernels } from '../tensor/kernels.ts';
import { paramDtypeOf } from '../tensor/precision.ts';
import { createRuntime, type Runtime } from '../models/runtime.ts';
import { swigluFfnBackward, swigluFfnForward, type SwigluWeights } from '../models/layers/ffn.ts';
import type { RouteResult } from '../models/moe/router.ts';
import { buildPermutation, permuteBackward, permuteForward } from '../models/moe/permute.ts';
import { expertsBackward, expertsForward } from '../models/moe/experts.ts';
import { combineBackward, combineForward } from '../models/moe/combine.ts';

export interface EpOpsShape {
  /** Tokens per rank, ranks, hidden size, expert hidden size, shared expert hidden size (0: none), experts, top-k. */
  N: number;
  P: number;
  D: number;
  H: number;
  Hs: number;
  E: number;
  K: number;
  seed: number;
}

export interface RankTokens {
  x: Float32Array;
  dOut: Float32Array;
  route: RouteResult;
}

export interface Weights {
  /** All E experts: w1, w3 (E,H,D), w2 (E,D,H). */
  experts: SwigluWeights;
  /** Shared expert w1, w3 (Hs,D), w2 (D,Hs); null when Hs = 0. */
  shared: SwigluWeights | null;
}

/** What the layer produced for a set of tokens: output, and the gradients of x, the gates and the weights. */
export interface LayerResult {
  out: Float32Array;
  dx: Float32Array;
  dGates: Float32Array;
  dExperts: SwigluWeights;
  dShared: SwigluWeights | null;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}

const uniform = (r: () => number, n: number, scale: number) =>
  Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);

function swiglu(r: () => number, count: number, D: number, H: number): SwigluWeights {
  return {
    w1: uniform(r, count * H * D, 1 / Math.sqrt(D)),
    w2: uniform(r, count * D * H, 1 / Math.sqrt(H)),
    w3: uniform(r, count * H * D, 1 / Math.sqrt(D)),
  };
}

export function makeWeights(s: EpOpsShape): Weights {
  const r = lcg(s.seed * 31337 + 17);
  return { experts: swiglu(r, s.E, s.D, s.H), shared: s.Hs > 0 ? swiglu(r, 1, s.D, s.Hs) : null };
}

/** Experts a token may pick: all, except the last rank's when k leaves room (that rank then receives no rows). */
export function routableExperts(s: EpOpsShape): number {
  const L = s.E / s.P;
  return s.P > 1 && s.K <= s.E - L ? s.E - L : s.E;
}

export function makeRankTokens(s: EpOpsShape, rank: number, rep: number): RankTokens {
  const { N, D, E, K } = s;
  const r = lcg(s.seed * 7919 + rank * 104729 + rep * 13);
  const x = uniform(r, N * D, 1);
  const dOut = uniform(r, N * D, 1);
  const topIdx = new Int32Array(N * K);
  const gates = new Float32Array(N * K);
  const counts = new Int32Array(E);
  const pick = routableExperts(s);
  for (let t = 0; t < N; t++) {
    const chosen = new Set<number>();
    // Skewed towards low ids: r·r concentrates near 0.
    while (chosen.size < K) chosen.add(Math.min(pick - 1, Math.floor(pick * r() * r() * 1.5)));
    [...chosen].forEach((e, k) => {
      topIdx[t * K + k] = e;
      gates[t * K + k] = 0.25 + r();
      counts[e]!++;
    });
  }
  return { x, dOut, route: { N, K, E, topIdx, gates, counts } };
}

/** Rows each rank's experts receive in this rep (the routing is known everywhere). */
export function rowsPerRank(s: EpOpsShape, all: RankTokens[]): number[] {
  const L = s.E / s.P;
  const rows = new Array<number>(s.P).fill(0);
  for (const t of all) for (const e of t.route.topIdx) rows[Math.floor(e / L)]!++;
  return rows;
}

const zerosLike = (w: SwigluWeights): SwigluWeights => ({
  w1: new Float32Array(w.w1.length),
  w2: new Float32Array(w.w2.length),
  w3: new Float32Array(w.w3.length),
});

/** The shared expert on n rows: forward now, backward later (dx written, weight grads +=). */
export function sharedExpert(rt: Runtime, w: SwigluWeights, x: Float32Array, n: number, D: number, Hs: number) {
  const buf = () => (paramDtypeOf(rt.k) === 'bfloat16' ? new Uint16Array(n * Hs) : new Float32Array(n * Hs));
  const acts = { h1: buf(), h3: buf(), act: buf() };
  const y = new Float32Array(n * D);
  swigluFfnForward(rt.k, w, x, n, D, Hs, acts, y);
  return {
    y,
    backward(dy: Float32Array, g: SwigluWeights): Float32Array {
      const dx = new Float32Array(n * D);
      swigluFfnBackward(rt.k, w, g, x, n, D, Hs, acts, dy, new Float32Array(n * Hs), dx);
      return dx;
    },
  };
}

/** The whole layer on one rank with every expert, on all ranks' tokens in rank order (gates after the experts). */
export function singleRank(s: EpOpsShape, w: Weights, all: RankTokens[]): LayerResult {
  const rt = createRuntime(refKernels, new Allocator());
  const { D, H, Hs, E, K } = s;
  const T = all.length * s.N;
  const cat = <A extends Float32Array | Int32Array>(make: (n: number) => A, part: (t: RankTokens) => A): A => {
    const out = make(all.reduce((n, t) => n + part(t).length, 0));
    let off = 0;
    for (const t of all) {
      out.set(part(t), off);
      off += part(t).length;
    }
    return out;
  };
  const x = cat(
    (n) => new Float32Array(n),
    (t) => t.x,
  );
  const dOut = cat(
    (n) => new Float32Array(n),
    (t) => t.dOut,
  );
  const topIdx = cat(
    (n) => new Int32Array(n),
    (t) => t.route.topIdx,
  );
  const gates = cat(
    (n) => new Float32Array(n),
    (t) => t.route.gates,
  );
  const counts = new Int32Array(E);
  for (const e of topIdx) counts[e]!++;
  const perm = buildPermutation(rt, { N: T, K, E, topIdx, gates, counts });
  const rows = permuteForward(rt, perm, x, D, false);
  const ex = expertsForward(rt, w.experts, rows, counts, D, H);
  const cb = combineForward(rt, perm, ex.out, T, D, false);
  const out = Float32Array.from(cb.out);
  const sh = w.shared ? sharedExpert(rt, w.shared, x, T, D, Hs) : null;
  if (sh) for (let i = 0; i < out.length; i++) out[i]! += sh.y[i]!;

  const dGates = new Float32Array(T * K);
  const dY = combineBackward(rt, perm, cb.ctx, dOut, D, false, dGates);
  const dExperts = zerosLike(w.experts);
  const dRows = expertsBackward(rt, w.experts, dExperts, ex.ctx, dY, D, H);
  const dShared = w.shared ? zerosLike(w.shared) : null;
  const dx = sh ? sh.backward(dOut, dShared!) : new Float32Array(T * D);
  permuteBackward(rt, perm, x, dRows, D, false, dx, dGates);
  return { out, dx: Float32Array.from(dx), dGates, dExperts, dShared };
}

export { zerosLike };
