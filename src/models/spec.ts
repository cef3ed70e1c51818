// The family-independent description of a model, derived from resolved args: per-block attention/FFN specs, the
// RoPE table spec, and the full list of parameters (torchtitan names, shapes, FSDP unit, init). Everything that
// counts, names, lays out or initialises parameters reads this list; nothing here allocates, so the 671B flavor is
// as cheap to describe as the debug model.

import type { ResolvedModelConfig } from './config.ts';
import type { MoEArgs } from './moe/args.ts';
import {
  llama4DenseHidden,
  llama4ExpertHidden,
  llama4HeadDim,
  llama4IsMoeLayer,
  llama4IsNopeLayer,
  llama4KvHeads,
  type AttnMaskType,
  type AttnType,
  type RoPEScalingArgs,
} from './llama4/args.ts';
import { dsv3IsMoeLayer, dsv3SoftmaxScale } from './deepseek-v3/args.ts';

/** float32 machine epsilon: torch's RMSNorm eps when none is given (DSV3's final norm, §2.6). */
export const FP32_EPS = 1.1920928955078125e-7;

export interface GqaSpec {
  kind: 'gqa';
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  useRope: boolean;
  scale: number;
}

export interface MlaSpec {
  kind: 'mla';
  nHeads: number;
  qLoraRank: number;
  kvLoraRank: number;
  qkNope: number;
  qkRope: number;
  vHead: number;
  scale: number;
  normEps: number;
}

export interface DenseFfnSpec {
  kind: 'dense';
  hidden: number;
}

export interface MoeSpec {
  kind: 'moe';
  args: MoEArgs;
  /** Routed expert hidden dim H. */
  hidden: number;
  /** Shared expert hidden = H · num_shared_experts (0 = none). */
  sharedHidden: number;
}

export interface BlockSpec {
  layerId: number;
  attn: GqaSpec | MlaSpec;
  ffn: DenseFfnSpec | MoeSpec;
  normEps: number;
  initStd: number;
}

export type RopeSpec =
  | { kind: 'llama4'; dim: number; theta: number; seqLen: number; scaling: RoPEScalingArgs | null }
  | {
      kind: 'yarn';
      dim: number;
      theta: number;
      seqLen: number;
      originalSeqLen: number;
      factor: number;
      betaFast: number;
      betaSlow: number;
    };

export type InitSpec =
  | { kind: 'normal'; std: number }
  | { kind: 'trunc_normal'; std: number; a: number; b: number }
  | { kind: 'ones' }
  | { kind: 'zeros' };

export interface ParamSpec {
  name: string;
  shape: readonly number[];
  /** FSDP unit id (see unitIds). */
  unit: string;
  init: InitSpec;
  /** Routed-expert tensor: dim 0 is the expert dim, EP shards it. */
  expert: boolean;
}

export interface ModelSpec {
  config: ResolvedModelConfig;
  family: ResolvedModelConfig['name'];
  dim: number;
  vocabSize: number;
  nLayers: number;
  seqLen: number;
  finalNormEps: number;
  attnType: AttnType;
  attnMaskType: AttnMaskType;
  rope: RopeSpec;
  blocks: BlockSpec[];
  /** For the FLOPs formula: heads and head_dims (2·hd for llama4, nope+rope+v for DSV3). */
  flopsHeads: number;
  flopsHeadDims: number;
}

export const UNIT_EMBED = 'tok_embeddings';
export const UNIT_HEAD = 'norm_output';
export const blockUnitId = (i: number): string => `layers.${i}`;
export const expertUnitId = (i: number): string => `layers.${i}.moe.experts`;

