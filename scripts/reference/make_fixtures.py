"""Generate the parity fixtures in test/fixtures/parity/<case>/ (see test/fixtures/parity/README.md).

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/reference/make_fixtures.py [case ...]

Deterministic: every case has a fixed seed. Each case is computed twice, in float32 (written) and float64 (noise
estimate, written to README.md). A case is rejected (and the script fails) if routing comes close to a tie (the
minimum gap between the K-th and (K+1)-th selection score, or between the kept and dropped group score, is below
MIN_GAP in any MoE forward), or if fp32 and fp64 route any token differently.
"""
from __future__ import annotations

import json
import math
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

import st_io  # noqa: E402
from config import asdict, build_args, dump_toml  # noqa: E402
from model import (FP32_EPS, Recorder, buffer_shapes, dsv3_rope_table, dsv3_softmax_scale, forward,  # noqa: E402
                   init_params, llama4_dense_hidden, llama4_expert_hidden, llama4_rope_table, make_model,
                   param_shapes, yarn_correction_range)
from train import AdamWConfig, cross_entropy_loss, lr_lambda_factory, train  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "parity")
MIN_GAP = 1e-4  # absolute, in score units (sigmoid/softmax scores + expert_bias)

# ------------------------------------------------------------------------------------------------------------------
# Cases. `args` uses torchtitan field names; everything relevant is spelled out so the base of "custom" matters only
# for rope_scaling_args (absent → None).

