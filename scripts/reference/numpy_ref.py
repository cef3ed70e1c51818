"""A second, deliberately different implementation of the forward pass and loss: float64 NumPy, per-head and
per-token loops, RoPE/YaRN frequencies in float64 with if/else per frequency, written straight from the spec.
selfcheck.py compares it with the stored fixtures (logits and loss). It shares no code with model.py except the
config dataclasses."""
from __future__ import annotations

import math

import numpy as np


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(z):
    return z / (1.0 + np.exp(-z))


def ffn(x, w1, w2, w3):
    return (silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def rope_rows(x, freqs):
    """x (S, d): rotate pairs (x[2i], x[2i+1]) of row p by angle p·f_i."""
    S, d = x.shape
    out = np.empty_like(x)
    for p in range(S):
        for i in range(d // 2):
            a, b = x[p, 2 * i], x[p, 2 * i + 1]
            c, s = math.cos(p * freqs[i]), math.sin(p * freqs[i])
            out[p, 2 * i] = a * c - b * s
            out[p, 2 * i + 1] = a * s + b * c
    return out


def attend(q, k, v, scale):
    """one head, causal: q (S,d), k (S,d), v (S,dv)."""
    S = q.shape[0]
    out = np.zeros((S, v.shape[1]))
    for i in range(S):
        sc = np.array([q[i] @ k[j] * scale for j in range(i + 1)])
        sc = np.exp(sc - sc.max())
        sc /= sc.sum()
        out[i] = sc @ v[: i + 1]
    return out


def llama4_freqs(hd, theta, rs):
    out = []
    for i in range(hd // 2):
        f = 1.0 / theta ** (2 * i / hd)
        if rs is not None:
            lam = 2 * math.pi / f
            lo_wl = rs.original_max_position_embeddings / rs.low_freq_factor
            hi_wl = rs.original_max_position_embeddings / rs.high_freq_factor
            if lam < hi_wl:
                pass
            elif lam > lo_wl:
                f = f / rs.scaling_factor
            else:
                s = (rs.original_max_position_embeddings / lam - rs.low_freq_factor) / (
                    rs.high_freq_factor - rs.low_freq_factor)
                f = (1 - s) * f / rs.scaling_factor + s * f
        out.append(f)
    return out


def dsv3_freqs(a):
    dr = a.qk_rope_head_dim
    fs = [1.0 / a.rope_theta ** (2 * i / dr) for i in range(dr // 2)]
    if a.max_seq_len > a.original_seq_len:
        def corr(r):
            return dr * math.log(a.original_seq_len / (r * 2 * math.pi)) / (2 * math.log(a.rope_theta))
        low = max(math.floor(corr(a.beta_fast)), 0)
        high = min(math.ceil(corr(a.beta_slow)), dr - 1)
        if low == high:
            high += 0.001
        for i in range(dr // 2):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            fs[i] = fs[i] / a.rope_factor * ramp + fs[i] * (1 - ramp)
    return fs


def moe(X, P, pre, m, bias):
    """per-token MoE, spec §3.3 (selfcheck.py also checks the PyTorch MoE layer against it)."""
    E, K = m.num_experts, m.top_k
    out = np.zeros_like(X)
    for n in range(X.shape[0]):
        x = X[n]
        lg = P[pre + "router.gate.weight"] @ x
        if m.score_func == "sigmoid":
            s = 1 / (1 + np.exp(-lg))
        else:
            z = np.exp(lg - lg.max())
            s = z / z.sum()
        c = s + (bias if bias is not None else 0.0)
        allowed = list(range(E))
        if m.num_expert_groups:
            gsz = E // m.num_expert_groups
            gs = [sum(sorted(c[g * gsz:(g + 1) * gsz])[-2:]) for g in range(m.num_expert_groups)]
            keep = sorted(range(m.num_expert_groups), key=lambda g: (-gs[g], g))[:m.num_limited_groups]
            allowed = [e for e in range(E) if e // gsz in keep]
        chosen = sorted(allowed, key=lambda e: (-c[e], e))[:K]
        w = np.array([s[e] for e in chosen])
        if m.route_norm:
            w = w / (w.sum() + 1e-20)
        w = w * m.route_scale
        for k, e in enumerate(chosen):
            W1, W2, W3 = P[pre + "experts.w1"][e], P[pre + "experts.w2"][e], P[pre + "experts.w3"][e]
            if m.score_before_experts:
                out[n] += ffn(x * w[k], W1, W2, W3)
            else:
                out[n] += w[k] * ffn(x, W1, W2, W3)
        if m.num_shared_experts:
            out[n] += ffn(x, P[pre + "shared_experts.w1.weight"], P[pre + "shared_experts.w2.weight"],
                          P[pre + "shared_experts.w3.weight"])
    return out


def _block_ffn(name, a, P, pre, x, layer_id):
    if name == "llama4":
        is_moe = (layer_id + 1) % a.interleave_moe_layer_step == 0
    else:
        is_moe = layer_id >= a.n_dense_layers
    if is_moe:
        b = P.get(pre + "moe.expert_bias")
        return moe(x, P, pre + "moe.", a.moe_args, b)
    return ffn(x, P[pre + "feed_forward.w1.weight"], P[pre + "feed_forward.w2.weight"],
               P[pre + "feed_forward.w3.weight"])


def forward(name, a, P, tokens):
    """P: {name: float64 ndarray} incl. expert_bias buffers; tokens (B,S) ints. Returns logits (B,S,V)."""
    B, S = tokens.shape
    D = a.dim
    out = np.zeros((B, S, a.vocab_size))
    for bi in range(B):
        h = P["tok_embeddings.weight"][tokens[bi]].copy()
        for L in range(a.n_layers):
            pre = f"layers.{L}."
            x = rms(h, P[pre + "attention_norm.weight"], a.norm_eps)
            at = pre + "attention."
            heads = []
            if name == "llama4":
                hd = D // a.n_heads
                kvh = a.n_kv_heads or a.n_heads
                fr = llama4_freqs(hd, a.rope_theta, a.rope_scaling_args)
                for j in range(a.n_heads):
                    g = j // (a.n_heads // kvh)
                    q = rope_rows(x @ P[at + "wq.weight"][j * hd:(j + 1) * hd].T, fr)
                    k = rope_rows(x @ P[at + "wk.weight"][g * hd:(g + 1) * hd].T, fr)
                    v = x @ P[at + "wv.weight"][g * hd:(g + 1) * hd].T
                    heads.append(attend(q, k, v, 1 / math.sqrt(hd)))
            else:
                dn, dr, dv = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
                fr = dsv3_freqs(a)
                scale = (dn + dr) ** -0.5
                if a.max_seq_len > a.original_seq_len:
                    ms = 0.1 * a.mscale * math.log(a.rope_factor) + 1.0
                    scale *= ms * ms
                if a.q_lora_rank == 0:
                    qall = x @ P[at + "wq.weight"].T
                else:
                    qall = rms(x @ P[at + "wq_a.weight"].T, P[at + "q_norm.weight"], a.norm_eps) @ P[at + "wq_b.weight"].T
                kva = x @ P[at + "wkv_a.weight"].T
                c, kpe = kva[:, :a.kv_lora_rank], rope_rows(kva[:, a.kv_lora_rank:], fr)
                kv = rms(c, P[at + "kv_norm.weight"], a.norm_eps) @ P[at + "wkv_b.weight"].T
                for j in range(a.n_heads):
                    qj = qall[:, j * (dn + dr):(j + 1) * (dn + dr)]
                    q = np.concatenate([qj[:, :dn], rope_rows(qj[:, dn:], fr)], axis=1)
                    kvj = kv[:, j * (dn + dv):(j + 1) * (dn + dv)]
                    k = np.concatenate([kvj[:, :dn], kpe], axis=1)
                    heads.append(attend(q, k, kvj[:, dn:], scale))
            h = h + np.concatenate(heads, axis=1) @ P[at + "wo.weight"].T
            x = rms(h, P[pre + "ffn_norm.weight"], a.norm_eps)
            h = h + _block_ffn(name, a, P, pre, x, L)
        eps = a.norm_eps if name == "llama4" else float(np.finfo(np.float32).eps)
        out[bi] = rms(h, P["norm.weight"], eps) @ P["output.weight"].T
    return out


def loss(logits, labels):
    tot, n = 0.0, 0
    B, S, V = logits.shape
    for b in range(B):
        for s in range(S):
            y = int(labels[b, s])
            if y == -100:
                continue
            z = logits[b, s]
            mx = z.max()
            tot += mx + math.log(np.exp(z - mx).sum()) - z[y]
            n += 1
    return tot / n
