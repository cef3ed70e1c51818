// The data movement of each EP dispatch strategy for `moe-actors ep-ops` (ep-ops-rank.ts): the collectives,
// sizes and layouts of src/actors/ep/ on plain arrays, with the experts reduced to y = (e+1)·x and the gate
// applied after them, forward (exchangeCounts, dispatch, combine) and backward (combineGrad, dispatchGrad; the gate
// gradients are left out). Each returns this rank's routed output and input gradient.

import type { Communicator } from '../comm/communicator.ts';
import type { DispatchStrategy } from '../protocols/strategies.ts';

/** A token's routing and data; the same on every rank for (rank, seed), so results are reproducible. */
export interface Local {
  N: number;
  D: number;
  K: number;
  E: number;
  L: number;
  P: number;
  me: number;
  x: Float32Array;
  dOut: Float32Array;
  idx: Int32Array;
  gates: Float32Array;
}

/** Slots (t·K + k) sorted by expert, stable: the layout of routed rows everywhere below. */
function sortedSlots(l: Local): Int32Array {
  const slots = Int32Array.from({ length: l.N * l.K }, (_, i) => i);
  return slots.sort((a, b) => l.idx[a]! - l.idx[b]! || a - b);
}

function countsOf(l: Local): Int32Array {
  const c = new Int32Array(l.E);
  for (const e of l.idx) c[e]!++;
  return c;
}

const sum = (a: ArrayLike<number>, from = 0, to = a.length) => {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i]!;
  return s;
};

function axpyRow(dst: Float32Array, di: number, src: Float32Array, si: number, a: number, D: number): void {
  for (let d = 0; d < D; d++) dst[di * D + d] += a * src[si * D + d]!;
}

function copyRow(dst: Float32Array, di: number, src: Float32Array, si: number, D: number, a = 1): void {
  for (let d = 0; d < D; d++) dst[di * D + d] = a * src[si * D + d]!;
}

export type Run = (ep: Communicator, l: Local) => Promise<{ out: Float32Array; dx: Float32Array }>;

/** torchtitan's: all_to_all_v counts, rows to the experts' ranks and back; backward the same with splits swapped. */
const a2a: Run = async (ep, l) => {
  const { P, L, D, me } = l;
  const counts = countsOf(l);
  const m = new Int32Array(l.E);
  const equal = new Array<number>(P).fill(L);
  await ep.allToAllV(counts, equal, m, equal);
  const sendRows = Array.from({ length: P }, (_, j) => sum(counts, j * L, (j + 1) * L));
  const recvRows = Array.from({ length: P }, (_, i) => sum(m, i * L, (i + 1) * L));
  const slots = sortedSlots(l);
  const rows = new Float32Array(slots.length * D);
  slots.forEach((s, p) => copyRow(rows, p, l.x, Math.floor(s / l.K), D));
  const R = sum(recvRows);
  const recv = new Float32Array(R * D);
  const xD = (a: number[]) => a.map((v) => v * D);
  await ep.allToAllV(rows, xD(sendRows), recv, xD(recvRows));
  // Received order: (source i, local expert e, row); the expert of each received row from m.
  const expertOf = new Int32Array(R);
  let q = 0;
  for (let i = 0; i < P; i++) for (let e = 0; e < L; e++) for (let c = 0; c < m[i * L + e]!; c++) expertOf[q++] = me * L + e;
  const y = new Float32Array(R * D);
  for (let p = 0; p < R; p++) copyRow(y, p, recv, p, D, expertOf[p]! + 1);
  const yHome = new Float32Array(slots.length * D);
  await ep.allToAllV(y, xD(recvRows), yHome, xD(sendRows));
  const out = new Float32Array(l.N * D);
  slots.forEach((s, p) => axpyRow(out, Math.floor(s / l.K), yHome, p, l.gates[s]!, D));
  // Backward: dY of each slot = gate · dOut[token], to the experts; dRow = (e+1)·dY, back; dx += dRow.
  const dY = new Float32Array(slots.length * D);
  slots.forEach((s, p) => copyRow(dY, p, l.dOut, Math.floor(s / l.K), D, l.gates[s]!));
  const dYr = new Float32Array(R * D);
  await ep.allToAllV(dY, xD(sendRows), dYr, xD(recvRows));
  for (let p = 0; p < R; p++) for (let d = 0; d < D; d++) dYr[p * D + d] *= expertOf[p]! + 1;
  const dRows = new Float32Array(slots.length * D);
  await ep.allToAllV(dYr, xD(recvRows), dRows, xD(sendRows));
  const dx = new Float32Array(l.N * D);
  slots.forEach((s, p) => axpyRow(dx, Math.floor(s / l.K), dRows, p, 1, D));
  return { out, dx };
};