CASES = [
    dict(
        name="llama4_gqa_ropescale_top1",
        model="llama4",
        covers="GQA 4 q heads / 2 kv heads (repeat-interleave); rope_scaling_args with all three bands (keep, "
               "blend, divide); ffn_dim_multiplier 1.3 (int truncations); interleave step 2 (layer 0 dense, layer 1 "
               "MoE); sigmoid top-1, 1 shared expert, score_before_experts; random expert_bias that changes "
               "selection; 3 ignored labels",
        seq_len=16, batch=2, seed=1001,
        args=dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=8, ffn_dim_multiplier=1.3,
                  norm_eps=1e-5, rope_theta=10000.0, interleave_moe_layer_step=2, auto_scale_hidden_dim=True,
                  moe_args=dict(num_experts=4, num_shared_experts=1, score_func="sigmoid", route_norm=False,
                                route_scale=1.0, score_before_experts=True, top_k=1, load_balance_coeff=1e-3),
                  rope_scaling_args=dict(scaling_factor=8.0, low_freq_factor=1.0, high_freq_factor=8.0,
                                         original_max_position_embeddings=256)),
        bias_std=0.02, ignore=[(0, 3), (1, 7), (1, 15)],
    ),
    dict(
        name="llama4_allmoe_top2_noshared",
        model="llama4",
        covers="interleave step 1 (every layer MoE); MQA (4 q heads / 1 kv head); top-2, 0 shared experts; "
               "auto_scale_hidden_dim false with ffn_dim_multiplier 0.45; score_before_experts false (gates weight "
               "the outputs) with route_norm and route_scale 2.0 on sigmoid scores; random expert_bias; no ignored "
               "labels",
        seq_len=16, batch=2, seed=2002,
        args=dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=64, multiple_of=16, ffn_dim_multiplier=0.45,
                  norm_eps=1e-5, rope_theta=500.0, interleave_moe_layer_step=1, auto_scale_hidden_dim=False,
                  moe_args=dict(num_experts=4, num_shared_experts=0, score_func="sigmoid", route_norm=True,
                                route_scale=2.0, score_before_experts=False, top_k=2, load_balance_coeff=1e-3)),
        bias_std=0.02, ignore=[],
    ),
    dict(
        name="llama4_shared2_train",
        model="llama4",
        covers="4 layers, MoE at layers 1 and 3; top-2 with 2 shared experts (one SwiGLU of hidden 2H), "
               "score_before_experts true (gate scales the expert input, K outputs summed); GQA 4/2; random "
               "expert_bias; 2 ignored labels; plus 3 train steps: AdamW, linear warmup 2 (lr factors 0.5, 1, 1), "
               "clipping active (max_norm 0.5), expert-bias update each step; AdamW eps 1e-6 (not 1e-8: with 1e-8, "
               "elements whose grad is ~1e-8 made the fp32-vs-fp64 param difference 5e-5, too close to 1e-4)",
        seq_len=16, batch=2, seed=3004,
        args=dict(dim=32, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=8, norm_eps=1e-5,
                  rope_theta=500.0, interleave_moe_layer_step=2, auto_scale_hidden_dim=True,
                  moe_args=dict(num_experts=4, num_shared_experts=2, score_func="sigmoid", route_norm=False,
                                route_scale=1.0, score_before_experts=True, top_k=2, load_balance_coeff=1e-3)),
        bias_std=0.02, ignore=[(0, 0), (1, 9)],
        train=dict(steps=3, optimizer=dict(name="AdamW", lr=4e-3, eps=1e-6, beta1=0.9, beta2=0.95, weight_decay=0.1),
                   lr_scheduler=dict(warmup_steps=2, decay_ratio=0.8, decay_type="linear", min_lr_factor=0.1),
                   max_norm=0.5),
    ),
    dict(
        name="dsv3_mla_yarn_softmax_top3",
        model="deepseek_v3",
        covers="MLA without q_lora; YaRN active (seq_len 16 > original_seq_len 12) with a real blend band "
               "(low 0, high 3) and the mscale softmax-scale correction (mscale 0.7, rope_factor 4); n_dense_layers 1; "
               "softmax top-3 of 8 experts, 2 shared experts, score_before_experts false (DSV3 debugmodel routing); "
               "random expert_bias; final RMSNorm eps = fp32 epsilon made visible (tok_embeddings std 0.02 instead "
               "of 1, so the residual stream is small); 2 ignored labels",
        seq_len=16, batch=2, seed=4008,
        args=dict(dim=32, n_layers=2, n_dense_layers=1, n_heads=2, vocab_size=64, inter_dim=64, moe_inter_dim=16,
                  norm_eps=1e-5, q_lora_rank=0, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=16,
                  v_head_dim=16, original_seq_len=12, rope_theta=10.0, rope_factor=4.0, beta_fast=32, beta_slow=1,
                  mscale=0.7,
                  moe_args=dict(num_experts=8, num_shared_experts=2, score_func="softmax", route_norm=False,
                                route_scale=1.0, score_before_experts=False, top_k=3, load_balance_coeff=1e-3)),
        bias_std=0.004, ignore=[(0, 5), (1, 12)], emb_std=0.02,
    ),
    dict(
        name="dsv3_qlora_groups_sigmoid",
        model="deepseek_v3",
        covers="MLA with q_lora (wq_a, q_norm, wq_b) and qk_nope 12 / qk_rope 8 / v 16; YaRN active with default "
               "theta (low 0, high 1: no blend band), rope_factor 40, mscale 1.0; 3 layers, n_dense_layers 1; "
               "node-limited routing 4 groups / keep 2 on sigmoid+bias scores, top-2, route_norm, route_scale 2.5, "
               "1 shared expert, score_before_experts false (the 671B routing); random expert_bias; 1 ignored label",
        seq_len=16, batch=2, seed=5006,
        args=dict(dim=32, n_layers=3, n_dense_layers=1, n_heads=2, vocab_size=64, inter_dim=48, moe_inter_dim=16,
                  norm_eps=1e-5, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8,
                  v_head_dim=16, original_seq_len=8, rope_theta=10000.0, rope_factor=40.0, beta_fast=32, beta_slow=1,
                  mscale=1.0,
                  moe_args=dict(num_experts=8, num_shared_experts=1, score_func="sigmoid", route_norm=True,
                                route_scale=2.5, score_before_experts=False, top_k=2, num_expert_groups=4,
                                num_limited_groups=2, load_balance_coeff=1e-3)),
        bias_std=0.02, ignore=[(1, 2)],
    ),
    dict(
        name="dsv3_groups_softmax_train",
        model="deepseek_v3",
        covers="no YaRN (seq_len 16 <= original_seq_len 4096, softmax scale dqk^-0.5); MLA without q_lora; "
               "softmax top-3 with node-limited routing (4 groups / keep 2), route_norm, route_scale 1.5, 2 shared "
               "experts, score_before_experts false; random expert_bias; 2 ignored labels; plus 3 train steps: AdamW "
               "(eps 1e-8, wd 0.1), warmup 1 then cosine decay (lr factors 1, 1, 0.6), clipping active (max_norm "
               "0.5), expert-bias update each step",
        seq_len=16, batch=2, seed=6007,
        args=dict(dim=32, n_layers=2, n_dense_layers=1, n_heads=2, vocab_size=64, inter_dim=64, moe_inter_dim=16,
                  norm_eps=1e-5, q_lora_rank=0, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
                  v_head_dim=16, original_seq_len=4096, rope_theta=10000.0, rope_factor=40.0, beta_fast=32,
                  beta_slow=1, mscale=1.0,
                  moe_args=dict(num_experts=8, num_shared_experts=2, score_func="softmax", route_norm=True,
                                route_scale=1.5, score_before_experts=False, top_k=3, num_expert_groups=4,
                                num_limited_groups=2, load_balance_coeff=1e-3)),
        bias_std=0.004, ignore=[(0, 8), (1, 1)],
        train=dict(steps=3, optimizer=dict(name="AdamW", lr=8e-4, eps=1e-8, beta1=0.9, beta2=0.95, weight_decay=0.1),
                   lr_scheduler=dict(warmup_steps=1, decay_ratio=0.8, decay_type="cosine", min_lr_factor=0.2),
                   max_norm=0.5),
    ),
]


