// The Aurora report's dispatch for backends without all_to_all: all_gather every rank's per-expert counts, then
// all_gather every rank's routed rows padded to the largest rank's row count; each rank slices the rows of its own
// experts out of the gathered buffer. Combine all_gathers the padded expert outputs and each source picks its
// rows. Backward: the duals of those all_gathers are reduce_scatters (sum) of buffers in which each rank placed
// only its own rows.

import type { CallSite } from '../../../comm/communicator.ts';
import { allGatherRows } from './wire.ts';
import { releasePermutation, type Permutation } from '../../../models/moe/permute.ts';
import type { EpDispatch, MoeStep } from './moe-step.ts';

interface PaddedPlan {
  Rmax: number;
  /** Rows my experts compute, and the max of that over ranks. */
  Rloc: number;
  /** (L) rows each of my local experts computes. */
  localCounts: Int32Array;
  RlocMax: number;
  /** (Rloc) row of the gathered (P·Rmax) buffer of each local row, in (local expert, source, token) order. */
  localIdx: Int32Array;
  /** (R) row of the gathered (P·RlocMax) output buffer holding each of my home rows' outputs. */
  homeIdx: Int32Array;
  /** Home rows sorted by global expert (padded to Rmax) and their permutation (from dispatch). */
  perm?: Permutation;
}

export const allgatherPaddedDispatch: EpDispatch<PaddedPlan> = {
  async exchangeCounts(s: MoeStep, site: CallSite): Promise<PaddedPlan> {
    const { P, E, L, rt } = s;
    const me = s.ep.rank;
    // (P·E) rows rank i routed to expert g, at [i·E + g].
    const all = new Int32Array(P * E);
    await s.ep.allGather(s.route!.counts, all, { tag: `${s.tag} counts`, site });
    // prefix[i][g] = rows of source i before expert g in its sorted order; prefix[i][E] = rows source i routes.
    const prefix = new Int32Array(P * (E + 1));
    for (let i = 0; i < P; i++)
      for (let g = 0; g < E; g++) prefix[i * (E + 1) + g + 1] = prefix[i * (E + 1) + g]! + all[i * E + g]!;
    const R = Array.from({ length: P }, (_, i) => prefix[i * (E + 1) + E]!);
    const Rmax = Math.max(...R);
    // Rows each rank's experts compute, and where expert g's rows start within its owner's output block.
    const Rl = new Array<number>(P).fill(0);
    const startInOwner = new Int32Array(E);
    const localCounts = new Int32Array(L);
    for (let j = 0; j < P; j++) {
      for (let e = 0; e < L; e++) {
        const g = j * L + e;
        startInOwner[g] = Rl[j]!;
        for (let i = 0; i < P; i++) Rl[j] += all[i * E + g]!;
        if (j === me) localCounts[e] = Rl[j]! - startInOwner[g]!;
      }
    }
    const Rloc = Rl[me]!;
    const RlocMax = Math.max(...Rl);
    const localIdx = rt.pool.i32(Rloc);
    let q = 0;
    for (let e = 0; e < L; e++) {
      const g = me * L + e;
      for (let i = 0; i < P; i++) {
        const off = i * Rmax + prefix[i * (E + 1) + g]!;
        const cnt = all[i * E + g]!;
        for (let c = 0; c < cnt; c++) localIdx[q++] = off + c;
      }
    }
    const homeIdx = rt.pool.i32(R[me]!);
    q = 0;
    for (let g = 0; g < E; g++) {
      const j = Math.floor(g / L);
      let off = j * RlocMax + startInOwner[g]!;
      for (let i = 0; i < me; i++) off += all[i * E + g]!;
      const cnt = all[me * E + g]!;
      for (let c = 0; c < cnt; c++) homeIdx[q++] = off + c;
    }
    return { Rmax, Rloc, localCounts, RlocMax, localIdx, homeIdx } satisfies PaddedPlan;
  },

  async dispatch(s: MoeStep, p: PaddedPlan, site: CallSite) {
    const { rt, D, P } = s;
    // Every rank sends Rmax rows: permute pads its own with zero rows in place of a padded copy.
    const { perm, rows } = s.layer.permute(rt, s.route!, s.x, p.Rmax);
    p.perm = perm;
    const gathered = rt.pool.get(P * p.Rmax * D);
    await allGatherRows(rt.k, s.ep, rows, gathered, { tag: `${s.tag} dispatch`, site });
    rt.pool.release(rows);
    const local = rt.pool.get(p.Rloc * D);
    rt.k.gatherRows(gathered, p.localIdx, local, p.Rloc, D, null);
    rt.pool.release(gathered);
    s.localRows = local;
    s.localCounts = p.localCounts;
  },

  combine(s: MoeStep, p: PaddedPlan, site: CallSite): Promise<void> {
    const { rt, D, P, N } = s;
    // This rank's Rloc output rows, then zero rows up to the padded RlocMax (only the padding needs zeroing).
    const send = rt.pool.get(p.RlocMax * D);
    send.set(s.yLocal!.subarray(0, p.Rloc * D));
    send.fill(0, p.Rloc * D);
    rt.pool.release(s.yLocal);
    s.yLocal = undefined;
    const gathered = rt.pool.get(P * p.RlocMax * D);
    const sent = allGatherRows(rt.k, s.ep, send, gathered, { tag: `${s.tag} combine`, site });
    return sent.then(() => {
      rt.pool.release(send);
      const R = p.perm!.R;
      const yHome = rt.pool.get(R * D);
      rt.k.gatherRows(gathered, p.homeIdx, yHome, R, D, null);
      rt.pool.release(gathered);
      const cb = s.layer.combine(rt, p.perm!, yHome, N);
      s.out = cb.out;
      s.combineCtx = cb.ctx;
    });
  },

  async combineGrad(s: MoeStep, p: PaddedPlan, site: CallSite) {
    const { rt, D, P } = s;
    const dY = s.layer.combineGrad(rt, p.perm!, s.combineCtx!, s.dOut!, s.dGates!);
    s.combineCtx = undefined;
    const full = rt.pool.zeros(P * p.RlocMax * D);
    rt.k.scatterAddRows(dY, p.homeIdx, full, p.perm!.R, D, null);
    rt.pool.release(dY);
    const mine = rt.pool.get(p.RlocMax * D);
    await s.ep.reduceScatter(full, mine, { op: 'sum' }, { tag: `${s.tag} combine-grad`, site });
    rt.pool.release(full);
    s.dYLocal = mine;
  },

  async dispatchGrad(s: MoeStep, p: PaddedPlan, site: CallSite) {
    const { rt, D, P } = s;
    const full = rt.pool.zeros(P * p.Rmax * D);
    rt.k.scatterAddRows(s.dRowsLocal!, p.localIdx, full, p.Rloc, D, null);
    const mine = rt.pool.get(p.Rmax * D);
    await s.ep.reduceScatter(full, mine, { op: 'sum' }, { tag: `${s.tag} dispatch-grad`, site });
    rt.pool.release(full);
    s.layer.dispatchGrad(rt, p.perm!, s.x, mine, s.dx!, s.dGates!);
    rt.pool.release(mine);
  },

  release(s: MoeStep, p: PaddedPlan) {
    if (p) {
      s.rt.pool.releaseI32(p.localIdx);
      s.rt.pool.releaseI32(p.homeIdx);
      if (p.perm) releasePermutation(s.rt, p.perm);
    }
  },
};
