// EP = 1: this rank holds every expert. The stages are the single-rank MoE layer's, with nothing to send.
import { releasePermutation, type Permutation } from '../../../models/moe/permute.ts';
import type { EpDispatch, MoeStep } from './moe-step.ts';

interface LocalPlan {
  /** Rows sorted by expert and their permutation (from dispatch). */
  perm?: Permutation;
}

export const localDispatch: EpDispatch<LocalPlan> = {
  // Nothing to exchange; the machine skips the state at EP 1 and the plan is made when dispatch first needs it.
  async exchangeCounts() {
    return {};
  },

  async dispatch(s: MoeStep, p: LocalPlan) {
    const { perm, rows } = s.layer.permute(s.rt, s.route!, s.x);
    p.perm = perm;
    s.localRows = rows;
    s.localCounts = s.route!.counts;
  },

  async combine(s: MoeStep, p: LocalPlan) {
    const cb = s.layer.combine(s.rt, p.perm!, s.yLocal!, s.N);
    s.yLocal = undefined; // combine took ownership
    s.out = cb.out;
    s.combineCtx = cb.ctx;
  },

  async combineGrad(s: MoeStep, p: LocalPlan) {
    s.dYLocal = s.layer.combineGrad(s.rt, p.perm!, s.combineCtx!, s.dOut!, s.dGates!);
    s.combineCtx = undefined;
  },

  async dispatchGrad(s: MoeStep, p: LocalPlan) {
    s.layer.dispatchGrad(s.rt, p.perm!, s.x, s.dRowsLocal!, s.dx!, s.dGates!);
  },

  release(s: MoeStep, p: LocalPlan) {
    if (p.perm) releasePermutation(s.rt, p.perm);
  },
};