# ------------------------------------------------------------------------------------------------------------------

def make_inputs(case, args, gen):
    B, S, V = case["batch"], case["seq_len"], args.vocab_size
    chunk = torch.randint(0, V, (B, S + 1), generator=gen)
    tokens, labels = chunk[:, :S].clone(), chunk[:, 1:].clone()
    for b, s in case["ignore"]:
        labels[b, s] = -100
    return tokens, labels


def make_weights(case, args, gen):
    params = init_params(case["model"], args, gen, std_scale=case.get("std_scale"), norm_jitter=0.1)
    if "emb_std" in case:
        params["tok_embeddings.weight"] = params["tok_embeddings.weight"] * case["emb_std"]
    bias = {}
    for bname, shape in buffer_shapes(case["model"], args).items():
        b = torch.randn(shape, generator=gen) * case["bias_std"]
        bias[bname] = (b - b.mean()).float()  # centered, like the update keeps it
    return params, bias


def routes_summary(rec: Recorder):
    return [dict(layer=r.layer, min_gap=r.min_gap, min_group_gap=r.min_group_gap, n_bias_changed=r.n_bias_changed,
                 counts=r.counts.tolist()) for r in rec.routes]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a-b| / max|b| (b the fp64 reference)."""
    den = float(b.abs().max())
    num = float((a.double() - b.double()).abs().max())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def grad_pass(case, args, params, bias, tokens, labels, dtype, **fw):
    m = make_model(case["model"], args, params, bias, dtype=dtype)
    rec = Recorder()
    logits = forward(m, tokens, rec, **fw)
    loss = cross_entropy_loss(logits, labels)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in m.params.items()}
    return loss.detach(), logits.detach(), grads, rec


class NearTie(Exception):
    pass


def check_routes(name, *recs):
    """All MoE forwards far from ties; all recorders (fp32, fp64) made the same choices."""
    for rec in recs:
        for r in rec.routes:
            if r.min_gap < MIN_GAP or r.min_group_gap < MIN_GAP:
                raise NearTie(f"{name}: routing too close to a tie in {r.layer}: gap {r.min_gap:.3g}, "
                              f"group gap {r.min_group_gap:.3g} (< {MIN_GAP})")
    base = recs[0]
    for rec in recs[1:]:
        for r0, r1 in zip(base.routes, rec.routes):
            if not torch.equal(r0.idx, r1.idx):
                raise NearTie(f"{name}: fp32 and fp64 routing differ in {r0.layer}")


def config_toml(case, args):
    a = case["args"]
    plain = {k: v for k, v in a.items() if k not in ("moe_args", "rope_scaling_args")}
    tables = [("model", dict(name=case["model"], flavor="custom")), ("model.args", plain),
              ("model.args.moe_args", a["moe_args"])]
    if "rope_scaling_args" in a:
        tables.append(("model.args.rope_scaling_args", a["rope_scaling_args"]))
    tr = dict(seq_len=case["seq_len"], local_batch_size=case["batch"])
    if case.get("train"):
        t = case["train"]
        tr.update(max_norm=t["max_norm"], steps=t["steps"])
        tables.append(("optimizer", t["optimizer"]))
        tables.append(("lr_scheduler", t["lr_scheduler"]))
    tables.append(("training", tr))
    head = (f"parity fixture {case['name']} (generated by scripts/reference/make_fixtures.py; do not edit)\n"
            f"covers: {case['covers']}\n"
            "flavor \"custom\" = torchtitan's model-args dataclass defaults, then [model.args]; max_seq_len = training.seq_len")
    import textwrap
    head = "\n".join(textwrap.fill(line, 110, subsequent_indent="  ") for line in head.splitlines())
    return dump_toml(tables, head)


def derived(case, args):
    """Human-readable derived values for the README (sizes, rope/yarn facts)."""
    d = {}
    if case["model"] == "llama4":
        d["head_dim"] = args.dim // args.n_heads
        d["dense_ffn_hidden"] = llama4_dense_hidden(args)
        d["expert_hidden"] = llama4_expert_hidden(args)
        _, _, f = llama4_rope_table(args.dim // args.n_heads, args.rope_theta, args.rope_scaling_args, args.max_seq_len)
        base = 1.0 / (args.rope_theta ** (torch.arange(0, d["head_dim"], 2).float() / d["head_dim"]))
        d["rope_freqs"] = [float(x) for x in f]
        d["rope_freq_ratio"] = [round(float(x), 6) for x in (f / base)]
    else:
        d["softmax_scale"] = dsv3_softmax_scale(args)
        d["yarn"] = args.max_seq_len > args.original_seq_len
        if d["yarn"]:
            d["yarn_low_high"] = yarn_correction_range(args)
        _, _, f = dsv3_rope_table(args, args.max_seq_len)
        base = 1.0 / (args.rope_theta ** (torch.arange(0, args.qk_rope_head_dim, 2, dtype=torch.float32)
                                          / args.qk_rope_head_dim))
        d["rope_freqs"] = [float(x) for x in f]
        d["rope_freq_ratio"] = [round(float(x), 6) for x in (f / base)]
    d["n_params"] = sum(math.prod(s) for s in param_shapes(case["model"], args).values())
    return d


def run_case(case):
    """Try seed, seed+1, ... (deterministic) until routing is far from ties in every forward, fp32 and fp64."""
    for attempt in range(100):
        try:
            return run_case_seed(case, case["seed"] + attempt)
        except NearTie as e:
            print(f"  seed {case['seed'] + attempt} rejected: {e}", file=sys.stderr)
    raise SystemExit(f"{case['name']}: no seed without near-ties in 100 attempts")


def run_case_seed(case, seed):
    name = case["name"]
    args = build_args(case["model"], "custom", case["args"], case["seq_len"])
    gen = torch.Generator().manual_seed(seed)
    params, bias = make_weights(case, args, gen)
    tokens, labels = make_inputs(case, args, gen)
    out_dir = os.path.join(OUT, name)
    os.makedirs(out_dir, exist_ok=True)
    report = dict(name=name, seed=seed, covers=case["covers"], derived=derived(case, args),
                  n_valid=int((labels != -100).sum()), n_ignored=int((labels == -100).sum()))

    loss32, logits32, g32, rec32 = grad_pass(case, args, params, bias, tokens, labels, torch.float32)
    loss64, logits64, g64, rec64 = grad_pass(case, args, params, bias, tokens, labels, torch.float64)
    check_routes(name, rec32, rec64)
    report["routes"] = routes_summary(rec32)
    report["loss"] = float(loss32)
    report["loss_rel_fp32_fp64"] = abs(float(loss32) - float(loss64)) / abs(float(loss64))
    per = {k: rel(g32[k], g64[k]) for k in g32}
    report["grad_rel_fp32_fp64_max"] = max(per.values())
    report["grad_rel_fp32_fp64_worst"] = sorted(per.items(), key=lambda kv: -kv[1])[:3]
    report["grad_maxabs_min"] = min((float(g.abs().max()), k) for k, g in g32.items())
    report["logits_rel_fp32_fp64"] = rel(logits32, logits64)
    # second, loop-based float64 NumPy implementation of the forward (numpy_ref.py) against the fp32 fixture
    import numpy_ref
    P = {k: v.double().numpy() for k, v in params.items()}
    P.update({k: v.double().numpy() for k, v in bias.items()})
    np_logits = numpy_ref.forward(case["model"], args, P, tokens.numpy())
    report["numpy_logits_rel"] = float(abs(np_logits - logits32.double().numpy()).max() / abs(np_logits).max())
    np_loss = numpy_ref.loss(np_logits, labels.numpy())
    report["numpy_loss_rel"] = abs(np_loss - float(loss32)) / abs(np_loss)
    if case["model"] == "deepseek_v3":
        # how much the final-norm eps quirk matters: loss with eps = norm_eps instead of fp32 epsilon
        m = make_model(case["model"], args, params, bias, dtype=torch.float64)
        with torch.no_grad():
            l_alt = float(cross_entropy_loss(forward(m, tokens, None, final_norm_eps=args.norm_eps), labels))
        report["final_norm_eps_quirk_loss_rel"] = abs(l_alt - float(loss64)) / abs(float(loss64))

    meta = {"case": name, "generator": "scripts/reference/make_fixtures.py", "dtype": "float32"}
    weights = dict(params)
    weights.update(bias)
    st_io.save(os.path.join(out_dir, "weights.safetensors"), weights, meta)
    st_io.save(os.path.join(out_dir, "batch.safetensors"), {"tokens": tokens, "labels": labels}, meta)
    exp = {"loss": loss32.reshape(()), "logits": logits32}
    for k, g in g32.items():
        exp["grad." + k] = g
    for r in rec32.routes:
        exp["route." + r.layer + "selected"] = r.idx.to(torch.int64)
        exp["route." + r.layer + "counts"] = r.counts.to(torch.int64)
    st_io.save(os.path.join(out_dir, "expected.safetensors"), exp, meta)

    if case.get("train"):
        t = case["train"]
        o = t["optimizer"]
        sch = t["lr_scheduler"]
        lam = lr_lambda_factory(t["steps"], sch["warmup_steps"], sch["decay_ratio"], sch["decay_type"],
                                sch["min_lr_factor"])
        adam = AdamWConfig(lr=o["lr"], beta1=o["beta1"], beta2=o["beta2"], eps=o["eps"], weight_decay=o["weight_decay"])
        runs = {}
        for dt in (torch.float32, torch.float64):
            m = make_model(case["model"], args, params, bias, dtype=dt)
            res = train(m, tokens, labels, t["steps"], adam, lam, t["max_norm"])
            runs[dt] = (m, res)
        (m32, r32), (m64, r64) = runs[torch.float32], runs[torch.float64]
        for s in range(t["steps"]):
            check_routes(f"{name} train step {s + 1}", r32.routes[s], r64.routes[s])
        assert all(gn > t["max_norm"] for gn in r32.grad_norms), "clipping must be active at every step"
        tr = {}
        for i in range(t["steps"]):
            tr[f"loss.step{i + 1}"] = torch.tensor(r32.losses[i], dtype=torch.float32)
            tr[f"grad_norm.step{i + 1}"] = torch.tensor(r32.grad_norms[i], dtype=torch.float32)
            tr[f"lr.step{i + 1}"] = torch.tensor(r32.lrs[i], dtype=torch.float32)
        for k, v in m32.params.items():
            tr["param." + k] = v.detach()
        for k, v in m32.buffers.items():
            if k.endswith("expert_bias"):
                tr["buffer." + k] = v
        st_io.save(os.path.join(out_dir, "train.safetensors"), tr, meta)
        report["train"] = dict(
            losses=r32.losses, grad_norms=r32.grad_norms, lrs=r32.lrs,
            loss_rel_fp32_fp64=max(abs(a - b) / abs(b) for a, b in zip(r32.losses, r64.losses)),
            grad_norm_rel_fp32_fp64=max(abs(a - b) / abs(b) for a, b in zip(r32.grad_norms, r64.grad_norms)),
            param_rel_fp32_fp64_max=max(rel(m32.params[k].detach(), m64.params[k].detach()) for k in m32.params),
            param_rel_worst=sorted(((k, rel(m32.params[k].detach(), m64.params[k].detach())) for k in m32.params),
                                   key=lambda kv: -kv[1])[:3],
            bias_maxdiff_fp32_fp64=max(float((m32.buffers[k].double() - m64.buffers[k]).abs().max())
                                       for k in m32.buffers if k.endswith("expert_bias")),
            min_gap_per_step=[min(r.min_gap for r in rec.routes) for rec in r32.routes],
            min_group_gap_per_step=[min(r.min_group_gap for r in rec.routes) for rec in r32.routes],
            bias_changed_per_step=[sum(r.n_bias_changed for r in rec.routes) for rec in r32.routes],
            counts_per_step=[[r.counts.tolist() for r in rec.routes] for rec in r32.routes],
        )
    with open(os.path.join(out_dir, "config.toml"), "w") as f:
        f.write(config_toml(case, args))
    return report


# ------------------------------------------------------------------------------------------------------------------
# Generated documentation: scripts/reference/NAMES.md and test/fixtures/parity/README.md

NAMES_HEAD = """# Parameter and buffer names (torchtitan state_dict), as written by the parity fixtures

