"""Model/training configuration for the reference: torchtitan's dataclass defaults, flavors, and the TOML format
of `moe-actors grad` (config.toml in every parity fixture).

`flavor = "custom"` means: start from the dataclass defaults (TransformerModelArgs / DeepSeekV3ModelArgs with
MoEArgs()), then apply [model.args] (and the nested [model.args.moe_args], [model.args.rope_scaling_args]).
A flavor name (e.g. "debugmodel") starts from that flavor instead. `max_seq_len` is always training.seq_len.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

try:
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None


@dataclass
class MoEArgs:
    num_experts: int = 8
    num_shared_experts: int = 1
    score_func: str = "sigmoid"  # or "softmax"
    route_norm: bool = False
    route_scale: float = 1.0
    gate_bias: bool = False  # reference supports only False (no torchtitan flavor uses it)
    score_before_experts: bool = True
    top_k: int = 1
    num_expert_groups: Optional[int] = None
    num_limited_groups: Optional[int] = None
    use_grouped_mm: bool = True  # irrelevant: the reference is the fp32 for-loop path
    load_balance_coeff: Optional[float] = 1e-3


@dataclass
class RoPEScalingArgs:
    scaling_factor: float = 16.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 1.0
    original_max_position_embeddings: int = 8192


@dataclass
class Llama4Args:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    vocab_size: int = 202048
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000
    rope_scaling_args: Optional[RoPEScalingArgs] = None
    max_seq_len: int = 1048576
    depth_init: bool = True
    every_n_layers_nope: Optional[int] = None  # iRoPE: not supported by the reference (flex path)
    moe_args: MoEArgs = field(default_factory=MoEArgs)
    auto_scale_hidden_dim: bool = True
    interleave_moe_layer_step: int = 2


@dataclass
class DeepSeekV3Args:
    max_batch_size: int = 8
    max_seq_len: int = 16384
    vocab_size: int = 102400
    dim: int = 2048
    inter_dim: int = 10944
    moe_inter_dim: int = 1408
    n_layers: int = 27
    n_dense_layers: int = 1
    n_heads: int = 16
    norm_eps: float = 1e-5
    moe_args: MoEArgs = field(default_factory=MoEArgs)
    q_lora_rank: int = 0
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    original_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_factor: float = 40
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0


def llama4_flavors():
    return {
        "debugmodel": Llama4Args(dim=256, n_layers=6, n_heads=16, vocab_size=2048, rope_theta=500000,
                                 rope_scaling_args=RoPEScalingArgs(), moe_args=MoEArgs(num_experts=8),
                                 interleave_moe_layer_step=2),
        "17bx16e": Llama4Args(dim=5120, n_layers=48, n_heads=40, n_kv_heads=8, ffn_dim_multiplier=1.2,
                              multiple_of=2048, rope_theta=500000, max_seq_len=10485760,
                              rope_scaling_args=RoPEScalingArgs(), moe_args=MoEArgs(num_experts=16),
                              interleave_moe_layer_step=1),
        "17bx128e": Llama4Args(dim=5120, n_layers=48, n_heads=40, n_kv_heads=8, ffn_dim_multiplier=1.2,
                               multiple_of=2048, rope_theta=500000, moe_args=MoEArgs(num_experts=128)),
    }


def deepseek_v3_flavors():
    return {
        "debugmodel": DeepSeekV3Args(vocab_size=2048, dim=256, inter_dim=1024, moe_inter_dim=256, n_layers=6,
                                     n_dense_layers=1, n_heads=16,
                                     moe_args=MoEArgs(num_experts=8, num_shared_experts=2, top_k=3,
                                                      score_func="softmax", route_norm=False, route_scale=1.0,
                                                      score_before_experts=False),
                                     kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                                     v_head_dim=128, mscale=0.70),
        "16B": DeepSeekV3Args(vocab_size=102400, dim=2048, inter_dim=10944, moe_inter_dim=1408, n_layers=27,
                              n_dense_layers=1, n_heads=16,
                              moe_args=MoEArgs(num_experts=64, num_shared_experts=2, top_k=6,
                                               score_func="softmax", route_norm=False, route_scale=1.0,
                                               score_before_experts=False),
                              q_lora_rank=0, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                              v_head_dim=128, mscale=0.70),
    }


MODELS = {"llama4": (Llama4Args, llama4_flavors), "deepseek_v3": (DeepSeekV3Args, deepseek_v3_flavors)}


def _apply(obj, overrides: dict, where: str):
    for k, v in overrides.items():
        if not hasattr(obj, k):
            raise KeyError(f"{where}: unknown field {k!r}")
        if k == "moe_args":
            _apply(obj.moe_args, v, where + ".moe_args")
        elif k == "rope_scaling_args":
            rs = obj.rope_scaling_args or RoPEScalingArgs()
            _apply(rs, v, where + ".rope_scaling_args")
            obj.rope_scaling_args = rs
        else:
            setattr(obj, k, v)


def build_args(name: str, flavor: str = "custom", overrides: Optional[dict] = None, seq_len: Optional[int] = None):
    cls, flavors = MODELS[name]
    if flavor == "custom":
        args = cls()
    else:
        args = copy.deepcopy(flavors()[flavor])
    _apply(args, overrides or {}, "model.args")
    if seq_len is not None:
        args.max_seq_len = seq_len
    return args


def load_config(path):
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    m = cfg["model"]
    args = build_args(m["name"], m.get("flavor", "custom"), m.get("args", {}), cfg["training"]["seq_len"])
    return m["name"], args, cfg


# ---- TOML writing (only what the fixtures need: tables of scalars, nested tables) -------------------------------

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(v)


def dump_toml(tables: list, header_comment: str = "") -> str:
    """tables: list of (table_name, dict of scalars)."""
    out = []
    if header_comment:
        out += ["# " + line if line else "#" for line in header_comment.splitlines()]
        out.append("")
    for name, kv in tables:
        out.append(f"[{name}]")
        for k, v in kv.items():
            if v is None:
                continue
            out.append(f"{k} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)


def asdict(x):
    return dataclasses.asdict(x)
