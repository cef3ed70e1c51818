// MoE stage "route" and its dual "routerGrad" (torchtitan-semantics.md §3.3 steps 1–10, §9 items 1–4).
//
// Forward, for X (N,D) and gate W (E,D):
//   logits = X·Wᵀ (+ b)                                  (sgemm)
//   s = sigmoid(logits) | softmax over E                 (fp32)
//   c = s + expert_bias   (selection only)               node-limited groups mask c to −∞ outside the best groups
//   idx (N,K) = top-k of c; ties → lower expert id; the K slots ordered by descending c
//   w = s[idx] (unbiased) → / (Σ_k w + 1e-20) if route_norm → · route_scale
//   counts (E) = bincount(idx)
// Backward: dW (N,K) → through route_scale, route_norm, the gather and sigmoid/softmax to dlogits (N,E), then
//   dGate += dlogitsᵀ·X, dX += dlogits·W. No gradient reaches expert_bias or the counts.
//
// The per-token selection (top-k, groups) is O(N·E) scalar work next to the O(N·E·D) gate sgemm: it stays in TS.

import type { Runtime } from '../runtime.ts';
import type { MoEArgs } from './args.ts';
import { linearBwdInput, linearBwdWeight, linearFwd, type Operand } from '../layers/linear.ts';

/** The routing decision of one microbatch on one rank: plain arrays, ready to be exchanged or saved. */
export interface RouteResult {
  N: number;
  K: number;
  E: number;
  /** (N·K) expert ids, token-major: slot j = n·K + k. */
  topIdx: Int32Array;
  /** (N·K) final gate weights (after route_norm and route_scale), fp32. */
  gates: Float32Array;
  /** (E) tokens routed to each expert (bincount of topIdx). */
  counts: Int32Array;
}

export interface RouteCtx {
  /** The gate product's input as it read it (under bf16 compute possibly the caller's bf16 rounding; not owned). */
  x: Operand;
  /** (N,E) fp32 scores s. */
  scores: Float32Array;
  /** (N·K) gathered unbiased scores before route_norm/route_scale. */
  raw: Float32Array;
}

export interface RouterParams {
  gate: Float32Array;
  gateBias: Float32Array | null;
  expertBias: Float32Array | null;
}

export interface RouterGrads {
  gate: Float32Array;
  gateBias: Float32Array | null;
}

const f = Math.fround;

// x (N,D; f32, or its bf16 rounding under bf16 compute) → RouteResult (owned by the caller: release with
// releaseRoute) + ctx
export function routeForward(
  rt: Runtime,
  args: MoEArgs,
  p: RouterParams,
  x: Operand,
  N: number,
  D: number,
): { route: RouteResult; ctx: RouteCtx } {
  const E = args.num_experts;
  const K = args.top_k;
  const scores = rt.pool.get(N * E);
  linearFwd(rt.k, x, p.gate, scores, N, D, E);
  if (p.gateBias)
    for (let n = 0; n < N; n++) for (let e = 0; e < E; e++) scores[n * E + e] = f(scores[n * E + e]! + p.gateBias[e]!);
  if (args.score_func === 'sigmoid') {
    for (let i = 0; i < N * E; i++) scores[i] = 1 / (1 + Math.exp(-scores[i]!));
  } else {
    for (let n = 0; n < N; n++) {
      const o = n * E;
      let m = -Infinity;
      for (let e = 0; e < E; e++) m = Math.max(m, scores[o + e]!);
      let sum = 0;
      for (let e = 0; e < E; e++) sum += Math.exp(scores[o + e]! - m);
      for (let e = 0; e < E; e++) scores[o + e] = Math.exp(scores[o + e]! - m) / sum;
    }
  }

  const topIdx = rt.pool.i32(N * K);
  const raw = rt.pool.get(N * K);
  const gates = rt.pool.get(N * K);
  const counts = rt.pool.i32(E);
  counts.fill(0);
  const sel = new Float32Array(E);
  const G = args.num_expert_groups;
  const groupScore = G ? new Float64Array(G) : null;
  const groupKeep = G ? new Uint8Array(G) : null;
  for (let n = 0; n < N; n++) {
    const o = n * E;
    if (args._debug_force_load_balance) {
      for (let kk = 0; kk < K; kk++) topIdx[n * K + kk] = (n * K + kk) % E;
    } else {
      for (let e = 0; e < E; e++) sel[e] = p.expertBias ? f(scores[o + e]! + p.expertBias[e]!) : scores[o + e]!;
      if (G) limitGroups(sel, E, G, args.num_limited_groups!, groupScore!, groupKeep!);
      topK(sel, E, K, topIdx, n * K);
    }
    for (let kk = 0; kk < K; kk++) {
      const e = topIdx[n * K + kk]!;
      raw[n * K + kk] = scores[o + e]!;
      counts[e]!++;
    }
  }
  // route_norm then route_scale, in fp32 as torch.
  const rs = f(args.route_scale);
  for (let n = 0; n < N; n++) {
    let denom = 1;
    if (args.route_norm) {
      let s = 0;
      for (let kk = 0; kk < K; kk++) s = f(s + raw[n * K + kk]!);
      denom = f(s + 1e-20);
    }
    for (let kk = 0; kk < K; kk++) {
      const w = args.route_norm ? f(raw[n * K + kk]! / denom) : raw[n * K + kk]!;
      gates[n * K + kk] = f(w * rs);
    }
  }
  return { route: { N, K, E, topIdx, gates, counts }, ctx: { x, scores, raw } };
}

