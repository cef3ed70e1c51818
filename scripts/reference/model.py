"""Independent reference of torchtitan's Llama4 and DeepSeek-V3 MoE models (fp32, for-loop experts), written from
shared/reference/torchtitan-semantics.md in plain PyTorch (runs on Debian's torch 1.13: no nn.RMSNorm, no SDPA).

The model is functional: parameters are a dict {torchtitan name: tensor}, buffers another dict
({"layers.N.moe.expert_bias": (E,)} plus the non-persistent "layers.N.moe.tokens_per_expert"). The same code runs in
float32 (the semantics) and float64 (to measure fp32 noise): every "compute in fp32" of torchtitan becomes
"compute in promote(dtype, fp32)", so fp64 stays fp64. RoPE tables are always computed in fp32 exactly as torchtitan
does (they are part of the semantics), then cast to the compute dtype. The DSV3 final-norm eps is the fp32 machine
epsilon in both runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from config import DeepSeekV3Args, Llama4Args, MoEArgs

FP32_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920928955078125e-07


def acc_dtype(dt):
    return torch.promote_types(dt, torch.float32)


# ------------------------------------------------------------------------------------------------------------------
# Shapes (names exactly as torchtitan's state_dict)

def llama4_dense_hidden(a: Llama4Args) -> int:
    h = int(2 * (4 * a.dim) / 3)
    if a.ffn_dim_multiplier is not None:
        h = int(a.ffn_dim_multiplier * h)
    return a.multiple_of * ((h + a.multiple_of - 1) // a.multiple_of)


def llama4_expert_hidden(a: Llama4Args) -> int:
    h = int(2 * (4 * a.dim) / 3)
    if a.ffn_dim_multiplier is not None:
        h = int(a.ffn_dim_multiplier * h)
    denom = 1
    if a.auto_scale_hidden_dim:
        denom = a.moe_args.top_k + a.moe_args.num_shared_experts
    h = int(h / denom)
    h += -h % a.multiple_of
    return h


def is_moe_layer(name: str, a, layer_id: int) -> bool:
    if name == "llama4":
        return (layer_id + 1) % a.interleave_moe_layer_step == 0
    return layer_id >= a.n_dense_layers


def _moe_shapes(pre, D, H, m: MoEArgs):
    E = m.num_experts
    s = {
        pre + "router.gate.weight": (E, D),
        pre + "experts.w1": (E, H, D),
        pre + "experts.w2": (E, D, H),
        pre + "experts.w3": (E, H, D),
    }
    if m.gate_bias:
        raise NotImplementedError("gate_bias=True is not supported by the reference")
    if m.num_shared_experts > 0:
        Hs = H * m.num_shared_experts
        s[pre + "shared_experts.w1.weight"] = (Hs, D)
        s[pre + "shared_experts.w2.weight"] = (D, Hs)
        s[pre + "shared_experts.w3.weight"] = (Hs, D)
    return s


def _ffn_shapes(pre, D, H):
    return {pre + "w1.weight": (H, D), pre + "w2.weight": (D, H), pre + "w3.weight": (H, D)}


def param_shapes(name: str, a) -> Dict[str, tuple]:
    """Ordered {parameter name: shape} in torchtitan's module order."""
    D = a.dim
    s = {"tok_embeddings.weight": (a.vocab_size, D)}
    for i in range(a.n_layers):
        p = f"layers.{i}."
        if name == "llama4":
            hd = D // a.n_heads
            kvh = a.n_kv_heads or a.n_heads
            s[p + "attention.wq.weight"] = (a.n_heads * hd, D)
            s[p + "attention.wk.weight"] = (kvh * hd, D)
            s[p + "attention.wv.weight"] = (kvh * hd, D)
            s[p + "attention.wo.weight"] = (D, a.n_heads * hd)
        else:
            dqk = a.qk_nope_head_dim + a.qk_rope_head_dim
            if a.q_lora_rank == 0:
                s[p + "attention.wq.weight"] = (a.n_heads * dqk, D)
            else:
                s[p + "attention.wq_a.weight"] = (a.q_lora_rank, D)
                s[p + "attention.q_norm.weight"] = (a.q_lora_rank,)
                s[p + "attention.wq_b.weight"] = (a.n_heads * dqk, a.q_lora_rank)
            s[p + "attention.wkv_a.weight"] = (a.kv_lora_rank + a.qk_rope_head_dim, D)
            s[p + "attention.kv_norm.weight"] = (a.kv_lora_rank,)
            s[p + "attention.wkv_b.weight"] = (a.n_heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank)
            s[p + "attention.wo.weight"] = (D, a.n_heads * a.v_head_dim)
        if is_moe_layer(name, a, i):
            H = llama4_expert_hidden(a) if name == "llama4" else a.moe_inter_dim
            s.update(_moe_shapes(p + "moe.", D, H, a.moe_args))
        else:
            H = llama4_dense_hidden(a) if name == "llama4" else a.inter_dim
            s.update(_ffn_shapes(p + "feed_forward.", D, H))
        s[p + "attention_norm.weight"] = (D,)
        s[p + "ffn_norm.weight"] = (D,)
    s["norm.weight"] = (D,)
    s["output.weight"] = (a.vocab_size, D)
    return s


