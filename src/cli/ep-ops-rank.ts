// The rank program of `moe-actors ep-ops`: for each EP dispatch strategy (ep-ops-strategies.ts), the MoE layer's
// dispatch → expert compute → combine and its backward on the world as the EP group, with real SwiGLU experts
// (small weights), top-k routing that is uneven and leaves one rank without rows, and a shared expert; each rank
// checks its slice of the output, the input and gate gradients, its local experts' weight gradients and the
// (all-reduced) shared expert's weight gradients against the single-rank computation of all ranks' tokens
// (ep-ops-data.ts). A strategy the capabilities cannot run is reported with the planner's reason.

import type { RankContext } from '../comm/launch.ts';
import type { Communicator } from '../comm/communicator.ts';
import { Allocator } from '../tensor/allocator.ts';
import { getKernels } from '../tensor/kernels.ts';
import { createRuntime } from '../models/runtime.ts';
import type { SwigluWeights } from '../models/layers/ffn.ts';
import { DISPATCH_STRATEGIES, strategyBlocker, type DispatchStrategy } from '../protocols/strategies.ts';
import { RUNS } from './ep-ops-strategies.ts';
import {
  makeRankTokens,
  makeWeights,
  rowsPerRank,
  sharedExpert,
  singleRank,
  zerosLike,
  type EpOpsShape,
  type LayerResult,
} from './ep-ops-data.ts';

export interface EpOpsArgs {
  /** Tokens per rank, hidden size, expert and shared-expert hidden sizes (0: no shared expert). */
  tokens: number;
  dim: number;
  hidden: number;
  sharedHidden: number;
  /** Experts (a multiple of the ranks), experts per token. */
  experts: number;
  topk: number;
  reps: number;
  seed: number;
  strategies?: DispatchStrategy[];
}

export const CHECKS = [
  'forward: output',
  'backward: input grad',
  'backward: gate grad',
  'backward: expert weight grads',
  'backward: shared expert grads',
] as const;
export type CheckName = (typeof CHECKS)[number];

export interface EpOpsStrategyResult {
  strategy: DispatchStrategy;
  /** Why the capabilities cannot run it (nothing was issued), or null. */
  blocker: string | null;
  /**
   * Per check and rank (gathered, so every rank — rank 0 under mpiexec — reports the whole world): the largest
   * |got − single rank| / max |single rank| over that rank's slice, all reps.
   */
  errors: Partial<Record<CheckName, number[]>>;
  /** Per rank, the median forward and backward wall ms of the timed reps. */
  fwdMs: number[];
  bwdMs: number[];
  /** Bytes this rank sent + received, and collective calls, per rep (forward + backward). */
  bytes: number;
  calls: number;
}

export interface EpOpsRankResult {
  rank: number;
  size: number;
  backend: string;
  /** Rows each rank's experts received in the first rep. */
  rowsPerRank: number[];
  results: EpOpsStrategyResult[];
}

function relErr(got: Float32Array, ref: Float32Array, from = 0, n = ref.length - from): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < n; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - ref[from + i]!));
    scale = Math.max(scale, Math.abs(ref[from + i]!));
  }
  if (got.length !== n || Number.isNaN(worst)) return Infinity;
  return worst / (scale || 1);
}

const slice = (w: SwigluWeights, e0: number, L: number, D: number, H: number): SwigluWeights => ({
  w1: w.w1.subarray(e0 * H * D, (e0 + L) * H * D),
  w2: w.w2.subarray(e0 * D * H, (e0 + L) * D * H),
  w3: w.w3.subarray(e0 * H * D, (e0 + L) * H * D),
});
const flat = (w: SwigluWeights) => {
  const out = new Float32Array(w.w1.length + w.w2.length + w.w3.length);
  out.set(w.w1);
  out.set(w.w2, w.w1.length);
  out.set(w.w3, w.w1.length + w.w2.length);
  return out;
};

