// EP dispatch strategies as data: which collectives each phase of the MoE layer protocol issues, on which group,
// and how many bytes they move. The machine (moe-layer.machine.ts) is the same for every strategy; the planner
// reads these tables to decide what a backend can run, and the byte model predicts what `bench:ep` measures.

import type { Capabilities } from '../comm/capabilities.ts';
import type { CollectiveOp } from '../comm/communicator.ts';

export const DISPATCH_STRATEGIES = ['a2a', 'allgather-padded', 'allgather-rs'] as const;
export type DispatchStrategy = (typeof DISPATCH_STRATEGIES)[number];
/** `local`: EP degree 1, every rank owns every expert; the layer issues no collectives. */
export type MoeStrategy = DispatchStrategy | 'local';

export const MOE_PHASES = ['exchangeCounts', 'dispatch', 'combine', 'combineGrad', 'dispatchGrad'] as const;
export type MoePhase = (typeof MOE_PHASES)[number];

export interface PhaseCollective {
  op: CollectiveOp;
  /** What is moved (for docs, traces and the byte model). */
  what: string;
  /** all_to_all_v whose counts are uneven in general (matters for 'equal-count' backends). */
  unevenCounts?: boolean;
}

export interface StrategySpec {
  name: MoeStrategy;
  summary: string;
  phases: Record<MoePhase, PhaseCollective[]>;
}

const none: Record<MoePhase, PhaseCollective[]> = {
  exchangeCounts: [],
  dispatch: [],
  combine: [],
  combineGrad: [],
  dispatchGrad: [],
};

export const STRATEGIES: Record<MoeStrategy, StrategySpec> = {
  local: { name: 'local', summary: 'EP = 1: all experts on every rank, no dispatch collectives', phases: none },
  a2a: {
    name: 'a2a',
    summary: "torchtitan's: all_to_all_v of the routed rows to their experts' ranks and back",
    phases: {
      exchangeCounts: [{ op: 'all_to_all_v', what: 'tokens per local expert (equal split of E/ep counts per rank)' }],
      dispatch: [{ op: 'all_to_all_v', what: 'routed rows (k per token), sorted by expert', unevenCounts: true }],
      combine: [{ op: 'all_to_all_v', what: 'expert outputs back to their source ranks', unevenCounts: true }],
      combineGrad: [{ op: 'all_to_all_v', what: 'output-row grads to the experts’ ranks', unevenCounts: true }],
      dispatchGrad: [{ op: 'all_to_all_v', what: 'input-row grads back to the source ranks', unevenCounts: true }],
    },
  },
  'allgather-padded': {
    name: 'allgather-padded',
    summary:
      "the Aurora report's: all_gather counts, all_gather rows padded to the max, slice locally; backward by reduce_scatter",
    phases: {
      exchangeCounts: [{ op: 'all_gather', what: 'tokens per expert of every rank (E ints)' }],
      dispatch: [{ op: 'all_gather', what: 'routed rows of every rank, padded to the largest rank' }],
      combine: [{ op: 'all_gather', what: 'expert outputs of every rank, padded to the largest rank' }],
      combineGrad: [{ op: 'reduce_scatter', what: 'output-row grads, each rank’s rows in its padded block (sum)' }],
      dispatchGrad: [{ op: 'reduce_scatter', what: 'input-row grads, each source’s rows in its padded block (sum)' }],
    },
  },
  'allgather-rs': {
    name: 'allgather-rs',
    summary:
      'Megatron-style: all_gather unrouted tokens + routing once, local permute, reduce_scatter weighted partial outputs',
    phases: {
      exchangeCounts: [
        { op: 'all_gather', what: 'expert ids of every token (K int32 per token)' },
        { op: 'all_gather', what: 'gates of every token (K fp32 per token)' },
      ],
      dispatch: [{ op: 'all_gather', what: 'unrouted tokens of every rank (T·D, no k duplication)' }],
      combine: [{ op: 'reduce_scatter', what: 'partial outputs of local experts for every token (sum)' }],
      combineGrad: [{ op: 'all_gather', what: 'output grads of every token' }],
      dispatchGrad: [
        { op: 'reduce_scatter', what: 'token-input grads from local experts (sum)' },
        { op: 'reduce_scatter', what: 'gate grads from local experts (sum)' },
      ],
    },
  },
};

