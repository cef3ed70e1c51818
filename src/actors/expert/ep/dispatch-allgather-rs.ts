// Megatron-style dispatch (its MoEAllGatherTokenDispatcher; vLLM's AgRsAll2AllManager): all_gather the routing
// (expert ids + gates) and the *unrouted* tokens once — T·D per rank, no k-fold duplication, no padding — then
// every rank permutes locally the rows of its own experts, computes them, scatters the (gate-weighted) outputs
// into a partial output for all P·T tokens, and a reduce_scatter (sum) returns each rank its tokens' routed sum.
// Backward swaps them: all_gather the output grads, reduce_scatter the input grads and the gate grads.
// Needs the same token count on every EP rank (true of every data split moe-actors makes).

import type { CallSite } from '../../../comm/communicator.ts';
import { allGatherRows } from './wire.ts';
import type { EpDispatch, MoeStep } from './moe-step.ts';
import { permuteForward, releasePermutation, scatterGateGrads, type Permutation } from '../../../models/moe/permute.ts';

interface RsPlan {
  /**
   * The rows my experts compute, as a permutation of all P·N gathered tokens (srcToken = source·N + token,
   * slot = global routing slot, counts per local expert): the layer's permute/combine run on it unchanged.
   */
  perm: Permutation;
  /** Unscaled input rows (score before experts: needed for the gate grads). */
  xLocal: Float32Array | null;
  /** (P·N·K) gate grads of all tokens' slots that my experts served. */
  dGatesAll: Float32Array | null;
}

const sbeOf = (s: MoeStep) => s.layer.spec.args.score_before_experts;

export const allgatherRsDispatch: EpDispatch<RsPlan> = {
  async exchangeCounts(s: MoeStep, site: CallSite): Promise<RsPlan> {
    const { rt, P, N, K, L } = s;
    const me = s.ep.rank;
    const allIdx = new Int32Array(P * N * K);
    const allGates = rt.pool.get(P * N * K);
    await Promise.all([
      s.ep.allGather(s.route!.topIdx, allIdx, { tag: `${s.tag} routing ids`, site }),
      s.ep.allGather(s.route!.gates, allGates, { tag: `${s.tag} routing gates`, site }),
    ]);
    const lo = me * L;
    const counts = new Int32Array(L);
    for (let j = 0; j < allIdx.length; j++) {
      const e = allIdx[j]! - lo;
      if (e >= 0 && e < L) counts[e]++;
    }
    let R = 0;
    const next = new Int32Array(L);
    for (let e = 0; e < L; e++) {
      next[e] = R;
      R += counts[e]!;
    }
    const srcToken = rt.pool.i32(R);
    const slot = rt.pool.i32(R);
    const gatesSorted = rt.pool.get(R);
    for (let j = 0; j < allIdx.length; j++) {
      const e = allIdx[j]! - lo;
      if (e < 0 || e >= L) continue;
      const q = next[e]!++;
      srcToken[q] = (j / K) | 0;
      slot[q] = j;
      gatesSorted[q] = allGates[j]!;
    }
    rt.pool.release(allGates);
    return { perm: { R, srcToken, slot, gatesSorted, counts }, xLocal: null, dGatesAll: null } satisfies RsPlan;
  },

  async dispatch(s: MoeStep, p: RsPlan, site: CallSite) {
    const { rt, P, N, D } = s;
    const allX = rt.pool.get(P * N * D);
    await allGatherRows(rt.k, s.ep, s.x, allX, { tag: `${s.tag} dispatch`, site });
    const sbe = sbeOf(s);
    const local = permuteForward(rt, p.perm, allX, D, sbe);
    // The gate grads need x[srcToken]; gathering just those rows now frees allX before backward.
    if (sbe) p.xLocal = permuteForward(rt, p.perm, allX, D, false);
    rt.pool.release(allX);
    s.localRows = local;
    s.localCounts = p.perm.counts;
  },

  combine(s: MoeStep, p: RsPlan, site: CallSite): Promise<void> {
    const { rt, P, N, D } = s;
    // The partial output covers every rank's tokens; the reduce_scatter sums and returns each rank its own.
    const cb = s.layer.combine(rt, p.perm, s.yLocal!, P * N);
    s.yLocal = undefined; // combine took ownership
    s.combineCtx = cb.ctx;
    const out = rt.pool.get(N * D);
    const sent = s.ep.reduceScatter(cb.out, out, { op: 'sum' }, { tag: `${s.tag} combine`, site });
    return sent.then(() => {
      rt.pool.release(cb.out);
      s.out = out;
    });
  },

  async combineGrad(s: MoeStep, p: RsPlan, site: CallSite) {
    const { rt, P, N, D, K } = s;
    const allD = rt.pool.get(P * N * D);
    await allGatherRows(rt.k, s.ep, s.dOut!, allD, { tag: `${s.tag} combine-grad`, site });
    p.dGatesAll = rt.pool.zeros(P * N * K);
    s.dYLocal = s.layer.combineGrad(rt, p.perm, s.combineCtx!, allD, p.dGatesAll);
    s.combineCtx = undefined;
    rt.pool.release(allD);
  },

  async dispatchGrad(s: MoeStep, p: RsPlan, site: CallSite) {
    const { rt, P, N, D, K } = s;
    const sbe = sbeOf(s);
    const { perm } = p;
    const dxAll = rt.pool.zeros(P * N * D);
    rt.k.scatterAddRows(s.dRowsLocal!, perm.srcToken, dxAll, perm.R, D, sbe ? perm.gatesSorted : null);
    if (sbe) {
      // The layer's permuteBackward would need all gathered tokens; row r of xLocal is already x[srcToken[r]].
      const dots = rt.pool.get(perm.R);
      const ident = rt.pool.i32(perm.R);
      for (let r = 0; r < perm.R; r++) ident[r] = r;
      rt.k.gatherRowDot(p.xLocal!, ident, s.dRowsLocal!, dots, perm.R, D);
      scatterGateGrads(perm, dots, p.dGatesAll!);
      rt.pool.releaseI32(ident);
      rt.pool.release(dots);
    }
    const dxMine = rt.pool.get(N * D);
    const dgMine = rt.pool.get(N * K);
    await Promise.all([
      s.ep.reduceScatter(dxAll, dxMine, { op: 'sum' }, { tag: `${s.tag} dispatch-grad x`, site }),
      s.ep.reduceScatter(p.dGatesAll!, dgMine, { op: 'sum' }, { tag: `${s.tag} dispatch-grad gates`, site }),
    ]);
    rt.pool.release(dxAll);
    rt.k.add(s.dx!, dxMine, s.dx!, N * D);
    rt.k.add(s.dGates!, dgMine, s.dGates!, N * K);
    rt.pool.release(dxMine);
    rt.pool.release(dgMine);
  },

  release(s: MoeStep, p: RsPlan) {
    if (p) {
      const pool = s.rt.pool;
      releasePermutation(s.rt, p.perm);
      if (p.xLocal) pool.release(p.xLocal);
      if (p.dGatesAll) pool.release(p.dGatesAll);
    }
  },
};