export function buildModelSpec(config: ResolvedModelConfig): ModelSpec {
  if (config.name === 'llama4') {
    const a = config.args;
    const hd = llama4HeadDim(a);
    const blocks: BlockSpec[] = [];
    for (let i = 0; i < a.n_layers; i++) {
      const initStd = a.depth_init ? 0.02 / Math.sqrt(2 * (i + 1)) : 0.02 / Math.sqrt(2 * a.n_layers);
      const H = llama4ExpertHidden(a);
      blocks.push({
        layerId: i,
        attn: {
          kind: 'gqa',
          nHeads: a.n_heads,
          nKvHeads: llama4KvHeads(a),
          headDim: hd,
          useRope: !llama4IsNopeLayer(a, i),
          scale: 1 / Math.sqrt(hd),
        },
        ffn: llama4IsMoeLayer(a, i)
          ? { kind: 'moe', args: a.moe_args, hidden: H, sharedHidden: H * a.moe_args.num_shared_experts }
          : { kind: 'dense', hidden: llama4DenseHidden(a) },
        normEps: a.norm_eps,
        initStd,
      });
    }
    return {
      config,
      family: 'llama4',
      dim: a.dim,
      vocabSize: a.vocab_size,
      nLayers: a.n_layers,
      seqLen: a.max_seq_len,
      finalNormEps: a.norm_eps,
      attnType: a.attn_type,
      attnMaskType: a.attn_mask_type,
      rope: { kind: 'llama4', dim: hd, theta: a.rope_theta, seqLen: a.max_seq_len, scaling: a.rope_scaling_args },
      blocks,
      flopsHeads: a.n_heads,
      flopsHeadDims: 2 * hd,
    };
  }
  const a = config.args;
  const scale = dsv3SoftmaxScale(a);
  const blocks: BlockSpec[] = [];
  for (let i = 0; i < a.n_layers; i++) {
    blocks.push({
      layerId: i,
      attn: {
        kind: 'mla',
        nHeads: a.n_heads,
        qLoraRank: a.q_lora_rank,
        kvLoraRank: a.kv_lora_rank,
        qkNope: a.qk_nope_head_dim,
        qkRope: a.qk_rope_head_dim,
        vHead: a.v_head_dim,
        scale,
        normEps: a.norm_eps,
      },
      ffn: dsv3IsMoeLayer(a, i)
        ? {
            kind: 'moe',
            args: a.moe_args,
            hidden: a.moe_inter_dim,
            sharedHidden: a.moe_inter_dim * a.moe_args.num_shared_experts,
          }
        : { kind: 'dense', hidden: a.inter_dim },
      normEps: a.norm_eps,
      initStd: 0.02 / Math.sqrt(2 * (i + 1)),
    });
  }
  return {
    config,
    family: 'deepseek_v3',
    dim: a.dim,
    vocabSize: a.vocab_size,
    nLayers: a.n_layers,
    seqLen: a.max_seq_len,
    finalNormEps: FP32_EPS,
    attnType: a.attn_type,
    attnMaskType: a.attn_mask_type,
    rope: {
      kind: 'yarn',
      dim: a.qk_rope_head_dim,
      theta: a.rope_theta,
      seqLen: a.max_seq_len,
      originalSeqLen: a.original_seq_len,
      factor: a.rope_factor,
      betaFast: a.beta_fast,
      betaSlow: a.beta_slow,
    },
    blocks,
    flopsHeads: a.n_heads,
    flopsHeadDims: a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim,
  };
}

const trunc = (std: number): InitSpec => ({ kind: 'trunc_normal', std, a: -2, b: 2 });
const ONES: InitSpec = { kind: 'ones' };

function pushFfn(out: ParamSpec[], prefix: string, unit: string, D: number, hidden: number, initStd: number): void {
  out.push({ name: `${prefix}.w1.weight`, shape: [hidden, D], unit, init: trunc(0.02), expert: false });
  out.push({ name: `${prefix}.w2.weight`, shape: [D, hidden], unit, init: trunc(initStd), expert: false });
  out.push({ name: `${prefix}.w3.weight`, shape: [hidden, D], unit, init: trunc(initStd), expert: false });
}

function pushAttention(out: ParamSpec[], p: string, unit: string, D: number, b: BlockSpec): void {
  const at = b.attn;
  if (at.kind === 'gqa') {
    const q = at.nHeads * at.headDim;
    const kv = at.nKvHeads * at.headDim;
    out.push({ name: `${p}.attention.wq.weight`, shape: [q, D], unit, init: trunc(0.02), expert: false });
    out.push({ name: `${p}.attention.wk.weight`, shape: [kv, D], unit, init: trunc(0.02), expert: false });
    out.push({ name: `${p}.attention.wv.weight`, shape: [kv, D], unit, init: trunc(0.02), expert: false });
    out.push({ name: `${p}.attention.wo.weight`, shape: [D, q], unit, init: trunc(b.initStd), expert: false });
    return;
  }
  const dqk = at.qkNope + at.qkRope;
  if (at.qLoraRank === 0) {
    out.push({ name: `${p}.attention.wq.weight`, shape: [at.nHeads * dqk, D], unit, init: trunc(0.02), expert: false });
  } else {
    out.push({ name: `${p}.attention.wq_a.weight`, shape: [at.qLoraRank, D], unit, init: trunc(0.02), expert: false });
    out.push({ name: `${p}.attention.q_norm.weight`, shape: [at.qLoraRank], unit, init: ONES, expert: false });
    out.push({
      name: `${p}.attention.wq_b.weight`,
      shape: [at.nHeads * dqk, at.qLoraRank],
      unit,
      init: trunc(0.02),
      expert: false,
    });
  }
  out.push({
    name: `${p}.attention.wkv_a.weight`,
    shape: [at.kvLoraRank + at.qkRope, D],
    unit,
    init: trunc(0.02),
    expert: false,
  });
  out.push({ name: `${p}.attention.kv_norm.weight`, shape: [at.kvLoraRank], unit, init: ONES, expert: false });
  out.push({
    name: `${p}.attention.wkv_b.weight`,
    shape: [at.nHeads * (at.qkNope + at.vHead), at.kvLoraRank],
    unit,
    init: trunc(0.02),
    expert: false,
  });
  out.push({
    name: `${p}.attention.wo.weight`,
    shape: [D, at.nHeads * at.vHead],
    unit,
    init: trunc(b.initStd),
    expert: false,
  });
}