/** The Aurora report's: all_gather counts and padded rows, slice locally; backward by reduce_scatter. */
const allgatherPadded: Run = async (ep, l) => {
  const { P, L, E, D, me } = l;
  const counts = countsOf(l);
  const all = new Int32Array(P * E);
  await ep.allGather(counts, all);
  const rowsOf = (i: number) => sum(all, i * E, (i + 1) * E);
  const Rmax = Math.max(...Array.from({ length: P }, (_, i) => rowsOf(i)));
  // Row offset, inside source i's sorted rows, of the first row for rank j's experts, and how many there are.
  const off = (i: number, j: number) => sum(all, i * E, i * E + j * L);
  const cnt = (i: number, j: number) => sum(all, i * E + j * L, i * E + (j + 1) * L);
  const slots = sortedSlots(l);
  const rows = new Float32Array(Rmax * D);
  slots.forEach((s, p) => copyRow(rows, p, l.x, Math.floor(s / l.K), D));
  const gathered = new Float32Array(P * Rmax * D);
  await ep.allGather(rows, gathered);
  // Computed rows of this rank, in (source, expert) order, padded to the largest rank's count.
  const computedBy = (j: number) => sum(Array.from({ length: P }, (_, i) => cnt(i, j)));
  const Cmax = Math.max(...Array.from({ length: P }, (_, j) => computedBy(j)));
  const y = new Float32Array(Cmax * D);
  const expertOf: number[] = [];
  let q = 0;
  for (let i = 0; i < P; i++) {
    for (let e = me * L; e < (me + 1) * L; e++) {
      const start = sum(all, i * E, i * E + e);
      for (let c = 0; c < all[i * E + e]!; c++, q++) {
        copyRow(y, q, gathered, i * Rmax + start + c, D, e + 1);
        expertOf.push(e);
      }
    }
  }
  const ys = new Float32Array(P * Cmax * D);
  await ep.allGather(y, ys);
  // My rows back, in sorted order: from each expert rank j, the block it computed for me.
  const yHome = new Float32Array(slots.length * D);
  const before = (j: number, i: number) => sum(Array.from({ length: i }, (_, i2) => cnt(i2, j)));
  for (let j = 0, p = 0; j < P; j++) for (let c = 0; c < cnt(me, j); c++, p++) copyRow(yHome, p, ys, j * Cmax + before(j, me) + c, D);
  const out = new Float32Array(l.N * D);
  slots.forEach((s, p) => axpyRow(out, Math.floor(s / l.K), yHome, p, l.gates[s]!, D));
  // combineGrad: my slots' dY in each expert rank's padded block, reduce_scatter(sum) gives each its rows' dY.
  const dYAll = new Float32Array(P * Cmax * D);
  for (let j = 0, p = 0; j < P; j++) {
    for (let c = 0; c < cnt(me, j); c++, p++) {
      const s = slots[p]!;
      copyRow(dYAll, j * Cmax + before(j, me) + c, l.dOut, Math.floor(s / l.K), D, l.gates[s]!);
    }
  }
  const dY = new Float32Array(Cmax * D);
  await ep.reduceScatter(dYAll, dY, { op: 'sum' });
  // dispatchGrad: each source's input-row grads in its padded block, reduce_scatter(sum) back to the sources.
  const dRowsAll = new Float32Array(P * Rmax * D);
  q = 0;
  for (let i = 0; i < P; i++) for (let c = 0; c < cnt(i, me); c++, q++) copyRow(dRowsAll, i * Rmax + off(i, me) + c, dY, q, D, expertOf[q]! + 1);
  const dRows = new Float32Array(Rmax * D);
  await ep.reduceScatter(dRowsAll, dRows, { op: 'sum' });
  const dx = new Float32Array(l.N * D);
  slots.forEach((s, p) => axpyRow(dx, Math.floor(s / l.K), dRows, p, 1, D));
  return { out, dx };
};

/** Megatron-style: all_gather routing and unrouted tokens, compute local experts, reduce_scatter partial sums. */
const allgatherRs: Run = async (ep, l) => {
  const { P, L, N, K, D, me } = l;
  const idx = new Int32Array(P * N * K);
  const gates = new Float32Array(P * N * K);
  await ep.allGather(l.idx, idx);
  await ep.allGather(l.gates, gates);
  const xs = new Float32Array(P * N * D);
  await ep.allGather(l.x, xs);
  const mine = (e: number) => e >= me * L && e < (me + 1) * L;
  const partial = new Float32Array(P * N * D);
  for (let t = 0; t < P * N; t++) for (let k = 0; k < K; k++) if (mine(idx[t * K + k]!)) axpyRow(partial, t, xs, t, gates[t * K + k]! * (idx[t * K + k]! + 1), D);
  const out = new Float32Array(N * D);
  await ep.reduceScatter(partial, out, { op: 'sum' });
  const dOuts = new Float32Array(P * N * D);
  await ep.allGather(l.dOut, dOuts);
  const dPartial = new Float32Array(P * N * D);
  for (let t = 0; t < P * N; t++) for (let k = 0; k < K; k++) if (mine(idx[t * K + k]!)) axpyRow(dPartial, t, dOuts, t, gates[t * K + k]! * (idx[t * K + k]! + 1), D);
  const dx = new Float32Array(N * D);
  await ep.reduceScatter(dPartial, dx, { op: 'sum' });
  return { out, dx };
};

export const RUNS: Record<DispatchStrategy, Run> = { a2a, 'allgather-padded': allgatherPadded, 'allgather-rs': allgatherRs };
