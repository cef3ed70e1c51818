// Memory per rank by category, as a training stack holds it on the device: sharded fp32 state (params, grads,
// AdamW moments), the unsharded compute-dtype copies the reshard policy keeps alive, the full gradients of the
// units being reduced, activations per AC mode, EP buffers per dispatch strategy, and the allocator's
// caching/fragmentation as a stated factor. One model for two stacks: torchtitan on a GPU (the Aurora report)
// and moe-actors on this machine's CPU — they differ only where their code differs (named in StackKind), so the
// planner's plan.txt and `moe-actors project` print the same figures from the same function.

import type { ModelSpec, BlockSpec } from '../models/spec.ts';
import { blockUnitId, expertUnitId, UNIT_EMBED, UNIT_HEAD } from '../models/spec.ts';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import type { MoeStrategy } from './strategies.ts';

export type ComputeDtype = 'float32' | 'bfloat16';
export const dtypeBytes = (d: ComputeDtype): number => (d === 'bfloat16' ? 2 : 4);

/**
 * Bytes per element of the activations a stack saves for backward: torchtitan's in the compute dtype its ops
 * produce, moe-actors' fp32 under either (its matmuls round their operands per product and write fp32) — except
 * SDPA's q, k, v and o, the SwiGLU FFNs' w1/w3 outputs and gate, and MLA's normalised latents, which both keep in
 * the compute dtype (`inDtype` in blockSavedPerToken; layers/sdpa.ts, layers/ffn.ts, layers/attention-mla.ts).
 */
export const savedActivationBytes = (stack: StackKind, d: ComputeDtype): number =>
  stack === 'torchtitan' ? dtypeBytes(d) : 4;

/**
 * Where the two stacks differ in what they keep:
 * - `torchtitan`: FSDP2 always materialises a compute-dtype copy of a unit (also on a mesh of size 1) and casts
 *   the compute-dtype gradient to fp32 for the reduction; op-level SAC saves every other matmul output and the
 *   SDPA outputs of a block; the loss keeps fp32 log-probabilities and their fp32 gradient beside the
 *   compute-dtype logits. Its EP under `allgather-padded` is the Aurora seed's XPUExpertParallel
 *   (n-getty/torchtitan_xpu expert_parallel_xpu.py): in-place c10d all_gathers, outside autograd, so the graph is
 *   cut at dispatch and combine — see `epGraphCut`.
 * - `moe-actors`: the unsharded buffer is fp32 and exists only for groups of more than one rank (the shard is the
 *   compute copy otherwise); activations and dispatch buffers are fp32 under either compute dtype but for SDPA's,
 *   the FFNs' and MLA's normalised latents (bf16 adds the rounded copies a layer keeps for backward); op-level SAC recomputes the whole block (src/models/model/ac.ts);
 *   the loss keeps the fp32 logits and overwrites them with their gradient.
 */
export type StackKind = 'torchtitan' | 'moe-actors';

/**
 * Eager torchtitan's padded all_gather EP (the seed's XPUExpertParallel) gathers with `dist.all_gather` into fresh
 * `zeros_like` buffers: no autograd node, so nothing after dispatch reaches the routed experts' weights or inputs.
 * Their activations are dropped with the graph after combine, their weights get no gradient (FSDP2 reduces none),
 * the gathered buffers live only inside the layer's forward, and backward runs no expert matmuls and no EP
 * collectives. With scores applied before the experts (Llama4) the router's graph is dropped too; after them
 * (DeepSeek-V3) the gating bmm keeps its fp32 copy of the routed outputs for the router's gradient.
 * Under torch.compile dynamo remaps `dist.all_gather` to the functional `all_gather_inplace`
 * (torch/distributed/_functional_collectives.py, traceable_collective_remaps), which autograd records: no cut.
 */
export function epGraphCut(stack: StackKind, dispatch: MoeStrategy, ep: number, torchCompile = false): boolean {
  return stack === 'torchtitan' && dispatch === 'allgather-padded' && ep > 1 && !torchCompile;
}

export interface MemoryAssumptions {
  stack: StackKind;
  computeDtype: ComputeDtype;
  /** Routing imbalance: rows the busiest EP rank receives over the mean (≥ 1). */
  rmax: number;
  /** Reserved over live bytes of what is allocated and freed every step (caching, rounding, fragmentation). */
  allocatorFactor: number;
  /** Units unsharded at once while another computes (FSDP2's one-ahead prefetch: 2). */
  unshardedInFlight: number;
  /** The torchtitan run used torch.compile ([compile] enable): dynamo traces c10d collectives into the graph. */
  torchCompile?: boolean;
}

