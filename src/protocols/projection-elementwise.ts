// Element-wise traffic of a block: the elements its non-matmul kernels read and write per token, counted from the
// block's shapes kernel by kernel (norms, RoPE, MLA's head assembly, residual adds, SwiGLU, the router, the routed
// rows' permutation and combine). The projection turns it into seconds at the device's memory rate; the EP
// collectives' copies are the links' cost, not counted here.
//
// It replaced "three passes over the saved tensors", which bench:seed's rows showed too low by about half: the
// kernels' wall time per step (a timing view of every kernel call on the DSV3-small rows, 4 ranks) was 50–72 ms
// against 27–32 ms projected (at 40 GB/s), with the permutation's gathers and scatters and SwiGLU over the routed
// rows — not saved, or saved once but touched several times — making up most of the difference.

import type { BlockSpec } from '../models/spec.ts';
import { routedRowsPerToken } from './projection-memory.ts';

export interface BlockTraffic {
  /** Elements per token read + written by the block's forward, except the routed experts' part. */
  fwd: number;
  /** The routed experts' part of the forward (permutation, SwiGLU, combine): no backward under the cut. */
  routedFwd: number;
  /** fp32 elements per token (router scores and gates), forward. */
  fp32Fwd: number;
}

/**
 * A block's forward element-wise traffic per token. Backward reads what forward wrote and the output's gradient
 * and writes the input's gradient: about twice the forward (projection-time.ts).
 */
export function blockTraffic(b: BlockSpec, D: number, ep: number, rmax: number): BlockTraffic {
  // Two RMSNorms (read x, write the normalised x) and two residual adds (read two, write one).
  let fwd = 2 * 2 * D + 2 * 3 * D;
  const at = b.attn;
  if (at.kind === 'gqa') {
    // RoPE on q and k, in place: read and write.
    fwd += 2 * (at.nHeads + at.nKvHeads) * at.headDim;
  } else {
    const dqk = at.qkNope + at.qkRope;
    // The latents' norms (kv, and q with q-LoRA), RoPE on q's and the key's rope parts, and SDPA's q and k
    // assembled per head from the nope and rope parts (the shared rope key copied into every head).
    fwd += 2 * at.kvLoraRank + (at.qLoraRank > 0 ? 2 * at.qLoraRank : 0);
    fwd += 2 * (at.nHeads + 1) * at.qkRope;
    fwd += 2 * 2 * at.nHeads * dqk;
  }
  const f = b.ffn;
  let routedFwd = 0;
  let fp32Fwd = 0;
  if (f.kind === 'dense') fwd += 3 * f.hidden;
  else {
    const { top_k: K, num_experts: E } = f.args;
    const rows = routedRowsPerToken(K, ep, rmax);
    // Router: scores read and written (softmax or sigmoid), the top-k gates.
    fp32Fwd += 2 * E + 2 * K;
    // Permutation: rows gathered from the tokens (read, write); SwiGLU per row (read w1·x and w3·x, write the
    // product); combine: the rows' outputs read with their gates, one output per token written.
    routedFwd += 2 * rows * D + 3 * rows * f.hidden + rows * D + D;
    if (f.sharedHidden > 0) fwd += 3 * f.sharedHidden + 3 * D;
  }
  return { fwd, routedFwd, fp32Fwd };
}
