// MoE stage "dispatch" (its local half: sort + gather) and its dual "dispatchGrad" (torchtitan-semantics.md §3.3 steps 11–13).
//
// Forward: stable grouping of the N·K (token, slot) pairs by expert id (a counting sort over the token-major
// flattening, so within an expert rows are ordered by ascending token), then
//   rows[r] = x[srcToken[r]] · (score_before_experts ? gate : 1)      (R = N·K rows, grouped by expert ascending)
// Backward: dx[srcToken[r]] += dRows[r] · (sbe ? gate : 1); with sbe the gate also gets dGate = x[srcToken]·dRows.
//
// With EP the rows of experts [j·L, (j+1)·L) are contiguous, so the dispatch collective sends slices of `rows`
// by `counts` without another copy.

import type { Runtime } from '../runtime.ts';
import type { RouteResult } from './router.ts';

export interface Permutation {
  /** R = N·K. */
  R: number;
  /** (R) token row of each sorted row. */
  srcToken: Int32Array;
  /** (R) index into the route's (N·K) arrays of each sorted row (torch's argsort permutation). */
  slot: Int32Array;
  /** (R) gate of each sorted row. */
  gatesSorted: Float32Array;
  /** (E) rows per expert = route.counts (rows of expert e start at Σ_{e'<e} counts[e']). */
  counts: Int32Array;
}

// RouteResult → Permutation (caller owns: releasePermutation)
export function buildPermutation(rt: Runtime, route: RouteResult): Permutation {
  const { N, K, E, topIdx, gates, counts } = route;
  const R = N * K;
  const srcToken = rt.pool.i32(R);
  const slot = rt.pool.i32(R);
  const gatesSorted = rt.pool.get(R);
  const next = new Int32Array(E);
  for (let e = 1; e < E; e++) next[e] = next[e - 1]! + counts[e - 1]!;
  for (let j = 0; j < R; j++) {
    const pos = next[topIdx[j]!]!++;
    slot[pos] = j;
    srcToken[pos] = (j / K) | 0;
    gatesSorted[pos] = gates[j]!;
  }
  return { R, srcToken, slot, gatesSorted, counts };
}

// x (N,D) → rows (capacity,D) (caller owns): the R rows, then zero rows up to `capacity` (default R). A dispatch
// that sends a fixed-size block (allgather-padded) gets it without padding a copy.
export function permuteForward(
  rt: Runtime,
  perm: Permutation,
  x: Float32Array,
  D: number,
  scoreBeforeExperts: boolean,
  capacity = perm.R,
): Float32Array {
  if (capacity < perm.R) throw new Error(`permuteForward: capacity ${capacity} is below the ${perm.R} routed rows`);
  const rows = rt.pool.get(capacity * D);
  rt.k.gatherRows(x, perm.srcToken, rows, perm.R, D, scoreBeforeExperts ? perm.gatesSorted : null);
  if (capacity > perm.R) rows.fill(0, perm.R * D);
  return rows;
}

// dRows (R,D) → dx (N,D) +=; with sbe, dGates (N·K) += x[srcToken]·dRows (x is the forward's input)
export function permuteBackward(
  rt: Runtime,
  perm: Permutation,
  x: Float32Array,
  dRows: Float32Array,
  D: number,
  scoreBeforeExperts: boolean,
  dx: Float32Array,
  dGates: Float32Array,
): void {
  rt.k.scatterAddRows(dRows, perm.srcToken, dx, perm.R, D, scoreBeforeExperts ? perm.gatesSorted : null);
  if (scoreBeforeExperts) {
    const dots = rt.pool.get(perm.R);
    rt.k.gatherRowDot(x, perm.srcToken, dRows, dots, perm.R, D);
    scatterGateGrads(perm, dots, dGates);
    rt.pool.release(dots);
  }
}

/** dGates[slot[r]] += dSorted[r]. */
export function scatterGateGrads(perm: Permutation, dSorted: Float32Array, dGates: Float32Array): void {
  for (let r = 0; r < perm.R; r++) dGates[perm.slot[r]!] += dSorted[r]!;
}

export function releasePermutation(rt: Runtime, perm: Permutation): void {
  rt.pool.releaseI32(perm.srcToken);
  rt.pool.releaseI32(perm.slot);
  rt.pool.release(perm.gatesSorted);
}