export const MEMORY_CATEGORIES = [
  'param_shards',
  'grad_shards',
  'optimizer',
  'unsharded_params',
  'unsharded_grads',
  'activations',
  'ep_buffers',
  'allocator',
] as const;
export type MemoryCategory = (typeof MEMORY_CATEGORIES)[number];

export interface MemoryUnit {
  id: string;
  numel: number;
  groupSize: number;
  shard: number;
  reshardAfterForward: boolean;
}

export interface MemoryInput {
  spec: ModelSpec;
  units: readonly MemoryUnit[];
  ac: AcMode;
  /** Tokens per rank per microbatch (local batch · seq). */
  tokens: number;
  seqLen: number;
  ep: number;
  dispatch: MoeStrategy;
  /** dp_replicate: units reduce across replicas too. */
  replicas: number;
  /** The gradient reduction is a plain SUM (no divide stage). */
  plainSum: boolean;
  assumptions: MemoryAssumptions;
}

export interface MemoryProjection {
  /** Bytes per category; `allocator` is the reserved-over-live surplus. */
  bytes: Record<MemoryCategory, number>;
  /** Live bytes at the peak (everything but `allocator`). */
  live: number;
  /** What the allocator reserves at the peak: live + (allocatorFactor − 1) · the per-step allocations. */
  total: number;
}

const MASTER = 4;
/** A block in backward holds its saved tensors plus their gradients' working set: this many times the saved bytes. */
export const GRAD_WORKING_SET = 1.25;

/** Rows an EP rank's experts process per token of its own: K on average, rmax·K on the busiest rank under EP. */
export const routedRowsPerToken = (K: number, ep: number, rmax: number): number => (ep > 1 ? K * rmax : K);

/**
 * Elements per token a block saves for its backward with no AC, by how they are stored: `compute` at the stack's
 * savedActivationBytes, `inDtype` (attention's q, k, v, o; the FFNs' w1/w3 outputs and gate) in the compute dtype,
 * `fp32`, and `rounded` (moe-actors' bf16 copies of matmul inputs, under bf16 only).
 */
export function blockSavedPerToken(
  b: BlockSpec,
  D: number,
  stack: StackKind,
  ep: number,
  rmax: number,
  cut = false,
): { compute: number; attnIn: number; inDtype: number; fp32: number; rounded: number } {
  let compute = 0;
  let inDtype = 0;
  let fp32 = 0;
  let rounded = 0;
  // Two RMSNorms: input (the residual stream) and output (the next matmuls' input); rstd per token in fp32. The
  // attention norm's output is `attnIn`: moe-actors under bf16 keeps only its rounding (in `rounded`).
  compute += 3 * D;
  const attnIn = D;
  fp32 += 2;
  const at = b.attn;
  if (at.kind === 'gqa') {
    const q = at.nHeads * at.headDim;
    const kv = at.nKvHeads * at.headDim;
    // q, k, v after RoPE (SDPA's inputs), SDPA's output (wo's input) and its logsumexp.
    inDtype += 2 * q + 2 * kv;
    fp32 += at.nHeads;
    // moe-actors under bf16 also keeps the rounded x its weight gradients read (o is SDPA's bf16 output itself).
    rounded += D;
  } else {
    const dqk = at.qkNope + at.qkRope;
    const qr = Math.max(at.qLoraRank, 0);
    // moe-actors under bf16 keeps the rounded x its weight gradients read (attention-mla.ts).
    rounded += D;
    // q_a and kv_a's latent (the norms' inputs) and the rope key; their normalised values, which only products
    // read (moe-actors rounds them once under bf16 and keeps the rounding), in the compute dtype; SDPA's q/k (dqk
    // per head), v and output (dv per head).
    compute += qr + at.kvLoraRank + at.qkRope;
    inDtype += qr + at.kvLoraRank + 2 * at.nHeads * dqk + 2 * at.nHeads * at.vHead;
    fp32 += at.nHeads;
  }
  const f = b.ffn;
  if (f.kind === 'dense') {
    // w1 and w3 outputs, silu(w1 x), the product (w2's input); moe-actors keeps silu·w3 in place of the product.
    inDtype += (stack === 'torchtitan' ? 4 : 3) * f.hidden;
  } else {
    const { top_k: K, num_experts: E } = f.args;
    const rows = routedRowsPerToken(K, ep, rmax);
    // Each row's input and output (the dispatch buffers) and its FFN's outputs and gate.
    if (!cut) {
      compute += rows * 2 * D;
      inDtype += rows * (stack === 'torchtitan' ? 4 : 3) * f.hidden;
      // moe-actors under bf16 also keeps the rows rounded once for every expert's products (moe/experts.ts).
      rounded += rows * D;
    }
    // Router: scores (fp32, E per token), gates; torchtitan applies the gates in fp32 to K rows per token (the
    // expert inputs when scores come first, the outputs otherwise) and keeps that fp32 copy for backward.
    if (!cut || !f.args.score_before_experts) fp32 += E + 2 * K + (stack === 'torchtitan' ? K * D : 0);
    if (f.sharedHidden > 0) {
      compute += D;
      inDtype += (stack === 'torchtitan' ? 4 : 3) * f.sharedHidden;
    }
  }
  return { compute, attnIn, inDtype, fp32, rounded: stack === 'torchtitan' ? 0 : rounded };
}