def buffer_shapes(name: str, a) -> Dict[str, tuple]:
    """Persistent buffers (state_dict): expert_bias per MoE layer when load_balance_coeff is set."""
    s = {}
    if a.moe_args.load_balance_coeff is None:
        return s
    for i in range(a.n_layers):
        if is_moe_layer(name, a, i):
            s[f"layers.{i}.moe.expert_bias"] = (a.moe_args.num_experts,)
    return s


# ------------------------------------------------------------------------------------------------------------------
# Init (torchtitan's per-parameter std; depth-scaled init_std = 0.02/sqrt(2(layer_id+1)))

def init_std_for(name: str, a) -> tuple:
    """(kind, std): kind in normal | trunc | trunc3 | ones."""
    if name == "tok_embeddings.weight":
        return ("normal", 1.0)
    if name == "output.weight":
        return ("trunc3", a.dim ** -0.5)
    if name.endswith("norm.weight"):
        return ("ones", None)
    layer_id = int(name.split(".")[1])
    depth = 0.02 / (2 * (layer_id + 1)) ** 0.5
    leaf = name.split(".")
    if "attention" in leaf:
        return ("trunc", depth if leaf[-2] == "wo" else 0.02)
    # FFN / experts / shared experts / router
    if "router" in leaf:
        return ("trunc", depth)
    w = leaf[-1] if leaf[-1] in ("w1", "w2", "w3") else leaf[-2]
    return ("trunc", 0.02 if w == "w1" else depth)


def init_params(name: str, a, gen: torch.Generator, std_scale: Optional[Dict[str, float]] = None,
                norm_jitter: float = 0.0) -> Dict[str, torch.Tensor]:
    """Realistic torchtitan-like init. std_scale: {substring: factor} multiplies the std of matching names.
    norm_jitter > 0 draws norm weights as 1 + jitter·N(0,1) (so that a missing norm weight is detectable)."""
    out = {}
    for pname, shape in param_shapes(name, a).items():
        kind, std = init_std_for(pname, a)
        for sub, f in (std_scale or {}).items():
            if sub in pname and std is not None:
                std = std * f
        if kind == "ones":
            t = torch.ones(shape)
            if norm_jitter:
                t = t + norm_jitter * torch.randn(shape, generator=gen)
        elif kind == "normal":
            t = torch.randn(shape, generator=gen) * std
        else:
            bound = 3 * std if kind == "trunc3" else 2.0
            t = torch.randn(shape, generator=gen) * std
            # resample the (rare) values outside the absolute bounds, as trunc_normal_ would never produce them
            bad = t.abs() > bound
            while bad.any():
                t[bad] = torch.randn(int(bad.sum()), generator=gen) * std
                bad = t.abs() > bound
        out[pname] = t.float().contiguous()
    return out


