// `[model]` section → resolved model args. The TOML is torchtitan's: `name`, `flavor` ("custom" = the model's
// default args), and our `[model.args]` (+ nested `moe_args`, `rope_scaling_args`) overriding fields by their
// torchtitan names. Everything unknown or mistyped is an error that names the field and lists what is valid,
// because a silently ignored typo in a config costs a whole training run.

import {
  cloneLlama4Args,
  defaultLlama4Args,
  defaultRoPEScalingArgs,
  LLAMA4_FLAVORS,
  validateLlama4Args,
  type Llama4Args,
} from './llama4/args.ts';
import {
  cloneDeepSeekV3Args,
  DEEPSEEK_V3_FLAVORS,
  defaultDeepSeekV3Args,
  validateDeepSeekV3Args,
  type DeepSeekV3Args,
} from './deepseek-v3/args.ts';

export type ModelName = 'llama4' | 'deepseek_v3';
export const MODEL_NAMES: readonly ModelName[] = ['llama4', 'deepseek_v3'];

export type ResolvedModelConfig =
  | { name: 'llama4'; flavor: string; args: Llama4Args }
  | { name: 'deepseek_v3'; flavor: string; args: DeepSeekV3Args };

type Kind =
  | { t: 'int'; nullable?: boolean }
  | { t: 'float'; nullable?: boolean }
  | { t: 'bool' }
  | { t: 'enum'; values: readonly string[] }
  | { t: 'table'; schema: Schema; nullable?: boolean };
type Schema = Record<string, Kind>;

const int: Kind = { t: 'int' };
const intOrNull: Kind = { t: 'int', nullable: true };
const float: Kind = { t: 'float' };
const floatOrNull: Kind = { t: 'float', nullable: true };
const bool: Kind = { t: 'bool' };
const attnType: Kind = { t: 'enum', values: ['sdpa', 'flex'] };
const maskType: Kind = { t: 'enum', values: ['causal', 'block_causal'] };

const MOE_SCHEMA: Schema = {
  num_experts: int,
  num_shared_experts: int,
  score_func: { t: 'enum', values: ['sigmoid', 'softmax'] },
  route_norm: bool,
  route_scale: float,
  gate_bias: bool,
  score_before_experts: bool,
  top_k: int,
  num_expert_groups: intOrNull,
  num_limited_groups: intOrNull,
  use_grouped_mm: bool,
  load_balance_coeff: floatOrNull,
  _debug_force_load_balance: bool,
};

const ROPE_SCALING_SCHEMA: Schema = {
  scaling_factor: float,
  low_freq_factor: float,
  high_freq_factor: float,
  original_max_position_embeddings: int,
};

const LLAMA4_SCHEMA: Schema = {
  dim: int,
  n_layers: int,
  n_heads: int,
  n_kv_heads: intOrNull,
  vocab_size: int,
  multiple_of: int,
  ffn_dim_multiplier: floatOrNull,
  norm_eps: float,
  rope_theta: float,
  rope_scaling_args: { t: 'table', schema: ROPE_SCALING_SCHEMA, nullable: true },
  max_seq_len: int,
  depth_init: bool,
  attn_type: attnType,
  attn_mask_type: maskType,
  every_n_layers_nope: intOrNull,
  fixed_attn_block_size: int,
  moe_args: { t: 'table', schema: MOE_SCHEMA },
  auto_scale_hidden_dim: bool,
  interleave_moe_layer_step: int,
};

const DSV3_SCHEMA: Schema = {
  max_batch_size: int,
  max_seq_len: int,
  vocab_size: int,
  dim: int,
  inter_dim: int,
  moe_inter_dim: int,
  n_layers: int,
  n_dense_layers: int,
  n_heads: int,
  norm_eps: float,
  moe_args: { t: 'table', schema: MOE_SCHEMA },
  q_lora_rank: int,
  kv_lora_rank: int,
  qk_nope_head_dim: int,
  qk_rope_head_dim: int,
  v_head_dim: int,
  attn_type: attnType,
  attn_mask_type: maskType,
  original_seq_len: int,
  rope_theta: float,
  rope_factor: float,
  beta_fast: float,
  beta_slow: float,
  mscale: float,
};

/** Keys of torchtitan's [model] section that the models layer accepts but does not use itself. */
const MODEL_SECTION_KEYS = [
  'name',
  'flavor',
  'args',
  'hf_assets_path',
  'tokenizer_path',
  'converters',
  'print_after_conversion',
];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `"${v}" (string)`;
  if (Array.isArray(v)) return 'an array';
  if (isPlainObject(v)) return 'a table';
  return `${String(v)} (${typeof v})`;
}

function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER))
    return Number(v);
  return undefined;
}