/** Elements per token of a block's matmul outputs and SDPA outputs: what torchtitan's op-level SAC may save. */
function blockOpSacPerToken(
  b: BlockSpec,
  D: number,
  ep: number,
  rmax: number,
  cut: boolean,
): { compute: number; fp32: number } {
  let mm = 0;
  let sdpa = 0;
  const at = b.attn;
  if (at.kind === 'gqa') {
    mm += at.nHeads * at.headDim + 2 * at.nKvHeads * at.headDim + D;
    sdpa += at.nHeads * at.headDim;
  } else {
    const dqk = at.qkNope + at.qkRope;
    mm +=
      at.nHeads * dqk +
      at.kvLoraRank +
      at.qkRope +
      at.nHeads * (at.qkNope + at.vHead) +
      D +
      (at.qLoraRank > 0 ? at.qLoraRank : 0);
    sdpa += at.nHeads * at.vHead;
  }
  const f = b.ffn;
  if (f.kind === 'dense') mm += 2 * f.hidden + D;
  else {
    const rows = cut ? 0 : routedRowsPerToken(f.args.top_k, ep, rmax);
    mm += rows * (2 * f.hidden + D);
    if (f.sharedHidden > 0) mm += 2 * f.sharedHidden + D;
  }
  // Every other matmul output is saved (the 1st, 3rd, …), plus the block input and SDPA's output and logsumexp.
  return { compute: mm / 2 + sdpa + D, fp32: at.nHeads };
}

/**
 * EP buffers of one MoE layer per microbatch (elements), by strategy: the padded all_gather's world × Rmax rows in
 * (dispatch) and out (combine); a2a's received rows in and the expert outputs sent back; allgather-rs's gathered
 * tokens and the partial outputs for every token it reduce_scatters.
 */
export function epBufferElems(strategy: MoeStrategy, P: number, T: number, D: number, K: number, rmax: number): number {
  const rowsMax = Math.ceil(K * T * rmax);
  switch (strategy) {
    case 'local':
      return 0;
    case 'a2a':
      return 2 * rowsMax * D;
    case 'allgather-padded':
      return P * K * T * D + P * rowsMax * D;
    case 'allgather-rs':
      return 2 * P * T * D;
  }
}

