// DeepSeekV3ModelArgs (torchtitan/models/deepseek_v3/model/args.py) with torchtitan's defaults and flavors, the
// Aurora seed's baseline_model_1b_12rank, and the derived MLA/YaRN values.

import { defaultMoEArgs, validateMoEArgs, type MoEArgs } from '../moe/args.ts';
import type { AttnMaskType, AttnType } from '../llama4/args.ts';

export interface DeepSeekV3Args {
  max_batch_size: number;
  /** Overwritten by training.seq_len. */
  max_seq_len: number;
  vocab_size: number;
  dim: number;
  inter_dim: number;
  moe_inter_dim: number;
  n_layers: number;
  n_dense_layers: number;
  n_heads: number;
  norm_eps: number;
  moe_args: MoEArgs;
  q_lora_rank: number;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  attn_type: AttnType;
  attn_mask_type: AttnMaskType;
  original_seq_len: number;
  rope_theta: number;
  rope_factor: number;
  beta_fast: number;
  beta_slow: number;
  mscale: number;
}

export function defaultDeepSeekV3Args(): DeepSeekV3Args {
  return {
    max_batch_size: 8,
    max_seq_len: 16384,
    vocab_size: 102400,
    dim: 2048,
    inter_dim: 10944,
    moe_inter_dim: 1408,
    n_layers: 27,
    n_dense_layers: 1,
    n_heads: 16,
    norm_eps: 1e-5,
    moe_args: defaultMoEArgs(),
    q_lora_rank: 0,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    attn_type: 'sdpa',
    attn_mask_type: 'causal',
    original_seq_len: 4096,
    rope_theta: 10000,
    rope_factor: 40,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1.0,
  };
}

type Overrides = Partial<Omit<DeepSeekV3Args, 'moe_args'>> & { moe_args?: Partial<MoEArgs> };

function flavor(o: Overrides): DeepSeekV3Args {
  const b = defaultDeepSeekV3Args();
  return { ...b, ...o, moe_args: { ...b.moe_args, ...(o.moe_args ?? {}) } };
}

const debugmodel: Overrides = {
  vocab_size: 2048,
  dim: 256,
  inter_dim: 1024,
  moe_inter_dim: 256,
  n_layers: 6,
  n_dense_layers: 1,
  n_heads: 16,
  moe_args: {
    num_experts: 8,
    num_shared_experts: 2,
    top_k: 3,
    score_func: 'softmax',
    route_norm: false,
    route_scale: 1.0,
    score_before_experts: false,
  },
  q_lora_rank: 0,
  kv_lora_rank: 512,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  mscale: 0.7,
};