/** Forward and backward of one strategy on this rank's tokens; the errors against the single-rank result. */
async function runOnce(
  ep: Communicator,
  s: EpOpsShape,
  strategy: DispatchStrategy,
  rep: number,
  timed: (f: number, b: number) => void,
) {
  const me = ep.rank;
  const L = s.E / s.P;
  const w = makeWeights(s);
  const all = Array.from({ length: s.P }, (_, i) => makeRankTokens(s, i, rep));
  const mine = all[me]!;
  const rt = createRuntime(getKernels(), new Allocator());
  const g = zerosLike(slice(w.experts, 0, L, s.D, s.H));
  const dShared = w.shared ? zerosLike(w.shared) : null;
  await ep.barrier();
  const t0 = performance.now();
  const fwd = await RUNS[strategy](ep, {
    rt,
    N: s.N,
    D: s.D,
    H: s.H,
    K: s.K,
    E: s.E,
    L,
    P: s.P,
    me,
    x: mine.x,
    route: mine.route,
    w: slice(w.experts, me * L, L, s.D, s.H),
    g,
  });
  const sh = w.shared ? sharedExpert(rt, w.shared, mine.x, s.N, s.D, s.Hs) : null;
  const out = Float32Array.from(fwd.out);
  if (sh) rt.k.add(out, sh.y, out, out.length);
  const t1 = performance.now();
  const { dx, dGates } = await fwd.backward(mine.dOut);
  if (sh) rt.k.add(dx, sh.backward(mine.dOut, dShared!), dx, dx.length);
  timed(t1 - t0, performance.now() - t1);
  // The shared expert's gradient is the sum over every rank's tokens (the data-parallel reduce, untimed).
  const dSharedAll = dShared ? flat(dShared) : null;
  if (dSharedAll) await ep.allReduce(dSharedAll, { op: 'sum' });

  const ref: LayerResult = singleRank(s, w, all);
  const ND = s.N * s.D;
  const errors: Partial<Record<CheckName, number>> = {
    'forward: output': relErr(out, ref.out, me * ND, ND),
    'backward: input grad': relErr(dx, ref.dx, me * ND, ND),
    'backward: gate grad': relErr(dGates, ref.dGates, me * s.N * s.K, s.N * s.K),
    'backward: expert weight grads': relErr(flat(g), flat(slice(ref.dExperts, me * L, L, s.D, s.H))),
  };
  if (dSharedAll) errors['backward: shared expert grads'] = relErr(dSharedAll, flat(ref.dShared!));
  return { errors, rows: rowsPerRank(s, all) };
}

export async function rankMain(ctx: RankContext<EpOpsArgs>): Promise<EpOpsRankResult> {
  const ep = ctx.world;
  const a = ctx.args;
  if (a.experts % ep.size !== 0)
    throw new Error(
      `--experts ${a.experts} must be a multiple of the ${ep.size} ranks (each rank holds experts/ranks of them)`,
    );
  const s: EpOpsShape = {
    N: a.tokens,
    P: ep.size,
    D: a.dim,
    H: a.hidden,
    Hs: a.sharedHidden,
    E: a.experts,
    K: a.topk,
    seed: a.seed,
  };
  const strategies = a.strategies ?? DISPATCH_STRATEGIES;
  const results: EpOpsStrategyResult[] = [];
  let rows: number[] = [];
  // Per strategy: fwd ms, bwd ms, then one error per check (NaN: not checked) — gathered from every rank below.
  const W = 2 + CHECKS.length;
  const mine = new Float64Array(strategies.length * W).fill(NaN);
  for (const [si, strategy] of strategies.entries()) {
    const blocker = strategyBlocker(strategy, ep.capabilities);
    const r: EpOpsStrategyResult = { strategy, blocker, errors: {}, fwdMs: [], bwdMs: [], bytes: 0, calls: 0 };
    results.push(r);
    if (blocker) continue;
    const fwd: number[] = [];
    const bwd: number[] = [];
    const worst = new Map<CheckName, number>();
    // Rep −1 warms up (first calls, JIT) and is checked but not timed.
    for (let rep = -1; rep < a.reps; rep++) {
      const b0 = { ...ep.bytes };
      const once = await runOnce(ep, s, strategy, rep + 1, (f, b) => {
        if (rep >= 0) {
          fwd.push(f);
          bwd.push(b);
        }
        // Less the barrier that lines the ranks up (one call, no bytes).
        r.bytes = ep.bytes.sent + ep.bytes.received - b0.sent - b0.received;
        r.calls = ep.bytes.calls - b0.calls - 1;
      });
      if (rep === -1) rows = once.rows;
      for (const [k, v] of Object.entries(once.errors) as [CheckName, number][])
        worst.set(k, Math.max(worst.get(k) ?? 0, v));
    }
    mine[si * W] = median(fwd);
    mine[si * W + 1] = median(bwd);
    CHECKS.forEach((c, ci) => {
      if (worst.has(c)) mine[si * W + 2 + ci] = worst.get(c)!;
    });
  }
  const world = new Float64Array(ep.size * mine.length);
  await ep.allGather(mine, world);
  for (const [si, r] of results.entries()) {
    if (r.blocker) continue;
    const at = (rank: number, j: number) => world[rank * mine.length + si * W + j]!;
    const ranks = Array.from({ length: ep.size }, (_, i) => i);
    r.fwdMs = ranks.map((i) => at(i, 0));
    r.bwdMs = ranks.map((i) => at(i, 1));
    CHECKS.forEach((c, ci) => {
      if (!Number.isNaN(at(0, 2 + ci))) r.errors[c] = ranks.map((i) => at(i, 2 + ci));
    });
  }
  return { rank: ctx.rank, size: ep.size, backend: ep.backend, rowsPerRank: rows, results };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