Generated by `scripts/reference/make_fixtures.py` from `scripts/reference/model.py:param_shapes` (do not edit by hand).

Conventions:
- `nn.Linear(in, out)` weights have shape `(out, in)` and compute `y = x·Wᵀ`; no biases anywhere (gate_bias is False).
- Routed experts are three 3-D parameters per MoE layer: `experts.w1` (E,H,D), `experts.w2` (E,D,H), `experts.w3` (E,H,D).
- Shared experts are ONE SwiGLU FFN `moe.shared_experts.w{1,2,3}.weight` with hidden `H·num_shared_experts`; absent
  when num_shared_experts = 0.
- A dense layer has `feed_forward.w{1,2,3}.weight` instead of `moe.*`.
  MoE layer: llama4 `(layer_id + 1) % interleave_moe_layer_step == 0`; deepseek_v3 `layer_id >= n_dense_layers`.
- Buffer `layers.N.moe.expert_bias` (E,) fp32 is persistent: it is in `weights.safetensors` (initial value) and in
  `train.safetensors` as `buffer.layers.N.moe.expert_bias` (after the last step). It has no gradient.
  `tokens_per_expert` is non-persistent and is never written.
- Order below = torchtitan's module registration order (safetensors files themselves are sorted by name).

## llama4 (symbolic)

