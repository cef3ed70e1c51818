// Llama4 TransformerModelArgs (torchtitan/models/llama4/model/args.py) with torchtitan's defaults, its flavors, the
// flavors of the Aurora seed (shared/reference/seed-torchtitan-xpu.md) and a dense twin of every flavor, plus the
// derived dimensions (head dim, FFN/expert hidden sizes, which layers are MoE or NoPE).

import { defaultMoEArgs, validateMoEArgs, type MoEArgs } from '../moe/args.ts';

export interface RoPEScalingArgs {
  scaling_factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

export type AttnType = 'sdpa' | 'flex';
export type AttnMaskType = 'causal' | 'block_causal';

export interface Llama4Args {
  dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number | null;
  vocab_size: number;
  multiple_of: number;
  ffn_dim_multiplier: number | null;
  norm_eps: number;
  rope_theta: number;
  rope_scaling_args: RoPEScalingArgs | null;
  /** Overwritten by training.seq_len (torchtitan's update_from_config). */
  max_seq_len: number;
  depth_init: boolean;
  attn_type: AttnType;
  attn_mask_type: AttnMaskType;
  every_n_layers_nope: number | null;
  fixed_attn_block_size: number;
  moe_args: MoEArgs;
  auto_scale_hidden_dim: boolean;
  interleave_moe_layer_step: number;
}

export function defaultRoPEScalingArgs(): RoPEScalingArgs {
  return { scaling_factor: 16.0, low_freq_factor: 1.0, high_freq_factor: 1.0, original_max_position_embeddings: 8192 };
}

export function defaultLlama4Args(): Llama4Args {
  return {
    dim: 4096,
    n_layers: 32,
    n_heads: 32,
    n_kv_heads: null,
    vocab_size: 202048,
    multiple_of: 256,
    ffn_dim_multiplier: null,
    norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling_args: null,
    max_seq_len: 1048576,
    depth_init: true,
    attn_type: 'sdpa',
    attn_mask_type: 'causal',
    every_n_layers_nope: null,
    fixed_attn_block_size: 8192,
    moe_args: defaultMoEArgs(),
    auto_scale_hidden_dim: true,
    interleave_moe_layer_step: 2,
  };
}

type Overrides = Partial<Omit<Llama4Args, 'moe_args'>> & { moe_args?: Partial<MoEArgs> };

function flavor(o: Overrides): Llama4Args {
  const base = defaultLlama4Args();
  return { ...base, ...o, moe_args: { ...base.moe_args, ...(o.moe_args ?? {}) } };
}

/**
 * interleave_moe_layer_step the dense twins use: no layer id satisfies (id + 1) % step == 0 below it. This is how
 * the seed turns MoE off (it used 100); any n_layers < 100 is therefore all-dense, keeping only torchtitan fields.
 */
export const DENSE_INTERLEAVE_STEP = 100;

const base: Record<string, Llama4Args> = {
  // torchtitan's flavors (shared/reference/torchtitan-semantics.md §1.2).
  debugmodel: flavor({
    dim: 256,
    n_layers: 6,
    n_heads: 16,
    vocab_size: 2048,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    moe_args: { num_experts: 8 },
  }),
  debugmodel_irope: flavor({
    dim: 256,
    n_layers: 6,
    n_heads: 16,
    vocab_size: 2048,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    moe_args: { num_experts: 8 },
    every_n_layers_nope: 4,
    fixed_attn_block_size: 256,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  '17bx16e': flavor({
    dim: 5120,
    n_layers: 48,
    n_heads: 40,
    n_kv_heads: 8,
    ffn_dim_multiplier: 1.2,
    multiple_of: 2048,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    max_seq_len: 10485760,
    moe_args: { num_experts: 16 },
    interleave_moe_layer_step: 1,
  }),
  '17bx16e_irope': flavor({
    dim: 5120,
    n_layers: 48,
    n_heads: 40,
    n_kv_heads: 8,
    ffn_dim_multiplier: 1.2,
    multiple_of: 2048,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    max_seq_len: 10485760,
    moe_args: { num_experts: 16 },
    interleave_moe_layer_step: 1,
    every_n_layers_nope: 4,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  '17bx128e': flavor({
    dim: 5120,
    n_layers: 48,
    n_heads: 40,
    n_kv_heads: 8,
    ffn_dim_multiplier: 1.2,
    multiple_of: 2048,
    rope_theta: 500000,
    moe_args: { num_experts: 128 },
  }),
  '17bx128e_irope': flavor({
    dim: 5120,
    n_layers: 48,
    n_heads: 40,
    n_kv_heads: 8,
    ffn_dim_multiplier: 1.2,
    multiple_of: 2048,
    rope_theta: 500000,
    moe_args: { num_experts: 128 },
    every_n_layers_nope: 4,
    attn_type: 'flex',
    attn_mask_type: 'block_causal',
  }),
  // The Aurora seed's flavors, with the values of its llama4/__init__.py (the report gives only some of them:
  // debugmodel_12_rank has 12 heads there, mediummodel_12_rank 8 kv heads).
  debugmodel_12_rank: flavor({
    dim: 384,
    n_layers: 6,
    n_heads: 12,
    vocab_size: 2048,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    moe_args: { num_experts: 12 },
  }),
  mediummodel_12_rank: flavor({
    dim: 2304,
    n_layers: 24,
    n_heads: 24,
    n_kv_heads: 8,
    vocab_size: 32000,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    moe_args: { num_experts: 12 },
    interleave_moe_layer_step: 2,
  }),
  largemodel_12_rank: flavor({
    dim: 4608,
    n_layers: 32,
    n_heads: 36,
    n_kv_heads: 12,
    vocab_size: 32000,
    rope_theta: 500000,
    rope_scaling_args: defaultRoPEScalingArgs(),
    moe_args: { num_experts: 12 },
    interleave_moe_layer_step: 2,
  }),
};

/** The seed's own dense baselines, exactly as it defines them (note: no RoPE scaling, unlike their MoE twins). */
const seedDense: Record<string, Llama4Args> = {
  debugmodel_dense_12_rank: flavor({
    dim: 384,
    n_layers: 6,
    n_heads: 12,
    vocab_size: 2048,
    rope_theta: 500000,
    interleave_moe_layer_step: DENSE_INTERLEAVE_STEP,
  }),
  mediummodel_dense_12_rank: flavor({
    dim: 2304,
    n_layers: 24,
    n_heads: 24,
    n_kv_heads: 8,
    vocab_size: 32000,
    rope_theta: 500000,
    interleave_moe_layer_step: DENSE_INTERLEAVE_STEP,
  }),
  largemodel_dense_12_rank: flavor({
    dim: 4608,
    n_layers: 32,
    n_heads: 36,
    n_kv_heads: 12,
    vocab_size: 32000,
    rope_theta: 500000,
    interleave_moe_layer_step: DENSE_INTERLEAVE_STEP,
  }),
  // The report's "Dense Equivalent (~50B)": as many FFN parameters as largemodel_12_rank's 16 dense + 16·12 experts.
  largemodel_dense_equivalent: flavor({
    dim: 4608,
    n_layers: 32,
    n_heads: 36,
    n_kv_heads: 12,
    vocab_size: 32000,
    rope_theta: 500000,
    ffn_dim_multiplier: 6.5,
    interleave_moe_layer_step: DENSE_INTERLEAVE_STEP,
  }),
};

/** `<flavor>_dense`: the same model with MoE off, every layer a dense FFN (all other fields unchanged). */
function denseTwin(a: Llama4Args): Llama4Args {
  return { ...a, moe_args: { ...a.moe_args }, interleave_moe_layer_step: DENSE_INTERLEAVE_STEP };
}

export const LLAMA4_FLAVORS: Readonly<Record<string, Llama4Args>> = Object.freeze({
  ...base,
  ...Object.fromEntries(Object.entries(base).map(([k, v]) => [`${k}_dense`, denseTwin(v)])),
  ...seedDense,
});

export function cloneLlama4Args(a: Llama4Args): Llama4Args {
  return {
    ...a,
    moe_args: { ...a.moe_args },
    rope_scaling_args: a.rope_scaling_args ? { ...a.rope_scaling_args } : null,
  };
}

// ---- derived values (torchtitan llama4 model.py) ----

export function llama4HeadDim(a: Llama4Args): number {
  return a.dim / a.n_heads;
}

export function llama4KvHeads(a: Llama4Args): number {
  return a.n_kv_heads ?? a.n_heads;
}

export function llama4IsMoeLayer(a: Llama4Args, layerId: number): boolean {
  return (layerId + 1) % a.interleave_moe_layer_step === 0;
}

export function llama4IsNopeLayer(a: Llama4Args, layerId: number): boolean {
  return a.every_n_layers_nope !== null && layerId % a.every_n_layers_nope === 0;
}

function roundUp(h: number, multiple: number): number {
  return multiple * Math.ceil(h / multiple);
}

/** Dense FFN hidden: int(2·4·dim/3), ·ffn_dim_multiplier (truncated), rounded up to multiple_of. */
export function llama4DenseHidden(a: Llama4Args): number {
  let h = Math.trunc((2 * (4 * a.dim)) / 3);
  if (a.ffn_dim_multiplier !== null) h = Math.trunc(a.ffn_dim_multiplier * h);
  return roundUp(h, a.multiple_of);
}

/** Routed-expert hidden H: as the dense one, divided by (top_k + shared) when auto_scale_hidden_dim, then rounded. */
export function llama4ExpertHidden(a: Llama4Args): number {
  let h = Math.trunc((2 * (4 * a.dim)) / 3);
  if (a.ffn_dim_multiplier !== null) h = Math.trunc(a.ffn_dim_multiplier * h);
  if (a.auto_scale_hidden_dim) h = Math.trunc(h / (a.moe_args.top_k + a.moe_args.num_shared_experts));
  return roundUp(h, a.multiple_of);
}

export function validateLlama4Args(a: Llama4Args, where = 'model.args'): void {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  for (const k of [
    'dim',
    'n_layers',
    'n_heads',
    'vocab_size',
    'multiple_of',
    'max_seq_len',
    'interleave_moe_layer_step',
  ] as const) {
    if (!(Number.isInteger(a[k]) && a[k] >= 1)) fail(`${k} must be a positive integer (got ${a[k]})`);
  }
  if (a.dim % a.n_heads !== 0) fail(`dim=${a.dim} must be divisible by n_heads=${a.n_heads}`);
  const hd = a.dim / a.n_heads;
  if (hd % 2 !== 0) fail(`head_dim = dim / n_heads = ${hd} must be even for RoPE`);
  const kv = llama4KvHeads(a);
  if (kv < 1 || a.n_heads % kv !== 0) fail(`n_heads=${a.n_heads} must be divisible by n_kv_heads=${kv}`);
  if (a.every_n_layers_nope !== null && a.every_n_layers_nope <= 1) {
    fail(`every_n_layers_nope must be > 1 (got ${a.every_n_layers_nope})`);
  }
  if (!(a.norm_eps > 0)) fail(`norm_eps must be > 0 (got ${a.norm_eps})`);
  if (!(a.rope_theta > 0)) fail(`rope_theta must be > 0 (got ${a.rope_theta})`);
  validateMoEArgs(a.moe_args, where);
}
