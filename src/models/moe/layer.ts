// The MoE layer (torchtitan's MoE, for-loop experts) as the stages of the moe-layer protocol:
//   route → [exchangeCounts] → dispatch (permute + [send]) → compute → combine ([send back] + unsort/weight) + shared
//   backward: combineGrad → computeGrad → dispatchGrad → routerGrad (+ shared expert grad)
// The bracketed steps are collectives and belong to the distributed layer; on one rank with every expert they are
// identities, and forward()/backward() below are exactly the stage methods called in order — no second code path.
//
// Stage data (all plain arrays, N tokens, K = top_k, E experts, L local experts, R = N·K rows, D = dim):
//   route    x (N,D)                         → RouteResult {topIdx (N·K) i32, gates (N·K) f32, counts (E) i32}
//   dispatch RouteResult, x                  → Permutation {srcToken, slot (R) i32, gatesSorted (R), counts (E)},
//                                              rows (R,D) grouped by expert (scaled by gates if score_before_experts)
//   compute  rows (R',D), counts (L) i32      → y (R',D)            (R' = rows this rank's experts received)
//   combine  Permutation, y (R,D) back home  → out (N,D)
//   duals    dOut (N,D) → dY (R,D) [+ dGates (N·K)] → dRows (R,D) → dx (N,D) [+ dGates] → dx += router path

import type { Runtime } from '../runtime.ts';
import type { MoeSpec } from '../spec.ts';
import type { ExpertRange, ParamUnit } from '../params/unit.ts';
import { FeedForward, type FfnCtx, type SwigluWeights } from '../layers/ffn.ts';
import { type Operand, releaseRounded, roundOnce } from '../layers/linear.ts';
import {
  releaseRoute,
  releaseRouteCtx,
  routeBackward,
  routeForward,
  type RouteCtx,
  type RouteResult,
} from './router.ts';
import { buildPermutation, permuteBackward, permuteForward, releasePermutation, type Permutation } from './permute.ts';
import { expertsBackward, expertsForward, releaseExpertsCtx, type ExpertsCtx } from './experts.ts';
import { combineBackward, combineForward, releaseCombineCtx, type CombineCtx } from './combine.ts';

export interface MoeBuffers {
  /** (E) selection bias; null when load_balance_coeff is None. */
  expertBias: Float32Array | null;
  /** (E) fp32 running counts since the last bias update. */
  tokensPerExpert: Float32Array;
}

export interface MoeCtx {
  x: Float32Array;
  /** x rounded once under bf16 compute for the router's and the shared expert's products (x itself under f32). */
  xm: Operand;
  N: number;
  route: RouteResult;
  routeCtx: RouteCtx;
  perm: Permutation;
  rows: Float32Array;
  experts: ExpertsCtx;
  combine: CombineCtx;
  shared: FfnCtx | null;
}

export class MoeLayer {
  readonly prefix: string;
  readonly shared: FeedForward | null;
  readonly experts: ExpertRange;

  constructor(
    readonly spec: MoeSpec,
    readonly layerId: number,
    private readonly blockUnit: ParamUnit,
    private readonly expertUnit: ParamUnit,
    readonly buffers: MoeBuffers,
    readonly D: number,
  ) {
    this.prefix = `layers.${layerId}.moe`;
    const E = spec.args.num_experts;
    this.experts = expertUnit.layout.experts ?? { start: 0, count: E };
    this.shared =
      spec.sharedHidden > 0 ? new FeedForward(blockUnit, `${this.prefix}.shared_experts`, D, spec.sharedHidden) : null;
    if (buffers.tokensPerExpert.length !== E)
      throw new Error(`${this.prefix}: tokens_per_expert has ${buffers.tokensPerExpert.length} entries, expected ${E}`);
  }

  /** Whether this rank holds every expert (then forward()/backward() run the layer alone). */
  get holdsAllExperts(): boolean {
    return this.experts.start === 0 && this.experts.count === this.spec.args.num_experts;
  }

  private get sbe(): boolean {
    return this.spec.args.score_before_experts;
  }