/** Collectives a strategy needs, with whether uneven all_to_all counts occur. */
export function requiredOps(s: MoeStrategy): PhaseCollective[] {
  return MOE_PHASES.flatMap((p) => STRATEGIES[s].phases[p]);
}

/** Why `caps` cannot run strategy `s`, or null if it can. */
export function strategyBlocker(s: MoeStrategy, caps: Capabilities): string | null {
  for (const c of requiredOps(s)) {
    if (c.op === 'all_to_all_v') {
      if (caps.allToAllV === 'no') return `${s} needs all_to_all (for ${c.what}), which the backend lacks`;
      if (caps.allToAllV === 'equal-count' && c.unevenCounts) {
        return `${s} needs all_to_all with uneven counts (for ${c.what}); the backend supports only equal counts`;
      }
    }
    if (c.op === 'all_gather' && !caps.allGather) return `${s} needs all_gather, which the backend lacks`;
    if (c.op === 'reduce_scatter' && !caps.reduceScatter) return `${s} needs reduce_scatter, which the backend lacks`;
  }
  return null;
}

/** Shape of one MoE layer's traffic on one rank (fp32 rows, int32 metadata). */
export interface MoeTrafficShape {
  /** EP degree. */
  P: number;
  /** Tokens on this rank. */
  T: number;
  /** Tokens on the largest rank (T when the batch splits evenly). */
  Tmax: number;
  D: number;
  K: number;
  E: number;
  /** Rows this rank's experts receive, summed over sources (k·T on average). */
  rowsIn: number;
  /** Max over EP ranks of rowsIn (for padding). */
  rowsInMax: number;
  /**
   * Bytes per element of the activation rows that all_gather / all_to_all move: 2 under bf16 mixed precision, 4
   * (default) in fp32. Reduce_scatters stay 4 (the reduce dtype is float32).
   */
  rowBytes?: 2 | 4;
}

export interface PhaseBytes {
  sent: number;
  received: number;
}

/**
 * Predicted logical bytes per phase for one rank, counted as BaseCommunicator counts them (the sizes of the send
 * and receive buffers of each call, own block included). Forward and backward phases both appear.
 */
export function moeBytes(s: MoeStrategy, t: MoeTrafficShape): Record<MoePhase, PhaseBytes> {
  const f = t.rowBytes ?? 4; // rows moved (all_gather, all_to_all)
  const r = 4; // rows reduced (reduce_scatter): the reduce dtype
  const { P, T, Tmax, D, K, E, rowsIn, rowsInMax } = t;
  const zero = { sent: 0, received: 0 };
  switch (s) {
    case 'local':
      return { exchangeCounts: zero, dispatch: zero, combine: zero, combineGrad: zero, dispatchGrad: zero };
    case 'a2a':
      return {
        exchangeCounts: { sent: E * 4, received: E * 4 },
        dispatch: { sent: K * T * D * f, received: rowsIn * D * f },
        combine: { sent: rowsIn * D * f, received: K * T * D * f },
        combineGrad: { sent: K * T * D * f, received: rowsIn * D * f },
        dispatchGrad: { sent: rowsIn * D * f, received: K * T * D * f },
      };
    case 'allgather-padded':
      return {
        exchangeCounts: { sent: E * 4, received: P * E * 4 },
        dispatch: { sent: K * Tmax * D * f, received: P * K * Tmax * D * f },
        combine: { sent: rowsInMax * D * f, received: P * rowsInMax * D * f },
        combineGrad: { sent: P * rowsInMax * D * r, received: rowsInMax * D * r },
        dispatchGrad: { sent: P * K * Tmax * D * r, received: K * Tmax * D * r },
      };
    case 'allgather-rs':
      return {
        exchangeCounts: { sent: Tmax * K * 8, received: P * Tmax * K * 8 },
        dispatch: { sent: Tmax * D * f, received: P * Tmax * D * f },
        combine: { sent: P * Tmax * D * r, received: Tmax * D * r },
        combineGrad: { sent: Tmax * D * f, received: P * Tmax * D * f },
        dispatchGrad: { sent: P * Tmax * D * r + P * Tmax * K * r, received: Tmax * D * r + Tmax * K * r },
      };
  }
}
