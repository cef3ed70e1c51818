// Parameter counts and torchtitan's FLOPs-per-token (§6): params are classified by name exactly as
// torchtitan's get_moe_model_nparams_and_flops does, and counted from shapes only (no allocation).

import { numelOf } from '../tensor/tensor.ts';
import { paramSpecs, type ModelSpec } from './spec.ts';

export interface ParamCounts {
  total: number;
  /** Everything not under moe.* (embedding and output included). */
  dense: number;
  /** router + shared experts + routed experts. */
  sparse: number;
  /** dense + router + shared + floor(routed · top_k / num_experts). */
  active: number;
  embedding: number;
  router: number;
  shared: number;
  routed: number;
}

export function countParams(spec: ModelSpec): ParamCounts {
  let embedding = 0;
  let dense = 0;
  let router = 0;
  let shared = 0;
  let routed = 0;
  for (const p of paramSpecs(spec)) {
    const n = numelOf(p.shape);
    if (p.name.includes('embedding')) {
      embedding += n;
      dense += n;
    } else if (p.name.includes('moe.shared_experts')) shared += n;
    else if (p.name.includes('moe.router')) router += n;
    else if (p.name.includes('moe.experts')) routed += n;
    else dense += n;
  }
  const sparse = router + shared + routed;
  const moe = spec.blocks.find((b) => b.ffn.kind === 'moe')?.ffn;
  // torchtitan reads top_k / num_experts from model_args.moe_args (one value for the whole model).
  const activeRouted = moe && moe.kind === 'moe' ? Math.floor((routed * moe.args.top_k) / moe.args.num_experts) : 0;
  return {
    total: dense + sparse,
    dense,
    sparse,
    active: dense + router + shared + activeRouted,
    embedding,
    router,
    shared,
    routed,
  };
}

/**
 * torchtitan's num_flops_per_token: 6·(dense − embedding + active_sparse) + 6·L·H·head_dims·seq_len, with seq_len
 * = training.seq_len (the spec's max_seq_len) unless given. No causal discount, as torchtitan.
 */
export function flopsPerToken(spec: ModelSpec, seqLen: number = spec.seqLen): number {
  const c = countParams(spec);
  const activeSparse = c.active - c.dense;
  return 6 * (c.dense - c.embedding + activeSparse) + 6 * spec.nLayers * spec.flopsHeads * spec.flopsHeadDims * seqLen;
}
