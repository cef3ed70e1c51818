// The working state of one MoE layer for one microbatch on one rank, shared by the stage implementations the
// ExpertShard provides to the moe-layer machine. Forward stages fill it, backward stages consume and release it.

import type { CallSite, Communicator } from '../../../comm/communicator.ts';
import type { MoeLayer } from '../../../models/moe/layer.ts';
import type { RouteCtx, RouteResult } from '../../../models/moe/router.ts';
import type { ExpertsCtx } from '../../../models/moe/experts.ts';
import type { CombineCtx } from '../../../models/moe/combine.ts';
import type { FfnCtx } from '../../../models/layers/ffn.ts';
import type { Runtime } from '../../../models/runtime.ts';

export interface MoeStep {
  readonly layer: MoeLayer;
  readonly rt: Runtime;
  /** The EP group (size 1 for strategy 'local'). */
  readonly ep: Communicator;
  /** Tokens on this rank, dim, top-k, experts, local experts, EP degree. */
  readonly N: number;
  readonly D: number;
  readonly K: number;
  readonly E: number;
  readonly L: number;
  readonly P: number;
  /** Layer input (normed hidden states, N·D); owned by the block. */
  readonly x: Float32Array;
  readonly microbatch: number;
  /** Collective tag prefix ("layer 3 mb 0"). */
  readonly tag: string;

  route?: RouteResult;
  routeCtx?: RouteCtx;
  /** Rows this rank's experts compute, grouped by local expert, and the per-local-expert counts. */
  localRows?: Float32Array;
  localCounts?: Int32Array;
  expertsCtx?: ExpertsCtx;
  /** Local experts' outputs, same order as localRows. */
  yLocal?: Float32Array;
  /** Routed output (N·D), shared expert added by the combine stage. */
  out?: Float32Array;
  combineCtx?: CombineCtx;
  sharedCtx?: FfnCtx | null;

  // backward
  dOut?: Float32Array;
  dGates?: Float32Array;
  /** Gradient into x (N·D): shared expert first, routed paths added. */
  dx?: Float32Array;
  dYLocal?: Float32Array;
  dRowsLocal?: Float32Array;

  /** The strategy's plan (EpDispatch<Plan>), opaque here; undefined before the counts exchange and after release. */
  plan?: unknown;
  /** The error a stage failed with (kept whole: the machine records only its message). */
  error?: unknown;
}

/**
 * One EP dispatch strategy's collectives and local bookkeeping, typed by its own `Plan` (what its counts exchange
 * decides: splits, gather indices, its permutation). `combine` must issue its collective before its first await
 * so that the caller can overlap the shared expert with it (as torchtitan does).
 */
export interface EpDispatch<Plan> {
  /** Every collective names `site`, the moe-layer state that issues it. Returns the layer × microbatch's plan. */
  exchangeCounts(s: MoeStep, site: CallSite): Promise<Plan>;
  /** → s.localRows, s.localCounts (and may release the home rows). */
  dispatch(s: MoeStep, p: Plan, site: CallSite): Promise<void>;
  /** s.yLocal → s.out (routed sum, N·D) and s.combineCtx. */
  combine(s: MoeStep, p: Plan, site: CallSite): Promise<void>;
  /** s.dOut → s.dYLocal; gate grads of score-after-experts into s.dGates. */
  combineGrad(s: MoeStep, p: Plan, site: CallSite): Promise<void>;
  /** s.dRowsLocal → s.dx +=; gate grads of score-before-experts into s.dGates. */
  dispatchGrad(s: MoeStep, p: Plan, site: CallSite): Promise<void>;
  /** Releases what the plan holds (after dispatchGrad, or after a forward whose ctx was dropped). */
  release(s: MoeStep, p: Plan): void;
}

/** A strategy bound to step records: the plan is kept in the record and typed only inside its strategy. */
export interface BoundDispatch {
  exchangeCounts(s: MoeStep, site: CallSite): Promise<void>;
  dispatch(s: MoeStep, site: CallSite): Promise<void>;
  combine(s: MoeStep, site: CallSite): Promise<void>;
  combineGrad(s: MoeStep, site: CallSite): Promise<void>;
  dispatchGrad(s: MoeStep, site: CallSite): Promise<void>;
  release(s: MoeStep): void;
}

export function bindDispatch<Plan>(d: EpDispatch<Plan>): BoundDispatch {
  // The one place the record's plan gets its strategy's type: only `d` ever wrote it.
  const plan = (s: MoeStep) => s.plan as Plan;
  return {
    exchangeCounts: async (s, site) => {
      s.plan = await d.exchangeCounts(s, site);
    },
    dispatch: async (s, site) => {
      // EP 1 has no counts-exchange state: its (collective-free) plan is made here.
      if (s.plan === undefined) s.plan = await d.exchangeCounts(s, site);
      await d.dispatch(s, plan(s), site);
    },
    combine: (s, site) => d.combine(s, plan(s), site),
    combineGrad: (s, site) => d.combineGrad(s, plan(s), site),
    dispatchGrad: (s, site) => d.dispatchGrad(s, plan(s), site),
    release: (s) => {
      if (s.plan !== undefined) d.release(s, plan(s));
      s.plan = undefined;
    },
  };
}

export function sumOf(a: ArrayLike<number>, from = 0, to = a.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i]!;
  return s;
}