| name | shape |
|---|---|
| tok_embeddings.weight | (V, D) |
| layers.N.attention.wq.weight | (n_heads·hd, D), hd = D / n_heads |
| layers.N.attention.wk.weight | (n_kv_heads·hd, D) |
| layers.N.attention.wv.weight | (n_kv_heads·hd, D) |
| layers.N.attention.wo.weight | (D, n_heads·hd) |
| layers.N.feed_forward.w1.weight / w3.weight (dense layers) | (Hd, D), Hd = llama4 dense hidden (spec §1.4) |
| layers.N.feed_forward.w2.weight | (D, Hd) |
| layers.N.moe.router.gate.weight (MoE layers) | (E, D) |
| layers.N.moe.experts.w1 / w3 | (E, H, D), H = llama4 expert hidden (spec §1.4) |
| layers.N.moe.experts.w2 | (E, D, H) |
| layers.N.moe.shared_experts.w1.weight / w3.weight | (H·n_shared, D) |
| layers.N.moe.shared_experts.w2.weight | (D, H·n_shared) |
| layers.N.attention_norm.weight, layers.N.ffn_norm.weight | (D,) |
| norm.weight | (D,) |
| output.weight | (V, D) |
| buffer layers.N.moe.expert_bias | (E,) |

## deepseek_v3 (symbolic)