  private routerParams() {
    const u = this.blockUnit;
    const bias = `${this.prefix}.router.gate.bias`;
    return {
      gate: u.p(`${this.prefix}.router.gate.weight`),
      gateBias: u.layout.has(bias) ? u.p(bias) : null,
      expertBias: this.buffers.expertBias,
    };
  }

  /** Gradient views are only touched in backward: under FSDP a forward runs without gradient storage. */
  private routerGrads() {
    const u = this.blockUnit;
    const bias = `${this.prefix}.router.gate.bias`;
    return { gate: u.g(`${this.prefix}.router.gate.weight`), gateBias: u.layout.has(bias) ? u.g(bias) : null };
  }

  /** Local expert weights (L,H,D)/(L,D,H)/(L,H,D). */
  expertWeights(): SwigluWeights {
    const u = this.expertUnit;
    const n = (i: number): string => `${this.prefix}.experts.w${i}`;
    return { w1: u.p(n(1)), w2: u.p(n(2)), w3: u.p(n(3)) };
  }

  /** Their gradients (backward only: under FSDP a forward runs without gradient storage). */
  expertGrads(): SwigluWeights {
    const u = this.expertUnit;
    const n = (i: number): string => `${this.prefix}.experts.w${i}`;
    return { w1: u.g(n(1)), w2: u.g(n(2)), w3: u.g(n(3)) };
  }

  // ---- forward stages ----

  /** Stage route: x (N,D) → routing; adds the counts to tokens_per_expert (every forward, recompute included). */
  route(rt: Runtime, x: Operand, N: number): { route: RouteResult; ctx: RouteCtx } {
    const r = routeForward(rt, this.spec.args, this.routerParams(), x, N, this.D);
    const t = this.buffers.tokensPerExpert;
    for (let e = 0; e < t.length; e++) t[e] = Math.fround(t[e]! + r.route.counts[e]!);
    return r;
  }

  /** Stage dispatch, local half: rows grouped by global expert id, zero-padded to `capacity` rows if given. */
  permute(
    rt: Runtime,
    route: RouteResult,
    x: Float32Array,
    capacity?: number,
  ): { perm: Permutation; rows: Float32Array } {
    const perm = buildPermutation(rt, route);
    return { perm, rows: permuteForward(rt, perm, x, this.D, this.sbe, capacity) };
  }

  /** Stage compute on this rank's local experts: rows (Σcounts, D) grouped by local expert, counts (L). */
  compute(rt: Runtime, rows: Float32Array, counts: Int32Array): { out: Float32Array; ctx: ExpertsCtx } {
    if (counts.length !== this.experts.count) {
      throw new Error(
        `${this.prefix}: compute got counts for ${counts.length} experts, this rank holds ${this.experts.count}`,
      );
    }
    return expertsForward(rt, this.expertWeights(), rows, counts, this.D, this.spec.hidden);
  }

  /** Stage combine, local half: expert outputs (R,D) in dispatch order → out (N,D). Takes ownership of y. */
  combine(rt: Runtime, perm: Permutation, y: Float32Array, N: number): { out: Float32Array; ctx: CombineCtx } {
    return combineForward(rt, perm, y, N, this.D, this.sbe);
  }

  /** The shared expert on all tokens (overlaps the combine collective in the distributed layer). */
  sharedForward(rt: Runtime, x: Operand, N: number): { out: Float32Array; ctx: FfnCtx } | null {
    return this.shared ? this.shared.forward(rt, x, N) : null;
  }

  // ---- backward stages ----

  /** combineGrad: dOut (N,D) → dY (R,D); dGates += when the gates weight the outputs. */
  combineGrad(rt: Runtime, perm: Permutation, ctx: CombineCtx, dOut: Float32Array, dGates: Float32Array): Float32Array {
    return combineBackward(rt, perm, ctx, dOut, this.D, this.sbe, dGates);
  }

  /** computeGrad: dY (R',D) → dRows (R',D); expert weight grads +=. */
  computeGrad(rt: Runtime, ctx: ExpertsCtx, dY: Float32Array): Float32Array {
    const w = this.expertWeights();
    const g = this.expertGrads();
    return expertsBackward(rt, w, g, ctx, dY, this.D, this.spec.hidden);
  }