/** Every parameter of the full (unsharded) model, in torchtitan's named_parameters order. */
export function paramSpecs(spec: ModelSpec): ParamSpec[] {
  const D = spec.dim;
  const out: ParamSpec[] = [
    {
      name: 'tok_embeddings.weight',
      shape: [spec.vocabSize, D],
      unit: UNIT_EMBED,
      init: { kind: 'normal', std: 1 },
      expert: false,
    },
  ];
  for (const b of spec.blocks) {
    const p = `layers.${b.layerId}`;
    const unit = blockUnitId(b.layerId);
    pushAttention(out, p, unit, D, b);
    if (b.ffn.kind === 'dense') {
      pushFfn(out, `${p}.feed_forward`, unit, D, b.ffn.hidden, b.initStd);
    } else {
      const m = b.ffn;
      const E = m.args.num_experts;
      const eu = expertUnitId(b.layerId);
      out.push({ name: `${p}.moe.experts.w1`, shape: [E, m.hidden, D], unit: eu, init: trunc(0.02), expert: true });
      out.push({
        name: `${p}.moe.experts.w2`,
        shape: [E, D, m.hidden],
        unit: eu,
        init: trunc(b.initStd),
        expert: true,
      });
      out.push({
        name: `${p}.moe.experts.w3`,
        shape: [E, m.hidden, D],
        unit: eu,
        init: trunc(b.initStd),
        expert: true,
      });
      out.push({ name: `${p}.moe.router.gate.weight`, shape: [E, D], unit, init: trunc(b.initStd), expert: false });
      if (m.args.gate_bias) {
        // torchtitan leaves nn.Linear's bias init to its own reset; we start it at zero (documented choice).
        out.push({ name: `${p}.moe.router.gate.bias`, shape: [E], unit, init: { kind: 'zeros' }, expert: false });
      }
      if (m.sharedHidden > 0) pushFfn(out, `${p}.moe.shared_experts`, unit, D, m.sharedHidden, b.initStd);
    }
    out.push({ name: `${p}.attention_norm.weight`, shape: [D], unit, init: ONES, expert: false });
    out.push({ name: `${p}.ffn_norm.weight`, shape: [D], unit, init: ONES, expert: false });
  }
  out.push({ name: 'norm.weight', shape: [D], unit: UNIT_HEAD, init: ONES, expert: false });
  const outStd = D ** -0.5;
  out.push({
    name: 'output.weight',
    shape: [spec.vocabSize, D],
    unit: UNIT_HEAD,
    init: { kind: 'trunc_normal', std: outStd, a: -3 * outStd, b: 3 * outStd },
    expert: false,
  });
  return out;
}

/** Unit ids in model order: tok_embeddings, then per block its own unit (and its experts unit), then norm_output. */
export function unitIds(spec: ModelSpec): string[] {
  const ids = [UNIT_EMBED];
  for (const b of spec.blocks) {
    ids.push(blockUnitId(b.layerId));
    if (b.ffn.kind === 'moe') ids.push(expertUnitId(b.layerId));
  }
  ids.push(UNIT_HEAD);
  return ids;
}

/** Whether the runnable model supports this spec (our kernels do causal attention only). */
export function checkRunnable(spec: ModelSpec): void {
  if (spec.attnMaskType !== 'causal') {
    throw new Error(
      `model.args.attn_mask_type = "${spec.attnMaskType}" is not supported: the attention kernel is causal only. ` +
        `Set attn_mask_type = "causal" in [model.args] (with attn_type "sdpa" or "flex"), or pick a causal flavor.`,
    );
  }
}