dqk = qk_nope_head_dim + qk_rope_head_dim.

| name | shape |
|---|---|
| tok_embeddings.weight | (V, D) |
| layers.N.attention.wq.weight (q_lora_rank = 0) | (n_heads·dqk, D) |
| layers.N.attention.wq_a.weight (q_lora_rank > 0) | (q_lora_rank, D) |
| layers.N.attention.q_norm.weight (q_lora_rank > 0) | (q_lora_rank,) |
| layers.N.attention.wq_b.weight (q_lora_rank > 0) | (n_heads·dqk, q_lora_rank) |
| layers.N.attention.wkv_a.weight | (kv_lora_rank + qk_rope_head_dim, D) |
| layers.N.attention.kv_norm.weight | (kv_lora_rank,) |
| layers.N.attention.wkv_b.weight | (n_heads·(qk_nope_head_dim + v_head_dim), kv_lora_rank) |
| layers.N.attention.wo.weight | (D, n_heads·v_head_dim) |
| layers.N.feed_forward.w1.weight / w3.weight (dense layers) | (inter_dim, D) |
| layers.N.feed_forward.w2.weight | (D, inter_dim) |
| layers.N.moe.router.gate.weight | (E, D) |
| layers.N.moe.experts.w1 / w3 | (E, moe_inter_dim, D) |
| layers.N.moe.experts.w2 | (E, D, moe_inter_dim) |
| layers.N.moe.shared_experts.w1.weight / w3.weight | (moe_inter_dim·n_shared, D) |
| layers.N.moe.shared_experts.w2.weight | (D, moe_inter_dim·n_shared) |
| layers.N.attention_norm.weight, layers.N.ffn_norm.weight | (D,) |
| norm.weight | (D,) (eps = fp32 machine epsilon, not norm_eps) |
| output.weight | (V, D) |
| buffer layers.N.moe.expert_bias | (E,) |
"""


def names_md():
    out = [NAMES_HEAD]
    listing = [(f"flavor `{n}` `debugmodel`", n, build_args(n, "debugmodel", seq_len=2048))
               for n in ("llama4", "deepseek_v3")]
    listing += [(f"fixture `{c['name']}`", c["model"], build_args(c["model"], "custom", c["args"], c["seq_len"]))
                for c in CASES]
    for title, n, a in listing:
        shapes = param_shapes(n, a)
        total = sum(math.prod(s) for s in shapes.values())
        out.append(f"## {title} ({n}, {total:,} parameters)\n")
        out.append("| name | shape |\n|---|---|")
        for k, sh in shapes.items():
            out.append(f"| {k} | {tuple(sh)} |")
        for k, sh in buffer_shapes(n, a).items():
            out.append(f"| {k} (buffer) | {tuple(sh)} |")
        out.append("")
    return "\n".join(out)


README_HEAD = """# Parity fixtures (torchtitan semantics, fp32)

Generated by the independent PyTorch reference in `scripts/reference/` (plain PyTorch, fp32, for-loop experts,
written from `shared/reference/torchtitan-semantics.md`; torchtitan itself is not used). Regenerate with

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/reference/make_fixtures.py     # ~5 s, deterministic
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/reference/selfcheck.py         # validates the reference
    /usr/bin/python3 scripts/reference/make_io_fixture.py                          # python_io.safetensors