/** Applies `overrides` onto `target` in place, checking names and types against `schema`. */
function applyOverrides(target: Record<string, unknown>, overrides: unknown, schema: Schema, path: string): void {
  if (!isPlainObject(overrides)) throw new Error(`${path}: expected a table, got ${describe(overrides)}`);
  for (const [key, value] of Object.entries(overrides)) {
    const kind = schema[key];
    const where = `${path}.${key}`;
    if (!kind) {
      throw new Error(`${where}: unknown field; valid fields are: ${Object.keys(schema).join(', ')}`);
    }
    switch (kind.t) {
      case 'int': {
        const n = toNumber(value);
        if (n === undefined || !Number.isInteger(n))
          throw new Error(`${where}: expected an integer, got ${describe(value)}`);
        target[key] = n;
        break;
      }
      case 'float': {
        const n = toNumber(value);
        if (n === undefined || !Number.isFinite(n))
          throw new Error(`${where}: expected a number, got ${describe(value)}`);
        target[key] = n;
        break;
      }
      case 'bool':
        if (typeof value !== 'boolean') throw new Error(`${where}: expected true or false, got ${describe(value)}`);
        target[key] = value;
        break;
      case 'enum':
        if (typeof value !== 'string' || !kind.values.includes(value)) {
          throw new Error(
            `${where}: expected one of ${kind.values.map((v) => `"${v}"`).join(', ')}, got ${describe(value)}`,
          );
        }
        target[key] = value;
        break;
      case 'table': {
        if (!isPlainObject(value)) throw new Error(`${where}: expected a table, got ${describe(value)}`);
        let sub = target[key] as Record<string, unknown> | null;
        // A nullable table absent in the flavor (e.g. rope_scaling_args of 17bx128e) starts from its defaults.
        if (sub === null || sub === undefined) sub = defaultsForTable(key);
        else sub = { ...sub };
        applyOverrides(sub, value, kind.schema, where);
        target[key] = sub;
        break;
      }
    }
  }
}

function defaultsForTable(key: string): Record<string, unknown> {
  if (key === 'rope_scaling_args') return { ...defaultRoPEScalingArgs() };
  throw new Error(`internal: no defaults for table ${key}`);
}

export function listFlavors(name: ModelName): string[] {
  return Object.keys(name === 'llama4' ? LLAMA4_FLAVORS : DEEPSEEK_V3_FLAVORS);
}

/**
 * Resolves a parsed TOML `[model]` table. `seqLen` is training.seq_len, which becomes max_seq_len as in torchtitan.
 */
export function resolveModelConfig(modelSection: unknown, seqLen: number): ResolvedModelConfig {
  if (!isPlainObject(modelSection)) throw new Error(`[model]: expected a table, got ${describe(modelSection)}`);
  if (!(Number.isInteger(seqLen) && seqLen >= 1))
    throw new Error(`training.seq_len must be a positive integer (got ${seqLen})`);
  for (const key of Object.keys(modelSection)) {
    if (!MODEL_SECTION_KEYS.includes(key)) {
      throw new Error(`model.${key}: unknown field; valid fields are: ${MODEL_SECTION_KEYS.join(', ')}`);
    }
  }
  const name = modelSection.name;
  if (typeof name !== 'string' || !(MODEL_NAMES as readonly string[]).includes(name)) {
    throw new Error(`model.name: unknown model ${describe(name)}; valid models are: ${MODEL_NAMES.join(', ')}`);
  }
  const flavorRaw = modelSection.flavor ?? 'debugmodel';
  const flavors = listFlavors(name as ModelName);
  if (typeof flavorRaw !== 'string' || (flavorRaw !== 'custom' && !flavors.includes(flavorRaw))) {
    throw new Error(
      `model.flavor: unknown ${name} flavor ${describe(flavorRaw)}; valid flavors are: custom, ${flavors.join(', ')}`,
    );
  }
  const converters = modelSection.converters;
  if (converters !== undefined && !(Array.isArray(converters) && converters.length === 0)) {
    throw new Error(
      `model.converters: model converters (float8, mxfp8, …) are not supported; remove the field or leave it empty`,
    );
  }
  const overrides = modelSection.args ?? {};

  if (name === 'llama4') {
    const args = flavorRaw === 'custom' ? defaultLlama4Args() : cloneLlama4Args(LLAMA4_FLAVORS[flavorRaw]!);
    applyOverrides(args as unknown as Record<string, unknown>, overrides, LLAMA4_SCHEMA, 'model.args');
    args.max_seq_len = seqLen;
    validateLlama4Args(args);
    return { name: 'llama4', flavor: flavorRaw, args };
  }
  const args = flavorRaw === 'custom' ? defaultDeepSeekV3Args() : cloneDeepSeekV3Args(DEEPSEEK_V3_FLAVORS[flavorRaw]!);
  applyOverrides(args as unknown as Record<string, unknown>, overrides, DSV3_SCHEMA, 'model.args');
  args.max_seq_len = seqLen;
  validateDeepSeekV3Args(args);
  return { name: 'deepseek_v3', flavor: flavorRaw, args };
}
