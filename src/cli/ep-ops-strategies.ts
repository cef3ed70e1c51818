// The EP dispatch strategies for `moe-actors ep-ops` (ep-ops-rank.ts): dispatch → expert compute → combine and back,
// with the collectives, sizes and layouts of src/actors/expert/ep/, around the models layer's stages (permute, the
// SwiGLU experts of this rank, combine, and their duals) — gates after the experts, as DeepSeek-V3. Written against
// the models layer only, so the check does not move with the actors' code and catches a layout that drifts from
// the single-rank computation. Each strategy returns this rank's routed output, and a backward that returns the
// input and gate gradients (the local experts' weight gradients accumulate into `m.g`).

import type { Communicator } from '../comm/communicator.ts';
import type { DispatchStrategy } from '../protocols/strategies.ts';
import type { Runtime } from '../models/runtime.ts';
import type { SwigluWeights } from '../models/layers/ffn.ts';
import type { RouteResult } from '../models/moe/router.ts';
import { buildPermutation, permuteBackward, permuteForward, type Permutation } from '../models/moe/permute.ts';
import { expertsBackward, expertsForward } from '../models/moe/experts.ts';
import { combineBackward, combineForward } from '../models/moe/combine.ts';

/** This rank's part of the layer. */
export interface RankMoe {
  rt: Runtime;
  N: number;
  D: number;
  H: number;
  K: number;
  E: number;
  L: number;
  P: number;
  me: number;
  x: Float32Array;
  route: RouteResult;
  /** Local experts' weights (L,H,D)/(L,D,H)/(L,H,D) and their gradients (+=). */
  w: SwigluWeights;
  g: SwigluWeights;
}

export interface Forward {
  out: Float32Array;
  backward(dOut: Float32Array): Promise<{ dx: Float32Array; dGates: Float32Array }>;
}

export type Run = (ep: Communicator, m: RankMoe) => Promise<Forward>;

const sum = (a: ArrayLike<number>, from = 0, to = a.length) => {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i]!;
  return s;
};
const times = (xs: number[], k: number) => xs.map((x) => x * k);

/** From the pool: combine takes ownership of its input and releases it there. */
function gather(m: RankMoe, src: Float32Array, idx: Int32Array, n: number): Float32Array {
  const out = m.rt.pool.get(n * m.D);
  m.rt.k.gatherRows(src, idx, out, n, m.D, null);
  return out;
}

function scatter(m: RankMoe, src: Float32Array, idx: Int32Array, n: number, rows: number): Float32Array {
  const out = new Float32Array(rows * m.D);
  m.rt.k.scatterAddRows(src, idx, out, n, m.D, null);
  return out;
}

/** torchtitan's: all_to_all_v counts, rows to the experts' ranks, regroup by local expert, compute, back. */
const a2a: Run = async (ep, m) => {
  const { rt, P, L, D, N, E, H } = m;
  const counts = m.route.counts;
  const mm = new Int32Array(E);
  const equal = new Array<number>(P).fill(L);
  await ep.allToAllV(counts, equal, mm, equal);
  const sendRows = Array.from({ length: P }, (_, j) => sum(counts, j * L, (j + 1) * L));
  const recvRows = Array.from({ length: P }, (_, i) => sum(mm, i * L, (i + 1) * L));
  const Rcv = sum(recvRows);
  const perm = buildPermutation(rt, m.route);
  const rows = permuteForward(rt, perm, m.x, D, false);
  const recv = new Float32Array(Rcv * D);
  await ep.allToAllV(rows, times(sendRows, D), recv, times(recvRows, D));
  // Received order (source, local expert, token) → the experts' (local expert, source, token).
  const regroup = new Int32Array(Rcv);
  const localCounts = new Int32Array(L);
  for (let e = 0, q = 0; e < L; e++) {
    for (let i = 0, base = 0; i < P; base += recvRows[i]!, i++) {
      const off = base + sum(mm, i * L, i * L + e);
      for (let c = 0; c < mm[i * L + e]!; c++) regroup[q++] = off + c;
      localCounts[e] += mm[i * L + e]!;
    }
  }
  const ex = expertsForward(rt, m.w, gather(m, recv, regroup, Rcv), localCounts, D, H);
  const yHome = rt.pool.get(perm.R * D);
  await ep.allToAllV(scatter(m, ex.out, regroup, Rcv, Rcv), times(recvRows, D), yHome, times(sendRows, D));
  const cb = combineForward(rt, perm, yHome, N, D, false);
  return {
    out: cb.out,
    async backward(dOut) {
      const dGates = new Float32Array(N * m.K);
      const dY = combineBackward(rt, perm, cb.ctx, dOut, D, false, dGates);
      const dYr = new Float32Array(Rcv * D);
      await ep.allToAllV(dY, times(sendRows, D), dYr, times(recvRows, D));
      const dLocal = expertsBackward(rt, m.w, m.g, ex.ctx, gather(m, dYr, regroup, Rcv), D, H);
      const dRows = new Float32Array(perm.R * D);
      await ep.allToAllV(scatter(m, dLocal, regroup, Rcv, Rcv), times(recvRows, D), dRows, times(sendRows, D));
      const dx = new Float32Array(N * D);
      permuteBackward(rt, perm, m.x, dRows, D, false, dx, dGates);
      return { dx, dGates };
    },
  };
};