(Debian's torch 1.13 at `/usr/bin/python3`; the `python3` on PATH has no torch.) This README, `report.json` and
`scripts/reference/NAMES.md` are generated by the same script; do not edit them by hand.

## Files per case (`<case>/`)

| file | contents |
|---|---|
| `config.toml` | the job config exactly as given to `moe-actors grad`: `[model] name, flavor = "custom"`, `[model.args]` (torchtitan field names), `[model.args.moe_args]`, optional `[model.args.rope_scaling_args]`, `[training] seq_len, local_batch_size` (+ `max_norm, steps`, `[optimizer]`, `[lr_scheduler]` for training cases). `custom` = torchtitan's model-args dataclass defaults + these overrides; every field that matters is spelled out, so only `rope_scaling_args` relies on the default (None when absent). `max_seq_len` = `training.seq_len`. |
| `weights.safetensors` | fp32 parameters under torchtitan's names (see `scripts/reference/NAMES.md`) + the persistent buffer `layers.N.moe.expert_bias` (E,) |
| `batch.safetensors` | `tokens`, `labels`: int64 (B, S); `labels = -100` are ignored |
| `expected.safetensors` | `loss` (fp32, shape []) = CE sum / number of valid labels; `grad.<name>` (fp32) for every parameter; debugging aids: `logits` (B,S,V) and, per MoE layer, `route.layers.N.moe.selected` (int64 (B·S, K): chosen experts per token, slots by descending selection score) and `route.layers.N.moe.counts` (int64 (E,)) |
| `train.safetensors` (training cases) | per step i = 1..steps on the same batch: `loss.step<i>` (before the update), `grad_norm.step<i>` (pre-clip total norm), `lr.step<i>` (lr used by that step); after the last step: `param.<name>` and `buffer.layers.N.moe.expert_bias` |

`python_io.safetensors` (top level) is a small file written by the Python writer (`scripts/reference/st_io.py`),
read by `test/models/safetensors.test.ts`.

Train step semantics (spec §5): zero grads → forward (router counts accumulate in `tokens_per_expert`) → loss →
backward → clip (`coef = min(max_norm/(total+1e-6), 1)`, every grad multiplied) → expert-bias update
(`Δ = coeff·sign(mean(t) − t)`, `Δ −= mean(Δ)`, `bias += Δ`, counts zeroed; no activation checkpointing, so no
`floor(t/2)`) → AdamW (torch.optim.AdamW formula, weight decay on every parameter) → scheduler step.
lr(step n) = optimizer.lr · λ(n−1), spec §5.3.

## Conventions that make the fixtures robust

- **Weights**: torchtitan's init std per parameter (embedding N(0,1), output trunc-normal D^-0.5, depth-scaled
  init_std for wo / w2 / w3 / router), except: all RMSNorm weights are `1 + 0.1·N(0,1)` instead of ones (so a
  missing or misplaced norm weight is detected), and `dsv3_mla_yarn_softmax_top3` scales the embedding to std 0.02
  (makes both the final-norm eps quirk and the 1e-5 eps of the other norms visible). `expert_bias` is random
  (centered) and changes the selection of many tokens (see "bias changed" below).
- **No routing ties**: the seed of every case is chosen (deterministically, first seed that passes) so that in
  every MoE forward — including the forwards of every training step, in fp32 and fp64 — the gap between the K-th
  and (K+1)-th selection score (scores + expert_bias, after group masking) and between the last kept and the first
  dropped group score is ≥ 1e-4, and fp32 and fp64 choose identical experts. TS-vs-reference routing noise is
  ~1e-7, so a routing difference means a semantic difference.
- K slots per token are ordered by descending selection score, ties toward the lower expert id (spec §8.1): the
  order of the K-sum in the combine. RoPE tables are computed in fp32 exactly as torchtitan (select semantics).

## Tolerances and fp32 noise

Tolerances of the TS parity tests: loss 1e-5 relative; each gradient 1e-4 as `max|g_ts − g_ref| / max|g_ref|`.
Every case was computed a second time in float64 (same code, same weights; RoPE tables and the DSV3 final-norm eps
kept at their fp32 values) — the table shows how much of those budgets fp32 rounding alone uses. "vs NumPy" compares
the stored fp32 logits/loss with `scripts/reference/numpy_ref.py`, a second float64 forward written with per-head and
per-token loops (RoPE/YaRN frequencies in float64 with if/else per frequency), sharing no code with `model.py`.
`selfcheck.py` additionally gradchecks the MoE layer (float64, five router configurations), checks a directional
derivative of every fixture's full gradient, AdamW/clipping against `torch.optim.AdamW`/`clip_grad_norm_`, the LR
factors of the debug configs and the parameter counts of the torchtitan flavors.