export function projectMemory(m: MemoryInput): MemoryProjection {
  const a = m.assumptions;
  const c = dtypeBytes(a.computeDtype);
  const tt = a.stack === 'torchtitan';
  const D = m.spec.dim;
  const N = m.tokens;
  const shardSum = m.units.reduce((s, u) => s + u.shard, 0);
  const byId = new Map(m.units.map((u) => [u.id, u]));
  // A unit needs an unsharded buffer (and a full gradient) unless nothing is gathered or reduced for it: moe-actors
  // skips both only for a group of one with no replicas and a plain SUM (src/actors/fsdp/shard.ts's `trivial`); torchtitan's
  // FSDP2 also casts every unit to the compute dtype.
  const trivial = (u: MemoryUnit) => u.groupSize === 1 && m.replicas === 1 && m.plainSum;
  const needsCopy = (u: MemoryUnit) => !trivial(u) || (tt && c !== MASTER);
  const full = (u: MemoryUnit) => u.shard * u.groupSize;
  const copyBytes = tt ? c : MASTER;
  const cut = epGraphCut(a.stack, m.dispatch, m.ep, a.torchCompile);

  // ---- unsharded parameters: the kept units (no reshard after forward) plus the in-flight block groups ----
  let kept = 0;
  for (const u of m.units) if (needsCopy(u) && !u.reshardAfterForward) kept += copyBytes * full(u);
  let largestGroup = 0;
  let largestGroupGrad = 0;
  let largestGroupReduce = 0;
  for (const b of m.spec.blocks) {
    let p = 0;
    let g = 0;
    let r = 0;
    for (const id of [blockUnitId(b.layerId), expertUnitId(b.layerId)]) {
      const u = byId.get(id);
      if (!u) continue;
      if (needsCopy(u) && u.reshardAfterForward) p += copyBytes * full(u);
      // The full gradient a reduction reads: fp32 (reduce dtype), plus the compute-dtype gradient it is cast from.
      // Under the EP graph cut the routed experts get no gradient: nothing to reduce for their unit.
      if ((!trivial(u) || tt) && !(cut && id === expertUnitId(b.layerId))) {
        g += (MASTER + (tt && c !== MASTER ? c : 0)) * full(u);
        r += MASTER * full(u);
      }
    }
    largestGroup = Math.max(largestGroup, p);
    largestGroupGrad = Math.max(largestGroupGrad, g);
    largestGroupReduce = Math.max(largestGroupReduce, r);
  }
  const unshardedParams = kept + a.unshardedInFlight * largestGroup;
  const head = byId.get(UNIT_HEAD);
  const headGrad = head && (!trivial(head) || tt) ? (MASTER + (tt && c !== MASTER ? c : 0)) * full(head) : 0;
  // The gradients of the unit in backward and, while it computes, the previous unit's reduce_scatter input (torchtitan:
  // FSDP2 copies the compute-dtype gradients into one fp32 buffer, frees them, and keeps that buffer until the
  // reduce_scatter it feeds has finished — past the next unit's gradients).
  const unshardedGrads = Math.max(headGrad, largestGroupGrad + (tt ? largestGroupReduce : 0));

  // ---- activations ----
  // moe-actors' fp32 activations carry, under bf16, the rounded copies a layer keeps for its backward (`rounded`).
  // Measured on the default job (4 ranks, threads): bf16 held 22.8 MiB of activations on rank 0 against 19.1 MiB in
  // fp32, where counting them at 2 bytes predicted less.
  const actBytes = savedActivationBytes(a.stack, a.computeDtype);
  const ep = m.ep;
  let keptAct = 0;
  let transient = 0;
  const perBlock: { keep: number; transient: number; gradShard: number }[] = [];
  for (const b of m.spec.blocks) {
    const all = blockSavedPerToken(b, D, a.stack, ep, a.rmax, cut);
    // moe-actors under bf16 drops the attention's f32 input once its rounding is made (model/block.ts).
    const attnIn = a.stack === 'moe-actors' && c !== MASTER ? 0 : actBytes * all.attnIn;
    const allBytes =
      N * (actBytes * all.compute + attnIn + c * all.inDtype + 4 * all.fp32 + (c === MASTER ? 0 : c * all.rounded));
    let keep: number;
    if (!isCheckpointed(b.layerId, m.ac)) keep = allBytes;
    else if (tt && m.ac.mode === 'selective' && 'op' in m.ac) {
      const s = blockOpSacPerToken(b, D, ep, a.rmax, cut);
      keep = N * (c * s.compute + 4 * s.fp32);
    } else keep = N * actBytes * D;
    keptAct += keep;
    // The block in backward holds all its saved tensors (recomputed if checkpointed) plus its gradient working set
    // (a quarter as large again: the gradients of its widest intermediates; moe-actors measured 1.2–1.3).
    transient = Math.max(transient, GRAD_WORKING_SET * allBytes - keep);
    const shardOf = (id: string) => byId.get(id)?.shard ?? 0;
    const gradShard = MASTER * (shardOf(blockUnitId(b.layerId)) + (cut ? 0 : shardOf(expertUnitId(b.layerId))));
    perBlock.push({ keep, transient: GRAD_WORKING_SET * allBytes - keep, gradShard });
  }
  const V = m.spec.vocabSize;
  // Loss: torchtitan keeps fp32 log-probs (T·V) and builds their fp32 gradient and the compute-dtype one; moe-actors
  // keeps fp32 logits and turns them into their gradient in place (one T·V buffer + the hidden state's gradient).
  const headAct = tt ? N * V * (4 + 4 + (c !== MASTER ? c : 0)) : N * V * 4 + 2 * N * D * 4;
  let activations = keptAct + Math.max(transient, headAct);
  let gradShards = MASTER * shardSum;
  if (tt) {
    // torchtitan zeroes gradients to None every step and FSDP2 assigns a unit's sharded gradient only when its
    // reduce_scatter is done, after its backward has freed its saved tensors: sharded gradients grow as saved
    // activations shrink, so the peak is the worst moment of backward, not their sum.
    const head = MASTER * (byId.get(UNIT_HEAD)?.shard ?? 0);
    let best = { act: keptAct + headAct, grads: 0 };
    let remaining = keptAct;
    let done = head;
    for (let i = perBlock.length - 1; i >= 0; i--) {
      const p = perBlock[i]!;
      if (done + remaining + p.transient > best.act + best.grads) best = { act: remaining + p.transient, grads: done };
      remaining -= p.keep;
      done += p.gradShard;
    }
    const allGrads = done + MASTER * (byId.get(UNIT_EMBED)?.shard ?? 0);
    if (allGrads > best.act + best.grads) best = { act: 0, grads: allGrads };
    activations = best.act;
    gradShards = best.grads;
  }

  // ---- EP buffers: the padded all_gather's buffers stay with each layer until its backward when the layer keeps
  // its activations (the gathered rows back the saved expert inputs); otherwise one layer's are live at a time ----
  let epBuffers = 0;
  if (ep > 1) {
    for (const b of m.spec.blocks) {
      if (b.ffn.kind !== 'moe') continue;
      // moe-actors frees each gathered buffer once its rows are sliced out: about one of the two is live at a time.
      // moe-actors' dispatch buffers are fp32 (the bf16 wire copies live only inside the collective).
      const e =
        actBytes *
        (tt
          ? epBufferElems(m.dispatch, ep, N, D, b.ffn.args.top_k, a.rmax)
          : epBufferElems(m.dispatch, ep, N, D, b.ffn.args.top_k, a.rmax) / 2);
      const persistent = m.dispatch === 'allgather-padded' && tt && !cut && !isCheckpointed(b.layerId, m.ac);
      epBuffers = persistent ? epBuffers + e : Math.max(epBuffers, e);
    }
  }

  const bytes: Record<MemoryCategory, number> = {
    param_shards: MASTER * shardSum,
    grad_shards: gradShards,
    optimizer: 2 * MASTER * shardSum,
    unsharded_params: unshardedParams,
    unsharded_grads: unshardedGrads,
    activations,
    ep_buffers: epBuffers,
    allocator: 0,
  };
  const live = MEMORY_CATEGORIES.reduce((s, k) => s + bytes[k], 0);
  // The sharded state is allocated once, in exact sizes, and never freed: the allocator's surplus (block rounding,
  // cached free blocks, fragmentation) grows with what is allocated and freed every step.
  const churn = bytes.unsharded_params + bytes.unsharded_grads + bytes.activations + bytes.ep_buffers;
  bytes.allocator = churn * (a.allocatorFactor - 1);
  const total = live + bytes.allocator;
  return { bytes, live, total };
}

const GIB = 2 ** 30;
const MIB = 2 ** 20;
function size(n: number): string {
  return n >= GIB ? `${(n / GIB).toFixed(2)} GiB` : `${(n / MIB).toFixed(2)} MiB`;
}

/** The one line `plan` and `project` both print: the total and every category. */
export function formatMemoryLine(m: MemoryProjection & { assumptions: MemoryAssumptions }): string {
  const b = m.bytes;
  const a = m.assumptions;
  return (
    `total ${size(m.total)} = param shards ${size(b.param_shards)} + grad shards ${size(b.grad_shards)} + AdamW ${size(b.optimizer)} + ` +
    `unsharded params ${size(b.unsharded_params)} + unsharded grads ${size(b.unsharded_grads)} + activations ${size(b.activations)} + ` +
    `EP buffers ${size(b.ep_buffers)} + allocator ${size(b.allocator)} (${a.stack}, ${a.computeDtype} compute, Rmax ${a.rmax}, allocator ×${a.allocatorFactor})`
  );
}