  /** dispatchGrad, local half: dRows (R,D) → dx (N,D) +=; dGates += when the gates scaled the inputs. */
  dispatchGrad(
    rt: Runtime,
    perm: Permutation,
    x: Float32Array,
    dRows: Float32Array,
    dx: Float32Array,
    dGates: Float32Array,
  ): void {
    permuteBackward(rt, perm, x, dRows, this.D, this.sbe, dx, dGates);
  }

  /** routerGrad: dGates (N·K) → dx (N,D) +=, gate grads +=. Releases the route ctx. */
  routerGrad(rt: Runtime, ctx: RouteCtx, route: RouteResult, dGates: Float32Array, dx: Float32Array): void {
    routeBackward(rt, this.spec.args, this.routerParams(), this.routerGrads(), ctx, route, dGates, dx, this.D);
  }

  // ---- single rank: the stages in order ----

  // x (N,D) → out (N,D) (caller owns)
  forward(rt: Runtime, x: Float32Array, N: number): { out: Float32Array; ctx: MoeCtx } {
    this.requireAllExperts();
    // Under bf16 the router's and the shared expert's products read x rounded once here (four roundings inside
    // the products otherwise: both, forward and weight gradient); the row gathers read f32.
    const xm = roundOnce(rt.k, rt.pool, x, N * this.D);
    const r = this.route(rt, xm, N);
    const { perm, rows } = this.permute(rt, r.route, x);
    const ex = this.compute(rt, rows, r.route.counts);
    const cb = this.combine(rt, perm, ex.out, N);
    const sh = this.sharedForward(rt, xm, N);
    if (sh) {
      rt.k.add(cb.out, sh.out, cb.out, N * this.D);
      rt.pool.release(sh.out);
    }
    return {
      out: cb.out,
      ctx: {
        x,
        xm,
        N,
        route: r.route,
        routeCtx: r.ctx,
        perm,
        rows,
        experts: ex.ctx,
        combine: cb.ctx,
        shared: sh?.ctx ?? null,
      },
    };
  }

  // dOut (N,D) → dx (N,D) (caller owns); releases ctx
  backward(rt: Runtime, ctx: MoeCtx, dOut: Float32Array): Float32Array {
    const { N, route, perm } = ctx;
    const dGates = rt.pool.zeros(N * route.K);
    const dY = this.combineGrad(rt, perm, ctx.combine, dOut, dGates);
    const dRows = this.computeGrad(rt, ctx.experts, dY);
    rt.pool.release(dY);
    rt.pool.release(ctx.rows);
    const dx = this.shared ? this.shared.backward(rt, ctx.shared!, dOut) : rt.pool.zeros(N * this.D);
    this.dispatchGrad(rt, perm, ctx.x, dRows, dx, dGates);
    rt.pool.release(dRows);
    this.routerGrad(rt, ctx.routeCtx, route, dGates, dx);
    releaseRounded(rt.pool, ctx.xm);
    rt.pool.release(dGates);
    releasePermutation(rt, perm);
    releaseRoute(rt, route);
    return dx;
  }

  release(rt: Runtime, ctx: MoeCtx): void {
    releaseRouteCtx(rt, ctx.routeCtx);
    releaseExpertsCtx(rt, ctx.experts);
    releaseCombineCtx(rt, ctx.combine);
    if (ctx.shared) this.shared!.release(rt, ctx.shared);
    releaseRounded(rt.pool, ctx.xm);
    rt.pool.release(ctx.rows);
    releasePermutation(rt, ctx.perm);
    releaseRoute(rt, ctx.route);
  }

  private requireAllExperts(): void {
    if (!this.holdsAllExperts) {
      throw new Error(
        `${this.prefix}: this rank holds experts [${this.experts.start}, ${this.experts.start + this.experts.count}) of ` +
          `${this.spec.args.num_experts}; a single-rank forward needs all of them. Drive the MoE stages (route, permute, ` +
          `compute, combine) through an EP dispatch instead.`,
      );
    }
  }
}