"""


def readme_md(reports):
    out = [README_HEAD]
    out.append("| case | loss | loss rel fp32−fp64 | max grad rel fp32−fp64 (worst tensor) | logits rel fp32−fp64 | "
               "logits / loss rel vs NumPy | smallest max\\|grad\\| |")
    out.append("|---|---|---|---|---|---|---|")
    for r in reports:
        w = r["grad_rel_fp32_fp64_worst"][0]
        out.append(f"| {r['name']} | {r['loss']:.6f} | {r['loss_rel_fp32_fp64']:.1e} | {r['grad_rel_fp32_fp64_max']:.1e} "
                   f"(`{w[0]}`) | {r['logits_rel_fp32_fp64']:.1e} | {r['numpy_logits_rel']:.1e} / {r['numpy_loss_rel']:.1e} | "
                   f"{r['grad_maxabs_min'][0]:.1e} "
                   f"(`{r['grad_maxabs_min'][1]}`) |")
    out.append("")
    out.append("Largest fp32 noise: loss {:.1e} (budget 1e-5), gradients {:.1e} (budget 1e-4): both ≥ 100× below "
               "the tolerance.\n".format(max(r["loss_rel_fp32_fp64"] for r in reports),
                                         max(r["grad_rel_fp32_fp64_max"] for r in reports)))
    tr = [r for r in reports if "train" in r]
    if tr:
        out.append("Training cases (3 steps; fp32 vs fp64 of the same run):\n")
        out.append("| case | loss per step | grad_norm (pre-clip) per step | lr per step | loss rel | grad_norm rel | "
                   "max param rel (worst) | expert_bias max abs diff |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in tr:
            t = r["train"]
            out.append(f"| {r['name']} | {', '.join(f'{x:.6f}' for x in t['losses'])} | "
                       f"{', '.join(f'{x:.6f}' for x in t['grad_norms'])} | {', '.join(f'{x:.6g}' for x in t['lrs'])} | "
                       f"{t['loss_rel_fp32_fp64']:.1e} | {t['grad_norm_rel_fp32_fp64']:.1e} | "
                       f"{t['param_rel_fp32_fp64_max']:.1e} (`{t['param_rel_worst'][0][0]}`) | "
                       f"{t['bias_maxdiff_fp32_fp64']:.1e} |")
        out.append("")
        out.append("Final parameters after AdamW are the most noise-sensitive output: an element whose gradient is "
                   "of the order of Adam's eps gets an update `lr·g/(|g|+eps)` that depends on the exact value of a "
                   "near-zero g. With eps 1e-8 the llama4 training case showed 5e-5 (too close to 1e-4), so that case "
                   "uses eps 1e-6 (8e-6). A TS comparison of `param.*` should use the 1e-4 max-abs-over-max-abs rule; "
                   "`expert_bias` is a sum of ±coeff steps and must match to ~1e-7 absolute (the sign pattern is "
                   "exact because routing counts are integers).\n")
    out.append("## Cases\n")
    for r in reports:
        d = r["derived"]
        out.append(f"### `{r['name']}`\n")
        out.append(f"{r['covers']}.\n")
        out.append(f"- seed {r['seed']}; {d['n_params']:,} parameters; {r['n_valid']} valid / {r['n_ignored']} "
                   f"ignored labels")
        if "head_dim" in d:
            out.append(f"- head_dim {d['head_dim']}, dense FFN hidden {d['dense_ffn_hidden']}, expert hidden "
                       f"{d['expert_hidden']}")
        else:
            yarn = f"YaRN on, (low, high) = {tuple(d['yarn_low_high'])}" if d["yarn"] else "YaRN off"
            out.append(f"- softmax_scale {d['softmax_scale']:.9g}; {yarn}")
        out.append(f"- RoPE frequencies (fp32) {['%.9g' % f for f in d['rope_freqs']]}; ratio to unscaled "
                   f"{d['rope_freq_ratio']}")
        for rt in r["routes"]:
            gg = "" if rt["min_group_gap"] == math.inf else f", min group gap {rt['min_group_gap']:.2e}"
            out.append(f"- `{rt['layer'][:-1]}`: tokens per expert {rt['counts']}, min selection gap "
                       f"{rt['min_gap']:.2e}{gg}, bias changed the expert set of {rt['n_bias_changed']} of "
                       f"{r['n_valid'] + r['n_ignored']} tokens")
        if "final_norm_eps_quirk_loss_rel" in r:
            out.append(f"- final-norm eps quirk: using norm_eps instead of fp32 epsilon changes the loss by "
                       f"{r['final_norm_eps_quirk_loss_rel']:.1e} (relative)")
        if "train" in r:
            t = r["train"]
            out.append(f"- training: min selection gap per step {['%.2e' % g for g in t['min_gap_per_step']]}, "
                       f"tokens whose set the bias changed per step {t['bias_changed_per_step']}")
        out.append("")
    return "\n".join(out)


def main(argv):
    names = set(argv)
    reports = []
    for case in CASES:
        if names and case["name"] not in names:
            continue
        r = run_case(case)
        reports.append(r)
        print(f"{r['name']}: seed {r['seed']}, loss {r['loss']:.6f}, fp32-vs-fp64 loss {r['loss_rel_fp32_fp64']:.1e}, "
              f"grads {r['grad_rel_fp32_fp64_max']:.1e}")
    with open(os.path.join(ROOT, "scripts", "reference", "NAMES.md"), "w") as f:
        f.write(names_md())
    if not names:
        with open(os.path.join(OUT, "report.json"), "w") as f:
            json.dump(reports, f, indent=1, default=str)
            f.write("\n")
        with open(os.path.join(OUT, "README.md"), "w") as f:
            f.write(readme_md(reports))


if __name__ == "__main__":
    main(sys.argv[1:])