/** The Aurora report's: all_gather counts and rows padded to the largest rank's; backward by reduce_scatter. */
const allgatherPadded: Run = async (ep, m) => {
  const { rt, P, L, E, D, N, H, me } = m;
  const all = new Int32Array(P * E);
  await ep.allGather(m.route.counts, all);
  // Row of source i's sorted rows where expert g starts; rows source i routes.
  const before = (i: number, g: number) => sum(all, i * E, i * E + g);
  const Rmax = Math.max(...Array.from({ length: P }, (_, i) => before(i, E)));
  // Rows each rank's experts compute, in (local expert, source, token) order, and where expert g starts there.
  const Rl = new Array<number>(P).fill(0);
  const startInOwner = new Int32Array(E);
  for (let g = 0; g < E; g++) {
    const j = Math.floor(g / L);
    startInOwner[g] = Rl[j]!;
    for (let i = 0; i < P; i++) Rl[j] += all[i * E + g]!;
  }
  const Rloc = Rl[me]!;
  const RlocMax = Math.max(...Rl);
  const localIdx = new Int32Array(Rloc);
  const localCounts = new Int32Array(L);
  for (let e = 0, q = 0; e < L; e++) {
    const g = me * L + e;
    for (let i = 0; i < P; i++)
      for (let c = 0; c < all[i * E + g]!; c++, localCounts[e]++) localIdx[q++] = i * Rmax + before(i, g) + c;
  }
  const perm = buildPermutation(rt, m.route);
  const homeIdx = new Int32Array(perm.R);
  for (let g = 0, q = 0; g < E; g++) {
    const off =
      Math.floor(g / L) * RlocMax + startInOwner[g]! + sum(Array.from({ length: me }, (_, i) => all[i * E + g]!));
    for (let c = 0; c < all[me * E + g]!; c++) homeIdx[q++] = off + c;
  }
  const rows = permuteForward(rt, perm, m.x, D, false, Rmax);
  const gathered = new Float32Array(P * Rmax * D);
  await ep.allGather(rows, gathered);
  const ex = expertsForward(rt, m.w, gather(m, gathered, localIdx, Rloc), localCounts, D, H);
  const send = new Float32Array(RlocMax * D);
  send.set(ex.out.subarray(0, Rloc * D));
  const ys = new Float32Array(P * RlocMax * D);
  await ep.allGather(send, ys);
  const cb = combineForward(rt, perm, gather(m, ys, homeIdx, perm.R), N, D, false);
  return {
    out: cb.out,
    async backward(dOut) {
      const dGates = new Float32Array(N * m.K);
      const dY = combineBackward(rt, perm, cb.ctx, dOut, D, false, dGates);
      const dYMine = new Float32Array(RlocMax * D);
      await ep.reduceScatter(scatter(m, dY, homeIdx, perm.R, P * RlocMax), dYMine, { op: 'sum' });
      const dLocal = expertsBackward(rt, m.w, m.g, ex.ctx, dYMine, D, H);
      const dRows = new Float32Array(Rmax * D);
      await ep.reduceScatter(scatter(m, dLocal, localIdx, Rloc, P * Rmax), dRows, { op: 'sum' });
      const dx = new Float32Array(N * D);
      permuteBackward(rt, perm, m.x, dRows, D, false, dx, dGates);
      return { dx, dGates };
    },
  };
};

/** Megatron-style: all_gather routing and unrouted tokens, compute local experts, reduce_scatter partial sums. */
const allgatherRs: Run = async (ep, m) => {
  const { rt, P, L, N, K, D, H, me } = m;
  const allIdx = new Int32Array(P * N * K);
  const allGates = new Float32Array(P * N * K);
  await ep.allGather(m.route.topIdx, allIdx);
  await ep.allGather(m.route.gates, allGates);
  // The rows my experts compute, as a permutation of all P·N gathered tokens.
  const lo = me * L;
  const counts = new Int32Array(L);
  for (const g of allIdx) if (g >= lo && g < lo + L) counts[g - lo]++;
  const next = new Int32Array(L);
  for (let e = 1; e < L; e++) next[e] = next[e - 1]! + counts[e - 1]!;
  const R = sum(counts);
  const perm: Permutation = {
    R,
    srcToken: new Int32Array(R),
    slot: new Int32Array(R),
    gatesSorted: new Float32Array(R),
    counts,
  };
  allIdx.forEach((g, j) => {
    if (g < lo || g >= lo + L) return;
    const q = next[g - lo]!++;
    perm.srcToken[q] = Math.floor(j / K);
    perm.slot[q] = j;
    perm.gatesSorted[q] = allGates[j]!;
  });
  const allX = new Float32Array(P * N * D);
  await ep.allGather(m.x, allX);
  const ex = expertsForward(rt, m.w, permuteForward(rt, perm, allX, D, false), counts, D, H);
  const cb = combineForward(rt, perm, ex.out, P * N, D, false);
  const out = new Float32Array(N * D);
  await ep.reduceScatter(cb.out, out, { op: 'sum' });
  return {
    out,
    async backward(dOut) {
      const allD = new Float32Array(P * N * D);
      await ep.allGather(dOut, allD);
      const dGatesAll = new Float32Array(P * N * K);
      const dY = combineBackward(rt, perm, cb.ctx, allD, D, false, dGatesAll);
      const dRows = expertsBackward(rt, m.w, m.g, ex.ctx, dY, D, H);
      const dxAll = new Float32Array(P * N * D);
      rt.k.scatterAddRows(dRows, perm.srcToken, dxAll, R, D, null);
      const dx = new Float32Array(N * D);
      const dGates = new Float32Array(N * K);
      await ep.reduceScatter(dxAll, dx, { op: 'sum' });
      await ep.reduceScatter(dGatesAll, dGates, { op: 'sum' });
      return { dx, dGates };
    },
  };
};

export const RUNS: Record<DispatchStrategy, Run> = {
  a2a,
  'allgather-padded': allgatherPadded,
  'allgather-rs': allgatherRs,
};
