// torchtitan's dispatch (torchtitan-semantics.md §4.3–4.4): all_to_all the per-local-expert counts, all_to_all_v the routed rows
// (sorted by global expert, so each destination's rows are contiguous), regroup the received rows from
// (source rank, local expert) order to (local expert, source rank) order, compute, and send the outputs back the
// same way. Backward: the same collectives with the splits swapped.

import type { CallSite } from '../../../comm/communicator.ts';
import type { EpDispatch, MoeStep } from './moe-step.ts';
import { sumOf } from './moe-step.ts';
import { allToAllRows } from './wire.ts';
import { releasePermutation, type Permutation } from '../../../models/moe/permute.ts';

interface A2aPlan {
  /** (P·L) rows rank i sends to my local expert e, at [i·L + e]. */
  m: Int32Array;
  /** Rows I send to rank j / receive from rank i. */
  sendRows: number[];
  recvRows: number[];
  /** Rows received. */
  Rcv: number;
  /** (Rcv) position in the received buffer of the p-th row in (local expert, source) order. */
  regroup?: Int32Array;
  /** Home rows sorted by global expert (N·K, D) and their permutation (from dispatch). */
  perm?: Permutation;
}

const times = (xs: number[], k: number) => xs.map((x) => x * k);

/** Puts rows of `src` (Rcv,D) in received order back from (local expert, source) order: out[regroup[p]] = src[p]. */
function unRegroup(s: MoeStep, src: Float32Array, p: A2aPlan): Float32Array {
  const out = s.rt.pool.zeros(p.Rcv * s.D);
  s.rt.k.scatterAddRows(src, p.regroup!, out, p.Rcv, s.D, null);
  return out;
}

export const a2aDispatch: EpDispatch<A2aPlan> = {
  async exchangeCounts(s: MoeStep, site: CallSite): Promise<A2aPlan> {
    const { P, L, E } = s;
    const counts = s.route!.counts;
    const m = new Int32Array(E);
    const equal = new Array<number>(P).fill(L);
    await s.ep.allToAllV(counts, equal, m, equal, { tag: `${s.tag} counts`, site });
    const sendRows: number[] = [];
    const recvRows: number[] = [];
    for (let j = 0; j < P; j++) {
      sendRows.push(sumOf(counts, j * L, (j + 1) * L));
      recvRows.push(sumOf(m, j * L, (j + 1) * L));
    }
    return { m, sendRows, recvRows, Rcv: sumOf(recvRows) } satisfies A2aPlan;
  },

  async dispatch(s: MoeStep, p: A2aPlan, site: CallSite) {
    const { rt, D, L, P } = s;
    const { perm, rows } = s.layer.permute(rt, s.route!, s.x);
    p.perm = perm;
    const recv = rt.pool.get(p.Rcv * D);
    await allToAllRows(rt.k, s.ep, rows, times(p.sendRows, D), recv, times(p.recvRows, D), {
      tag: `${s.tag} dispatch`,
      site,
    });
    rt.pool.release(rows);
    // Received order: (source i, local expert e, token); experts want (e, i, token).
    const regroup = rt.pool.i32(p.Rcv);
    const localCounts = new Int32Array(L);
    const base = new Array<number>(P).fill(0);
    for (let i = 1; i < P; i++) base[i] = base[i - 1]! + p.recvRows[i - 1]!;
    let q = 0;
    for (let e = 0; e < L; e++) {
      for (let i = 0; i < P; i++) {
        let off = base[i]!;
        for (let e2 = 0; e2 < e; e2++) off += p.m[i * L + e2]!;
        const cnt = p.m[i * L + e]!;
        for (let c = 0; c < cnt; c++) regroup[q++] = off + c;
        localCounts[e] += cnt;
      }
    }
    p.regroup = regroup;
    const local = rt.pool.get(p.Rcv * D);
    rt.k.gatherRows(recv, regroup, local, p.Rcv, D, null);
    rt.pool.release(recv);
    s.localRows = local;
    s.localCounts = localCounts;
  },

  combine(s: MoeStep, p: A2aPlan, site: CallSite): Promise<void> {
    const { rt, D, N, K } = s;
    const yRecv = unRegroup(s, s.yLocal!, p);
    rt.pool.release(s.yLocal);
    s.yLocal = undefined;
    const yHome = rt.pool.get(N * K * D);
    const sent = allToAllRows(rt.k, s.ep, yRecv, times(p.recvRows, D), yHome, times(p.sendRows, D), {
      tag: `${s.tag} combine`,
      site,
    });
    return sent.then(() => {
      rt.pool.release(yRecv);
      const cb = s.layer.combine(rt, p.perm!, yHome, N);
      s.out = cb.out;
      s.combineCtx = cb.ctx;
    });
  },

  async combineGrad(s: MoeStep, p: A2aPlan, site: CallSite) {
    const { rt, D } = s;
    const dY = s.layer.combineGrad(rt, p.perm!, s.combineCtx!, s.dOut!, s.dGates!);
    s.combineCtx = undefined;
    const recv = rt.pool.get(p.Rcv * D);
    await allToAllRows(rt.k, s.ep, dY, times(p.sendRows, D), recv, times(p.recvRows, D), {
      tag: `${s.tag} combine-grad`,
      site,
    });
    rt.pool.release(dY);
    const local = rt.pool.get(p.Rcv * D);
    rt.k.gatherRows(recv, p.regroup!, local, p.Rcv, D, null);
    rt.pool.release(recv);
    s.dYLocal = local;
  },

  async dispatchGrad(s: MoeStep, p: A2aPlan, site: CallSite) {
    const { rt, D, N, K } = s;
    const dRecv = unRegroup(s, s.dRowsLocal!, p);
    const dRows = rt.pool.get(N * K * D);
    await allToAllRows(rt.k, s.ep, dRecv, times(p.recvRows, D), dRows, times(p.sendRows, D), {
      tag: `${s.tag} dispatch-grad`,
      site,
    });
    rt.pool.release(dRecv);
    s.layer.dispatchGrad(rt, p.perm!, s.x, dRows, s.dx!, s.dGates!);
    rt.pool.release(dRows);
  },

  release(s: MoeStep, p: A2aPlan) {
    if (p?.regroup) s.rt.pool.releaseI32(p.regroup);
    if (p?.perm) releasePermutation(s.rt, p.perm);
  },
};
