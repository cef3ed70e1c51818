// Megatron-style dispatch (its MoEAllGatherTokenDispatcher; vLLM's AgRsAll2AllManager): all_gather the routing
// (expert ids + gates) and the *unrouted* tokens once — T·D per rank, no k-fold duplication, no padding — then
// every rank permutes locally the rows of its own experts, computes them, scatters the (gate-weighted) outputs
// into a partial output for all P·T tokens, and a reduce_scatter (sum) returns each rank its tokens' routed sum.
// Backward swaps them: all_gather the output grads, reduce_scatter the input grads and the gate grads.
// Needs the same token count on every EP rank (true of every data split moe-actors makes).

import type { EpDispatch, MoeStep } from './moe-step.ts';

interface RsPlan {
  /** Rows my experts compute. */
  Rloc: number;
  /** (Rloc) global token (source·N + token) of each local row, grouped by local expert, token ascending. */
  tok: Int32Array;
  /** (Rloc) global routing slot (token·K + k). */
  slot: Int32Array;
  /** (Rloc) gate of each local row. */
  gate: Float32Array;
  counts: Int32Array;
  /** Unscaled input rows (score before experts: needed for the gate grads). */
  xLocal: Float32Array | null;
  /** (P·N·K) gate grads of all tokens' slots that my experts served. */
  dGatesAll: Float32Array | null;
}

const plan = (s: MoeStep) => s.plan as RsPlan;
const sbeOf = (s: MoeStep) => s.layer.spec.args.score_before_experts;

export const allgatherRsDispatch: EpDispatch = {
  async exchangeCounts(s: MoeStep) {
    const { rt, P, N, K, L } = s;
    const me = s.ep.rank;
    const allIdx = new Int32Array(P * N * K);
    const allGates = rt.pool.get(P * N * K);
    await Promise.all([
      s.ep.allGather(s.route!.topIdx, allIdx, { tag: `${s.tag} routing ids` }),
      s.ep.allGather(s.route!.gates, allGates, { tag: `${s.tag} routing gates` }),
    ]);
    const lo = me * L;
    const counts = new Int32Array(L);
    for (let j = 0; j < allIdx.length; j++) {
      const e = allIdx[j]! - lo;
      if (e >= 0 && e < L) counts[e]++;
    }
    let Rloc = 0;
    const next = new Int32Array(L);
    for (let e = 0; e < L; e++) {
      next[e] = Rloc;
      Rloc += counts[e]!;
    }
    const tok = rt.pool.i32(Rloc);
    const slot = rt.pool.i32(Rloc);
    const gate = rt.pool.get(Rloc);
    for (let j = 0; j < allIdx.length; j++) {
      const e = allIdx[j]! - lo;
      if (e < 0 || e >= L) continue;
      const q = next[e]!++;
      tok[q] = (j / K) | 0;
      slot[q] = j;
      gate[q] = allGates[j]!;
    }
    rt.pool.release(allGates);
    s.plan = { Rloc, tok, slot, gate, counts, xLocal: null, dGatesAll: null } satisfies RsPlan;
  },

  async dispatch(s: MoeStep) {
    const p = plan(s);
    const { rt, P, N, D } = s;
    const allX = rt.pool.get(P * N * D);
    await s.ep.allGather(s.x, allX, { tag: `${s.tag} dispatch` });
    const sbe = sbeOf(s);
    const local = rt.pool.get(p.Rloc * D);
    rt.k.gatherRows(allX, p.tok, local, p.Rloc, D, sbe ? p.gate : null);
    if (sbe) {
      p.xLocal = rt.pool.get(p.Rloc * D);
      rt.k.gatherRows(allX, p.tok, p.xLocal, p.Rloc, D, null);
    }
    rt.pool.release(allX);
    s.localRows = local;
    s.localCounts = p.counts;
  },

  combine(s: MoeStep): Promise<void> {
    const p = plan(s);
    const { rt, P, N, D } = s;
    const sbe = sbeOf(s);
    const partial = rt.pool.zeros(P * N * D);
    rt.k.scatterAddRows(s.yLocal!, p.tok, partial, p.Rloc, D, sbe ? null : p.gate);
    if (sbe) {
      rt.pool.release(s.yLocal);
      s.yLocal = undefined;
    } // else kept: the gate grads need the outputs
    const out = rt.pool.get(N * D);
    const sent = s.ep.reduceScatter(partial, out, { op: 'sum' }, { tag: `${s.tag} combine` });
    return sent.then(() => {
      rt.pool.release(partial);
      s.out = out;
    });
  },

  async combineGrad(s: MoeStep) {
    const p = plan(s);
    const { rt, P, N, D, K } = s;
    const sbe = sbeOf(s);
    const allD = rt.pool.get(P * N * D);
    await s.ep.allGather(s.dOut!, allD, { tag: `${s.tag} combine-grad` });
    const dY = rt.pool.get(p.Rloc * D);
    rt.k.gatherRows(allD, p.tok, dY, p.Rloc, D, sbe ? null : p.gate);
    p.dGatesAll = rt.pool.zeros(P * N * K);
    if (!sbe) {
      const dots = rt.pool.get(p.Rloc);
      rt.k.gatherRowDot(allD, p.tok, s.yLocal!, dots, p.Rloc, D);
      for (let r = 0; r < p.Rloc; r++) p.dGatesAll[p.slot[r]!] += dots[r]!;
      rt.pool.release(dots);
      rt.pool.release(s.yLocal);
      s.yLocal = undefined;
    }
    rt.pool.release(allD);
    s.dYLocal = dY;
  },

  async dispatchGrad(s: MoeStep) {
    const p = plan(s);
    const { rt, P, N, D, K } = s;
    const sbe = sbeOf(s);
    const dxAll = rt.pool.zeros(P * N * D);
    rt.k.scatterAddRows(s.dRowsLocal!, p.tok, dxAll, p.Rloc, D, sbe ? p.gate : null);
    if (sbe) {
      const dots = rt.pool.get(p.Rloc);
      const ident = rt.pool.i32(p.Rloc);
      for (let r = 0; r < p.Rloc; r++) ident[r] = r;
      rt.k.gatherRowDot(p.xLocal!, ident, s.dRowsLocal!, dots, p.Rloc, D);
      for (let r = 0; r < p.Rloc; r++) p.dGatesAll![p.slot[r]!] += dots[r]!;
      rt.pool.releaseI32(ident);
      rt.pool.release(dots);
    }
    const dxMine = rt.pool.get(N * D);
    const dgMine = rt.pool.get(N * K);
    await Promise.all([
      s.ep.reduceScatter(dxAll, dxMine, { op: 'sum' }, { tag: `${s.tag} dispatch-grad x` }),
      s.ep.reduceScatter(p.dGatesAll!, dgMine, { op: 'sum' }, { tag: `${s.tag} dispatch-grad gates` }),
    ]);
    rt.pool.release(dxAll);
    rt.k.add(s.dx!, dxMine, s.dx!, N * D);
    rt.k.add(s.dGates!, dgMine, s.dGates!, N * K);
    rt.pool.release(dxMine);
    rt.pool.release(dgMine);
  },

  release(s: MoeStep) {
    const p = s.plan as RsPlan | undefined;
    if (p) {
      const pool = s.rt.pool;
      pool.releaseI32(p.tok);
      pool.releaseI32(p.slot);
      pool.release(p.gate);
      if (p.xLocal) pool.release(p.xLocal);
      if (p.dGatesAll) pool.release(p.dGatesAll);
    }
    s.plan = undefined;
  },
};