# ------------------------------------------------------------------------------------------------------------------
# Building blocks

# Matmul input dtype. None: the compute dtype (fp32/fp64 fixtures). torch.bfloat16: what FSDP2's
# MixedPrecisionPolicy(param_dtype=bfloat16) does to every nn.Linear and expert matmul — parameters and inputs cast
# to bf16, a bf16 result (torch's CPU bf16 matmul accumulates in fp32 and rounds the output), cast back to the
# compute dtype for everything else (norms, softmax, router scores, loss stay fp32, as torchtitan keeps them).
# Gradients flow back through the casts: weight grads are computed in bf16 and arrive as fp32 (the fp32 reduce).
# The attention scores matmul is not a parameter matmul and stays in the compute dtype.
MATMUL_DTYPE = None


def set_matmul_dtype(dt):
    global MATMUL_DTYPE
    MATMUL_DTYPE = dt


def linear(x, w):
    if MATMUL_DTYPE is None:
        return F.linear(x, w)
    return F.linear(x.to(MATMUL_DTYPE), w.to(MATMUL_DTYPE)).to(x.dtype)


def rms_norm(x, w, eps):
    # nn.RMSNorm / F.rms_norm composite: x * rsqrt(mean(x^2) + eps), then * weight
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def swiglu(x, w1, w2, w3):
    return linear(F.silu(linear(x, w1)) * linear(x, w3), w2)


def llama4_rope_table(hd: int, theta: float, scaling, seq_len: int):
    """cos, sin of shape (seq_len, hd/2), fp32, torchtitan llama4 semantics (select, not blend)."""
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    if scaling is not None:
        sf, lo, hi, orig = (scaling.scaling_factor, scaling.low_freq_factor, scaling.high_freq_factor,
                            scaling.original_max_position_embeddings)
        low_wl = orig / lo
        high_wl = orig / hi
        wavelen = 2 * math.pi / freqs
        freqs = torch.where(wavelen > low_wl, freqs / sf, freqs)
        with torch.no_grad():
            smooth = (orig / wavelen - lo) / (hi - lo)  # may be inf/nan when hi == lo: masked below
        smoothed = (1 - smooth) * freqs / sf + smooth * freqs
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        freqs = torch.where(medium, smoothed, freqs)
    t = torch.arange(seq_len)
    ang = torch.outer(t, freqs).float()
    return torch.cos(ang), torch.sin(ang), freqs


def yarn_correction_range(a: DeepSeekV3Args):
    dim, base = a.qk_rope_head_dim, a.rope_theta

    def corr(r):
        return dim * math.log(a.original_seq_len / (r * 2 * math.pi)) / (2 * math.log(base))

    low = math.floor(corr(a.beta_fast))
    high = math.ceil(corr(a.beta_slow))
    return max(low, 0), min(high, dim - 1)