/** Keeps the `limited` groups with the largest top-2 sums (ties → lower group id); masks the rest to −∞. */
function limitGroups(
  sel: Float32Array,
  E: number,
  G: number,
  limited: number,
  score: Float64Array,
  keep: Uint8Array,
): void {
  const per = E / G;
  for (let g = 0; g < G; g++) {
    let a = -Infinity;
    let b = -Infinity;
    for (let e = g * per; e < (g + 1) * per; e++) {
      const v = sel[e]!;
      if (v > a) {
        b = a;
        a = v;
      } else if (v > b) b = v;
    }
    score[g] = f(a + b);
  }
  keep.fill(0);
  for (let t = 0; t < limited; t++) {
    let best = -1;
    for (let g = 0; g < G; g++) if (!keep[g] && (best < 0 || score[g]! > score[best]!)) best = g;
    keep[best] = 1;
  }
  for (let g = 0; g < G; g++) if (!keep[g]) sel.fill(-Infinity, g * per, (g + 1) * per);
}

/** K largest of sel[0..E) by descending value, ties → lower index, written to out[at..at+K). */
function topK(sel: Float32Array, E: number, K: number, out: Int32Array, at: number): void {
  for (let kk = 0; kk < K; kk++) {
    let best = -1;
    let bv = -Infinity;
    for (let e = 0; e < E; e++) {
      const v = sel[e]!;
      if (v > bv || (best < 0 && v === bv)) {
        // an expert already taken is marked NaN below, which never compares greater
        best = e;
        bv = v;
      }
    }
    if (best < 0)
      throw new Error('MoE router: no finite selection score left (the router scores contain NaN: training diverged?)');
    out[at + kk] = best;
    sel[best] = NaN;
  }
}

// dGates (N·K) → dx (N,D) += , dGate (E,D) += ; releases ctx (not the route)
export function routeBackward(
  rt: Runtime,
  args: MoEArgs,
  p: RouterParams,
  g: RouterGrads,
  ctx: RouteCtx,
  route: RouteResult,
  dGates: Float32Array,
  dx: Float32Array,
  D: number,
): void {
  const { N, K, E, topIdx } = route;
  const { scores, raw } = ctx;
  const dl = rt.pool.zeros(N * E);
  const rs = args.route_scale;
  for (let n = 0; n < N; n++) {
    const base = n * K;
    let sumRaw = 0;
    let dot = 0;
    if (args.route_norm) {
      for (let kk = 0; kk < K; kk++) {
        sumRaw = f(sumRaw + raw[base + kk]!);
        dot += dGates[base + kk]! * rs * raw[base + kk]!;
      }
    }
    const denom = f(sumRaw + 1e-20);
    for (let kk = 0; kk < K; kk++) {
      const dw = dGates[base + kk]! * rs;
      const dRaw = args.route_norm ? dw / denom - dot / (denom * denom) : dw;
      dl[n * E + topIdx[base + kk]!] += dRaw;
    }
  }
  // Through the score function, in place: dl ← dlogits.
  if (args.score_func === 'sigmoid') {
    for (let i = 0; i < N * E; i++) {
      const s = scores[i]!;
      dl[i] = dl[i]! * s * (1 - s);
    }
  } else {
    for (let n = 0; n < N; n++) {
      const o = n * E;
      let dot = 0;
      for (let e = 0; e < E; e++) dot += dl[o + e]! * scores[o + e]!;
      for (let e = 0; e < E; e++) dl[o + e] = scores[o + e]! * (dl[o + e]! - dot);
    }
  }
  linearBwdWeight(rt.k, dl, ctx.x, g.gate, N, D, E);
  linearBwdInput(rt.k, dl, p.gate, dx, N, D, E, 1);
  if (g.gateBias) for (let n = 0; n < N; n++) for (let e = 0; e < E; e++) g.gateBias[e] += dl[n * E + e]!;
  rt.pool.release(dl);
  releaseRouteCtx(rt, ctx);
}

export function releaseRouteCtx(rt: Runtime, ctx: RouteCtx): void {
  rt.pool.release(ctx.scores);
  rt.pool.release(ctx.raw);
}

export function releaseRoute(rt: Runtime, route: RouteResult): void {
  rt.pool.releaseI32(route.topIdx);
  rt.pool.release(route.gates);
  rt.pool.releaseI32(route.counts);
}