export const DEEPSEEK_V3_FLAVORS: Readonly<Record<string, DeepSeekV3Args>> = Object.freeze({
  debugmodel: flavor(debugmodel),
  debugmodel_flex_attn: flavor({ ...debugmodel, attn_type: 'flex', attn_mask_type: 'block_causal' }),
  '16B': flavor({
    vocab_size: 102400,
    dim: 2048,
    inter_dim: 10944,
    moe_inter_dim: 1408,
    n_layers: 27,
    n_dense_layers: 1,
    n_heads: 16,
    moe_args: {
      num_experts: 64,
      num_shared_experts: 2,
      top_k: 6,
      score_func: 'softmax',
      route_norm: false,
      route_scale: 1.0,
      score_before_experts: false,
    },
    q_lora_rank: 0,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    mscale: 0.7,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  '236B': flavor({
    vocab_size: 102400,
    dim: 5120,
    inter_dim: 12288,
    moe_inter_dim: 1536,
    n_layers: 60,
    n_dense_layers: 1,
    n_heads: 128,
    moe_args: {
      num_experts: 160,
      num_shared_experts: 2,
      top_k: 6,
      score_func: 'softmax',
      route_norm: false,
      route_scale: 16.0,
      num_expert_groups: 8,
      num_limited_groups: 3,
      score_before_experts: false,
    },
    q_lora_rank: 1536,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    mscale: 1.0,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  '671B': flavor({
    vocab_size: 129280,
    dim: 7168,
    inter_dim: 18432,
    moe_inter_dim: 2048,
    n_layers: 61,
    n_dense_layers: 3,
    n_heads: 128,
    moe_args: {
      num_experts: 256,
      num_shared_experts: 1,
      top_k: 8,
      score_func: 'sigmoid',
      route_norm: true,
      route_scale: 2.5,
      num_expert_groups: 8,
      num_limited_groups: 4,
      score_before_experts: false,
    },
    q_lora_rank: 1536,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    mscale: 1.0,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  // The Aurora seed's "DeepSeek-V3 1B baseline": the report fixes dim 1024, 10 layers, 8 heads, vocab "50k",
  // 60 experts, MoE on every layer. The rest is our choice, in the style of the 16B flavor scaled down:
  //   vocab_size 50000 exactly; moe_inter_dim 512 (≈1.12 B parameters in total, hence "1b"); 6 of 60 experts
  //   + 2 shared, softmax scores, no route_norm, route_scale 1, scores applied after the experts (16B's routing);
  //   MLA without q-LoRA, kv_lora 512, head dims 128/64/128, mscale 0.7; inter_dim 4096 (= 4·dim, unused while
  //   n_dense_layers is 0); sdpa with a causal mask so it runs on our attention kernel.
  baseline_model_1b_12rank: flavor({
    vocab_size: 50000,
    dim: 1024,
    inter_dim: 4096,
    moe_inter_dim: 512,
    n_layers: 10,
    n_dense_layers: 0,
    n_heads: 8,
    moe_args: {
      num_experts: 60,
      num_shared_experts: 2,
      top_k: 6,
      score_func: 'softmax',
      route_norm: false,
      route_scale: 1.0,
      score_before_experts: false,
    },
    q_lora_rank: 0,
    kv_lora_rank: 512,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    mscale: 0.7,
    attn_type: 'sdpa',
    attn_mask_type: 'causal',
  }),
});

export function cloneDeepSeekV3Args(a: DeepSeekV3Args): DeepSeekV3Args {
  return { ...a, moe_args: { ...a.moe_args } };
}

// ---- derived values (torchtitan deepseek_v3 model.py) ----

export function dsv3IsMoeLayer(a: DeepSeekV3Args, layerId: number): boolean {
  return layerId >= a.n_dense_layers;
}

export function dsv3QkHeadDim(a: DeepSeekV3Args): number {
  return a.qk_nope_head_dim + a.qk_rope_head_dim;
}

/** dqk^-0.5, times mscale² (m = 0.1·mscale·ln(rope_factor) + 1) when max_seq_len exceeds original_seq_len. */
export function dsv3SoftmaxScale(a: DeepSeekV3Args): number {
  let s = dsv3QkHeadDim(a) ** -0.5;
  if (a.max_seq_len > a.original_seq_len) {
    const m = 0.1 * a.mscale * Math.log(a.rope_factor) + 1.0;
    s = s * m * m;
  }
  return s;
}

export function validateDeepSeekV3Args(a: DeepSeekV3Args, where = 'model.args'): void {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  for (const k of [
    'dim',
    'n_layers',
    'n_heads',
    'vocab_size',
    'max_seq_len',
    'kv_lora_rank',
    'qk_nope_head_dim',
    'qk_rope_head_dim',
    'v_head_dim',
    'inter_dim',
    'moe_inter_dim',
    'original_seq_len',
  ] as const) {
    if (!(Number.isInteger(a[k]) && a[k] >= 1)) fail(`${k} must be a positive integer (got ${a[k]})`);
  }
  if (!(Number.isInteger(a.n_dense_layers) && a.n_dense_layers >= 0))
    fail(`n_dense_layers must be an integer ≥ 0 (got ${a.n_dense_layers})`);
  if (!(Number.isInteger(a.q_lora_rank) && a.q_lora_rank >= 0))
    fail(`q_lora_rank must be an integer ≥ 0 (got ${a.q_lora_rank})`);
  if (a.qk_rope_head_dim % 2 !== 0) fail(`qk_rope_head_dim must be even for RoPE (got ${a.qk_rope_head_dim})`);
  if (!(a.norm_eps > 0)) fail(`norm_eps must be > 0 (got ${a.norm_eps})`);
  validateMoEArgs(a.moe_args, where);
}
