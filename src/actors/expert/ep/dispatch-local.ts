// EP = 1: this rank holds every expert. The stages are the single-rank MoE layer's, with nothing to send.
import type { EpDispatch, MoeStep } from './moe-step.ts';

export const localDispatch: EpDispatch<undefined> = {
  async exchangeCounts() {
    return undefined;
  },

  async dispatch(s: MoeStep) {
    const { perm, rows } = s.layer.permute(s.rt, s.route!, s.x);
    s.perm = perm;
    s.localRows = rows;
    s.localCounts = s.route!.counts;
  },

  async combine(s: MoeStep) {
    const cb = s.layer.combine(s.rt, s.perm!, s.yLocal!, s.N);
    s.yLocal = undefined; // combine took ownership
    s.out = cb.out;
    s.combineCtx = cb.ctx;
  },

  async combineGrad(s: MoeStep) {
    s.dYLocal = s.layer.combineGrad(s.rt, s.perm!, s.combineCtx!, s.dOut!, s.dGates!);
    s.combineCtx = undefined;
  },

  async dispatchGrad(s: MoeStep) {
    s.layer.dispatchGrad(s.rt, s.perm!, s.x, s.dRowsLocal!, s.dx!, s.dGates!);
  },

  release() {},
};