def dsv3_rope_table(a: DeepSeekV3Args, seq_len: int):
    dim = a.qk_rope_head_dim
    freqs = 1.0 / (a.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if a.max_seq_len > a.original_seq_len:
        low, high = yarn_correction_range(a)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / a.rope_factor * (1 - smooth) + freqs * smooth
    t = torch.arange(seq_len)
    ang = torch.outer(t, freqs)
    return torch.cos(ang), torch.sin(ang), freqs


def dsv3_softmax_scale(a: DeepSeekV3Args) -> float:
    s = (a.qk_nope_head_dim + a.qk_rope_head_dim) ** -0.5
    if a.max_seq_len > a.original_seq_len:
        m = 0.1 * a.mscale * math.log(a.rope_factor) + 1.0
        s = s * m * m
    return s


def apply_rope(x, cos, sin):
    """x (B,S,H,d): rotate adjacent pairs (x[2i], x[2i+1]) by the angle of position s, frequency i."""
    dt = x.dtype
    ad = acc_dtype(dt)
    B, S, H, d = x.shape
    xp = x.to(ad).reshape(B, S, H, d // 2, 2)
    a, b = xp[..., 0], xp[..., 1]
    c = cos[:S].to(ad).view(1, S, 1, d // 2)
    s = sin[:S].to(ad).view(1, S, 1, d // 2)
    out = torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(3)
    return out.to(dt)


def causal_attention(q, k, v, scale):
    """q (B,H,S,d), k (B,H,S,d), v (B,H,S,dv); the math SDPA with is_causal=True."""
    S = q.shape[2]
    att = torch.matmul(q, k.transpose(-2, -1)) * scale
    mask = torch.ones(S, S, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return torch.matmul(att, v)


# ------------------------------------------------------------------------------------------------------------------
# MoE layer (spec §3.3), for-loop experts

@dataclass
class RouteStats:
    """What one MoE forward decided; used to check that fixtures are far from routing ties."""
    layer: str
    idx: torch.Tensor  # (N,K) selected experts, slots by descending selection score
    min_gap: float  # min over tokens of (K-th − (K+1)-th) selection score (inf if K == E)
    min_group_gap: float  # min over tokens of (L-th − (L+1)-th) group score (inf without groups)
    n_bias_changed: int  # tokens whose expert set differs from the one chosen without expert_bias
    counts: torch.Tensor


@dataclass
class Recorder:
    routes: List[RouteStats] = field(default_factory=list)


def _select(c: torch.Tensor, m: MoEArgs):
    """Node-limited masking + top-k with ties toward the lower id; slots by descending score.
    Returns (idx (N,K), min_gap, min_group_gap)."""
    N, E = c.shape
    group_gap = math.inf
    if m.num_expert_groups is not None:
        G, L = m.num_expert_groups, m.num_limited_groups
        assert L is not None and E % G == 0 and E // G >= 2
        cg = c.view(N, G, E // G)
        gscore = cg.topk(2, dim=-1).values.sum(dim=-1)  # (N,G)
        gs, gorder = torch.sort(gscore, dim=-1, descending=True, stable=True)
        if L < G:
            group_gap = float((gs[:, L - 1] - gs[:, L]).min())
        keep = gorder[:, :L]
        drop = torch.ones(N, G, dtype=torch.bool)
        drop.scatter_(1, keep, False)
        c = cg.masked_fill(drop.unsqueeze(-1), float("-inf")).view(N, E)
    vals, order = torch.sort(c, dim=-1, descending=True, stable=True)
    K = m.top_k
    idx = order[:, :K]
    gap = math.inf
    if K < E:
        g = vals[:, K - 1] - vals[:, K]
        gap = float(g.min())
    return idx, gap, group_gap


def moe_forward(x: torch.Tensor, p: Dict[str, torch.Tensor], pre: str, m: MoEArgs,
                expert_bias: Optional[torch.Tensor], tokens_per_expert: Optional[torch.Tensor] = None,
                rec: Optional[Recorder] = None) -> torch.Tensor:
    B, S, D = x.shape
    X = x.reshape(-1, D)
    N, E, K = X.shape[0], m.num_experts, m.top_k
    ad = acc_dtype(X.dtype)
    # 1-2 gate logits, scores in fp32
    logits = linear(X, p[pre + "router.gate.weight"])
    if m.score_func == "sigmoid":
        s = torch.sigmoid(logits.to(ad))
    elif m.score_func == "softmax":
        s = torch.softmax(logits.to(ad), dim=1)
    else:
        raise ValueError(m.score_func)
    # 3-5 selection on s + bias (no grad)
    with torch.no_grad():
        c = s.detach() if expert_bias is None else s.detach() + expert_bias.to(ad)
        idx, gap, ggap = _select(c, m)
        counts = torch.bincount(idx.flatten(), minlength=E)
    # 6, 8, 9 gates from the unbiased scores
    w = s.gather(1, idx)
    if m.route_norm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * m.route_scale
    # 10 counts
    if tokens_per_expert is not None:
        tokens_per_expert.add_(counts.to(tokens_per_expert.dtype))
    if rec is not None:
        with torch.no_grad():
            nb = 0
            if expert_bias is not None:
                idx0, _, _ = _select(s.detach(), m)
                nb = int((idx0.sort(dim=1).values != idx.sort(dim=1).values).any(dim=1).sum())
        rec.routes.append(RouteStats(pre, idx.clone(), gap, ggap, nb, counts.clone()))
    # 11-12 reorder: stable argsort of token-major, slot-minor expert ids
    flat = idx.flatten()
    perm = torch.sort(flat, stable=True).indices
    w_sorted = w.flatten()[perm]
    R = X[perm // K]
    # 13
    if m.score_before_experts:
        R = (R.to(ad) * w_sorted.reshape(-1, 1)).to(X.dtype)
    # 14 for-loop experts over contiguous chunks
    w1, w2, w3 = p[pre + "experts.w1"], p[pre + "experts.w2"], p[pre + "experts.w3"]
    outs = []
    for e, Re in enumerate(torch.split(R, counts.tolist())):
        h = F.silu(linear(Re, w1[e]))
        h = h * linear(Re, w3[e])
        outs.append(linear(h, w2[e]))
    Y = torch.cat(outs, dim=0)
    # 15 shared experts on all tokens
    sh = None
    if m.num_shared_experts > 0:
        sh = swiglu(X, p[pre + "shared_experts.w1.weight"], p[pre + "shared_experts.w2.weight"],
                    p[pre + "shared_experts.w3.weight"])
    # 16 unsort
    U = torch.zeros(N * K, D, dtype=Y.dtype).index_put((perm,), Y).reshape(N, K, D)
    # 17 combine
    if m.score_before_experts:
        out = U.sum(dim=1)
    else:
        out = torch.bmm(w.reshape(N, 1, K), U.to(ad)).to(X.dtype).squeeze(1)
    if sh is not None:
        out = sh + out
    return out.reshape(B, S, D)


# ------------------------------------------------------------------------------------------------------------------
# Models

@dataclass
class Model:
    name: str  # "llama4" | "deepseek_v3"
    args: object
    params: Dict[str, torch.Tensor]
    buffers: Dict[str, torch.Tensor]  # expert_bias (persistent) and tokens_per_expert (non-persistent)

    def to(self, dtype, requires_grad=True) -> "Model":
        ps = {k: v.detach().to(dtype).clone().requires_grad_(requires_grad) for k, v in self.params.items()}
        bs = {k: v.detach().clone().to(dtype) for k, v in self.buffers.items()}
        return Model(self.name, self.args, ps, bs)


def make_model(name, args, params, expert_bias: Optional[Dict[str, torch.Tensor]] = None, dtype=torch.float32):
    bufs = {}
    for bname, shape in buffer_shapes(name, args).items():
        eb = expert_bias.get(bname) if expert_bias else None
        bufs[bname] = (eb.clone() if eb is not None else torch.zeros(shape)).to(dtype)
        bufs[bname.replace("expert_bias", "tokens_per_expert")] = torch.zeros(shape, dtype=torch.float32)
    ps = {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in params.items()}
    return Model(name, args, ps, bufs)


def _moe(model: Model, h, pre, rec):
    a = model.args
    eb = model.buffers.get(pre + "expert_bias")
    tpe = model.buffers.get(pre + "tokens_per_expert")
    return moe_forward(h, model.params, pre, a.moe_args, eb, tpe, rec)


def llama4_forward(model: Model, tokens: torch.Tensor, rec: Optional[Recorder] = None) -> torch.Tensor:
    a: Llama4Args = model.args
    p = model.params
    if a.every_n_layers_nope is not None:
        raise NotImplementedError("iRoPE (flex attention) is not supported by the reference")
    B, S = tokens.shape
    hd = a.dim // a.n_heads
    hq, hkv = a.n_heads, a.n_kv_heads or a.n_heads
    cos, sin, _ = llama4_rope_table(hd, a.rope_theta, a.rope_scaling_args, a.max_seq_len)
    h = F.embedding(tokens, p["tok_embeddings.weight"])
    for i in range(a.n_layers):
        pre = f"layers.{i}."
        x = rms_norm(h, p[pre + "attention_norm.weight"], a.norm_eps)
        q = linear(x, p[pre + "attention.wq.weight"]).view(B, S, hq, hd)
        k = linear(x, p[pre + "attention.wk.weight"]).view(B, S, hkv, hd)
        v = linear(x, p[pre + "attention.wv.weight"]).view(B, S, hkv, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        rep = hq // hkv
        k = k.repeat_interleave(rep, dim=1)  # query head j uses kv head j // rep
        v = v.repeat_interleave(rep, dim=1)
        o = causal_attention(q, k, v, 1.0 / math.sqrt(hd))
        o = o.transpose(1, 2).contiguous().view(B, S, hq * hd)
        h = h + linear(o, p[pre + "attention.wo.weight"])
        x = rms_norm(h, p[pre + "ffn_norm.weight"], a.norm_eps)
        if is_moe_layer("llama4", a, i):
            h = h + _moe(model, x, pre + "moe.", rec)
        else:
            h = h + swiglu(x, p[pre + "feed_forward.w1.weight"], p[pre + "feed_forward.w2.weight"],
                           p[pre + "feed_forward.w3.weight"])
    h = rms_norm(h, p["norm.weight"], a.norm_eps)
    return linear(h, p["output.weight"])


def dsv3_forward(model: Model, tokens: torch.Tensor, rec: Optional[Recorder] = None,
                 final_norm_eps: Optional[float] = None) -> torch.Tensor:
    a: DeepSeekV3Args = model.args
    p = model.params
    B, S = tokens.shape
    Hh, dn, dr, dv = a.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
    cos, sin, _ = dsv3_rope_table(a, a.max_seq_len)
    scale = dsv3_softmax_scale(a)
    h = F.embedding(tokens, p["tok_embeddings.weight"])
    for i in range(a.n_layers):
        pre = f"layers.{i}."
        x = rms_norm(h, p[pre + "attention_norm.weight"], a.norm_eps)
        at = pre + "attention."
        if a.q_lora_rank == 0:
            q = linear(x, p[at + "wq.weight"])
        else:
            q = linear(rms_norm(linear(x, p[at + "wq_a.weight"]), p[at + "q_norm.weight"], a.norm_eps),
                         p[at + "wq_b.weight"])
        q = q.view(B, S, Hh, dn + dr)
        q_nope, q_pe = torch.split(q, [dn, dr], dim=-1)
        q = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], dim=-1)
        kv = linear(x, p[at + "wkv_a.weight"])
        c, k_pe = torch.split(kv, [a.kv_lora_rank, dr], dim=-1)
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin)  # one rope head, shared by all heads
        kv = linear(rms_norm(c, p[at + "kv_norm.weight"], a.norm_eps), p[at + "wkv_b.weight"])
        kv = kv.view(B, S, Hh, dn + dv)
        k_nope, v = torch.split(kv, [dn, dv], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(-1, -1, Hh, -1)], dim=-1)
        o = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale)
        o = o.transpose(1, 2).contiguous().view(B, S, Hh * dv)
        h = h + linear(o, p[at + "wo.weight"])
        x = rms_norm(h, p[pre + "ffn_norm.weight"], a.norm_eps)
        if is_moe_layer("deepseek_v3", a, i):
            h = h + _moe(model, x, pre + "moe.", rec)
        else:
            h = h + swiglu(x, p[pre + "feed_forward.w1.weight"], p[pre + "feed_forward.w2.weight"],
                           p[pre + "feed_forward.w3.weight"])
    # quirk: nn.RMSNorm(dim) without eps → the machine epsilon of fp32 (we keep the fp32 value in fp64 runs too)
    h = rms_norm(h, p["norm.weight"], FP32_EPS if final_norm_eps is None else final_norm_eps)
    return linear(h, p["output.weight"])


def forward(model: Model, tokens, rec=None, **kw):
    if model.name == "llama4":
        return llama4_forward(model, tokens, rec)
    return dsv3_forward(model, tokens, rec, **kw)
